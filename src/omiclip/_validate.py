"""Argument checks shared by every public function: each error names the parameter, the rule and the value.

All raise :class:`ValueError` (the command line and the tests treat a wrong type and a wrong value alike).
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Collection
from typing import Any


def check_choice(name: str, value: Any, choices: Collection) -> None:
    """``value`` must be one of ``choices``."""
    if value not in choices:
        raise ValueError(f"`{name}` must be one of {tuple(choices)}, got {value!r}.")


def check_int(name: str, value: Any, *, min: int | None = None, max: int | None = None) -> int:
    """``value`` must be an integer (not a bool, not a float) in ``[min, max]``; returns it as ``int``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not _in_range(value, min, max):
        raise ValueError(f"`{name}` must be {_integer(min, max)}, got {value!r}.")
    return int(value)


def check_optional_int(name: str, value: Any, *, min: int | None = None, max: int | None = None) -> int | None:
    """``None``, or an integer as :func:`check_int` wants it."""
    return None if value is None else check_int(name, value, min=min, max=max)


def check_number(
    name: str,
    value: Any,
    *,
    min: float | None = None,
    max: float | None = None,
    min_inclusive: bool = True,
    max_inclusive: bool = True,
) -> float:
    """``value`` must be a finite real number (not a bool) in the range; returns it as ``float``.

    ``min_inclusive=False`` leaves ``min`` itself out (e.g. positive: ``min=0, min_inclusive=False``).
    """
    real = not isinstance(value, bool) and isinstance(value, numbers.Real) and math.isfinite(value)
    if not real or not _in_range(value, min, max, min_inclusive, max_inclusive):
        raise ValueError(
            f"`{name}` must be a finite number{_bounds(min, max, min_inclusive, max_inclusive)}, got {value!r}."
        )
    return float(value)


def available_memory() -> int:
    """Bytes of memory free on this machine now (psutil when installed, else the operating system's page counts)."""
    try:
        import psutil
    except ImportError:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return int(psutil.virtual_memory().available)


def check_memory(name: str, value: Any, n_bytes: float, what: str) -> None:
    """Refuse ``value`` of parameter ``name`` when ``what`` would need more than the free memory (``n_bytes``).

    Called before the allocation, so that a mistyped size is an error that says what it costs rather than a
    ``MemoryError`` (or the system killing the process) later.
    """
    free = available_memory()
    if n_bytes > free:
        raise ValueError(
            f"`{name}={value!r}` would need {_gib(n_bytes)} for {what}, more than the {_gib(free)} of memory free "
            f"on this machine. Check `{name}` (and the units it is in)."
        )


def _gib(n_bytes: float) -> str:
    return f"{n_bytes / 2**30:.3g} GiB"


def _in_range(value, low, high, low_inclusive: bool = True, high_inclusive: bool = True) -> bool:
    above = low is None or (value >= low if low_inclusive else value > low)
    below = high is None or (value <= high if high_inclusive else value < high)
    return above and below


def _integer(low, high) -> str:
    if high is None and low == 1:
        return "a positive integer"
    return f"an integer{_bounds(low, high, True, True)}"


def _bounds(low, high, low_inclusive: bool, high_inclusive: bool) -> str:
    if low is None and high is None:
        return ""
    if high is None:
        return f" {'>=' if low_inclusive else '>'} {low}"
    if low is None:
        return f" {'<=' if high_inclusive else '<'} {high}"
    return f" in {'[' if low_inclusive else '('}{low}, {high}{']' if high_inclusive else ')'}"
