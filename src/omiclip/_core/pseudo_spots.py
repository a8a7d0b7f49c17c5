"""Visium-like pseudo-spots from single-cell or binned data: a hex grid of spots, each summing what it covers."""

from __future__ import annotations

import numpy as np
from scipy import sparse
from scipy.spatial import cKDTree


def hex_centres(low: np.ndarray, high: np.ndarray, spacing: float) -> np.ndarray:
    """Centres of a hexagonal grid with centre-to-centre ``spacing`` covering the box ``[low, high]``.

    Rows are ``spacing·√3/2`` apart and every other row is shifted by half a spacing, as on a Visium slide.
    """
    row_step = spacing * np.sqrt(3) / 2
    rows = np.arange(low[1], high[1] + row_step, row_step)
    columns = np.arange(low[0], high[0] + spacing, spacing)
    x = columns[None, :] + (np.arange(len(rows)) % 2 * spacing / 2)[:, None]
    y = np.broadcast_to(rows[:, None], x.shape)
    return np.column_stack([x.ravel(), y.ravel()])


def assign(points: np.ndarray, centres: np.ndarray, radius: float) -> np.ndarray:
    """Index of the spot whose disc of ``radius`` contains each point, or -1 (between spots)."""
    distance, nearest = cKDTree(centres).query(points, distance_upper_bound=radius)
    return np.where(np.isfinite(distance), nearest, -1)


def membership(assignment: np.ndarray, n_spots: int) -> sparse.csr_matrix:
    """Sparse spots × points indicator of an assignment (points with -1 belong to no spot)."""
    inside = np.flatnonzero(assignment >= 0)
    ones = np.ones(len(inside), dtype=np.float32)
    return sparse.csr_matrix((ones, (assignment[inside], inside)), shape=(n_spots, len(assignment)))
