import numpy as np
import pytest
import torch

import omiclip as oc
from omiclip._anndata import working_copy


@pytest.fixture(scope="module")
def small_section():
    sdata = oc.datasets.synthetic_tissue(size_um=1000, um_per_px=2.0, seed=4)
    oc.pp.gene_sentences(sdata)
    return sdata


def _weights(encoder):
    return {k: v.detach().clone() for k, v in encoder.model.state_dict().items()}


def test_resume_repeats_the_uninterrupted_run(small_section, tiny, tmp_path, monkeypatch):
    from omiclip.tl import _finetune

    before = _weights(tiny)
    kwargs = {"model": tiny, "epochs": 3, "lr": 1e-4, "batch_size": 16, "warmup": 2, "seed": 3, "progress": False}
    straight = oc.tl.finetune(small_section, **kwargs)

    save = _finetune.save_checkpoint

    def crash_after_second_epoch(path, model, **meta):
        save(path, model, **meta)
        if meta["epoch"] == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(_finetune, "save_checkpoint", crash_after_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        oc.tl.finetune(small_section, save=tmp_path / "ft.pt", **kwargs)
    monkeypatch.undo()
    resumed = oc.tl.finetune(small_section, resume=tmp_path / "ft.pt", **kwargs)
    for name, weight in _weights(straight).items():
        torch.testing.assert_close(weight, resumed.model.state_dict()[name], rtol=0, atol=0, msg=name)
    assert resumed.history == straight.history and len(straight.history) == 3
    # the model passed in is not modified
    for name, weight in _weights(tiny).items():
        assert torch.equal(weight, before[name]), name
    assert small_section.tables["table"].uns["omiclip"]["finetune"]["omiclip-tiny"]["epochs"] == 3


def test_checkpoint_reloads_and_freeze(small_section, tiny, tmp_path):
    tuned = oc.tl.finetune(
        small_section,
        model=tiny,
        epochs=1,
        lr=1e-4,
        batch_size=16,
        freeze="image",
        save=tmp_path / "m.pt",
        progress=False,
    )
    reloaded = oc.models.load(tmp_path / "m.pt")
    sentences = ["EPCAM KRT8 ERBB2", "COL1A1 DCN"]
    np.testing.assert_array_equal(reloaded.encode_text(sentences), tuned.encode_text(sentences))
    assert torch.equal(tuned.model.visual.conv1.weight, tiny.model.visual.conv1.weight)  # frozen tower
    assert not torch.equal(tuned.model.text.token_embedding.weight, tiny.model.text.token_embedding.weight)


def test_errors(small_section, tiny, tmp_path):
    with pytest.raises(ValueError, match="freeze"):
        oc.tl.finetune(small_section, model=tiny, freeze="both")
    for bad in ({"lr": -1.0}, {"lr": float("nan")}, {"weight_decay": -0.1}, {"warmup": -1}, {"warmup": 1.5}):
        (name,) = bad
        with pytest.raises(ValueError, match=f"`{name}` must be"):
            oc.tl.finetune(small_section, model=tiny, **bad)
    bare = working_copy(small_section, copy=True)
    del bare.tables["table"].obs["gene_sentence"]
    with pytest.raises(KeyError, match="gene_sentences"):
        oc.tl.finetune(bare, model=tiny)
    oc.models.save_checkpoint(tmp_path / "plain.pt", tiny.model, model_name="omiclip-tiny")
    with pytest.raises(ValueError, match="not a fine-tuning checkpoint"):
        oc.tl.finetune(small_section, model=tiny, resume=tmp_path / "plain.pt", progress=False)


def test_training_from_scratch_learns_to_retrieve(tiny, trained):
    """On synthetic tissue, fine-tuning the tiny model lifts held-out image->text retrieval far above chance."""
    sdata, held_out, tuned = trained
    table = sdata.tables["table"]

    def recall(image, text):
        return oc.metrics.recall_at_k(image[held_out], text[held_out], 0.1)

    untrained = working_copy(sdata, copy=True)
    for modality in ("text", "image"):
        oc.tl.embed(untrained, modality=modality, model=tiny, progress=False)
    before = recall(untrained.tables["table"].obsm["X_omiclip_image"], untrained.tables["table"].obsm["X_omiclip_text"])
    after = recall(table.obsm["X_omiclip_image"], table.obsm["X_omiclip_text"])
    assert tuned.history[-1] < tuned.history[0]
    assert before < 0.2  # chance is 0.1
    assert after > 0.3 and after > before + 0.15, (before, after, tuned.history)
