"""Every tl result survives ``sdata.write`` and ``spatialdata.read_zarr``: it still plots and feeds the next step."""

import matplotlib

matplotlib.use("Agg")

import warnings

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

import omiclip as oc

# a cell type whose name zarr cannot use as a column name (pbmc68k has it)
SLASHED = "CD4+/CD25 T Reg"


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _class_embeddings(reference) -> pd.DataFrame:
    """Mean text embedding per cell type: precomputed references for ``oc.tl.annotate``."""
    groups = reference.obs["cell_type"]
    means = [reference.obsm["X_omiclip_text"][(groups == c).to_numpy()].mean(axis=0) for c in groups.cat.categories]
    return pd.DataFrame(np.stack(means), index=groups.cat.categories)


@pytest.fixture(scope="module")
def stored(tmp_path_factory, tiny):
    """Paths of three zarr stores holding every tl result: a section, a second section and a reference."""
    from spatialdata import SpatialData
    from spatialdata.models import TableModel

    section = oc.datasets.synthetic_tissue(size_um=1200, um_per_px=2.0, seed=3)
    target = oc.datasets.synthetic_tissue(size_um=1200, um_per_px=2.0, seed=3, section=1)
    reference = oc.datasets.synthetic_reference(n_cells=300, size_um=1200, seed=3)
    types = reference.obs["cell_type"]
    reference.obs["cell_type"] = types.cat.rename_categories({types.cat.categories[2]: SLASHED})
    for data in (section, target, reference):
        oc.pp.gene_sentences(data)
        oc.tl.embed(data, model=tiny, progress=False)
    oc.tl.embed(section, modality="image", model=tiny, progress=False)
    cells = SpatialData(tables={"cells": TableModel.parse(reference)})

    oc.tl.annotate(section, _class_embeddings(reference))
    oc.tl.decompose(section, cells, epochs=20, progress=False)
    oc.tl.retrieve(section, section, k=3, progress=False)
    oc.tl.predex(section, section, n_top_genes=5, k=5, key_added="omiclip_predex", progress=False)
    oc.tl.align(section, target, max_iter=20, progress=False)
    oc.tl.align_stack([section, target], key_added="spatial_stack", z_spacing=10.0, max_iter=20, progress=False)

    root = tmp_path_factory.mktemp("stores")
    paths = {name: root / f"{name}.zarr" for name in ("section", "target", "cells")}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="zarr v3 autosharding")
        for name, data in (("section", section), ("target", target), ("cells", cells)):
            data.write(paths[name])
    return paths


@pytest.fixture
def read(stored):
    """The stores read back, fresh for each test (reading is lazy: cheap)."""
    from spatialdata import read_zarr

    return {name: read_zarr(path) for name, path in stored.items()}


def test_names_with_a_slash_survive_the_store(read):
    table = read["section"].tables["table"]
    assert table.uns["omiclip"]["decompose"]["omiclip_proportions"]["cell_types"][2] == SLASHED
    axes = oc.pl.proportions(read["section"], color=[SLASHED], show=False)
    assert axes[0].get_title() == SLASHED
    axes = oc.pl.annotation(read["section"], color=[SLASHED], labels=False, show=False)
    assert axes[0].get_title() == SLASHED


PLOTS = {
    "embedding": lambda r: oc.pl.embedding(r["section"], color="domain", basis="pca", show=False),
    "embedding_rgb": lambda r: oc.pl.embedding_rgb(r["section"], show=False),
    "annotation": lambda r: oc.pl.annotation(r["section"], image_key="he", show=False),
    "proportions": lambda r: oc.pl.proportions(r["section"], image_key="he", show=False),
    "retrieval": lambda r: oc.pl.retrieval(r["section"], r["section"], n=2, show=False),
    "predex": lambda r: oc.pl.predex(r["section"], "omiclip_predex", show=False),
    "alignment": lambda r: oc.pl.alignment(r["section"], r["target"], image_key="he", show=False),
    "alignment_stack": lambda r: oc.pl.alignment_stack([r["section"], r["target"]], key="spatial_stack", show=False),
}


def test_every_plot_is_covered():
    assert set(PLOTS) == set(oc.pl.__all__) - {"pcs_as_rgb"}  # pcs_as_rgb takes an array


@pytest.mark.parametrize("plot", PLOTS.values(), ids=PLOTS.keys())
def test_read_back_results_plot(read, plot):
    drawn = plot(read)
    axes = np.ravel(np.asarray(drawn, dtype=object))
    assert len(axes) and all(ax.has_data() for ax in axes)


# each next step: what it runs on the read-back stores, the store it writes to, and the record it adds
NEXT_STEPS = {
    "embed": (lambda r, tiny: oc.tl.embed(r["section"], model=tiny, key_added="again", progress=False), "section"),
    "annotate": (
        lambda r, tiny: oc.tl.annotate(
            r["section"], _class_embeddings(r["cells"].tables["cells"]), use_rep="X_omiclip_text", key_added="again"
        ),
        "section",
    ),
    "decompose": (
        lambda r, tiny: oc.tl.decompose(
            r["section"], r["cells"], reference_table_key="cells", epochs=5, key_added="again", progress=False
        ),
        "section",
    ),
    "retrieve": (
        lambda r, tiny: oc.tl.retrieve(r["section"], r["cells"], k=2, key_added="again", progress=False),
        "section",
    ),
    "predex": (
        lambda r, tiny: oc.tl.predex(r["section"], r["section"], n_top_genes=3, key_added="again", progress=False),
        "section",
    ),
    "align": (
        lambda r, tiny: oc.tl.align(r["target"], r["section"], key_added="again", max_iter=5, progress=False),
        "target",
    ),
    "align_stack": (
        lambda r, tiny: oc.tl.align_stack([r["section"], r["target"]], key_added="again", max_iter=5, progress=False),
        "target",
    ),
}


@pytest.mark.parametrize(("name", "step"), NEXT_STEPS.items(), ids=NEXT_STEPS.keys())
def test_read_back_results_feed_the_next_step(read, tiny, name, step):
    run, store = step
    recorded = "align" if name == "align_stack" else name  # a stack's sections hold align's records
    earlier = set(read[store].tables["table"].uns["omiclip"].get(recorded, {}))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # predex's raw weights, CPD stopped after 5 iterations
        run(read, tiny)
    assert set(read[store].tables["table"].uns["omiclip"][recorded]) == earlier | {"again"}  # read-back records stay
