from __future__ import annotations

import os
from typing import Literal

import torch
from anndata import AnnData

from omiclip import _logging as logg
from omiclip._anndata import (
    SENTENCE_KEY,
    UNS_KEY,
    check_not_empty,
    check_obs_key,
    embedding_key,
    get_table,
    record,
    working_copy,
)
from omiclip.models import Encoder, load
from omiclip.models._encoder import Precision


def embed(
    data,
    *,
    modality: Literal["text"] = "text",
    model: str | os.PathLike | Encoder = "omiclip",
    checkpoint: str | os.PathLike | None = None,
    sentence_key: str = SENTENCE_KEY,
    batch_size: int = 64,
    device: str | torch.device | None = None,
    precision: Precision = "fp32",
    key_added: str | None = None,
    table_key: str | None = None,
    progress: bool = True,
    copy: bool = False,
) -> AnnData | None:
    """Embed observations with OmiCLIP.

    With ``modality="text"`` each observation's gene sentence (from :func:`omiclip.pp.gene_sentences`)
    goes through the text tower.

    Parameters
    ----------
    data
        AnnData, or SpatialData (its table is used).
    modality
        ``"text"``: gene sentences.
    model
        A loaded :class:`~omiclip.models.Encoder`, a model name or a checkpoint path (see
        :func:`omiclip.models.load`).
    checkpoint
        Weights for a model given by name.
    sentence_key
        ``.obs`` column with the gene sentences.
    batch_size
        Observations per forward pass.
    device
        Where to run; ``None`` picks CUDA when present. An :class:`~omiclip.models.Encoder` is moved there.
    precision
        ``"fp32"``, or ``"bf16"``/``"fp16"`` autocast on CUDA.
    key_added
        ``.obsm`` key; default ``X_omiclip_{modality}``.
    table_key
        Table of a SpatialData object with several tables.
    progress
        Show a progress bar.
    copy
        Return a modified copy instead of writing into ``data``.

    Returns
    -------
    ``None``, or a copy of ``data`` when ``copy=True``. Writes to the table:

    ``.obsm["X_omiclip_text"]``
        ``float32`` embeddings ``(n_obs, embed_dim)`` with unit L2 norm.
    ``.uns["omiclip"]["embed"][key_added]``
        Model name, checkpoint path and SHA-256, parameters, and ``n_genes_in_context`` per observation.
    """
    if modality != "text":
        raise ValueError(f"modality must be 'text', got {modality!r}.")
    adata = get_table(data, table_key)
    check_not_empty(adata)
    check_obs_key(adata, sentence_key, made_by="oc.pp.gene_sentences")
    sentences = adata.obs[sentence_key]
    if sentences.isna().any():
        raise ValueError(f"`.obs[{sentence_key!r}]` has {int(sentences.isna().sum())} missing sentences.")
    if batch_size < 1:
        raise ValueError(f"`batch_size` must be positive, got {batch_size}.")
    encoder = _as_encoder(model, checkpoint=checkpoint, device=device)

    key = embedding_key(modality, key_added)
    start = logg.info(f"embedding {adata.n_obs} gene sentences with {encoder.name!r} on {encoder.device}")
    embeddings = encoder.encode_text(sentences.tolist(), batch_size=batch_size, precision=precision, progress=progress)
    n_in_context = encoder.genes_in_context(sentences)

    data = working_copy(data, copy)
    adata = get_table(data, table_key)
    adata.obsm[key] = embeddings
    runs = dict(adata.uns.get(UNS_KEY, {}).get("embed", {}))
    runs[key] = {
        "modality": modality,
        "key_added": key,
        "model": encoder.name,
        "architecture": encoder.architecture,
        "checkpoint": str(encoder.checkpoint) if encoder.checkpoint else None,
        "checkpoint_sha256": encoder.checkpoint_sha256,
        "seed": encoder.seed,
        "embed_dim": encoder.embed_dim,
        "sentence_key": sentence_key,
        "precision": precision,
        "n_genes_in_context": n_in_context,
    }
    record(adata, "embed", runs)
    logg.info("    finished", time=start, deep=f"added\n    {key!r}, {modality} embeddings (obsm)")
    return data if copy else None


def _as_encoder(model, *, checkpoint, device) -> Encoder:
    if isinstance(model, Encoder):
        if checkpoint is not None:
            raise ValueError("`checkpoint` applies to a model name; this Encoder is already loaded.")
        return model.to(device) if device is not None else model
    return load(model, checkpoint=checkpoint, device=device)
