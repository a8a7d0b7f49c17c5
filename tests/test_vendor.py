"""Vendor data as users have it: real Space Ranger outputs, and Visium HD / Xenium / sopa / LazySlide layouts."""

import json
import os
from pathlib import Path

import matplotlib
import pandas as pd
import pytest
from anndata import AnnData

import omiclip as oc

matplotlib.use("Agg")

# shared/ lies beside the repository, in sessions and in CI (elsewhere: point OMICLIP_VISIUM at it)
VISIUM = Path(os.environ.get("OMICLIP_VISIUM", Path(__file__).resolve().parents[2] / "shared" / "data" / "visium"))
V1 = VISIUM / "scanpy_v1_1.0.0"
CYTASSIST = VISIUM / "cytassist_mouse_sr2"


def _needs(path: Path):
    if not path.is_dir():
        pytest.skip(f"Space Ranger output not found at {path}")


def cytassist_anndata(path: Path) -> AnnData:
    """The CytAssist output (mtx, header-ed positions, lowres only) assembled in scanpy's Visium layout."""
    import matplotlib.pyplot as plt
    import scanpy as sc

    adata = sc.read_10x_mtx(path / "filtered_feature_bc_matrix")
    positions = pd.read_csv(path / "spatial" / "tissue_positions.csv", index_col="barcode")
    adata.obs = adata.obs.join(positions)
    adata.obsm["spatial"] = adata.obs[["pxl_col_in_fullres", "pxl_row_in_fullres"]].to_numpy(float)
    scalefactors = json.loads((path / "spatial" / "scalefactors_json.json").read_text())
    lowres = plt.imread(path / "spatial" / "tissue_lowres_image.png")
    adata.uns["spatial"] = {"cytassist": {"images": {"lowres": lowres}, "scalefactors": scalefactors}}
    return adata


def _chain(data, tiny, table_key=None):
    """read → gene_sentences → embed (text, image) → a plot, with no argument beyond the data."""
    import matplotlib.pyplot as plt

    oc.pp.gene_sentences(data, table_key=table_key)
    oc.tl.embed(data, modality="text", model=tiny, table_key=table_key, progress=False)
    oc.tl.embed(data, modality="image", model=tiny, table_key=table_key, progress=False)
    table = oc._anndata.get_table(data, table_key)
    assert table.obsm["X_omiclip_text"].shape == table.obsm["X_omiclip_image"].shape == (table.n_obs, 128)
    fig = oc.pl.embedding_rgb(data, use_rep="X_omiclip_image", table_key=table_key, return_fig=True)
    plt.close(fig)
    return table


class TestSpaceRangerV1:
    def test_scanpy_read_visium(self, tiny):
        _needs(V1)
        import scanpy as sc

        adata = sc.read_visium(V1)
        adata.var_names_make_unique()
        # the hires PNG is an all-black placeholder: the chain runs, and says so
        with pytest.warns(UserWarning, match=r"100 of 100 tiles checked .* 'hires' are one flat colour.*\['lowres'\]"):
            table = _chain(adata, tiny)
        assert table.uns["omiclip"]["embed"]["X_omiclip_image"]["tile_size_um"] == pytest.approx(55.0)

    def test_spatialdata_io_visium(self, tiny):
        _needs(V1)
        sdio = pytest.importorskip("spatialdata_io")

        sdata = sdio.visium(V1, dataset_id="V1")
        with pytest.warns(UserWarning, match="'V1_hires_image' are one flat colour"):
            tiles = oc.pp.tiles(sdata)  # two images, no scale stored: the finest image, 55 µm spots
        assert tiles.params["tile_size_um"] == pytest.approx(55.0)
        with pytest.warns(UserWarning, match="one flat colour"):
            _chain(sdata, tiny)

    def test_lowres_is_flagged_as_coarse(self):
        _needs(V1)
        sdio = pytest.importorskip("spatialdata_io")

        sdata = sdio.visium(V1, dataset_id="V1")
        with pytest.warns(UserWarning, match=r"'V1_lowres_image' is 4.\dx coarser \(13.\d µm/px\).*'V1_hires_image'"):
            oc.pp.tiles(sdata, image_key="V1_lowres_image")

    def test_errors_list_the_images(self):
        _needs(V1)
        import scanpy as sc

        adata = sc.read_visium(V1)
        del adata.uns["spatial"][next(iter(adata.uns["spatial"]))]["images"]["hires"]
        with pytest.warns(UserWarning, match="coarser"):
            assert oc.pp.tiles(adata).params["window_px"] == 4  # lowres only: taken, not KeyError 'hires'
        with pytest.raises(KeyError, match=r"Image 'hires' not in .*images there: \['lowres'\]"):
            oc.pp.tiles(adata, image_key="hires")


def test_cytassist_mtx_assembled_with_scanpy(tiny):
    _needs(CYTASSIST)
    adata = cytassist_anndata(CYTASSIST)
    adata = adata[::20].copy()  # ~150 spots keep the test fast; the layout is what matters
    with pytest.warns(UserWarning, match="coarser"):  # lowres only: tiles are upsampled, and it says so
        _chain(adata, tiny)
