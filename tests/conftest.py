from pathlib import Path

import pytest

import omiclip as oc

# shared/ lies beside the repository, in sessions and in CI
HER2ST = Path(__file__).resolve().parents[2] / "shared" / "data" / "her2st"


@pytest.fixture(scope="session")
def tiny():
    return oc.models.load("omiclip-tiny", device="cpu")


@pytest.fixture(scope="session")
def _section():
    return oc.datasets.synthetic_tissue(size_um=1200, um_per_px=2.0, seed=3)


@pytest.fixture
def section(_section):
    """A small synthetic section: fresh tables and shapes per test; images and points shared, never modified."""
    from omiclip._anndata import working_copy

    sdata = working_copy(_section, copy=True)
    for key, shapes in _section.shapes.items():
        sdata.shapes[key] = shapes.copy()
    return sdata


@pytest.fixture
def spots(section):
    return section.tables["table"]


@pytest.fixture(scope="session")
def joint_pca():
    """``joint_pca(source, target)`` writes ``obsm["X_pca"]`` of both tables from one PCA of their log-normalised counts."""

    def run(source, target, n_comps: int = 20) -> None:
        import anndata as ad
        import scanpy as sc

        both = ad.concat({"t": target, "s": source}, index_unique="-")
        sc.pp.normalize_total(both)
        sc.pp.log1p(both)
        sc.pp.pca(both, n_comps=n_comps, random_state=0)
        target.obsm["X_pca"] = both.obsm["X_pca"][: target.n_obs]
        source.obsm["X_pca"] = both.obsm["X_pca"][target.n_obs :]

    return run


@pytest.fixture(scope="session")
def her2st_path():
    if not (HER2ST / "counts").is_dir():
        pytest.skip(f"HER2ST data not found at {HER2ST}")
    return HER2ST


@pytest.fixture(scope="session")
def trained(tiny):
    """omiclip-tiny fine-tuned from scratch on 80% of the spots of a synthetic section (about a minute).

    Returns the section (both embeddings of the fine-tuned model written), the held-out mask and the model.
    """
    import numpy as np

    from omiclip._anndata import working_copy

    sdata = oc.datasets.synthetic_tissue(size_um=2000, um_per_px=2.0, seed=0)
    oc.pp.gene_sentences(sdata)
    table = sdata.tables["table"]
    held_out = np.random.default_rng(0).random(table.n_obs) < 0.2
    train = working_copy(sdata, copy=True)
    train.tables["table"] = table[~held_out].copy()
    # from scratch on ~250 pairs every pair counts: train the last partial batch too (the official loader drops it)
    tuned = oc.tl.finetune(train, model=tiny, epochs=12, lr=5e-4, seed=0, drop_last=False, progress=False)
    for modality in ("text", "image"):
        oc.tl.embed(sdata, modality=modality, model=tuned, progress=False)
    return sdata, held_out, tuned
