"""Non-rigid coherent point drift (Myronenko & Song 2010) with a low-rank motion kernel, in torch.

Loki Align registers source points ``[x, y, features…]`` onto target points with CPD in which only the first
``n_moving`` dimensions move; the remaining ones act as fixed features that decide which points match.

With the defaults this is the official run (Loki's modified pycpd ``DeformableRegistration(low_rank=True)``):
float64, the ``n_eig`` eigenvectors of largest ``|λ|`` of the exact M×M kernel, iterations until ``|Δσ²| <= tol``.
The E-step streams over blocks of target points, so memory is O(M · block) and P is never stored (the official
code holds the M×N matrix and an M×N×D difference tensor). Options make it scale further:

* ``n_landmarks``: the motion kernel ``G`` approximated from that many Nyström landmarks instead of a full
  eigendecomposition (O(M³) time, O(M²) memory). The displacement field is then a kernel expansion on the
  landmarks, which can be evaluated at any point;
* ``rtol``, ``max_iter``: stop on a relative change of σ², or after a number of iterations;
* ``dtype="float32"``: a faster E-step (the kernel's cut-off stays the official float64 one, ~8.5σ).

With ``max_points``, the EM first runs on random subsets of both clouds (cost per iteration ``max_points²``
instead of ``M·N``); the fitted field, evaluated at every point, then starts a few iterations on all points
(``refine_iter``), which remove the subsets' sampling noise. With the default β = 2 on unit-scaled coordinates the
field is very smooth, so the subsets find it; ``benchmarks/align_scale.py`` measures time, memory and error.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

# Eigenvalues of the landmark kernel below this fraction of the largest are numerically zero (float64).
_EIG_RTOL = 1e-10
_SIGMA2_FLOOR = 1e-6
# The official E-step clips each column sum of the kernel at float64's eps: a target point whose nearest source
# point is farther than sqrt(-2 ln eps) ≈ 8.5σ gets less than full weight. The same floor in every dtype keeps
# that cut-off (float32's own eps would cut at ~5.7σ).
_COLUMN_FLOOR = float(np.finfo(np.float64).eps)
# Lowest kernel exponent computed: exp() of anything lower is subnormal (20× slower on x86) and far below the
# column floor, so it is clamped there (float32: exp(-80) ≈ 2e-35; float64: exp(-700) ≈ 1e-304).
_MIN_EXPONENT = {torch.float32: -80.0, torch.float64: -700.0}


@dataclass(frozen=True)
class CPDResult:
    """Result of :func:`nonrigid_cpd`."""

    moved: np.ndarray
    """(M, n_moving) moved coordinates of every source point."""
    iterations: int
    """EM iterations on the (sub)sampled clouds."""
    refine_iterations: int
    """EM iterations on all points after a subsampled fit."""
    sigma2: float
    """Final isotropic variance of the mixture, in the units of the inputs (squared)."""
    converged: bool
    """Whether the (sub)sampled EM met the tolerance before ``max_iter``."""
    n_points: tuple[int, int]
    """Source and target points used in the first EM iterations."""
    rank: int
    """Rank of the low-rank motion kernel (last level)."""
    kernel: str
    """``"exact"`` (eigendecomposition of the full kernel) or ``"nystrom"``."""


@dataclass(frozen=True)
class _Field:
    """A displacement field ``K(·, landmarks) @ coefficients`` (Gaussian kernel of width β)."""

    landmarks: np.ndarray
    coefficients: np.ndarray
    beta: float

    def __call__(self, points: np.ndarray, block: int = 4096) -> np.ndarray:
        out = np.empty((len(points), self.coefficients.shape[1]))
        for start in range(0, len(points), block):  # never the whole points × landmarks kernel at once
            kernel = _gaussian(points[start : start + block], self.landmarks, self.beta)
            out[start : start + block] = kernel @ self.coefficients
        return out


@dataclass(frozen=True)
class CPDOptions:
    """Options of the CPD solver, shared by both alignment flavours; the defaults are the official run.

    ``alpha`` (λ, smoothness weight), ``beta`` (width of the motion kernel), ``w`` (outlier weight) and ``n_eig``
    (rank of the kernel) follow pycpd's ``DeformableRegistration(low_rank=True)``. The kernel's eigenvectors are
    exact (``n_landmarks=None``, official) or from a Nyström approximation on ``n_landmarks`` random source points.
    Iterations stop when σ² changes by at most ``tol`` (official), with ``rtol`` also when it changes by less than
    that fraction or reaches 1e-6 of its start (an exact match), or after ``max_iter`` (``None``: no cap,
    official). With ``max_points``, the EM first runs on random subsets of at most that many points; its field then
    starts at most ``refine_iter`` iterations on all points, which remove the noise of the subsets. ``dtype`` is
    that of the E-step, which streams over blocks of ``block_size`` target points.
    """

    alpha: float = 0.5
    beta: float = 2.0
    w: float = 0.0
    n_eig: int = 100
    n_landmarks: int | None = None
    max_points: int | None = None
    max_iter: int | None = None
    refine_iter: int = 5
    tol: float = 1e-9
    rtol: float | None = None
    dtype: str = "float64"
    block_size: int = 1024
    device: str | torch.device = "cpu"
    seed: int = 0
    progress: bool = False

    @property
    def torch_dtype(self) -> torch.dtype:
        """``dtype`` as a torch dtype."""
        return {"float64": torch.float64, "float32": torch.float32}[self.dtype]


def nonrigid_cpd(
    source: np.ndarray, target: np.ndarray, options: CPDOptions = CPDOptions(), *, n_moving: int = 2
) -> CPDResult:
    """Move the first ``n_moving`` columns of ``source`` so that the source cloud matches ``target``.

    With the default :class:`CPDOptions` this is the official run; a σ² that is not positive becomes ``tol / 10``
    (official).
    """
    rng = np.random.default_rng(options.seed)
    torch_dtype, device = options.torch_dtype, options.device
    # CPD is translation invariant; centring keeps the distances of the E-step precise
    centre = np.asarray(target, dtype=np.float64).mean(0)
    source = np.asarray(source, dtype=np.float64) - centre
    target = np.asarray(target, dtype=np.float64) - centre
    first = (_subsample(source, options.max_points, rng), _subsample(target, options.max_points, rng), options.max_iter)
    levels = [first]
    if len(levels[0][0]) < len(source) or len(levels[0][1]) < len(target):
        levels.append((source, target, options.refine_iter))

    field, sigma2, counts, converged, rank, moved = None, None, [], False, 0, None
    for level, (level_source, level_target, cap) in enumerate(levels):
        if cap == 0:
            counts.append(0)
            continue
        Y = torch.as_tensor(level_source, dtype=torch_dtype, device=device)
        X = torch.as_tensor(level_target, dtype=torch_dtype, device=device)
        # the official kernel is on all columns, features included (pycpd builds G from the whole Y)
        Q, lam, expansion, landmarks = low_rank_kernel(level_source, options, rng)
        TY = Y.clone()
        if field is not None:  # warm start from the coarser level's field
            TY[:, :n_moving] += torch.as_tensor(field(level_source), dtype=torch_dtype, device=device)
        if sigma2 is None:
            sigma2 = _initial_sigma2(level_source, level_target)
            # With a relative tolerance an exact match never converges (σ² shrinks geometrically): stop at a match
            # to ~1e-3 of the clouds' spread
            sigma2_floor = _SIGMA2_FLOOR * sigma2 if options.rtol is not None else 0.0
        z, sigma2, iterations, level_converged = _em(
            X, Y, TY, torch.as_tensor(Q, device=device), torch.as_tensor(lam, device=device), sigma2, sigma2_floor,
            n_moving=n_moving, options=options, max_iter=cap, desc="CPD" if level == 0 else "CPD, all points",
        )  # fmt: skip
        converged = level_converged if level == 0 else converged
        counts.append(iterations)
        z = z.cpu().numpy()
        field, rank = _Field(landmarks, expansion @ z, options.beta), len(lam)
        if len(level_source) == len(source):  # all points: the displacement itself, not the field's expansion
            moved = source[:, :n_moving] + Q @ z + centre[:n_moving]

    if moved is None:
        moved = source[:, :n_moving] + field(source) + centre[:n_moving]
    return CPDResult(
        moved=moved,
        iterations=counts[0],
        refine_iterations=sum(counts[1:]),
        sigma2=float(sigma2),
        converged=converged,
        n_points=(len(levels[0][0]), len(levels[0][1])),
        rank=rank,
        kernel="exact" if options.n_landmarks is None else "nystrom",
    )


def _em(X, Y, TY, Q, lam, sigma2, sigma2_floor, *, n_moving, options: CPDOptions, max_iter, desc):
    """EM iterations from ``TY``; returns the displacement coordinates z (``TY - Y = Q z``), σ², count, converged."""
    alpha, w, tol, rtol = options.alpha, options.w, options.tol, options.rtol
    Q = Q.to(X.dtype)
    z = torch.zeros(len(lam), n_moving, dtype=torch.float64, device=Q.device)
    converged, iterations = False, 0
    bar = tqdm(total=max_iter, desc=desc, unit="it", disable=not options.progress, leave=False)
    while max_iter is None or iterations < max_iter:
        iterations += 1
        P1, Pt1, PX = _expectation(X, TY, sigma2, w, options.block_size)
        z = _displacement_coordinates(Q, lam, P1, PX[:, :n_moving] - P1[:, None] * Y[:, :n_moving], alpha * sigma2)
        TY[:, :n_moving] = Y[:, :n_moving] + (Q.double() @ z).to(X.dtype)
        new_sigma2 = _variance(X, TY, P1, Pt1, PX)
        if new_sigma2 <= 0:  # as the official code: a perfect fit must not make σ² zero
            new_sigma2 = tol / 10 if tol > 0 else sigma2_floor or np.finfo(np.float64).tiny
        change = abs(new_sigma2 - sigma2)
        relative_change = change / sigma2
        sigma2 = max(new_sigma2, sigma2_floor)
        bar.update()
        bar.set_postfix(sigma2=f"{sigma2:.3g}")
        if change <= tol or (rtol is not None and (relative_change < rtol or sigma2 <= sigma2_floor)):
            converged = True
            break
    bar.close()
    return z, sigma2, iterations, converged


def low_rank_kernel(points: np.ndarray, options: CPDOptions, rng: np.random.Generator):
    """The motion kernel on ``points`` as ``Q, λ, expansion, landmarks``: exact (official) or Nyström."""
    if options.n_landmarks is None:
        return (*_exact_low_rank(points, options.beta, options.n_eig), points)
    landmarks = _subsample(points, options.n_landmarks, rng)
    return (*_nystrom(points, landmarks, options.beta, options.n_eig), landmarks)


def _subsample(points: np.ndarray, max_points: int | None, rng: np.random.Generator) -> np.ndarray:
    if max_points is None or len(points) <= max_points:
        return points
    return points[np.sort(rng.choice(len(points), max_points, replace=False))]


def _gaussian(a: np.ndarray, b: np.ndarray, beta: float) -> np.ndarray:
    d2 = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T
    return np.exp(-np.maximum(d2, 0) / (2 * beta**2))


def _exact_low_rank(points: np.ndarray, beta: float, n_eig: int):
    """The official low-rank kernel: the ``n_eig`` eigenpairs of largest ``|λ|`` of the full M×M kernel (float64).

    ``Q`` (M × rank), ``λ`` and the expansion ``E = Q Λ⁻¹`` (``K Q = Q Λ``), with which the field can be evaluated
    at other points; numerically zero eigenvalues are left out of the expansion only.
    """
    s, u = np.linalg.eigh(_gaussian(points, points, beta))
    order = np.argsort(np.abs(s))[::-1][:n_eig]
    lam, q = s[order], u[:, order]
    keep = lam != 0  # an exactly zero eigenvalue moves nothing; 1/λ would be infinite
    lam, q = lam[keep], q[:, keep]
    inverse = np.where(lam > _EIG_RTOL * lam.max(), 1 / lam, 0.0)
    return q, lam, q * inverse


def _nystrom(points: np.ndarray, landmarks: np.ndarray, beta: float, n_eig: int):
    """Low-rank ``G ≈ Q diag(λ) Qᵀ`` (orthonormal Q) of the motion kernel on ``points`` from landmarks.

    Also returns ``E`` (landmarks × rank) with ``Q = K(points, landmarks) @ E``, so that the same expansion
    evaluates the field at any point. In float64: the kernel is very smooth and its spectrum decays fast.
    """
    s, u = np.linalg.eigh(_gaussian(landmarks, landmarks, beta))
    keep = s > _EIG_RTOL * s.max()
    u_scaled = u[:, keep] / np.sqrt(s[keep])  # Φ = C U S^{-1/2} gives G ≈ Φ Φᵀ
    phi = _gaussian(points, landmarks, beta) @ u_scaled
    lam, v = np.linalg.eigh(phi.T @ phi)
    order = np.argsort(lam)[::-1]
    order = order[lam[order] > _EIG_RTOL * lam[order[0]]][:n_eig]
    lam, v = lam[order], v[:, order]
    expansion = u_scaled @ (v / np.sqrt(lam))
    return phi @ (v / np.sqrt(lam)), lam, expansion


def _initial_sigma2(source: np.ndarray, target: np.ndarray) -> float:
    """Mean squared distance over all source–target pairs, per dimension (closed form, no M×N matrix)."""
    m, n, d = len(source), len(target), source.shape[1]
    total = m * (target**2).sum() + n * (source**2).sum() - 2 * source.sum(0) @ target.sum(0)
    return float(total / (d * m * n))


def _expectation(
    X: torch.Tensor, TY: torch.Tensor, sigma2, w: float, block_size: int, outlier_volume: float | None = None
):
    """P1 = P·1, Pt1 = Pᵀ·1 and PX = P·X of the posterior P (M × N), one block of targets at a time.

    P's columns are the kernel's columns divided by their sums, so ``P·[X, 1]`` for a block is the kernel times
    ``[x, 1]`` divided row-wise by those sums: one matmul, and the normalised P is never formed. ``sigma2`` is one
    variance (CPD's isotropic Gaussians) or one per dimension (axis-aligned Gaussians). The outlier component has
    weight ``w`` and density ``1/N`` as in CPD, or, with ``outlier_volume``, the density of a uniform distribution
    over that volume (in the units of the points).
    """
    m, d = TY.shape
    n = X.shape[0]
    variances = np.broadcast_to(np.asarray(sigma2, dtype=np.float64), (d,))
    support_volume = n if outlier_volume is None else outlier_volume  # the outliers' density is 1 / this
    c = np.prod(2 * np.pi * variances) ** 0.5 * w / (1 - w) * m / support_volume if w > 0 else 0.0
    if variances.min() == variances.max():
        precision = torch.tensor(1.0 / variances[0], dtype=X.dtype, device=X.device)
    else:
        precision = torch.as_tensor(1.0 / variances, dtype=X.dtype, device=X.device)
    min_exponent = _MIN_EXPONENT[X.dtype]
    # -Σ(x - ty)²/2σ² = [ty, -Σty²/2σ², 1] · [x/σ², 1, -Σx²/2σ²]: one matmul writes the exponents of a block
    source_side = torch.cat([TY, (TY * TY * precision).sum(1, keepdim=True) * -0.5, torch.ones_like(TY[:, :1])], 1)
    accumulated = torch.zeros(m, d + 1, dtype=X.dtype, device=X.device)  # [PX, P1]
    Pt1 = torch.empty(n, dtype=X.dtype, device=X.device)
    for start in range(0, n, block_size):
        x = X[start : start + block_size]
        target_side = torch.cat(
            [x * precision, torch.ones_like(x[:, :1]), (x * x * precision).sum(1, keepdim=True) * -0.5], 1
        )
        # clamped above (cancellation) and below (subnormal results are ~20× slower on x86), see _MIN_EXPONENT
        kernel = torch.mm(source_side, target_side.T).clamp_(min_exponent, 0.0).exp_()
        column = kernel.sum(0)
        denominator = column.clamp(min=_COLUMN_FLOOR) + c
        Pt1[start : start + len(x)] = column / denominator
        weights = torch.cat([x, torch.ones_like(x[:, :1])], dim=1) / denominator[:, None]
        accumulated.addmm_(kernel, weights)
    return accumulated[:, d], Pt1, accumulated[:, :d]


def _displacement_coordinates(Q: torch.Tensor, lam: torch.Tensor, P1: torch.Tensor, F: torch.Tensor, reg: float):
    """The M-step's displacement ``G W = Q z`` in the basis Q (float64).

    CPD solves ``(G + reg·diag(P1)⁻¹) W = diag(P1)⁻¹ F`` (F = PX - diag(P1) Y). With ``G = Q Λ Qᵀ`` the Woodbury
    identity gives ``W = (F - diag(P1) Q z) / reg`` with ``z = (reg Λ⁻¹ + Qᵀ diag(P1) Q)⁻¹ Qᵀ F``, hence
    ``Qᵀ W = Λ⁻¹ z`` and ``G W = Q z``. Using z directly avoids pycpd's ``(F - …) / reg``, a difference of nearly
    equal terms divided by a small number as σ² shrinks.
    """
    Q64 = Q.double()
    inner = torch.diag(reg / lam.double()) + Q64.T @ (P1.double()[:, None] * Q64)
    return torch.linalg.solve(inner, Q64.T @ F.double())


def _variance(X: torch.Tensor, TY: torch.Tensor, P1: torch.Tensor, Pt1: torch.Tensor, PX: torch.Tensor) -> float:
    x_px = (Pt1.double() * (X.double() ** 2).sum(1)).sum()
    y_py = (P1.double() * (TY.double() ** 2).sum(1)).sum()
    trace = (PX.double() * TY.double()).sum()
    n_p = P1.double().sum()
    return float((x_px - 2 * trace + y_py) / (n_p * X.shape[1]))


def rigid_fit(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Least-squares rotation + translation (no scaling, no reflection) mapping ``source`` onto ``target``.

    Kabsch/Umeyama on paired 2-D points. Returns the 3×3 homogeneous matrix ``H`` with ``target ≈ H @ [x, y, 1]``.
    """
    source_mean, target_mean = source.mean(0), target.mean(0)
    covariance = (target - target_mean).T @ (source - source_mean)
    u, _, vt = np.linalg.svd(covariance)
    sign = np.sign(np.linalg.det(u @ vt)) or 1.0  # a reflection would flip the tissue: forbid it
    rotation = u @ np.diag([1.0, sign]) @ vt
    matrix = np.eye(3)
    matrix[:2, :2] = rotation
    matrix[:2, 2] = target_mean - rotation @ source_mean
    return matrix


def apply_affine(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a 3×3 homogeneous 2-D transform to (n, 2) points."""
    return points @ matrix[:2, :2].T + matrix[:2, 2]
