from __future__ import annotations

import numpy as np

from omiclip._validate import check_int, check_number


def recall_at_k(query: np.ndarray, reference: np.ndarray, k: float, *, block_size: int = 4096) -> float:
    """Fraction of paired queries whose own reference ranks within the top ``k`` candidates.

    Row ``i`` of ``query`` belongs with row ``i`` of ``reference`` (e.g. a spot's image and text
    embeddings); candidates are ranked by dot product (cosine similarity for unit vectors). A pair's rank
    is one plus the number of candidates scored strictly higher.

    Parameters
    ----------
    query, reference
        ``(n, d)`` arrays.
    k
        An integer count, or a fraction of the candidates in ``(0, 1)`` (the paper's Recall@5% is ``0.05``).
    block_size
        Queries per block (memory is ``block_size × n``).

    Returns
    -------
    Recall@K in ``[0, 1]``; a random ranking scores about ``k / n`` (or the fraction ``k``).
    """
    query, reference = np.asarray(query), np.asarray(reference)
    if query.shape != reference.shape or query.ndim != 2:
        raise ValueError(f"query and reference must be paired (n, d) arrays, got {query.shape} and {reference.shape}.")
    n = len(query)
    if n == 0:
        raise ValueError("No pairs to evaluate.")
    check_int("block_size", block_size, min=1)
    if check_number("k", k, min=0, min_inclusive=False) >= 1:
        check_int("k", int(k) if float(k).is_integer() else k, min=1)
    top = int(np.ceil(k * n)) if 0 < k < 1 else int(k)
    if not 1 <= top <= n:
        raise ValueError(f"`k` must be a count in [1, {n}] or a fraction in (0, 1), got {k}.")
    hits = 0
    for start in range(0, n, block_size):
        scores = query[start : start + block_size] @ reference.T
        own = scores[np.arange(len(scores)), np.arange(start, start + len(scores))]
        hits += int(((scores > own[:, None]).sum(axis=1) < top).sum())
    return hits / n
