from __future__ import annotations

import os
import warnings
from typing import TYPE_CHECKING, Literal

import torch
from anndata import AnnData

from omiclip import _logging as logg
from omiclip._anndata import check_not_empty, check_obs_key, get_table, working_copy
from omiclip._docs import doc_params
from omiclip._keys import SENTENCE_KEY, claim, embedding_key, record
from omiclip._validate import check_choice, check_int
from omiclip.models import Encoder
from omiclip.models._encoder import Precision, check_precision
from omiclip.pp._tiles import HIRES_UM_PER_PX, Tiles
from omiclip.pp._tiles import tiles as tiles_of
from omiclip.tl import _distributed as distributed
from omiclip.tl._model import resolve_encoder

if TYPE_CHECKING:
    from distributed import Client
    from spatialdata import SpatialData


@doc_params
def embed(
    data: AnnData | SpatialData,
    *,
    modality: Literal["text", "image"] = "text",
    model: str | os.PathLike | Encoder = "omiclip",
    checkpoint: str | os.PathLike | None = None,
    sentence_key: str = SENTENCE_KEY,
    tiles: Tiles | None = None,
    image_key: str | None = None,
    tile_size_um: float | None = None,
    um_per_px: float | None = HIRES_UM_PER_PX,
    microns_per_unit: float | None = None,
    batch_size: int = 64,
    device: str | torch.device | None = None,
    precision: Precision = "fp32",
    key_added: str | None = None,
    table_key: str | None = None,
    client: Client | None = None,
    progress: bool = True,
    copy: bool = False,
) -> AnnData | SpatialData | None:
    """Embed observations with OmiCLIP: gene sentences (``"text"``) or H&E tiles (``"image"``).

    Parameters
    ----------
    data
        AnnData, or SpatialData (its table is used). For images: SpatialData, or AnnData in the Visium layout.
    modality
        ``"text"``: each observation's gene sentence (see :func:`omiclip.pp.gene_sentences`).
        ``"image"``: each observation's tile (see :func:`omiclip.pp.tiles`).
    {model}
    {checkpoint}
    sentence_key
        ``.obs`` column with the gene sentences.
    tiles
        Tiles from :func:`omiclip.pp.tiles` (e.g. a whole-slide grid); by default spot tiles are made
        with ``image_key``, ``tile_size_um`` and ``um_per_px``. Embeddings go to the tiles' table.
    image_key, tile_size_um, um_per_px, microns_per_unit
        Passed to :func:`omiclip.pp.tiles` when ``tiles`` is not given (``microns_per_unit``: µm per unit of the
        spots' coordinates, for data whose scale is neither stored nor recorded by its reader).
    batch_size
        Observations per forward pass.
    device
        Where to run; ``None`` picks CUDA when present. An :class:`~omiclip.models.Encoder` is moved there.
        With ``client``: the device on each worker (``None``: CUDA where the worker has it).
    precision
        ``"fp32"`` (official); ``"bf16"``: bfloat16 weights and inputs on CPU, autocast on CUDA; ``"fp16"``:
        autocast on CUDA; ``"auto"``: bf16 on CUDA and on CPUs with native bf16 (AMX/AVX-512 BF16), else
        fp32 (see :meth:`omiclip.models.Encoder.encode_text`). With ``client``, each worker resolves ``"auto"``.
    key_added
        ``.obsm`` key; default ``X_omiclip_{modality}``.
    {table_key}
    client
        A :class:`dask.distributed.Client`: tiles are read and encoded on its workers (images only). Each
        worker reads its own windows straight from the image's zarr store, so ``data`` must be read from zarr
        (:func:`spatialdata.read_zarr`), and loads the model once from ``model`` and ``checkpoint`` (a
        fine-tuned :class:`~omiclip.models.Encoder` must have been saved: pass its checkpoint path). Results
        equal the single-process ones, in the same order. GPU clusters: one worker per GPU (dask-cuda).
    {progress}
    {copy}

    Returns
    -------
    ``None``, or a copy of ``data`` when ``copy=True``. Writes to the table:

    ``.obsm["X_omiclip_text"]`` or ``.obsm["X_omiclip_image"]``
        ``float32`` embeddings ``(n_obs, embed_dim)`` with unit L2 norm.
    ``.uns["omiclip"]["embed"][key_added]``
        Model name, checkpoint path and SHA-256, parameters (``precision_used``: what ``precision`` resolved
        to, without ``client``); for text ``n_genes_in_context`` per
        observation, for images the tile size, resolution and number of padded tiles.
    """
    check_choice("modality", modality, ("text", "image"))
    if client is not None and modality == "text":
        raise ValueError("`client` distributes image tiles; embed gene sentences without it (they are cheap).")
    _check_encoding(batch_size, precision)
    if modality == "text":
        adata = get_table(data, table_key)
        check_not_empty(adata)
        check_obs_key(adata, sentence_key, made_by="oc.pp.gene_sentences")
        sentences = adata.obs[sentence_key]
        if sentences.isna().any():
            raise ValueError(f"`.obs[{sentence_key!r}]` has {int(sentences.isna().sum())} missing sentences.")
        n_empty = int((sentences.astype(str).str.strip() == "").sum())
        if n_empty:
            warnings.warn(
                f"{n_empty} of {len(sentences)} sentences in `.obs[{sentence_key!r}]` are empty: they all get the "
                "same embedding, which says nothing about the observation. Write padded sentences with "
                "`oc.pp.gene_sentences(..., pad=True)` (the default), or drop those observations first.",
                UserWarning,
                stacklevel=2,
            )
    else:
        if tiles is None:
            tiles = tiles_of(
                data,
                image_key=image_key,
                table_key=table_key,
                tile_size_um=tile_size_um,
                um_per_px=um_per_px,
                microns_per_unit=microns_per_unit,
            )
        table_key = tiles.table_key
        adata = tiles.new_table if tiles.new_table is not None else get_table(data, table_key)
        if not tiles.obs_names.equals(adata.obs_names):
            raise ValueError("The tiles belong to other observations than the table: make them from this object.")
    key = embedding_key(modality, key_added)
    claim(adata, [("obsm", key)], step="embed")
    if client is None:
        encoder = resolve_encoder(model, checkpoint=checkpoint, device=device)
        facts, where = distributed.model_facts(encoder), str(encoder.device)
        precision_used = encoder.resolve_precision(precision)
    else:
        worker_model = distributed.worker_model(model, checkpoint=checkpoint, device=device)
        read_region = distributed.zarr_regions(tiles.level.array, tiles.level.value_scale)
        facts, precision_used = distributed.describe(client, worker_model, precision)
        where = f"{len(client.nthreads())} dask workers"

    what = "gene sentences" if modality == "text" else "tiles"
    start = logg.info(f"embedding {adata.n_obs} {what} with {facts['model']!r} on {where}")
    if modality == "text":
        embeddings = encoder.encode_text(
            sentences.tolist(), batch_size=batch_size, precision=precision, progress=progress
        )
        details = {"sentence_key": sentence_key, "n_genes_in_context": encoder.genes_in_context(sentences)}
    else:
        if client is None:
            embeddings = encoder.encode_image_batches(
                tiles.batches(batch_size), len(tiles), precision=precision, progress=progress
            )
        else:
            embeddings = distributed.embed_windows(
                client,
                tiles.windows,
                read_region,
                worker_model,
                batch_size=batch_size,
                precision=precision,
                progress=progress,
            )
        details = {**tiles.params, "n_padded": tiles.n_padded}

    data = working_copy(data, copy)
    if modality == "image" and tiles.new_table is not None and table_key not in data.tables:
        data.tables[table_key] = tiles.new_table.copy()  # tiles with no table (LazySlide's): theirs, made here
    adata = get_table(data, table_key)
    adata.obsm[key] = embeddings
    record(
        adata,
        "embed",
        key,
        {
            "modality": modality,
            "key_added": key,
            **facts,
            "precision": precision,
            "precision_used": precision_used,
            **details,
        },
    )
    logg.finished(start, [(key, f"{modality} embeddings (obsm)")])
    return data if copy else None


def _check_encoding(batch_size: int, precision: str) -> None:
    """The encoding arguments of :func:`embed`, checked before any model is loaded."""
    check_int("batch_size", batch_size, min=1)
    check_precision(precision)
