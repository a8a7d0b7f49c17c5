"""A loaded OmiCLIP model that turns sentences and RGB tiles into unit-norm embeddings."""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from functools import cached_property
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from . import _checkpoint

Precision = Literal["fp32", "bf16", "fp16"]
_AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None``/``"auto"`` picks CUDA when present, else CPU."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device={str(device)!r} was asked for but torch sees no CUDA device. Use device='cpu' or 'auto'."
        )
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(
            f"device={str(device)!r} was asked for but torch sees {torch.cuda.device_count()} CUDA device(s) "
            f"(cuda:0 to cuda:{torch.cuda.device_count() - 1})."
        )
    return device


class Encoder:
    """An OmiCLIP model ready for inference.

    Built by :func:`omiclip.models.load`. Both encoders return ``float32`` arrays of shape
    ``(n, embed_dim)`` with unit L2 norm, so similarities are plain dot products.

    Attributes
    ----------
    name
        Model name (``"omiclip"``, ``"omiclip-tiny"``).
    architecture
        open_clip config name.
    model
        The open_clip ``CoCa`` module.
    tokenizer
        open_clip's tokenizer for the architecture (lower-cases, truncates at ``context_length``).
    preprocess
        The official eval transform (PIL image → normalised tensor).
    device
        Where the model runs.
    checkpoint
        Path of the loaded weights, or ``None`` for random weights.
    seed
        Seed of the random initialisation (``None`` when weights came from a checkpoint or were fine-tuned).
    trust_checkpoint
        Whether ``checkpoint`` was read by full unpickling (``trust_checkpoint=True`` of
        :func:`omiclip.models.load`); Dask workers read it the same way.
    history
        Mean loss per epoch when the model came from :func:`omiclip.tl.finetune`, else empty.
    """

    def __init__(
        self,
        *,
        name: str,
        architecture: str,
        model: torch.nn.Module,
        tokenizer: Callable,
        preprocess: Callable,
        device: torch.device,
        checkpoint: Path | None,
        seed: int | None,
        trust_checkpoint: bool = False,
    ):
        self.name = name
        self.architecture = architecture
        self.model = model.eval().to(device)
        self.tokenizer = tokenizer
        self.preprocess = preprocess
        self.device = device
        self.checkpoint = checkpoint
        self.seed = seed
        self.trust_checkpoint = trust_checkpoint
        self.history: list[float] = []

    def __repr__(self) -> str:
        weights = str(self.checkpoint) if self.checkpoint else f"random weights (seed={self.seed})"
        return f"Encoder({self.name!r}, architecture={self.architecture!r}, device={self.device}, {weights})"

    @property
    def embed_dim(self) -> int:
        """Dimension of the shared embedding space."""
        return int(self.model.text.text_projection.shape[1])

    @property
    def context_length(self) -> int:
        """Number of text tokens the text tower reads, including start and end tokens."""
        return int(self.tokenizer.context_length)

    @property
    def image_size(self) -> int:
        """Side of the square input of the vision tower, in pixels."""
        size = self.model.visual.image_size
        return int(size[0] if isinstance(size, tuple | list) else size)

    @cached_property
    def checkpoint_sha256(self) -> str | None:
        """SHA-256 of the checkpoint file (computed once, on first use)."""
        return _checkpoint.sha256(self.checkpoint) if self.checkpoint else None

    def to(self, device: str | torch.device | None) -> Encoder:
        """Move the model to ``device`` (in place) and return self."""
        self.device = resolve_device(device)
        self.model.to(self.device)
        return self

    def genes_in_context(self, sentences: Iterable[str]) -> np.ndarray:
        """Number of whole genes of each sentence that fit in the tokenizer's context."""
        return genes_in_context(sentences, tokenizer=self.tokenizer)

    def encode_text(
        self,
        sentences: Sequence[str],
        *,
        batch_size: int = 64,
        precision: Precision = "fp32",
        progress: bool = False,
    ) -> np.ndarray:
        """Embed gene sentences (or any text).

        Parameters
        ----------
        sentences
            Space-separated gene symbols, one string per observation.
        batch_size
            Sentences per forward pass.
        precision
            ``"fp32"`` (default), or ``"bf16"``/``"fp16"`` autocast on CUDA.
        progress
            Show a progress bar.

        Returns
        -------
        ``float32`` array ``(len(sentences), embed_dim)`` with unit rows.
        """
        sentences = list(sentences)
        if batch_size < 1:
            raise ValueError(f"`batch_size` must be positive, got {batch_size}.")
        if not all(isinstance(s, str) for s in sentences):
            raise TypeError("`sentences` must be strings.")
        batches = (
            (np.arange(i, min(i + batch_size, len(sentences))), self.tokenizer(sentences[i : i + batch_size]))
            for i in range(0, len(sentences), batch_size)
        )
        return self._encode(batches, len(sentences), self.model.encode_text, precision, progress, "text")

    def encode_images(
        self,
        images: np.ndarray | Sequence[np.ndarray],
        *,
        batch_size: int = 32,
        precision: Precision = "fp32",
        progress: bool = False,
    ) -> np.ndarray:
        """Embed RGB tiles with the official preprocessing (bicubic resize, centre crop, OpenAI mean/std).

        Parameters
        ----------
        images
            ``uint8`` array ``(n, height, width, 3)`` or a sequence of ``(height, width, 3)`` arrays of any size.
        batch_size
            Tiles per forward pass.
        precision
            ``"fp32"`` (default), or ``"bf16"``/``"fp16"`` autocast on CUDA.
        progress
            Show a progress bar.

        Returns
        -------
        ``float32`` array ``(len(images), embed_dim)`` with unit rows.
        """
        batches = (
            (np.arange(i, min(i + batch_size, len(images))), images[i : i + batch_size])
            for i in range(0, len(images), batch_size)
        )
        return self.encode_image_batches(batches, len(images), precision=precision, progress=progress)

    def encode_image_batches(
        self,
        batches: Iterable[tuple[np.ndarray, np.ndarray]],
        n_items: int,
        *,
        precision: Precision = "fp32",
        progress: bool = False,
    ) -> np.ndarray:
        """Embed ``(indices, uint8 tiles)`` batches, in any order, into an ``(n_items, embed_dim)`` array.

        Tiles are read and preprocessed in a background thread while the model runs on the previous batch.
        """
        prepared = ((indices, self.preprocess_tiles(tiles)) for indices, tiles in batches)
        return self._encode(prefetch(prepared), n_items, self.model.encode_image, precision, progress, "image")

    def preprocess_tiles(self, tiles: np.ndarray | Sequence[np.ndarray]) -> torch.Tensor:
        """Apply the model's eval transform to RGB ``uint8`` tiles; returns ``(n, 3, size, size)``."""
        from PIL import Image

        tensors = []
        for tile in tiles:
            tile = np.asarray(tile)
            if tile.ndim != 3 or tile.shape[-1] != 3:
                raise ValueError(f"Images must be RGB arrays of shape (height, width, 3), got shape {tile.shape}.")
            if tile.dtype != np.uint8:
                raise ValueError(f"Images must be uint8 (0-255), got {tile.dtype}.")
            tensors.append(self.preprocess(Image.fromarray(tile)))
        return torch.stack(tensors)

    def _encode(self, batches, n_items, forward, precision, progress, what) -> np.ndarray:
        autocast = self._autocast(precision)
        out = np.empty((n_items, self.embed_dim), dtype=np.float32)
        filled = np.zeros(n_items, dtype=bool)
        with (
            contextlib.closing(batches),  # stops a prefetch thread if the model fails part-way
            torch.inference_mode(),
            tqdm(total=n_items, desc=f"{self.name} {what}", disable=not progress) as bar,
        ):
            for indices, batch in batches:
                with autocast:
                    features = forward(batch.to(self.device, non_blocking=True), normalize=False)
                # normalise in fp32: half-precision norms are not unit to float32 tolerance
                out[indices] = F.normalize(features.float(), dim=-1).cpu().numpy()
                filled[indices] = True
                bar.update(len(indices))
        if not filled.all():
            raise ValueError(f"{int((~filled).sum())} of {n_items} items were never produced by the batches.")
        return out

    def _autocast(self, precision: Precision):
        check_precision(precision, self.device)
        if precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast("cuda", dtype=_AUTOCAST_DTYPES[precision])


def check_precision(precision: str, device: torch.device | None = None) -> None:
    """Refuse an unknown ``precision``, and half precision on a ``device`` other than CUDA (when known)."""
    if precision != "fp32" and precision not in _AUTOCAST_DTYPES:
        raise ValueError(f"precision must be 'fp32', 'bf16' or 'fp16', got {precision!r}.")
    if precision != "fp32" and device is not None and device.type != "cuda":
        raise ValueError(f"precision={precision!r} is autocast for CUDA; on {device.type} use 'fp32'.")


def prefetch(iterable: Iterable, depth: int = 2) -> Iterator:
    """Run ``iterable`` in a background thread, ``depth`` items ahead of the consumer."""
    items: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def produce():
        try:
            for item in iterable:
                if stop.is_set():
                    return
                items.put(item)
        except BaseException as err:  # noqa: BLE001 - handed to the consumer, raised there
            items.put(err)
        items.put(done)

    worker = threading.Thread(target=produce, daemon=True)
    worker.start()
    try:
        while (item := items.get()) is not done:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while worker.is_alive():  # unblock a producer waiting on a full queue
            with contextlib.suppress(queue.Empty):
                items.get_nowait()
            worker.join(timeout=0.01)


def genes_in_context(sentences: Iterable[str], *, tokenizer: Callable | None = None) -> np.ndarray:
    """Count the whole genes of each sentence that survive the tokenizer's truncation.

    open_clip's tokenizer keeps ``context_length - 2`` content tokens (start and end tokens take the rest)
    and cuts the rest; a 50-gene sentence is ~155 CLIP-BPE tokens, so the official model reads ~22 genes.
    Word boundaries are token boundaries, so a sentence's token count is the sum of its genes' counts; they are
    counted with open_clip's CLIP-BPE vocabulary, each distinct gene once per process.

    Parameters
    ----------
    sentences
        Gene sentences (space-separated symbols).
    tokenizer
        The open_clip tokenizer whose context length applies; default 76 tokens, that of every OmiCLIP model.

    Returns
    -------
    ``(n_sentences,)`` int32: how many leading genes of each sentence the text encoder reads.
    """
    from omiclip._core import tokens

    budget = tokens.CONTENT_TOKENS if tokenizer is None else content_tokens(tokenizer)
    return tokens.genes_in_context(sentences, budget)


def content_tokens(tokenizer: Callable) -> int:
    """Tokens left for text once the start and end tokens are placed."""
    return int(tokenizer.context_length) - 2
