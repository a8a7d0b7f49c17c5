"""Reading and writing: results written back into SpatialData zarr stores, safely (imported on first use)."""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(__name__, submod_attrs={"_zarr": ["recover", "write_elements"]})
