"""scanpy's logging (verbosity follows ``sc.settings.verbosity``), imported only when first used."""

from __future__ import annotations

import sys
from datetime import UTC, datetime


def info(msg: str, *, time: datetime | None = None, deep: str | None = None) -> datetime:
    """Log at info level; returns the time, for ``time=`` of the closing message."""
    if "scanpy" not in sys.modules:
        # nobody can have raised scanpy's verbosity (default: warnings only) without importing it, so the
        # message would be dropped anyway: skip importing scanpy (1-2 s), e.g. on a Dask worker. Aware, as
        # scanpy's times are: a step that imports scanpy later subtracts this from one of them
        return datetime.now(UTC)
    from scanpy import logging

    return logging.info(msg, time=time, deep=deep)


def warning(msg: str) -> datetime:
    """Log a warning through scanpy (not ``warnings``; use ``warnings.warn`` for things tests catch)."""
    from scanpy import logging

    return logging.warning(msg)


def finished(start: datetime, added: list[tuple[str, str]] | None = None, *, note: str | None = None) -> datetime:
    """Close a step's log with its duration and what it wrote where, e.g. ``[("X_omiclip_text", "text embeddings (obsm)")]``."""
    lines = [f"    {key!r}, {what}" for key, what in added or []]
    deep = "\n".join(([note] if note else []) + (["added", *lines] if lines else [])) or None
    return info("    finished", time=start, deep=deep)
