"""Every key omiclip writes, derived in one place, and the records of the steps that wrote them.

Writers (``pp``, ``tl``) and readers (``pl``, the cohort runner, the command line) derive keys here rather than
spelling them, so they cannot drift apart. The rules:

Output keys
    Each step writes its main result under ``key_added`` (the ``*_KEY`` defaults below). A step's other results
    take the main key plus a suffix: ``{key}_scores`` (:func:`scores_key`), ``{key}_nms``, ``{key}_mapping``,
    ``{key}_nonrigid``, ``{key}_3d``, the sentence counts ``{key}_n_expressed`` etc. and ``{key}_colors`` (``.uns``, scanpy's colours of a categorical); the
    table of new shapes ``{shapes}_table`` (:func:`table_of_shapes`), e.g. ``{image}_grid_table``.
Records
    Each step records its parameters (and small results) in ``.uns["omiclip"][step][key]``, where ``key`` is the
    step's main output key (:func:`record`, read back with :func:`get_record`). So two runs of one step with
    different ``key_added`` keep their own records, and a rerun with the same ``key_added`` replaces its own.
    ``finetune``, which writes no key, records under the name of the model it started from.
Claims
    Before it computes anything, a step claims the keys it will write (:func:`claim`): a key the same call reads
    (its embeddings, its coordinates) or the coordinates ``.obsm["spatial"]`` can never be an output; replacing
    an earlier result is allowed and logged.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from anndata import AnnData

UNS_KEY = "omiclip"
SPATIAL_KEY = "spatial"
SENTENCE_KEY = "gene_sentence"
# µm per unit of a table's spatial coordinates (obsm["spatial"], its shapes); written by omiclip's readers
MICRONS_PER_UNIT_KEY = "microns_per_unit"

# default ``key_added`` of each step
ANNOTATION_KEY = "omiclip_annotation"
PROPORTIONS_KEY = "omiclip_proportions"
RETRIEVED_KEY = "omiclip_retrieved"
PREDICTED_KEY = "omiclip_predex"
ALIGNED_KEY = "spatial_aligned"
PSEUDO_SPOTS_KEY = "pseudo_spots"

Attribute = Literal["obs", "obsm", "uns"]


def embedding_key(modality: str, key_added: str | None = None) -> str:
    """``.obsm`` key of an embedding: ``key_added`` or ``X_omiclip_{modality}``."""
    return key_added or f"X_omiclip_{modality}"


def scores_key(key: str) -> str:
    """``.obsm`` key of the scores behind a result (annotation, retrieval): ``{key}_scores``."""
    return f"{key}_scores"


def nms_key(key: str) -> str:
    """``.obsm`` key of the non-maximum-suppressed proportions: ``{key}_nms``."""
    return f"{key}_nms"


def mapping_key(key: str) -> str:
    """``.obsm`` key of decompose's raw mapping: ``{key}_mapping``."""
    return f"{key}_mapping"


def nonrigid_key(key: str) -> str:
    """``.obsm`` key of the non-rigid (CPD) coordinates beside a rigid alignment: ``{key}_nonrigid``."""
    return f"{key}_nonrigid"


def stack_key(key: str) -> str:
    """``.obsm`` key of a stack's x/y/z coordinates: ``{key}_3d``."""
    return f"{key}_3d"


def colors_key(key: str) -> str:
    """``.uns`` key of the colours of the categorical ``.obs[key]`` (scanpy's convention): ``{key}_colors``."""
    return f"{key}_colors"


# per-observation counts that pp.gene_sentences writes beside the sentences
SENTENCE_COUNTS = ("n_expressed", "n_in_context", "n_ties", "n_ties_in_context")


def sentence_count_key(key: str, count: str) -> str:
    """``.obs`` column of a count (one of :data:`SENTENCE_COUNTS`) beside the sentences ``.obs[key]``."""
    return f"{key}_{count}"


def grid_key(image_key: str) -> str:
    """Shapes element of the tile grid over an image: ``{image_key}_grid``."""
    return f"{image_key}_grid"


def table_of_shapes(shapes_key: str) -> str:
    """Table element that annotates shapes omiclip adds (a grid, pseudo-spots): ``{shapes_key}_table``."""
    return f"{shapes_key}_table"


def record(adata: AnnData, step: str, key: str, params: dict[str, Any]) -> None:
    """Store a step's parameters (and small results) in ``adata.uns["omiclip"][step][key]``."""
    steps = adata.uns.setdefault(UNS_KEY, {})
    steps[step] = {**steps.get(step, {}), key: params}


def get_record(adata: AnnData, step: str, key: str, *, made_by: str) -> Mapping[str, Any]:
    """The record of ``step`` for its output ``key``, with the error that says what to run."""
    runs = adata.uns.get(UNS_KEY, {}).get(step, {})
    if key not in runs:
        raise KeyError(
            f"Did not find `.uns[{UNS_KEY!r}][{step!r}][{key!r}]` (records there: {list(runs)}). Run `{made_by}` "
            "first, or pass the `key_added` it was run with."
        )
    return runs[key]


def claim(
    adata: AnnData,
    outputs: Iterable[tuple[Attribute, str]],
    *,
    step: str,
    reads: Iterable[tuple[Attribute, str | None]] = (),
) -> None:
    """Check that ``step`` may write ``outputs`` (``(attribute, key)`` pairs) into ``adata``; log what it replaces.

    What the same call reads (``reads``: its embeddings, coordinates, label columns), the coordinates
    ``.obsm["spatial"]`` and the results that another omiclip step recorded (e.g. the embeddings of ``oc.tl.embed``
    for ``oc.tl.decompose``) are never outputs: writing there would destroy an input of this or a later step.
    Replacing anything else, e.g. the result of an earlier run of the same step, is allowed.
    """
    from omiclip import _logging as logg

    protected = {("obsm", SPATIAL_KEY), *((attribute, key) for attribute, key in reads if key is not None)}
    records = adata.uns.get(UNS_KEY, {})
    for attribute, key in outputs:
        if (attribute, key) in protected:
            which = "the coordinates" if (attribute, key) == ("obsm", SPATIAL_KEY) else "an input of this call"
            raise ValueError(
                f"Cannot write the result to `.{attribute}[{key!r}]`: that is {which}, which would be lost. "
                "Choose another `key_added`."
            )
        owners = [
            other for other, runs in records.items() if other != step and isinstance(runs, Mapping) and key in runs
        ]
        if owners and key in getattr(adata, attribute):
            raise ValueError(
                f"Cannot write the result to `.{attribute}[{key!r}]`: it holds the result of `{owners[0]}`, which "
                "would be lost. Choose another `key_added`."
            )
        if key in getattr(adata, attribute):
            logg.info(f"    replacing `.{attribute}[{key!r}]`")
