"""The housekeeping genes that the official Loki code removes from gene sentences."""

from __future__ import annotations

from functools import cache
from importlib.resources import files


@cache
def housekeeping_genes() -> frozenset[str]:
    """The 394 unique symbols of Loki's ``housekeeping_genes.csv`` (see ``data/housekeeping_genes.txt``)."""
    text = files("omiclip").joinpath("data/housekeeping_genes.txt").read_text()
    return frozenset(line for line in text.splitlines() if line and not line.startswith("#"))
