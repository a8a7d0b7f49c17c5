"""Write elements back into a SpatialData zarr store without ever leaving it broken.

spatialdata's own ``write_element(overwrite=True)`` deletes the stored element before writing the new
one: a failure in between loses it. Here each element is written in full inside the store first, then
swapped with the stored one in a single atomic step (Linux ``renameat2(RENAME_EXCHANGE)``), or where the
file system cannot do that, by two renames that are undone on error and repaired by :func:`recover`
after a crash. The old version is deleted only once the new one is in place.
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from spatialdata import SpatialData

# inside the store, so that renames stay on one file system; spatialdata reads only its element groups
STAGING = ".omiclip-staging"


def write_elements(sdata: SpatialData, names: str | Sequence[str]) -> None:
    """Write elements of a zarr-backed SpatialData object to its store, replacing stored ones safely.

    Each element is first written completely to a staging folder inside the store, then swapped with the
    stored element of the same name in one atomic step; the old versions are deleted after that. All elements
    are written before the first swap, and swaps already made are undone if a later one fails, so if anything
    fails the store is as it was; other elements are never touched. A process killed during the swaps can
    leave some of ``names`` new and the others old, each complete. On file systems without an atomic
    exchange (not Linux; some network file systems) two renames are used instead: should the process die
    between them, the element is missing until :func:`recover` (or the next call of this function) puts it
    back. The consolidated metadata is rewritten (atomically) at the end.

    Parameters
    ----------
    sdata
        A SpatialData object read from (or written to) a local zarr store (``sdata.path``).
    names
        Element names (tables, shapes, points, images, labels) to write, in order. Elements read lazily
        from this store (images, points) cannot be rewritten into it: write them to a new store.

    Returns
    -------
    ``None``; the elements are in the store ``sdata.path``. One writer per store at a time.
    """
    import zarr
    from spatialdata import SpatialData, get_dask_backing_files

    store = _local_store(sdata)
    names = [names] if isinstance(names, str) else list(names)
    kinds = {name: kind for kind, name, _ in sdata.gen_elements()}
    for name in names:
        if name not in kinds:
            raise KeyError(f"Element {name!r} not found; elements: {sorted(kinds)}.")
        if any(Path(path).resolve().is_relative_to(store) for path in get_dask_backing_files(sdata[name])):
            raise ValueError(f"Element {name!r} is read lazily from this store and cannot be rewritten into it.")

    recover(store)
    root = zarr.open_group(store, mode="r+", use_consolidated=False)
    staging = store / STAGING
    by_kind: dict[str, dict] = {}
    for name in names:
        by_kind.setdefault(kinds[name], {})[name] = sdata[name]
    swapped: list[tuple[Path, Path]] = []
    try:
        # every element is written (and validated) before the first swap: a bad one leaves the store untouched
        with warnings.catch_warnings():  # a table alone annotates elements that are not in its staging store
            warnings.filterwarnings("ignore", message="The table is annotating", category=UserWarning)
            staged = SpatialData(**by_kind)
        staged.write(staging / "new")
        for name in names:
            kind = kinds[name]
            root.require_group(kind)
            target, old = store / kind / name, staging / "old" / kind / name
            _swap(target, staging / "new" / kind / name, old)
            swapped.append((target, old))
    except BaseException:
        for target, old in reversed(swapped):  # put back the elements already replaced
            _restore(target, old, staging / "discard" / target.parent.name / target.name)
        recover(store)
        raise
    shutil.rmtree(staging)
    if sdata.has_consolidated_metadata():  # it lists the elements: a new one is invisible until rewritten
        sdata.write_consolidated_metadata()


def recover(path: str | os.PathLike) -> None:
    """Finish or undo a :func:`write_elements` that was interrupted, so that the store reads as before.

    Only needed after a crash on a file system without an atomic exchange; a no-op otherwise.

    Parameters
    ----------
    path
        The zarr store.

    Returns
    -------
    ``None``; an element caught between two renames is put back and the staging folder removed.
    """
    store = Path(path)
    staging = store / STAGING
    if not staging.exists():
        return
    for old in (staging / "old").glob("*/*"):
        target = store / old.parent.name / old.name
        if not target.exists():  # stopped between the two renames: the old element is still the stored one
            os.rename(old, target)
    shutil.rmtree(staging)


def _local_store(sdata) -> Path:
    import zarr

    if sdata.path is None:
        raise ValueError("This SpatialData object has no zarr store: write it first with `sdata.write(path)`.")
    if not isinstance(sdata.path, Path):
        raise ValueError(f"Only local zarr stores can be written safely, not {sdata.path!s}.")
    store = sdata.path.resolve()
    try:
        group = zarr.open_group(store, mode="r")
    except (FileNotFoundError, zarr.errors.GroupNotFoundError):
        raise ValueError(
            f"{store} is not a zarr store; write the object there first with `sdata.write(path)`."
        ) from None
    if group.metadata.zarr_format != 3:
        raise ValueError(
            f"{store} uses an older SpatialData format (zarr v2); rewrite it with `sdata.write(new_path)` first."
        )
    return store


def _swap(target: Path, new: Path, old: Path) -> None:
    """Put ``new`` at ``target``; a previous ``target`` ends up at ``old`` (in the staging folder)."""
    old.parent.mkdir(parents=True, exist_ok=True)
    if not target.exists():
        os.rename(new, target)
    elif _exchange(new, target):
        os.rename(new, old)  # the previous element; a crash before this line leaves it in staging, to be deleted
    else:
        os.rename(target, old)
        try:
            os.rename(new, target)
        except BaseException:
            os.rename(old, target)
            raise


def _restore(target: Path, old: Path, discard: Path) -> None:
    """Undo a :func:`_swap`: the previous element back at ``target`` (or none, if there was none)."""
    discard.parent.mkdir(parents=True, exist_ok=True)
    if not old.exists():  # the element was new to the store
        os.rename(target, discard)
    elif not _exchange(old, target):
        os.rename(target, discard)
        os.rename(old, target)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux ``renameat2``); ``False`` where the system or file system cannot."""
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if renameat2 is None:
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), str(a))
