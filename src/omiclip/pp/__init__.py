"""Preprocessing: gene sentences."""

from ._gene_sentences import gene_sentences

__all__ = ["gene_sentences"]
