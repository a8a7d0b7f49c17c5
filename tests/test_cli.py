"""The command line on zarr stores: results land in the store, bad input gives one line and a non-zero exit."""

import numpy as np
import pytest
import spatialdata as sd

import omiclip as oc
from omiclip.__main__ import main


@pytest.fixture
def store(section, tmp_path):
    path = tmp_path / "section.zarr"
    section.write(path)
    return str(path)


def test_help_lists_the_commands(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert all(command in out for command in ("embed", "finetune", "align", "demo"))


def test_embed_writes_into_the_store(store):
    assert main(["embed", store, "--modality", "text", "--model", "omiclip-tiny"]) == 0
    table = sd.read_zarr(store).tables["table"]
    assert table.obsm["X_omiclip_text"].shape == (table.n_obs, 128)
    np.testing.assert_allclose(np.linalg.norm(table.obsm["X_omiclip_text"], axis=1), 1, rtol=1e-5)
    assert "gene_sentence" in table.obs


def test_bad_input_is_one_line_and_leaves_the_store_alone(store, tmp_path, capsys):
    assert main(["embed", str(tmp_path / "missing.zarr"), "--modality", "text"]) == 1
    assert "missing.zarr does not exist" in capsys.readouterr().err
    assert main(["embed", store, "--modality", "image", "--model", "omiclip-tiny", "--image-key", "nope"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("omiclip embed: error:") and "nope" in err and "\n" not in err
    table = sd.read_zarr(store).tables["table"]
    assert "X_omiclip_image" not in table.obsm


def test_align_moves_the_source_store(section, store, tmp_path):
    target = tmp_path / "target.zarr"
    section.write(target)
    for path in (store, str(target)):
        assert main(["embed", path, "--modality", "text", "--model", "omiclip-tiny"]) == 0
    assert main(["align", store, str(target), "--center"]) == 0
    moved = sd.read_zarr(store)
    assert moved.tables["table"].obsm["spatial_aligned"].shape == (moved.tables["table"].n_obs, 2)
    record = moved.tables["table"].uns["omiclip"]["align"]["spatial_aligned"]
    assert record["center"]  # the default for one representation is False
    # the image moves with its spots, as with the Python API: both by the recorded matrix
    matrix = record["matrix"]
    for element in (moved.images["he"], moved.shapes["spots"]):
        systems = sd.transformations.get_transformation(element, get_all=True)
        to_aligned, to_global = (
            systems[name].to_affine_matrix(("x", "y"), ("x", "y")) for name in ("aligned", "global")
        )
        np.testing.assert_allclose(to_aligned @ np.linalg.inv(to_global), matrix, atol=1e-9)
    assert "spatial_aligned" not in sd.read_zarr(target).tables["table"].obsm  # the target is read only


def test_finetune_writes_a_checkpoint_that_loads(store, tmp_path):
    checkpoint = tmp_path / "tuned.pt"
    args = ["finetune", store, "--out", str(checkpoint), "--model", "omiclip-tiny", "--epochs", "1", "--lr", "5e-4"]
    assert main(args) == 0
    assert oc.models.load("omiclip-tiny", checkpoint=checkpoint).checkpoint_sha256


def _one_line_error(capsys, command: str) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"omiclip {command}: error:") and "\n" not in err  # no traceback
    return err


@pytest.mark.parametrize("out", ["folder", "file/x.pt"])
def test_finetune_refuses_an_unwritable_out_before_reading_the_stores(tmp_path, capsys, out):
    (tmp_path / "folder").mkdir()
    (tmp_path / "file").touch()
    # the store does not exist: the --out error must come first, before any store is read or model trained
    args = ["finetune", str(tmp_path / "missing.zarr"), "--out", str(tmp_path / out), "--model", "omiclip-tiny"]
    assert main(args) == 1
    err = _one_line_error(capsys, "finetune")
    assert str(tmp_path / out) in err and ("is a folder" in err or "is a file" in err)


def test_demo_checks_its_arguments_before_making_the_out_folder(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--size-um", "10"]) == 1
    assert "`--size-um`" in _one_line_error(capsys, "demo")
    assert main(["demo", "--out", str(out), "--epochs", "0"]) == 1
    assert "epochs" in _one_line_error(capsys, "demo")
    assert not out.exists()
    out.touch()
    assert main(["demo", "--out", str(out)]) == 1
    assert "is a file" in _one_line_error(capsys, "demo")


def test_model_help_names_what_is_supported(capsys):
    with pytest.raises(SystemExit):
        main(["embed", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "checkpoint file" in out and "config json" not in out
