"""Plotting: every result one call away from a picture of the tissue."""

from ._align import alignment, alignment_stack
from ._embedding import embedding, embedding_rgb, pcs_as_rgb
from ._retrieval import retrieval
from ._spatial import annotation, predex, proportions

__all__ = [
    "alignment",
    "alignment_stack",
    "annotation",
    "embedding",
    "embedding_rgb",
    "pcs_as_rgb",
    "predex",
    "proportions",
    "retrieval",
]
