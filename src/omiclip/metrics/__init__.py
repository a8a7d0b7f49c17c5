"""The paper's evaluation metrics (Methods, equations 17-33), imported on first use."""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submod_attrs={
        "_retrieval": ["recall_at_k"],
        "_scores": [
            "calinski_harabasz",
            "impact_score",
            "js_divergence",
            "kendall_tau",
            "mse",
            "pearson",
            "ssim",
            "weighted_f1",
        ],
    },
)
