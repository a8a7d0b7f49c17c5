import json

from omiclip.__main__ import main


def test_demo_runs_and_writes(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--size-um", "1200", "--seed", "1"]) == 0
    printed = capsys.readouterr().out
    summary = json.loads(printed[printed.index("{") :])
    assert summary["text embedding"][1] == 128
    assert (tmp_path / "synthetic_section0.zarr").is_dir() and (tmp_path / "synthetic_section1.zarr").is_dir()
    # sentences carry the domain signal even through a random text tower
    assert summary["same-domain match of nearest cross-section spot (text)"] > summary["chance level"]

    import spatialdata

    back = spatialdata.read_zarr(tmp_path / "synthetic_section1.zarr")
    assert back.tables["table"].obsm["X_omiclip_text"].shape[1] == 128
