"""What every omiclip plot shares: panels, positions, the H&E behind the spots, spot maps, colours, showing."""

from __future__ import annotations

import dataclasses
import enum
import os
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from anndata import AnnData

from omiclip._anndata import check_not_empty, check_unique_names, get_coordinates, get_table, is_spatialdata
from omiclip._keys import MICRONS_PER_UNIT_KEY, SPATIAL_KEY, colors_key
from omiclip._validate import check_int, check_number
from omiclip.pp._spot_geometry import VISIUM_SPOT_UM, recorded_positive, spot_size_name

# longest side of an H&E image drawn behind spots: sharp in a figure, never the whole slide in memory
BACKGROUND_PX = 2000
# an affine that places the image may miss a spot by at most this fraction of the spot size
_MAX_MISFIT = 0.25
_LIBRARY = "omiclip"
# spots over an image: opaque, with a thin white rim, so that low values (dark in most colour maps) stand out
# against purple H&E; without an image no rim
_RIM = {"edgecolor": "white", "linewidth": 0.4}


class Default(enum.Enum):
    """Arguments whose "not given" differs from ``None`` (scanpy's ``_empty``)."""

    IMAGE = "the only image"

    def __repr__(self) -> str:
        return f"<{self.value}>"


#: ``image_key`` not given: draw the image when the data hold exactly one (``None`` draws none)
ONLY_IMAGE = Default.IMAGE


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


def renamed(value, old_value, *, new: str, old: str):
    """The value of argument ``new``, or of its old name ``old`` (accepted for one release, with a FutureWarning)."""
    if old_value is None:
        return value
    if value is not None:
        raise ValueError(f"Pass `{new}=` only: `{old}=` is its old name.")
    warnings.warn(
        f"`{old}=` is now `{new}=`, as in scanpy and squidpy; `{old}=` goes in the next release.",
        FutureWarning,
        stacklevel=3,
    )
    return old_value


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


def finish(fig, axes, *, show: bool | None, return_fig: bool, save: str | os.PathLike | None):
    """Save, show and return as scanpy does: the Figure with ``return_fig``; else shown (``show=None``) or the axes.

    ``show=None`` shows the figure unless it is returned; a shown figure returns ``None``.
    """
    import matplotlib.pyplot as plt

    save_figure(fig, save)
    if show is None:
        show = not return_fig
    if show:
        plt.show()
    if return_fig:
        return fig
    return None if show else axes


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


def holds_one_image(data) -> bool:
    """Whether the image to draw is unambiguous: a SpatialData with one image, a Visium AnnData with one library."""
    if is_spatialdata(data):
        return len(data.images) == 1
    if isinstance(data, AnnData):
        libraries = data.uns.get("spatial") or {}
        return len(libraries) == 1 and bool(next(iter(libraries.values())).get("images"))
    return False


def image_behind(
    data, image_key: str | Default | None, *, spatial_key: str = SPATIAL_KEY, table_key: str | None = None
) -> Background | None:
    """The image to draw under the spots: ``image_key``; by default (:data:`ONLY_IMAGE`) the only one; ``None``: none.

    When the only image cannot be placed under the spots, the plot goes on without it and says why.
    """
    if image_key is None:
        return None
    if image_key is not ONLY_IMAGE:
        return background(data, image_key, spatial_key=spatial_key, table_key=table_key)
    if not holds_one_image(data):
        return None
    try:
        return background(data, None, spatial_key=spatial_key, table_key=table_key)
    except (KeyError, ValueError) as err:
        warnings.warn(
            f"Drawing without the image: {err} Pass `image_key=None` to leave the image out.", UserWarning, stacklevel=3
        )
        return None


def background(
    data, image_key: str | None, *, spatial_key: str = SPATIAL_KEY, table_key: str | None = None
) -> Background:
    """The image ``image_key`` (``None``: the only one) of ``data`` in the coordinates ``.obsm[spatial_key]``.

    Read through :func:`omiclip.pp.tiles`, so spots land on the image exactly as their tiles were cut. The
    affine from image pixels to ``spatial_key`` is fitted on the spots' tile centres, so it holds whatever
    the spots' coordinate systems are, and coordinates that are no affine image of the spots' are an error.
    """
    from omiclip.pp import tiles

    table = get_table(data, table_key)
    check_unique_names(table)
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
    spatial_key: str = SPATIAL_KEY,
    image_key: str | Default | None = ONLY_IMAGE,
    table_key: str | None = None,
    size: float | None = None,
) -> Spots:
    """Positions, size, shape and the image underneath of a table's spots (see :class:`Spots`).

    Spots are drawn at their physical size: ``size``, else the size of their tiles on the image, else the size the
    data record (:func:`recorded_diameter`); only when nothing records it, the median distance to the nearest
    spot.
    """
    table = get_table(data, table_key)
    xy = positions(table, spatial_key)
    image = image_behind(data, image_key, spatial_key=spatial_key, table_key=table_key)
    if size is not None:
        diameter = float(size)
    elif image is not None:
        diameter = image.spot_size
    else:
        diameter = recorded_diameter(data, table, xy) or _nearest_neighbour_distance(xy)
    return Spots(xy=xy, diameter=diameter, shape=_spot_shape(data, table), image=image)


def recorded_diameter(data, table: AnnData, xy: np.ndarray) -> float | None:
    """The spots' diameter (or square side) in the units of ``xy``, as the data record it, or ``None``.

    Read from the table's spot shapes (circles' radius, squares' side) in SpatialData; from Visium's
    ``spot_diameter_fullres`` in an AnnData, or its ``.uns["microns_per_unit"]`` and the 55 µm Visium spot. These
    are in the units of the shapes or of ``.obsm["spatial"]``; they are carried to ``xy`` by the affine between
    the two (so aligned coordinates get the size too), and left out when ``xy`` is no affine image of them.
    """
    recorded = _recorded_size(data, table)
    if recorded is None:
        return None
    diameter, own_xy = recorded
    move, misfit = _fit_affine(own_xy, xy) if len(xy) >= 3 else (np.eye(3), 0.0)
    diameter *= _scale(move)
    return diameter if misfit <= _MAX_MISFIT * diameter else None


def _recorded_size(data, table: AnnData) -> tuple[float, np.ndarray] | None:
    """A recorded spot diameter and the positions it is measured against (see :func:`recorded_diameter`)."""
    if is_spatialdata(data):
        from omiclip.pp._spot_geometry import spot_centres_and_size

        shapes_key = _region(data, table)
        instance_key = table.uns.get("spatialdata_attrs", {}).get("instance_key")
        if shapes_key is None or instance_key not in table.obs or len(data.shapes[shapes_key]) == 0:
            return None
        shapes = data.shapes[shapes_key]
        ids = table.obs[instance_key].to_numpy()
        if not pd.Index(ids).isin(shapes.index).all():
            return None
        centres, size = spot_centres_and_size(data, shapes.loc[ids], shapes_key)
        size = _positive_or_warn(size, spot_size_name(shapes_key, "radius" in shapes.columns))
        return None if size is None else (size, centres)
    if SPATIAL_KEY not in table.obsm:
        return None
    libraries = table.uns.get("spatial") or {}
    scalefactors = next(iter(libraries.values())).get("scalefactors", {}) if len(libraries) == 1 else {}
    own_xy = np.asarray(table.obsm[SPATIAL_KEY], dtype=np.float64)[:, :2]
    if "spot_diameter_fullres" in scalefactors:
        diameter = _positive_or_warn(scalefactors["spot_diameter_fullres"], "`spot_diameter_fullres`")
        return None if diameter is None else (diameter, own_xy)
    microns_per_unit = table.uns.get(MICRONS_PER_UNIT_KEY)
    if microns_per_unit is not None and {"array_row", "array_col"} <= set(table.obs.columns):  # a Visium table
        microns_per_unit = _positive_or_warn(microns_per_unit, f"`.uns[{MICRONS_PER_UNIT_KEY!r}]`")
        return None if microns_per_unit is None else (VISIUM_SPOT_UM / microns_per_unit, own_xy)
    return None


def _positive_or_warn(value, where: str) -> float | None:
    """A recorded size, or ``None`` with a warning when it is not a finite number > 0 (the plot goes on)."""
    try:
        return recorded_positive(value, where, fix="correct it, or pass `size=`")
    except ValueError as error:
        warnings.warn(
            f"{error} Meanwhile spots are drawn at the spacing of their neighbours.", UserWarning, stacklevel=6
        )  # stacklevel: the pl function's caller
        return None


def _region(data, table: AnnData) -> str | None:
    """The one shapes element a SpatialData table annotates, if any."""
    regions = np.atleast_1d(table.uns.get("spatialdata_attrs", {}).get("region", []))
    if len(regions) != 1 or str(regions[0]) not in data.shapes:
        return None
    return str(regions[0])


def _nearest_neighbour_distance(xy: np.ndarray) -> float:
    from scipy.spatial import cKDTree

    if len(xy) < 2:
        return 1.0
    distances = cKDTree(xy).query(xy, k=2)[0][:, 1]
    positive = distances[distances > 0]
    return float(np.median(positive)) if len(positive) else 1.0


def _spot_shape(data, table: AnnData) -> str:
    """Squares for tables of grid tiles (polygon shapes), circles otherwise."""
    region = _region(data, table) if is_spatialdata(data) else None
    if region is None:
        return "circle"
    shapes = data.shapes[region]
    return "circle" if "radius" in shapes or len(shapes) == 0 else "square"


def spot_panel(
    ax,
    where: Spots,
    values: pd.Series | np.ndarray,
    *,
    title: str,
    label: str | None = None,
    cmap: str | None = "viridis",
    vmin: float | None = None,
    vmax: float | None = None,
    alpha: float = 1.0,
    colors_of: tuple[AnnData, str] | None = None,
) -> None:
    """One value per spot, drawn by squidpy's ``spatial_scatter`` over the optional H&E image.

    squidpy places images only by a scale factor, so the image (which may need a rotation) is drawn here
    first and squidpy only adds the spots. Numbers get a colour bar titled ``label``, as tall as the map.
    A categorical takes its colours from ``.uns[f"{key}_colors"]`` of ``colors_of = (table, key)`` and, as
    scanpy does, writes them there when they are missing or do not fit.
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
    if colors_of is not None and colors_key(colors_of[1]) in colors_of[0].uns:
        plotted.uns["value_colors"] = list(colors_of[0].uns[colors_key(colors_of[1])])
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
        alpha=alpha,
        frameon=False,
        colorbar=False,
        **(_RIM if where.image is not None else {}),
    )
    frame(ax, where.xy, where.diameter)
    if isinstance(values.dtype, pd.CategoricalDtype):
        if colors_of is not None:
            keep_colors(colors_of[0], colors_of[1], list(plotted.uns["value_colors"]))
    else:
        colorbar(ax, ax.collections[-1], label)


def rgb_spots(ax, where: Spots, colours, *, scale: float = 1.0, **style):
    """Spots coloured by an RGB colour each, at ``scale`` times their diameter in data units (over the image, if any).

    squidpy colours spots by one value, not by an RGB colour each, so these are a matplotlib collection of circles
    sized in data units (``units="xy"``), as squidpy's are.
    """
    from matplotlib.collections import EllipseCollection

    diameter = np.full(len(where.xy), scale * where.diameter)
    if where.image is not None:
        style = {**_RIM, **style}
    collection = EllipseCollection(
        diameter,
        diameter,
        np.zeros(len(where.xy)),
        units="xy",
        offsets=where.xy,
        offset_transform=ax.transData,
        facecolors=colours,
        **style,
    )
    ax.add_collection(collection)
    return collection


def keep_colors(table: AnnData, key: str, colors: list) -> None:
    """Write the colours scanpy chose for ``.obs[key]`` to the table, unless the same are there."""
    stored = table.uns.get(colors_key(key))
    if stored is None or list(stored) != colors:
        table.uns[colors_key(key)] = colors


def colorbar(ax, mappable, label: str | None):
    """A colour bar beside ``ax``, exactly as tall as the map (a fixed-aspect map is shorter than its axes)."""
    bar = ax.figure.colorbar(mappable, cax=ax.inset_axes([1.03, 0.0, 0.04, 1.0]))
    if label:
        bar.set_label(label)
    return bar
