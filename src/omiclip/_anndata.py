"""The one place that knows where omiclip reads and writes in AnnData and SpatialData objects."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from anndata import AnnData

if TYPE_CHECKING:
    from spatialdata import SpatialData

UNS_KEY = "omiclip"
SENTENCE_KEY = "gene_sentence"
# µm per unit of a table's spatial coordinates (obsm["spatial"], its shapes); written by omiclip's readers
MICRONS_PER_UNIT_KEY = "microns_per_unit"


def embedding_key(modality: str, key_added: str | None = None) -> str:
    """``.obsm`` key of an embedding: ``key_added`` or ``X_omiclip_{modality}``."""
    return key_added or f"X_omiclip_{modality}"


def record(adata: AnnData, step: str, params: dict[str, Any]) -> None:
    """Store a step's parameters (and small results) in ``adata.uns["omiclip"][step]``."""
    adata.uns.setdefault(UNS_KEY, {})[step] = params


def is_spatialdata(data: Any) -> bool:
    """Whether ``data`` is a SpatialData object or subclass (e.g. LazySlide's ``WSIData``), without importing it."""
    return any(cls.__name__ == "SpatialData" for cls in type(data).__mro__) and hasattr(data, "tables")


def get_table(data: AnnData | SpatialData, table_key: str | None = None) -> AnnData:
    """The AnnData to work on: ``data`` itself, or a table of a SpatialData object."""
    if isinstance(data, AnnData):
        if table_key is not None:
            raise ValueError("`table_key` only applies to SpatialData inputs.")
        return data
    if not is_spatialdata(data):
        raise TypeError(f"Expected AnnData or SpatialData, got {type(data).__name__}.")
    tables = list(data.tables)
    if table_key is None:
        if len(tables) != 1:
            raise ValueError(f"SpatialData has {len(tables)} tables ({tables}); choose one with `table_key=`.")
        table_key = tables[0]
    if table_key not in data.tables:
        raise KeyError(f"Table {table_key!r} not found in SpatialData; available: {tables}.")
    return data.tables[table_key]


def working_copy(data: AnnData | SpatialData, copy: bool) -> AnnData | SpatialData:
    """``data`` itself, or a copy that shares nothing that omiclip writes to.

    For SpatialData the tables are copied and the other elements shallow-copied (:func:`own_elements`).
    """
    if not copy:
        return data
    if isinstance(data, AnnData):
        return data.copy()
    from spatialdata import SpatialData

    return SpatialData(
        **own_elements(data),
        tables={key: table.copy() for key, table in data.tables.items()},
        attrs=dict(data.attrs),
    )


def own_elements(sdata: SpatialData, kinds: tuple[str, ...] = ("images", "labels", "points", "shapes")) -> dict:
    """Shallow copies of the elements of ``sdata``, by kind.

    Each copy has its own ``attrs``, where transformations live, and shares its data (dask arrays, geometries), so
    a transformation set on a copy (e.g. by a later ``oc.tl.align``) never reaches the original.
    """
    return {kind: {name: element.copy(deep=False) for name, element in getattr(sdata, kind).items()} for kind in kinds}


def check_obs_key(adata: AnnData, key: str, *, made_by: str) -> None:
    """Raise the error that tells which function makes a missing ``.obs`` column."""
    if key not in adata.obs:
        raise KeyError(f"Did not find {key!r} in `.obs`. Run `{made_by}` first.")


def check_not_empty(adata: AnnData) -> None:
    """Zero observations is an error, not an empty result."""
    if adata.n_obs == 0:
        raise ValueError("The data has no observations (n_obs == 0).")


def get_rep(adata: AnnData, use_rep: str, *, made_by: str = "oc.tl.embed") -> np.ndarray:
    """An embedding from ``.obsm`` as float32, with the errors that say what to do."""
    if use_rep not in adata.obsm:
        raise KeyError(f"Did not find {use_rep!r} in `.obsm`. Run `{made_by}` first.")
    rep = np.asarray(adata.obsm[use_rep], dtype=np.float32)
    if rep.ndim != 2 or rep.shape[0] != adata.n_obs:
        raise ValueError(f"`.obsm[{use_rep!r}]` must be (n_obs, dim), got shape {rep.shape}.")
    if not np.isfinite(rep).all():
        raise ValueError(f"`.obsm[{use_rep!r}]` has {int((~np.isfinite(rep)).any(axis=1).sum())} rows with NaN/inf.")
    return rep


def get_coordinates(
    adata: AnnData,
    key: str = "spatial",
    *,
    made_by: str | None = None,
    name: str = "the data",
    first_two: bool = False,
) -> np.ndarray:
    """``(n_obs, 2)`` float64 x/y from ``.obsm[key]``, with the errors that say what to do.

    ``name`` says whose coordinates in the errors (e.g. "the source"); ``first_two`` accepts 3-D coordinates (e.g.
    ``align_stack``'s ``_3d``) and keeps x, y. NaN/inf are an error.
    """
    where = f"`.obsm[{key!r}]` of {name}"
    if key not in adata.obsm:
        fix = f"Run `{made_by}` first." if made_by else "Pass the coordinates' key as `spatial_key=`."
        raise KeyError(f"Did not find {where}. {fix}")
    xy = np.asarray(adata.obsm[key], dtype=np.float64)
    if xy.ndim != 2 or xy.shape[0] != adata.n_obs or not (xy.shape[1] >= 2 if first_two else xy.shape[1] == 2):
        raise ValueError(f"{where} must be (n_obs, 2) x/y coordinates, got shape {xy.shape}.")
    if not np.isfinite(xy).all():
        bad = int((~np.isfinite(xy)).any(axis=1).sum())
        raise ValueError(f"{where} has {bad} rows with NaN/inf; drop those observations first.")
    return xy[:, :2]


def check_same_dim(query: np.ndarray, reference: np.ndarray, query_rep: str, reference_rep: str) -> None:
    """Both embeddings must come from one embedding space."""
    if query.shape[1] != reference.shape[1]:
        raise ValueError(
            f"Embedding dimensions differ: {query_rep!r} has {query.shape[1]}, {reference_rep!r} has "
            f"{reference.shape[1]}. Embed both with the same model."
        )
