"""Which open_clip architecture each model name stands for."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

_CONFIG_DIR = Path(__file__).parent / "configs"


@dataclass(frozen=True)
class ModelSpec:
    """A named OmiCLIP model.

    Attributes
    ----------
    name
        Name accepted by :func:`omiclip.models.load`.
    architecture
        open_clip model config name.
    needs_checkpoint
        Whether weights must come from a local checkpoint (random weights are useless).
    description
        One line for listings.
    """

    name: str
    architecture: str
    needs_checkpoint: bool
    description: str


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            "omiclip",
            "coca_ViT-L-14",
            needs_checkpoint=True,
            description="Official OmiCLIP (Chen et al. 2025): open_clip coca_ViT-L-14, 768-d, weights from checkpoint.pt",
        ),
        ModelSpec(
            "omiclip-tiny",
            "omiclip-tiny",
            needs_checkpoint=False,
            description="Small CoCa of the same family (same tokenizer and preprocessing), 128-d, for tests and demos",
        ),
    )
}


_CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".safetensors")


def get_spec(name: str | os.PathLike) -> ModelSpec:
    """Return the spec of a registered model, with an error listing the known names.

    A ``name`` meant as a file (a path object, a folder in it or a checkpoint suffix) that is not registered
    is reported as a missing checkpoint file rather than an unknown name.
    """
    try:
        return MODELS[str(name)]
    except KeyError:
        known = f"Known models: {', '.join(MODELS)}"
        text = str(name)
        if isinstance(name, os.PathLike) or _looks_like_path(text):
            path = Path(text).expanduser()
            problem = "is not a file" if path.exists() else "does not exist"
            raise FileNotFoundError(
                f"Checkpoint file {str(path)!r} {problem}: pass an existing checkpoint, or a model name ({known})."
            ) from None
        raise ValueError(f"Unknown model {text!r}. {known}; or pass a checkpoint path.") from None


def _looks_like_path(name: str) -> bool:
    return "/" in name or os.sep in name or name.lower().endswith(_CHECKPOINT_SUFFIXES)


def register_configs() -> None:
    """Make our own architecture configs (``omiclip-tiny``) known to open_clip (idempotent)."""
    import open_clip

    if "omiclip-tiny" not in open_clip.list_models():
        open_clip.add_model_config(_CONFIG_DIR)
