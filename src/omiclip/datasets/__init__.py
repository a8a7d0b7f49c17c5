"""Data sets: synthetic tissue with ground truth, and readers for real data."""

from ._her2st import her2st
from ._public import synthetic_reference, synthetic_tissue

__all__ = ["her2st", "synthetic_reference", "synthetic_tissue"]
