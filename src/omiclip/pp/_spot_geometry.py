"""Where a table's spots lie on an image: pyramid levels, spot centres in pixels and the physical scale.

:func:`omiclip.pp.tiles` cuts tiles from a :class:`SpotGeometry`; this module only finds it, from a SpatialData
table and its shapes or from scanpy's Visium AnnData layout.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData

from omiclip._anndata import MICRONS_PER_UNIT_KEY, check_not_empty, get_table

VISIUM_SPOT_UM = 55.0


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
class SpotGeometry:
    """The spots of one table on one image.

    Attributes
    ----------
    levels
        The image's pyramid levels, finest first.
    centers_px
        ``(n, 2)`` spot centres ``(y, x)`` in pixels of the finest level.
    spot_px
        Spot diameter (or square side) in pixels of the finest level.
    obs_names
        Observation of the table each spot belongs to.
    table_key
        SpatialData table of the spots (``None`` for AnnData).
    image_key
        The image element (SpatialData) or ``uns["spatial"]`` image (AnnData).
    """

    levels: list[Level]
    centers_px: np.ndarray
    spot_px: float
    obs_names: pd.Index
    table_key: str | None
    image_key: str


def check_positive(value, name: str) -> None:
    """``None`` means "use the default"; anything else must be a usable physical size."""
    if value is None:
        return
    try:
        ok = bool(np.isfinite(value) and value > 0)
    except TypeError:  # a string or other non-number
        ok = False
    if not ok:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}.")


def only(mapping, what: str) -> str:
    """The single key of ``mapping``, or an error listing them."""
    if len(mapping) != 1:
        raise ValueError(f"Found {len(mapping)} {what} elements ({list(mapping)}); choose one with `{what}_key=`.")
    return next(iter(mapping))


def image_levels(image, um_per_px0: float) -> list[Level]:
    """Pyramid levels of an image element, finest first, as ``(c, y, x)`` uint8 RGB."""
    arrays = [image[name]["image"] for name in image.children] if hasattr(image, "children") else [image]
    first = arrays[0]
    if tuple(first.dims) != ("c", "y", "x") or first.shape[0] < 3:
        raise ValueError(f"Image must be RGB with axes (c, y, x), got axes {tuple(first.dims)} shape {first.shape}.")
    if first.dtype != np.uint8:
        raise ValueError(f"Image must be uint8 RGB, got {first.dtype}: rescale it to 0-255 first.")
    width0 = first.shape[2]
    return [Level(a.data, um_per_px0 * width0 / a.shape[2]) for a in arrays]


def spatialdata_geometry(sdata, image_key, shapes_key, table_key, microns_per_unit) -> SpotGeometry:
    """The spots of a SpatialData table on one of its images."""
    image_key = image_key or only(sdata.images, "image")
    if image_key not in sdata.images:
        raise KeyError(f"Image {image_key!r} not found; images: {list(sdata.images)}.")
    image = sdata.images[image_key]
    table = get_table(sdata, table_key)
    check_not_empty(table)
    table_key = table_key or only(sdata.tables, "table")
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
    matrix = affine(sdata, spots, image, shapes_key, image_key)
    units_per_px0 = 1 / np.sqrt(abs(np.linalg.det(matrix[:2, :2])))
    if microns_per_unit is None:  # not `or`: an explicit 0 must be an error, not replaced by the stored value
        microns_per_unit = table.uns.get(MICRONS_PER_UNIT_KEY)
        check_positive(microns_per_unit, f"`.uns[{MICRONS_PER_UNIT_KEY!r}]` of table {table_key!r}")
    if microns_per_unit is None:
        raise ValueError(
            "The physical scale is unknown: pass `microns_per_unit=` (µm per unit of the spots' coordinates; "
            "for Visium in full-resolution pixels that is 55 / spot diameter in pixels)."
        )
    levels = image_levels(image, float(microns_per_unit) * units_per_px0)

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
    centers_px = (xy @ matrix.T)[:, 1::-1]  # (y, x)
    diameter = 2 * spots["radius"].to_numpy() if "radius" in spots else np.sqrt(spots.geometry.area.to_numpy())
    spot_px = float(np.median(diameter)) / units_per_px0
    return SpotGeometry(levels, centers_px, spot_px, table.obs_names, table_key, image_key)


def affine(sdata, source, target, source_key, target_key) -> np.ndarray:
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


def visium_anndata_geometry(adata: AnnData, image_key: str, library_id: str | None) -> SpotGeometry:
    """The spots of scanpy's Visium layout on one of its images."""
    check_not_empty(adata)
    spatial = adata.uns.get("spatial")
    if not spatial:
        raise KeyError("AnnData has no `uns['spatial']` (Visium layout); use a SpatialData object instead.")
    library_id = library_id or only(spatial, "library")
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
    centers_px = np.asarray(adata.obsm["spatial"], dtype=float)[:, ::-1] * scale  # (y, x)
    return SpotGeometry([level], centers_px, spot_px, adata.obs_names, None, image_key)
