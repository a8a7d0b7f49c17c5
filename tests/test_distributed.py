"""Embedding on a Dask cluster, the cohort helper, and safe writes into zarr stores."""

import copy
import shutil

import numpy as np
import pytest
import spatialdata

import omiclip as oc
from omiclip._anndata import working_copy
from omiclip.io import _zarr
from omiclip.tl import _cohort


def _no_model_load(*args, **kwargs):
    raise AssertionError("bad arguments must be refused before the model is loaded")


@pytest.fixture(scope="module")
def store(_section, tmp_path_factory):
    """The synthetic section as a zarr store (written from a copy: the session object stays in memory)."""
    path = tmp_path_factory.mktemp("stores") / "section.zarr"
    working_copy(_section, copy=True).write(path)
    return path


@pytest.fixture(scope="module")
def client():
    from distributed import Client, LocalCluster

    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        yield client


@pytest.fixture(scope="module")
def local(store, tiny):
    """Single-process reference: spot and grid embeddings of the store's section."""
    sdata = spatialdata.read_zarr(store)
    oc.tl.embed(sdata, modality="image", model=tiny, progress=False)
    grid = oc.pp.tiles(sdata, grid=True, tile_size_um=40)
    oc.tl.embed(sdata, modality="image", model=tiny, tiles=grid, progress=False)
    return sdata


def copy_store(store, path):
    shutil.copytree(store, path)
    return path


class TestEmbedOnCluster:
    def test_spot_embeddings_equal_the_single_process_ones(self, store, client, tiny, local):
        sdata = spatialdata.read_zarr(store)
        oc.tl.embed(sdata, modality="image", model=tiny, client=client, batch_size=8, progress=False)
        table, expected = sdata.tables["table"], local.tables["table"]
        np.testing.assert_allclose(table.obsm["X_omiclip_image"], expected.obsm["X_omiclip_image"], atol=1e-5)
        record = dict(table.uns["omiclip"]["embed"]["X_omiclip_image"])
        assert record == dict(expected.uns["omiclip"]["embed"]["X_omiclip_image"])
        assert record["precision_used"] == "fp32"

    @pytest.mark.parametrize("kind", ["float 0-1", "RGBA"])
    def test_float_and_rgba_images_are_read_as_in_this_process(self, kind, section, client, tiny, tmp_path):
        from spatialdata.models import Image2DModel
        from spatialdata.transformations import get_transformation

        he = section.images["he"]["scale0"]["image"].values
        half_transparent = np.concatenate([he, np.full((1, *he.shape[1:]), 128, np.uint8)])  # composited over white
        array = he.astype(np.float32) / 255 if kind == "float 0-1" else half_transparent
        transformations = get_transformation(section.images["he"], get_all=True)
        section.images["other"] = Image2DModel.parse(array, dims=("c", "y", "x"), transformations=transformations)
        section.write(tmp_path / "other.zarr")
        on_cluster, here = (spatialdata.read_zarr(tmp_path / "other.zarr") for _ in range(2))
        oc.tl.embed(on_cluster, modality="image", image_key="other", model=tiny, client=client, progress=False)
        oc.tl.embed(here, modality="image", image_key="other", model=tiny, progress=False)
        embeddings = on_cluster.tables["table"].obsm["X_omiclip_image"]
        np.testing.assert_allclose(embeddings, here.tables["table"].obsm["X_omiclip_image"], atol=1e-5)

    def test_grid_embeddings_and_each_worker_loads_the_model_once(self, store, client, tiny, local):
        from omiclip.tl import _distributed as distributed

        def mark_models():  # runs on each worker
            for encoder in distributed._models.values():
                encoder.marked = True
            return len(distributed._models)

        def marks():
            return [getattr(encoder, "marked", False) for encoder in distributed._models.values()]

        sdata = spatialdata.read_zarr(store)
        oc.tl.embed(sdata, modality="image", model=tiny, client=client, batch_size=8, progress=False)
        assert set(client.run(mark_models).values()) == {1}  # both workers ran tasks; one model each
        grid = oc.pp.tiles(sdata, grid=True, tile_size_um=40)
        oc.tl.embed(
            sdata, modality="image", model="omiclip-tiny", tiles=grid, client=client, batch_size=8, progress=False
        )
        assert set(map(tuple, client.run(marks).values())) == {(True,)}  # the same model objects, not reloaded
        np.testing.assert_allclose(
            sdata.tables["he_grid_table"].obsm["X_omiclip_image"],
            local.tables["he_grid_table"].obsm["X_omiclip_image"],
            atol=1e-5,
        )

    def test_workers_load_a_checkpoint_path(self, store, client, tmp_path):
        other = oc.models.load("omiclip-tiny", seed=1, device="cpu")  # weights unlike the default seed's
        path = oc.models.save_checkpoint(tmp_path / "tuned.pt", other.model, model_name="omiclip-tiny")
        here, there = spatialdata.read_zarr(store), spatialdata.read_zarr(store)
        oc.tl.embed(here, modality="image", model=path, device="cpu", progress=False)
        oc.tl.embed(there, modality="image", model=path, client=client, progress=False)
        np.testing.assert_allclose(
            there.tables["table"].obsm["X_omiclip_image"], here.tables["table"].obsm["X_omiclip_image"], atol=1e-5
        )
        records = [sdata.tables["table"].uns["omiclip"]["embed"]["X_omiclip_image"] for sdata in (here, there)]
        assert records[0]["checkpoint_sha256"] == records[1]["checkpoint_sha256"] is not None

    @pytest.mark.parametrize(
        ("case", "message"),
        [
            ("in memory", "not read from"),
            ("fine-tuned in memory", "fine-tuned in memory"),
            ("text", "distributes image tiles"),
        ],
    )
    def test_refused_before_any_work(self, case, message, store, section, client, tiny):
        sdata, model, modality = spatialdata.read_zarr(store), tiny, "image"
        if case == "in memory":
            sdata = section
        elif case == "fine-tuned in memory":
            model = copy.deepcopy(tiny)
            model.seed = None
        else:
            modality = "text"
        with pytest.raises(ValueError, match=message):
            oc.tl.embed(sdata, modality=modality, model=model, client=client)
        assert not [key for key in sdata.tables["table"].obsm if key.startswith("X_omiclip")]


class TestCohort:
    def test_embeds_writes_back_resumes_and_reports_failures(self, store, client, local, tmp_path):
        slide = copy_store(store, tmp_path / "slide.zarr")
        broken = copy_store(store, tmp_path / "broken.zarr")
        shutil.rmtree(broken / "images" / "he")
        with pytest.warns(UserWarning, match="1 of 2 stores failed"):
            summary = oc.tl.embed_cohort([slide, broken], model="omiclip-tiny", client=client, progress=False)
        assert summary["status"].tolist() == ["embedded", "failed"]
        assert summary.loc[str(slide), "n_tiles"] == local.tables["table"].n_obs
        assert "images/he" in summary.loc[str(broken), "error"]
        written = spatialdata.read_zarr(slide).tables["table"]
        expected = local.tables["table"].obsm["X_omiclip_image"]
        np.testing.assert_allclose(written.obsm["X_omiclip_image"], expected, atol=1e-5)
        assert written.uns["omiclip"]["embed"]["X_omiclip_image"]["model"] == "omiclip-tiny"

        again = oc.tl.embed_cohort(slide, model="omiclip-tiny", client=client, progress=False)
        assert again["status"].tolist() == ["skipped"]
        redone = oc.tl.embed_cohort(slide, model="omiclip-tiny", client=client, overwrite=True, progress=False)
        assert redone["status"].tolist() == ["embedded"]

    def test_grid_in_this_process(self, store, tiny, local, tmp_path):
        slide = copy_store(store, tmp_path / "slide.zarr")
        summary = oc.tl.embed_cohort(slide, model=tiny, grid=True, tile_size_um=40, progress=False)
        assert summary["status"].tolist() == ["embedded"]
        written = spatialdata.read_zarr(slide)
        assert len(written.shapes["he_grid"]) == summary["n_tiles"].iloc[0]
        np.testing.assert_allclose(
            written.tables["he_grid_table"].obsm["X_omiclip_image"],
            local.tables["he_grid_table"].obsm["X_omiclip_image"],
            atol=1e-5,
        )

    def test_missing_store_is_an_error(self, tmp_path, tiny):
        with pytest.raises(FileNotFoundError, match="do not exist"):
            oc.tl.embed_cohort([tmp_path / "nowhere.zarr"], model=tiny)

    def test_no_stores_is_an_error_before_loading(self, monkeypatch):
        monkeypatch.setattr(_cohort, "resolve_encoder", _no_model_load)
        with pytest.raises(ValueError, match="No stores to embed"):
            oc.tl.embed_cohort([], model="omiclip-tiny")

    @pytest.mark.parametrize(
        ("argument", "match"), [({"batch_size": 0}, "`batch_size`"), ({"precision": "fp64"}, "fp64")]
    )
    def test_bad_arguments_fail_once_before_loading(self, tmp_path, monkeypatch, argument, match):
        monkeypatch.setattr(_cohort, "resolve_encoder", _no_model_load)
        with pytest.raises(ValueError, match=match):  # not one "failed" row per store
            oc.tl.embed_cohort([tmp_path], model="omiclip-tiny", **argument)

    def test_half_precision_off_cuda_fails_once(self, store, tiny, tmp_path):
        slide = copy_store(store, tmp_path / "slide.zarr")
        with pytest.raises(ValueError, match="autocast for CUDA"):
            oc.tl.embed_cohort([slide], model=tiny, precision="fp16")


class TestWriteElements:
    def test_replaces_an_element_and_keeps_the_others(self, store, tmp_path):
        path = copy_store(store, tmp_path / "s.zarr")
        sdata = spatialdata.read_zarr(path)
        sdata.tables["table"].obsm["X_new"] = np.arange(sdata.tables["table"].n_obs, dtype=np.float32)[:, None]
        oc.io.write_elements(sdata, "table")
        written = spatialdata.read_zarr(path)
        np.testing.assert_array_equal(written.tables["table"].obsm["X_new"][:, 0], np.arange(written["table"].n_obs))
        np.testing.assert_array_equal(written.images["he"]["scale0"]["image"], sdata.images["he"]["scale0"]["image"])
        assert not (path / _zarr.STAGING).exists()

    @pytest.mark.parametrize("failure", ["while staging", "exchange", "second rename"])
    def test_a_failed_write_leaves_the_store_as_it_was(self, failure, store, tmp_path, monkeypatch):
        path = copy_store(store, tmp_path / "s.zarr")
        sdata = spatialdata.read_zarr(path)
        sdata.tables["table"].obsm["X_new"] = np.zeros((sdata.tables["table"].n_obs, 2), dtype=np.float32)

        def fail(*args, **kwargs):
            raise OSError("disk full")

        if failure == "while staging":
            monkeypatch.setattr(spatialdata.SpatialData, "write", fail)
        elif failure == "exchange":
            monkeypatch.setattr(_zarr, "_exchange", fail)
        else:  # no atomic exchange; the rename of the new element into place fails, after the old one moved
            monkeypatch.setattr(_zarr, "_exchange", lambda a, b: False)
            rename = _zarr.os.rename
            into_place = ("new", "tables", "table")
            monkeypatch.setattr(_zarr.os, "rename", lambda a, b: fail() if a.parts[-3:] == into_place else rename(a, b))
        with pytest.raises(OSError, match="disk full"):
            oc.io.write_elements(sdata, "table")
        monkeypatch.undo()
        written = spatialdata.read_zarr(path)
        assert "X_new" not in written.tables["table"].obsm
        assert written.tables["table"].n_obs == sdata.tables["table"].n_obs
        assert not (path / _zarr.STAGING).exists()

    @pytest.mark.parametrize("failure", ["second element invalid", "second swap", "second swap, no exchange"])
    def test_several_elements_are_written_all_or_nothing(self, failure, store, tmp_path, monkeypatch):
        path = copy_store(store, tmp_path / "s.zarr")
        sdata = spatialdata.read_zarr(path)
        sdata.shapes["spots"]["flag"] = 7
        if failure == "second element invalid":
            sdata.tables["table"].uns["a/b"] = 1  # not a valid zarr key: fails while staging
        else:
            sdata.tables["table"].obsm["X_new"] = np.zeros((sdata.tables["table"].n_obs, 2), dtype=np.float32)
            if failure.endswith("no exchange"):
                monkeypatch.setattr(_zarr, "_exchange", lambda a, b: False)
            swap = _zarr._swap

            def swap_then_fail(target, new, old):
                if target.name == "table":
                    raise OSError("disk full")
                swap(target, new, old)

            monkeypatch.setattr(_zarr, "_swap", swap_then_fail)
        with pytest.raises(Exception):  # noqa: B017 - zarr's or ours, the store must not change
            oc.io.write_elements(sdata, ["spots", "table"])
        monkeypatch.undo()
        written = spatialdata.read_zarr(path)
        assert "flag" not in written.shapes["spots"]  # the first element was put back
        assert "X_new" not in written.tables["table"].obsm
        assert not (path / _zarr.STAGING).exists()

    def test_refuses_a_folder_that_is_not_a_store(self, section, tmp_path):
        section.path = tmp_path  # an existing folder, but no zarr store
        with pytest.raises(ValueError, match="is not a zarr store"):
            oc.io.write_elements(section, "table")

    def test_recover_puts_back_an_element_caught_between_two_renames(self, store, tmp_path):
        path = copy_store(store, tmp_path / "s.zarr")
        old = path / _zarr.STAGING / "old" / "tables" / "table"
        old.parent.mkdir(parents=True)
        (path / "tables" / "table").rename(old)  # the state a crash between the renames leaves
        (path / _zarr.STAGING / "new").mkdir()
        with pytest.raises(FileNotFoundError):
            spatialdata.read_zarr(path)
        oc.io.recover(path)
        assert spatialdata.read_zarr(path).tables["table"].n_obs > 0
        assert not (path / _zarr.STAGING).exists()

    def test_refuses_objects_without_a_store(self, section):
        with pytest.raises(ValueError, match="no zarr store"):
            oc.io.write_elements(section, "table")
