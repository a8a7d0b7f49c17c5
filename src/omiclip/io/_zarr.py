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

import numpy as np

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


def read_store(path: str | os.PathLike) -> SpatialData:
    """:func:`spatialdata.read_zarr`, with errors that name the store, the damaged element and its file.

    A missing path, a regular file and a folder without zarr metadata are refused before reading. When reading
    fails, the store's metadata files are parsed and its tables' arrays read one by one to find what is damaged
    (images stay lazy: a damaged image chunk shows when its tiles are read).
    """
    import spatialdata as sd

    store = check_store(path)
    try:
        return sd.read_zarr(store)
    except Exception as err:
        damaged = _damaged(store)
        if damaged is None:
            raise
        raise ValueError(
            f"Cannot read the zarr store {store}: {damaged} is damaged ({type(err).__name__}: {err}). Restore it "
            "from a copy, or write that element again."
        ) from err


def check_store(path: str | os.PathLike) -> Path:
    """``path`` as a :class:`~pathlib.Path`, when it is a zarr store (a folder with zarr metadata)."""
    store = Path(path).expanduser()
    if not store.exists():
        raise FileNotFoundError(f"The zarr store {store} does not exist.")
    if not store.is_dir() or not any((store / name).is_file() for name in ("zarr.json", ".zgroup", ".zattrs")):
        raise ValueError(f"{store} is not a zarr store (a folder with a zarr.json); give the path of a store.")
    return store


def _damaged(store: Path) -> str | None:
    """The first element and file of ``store`` that cannot be read, described; ``None`` when all can."""
    import json

    import zarr

    metadata = sorted(store.rglob("zarr.json"), key=lambda f: len(f.parts))
    for file in metadata:
        try:
            json.loads(file.read_text())
        except (ValueError, UnicodeDecodeError):
            return _describe(store, file)
    for file in metadata:
        relative = file.parent.relative_to(store)
        if relative.parts[:1] != ("tables",) or json.loads(file.read_text()).get("node_type") != "array":
            continue
        array = zarr.open_array(file.parent, mode="r")
        for block in np.ndindex(*array.cdata_shape):
            try:
                array.blocks[block]
            except Exception:  # noqa: BLE001 - any failure to decode a chunk is what is looked for
                chunk = file.parent / "c" / "/".join(map(str, block))
                return _describe(store, chunk if chunk.exists() else file.parent)
    return None


def _describe(store: Path, file: Path) -> str:
    relative = file.relative_to(store)
    element = "/".join(relative.parts[:2]) if len(relative.parts) > 2 else "the store's root"
    return f"element {element!r} (file {relative})" if element != "the store's root" else f"the root (file {relative})"


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

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    ValueError
        ``path`` is not a zarr store (a regular file, or a folder without ``zarr.json``).
    """
    store = check_store(path)
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
