"""OmiCLIP models: a registry of configs, strict local checkpoint loading and batched encoders."""

from ._checkpoint import save_checkpoint
from ._encoder import Encoder, genes_in_context
from ._load import load
from ._registry import MODELS, ModelSpec

__all__ = ["MODELS", "Encoder", "ModelSpec", "genes_in_context", "load", "save_checkpoint"]
