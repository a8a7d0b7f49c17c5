"""omiclip: the Loki platform (OmiCLIP) for scverse — H&E tiles and transcriptomes in one embedding space.

Subpackages and their functions are imported on first use (``oc.tl.embed`` imports torch when it is first
looked up), so ``import omiclip`` and the command line's ``--help`` start without torch, open_clip, scanpy,
squidpy, spatialdata or dask.
"""

import lazy_loader

_submodule, __dir__, __all__ = lazy_loader.attach(
    __name__, submodules=["datasets", "io", "metrics", "models", "pl", "pp", "tl"]
)


def __getattr__(name: str):
    if name == "__version__":  # importlib.metadata costs more than the rest of `import omiclip`
        from importlib.metadata import version

        return version("omiclip")
    return _submodule(name)
