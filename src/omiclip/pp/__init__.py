"""Preprocessing: gene sentences, image tiles and pseudo-spots (imported on first use)."""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submod_attrs={
        "_gene_sentences": ["gene_sentences"],
        "_pseudo_spots": ["pseudo_spots"],
        "_tiles": ["Tiles", "tiles"],
    },
)
