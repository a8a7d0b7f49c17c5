"""The one place that knows where omiclip reads and writes in AnnData and SpatialData objects."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import pandas as pd
from anndata import AnnData

from omiclip import _logging as logg

if TYPE_CHECKING:
    from spatialdata import SpatialData


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
    return data.tables[table_name(data, table_key)]


def table_name(sdata: SpatialData, table_key: str | None, *, option: str = "`table_key=`") -> str:
    """The name of the table to work on: ``table_key``, or the only table; ``option`` names the argument."""
    tables = list(sdata.tables)
    if not tables:
        raise ValueError(
            "SpatialData has no table: the spots' table (e.g. of a reader in spatialdata-io) is what omiclip works on."
        )
    if table_key is None:
        if len(tables) != 1:
            raise ValueError(f"SpatialData has {len(tables)} tables ({tables}); choose one with {option}.")
        return tables[0]
    if table_key not in sdata.tables:
        raise KeyError(f"Table {table_key!r} not found in SpatialData; available: {tables}.")
    return table_key


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


def as_names(values) -> np.ndarray:
    """Names kept in ``.uns`` (e.g. a reference's ``obs_names``) as a ``str`` array.

    Written as strings and read back from zarr, they come as NumPy's ``StringDType``, which cannot be cast to
    ``str`` directly; through Python objects it can.
    """
    return np.asarray(np.asarray(values, dtype=object).tolist(), dtype=str)


def check_obs_key(adata: AnnData, key: str, *, made_by: str) -> None:
    """Raise the error that tells which function makes a missing ``.obs`` column."""
    if key not in adata.obs:
        raise KeyError(f"Did not find {key!r} in `.obs`. Run `{made_by}` first.")


def check_not_empty(adata: AnnData, name: str = "the data") -> None:
    """Zero observations is an error, not an empty result; ``name`` says whose (e.g. "the reference")."""
    if adata.n_obs == 0:
        raise ValueError(f"{name[0].upper()}{name[1:]} has no observations (n_obs == 0).")


def check_unique_names(adata: AnnData, axis: str = "obs", name: str = "the data") -> None:
    """Observations (or genes) are looked up by name: a repeated name would be ambiguous, so it is an error."""
    names = adata.obs_names if axis == "obs" else adata.var_names
    if not names.is_unique:
        repeated = names[names.duplicated()].unique()
        raise ValueError(
            f"{name[0].upper()}{name[1:]} repeats {len(repeated)} `{axis}_names` (e.g. {list(repeated[:3])}), which "
            f"are looked up by name here; call `.{axis}_names_make_unique()` first."
        )


def get_expression(adata: AnnData, layer: str | None = None, *, name: str = "the data"):
    """The expression matrix ``X`` or ``layers[layer]``, with the errors that say what to pass."""
    if layer is not None and layer not in adata.layers:
        raise KeyError(f"Layer {layer!r} not found in {name}; available layers: {list(adata.layers)}.")
    matrix = adata.X if layer is None else adata.layers[layer]
    if matrix is None:
        raise ValueError(f"{name[0].upper()}{name[1:]} has no expression matrix (`.X` is None); pass `layer=`.")
    return matrix


def get_rep(adata: AnnData, use_rep: str, *, made_by: str = "oc.tl.embed") -> np.ndarray:
    """An embedding from ``.obsm`` as float32, with the errors that say what to do."""
    if use_rep not in adata.obsm:
        raise KeyError(f"Did not find {use_rep!r} in `.obsm`. Run `{made_by}` first.")
    rep = np.asarray(adata.obsm[use_rep], dtype=np.float32)
    if rep.ndim != 2 or rep.shape[0] != adata.n_obs:
        raise ValueError(f"`.obsm[{use_rep!r}]` must be (n_obs, dim), got shape {rep.shape}.")
    check_embeddings(rep, f"`.obsm[{use_rep!r}]`")
    return rep


def unit_rows(vectors: np.ndarray, where: str) -> np.ndarray:
    """``vectors`` with every row scaled to unit length, so that dot products are cosines (Loki's ``F.normalize``).

    Embeddings from :func:`omiclip.tl.embed` already are, and come back unchanged (bit for bit); others (e.g. from
    another model) would otherwise let their longest rows win every similarity.
    """
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    if np.allclose(norms, 1.0, rtol=0, atol=1e-3):
        return vectors
    logg.info(
        f"    rows of {where} scaled to unit length (norms {norms.min():.3g}–{norms.max():.3g}): cosine similarity"
    )
    return (vectors / norms).astype(vectors.dtype, copy=False)


def check_embeddings(vectors: np.ndarray, where: str) -> None:
    """The one rule for every embedding omiclip reads: each row finite and not all zero (it has no direction).

    ``where`` names the embeddings in the error (e.g. "`.obsm['X_omiclip_text']`").
    """
    bad_values = ~np.isfinite(vectors).all(axis=1)
    zero = ~bad_values & ~vectors.any(axis=1)
    if bad_values.any() or zero.any():
        rows = np.flatnonzero(bad_values | zero)
        raise ValueError(
            f"{where} has {int(bad_values.sum())} rows with NaN/inf and {int(zero.sum())} all-zero rows (rows "
            f"{rows[:5].tolist()}{', ...' if len(rows) > 5 else ''}): an embedding needs a direction. Embed those "
            "observations again, or drop them."
        )


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


class ReferencePair(NamedTuple):
    """The tables and embeddings of a query and the reference it is compared with (:func:`reference_pair`)."""

    query: AnnData
    reference: AnnData
    query_rep: np.ndarray | None
    reference_rep: np.ndarray | None


def reference_pair(
    query: AnnData | SpatialData,
    reference: AnnData | SpatialData,
    use_rep: str | None,
    reference_rep: str | None,
    *,
    table_key: str | None = None,
    reference_table_key: str | None = None,
    names: tuple[str, str] = ("the query", "the reference"),
    unit: bool = False,
) -> ReferencePair:
    """Two tables, both non-empty, with two embeddings of one dimension (``None`` reps: tables only).

    ``names`` say which is which in the errors (e.g. ``("the source", "the target")``); ``unit`` scales the
    embeddings' rows to unit length (:func:`unit_rows`), for steps whose similarities are cosines.
    """
    query_table = get_table(query, table_key)
    reference_table = get_table(reference, reference_table_key)
    check_not_empty(query_table, names[0])
    check_not_empty(reference_table, names[1])
    if use_rep is None or reference_rep is None:
        return ReferencePair(query_table, reference_table, None, None)
    query_emb = get_rep(query_table, use_rep)
    reference_emb = get_rep(reference_table, reference_rep)
    check_same_dim(query_emb, reference_emb, use_rep, reference_rep)
    if unit:
        query_emb = unit_rows(query_emb, f"`.obsm[{use_rep!r}]` of {names[0]}")
        reference_emb = unit_rows(reference_emb, f"`.obsm[{reference_rep!r}]` of {names[1]}")
    return ReferencePair(query_table, reference_table, query_emb, reference_emb)


def check_same_dim(query: np.ndarray, reference: np.ndarray, query_rep: str, reference_rep: str) -> None:
    """Both embeddings must come from one embedding space."""
    if query.shape[1] != reference.shape[1]:
        raise ValueError(
            f"Embedding dimensions differ: {query_rep!r} has {query.shape[1]}, {reference_rep!r} has "
            f"{reference.shape[1]}. Embed both with the same model."
        )


# zarr stores a DataFrame's columns as arrays named by the column, and a name cannot hold "/" (a path separator):
# in ``.obsm`` frames omiclip writes "/" as the look-alike division slash, and readers turn it back
_SLASH, _STORED_SLASH = "/", "\u2215"


def obsm_frame(values: np.ndarray, adata: AnnData, names) -> pd.DataFrame:
    """``values`` as a DataFrame for ``adata.obsm``: one column per name, named so that zarr can write it.

    A "/" in a name (e.g. "CD4+/CD25 T Reg") is stored as "\u2215"; :func:`restore_names` turns it back.
    """
    names = [str(name) for name in names]
    clashing = [name for name in names if _STORED_SLASH in name]
    if clashing:
        raise ValueError(f"Names may not hold the character {_STORED_SLASH!r} (U+2215), got {clashing[:3]}.")
    stored = [name.replace(_SLASH, _STORED_SLASH) for name in names]
    return pd.DataFrame(values, index=adata.obs_names, columns=stored)


def restore_names(frame: pd.DataFrame) -> pd.DataFrame:
    """An ``.obsm`` frame written by :func:`obsm_frame` with its names as they were given."""
    return frame.set_axis([str(c).replace(_STORED_SLASH, _SLASH) for c in frame.columns], axis=1)
