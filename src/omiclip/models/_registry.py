"""Which open_clip architecture each model name stands for."""

from __future__ import annotations

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


def get_spec(name: str) -> ModelSpec:
    """Return the spec of a registered model, with an error listing the known names."""
    try:
        return MODELS[name]
    except KeyError:
        raise ValueError(
            f"Unknown model {name!r}. Known models: {', '.join(MODELS)}; or pass a checkpoint path."
        ) from None


def register_configs() -> None:
    """Make our own architecture configs (``omiclip-tiny``) known to open_clip (idempotent)."""
    import open_clip

    if "omiclip-tiny" not in open_clip.list_models():
        open_clip.add_model_config(_CONFIG_DIR)
