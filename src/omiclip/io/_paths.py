"""Output paths checked before the work whose result they receive, not after it."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def check_writable(path: str | os.PathLike, *, folder: bool = False) -> Path:
    """Fail now, naming ``path``, when it cannot be written: a late failure would waste a run (e.g. training).

    A file must not be an existing folder, and a folder not an existing file. Missing parents are fine
    (they are created on writing) when the nearest existing one is a folder that can be written to.
    """
    path = Path(path).expanduser()
    if not folder and path.is_dir():
        raise IsADirectoryError(f"Cannot write {path}: it is a folder; give the path of a file to write.")
    if folder and path.exists() and not path.is_dir():
        raise NotADirectoryError(f"Cannot write into {path}: it is a file; give a folder (new or existing).")
    existing = path if path.is_dir() else path.parent
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise NotADirectoryError(f"Cannot write {path}: {existing} is a file, not a folder.")
    try:  # os.access says yes to root on read-only or virtual file systems: try it instead
        tempfile.TemporaryFile(dir=existing).close()
    except OSError as err:
        raise PermissionError(f"Cannot write {path}: {existing} is not writable ({err.strerror}).") from None
    return path
