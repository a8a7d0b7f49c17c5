"""scanpy's logging (verbosity follows ``sc.settings.verbosity``), imported only when first used."""

from __future__ import annotations

from datetime import datetime


def info(msg: str, *, time: datetime | None = None, deep: str | None = None) -> datetime:
    """Log at info level; returns the time, for ``time=`` of the closing message."""
    from scanpy import logging

    return logging.info(msg, time=time, deep=deep)


def warning(msg: str) -> datetime:
    """Log a warning through scanpy (not ``warnings``; use ``warnings.warn`` for things tests catch)."""
    from scanpy import logging

    return logging.warning(msg)
