import gzip
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from anndata import AnnData
from scipy import sparse

import omiclip as oc
from omiclip._core import sentences as core
from omiclip._core import tokens

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
VISIUM_V1 = SHARED / "visium" / "scanpy_v1_1.0.0"
# symbols with digits, dashes, dots, underscores, case, and characters ftfy/HTML/Unicode handling touches
ODD_SYMBOLS = [
    "C1orf112",
    "HLA-DRB1",
    "MT-CO1",
    "RP11-34P13.7",
    "ENSG00000242485.5",
    "Sept9",
    "1-Mar",
    "H2-K1",
    "Nkx2-1",
    "MIR4435-2HG",
    "Y_RNA",
    "5S_rRNA",
    "AC006064.4",
    "gene's",
    "x'd",
    "<start_of_text>",
    "<END_OF_TEXT>",
    "x/y",
    "A&amp;B",
    "&lt;tag&gt;",
    "&amp;lt;x",
    "Ülk1",
    "β-actin",
    "naïve",
    "ＡＢＣ",
    "ﬁsh",
    "Ａ１",
    "ABC\u200b1",
    "\u2018quoted\u2019",
    "IGHV3-23",
    "TRBV20-1",
    "snoU13",
    "7SK",
    "Gm42418",
]


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


def _real_symbols(n: int = 4000) -> list[str]:
    """Human and mouse symbols from the shared data (every k-th, for time), plus the housekeeping list."""
    from omiclip._housekeeping import housekeeping_genes

    symbols = sorted(housekeeping_genes())
    her2st = SHARED / "her2st" / "counts" / "A1.tsv.gz"
    mouse = SHARED / "visium" / "cytassist_mouse_sr2" / "filtered_feature_bc_matrix" / "features.tsv.gz"
    if her2st.is_file():
        with gzip.open(her2st, "rt") as handle:
            human = handle.readline().rstrip("\n").split("\t")[1:]
        symbols += human[:: max(1, len(human) // n)]
    if mouse.is_file():
        with gzip.open(mouse, "rt") as handle:
            names = [line.split("\t")[1] for line in handle]
        symbols += names[:: max(1, len(names) // (n // 2))]
    return list(dict.fromkeys(symbols))


@pytest.fixture(scope="module")
def clip():
    import open_clip

    return open_clip.get_tokenizer("coca_ViT-L-14")


class TestTokenCounts:
    def test_word_counts_equal_open_clip(self, clip):
        words = _real_symbols() + ODD_SYMBOLS
        expected = [len(clip.encode(word)) for word in words]
        np.testing.assert_array_equal(tokens.word_token_counts(words), expected)
        assert tokens.word_token_counts(["COL1A1"])[0] == 4  # digits are one token each

    def test_sentence_count_is_the_sum_of_its_words(self, clip):
        words = np.array(_real_symbols() + ODD_SYMBOLS, dtype=object)
        rng = np.random.default_rng(0)
        for _ in range(200):
            sentence = list(rng.choice(words, 50, replace=False))
            assert len(clip.encode(" ".join(sentence))) == tokens.word_token_counts(sentence).sum()

    def test_counts_without_torch_or_open_clip(self, clip):
        # load the module from its file: importing the omiclip package would import torch (for now)
        code = (
            "import importlib.util, sys\n"
            f"spec = importlib.util.spec_from_file_location('tokens', {tokens.__file__!r})\n"
            "module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module)\n"
            "print(module.word_token_counts(['COL1A1', 'HLA-DRB1', 'ERBB2']).tolist())\n"
            "print(sorted(m for m in ('torch', 'open_clip', 'ftfy', 'regex') if m in sys.modules))\n"
        )
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
        counts, imported = out.strip().splitlines()
        assert counts == str([len(clip.encode(w)) for w in ("COL1A1", "HLA-DRB1", "ERBB2")])
        assert imported == "[]"

    def test_gene_sentences_import_no_torch_open_clip_or_scanpy(self):
        code = (
            "import sys\n"
            "import numpy as np\n"
            "import pandas as pd\n"
            "from anndata import AnnData\n"
            "import omiclip as oc\n"
            "before = set(sys.modules)\n"
            "adata = AnnData(np.array([[3, 1, 2]], dtype=np.float32), var=pd.DataFrame(index=['KRT8', 'EPCAM', 'CD74']))\n"
            "oc.pp.gene_sentences(adata, exclude=None)\n"
            "print(adata.obs['gene_sentence_n_in_context'].iloc[0])\n"
            "print(sorted(m for m in ('torch', 'open_clip', 'scanpy') if m in set(sys.modules) - before))\n"
        )
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
        n_in_context, imported = out.strip().splitlines()
        assert n_in_context == "3"
        assert imported == "[]"


class TestGeneIdentifiers:
    @staticmethod
    def _ensembl(ids, **columns):
        x = np.array([[5, 1, 3, 0], [0, 2, 0, 7]], dtype=np.float32)
        adata = _adata(x, ids)
        for name, values in columns.items():
            adata.var[name] = values
        return adata

    def test_symbol_column_is_found(self):
        ids = [f"ENSG{i:011d}" for i in range(4)]
        adata = self._ensembl(ids, gene_ids=ids, gene_symbols=["EPCAM", "KRT8", "MS4A1", "PTPRC"])
        oc.pp.gene_sentences(adata, n_genes=2)
        assert adata.obs["gene_sentence"].tolist() == ["EPCAM MS4A1", "PTPRC KRT8"]
        assert adata.uns["omiclip"]["gene_sentences"]["gene_sentence"]["gene_symbols"] == "gene_symbols"

    def test_versioned_mouse_ids_with_feature_name(self):
        ids = [f"ENSMUSG{i:011d}.{i + 1}" for i in range(4)]
        adata = self._ensembl(ids, feature_name=["Epcam", "Krt8", "Ms4a1", "Ptprc"])
        oc.pp.gene_sentences(adata, n_genes=2)
        assert adata.obs["gene_sentence"].tolist() == ["Epcam Ms4a1", "Ptprc Krt8"]

    def test_no_symbol_column_is_an_error_that_says_the_fix(self):
        ids = [f"ENSG{i:011d}" for i in range(4)]
        adata = self._ensembl(ids, gene_ids=ids, gene_name=ids)  # a "name" column that holds IDs is no symbol column
        with pytest.raises(ValueError, match=r"Ensembl IDs .*`gene_symbols=`.*\['gene_ids', 'gene_name'\]"):
            oc.pp.gene_sentences(adata)
        with pytest.raises(ValueError, match=r"`.var\['gene_ids'\]` holds Ensembl IDs"):
            oc.pp.gene_sentences(adata, gene_symbols="gene_ids")
        assert "gene_sentence" not in adata.obs

    def test_a_few_ids_among_symbols_are_left_alone(self):
        adata = self._ensembl(["EPCAM", "KRT8", "ENSG00000242485", "PTPRC"])
        oc.pp.gene_sentences(adata, n_genes=2)
        assert adata.obs["gene_sentence"].tolist() == ["EPCAM ENSG00000242485", "PTPRC KRT8"]
        assert adata.uns["omiclip"]["gene_sentences"]["gene_sentence"]["gene_symbols"] is None

    def test_visium_with_ensembl_var_names(self):
        if not VISIUM_V1.is_dir():
            pytest.skip(f"Visium V1 data not found at {VISIUM_V1}")
        import scanpy as sc

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            adata = sc.read_visium(VISIUM_V1)
        # this Space Ranger output names its features by Ensembl ID: var_names and "gene_ids" are both IDs
        assert adata.var_names[0].startswith("ENSG") and "gene_ids" in adata.var
        with pytest.raises(ValueError, match=r"`var_names` are Ensembl IDs .*`gene_symbols=`"):
            oc.pp.gene_sentences(adata)
        symbols = [f"GENE{i}" for i in range(adata.n_vars)]  # stand-ins: no ID->symbol table here
        by_symbol = adata.copy()
        by_symbol.var_names = symbols
        expected = oc.pp.gene_sentences(by_symbol, copy=True).obs["gene_sentence"]
        assert expected.str.startswith("GENE").all()
        adata.var["gene_symbols"] = symbols  # as sc.read_10x_mtx(var_names="gene_ids") lays it out
        oc.pp.gene_sentences(adata)
        assert adata.obs["gene_sentence"].equals(expected)


class TestTies:
    def test_rarest_first_breaks_ties_and_orders_padding(self):
        genes = ["A", "B", "C", "D", "E"]
        x = np.array(
            [
                [1, 1, 1, 0, 0],  # a three-way tie
                [0, 0, 0, 9, 9],  # a tie between genes of equal totals: var order
                [0, 0, 5, 0, 0],  # short: padded
                [4, 0, 0, 0, 0],
            ],
            dtype=np.float32,
        )  # gene totals: B 1 < A 5 < C 6 < D 9 = E 9
        adata = _adata(sparse.csr_matrix(x), genes)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            oc.pp.gene_sentences(adata, n_genes=3, exclude=None, ties="rarest")
        assert adata.obs["gene_sentence"].tolist() == ["B A C", "D E B", "C B A", "A B C"]
        assert adata.uns["omiclip"]["gene_sentences"]["gene_sentence"]["ties"] == "rarest"
        dense = _adata(x, genes)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            oc.pp.gene_sentences(dense, n_genes=3, exclude=None, ties="rarest")
        assert dense.obs["gene_sentence"].equals(adata.obs["gene_sentence"])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            oc.pp.gene_sentences(dense, n_genes=3, exclude=None)  # official var order
        assert dense.obs["gene_sentence"].tolist() == ["A B C", "D E A", "C A B", "A B C"]

    def test_ties_within_and_beyond_the_token_budget(self):
        genes = [f"G{i}" for i in range(80)]  # "g" + one token per digit
        x = np.zeros((2, 80), dtype=np.float32)
        x[0, :60] = np.arange(100, 40, -1)  # distinct values, ...
        x[0, 60:] = 1  # ... then 20 ties far past the budget
        x[1, :5] = [50, 40, 30, 20, 10]
        x[1, 5:] = 1  # 75 ties right after 5 genes
        adata = _adata(x, genes)
        oc.pp.gene_sentences(adata, n_genes=80, exclude=None)
        used = np.cumsum(tokens.word_token_counts(genes))
        n_read = int((used <= 74).sum())  # the same 80 genes in var order fill row 0 ... and row 1
        np.testing.assert_array_equal(adata.obs["gene_sentence_n_in_context"], [n_read, n_read])
        np.testing.assert_array_equal(adata.obs["gene_sentence_n_ties"], [20, 75])
        np.testing.assert_array_equal(adata.obs["gene_sentence_n_ties_in_context"], [0, n_read - 5])
        assert adata.uns["omiclip"]["gene_sentences"]["gene_sentence"]["n_tie_ordered"] == 1

    def test_warning_on_low_counts_and_the_way_out(self):
        rng = np.random.default_rng(0)
        counts = sparse.csr_matrix(rng.poisson(0.02, size=(200, 500)).astype(np.float32))  # ~10 counts per cell
        adata = _adata(counts, [f"GENE{i}" for i in range(500)])
        with pytest.warns(UserWarning, match=r"sentences \(\d+%\) are tie-ordered.*ties='rarest'"):
            oc.pp.gene_sentences(adata, exclude=None)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # ties="rarest" is the way out: no warning
            oc.pp.gene_sentences(adata, exclude=None, ties="rarest")

    def test_no_warning_on_spot_counts(self, spots):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            oc.pp.gene_sentences(spots)
        assert spots.uns["omiclip"]["gene_sentences"]["gene_sentence"]["n_tie_ordered"] < spots.n_obs / 2

    def test_bad_ties(self):
        with pytest.raises(ValueError, match=r"`ties` must be one of \('var_order', 'rarest'\)"):
            oc.pp.gene_sentences(_adata(np.ones((1, 2), dtype=np.float32), ["A", "B"]), ties="random")


class TestWhitespace:
    @pytest.mark.parametrize("name", ["HLA A", "KRT8\t", " EPCAM", "CD\u00a03"])
    def test_symbols_with_whitespace_are_refused(self, name):
        adata = _adata(np.array([[1, 2, 3]], dtype=np.float32), ["MS4A1", name, "PTPRC"])
        with pytest.raises(ValueError, match=r"1 gene symbols in `var_names` contain whitespace .*str\.replace"):
            oc.pp.gene_sentences(adata)
        assert "gene_sentence" not in adata.obs
        oc.pp.gene_sentences(adata, exclude=[name])  # left out: no ambiguity
        assert adata.obs["gene_sentence"].iloc[0] == "PTPRC MS4A1"

    def test_empty_sentences_warn_at_embed_time(self, tiny):
        adata = _adata(np.zeros((3, 1), dtype=np.float32), ["A"])
        adata.obs["gene_sentence"] = ["EPCAM KRT8", "", "  "]
        with pytest.warns(UserWarning, match=r"2 of 3 sentences in `.obs\['gene_sentence'\]` are empty.*pad=True"):
            oc.tl.embed(adata, modality="text", model=tiny, progress=False)
        adata.obs["gene_sentence"] = ["EPCAM KRT8", "KRT8", "MS4A1"]
        with warnings.catch_warnings():
            warnings.simplefilter("error", UserWarning)
            oc.tl.embed(adata, modality="text", model=tiny, progress=False)
