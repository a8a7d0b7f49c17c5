import json

from omiclip.__main__ import main


def test_demo_runs_and_writes(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--size-um", "1200", "--epochs", "2", "--seed", "1"]) == 0
    printed = capsys.readouterr().out
    summary = json.loads(printed[printed.index("{") :])
    assert summary["spots per section"][0] > 50
    for written in summary["written"]:
        assert (tmp_path / written.split("/")[-1]).exists()
    assert summary["median genes read by the tokenizer"] < summary["median expressed genes per sentence"]

    import spatialdata

    back = spatialdata.read_zarr(tmp_path / "synthetic_section1.zarr")
    table = back.tables["table"]
    assert table.obsm["X_omiclip_text"].shape == table.obsm["X_omiclip_image"].shape == (table.n_obs, 128)
