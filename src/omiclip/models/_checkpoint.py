"""Reading and writing OpenCLIP-format checkpoints, strictly and without downloads."""

from __future__ import annotations

import hashlib
import os
import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

CHECKPOINT_ENV = "OMICLIP_CHECKPOINT"
DEFAULT_CHECKPOINT = Path.home() / ".cache" / "omiclip" / "checkpoint.pt"
_N_KEYS_SHOWN = 5


def find_checkpoint(checkpoint: str | os.PathLike | None) -> Path:
    """Resolve the official checkpoint: the argument, then ``$OMICLIP_CHECKPOINT``, then the default place."""
    if checkpoint is not None:
        path = Path(checkpoint).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"Checkpoint {str(path)!r} does not exist or is not a file.")
        return path
    if os.environ.get(CHECKPOINT_ENV):
        path = Path(os.environ[CHECKPOINT_ENV]).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"${CHECKPOINT_ENV} points to {str(path)!r}, which does not exist.")
        return path
    if DEFAULT_CHECKPOINT.is_file():
        return DEFAULT_CHECKPOINT
    raise FileNotFoundError(
        "No OmiCLIP checkpoint found. omiclip never downloads weights: request access to `checkpoint.pt` on "
        "Hugging Face (WangGuangyuLab/Loki, gated), then either put it at "
        f"{DEFAULT_CHECKPOINT}, set ${CHECKPOINT_ENV}=/path/to/checkpoint.pt, or pass `checkpoint=`. "
        "For tests and demos use the random-weight model `omiclip-tiny`."
    )


def read_checkpoint(path: str | os.PathLike, *, trust: bool = False) -> dict[str, Any]:
    """Load a checkpoint file into a dict, memory-mapped where possible, without running code from it.

    OpenCLIP training checkpoints hold tensors, dicts, lists, numbers, strings and NumPy scalars (its cosine
    schedule writes the learning rate as ``numpy.float64`` into the optimizer state): all of these load with
    ``weights_only=True``. A file that names anything else needs full unpickling, which runs whatever code
    the file names: it is refused unless ``trust`` is set. Memory-mapping keeps the optimizer state (about
    3x the weights) on disk.
    """
    try:
        with torch.serialization.safe_globals(_numpy_scalar_types()):
            obj = _torch_load(path, weights_only=not trust)
    except pickle.UnpicklingError as err:
        # torch names the first object it refused as "GLOBAL module.name"; other errors are damaged files
        refused = None if trust else re.search(r"GLOBAL ([\w.]+)", str(err))
        if refused is None:
            raise ValueError(f"Could not read checkpoint {str(path)!r} (UnpicklingError: {err}).") from err
        raise UntrustedCheckpointError(
            f"Checkpoint {str(path)!r} is not plain weights: it names Python objects (first: {refused[1]}) that "
            "only full unpickling can rebuild, and full unpickling runs whatever code the file names. omiclip "
            "loads weights only. If you trust where the file comes from, opt in with "
            "`oc.models.load(path, trust_checkpoint=True)` (`oc.tl.finetune(..., trust_checkpoint=True)` for "
            "`resume=`; command line: `--trust-checkpoint`)."
        ) from None
    except Exception as err:
        raise ValueError(f"Could not read checkpoint {str(path)!r} ({type(err).__name__}: {err}).") from err
    if not isinstance(obj, Mapping):
        raise ValueError(f"Checkpoint {str(path)!r} holds a {type(obj).__name__}, not a state dict.")
    return dict(obj)


class UntrustedCheckpointError(ValueError):
    """A checkpoint that only full unpickling (which can run code) could read, without the opt-in."""


def _torch_load(path, *, weights_only: bool):
    try:
        return torch.load(path, map_location="cpu", weights_only=weights_only, mmap=True)
    except RuntimeError as err:  # legacy (non-zip) serialisation cannot be memory-mapped
        if "mmap" not in str(err):
            raise
        return torch.load(path, map_location="cpu", weights_only=weights_only)


def _numpy_scalar_types() -> list:
    """What a pickled NumPy bool/int/float scalar names: the scalar constructor and its dtype classes."""
    core = getattr(np, "_core", None) or np.core  # numpy 2 renamed numpy.core
    dtype_classes = [type(np.dtype(code)) for code in "?bhilqBHILQefdg"]  # bool, (unsigned) ints, floats
    return [core.multiarray.scalar, np.dtype, *dtype_classes]


def check_finite(state: Mapping[str, torch.Tensor], *, path: str | os.PathLike) -> None:
    """Refuse weights with NaN or infinite values (they would give NaN embeddings, found only steps later)."""
    for key, tensor in state.items():
        if isinstance(tensor, torch.Tensor) and tensor.is_floating_point() and not torch.isfinite(tensor).all():
            n_bad = int((~torch.isfinite(tensor)).sum())
            raise ValueError(
                f"Checkpoint {str(path)!r} has non-finite weights: tensor {key!r} holds {n_bad} NaN/inf values "
                f"of {tensor.numel()} (the first bad tensor in file order). The file is corrupt or comes from a "
                "diverged training run: use another checkpoint (e.g. an earlier epoch)."
            )


def state_dict_of(checkpoint: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The model weights of an OpenCLIP training checkpoint or of a bare state dict, without ``module.``."""
    state = checkpoint.get("state_dict", checkpoint)
    if not isinstance(state, Mapping) or not state:
        raise ValueError("Checkpoint has an empty or malformed `state_dict`.")
    return {key.removeprefix("module."): value for key, value in state.items()}


def load_into(model: torch.nn.Module, state: Mapping[str, torch.Tensor], *, architecture: str) -> None:
    """Load ``state`` into ``model`` strictly, explaining any mismatch."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    if "logit_scale" in mismatched and state["logit_scale"].numel() == 1:  # scalar vs 1-d, as open_clip allows
        mismatched.remove("logit_scale")
        state = {**state, "logit_scale": state["logit_scale"].reshape(expected["logit_scale"].shape)}
    if missing or unexpected or mismatched:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", mismatched)):
            if keys:
                parts.append(f"{len(keys)} {label} (e.g. {', '.join(keys[:_N_KEYS_SHOWN])})")
        raise ValueError(
            f"Checkpoint does not fit architecture {architecture!r}: {'; '.join(parts)}. "
            "Is it a checkpoint of a different model?"
        )
    model.load_state_dict(state, strict=True)


def save_checkpoint(path: str | os.PathLike, model: torch.nn.Module, *, model_name: str, **extra: Any) -> Path:
    """Write ``model`` in OpenCLIP's training-checkpoint format, tagged with our model name.

    Parameters
    ----------
    path
        File to write; parent folders are created.
    model
        The OpenCLIP model, e.g. ``encoder.model`` of an :class:`~omiclip.models.Encoder`.
    model_name
        Registry name of its architecture (e.g. ``"omiclip-tiny"``), so :func:`omiclip.models.load` can rebuild it
        from the file alone.
    **extra
        More metadata stored next to the name (e.g. ``epoch``, ``history``).

    Returns
    -------
    ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": model.state_dict(), "omiclip": {"model": model_name, **extra}}, path)
    return path


def model_name_in(checkpoint: Mapping[str, Any]) -> str | None:
    """The model name that :func:`save_checkpoint` recorded, if any."""
    meta = checkpoint.get("omiclip")
    return meta.get("model") if isinstance(meta, Mapping) else None


def sha256(path: str | os.PathLike, *, chunk_bytes: int = 1 << 24) -> str:
    """SHA-256 of a file, streamed."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk_bytes):
            digest.update(block)
    return digest.hexdigest()
