"""Plotting."""

from ._embedding import embedding_rgb, pcs_as_rgb

__all__ = ["embedding_rgb", "pcs_as_rgb"]
