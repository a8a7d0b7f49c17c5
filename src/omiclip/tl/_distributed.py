"""Image embedding on the workers of a Dask cluster (``dask.distributed``).

Nothing large travels: a task carries a chunk of window coordinates, a handle on the zarr array of the
pyramid level (it pickles as the store location, never the pixels) and a small model spec. The worker
reads its own windows block by block with the same reader as in-process embedding, encodes them with a
model it loaded once and keeps, and returns the embeddings; the caller writes them into place. Memory
per worker is one task's tiles and embeddings, whatever the size of the slide.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm.auto import tqdm

from omiclip._core.tiling import TileWindows, iter_tiles, to_rgb8

if TYPE_CHECKING:
    from distributed import Client

    from omiclip.models import Encoder

# big enough that per-task costs (scheduling, the first read before the prefetch pipeline fills) vanish,
# small enough that a lost worker loses little and a task's embeddings stay small (4096 x 768 float32: 12 MB)
MAX_TILES_PER_TASK = 4096
# small jobs are still cut into a few tasks per worker thread, so every worker gets some
TASKS_PER_THREAD = 4
# glibc allocations above this size are mmapped (see _restore_mmap_threshold)
MMAP_THRESHOLD_BYTES = 64 * 2**20


@dataclass(frozen=True)
class WorkerModel:
    """What a worker needs to load a model itself: a name and/or a checkpoint path, a seed, a device.

    Attributes
    ----------
    name
        Registered model name, or ``None`` when ``checkpoint`` alone says which model it is.
    checkpoint
        Absolute path of the weights, as the workers see the file system.
    seed
        Seed of the random initialisation of models without a checkpoint.
    device
        Device on the worker; ``None`` picks CUDA when the worker has one.
    trust_checkpoint
        Read the checkpoint by full unpickling (the caller opted in with ``trust_checkpoint=True``).
    """

    name: str | None
    checkpoint: str | None
    seed: int
    device: str | None
    trust_checkpoint: bool = False

    def load(self) -> Encoder:
        """Load the model (in the calling process)."""
        from omiclip.models import load

        options = {"device": self.device, "seed": self.seed, "trust_checkpoint": self.trust_checkpoint}
        if self.name is None:
            return load(self.checkpoint, **options)
        return load(self.name, checkpoint=self.checkpoint, **options)


def worker_model(model, *, checkpoint, device) -> WorkerModel:
    """The :class:`WorkerModel` of ``oc.tl.embed``'s ``model``, ``checkpoint`` and ``device`` arguments.

    Checkpoint paths are made absolute and the official model's default checkpoint is found here, in the
    caller's environment: workers may run elsewhere, with another working directory and environment.
    """
    from omiclip.models import MODELS, Encoder
    from omiclip.models._checkpoint import find_checkpoint
    from omiclip.models._registry import get_spec
    from omiclip.tl._model import check_checkpoint_for

    device = None if device is None else str(device)
    check_checkpoint_for(model, checkpoint)
    if isinstance(model, Encoder):
        if model.checkpoint is None and model.seed is None:
            raise ValueError(
                "This Encoder was fine-tuned in memory: its weights exist only in this process, and workers load "
                "models from files. Fine-tune with `save=path` (or write it with `oc.models.save_checkpoint(path, "
                "model.model, model_name=model.name)`), then pass `model=path`."
            )
        path = _absolute(model.checkpoint)
        return WorkerModel(model.name, path, 0 if model.seed is None else model.seed, device, model.trust_checkpoint)
    name = str(model)
    if name not in MODELS:  # a checkpoint path
        if not Path(name).expanduser().is_file():
            get_spec(model)  # raises "unknown model", or "no such file" for a path
        if checkpoint is not None:
            raise ValueError("Pass either a checkpoint path as the model or `checkpoint=`, not both.")
        return WorkerModel(None, _absolute(name), 0, device)
    if checkpoint is None and MODELS[name].needs_checkpoint:
        checkpoint = find_checkpoint(None)
    return WorkerModel(name, _absolute(checkpoint), 0, device)


def _absolute(path) -> str | None:
    return None if path is None else str(Path(path).expanduser().resolve())


_models: dict[WorkerModel, Encoder] = {}
_loading = threading.Lock()


def worker_encoder(model: WorkerModel) -> Encoder:
    """The calling process's copy of ``model``: loaded by the first task that needs it, then reused.

    One model is kept per process (a new one replaces it), so a GPU worker holds one set of weights.
    """
    with _loading:  # worker threads share the cache: load once, not once per thread
        if model not in _models:
            _models.clear()
            _restore_mmap_threshold()
            _models[model] = model.load()
        return _models[model]


def _restore_mmap_threshold() -> None:
    """Undo a side effect of Dask's worker environment that halves CPU inference speed.

    Dask's nanny starts workers with ``MALLOC_TRIM_THRESHOLD_`` set, and glibc then also stops adapting
    its mmap threshold (128 KiB): every batch tensor becomes a fresh mmap whose pages fault in again
    (measured: 2x slower encoding on CPU). A fixed larger threshold restores the speed; memory above the
    trim threshold is still returned to the system as Dask intends.
    """
    if "MALLOC_TRIM_THRESHOLD_" in os.environ and "MALLOC_MMAP_THRESHOLD_" not in os.environ:
        with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to undo
            m_mmap_threshold = -3
            ctypes.CDLL("libc.so.6").mallopt(m_mmap_threshold, MMAP_THRESHOLD_BYTES)


def model_facts(encoder: Encoder) -> dict[str, Any]:
    """What an embedding's record says about the model that made it, in this process or on a worker."""
    return {
        "model": encoder.name,
        "architecture": encoder.architecture,
        "checkpoint": str(encoder.checkpoint) if encoder.checkpoint else None,
        "checkpoint_sha256": encoder.checkpoint_sha256,
        "seed": encoder.seed,
        "embed_dim": encoder.embed_dim,
    }


def describe(client: Client, model: WorkerModel, precision: str) -> tuple[dict[str, Any], str]:
    """Load ``model`` on one worker (it stays loaded there): its :func:`model_facts` and what ``precision`` is there.

    A model that cannot be loaded fails here, once, before any tile is read. ``"auto"`` is resolved on that
    worker's device and CPU (workers on other hardware may resolve it otherwise).
    """
    return client.submit(_describe, model, precision, pure=False).result()


def _describe(model: WorkerModel, precision: str) -> tuple[dict[str, Any], str]:
    encoder = worker_encoder(model)
    return model_facts(encoder), encoder.resolve_precision(precision)


@dataclass(frozen=True)
class ZarrRegions:
    """Reads ``(c, h, w)`` regions of a zarr array; pickles as the array's store and path, not its data.

    Regions are ``uint8`` RGB as in this process (:class:`omiclip.pp._spot_geometry.Level`): float images scaled
    by ``value_scale``, RGBA composited over white.
    """

    array: Any
    value_scale: float = 1.0

    def __call__(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """The region ``[:, y0:y1, x0:x1]`` as ``uint8 (3, h, w)``."""
        return to_rgb8(np.asarray(self.array[:, y0:y1, x0:x1]), self.value_scale)


def zarr_regions(array, value_scale: float = 1.0) -> ZarrRegions:
    """The zarr array behind an unmodified ``dask.array.from_zarr`` array (how SpatialData reads images).

    Workers read from the store themselves; a Dask array cannot go to them as a task argument (the
    scheduler would compute it, i.e. read the whole image, first), and one built by any other route may
    not be readable from another process at all.
    """
    import zarr

    name = getattr(array, "name", "")
    source = array.dask.get(f"original-{name}") if name.startswith("from-zarr-") else None
    if not isinstance(source, zarr.Array) or tuple(source.shape) != tuple(array.shape):
        raise ValueError(
            "With `client=`, workers read the tiles from the image's zarr store, but this image is not read from "
            "one (it is in memory, or was changed after reading). Write the data to zarr and read it back: "
            "`sdata.write(path); sdata = spatialdata.read_zarr(path)`."
        )
    root = getattr(source.store, "root", None)
    if isinstance(root, Path) and not root.is_absolute():  # workers may run in another directory
        source = zarr.open_array(str(root.resolve()), path=source.path, mode="r")
    return ZarrRegions(source, value_scale)


def embed_windows(
    client: Client,
    windows: TileWindows,
    read_region: ZarrRegions,
    model: WorkerModel,
    *,
    batch_size: int,
    precision: str,
    progress: bool,
) -> np.ndarray:
    """Embed every window's tile on the cluster; returns ``float32 (len(windows), embed_dim)`` in window order.

    Windows are grouped by the storage chunk of the image they fall in and cut into contiguous tasks, so a
    task reads a compact region and most chunks are decompressed by one task. Results are written into
    place as tasks finish, in any order.
    """
    n_threads = sum(client.nthreads().values()) or 1
    order = _storage_order(windows, read_region.array.chunks[-2:])
    tasks = np.array_split(order, _n_tasks(len(windows), batch_size, n_threads))
    futures = {
        client.submit(
            _embed_task,
            model,
            read_region,
            TileWindows(windows.origin[members], windows.window_px, windows.out_px, windows.image_shape),
            batch_size,
            precision,
            pure=False,
        ): members
        for members in tasks
        if len(members)
    }
    from distributed import as_completed

    out = None
    try:
        with tqdm(total=len(windows), desc=f"{len(futures)} tasks", disable=not progress) as bar:
            for future in as_completed(list(futures)):
                embeddings = future.result()
                members = futures.pop(future)  # the last reference: the worker frees the result now
                if out is None:
                    out = np.empty((len(windows), embeddings.shape[1]), dtype=np.float32)
                out[members] = embeddings
                bar.update(len(members))
    except BaseException:
        client.cancel(list(futures))  # a failed task (or an interrupt) stops the rest
        raise
    return out


def _n_tasks(n_tiles: int, batch_size: int, n_threads: int) -> int:
    wanted = max(-(-n_tiles // MAX_TILES_PER_TASK), TASKS_PER_THREAD * n_threads)
    return max(1, min(wanted, -(-n_tiles // batch_size)))  # never less than a batch per task


def _storage_order(windows: TileWindows, chunk_shape) -> np.ndarray:
    """Window positions sorted by the (y, x) storage chunk their centre falls in, input order within one."""
    chunk_h, chunk_w = chunk_shape
    centre = windows.origin + windows.window_px // 2
    return np.lexsort((centre[:, 1] // chunk_w, centre[:, 0] // chunk_h))


def _embed_task(
    model: WorkerModel, read_region: ZarrRegions, windows: TileWindows, batch_size: int, precision: str
) -> np.ndarray:
    encoder = worker_encoder(model)
    batches = iter_tiles(windows, read_region, batch_size=batch_size)
    return encoder.encode_image_batches(batches, len(windows), precision=precision)
