from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from anndata import AnnData
from scipy import sparse

from omiclip import _logging as logg
from omiclip._anndata import (
    check_unique_names,
    get_expression,
    get_table,
    obsm_frame,
    reference_pair,
    working_copy,
)
from omiclip._core.similarity import Weighting, weighted_average
from omiclip._docs import doc_params
from omiclip._keys import PREDICTED_KEY, claim, record
from omiclip._validate import check_choice, check_int, check_number, check_optional_int

if TYPE_CHECKING:
    from spatialdata import SpatialData


@doc_params
def predex(
    query: AnnData | SpatialData,
    reference: AnnData | SpatialData,
    *,
    genes: Sequence[str] | None = None,
    n_top_genes: int = 300,
    layer: str | None = None,
    use_rep: str = "X_omiclip_image",
    reference_rep: str = "X_omiclip_text",
    k: int | None = None,
    weighting: Weighting = "raw",
    temperature: float = 1.0,
    clip_negative: bool = False,
    block_size: int = 512,
    key_added: str | None = None,
    table_key: str | None = None,
    reference_table_key: str | None = None,
    copy: bool = False,
    progress: bool = True,
) -> AnnData | SpatialData:
    """Predict expression from H&E: a similarity-weighted mean of reference spots' expression (Loki PredEx).

    ``prediction_q = sum_j s_qj x_j / sum_j s_qj`` (paper eq. 16), where ``s_qj`` is the similarity between
    query ``q``'s image embedding and reference spot ``j``'s transcriptome embedding and ``x_j`` its
    expression. The default is the official rule: raw cosine weights over all reference spots, negative
    ones included. Options: the ``k`` most similar spots only, softmax weights with a temperature, or
    negative weights clipped to zero. Computed in blocks of queries, so memory stays bounded for large
    references; with ``k`` the full query × reference matrix is never built.

    The official rule averages whatever matrix it is given, and so does this function: ``X`` by default, or
    ``layer``. Averaging raw counts lets the deepest spots dominate; when the averaged matrix looks like raw
    counts (whole numbers, largest at least 20) a warning says so — normalise and log1p the reference
    (``sc.pp.normalize_total``, ``sc.pp.log1p``) or pass such a ``layer``.

    Parameters
    ----------
    query
        AnnData or SpatialData with image embeddings ``use_rep``.
    reference
        AnnData or SpatialData with transcriptome embeddings ``reference_rep`` and expression.
    genes
        Genes to predict; default the reference's ``n_top_genes`` most expressed (by mean).
    n_top_genes
        Number of genes when ``genes`` is not given.
    layer
        Reference expression to average: ``.layers[layer]``, e.g. normalised log counts (default ``X``).
    use_rep
        Query embedding in ``.obsm``.
    reference_rep
        Reference embedding in ``.obsm``.
    k
        Use only the ``k`` most similar reference spots.
    weighting
        ``"raw"`` similarities (official) or ``"softmax"`` of similarity / ``temperature``.
    temperature
        Softmax temperature.
    clip_negative
        With raw weights: set negative similarities to 0.
    block_size
        Queries per block.
    key_added
        Also write the prediction into the query table, as ``.obsm[key_added]`` (DataFrame, genes as columns; a
        "/" in a name is written as "∕").
    {table_key}
    {reference_table_key}
    copy
        Write ``.obsm[key_added]`` (default key ``"omiclip_predex"``) into a copy of ``query`` and return that
        copy; ``query`` is left as it was.
    {progress}

    Returns
    -------
    AnnData of predicted expression, query observations × genes, with ``uns["omiclip"]["predex"][key]``
    (parameters, and ``matrix``: ``"X"`` or ``"layers/{layer}"``, the reference matrix averaged; ``key``:
    ``key_added``, default ``"omiclip_predex"``). With ``copy=True``, a copy of ``query`` instead.
    Writes to the query table (``query`` itself, or with ``copy=True`` its copy) when ``key_added`` is given
    or ``copy=True``:

    ``.obsm[key_added]``
        DataFrame of the predicted expression.
    ``.uns["omiclip"]["predex"][key_added]``
        The same record.
    """
    query_table, reference_table, query_emb, reference_emb = reference_pair(
        query,
        reference,
        use_rep,
        reference_rep,
        table_key=table_key,
        reference_table_key=reference_table_key,
        unit=True,  # similarities are cosines, whatever the embeddings' lengths
    )
    check_choice("weighting", weighting, ("raw", "softmax"))
    if weighting == "softmax":
        check_number("temperature", temperature, min=0, min_inclusive=False)
        if clip_negative:
            raise ValueError("Softmax weights are never negative: `clip_negative` applies to raw weights only.")
    check_optional_int("k", k, min=1, max=reference_table.n_obs)
    written = key_added if key_added is not None else (PREDICTED_KEY if copy else None)
    if written is not None:
        claim(query_table, [("obsm", written)], step="predex", reads=[("obsm", use_rep)])
    expression, genes = _reference_expression(reference_table, genes, n_top_genes, layer)
    _warn_if_raw_counts(expression, layer)

    start = logg.info(
        f"predicting {len(genes)} genes for {query_table.n_obs} observations from {reference_table.n_obs} references"
    )
    predicted, weight_sums = weighted_average(
        query_emb,
        reference_emb,
        expression,
        k=k,
        weighting=weighting,
        temperature=temperature,
        clip_negative=clip_negative,
        block_size=block_size,
        progress=progress,
    )
    _warn_if_weights_not_positive(weight_sums)
    result = AnnData(predicted, obs=pd.DataFrame(index=query_table.obs_names.copy()), var=pd.DataFrame(index=genes))
    params = {
        "use_rep": use_rep,
        "reference_rep": reference_rep,
        "layer": layer,
        "matrix": "X" if layer is None else f"layers/{layer}",
        "k": k if k is not None else "all",
        "weighting": weighting,
        "temperature": temperature,
        "clip_negative": clip_negative,
    }
    record(result, "predex", written or PREDICTED_KEY, params)
    if written is not None:
        query = working_copy(query, copy)
        query_table = get_table(query, table_key)
        query_table.obsm[written] = obsm_frame(predicted, query_table, genes)
        record(query_table, "predex", written, {**params, "key_added": written})
    logg.finished(start, [(written, "predicted expression (obsm)")] if written else None)
    return query if copy else result


# whole numbers this large are counts: normalised log1p values stay below ~10
_RAW_COUNT_MIN_MAX = 20


def _warn_if_raw_counts(expression: np.ndarray, layer: str | None) -> None:
    """Warn when the averaged matrix looks like raw counts: whole numbers only, the largest ≥ 20."""
    largest = float(expression.max(initial=0.0))
    if largest < _RAW_COUNT_MIN_MAX or not np.array_equal(expression, np.round(expression)):
        return
    where = "`.X`" if layer is None else f"`.layers[{layer!r}]`"
    warnings.warn(
        f"The reference matrix averaged, {where}, looks like raw counts (whole numbers, up to {largest:.0f}), so "
        "the deepest spots dominate the prediction. The official rule averages it as given; to predict normalised "
        "expression, run `sc.pp.normalize_total` and `sc.pp.log1p` on the reference, or pass such a matrix as "
        "`layer=`.",
        UserWarning,
        stacklevel=3,
    )


def _warn_if_weights_not_positive(weight_sums: np.ndarray) -> None:
    bad = int((weight_sums <= 0).sum())
    if bad:
        warnings.warn(
            f"The similarity weights of {bad} of {len(weight_sums)} observations sum to <= 0, so their predictions "
            "have the wrong sign or are NaN/inf (the official raw-cosine rule keeps negative similarities). Use "
            "`k=` (the most similar references only), `clip_negative=True` or `weighting='softmax'`.",
            RuntimeWarning,
            stacklevel=3,
        )


def _reference_expression(reference: AnnData, genes, n_top_genes: int, layer: str | None):
    matrix = get_expression(reference, layer, name="the reference")
    if reference.n_vars == 0:
        raise ValueError("The reference has no expression to predict from.")
    if not reference.var_names.is_unique:
        raise ValueError("The reference's var_names are not unique; run `reference.var_names_make_unique()` first.")
    if genes is None:
        check_int("n_top_genes", n_top_genes, min=1)
        mean = np.asarray(matrix.mean(axis=0)).ravel()
        columns = np.sort(np.argsort(-mean, kind="stable")[: min(n_top_genes, reference.n_vars)])
    else:
        genes = list(genes)
        missing = [g for g in genes if g not in reference.var_names]
        if missing:
            raise KeyError(f"{len(missing)} genes are not in the reference (e.g. {missing[:5]}).")
        if not genes:
            raise ValueError("`genes` is empty.")
        check_unique_names(reference, "var", name="the reference")
        columns = reference.var_names.get_indexer(genes)
    selected = matrix[:, columns]
    selected = selected.toarray() if sparse.issparse(selected) else np.asarray(selected)
    if not np.isfinite(selected).all():
        raise ValueError("Reference expression contains NaN or inf.")
    return selected.astype(np.float32), reference.var_names[columns].astype(str)
