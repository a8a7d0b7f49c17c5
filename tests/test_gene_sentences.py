import warnings

import numpy as np
import pandas as pd
import pytest
from anndata import AnnData
from scipy import sparse

import omiclip as oc
from omiclip._core import sentences as core


def _adata(matrix, genes):
    return AnnData(
        matrix, var=pd.DataFrame(index=genes), obs=pd.DataFrame(index=[f"o{i}" for i in range(matrix.shape[0])])
    )


def _official(df: pd.DataFrame, n: int) -> list[str]:
    """The official generate_gene_df rule on a dense frame: nlargest per row, keep='first'."""
    return [" ".join(row.nlargest(n).index) for _, row in df.iterrows()]


class TestRanking:
    def test_hand_computed(self):
        genes = ["A", "B", "C", "D", "E", "F"]
        x = np.array(
            [
                [0, 5, 1, 5, 0, 2],  # tie B/D kept in var order
                [0, 0, 0, 0, 0, 0],  # nothing expressed
                [3, 0, 0, 0, 0, 0],  # fewer than n_genes expressed
            ],
            dtype=np.float32,
        )
        adata = _adata(x, genes)
        # pad=False: the default is now the official padding (tested below)
        with pytest.warns(UserWarning, match="1 of 3 observations have no expressed"):
            oc.pp.gene_sentences(adata, n_genes=3, exclude=None, pad=False)
        assert adata.obs["gene_sentence"].tolist() == ["B D F", "", "A"]
        np.testing.assert_array_equal(adata.obs["gene_sentence_n_expressed"], [3, 0, 1])

    def test_padding_reproduces_official_rule(self):
        genes = ["A", "B", "C", "D", "E", "F"]
        x = np.array([[0, 5, 1, 5, 0, 2], [3, 0, 0, 0, 0, 0]], dtype=np.float32)
        adata = _adata(x, genes)
        oc.pp.gene_sentences(adata, n_genes=4, exclude=None, pad=True)
        assert adata.obs["gene_sentence"].tolist() == ["B D F C", "A B C D"]

    def test_padding_is_the_default_and_skips_excluded_genes(self):
        # official: drop excluded genes, then nlargest(n) per row over all remaining genes, zeros in var order
        genes = ["GAPDH", "KRT8", "MT-CO1", "EPCAM", "KRT19", "MS4A1", "ACTB", "PTPRC"]  # GAPDH, ACTB: housekeeping
        x = np.array(
            [
                [9, 0, 7, 0, 2, 0, 5, 0],  # one gene after exclusions: padded with KRT8 EPCAM (zeros, var order)
                [0, 0, 0, 0, 0, 0, 0, 0],  # nothing expressed: padding only
                [0, 1, 0, 4, 1, 3, 0, 0],  # four expressed (tie KRT8/KRT19 at 1 in var order): no padding
                [0, 0, 0, 0, 0, 0, 0, 6],  # the last gene expressed: it comes first, then the zeros in var order
            ],
            dtype=np.float32,
        )
        adata = _adata(sparse.csr_matrix(x), genes)
        with pytest.warns(UserWarning, match="1 of 4 observations .* padding only"):
            oc.pp.gene_sentences(adata, n_genes=3)
        expected = ["KRT19 KRT8 EPCAM", "KRT8 EPCAM KRT19", "EPCAM MS4A1 KRT8", "PTPRC KRT8 EPCAM"]
        assert adata.obs["gene_sentence"].tolist() == expected
        np.testing.assert_array_equal(adata.obs["gene_sentence_n_expressed"], [1, 0, 3, 1])
        # ties at the lowest value: the padding genes; in row 2 KRT8, chosen over KRT19 (both 1) by var order
        np.testing.assert_array_equal(adata.obs["gene_sentence_n_ties"], [2, 3, 1, 2])
        np.testing.assert_array_equal(adata.obs["gene_sentence_n_ties_in_context"], [2, 3, 1, 2])
        assert adata.uns["omiclip"]["gene_sentences"]["gene_sentence"]["pad"] is True

    @pytest.mark.parametrize("fmt", ["dense", "csr", "csc"])
    @pytest.mark.parametrize("pad", [False, True])
    def test_matches_pandas_nlargest_on_ties(self, fmt, pad):
        rng = np.random.default_rng(0)
        dense = rng.poisson(0.8, size=(60, 40)).astype(np.float32)  # many ties and zeros
        dense[5] = 0
        genes = [f"G{i}" for i in range(40)]
        matrix = {"dense": dense, "csr": sparse.csr_matrix(dense), "csc": sparse.csc_matrix(dense)}[fmt]
        adata = _adata(matrix, genes)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            oc.pp.gene_sentences(adata, n_genes=10, exclude=None, pad=pad)
        expected = _official(pd.DataFrame(dense, columns=genes), 10)
        if not pad:  # drop the zero-count padding the official rule adds
            expected = [" ".join(g for g in s.split() if dense[i, genes.index(g)] > 0) for i, s in enumerate(expected)]
        assert adata.obs["gene_sentence"].tolist() == expected

    def test_unsorted_csr_indices_and_small_chunks(self, monkeypatch):
        rng = np.random.default_rng(1)
        dense = rng.poisson(1.0, size=(30, 25)).astype(np.float64)
        expected = core.top_genes(dense, 7, excluded=np.zeros(25, bool)).columns
        shuffled = sparse.csr_matrix(dense)
        for row in range(30):  # reverse the column order inside every row
            lo, hi = shuffled.indptr[row], shuffled.indptr[row + 1]
            shuffled.indices[lo:hi] = shuffled.indices[lo:hi][::-1].copy()
            shuffled.data[lo:hi] = shuffled.data[lo:hi][::-1].copy()
        shuffled.has_sorted_indices = False
        monkeypatch.setattr(core, "_CHUNK_ELEMENTS", 17)
        np.testing.assert_array_equal(core.top_genes(shuffled, 7, excluded=np.zeros(25, bool)).columns, expected)

    def test_normalisation_does_not_change_sentences(self, spots):
        import scanpy as sc

        normalised = spots.copy()
        sc.pp.normalize_total(normalised)
        sc.pp.log1p(normalised)
        oc.pp.gene_sentences(spots)
        oc.pp.gene_sentences(normalised)
        assert (spots.obs["gene_sentence"] == normalised.obs["gene_sentence"]).mean() > 0.99


class TestExclusion:
    def test_loki_exclusions(self):
        genes = ["GAPDH", "MT-CO1", "ENSG0001.5", "EPCAM", "ACTB", "KRT8"]
        adata = _adata(np.array([[9, 8, 7, 6, 5, 4]], dtype=np.float32), genes)
        oc.pp.gene_sentences(adata, n_genes=5)
        assert adata.obs["gene_sentence"].iloc[0] == "EPCAM KRT8"
        oc.pp.gene_sentences(adata, n_genes=5, exclude=None)
        assert adata.obs["gene_sentence"].iloc[0] == "GAPDH MT-CO1 ENSG0001.5 EPCAM ACTB"
        oc.pp.gene_sentences(adata, n_genes=5, exclude=["EPCAM"])
        assert adata.obs["gene_sentence"].iloc[0] == "GAPDH MT-CO1 ENSG0001.5 ACTB KRT8"

    def test_housekeeping_list_is_the_official_one(self):
        from omiclip._housekeeping import housekeeping_genes

        hk = housekeeping_genes()
        assert len(hk) == 394
        assert {"GAPDH", "ACTB", "B2M", "EEF1A1", "FTL", "TMSB4X"} <= hk
        assert "MALAT1" not in hk
        assert sum(g.startswith(("RPL", "RPS")) for g in hk) == 65

    def test_symbols_from_var_column(self):
        adata = _adata(np.array([[1, 3, 2]], dtype=np.float32), ["ENSG1", "ENSG2", "ENSG3"])
        adata.var["symbol"] = ["EPCAM", "KRT8", "MS4A1"]
        oc.pp.gene_sentences(adata, gene_symbols="symbol")
        assert adata.obs["gene_sentence"].iloc[0] == "KRT8 MS4A1 EPCAM"


class TestBadInput:
    @pytest.fixture
    def adata(self):
        return _adata(np.array([[1, 2], [3, 4]], dtype=np.float32), ["A", "B"])

    @pytest.mark.parametrize(
        ("change", "error", "match"),
        [
            (lambda a: a.X.__setitem__((0, 0), -1), ValueError, "negative"),
            (lambda a: a.X.__setitem__((0, 0), np.nan), ValueError, "NaN"),
            (lambda a: a.X.__setitem__((0, 0), np.inf), ValueError, "NaN or inf"),
            (lambda a: setattr(a, "var_names", ["A", "A"]), ValueError, "not unique"),
        ],
    )
    def test_errors_leave_input_untouched(self, adata, change, error, match):
        change(adata)
        before = adata.copy()
        with pytest.raises(error, match=match):
            oc.pp.gene_sentences(adata)
        assert "gene_sentence" not in adata.obs
        assert "omiclip" not in adata.uns
        np.testing.assert_array_equal(adata.X, before.X)

    def test_missing_layer_and_column(self, adata):
        with pytest.raises(KeyError, match="Layer 'counts' not found"):
            oc.pp.gene_sentences(adata, layer="counts")
        with pytest.raises(KeyError, match="Column 'symbol' not found"):
            oc.pp.gene_sentences(adata, gene_symbols="symbol")

    def test_zero_observations(self, adata):
        with pytest.raises(ValueError, match="no observations"):
            oc.pp.gene_sentences(adata[:0].copy())

    def test_zero_genes(self, adata):
        with pytest.raises(ValueError, match=r"no genes \(n_vars == 0\)"):
            oc.pp.gene_sentences(adata[:, :0].copy())

    @pytest.mark.parametrize("n_genes", [0, -1, 2.0, True, False])
    def test_bad_n_genes(self, adata, n_genes):
        with pytest.raises(ValueError, match="positive integer"):
            oc.pp.gene_sentences(adata, n_genes=n_genes)
        assert "gene_sentence" not in adata.obs


class TestWriting:
    def test_layer_copy_and_record(self):
        adata = _adata(np.zeros((2, 3), dtype=np.float32), ["A", "B", "C"])
        adata.layers["counts"] = np.array([[0, 2, 1], [1, 0, 0]], dtype=np.float32)
        result = oc.pp.gene_sentences(adata, layer="counts", key_added="sentence", copy=True)
        assert "sentence" not in adata.obs and "omiclip" not in adata.uns
        assert result.obs["sentence"].tolist() == ["B C A", "A B C"]  # padded with zero-count genes (official)
        record = result.uns["omiclip"]["gene_sentences"]["sentence"]
        assert record["layer"] == "counts" and record["n_genes"] == 50 and record["key_added"] == "sentence"

    def test_genes_in_context_counts_survivors(self, spots):
        oc.pp.gene_sentences(spots)
        expected = oc.models.genes_in_context(spots.obs["gene_sentence"])
        np.testing.assert_array_equal(spots.obs["gene_sentence_n_in_context"], expected)
        assert 15 <= np.median(expected) < 50  # the official tokenizer cuts 50-gene sentences

    def test_spatialdata_table(self, section):
        assert oc.pp.gene_sentences(section) is None
        assert section.tables["table"].obs["gene_sentence"].str.len().gt(0).all()
        copied = oc.pp.gene_sentences(section, key_added="other", copy=True)
        assert "other" in copied.tables["table"].obs and "other" not in section.tables["table"].obs


def test_duplicate_entries_and_missing_symbols():
    # a non-canonical CSR matrix: two stored entries for gene A in row 0 (sum 2 > B's 1.5)
    matrix = sparse.csr_matrix((np.array([1.0, 1.0, 1.5]), np.array([0, 0, 1]), np.array([0, 3])), shape=(1, 2))
    adata = _adata(matrix, ["A", "B"])
    oc.pp.gene_sentences(adata, exclude=None)
    assert adata.obs["gene_sentence"].iloc[0] == "A B"
    adata = _adata(np.array([[3.0, 2.0, 1.0]], dtype=np.float32), ["g1", "g2", "g3"])
    adata.var["symbol"] = ["EPCAM", np.nan, np.nan]  # unmapped IDs are never chosen, and are no duplicates
    oc.pp.gene_sentences(adata, gene_symbols="symbol", exclude=(g for g in ["KRT8"]))
    assert adata.obs["gene_sentence"].iloc[0] == "EPCAM"
    assert adata.uns["omiclip"]["gene_sentences"]["gene_sentence"]["exclude"] == ["KRT8"]
