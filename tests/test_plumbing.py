"""The shared layer under pp/tl/pl: keys and records, argument checks, parameter docs, the reference pair."""

import inspect

import numpy as np
import pandas as pd
import pytest
from anndata import AnnData

from omiclip._anndata import as_names, obsm_frame, reference_pair, restore_names
from omiclip._docs import doc_params
from omiclip._keys import claim, get_record, record
from omiclip._validate import check_choice, check_int, check_number, check_optional_int


def _adata(n_obs=4, dim=3, rep="X_omiclip_text", seed=0):
    rng = np.random.default_rng(seed)
    adata = AnnData(obs=pd.DataFrame(index=[f"o{i}" for i in range(n_obs)]))
    adata.obsm[rep] = rng.normal(size=(n_obs, dim)).astype(np.float32)
    adata.obsm["spatial"] = rng.uniform(size=(n_obs, 2))
    return adata


class TestRecords:
    def test_runs_with_different_keys_keep_their_own_records(self):
        adata = _adata()
        record(adata, "decompose", "coarse", {"lr": 0.1})
        record(adata, "decompose", "fine", {"lr": 0.01})
        assert get_record(adata, "decompose", "coarse", made_by="oc.tl.decompose")["lr"] == 0.1
        assert get_record(adata, "decompose", "fine", made_by="oc.tl.decompose")["lr"] == 0.01
        record(adata, "decompose", "fine", {"lr": 0.5})  # a rerun replaces its own record only
        assert adata.uns["omiclip"]["decompose"] == {"coarse": {"lr": 0.1}, "fine": {"lr": 0.5}}

    def test_missing_record_says_what_to_run(self):
        adata = _adata()
        record(adata, "retrieve", "a", {})
        with pytest.raises(KeyError, match=r"records there: \['a'\]\)\. Run `oc.tl.retrieve` first"):
            get_record(adata, "retrieve", "b", made_by="oc.tl.retrieve")


class TestClaim:
    def test_the_coordinates_and_the_inputs_are_never_outputs(self):
        adata = _adata()
        with pytest.raises(ValueError, match=r"`.obsm\['spatial'\]`: that is the coordinates"):
            claim(adata, [("obsm", "spatial")], step="predex")
        with pytest.raises(ValueError, match=r"`.obsm\['X_omiclip_text'\]`: that is an input of this call"):
            claim(adata, [("obsm", "X_omiclip_text")], step="predex", reads=[("obsm", "X_omiclip_text")])
        # the same name elsewhere (a label column) destroys nothing
        claim(adata, [("obs", "X_omiclip_text")], step="annotate", reads=[("obsm", "X_omiclip_text"), ("obsm", None)])

    def test_another_steps_result_is_never_an_output(self):
        from omiclip._keys import record

        adata = _adata()
        adata.obsm["X_omiclip_text"] = np.ones((adata.n_obs, 2))
        record(adata, "embed", "X_omiclip_text", {})
        with pytest.raises(ValueError, match=r"`.obsm\['X_omiclip_text'\]`: it holds the result of `embed`"):
            claim(adata, [("obsm", "X_omiclip_text")], step="decompose")
        claim(adata, [("obsm", "X_omiclip_text")], step="embed")  # the step itself may run again
        del adata.obsm["X_omiclip_text"]  # only the record is left: nothing would be lost
        claim(adata, [("obsm", "X_omiclip_text")], step="decompose")

    def test_replacing_an_earlier_result_is_allowed_and_logged(self, monkeypatch):
        from omiclip import _logging

        logged = []
        monkeypatch.setattr(_logging, "info", lambda message, **_: logged.append(message))
        adata = _adata()
        adata.obsm["old"] = np.zeros((adata.n_obs, 1))
        claim(adata, [("obsm", "old"), ("obsm", "new")], step="predex")
        assert logged == ["    replacing `.obsm['old']`"]


class TestValidators:
    @pytest.mark.parametrize("value", [0, -1, 1.0, 2.5, True, "3", None, np.float64(2)])
    def test_int_rejects_non_integers_and_out_of_range(self, value):
        with pytest.raises(ValueError, match=r"`n` must be a positive integer, got "):
            check_int("n", value, min=1)

    def test_int_accepts_numpy_integers_and_bounds(self):
        assert check_int("n", np.int64(3), min=1) == 3
        assert check_int("k", 5, min=1, max=5) == 5
        with pytest.raises(ValueError, match=r"`k` must be an integer in \[1, 5\], got 6"):
            check_int("k", 6, min=1, max=5)
        with pytest.raises(ValueError, match=r"`r` must be an integer >= 0, got -1"):
            check_int("r", -1, min=0)
        assert check_optional_int("m", None, min=3) is None
        with pytest.raises(ValueError, match=r"`m` must be an integer >= 3, got 2"):
            check_optional_int("m", 2, min=3)

    @pytest.mark.parametrize("value", [0, -0.5, float("nan"), float("inf"), True, "1"])
    def test_number_positive(self, value):
        with pytest.raises(ValueError, match=r"`lr` must be a finite number > 0, got "):
            check_number("lr", value, min=0, min_inclusive=False)

    def test_number_half_open_interval(self):
        assert check_number("w", 0, min=0, max=1, max_inclusive=False) == 0.0
        with pytest.raises(ValueError, match=r"`w` must be a finite number in \[0, 1\), got 1"):
            check_number("w", 1, min=0, max=1, max_inclusive=False)

    def test_choice(self):
        check_choice("mode", "rigid", ("rigid", "nonrigid"))
        with pytest.raises(ValueError, match=r"`mode` must be one of \('rigid', 'nonrigid'\), got 'affine'"):
            check_choice("mode", "affine", ("rigid", "nonrigid"))


class TestDocs:
    def test_shared_entries_are_filled_at_their_indentation(self):
        @doc_params
        def f(data, *, copy=False):
            """Do it.

            Parameters
            ----------
            data
                The data; writes ``{key_added}_scores``.
            {copy}
            """

        doc = inspect.getdoc(f)
        assert "\ncopy\n    Return a modified copy" in doc
        assert "{key_added}_scores" in doc  # prose braces are left alone

    def test_unknown_entry_is_an_error(self):
        with pytest.raises(KeyError, match=r"no shared doc for \{nope\}"):

            @doc_params
            def f():
                """Do it.

                {nope}
                """


class TestReferencePair:
    def test_two_tables_two_embeddings_one_dimension(self):
        query, reference = _adata(), _adata(n_obs=6, seed=1)
        pair = reference_pair(query, reference, "X_omiclip_text", "X_omiclip_text")
        assert pair.query is query and pair.reference is reference
        assert pair.query_rep.shape == (4, 3) and pair.reference_rep.shape == (6, 3)

    def test_errors_name_which_side(self):
        query = _adata()
        with pytest.raises(ValueError, match=r"The reference has no observations"):
            reference_pair(query, _adata()[:0].copy(), "X_omiclip_text", "X_omiclip_text")
        with pytest.raises(ValueError, match=r"The target has no observations"):
            reference_pair(query, _adata()[:0].copy(), None, None, names=("the source", "the target"))
        with pytest.raises(ValueError, match=r"Embedding dimensions differ"):
            reference_pair(query, _adata(dim=5), "X_omiclip_text", "X_omiclip_text")
        with pytest.raises(KeyError, match=r"Did not find 'X_omiclip_image' in `.obsm`. Run `oc.tl.embed` first"):
            reference_pair(query, _adata(), "X_omiclip_text", "X_omiclip_image")

    def test_reference_table_of_a_spatialdata(self):
        from spatialdata import SpatialData
        from spatialdata.models import TableModel

        query = _adata()
        sdata = SpatialData(tables={"cells": TableModel.parse(_adata(seed=2)), "other": TableModel.parse(_adata())})
        with pytest.raises(ValueError, match="choose one with `table_key=`"):
            reference_pair(query, sdata, "X_omiclip_text", "X_omiclip_text")
        pair = reference_pair(query, sdata, "X_omiclip_text", "X_omiclip_text", reference_table_key="cells")
        assert pair.reference is sdata.tables["cells"]
        with pytest.raises(ValueError, match="SpatialData has no table: the spots' table"):  # not "choose one of 0"
            reference_pair(query, SpatialData(), "X_omiclip_text", "X_omiclip_text")


def test_names_with_a_slash_survive_as_obsm_columns():
    adata = _adata(n_obs=2)
    frame = obsm_frame(np.eye(2), adata, ["CD4+/CD25 T Reg", "B"])
    assert all("/" not in column for column in frame.columns)
    assert list(restore_names(frame).columns) == ["CD4+/CD25 T Reg", "B"]
    with pytest.raises(ValueError, match="U\\+2215"):
        obsm_frame(np.eye(2), adata, ["a\u2215b", "c"])


def test_names_read_back_as_stringdtype_become_str():
    names = np.array(["a", "bb"], dtype=np.dtypes.StringDType())
    np.testing.assert_array_equal(as_names(names), np.array(["a", "bb"]))
