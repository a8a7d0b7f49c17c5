"""Loki Align on arrays: point clouds from coordinates + embedding PCs, non-rigid CPD, then a rigid fit."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from omiclip._core.cpd import CPDOptions, CPDResult, apply_affine, nonrigid_cpd, rigid_fit

Scaling = Literal["shared", "each"]

# The official get_pca_by_fit fits 3 components; align_tissue scales by all 3 and uses 2
_OFFICIAL_N_PCS_FITTED = 3


@dataclass(frozen=True)
class Alignment:
    """Source coordinates registered onto the target, in the target's units."""

    nonrigid: np.ndarray
    """(M, 2) CPD result."""
    rigid: np.ndarray
    """(M, 2) the source moved by ``matrix``."""
    matrix: np.ndarray
    """3×3 homogeneous transform from source coordinates to target coordinates (rotation, translation and the
    known unit conversion ``source_scale``)."""
    cpd: CPDResult


def point_clouds(
    source_xy: np.ndarray,
    target_xy: np.ndarray,
    source_features: np.ndarray | None,
    target_features: np.ndarray | None,
    *,
    n_pcs: int = 2,
    scaling: Scaling = "each",
    center: bool = False,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, tuple[float, float]]:
    """The official 4-D clouds ``[x, y, PC1, PC2]`` in unit scale, and the target's (offset, range).

    PCs come from a PCA fitted on the target's features and applied to the source's. As in the official code, the
    PCA has at least 3 components, all of them (of both clouds) are min–max scaled together (one min, one max),
    and then the first ``n_pcs`` are used. Coordinates: ``"each"`` scales each
    cloud by its own min and max over both axes (official; this also matches the clouds' bounding boxes, and
    assumes the two sections cover the same tissue); ``"shared"`` moves the source's centroid onto the target's
    and scales both by the target's min and max, which keeps the relative size of the sections (they must be in
    the same units) and so suits sections where one lacks a part of the other.

    ``center`` moves the source's features to the target's mean before the projection, which removes a constant
    offset between the two embeddings (CLIP's gap between image and text embeddings, batch effects). The official
    code does not; only x, y move in the CPD, so such an offset would otherwise stay in every distance.
    """
    target_offset = float(target_xy.min())
    target_range = float(np.ptp(target_xy))
    if scaling == "each":
        source_unit = (source_xy - source_xy.min()) / np.ptp(source_xy)
    else:
        source_unit = (source_xy - source_xy.mean(0) + target_xy.mean(0) - target_offset) / target_range
    target_unit = (target_xy - target_offset) / target_range
    if source_features is None:
        return source_unit, target_unit, (target_offset, target_range)

    from sklearn.decomposition import PCA

    n_fitted = min(max(n_pcs, _OFFICIAL_N_PCS_FITTED), *target_features.shape)
    pca = PCA(n_components=n_fitted, random_state=seed).fit(target_features)
    if center:
        source_features = source_features - source_features.mean(axis=0) + pca.mean_
    source_pcs, target_pcs = pca.transform(source_features), pca.transform(target_features)
    low = min(source_pcs.min(), target_pcs.min())
    span = max(source_pcs.max(), target_pcs.max()) - low
    span = span if span > 0 else 1.0
    return (
        np.column_stack([source_unit, (source_pcs[:, :n_pcs] - low) / span]),
        np.column_stack([target_unit, (target_pcs[:, :n_pcs] - low) / span]),
        (target_offset, target_range),
    )


def align_points(
    source_xy: np.ndarray,
    target_xy: np.ndarray,
    source_features: np.ndarray | None = None,
    target_features: np.ndarray | None = None,
    *,
    source_scale: float = 1.0,
    n_pcs: int = 2,
    scaling: Scaling = "each",
    center: bool = False,
    options: CPDOptions = CPDOptions(),
) -> Alignment:
    """Register ``source_xy`` onto ``target_xy`` (Loki Align); features are embeddings or ``None``.

    ``source_scale`` converts source units to target units (e.g. µm per source pixel / µm per target pixel); the
    rigid fit and its matrix include it, so the matrix maps raw source coordinates to target coordinates.
    """
    source_in_target_units = source_xy * source_scale
    source_cloud, target_cloud, (offset, span) = point_clouds(
        source_in_target_units,
        target_xy,
        source_features,
        target_features,
        n_pcs=n_pcs,
        scaling=scaling,
        center=center,
        seed=options.seed,
    )
    cpd = nonrigid_cpd(source_cloud, target_cloud, options, n_moving=2)
    nonrigid = cpd.moved * span + offset
    matrix = rigid_fit(source_in_target_units, nonrigid) @ np.diag([source_scale, source_scale, 1.0])
    return Alignment(nonrigid=nonrigid, rigid=apply_affine(matrix, source_xy), matrix=matrix, cpd=cpd)


def chain(matrices: list[np.ndarray]) -> np.ndarray:
    """Compose 3×3 transforms applied in the order given (first one first)."""
    total = np.eye(3)
    for matrix in matrices:
        total = matrix @ total
    return total
