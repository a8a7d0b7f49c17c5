"""Embeddings: spots coloured by their embedding over the tissue, and UMAP/PCA maps of the embeddings."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd
from anndata import AnnData

from omiclip._anndata import check_not_empty, check_same_dim, get_rep, get_table
from omiclip._docs import doc_params
from omiclip._keys import SPATIAL_KEY, colors_key, embedding_key
from omiclip._validate import check_choice, check_int
from omiclip.pl._utils import (
    ONLY_IMAGE,
    Default,
    check_finite,
    check_layout,
    check_save,
    draw_background,
    finish,
    frame,
    keep_colors,
    panels,
    rgb_spots,
    spots,
)

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from spatialdata import SpatialData

# UMAP's spectral initialisation needs more points than its 2 dimensions + 1; fewer fail deep in scipy
_UMAP_MIN_POINTS = 4


def principal_components(embedding: np.ndarray, n: int) -> np.ndarray:
    """The first ``n`` principal components ``(n_obs, n)`` of an embedding (fewer if it has fewer dimensions)."""
    embedding = np.asarray(embedding, dtype=np.float64)
    if embedding.ndim != 2 or embedding.shape[0] < 2:
        raise ValueError(f"Need an (n_obs >= 2, dim) embedding, got shape {embedding.shape}.")
    check_finite(embedding, "The embedding")
    centred = embedding - embedding.mean(axis=0)
    components = np.linalg.svd(centred, full_matrices=False)[2][:n]
    return centred @ components.T


def pcs_as_rgb(embedding: np.ndarray) -> np.ndarray:
    """The first three principal components of an embedding, each min–max scaled to [0, 1], as RGB colours.

    Parameters
    ----------
    embedding
        ``(n_obs, n_dims)`` embedding.

    Returns
    -------
    ``(n_obs, 3)`` colours in [0, 1], for ``matplotlib``'s ``c=``; with fewer than three dimensions the missing
    channels are 0.
    """
    pcs = principal_components(embedding, 3)
    if pcs.shape[1] < 3:  # fewer than three dimensions: pad with grey
        pcs = np.pad(pcs, ((0, 0), (0, 3 - pcs.shape[1])))
    return (pcs - pcs.min(axis=0)) / np.maximum(np.ptp(pcs, axis=0), 1e-12)


@doc_params
def embedding_rgb(
    data: AnnData | SpatialData,
    *,
    use_rep: str = "X_omiclip_image",
    image_key: str | Default | None = ONLY_IMAGE,
    spatial_key: str = SPATIAL_KEY,
    table_key: str | None = None,
    size: float | None = None,
    title: str | None = None,
    ax: Axes | None = None,
    show: bool | None = None,
    return_fig: bool = False,
    save: str | os.PathLike | None = None,
) -> Axes | Figure | None:
    """Observations at their positions, coloured by the first three PCs of an embedding (as the paper's figures).

    Similar colours mean similar embeddings, so tissue regions that the model tells apart stand out.

    Parameters
    ----------
    data
        AnnData or SpatialData with ``.obsm[use_rep]`` and ``.obsm[spatial_key]``.
    use_rep
        Embedding in ``.obsm``.
    {image_key}
    {spatial_key}
    {table_key}
    {size}
    title
        Axes title (default: ``use_rep``).
    ax
        Matplotlib axes to draw into (default: a new figure).
    {show}
    {return_fig}
    {save}

    Returns
    -------
    The axes with ``show=False``; the Figure with ``return_fig=True``; else ``None``.
    """
    check_save(save)
    check_layout(size=size)
    table = get_table(data, table_key)
    where = spots(data, spatial_key=spatial_key, image_key=image_key, table_key=table_key, size=size)
    colours = pcs_as_rgb(get_rep(table, use_rep))
    fig, (ax,) = panels(ax, 1, size=5.0)
    if where.image is not None:
        draw_background(ax, where.image)
    rgb_spots(ax, where, colours)
    frame(ax, where.xy, where.diameter)
    ax.set_title(title or f"{use_rep} (PC1-3 as RGB)")
    return finish(fig, ax, show=show, return_fig=return_fig, save=save)


@doc_params
def embedding(
    data: AnnData | SpatialData,
    *,
    color: str | Sequence[str] | None = None,
    use_rep: str | Sequence[str] | None = None,
    basis: Literal["umap", "pca"] = "umap",
    n_neighbors: int = 15,
    seed: int = 0,
    size: float | None = None,
    table_key: str | None = None,
    ncols: int = 4,
    ax: Axes | Sequence[Axes] | None = None,
    show: bool | None = None,
    return_fig: bool = False,
    save: str | os.PathLike | None = None,
) -> list[Axes] | Figure | None:
    """A UMAP or PCA map of image and text embeddings, one panel per ``.obs`` key that colours it.

    Several embeddings (e.g. both modalities of the same spots) are mapped together, since they share one
    space, and get a last panel coloured by modality. The map is computed on a copy: ``data`` is not
    modified, except that the colours of a categorical ``color`` key go to ``.uns[f"{key}_colors"]`` when they
    are missing or do not fit, as scanpy writes them.

    Parameters
    ----------
    data
        AnnData or SpatialData with the embeddings.
    color
        ``.obs`` keys that colour the panels (default: none, one grey panel).
    use_rep
        ``.obsm`` embeddings to map together (default: those of ``"X_omiclip_image"`` and ``"X_omiclip_text"``
        that exist).
    basis
        ``"umap"`` (scanpy's neighbours and UMAP) or ``"pca"`` (the first two principal components).
    n_neighbors
        Neighbours of the UMAP graph.
    seed
        Seed of the UMAP.
    size
        Marker size (default: scanpy's).
    {table_key}
    {ncols}
    {ax}
    {show}
    {return_fig}
    {save}

    Returns
    -------
    The list of axes (one per ``color`` key, then the modality panel when several embeddings are mapped) with
    ``show=False``; the Figure with ``return_fig=True``; else ``None``.
    """
    import scanpy as sc

    check_save(save)
    check_layout(size=size, ncols=ncols)
    check_int("n_neighbors", n_neighbors, min=2)
    check_int("seed", seed, min=0)
    table = get_table(data, table_key)
    check_not_empty(table)
    reps = _embeddings_to_map(table, use_rep)
    embeddings = [get_rep(table, rep) for rep in reps]
    for rep, values in zip(reps[1:], embeddings[1:], strict=True):
        check_same_dim(embeddings[0], values, reps[0], rep)
    keys = [color] if isinstance(color, str) else list(color or [])
    for name in keys:
        if name not in table.obs:
            raise KeyError(f"Did not find {name!r} in `.obs`; colour by one of {list(table.obs.columns)[:10]}.")
    check_choice("basis", basis, ("umap", "pca"))
    n_points = table.n_obs * len(reps)
    if basis == "umap" and n_points < _UMAP_MIN_POINTS:
        raise ValueError(
            f"A UMAP needs at least {_UMAP_MIN_POINTS} points, got {n_points} ({table.n_obs} observations × "
            f"{len(reps)} embeddings); use `basis='pca'`."
        )

    mapped = _stacked(table, reps, keys)
    stacked = np.vstack(embeddings)
    if basis == "pca":
        mapped.obsm["X_pca"] = principal_components(stacked, 2)
    else:
        mapped.obsm["X_omiclip"] = stacked
        sc.pp.neighbors(mapped, use_rep="X_omiclip", n_neighbors=min(n_neighbors, len(stacked) - 1), random_state=seed)
        sc.tl.umap(mapped, random_state=seed)
    panel_keys = keys + (["modality"] if len(reps) > 1 else [])
    fig, axes = panels(ax, max(len(panel_keys), 1), ncols=ncols)
    for panel, key in zip(axes, panel_keys or [None], strict=True):
        title = key or f"{basis.upper()} of {', '.join(reps)}"
        sc.pl.embedding(mapped, basis=basis, color=key, size=size, ax=panel, title=title, show=False)
    for key in keys:  # the colours scanpy chose for a categorical, kept for the next plot
        if colors_key(key) in mapped.uns:
            keep_colors(table, key, list(mapped.uns[colors_key(key)]))
    return finish(fig, axes, show=show, return_fig=return_fig, save=save)


def _embeddings_to_map(table: AnnData, use_rep: str | Sequence[str] | None) -> list[str]:
    if use_rep is None:
        reps = [embedding_key(m) for m in ("image", "text") if embedding_key(m) in table.obsm]
        if not reps:
            raise KeyError("Did not find 'X_omiclip_image' or 'X_omiclip_text' in `.obsm`. Run `oc.tl.embed` first.")
        return reps
    reps = [use_rep] if isinstance(use_rep, str) else list(use_rep)
    if not reps:
        raise ValueError("`use_rep` is empty.")
    return reps


def _stacked(table: AnnData, reps: list[str], keys: list[str]) -> AnnData:
    """One observation per (embedding, spot), carrying the colour keys (and their colours) and the modality."""
    obs = pd.concat([table.obs[keys]] * len(reps), ignore_index=True)
    modality = [rep.removeprefix("X_omiclip_") for rep in reps]
    obs["modality"] = pd.Categorical(np.repeat(modality, table.n_obs), categories=modality)
    obs.index = [f"{m}:{name}" for m in modality for name in table.obs_names]
    mapped = AnnData(obs=obs)
    for key in keys:
        if colors_key(key) in table.uns:
            mapped.uns[colors_key(key)] = table.uns[colors_key(key)]
    return mapped
