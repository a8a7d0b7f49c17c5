"""Tangram's mapping objective on embeddings (Loki Decompose, eq. 12), mapping to proportions, NMS (eq. 13-14).

The objective is Tangram 1.0.4's ``Mapper`` with the settings Loki's ``cell_type_decompose`` ends up with
(``lambda_g1 = lambda_d = 1``, every other term off): learn logits ``W`` (sources × spots) with
``P = softmax(W, axis=1)``, so each source (a cluster or a cell) is a distribution over spots, and minimise

    loss(W) = -mean_k cos((P^T S)[:, k], G[:, k]) + KL(d || P^T w)

``S`` (sources × dims) are source embeddings, ``G`` (spots × dims) spatial embeddings, ``cos`` the cosine
similarity of one dimension's column across spots (eq. 12), ``w`` the fraction of reference cells per source
and ``d`` the uniform density over spots. The KL term is ``sum_s d_s log(d_s / (P^T w)_s)``: the spread of
the reference's cells over the spots should look uniform.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from scipy import sparse
from tqdm.auto import tqdm

_INIT_BLOCK = 1 << 22  # logits drawn per block (16 MB of float32), so cell mode never holds a float64 copy
_SMALL_PROBLEM = 1 << 24  # sources × spots × dims below which the CPU optimisation runs on one thread


@dataclass(frozen=True)
class Mapping:
    """A fitted mapping: ``probabilities[i, s]`` is the share of source ``i`` placed on spot ``s`` (rows sum to 1)."""

    probabilities: np.ndarray
    score: float  # final mean per-dimension cosine similarity (Tangram's "train score")
    kl: float  # final density term


def initial_logits(n_sources: int, n_spots: int, seed: int) -> np.ndarray:
    """Standard normal logits, the numbers Tangram draws for ``random_state=seed``.

    Tangram seeds numpy's global generator and calls ``np.random.normal(0, 1, shape)``; a private
    ``RandomState(seed)`` yields the same stream without touching global state.
    """
    rng = np.random.RandomState(seed)
    logits = np.empty((n_sources, n_spots), dtype=np.float32)
    rows = max(1, _INIT_BLOCK // max(n_spots, 1))
    for start in range(0, n_sources, rows):
        stop = min(start + rows, n_sources)
        logits[start:stop] = rng.normal(0, 1, (stop - start, n_spots))
    return logits


def fit_mapping(
    sources: np.ndarray,
    spots: np.ndarray,
    source_weights: np.ndarray,
    *,
    epochs: int = 1000,
    lr: float = 0.1,
    seed: int = 0,
    device: torch.device | str = "cpu",
    progress: bool = False,
) -> Mapping:
    """Optimise Tangram's mapping of ``sources`` onto ``spots`` with Adam (see the module docstring).

    Parameters
    ----------
    sources
        ``(n_sources, dim)`` embeddings of clusters (their mean) or of single cells.
    spots
        ``(n_spots, dim)`` embeddings of the spatial observations.
    source_weights
        ``(n_sources,)`` fraction of the reference's cells each source stands for (sums to 1).
    epochs, lr
        Adam steps and learning rate.
    seed
        Seed of the initial logits (Tangram's ``random_state``).
    device
        Torch device.
    progress
        Show a progress bar.

    Returns
    -------
    The fitted :class:`Mapping`.
    """
    device = torch.device(device)
    source = torch.as_tensor(np.asarray(sources, dtype=np.float32), device=device)
    # the spatial side is fixed: normalise its columns once instead of in every epoch
    target = torch.as_tensor(np.asarray(spots, dtype=np.float32), device=device)
    target = target / torch.linalg.vector_norm(target, dim=0).clamp_min(1e-8)
    weights = torch.as_tensor(np.asarray(source_weights, dtype=np.float32), device=device)
    n_spots = target.shape[0]
    log_density = -float(np.log(n_spots))  # uniform prior d_s = 1 / n_spots
    logits = torch.tensor(initial_logits(len(source), n_spots, seed), device=device, requires_grad=True)
    optimizer = torch.optim.Adam([logits], lr=lr)
    # cluster mode maps a handful of sources: the sources × sources Gram matrix is then much cheaper
    few_sources = len(source) <= source.shape[1]

    def terms() -> tuple[torch.Tensor, torch.Tensor]:
        probabilities = torch.softmax(logits, dim=1)
        # per dimension k: cos = <(P^T S)_k, G_k> / |(P^T S)_k| (G's columns are unit length)
        if few_sources:  # never form the spots × dims prediction P^T S: go through P G and P P^T instead
            products = ((probabilities @ target) * source).sum(dim=0)
            squared_norms = ((probabilities @ probabilities.T @ source) * source).sum(dim=0)
        else:
            predicted = probabilities.T @ source
            products = (predicted * target).sum(dim=0)
            squared_norms = (predicted * predicted).sum(dim=0)
        score = (products / squared_norms.clamp_min(1e-16).sqrt()).mean()
        # KL(d || P^T w) with d uniform: sum_s d_s (log d_s - log q_s)
        kl = (log_density - torch.log(weights @ probabilities)).mean()
        return score, kl

    with _one_thread_if_small(device, logits.numel() * source.shape[1]):
        for _ in tqdm(range(epochs), desc="mapping", disable=not progress):
            score, kl = terms()
            optimizer.zero_grad(set_to_none=True)
            (kl - score).backward()
            optimizer.step()
        with torch.no_grad():
            score, kl = terms()
            probabilities = torch.softmax(logits, dim=1).cpu().numpy()
    return Mapping(probabilities=probabilities, score=float(score), kl=float(kl))


@contextmanager
def _one_thread_if_small(device: torch.device, work: int):
    """Run small CPU problems on one thread.

    The optimisation is thousands of tiny ops; on small tensors each multi-threaded op pays a fork/join that
    costs more than it saves (20-30× slower in total on a 2-core machine shared with other jobs).
    """
    if device.type != "cpu" or work >= _SMALL_PROBLEM:
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def proportions_from_mapping(
    probabilities: np.ndarray, source_weights: np.ndarray, source_groups: np.ndarray, n_groups: int
) -> np.ndarray:
    """Per-spot cell-type proportions from a mapping, by Bayes' rule.

    Source ``i`` holds a fraction ``w_i`` of the reference's cells and sends a share ``P[i, s]`` of them to
    spot ``s``, so spot ``s`` receives ``w_i P[i, s]`` of them. The proportion of type ``c`` at ``s`` is
    the share of those that belong to type ``c``:

        proportion[s, c] = sum_{i in c} w_i P[i, s] / sum_i w_i P[i, s]

    This is what the official notebooks do by hand (cluster probabilities times cell-type counts or
    fractions, normalised per spot). Returns ``(n_spots, n_groups)`` float64; rows sum to 1.
    """
    by_group = _summed_by_group(probabilities, source_weights, source_groups, n_groups)
    return (by_group / by_group.sum(axis=0, keepdims=True)).T


def type_maps(probabilities: np.ndarray, source_groups: np.ndarray, n_groups: int) -> np.ndarray:
    """Each cell type's share of the mapping on each spot: ``sum_{i in c} P[i, s]``, ``(n_spots, n_groups)``.

    Tangram's ``project_cell_annotations`` (``obsm["tangram_ct_pred"]``), on which the official NMS runs. In
    cluster mode a type's column is its cluster's distribution over the spots (it sums to 1 over spots).
    """
    return _summed_by_group(probabilities, np.ones(len(probabilities)), source_groups, n_groups).T


def _summed_by_group(probabilities, source_weights, source_groups, n_groups: int) -> np.ndarray:
    """``sum_{i in c} w_i P[i, s]``, groups × spots, with one sparse product (cell mode: many sources)."""
    n_sources = len(probabilities)
    weighted_membership = sparse.csr_matrix(
        (np.asarray(source_weights, dtype=np.float64), (np.asarray(source_groups), np.arange(n_sources))),
        shape=(n_groups, n_sources),
    )
    return np.asarray(weighted_membership @ probabilities, dtype=np.float64)


def non_maximum_suppression(values: np.ndarray, percentiles: tuple[float, float] | None = (5, 95)) -> np.ndarray:
    """Keep each spot's most likely cell type only (eq. 13-14); the others become 0.

    With ``percentiles`` (the official ``NMS_mode``), each cell type's column is first clipped to those
    percentiles across spots and min-max scaled to [0, 1], so types compete by how enriched they are at a
    spot rather than by abundance; the kept values are these scaled ones. With ``None`` it is eq. 14 on
    ``values`` as given. Columns without spread (equal percentiles) score 0. As in the official code, every
    type that ties for a spot's maximum is kept (after clipping, several types can share the top value 1).
    """
    values = np.asarray(values, dtype=np.float64)
    if percentiles is not None:
        low, high = np.percentile(values, percentiles, axis=0)
        spread = high - low
        values = np.divide(np.clip(values, low, high) - low, spread, out=np.zeros_like(values), where=spread > 0)
    return np.where(values == values.max(axis=1, keepdims=True), values, 0.0)
