from __future__ import annotations

from typing import Literal

import numpy as np
from anndata import AnnData

from omiclip import _logging as logg
from omiclip._anndata import check_not_empty, check_same_dim, get_rep, get_table, record, working_copy
from omiclip._core.similarity import top_k


def retrieve(
    query,
    reference,
    *,
    k: int = 3,
    use_rep: str = "X_omiclip_image",
    reference_rep: str = "X_omiclip_text",
    method: Literal["exact", "approximate"] = "exact",
    block_size: int = 1024,
    key_added: str = "omiclip_retrieved",
    table_key: str | None = None,
    progress: bool = True,
    copy: bool = False,
) -> AnnData | None:
    """Find, for each query observation, the ``k`` most similar observations of a reference (Loki Retrieve).

    Typically H&E tile embeddings of a query section against the transcriptome embeddings of a bank of
    spots. Similarity is the cosine (dot product of unit embeddings); exact search runs in blocks of
    queries (memory ``block_size × n_reference``); ``method="approximate"`` builds a PyNNDescent index
    for references of millions of observations.

    Parameters
    ----------
    query
        AnnData or SpatialData with ``use_rep``.
    reference
        AnnData or SpatialData with ``reference_rep``.
    k
        Number of references per query, best first (official ``retrieve_st_by_image``: 3).
    use_rep
        Query embedding in ``.obsm``.
    reference_rep
        Reference embedding in ``.obsm``.
    method
        ``"exact"`` (default) or ``"approximate"`` (PyNNDescent, cosine).
    block_size
        Queries per block for exact search.
    key_added
        ``.obsm`` keys ``{key_added}`` and ``{key_added}_scores``.
    table_key
        Table of a SpatialData query with several tables.
    progress
        Show a progress bar.
    copy
        Return a modified copy instead of writing into ``query``.

    Returns
    -------
    ``None``, or a copy of ``query`` when ``copy=True``. Writes to the query table:

    ``.obsm["omiclip_retrieved"]``
        ``int`` ``(n_obs, k)`` positions of the retrieved reference observations, best first.
    ``.obsm["omiclip_retrieved_scores"]``
        Their cosine similarities.
    ``.uns["omiclip"]["retrieve"]``
        Parameters and ``reference_obs_names`` (so positions map back to names).
    """
    query_table = get_table(query, table_key)
    reference_table = get_table(reference)
    for table in (query_table, reference_table):
        check_not_empty(table)
    query_emb = get_rep(query_table, use_rep)
    reference_emb = get_rep(reference_table, reference_rep)
    check_same_dim(query_emb, reference_emb, use_rep, reference_rep)
    if not 1 <= k <= reference_table.n_obs:
        raise ValueError(f"`k` must be between 1 and the reference size ({reference_table.n_obs}), got {k}.")
    if method not in ("exact", "approximate"):
        raise ValueError(f"`method` must be 'exact' or 'approximate', got {method!r}.")

    start = logg.info(f"retrieving the top {k} of {reference_table.n_obs} references for {query_table.n_obs} queries")
    if method == "exact":
        indices, scores = top_k(query_emb, reference_emb, k, block_size=block_size, progress=progress)
    else:
        indices, scores = _approximate(query_emb, reference_emb, k)

    query = working_copy(query, copy)
    query_table = get_table(query, table_key)
    query_table.obsm[key_added] = indices
    query_table.obsm[f"{key_added}_scores"] = scores
    record(
        query_table,
        "retrieve",
        {
            "k": k,
            "use_rep": use_rep,
            "reference_rep": reference_rep,
            "method": method,
            "key_added": key_added,
            "reference_obs_names": reference_table.obs_names.to_numpy(dtype=str),
        },
    )
    logg.finished(start, [(key_added, "reference positions (obsm)"), (f"{key_added}_scores", "similarities (obsm)")])
    return query if copy else None


def _approximate(query: np.ndarray, reference: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    from pynndescent import NNDescent

    index = NNDescent(reference, metric="cosine", n_neighbors=max(2 * k, 15), random_state=0)
    indices, distances = index.query(query, k=k)
    return indices.astype(np.int64), (1 - distances).astype(np.float32)
