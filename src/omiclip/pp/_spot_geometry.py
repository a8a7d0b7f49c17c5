"""Where a table's spots lie on an image: pyramid levels, spot centres in pixels and the physical scale.

:func:`omiclip.pp.tiles` cuts tiles from a :class:`SpotGeometry`; this module only finds it, from a SpatialData
table and its shapes or from scanpy's Visium AnnData layout.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData

from omiclip import _logging as logg
from omiclip._anndata import check_not_empty, get_coordinates, get_table
from omiclip._core.tiling import to_rgb8
from omiclip._keys import MICRONS_PER_UNIT_KEY
from omiclip._validate import check_number

VISIUM_SPOT_UM = 55.0
HD_BIN = re.compile(r"square_(\d{3})um")  # spatialdata-io's Visium HD tables and shapes: square_002um, ...
SOPA_BOUNDS = "bboxes"  # sopa's patches: the (xmin, ymin, xmax, ymax) square each patch was cut as
LAZYSLIDE_TILE_SPEC = "tile_spec"  # WSIData.attrs: tile shapes key → TileSpec (sizes in level-0 pixels)
LAZYSLIDE_PROPERTIES = "slide_properties"  # WSIData.attrs: the slide's properties, with its µm per pixel


@dataclass(frozen=True)
class Level:
    """One resolution of an image: a ``(c, y, x)`` array (Dask or NumPy) and its pixel size.

    Reads give ``uint8`` RGB: float images are scaled by ``value_scale`` (255 for values in [0, 1]) and RGBA is
    composited over white, so fully transparent pixels read as background.
    """

    array: Any
    um_per_px: float
    value_scale: float = 1.0

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(int(s) for s in self.array.shape[1:])

    def thumbnail(self, max_px: int = 2048) -> np.ndarray:
        """The level subsampled to at most ``max_px`` on a side (strided read: never the whole image)."""
        step = max(1, int(np.ceil(max(self.shape) / max_px)))
        return to_rgb8(_compute(self.array[:, ::step, ::step]), self.value_scale)

    def read(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        return to_rgb8(_compute(self.array[:, y0:y1, x0:x1]), self.value_scale)


def _compute(array) -> np.ndarray:
    return np.asarray(array.compute() if hasattr(array, "compute") else array)


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
    other_images
        The other images that cover the spots, with their finest µm per pixel.
    """

    levels: list[Level]
    centers_px: np.ndarray
    spot_px: float
    obs_names: pd.Index
    table_key: str | None
    image_key: str
    other_images: dict[str, float] = field(default_factory=dict)


SPOT_SIZE_FIX = "correct the shapes (a circle's size is twice its `radius`, a polygon's the root of its area)"


def spot_size_name(shapes_key: str, circles: bool) -> str:
    """How errors name the size of a shapes element's spots."""
    return f"The median {'diameter' if circles else 'side'} of the spots in shapes {shapes_key!r}"


def recorded_positive(value, where: str, fix: str = "correct it, or pass `microns_per_unit=`") -> float:
    """A size or scale the data records, as a float; anything but a finite number > 0 is an error.

    Such values divide coordinates or set tile sizes: a negative one would mirror a result silently, zero would
    divide by zero far from here.
    """
    try:
        return check_number(where, value, min=0, min_inclusive=False)
    except ValueError:
        raise ValueError(f"{where} is {value!r}, not a finite number > 0: {fix}.") from None


def stored_microns_per_unit(table: AnnData, name: str = "", fix: str | None = None) -> float | None:
    """``table.uns["microns_per_unit"]`` checked with :func:`recorded_positive`, or ``None`` when none is stored.

    ``name`` says whose ``.uns`` in errors (a table key, "source", …); ``fix`` replaces the default way out.
    """
    value = table.uns.get(MICRONS_PER_UNIT_KEY)
    if value is None:
        return None
    where = f"`{name}.uns[{MICRONS_PER_UNIT_KEY!r}]`"
    return recorded_positive(value, where) if fix is None else recorded_positive(value, where, fix)


def only(mapping, what: str) -> str:
    """The single key of ``mapping``, or an error listing them."""
    if len(mapping) != 1:
        raise ValueError(f"Found {len(mapping)} {what} elements ({list(mapping)}); choose one with `{what}_key=`.")
    return next(iter(mapping))


def image_levels(image, um_per_px0: float, name: str = "image") -> list[Level]:
    """Pyramid levels of an image element, finest first, read as ``(c, y, x)`` uint8 RGB."""
    arrays = [image[key]["image"] for key in image.children] if hasattr(image, "children") else [image]
    first = arrays[0]
    check_rgb(first.shape, tuple(first.dims), first.dtype, name)
    value_scale = float_scale(_compute(_centre(arrays[-1]))) if first.dtype != np.uint8 else 1.0
    width0 = first.shape[2]
    return [Level(a.data, um_per_px0 * width0 / a.shape[2], value_scale) for a in arrays]


def _centre(array, half: int = 256):
    """The central ``2 * half`` pixels square of a ``(c, y, x)`` array: a chunk or so, never the whole image."""
    cy, cx = (int(n) // 2 for n in array.shape[1:])
    return array[:, max(cy - half, 0) : cy + half, max(cx - half, 0) : cx + half]


def check_rgb(shape, dims, dtype, name: str) -> None:
    """An H&E image: (c, y, x) with 3 (RGB) or 4 (RGBA) channels, uint8 or float; a (y, x, c) mix-up is named."""
    if dims == ("c", "y", "x") and shape[0] > 4 and shape[2] in (3, 4):
        raise ValueError(
            f"Image {name!r} has shape {tuple(shape)} with axes (c, y, x): that is a (y, x, c) image read with the "
            "wrong axes. Parse it again with `Image2DModel.parse(array, dims=('y', 'x', 'c'))`."
        )
    if dims != ("c", "y", "x") or shape[0] not in (3, 4):
        raise ValueError(
            f"Image {name!r} must be RGB or RGBA with axes (c, y, x), got axes {dims} shape {tuple(shape)} "
            "(fluorescence or single-channel images are not H&E)."
        )
    if not (dtype == np.uint8 or np.issubdtype(dtype, np.floating)):
        raise ValueError(f"Image {name!r} must be uint8 or float RGB, got {dtype}: rescale it to 0-255 uint8 first.")


def float_scale(sample: np.ndarray) -> float:
    """Factor to 0-255 for an image's values, judged on a sample: floats up to 1 are [0, 1], larger ones 0-255."""
    if sample.dtype == np.uint8:
        return 1.0
    finite = sample[np.isfinite(sample)]
    return 255.0 if finite.size == 0 or finite.max() <= 1 else 1.0


def spatialdata_geometry(
    sdata, image_key, shapes_key, table_key, microns_per_unit, table: AnnData | None = None
) -> SpotGeometry:
    """The spots of a SpatialData table on its image (by default the finest image that covers them).

    ``table``: a table for ``table_key`` that is not (yet) in ``sdata`` (see :func:`table_for_tiles`).
    """
    if image_key is not None and image_key not in sdata.images:
        raise KeyError(f"Image {image_key!r} not found; images: {list(sdata.images)}.")
    if not sdata.images:
        raise ValueError("The SpatialData object has no image to cut tiles from.")
    if table is None:
        table = get_table(sdata, table_key)
        table_key = table_key or only(sdata.tables, "table")
    check_not_empty(table)
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
    spots = _table_spots(sdata.shapes[shapes_key], table, table_key, shapes_key, attrs["instance_key"])
    centers, size = spot_centres_and_size(sdata, spots, shapes_key)
    circles = "radius" in spots.columns
    size = recorded_positive(size, spot_size_name(shapes_key, circles), fix=SPOT_SIZE_FIX)
    if microns_per_unit is None:  # not `or`: an explicit 0 must be an error, not replaced by the stored value
        microns_per_unit = stored_microns_per_unit(table, table_key)
    if microns_per_unit is None:
        microns_per_unit, source = recorded_scale(sdata, table, table_key, shapes_key, size, circles)
        if microns_per_unit is not None:
            logg.info(f"    {microns_per_unit:.4g} µm per unit of {shapes_key!r}, from {source}")

    placed = {}  # image → (units per finest pixel, µm per finest pixel or None, coverage, centres in its pixels)
    for key in sorted(sdata.images, key=lambda key: key != image_key):  # the image asked for first
        image = sdata.images[key]
        try:
            matrix = _spots_to_pixels(sdata, sdata.shapes[shapes_key], image, shapes_key, key)
            first = image[next(iter(image.children))]["image"] if hasattr(image, "children") else image
            check_rgb(first.shape, tuple(first.dims), first.dtype, key)
        except ValueError:
            if key == image_key or len(sdata.images) == 1:
                raise
            continue  # another image, not H&E or not placed with the spots
        units_per_px = 1 / np.sqrt(abs(np.linalg.det(matrix[:2, :2])))
        um = microns_per_unit if microns_per_unit is not None else image_microns_per_unit(image, units_per_px)
        yx = (np.column_stack([centers, np.ones(len(centers))]) @ matrix.T)[:, 1::-1]
        inside = ((yx >= 0) & (yx < np.asarray(first.shape[1:]))).all(axis=1).mean()
        placed[key] = (units_per_px, um, inside, yx)
    if not placed:
        raise ValueError(
            f"No RGB image placed with the spots {shapes_key!r}: images {list(sdata.images)} are not H&E or share no "
            "coordinate system with the spots. Pass `image_key=`."
        )
    best_cover = max(entry[2] for entry in placed.values())
    covering = {key: entry for key, entry in placed.items() if entry[2] >= 0.95 * best_cover}
    chosen = image_key or min(covering, key=lambda key: covering[key][0])  # fewest spot units per pixel: finest
    units_per_px, um, _, centers_px = placed[chosen]
    if um is None:
        raise ValueError(
            f"The physical scale of {shapes_key!r} is unknown (no Visium spots, Visium HD bins, Xenium µm "
            "coordinates or recorded pixel size found): pass `microns_per_unit=` (µm per unit of the spots' "
            "coordinates; for Visium in full-resolution pixels that is 55 / spot diameter in pixels), or store it "
            f"as `.uns[{MICRONS_PER_UNIT_KEY!r}]` of table {table_key!r}."
        )
    levels = image_levels(sdata.images[chosen], float(um) * units_per_px, chosen)
    others = {key: float(e[1]) * e[0] for key, e in covering.items() if key != chosen and e[1] is not None}
    if image_key is None and len(sdata.images) > 1:
        logg.info(f"    image {chosen!r}, {levels[0].um_per_px:.3g} µm/px (the finest of {list(covering)})")
    return SpotGeometry(levels, centers_px, size / units_per_px, table.obs_names, table_key, chosen, others)


def _table_spots(spots, table, table_key, shapes_key, instance_key):
    """The shapes of the table's observations, in table order."""
    ids = table.obs[instance_key].to_numpy()
    missing = ~pd.Index(ids).isin(spots.index)
    if missing.any():  # `.loc` would fail with a pandas error that names neither the table nor the shapes
        raise KeyError(
            f"{int(missing.sum())} of {len(ids)} ids in `.obs[{instance_key!r}]` of table {table_key!r} are not in "
            f"the index of shapes {shapes_key!r} (e.g. {ids[missing][:3].tolist()}; shapes index e.g. "
            f"{spots.index[:3].tolist()}). Make the table's `instance_key` column hold the shapes' index values."
        )
    return spots.loc[ids]


def spot_centres_and_size(sdata, spots, shapes_key) -> tuple[np.ndarray, float]:
    """``(n, 2)`` x/y centres and the median side/diameter of spots, in their own coordinates.

    Patches that sopa clipped to the tissue and LazySlide tiles keep the square they were cut as (recorded in
    sopa's ``bboxes`` column and in LazySlide's tile spec), not the centre of the clipped polygon.
    """
    spec = sdata.attrs.get(LAZYSLIDE_TILE_SPEC, {}).get(shapes_key)
    if spec is not None:  # whole boxes from their top-left corner, in level-0 pixels
        bounds = spots.geometry.bounds.to_numpy()
        side = float(spec.get("base_width") or np.median(bounds[:, 2] - bounds[:, 0]))
        return bounds[:, :2] + side / 2, side
    if SOPA_BOUNDS in spots.columns:
        bounds = np.array(spots[SOPA_BOUNDS].to_list(), dtype=float)  # (xmin, ymin, xmax, ymax)
        centres = (bounds[:, :2] + bounds[:, 2:]) / 2
        return centres, float(np.median(bounds[:, 2] - bounds[:, 0]))
    centres = np.column_stack([spots.geometry.centroid.x, spots.geometry.centroid.y])
    size = 2 * spots["radius"].to_numpy() if "radius" in spots else np.sqrt(spots.geometry.area.to_numpy())
    return centres, float(np.median(size))


def recorded_scale(sdata, table, table_key, shapes_key, spot_size, circles: bool) -> tuple[float | None, str]:
    """µm per unit of a table's spots, from what the readers and tilers record; ``(None, "")`` when nothing does.

    Visium HD bins are named by their size (``square_008um``); Xenium coordinates are µm; Visium spots are 55 µm
    circles (a table with ``array_row``/``array_col``); LazySlide records the slide's µm per level-0 pixel, the
    unit of its tiles.
    """
    reader = sdata.attrs.get("spatialdata_io_reader") if sdata is not None else None

    def per_unit(spot_um: float) -> float:  # µm per coordinate unit, from a spot's known size in µm
        return spot_um / recorded_positive(spot_size, spot_size_name(shapes_key, circles), SPOT_SIZE_FIX)

    for name in (shapes_key, table_key):
        match = HD_BIN.search(str(name))
        if match:
            return per_unit(int(match.group(1))), f"the {int(match.group(1))} µm Visium HD bins"
    if reader == "xenium":
        return 1.0, "Xenium's µm coordinates"
    visium = reader == "visium" or (reader is None and {"array_row", "array_col"} <= set(table.obs.columns))
    if visium and circles:
        return per_unit(VISIUM_SPOT_UM), "the 55 µm Visium spot diameter"
    slide_mpp = sdata.attrs.get(LAZYSLIDE_PROPERTIES, {}).get("mpp") if sdata is not None else None
    if shapes_key in sdata.attrs.get(LAZYSLIDE_TILE_SPEC, {}) and slide_mpp:
        mpp = recorded_positive(slide_mpp, f"`attrs[{LAZYSLIDE_PROPERTIES!r}]['mpp']` (LazySlide)")
        return mpp, "the slide's recorded µm per pixel (LazySlide)"
    return None, ""


def table_for_tiles(sdata, shapes_key: str | None) -> tuple[str, AnnData] | None:
    """A table for tile shapes that no table annotates (LazySlide's tiles before feature extraction), or ``None``.

    The shapes are ``shapes_key`` or the only tiles LazySlide recorded. The table is returned, not written: it
    joins the data with the embeddings (:func:`omiclip.tl.embed`), so a failed run leaves the data as it was.
    """
    from spatialdata.models import TableModel

    recorded = list(sdata.attrs.get(LAZYSLIDE_TILE_SPEC, {}))
    shapes_key = shapes_key or (recorded[0] if len(recorded) == 1 else None)
    if shapes_key is None or shapes_key not in sdata.shapes:
        return None
    annotated = {
        str(region)
        for table in sdata.tables.values()
        for region in np.atleast_1d(table.uns.get("spatialdata_attrs", {}).get("region", []))
    }
    if shapes_key in annotated:
        return None
    index = sdata.shapes[shapes_key].index
    obs = pd.DataFrame(
        {"instance_id": index.to_numpy(), "region": pd.Categorical([shapes_key] * len(index))},
        index=[f"{shapes_key}_{i}" for i in index],
    )
    table = TableModel.parse(AnnData(obs=obs), region=shapes_key, region_key="region", instance_key="instance_id")
    return f"{shapes_key}_table", table


def table_scale(data, table: AnnData, table_key: str | None) -> tuple[float | None, str]:
    """µm per unit of a table's coordinates from what its data records: ``(None, "")`` when nothing does.

    scanpy's Visium AnnData: the spot diameter in full-resolution pixels; SpatialData: see :func:`recorded_scale`,
    from the shapes the table annotates (whose coordinates its ``.obsm["spatial"]`` holds, as the readers write).
    """
    if isinstance(data, AnnData):
        for library_id, library in (data.uns.get("spatial") or {}).items():
            diameter = (library.get("scalefactors") or {}).get("spot_diameter_fullres")
            if diameter is not None:
                where = f"`uns['spatial'][{library_id!r}]['scalefactors']['spot_diameter_fullres']`"
                return VISIUM_SPOT_UM / recorded_positive(diameter, where), "the 55 µm Visium spot diameter"
        return None, ""
    regions = np.atleast_1d(table.uns.get("spatialdata_attrs", {}).get("region", []))
    if len(regions) != 1 or str(regions[0]) not in data.shapes:
        return None, ""
    shapes_key = str(regions[0])
    shapes = data.shapes[shapes_key]
    _, size = spot_centres_and_size(data, shapes, shapes_key)
    return recorded_scale(data, table, table_key, shapes_key, size, "radius" in shapes.columns)


def image_microns_per_unit(image, units_per_px: float = 1.0) -> float | None:
    """µm per spot unit (or per pixel) from the pixel size an image records (sopa/wsidata metadata), if any."""
    attrs = getattr(image, "attrs", {}) or {}
    mpp = (attrs.get("metadata") or {}).get("mpp", attrs.get("mpp"))
    if not mpp:  # absent (None or 0: the readers' "unknown")
        return None
    return recorded_positive(mpp, "The image's `attrs['mpp']` (µm per pixel)") / units_per_px


def _spots_to_pixels(sdata, spots, image, shapes_key, image_key) -> np.ndarray:
    """3x3 matrix from the spots' (x, y) to the finest pixels of the image.

    LazySlide's tiles are in level-0 pixels of the slide whatever transformation the shapes carry.
    """
    if shapes_key in sdata.attrs.get(LAZYSLIDE_TILE_SPEC, {}) and hasattr(image, "children"):
        return np.eye(3)
    return affine(sdata, spots, image, shapes_key, image_key)


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


def visium_anndata_geometry(adata: AnnData, image_key: str | None, library_id: str | None) -> SpotGeometry:
    """The spots of scanpy's Visium layout on one of its images (by default the finest: hires, then lowres)."""
    check_not_empty(adata)
    spatial = adata.uns.get("spatial")
    if not spatial:
        raise KeyError("AnnData has no `uns['spatial']` (Visium layout); use a SpatialData object instead.")
    library_id = library_id or only(spatial, "library")
    if library_id not in spatial:
        raise KeyError(f"Library {library_id!r} not in `uns['spatial']`: {list(spatial)}.")
    library = spatial[library_id]
    images, scalefactors = library.get("images", {}), library.get("scalefactors", {})
    usable = [key for key in images if f"tissue_{key}_scalef" in scalefactors]
    where = f"`uns['spatial'][{library_id!r}]['scalefactors']`"
    fix = "Read the data with `scanpy.read_visium`, or copy Space Ranger's `spatial/scalefactors_json.json` there."
    if image_key is None:
        if not usable:
            needed = [f"tissue_{key}_scalef" for key in images] or ["tissue_hires_scalef"]
            raise KeyError(
                f"No image with a scale factor: {where} needs {needed} for the images {list(images)}, and has "
                f"{list(scalefactors)}. {fix}"
            )
        image_key = max(usable, key=lambda key: scalefactors[f"tissue_{key}_scalef"])  # most pixels per spot
    if image_key not in usable:
        raise KeyError(
            f"Image {image_key!r} not in `uns['spatial'][{library_id!r}]['images']` (with its scale factor "
            f"`tissue_{image_key}_scalef`); images there: {usable}. Pass one as `image_key=`."
        )
    if "spatial" not in adata.obsm:
        raise KeyError("Did not find 'spatial' in `.obsm` (spot centres in full-resolution pixels).")
    centers_fullres = get_coordinates(adata, "spatial")
    if "spot_diameter_fullres" not in scalefactors:
        raise KeyError(f"{where} lacks `spot_diameter_fullres` (the spot size in full-resolution pixels). {fix}")
    reread = "correct it, or re-read the data with `scanpy.read_visium`"
    recorded = {
        key: recorded_positive(scalefactors[key], f"{where[:-1]}[{key!r}]`", reread)
        for key in ("spot_diameter_fullres", *(f"tissue_{image}_scalef" for image in usable))
    }
    scale = recorded[f"tissue_{image_key}_scalef"]
    spot_px = recorded["spot_diameter_fullres"] * scale
    image = np.asarray(images[image_key])
    if image.ndim == 3 and image.shape[0] in (3, 4) and image.shape[-1] > 4:
        raise ValueError(
            f"Image {image_key!r} has shape {image.shape}: that is (c, y, x), but scanpy's layout is (y, x, c). "
            "Transpose it with `image.transpose(1, 2, 0)`."
        )
    if image.ndim != 3 or image.shape[-1] not in (3, 4):
        raise ValueError(f"Image {image_key!r} must be RGB or RGBA (height, width, 3 or 4), got shape {image.shape}.")
    if not (image.dtype == np.uint8 or np.issubdtype(image.dtype, np.floating)):
        raise ValueError(f"Image {image_key!r} must be uint8 or float, got {image.dtype}.")
    array = image.transpose(2, 0, 1)
    level = Level(array, VISIUM_SPOT_UM / spot_px, float_scale(array[:, ::4, ::4]))
    centers_px = centers_fullres[:, ::-1] * scale  # (y, x)
    full_px_um = VISIUM_SPOT_UM / recorded["spot_diameter_fullres"]
    others = {key: full_px_um / recorded[f"tissue_{key}_scalef"] for key in usable if key != image_key}
    return SpotGeometry([level], centers_px, spot_px, adata.obs_names, None, image_key, others)
