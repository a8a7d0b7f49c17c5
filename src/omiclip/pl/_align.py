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
    ONLY_IMAGE,
    Default,
    background,
    carried,
    check_finite,
    check_layout,
    check_save,
    draw_background,
    finish,
    frame,
    has_image,
    image_behind,
    panels,
    positions,
    rgb_spots,
    spots,
)

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from mpl_toolkits.mplot3d import Axes3D
    from spatialdata import SpatialData

# section colours when no embedding colours them; the legend shows them, or grey when an embedding colours spots
_SOURCE, _TARGET, _BY_EMBEDDING = "tab:red", "tab:blue", "0.6"
# the target as pale discs of the spots' size, the source as smaller dots on top, so both stay visible
_TARGET_ALPHA, _SOURCE_SCALE = 0.35, 0.6


@doc_params
def alignment(
    source: AnnData | SpatialData,
    target: AnnData | SpatialData,
    *,
    key: str = ALIGNED_KEY,
    spatial_key: str = SPATIAL_KEY,
    use_rep: str | None = "X_omiclip_text",
    target_rep: str | None = None,
    image_key: str | Default | None = ONLY_IMAGE,
    table_key: str | None = None,
    size: float | None = None,
    ax: Sequence[Axes] | None = None,
    show: bool | None = None,
    return_fig: bool = False,
    save: str | os.PathLike | None = None,
) -> list[Axes] | Figure | None:
    """The source section over the target before and after :func:`omiclip.tl.align`.

    Spots are coloured by the first three principal components of both sections' embeddings, computed
    together and mapped to RGB (as the paper's figures), so matching tissue has matching colours; the target
    is drawn as pale discs of its spots' size, the source as dots of 0.6 times its spots' size on top.

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
        a section without it is drawn without). Not given: each section's only image, when it holds exactly one;
        ``None``: no image. After alignment the source image is moved with its spots when they moved rigidly
        (affine); after a non-rigid alignment it is left out.
    table_key
        Table of a SpatialData source with several tables.
    size
        Spot diameter of both sections in the units of their coordinates (default: their physical size, as
        :func:`omiclip.pl.annotation` finds it).
    ax
        Two axes to draw into (default: a new figure).
    {show}
    {return_fig}
    {save}

    Returns
    -------
    The two axes (before and after alignment) with ``show=False``; the Figure with ``return_fig=True``; else
    ``None``.
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
    source_image, target_image = _section_images(source, target, image_key, spatial_key, table_key)
    where = {
        name: spots(data, spatial_key=xy_key, image_key=None, table_key=table, size=size)
        for name, data, xy_key, table in (
            ("before", source, spatial_key, table_key),
            ("after", source, key, table_key),
            ("target", target, spatial_key, None),
        )
    }

    fig, axes = panels(ax, 2, ncols=2, size=5.0)
    moved_image = carried(source_image, source_xy, aligned_xy) if source_image is not None else None
    for panel, xy, moved, image, title in (
        (axes[0], source_xy, where["before"], source_image, "before alignment"),
        (axes[1], aligned_xy, where["after"], moved_image, "after alignment"),
    ):
        if target_image is not None:
            draw_background(panel, target_image)
        if image is not None:
            draw_background(panel, image, alpha=0.5)
        rgb_spots(panel, where["target"], target_colours, alpha=_TARGET_ALPHA, linewidths=0)
        rgb_spots(panel, moved, source_colours, scale=_SOURCE_SCALE, edgecolors="black", linewidths=0.2)
        both = np.vstack([xy, target_xy])
        frame(panel, both, 0.03 * np.ptp(both, axis=0).max())
        panel.set_title(title)
        _legend(panel, by_embedding=use_rep is not None)
    return finish(fig, axes, show=show, return_fig=return_fig, save=save)


def _section_images(source, target, image_key, spatial_key: str, table_key: str | None):
    """The source's and the target's image to draw (either may be ``None``); see ``image_key`` of :func:`alignment`."""
    if image_key is None or image_key is ONLY_IMAGE:
        return (
            image_behind(source, image_key, spatial_key=spatial_key, table_key=table_key),
            image_behind(target, image_key, spatial_key=spatial_key),
        )
    if not (has_image(source, image_key) or has_image(target, image_key)):
        raise KeyError(f"Neither section has an image {image_key!r}.")
    source_image = target_image = None
    if has_image(source, image_key):
        source_image = background(source, image_key, spatial_key=spatial_key, table_key=table_key)
    if has_image(target, image_key):
        target_image = background(target, image_key, spatial_key=spatial_key)
    return source_image, target_image


def _legend(ax, *, by_embedding: bool) -> None:
    """A legend drawn as the spots are: the target's pale discs, the source's black-rimmed dots.

    Their colours are the sections' (red, blue), or a neutral grey when the embedding colours each spot.
    """
    from matplotlib.lines import Line2D

    target, source = (_BY_EMBEDDING, _BY_EMBEDDING) if by_embedding else (_TARGET, _SOURCE)
    handles = [
        Line2D([], [], ls="", marker="o", ms=9, mfc=target, mew=0, alpha=_TARGET_ALPHA, label="target"),
        Line2D([], [], ls="", marker="o", ms=9 * _SOURCE_SCALE, mfc=source, mec="black", mew=0.4, label="source"),
    ]
    ax.legend(handles=handles, loc="upper right", fontsize="small")


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
    ax: Axes3D | None = None,
    show: bool | None = None,
    return_fig: bool = False,
    save: str | os.PathLike | None = None,
) -> Axes3D | Figure | None:
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
    {show}
    {return_fig}
    {save}

    Returns
    -------
    The 3-D axes with ``show=False``; the Figure with ``return_fig=True``; else ``None``.
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
    return finish(ax.figure, ax, show=show, return_fig=return_fig, save=save)


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
