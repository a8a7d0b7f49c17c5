"""Annotate, retrieve and predex on data with known answers."""

import warnings

import numpy as np
import pandas as pd
import pytest
from anndata import AnnData

import omiclip as oc


def _unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture
def paired():
    """A reference of 40 random unit embeddings; queries are noisy copies of a known permutation of them."""
    rng = np.random.default_rng(0)
    reference = AnnData(obs=pd.DataFrame(index=[f"ref{i}" for i in range(40)]))
    reference.obsm["X_omiclip_text"] = _unit(rng.normal(size=(40, 16)))
    truth = rng.permutation(40)[:25]
    query = AnnData(obs=pd.DataFrame(index=[f"q{i}" for i in range(25)]))
    query.obsm["X_omiclip_image"] = _unit(reference.obsm["X_omiclip_text"][truth] + rng.normal(0, 0.05, (25, 16)))
    return query, reference, truth


class TestRetrieve:
    @pytest.mark.parametrize("method", ["exact", "approximate"])
    def test_finds_the_known_partner(self, paired, method):
        query, reference, truth = paired
        oc.tl.retrieve(query, reference, k=5, method=method, block_size=7, progress=False)
        found = query.obsm["omiclip_retrieved"]
        np.testing.assert_array_equal(found[:, 0], truth)
        scores = query.obsm["omiclip_retrieved_scores"]
        assert (np.diff(scores, axis=1) <= 1e-6).all()  # best first
        expected = query.obsm["X_omiclip_image"] @ reference.obsm["X_omiclip_text"].T
        np.testing.assert_allclose(scores, np.take_along_axis(expected, found, axis=1), atol=1e-5)
        names = query.uns["omiclip"]["retrieve"]["omiclip_retrieved"]["reference_obs_names"]
        assert names[found[3, 0]] == f"ref{truth[3]}"

    def test_exact_top_k_is_the_sorted_similarity(self, paired):
        query, reference, _ = paired
        result = oc.tl.retrieve(query, reference, k=40, copy=True, progress=False)
        expected = np.argsort(
            -(query.obsm["X_omiclip_image"] @ reference.obsm["X_omiclip_text"].T), axis=1, kind="stable"
        )
        np.testing.assert_array_equal(result.obsm["omiclip_retrieved"], expected)
        assert "omiclip_retrieved" not in query.obsm

    @pytest.mark.parametrize("method", ["exact", "approximate"])
    def test_scores_are_cosines_whatever_the_embeddings_lengths(self, paired, method):
        """Embeddings from another model need not be unit length: a long reference row must not win every query."""
        query, reference, truth = paired
        unit = oc.tl.retrieve(query, reference, k=3, method=method, copy=True, progress=False)
        query.obsm["X_omiclip_image"] = query.obsm["X_omiclip_image"] * np.linspace(0.5, 3, 25)[:, None]
        long = reference.obsm["X_omiclip_text"].copy()
        long[truth[0] + 1 if truth[0] < 39 else 0] *= 10  # not the partner of query 0
        reference.obsm["X_omiclip_text"] = long
        scaled = oc.tl.retrieve(query, reference, k=3, method=method, copy=True, progress=False)
        np.testing.assert_array_equal(scaled.obsm["omiclip_retrieved"], unit.obsm["omiclip_retrieved"])
        np.testing.assert_allclose(
            scaled.obsm["omiclip_retrieved_scores"], unit.obsm["omiclip_retrieved_scores"], atol=1e-5
        )
        assert scaled.obsm["omiclip_retrieved_scores"].max() <= 1 + 1e-5

    def test_errors(self, paired):
        query, reference, _ = paired
        with pytest.raises(ValueError, match=r"`k` must be an integer in \[1, 40\], got 41"):
            oc.tl.retrieve(query, reference, k=41)
        for bad in (0, -1):
            with pytest.raises(ValueError, match="`block_size` must be a positive integer"):
                oc.tl.retrieve(query, reference, k=5, block_size=bad)
        assert "omiclip_retrieved" not in query.obsm
        with pytest.raises(KeyError, match=r"Run `oc.tl.embed` first"):
            oc.tl.retrieve(query, reference, use_rep="X_missing")
        reference.obsm["X_omiclip_text"] = reference.obsm["X_omiclip_text"][:, :8]
        with pytest.raises(ValueError, match="dimensions differ"):
            oc.tl.retrieve(query, reference)
        query.obsm["X_omiclip_image"][0, 0] = np.nan
        with pytest.raises(ValueError, match="NaN"):
            oc.tl.retrieve(query, reference)


class TestPredex:
    @pytest.fixture
    def small(self):
        query = AnnData(obs=pd.DataFrame(index=["a", "b"]))
        query.obsm["X_omiclip_image"] = np.array([[1.0, 0.0], [0.6, 0.8]], dtype=np.float32)
        reference = AnnData(
            np.array([[1.0, 10.0], [3.0, 0.0], [5.0, 2.0]], dtype=np.float32),
            obs=pd.DataFrame(index=["r0", "r1", "r2"]),
            var=pd.DataFrame(index=["G1", "G2"]),
        )
        reference.obsm["X_omiclip_text"] = np.array([[1.0, 0.0], [0.0, 1.0], [-0.6, 0.8]], dtype=np.float32)
        return query, reference

    def test_official_rule_by_hand(self, small):
        query, reference = small
        result = oc.tl.predex(query, reference, block_size=1, progress=False)
        # a: similarities (1, 0, -0.6) -> (1*[1,10] + 0 - 0.6*[5,2]) / 0.4
        # b: similarities (0.6, 0.8, 0.28) -> (0.6*[1,10] + 0.8*[3,0] + 0.28*[5,2]) / 1.68
        np.testing.assert_allclose(result.X[0], [(1 - 3) / 0.4, (10 - 1.2) / 0.4], rtol=1e-5)
        np.testing.assert_allclose(result.X[1], [(0.6 + 2.4 + 1.4) / 1.68, (6 + 0.56) / 1.68], rtol=1e-5)
        assert list(result.obs_names) == ["a", "b"] and list(result.var_names) == ["G1", "G2"]

    def test_weights_are_cosines_whatever_the_embeddings_lengths(self, small):
        query, reference = small
        expected = oc.tl.predex(query, reference, progress=False).X
        query.obsm["X_omiclip_image"] = query.obsm["X_omiclip_image"] * np.array([[2.0], [0.5]], dtype=np.float32)
        reference.obsm["X_omiclip_text"] = reference.obsm["X_omiclip_text"] * np.array([[1.0], [10.0], [3.0]])
        np.testing.assert_allclose(oc.tl.predex(query, reference, progress=False).X, expected, rtol=1e-5)

    def test_options_by_hand(self, small):
        query, reference = small
        clipped = oc.tl.predex(query, reference, clip_negative=True, progress=False)
        np.testing.assert_allclose(clipped.X[0], [1, 10], rtol=1e-5)  # only r0 has a positive weight for a
        top1 = oc.tl.predex(query, reference, k=1, progress=False)
        np.testing.assert_allclose(top1.X, [[1, 10], [3, 0]], rtol=1e-5)  # nearest reference's expression
        soft = oc.tl.predex(query, reference, weighting="softmax", temperature=0.5, genes=["G2"], progress=False)
        weights = np.exp(np.array([1.0, 0.0, -0.6]) / 0.5)
        assert soft.X[0, 0] == pytest.approx((weights @ [10, 0, 2]) / weights.sum(), rel=1e-5)
        assert soft.var_names.tolist() == ["G2"]

    def test_default_genes_and_writing(self, small):
        query, reference = small
        result = oc.tl.predex(query, reference, n_top_genes=1, key_added="predicted", progress=False)
        assert result.var_names.tolist() == ["G2"]  # mean 4 > 3
        assert query.obsm["predicted"].columns.tolist() == ["G2"]

    def test_layer_is_averaged_and_recorded(self, small):
        query, reference = small
        reference.layers["log1p"] = np.log1p(reference.X)
        result = oc.tl.predex(query, reference, layer="log1p", k=1, progress=False)
        np.testing.assert_allclose(result.X, np.log1p([[1, 10], [3, 0]]), rtol=1e-5)
        assert result.uns["omiclip"]["predex"]["omiclip_predex"]["matrix"] == "layers/log1p"
        plain = oc.tl.predex(query, reference, k=1, progress=False)
        assert plain.uns["omiclip"]["predex"]["omiclip_predex"]["matrix"] == "X"
        with pytest.raises(KeyError, match="Layer 'counts' not found in the reference"):
            oc.tl.predex(query, reference, layer="counts")

    def test_copy_writes_into_a_copy_of_the_query_only(self, small):
        query, reference = small
        before = set(query.obsm)
        copied = oc.tl.predex(query, reference, copy=True, progress=False)
        assert set(query.obsm) == before and "omiclip" not in query.uns  # the input is untouched
        assert copied is not query and copied.obsm["omiclip_predex"].columns.tolist() == ["G1", "G2"]
        expected = oc.tl.predex(query, reference, progress=False).X
        np.testing.assert_allclose(copied.obsm["omiclip_predex"].to_numpy(), expected, rtol=1e-6)
        assert copied.uns["omiclip"]["predex"]["omiclip_predex"]["matrix"] == "X"
        named = oc.tl.predex(query, reference, copy=True, key_added="mine", progress=False)
        assert "mine" in named.obsm and "mine" not in query.obsm
        oc.tl.predex(query, reference, key_added="mine", progress=False)  # in place, as before
        assert "mine" in query.obsm and set(query.uns["omiclip"]["predex"]) == {"mine"}

    def test_raw_counts_are_flagged_with_the_fix(self, small):
        query, reference = small
        reference.X = reference.X * 10  # whole numbers up to 100
        with pytest.warns(UserWarning, match=r"`.X`, looks like raw counts \(whole numbers, up to 100\).*log1p"):
            oc.tl.predex(query, reference, k=1, progress=False)
        reference.layers["counts"] = reference.X.copy()
        reference.X = np.log1p(reference.X)
        with pytest.warns(UserWarning, match=r"`.layers\['counts'\]`, looks like raw counts"):
            oc.tl.predex(query, reference, layer="counts", k=1, progress=False)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            oc.tl.predex(query, reference, k=1, progress=False)  # normalised: no warning
            reference.X = reference.layers["counts"] / 10  # small whole numbers are not taken for counts
            oc.tl.predex(query, reference, k=1, progress=False)

    def test_weights_summing_to_at_most_zero_are_flagged(self, small):
        query, reference = small
        query.obsm["X_omiclip_image"][0] = [-1.0, 0.0]  # similarities (-1, 0, 0.6): sum -0.4, the sign flips
        with pytest.warns(RuntimeWarning, match="1 of 2 observations sum to <= 0"):
            flipped = oc.tl.predex(query, reference, progress=False)
        np.testing.assert_allclose(flipped.X[0], [(-1 + 3) / -0.4, (-10 + 1.2) / -0.4], rtol=1e-5)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            oc.tl.predex(query, reference, k=1, progress=False)  # the nearest reference: a positive weight

    def test_errors(self, small):
        query, reference = small
        with pytest.raises(KeyError, match="not in the reference"):
            oc.tl.predex(query, reference, genes=["G1", "NOPE"])
        with pytest.raises(ValueError, match=r"`k` must be an integer in \[1, 3\], got 4"):
            oc.tl.predex(query, reference, k=4)
        with pytest.raises(ValueError, match="`temperature` must be a finite number > 0"):
            oc.tl.predex(query, reference, weighting="softmax", temperature=0)
        with pytest.raises(ValueError, match="`block_size` must be a positive integer"):
            oc.tl.predex(query, reference, block_size=-1)
        for bad in (0, -3):
            with pytest.raises(ValueError, match="`n_top_genes` must be a positive integer"):
                oc.tl.predex(query, reference, n_top_genes=bad)
        reference.var_names = ["G1", "G1"]
        with pytest.raises(ValueError, match="var_names are not unique"):
            oc.tl.predex(query, reference)


class TestAnnotate:
    @pytest.fixture
    def adata(self):
        adata = AnnData(np.ones((3, 3), dtype=np.float32), var=pd.DataFrame(index=["EPCAM", "KRT8", "CD3D"]))
        adata.obsm["X_omiclip_image"] = _unit(np.array([[1.0, 0.1], [0.1, 1.0], [0.7, 0.7]]))
        return adata

    def test_precomputed_references_and_fusion(self, adata):
        references = pd.DataFrame([[1.0, 0.0], [0.0, 2.0]], index=["tumor", "immune"])
        oc.tl.annotate(adata, references)
        assert adata.obs["omiclip_annotation"].tolist()[:2] == ["tumor", "immune"]
        scores = adata.obsm["omiclip_annotation_scores"]
        np.testing.assert_allclose(scores.to_numpy(), adata.obsm["X_omiclip_image"] @ np.eye(2), atol=1e-6)
        # a second model that strongly prefers "immune" everywhere flips the undecided third observation
        other = pd.DataFrame({"immune": [0.0, 1.0, 1.0], "tumor": [1.0, 0.0, 0.0]})
        oc.tl.annotate(adata, references, other_scores=other, class_temperature=0.1)
        assert adata.obs["omiclip_annotation"].tolist() == ["tumor", "immune", "immune"]
        np.testing.assert_allclose(adata.obsm["omiclip_annotation_scores"].sum(axis=1), 1, rtol=1e-6)

    def test_scores_are_cosines_whatever_the_embeddings_lengths(self, adata):
        references = pd.DataFrame([[1.0, 0.0], [0.0, 2.0]], index=["tumor", "immune"])
        expected = oc.tl.annotate(adata, references, copy=True).obsm["omiclip_annotation_scores"]
        adata.obsm["X_omiclip_image"] = adata.obsm["X_omiclip_image"] * np.array([[1.0], [1.0], [5.0]])
        scaled = oc.tl.annotate(adata, references, copy=True).obsm["omiclip_annotation_scores"]
        np.testing.assert_allclose(scaled.to_numpy(), expected.to_numpy(), atol=1e-6)

    def test_temperature_is_the_official_softmax_over_observations(self, adata):
        """annotate_with_bulk(tensor=True): softmax over all spots of cos / (sqrt(768) T), by hand for dim 2."""
        references = pd.DataFrame([[1.0, 0.0], [0.0, 2.0]], index=["tumor", "immune"])
        oc.tl.annotate(adata, references, temperature=0.5)
        cosine = adata.obsm["X_omiclip_image"] @ np.eye(2)
        expected = np.exp(cosine / (np.sqrt(2) * 0.5))
        expected /= expected.sum(axis=0)  # each reference's heat map sums to 1 over the observations
        np.testing.assert_allclose(adata.obsm["omiclip_annotation_scores"].to_numpy(), expected, rtol=1e-6)
        with pytest.raises(ValueError, match="not both"):
            oc.tl.annotate(adata, references, temperature=1.0, class_temperature=1.0)

    def test_other_scores_rows_are_matched_by_name(self, adata):
        references = pd.DataFrame([[1.0, 0.0], [0.0, 2.0]], index=["tumor", "immune"])
        adata.obs_names = ["a", "b", "c"]
        other = pd.DataFrame({"tumor": [0.0, 1.0, 0.0], "immune": [1.0, 0.0, 1.0]}, index=["a", "b", "c"])
        oc.tl.annotate(adata, references, other_scores=other, class_temperature=0.1, key_added="by_name")
        oc.tl.annotate(adata, references, other_scores=other.iloc[::-1], class_temperature=0.1, key_added="reversed")
        np.testing.assert_allclose(adata.obsm["by_name_scores"], adata.obsm["reversed_scores"])
        with pytest.raises(KeyError, match="no row for 1 observations"):
            oc.tl.annotate(adata, references, other_scores=other.iloc[:2])
        with pytest.raises(ValueError, match="NaN"):
            oc.tl.annotate(adata, references, other_scores=np.full((3, 2), np.nan))
        with pytest.raises(ValueError, match="`references` is empty"):
            oc.tl.annotate(adata, pd.DataFrame(np.zeros((0, 2))))
        assert "omiclip_annotation" not in adata.obs

    def test_marker_lists(self, adata, tiny):
        adata.obsm["X_omiclip_image"] = tiny.encode_text(["EPCAM KRT8", "CD3D", "EPCAM"])  # stand-in embeddings
        # the sentence is the marker list as given (official), also with genes the table does not have
        oc.tl.annotate(adata, {"tumor": ["EPCAM", "KRT8", "NOTAGENE"], "T cell": ["CD3D"]}, model=tiny)
        expected = adata.obsm["X_omiclip_image"] @ tiny.encode_text(["EPCAM KRT8 NOTAGENE", "CD3D"]).T
        np.testing.assert_allclose(adata.obsm["omiclip_annotation_scores"].to_numpy(), expected, atol=1e-5)
        assert adata.obs["omiclip_annotation"].tolist()[:2] == ["tumor", "T cell"]
        with pytest.raises(ValueError, match="has no marker gene"):
            oc.tl.annotate(adata, {"tumor": []}, model=tiny)
        with pytest.raises(ValueError, match="pass `model=`"):
            oc.tl.annotate(adata, {"tumor": ["EPCAM"]})

    def test_bulk_profiles(self, adata, tiny):
        bulk = AnnData(
            np.array([[9, 8, 0], [0, 0, 9]], dtype=np.float32),
            obs=pd.DataFrame(index=["tumour bulk", "T cell bulk"]),
            var=pd.DataFrame(index=["EPCAM", "KRT8", "CD3D"]),
        )
        adata.obsm["X_omiclip_image"] = tiny.encode_text(["EPCAM KRT8", "CD3D", "KRT8 EPCAM"])
        oc.tl.annotate(adata, bulk, model=tiny)
        assert adata.obs["omiclip_annotation"].tolist()[:2] == ["tumour bulk", "T cell bulk"]

    def test_recovers_synthetic_domains_after_fine_tuning(self, trained):
        from omiclip.datasets._tissue_biology import DOMAINS, MARKERS

        sdata, held_out, tuned = trained
        table = sdata.tables["table"]
        markers = {
            domain.name: [g for cell_type, f in domain.composition.items() if f >= 0.3 for g in MARKERS[cell_type]]
            for domain in DOMAINS[:5]
        }
        oc.tl.annotate(sdata, markers, model=tuned)
        truth, predicted = table.obs["domain"][held_out], table.obs["omiclip_annotation"][held_out]
        chance = (truth.value_counts(normalize=True) ** 2).sum()  # weighted F1 of frequency-matched guessing
        assert oc.metrics.weighted_f1(truth, predicted) > max(0.35, chance + 0.1)


def test_annotate_whole_slide_grid(section, tiny):
    grid = oc.pp.tiles(section, grid=True, tile_size_um=150)
    oc.tl.embed(section, modality="image", model=tiny, tiles=grid, progress=False)
    grid_table = section.tables["he_grid_table"]
    embedding = grid_table.obsm["X_omiclip_image"]
    references = pd.DataFrame(embedding[[0, -1]], index=["first tile", "last tile"])
    oc.tl.annotate(section, references, table_key="he_grid_table")
    labels = grid_table.obs["omiclip_annotation"]
    assert labels.iloc[0] == "first tile" and labels.iloc[-1] == "last tile"
    assert grid_table.obsm["omiclip_annotation_scores"].shape == (len(grid), 2)
