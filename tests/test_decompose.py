"""Decompose: Tangram's objective on embeddings, proportions, NMS, bad input, accuracy on synthetic tissue."""

import numpy as np
import pandas as pd
import pytest
import torch
from anndata import AnnData

import omiclip as oc
from omiclip._core import mapping as core

TYPES = ["a", "b", "c", "d"]


def _reference(embeddings, codes, categories=TYPES):
    obs = pd.DataFrame(
        {"cell_type": pd.Categorical.from_codes(codes, categories=categories)},
        index=[f"cell{i}" for i in range(len(codes))],
    )
    reference = AnnData(obs=obs)
    reference.obsm["X_omiclip_text"] = np.asarray(embeddings, dtype=np.float32)
    return reference


def _spatial(embeddings, key="X_omiclip_image"):
    spatial = AnnData(obs=pd.DataFrame({"region": "r"}, index=[f"spot{i}" for i in range(len(embeddings))]))
    spatial.obsm[key] = np.asarray(embeddings, dtype=np.float32)
    return spatial


@pytest.fixture
def one_thread():
    """Tangram's loop of tiny ops on one thread, as omiclip runs small problems (much faster on a busy CPU)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def mixtures():
    """Spots of 10 cells each, of four types with known profiles; the reference is exactly those cells.

    Then proportions = cell counts / 10 is an exact optimum of the objective with ``scale=True`` (and in
    cell mode): every mapped embedding matches its spot's and the density of cells is uniform.
    """
    rng = np.random.default_rng(0)
    profiles = rng.normal(size=(len(TYPES), 32))
    counts = np.stack([rng.multinomial(10, p) for p in rng.dirichlet(np.full(len(TYPES), 0.7), size=60)])
    codes = np.repeat(np.arange(len(TYPES)), counts.sum(axis=0))
    return _spatial(counts @ profiles), _reference(profiles[codes], codes), counts / 10


class TestCore:
    @pytest.mark.parametrize(("n_sources", "dim"), [(6, 32), (40, 16)], ids=["few-sources", "many-sources"])
    def test_same_mapping_as_tangram(self, n_sources, dim, one_thread):
        mapping_optimizer = pytest.importorskip("tangram.mapping_optimizer")
        rng = np.random.default_rng(1)
        sources = rng.normal(size=(n_sources, dim)).astype(np.float32)
        spots = rng.normal(size=(80, dim)).astype(np.float32)
        weights = rng.dirichlet(np.ones(n_sources)).astype(np.float32)
        tangram = mapping_optimizer.Mapper(
            S=sources, G=spots, d=np.full(80, 1 / 80), d_source=weights, lambda_d=1, random_state=10
        )
        expected, history = tangram.train(num_epochs=100, learning_rate=0.1, print_each=None)
        ours = core.fit_mapping(sources, spots, weights, epochs=100, lr=0.1, seed=10)
        np.testing.assert_allclose(ours.probabilities, expected, atol=2e-6)
        assert ours.score == pytest.approx(float(history["main_loss"][-1]), abs=1e-3)

    def test_initial_logits_are_tangrams_in_blocks(self, monkeypatch):
        expected = np.random.RandomState(10).normal(0, 1, (7, 13)).astype(np.float32)
        monkeypatch.setattr(core, "_INIT_BLOCK", 20)  # one row per block
        np.testing.assert_array_equal(core.initial_logits(7, 13, 10), expected)

    def test_proportions_by_hand(self):
        # source 0 (60% of cells) puts 1/4 on spot 0; source 1 (40%) puts 1/2 there
        probabilities = np.array([[0.25, 0.75], [0.5, 0.5]])
        proportions = core.proportions_from_mapping(probabilities, np.array([0.6, 0.4]), np.array([0, 1]), 3)
        np.testing.assert_allclose(proportions, [[0.15 / 0.35, 0.2 / 0.35, 0], [0.45 / 0.65, 0.2 / 0.65, 0]])
        # two sources of one group add up
        merged = core.proportions_from_mapping(probabilities, np.array([0.6, 0.4]), np.array([1, 1]), 2)
        np.testing.assert_allclose(merged, [[0, 1], [0, 1]])

    def test_nms_by_hand(self):
        values = np.array([[0.5, 0.3, 0.2], [0.1, 0.6, 0.3], [0.4, 0.4, 0.2]])
        # types that tie for the maximum are all kept, as the official `where(eq(max))`
        np.testing.assert_array_equal(
            core.non_maximum_suppression(values, None), [[0.5, 0, 0], [0, 0.6, 0], [0.4, 0.4, 0]]
        )
        # scaled per column over (min, max): a -> (1, 0, .75), b -> (0, 1, 1/3), c -> (0, 1, 0)
        scaled = core.non_maximum_suppression(values, (0, 100))
        np.testing.assert_allclose(scaled, [[1, 0, 0], [0, 1, 1], [0.75, 0, 0]])
        constant = core.non_maximum_suppression(np.array([[0.5, 0.5], [0.5, 0.5]]), (5, 95))
        np.testing.assert_array_equal(constant, np.zeros((2, 2)))


class TestDecompose:
    @pytest.mark.parametrize(("mode", "scale", "epochs"), [("clusters", True, 400), ("cells", False, 300)])
    def test_recovers_exact_mixtures(self, mixtures, tmp_path, mode, scale, epochs):
        spatial, reference, truth = mixtures
        result = oc.tl.decompose(
            spatial, reference, mode=mode, scale=scale, epochs=epochs, keep_mapping=True, copy=True, progress=False
        )
        proportions = result.obsm["omiclip_proportions"]
        assert list(proportions.columns) == TYPES
        assert (proportions.index == spatial.obs_names).all()
        np.testing.assert_allclose(proportions.sum(axis=1), 1)
        assert np.abs(proportions.to_numpy() - truth).max() < 0.05
        assert np.abs(proportions.to_numpy() - truth).mean() < 0.015
        mapping = result.obsm["omiclip_proportions_mapping"]
        assert mapping.shape == (60, 4 if mode == "clusters" else reference.n_obs)
        np.testing.assert_allclose(np.asarray(mapping).sum(axis=0), 1, rtol=1e-5)
        params = result.uns["omiclip"]["decompose"]["omiclip_proportions"]
        assert params["mode"] == mode and params["score"] > 0.999
        assert params["reference_cells"].sum() == reference.n_obs
        result.write_h5ad(tmp_path / "decomposed.h5ad")  # every key written can be saved

    def test_official_pipeline_gives_the_same_proportions(self, mixtures, one_thread):
        tangram = pytest.importorskip("tangram")
        spatial, reference, _ = mixtures
        # the dimensions tg.pp_adatas keeps (positive somewhere on both sides), and categories ordered by
        # decreasing size, as Tangram orders clusters
        kept = (spatial.obsm["X_omiclip_image"].max(axis=0) > 0) & (reference.obsm["X_omiclip_text"].max(axis=0) > 0)
        spatial = _spatial(spatial.obsm["X_omiclip_image"][:, kept])
        sizes = np.bincount(reference.obs["cell_type"].cat.codes)
        order = np.argsort(-sizes, kind="stable")
        reference = _reference(reference.obsm["X_omiclip_text"][:, kept], reference.obs["cell_type"].cat.codes)
        reference.obs["cell_type"] = reference.obs["cell_type"].cat.reorder_categories([TYPES[i] for i in order])
        oc.tl.decompose(spatial, reference, seed=10, epochs=100, nms=True, progress=False)

        def as_features(adata, key):
            return AnnData(adata.obsm[key].copy(), obs=adata.obs.copy())

        sc_ad, st_ad = as_features(reference, "X_omiclip_text"), as_features(spatial, "X_omiclip_image")
        tangram.pp_adatas(sc_ad, st_ad, genes=None)
        ad_map = tangram.map_cells_to_space(
            sc_ad, st_ad, mode="clusters", cluster_label="cell_type", scale=False, density_prior="uniform",
            random_state=10, num_epochs=100, verbose=False,
        )  # fmt: skip
        assert len(st_ad.uns["training_genes"]) == kept.sum()
        tangram.project_cell_annotations(ad_map, st_ad, annotation="cell_type")
        # the notebooks' conversion: cluster probabilities times cell-type counts, normalised per spot
        per_spot = st_ad.obsm["tangram_ct_pred"][TYPES] * sizes
        expected = per_spot.div(per_spot.sum(axis=1), axis=0)
        np.testing.assert_allclose(spatial.obsm["omiclip_proportions"][TYPES], expected, atol=1e-5)
        nms = spatial.obsm["omiclip_proportions_nms"]
        assert ((nms > 0).sum(axis=1) <= 1).all() and nms.to_numpy().max() == 1
        np.testing.assert_allclose(spatial.obsm["omiclip_proportions"].sum(axis=1), 1)  # soft ones kept

    def test_inputs_untouched_deterministic_and_spatialdata(self, section):
        rng = np.random.default_rng(0)
        table = section.tables["table"]
        table.obsm["X_omiclip_image"] = rng.normal(size=(table.n_obs, 8)).astype(np.float32)
        reference = _reference(rng.normal(size=(30, 8)), np.arange(30) % 4)
        obs_before, reference_before = table.obs.copy(), reference.copy()
        result = oc.tl.decompose(section, reference, epochs=20, copy=True, progress=False)
        assert "omiclip_proportions" not in table.obsm and "omiclip" not in table.uns
        pd.testing.assert_frame_equal(table.obs, obs_before)
        pd.testing.assert_frame_equal(reference.obs, reference_before.obs)
        assert set(reference.obsm) == {"X_omiclip_text"} and reference.uns == {}
        first = result.tables["table"].obsm["omiclip_proportions"]
        assert oc.tl.decompose(section, reference, epochs=20, progress=False) is None
        pd.testing.assert_frame_equal(table.obsm["omiclip_proportions"], first)
        pd.testing.assert_frame_equal(table.obs, obs_before)
        other_seed = oc.tl.decompose(section, reference, epochs=20, seed=1, copy=True, progress=False)
        assert not np.allclose(other_seed.tables["table"].obsm["omiclip_proportions"], first)

    @pytest.mark.gpu
    @pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
    def test_cuda_matches_cpu(self, mixtures):
        spatial, reference, _ = mixtures
        on_cpu = oc.tl.decompose(spatial, reference, epochs=200, device="cpu", copy=True, progress=False)
        on_gpu = oc.tl.decompose(spatial, reference, epochs=200, device="cuda", copy=True, progress=False)
        np.testing.assert_allclose(on_gpu.obsm["omiclip_proportions"], on_cpu.obsm["omiclip_proportions"], atol=1e-3)


class TestBadInput:
    @pytest.fixture
    def pair(self):
        rng = np.random.default_rng(0)
        return _spatial(rng.normal(size=(12, 8))), _reference(rng.normal(size=(20, 8)), np.arange(20) % 4)

    def test_missing_groupby(self, pair):
        spatial, reference = pair
        with pytest.raises(KeyError, match=r"'celltype'.*Pass the column with cell types as `groupby=`"):
            oc.tl.decompose(spatial, reference, groupby="celltype", epochs=5, progress=False)

    def test_cell_type_without_cells_gets_zero(self, pair):
        spatial, reference = pair
        reference.obs["cell_type"] = pd.Categorical.from_codes(np.arange(20) % 3, categories=TYPES)
        with pytest.warns(UserWarning, match=r"without cells.*\['d'\].*remove_unused_categories"):
            oc.tl.decompose(spatial, reference, epochs=5, progress=False)
        proportions = spatial.obsm["omiclip_proportions"]
        assert list(proportions.columns) == TYPES and (proportions["d"] == 0).all()
        np.testing.assert_allclose(proportions.sum(axis=1), 1)

    def test_unlabelled_cells_are_left_out(self, pair):
        spatial, reference = pair
        reference.obs.loc[reference.obs_names[:3], "cell_type"] = np.nan
        with pytest.warns(UserWarning, match="Leaving out 3 reference cells"):
            oc.tl.decompose(spatial, reference, mode="cells", keep_mapping=True, epochs=5, progress=False)
        assert spatial.obsm["omiclip_proportions_mapping"].shape == (12, 17)

    def test_one_cell_type_gives_ones(self, pair):
        spatial, reference = pair
        reference.obs["cell_type"] = pd.Categorical(["only"] * reference.n_obs)
        with pytest.warns(UserWarning, match="one cell type"):
            oc.tl.decompose(spatial, reference, epochs=5, progress=False)
        np.testing.assert_array_equal(spatial.obsm["omiclip_proportions"]["only"], 1)

    def test_errors_leave_the_input_alone(self, pair):
        spatial, reference = pair
        with pytest.raises(ValueError, match="dimensions differ"):
            oc.tl.decompose(spatial, _reference(np.ones((4, 6)), np.arange(4)), progress=False)
        spatial.obsm["X_omiclip_image"][3, 1] = np.nan
        with pytest.raises(ValueError, match="1 rows with NaN"):
            oc.tl.decompose(spatial, reference, progress=False)
        with pytest.raises(KeyError, match=r"Run `oc.tl.embed` first"):
            oc.tl.decompose(spatial, reference, use_rep="X_omiclip_text", progress=False)
        with pytest.raises(ValueError, match="`mode` must be"):
            oc.tl.decompose(spatial, reference, mode="cell", progress=False)
        with pytest.raises(ValueError, match="`nms_percentiles`"):
            oc.tl.decompose(spatial, reference, nms=True, nms_percentiles=(95, 5), progress=False)
        assert set(spatial.obsm) == {"X_omiclip_image"} and "omiclip" not in spatial.uns


def test_st_mode_follows_the_true_proportions(tiny):
    """Synthetic section and reference, text embeddings of the tiny model: far above shuffled labels."""
    section = oc.datasets.synthetic_tissue(size_um=2000, seed=0, image=False).tables["table"]
    reference = oc.datasets.synthetic_reference(n_cells=400, size_um=2000, seed=0)
    for adata in (section, reference):
        oc.pp.gene_sentences(adata)
        oc.tl.embed(adata, model=tiny, progress=False)
    shuffled = reference.copy()
    shuffled.obs["cell_type"] = np.random.default_rng(0).permutation(reference.obs["cell_type"].to_numpy())
    truth = section.obsm["true_proportions"]

    def correlation(labels):
        result = oc.tl.decompose(section, labels, use_rep="X_omiclip_text", copy=True, progress=False)
        predicted = result.obsm["omiclip_proportions"][truth.columns]
        return np.mean(oc.metrics.pearson(predicted.to_numpy(), truth.to_numpy()))

    true_labels, shuffled_labels = correlation(reference), correlation(shuffled)
    assert true_labels > 0.4
    assert true_labels > shuffled_labels + 0.3
