from __future__ import annotations

import re
import warnings
from collections.abc import Collection
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd
from anndata import AnnData
from scipy import sparse

from omiclip import _logging as logg
from omiclip._anndata import check_not_empty, get_expression, get_table, working_copy
from omiclip._core.sentences import genes_within_budget, join_sentences, pad_with_unexpressed, top_genes
from omiclip._docs import doc_params
from omiclip._housekeeping import housekeeping_genes
from omiclip._keys import SENTENCE_KEY, claim, record
from omiclip._validate import check_int

if TYPE_CHECKING:
    from spatialdata import SpatialData

# the official code drops names with "." or "-": versioned Ensembl IDs, MT-*, HLA-*, clone names
_LOKI_NAME_PATTERN = re.compile(r"[.\-]")


@doc_params
def gene_sentences(
    data: AnnData | SpatialData,
    *,
    n_genes: int = 50,
    layer: str | None = None,
    gene_symbols: str | None = None,
    exclude: Literal["loki"] | Collection[str] | None = "loki",
    pad: bool = False,
    key_added: str = SENTENCE_KEY,
    table_key: str | None = None,
    copy: bool = False,
) -> AnnData | SpatialData | None:
    """Write each observation's top expressed genes as a "gene sentence", the text OmiCLIP reads.

    Genes are ranked by their value in ``X`` (or ``layer``), highest first, ties in var order, and the
    top ``n_genes`` with a value above zero are joined by single spaces. Per-observation normalisation
    and log1p do not change the ranking, so raw and normalised counts give the same sentences. Dense
    and sparse matrices are processed in row chunks without densifying (memory O(nnz)).

    The official model's tokenizer keeps 74 content tokens, about 22 of 50 genes; the number of genes
    that survive is recorded per observation.

    Parameters
    ----------
    data
        AnnData, or SpatialData (its table is used).
    n_genes
        Genes per sentence (the official value is 50).
    layer
        Layer to rank instead of ``X``.
    gene_symbols
        ``.var`` column with gene symbols, when ``var_names`` are not symbols (e.g. Ensembl IDs).
    exclude
        ``"loki"``: the official exclusions, names containing ``.`` or ``-`` and Loki's 394
        housekeeping genes. A collection of symbols: exactly those. ``None``: nothing.
    pad
        Complete observations with fewer than ``n_genes`` expressed genes with zero-count genes in
        var order, as the official code does (for exact compatibility). By default they get shorter
        sentences.
    key_added
        ``.obs`` column to write.
    {table_key}
    {copy}

    Returns
    -------
    ``None``, or a copy of ``data`` when ``copy=True``. Writes to the table:

    ``.obs[key_added]``
        The sentences (``str``).
    ``.uns["omiclip"]["gene_sentences"][key_added]``
        Parameters, plus ``n_genes_kept`` (genes per sentence) and ``n_genes_in_context`` (genes that
        fit in the 76-token context of the OmiCLIP tokenizer), one value per observation.
    """
    adata = get_table(data, table_key)
    check_not_empty(adata)
    if adata.n_vars == 0:
        raise ValueError("The data has no genes (n_vars == 0): there is nothing to rank.")
    check_int("n_genes", n_genes, min=1)
    claim(adata, [("obs", key_added)])
    if exclude is not None and not isinstance(exclude, str):
        exclude = list(exclude)  # a generator would be used up before it is recorded
    matrix = _expression(adata, layer)
    symbols, missing = _symbols(adata, gene_symbols)
    excluded = _excluded(symbols, exclude) | missing

    start = logg.info(f"writing gene sentences of the top {n_genes} genes")
    top = top_genes(matrix, n_genes, excluded=excluded)
    n_kept = (top >= 0).sum(axis=1)
    n_empty = int((n_kept == 0).sum())
    if pad:
        top = pad_with_unexpressed(top, matrix, excluded=excluded)
    sentences = join_sentences(top, symbols)
    n_in_context = _genes_in_context(top, symbols)
    if n_empty:
        warnings.warn(
            f"{n_empty} of {adata.n_obs} observations have no expressed (non-excluded) gene"
            + (" and got an empty sentence." if not pad else "; their sentences are padding only."),
            UserWarning,
            stacklevel=2,
        )
    median_in_context = float(np.median(n_in_context))
    if median_in_context < min(n_genes, np.median(n_kept)):
        logg.info(
            f"    the OmiCLIP tokenizer reads only the first ~{median_in_context:g} genes of each sentence "
            "(76-token context); the rest are cut"
        )

    data = working_copy(data, copy)
    adata = get_table(data, table_key)
    adata.obs[key_added] = pd.Series(sentences, index=adata.obs_names, dtype=object)
    record(
        adata,
        "gene_sentences",
        key_added,
        {
            "key_added": key_added,
            "n_genes": int(n_genes),
            "layer": layer,
            "gene_symbols": gene_symbols,
            "exclude": exclude if isinstance(exclude, str) or exclude is None else sorted(exclude),
            "n_excluded_genes": int(excluded.sum()),
            "pad": pad,
            "n_genes_kept": n_kept.astype(np.int32),
            "n_genes_in_context": n_in_context,
        },
    )
    logg.finished(
        start, [(key_added, "gene sentences (obs)"), (f"omiclip/gene_sentences/{key_added}", "parameters (uns)")]
    )
    return data if copy else None


def _expression(adata: AnnData, layer: str | None):
    matrix = get_expression(adata, layer)
    values = matrix.data if sparse.issparse(matrix) else np.asarray(matrix)
    if not np.issubdtype(values.dtype, np.number):
        raise ValueError(f"Expression must be numeric, got dtype {values.dtype}.")
    # inf would silently rank first, so it is as wrong as NaN
    if np.issubdtype(values.dtype, np.floating) and not np.isfinite(values).all():
        raise ValueError("Expression contains NaN or inf; fill or remove those values first.")
    if (values < 0).any():
        raise ValueError(
            "Expression contains negative values (scaled data?). Rank counts, normalised or log1p counts instead."
        )
    return matrix


def _symbols(adata: AnnData, gene_symbols: str | None) -> tuple[np.ndarray, np.ndarray]:
    """Gene symbols, and which are missing (NaN or empty in a symbol column: such genes are never chosen)."""
    if gene_symbols is None:
        symbols, where = pd.Series(adata.var_names), "`var_names`"
    elif gene_symbols not in adata.var:
        raise KeyError(f"Column {gene_symbols!r} not found in `.var`; available: {list(adata.var.columns)}.")
    else:
        symbols, where = adata.var[gene_symbols].reset_index(drop=True), f"`.var[{gene_symbols!r}]`"
    missing = (symbols.isna() | (symbols.astype(str).str.strip() == "")).to_numpy()
    symbols = symbols.astype(str).where(~missing, "")
    present = symbols[~missing]
    if not present.is_unique:
        dupes = present[present.duplicated()].unique()[:5].tolist()
        raise ValueError(
            f"{where} are not unique (e.g. {dupes}): sentences would repeat genes. "
            "Sum duplicated genes or call `adata.var_names_make_unique()`."
        )
    return np.asarray(symbols, dtype=object), missing


def _excluded(symbols: np.ndarray, exclude) -> np.ndarray:
    if exclude is None:
        return np.zeros(len(symbols), dtype=bool)
    if isinstance(exclude, str):
        if exclude != "loki":
            raise ValueError(f"`exclude` must be 'loki', a collection of gene symbols or None, got {exclude!r}.")
        by_name = np.fromiter((bool(_LOKI_NAME_PATTERN.search(s)) for s in symbols), bool, len(symbols))
        return by_name | np.isin(symbols, list(housekeeping_genes()))
    return np.isin(symbols, list(exclude))


def _genes_in_context(top: np.ndarray, symbols: np.ndarray) -> np.ndarray:
    from omiclip.models._encoder import content_tokens, default_tokenizer, token_counts

    tokenizer = default_tokenizer()
    cost = np.zeros(len(symbols) + 1, dtype=np.int64)  # the extra last slot is what the -1 fill indexes
    used = np.unique(top[top >= 0])
    cost[used] = token_counts(symbols[used], tokenizer=tokenizer)
    return genes_within_budget(top, cost, content_tokens(tokenizer))
