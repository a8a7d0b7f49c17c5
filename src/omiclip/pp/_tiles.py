from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from anndata import AnnData

from omiclip import _logging as logg
from omiclip._anndata import is_spatialdata
from omiclip._core.tiling import (
    TileWindows,
    blank,
    centred_windows,
    grid_centers,
    iter_tiles,
    sample_windows,
    tissue_mask,
)
from omiclip._keys import MICRONS_PER_UNIT_KEY, grid_key, table_of_shapes
from omiclip._validate import check_memory, check_number
from omiclip.pp._spot_geometry import (
    Level,
    SpotGeometry,
    image_levels,
    image_microns_per_unit,
    only,
    spatialdata_geometry,
    table_for_tiles,
    visium_anndata_geometry,
)

if TYPE_CHECKING:
    from spatialdata import SpatialData

# OmiCLIP was trained on Visium "hires" crops: a 55 µm spot is ~16.5 px there, about 3.3 µm per pixel
HIRES_UM_PER_PX = 3.3
# warn when the image is this many times coarser than the tiles the model needs
COARSE_FACTOR = 2.0
# tiles read to check that the image is not a placeholder, before any model runs
BLANK_SAMPLE = 128
# a pyramid level this close to the wanted resolution is read as is (no resampling)
_LEVEL_TOLERANCE = 0.15


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
    new_table
        For tile shapes that no table annotated (LazySlide's tiles): their table ``table_key``, not yet in the
        data; :func:`omiclip.tl.embed` adds it with the embeddings.
    """

    windows: TileWindows
    level: Level
    obs_names: pd.Index
    table_key: str | None
    params: dict = field(default_factory=dict)
    new_table: AnnData | None = None

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
    white and counted. Patches from sopa and tiles from LazySlide keep the square they were cut as.

    Before any model runs, a warning says when the image is more than 2x coarser than the tiles the model needs,
    and when most tiles (checked on up to 128 of them) are one flat colour, as with a placeholder image. Float
    images are read as 0-1 or 0-255 (judged on a thumbnail), RGBA images are composited over white.

    Parameters
    ----------
    data
        SpatialData with an image and a table linked to spot shapes; or AnnData in the scanpy/squidpy
        Visium layout (``uns["spatial"][library]["images"]``, ``scalefactors``, ``obsm["spatial"]``).
    image_key
        Image element. Default: the finest RGB image that covers the spots (full-resolution H&E before hires
        before lowres); the choice and its µm per pixel are logged. For AnnData: ``"hires"`` when there is one,
        else ``"lowres"``.
    shapes_key
        Spot shapes (default: the region the table annotates).
    table_key
        Table whose observations get the tiles (default: the only table).
    tile_size_um
        Tile side in µm (default: the spot diameter; required with ``grid=True``).
    um_per_px
        Sampling resolution in µm per pixel; ``None`` reads the full-resolution image.
    microns_per_unit
        µm per unit of the spots' coordinate system. Default: ``table.uns["microns_per_unit"]``, else what the
        data records: Visium spots are 55 µm across, Visium HD bins are named by their size (``square_008um``),
        Xenium coordinates are µm, LazySlide records the slide's µm per pixel, and images read by sopa carry
        theirs. For AnnData it comes from the Visium spot diameter (55 µm).
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
        if value is not None:  # None: the default
            check_number(name, value, min=0, min_inclusive=False)
    if not (isinstance(min_tissue, int | float | np.number) and 0 <= min_tissue <= 1):
        raise ValueError(
            f"`min_tissue` is the fraction of a grid tile covered by tissue: use 0 to 1, got {min_tissue!r}."
        )
    new_table = None
    if isinstance(data, AnnData):
        if grid:
            raise ValueError("grid=True needs a SpatialData object (the grid is written as shapes and a table).")

        def geometry_of(image: str | None) -> SpotGeometry:
            return visium_anndata_geometry(data, image, library_id)

    elif is_spatialdata(data):
        unlinked = None if grid or table_key is not None else table_for_tiles(data, shapes_key)
        if unlinked is not None:
            table_key, new_table = unlinked

        def geometry_of(image: str | None) -> SpotGeometry:
            if grid:
                return _grid_geometry(data, image, table_key, microns_per_unit)
            return spatialdata_geometry(data, image, shapes_key, table_key, microns_per_unit, new_table)

    else:
        raise TypeError(f"Expected SpatialData or AnnData, got {type(data).__name__}.")
    geometry = geometry_of(image_key)
    levels, centers_px0, obs_names, key = geometry.levels, geometry.centers_px, geometry.obs_names, geometry.table_key
    if grid and tile_size_um is None:
        raise ValueError("grid=True needs `tile_size_um`.")
    tile_um = tile_size_um if tile_size_um is not None else geometry.spot_px * levels[0].um_per_px
    if not np.isfinite(tile_um) or tile_um <= 0:
        raise ValueError(f"Tile size must be positive, got {tile_um} µm.")
    level_index, window_px, out_px = _choose_level(levels, tile_um, um_per_px)
    name, value = ("um_per_px", um_per_px) if out_px > window_px else ("tile_size_um", tile_size_um or tile_um)
    check_memory(name, value, 3 * (window_px**2 + out_px**2), f"one RGB tile of {out_px} × {out_px} px")
    level = levels[level_index]

    if grid:
        mask = tissue_mask(levels[-1].thumbnail())
        centers_px0 = grid_centers(levels[0].shape, tile_um / levels[0].um_per_px, mask, min_tissue)
        if len(centers_px0) == 0:
            raise ValueError("No tissue found for the grid: the image looks empty at its lowest resolution.")
        obs_names, key = _add_grid(data, geometry.image_key, centers_px0, tile_um, levels)

    windows = _windows_on(levels, level_index, centers_px0, window_px, out_px)
    if windows.outside.any():
        n = int(windows.outside.sum())
        raise ValueError(
            f"{n} of {len(windows)} tiles lie entirely outside the image: do the spots and the image share "
            "a coordinate system, with the right transformation?"
        )
    _check_resolution(geometry, um_per_px, tile_um, geometry_of)
    _check_not_blank(windows, level, geometry)
    result = Tiles(
        windows=windows,
        level=level,
        obs_names=pd.Index(obs_names),
        table_key=key,
        new_table=new_table,
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


def _check_resolution(geometry: SpotGeometry, um_per_px: float | None, tile_um: float, geometry_of) -> None:
    """Warn when even the finest level is much coarser than the tiles the model needs (they are upsampled).

    A sharper image of the same spots is recommended only when its tiles are not mostly blank (the Visium "hires"
    PNG can be a placeholder); ``geometry_of(image_key)`` gives that image's geometry.
    """
    if um_per_px is None or geometry.levels[0].um_per_px <= COARSE_FACTOR * um_per_px:
        return
    finest = geometry.levels[0].um_per_px
    sharper = sorted((um, key) for key, um in geometry.other_images.items() if um < finest)
    share = {key: _blank_share(geometry_of, key, tile_um, um_per_px) for _, key in sharper}
    placeholders = [key for _, key in sharper if share[key] is not None and share[key] > 0.5]
    usable = [(um, key) for um, key in sharper if share[key] is not None and share[key] <= 0.5]
    advice = (
        f"Image {usable[0][1]!r} is sharper ({usable[0][0]:.3g} µm/px): pass it as `image_key=`."
        if usable
        else "Use a higher-resolution image of the section if there is one (e.g. the full-resolution H&E)."
    )
    if placeholders:
        advice += f" Sharper images {placeholders} are mostly one flat colour at the spots (placeholders?)."
    warnings.warn(
        f"Image {geometry.image_key!r} is {finest / um_per_px:.1f}x coarser ({finest:.3g} µm/px) than the "
        f"{um_per_px:g} µm/px tiles the model needs; tiles are upsampled. {advice}",
        UserWarning,
        stacklevel=3,
    )


def _blank_tiles(windows: TileWindows, level: Level) -> tuple[int, int]:
    """How many of a sample of up to ``BLANK_SAMPLE`` tiles (spread over all) are one flat colour, and of how many."""
    sample = sample_windows(windows, BLANK_SAMPLE)
    n_blank = sum(int(blank(batch).sum()) for _, batch in iter_tiles(sample, level.read, batch_size=BLANK_SAMPLE))
    return n_blank, len(sample)


def _blank_share(geometry_of, image_key: str, tile_um: float, um_per_px: float) -> float | None:
    """Share of a sample of another image's spot tiles that are one flat colour (``None``: the image is unusable)."""
    try:
        geometry = geometry_of(image_key)
    except (KeyError, ValueError):  # not an image the spots' tiles could be read from
        return None
    level_index, window_px, out_px = _choose_level(geometry.levels, tile_um, um_per_px)
    windows = _windows_on(geometry.levels, level_index, geometry.centers_px, window_px, out_px)
    n_blank, n = _blank_tiles(windows, geometry.levels[level_index])
    return n_blank / n if n else None


def _windows_on(levels: list[Level], index: int, centers_px0: np.ndarray, window_px: int, out_px: int):
    """Windows around centres given in the finest level's pixels, cut from level ``index``."""
    shape = levels[index].shape
    return centred_windows(centers_px0 * (np.asarray(shape) / np.asarray(levels[0].shape)), window_px, out_px, shape)


def _check_not_blank(windows, level: Level, geometry: SpotGeometry) -> None:
    """Warn when most tiles are one flat colour (a placeholder image or the wrong element), on a sample of them."""
    n_blank, n_sampled = _blank_tiles(windows, level)
    if n_blank <= n_sampled / 2:
        return
    others = list(geometry.other_images)
    advice = f"Other images covering the spots: {others} (pass `image_key=`)." if others else ""
    warnings.warn(
        f"{n_blank} of {n_sampled} tiles checked (spread over all {len(windows)}) in image {geometry.image_key!r} "
        f"are one flat colour: a placeholder image, a fully transparent one or the wrong element? {advice}",
        UserWarning,
        stacklevel=3,
    )


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


def _grid_geometry(sdata, image_key, table_key, microns_per_unit) -> SpotGeometry:
    """The image to grid, its levels scaled by any table's spots (or by ``microns_per_unit`` per image pixel)."""
    image_key = image_key or only(sdata.images, "image")
    if image_key not in sdata.images:
        raise KeyError(f"Image {image_key!r} not found; images: {list(sdata.images)}.")
    if microns_per_unit is None and not sdata.tables:  # the pixel size the image records (sopa, LazySlide)
        microns_per_unit = image_microns_per_unit(sdata.images[image_key])
    if sdata.tables:  # any table with spots gives the physical scale of the image
        spots = spatialdata_geometry(sdata, image_key, None, table_key or next(iter(sdata.tables)), microns_per_unit)
        levels = spots.levels
    elif microns_per_unit is None:
        raise ValueError(
            f"A grid on image {image_key!r}, which records no pixel size and has no spots, needs `microns_per_unit=` "
            "(µm per image pixel)."
        )
    else:
        levels = image_levels(sdata.images[image_key], float(microns_per_unit))
    return SpotGeometry(levels, np.empty((0, 2)), 0.0, pd.Index([]), None, image_key)


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
