"""Aligned sections: source over target before and after, and a stack of sections seen from the side."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from anndata import AnnData

from omiclip._anndata import check_same_dim, get_rep, get_table
from omiclip._docs import doc_params
from omiclip._keys import ALIGNED_KEY, SPATIAL_KEY, stack_key
from omiclip._validate import check_number
from omiclip.pl._embedding import pcs_as_rgb
from omiclip.pl._utils import (
    background,
    carried,
    check_finite,
    check_layout,
    check_save,
    draw_background,
    frame,
    has_image,
    panels,
    positions,
    save_figure,
)

if TYPE_CHECKING:
    from mpl_toolkits.mplot3d import Axes3D
    from spatialdata import SpatialData

# section colours when no embedding colours them
_SOURCE, _TARGET = "tab:red", "tab:blue"


@doc_params
def alignment(
    source: AnnData | SpatialData,
    target: AnnData | SpatialData,
    *,
    key: str = ALIGNED_KEY,
    spatial_key: str = SPATIAL_KEY,
    use_rep: str | None = "X_omiclip_text",
    target_rep: str | None = None,
    image_key: str | None = None,
    table_key: str | None = None,
    size: float = 8.0,
    ax=None,
    save: str | os.PathLike | None = None,
) -> list:
    """The source section over the target before and after :func:`omiclip.tl.align`.

    Spots are coloured by the first three principal components of both sections' embeddings, computed
    together and mapped to RGB (as the paper's figures), so matching tissue has matching colours; the target
    is drawn as large pale discs, the source as small dots on top.

    Parameters
    ----------
    source
        AnnData or SpatialData aligned by :func:`omiclip.tl.align`.
    target
        The target it was aligned to.
    key
        ``.obsm`` key of the source's aligned coordinates (``"spatial_aligned_nonrigid"`` for the CPD result).
    spatial_key
        Both sections' own coordinates in ``.obsm``.
    use_rep
        Source embedding that colours the spots; ``None`` colours the sections red (source) and blue (target).
    target_rep
        Target embedding (default ``use_rep``), e.g. ``"X_omiclip_text"`` with an image ``use_rep``.
    image_key
        Draw the sections' images of this name underneath (the target's opaque, the source's half transparent;
        a section without it is drawn without). After alignment the source image is moved with its spots when
        they moved rigidly (affine); after a non-rigid alignment it is left out.
    table_key
        Table of a SpatialData source with several tables.
    size
        Marker size of the source (the target's is three times larger).
    ax
        Two axes to draw into (default: a new figure).
    {save}

    Returns
    -------
    The two axes: before and after alignment.
    """
    check_save(save)
    check_layout(size=size)
    source_table, target_table = get_table(source, table_key), get_table(target)
    source_xy = positions(source_table, spatial_key)
    target_xy = positions(target_table, spatial_key)
    aligned_xy = positions(source_table, key, made_by="oc.tl.align")
    if use_rep is None:
        source_colours, target_colours = _SOURCE, _TARGET
    else:
        source_emb = get_rep(source_table, use_rep)
        target_emb = get_rep(target_table, target_rep or use_rep)
        check_same_dim(source_emb, target_emb, use_rep, target_rep or use_rep)
        colours = pcs_as_rgb(np.vstack([source_emb, target_emb]))
        source_colours, target_colours = colours[: len(source_emb)], colours[len(source_emb) :]
    source_image = target_image = None
    if image_key is not None:
        if not (has_image(source, image_key) or has_image(target, image_key)):
            raise KeyError(f"Neither section has an image {image_key!r}.")
        if has_image(source, image_key):
            source_image = background(source, image_key, spatial_key=spatial_key, table_key=table_key)
        if has_image(target, image_key):
            target_image = background(target, image_key, spatial_key=spatial_key)

    fig, axes = panels(ax, 2, ncols=2, size=5.0)
    moved_image = carried(source_image, source_xy, aligned_xy) if source_image is not None else None
    for panel, xy, image, title in (
        (axes[0], source_xy, source_image, "before alignment"),
        (axes[1], aligned_xy, moved_image, "after alignment"),
    ):
        if target_image is not None:
            draw_background(panel, target_image)
        if image is not None:
            draw_background(panel, image, alpha=0.5)
        # plain matplotlib: squidpy colours spots by one value, not by an RGB colour each, nor two tables at once
        panel.scatter(*target_xy.T, c=target_colours, s=3 * size, alpha=0.35, linewidths=0, label="target")
        panel.scatter(*xy.T, c=source_colours, s=size, edgecolors="black", linewidths=0.2, label="source")
        both = np.vstack([xy, target_xy])
        frame(panel, both, 0.03 * np.ptp(both, axis=0).max())
        panel.set_title(title)
        panel.legend(loc="upper right", fontsize="small", markerscale=1.5)
    save_figure(fig, save)
    return axes


@doc_params
def alignment_stack(
    sections: Sequence[AnnData | SpatialData],
    *,
    key: str = ALIGNED_KEY,
    use_rep: str | None = "X_omiclip_text",
    z_spacing: float | None = None,
    table_key: str | None = None,
    size: float = 4.0,
    elev: float = 15.0,
    azim: float = -60.0,
    ax=None,
    save: str | os.PathLike | None = None,
) -> Axes3D:
    """Serial sections aligned by :func:`omiclip.tl.align_stack`, stacked in 3-D and seen from the side.

    Spots are coloured by the first three principal components of all sections' embeddings, computed
    together, so a tissue region that runs through the stack keeps its colour from section to section.

    Parameters
    ----------
    sections
        AnnData or SpatialData objects in stack order.
    key
        ``.obsm`` key of the aligned coordinates; ``{key}_3d`` (written with ``z_spacing``) gives the heights.
    use_rep
        Embedding that colours the spots; ``None`` gives each section its own colour.
    z_spacing
        Distance between consecutive sections in the plot (default: their ``{key}_3d`` heights, else a fifth
        of the sections' width). The z axis is stretched to be readable either way.
    table_key
        Table of SpatialData sections with several tables.
    size
        Marker size.
    elev
        Elevation of the view in degrees (0: exactly from the side).
    azim
        Azimuth of the view in degrees.
    ax
        A 3-D axes to draw into (``fig.add_subplot(projection="3d")``; default: a new figure).
    {save}

    Returns
    -------
    The 3-D axes.
    """
    import matplotlib.pyplot as plt

    check_save(save)
    check_layout(size=size)
    check_number("elev", elev)
    check_number("azim", azim)
    if z_spacing is not None:
        check_number("z_spacing", z_spacing, min=0, min_inclusive=False)
    if len(sections) < 2:
        raise ValueError(f"A stack needs at least 2 sections, got {len(sections)}.")
    if ax is not None and getattr(ax, "name", None) != "3d":
        raise ValueError("`ax` must be a 3-D axes: `fig.add_subplot(projection='3d')`.")
    tables = [get_table(section, table_key) for section in sections]
    xys = [positions(table, key, made_by="oc.tl.align_stack") for table in tables]
    heights = _heights(tables, xys, key, z_spacing)
    if use_rep is None:
        colours = [f"C{i % 10}" for i in range(len(tables))]
    else:
        embeddings = [get_rep(table, use_rep) for table in tables]
        for embedding in embeddings[1:]:
            check_same_dim(embeddings[0], embedding, use_rep, use_rep)
        colours = np.split(pcs_as_rgb(np.vstack(embeddings)), np.cumsum([len(e) for e in embeddings])[:-1])

    if ax is None:
        ax = plt.figure(figsize=(7, 6)).add_subplot(projection="3d")
    for xy, z, colour in zip(xys, heights, colours, strict=True):
        ax.scatter(xy[:, 0], xy[:, 1], z, c=colour, s=size, depthshade=False, linewidths=0)
    everything = np.vstack(xys)
    width = np.ptp(everything, axis=0)
    ax.set_box_aspect((width[0], width[1], 0.6 * width.max()))
    ax.invert_yaxis()  # image convention: y grows downwards
    ax.set_xticks([])
    ax.set_yticks([])
    levels = [float(np.median(z)) for z in heights]
    ax.set_zticks(levels, [str(i) for i in range(len(levels))])
    ax.set_zlabel("section")
    ax.view_init(elev=elev, azim=azim)
    ax.set_title(f"{len(tables)} aligned sections")
    save_figure(ax.figure, save)
    return ax


def _heights(tables, xys, key: str, z_spacing: float | None) -> list[np.ndarray]:
    """Each section's spot heights: its ``{key}_3d`` z, or its position in the stack times a spacing."""
    stacked = stack_key(key)
    if z_spacing is None and all(stacked in table.obsm for table in tables):
        heights = []
        for table in tables:
            xyz = np.asarray(table.obsm[stacked], dtype=np.float64)
            if xyz.ndim != 2 or xyz.shape[0] != table.n_obs or xyz.shape[1] < 3:
                raise ValueError(
                    f"`.obsm[{stacked!r}]` must be (n_obs, 3) x/y/z coordinates, got shape {xyz.shape}; "
                    "pass `z_spacing=` to stack the sections without it."
                )
            check_finite(xyz[:, 2], f"`.obsm[{stacked!r}]`")
            heights.append(xyz[:, 2])
        return heights
    if z_spacing is None:
        z_spacing = np.ptp(np.vstack(xys), axis=0).max() / 5
    return [np.full(len(xy), i * z_spacing) for i, xy in enumerate(xys)]
