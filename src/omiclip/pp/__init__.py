"""Preprocessing: gene sentences and image tiles."""

from ._gene_sentences import gene_sentences
from ._tiles import Tiles, tiles

__all__ = ["Tiles", "gene_sentences", "tiles"]
