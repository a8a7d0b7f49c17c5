"""The paper's evaluation metrics (Methods, equations 17-33), vectorised."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
from scipy import stats

from omiclip._validate import check_number


def calinski_harabasz(embedding: np.ndarray, labels: Sequence) -> float:
    """Calinski–Harabasz score (eq. 17–19): between- over within-cluster dispersion, scaled by degrees of freedom.

    Parameters
    ----------
    embedding
        ``(n_obs, n_dims)`` embedding, e.g. ``adata.obsm["X_omiclip_image"]``.
    labels
        ``n_obs`` cluster or class labels; at least two distinct ones.

    Returns
    -------
    The score; higher means tighter, better separated clusters.
    """
    from sklearn.metrics import calinski_harabasz_score

    embedding, labels = np.asarray(embedding), np.asarray(labels)
    if embedding.ndim != 2 or len(labels) != len(embedding):
        raise ValueError(f"Need one of the `labels` per row of `embedding`, got {len(labels)} for {embedding.shape}.")
    if not 2 <= len(np.unique(labels)) < len(labels):
        raise ValueError(f"`labels` must hold 2 to n_obs - 1 distinct values, got {len(np.unique(labels))}.")
    return float(calinski_harabasz_score(embedding, labels))


def _columnwise(x: np.ndarray, y: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"Shapes differ: {x.shape} vs {y.shape}.")
    if x.ndim == 1:
        return x[:, None], y[:, None]
    return (x, y) if axis == 0 else (x.T, y.T)


def pearson(x: np.ndarray, y: np.ndarray, *, axis: int = 0) -> np.ndarray | float:
    """Pearson correlation (eq. 20) along ``axis`` (0: per column, e.g. per gene across spots; 1: per row).

    Parameters
    ----------
    x, y
        Arrays of one shape, 1-D or 2-D (e.g. predicted and measured expression, spots × genes).
    axis
        0 correlates columns (across rows), 1 correlates rows (across columns).

    Returns
    -------
    One r per column (or row); a float for 1-D inputs. Zero-variance columns give NaN.
    """
    a, b = _columnwise(x, y, axis)
    a = a - a.mean(axis=0)
    b = b - b.mean(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (a * b).sum(axis=0) / np.sqrt((a**2).sum(axis=0) * (b**2).sum(axis=0))
    return float(r[0]) if np.ndim(x) == 1 else r


def kendall_tau(x: np.ndarray, y: np.ndarray, *, axis: int = 0) -> np.ndarray | float:
    """Kendall's tau-b (eq. 21, ties in either variable accounted for) along ``axis``.

    Parameters
    ----------
    x, y
        Arrays of one shape, 1-D or 2-D.
    axis
        0 compares columns (across rows), 1 compares rows.

    Returns
    -------
    One τ per column (or row); a float for 1-D inputs.
    """
    a, b = _columnwise(x, y, axis)
    taus = np.array([stats.kendalltau(a[:, j], b[:, j]).statistic for j in range(a.shape[1])])
    return float(taus[0]) if np.ndim(x) == 1 else taus


def mse(x: np.ndarray, y: np.ndarray, *, axis: int | None = None) -> np.ndarray | float:
    """Mean squared error, over everything (``axis=None``) or along an axis.

    Parameters
    ----------
    x, y
        Arrays of one shape.
    axis
        ``None`` averages over all entries; an integer averages along that axis.

    Returns
    -------
    A float (``axis=None``) or an array with ``axis`` removed.
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"Shapes differ: {x.shape} vs {y.shape}.")
    result = ((x - y) ** 2).mean(axis=axis)
    return float(result) if axis is None else result


def js_divergence(p: np.ndarray, q: np.ndarray, *, axis: int = 0, base: float = 2) -> np.ndarray | float:
    """Jensen–Shannon divergence (eq. 22–24) between distributions along ``axis`` (normalised to sum to 1).

    In the paper it compares each cell type's spatial distribution: ``p``, ``q`` are spots × cell types and
    ``axis=0``.

    Parameters
    ----------
    p, q
        Non-negative arrays of one shape; each slice along ``axis`` is normalised to sum to 1.
    axis
        Axis along which the values form one distribution.
    base
        Base of the logarithm; with 2 (default) the divergence lies in [0, 1].

    Returns
    -------
    One divergence per distribution (a float for 1-D inputs); an all-zero distribution gives NaN.
    """
    if check_number("base", base, min=0, min_inclusive=False) == 1:
        raise ValueError("`base` of the logarithm must not be 1.")
    p, q = np.asarray(p, dtype=np.float64), np.asarray(q, dtype=np.float64)
    if p.shape != q.shape:
        raise ValueError(f"Shapes differ: {p.shape} vs {q.shape}.")
    if (p < 0).any() or (q < 0).any():
        raise ValueError("Distributions must be non-negative.")
    with np.errstate(invalid="ignore", divide="ignore"):
        p = p / p.sum(axis=axis, keepdims=True)
        q = q / q.sum(axis=axis, keepdims=True)
        m = (p + q) / 2

        def kl(a, b):
            return np.where(a > 0, a * np.log(a / np.where(b > 0, b, 1)), 0.0).sum(axis=axis)

        result = (kl(p, m) + kl(q, m)) / 2 / np.log(base)
    return float(result) if np.ndim(result) == 0 else result


def ssim(
    x: np.ndarray, y: np.ndarray, *, method: Literal["global", "windowed"] = "global", data_range: float | None = None
) -> float:
    """Structural similarity (eq. 25) of two spatial maps, e.g. a cell type's true and predicted proportions.

    ``method="global"`` (default) is eq. 25 as written, with one mean, variance and covariance over the whole
    maps (population statistics) and the usual constants ``C1 = (0.01 L)²``, ``C2 = (0.03 L)²``; this is the
    SSIM of the deconvolution benchmark the paper follows (Li et al., *Nat. Methods* 2022), which also divides each
    map by its own maximum first, so that ``L = 1``. ``method="windowed"`` is scikit-image's image SSIM: the same
    formula in a sliding 7×7 window, averaged over the map (a local measure; it scores the same maps much lower).

    Parameters
    ----------
    x, y
        Two maps of one shape. ``"global"`` takes any shape (e.g. spot vectors); ``"windowed"`` needs 2-D grids.
    method
        ``"global"`` (eq. 25) or ``"windowed"``.
    data_range
        Range ``L`` of the values, used as given. By default each map is divided by its own maximum (``"global"``,
        as the benchmark) or both by their joint maximum (``"windowed"``), and ``L = 1``.

    Returns
    -------
    SSIM in [-1, 1]; 1 for identical maps.
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.size == 0:
        raise ValueError(f"SSIM needs two non-empty maps of one shape, got {x.shape} and {y.shape}.")
    if method not in ("global", "windowed"):
        raise ValueError(f"`method` must be 'global' or 'windowed', got {method!r}.")
    if method == "windowed" and x.ndim != 2:
        raise ValueError(f"The windowed SSIM needs 2-D maps, got {x.ndim}-D; use method='global' for spot vectors.")
    if data_range is None:
        data_range = 1.0
        if method == "global":
            x, y = _scaled_by_max(x), _scaled_by_max(y)
        else:
            top = max(x.max(), y.max())
            x, y = (x / top, y / top) if top > 0 else (x, y)
    if method == "windowed":
        from skimage.metrics import structural_similarity

        window = min(7, *(s if s % 2 else s - 1 for s in x.shape))
        return float(structural_similarity(x, y, data_range=data_range, win_size=max(window, 3)))
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_x, mu_y = x.mean(), y.mean()
    covariance = ((x - mu_x) * (y - mu_y)).mean()
    return float((2 * mu_x * mu_y + c1) * (2 * covariance + c2) / ((mu_x**2 + mu_y**2 + c1) * (x.var() + y.var() + c2)))


def _scaled_by_max(values: np.ndarray) -> np.ndarray:
    top = values.max()
    return values / top if top > 0 else values


def impact_score(js: Sequence[float], ssim_scores: Sequence[float]) -> np.ndarray:
    """Impact score of each method (eq. 26–30): mean of its SSIM z-score and its inverted JS z-score.

    Parameters
    ----------
    js
        Each method's mean JS divergence over cell types.
    ssim_scores
        Each method's mean SSIM over cell types, in the same order; at least two methods.

    Returns
    -------
    One score per method; higher is better. z-scores use the standard deviation across methods (``ddof=0``), so
    scores only compare the methods given together.
    """
    js, ssim_scores = np.asarray(js, dtype=np.float64), np.asarray(ssim_scores, dtype=np.float64)
    if js.shape != ssim_scores.shape or js.ndim != 1 or len(js) < 2:
        raise ValueError("Give one JS and one SSIM value per method, for at least two methods.")
    return (-stats.zscore(js) + stats.zscore(ssim_scores)) / 2


def weighted_f1(true_labels: Sequence, predicted_labels: Sequence) -> float:
    """F1 per class (eq. 31), averaged with weights proportional to each class's frequency.

    Parameters
    ----------
    true_labels
        Known label of each observation.
    predicted_labels
        Predicted label of each observation, same length.

    Returns
    -------
    Weighted F1 in [0, 1]; a class that is never predicted contributes 0.
    """
    from sklearn.metrics import f1_score

    return float(f1_score(np.asarray(true_labels), np.asarray(predicted_labels), average="weighted", zero_division=0))
