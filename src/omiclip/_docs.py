"""Parameter docs shared by the public functions (after scanpy's ``_doc_params``).

A docstring names a shared entry by a line holding only ``{name}`` where the parameter's entry would go;
:func:`doc_params` puts the entry there at that line's indentation. Other braces (``{key_added}_scores`` in
prose) are left alone, so docstrings need no escaping.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Callable
from typing import TypeVar

Function = TypeVar("Function", bound=Callable)

SHARED = {
    "table_key": """\
table_key
    Table of a SpatialData object with several tables.""",
    "reference_table_key": """\
reference_table_key
    Table of a SpatialData reference with several tables.""",
    "copy": """\
copy
    Return a modified copy instead of writing into the data.""",
    "progress": """\
progress
    Show a progress bar.""",
    "device": """\
device
    Torch device; ``None`` picks CUDA when present.""",
    "model": """\
model
    A loaded :class:`~omiclip.models.Encoder`, a model name or a checkpoint path (see
    :func:`omiclip.models.load`).""",
    "checkpoint": """\
checkpoint
    Weights for a model given by name.""",
    "image_key": """\
image_key
    Image under the spots (a SpatialData image element; ``"hires"``/``"lowres"`` for Visium AnnData). Not given:
    the only image, when the data hold exactly one (one SpatialData image, one Visium library); ``None``: no
    image.""",
    "spatial_key": """\
spatial_key
    Positions in ``.obsm``.""",
    "size": """\
size
    Spot diameter in the units of ``spatial_key`` (default: the spots' physical size, from their tiles on the
    image, their shapes, Visium's ``spot_diameter_fullres`` or ``.uns["microns_per_unit"]``; only when none
    records it, the distance between neighbouring spots).""",
    "cmap": """\
cmap
    Colour map.""",
    "ncols": """\
ncols
    Panels per row.""",
    "ax": """\
ax
    Axes to draw into, one per panel (default: a new figure).""",
    "save": """\
save
    Write the figure to this path.""",
    "show": """\
show
    Show the figure and return ``None`` (default: unless ``return_fig``); ``False`` returns the axes.""",
    "return_fig": """\
return_fig
    Return the :class:`~matplotlib.figure.Figure`.""",
}

_PLACEHOLDER = re.compile(r"^(?P<indent>[ \t]*)\{(?P<name>\w+)\}[ \t]*$", re.MULTILINE)


def doc_params(func: Function) -> Function:
    """Fill the ``{name}`` lines of ``func``'s docstring with the shared entries; unknown names are an error."""

    def entry(match: re.Match) -> str:
        name = match["name"]
        if name not in SHARED:
            raise KeyError(f"{func.__qualname__}: no shared doc for {{{name}}}; known: {sorted(SHARED)}.")
        return textwrap.indent(SHARED[name], match["indent"])

    func.__doc__ = _PLACEHOLDER.sub(entry, func.__doc__)
    return func
