"""The paper's evaluation metrics (Methods, equations 17-33)."""

from ._retrieval import recall_at_k
from ._scores import calinski_harabasz, impact_score, js_divergence, kendall_tau, mse, pearson, ssim, weighted_f1

__all__ = [
    "calinski_harabasz",
    "impact_score",
    "js_divergence",
    "kendall_tau",
    "mse",
    "pearson",
    "recall_at_k",
    "ssim",
    "weighted_f1",
]
