"""Preprocessing: gene sentences, image tiles and pseudo-spots."""

from ._gene_sentences import gene_sentences
from ._pseudo_spots import pseudo_spots
from ._tiles import Tiles, tiles

__all__ = ["Tiles", "gene_sentences", "pseudo_spots", "tiles"]
