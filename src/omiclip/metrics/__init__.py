"""Metrics of the paper (Methods, evaluation metrics)."""

from ._retrieval import recall_at_k

__all__ = ["recall_at_k"]
