from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import numpy as np
from anndata import AnnData

from omiclip import _logging as logg
from omiclip._anndata import check_unique_names, get_table, reference_pair, working_copy
from omiclip._core.similarity import top_k
from omiclip._docs import doc_params
from omiclip._keys import RETRIEVED_KEY, claim, record, scores_key
from omiclip._validate import check_choice, check_int

if TYPE_CHECKING:
    from spatialdata import SpatialData


@doc_params
def retrieve(
    query: AnnData | SpatialData,
    reference: AnnData | SpatialData,
    *,
    k: int = 3,
    use_rep: str = "X_omiclip_image",
    reference_rep: str = "X_omiclip_text",
    method: Literal["exact", "approximate"] = "exact",
    block_size: int = 1024,
    key_added: str = RETRIEVED_KEY,
    table_key: str | None = None,
    reference_table_key: str | None = None,
    progress: bool = True,
    copy: bool = False,
) -> AnnData | SpatialData | None:
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
    {table_key}
    {reference_table_key}
    {progress}
    {copy}

    Returns
    -------
    ``None``, or a copy of ``query`` when ``copy=True``. Writes to the query table:

    ``.obsm["omiclip_retrieved"]``
        ``int`` ``(n_obs, k)`` positions of the retrieved reference observations, best first.
    ``.obsm["omiclip_retrieved_scores"]``
        Their cosine similarities.
    ``.uns["omiclip"]["retrieve"][key_added]``
        Parameters and ``reference_obs_names`` (so positions map back to names).
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
    check_unique_names(reference_table, name="the reference")  # its names map the retrieved positions back
    check_int("k", k, min=1, max=reference_table.n_obs)
    check_choice("method", method, ("exact", "approximate"))
    claim(
        query_table, [("obsm", key_added), ("obsm", scores_key(key_added))], step="retrieve", reads=[("obsm", use_rep)]
    )

    start = logg.info(f"retrieving the top {k} of {reference_table.n_obs} references for {query_table.n_obs} queries")
    if method == "exact":
        indices, scores = top_k(query_emb, reference_emb, k, block_size=block_size, progress=progress)
    else:
        indices, scores = _approximate(query_emb, reference_emb, k)

    query = working_copy(query, copy)
    query_table = get_table(query, table_key)
    query_table.obsm[key_added] = indices
    query_table.obsm[scores_key(key_added)] = scores
    record(
        query_table,
        "retrieve",
        key_added,
        {
            "k": k,
            "use_rep": use_rep,
            "reference_rep": reference_rep,
            "method": method,
            "key_added": key_added,
            "reference_obs_names": reference_table.obs_names.to_numpy(dtype=str),
        },
    )
    logg.finished(start, [(key_added, "reference positions (obsm)"), (scores_key(key_added), "similarities (obsm)")])
    return query if copy else None


def _approximate(query: np.ndarray, reference: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    from pynndescent import NNDescent

    index = NNDescent(reference, metric="cosine", n_neighbors=max(2 * k, 15), random_state=0)
    indices, distances = index.query(query, k=k)
    return indices.astype(np.int64), (1 - distances).astype(np.float32)
