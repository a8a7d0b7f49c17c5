"""OmiCLIP models: a registry of configs, strict local checkpoint loading and batched encoders.

Imported on first use: the registry (``MODELS``) is read without importing torch.
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submod_attrs={
        "_checkpoint": ["save_checkpoint"],
        "_encoder": ["Encoder", "genes_in_context"],
        "_load": ["load"],
        "_registry": ["MODELS", "ModelSpec"],
    },
)
