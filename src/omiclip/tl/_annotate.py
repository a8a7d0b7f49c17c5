from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from anndata import AnnData

from omiclip import _logging as logg
from omiclip._anndata import (
    check_embeddings,
    check_not_empty,
    check_same_dim,
    get_rep,
    get_table,
    obsm_frame,
    unit_rows,
    working_copy,
)
from omiclip._docs import doc_params
from omiclip._keys import ANNOTATION_KEY, claim, record, scores_key
from omiclip._validate import check_number
from omiclip.models import Encoder
from omiclip.tl._model import resolve_encoder

if TYPE_CHECKING:
    from spatialdata import SpatialData


@doc_params
def annotate(
    data: AnnData | SpatialData,
    references: Mapping[str, Sequence[str]] | AnnData | pd.DataFrame | Mapping[str, np.ndarray],
    *,
    model: str | os.PathLike | Encoder | None = None,
    use_rep: str = "X_omiclip_image",
    temperature: float | None = None,
    class_temperature: float | None = None,
    other_scores: pd.DataFrame | np.ndarray | None = None,
    key_added: str = ANNOTATION_KEY,
    table_key: str | None = None,
    copy: bool = False,
) -> AnnData | SpatialData | None:
    """Label observations by their most similar reference: marker genes, bulk RNA-seq or embeddings (Loki Annotate).

    Scores are cosine similarities between each observation's embedding (``use_rep``: image tiles by
    default, spot or grid tiles alike) and each reference's embedding; the label is the row-wise argmax of the
    reported scores. Marker lists become one gene sentence per class, the markers as given, in their order
    (official); bulk samples become sentences as spots do (:func:`omiclip.pp.gene_sentences`); both are
    embedded with ``model``'s text encoder.

    Relation to the official code: ``annotate_with_marker_genes`` is the default (dot products of unit
    embeddings, argmax per observation; the official argmax runs over the flattened matrix, which is only right
    for one image). ``annotate_with_bulk(..., tensor=True)`` is ``temperature``: for each reference, a softmax
    over all observations. Its ``tensor=False`` branch (a softmax without temperature, then min–max scaled) is not
    reproduced: it ranks the observations as the raw scores do.

    ``other_scores`` fuses a second vision–language model (the paper's PLIP combination, eq. 8–11): each
    model's scores are min–max normalised per observation and summed.

    Parameters
    ----------
    data
        AnnData or SpatialData with ``use_rep``.
    references
        ``{class: [marker genes]}``; an AnnData of bulk samples × genes (one class per sample, named by
        ``obs_names``); or precomputed embeddings (DataFrame classes × dims, or ``{class: vector}``).
    model
        Encoder (or name/path) for marker lists and bulk profiles; the one that made ``use_rep``.
    use_rep
        Embedding of the observations in ``.obsm``.
    temperature
        Official meaning (``annotate_with_bulk(tensor=True)`` with its default ``normalize=True``): report, for each
        reference, ``softmax(score / (sqrt(dim) * temperature))`` over all observations, a heat map that sums to 1
        over the observations (so its values depend on how many there are). ``None``: the scores.
    class_temperature
        Report ``softmax(score / class_temperature)`` across the references of each observation instead (not in
        the official code; the scores of each observation sum to 1).
    other_scores
        Another model's scores, observations × classes in the same class order. DataFrame columns are matched
        to classes by name, and rows to observations by name when the index holds observation names.
    key_added
        ``.obs[key_added]`` labels and ``.obsm[f"{key_added}_scores"]``.
    {table_key}
    {copy}

    Returns
    -------
    ``None``, or a copy of ``data`` when ``copy=True``. Writes to the table:

    ``.obs["omiclip_annotation"]``
        Label (categorical).
    ``.obsm["omiclip_annotation_scores"]``
        DataFrame of scores, one column per class (a "/" in a name is written as "∕", which zarr can store).
    ``.uns["omiclip"]["annotate"][key_added]``
        Parameters and the class names.
    """
    table = get_table(data, table_key)
    check_not_empty(table)
    embedding = get_rep(table, use_rep)
    classes, class_embeddings = _reference_embeddings(references, model)
    check_same_dim(embedding, class_embeddings, use_rep, "the references")
    for name, value in (("temperature", temperature), ("class_temperature", class_temperature)):
        if value is not None:
            check_number(name, value, min=0, min_inclusive=False)
    if temperature is not None and class_temperature is not None:
        raise ValueError("Give `temperature` (softmax over observations) or `class_temperature`, not both.")
    claim(table, [("obs", key_added), ("obsm", scores_key(key_added))], step="annotate", reads=[("obsm", use_rep)])
    other = None if other_scores is None else _aligned(other_scores, classes, table.obs_names)

    start = logg.info(f"annotating {table.n_obs} observations with {len(classes)} references")
    scores = unit_rows(embedding, f"`.obsm[{use_rep!r}]`") @ class_embeddings.T
    if other is not None:
        scores = _min_max_rows(scores) + _min_max_rows(other)
    if temperature is not None:
        scores = _softmax(scores / (np.sqrt(embedding.shape[1]) * temperature), axis=0)
    elif class_temperature is not None:
        scores = _softmax(scores / class_temperature, axis=1)

    try:  # built before anything is written: a class name zarr cannot store fails here, not halfway
        frame = obsm_frame(scores, table, classes)
    except ValueError as error:
        raise ValueError(f"`references`: {error} Rename those classes.") from None
    data = working_copy(data, copy)
    table = get_table(data, table_key)
    table.obs[key_added] = pd.Categorical.from_codes(np.argmax(scores, axis=1), categories=classes)
    table.obsm[scores_key(key_added)] = frame
    record(
        table,
        "annotate",
        key_added,
        {
            "use_rep": use_rep,
            "classes": np.asarray(classes, dtype=str),
            "temperature": temperature if temperature is not None else "none",
            "class_temperature": class_temperature if class_temperature is not None else "none",
            "fused": other_scores is not None,
            "key_added": key_added,
        },
    )
    logg.finished(start, [(key_added, "labels (obs)"), (scores_key(key_added), "scores (obsm)")])
    return data if copy else None


def _reference_embeddings(references, model) -> tuple[list[str], np.ndarray]:
    """Class names and unit-norm embeddings of the references."""
    if isinstance(references, pd.DataFrame):
        classes, vectors = [str(c) for c in references.index], references.to_numpy(dtype=np.float32)
    elif isinstance(references, AnnData):
        classes, vectors = _bulk_embeddings(references, model)
    elif isinstance(references, Mapping) and references:
        first = next(iter(references.values()))
        if isinstance(first, np.ndarray) and first.dtype.kind == "f":
            classes = [str(c) for c in references]
            vectors = np.stack([np.asarray(v, dtype=np.float32) for v in references.values()])
        else:
            classes, sentences = _marker_sentences(references)
            vectors = _encoder(model).encode_text(sentences)
    else:
        raise TypeError("`references` must be marker lists, a bulk AnnData or embeddings, and not empty.")
    if not classes:
        raise ValueError("`references` is empty: give at least one class.")
    if len(set(classes)) != len(classes):
        raise ValueError("Reference names are not unique.")
    check_embeddings(vectors, "`references`")
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return classes, (vectors / norms).astype(np.float32)


def _marker_sentences(markers: Mapping[str, Sequence[str]]) -> tuple[list[str], list[str]]:
    """One sentence per class: its markers as given, joined by spaces (official).

    The text need not name genes of the data, which may be images only.
    """
    classes, sentences = [], []
    for name, genes in markers.items():
        genes = [genes] if isinstance(genes, str) else [str(g) for g in genes]
        if not genes:
            raise ValueError(f"Class {name!r} has no marker gene.")
        classes.append(str(name))
        sentences.append(" ".join(genes))
    return classes, sentences


def _bulk_embeddings(bulk: AnnData, model) -> tuple[list[str], np.ndarray]:
    from omiclip.pp import gene_sentences

    bulk = gene_sentences(bulk, copy=True)
    return [str(c) for c in bulk.obs_names], _encoder(model).encode_text(bulk.obs["gene_sentence"].tolist())


def _encoder(model) -> Encoder:
    if model is None:
        raise ValueError("Marker lists and bulk profiles are embedded with a model: pass `model=`.")
    return resolve_encoder(model)


def _aligned(other, classes: list[str], obs_names: pd.Index) -> np.ndarray:
    """``other_scores`` as an (n_obs, n_classes) array in the table's row order and ``classes``' column order."""
    if isinstance(other, pd.DataFrame):
        missing = [c for c in classes if c not in other.columns]
        if missing:
            raise KeyError(f"`other_scores` lacks classes {missing[:5]}.")
        if other.index.isin(obs_names).any():  # indexed by observation names: match rows by name, not position
            absent = obs_names[~obs_names.isin(other.index)]
            if len(absent) or not other.index.is_unique:
                raise KeyError(
                    f"`other_scores` is indexed by observation names but has no row for {len(absent)} observations "
                    f"(e.g. {list(absent[:3])}) or repeats names; give one row per observation."
                )
            other = other.reindex(obs_names)
        other = other[classes].to_numpy()
    other = np.asarray(other, dtype=np.float64)
    n_obs = len(obs_names)
    if other.shape != (n_obs, len(classes)):
        raise ValueError(f"`other_scores` must be ({n_obs}, {len(classes)}), got {other.shape}.")
    if not np.isfinite(other).all():
        raise ValueError(f"`other_scores` has {int((~np.isfinite(other)).any(axis=1).sum())} rows with NaN/inf.")
    return other


def _softmax(values: np.ndarray, axis: int) -> np.ndarray:
    shifted = np.exp(values - values.max(axis=axis, keepdims=True))
    return shifted / shifted.sum(axis=axis, keepdims=True)


def _min_max_rows(scores: np.ndarray) -> np.ndarray:
    low, high = scores.min(axis=1, keepdims=True), scores.max(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.nan_to_num((scores - low) / (high - low))
