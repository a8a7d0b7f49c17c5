"""Top expressed genes per observation, on dense or sparse matrices, without densifying."""

from __future__ import annotations

import numpy as np
from scipy import sparse

_CHUNK_ELEMENTS = 1 << 22  # cells of the padded per-chunk work array (~32 MB in float64)


def top_genes(matrix, n_top: int, *, excluded: np.ndarray) -> np.ndarray:
    """Column indices of the ``n_top`` largest positive entries of each row.

    Order: value descending, ties by column index ascending (pandas ``nlargest(keep="first")``).

    Parameters
    ----------
    matrix
        ``(n_obs, n_vars)`` numpy array or scipy sparse matrix, non-negative.
    n_top
        Genes to keep per row.
    excluded
        Boolean ``(n_vars,)``: columns that may never be chosen.

    Returns
    -------
    ``int64`` array ``(n_obs, n_top)``; rows with fewer positive entries are filled with ``-1``.
    """
    if sparse.issparse(matrix):
        matrix = sparse.csr_matrix(matrix)  # no copy for CSR; CSC and others are converted once
        if not matrix.has_canonical_format:  # duplicates must be summed; column order inside a row breaks ties
            matrix = matrix.copy()
            matrix.sum_duplicates()
        widest_row = int(np.diff(matrix.indptr).max(initial=0))
    else:
        matrix = np.asarray(matrix)
        widest_row = matrix.shape[1]
    result = np.full((matrix.shape[0], n_top), -1, dtype=np.int64)
    rows_per_chunk = max(1, _CHUNK_ELEMENTS // max(widest_row, n_top))
    for start in range(0, matrix.shape[0], rows_per_chunk):
        stop = min(start + rows_per_chunk, matrix.shape[0])
        if sparse.issparse(matrix):
            padded, columns_of = _padded_sparse_rows(matrix, start, stop, excluded, n_top)
        else:
            padded, columns_of = _padded_dense_rows(matrix[start:stop], excluded, n_top)
        result[start:stop] = _top_of_padded(padded, columns_of, n_top)
    return result


def _padded_dense_rows(block: np.ndarray, excluded: np.ndarray, n_top: int):
    """Dense rows with non-candidates set to -inf, at least ``n_top`` wide; a position is its column."""
    values = np.where((block > 0) & ~excluded, block, -np.inf).astype(_float_of(block.dtype), copy=False)
    if values.shape[1] < n_top:
        values = np.pad(values, ((0, 0), (0, n_top - values.shape[1])), constant_values=-np.inf)
    return values, lambda row, position: position


def _padded_sparse_rows(matrix: sparse.csr_matrix, start: int, stop: int, excluded: np.ndarray, n_top: int):
    """CSR rows ``start:stop`` left-aligned in a -inf padded block, and the map back to columns."""
    indptr = matrix.indptr[start : stop + 1]
    lengths = np.diff(indptr)
    data = matrix.data[indptr[0] : indptr[-1]]
    indices = matrix.indices[indptr[0] : indptr[-1]]
    invalid = data <= 0
    if excluded.any():
        invalid |= excluded[indices]
    values = np.where(invalid, -np.inf, data).astype(_float_of(data.dtype), copy=False)
    width = max(int(lengths.max(initial=0)), n_top)
    padded = np.full((stop - start, width), -np.inf, dtype=values.dtype)
    row_offset = np.arange(stop - start) * width - (indptr[:-1] - indptr[0])
    padded.reshape(-1)[np.arange(len(values)) + np.repeat(row_offset, lengths)] = values
    return padded, lambda row, position: indices[indptr[row] - indptr[0] + position]


def _float_of(dtype: np.dtype) -> type:
    """float32 holds float32 data and counts below 2**24 exactly; anything else goes to float64."""
    return np.float32 if dtype in (np.float32, np.float16, np.int8, np.int16, np.uint8, np.uint16) else np.float64


def _top_of_padded(padded: np.ndarray, columns_of, n_top: int) -> np.ndarray:
    """Top ``n_top`` finite entries per row of a padded block whose positions ascend with the column."""
    n_rows, width = padded.shape
    threshold = np.partition(padded, width - n_top, axis=1)[:, width - n_top]  # each row's n_top-th largest
    # candidates: everything at or above the threshold (a few more than n_top per row when tied)
    row, position = np.nonzero((padded >= threshold[:, None]) & (padded > -np.inf))
    value, column, row_threshold = padded[row, position], columns_of(row, position), threshold[row]
    above = value > row_threshold
    at = ~above
    # ties at the threshold are taken in column order until each row has n_top
    ties_seen = np.cumsum(at)
    row_start = np.searchsorted(row, row)
    tie_rank = ties_seen - (ties_seen[row_start] - at[row_start])
    still_needed = n_top - np.bincount(row, weights=above, minlength=n_rows).astype(np.int64)
    keep = above | (tie_rank <= still_needed[row])
    row, value, column = row[keep], value[keep], column[keep]
    order = np.lexsort((column, -value, row))
    row, column = row[order], column[order]
    slot = np.arange(len(row)) - np.searchsorted(row, row)
    top = np.full((n_rows, n_top), -1, dtype=np.int64)
    top[row, slot] = column
    return top


def pad_with_unexpressed(
    top: np.ndarray, matrix, *, excluded: np.ndarray, rows: np.ndarray | None = None
) -> np.ndarray:
    """Fill the ``-1`` slots the way the official code does: with zero-count genes, in var order.

    The official ``Series.nlargest`` ranks every gene, so short rows are completed by the first
    non-excluded genes whose value is 0.
    """
    top = top.copy()
    candidates = np.flatnonzero(~excluded)
    short_rows = np.flatnonzero((top < 0).any(axis=1)) if rows is None else rows
    for row in short_rows:
        have = top[row][top[row] >= 0]
        line = matrix[row]
        line = line.toarray().ravel() if sparse.issparse(line) else np.asarray(line).ravel()
        zeros = candidates[line[candidates] == 0]
        zeros = zeros[~np.isin(zeros, have)][: top.shape[1] - len(have)]
        top[row, len(have) : len(have) + len(zeros)] = zeros
    return top


def join_sentences(top: np.ndarray, symbols: np.ndarray) -> list[str]:
    """Space-joined symbols of each row's chosen columns (``-1`` slots skipped)."""
    symbols = np.asarray(symbols, dtype=object)
    counts = (top >= 0).sum(axis=1)
    words = symbols[np.where(top >= 0, top, 0)]
    return [" ".join(row[:n]) for row, n in zip(words, counts, strict=True)]


def genes_within_budget(top: np.ndarray, token_cost: np.ndarray, budget: int) -> np.ndarray:
    """Whole genes of each row that fit in ``budget`` tokens, given each column's token cost."""
    used = np.cumsum(token_cost[top], axis=1)
    return ((used <= budget) & (top >= 0)).sum(axis=1).astype(np.int32)
