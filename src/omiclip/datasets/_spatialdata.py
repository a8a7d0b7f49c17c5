"""Assemble SpatialData objects with the element names every omiclip reader and generator uses."""

from __future__ import annotations

import numpy as np
import pandas as pd
from anndata import AnnData

IMAGE_KEY = "he"
SHAPES_KEY = "spots"
TABLE_KEY = "table"
CELLS_KEY = "cells"
INSTANCE_KEY = "spot_id"
REGION_KEY = "region"


def build_sdata(
    table: AnnData,
    *,
    spot_radius: float,
    image: np.ndarray | None,
    image_to_global: float,
    coordinate_system: str,
    cells: pd.DataFrame | None = None,
    scale_factors: tuple[int, ...] = (2, 2, 2),
    chunk_px: int = 1024,
):
    """SpatialData with a multiscale ``he`` image, circle ``spots`` linked to ``table``, optional ``cells``.

    ``table.obsm["spatial"]`` holds spot centres in the units of ``coordinate_system``; the image's pixel
    size in those units is ``image_to_global``.
    """
    from spatialdata import SpatialData
    from spatialdata.models import Image2DModel, PointsModel, ShapesModel, TableModel
    from spatialdata.transformations import Identity, Scale

    table = table.copy()
    table.obs[INSTANCE_KEY] = np.arange(table.n_obs)
    table.obs[REGION_KEY] = pd.Categorical([SHAPES_KEY] * table.n_obs)
    xy = np.asarray(table.obsm["spatial"], dtype=float)
    shapes = ShapesModel.parse(
        xy,
        geometry=0,
        radius=np.full(len(xy), spot_radius),
        index=table.obs[INSTANCE_KEY].to_numpy(),
        transformations={coordinate_system: Identity()},
    )
    elements = {"shapes": {SHAPES_KEY: shapes}}
    if image is not None:
        elements["images"] = {
            IMAGE_KEY: Image2DModel.parse(
                image,
                dims=("c", "y", "x"),
                c_coords=["r", "g", "b"],
                scale_factors=_usable_scale_factors(image.shape[1:], scale_factors) or None,
                chunks=(3, chunk_px, chunk_px),
                transformations={coordinate_system: Scale([image_to_global, image_to_global], axes=("y", "x"))},
            )
        }
    if cells is not None:
        elements["points"] = {
            CELLS_KEY: PointsModel.parse(
                cells, coordinates={"x": "x", "y": "y"}, transformations={coordinate_system: Identity()}
            )
        }
    elements["tables"] = {
        TABLE_KEY: TableModel.parse(table, region=SHAPES_KEY, region_key=REGION_KEY, instance_key=INSTANCE_KEY)
    }
    return SpatialData(**elements)


def _usable_scale_factors(shape: tuple[int, ...], scale_factors) -> list[int]:
    """Drop pyramid levels that would be smaller than 256 px."""
    usable, side = [], min(shape)
    for factor in scale_factors:
        side //= factor
        if side < 256:
            break
        usable.append(factor)
    return usable
