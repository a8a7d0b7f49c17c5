from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from anndata import AnnData
from scipy import sparse

from omiclip import _logging as logg
from omiclip._anndata import (
    check_not_empty,
    get_coordinates,
    get_expression,
    get_table,
    is_spatialdata,
    own_elements,
)
from omiclip._core.pseudo_spots import assign, hex_centres, membership
from omiclip._keys import MICRONS_PER_UNIT_KEY, PSEUDO_SPOTS_KEY, SPATIAL_KEY, record, table_of_shapes
from omiclip._validate import check_int, check_memory, check_number
from omiclip.pp._spot_geometry import stored_microns_per_unit, table_scale

if TYPE_CHECKING:
    from spatialdata import SpatialData


def pseudo_spots(
    data: AnnData | SpatialData,
    *,
    spot_diameter_um: float = 55.0,
    spacing_um: float = 100.0,
    groupby: str | None = None,
    layer: str | None = None,
    spatial_key: str = SPATIAL_KEY,
    microns_per_unit: float | None = None,
    min_cells: int = 1,
    coordinate_system: str | None = None,
    key_added: str = PSEUDO_SPOTS_KEY,
    table_key: str | None = None,
) -> AnnData | SpatialData:
    """Turn single-cell–resolution data (Xenium cells, Visium HD bins) into Visium-like pseudo-spots.

    Spots of ``spot_diameter_um`` sit on a hexagonal grid with ``spacing_um`` between centres over the data's
    bounding box; each spot sums the expression of the cells (or bins) whose centre lies inside it. Cells between
    spots are left out, as on a Visium slide. The result can be embedded and aligned like any Visium section, e.g.
    to align a Xenium section onto a Visium one.

    Parameters
    ----------
    data
        AnnData of cells/bins × genes with centres in ``.obsm[spatial_key]``, or SpatialData with such a table.
    spot_diameter_um
        Spot diameter (Visium: 55 µm).
    spacing_um
        Distance between neighbouring spot centres (Visium: 100 µm).
    groupby
        Categorical ``.obs`` column (e.g. cell type) to count per spot into ``.obsm["cell_counts"]``.
    layer
        Expression layer to sum (default ``X``; counts are expected).
    spatial_key
        Centres in ``.obsm``.
    microns_per_unit
        µm per unit of the centres. Default: ``.uns["microns_per_unit"]``, else what the data records (Visium HD
        bin size, Xenium's µm, the Visium spot diameter); needed only when nothing does.
    min_cells
        Keep spots that cover at least this many cells/bins.
    coordinate_system
        For SpatialData: the coordinate system of the table's centres, in which the spot circles are placed.
        Default: where the shapes the table annotates are (their transformations are copied, as the centres are in
        their units: Visium HD bins, Xenium cells), else ``"global"``.
    key_added
        For SpatialData: name of the new shapes element; its table is ``{key_added}_table``.
    table_key
        Table of a SpatialData input with several tables.

    Returns
    -------
    For AnnData input, an AnnData of spots × genes with ``.obs["n_cells"]``, ``.obsm["spatial"]`` (centres, in the
    input's units), ``.obsm["cell_counts"]`` (DataFrame, with ``groupby``), ``.uns["microns_per_unit"]`` and
    ``.uns["omiclip"]["pseudo_spots"][key_added]``. For SpatialData, a new SpatialData with the input's images, circles
    ``key_added`` and that table (``{key_added}_table``) linked to them, so H&E tiles can be cut at the
    pseudo-spots.
    """
    check_number("spot_diameter_um", spot_diameter_um, min=0, min_inclusive=False)
    check_number("spacing_um", spacing_um, min=spot_diameter_um)
    if microns_per_unit is not None:
        check_number("microns_per_unit", microns_per_unit, min=0, min_inclusive=False)
    check_int("min_cells", min_cells, min=0)
    table = get_table(data, table_key)
    check_not_empty(table)
    xy = get_coordinates(table, spatial_key)
    um = microns_per_unit if microns_per_unit is not None else stored_microns_per_unit(table)
    if um is None:
        um, source = table_scale(data, table, table_key)
        if um is not None:
            logg.info(f"    {um:.4g} µm per unit of `.obsm[{spatial_key!r}]`, from {source}")
    if um is None:
        raise ValueError(
            "The physical scale is unknown: pass `microns_per_unit=` (µm per unit of the coordinates; 1 for "
            "Xenium µm coordinates) or set `.uns['microns_per_unit']`."
        )
    counts = _expression(table, layer)
    if groupby is not None:
        if groupby not in table.obs:
            raise KeyError(f"Did not find {groupby!r} in `.obs`; available: {list(table.obs.columns)}.")
        labels = table.obs[groupby].astype("category")
        _warn_if_unlabelled(labels, groupby)

    start = logg.info(f"pooling {table.n_obs} observations into {spot_diameter_um:g} µm pseudo-spots")
    spacing, radius = spacing_um / um, spot_diameter_um / um / 2
    n_centres = np.prod((np.ptp(xy, axis=0) / (spacing * np.array([1, np.sqrt(3) / 2]))) + 2)
    name, value = ("microns_per_unit", um) if microns_per_unit is not None else ("spacing_um", spacing_um)
    check_memory(name, value, n_centres * 2 * 8 * 4, f"a grid of {n_centres:.3g} pseudo-spots")
    centres = hex_centres(xy.min(0), xy.max(0), spacing)
    members = membership(assign(xy, centres, radius), len(centres))
    n_cells = np.asarray(members.sum(axis=1)).ravel()
    keep = np.flatnonzero(n_cells >= max(min_cells, 1))
    if len(keep) == 0:
        raise ValueError(f"No pseudo-spot covers {min_cells} observations: check `microns_per_unit` ({um}).")
    members = members[keep]

    spots = AnnData(
        members @ counts,
        obs=pd.DataFrame({"n_cells": n_cells[keep].astype(int)}, index=[f"pseudo_spot_{i}" for i in keep]),
        var=table.var[[]].copy(),
    )
    spots.obsm["spatial"] = centres[keep]
    if groupby is not None:
        indicator = sparse.csr_matrix(pd.get_dummies(labels).to_numpy(dtype=np.float32))
        spots.obsm["cell_counts"] = pd.DataFrame(
            (members @ indicator).toarray(), index=spots.obs_names, columns=labels.cat.categories.astype(str)
        )
    spots.uns[MICRONS_PER_UNIT_KEY] = float(um)
    record(
        spots,
        "pseudo_spots",
        key_added,
        {"spot_diameter_um": spot_diameter_um, "spacing_um": spacing_um, "groupby": groupby, "layer": layer},
    )
    covered = int(n_cells[keep].sum())
    note = f"    {len(keep)} spots cover {covered} of {table.n_obs} observations"
    if not is_spatialdata(data):
        logg.finished(start, [("cell_counts", "counts per group (obsm)")] if groupby else None, note=note)
        return spots
    result = _spatialdata(data, table, spots, radius, coordinate_system, key_added)
    logg.finished(start, [(key_added, "circles and their table (new SpatialData)")], note=note)
    return result


def _expression(table: AnnData, layer: str | None):
    counts = sparse.csr_matrix(get_expression(table, layer), dtype=np.float32)
    # pseudo-spots sum counts, as a spot captures the RNA of the cells under it: NaN or scaled values cannot be summed
    if not np.isfinite(counts.data).all():
        raise ValueError("Expression contains NaN or inf; fill or remove those values first.")
    if (counts.data < 0).any():
        raise ValueError("Expression contains negative values (scaled data?); pool counts, e.g. `layer='counts'`.")
    fractional = np.count_nonzero(counts.data != np.round(counts.data))
    if fractional:
        warnings.warn(
            f"{fractional:,} of {counts.nnz:,} stored values are not whole numbers: normalised or log data? Pseudo-"
            "spots sum the values as a spot sums counts, so pool raw counts (e.g. `layer='counts'`); ignore this for "
            "corrected counts that are fractional by design.",
            UserWarning,
            stacklevel=3,
        )
    return counts


def _warn_if_unlabelled(labels: pd.Series, groupby: str) -> None:
    """Observations without a label count in ``n_cells`` but in no column of ``cell_counts``: say how many."""
    missing = int(labels.isna().sum())
    if missing:
        warnings.warn(
            f"{missing:,} of {len(labels):,} observations have no `.obs[{groupby!r}]` label: they are pooled and "
            "count in `n_cells`, but in no column of `obsm['cell_counts']`. Label them (e.g. 'unknown') to count them.",
            UserWarning,
            stacklevel=3,
        )


def _spatialdata(sdata, table: AnnData, spots: AnnData, radius: float, coordinate_system: str | None, key: str):
    from spatialdata import SpatialData
    from spatialdata.models import ShapesModel, TableModel
    from spatialdata.transformations import Identity, get_transformation

    regions = np.atleast_1d(table.uns.get("spatialdata_attrs", {}).get("region", []))
    if coordinate_system is None and len(regions) == 1 and str(regions[0]) in sdata.shapes:
        transformations = get_transformation(sdata.shapes[str(regions[0])], get_all=True)
    else:
        transformations = {coordinate_system or "global": Identity()}

    spots = spots.copy()
    spots.obs["spot_id"] = np.arange(spots.n_obs)
    spots.obs["region"] = pd.Categorical([key] * spots.n_obs)
    circles = ShapesModel.parse(
        spots.obsm["spatial"],
        geometry=0,
        radius=np.full(spots.n_obs, radius),
        index=spots.obs["spot_id"].to_numpy(),
        transformations=transformations,
    )
    table = TableModel.parse(spots, region=key, region_key="region", instance_key="spot_id")
    return SpatialData(**own_elements(sdata, ("images",)), shapes={key: circles}, tables={table_of_shapes(key): table})
