"""Checkpoints are read with ``weights_only=True``: no code runs from a file without the explicit opt-in."""

import copy
import os

import numpy as np
import pytest
import torch

import omiclip as oc
from omiclip.__main__ import main
from omiclip.models import _checkpoint

SENTENCES = ["EPCAM KRT8 KRT18 ERBB2 GRB7", "COL1A1 COL1A2 DCN LUM"]


class SideEffect:
    """Unpickling this creates a folder: the stand-in for any command a hostile pickle could run."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.mkdir, (self.marker,)


@pytest.fixture
def hostile(tiny, tmp_path):
    """A valid tiny checkpoint that also carries a payload: (path, marker the payload would create)."""
    marker = tmp_path / "payload_ran"
    path = tmp_path / "hostile.pt"
    content = {"state_dict": tiny.model.state_dict(), "omiclip": {"model": "omiclip-tiny"}, "x": SideEffect(marker)}
    torch.save(content, path)
    return path, marker


def _refused(call, path):
    with pytest.raises(_checkpoint.UntrustedCheckpointError) as err:
        call()
    message = str(err.value)
    assert str(path) in message and "trust_checkpoint=True" in message and "posix.mkdir" in message


class TestHostileCheckpoint:
    def test_refused_by_path_name_and_environment(self, hostile, monkeypatch):
        path, marker = hostile
        _refused(lambda: oc.models.load(path), path)
        _refused(lambda: oc.models.load("omiclip-tiny", checkpoint=path), path)
        monkeypatch.setenv(_checkpoint.CHECKPOINT_ENV, str(path))
        _refused(lambda: oc.models.load("omiclip"), path)
        assert not marker.exists()

    def test_runs_only_with_the_opt_in(self, hostile, tiny):
        path, marker = hostile
        encoder = oc.models.load(path, trust_checkpoint=True)
        assert marker.is_dir()  # full unpickling did run the payload: that is what the opt-in allows
        assert encoder.trust_checkpoint
        np.testing.assert_array_equal(encoder.encode_text(SENTENCES), tiny.encode_text(SENTENCES))

    def test_finetune_resume_is_refused(self, hostile, section):
        path, marker = hostile
        oc.pp.gene_sentences(section)
        run = {"model": "omiclip-tiny", "epochs": 1, "batch_size": 8, "progress": False}
        _refused(lambda: oc.tl.finetune(section, resume=path, **run), path)
        assert not marker.exists()

    def test_command_line_refuses_then_opts_in(self, hostile, section, tmp_path, capsys):
        path, marker = hostile
        store = tmp_path / "section.zarr"
        section.write(store)
        for model_args in (["--model", str(path)], ["--model", "omiclip-tiny", "--checkpoint", str(path)]):
            assert main(["embed", str(store), "--modality", "text", *model_args]) == 1
            err = capsys.readouterr().err
            assert str(path) in err and "--trust-checkpoint" in err
        assert not marker.exists()
        assert main(["embed", str(store), "--modality", "text", "--model", str(path), "--trust-checkpoint"]) == 0
        assert marker.is_dir()

    def test_help_documents_the_opt_in(self, capsys):
        with pytest.raises(SystemExit):
            main(["embed", "--help"])
        assert "--trust-checkpoint" in capsys.readouterr().out


class TestPlainCheckpoints:
    def test_saved_checkpoint_loads_weights_only(self, tiny, tmp_path, monkeypatch):
        path = oc.models.save_checkpoint(tmp_path / "tiny.pt", tiny.model, model_name="omiclip-tiny", epoch=1)
        calls = []
        load = torch.load
        monkeypatch.setattr(torch, "load", lambda *a, **k: calls.append(k["weights_only"]) or load(*a, **k))
        encoder = oc.models.load(path)
        assert calls == [True] and not encoder.trust_checkpoint
        np.testing.assert_array_equal(encoder.encode_text(SENTENCES), tiny.encode_text(SENTENCES))

    def test_openclip_training_checkpoint_loads_weights_only(self, tiny, tmp_path):
        # what OpenCLIP's training loop saves: epoch, name, `module.`-prefixed weights, optimizer and scaler state,
        # with the learning rate written by its cosine schedule as a NumPy float
        model = copy.deepcopy(tiny.model)
        optimizer = torch.optim.AdamW(model.parameters(), lr=5e-6, betas=(0.9, 0.98), eps=1e-6)
        model.encode_image(torch.zeros(2, 3, tiny.image_size, tiny.image_size)).sum().backward()
        optimizer.step()
        optimizer.param_groups[0]["lr"] = 0.5 * (1 + np.cos(np.pi * 0.3)) * 5e-6
        content = {
            "epoch": 10,
            "name": "model_coca_ViT-L-14-lr_5e-06-b_64-j_8-p_amp",
            "state_dict": {f"module.{k}": v for k, v in model.state_dict().items()},
            "optimizer": optimizer.state_dict(),
            "scaler": {"scale": 65536.0, "growth_factor": 2.0, "_growth_tracker": 0},
        }
        assert isinstance(content["optimizer"]["param_groups"][0]["lr"], np.float64)
        torch.save(content, tmp_path / "epoch_10.pt")
        loaded = oc.models.load("omiclip-tiny", checkpoint=tmp_path / "epoch_10.pt")
        assert not loaded.trust_checkpoint
        for key, value in model.state_dict().items():
            torch.testing.assert_close(loaded.model.state_dict()[key], value, rtol=0, atol=0)

    def test_non_finite_weights_are_an_error(self, tiny, tmp_path):
        state = {k: v.clone() for k, v in tiny.model.state_dict().items()}
        state["text.text_projection"][0, :3] = torch.tensor([float("nan"), float("inf"), 0.0])
        torch.save({"state_dict": state}, tmp_path / "nan.pt")
        with pytest.raises(ValueError, match=r"nan\.pt.*non-finite.*'text\.text_projection' holds 2 NaN/inf"):
            oc.models.load("omiclip-tiny", checkpoint=tmp_path / "nan.pt")


def test_device_is_reported_as_asked():
    if torch.cuda.is_available():
        pytest.skip("needs a machine without CUDA")
    with pytest.raises(ValueError, match=r"device='cuda:5'"):
        oc.models.load("omiclip-tiny", device="cuda:5")
