"""omiclip: the Loki platform (OmiCLIP) for scverse — H&E tiles and transcriptomes in one embedding space.

Subpackages and their functions are imported on first use (``oc.tl.embed`` imports torch when it is first
looked up), so ``import omiclip`` and the command line's ``--help`` start without torch, open_clip, scanpy,
squidpy, spatialdata or dask.
"""

from importlib.metadata import version

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__, submodules=["datasets", "io", "metrics", "models", "pl", "pp", "tl"]
)
__version__ = version("omiclip")
