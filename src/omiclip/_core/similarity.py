"""Similarity search and similarity-weighted averages between two embedding sets, in bounded memory.

Both work on blocks of queries: memory is ``block_size × n_reference`` scores at a time, never the full
query × reference matrix.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

import numpy as np
from tqdm.auto import tqdm

from omiclip._validate import check_int

Weighting = Literal["raw", "softmax"]


def _blocks(n: int, block_size: int, progress: bool, desc: str) -> Iterator[slice]:
    check_int("block_size", block_size, min=1)
    for start in tqdm(range(0, n, block_size), desc=desc, disable=not progress):
        yield slice(start, min(start + block_size, n))


def top_k(
    query: np.ndarray, reference: np.ndarray, k: int, *, block_size: int = 1024, progress: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` references of each query by dot product, best first.

    Returns ``(indices, scores)``, both ``(n_query, k)``; ties are broken by reference order.
    """
    n_ref = len(reference)
    indices = np.empty((len(query), k), dtype=np.int64)
    scores = np.empty((len(query), k), dtype=np.float32)
    for rows in _blocks(len(query), block_size, progress, "searching"):
        block = query[rows] @ reference.T
        if k < n_ref:
            candidates = np.argpartition(-block, k - 1, axis=1)[:, :k]
        else:
            candidates = np.broadcast_to(np.arange(n_ref), block.shape)
        candidate_scores = np.take_along_axis(block, candidates, axis=1)
        order = np.lexsort((candidates, -candidate_scores), axis=1)
        indices[rows] = np.take_along_axis(candidates, order, axis=1)
        scores[rows] = np.take_along_axis(candidate_scores, order, axis=1)
    return indices, scores


def weighted_average(
    query: np.ndarray,
    reference: np.ndarray,
    values: np.ndarray,
    *,
    k: int | None = None,
    weighting: Weighting = "raw",
    temperature: float = 1.0,
    clip_negative: bool = False,
    block_size: int = 512,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Similarity-weighted mean of ``values`` (reference rows) for each query (Loki PredEx, eq. 16).

    Weights are the dot-product similarities ``s_qj`` between query and reference embeddings; with the
    defaults (all references, raw weights, negatives kept) this is the official rule
    ``(S @ values) / S.sum(1)``. Options: only the ``k`` most similar references, ``softmax(s / T)``
    weights, clipping negative similarities to 0.

    Returns ``(n_query, n_values)`` float32 means and each query's ``(n_query,)`` sum of weights: raw weights
    can sum to ≤ 0, and then the "mean" has the wrong sign or is undefined (NaN/inf).
    """
    values = np.asarray(values, dtype=np.float32)
    out = np.empty((len(query), values.shape[1]), dtype=np.float32)
    weight_sums = np.empty(len(query), dtype=np.float32)
    for rows in _blocks(len(query), block_size, progress, "predicting"):
        if k is None:
            weights = (query[rows] @ reference.T).astype(np.float32, copy=False)
            neighbours = None
        else:
            neighbours, weights = top_k(query[rows], reference, k, block_size=block_size)
        if weighting == "softmax":
            weights = np.exp((weights - weights.max(axis=1, keepdims=True)) / temperature)
        elif clip_negative:
            weights = np.clip(weights, 0, None)
        total = weights.sum(axis=1, keepdims=True)
        weight_sums[rows] = total[:, 0]
        with np.errstate(invalid="ignore", divide="ignore"):
            if neighbours is None:
                out[rows] = (weights @ values) / total
            else:
                out[rows] = np.einsum("qk,qkg->qg", weights, values[neighbours]) / total
    return out, weight_sums
