"""Plotting: every result one call away from a picture of the tissue (imported on first use)."""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submod_attrs={
        "_align": ["alignment", "alignment_stack"],
        "_embedding": ["embedding", "embedding_rgb", "pcs_as_rgb"],
        "_retrieval": ["retrieval"],
        "_spatial": ["annotation", "predex", "proportions"],
    },
)
