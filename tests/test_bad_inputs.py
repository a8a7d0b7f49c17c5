"""Bad input to every public function and the command line: a clear error that names the parameter or element,
and the input exactly as it was (tables, SpatialData elements and transformations, the zarr store on disk).

Each case is ``(id, call, error type, words the message must hold)``; ``call`` gets a :class:`Inputs` of fresh,
cheap copies of small session-wide fixtures. No case trains a model or runs a real-size alignment.
"""

from __future__ import annotations

import copy
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from anndata import AnnData

import omiclip as oc
from omiclip.__main__ import main
from omiclip._anndata import working_copy

MARKERS = {"tumour": ["EPCAM", "KRT8"], "stroma": ["COL1A1", "DCN"]}


@pytest.fixture(scope="session")
def _embedded(tiny, tmp_path_factory):
    """A small section with both embeddings, a reference with text embeddings, and the section as a zarr store."""
    sdata = oc.datasets.synthetic_tissue(size_um=600, um_per_px=2.0, seed=3)
    oc.pp.gene_sentences(sdata)
    for modality in ("text", "image"):
        oc.tl.embed(sdata, modality=modality, model=tiny, progress=False)
    reference = oc.datasets.synthetic_reference(n_cells=80, size_um=600, seed=1)
    oc.pp.gene_sentences(reference)
    oc.tl.embed(reference, modality="text", model=tiny, progress=False)
    oc.tl.retrieve(sdata, reference, k=3, progress=False)
    store = tmp_path_factory.mktemp("bad_inputs") / "section.zarr"
    sdata.write(store)
    return sdata, reference, store


@dataclass
class Inputs:
    sdata: object
    table: AnnData
    reference: AnnData
    store: Path
    model: object
    tmp: Path


@pytest.fixture
def inputs(_embedded, tiny, tmp_path):
    sdata, reference, store = _embedded
    fresh = working_copy(sdata, copy=True)
    for key, shapes in sdata.shapes.items():
        fresh.shapes[key] = shapes.copy()
    return Inputs(fresh, fresh.tables["table"], reference.copy(), store, tiny, tmp_path)


# -- snapshots: everything a call could modify, compared in full afterwards -------------------------------------


def snapshot_table(adata: AnnData) -> dict:
    return {
        "X": adata.X.toarray() if hasattr(adata.X, "toarray") else np.array(adata.X),
        "obs": adata.obs.copy(),
        "var": adata.var.copy(),
        "obsm": {key: copy.deepcopy(value) for key, value in adata.obsm.items()},
        "layers": {key: copy.deepcopy(value) for key, value in adata.layers.items()},
        "uns": copy.deepcopy(dict(adata.uns)),
    }


def snapshot_sdata(sdata) -> dict:
    from spatialdata.transformations import get_transformation

    def transformations(element):
        return {
            system: np.asarray(t.to_affine_matrix(("x", "y"), ("x", "y")))
            for system, t in get_transformation(element, get_all=True).items()
        }

    return {
        "tables": {key: snapshot_table(table) for key, table in sdata.tables.items()},
        "shapes": {key: (shapes.copy(), transformations(shapes)) for key, shapes in sdata.shapes.items()},
        "images": {key: transformations(image) for key, image in sdata.images.items()},
        "points": {key: transformations(points) for key, points in sdata.points.items()},
    }


def snapshot_store(path: Path) -> dict:
    """Every file's size and modification time: any write changes them."""
    return {str(f.relative_to(path)): (f.stat().st_size, f.stat().st_mtime_ns) for f in path.rglob("*")}


def assert_same(before, after, where="input"):
    if isinstance(before, dict):
        assert before.keys() == after.keys(), f"{where}: keys changed {set(before) ^ set(after)}"
        for key in before:
            assert_same(before[key], after[key], f"{where}[{key!r}]")
    elif isinstance(before, pd.DataFrame):
        pd.testing.assert_frame_equal(before, after, obj=where)
    elif isinstance(before, tuple | list):
        assert len(before) == len(after), where
        for i, (b, a) in enumerate(zip(before, after, strict=True)):
            assert_same(b, a, f"{where}[{i}]")
    elif isinstance(before, np.ndarray):
        np.testing.assert_array_equal(before, np.asarray(after), err_msg=where)
    else:
        assert before == after, where


def snapshot(inputs: Inputs) -> dict:
    return {
        "sdata": snapshot_sdata(inputs.sdata),
        "reference": snapshot_table(inputs.reference),
        "store": snapshot_store(inputs.store),
    }


# -- the cases ------------------------------------------------------------------------------------------------

TL = {"progress": False}


def _zeroed(key: str, rows=slice(None), *, reference: bool = False):
    """Set rows of ``.obsm[key]`` of the section's table (or the reference) to 0 before the snapshot."""

    def prepare(c: Inputs) -> None:
        adata = c.reference if reference else c.table
        adata.obsm[key] = np.array(adata.obsm[key])
        adata.obsm[key][rows] = 0

    return prepare


def _nan(key: str):
    def prepare(c: Inputs) -> None:
        c.table.obsm[key] = np.array(c.table.obsm[key])
        c.table.obsm[key][0, 0] = np.nan

    return prepare


def _prepared(prepare, call):
    """A call whose input is made bad first (before the snapshot): ``call.prepare``."""
    call.prepare = prepare
    return call


def _gene_sentences(**kwargs):
    return lambda c: oc.pp.gene_sentences(c.sdata, **kwargs)


def _tiles(**kwargs):
    return lambda c: oc.pp.tiles(c.sdata, **kwargs)


def _pseudo_spots(**kwargs):
    return lambda c: oc.pp.pseudo_spots(c.table, **{"microns_per_unit": 1.0, **kwargs})


def _embed(**kwargs):
    return lambda c: oc.tl.embed(c.sdata, **{"model": c.model, **TL, **kwargs})


def _annotate(**kwargs):
    return lambda c: oc.tl.annotate(c.sdata, MARKERS, **{"model": c.model, **kwargs})


def _retrieve(**kwargs):
    return lambda c: oc.tl.retrieve(c.sdata, c.reference, **{**TL, "k": 3, **kwargs})


def _predex(**kwargs):
    return lambda c: oc.tl.predex(c.sdata, c.reference, **{**TL, "n_top_genes": 5, **kwargs})


def _decompose(**kwargs):
    return lambda c: oc.tl.decompose(c.sdata, c.reference, **{**TL, "epochs": 2, **kwargs})


def _align(**kwargs):
    return lambda c: oc.tl.align(c.sdata, c.sdata, **{**TL, "max_iter": 2, **kwargs})


def _align_stack(**kwargs):
    return lambda c: oc.tl.align_stack([c.sdata, working_copy(c.sdata, copy=True)], **{**TL, "max_iter": 2, **kwargs})


def _finetune(**kwargs):
    return lambda c: oc.tl.finetune(c.sdata, **{"model": c.model, "epochs": 1, "batch_size": 8, **TL, **kwargs})


def _cohort(**kwargs):
    return lambda c: oc.tl.embed_cohort([c.store], **{"model": c.model, **TL, **kwargs})


def _load(*args, **kwargs):
    return lambda c: oc.models.load(*args, **kwargs)


def _tissue(**kwargs):
    return lambda c: oc.datasets.synthetic_tissue(**{"size_um": 300, "image": False, **kwargs})


def _reference(**kwargs):
    return lambda c: oc.datasets.synthetic_reference(**{"n_cells": 10, "size_um": 300, **kwargs})


def _pl(function, *args, **kwargs):
    def call(c):
        import matplotlib.pyplot as plt

        try:
            getattr(oc.pl, function)(
                *(c.sdata if a == "sdata" else c.reference if a == "ref" else a for a in args), **kwargs
            )
        finally:
            plt.close("all")

    return call


def _read(path):
    import spatialdata as sd

    return sd.read_zarr(path)


def _regular_file(c: Inputs) -> Path:
    path = c.tmp / "notes.txt"
    path.write_text("not a store")
    return path


def _corrupt_root(c: Inputs) -> Path:
    path = c.tmp / "corrupt.zarr"
    shutil.copytree(c.store, path)
    (path / "zarr.json").write_text("{ not json")
    return path


def _corrupt_chunk(c: Inputs) -> Path:
    path = c.tmp / "corrupt_chunk.zarr"
    shutil.copytree(c.store, path)
    chunk = next(f for f in sorted((path / "tables" / "table" / "obsm").rglob("c/*")) if f.is_file())
    chunk.write_bytes(np.random.default_rng(0).bytes(chunk.stat().st_size))
    return path


def _visium_without_scalefactors(c: Inputs) -> None:
    adata = c.reference
    adata.obsm["spatial"] = np.random.default_rng(0).uniform(0, 100, (adata.n_obs, 2))
    adata.uns["spatial"] = {"lib": {"images": {"hires": np.zeros((50, 50, 3), np.uint8)}, "scalefactors": {}}}


def _visium(spatial_columns: int = 2, **scalefactors):
    """The reference as scanpy's Visium layout, with scale factors (and coordinates) as given."""

    def prepare(c: Inputs) -> None:
        _visium_without_scalefactors(c)
        adata = c.reference
        adata.obsm["spatial"] = np.random.default_rng(0).uniform(0, 100, (adata.n_obs, spatial_columns))
        recorded = {"tissue_hires_scalef": 0.5, "spot_diameter_fullres": 10.0, **scalefactors}
        adata.uns["spatial"]["lib"]["scalefactors"] = recorded

    return prepare


def _stored(key: str, value, *, table: str = "reference"):
    def prepare(c: Inputs) -> None:
        getattr(c, table).uns[key] = value

    return prepare


def _radius(value: float):
    def prepare(c: Inputs) -> None:
        c.sdata.shapes["spots"]["radius"] = value
        del c.table.uns["microns_per_unit"]  # so the spots' size sets the scale

    return prepare


def _repeated_names(c: Inputs) -> None:
    names = c.reference.obs_names.tolist()
    c.reference.obs_names = [names[0], *names[:-1]]  # the first name twice


def _repeated_table_names(c: Inputs) -> None:
    names = c.table.obs_names.tolist()
    c.table.obs_names = [names[0], *names[:-1]]


A, B = np.eye(4)[:3], np.eye(4)[1:]

# (id, call, error, words the message holds)
CASES = [
    # pp.gene_sentences
    ("gene_sentences-n_genes-float", _gene_sentences(n_genes=2.5), ValueError, ["n_genes"]),
    ("gene_sentences-n_genes-str", _gene_sentences(n_genes="50"), ValueError, ["n_genes"]),
    ("gene_sentences-n_genes-bool", _gene_sentences(n_genes=True), ValueError, ["n_genes"]),
    ("gene_sentences-n_genes-zero", _gene_sentences(n_genes=0), ValueError, ["n_genes"]),
    ("gene_sentences-ties", _gene_sentences(ties="random"), ValueError, ["ties"]),
    ("gene_sentences-layer", _gene_sentences(layer="nope"), KeyError, ["nope"]),
    ("gene_sentences-table_key", _gene_sentences(table_key="nope"), KeyError, ["nope"]),
    ("gene_sentences-not-data", lambda c: oc.pp.gene_sentences("table.h5ad"), TypeError, ["str"]),
    # pp.tiles
    ("tiles-tile_size_um-negative", _tiles(tile_size_um=-1), ValueError, ["tile_size_um"]),
    ("tiles-tile_size_um-str", _tiles(tile_size_um="55"), ValueError, ["tile_size_um"]),
    ("tiles-tile_size_um-nan", _tiles(tile_size_um=float("nan")), ValueError, ["tile_size_um"]),
    ("tiles-tile_size_um-huge", _tiles(tile_size_um=1e6), ValueError, ["tile_size_um", "GiB"]),
    ("tiles-um_per_px-zero", _tiles(um_per_px=0), ValueError, ["um_per_px"]),
    ("tiles-um_per_px-tiny", _tiles(um_per_px=1e-6), ValueError, ["um_per_px", "GiB"]),
    ("tiles-microns_per_unit-inf", _tiles(microns_per_unit=float("inf")), ValueError, ["microns_per_unit"]),
    ("tiles-min_tissue-above-1", _tiles(grid=True, tile_size_um=100, min_tissue=2), ValueError, ["min_tissue"]),
    ("tiles-min_tissue-str", _tiles(grid=True, tile_size_um=100, min_tissue="0.5"), ValueError, ["min_tissue"]),
    ("tiles-image_key", _tiles(image_key="nope"), KeyError, ["nope"]),
    ("tiles-grid-without-size", _tiles(grid=True), ValueError, ["tile_size_um"]),
    (
        "tiles-visium-no-scalefactors",
        _prepared(_visium_without_scalefactors, lambda c: oc.pp.tiles(c.reference)),
        KeyError,
        ["tissue_hires_scalef"],
    ),
    # recorded sizes and scales: never used when not a finite number > 0
    (
        "tiles-visium-diameter-negative",
        _prepared(_visium(spot_diameter_fullres=-55.0), lambda c: oc.pp.tiles(c.reference)),
        ValueError,
        ["['spot_diameter_fullres']", "-55.0", "scanpy.read_visium"],
    ),
    (
        "tiles-visium-scalef-zero",
        _prepared(_visium(tissue_hires_scalef=0), lambda c: oc.pp.tiles(c.reference)),
        ValueError,
        ["['tissue_hires_scalef']", "not a finite number > 0"],
    ),
    (
        "tiles-visium-spatial-one-column",
        _prepared(_visium(spatial_columns=1), lambda c: oc.pp.tiles(c.reference)),
        ValueError,
        ["'spatial'", "(n_obs, 2)"],
    ),
    ("tiles-spots-radius-negative", _prepared(_radius(-27.5), _tiles()), ValueError, ["shapes 'spots'", "radius"]),
    (
        "pseudo_spots-stored-scale-negative",
        _prepared(_stored("microns_per_unit", -1.0, table="table"), lambda c: oc.pp.pseudo_spots(c.table)),
        ValueError,
        ["`.uns['microns_per_unit']` is -1.0"],
    ),
    (
        "align-visium-diameter-negative",
        _prepared(_visium(spot_diameter_fullres=-55.0), lambda c: oc.tl.align(c.reference, c.table, use_rep=None)),
        ValueError,
        ["['spot_diameter_fullres']", "-55.0"],
    ),
    # pp.pseudo_spots
    (
        "pseudo_spots-microns_per_unit-huge",
        _pseudo_spots(microns_per_unit=1e9),
        ValueError,
        ["microns_per_unit", "GiB"],
    ),
    ("pseudo_spots-microns_per_unit-str", _pseudo_spots(microns_per_unit="1"), ValueError, ["microns_per_unit"]),
    ("pseudo_spots-spot_diameter_um-negative", _pseudo_spots(spot_diameter_um=-1), ValueError, ["spot_diameter_um"]),
    ("pseudo_spots-spacing_um-nan", _pseudo_spots(spacing_um=float("nan")), ValueError, ["spacing_um"]),
    ("pseudo_spots-spacing-below-diameter", _pseudo_spots(spacing_um=10), ValueError, ["spacing_um"]),
    ("pseudo_spots-min_cells-float", _pseudo_spots(min_cells=1.5), ValueError, ["min_cells"]),
    ("pseudo_spots-min_cells-negative", _pseudo_spots(min_cells=-1), ValueError, ["min_cells"]),
    ("pseudo_spots-spatial_key", _pseudo_spots(spatial_key="nope"), KeyError, ["nope"]),
    ("pseudo_spots-groupby", _pseudo_spots(groupby="nope"), KeyError, ["nope"]),
    # tl.embed
    ("embed-batch_size-float", _embed(batch_size=2.5), ValueError, ["batch_size"]),
    ("embed-batch_size-str", _embed(batch_size="64"), ValueError, ["batch_size"]),
    ("embed-batch_size-bool", _embed(batch_size=True), ValueError, ["batch_size"]),
    ("embed-batch_size-zero", _embed(batch_size=0), ValueError, ["batch_size"]),
    ("embed-modality", _embed(modality="audio"), ValueError, ["modality"]),
    ("embed-precision", _embed(precision="fp8"), ValueError, ["precision"]),
    ("embed-key_added-spatial", _embed(key_added="spatial"), ValueError, ["spatial", "key_added"]),
    ("embed-image-key_added-spatial", _embed(modality="image", key_added="spatial"), ValueError, ["spatial"]),
    ("embed-sentence_key", _embed(sentence_key="nope"), KeyError, ["nope"]),
    ("embed-tile_size_um", _embed(modality="image", tile_size_um=-5), ValueError, ["tile_size_um"]),
    ("embed-tile_size_um-huge", _embed(modality="image", tile_size_um=1e6), ValueError, ["tile_size_um", "GiB"]),
    ("embed-device", _embed(device="tpu:0"), (ValueError, RuntimeError), ["tpu"]),
    ("embed-table_key", _embed(table_key="nope"), KeyError, ["nope"]),
    # tl.annotate
    ("annotate-temperature-negative", _annotate(temperature=-1), ValueError, ["temperature"]),
    ("annotate-temperature-str", _annotate(temperature="1"), ValueError, ["temperature"]),
    ("annotate-use_rep", _annotate(use_rep="nope"), KeyError, ["nope"]),
    (  # a class name zarr could not store: refused before the labels are written (they were, without the scores)
        "annotate-class-name-unstorable",
        lambda c: oc.tl.annotate(
            c.sdata, pd.DataFrame(np.eye(2, 128), index=["CD4\u2215CD25", "B"]), use_rep="X_omiclip_text"
        ),
        ValueError,
        ["`references`", "U+2215"],
    ),
    (
        "annotate-zero-embedding",
        _prepared(_zeroed("X_omiclip_image", 0), _annotate()),
        ValueError,
        ["X_omiclip_image", "zero"],
    ),
    (
        "annotate-zero-reference",
        lambda c: oc.tl.annotate(c.sdata, {"a": np.zeros(32, np.float32), "b": np.ones(32, np.float32)}),
        ValueError,
        ["references", "zero"],
    ),
    (
        "annotate-empty-references",
        lambda c: oc.tl.annotate(c.sdata, {}, model=c.model),
        (TypeError, ValueError),
        ["references"],
    ),
    # tl.retrieve
    ("retrieve-k-float", _retrieve(k=2.0), ValueError, ["`k`"]),
    ("retrieve-k-str", _retrieve(k="5"), ValueError, ["`k`"]),
    ("retrieve-k-bool", _retrieve(k=True), ValueError, ["`k`"]),
    ("retrieve-k-zero", _retrieve(k=0), ValueError, ["`k`"]),
    ("retrieve-k-too-many", _retrieve(k=10_000), ValueError, ["`k`"]),
    ("retrieve-block_size", _retrieve(block_size=0), ValueError, ["block_size"]),
    ("retrieve-block_size-float", _retrieve(block_size=10.5), ValueError, ["block_size"]),
    ("retrieve-method", _retrieve(method="fast"), ValueError, ["method"]),
    ("retrieve-key_added-input", _retrieve(key_added="X_omiclip_image"), ValueError, ["X_omiclip_image"]),
    (
        "retrieve-nan-query",
        _prepared(_nan("X_omiclip_image"), _retrieve()),
        ValueError,
        ["X_omiclip_image", "NaN"],
    ),
    (
        "retrieve-zero-reference",
        _prepared(_zeroed("X_omiclip_text", 1, reference=True), _retrieve()),
        ValueError,
        ["X_omiclip_text", "zero"],
    ),
    ("retrieve-reference_rep", _retrieve(reference_rep="nope"), KeyError, ["nope"]),
    (
        "retrieve-reference-repeated-names",
        _prepared(_repeated_names, _retrieve()),
        ValueError,
        ["The reference repeats 1 `obs_names`", "obs_names_make_unique()"],
    ),
    # tl.predex
    ("predex-k-float", _predex(k=2.0), ValueError, ["`k`"]),
    ("predex-n_top_genes-float", _predex(n_top_genes=2.5), ValueError, ["n_top_genes"]),
    ("predex-n_top_genes-zero", _predex(n_top_genes=0), ValueError, ["n_top_genes"]),
    ("predex-temperature-zero", _predex(weighting="softmax", temperature=0), ValueError, ["temperature"]),
    ("predex-weighting", _predex(weighting="mean"), ValueError, ["weighting"]),
    ("predex-block_size", _predex(block_size=-1), ValueError, ["block_size"]),
    ("predex-genes", _predex(genes=["NOT_A_GENE"]), KeyError, ["NOT_A_GENE"]),
    (
        "predex-zero-reference",
        _prepared(_zeroed("X_omiclip_text", reference=True), _predex()),
        ValueError,
        ["X_omiclip_text", "zero"],
    ),
    # tl.decompose
    ("decompose-epochs-float", _decompose(epochs=1.5), ValueError, ["epochs"]),
    ("decompose-epochs-str", _decompose(epochs="10"), ValueError, ["epochs"]),
    ("decompose-epochs-zero", _decompose(epochs=0), ValueError, ["epochs"]),
    ("decompose-lr-zero", _decompose(lr=0), ValueError, ["lr"]),
    ("decompose-lr-nan", _decompose(lr=float("nan")), ValueError, ["lr"]),
    ("decompose-lr-diverges", _decompose(lr=1000), FloatingPointError, ["diverged", "lower `lr`"]),
    ("decompose-seed-float", _decompose(seed=1.5), ValueError, ["seed"]),
    ("decompose-nms_percentiles", _decompose(nms=True, nms_percentiles=(95, 5)), ValueError, ["nms_percentiles"]),
    ("decompose-nms_percentiles-str", _decompose(nms=True, nms_percentiles="5-95"), ValueError, ["nms_percentiles"]),
    ("decompose-mode", _decompose(mode="spots"), ValueError, ["mode"]),
    ("decompose-groupby", _decompose(groupby="nope"), KeyError, ["nope"]),
    ("decompose-key_added-input", _decompose(key_added="X_omiclip_image"), ValueError, ["X_omiclip_image"]),
    (  # another step's result, not read by this call: lost to a later step if written over
        "decompose-key_added-other-steps-result",
        _decompose(key_added="X_omiclip_text"),
        ValueError,
        ["`.obsm['X_omiclip_text']`", "the result of `embed`", "key_added"],
    ),
    (
        "predex-key_added-other-steps-result",
        _predex(use_rep="X_omiclip_text", key_added="X_omiclip_image"),
        ValueError,
        ["the result of `embed`"],
    ),
    (
        "annotate-key_added-gene-sentences",
        _annotate(key_added="gene_sentence"),
        ValueError,
        ["`.obs['gene_sentence']`", "the result of `gene_sentences`"],
    ),
    (
        "decompose-zero-reference",
        _prepared(_zeroed("X_omiclip_text", reference=True), _decompose()),
        ValueError,
        ["X_omiclip_text", "zero"],
    ),
    (
        "decompose-nan-spots",
        _prepared(_nan("X_omiclip_image"), _decompose()),
        ValueError,
        ["X_omiclip_image", "NaN"],
    ),
    # tl.align
    ("align-coordinate_system", _align(coordinate_system="nope"), ValueError, ["coordinate_system", "nope", "global"]),
    (  # written into the system it reads, the alignment would move every element there, again on every run
        "align-new_coordinate_system-same",
        _align(new_coordinate_system="global"),
        ValueError,
        ["`new_coordinate_system`", "'global'"],
    ),
    ("align-new_coordinate_system-int", _align(new_coordinate_system=123), ValueError, ["`new_coordinate_system`"]),
    (
        "align_stack-new_coordinate_system-same",
        _align_stack(new_coordinate_system="global"),
        ValueError,
        ["`new_coordinate_system`"],
    ),
    ("align-alpha-negative", _align(alpha=-1), ValueError, ["alpha"]),
    ("align-alpha-str", _align(alpha="1"), ValueError, ["alpha"]),
    ("align-beta-zero", _align(beta=0), ValueError, ["beta"]),
    ("align-tol-negative", _align(tol=-1), ValueError, ["tol"]),
    ("align-rtol-negative", _align(rtol=-1), ValueError, ["rtol"]),
    ("align-w-one", _align(w=1), ValueError, ["`w`"]),
    ("align-n_eig-zero", _align(n_eig=0), ValueError, ["n_eig"]),
    ("align-n_eig-float", _align(n_eig=2.5), ValueError, ["n_eig"]),
    ("align-n_landmarks-zero", _align(n_landmarks=0), ValueError, ["n_landmarks"]),
    ("align-max_points", _align(max_points=2), ValueError, ["max_points"]),
    ("align-max_iter-zero", _align(max_iter=0), ValueError, ["max_iter"]),
    ("align-refine_iter-negative", _align(refine_iter=-1), ValueError, ["refine_iter"]),
    ("align-n_pcs-float", _align(n_pcs=1.5), ValueError, ["n_pcs"]),
    ("align-seed-float", _align(seed=0.5), ValueError, ["seed"]),
    ("align-dtype", _align(dtype="float16"), ValueError, ["dtype"]),
    ("align-scaling", _align(scaling="none"), ValueError, ["scaling"]),
    ("align-mode", _align(mode="affine"), ValueError, ["mode"]),
    ("align-key_added-spatial", _align(key_added="spatial"), ValueError, ["spatial", "key_added"]),
    ("align-key_added-input", _align(key_added="X_omiclip_text"), ValueError, ["X_omiclip_text"]),
    ("align-spatial_key", _align(spatial_key="nope"), KeyError, ["nope"]),
    (
        "align-zero-embedding",
        _prepared(_zeroed("X_omiclip_text", 0), _align()),
        ValueError,
        ["X_omiclip_text", "zero"],
    ),
    # tl.align_stack
    ("align_stack-reference", _align_stack(reference=5), ValueError, ["reference"]),
    ("align_stack-reference-float", _align_stack(reference=0.0), ValueError, ["reference"]),
    ("align_stack-z_spacing", _align_stack(z_spacing=-1), ValueError, ["z_spacing"]),
    ("align_stack-alpha", _align_stack(alpha=-1), ValueError, ["alpha"]),
    ("align_stack-one-section", lambda c: oc.tl.align_stack([c.sdata]), ValueError, ["2 sections"]),
    ("align_stack-option", _align_stack(sigma=1), TypeError, ["sigma"]),
    # tl.finetune (all refused before a model is built)
    ("finetune-epochs-float", _finetune(epochs=1.5), ValueError, ["epochs"]),
    ("finetune-batch_size-str", _finetune(batch_size="64"), ValueError, ["batch_size"]),
    ("finetune-batch_size-one", _finetune(batch_size=1), ValueError, ["batch_size"]),
    ("finetune-lr-negative", _finetune(lr=-1), ValueError, ["lr"]),
    ("finetune-weight_decay-nan", _finetune(weight_decay=float("nan")), ValueError, ["weight_decay"]),
    ("finetune-warmup-float", _finetune(warmup=1.5), ValueError, ["warmup"]),
    ("finetune-seed-float", _finetune(seed=0.5), ValueError, ["seed"]),
    ("finetune-freeze", _finetune(freeze="both"), ValueError, ["freeze"]),
    ("finetune-tile_size_um", _finetune(tile_size_um=-1), ValueError, ["tile_size_um"]),
    # tl.embed_cohort
    ("cohort-batch_size-float", _cohort(batch_size=2.5), ValueError, ["batch_size"]),
    ("cohort-min_tissue", _cohort(grid=True, tile_size_um=100, min_tissue=2), ValueError, ["min_tissue"]),
    (
        "cohort-missing-store",
        lambda c: oc.tl.embed_cohort([c.tmp / "nope.zarr"], model=c.model, **TL),
        (FileNotFoundError, ValueError),
        ["nope.zarr"],
    ),
    # pl
    (
        "pl.embedding-n_neighbors-float",
        _pl("embedding", "sdata", use_rep="X_omiclip_text", n_neighbors=2.5),
        ValueError,
        ["n_neighbors"],
    ),
    (
        "pl.retrieval-query-repeated-names",
        _prepared(_repeated_table_names, _pl("retrieval", "sdata", "ref", n=2)),
        ValueError,
        ["The query repeats 1 `obs_names`", "obs_names_make_unique()"],
    ),
    ("pl.embedding-ncols-zero", _pl("embedding", "sdata", use_rep="X_omiclip_text", ncols=0), ValueError, ["ncols"]),
    ("pl.embedding-basis", _pl("embedding", "sdata", use_rep="X_omiclip_text", basis="tsne"), ValueError, ["basis"]),
    ("pl.embedding-use_rep", _pl("embedding", "sdata", use_rep="nope"), KeyError, ["nope"]),
    ("pl.embedding-size", _pl("embedding", "sdata", use_rep="X_omiclip_text", size=-1), ValueError, ["size"]),
    ("pl.embedding_rgb-size", _pl("embedding_rgb", "sdata", size="big"), ValueError, ["size"]),
    (
        "pl.embedding_rgb-zero",
        _prepared(_zeroed("X_omiclip_image", 0), _pl("embedding_rgb", "sdata")),
        ValueError,
        ["zero"],
    ),
    ("pl.retrieval-n-zero", _pl("retrieval", "sdata", "ref", n=0), ValueError, ["`n`"]),
    ("pl.retrieval-n-float", _pl("retrieval", "sdata", "ref", n=1.5), ValueError, ["`n`"]),
    ("pl.annotation-key", _pl("annotation", "sdata", key="nope"), KeyError, ["nope"]),
    ("pl.proportions-key", _pl("proportions", "sdata", key="nope"), KeyError, ["nope"]),
    ("pl.alignment-size", _pl("alignment", "sdata", "sdata", key="X_omiclip_text", size=-2), ValueError, ["size"]),
    ("pl.alignment_stack-elev", _pl("alignment_stack", ["sdata"], elev="up"), ValueError, ["elev"]),
    # io
    ("recover-missing", lambda c: oc.io.recover(c.tmp / "nope.zarr"), FileNotFoundError, ["nope.zarr"]),
    ("recover-file", lambda c: oc.io.recover(_regular_file(c)), ValueError, ["notes.txt", "zarr"]),
    ("write_elements-unknown", lambda c: oc.io.write_elements(_read(c.store), "nope"), KeyError, ["nope"]),
    ("write_elements-no-store", lambda c: oc.io.write_elements(c.sdata, "table"), ValueError, ["sdata.write"]),
    # models
    ("load-seed-float", _load("omiclip-tiny", seed=0.5), ValueError, ["seed"]),
    ("load-unknown", _load("omiclip-huge"), (KeyError, ValueError, FileNotFoundError), ["omiclip-huge"]),
    (
        "load-missing-checkpoint",
        lambda c: oc.models.load("omiclip-tiny", checkpoint=c.tmp / "nope.pt"),
        FileNotFoundError,
        ["nope.pt"],
    ),
    ("load-device", _load("omiclip-tiny", device="tpu"), (ValueError, RuntimeError), ["tpu"]),
    # datasets
    ("synthetic_tissue-size_um", _tissue(size_um=-1), ValueError, ["size_um"]),
    ("synthetic_tissue-seed-float", _tissue(seed=1.5), ValueError, ["seed"]),
    ("synthetic_tissue-n_domains", _tissue(n_domains=1), ValueError, ["n_domains"]),
    ("synthetic_tissue-um_per_px", _tissue(um_per_px=0), ValueError, ["um_per_px"]),
    ("synthetic_tissue-um_per_px-huge-image", _tissue(image=True, size_um=1e6), ValueError, ["GiB"]),
    ("synthetic_reference-n_cells-zero", _reference(n_cells=0), ValueError, ["n_cells"]),
    ("synthetic_reference-n_cells-float", _reference(n_cells=2.5), ValueError, ["n_cells"]),
    ("synthetic_reference-dispersion", _reference(dispersion=-1), ValueError, ["dispersion"]),
    ("her2st-missing", lambda c: oc.datasets.her2st("A1", path=c.tmp / "nope"), FileNotFoundError, ["nope"]),
    # metrics
    ("recall_at_k-k-zero", lambda c: oc.metrics.recall_at_k(A, A, 0), ValueError, ["`k`"]),
    ("recall_at_k-k-str", lambda c: oc.metrics.recall_at_k(A, A, "5"), ValueError, ["`k`"]),
    ("recall_at_k-block_size", lambda c: oc.metrics.recall_at_k(A, A, 1, block_size=0), ValueError, ["block_size"]),
    ("recall_at_k-shapes", lambda c: oc.metrics.recall_at_k(A, A[:2], 1), ValueError, ["(3, 4)"]),
    ("pearson-shapes", lambda c: oc.metrics.pearson(A, B[:2]), ValueError, ["(3, 4)"]),
    ("mse-shapes", lambda c: oc.metrics.mse(A, B[:2]), ValueError, ["(3, 4)"]),
    ("js_divergence-negative", lambda c: oc.metrics.js_divergence(A - 1, B), ValueError, ["negative"]),
    ("js_divergence-base", lambda c: oc.metrics.js_divergence(A, B, base=1), ValueError, ["base"]),
    ("ssim-method", lambda c: oc.metrics.ssim(A, B, method="local"), ValueError, ["method"]),
    ("impact_score-one", lambda c: oc.metrics.impact_score([0.1], [0.2]), ValueError, ["JS", "SSIM"]),
    ("weighted_f1-lengths", lambda c: oc.metrics.weighted_f1(["a", "b"], ["a"]), ValueError, ["2", "1"]),
    ("calinski_harabasz-labels", lambda c: oc.metrics.calinski_harabasz(A, ["a", "b"]), ValueError, ["labels"]),
]


@pytest.mark.parametrize(("call", "error", "words"), [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_refused_and_input_unchanged(inputs, call, error, words):
    if hasattr(call, "prepare"):
        call.prepare(inputs)
    before = snapshot(inputs)
    with pytest.raises(error) as raised:
        call(inputs)
    message = str(raised.value.args[0]) if isinstance(raised.value, KeyError) else str(raised.value)
    for word in words:
        assert word in message, f"{word!r} not in: {message}"
    assert_same(before, snapshot(inputs))


# -- the command line: exit code 1 or 2, the message on stderr, the store as it was ----------------------------

CLI_CASES = [
    # the API's errors in the command line's words: the option, not the Python parameter
    ("embed-batch_size-zero", ["embed", "{store}", "--modality", "text", "--batch-size", "0"], ["`--batch-size`"]),
    (
        "align-use_rep-missing",
        ["align", "{store}", "{store}", "--use-rep", "nope"],
        ["'nope'", "Run `omiclip embed` first"],
    ),
    ("embed-batch_size-float", ["embed", "{store}", "--modality", "text", "--batch-size", "2.5"], ["--batch-size"]),
    ("embed-key_added-spatial", ["embed", "{store}", "--modality", "image", "--key-added", "spatial"], ["spatial"]),
    ("embed-table", ["embed", "{store}", "--modality", "text", "--table", "nope"], ["nope"]),
    ("embed-missing-store", ["embed", "{tmp}/nope.zarr", "--modality", "text"], ["nope.zarr"]),
    ("embed-regular-file", ["embed", "{tmp}/notes.txt", "--modality", "text"], ["notes.txt"]),
    ("embed-corrupt-root", ["embed", "{corrupt}", "--modality", "text"], ["zarr.json", "corrupt.zarr"]),
    ("embed-corrupt-chunk", ["embed", "{corrupt_chunk}", "--modality", "text"], ["tables/table", "corrupt_chunk.zarr"]),
    ("align-corrupt-target", ["align", "{store}", "{corrupt_chunk}"], ["tables/table", "/c/"]),
    (
        "embed-missing-checkpoint",
        ["embed", "{store}", "--modality", "text", "--checkpoint", "{tmp}/nope.pt"],
        ["nope.pt"],
    ),
    ("finetune-epochs-zero", ["finetune", "{store}", "--out", "{tmp}/m.pt", "--epochs", "0"], ["epochs"]),
    ("finetune-lr-negative", ["finetune", "{store}", "--out", "{tmp}/m.pt", "--lr", "-1"], ["lr"]),
    ("finetune-out-folder", ["finetune", "{store}", "--out", "{tmp}"], ["folder"]),
    ("align-max_points", ["align", "{store}", "{store}", "--max-points", "2"], ["`--max-points`"]),
    ("align-key_added-spatial", ["align", "{store}", "{store}", "--key-added", "spatial"], ["spatial"]),
    ("align-mode", ["align", "{store}", "{store}", "--mode", "affine"], ["--mode"]),
    ("demo-size_um", ["demo", "--out", "{tmp}/demo", "--size-um", "-1"], ["`--size-um`"]),
    ("demo-epochs", ["demo", "--out", "{tmp}/demo", "--epochs", "0"], ["epochs"]),
]


@pytest.mark.parametrize(("argv", "words"), [case[1:] for case in CLI_CASES], ids=[case[0] for case in CLI_CASES])
def test_command_line_refuses(inputs, argv, words, capsys, monkeypatch):
    monkeypatch.setenv("OMICLIP_CHECKPOINT", str(inputs.tmp / "unused.pt"))
    store = inputs.tmp / "store.zarr"
    shutil.copytree(inputs.store, store)
    _regular_file(inputs)
    names = {
        "store": store,
        "tmp": inputs.tmp,
        "corrupt": _corrupt_root(inputs),
        "corrupt_chunk": _corrupt_chunk(inputs),
    }
    argv = [arg.format(**names) for arg in argv]
    if "--model" not in argv and argv[0] in ("embed", "finetune"):
        argv += ["--model", "omiclip-tiny"]
    before = snapshot_store(store)
    try:
        code = main(argv)
    except SystemExit as exit:  # argparse: a value of the wrong type or choice
        code = exit.code
    assert code in (1, 2)
    err = capsys.readouterr().err
    for word in words:
        assert word in err, f"{word!r} not in: {err}"
    assert_same(before, snapshot_store(store))
    assert not (inputs.tmp / "demo").exists() or not any((inputs.tmp / "demo").iterdir())


def test_cohort_names_the_damaged_file(inputs, recwarn):
    """A damaged store is a failed row of the summary whose error names the store and the file, not a crash."""
    damaged = _corrupt_root(inputs)
    summary = oc.tl.embed_cohort([damaged], model=inputs.model, progress=False)
    error = summary.loc[str(damaged), "error"]
    assert summary.loc[str(damaged), "status"] == "failed"
    assert "zarr.json" in error and str(damaged) in error


def test_case_count():
    assert len(CASES) + len(CLI_CASES) >= 100
