"""Data sets: synthetic tissue with ground truth, and readers for real data (imported on first use)."""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__, submod_attrs={"_her2st": ["her2st"], "_public": ["synthetic_reference", "synthetic_tissue"]}
)
