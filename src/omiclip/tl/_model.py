"""The one reading of the ``model=``, ``checkpoint=`` and ``device=`` arguments of the tools."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from omiclip.models import Encoder, load
from omiclip.models._encoder import resolve_device

if TYPE_CHECKING:
    import torch

__all__ = ["check_checkpoint_for", "resolve_device", "resolve_encoder"]


def check_checkpoint_for(model: str | os.PathLike | Encoder, checkpoint: str | os.PathLike | None) -> None:
    """``checkpoint`` gives the weights of a model name; a loaded Encoder already has its own."""
    if isinstance(model, Encoder) and checkpoint is not None:
        raise ValueError("`checkpoint` applies to a model name; this Encoder is already loaded.")


def resolve_encoder(
    model: str | os.PathLike | Encoder,
    *,
    checkpoint: str | os.PathLike | None = None,
    device: str | torch.device | None = None,
    trust_checkpoint: bool = False,
) -> Encoder:
    """An Encoder from ``model``: a loaded one (moved to ``device`` when given), or loaded by name or path.

    ``trust_checkpoint`` is the caller's explicit opt-in to full unpickling (see :func:`omiclip.models.load`).
    """
    check_checkpoint_for(model, checkpoint)
    if isinstance(model, Encoder):
        return model.to(device) if device is not None else model
    return load(model, checkpoint=checkpoint, device=device, trust_checkpoint=trust_checkpoint)
