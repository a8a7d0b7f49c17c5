from __future__ import annotations

import os
import time
import warnings
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from omiclip import _logging as logg
from omiclip._keys import embedding_key, grid_key, table_of_shapes
from omiclip._validate import check_number
from omiclip.io import recover, write_elements
from omiclip.io._zarr import read_store
from omiclip.models import Encoder
from omiclip.models._encoder import Precision, check_precision
from omiclip.pp._tiles import HIRES_UM_PER_PX
from omiclip.pp._tiles import tiles as tiles_of
from omiclip.tl import _distributed as distributed
from omiclip.tl._embed import _check_encoding, embed
from omiclip.tl._model import resolve_encoder

if TYPE_CHECKING:
    from distributed import Client


def embed_cohort(
    data: Sequence[str | os.PathLike] | str | os.PathLike,
    *,
    model: str | os.PathLike | Encoder = "omiclip",
    checkpoint: str | os.PathLike | None = None,
    image_key: str | None = None,
    table_key: str | None = None,
    tile_size_um: float | None = None,
    um_per_px: float | None = HIRES_UM_PER_PX,
    grid: bool = False,
    min_tissue: float = 0.5,
    batch_size: int = 64,
    device: str | torch.device | None = None,
    precision: Precision = "fp32",
    key_added: str | None = None,
    client: Client | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> pd.DataFrame:
    """Embed the H&E tiles of many slides, one SpatialData zarr store each, writing results into each store.

    Resumable: a store whose table already has the embedding is skipped (unless ``overwrite``), and results
    are written to a store only once its slide is fully embedded (see :func:`omiclip.io.write_elements`),
    so an interrupted run is continued by running it again. A slide that fails is reported in the summary
    and the others go on; the model is loaded once for all slides (on each worker with ``client``).

    Parameters
    ----------
    data
        Paths of SpatialData zarr stores.
    model, checkpoint
        The model, as in :func:`omiclip.tl.embed`.
    image_key, table_key, tile_size_um, um_per_px, grid, min_tissue
        Which tiles, as in :func:`omiclip.pp.tiles` (the same for every store): spot tiles of a table, or
        with ``grid=True`` a grid over the tissue (written to the store as shapes and a table too).
    batch_size, device, precision, key_added
        As in :func:`omiclip.tl.embed`.
    client
        A :class:`dask.distributed.Client` to read and encode each slide's tiles on its workers; ``None``
        embeds in this process.
    overwrite
        Embed stores that already have ``key_added`` again.
    progress
        Show progress bars (stores, and tiles of the current store).

    Returns
    -------
    A summary with one row per store (index: the path): ``status`` (``"embedded"``, ``"skipped"``: already
    had the embedding, ``"failed"``), ``table``, ``n_tiles``, ``seconds`` and ``error``. Writes into each
    embedded store's table ``.obsm["X_omiclip_image"]`` and ``.uns["omiclip"]["embed"]``, as
    :func:`omiclip.tl.embed` does, and with ``grid=True`` the grid shapes and table.
    """
    stores = [Path(data)] if isinstance(data, str | os.PathLike) else [Path(path) for path in data]
    if not stores:
        raise ValueError("No stores to embed: pass the paths of SpatialData zarr stores.")
    # wrong arguments would fail every store alike: refuse them once, before loading the model
    _check_encoding(batch_size, precision)
    check_number("min_tissue", min_tissue, min=0, max=1)
    missing = [str(path) for path in stores if not path.is_dir()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} of {len(stores)} stores do not exist, e.g. {missing[:3]}.")
    if len({path.resolve() for path in stores}) < len(stores):
        raise ValueError("Some stores are listed twice.")
    if client is None:  # load once for all slides
        model, checkpoint, device = resolve_encoder(model, checkpoint=checkpoint, device=device), None, None
        check_precision(precision, model.device)
    else:  # a model the workers cannot load fails here, once, not once per slide
        distributed.describe(client, distributed.worker_model(model, checkpoint=checkpoint, device=device), precision)

    key = embedding_key("image", key_added)
    tiling = {
        "image_key": image_key,
        "table_key": table_key,
        "tile_size_um": tile_size_um,
        "um_per_px": um_per_px,
        "grid": grid,
        "min_tissue": min_tissue,
    }
    embedding = {
        "model": model,
        "checkpoint": checkpoint,
        "batch_size": batch_size,
        "device": device,
        "precision": precision,
        "key_added": key,
        "client": client,
        "progress": progress,
    }
    start = logg.info(f"embedding the tiles of {len(stores)} stores")
    rows = []
    with tqdm(stores, desc="stores", unit="store", disable=not progress) as bar:
        for store in bar:
            began = time.perf_counter()
            try:
                row = _embed_store(store, key, overwrite, tiling, embedding)
            except Exception as err:  # noqa: BLE001 - one bad slide must not stop a cohort: it goes in the summary
                row = {"status": "failed", "error": f"{type(err).__name__}: {err}"}
                logg.warning(f"{store}: {row['error']}")
            rows.append({"store": str(store), **row, "seconds": time.perf_counter() - began})
            bar.set_postfix(Counter(r["status"] for r in rows))
    summary = pd.DataFrame(rows, columns=["store", "status", "table", "n_tiles", "seconds", "error"])
    summary = summary.set_index("store").astype({"n_tiles": "Int64"})
    counts = Counter(summary["status"])
    note = ", ".join(f"{counts[status]} {status}" for status in ("embedded", "skipped", "failed"))
    logg.finished(start, note=note)
    if counts["failed"]:
        warnings.warn(
            f"{counts['failed']} of {len(stores)} stores failed (see the summary's `error` column); "
            "fix them and run again: finished stores are skipped.",
            UserWarning,
            stacklevel=2,
        )
    return summary


def _embed_store(store: Path, key: str, overwrite: bool, tiling: dict, embedding: dict) -> dict:
    recover(store)  # a write cut short by a crash is undone first
    sdata = read_store(store)
    done = _result_table(sdata, tiling)
    if not overwrite and done in sdata.tables and key in sdata.tables[done].obsm:
        return {"status": "skipped", "table": done, "n_tiles": sdata.tables[done].n_obs}
    tiles = tiles_of(sdata, **tiling)
    embed(sdata, modality="image", tiles=tiles, **embedding)
    elements = [tiles.table_key]
    if tiling["grid"]:  # the grid's squares are new too: write them before the table that annotates them
        elements[:0] = np.atleast_1d(sdata.tables[tiles.table_key].uns["spatialdata_attrs"]["region"]).tolist()
    write_elements(sdata, elements)
    return {"status": "embedded", "table": tiles.table_key, "n_tiles": len(tiles)}


def _result_table(sdata, tiling: dict) -> str | None:
    """The table the embeddings go to, when it can be told without tiling (else ``None``: not done)."""
    if tiling["grid"]:
        image = tiling["image_key"] or (next(iter(sdata.images)) if len(sdata.images) == 1 else None)
        return table_of_shapes(grid_key(image)) if image else None  # the table oc.pp.tiles(grid=True) adds
    return tiling["table_key"] or (next(iter(sdata.tables)) if len(sdata.tables) == 1 else None)
