"""Top expressed genes per observation, on dense or sparse matrices, without densifying."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy import sparse

_CHUNK_ELEMENTS = 1 << 22  # cells of the padded per-chunk work array (~32 MB in float64)


class Ranking(NamedTuple):
    """Each row's chosen genes, highest value first.

    Attributes
    ----------
    columns
        ``int64 (n_obs, n_top)`` column indices; empty slots (at the end of a row) are ``-1``.
    values
        ``float64 (n_obs, n_top)`` values of the chosen genes; ``NaN`` in empty slots.
    n_at_lowest
        ``int64 (n_obs,)`` candidate genes of the row, chosen or not, whose value equals the row's lowest chosen
        value (0 for a row with nothing chosen). Two or more mean the tie order picked and ordered them.
    """

    columns: np.ndarray
    values: np.ndarray
    n_at_lowest: np.ndarray


def top_genes(matrix, n_top: int, *, excluded: np.ndarray, tie_order: np.ndarray | None = None) -> Ranking:
    """The ``n_top`` largest positive entries of each row.

    Order: value descending, ties in ``tie_order`` (default: column index ascending, as pandas
    ``nlargest(keep="first")``).

    Parameters
    ----------
    matrix
        ``(n_obs, n_vars)`` numpy array or scipy sparse matrix, non-negative.
    n_top
        Genes to keep per row.
    excluded
        Boolean ``(n_vars,)``: columns that may never be chosen.
    tie_order
        A permutation of the columns: equal values are taken in this order.

    Returns
    -------
    The chosen columns, their values and the size of each row's lowest tie group.
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
    # the work is done in tie order: position k stands for column tie_order[k]
    position_of = None
    if tie_order is not None:
        position_of = np.empty_like(tie_order)
        position_of[tie_order] = np.arange(len(tie_order))
        excluded = excluded[tie_order]
    columns = np.full((matrix.shape[0], n_top), -1, dtype=np.int64)
    values = np.full((matrix.shape[0], n_top), np.nan)
    n_at_lowest = np.zeros(matrix.shape[0], dtype=np.int64)
    rows_per_chunk = max(1, _CHUNK_ELEMENTS // max(widest_row, n_top))
    for start in range(0, matrix.shape[0], rows_per_chunk):
        stop = min(start + rows_per_chunk, matrix.shape[0])
        if sparse.issparse(matrix):
            padded, columns_of = _padded_sparse_rows(matrix, start, stop, excluded, n_top, position_of)
        else:
            block = matrix[start:stop] if tie_order is None else matrix[start:stop, tie_order]
            padded, columns_of = _padded_dense_rows(block, excluded, n_top)
        chunk = slice(start, stop)
        columns[chunk], values[chunk], n_at_lowest[chunk] = _top_of_padded(padded, columns_of, n_top)
    if tie_order is not None:
        columns = np.where(columns >= 0, tie_order[columns], -1)
    return Ranking(columns, values, n_at_lowest)


def _padded_dense_rows(block: np.ndarray, excluded: np.ndarray, n_top: int):
    """Dense rows with non-candidates set to -inf, at least ``n_top`` wide; a position is its column."""
    values = np.where((block > 0) & ~excluded, block, -np.inf).astype(_float_of(block.dtype), copy=False)
    if values.shape[1] < n_top:
        values = np.pad(values, ((0, 0), (0, n_top - values.shape[1])), constant_values=-np.inf)
    return values, lambda row, position: position


def _padded_sparse_rows(
    matrix: sparse.csr_matrix,
    start: int,
    stop: int,
    excluded: np.ndarray,
    n_top: int,
    position_of: np.ndarray | None,
):
    """CSR rows ``start:stop`` left-aligned in a -inf padded block, and the map back to (tie-order) columns."""
    indptr = matrix.indptr[start : stop + 1]
    lengths = np.diff(indptr)
    data = matrix.data[indptr[0] : indptr[-1]]
    indices = matrix.indices[indptr[0] : indptr[-1]]
    if position_of is not None:  # entries of each row sorted by tie position instead of column
        indices = position_of[indices]
        order = np.lexsort((indices, np.repeat(np.arange(stop - start), lengths)))
        indices, data = indices[order], data[order]
    invalid = data <= 0
    if excluded.any():
        invalid |= excluded[indices]
    values = np.where(invalid, -np.inf, data).astype(_float_of(data.dtype), copy=False)
    width = max(int(lengths.max(initial=0)), n_top)
    padded = np.full((stop - start, width), -np.inf, dtype=values.dtype)
    padded[_left_aligned(lengths, width)] = values  # a boolean mask fills row by row, left to right
    return padded, lambda row, position: indices[indptr[row] - indptr[0] + position]


def _left_aligned(lengths: np.ndarray, width: int) -> np.ndarray:
    """Boolean ``(len(lengths), width)`` mask of each row's first ``lengths[row]`` cells."""
    return np.arange(width) < lengths[:, None]


def _float_of(dtype: np.dtype) -> type:
    """float32 holds float32 data and counts below 2**24 exactly; anything else goes to float64."""
    return np.float32 if dtype in (np.float32, np.float16, np.int8, np.int16, np.uint8, np.uint16) else np.float64


def _top_of_padded(padded: np.ndarray, columns_of, n_top: int):
    """Top ``n_top`` finite entries per row of a padded block whose positions ascend with the column."""
    n_rows, width = padded.shape
    threshold = np.partition(padded, width - n_top, axis=1)[:, width - n_top]  # each row's n_top-th largest
    # candidates: everything at or above the threshold (a few more than n_top per row when tied); a row with fewer
    # than n_top finite entries has threshold -inf: the lowest finite value keeps -inf out in one comparison
    floor = np.where(np.isfinite(threshold), threshold, np.finfo(padded.dtype).min)
    row, position = np.nonzero(padded >= floor[:, None])
    value, column, row_threshold = padded[row, position], columns_of(row, position), threshold[row]
    above = value > row_threshold
    at = ~above
    n_at_threshold = np.bincount(row, weights=at, minlength=n_rows).astype(np.int64)
    # ties at the threshold are taken in column order until each row has n_top
    ties_seen = np.cumsum(at)
    row_start = np.searchsorted(row, row)
    tie_rank = ties_seen - (ties_seen[row_start] - at[row_start])
    still_needed = n_top - np.bincount(row, weights=above, minlength=n_rows).astype(np.int64)
    keep = above | (tie_rank <= still_needed[row])
    row, value, column = row[keep], value[keep], column[keep]
    # at most n_top kept per row, in column order: a stable sort by value of each row's block keeps ties in order
    block = np.full((n_rows, n_top), -np.inf, dtype=padded.dtype)
    block_columns = np.full((n_rows, n_top), -1, dtype=np.int64)
    filled = _left_aligned(np.bincount(row, minlength=n_rows), n_top)
    block[filled], block_columns[filled] = value, column
    order = np.argsort(-block, axis=1, kind="stable")
    top = np.take_along_axis(block_columns, order, axis=1)
    top_values = np.take_along_axis(block, order, axis=1).astype(np.float64)
    top_values[top < 0] = np.nan
    # a row with fewer than n_top candidates has threshold -inf: its lowest ties are all chosen
    n_at_lowest = np.where(np.isfinite(threshold), n_at_threshold, _n_equal_to_lowest(top_values))
    return top, top_values, n_at_lowest


def _n_equal_to_lowest(values: np.ndarray) -> np.ndarray:
    """Chosen entries of each row equal to the row's lowest chosen value (rows are sorted descending)."""
    lowest = _lowest(values)
    return (values == lowest[:, None]).sum(axis=1)


def _lowest(values: np.ndarray) -> np.ndarray:
    n_chosen = (~np.isnan(values)).sum(axis=1)
    return np.where(n_chosen > 0, values[np.arange(len(values)), np.maximum(n_chosen - 1, 0)], np.nan)


_PAD_ROWS_PER_CHUNK = 4096


def pad_with_unexpressed(ranking: Ranking, *, candidates: np.ndarray) -> Ranking:
    """Fill empty slots the way the official code does: with zero-count genes, in ``candidates`` order.

    The official ``Series.nlargest`` ranks every gene, so a row with fewer than ``n_top`` expressed genes is
    completed by the first candidate genes whose value is 0. Every expressed candidate of such a row is
    already chosen, so the zero-count genes are the candidates not yet in the row: the matrix is not needed.

    Parameters
    ----------
    ranking
        From :func:`top_genes`.
    candidates
        Columns that may be chosen (not excluded), in tie order.

    Returns
    -------
    The ranking with padded slots (value 0); a padded row's ``n_at_lowest`` counts its zero-count candidates.
    """
    columns, values, n_at_lowest = (array.copy() for array in ranking)
    n_top = columns.shape[1]
    first = candidates[: 2 * n_top]  # a short row holds < n_top of them: more than enough stay free
    short = np.flatnonzero(columns[:, -1] < 0)
    for start in range(0, len(short), _PAD_ROWS_PER_CHUNK):
        rows = short[start : start + _PAD_ROWS_PER_CHUNK]
        have = columns[rows]
        n_have = (have >= 0).sum(axis=1)
        free = ~(first[None, :, None] == have[:, None, :]).any(axis=2)
        free_rank = np.cumsum(free, axis=1)
        pick = free & (free_rank <= (n_top - n_have)[:, None])
        which, candidate = np.nonzero(pick)
        slot = n_have[which] + free_rank[which, candidate] - 1
        columns[rows[which], slot] = first[candidate]
        values[rows[which], slot] = 0.0
        padded = pick.any(axis=1)
        n_at_lowest[rows[padded]] = len(candidates) - n_have[padded]
    return Ranking(columns, values, n_at_lowest)


def lowest_ties(ranking: Ranking, n_in_context: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Chosen genes tied at each row's lowest chosen value: in the whole row, and among the first ``n_in_context``.

    A gene counts when two or more candidates of its row share that value, so that the tie order chose it or
    placed it. Padding genes (value 0) count as such ties.

    Returns
    -------
    Two ``int32 (n_obs,)`` arrays: ties in the sentence, ties among the genes the model reads.
    """
    lowest = _lowest(ranking.values)
    tied = (ranking.values == lowest[:, None]) & (ranking.n_at_lowest >= 2)[:, None]
    in_context = np.arange(tied.shape[1]) < np.asarray(n_in_context)[:, None]
    return tied.sum(axis=1).astype(np.int32), (tied & in_context).sum(axis=1).astype(np.int32)


def join_sentences(columns: np.ndarray, symbols: np.ndarray) -> list[str]:
    """Space-joined symbols of each row's chosen columns (``-1`` slots skipped)."""
    symbols = np.asarray(symbols, dtype=object)
    counts = (columns >= 0).sum(axis=1)
    words = symbols[np.where(columns >= 0, columns, 0)]
    return [" ".join(row[:n]) for row, n in zip(words, counts, strict=True)]


def genes_within_budget(columns: np.ndarray, token_cost, budget: int) -> np.ndarray:
    """Leading whole genes of each row that fit in ``budget`` tokens.

    Parameters
    ----------
    columns
        Chosen columns per row (``-1`` slots at the end).
    token_cost
        ``token_cost(column_indices) -> costs``: tokens of each gene. It is asked only about the genes that can
        still fit, slot by slot, so genes past every row's budget are never tokenised.
    budget
        Content tokens available.

    Returns
    -------
    ``int32 (n_obs,)``.
    """
    n_rows, n_top = columns.shape
    used = np.zeros(n_rows, dtype=np.int64)
    n_fit = np.zeros(n_rows, dtype=np.int32)
    alive = np.arange(n_rows)
    for slot in range(n_top):
        alive = alive[columns[alive, slot] >= 0]
        if not len(alive):
            break
        used[alive] += token_cost(columns[alive, slot])
        alive = alive[used[alive] <= budget]
        n_fit[alive] += 1
    return n_fit
