"""What every omiclip plot shares: panels, positions, the H&E behind the spots, spot maps, saving."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

import numpy as np
import pandas as pd
from anndata import AnnData

from omiclip._anndata import check_not_empty, get_coordinates, get_table, is_spatialdata
from omiclip._validate import check_int, check_number

# longest side of an H&E image drawn behind spots: sharp in a figure, never the whole slide in memory
BACKGROUND_PX = 2000
# an affine that places the image may miss a spot by at most this fraction of the spot size
_MAX_MISFIT = 0.25
_LIBRARY = "omiclip"


def panels(ax, n: int, *, ncols: int = 4, size: float = 4.0):
    """The figure and ``n`` axes: new ones in a grid, or the caller's (an Axes for one panel, else a sequence)."""
    import matplotlib.pyplot as plt

    if ax is None:
        ncols = min(ncols, n)
        nrows = -(-n // ncols)
        fig, grid = plt.subplots(
            nrows, ncols, figsize=(size * ncols, size * nrows), squeeze=False, layout="constrained"
        )
        axes = list(grid.ravel())
        for unused in axes[n:]:
            unused.remove()
        return fig, axes[:n]
    axes = list(np.ravel(np.asarray(ax, dtype=object)))
    if len(axes) != n:
        raise ValueError(f"This plot has {n} panels, but `ax` holds {len(axes)} axes.")
    return axes[0].figure, axes


def check_layout(*, size: float | None = None, ncols: int | None = None) -> None:
    """The marker size (``None``: the default) and panels per row, checked before drawing."""
    if size is not None:
        check_number("size", size, min=0, min_inclusive=False)
    if ncols is not None:
        check_int("ncols", ncols, min=1)


def check_save(save: str | os.PathLike | None) -> None:
    """Fail before drawing, not after, when the figure could not be written to ``save``."""
    if not isinstance(save, str | os.PathLike):  # None, or a file object that matplotlib writes to
        return
    folder = os.path.dirname(os.fspath(save))
    if folder and not os.path.isdir(folder):
        raise FileNotFoundError(
            f"Cannot save to {os.fspath(save)!r}: the folder {folder!r} does not exist; create it first."
        )


def save_figure(fig, save: str | os.PathLike | None) -> None:
    """Write the figure when a path is given."""
    if save is not None:
        fig.savefig(save, dpi=150, bbox_inches="tight")


def positions(table: AnnData, key: str, *, made_by: str | None = None) -> np.ndarray:
    """``(n_obs, 2)`` x/y from ``.obsm[key]`` (the first two columns of 3-D coordinates), all finite.

    Limits, spot sizes and image placement need every position, so NaN/inf rows are an error, as is an empty table.
    """
    check_not_empty(table)
    return get_coordinates(table, key, made_by=made_by, first_two=True)


def check_finite(values: np.ndarray, where: str) -> None:
    """Values that colour spots (or give a correlation) must be finite: a NaN has no colour and makes the PCC NaN."""
    values = np.asarray(values, dtype=np.float64)
    bad = int((~np.isfinite(values)).reshape(len(values), -1).any(axis=1).sum())
    if bad:
        raise ValueError(f"{where} has {bad} rows with NaN/inf, which have no colour; drop those observations first.")


def frame(ax, xy: np.ndarray, pad: float) -> None:
    """Limits around the points, image orientation (y grows downwards), equal aspect, no ticks."""
    lo, hi = np.nanmin(xy, axis=0) - pad, np.nanmax(xy, axis=0) + pad
    ax.set_xlim(lo[0], hi[0])
    ax.set_ylim(hi[1], lo[1])
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_xlabel("")
    ax.set_ylabel("")


@dataclass(frozen=True)
class Background:
    """An H&E image placed in a table's coordinates.

    Attributes
    ----------
    image
        ``uint8 (h, w, 3)`` thumbnail of the image.
    size
        ``(width, height)`` of the full-resolution image; the thumbnail spans it.
    to_table
        3×3 affine from full-resolution pixel ``(x, y)`` to the table's coordinates.
    spot_size
        Side of one spot's tile (the spot diameter, or a grid tile's side) in the table's units.
    """

    image: np.ndarray
    size: tuple[int, int]
    to_table: np.ndarray
    spot_size: float


def has_image(data, image_key: str) -> bool:
    """Whether ``data`` holds the image ``image_key`` (a SpatialData element or a Visium AnnData image)."""
    if is_spatialdata(data):
        return image_key in data.images
    if isinstance(data, AnnData):
        libraries = data.uns.get("spatial") or {}
        return any(image_key in (library.get("images") or {}) for library in libraries.values())
    return False


def background(data, image_key: str, *, spatial_key: str = "spatial", table_key: str | None = None) -> Background:
    """The image ``image_key`` of ``data`` in the coordinates ``.obsm[spatial_key]`` of its table.

    Read through :func:`omiclip.pp.tiles`, so spots land on the image exactly as their tiles were cut. The
    affine from image pixels to ``spatial_key`` is fitted on the spots' tile centres, so it holds whatever
    the spots' coordinate systems are, and coordinates that are no affine image of the spots' are an error.
    """
    from omiclip.pp import tiles

    table = get_table(data, table_key)
    xy = positions(table, spatial_key)
    full = tiles(data, image_key=image_key, table_key=table_key, um_per_px=None)
    height, width = full.level.shape
    # a second tile source only to pick the coarsest pyramid level that still gives BACKGROUND_PX
    display_um_per_px = full.level.um_per_px * max(1.0, max(height, width) / BACKGROUND_PX)
    coarse = tiles(data, image_key=image_key, table_key=table_key, um_per_px=display_um_per_px)
    image = coarse.level.thumbnail(BACKGROUND_PX).transpose(1, 2, 0)

    centres = full.windows.origin[:, ::-1] + full.windows.window_px / 2  # (x, y) in full-resolution pixels
    to_table, misfit = _fit_affine(centres, xy[table.obs_names.get_indexer(full.obs_names)])
    spot_size = full.windows.window_px * _scale(to_table)
    if misfit > _MAX_MISFIT * spot_size:
        raise ValueError(
            f"`.obsm[{spatial_key!r}]` is not an affine image of where the spots lie on image {image_key!r} (off by "
            f"up to {misfit:.3g}); draw the image with the spots' own coordinates as `spatial_key`."
        )
    return Background(image=image, size=(width, height), to_table=to_table, spot_size=float(spot_size))


def carried(image: Background, before: np.ndarray, after: np.ndarray) -> Background | None:
    """The image moved as the spots moved from ``before`` to ``after``, or ``None`` if that move is not affine."""
    move, misfit = _fit_affine(before, after)
    spot_size = image.spot_size * _scale(move)
    if misfit > _MAX_MISFIT * spot_size:
        return None
    return dataclasses.replace(image, to_table=move @ image.to_table, spot_size=spot_size)


def _fit_affine(source: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, float]:
    """Least-squares 3×3 affine taking ``source`` points to ``target`` points, and its largest miss."""
    design = np.column_stack([source, np.ones(len(source))])
    coefficients, _, rank, _ = np.linalg.lstsq(design, target, rcond=None)
    if rank < 3:
        raise ValueError("Placing an image needs at least three spots that do not lie on one line.")
    misfit = float(np.max(np.linalg.norm(design @ coefficients - target, axis=1)))
    return np.vstack([coefficients.T, [0.0, 0.0, 1.0]]), misfit


def _scale(affine: np.ndarray) -> float:
    """Length scale of an affine (geometric mean of its axes' stretch)."""
    return float(np.sqrt(abs(np.linalg.det(affine[:2, :2]))))


def draw_background(ax, image: Background, *, alpha: float = 1.0, zorder: float = 0) -> None:
    """Draw the image under whatever the axes show, through its affine (rotations included)."""
    from matplotlib.transforms import Affine2D

    width, height = image.size
    drawn = ax.imshow(image.image, extent=(0, width, height, 0), alpha=alpha, zorder=zorder, interpolation="auto")
    drawn.set_transform(Affine2D(image.to_table) + ax.transData)


@dataclass(frozen=True)
class Spots:
    """Where and how large the spots of a table are drawn.

    Attributes
    ----------
    xy
        ``(n_obs, 2)`` positions.
    diameter
        Spot diameter (or square side), in the units of ``xy``.
    shape
        ``"circle"`` for spots, ``"square"`` for grid tiles.
    image
        The H&E image behind them, if any.
    """

    xy: np.ndarray
    diameter: float
    shape: str
    image: Background | None


def spots(
    data,
    *,
    spatial_key: str = "spatial",
    image_key: str | None = None,
    table_key: str | None = None,
    size: float | None = None,
) -> Spots:
    """Positions, size, shape and the optional image of a table's spots (see :class:`Spots`).

    Without an image or ``size``, the diameter is the median distance to the nearest spot, which fills the
    tissue the way an image would.
    """
    table = get_table(data, table_key)
    xy = positions(table, spatial_key)
    image = background(data, image_key, spatial_key=spatial_key, table_key=table_key) if image_key else None
    if size is not None:
        diameter = float(size)
    elif image is not None:
        diameter = image.spot_size
    else:
        diameter = _nearest_neighbour_distance(xy)
    return Spots(xy=xy, diameter=diameter, shape=_spot_shape(data, table), image=image)


def _nearest_neighbour_distance(xy: np.ndarray) -> float:
    from scipy.spatial import cKDTree

    if len(xy) < 2:
        return 1.0
    distances = cKDTree(xy).query(xy, k=2)[0][:, 1]
    positive = distances[distances > 0]
    return float(np.median(positive)) if len(positive) else 1.0


def _spot_shape(data, table: AnnData) -> str:
    """Squares for tables of grid tiles (polygon shapes), circles otherwise."""
    if not is_spatialdata(data):
        return "circle"
    regions = np.atleast_1d(table.uns.get("spatialdata_attrs", {}).get("region", []))
    if len(regions) != 1 or str(regions[0]) not in data.shapes:
        return "circle"
    shapes = data.shapes[str(regions[0])]
    return "circle" if "radius" in shapes or len(shapes) == 0 else "square"


def spot_panel(
    ax,
    where: Spots,
    values: pd.Series | np.ndarray,
    *,
    title: str,
    cmap: str | None = "viridis",
    vmin: float | None = None,
    vmax: float | None = None,
    alpha: float | None = None,
    colors: list[str] | None = None,
) -> None:
    """One value per spot, drawn by squidpy's ``spatial_scatter`` over the optional H&E image.

    squidpy places images only by a scale factor, so the image (which may need a rotation) is drawn here
    first and squidpy only adds the spots; ``colors`` are the categories' colours of a categorical.
    """
    import squidpy as sq

    if where.image is not None:
        draw_background(ax, where.image)
    values = pd.Series(values).set_axis(np.arange(len(where.xy)).astype(str))  # keeps a categorical's order
    if values.dtype == object:
        values = values.astype("category")
    plotted = AnnData(obs=pd.DataFrame({"value": values}))
    plotted.obsm["spatial"] = where.xy
    plotted.uns["spatial"] = {
        _LIBRARY: {"images": {}, "scalefactors": {"spot_diameter_fullres": where.diameter, "tissue_hires_scalef": 1.0}}
    }
    if colors is not None:
        plotted.uns["value_colors"] = list(colors)
    sq.pl.spatial_scatter(
        plotted,
        color="value",
        shape=where.shape,
        img=False,
        library_id=_LIBRARY,
        ax=ax,
        title=title,
        cmap=cmap,
        vmin=vmin,
        vmax=vmax,
        alpha=alpha if alpha is not None else (0.7 if where.image is not None else 1.0),
        frameon=False,
    )
    frame(ax, where.xy, where.diameter)
