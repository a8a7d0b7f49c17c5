"""Square tiles cut from a large image, read block by block so memory never grows with the image.

Pure NumPy: the image is reached only through ``read_region(y0, y1, x0, x1) -> (c, h, w) uint8``, which
the caller binds to a Dask/zarr pyramid level or an in-memory array. Tiles are grouped by the image
block their centre falls in; each block's windows are read as one region (one read per block, not per
tile), so a whole-slide pass touches every needed chunk about once and holds one block at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

BACKGROUND = 255  # tiles crossing the image border are padded with white, the colour of bare glass

ReadRegion = Callable[[int, int, int, int], np.ndarray]


@dataclass(frozen=True)
class TileWindows:
    """Read windows in the pixel grid of one image level.

    Attributes
    ----------
    origin
        ``(n, 2)`` integer ``(y0, x0)`` of each window's top-left pixel (may lie outside the image).
    window_px
        Side of the read window, in level pixels.
    out_px
        Side of the tiles handed out (windows are resampled to it when it differs).
    image_shape
        ``(height, width)`` of the level.
    """

    origin: np.ndarray
    window_px: int
    out_px: int
    image_shape: tuple[int, int]

    def __len__(self) -> int:
        return len(self.origin)

    @property
    def crosses_border(self) -> np.ndarray:
        """Which windows reach outside the image (and get padded)."""
        y0, x0 = self.origin.T
        height, width = self.image_shape
        return (y0 < 0) | (x0 < 0) | (y0 + self.window_px > height) | (x0 + self.window_px > width)

    @property
    def outside(self) -> np.ndarray:
        """Which windows do not overlap the image at all."""
        y0, x0 = self.origin.T
        height, width = self.image_shape
        return (y0 >= height) | (x0 >= width) | (y0 + self.window_px <= 0) | (x0 + self.window_px <= 0)


def centred_windows(centers_yx: np.ndarray, window_px: int, out_px: int, image_shape) -> TileWindows:
    """Windows of side ``window_px`` centred on ``centers_yx`` (level pixel coordinates, float)."""
    origin = np.floor(np.asarray(centers_yx, dtype=float) - window_px / 2 + 0.5).astype(np.int64)
    return TileWindows(origin, int(window_px), int(out_px), tuple(int(s) for s in image_shape))


def iter_tiles(
    windows: TileWindows, read_region: ReadRegion, *, batch_size: int, block_px: int = 2048
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(indices, tiles)`` batches; ``tiles`` is ``uint8 (b, out_px, out_px, 3)``.

    Batches come in block order, not input order: ``indices`` say which windows they hold.
    """
    if batch_size < 1:
        raise ValueError(f"`batch_size` must be positive, got {batch_size}.")
    if len(windows) == 0:
        return
    block_of = (windows.origin + windows.window_px // 2) // block_px
    order = np.lexsort((block_of[:, 1], block_of[:, 0]))
    boundaries = np.flatnonzero((np.diff(block_of[order], axis=0) != 0).any(axis=1)) + 1
    pending_indices: list[np.ndarray] = []
    pending_tiles: list[np.ndarray] = []
    n_pending = 0
    for members in np.split(order, boundaries):
        pending_indices.append(members)
        pending_tiles.append(_cut_block(windows, members, read_region))
        n_pending += len(members)
        if n_pending >= batch_size:
            indices, tiles = np.concatenate(pending_indices), np.concatenate(pending_tiles)
            n_full = n_pending - n_pending % batch_size
            for start in range(0, n_full, batch_size):
                yield indices[start : start + batch_size], tiles[start : start + batch_size]
            pending_indices, pending_tiles = [indices[n_full:]], [tiles[n_full:]]
            n_pending -= n_full
    if n_pending:
        yield np.concatenate(pending_indices), np.concatenate(pending_tiles)


def _cut_block(windows: TileWindows, members: np.ndarray, read_region: ReadRegion) -> np.ndarray:
    """Read the bounding box of some windows once, and cut them out of it."""
    size = windows.window_px
    y0, x0 = windows.origin[members].min(axis=0)
    y1, x1 = windows.origin[members].max(axis=0) + size
    region = read_padded(read_region, int(y0), int(y1), int(x0), int(x1), windows.image_shape)
    tiles = np.empty((len(members), windows.out_px, windows.out_px, 3), dtype=np.uint8)
    for k, (ty, tx) in enumerate(windows.origin[members] - (y0, x0)):
        tiles[k] = resample(region[:, ty : ty + size, tx : tx + size].transpose(1, 2, 0), windows.out_px)
    return tiles


def read_padded(read_region: ReadRegion, y0: int, y1: int, x0: int, x1: int, image_shape) -> np.ndarray:
    """``(3, y1 - y0, x1 - x0)`` uint8 region; the part outside the image is ``BACKGROUND``."""
    height, width = image_shape
    region = np.full((3, y1 - y0, x1 - x0), BACKGROUND, dtype=np.uint8)
    cy0, cy1, cx0, cx1 = max(y0, 0), min(y1, height), max(x0, 0), min(x1, width)
    if cy0 < cy1 and cx0 < cx1:
        region[:, cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0] = read_region(cy0, cy1, cx0, cx1)[:3]
    return region


def resample(tile: np.ndarray, out_px: int) -> np.ndarray:
    """Resize an ``(h, w, 3)`` tile to ``out_px`` square (area averaging when shrinking)."""
    if tile.shape[0] == out_px and tile.shape[1] == out_px:
        return tile
    from PIL import Image

    return np.asarray(Image.fromarray(np.ascontiguousarray(tile)).resize((out_px, out_px), Image.Resampling.BOX))


def blank(tiles: np.ndarray, tolerance: float = 2.0) -> np.ndarray:
    """Which ``(n, h, w, 3)`` tiles are one flat colour (pixel standard deviation below ``tolerance``, 0-255)."""
    return tiles.reshape(len(tiles), -1).astype(np.float32).std(axis=1) < tolerance


def sample_windows(windows: TileWindows, n: int) -> TileWindows:
    """At most ``n`` of the windows, spread evenly over them (a cheap look at an image before all is read)."""
    keep = np.unique(np.linspace(0, len(windows) - 1, min(n, len(windows))).round().astype(int))
    return TileWindows(windows.origin[keep], windows.window_px, windows.out_px, windows.image_shape)


def grid_centers(image_shape, tile_px: float, tissue_mask: np.ndarray | None, min_tissue: float) -> np.ndarray:
    """Centres ``(n, 2)`` (y, x) of a regular grid of ``tile_px`` tiles covering tissue.

    ``tissue_mask`` is a boolean mask of the image at any lower resolution; a tile is kept when at least
    ``min_tissue`` of its area (measured on the mask) is tissue.
    """
    height, width = image_shape
    ys = np.arange(tile_px / 2, height, tile_px)
    xs = np.arange(tile_px / 2, width, tile_px)
    centers = np.stack(np.meshgrid(ys, xs, indexing="ij"), axis=-1).reshape(-1, 2)
    if tissue_mask is None:
        return centers
    mask_shape = np.asarray(tissue_mask.shape)
    scale = mask_shape / np.asarray(image_shape, dtype=float)
    lo = np.clip(np.floor((centers - tile_px / 2) * scale).astype(int), 0, mask_shape - 1)
    hi = np.maximum(np.clip(np.ceil((centers + tile_px / 2) * scale).astype(int), 0, mask_shape), lo + 1)
    integral = np.pad(tissue_mask.astype(np.float64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    inside = (
        integral[hi[:, 0], hi[:, 1]]
        - integral[lo[:, 0], hi[:, 1]]
        - integral[hi[:, 0], lo[:, 1]]
        + integral[lo[:, 0], lo[:, 1]]
    )
    fraction = inside / (hi - lo).prod(axis=1)
    return centers[fraction >= min_tissue]


def tissue_mask(thumbnail: np.ndarray) -> np.ndarray:
    """Tissue vs background on a low-resolution ``(3, h, w)`` RGB image: Otsu threshold on saturation.

    Stained tissue is coloured, glass is grey-white; saturation separates them regardless of brightness.
    """
    from scipy import ndimage
    from skimage.filters import threshold_otsu

    rgb = thumbnail[:3].astype(np.float32)
    saturation = (rgb.max(axis=0) - rgb.min(axis=0)) / np.maximum(rgb.max(axis=0), 1)
    if np.ptp(saturation) == 0:
        return np.zeros(saturation.shape, dtype=bool)
    mask = saturation > max(threshold_otsu(saturation), 0.05)
    mask = ndimage.binary_closing(mask, iterations=2)
    return ndimage.binary_fill_holes(mask)


def to_rgb8(region: np.ndarray, value_scale: float = 1.0) -> np.ndarray:
    """``(c, h, w)`` RGB/RGBA, uint8 or float, as ``(3, h, w)`` uint8; RGBA is composited over white."""
    if region.dtype == np.uint8 and region.shape[0] == 3:
        return region
    values = region.astype(np.float32) * value_scale
    rgb = values[:3]
    if region.shape[0] == 4:
        alpha = np.clip(values[3:4] / 255, 0, 1)
        rgb = rgb * alpha + BACKGROUND * (1 - alpha)
    return np.clip(np.round(np.nan_to_num(rgb, nan=BACKGROUND)), 0, 255).astype(np.uint8)
