"""``oc.models.load``: build an OmiCLIP model from a local checkpoint, never from the network."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

import torch

from omiclip import _logging as logg
from omiclip._validate import check_int

from . import _checkpoint
from ._encoder import Encoder, resolve_device
from ._registry import MODELS, ModelSpec, get_spec, register_configs


def load(
    name_or_path: str | os.PathLike = "omiclip",
    *,
    checkpoint: str | os.PathLike | None = None,
    device: str | torch.device | None = None,
    seed: int = 0,
    trust_checkpoint: bool = False,
) -> Encoder:
    """Load an OmiCLIP model.

    Parameters
    ----------
    name_or_path
        A registered name (``"omiclip"``: the official ``coca_ViT-L-14``; ``"omiclip-tiny"``: a small
        CoCa for tests), or the path of a checkpoint written by :func:`omiclip.tl.finetune` or OpenCLIP
        training (the architecture is read from the checkpoint, else ``"omiclip"`` is assumed).
    checkpoint
        Local weights: an OpenCLIP training checkpoint (``{"state_dict": ...}``, with or without
        ``module.`` prefixes) or a bare state dict. For ``"omiclip"`` it defaults to
        ``$OMICLIP_CHECKPOINT``, then ``~/.cache/omiclip/checkpoint.pt``. Loaded strictly, with
        ``torch.load(weights_only=True)``: tensors, containers, numbers, strings and NumPy scalars only, so
        loading runs no code from the file. Weights with NaN or infinite values are an error.
    device
        ``"cpu"``, ``"cuda"``, ``"cuda:1"``…; ``None`` picks CUDA when present.
    seed
        Seed of the random initialisation of models loaded without a checkpoint: two loads with the
        same seed have identical weights.
    trust_checkpoint
        Read a checkpoint that holds other Python objects by full unpickling. Unpickling runs whatever code
        the file names: set this only for files from a source you trust. Without it such a file is refused
        with an error that names it.

    Returns
    -------
    An :class:`~omiclip.models.Encoder`.
    """
    import open_clip

    name = str(name_or_path)
    if name not in MODELS:
        if not Path(name).expanduser().is_file():
            get_spec(name_or_path)  # raises "unknown model", or "no such file" for a path
        if checkpoint is not None:
            raise ValueError("Pass either a checkpoint path as the model or `checkpoint=`, not both.")
        checkpoint, name = Path(name).expanduser(), None
    spec = get_spec(name) if name else None
    check_int("seed", seed, min=0)
    device = resolve_device(device)
    start = logg.info(f"loading model {name or str(checkpoint)!r}")

    state, path = None, None
    if checkpoint is not None or (spec is not None and spec.needs_checkpoint):
        path = _checkpoint.find_checkpoint(checkpoint)
        content = _checkpoint.read_checkpoint(path, trust=trust_checkpoint)
        saved_name = _checkpoint.model_name_in(content)
        if spec is None:
            spec = get_spec(saved_name or "omiclip")
        elif saved_name and saved_name != spec.name:
            raise ValueError(f"Checkpoint {str(path)!r} was saved from model {saved_name!r}, not {spec.name!r}.")
        state = _checkpoint.state_dict_of(content)
        _checkpoint.check_finite(state, path=path)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model, preprocess = build_model(spec)
    if state is not None:
        _checkpoint.load_into(model, state, architecture=spec.architecture)
    encoder = Encoder(
        name=spec.name,
        architecture=spec.architecture,
        model=model,
        tokenizer=open_clip.get_tokenizer(spec.architecture),
        preprocess=preprocess,
        device=device,
        checkpoint=path,
        seed=None if state is not None else seed,
        trust_checkpoint=trust_checkpoint and path is not None,
    )
    logg.finished(start, note=repr(encoder))
    return encoder


def build_model(spec: ModelSpec, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, Callable]:
    """The open_clip model of ``spec`` with random weights on ``device``, and its eval transform."""
    import open_clip

    register_configs()
    # open_clip warns that no pretrained weights were loaded: we load our own right after
    logging.disable(logging.WARNING)
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(spec.architecture, pretrained=None, device=device)
    finally:
        logging.disable(logging.NOTSET)
    decoder_projection = getattr(getattr(model, "text_decoder", None), "text_projection", None)
    if isinstance(decoder_projection, torch.nn.Parameter) and decoder_projection.device.type != "meta":
        # open_clip leaves the caption head's projection as torch.empty (its init is commented out):
        # give it defined values so that equal seeds give equal weights, NaN-free
        with torch.no_grad():
            torch.nn.init.normal_(decoder_projection, std=decoder_projection.shape[0] ** -0.5)
    return model, preprocess
