from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from anndata import AnnData

from omiclip import _logging as logg
from omiclip._anndata import check_not_empty, get_table, is_spatialdata
from omiclip._core.tiling import (
    TileWindows,
    centred_windows,
    grid_centers,
    iter_tiles,
    tissue_mask,
)
from omiclip._keys import MICRONS_PER_UNIT_KEY, grid_key, table_of_shapes

if TYPE_CHECKING:
    from spatialdata import SpatialData

# OmiCLIP was trained on Visium "hires" crops: a 55 µm spot is ~16.5 px there, about 3.3 µm per pixel
HIRES_UM_PER_PX = 3.3
VISIUM_SPOT_UM = 55.0
# a pyramid level this close to the wanted resolution is read as is (no resampling)
_LEVEL_TOLERANCE = 0.15


@dataclass(frozen=True)
class Level:
    """One resolution of an image: a ``(c, y, x)`` array (Dask or NumPy) and its pixel size."""

    array: Any
    um_per_px: float

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(int(s) for s in self.array.shape[1:])

    def thumbnail(self, max_px: int = 2048) -> np.ndarray:
        """The level subsampled to at most ``max_px`` on a side (strided read: never the whole image)."""
        step = max(1, int(np.ceil(max(self.shape) / max_px)))
        thumb = self.array[:3, ::step, ::step]
        return np.asarray(thumb.compute() if hasattr(thumb, "compute") else thumb)

    def read(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        region = self.array[:, y0:y1, x0:x1]
        return np.asarray(region.compute() if hasattr(region, "compute") else region)


@dataclass(frozen=True)
class Tiles:
    """A lazy set of square H&E tiles, one per observation of a table.

    Made by :func:`omiclip.pp.tiles`. Nothing is read until tiles are asked for.

    Attributes
    ----------
    windows
        Read windows in the pixel grid of the chosen pyramid level.
    level
        The pyramid level read.
    obs_names
        Observation (row) of the table each tile belongs to, in tile order.
    table_key
        SpatialData table the tiles belong to (``None`` for AnnData).
    params
        What was asked for and what was chosen (tile size, resolution, level), for ``.uns``.
    """

    windows: TileWindows
    level: Level
    obs_names: pd.Index
    table_key: str | None
    params: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.windows)

    @property
    def n_padded(self) -> int:
        """Tiles that cross the image border and were padded with white."""
        return int(self.windows.crosses_border.sum())

    def batches(self, batch_size: int = 64) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield ``(indices, tiles)``: tile positions and ``uint8 (b, px, px, 3)`` arrays, block by block."""
        return iter_tiles(self.windows, self.level.read, batch_size=batch_size)

    def to_array(self) -> np.ndarray:
        """All tiles in order, ``uint8 (n, px, px, 3)`` (for spot tiles; whole-slide grids should stream)."""
        out = np.empty((len(self), self.windows.out_px, self.windows.out_px, 3), dtype=np.uint8)
        for indices, tiles in self.batches(256):
            out[indices] = tiles
        return out


def tiles(
    data: AnnData | SpatialData,
    *,
    image_key: str | None = None,
    shapes_key: str | None = None,
    table_key: str | None = None,
    tile_size_um: float | None = None,
    um_per_px: float | None = HIRES_UM_PER_PX,
    microns_per_unit: float | None = None,
    grid: bool = False,
    min_tissue: float = 0.5,
    library_id: str | None = None,
) -> Tiles:
    """Square H&E tiles for each spot, or a grid of tiles over the tissue, read lazily.

    Spot tiles are centred on the spots of a table's shapes, one spot diameter wide by default (the
    official ST-bank convention). Spot centres are mapped into the image's pixel space through the
    SpatialData transformations. By default tiles are sampled at the resolution OmiCLIP was trained on,
    Visium "hires" images (about 3.3 µm per pixel, so a 55 µm spot is ~17 px), before the model's own
    resize to 224 px: the pyramid level nearest that resolution is read (as is when within 15%,
    otherwise resampled from the next finer level). Tiles that cross the image border are padded with
    white and counted.

    Parameters
    ----------
    data
        SpatialData with an image and a table linked to spot shapes; or AnnData in the scanpy/squidpy
        Visium layout (``uns["spatial"][library]["images"]``, ``scalefactors``, ``obsm["spatial"]``).
    image_key
        Image element (default: the only one). For AnnData: ``"hires"`` (default) or ``"lowres"``.
    shapes_key
        Spot shapes (default: the region the table annotates).
    table_key
        Table whose observations get the tiles (default: the only table).
    tile_size_um
        Tile side in µm (default: the spot diameter; required with ``grid=True``).
    um_per_px
        Sampling resolution in µm per pixel; ``None`` reads the full-resolution image.
    microns_per_unit
        µm per unit of the spots' coordinate system; default ``table.uns["microns_per_unit"]``
        (set by omiclip's readers). For AnnData it comes from the Visium spot diameter (55 µm).
    grid
        Tile the whole tissue with a regular grid instead (tissue found on the lowest-resolution level);
        adds shapes ``"{image_key}_grid"`` (squares) and table ``"{image_key}_grid_table"`` to ``data``.
    min_tissue
        With ``grid=True``: keep tiles at least this fraction (0 to 1) covered by tissue.
    library_id
        For AnnData with several libraries in ``uns["spatial"]``.

    Returns
    -------
    A :class:`~omiclip.pp.Tiles` source; with ``grid=True`` the grid elements are added to ``data``.
    """
    for name, value in (
        ("tile_size_um", tile_size_um),
        ("um_per_px", um_per_px),
        ("microns_per_unit", microns_per_unit),
    ):
        _check_positive(value, f"`{name}`")
    if not (isinstance(min_tissue, int | float | np.number) and 0 <= min_tissue <= 1):
        raise ValueError(
            f"`min_tissue` is the fraction of a grid tile covered by tissue: use 0 to 1, got {min_tissue!r}."
        )
    if isinstance(data, AnnData):
        if grid:
            raise ValueError("grid=True needs a SpatialData object (the grid is written as shapes and a table).")
        source = _visium_anndata(data, image_key or "hires", library_id)
    elif is_spatialdata(data):
        source = _spatialdata_spots(data, image_key, shapes_key, table_key, microns_per_unit, grid)
    else:
        raise TypeError(f"Expected SpatialData or AnnData, got {type(data).__name__}.")
    levels, centers_px0, spot_px0, obs_names, key = source
    if grid and tile_size_um is None:
        raise ValueError("grid=True needs `tile_size_um`.")
    tile_um = tile_size_um if tile_size_um is not None else spot_px0 * levels[0].um_per_px
    if not np.isfinite(tile_um) or tile_um <= 0:
        raise ValueError(f"Tile size must be positive, got {tile_um} µm.")
    level_index, window_px, out_px = _choose_level(levels, tile_um, um_per_px)
    level = levels[level_index]

    if grid:
        mask = tissue_mask(levels[-1].thumbnail())
        centers_px0 = grid_centers(levels[0].shape, tile_um / levels[0].um_per_px, mask, min_tissue)
        if len(centers_px0) == 0:
            raise ValueError("No tissue found for the grid: the image looks empty at its lowest resolution.")
        obs_names, key = _add_grid(data, image_key or _only(data.images, "image"), centers_px0, tile_um, levels)

    to_level = np.asarray(level.shape) / np.asarray(levels[0].shape)
    windows = centred_windows(centers_px0 * to_level, window_px, out_px, level.shape)
    if windows.outside.any():
        n = int(windows.outside.sum())
        raise ValueError(
            f"{n} of {len(windows)} tiles lie entirely outside the image: do the spots and the image share "
            "a coordinate system, with the right transformation?"
        )
    result = Tiles(
        windows=windows,
        level=level,
        obs_names=pd.Index(obs_names),
        table_key=key,
        params={
            "tile_size_um": float(tile_um),
            "um_per_px": float(tile_um / out_px),
            "level": int(level_index),
            "window_px": int(window_px),
            "tile_px": int(out_px),
            "grid": grid,
        },
    )
    logg.info(
        f"{len(result)} tiles of {tile_um:.1f} µm ({out_px} px, level {level_index})"
        + (f"; {result.n_padded} cross the image border and were padded" if result.n_padded else "")
    )
    return result


def _choose_level(levels: list[Level], tile_um: float, um_per_px: float | None) -> tuple[int, int, int]:
    """Pick the level to read, its window size and the output tile size (pixels)."""
    if um_per_px is None:
        size = max(1, round(tile_um / levels[0].um_per_px))
        return 0, size, size
    distance = [abs(np.log(level.um_per_px / um_per_px)) for level in levels]
    nearest = int(np.argmin(distance))
    out_px = max(1, round(tile_um / um_per_px))
    if distance[nearest] <= np.log1p(_LEVEL_TOLERANCE):
        size = max(1, round(tile_um / levels[nearest].um_per_px))
        return nearest, size, size
    finer = [i for i, level in enumerate(levels) if level.um_per_px <= um_per_px]
    index = finer[-1] if finer else 0
    return index, max(1, round(tile_um / levels[index].um_per_px)), out_px


def _check_positive(value, name: str) -> None:
    """``None`` means "use the default"; anything else must be a usable physical size."""
    if value is None:
        return
    try:
        ok = bool(np.isfinite(value) and value > 0)
    except TypeError:  # a string or other non-number
        ok = False
    if not ok:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}.")


def _only(mapping, what: str) -> str:
    if len(mapping) != 1:
        raise ValueError(f"Found {len(mapping)} {what} elements ({list(mapping)}); choose one with `{what}_key=`.")
    return next(iter(mapping))


def _image_levels(image, um_per_px0: float) -> list[Level]:
    """Pyramid levels of an image element, finest first, as ``(c, y, x)`` uint8 RGB."""
    arrays = [image[name]["image"] for name in image.children] if hasattr(image, "children") else [image]
    first = arrays[0]
    if tuple(first.dims) != ("c", "y", "x") or first.shape[0] < 3:
        raise ValueError(f"Image must be RGB with axes (c, y, x), got axes {tuple(first.dims)} shape {first.shape}.")
    if first.dtype != np.uint8:
        raise ValueError(f"Image must be uint8 RGB, got {first.dtype}: rescale it to 0-255 first.")
    width0 = first.shape[2]
    return [Level(a.data, um_per_px0 * width0 / a.shape[2]) for a in arrays]


def _spatialdata_spots(sdata, image_key, shapes_key, table_key, microns_per_unit, grid):
    """Levels, spot centres (level-0 px, (y, x)) and spot diameter (px) of a SpatialData table's spots."""
    image_key = image_key or _only(sdata.images, "image")
    if image_key not in sdata.images:
        raise KeyError(f"Image {image_key!r} not found; images: {list(sdata.images)}.")
    image = sdata.images[image_key]
    if grid and not sdata.tables:  # no spots to take the physical scale from: it is µm per image pixel
        if microns_per_unit is None:
            raise ValueError("A grid on an image without spots needs `microns_per_unit` (µm per image pixel).")
        return _image_levels(image, float(microns_per_unit)), np.empty((0, 2)), 0.0, pd.Index([]), None

    if grid and table_key is None:  # any table with spots gives the physical scale of the image
        table_key = next(iter(sdata.tables))
    table = get_table(sdata, table_key)
    check_not_empty(table)
    table_key = table_key or _only(sdata.tables, "table")
    attrs = table.uns.get("spatialdata_attrs", {})
    regions = np.atleast_1d(attrs.get("region", []))
    if len(regions) > 1:
        raise ValueError(
            f"Table {table_key!r} annotates several elements ({list(regions)}); tiles need a table of one spot "
            "element: split it (e.g. with `spatialdata.match_table_to_element`)."
        )
    shapes_key = shapes_key or (str(regions[0]) if len(regions) == 1 else None)
    if shapes_key not in sdata.shapes:
        raise KeyError(f"Spot shapes {shapes_key!r} not found; shapes: {list(sdata.shapes)}. Pass `shapes_key=`.")
    spots = sdata.shapes[shapes_key]
    matrix = _affine(sdata, spots, image, shapes_key, image_key)
    units_per_px0 = 1 / np.sqrt(abs(np.linalg.det(matrix[:2, :2])))
    if microns_per_unit is None:  # not `or`: an explicit 0 must be an error, not replaced by the stored value
        microns_per_unit = table.uns.get(MICRONS_PER_UNIT_KEY)
        _check_positive(microns_per_unit, f"`.uns[{MICRONS_PER_UNIT_KEY!r}]` of table {table_key!r}")
    if microns_per_unit is None:
        raise ValueError(
            "The physical scale is unknown: pass `microns_per_unit=` (µm per unit of the spots' coordinates; "
            "for Visium in full-resolution pixels that is 55 / spot diameter in pixels)."
        )
    levels = _image_levels(image, float(microns_per_unit) * units_per_px0)

    instance_key = attrs["instance_key"]
    ids = table.obs[instance_key].to_numpy()
    missing = ~pd.Index(ids).isin(spots.index)
    if missing.any():  # `.loc` would fail with a pandas error that names neither the table nor the shapes
        raise KeyError(
            f"{int(missing.sum())} of {len(ids)} ids in `.obs[{instance_key!r}]` of table {table_key!r} are not in "
            f"the index of shapes {shapes_key!r} (e.g. {ids[missing][:3].tolist()}; shapes index e.g. "
            f"{spots.index[:3].tolist()}). Make the table's `instance_key` column hold the shapes' index values."
        )
    spots = spots.loc[ids]
    xy = np.column_stack([spots.geometry.centroid.x, spots.geometry.centroid.y, np.ones(len(spots))])
    centers_px0 = (xy @ matrix.T)[:, 1::-1]  # (y, x)
    diameter = 2 * spots["radius"].to_numpy() if "radius" in spots else np.sqrt(spots.geometry.area.to_numpy())
    spot_px0 = float(np.median(diameter)) / units_per_px0
    return levels, centers_px0, spot_px0, table.obs_names, table_key


def _affine(sdata, source, target, source_key, target_key) -> np.ndarray:
    """3x3 matrix from the intrinsic (x, y) of ``source`` to the pixels of ``target``."""
    from spatialdata.transformations import get_transformation, get_transformation_between_coordinate_systems

    # Elements sharing several coordinate systems (e.g. "global" and "aligned" after oc.tl.align) have one path
    # through each, and spatialdata refuses to choose; any shared system gives the same spots → pixels map.
    shared = [cs for cs in get_transformation(source, get_all=True) if cs in get_transformation(target, get_all=True)]
    try:
        transformation = get_transformation_between_coordinate_systems(
            sdata, source, target, intermediate_coordinate_systems=shared[0] if shared else None
        )
    except Exception as err:
        raise ValueError(
            f"No transformation between {source_key!r} and image {target_key!r}: put both in one coordinate system."
        ) from err
    return transformation.to_affine_matrix(input_axes=("x", "y"), output_axes=("x", "y"))


def _add_grid(sdata, image_key, centers_px0, tile_um, levels):
    """Write the grid as square shapes (in the image's coordinate systems) and a linked table."""
    import geopandas as gpd
    import shapely
    from spatialdata.models import ShapesModel, TableModel
    from spatialdata.transformations import get_transformation

    half = tile_um / levels[0].um_per_px / 2
    y, x = centers_px0.T
    squares = gpd.GeoDataFrame(geometry=shapely.box(x - half, y - half, x + half, y + half))
    shapes_key = grid_key(image_key)
    table_key = table_of_shapes(shapes_key)
    transformations = get_transformation(sdata.images[image_key], get_all=True)
    sdata.shapes[shapes_key] = ShapesModel.parse(squares, transformations=transformations)
    obs = pd.DataFrame(
        {"tile_id": np.arange(len(centers_px0)), "region": pd.Categorical([shapes_key] * len(centers_px0))},
        index=[f"tile_{i}" for i in range(len(centers_px0))],
    )
    table = AnnData(obs=obs)
    table.obsm["spatial"] = np.column_stack([x, y])
    table.uns[MICRONS_PER_UNIT_KEY] = levels[0].um_per_px
    sdata.tables[table_key] = TableModel.parse(table, region=shapes_key, region_key="region", instance_key="tile_id")
    logg.info(f"    added shapes {shapes_key!r} and table {table_key!r} ({len(obs)} grid tiles)")
    return obs.index, table_key


def _visium_anndata(adata: AnnData, image_key: str, library_id: str | None):
    """Levels, spot centres and diameter from the scanpy/squidpy Visium layout."""
    check_not_empty(adata)
    spatial = adata.uns.get("spatial")
    if not spatial:
        raise KeyError("AnnData has no `uns['spatial']` (Visium layout); use a SpatialData object instead.")
    library_id = library_id or _only(spatial, "library")
    if library_id not in spatial:
        raise KeyError(f"Library {library_id!r} not in `uns['spatial']`: {list(spatial)}.")
    library = spatial[library_id]
    if image_key not in library.get("images", {}):
        raise KeyError(f"Image {image_key!r} not in `uns['spatial'][{library_id!r}]['images']`.")
    if "spatial" not in adata.obsm:
        raise KeyError("Did not find 'spatial' in `.obsm` (spot centres in full-resolution pixels).")
    scale = library["scalefactors"][f"tissue_{image_key}_scalef"]
    spot_px = library["scalefactors"]["spot_diameter_fullres"] * scale
    image = np.asarray(library["images"][image_key])
    if image.ndim != 3 or image.shape[-1] < 3:
        raise ValueError(f"Image {image_key!r} must be RGB (height, width, 3), got shape {image.shape}.")
    if np.issubdtype(image.dtype, np.floating):  # scanpy stores float images in [0, 1]
        image = np.clip(np.round(image * 255), 0, 255).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise ValueError(f"Image {image_key!r} must be uint8 or float in [0, 1], got {image.dtype}.")
    level = Level(image.transpose(2, 0, 1), VISIUM_SPOT_UM / spot_px)
    centers_px0 = np.asarray(adata.obsm["spatial"], dtype=float)[:, ::-1] * scale  # (y, x)
    return [level], centers_px0, spot_px, adata.obs_names, None
