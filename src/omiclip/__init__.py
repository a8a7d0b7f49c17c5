"""omiclip: the Loki platform (OmiCLIP) for scverse — H&E tiles and transcriptomes in one embedding space."""

from importlib.metadata import version

from . import datasets, io, metrics, models, pl, pp, tl

__all__ = ["datasets", "io", "metrics", "models", "pl", "pp", "tl"]
__version__ = version("omiclip")
