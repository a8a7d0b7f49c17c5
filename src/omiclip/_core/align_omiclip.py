"""The ``flavor="omiclip"`` alignment on arrays: rigid CPD, then non-rigid CPD, then the rigid fit to its result.

The official recipe (``flavor="loki"``, :mod:`omiclip._core.registration`) loses accuracy in known places; each
change here replaces one of them by the maximum-likelihood answer of the same mixture model:

* **One unit for both sections.** The official code min–max scales each section on its own, so a section that lacks
  part of the other, or has a few stray spots, is stretched. Here both keep the target's units (they must be in the
  same units; ``source_scale`` converts) and the length unit is the target's robust extent (its central 90 % of spots
  in x and y, stretched to the extent a uniform tissue would have), so β keeps its official meaning.
* **A variance per kind of dimension.** CPD uses one σ² for coordinates and embedding PCs together, so the PCs'
  mismatch, which never shrinks, holds the coordinates' σ² high and the spatial matching stays blurred. Here the
  coordinates have their own σ² and each PC its own, all estimated in the M-step (an axis-aligned Gaussian
  mixture), so no min–max scaling decides the PCs' weight.
* **Outliers.** Spots of the target that the source lacks (a torn or missing fragment) are explained by CPD's
  uniform component with weight ``w`` (official 0: every target spot pulls on the source). The Gaussians' share,
  ``(1 - w) Σ N(x; y_m, σ²) / M``, is a density that does not change with the number of spots; CPD's outlier term
  ``w / N`` is not a density, so its pull weakened as spots were added (and differed between subsets and all
  points) and changed with the units of the columns. Here it is a density, ``w / V``, with its support ``V``
  estimated as the target cloud's robust box (central 90 % in every column, coordinates and PCs, as the unit below).
* **Coarse to fine.** A rigid CPD first (rotation + translation), so that the non-rigid CPD, which starts from it,
  only has to model the bend and not a rotation that its smoothness prior shrinks.

The rigid output is then, as in the official code, the least-squares rigid fit to the non-rigid result: with that
result close to the true positions, it is the best rigid approximation of the true warp.

Every E-step streams over blocks of target points (:func:`omiclip._core.cpd._expectation`), the motion kernel is
the Nyström low-rank one of :mod:`omiclip._core.cpd`, and with ``max_points`` both CPDs run on random subsets,
followed by ``refine_iter`` non-rigid iterations on all points: the cost stays that of the official flavour's EM.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from omiclip._core.cpd import (
    _SIGMA2_FLOOR,
    CPDOptions,
    CPDResult,
    _displacement_coordinates,
    _expectation,
    _Field,
    _initial_sigma2,
    _subsample,
    apply_affine,
    low_rank_kernel,
    rigid_fit,
)
from omiclip._core.registration import Alignment

# Points of each cloud in the rigid start: enough to place a section's outline and domains, 1/25 of the cost of
# an iteration on 5,000-point subsets
_COARSE_POINTS = 1000
# The central 90 % of a uniform distribution spans 0.9 of its range: dividing by this gives the full extent.
_ROBUST_QUANTILES = (0.05, 0.95)


@dataclass(frozen=True)
class _Clouds:
    source: np.ndarray
    target: np.ndarray
    centre: np.ndarray
    """Target-unit point that the unit clouds' origin stands for."""
    unit: float
    """Target units per unit of the clouds."""
    target_volume: float
    """Volume of the target cloud's robust box (the outlier component's support), in cloud units."""
    source_extent_ratio: float
    """Robust extent of the source over the target's (1 when both show the same tissue in the same units)."""

    def to_target_units(self, xy: np.ndarray) -> np.ndarray:
        return xy * self.unit + self.centre


def robust_spans(points: np.ndarray) -> np.ndarray:
    """Extent of each column from its central 90 % (the full range for a uniform distribution)."""
    low, high = np.quantile(points, _ROBUST_QUANTILES, axis=0)
    return (high - low) / (_ROBUST_QUANTILES[1] - _ROBUST_QUANTILES[0])


def robust_extent(xy: np.ndarray) -> float:
    """Extent of a point cloud from its central 90 % in x and y (the full side for a uniform square)."""
    span = float(np.mean(robust_spans(xy)))
    return span if span > 0 else float(np.ptp(xy))


def robust_volume(points: np.ndarray) -> float:
    """Volume of the box of the central 90 % of each column.

    A column whose central 90 % has no spread takes its full range; one with (numerically) none at all counts as 1,
    so that the volume never underflows to 0.
    """
    spans = robust_spans(points)
    spans = np.where(spans > 0, spans, np.ptp(points, axis=0))
    return float(np.prod(np.where(spans > 1e-12 * spans.max(initial=0.0), spans, 1.0)))


def point_clouds(
    source_xy: np.ndarray,
    target_xy: np.ndarray,
    source_features: np.ndarray | None,
    target_features: np.ndarray | None,
    *,
    n_pcs: int,
    center: bool,
    seed: int = 0,
) -> _Clouds:
    """``[x, y, PCs…]`` of both sections: one length unit for both, centroids matched, PCs in PCA units.

    PCs come from a PCA fitted on the target's features and applied to the source's (``center`` first moves the
    source's features to the target's mean, as in :func:`omiclip._core.registration.point_clouds`). They are
    divided by the root mean square of the target's PCs only to keep the float32 E-step well scaled: each PC's
    weight is its own σ², estimated by the EM.
    """
    unit = robust_extent(target_xy)
    centre = target_xy.mean(0)
    source_unit = (source_xy - source_xy.mean(0)) / unit
    target_unit = (target_xy - centre) / unit
    ratio = robust_extent(source_xy) / unit
    if source_features is None:
        return _Clouds(source_unit, target_unit, centre, unit, robust_volume(target_unit), ratio)

    from sklearn.decomposition import PCA

    pca = PCA(n_components=n_pcs, random_state=seed).fit(target_features)
    if center:
        source_features = source_features - source_features.mean(axis=0) + pca.mean_
    source_pcs, target_pcs = pca.transform(source_features), pca.transform(target_features)
    rms = float(np.sqrt((target_pcs**2).mean())) or 1.0
    target = np.column_stack([target_unit, target_pcs / rms])
    return _Clouds(np.column_stack([source_unit, source_pcs / rms]), target, centre, unit, robust_volume(target), ratio)


class _Variances:
    """σ² per group of columns: the two coordinates share one, each feature column has its own.

    Convergence is judged on the coordinates' σ², as CPD judges its σ²: ``|Δσ²| <= tol``, or with ``rtol`` a
    relative change below it or σ² at 1e-6 of its start (an exact match).
    """

    def __init__(self, source: np.ndarray, target: np.ndarray, tol: float, rtol: float | None, n_moving: int = 2):
        self.groups = [slice(0, n_moving)] + [slice(j, j + 1) for j in range(n_moving, source.shape[1])]
        self.values = np.array([_initial_sigma2(source[:, g], target[:, g]) for g in self.groups])
        self.tol, self.rtol = tol, rtol
        self.floor = _SIGMA2_FLOOR * self.values if rtol is not None else np.zeros_like(self.values)

    @property
    def coordinates(self) -> float:
        return float(self.values[0])

    def per_dimension(self) -> np.ndarray:
        return np.concatenate([np.full(g.stop - g.start, v) for g, v in zip(self.groups, self.values, strict=True)])

    def update(self, X, TY, P1, Pt1, PX) -> bool:
        """M-step of every σ²; returns whether the coordinates' σ² has converged."""
        new = np.array([_group_variance(X[:, g], TY[:, g], P1, Pt1, PX[:, g]) for g in self.groups])
        # as the official code: a perfect fit must not make σ² zero
        fallback = self.tol / 10 if self.tol > 0 else np.finfo(np.float64).tiny
        new = np.where(new > 0, new, np.maximum(self.floor, fallback))
        change = abs(new[0] - self.values[0])
        relative = change / self.values[0]
        self.values = np.maximum(new, self.floor)
        matched = self.values[0] <= self.floor[0]
        return bool(change <= self.tol or (self.rtol is not None and (relative < self.rtol or matched)))


def _group_variance(X, TY, P1, Pt1, PX) -> float:
    x_px = (Pt1.double() * (X.double() ** 2).sum(1)).sum()
    y_py = (P1.double() * (TY.double() ** 2).sum(1)).sum()
    trace = (PX.double() * TY.double()).sum()
    return float((x_px - 2 * trace + y_py) / (P1.double().sum() * X.shape[1]))


def _iterations(max_iter: int | None, desc: str, progress: bool):
    """1, 2, … up to ``max_iter`` (``None``: no cap, official), with a progress bar."""
    bar = tqdm(total=max_iter, desc=desc, unit="it", disable=not progress, leave=False)
    iteration = 0
    try:
        while max_iter is None or iteration < max_iter:
            iteration += 1
            bar.update()
            yield iteration
    finally:
        bar.close()


def rigid_cpd(
    source: np.ndarray, target: np.ndarray, options: CPDOptions, *, outlier_volume: float | None = None
) -> tuple[np.ndarray, _Variances, int]:
    """Rigid CPD (rotation + translation of the first two columns; the rest are fixed features), from the identity.

    The M-step is the weighted Procrustes problem of Myronenko & Song (2010) without scaling, from the streamed
    ``P·1``, ``Pᵀ·1`` and ``P·X``; ``outlier_volume`` as in :func:`omiclip._core.cpd._expectation`. Returns the 3×3
    matrix, the fitted variances and the iterations used.
    """
    dtype, device = options.torch_dtype, options.device
    X = torch.as_tensor(target, dtype=dtype, device=device)
    Y = torch.as_tensor(source, dtype=dtype, device=device)
    Y_xy = torch.as_tensor(source[:, :2], dtype=torch.float64, device=device)
    variances = _Variances(source, target, options.tol, options.rtol)
    TY, matrix, iterations = Y.clone(), np.eye(3), 0
    for iterations in _iterations(options.max_iter, "rigid CPD", options.progress):  # noqa: B007 (count returned)
        P1, Pt1, PX = _expectation(X, TY, variances.per_dimension(), options.w, options.block_size, outlier_volume)
        P1d, PXd = P1.double(), PX[:, :2].double()
        n_p = P1d.sum()
        mu_x, mu_y = PXd.sum(0) / n_p, (P1d @ Y_xy) / n_p
        covariance = (PXd.T @ Y_xy - n_p * torch.outer(mu_x, mu_y)).cpu().numpy()
        u, _, vt = np.linalg.svd(covariance)
        rotation = u @ np.diag([1.0, np.sign(np.linalg.det(u @ vt)) or 1.0]) @ vt  # no reflection
        matrix = np.eye(3)
        matrix[:2, :2] = rotation
        matrix[:2, 2] = mu_x.cpu().numpy() - rotation @ mu_y.cpu().numpy()
        TY[:, :2] = torch.as_tensor(apply_affine(matrix, source[:, :2]), dtype=dtype, device=device)
        if variances.update(X, TY, P1, Pt1, PX):
            break
    return matrix, variances, iterations


def _moved(source: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    moved = source.copy()
    moved[:, :2] = apply_affine(matrix, source[:, :2])
    return moved


def nonrigid_cpd(
    source: np.ndarray,
    target: np.ndarray,
    variances: _Variances,
    options: CPDOptions,
    *,
    max_iter: int | None,
    rng: np.random.Generator,
    field: _Field | None = None,
    outlier_volume: float | None = None,
    desc: str = "CPD",
) -> tuple[_Field, np.ndarray, int, bool, int]:
    """Non-rigid CPD of the first two columns with a σ² per group of columns (see :class:`_Variances`).

    The M-step of the motion is the official one (:func:`omiclip._core.cpd._displacement_coordinates`) with the
    coordinates' σ² in the regulariser ``α σ²``: the embedding PCs do not move and so do not enter it. The kernel is
    the official exact low-rank one (``n_landmarks=None``) or the Nyström one, on the coordinates. ``field`` (a
    coarser level's displacement) is the start; ``outlier_volume`` as in :func:`rigid_cpd`. Returns the displacement
    field, the displacement of ``source`` itself, the iterations, whether the tolerance was met and the kernel's
    rank; ``variances`` are updated in place.
    """
    xy = source[:, :2]
    Q, lam, expansion, landmarks = low_rank_kernel(xy, options, rng)
    dtype, device = options.torch_dtype, options.device
    Y = torch.as_tensor(source, dtype=dtype, device=device)
    X = torch.as_tensor(target, dtype=dtype, device=device)
    Q_t, lam_t = torch.as_tensor(Q, device=device).to(dtype), torch.as_tensor(lam, device=device)
    TY = Y.clone()
    if field is not None:  # warm start from the coarser level's field (z then solves for the whole displacement)
        TY[:, :2] += torch.as_tensor(field(xy), dtype=dtype, device=device)
    z = torch.zeros(len(lam), 2, dtype=torch.float64, device=device)
    converged, iterations = False, 0
    for iterations in _iterations(max_iter, desc, options.progress):  # noqa: B007 (the count is returned)
        P1, Pt1, PX = _expectation(X, TY, variances.per_dimension(), options.w, options.block_size, outlier_volume)
        residual = PX[:, :2] - P1[:, None] * Y[:, :2]
        z = _displacement_coordinates(Q_t, lam_t, P1, residual, options.alpha * variances.coordinates)
        TY[:, :2] = Y[:, :2] + (Q_t.double() @ z).to(dtype)
        if variances.update(X, TY, P1, Pt1, PX):
            converged = True
            break
    z = z.cpu().numpy()
    return _Field(landmarks, expansion @ z, options.beta), Q @ z, iterations, converged, len(lam)


def align_points(
    source_xy: np.ndarray,
    target_xy: np.ndarray,
    source_features: np.ndarray | None = None,
    target_features: np.ndarray | None = None,
    *,
    source_scale: float = 1.0,
    n_pcs: int = 2,
    center: bool = False,
    options: CPDOptions = CPDOptions(w=0.1),
) -> tuple[Alignment, float]:
    """Register ``source_xy`` onto ``target_xy`` with the omiclip flavour (see the module's description).

    Parameters as :func:`omiclip._core.registration.align_points` (the same :class:`~omiclip._core.cpd.CPDOptions`:
    exact or Nyström kernel, subsets, tolerances, dtype; here ``w`` defaults to 0.1); ``n_pcs`` is capped at the
    features' rank. Returns the :class:`~omiclip._core.registration.Alignment` and the ratio of the source's robust
    extent to the target's (far from 1 when the sections are not in the same units).
    """
    rng = np.random.default_rng(options.seed)
    source_in_target_units = np.asarray(source_xy, dtype=np.float64) * source_scale
    if source_features is not None:
        n_pcs = min(n_pcs, *target_features.shape)
    features = {"n_pcs": n_pcs, "center": center, "seed": options.seed}
    clouds = point_clouds(source_in_target_units, target_xy, source_features, target_features, **features)
    max_points = options.max_points
    source_sub, target_sub = _subsample(clouds.source, max_points, rng), _subsample(clouds.target, max_points, rng)

    # 1. rigid CPD from the matched centroids, on coarser subsets: three parameters, and only a start for step 2
    coarse_source = _subsample(source_sub, _COARSE_POINTS, rng)
    coarse_target = _subsample(target_sub, _COARSE_POINTS, rng)
    volume = clouds.target_volume  # one density for subsets and all points
    start, variances, rigid_iterations = rigid_cpd(coarse_source, coarse_target, options, outlier_volume=volume)
    # 2. non-rigid CPD from the rigid result (on subsets, then a few iterations on all points); the σ² go on from
    # the rigid fit's (restarting them only costs iterations)
    moved_sub, moved_all = _moved(source_sub, start), _moved(clouds.source, start)
    field, displacement, iterations, converged, rank = nonrigid_cpd(
        moved_sub, target_sub, variances, options, max_iter=options.max_iter, rng=rng, outlier_volume=volume
    )
    refine_iterations = 0
    if len(source_sub) < len(clouds.source) or len(target_sub) < len(clouds.target):
        displacement = field(moved_all[:, :2])
        if options.refine_iter > 0:
            _, displacement, refine_iterations, _, rank = nonrigid_cpd(
                moved_all, clouds.target, variances, options, max_iter=options.refine_iter, rng=rng, field=field,
                outlier_volume=volume, desc="CPD, all points",
            )  # fmt: skip
    nonrigid_xy = clouds.to_target_units(moved_all[:, :2] + displacement)
    # the rigid output, as in the official code: the least-squares rigid fit to the non-rigid result. With that
    # result close to the true positions, it is the best rigid approximation of the true warp (a rigid CPD
    # refinement of its own lands back on step 1's rigid CPD: no better on the synthetic pairs)
    matrix = rigid_fit(source_in_target_units, nonrigid_xy) @ np.diag([source_scale, source_scale, 1.0])
    cpd = CPDResult(
        moved=nonrigid_xy,
        iterations=rigid_iterations + iterations,
        refine_iterations=refine_iterations,
        sigma2=variances.coordinates,
        converged=converged,
        n_points=(len(source_sub), len(target_sub)),
        rank=rank,
        kernel="exact" if options.n_landmarks is None else "nystrom",
    )
    alignment = Alignment(nonrigid=cpd.moved, rigid=apply_affine(matrix, source_xy), matrix=matrix, cpd=cpd)
    return alignment, clouds.source_extent_ratio
