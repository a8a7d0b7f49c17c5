"""Contrastive fine-tuning of a CLIP-style model on (tile, sentence) pairs: the loss of OmiCLIP's eq. 1.

The caption decoder of CoCa is never run (the official fine-tunes set its loss weight to 0): the loss is
the symmetric InfoNCE of open_clip's ``ClipLoss`` on the two towers' normalised features with the
learnable temperature, optimised with AdamW and open_clip's cosine schedule with warm-up. As OpenCLIP's
loader, an epoch drops its last partial batch by default; mixed precision is autocast (fp16 with gradient
scaling, as OpenCLIP's ``--precision amp`` on CUDA, or bf16) over fp32 weights and optimizer state.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

MAX_LOGIT_SCALE = math.log(100)  # open_clip clamps the learnable temperature here


@dataclass
class TrainingState:
    """Where a fine-tune stands: enough to resume it exactly."""

    epoch: int = 0
    step: int = 0
    optimizer: dict | None = None
    history: list[float] = field(default_factory=list)
    scaler: dict | None = None


def trainable_parameters(model: torch.nn.Module, freeze: str | None) -> list[tuple[str, torch.nn.Parameter]]:
    """Parameters to train: both towers and the temperature, minus a frozen tower; never the decoder."""
    frozen_prefixes = ("text_decoder.",) + {"image": ("visual.",), "text": ("text.",), None: ()}[freeze]
    named = []
    for name, parameter in model.named_parameters():
        train = not name.startswith(frozen_prefixes)
        parameter.requires_grad_(train)
        if train:
            named.append((name, parameter))
    return named


def make_optimizer(named, *, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW as open_clip trains: no weight decay on gains, biases, norms and the temperature."""

    def exempt(name, parameter):
        return parameter.ndim < 2 or "bn" in name or "ln" in name or "bias" in name or "logit_scale" in name

    decayed = [p for n, p in named if not exempt(n, p)]
    others = [p for n, p in named if exempt(n, p)]
    groups = [{"params": others, "weight_decay": 0.0}, {"params": decayed, "weight_decay": weight_decay}]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.98), eps=1e-6)


def train_contrastive(
    model: torch.nn.Module,
    tiles: Sequence[np.ndarray],
    sentences: Sequence[str],
    *,
    tokenizer: Callable,
    transform: Callable,
    epochs: int,
    batch_size: int,
    lr: float,
    weight_decay: float,
    warmup: int,
    freeze: str | None,
    seed: int,
    device: torch.device,
    autocast_dtype: torch.dtype | None = None,
    drop_last: bool = True,
    state: TrainingState | None = None,
    on_epoch_end: Callable[[TrainingState], None] | None = None,
    progress: bool = True,
) -> TrainingState:
    """Train ``model`` in place for the epochs ``state.epoch .. epochs - 1``; returns the new state.

    Every epoch is seeded by ``(seed, epoch)`` (order and augmentations), so a resumed run repeats the
    uninterrupted one. ``autocast_dtype`` runs the forward pass under autocast on ``device`` (weights and
    optimizer stay fp32); float16 also scales the loss against gradient underflow, as OpenCLIP's AMP does.
    ``drop_last`` skips each epoch's last partial batch, as OpenCLIP's loader; otherwise it is trained when
    it has at least 2 pairs.
    """
    from open_clip import ClipLoss
    from open_clip_train.scheduler import cosine_lr
    from PIL import Image

    state = state or TrainingState()
    model.to(device).train()  # before the optimizer: its loaded state follows the parameters' device
    named = trainable_parameters(model, freeze)
    optimizer = make_optimizer(named, lr=lr, weight_decay=weight_decay)
    if state.optimizer is not None:
        optimizer.load_state_dict(state.optimizer)
    steps_per_epoch = len(tiles) // batch_size if drop_last else math.ceil(len(tiles) / batch_size)
    batch_starts = range(0, steps_per_epoch * batch_size, batch_size)
    schedule = cosine_lr(optimizer, lr, warmup, steps_per_epoch * epochs)
    autocast = torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None)
    scaler = torch.amp.GradScaler(device.type, enabled=autocast_dtype == torch.float16)
    if state.scaler is not None:
        scaler.load_state_dict(state.scaler)
    loss_fn = ClipLoss()
    images = [Image.fromarray(np.ascontiguousarray(t)) for t in tiles]

    with (
        _private_rngs(device),
        tqdm(total=(epochs - state.epoch) * steps_per_epoch, desc="fine-tuning", disable=not progress) as bar,
    ):
        for epoch in range(state.epoch, epochs):
            rng = np.random.default_rng([seed, epoch])
            torch.manual_seed(int(rng.integers(2**31)))  # torchvision's crops draw from torch
            random.seed(int(rng.integers(2**31)))  # open_clip's colour jitter draws from `random`
            order = rng.permutation(len(tiles))
            losses = []
            for start in batch_starts:
                batch = order[start : start + batch_size]
                if len(batch) < 2:  # a contrastive batch needs negatives
                    continue
                schedule(state.step)
                pixels = torch.stack([transform(images[i]) for i in batch]).to(device)
                tokens = tokenizer([sentences[i] for i in batch]).to(device)
                with autocast:
                    image_features = model.encode_image(pixels, normalize=True)
                    text_features = model.encode_text(tokens, normalize=True)
                    loss = loss_fn(image_features, text_features, model.logit_scale.exp())
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                with torch.no_grad():
                    model.logit_scale.clamp_(0, MAX_LOGIT_SCALE)
                losses.append(loss.item())
                state.step += 1
                bar.update(1)
                bar.set_postfix(epoch=epoch + 1, loss=f"{losses[-1]:.3f}")
            state.epoch = epoch + 1
            state.history.append(float(np.mean(losses)) if losses else float("nan"))
            state.optimizer = optimizer.state_dict()
            state.scaler = scaler.state_dict() if scaler.is_enabled() else None
            if on_epoch_end is not None:
                on_epoch_end(state)
    model.eval()
    return state


@contextmanager
def _private_rngs(device: torch.device):
    """Seed torch's and Python's global generators for training, and give the caller's states back."""
    python_state = random.getstate()
    devices = [device] if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices):
            yield
    finally:
        random.setstate(python_state)
