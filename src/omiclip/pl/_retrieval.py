"""A query tile beside the reference tiles retrieved for it."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from anndata import AnnData

from omiclip._anndata import as_names, check_unique_names, get_table, is_spatialdata
from omiclip._docs import doc_params
from omiclip._keys import RETRIEVED_KEY, get_record, scores_key
from omiclip._validate import check_int
from omiclip.pl._utils import check_save, finish, panels

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from spatialdata import SpatialData

# longest side of a tile drawn in a panel: full resolution up to this, resampled beyond
_TILE_PX = 256


@doc_params
def retrieval(
    query: AnnData | SpatialData,
    reference: AnnData | SpatialData,
    *,
    obs: str | Sequence[str] | None = None,
    n: int = 5,
    key: str = RETRIEVED_KEY,
    image_key: str | None = None,
    reference_image_key: str | None = None,
    table_key: str | None = None,
    reference_table_key: str | None = None,
    ax: Sequence[Axes] | None = None,
    show: bool | None = None,
    return_fig: bool = False,
    save: str | os.PathLike | None = None,
) -> list[Axes] | Figure | None:
    """Query tiles, each followed by its ``n`` best reference tiles from :func:`omiclip.tl.retrieve`.

    One row per query observation; reference tiles are titled with their name and cosine similarity. Tiles
    are cut by :func:`omiclip.pp.tiles`, so both query and reference need their H&E image.

    Parameters
    ----------
    query
        SpatialData (or Visium AnnData) searched with :func:`omiclip.tl.retrieve`.
    reference
        The reference that was searched, with its image.
    obs
        Query observations to show (default: the first).
    n
        Reference tiles per query (at most the ``k`` retrieved).
    key
        ``key_added`` of the retrieval: positions ``.obsm[key]``, similarities ``.obsm[f"{key}_scores"]``.
    image_key
        Image of the query (default: its only image; ``"hires"`` for Visium AnnData).
    reference_image_key
        Image of the reference (likewise).
    {table_key}
    {reference_table_key}
    ax
        Axes to draw into, ``n + 1`` per query observation (default: a new figure).
    {show}
    {return_fig}
    {save}

    Returns
    -------
    The list of axes (row by row: the query tile, then its retrieved tiles best first) with ``show=False``; the
    Figure with ``return_fig=True``; else ``None``.
    """
    check_save(save)
    check_int("n", n, min=1)
    query_table = get_table(query, table_key)
    reference_table = get_table(reference, reference_table_key)
    for name in (key, scores_key(key)):
        if name not in query_table.obsm:
            raise KeyError(f"Did not find {name!r} in `.obsm`. Run `oc.tl.retrieve` first.")
    record = get_record(query_table, "retrieve", key, made_by="oc.tl.retrieve")
    if "reference_obs_names" not in record:
        raise KeyError(f"The record of `oc.tl.retrieve` for {key!r} lacks the reference's names; run it again.")
    retrieved = np.asarray(query_table.obsm[key])
    scores = np.asarray(query_table.obsm[scores_key(key)])
    if not 1 <= n <= retrieved.shape[1]:
        raise ValueError(f"`n` must be between 1 and the {retrieved.shape[1]} retrieved per query, got {n}.")
    check_unique_names(query_table, name="the query")
    shown = [query_table.obs_names[0]] if obs is None else ([obs] if isinstance(obs, str) else list(obs))
    if not shown:
        raise ValueError("`obs` is empty; pass the query observations to show.")
    rows = query_table.obs_names.get_indexer(shown)
    if (rows < 0).any():
        raise KeyError(f"Query observations {[o for o, r in zip(shown, rows, strict=True) if r < 0][:5]} not found.")
    reference_names = as_names(record["reference_obs_names"])
    picked = retrieved[rows, :n]
    if not np.issubdtype(picked.dtype, np.integer) or picked.min() < 0 or picked.max() >= len(reference_names):
        raise ValueError(
            f"`.obsm[{key!r}]` must hold positions in the searched reference (0 to {len(reference_names) - 1}); "
            "run `oc.tl.retrieve` again."
        )
    names = reference_names[picked]
    if not np.isin(names, reference_table.obs_names).all():
        raise KeyError("The retrieved observations are not in `reference`; pass the reference that was searched.")
    for data, which in ((query, "query"), (reference, "reference")):
        if not (data.images if is_spatialdata(data) else data.uns.get("spatial")):
            raise ValueError(
                f"Showing tiles needs the {which}'s H&E: a SpatialData with an image, or a Visium AnnData."
            )

    query_tiles = _read_tiles(query, shown, image_key, table_key)
    reference_tiles = _read_tiles(reference, names.ravel(), reference_image_key, reference_table_key)
    reference_tiles = reference_tiles.reshape(len(shown), n, *reference_tiles.shape[1:])
    fig, axes = panels(ax, len(shown) * (n + 1), ncols=n + 1, size=2.2)
    for i, name in enumerate(shown):
        row = axes[i * (n + 1) : (i + 1) * (n + 1)]
        _show_tile(row[0], query_tiles[i], f"query {name}")
        for j in range(n):
            _show_tile(row[j + 1], reference_tiles[i, j], f"{j + 1}. {names[i, j]}\n{scores[rows[i], j]:.3f}")
        for side in row[0].spines.values():
            side.set(visible=True, color="black", linewidth=2)
    return finish(fig, axes, show=show, return_fig=return_fig, save=save)


def _read_tiles(data, obs_names, image_key: str | None, table_key: str | None) -> np.ndarray:
    """``uint8 (len(obs_names), px, px, 3)`` tiles of these observations, at most ``_TILE_PX`` on a side."""
    from omiclip.pp import tiles

    source = tiles(data, image_key=image_key, table_key=table_key, um_per_px=None)
    if source.windows.window_px > _TILE_PX:
        source = tiles(
            data, image_key=image_key, table_key=table_key, um_per_px=source.params["tile_size_um"] / _TILE_PX
        )
    chosen = source.obs_names.get_indexer(obs_names)
    # a tile source of just these windows: only their pixels are read
    windows = dataclasses.replace(source.windows, origin=source.windows.origin[chosen])
    return dataclasses.replace(source, windows=windows, obs_names=source.obs_names[chosen]).to_array()


def _show_tile(ax, tile: np.ndarray, title: str) -> None:
    ax.imshow(tile)
    ax.set_xticks([])
    ax.set_yticks([])
    for side in ax.spines.values():
        side.set_visible(False)
    ax.set_title(title, fontsize="small")
