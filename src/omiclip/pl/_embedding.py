from __future__ import annotations

import os

import numpy as np

from omiclip._anndata import get_rep, get_table


def pcs_as_rgb(embedding: np.ndarray) -> np.ndarray:
    """The first three principal components of an embedding, each min–max scaled to [0, 1], as RGB colours."""
    embedding = np.asarray(embedding, dtype=np.float64)
    if embedding.ndim != 2 or embedding.shape[0] < 2:
        raise ValueError(f"Need an (n_obs >= 2, dim) embedding, got shape {embedding.shape}.")
    centred = embedding - embedding.mean(axis=0)
    components = np.linalg.svd(centred, full_matrices=False)[2][:3]
    pcs = centred @ components.T
    if pcs.shape[1] < 3:  # fewer than three dimensions: pad with grey
        pcs = np.pad(pcs, ((0, 0), (0, 3 - pcs.shape[1])))
    return (pcs - pcs.min(axis=0)) / np.maximum(np.ptp(pcs, axis=0), 1e-12)


def embedding_rgb(
    data,
    *,
    use_rep: str = "X_omiclip_image",
    spatial_key: str = "spatial",
    table_key: str | None = None,
    size: float = 8.0,
    title: str | None = None,
    ax=None,
    save: str | os.PathLike | None = None,
):
    """Observations at their positions, coloured by the first three PCs of an embedding (as the paper's figures).

    Similar colours mean similar embeddings, so tissue regions that the model tells apart stand out.

    Parameters
    ----------
    data
        AnnData or SpatialData with ``.obsm[use_rep]`` and ``.obsm[spatial_key]``.
    use_rep
        Embedding in ``.obsm``.
    spatial_key
        Positions ``(x, y)`` in ``.obsm``.
    table_key
        Table of a SpatialData object with several tables.
    size
        Marker size.
    title
        Axes title (default: ``use_rep``).
    ax
        Matplotlib axes to draw into (default: a new figure).
    save
        Write the figure to this path.

    Returns
    -------
    The matplotlib axes.
    """
    import matplotlib.pyplot as plt

    table = get_table(data, table_key)
    colours = pcs_as_rgb(get_rep(table, use_rep))
    if spatial_key not in table.obsm:
        raise KeyError(f"Did not find {spatial_key!r} in `.obsm` (positions of the observations).")
    xy = np.asarray(table.obsm[spatial_key], dtype=float)
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 5))
    ax.scatter(xy[:, 0], xy[:, 1], c=colours, s=size)
    ax.set_aspect("equal")
    ax.invert_yaxis()  # image convention: y grows downwards
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title or f"{use_rep} (PC1-3 as RGB)")
    if save is not None:
        ax.figure.savefig(save, dpi=100, bbox_inches="tight")
    return ax
