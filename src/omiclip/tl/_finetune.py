from __future__ import annotations

import copy
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch

from omiclip import _logging as logg
from omiclip._anndata import check_obs_key, get_table
from omiclip._core.contrastive import TrainingState, train_contrastive
from omiclip._docs import doc_params
from omiclip._keys import SENTENCE_KEY, record
from omiclip._validate import check_choice, check_int, check_number
from omiclip.io._paths import check_writable
from omiclip.models import Encoder
from omiclip.models._checkpoint import check_finite, model_name_in, read_checkpoint, save_checkpoint, state_dict_of
from omiclip.pp._tiles import HIRES_UM_PER_PX
from omiclip.pp._tiles import tiles as tiles_of
from omiclip.tl._model import resolve_device, resolve_encoder

if TYPE_CHECKING:
    from spatialdata import SpatialData

# official fine-tunes: RandomResizedCrop(scale 0.9-1) plus colour jitter, no grey scale
_OFFICIAL_AUGMENTATION = {
    "scale": (0.9, 1.0),
    "color_jitter": (0.32, 0.32, 0.32, 0.08),
    "color_jitter_prob": 0.5,
    "gray_scale_prob": 0.0,
}

# autocast dtype per device type (absent: fp32). OpenCLIP's `--precision amp` is CUDA autocast (fp16, with a
# GradScaler); on CPU it does nothing, so the official CPU run is fp32.
_TRAINING_PRECISIONS = {
    "amp": {"cuda": torch.float16},
    "fp32": {},
    "bf16": {"cuda": torch.bfloat16, "cpu": torch.bfloat16},
}


@doc_params
def finetune(
    data: SpatialData | Sequence[SpatialData],
    *,
    model: str | os.PathLike | Encoder = "omiclip",
    checkpoint: str | os.PathLike | None = None,
    image_key: str | None = None,
    tile_size_um: float | None = None,
    um_per_px: float | None = HIRES_UM_PER_PX,
    sentence_key: str = SENTENCE_KEY,
    table_key: str | None = None,
    epochs: int = 10,
    batch_size: int = 64,
    lr: float = 5e-6,
    weight_decay: float = 0.1,
    warmup: int = 10,
    freeze: Literal["image", "text"] | None = None,
    augment: bool = True,
    seed: int = 0,
    device: str | torch.device | None = None,
    precision: Literal["amp", "fp32", "bf16"] = "amp",
    drop_last: bool = True,
    save: str | os.PathLike | None = None,
    resume: str | os.PathLike | None = None,
    trust_checkpoint: bool = False,
    progress: bool = True,
) -> Encoder:
    """Fine-tune OmiCLIP contrastively on the (tile, gene sentence) pairs of one or more sections.

    The loss is the symmetric contrastive loss of the paper's equation (1) with open_clip's learnable
    temperature; the caption loss is off, as in every official fine-tune. Defaults follow the official
    runs: AdamW (weight decay 0.1), lr 5e-6 with a 10-step warm-up and cosine decay, batch 64, 10 epochs,
    random resized crops (scale 0.9–1) and colour jitter, the last partial batch of each epoch dropped and
    OpenCLIP's ``--precision amp`` (fp16 autocast with loss scaling on CUDA; fp32 on CPU). A model trained from scratch (``omiclip-tiny``)
    needs a much larger learning rate (~5e-4).

    Parameters
    ----------
    data
        A SpatialData section with an H&E image, spots and gene sentences, or a list of them.
    model
        The model to start from (an :class:`~omiclip.models.Encoder`, a name or a checkpoint path). It is
        copied: the given Encoder is not changed.
    {checkpoint}
    image_key, tile_size_um, um_per_px
        How spot tiles are cut (see :func:`omiclip.pp.tiles`).
    sentence_key
        ``.obs`` column with gene sentences (see :func:`omiclip.pp.gene_sentences`).
    {table_key}
    epochs
        Passes over the pairs (in total, counting those of a resumed run).
    batch_size
        Pairs per step (each pair's negatives are the other pairs of its batch).
    lr
        Peak learning rate.
    weight_decay
        AdamW weight decay (not applied to biases, norms and the temperature).
    warmup
        Linear warm-up steps.
    freeze
        ``"image"`` or ``"text"`` keeps that tower fixed.
    augment
        Apply the official training augmentations (else the plain eval transform).
    seed
        Seed of the pair order and augmentations: the same seed gives the same model.
    device
        Where to train; ``None`` picks CUDA when present.
    precision
        ``"amp"`` (official, OpenCLIP's ``--precision amp``): fp16 autocast with gradient scaling on CUDA;
        on CPU OpenCLIP's AMP is a no-op, so fp32. ``"fp32"``: fp32 everywhere. ``"bf16"``: bf16 autocast
        (CUDA or CPU; on CPU only faster where the CPU has native bf16, see ``docs/benchmarks.md``). Weights and
        optimizer state stay fp32 in every case.
    drop_last
        Drop each epoch's last partial batch, as OpenCLIP's loader does (official); ``False`` trains it too
        (when it has at least 2 pairs).
    save
        Write a checkpoint (OpenCLIP layout plus optimizer state) after every epoch; readable by
        :func:`omiclip.models.load` and by ``resume``.
    resume
        Continue from a checkpoint written with ``save`` (read with ``weights_only=True``, as
        :func:`omiclip.models.load` reads checkpoints).
    trust_checkpoint
        Read ``resume`` (and ``model``/``checkpoint`` given as files) by full unpickling, which runs whatever
        code the file names: only for files from a source you trust.
    {progress}

    Returns
    -------
    The fine-tuned :class:`~omiclip.models.Encoder` (``.history``: mean loss per epoch). Writes
    ``.uns["omiclip"]["finetune"][name]`` (parameters and loss history; ``name``: the model started from) to each
    section's table.
    """
    sections = list(data) if isinstance(data, Sequence) and not isinstance(data, str) else [data]
    if not sections:
        raise ValueError("No sections to fine-tune on.")
    check_choice("freeze", freeze, (None, "image", "text"))
    check_int("epochs", epochs, min=1)
    check_int("batch_size", batch_size, min=2)
    check_number("lr", lr, min=0, min_inclusive=False)
    check_number("weight_decay", weight_decay, min=0)
    check_int("warmup", warmup, min=0)
    check_choice("precision", precision, tuple(_TRAINING_PRECISIONS))
    check_int("seed", seed, min=0)
    if save is not None:
        check_writable(save)
    pairs_tiles, pairs_sentences = [], []
    for section in sections:
        table = get_table(section, table_key)
        check_obs_key(table, sentence_key, made_by="oc.pp.gene_sentences")
        spot_tiles = tiles_of(
            section, image_key=image_key, table_key=table_key, tile_size_um=tile_size_um, um_per_px=um_per_px
        )
        pairs_tiles.extend(spot_tiles.to_array())
        if table.obs[sentence_key].isna().any():
            raise ValueError(f"`.obs[{sentence_key!r}]` has missing sentences.")
        pairs_sentences.extend(table.obs[sentence_key].astype(str).tolist())
    if len(pairs_tiles) < 2:
        raise ValueError(f"Fine-tuning needs at least 2 pairs, got {len(pairs_tiles)}.")
    if drop_last and len(pairs_tiles) < batch_size:
        raise ValueError(
            f"Only {len(pairs_tiles)} pairs for `batch_size`={batch_size}: with `drop_last=True` (OpenCLIP's loader) "
            "no full batch is left to train on. Lower `batch_size`, or pass `drop_last=False`."
        )

    # a loaded Encoder stays where it is (device=None); a name is loaded on the CPU, then copied over
    base = resolve_encoder(
        model,
        checkpoint=checkpoint,
        device=None if isinstance(model, Encoder) else "cpu",
        trust_checkpoint=trust_checkpoint,
    )
    encoder = copy.deepcopy(base)  # the caller's model stays as it was, on its device
    encoder.device = resolve_device(device)
    state = _resume(resume, encoder, trust_checkpoint=trust_checkpoint) if resume is not None else TrainingState()

    autocast_dtype = _TRAINING_PRECISIONS[precision].get(encoder.device.type)
    transform = _train_transform(encoder) if augment else encoder.preprocess
    params = {
        "model": encoder.name,
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "weight_decay": weight_decay,
        "warmup": warmup,
        "freeze": freeze or "none",
        "augment": augment,
        "seed": seed,
        "precision": precision,
        "precision_used": "fp32"
        if autocast_dtype is None
        else f"{str(autocast_dtype).removeprefix('torch.')} autocast",
        "drop_last": drop_last,
        "n_pairs": len(pairs_tiles),
    }

    def write_checkpoint(current: TrainingState) -> None:
        if save is not None:
            save_checkpoint(
                save,
                encoder.model,
                model_name=encoder.name,
                epoch=current.epoch,
                step=current.step,
                history=list(current.history),
                optimizer=current.optimizer,
                scaler=current.scaler,
                params=params,
            )

    start = logg.info(f"fine-tuning {encoder.name!r} on {len(pairs_tiles)} pairs for {epochs} epochs")
    state = train_contrastive(
        encoder.model,
        pairs_tiles,
        pairs_sentences,
        tokenizer=encoder.tokenizer,
        transform=transform,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        weight_decay=weight_decay,
        warmup=warmup,
        freeze=freeze,
        seed=seed,
        device=encoder.device,
        autocast_dtype=autocast_dtype,
        drop_last=drop_last,
        state=state,
        on_epoch_end=write_checkpoint,
        progress=progress,
    )
    encoder.history = list(state.history)
    encoder.checkpoint = Path(save) if save is not None else None
    encoder.__dict__.pop("checkpoint_sha256", None)  # the weights changed
    encoder.seed = None
    encoder.trust_checkpoint = False  # the weights are ours now; a saved file is plain weights
    for section in sections:
        record(get_table(section, table_key), "finetune", base.name, {**params, "loss": np.asarray(state.history)})
    checkpoint_note = f"; checkpoint {save}" if save is not None else ""
    logg.finished(start, note=f"loss {state.history[0]:.3f} -> {state.history[-1]:.3f}{checkpoint_note}")
    return encoder


def _train_transform(encoder: Encoder):
    import open_clip

    with warnings.catch_warnings():  # open_clip applies the jitter but still calls those keys "unused"
        warnings.filterwarnings("ignore", message="Unused augmentation cfg items")
        return open_clip.image_transform(
            encoder.image_size,
            is_train=True,
            mean=open_clip.OPENAI_DATASET_MEAN,
            std=open_clip.OPENAI_DATASET_STD,
            aug_cfg=_OFFICIAL_AUGMENTATION,
        )


def _resume(path, encoder: Encoder, *, trust_checkpoint: bool) -> TrainingState:
    content = read_checkpoint(path, trust=trust_checkpoint)
    meta = content.get("omiclip", {})
    if model_name_in(content) != encoder.name or "optimizer" not in meta:
        raise ValueError(f"{path} is not a fine-tuning checkpoint of {encoder.name!r} written with `save=`.")
    state = state_dict_of(content)
    check_finite(state, path=path)
    encoder.model.load_state_dict(state)
    return TrainingState(
        epoch=meta["epoch"],
        step=meta["step"],
        optimizer=meta["optimizer"],
        history=meta["history"],
        scaler=meta.get("scaler"),
    )
