"""Fine-tuning as OpenCLIP trains: the last partial batch dropped, ``--precision amp``; bf16 as an option."""

import numpy as np
import pytest
import torch

import omiclip as oc


@pytest.fixture(scope="module")
def small_section():
    sdata = oc.datasets.synthetic_tissue(size_um=1000, um_per_px=2.0, seed=4)
    oc.pp.gene_sentences(sdata)
    return sdata


def _run(section, tiny, path, **options):
    run = {"model": tiny, "epochs": 2, "lr": 1e-4, "warmup": 1, "seed": 3, "progress": False, "save": path}
    tuned = oc.tl.finetune(section, **{**run, **options})
    meta = torch.load(path, weights_only=True, map_location="cpu")["omiclip"]
    return tuned, meta, section.tables["table"].uns["omiclip"]["finetune"][tiny.name]


def test_last_partial_batch_is_dropped_by_default(small_section, tiny, tmp_path):
    n_pairs = small_section.tables["table"].n_obs
    batch_size = next(b for b in range(16, 4, -1) if n_pairs % b >= 2)  # a partial batch that could be trained
    _, meta, record = _run(small_section, tiny, tmp_path / "a.pt", batch_size=batch_size)
    assert meta["step"] == 2 * (n_pairs // batch_size)  # OpenCLIP's loader: drop_last=True
    assert record["drop_last"] and record["precision"] == "amp"
    assert record["precision_used"] == ("float16 autocast" if torch.cuda.is_available() else "fp32")
    _, meta, record = _run(small_section, tiny, tmp_path / "b.pt", batch_size=batch_size, drop_last=False)
    assert meta["step"] == 2 * (n_pairs // batch_size + 1) and not record["drop_last"]


def test_bf16_autocast_follows_the_fp32_loss_curve(small_section, tiny, tmp_path):
    fp32, _, _ = _run(small_section, tiny, tmp_path / "f.pt", batch_size=16, device="cpu", precision="fp32")
    bf16, meta, record = _run(small_section, tiny, tmp_path / "b.pt", batch_size=16, device="cpu", precision="bf16")
    assert record["precision_used"] == "bfloat16 autocast"
    assert all(p.dtype == torch.float32 for p in bf16.model.parameters())  # fp32 master weights
    # bf16 rounds activations to 8 bits of mantissa: the loss curve agrees to ~1% on this run
    np.testing.assert_allclose(bf16.history, fp32.history, rtol=0.02)
    assert not np.array_equal(bf16.history, fp32.history)
    assert meta["scaler"] is None  # loss scaling only for fp16


def test_precision_and_batch_errors(small_section, tiny):
    with pytest.raises(ValueError, match="`precision` must be one of .*amp.*fp32.*bf16.*got 'fp16'"):
        oc.tl.finetune(small_section, model=tiny, precision="fp16")
    n_pairs = small_section.tables["table"].n_obs
    with pytest.raises(ValueError, match=rf"Only {n_pairs} pairs for `batch_size`={n_pairs + 1}.*drop_last=False"):
        oc.tl.finetune(small_section, model=tiny, batch_size=n_pairs + 1)
