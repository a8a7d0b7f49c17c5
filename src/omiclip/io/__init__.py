"""Reading and writing: results written back into SpatialData zarr stores, safely."""

from ._zarr import recover, write_elements

__all__ = ["recover", "write_elements"]
