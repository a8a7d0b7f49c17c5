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
from omiclip._core.sentences import (
    genes_within_budget,
    join_sentences,
    lowest_ties,
    pad_with_unexpressed,
    top_genes,
)
from omiclip._core.tokens import CONTENT_TOKENS, word_token_counts
from omiclip._docs import doc_params
from omiclip._housekeeping import housekeeping_genes
from omiclip._keys import SENTENCE_COUNTS, SENTENCE_KEY, claim, record, sentence_count_key
from omiclip._validate import check_choice, check_int

if TYPE_CHECKING:
    from spatialdata import SpatialData

_WHITESPACE = re.compile(r"\s")
# Ensembl gene IDs of any species (ENSG, ENSMUSG, ENSRNOG, ENSDARG, ...), with or without a version
_ENSEMBL_ID = re.compile(r"^ENS[A-Z]{0,6}G\d{11}(\.\d+)?$")
# .var columns that hold symbols when var_names are IDs: scanpy's read_10x_mtx(var_names="gene_ids") writes
# "gene_symbols", CELLxGENE "feature_name", GEO and Seurat conversions "gene_name"/"gene_symbol"/"symbol";
# "gene_ids" (scanpy, spatialdata-io) holds the Ensembl IDs themselves
SYMBOL_COLUMNS = (
    "gene_symbols",
    "gene_symbol",
    "gene_name",
    "gene_names",
    "feature_name",
    "symbol",
    "Symbol",
    "SYMBOL",
)
# a sentence is tie-ordered when at least this share of the genes the model reads are tied at its lowest count
_TIE_ORDERED_SHARE = 0.5


@doc_params
def gene_sentences(
    data: AnnData | SpatialData,
    *,
    n_genes: int = 50,
    layer: str | None = None,
    gene_symbols: str | None = None,
    exclude: Literal["loki"] | Collection[str] | None = "loki",
    pad: bool = True,
    ties: Literal["var_order", "rarest"] = "var_order",
    key_added: str = SENTENCE_KEY,
    table_key: str | None = None,
    copy: bool = False,
) -> AnnData | SpatialData | None:
    """Write each observation's top expressed genes as a "gene sentence", the text OmiCLIP reads.

    Genes are ranked by their value in ``X`` (or ``layer``), highest first, ties in var order, and the
    top ``n_genes`` are joined by single spaces; observations with fewer expressed genes are completed with
    zero-count genes, as the official code does. Per-observation normalisation and log1p do not change the
    ranking, so raw and normalised counts give the same sentences. Dense and sparse matrices are processed in
    row chunks without densifying (memory O(nnz)).

    The official model's tokenizer keeps 74 content tokens, about 22 of 50 genes; the number of genes
    that survive is recorded per observation, and so is the number of genes whose place comes from the tie
    order rather than from expression. On low-count data (e.g. Xenium cells, ~10 counts) most genes a sentence
    shows the model are tied at the lowest count: a warning says so, and ``ties="rarest"`` puts the tied genes that
    are rarest in the dataset first (a rare gene seen says more about an observation) instead of var order.

    Parameters
    ----------
    data
        AnnData, or SpatialData (its table is used).
    n_genes
        Genes per sentence (the official value is 50).
    layer
        Layer to rank instead of ``X``.
    gene_symbols
        ``.var`` column with gene symbols. By default ``var_names``; when most of those are Ensembl IDs (the
        model only knows symbols) the first of these columns that holds symbols is used:
        ``"gene_symbols"``, ``"gene_symbol"``, ``"gene_name"``, ``"gene_names"``, ``"feature_name"``,
        ``"symbol"``, ``"Symbol"``, ``"SYMBOL"``; with none, an error says how to add one. Symbols must not
        contain whitespace (a sentence is split on it). Genes without a symbol (NaN, empty) are never chosen.
    exclude
        ``"loki"``: the official exclusions, names containing ``.`` or ``-`` and Loki's 394
        housekeeping genes. A collection of symbols: exactly those. ``None``: nothing.
    pad
        Complete observations with fewer than ``n_genes`` expressed genes with zero-count genes (in the tie
        order), as the official code does; the official model was trained on such sentences. ``False``:
        such observations get shorter sentences.
    ties
        Order of genes with equal values (and of padding genes). ``"var_order"``: the order of ``.var``, as the
        official code (pandas ``nlargest(keep="first")``). ``"rarest"``: the gene's mean value over all
        observations, lowest first, then var order. On low-count pseudo-spots this recovers tissue domains
        slightly better; ordering by mean, highest first, does worse than var order (see the benchmarks page).
    key_added
        ``.obs`` column to write; the per-observation counts go to columns named after it.
    {table_key}
    {copy}

    Returns
    -------
    ``None``, or a copy of ``data`` when ``copy=True``. Writes to the table:

    ``.obs[key_added]``
        The sentences (``str``).
    ``.obs[f"{key_added}_n_expressed"]``
        Expressed genes in the sentence (the others are padding).
    ``.obs[f"{key_added}_n_in_context"]``
        Leading genes that fit in the 76-token context of the OmiCLIP tokenizer: those the model reads.
    ``.obs[f"{key_added}_n_ties"]``, ``.obs[f"{key_added}_n_ties_in_context"]``
        Genes of the sentence, and of those the model reads, tied at the sentence's lowest value with another
        gene of the observation (padding genes included): the tie order, not expression, chose or placed them.
    ``.uns["omiclip"]["gene_sentences"][key_added]``
        Parameters (with the symbol column used), the number of excluded genes and of tie-ordered sentences
        (at least half of the genes the model reads are such ties), and the ``.obs`` columns written.
    """
    adata = get_table(data, table_key)
    check_not_empty(adata)
    if adata.n_vars == 0:
        raise ValueError("The data has no genes (n_vars == 0): there is nothing to rank.")
    check_int("n_genes", n_genes, min=1)
    check_choice("ties", ties, ("var_order", "rarest"))
    columns = [key_added, *(sentence_count_key(key_added, count) for count in SENTENCE_COUNTS)]
    claim(adata, [("obs", column) for column in columns], step="gene_sentences")
    if exclude is not None and not isinstance(exclude, str):
        exclude = list(exclude)  # a generator would be used up before it is recorded
    matrix = _expression(adata, layer)
    symbols, missing, symbol_column = _symbols(adata, gene_symbols)
    excluded = _excluded(symbols, exclude) | missing
    _check_no_whitespace(symbols, excluded, symbol_column)

    start = logg.info(f"writing gene sentences of the top {n_genes} genes")
    tie_order = None if ties == "var_order" else _rarest_first(matrix)
    ranking = top_genes(matrix, n_genes, excluded=excluded, tie_order=tie_order)
    n_expressed = (ranking.columns >= 0).sum(axis=1).astype(np.int32)
    if pad:
        candidates = np.flatnonzero(~excluded) if tie_order is None else tie_order[~excluded[tie_order]]
        ranking = pad_with_unexpressed(ranking, candidates=candidates)
    sentences = join_sentences(ranking.columns, symbols)
    n_in_context = genes_within_budget(ranking.columns, _token_cost(symbols), CONTENT_TOKENS)
    n_ties, n_ties_in_context = lowest_ties(ranking, n_in_context)
    n_tie_ordered = int(((n_ties_in_context >= _TIE_ORDERED_SHARE * n_in_context) & (n_in_context > 0)).sum())
    _report(n_expressed, n_in_context, n_ties_in_context, n_tie_ordered, n_genes=n_genes, pad=pad, ties=ties)

    data = working_copy(data, copy)
    adata = get_table(data, table_key)
    counts = (n_expressed, n_in_context, n_ties, n_ties_in_context)
    per_observation = dict(
        zip(columns, [pd.Series(sentences, index=adata.obs_names, dtype=object), *counts], strict=True)
    )
    for column, values in per_observation.items():
        adata.obs[column] = values
    record(
        adata,
        "gene_sentences",
        key_added,
        {
            "key_added": key_added,
            "n_genes": int(n_genes),
            "layer": layer,
            "gene_symbols": symbol_column,
            "exclude": exclude if isinstance(exclude, str) or exclude is None else sorted(exclude),
            "n_excluded_genes": int(excluded.sum()),
            "pad": pad,
            "ties": ties,
            "n_tie_ordered": n_tie_ordered,
            "obs_columns": list(per_observation),
        },
    )
    logg.finished(
        start,
        [
            (key_added, "gene sentences and counts per sentence (obs)"),
            (f"omiclip/gene_sentences/{key_added}", "parameters (uns)"),
        ],
    )
    return data if copy else None


def _report(n_expressed, n_in_context, n_ties_in_context, n_tie_ordered, *, n_genes, pad, ties) -> None:
    """Warn about empty and tie-ordered sentences, and log how much of a sentence the model reads."""
    n_obs = len(n_expressed)
    n_empty = int((n_expressed == 0).sum())
    if n_empty:
        warnings.warn(
            f"{n_empty} of {n_obs} observations have no expressed (non-excluded) gene"
            + (" and got an empty sentence." if not pad else "; their sentences are padding only."),
            UserWarning,
            stacklevel=3,
        )
    if n_tie_ordered > n_obs / 2:
        reading = np.median(n_in_context)
        message = (
            f"{n_tie_ordered} of {n_obs} sentences ({n_tie_ordered / n_obs:.0%}) are tie-ordered: at least half of "
            f"the genes the model reads (median {np.median(n_ties_in_context):g} of {reading:g}) are tied at the "
            "sentence's lowest count (low counts per observation, e.g. Xenium cells)"
        )
        if ties == "var_order":
            warnings.warn(
                f"{message}, so var order, which says nothing about the observation, picks and orders them. Pass "
                "`ties='rarest'` to put the genes rarest in the dataset first, or pool observations first "
                "(`oc.pp.pseudo_spots`).",
                UserWarning,
                stacklevel=3,
            )
        else:
            logg.info(f"    {message}; the rarest genes come first")
    median_in_context = float(np.median(n_in_context))
    if median_in_context < min(n_genes, np.median(n_expressed) if not pad else n_genes):
        logg.info(
            f"    the OmiCLIP tokenizer reads only the first ~{median_in_context:g} genes of each sentence "
            "(76-token context); the rest are cut"
        )


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


def _symbols(adata: AnnData, gene_symbols: str | None) -> tuple[np.ndarray, np.ndarray, str | None]:
    """Gene symbols, which are missing (NaN or empty: never chosen), and the ``.var`` column they came from."""
    if gene_symbols is None:
        if _mostly_ensembl(adata.var_names):
            gene_symbols = _symbol_column(adata)
            logg.info(f"    `var_names` are Ensembl IDs: gene symbols from `.var[{gene_symbols!r}]`")
    elif gene_symbols not in adata.var:
        raise KeyError(
            f"Column {gene_symbols!r} not found in `.var` (`gene_symbols=`); available: {list(adata.var.columns)}."
        )
    if gene_symbols is None:
        symbols, where = adata.var_names.tolist(), "`var_names`"
    else:
        symbols, where = adata.var[gene_symbols].tolist(), f"`.var[{gene_symbols!r}]`"
        if _mostly_ensembl(symbols):
            raise ValueError(
                f"{where} holds Ensembl IDs, not gene symbols (the model reads symbols). " + _symbol_fix(adata)
            )
    # plain Python over the names: pandas string methods and np.isin on objects cost seconds at 20,000 genes
    isna = pd.isna(np.asarray(symbols, dtype=object))
    symbols = ["" if na else str(s) for s, na in zip(symbols, isna, strict=True)]
    missing = np.fromiter((not s.strip() for s in symbols), bool, len(symbols))
    present = [s for s, out in zip(symbols, missing, strict=True) if not out]
    if len(set(present)) < len(present):
        dupes = pd.Series(present)
        raise ValueError(
            f"{where} are not unique (e.g. {dupes[dupes.duplicated()].unique()[:5].tolist()}): sentences would repeat "
            "genes. Sum duplicated genes or call `adata.var_names_make_unique()`."
        )
    return (
        np.asarray(["" if out else s for s, out in zip(symbols, missing, strict=True)], dtype=object),
        missing,
        gene_symbols,
    )


def _mostly_ensembl(names) -> bool:
    names = np.asarray(names, dtype=object)
    names = names[~pd.isna(names)]
    n_ids = sum(1 for name in names if str(name).startswith("ENS") and _ENSEMBL_ID.match(str(name)))
    return len(names) > 0 and n_ids > len(names) / 2


def _symbol_column(adata: AnnData) -> str:
    """The first usual symbol column of ``.var`` that holds symbols, or the error that says how to get one."""
    for column in SYMBOL_COLUMNS:
        if column in adata.var and not _mostly_ensembl(adata.var[column]):
            return column
    raise ValueError(
        "`var_names` are Ensembl IDs (e.g. "
        f"{list(adata.var_names[:2])}), but the model reads gene symbols and `.var` has no column of symbols among the usual ones "
        f"({', '.join(SYMBOL_COLUMNS)}). " + _symbol_fix(adata)
    )


def _symbol_fix(adata: AnnData) -> str:
    return (
        "Pass the `.var` column with symbols as `gene_symbols=` "
        f"(`.var` has {list(adata.var.columns)}), or map the IDs to symbols first (e.g. read 10x output with "
        "`sc.read_10x_h5`, or `sc.read_10x_mtx(var_names='gene_symbols')`, which keep symbols in `var_names`)."
    )


def _check_no_whitespace(symbols: np.ndarray, excluded: np.ndarray, where: str | None) -> None:
    """A sentence is split on whitespace: a symbol containing some would read as several genes."""
    spaced = [s for s, out in zip(symbols, excluded, strict=True) if not out and _WHITESPACE.search(s)]
    if spaced:
        source = "`var_names`" if where is None else f"`.var[{where!r}]`"
        raise ValueError(
            f"{len(spaced)} gene symbols in {source} contain whitespace (e.g. {spaced[:5]}); in a sentence each would "
            "read as several genes. Replace it, e.g. `adata.var_names = adata.var_names.str.replace(r'\\s+', '_', "
            "regex=True)`, or leave those genes out with `exclude=`."
        )


def _excluded(symbols: np.ndarray, exclude) -> np.ndarray:
    if exclude is None:
        return np.zeros(len(symbols), dtype=bool)
    if isinstance(exclude, str):
        if exclude != "loki":
            raise ValueError(f"`exclude` must be 'loki', a collection of gene symbols or None, got {exclude!r}.")
        housekeeping = housekeeping_genes()
        # the official code drops names with "." or "-": versioned Ensembl IDs, MT-*, HLA-*, clone names
        return np.fromiter((s in housekeeping or "." in s or "-" in s for s in symbols), bool, len(symbols))
    excluded = set(exclude)
    return np.fromiter((s in excluded for s in symbols), bool, len(symbols))


def _rarest_first(matrix) -> np.ndarray:
    """Columns by mean value over the observations, lowest first, then var order."""
    total = np.asarray(matrix.sum(axis=0, dtype=np.float64)).ravel()
    return np.lexsort((np.arange(len(total)), total))


def _token_cost(symbols: np.ndarray):
    """CLIP-BPE tokens of genes by column, each symbol tokenised when first asked about."""
    cost = np.full(len(symbols), -1, dtype=np.int64)

    def of(columns: np.ndarray) -> np.ndarray:
        unknown = np.unique(columns[cost[columns] < 0])
        if len(unknown):
            cost[unknown] = word_token_counts(symbols[unknown])
        return cost[columns]

    return of
