import re

import numpy as np
import pytest
from spatialdata.transformations import get_transformation

import omiclip as oc
from omiclip.datasets._synthetic import SPOT_PITCH_UM, hex_grid, section_warp
from omiclip.datasets._tissue_biology import MARKERS, NUCLEI


def _mean_expression(adata, genes, mask):
    return np.asarray(adata[mask, genes].X.mean(axis=0)).ravel()


class TestSyntheticTissue:
    def test_elements_and_scales(self, _section):
        table = _section.tables["table"]
        assert (
            set(_section.images) == {"he"} and set(_section.shapes) == {"spots"} and set(_section.points) == {"cells"}
        )
        assert table.obs["domain"].nunique() == 5
        scale = get_transformation(_section.images["he"], "global").to_affine_matrix(("y", "x"), ("y", "x"))
        np.testing.assert_allclose(np.diag(scale)[:2], [2.0, 2.0])
        assert _section.images["he"]["scale0"]["image"].shape == (3, 600, 600)
        assert _section.images["he"]["scale0"]["image"].data.chunks is not None  # Dask-backed
        np.testing.assert_allclose(_section.shapes["spots"]["radius"], 27.5)
        assert table.obsm["spatial"].min() > 0 and table.obsm["spatial"].max() < 1200

    def test_deterministic(self):
        a = oc.datasets.synthetic_tissue(size_um=800, image=False, seed=5).tables["table"]
        b = oc.datasets.synthetic_tissue(size_um=800, image=False, seed=5).tables["table"]
        c = oc.datasets.synthetic_tissue(size_um=800, image=False, seed=6).tables["table"]
        assert (a.X != b.X).nnz == 0
        assert a.shape != c.shape or (a.X != c.X).nnz > 0

    def test_hex_grid_geometry(self):
        centers = hex_grid(1000)
        from scipy.spatial import cKDTree

        distance, _ = cKDTree(centers).query(centers, k=7)
        np.testing.assert_allclose(distance[:, 1], SPOT_PITCH_UM)  # nearest neighbours one pitch away
        interior = (centers > 150).all(axis=1) & (centers < 850).all(axis=1)
        np.testing.assert_allclose(distance[interior, 1:], SPOT_PITCH_UM)  # six of them inside

    def test_proportions_drive_expression(self, spots):
        truth = spots.obsm["true_proportions"]
        np.testing.assert_allclose(truth.sum(axis=1), 1)
        library = np.asarray(spots.X.sum(axis=1)).ravel()
        for cell_type, markers in MARKERS.items():
            if truth[cell_type].std() < 0.05:
                continue
            marker_fraction = np.asarray(spots[:, list(markers)].X.sum(axis=1)).ravel() / library
            assert np.corrcoef(marker_fraction, truth[cell_type])[0, 1] > 0.6, cell_type

    def test_image_shows_cell_density(self, _section):
        table = _section.tables["table"]
        image = _section.images["he"]["scale0"]["image"].values  # small test image
        xy = np.round(table.obsm["spatial"] / 2.0).astype(int)
        darkness = 255 - image[:, xy[:, 1], xy[:, 0]].mean(axis=0)
        # nuclei darken pixels: spots on many cells are darker than spots on few
        many, few = table.obs["n_cells"] >= 15, table.obs["n_cells"] <= 3
        assert darkness[many.to_numpy()].mean() > darkness[few.to_numpy()].mean()
        assert NUCLEI["tumor"].radius_um > NUCLEI["T cell"].radius_um

    def test_serial_section_has_known_warp(self):
        first = oc.datasets.synthetic_tissue(size_um=1500, image=False, seed=2).tables["table"]
        second = oc.datasets.synthetic_tissue(size_um=1500, image=False, seed=2, section=1).tables["table"]
        np.testing.assert_allclose(first.obsm["true_spatial"], first.obsm["spatial"])
        warp = section_warp(2, 1, 1500.0)
        np.testing.assert_allclose(second.obsm["true_spatial"], warp(second.obsm["spatial"]))
        assert abs(warp.rotation_deg) >= 8
        assert second.uns["synthetic"]["warp"]["rotation_deg"] == warp.rotation_deg
        # the warp is more than rigid, and a fragment is missing
        nonrigid = np.linalg.norm(warp(second.obsm["spatial"]) - warp.rigid(second.obsm["spatial"]), axis=1)
        assert nonrigid.max() > 10
        assert warp.is_missing(second.obsm["true_spatial"]).sum() == 0
        assert warp.is_missing(first.obsm["spatial"]).sum() > 0
        # corresponding places hold the same tissue: domains agree at true positions
        from scipy.spatial import cKDTree

        _, nearest = cKDTree(first.obsm["spatial"]).query(second.obsm["true_spatial"])
        agree = (first.obs["domain"].to_numpy()[nearest] == second.obs["domain"].to_numpy()).mean()
        assert agree > 0.8

    def test_noisy_positions_stay_on_the_slide(self):
        table = oc.datasets.synthetic_tissue(size_um=1500, image=False, seed=2, position_noise_um=100).tables["table"]
        moved = np.linalg.norm(table.obsm["spatial"] - table.obsm["true_spatial"], axis=1)
        assert moved.mean() > 50  # the noise is there ...
        assert table.obsm["spatial"].min() >= 0 and table.obsm["spatial"].max() <= 1500  # ... but not off the slide

    def test_reference(self):
        ref = oc.datasets.synthetic_reference(n_cells=700, seed=1)
        assert ref.n_obs == 700 and set(ref.obs["cell_type"].cat.categories) == set(MARKERS)
        for cell_type, markers in MARKERS.items():
            own = (ref.obs["cell_type"] == cell_type).to_numpy()
            assert (
                _mean_expression(ref, list(markers), own).mean() > 5 * _mean_expression(ref, list(markers), ~own).mean()
            )

    @pytest.mark.parametrize(
        ("function", "argument", "match"),
        [
            ("synthetic_tissue", {"n_domains": 9}, "`n_domains` must be an integer in [2, 6], got 9"),
            ("synthetic_tissue", {"n_domains": 3.5}, "`n_domains` must be an integer"),
            ("synthetic_tissue", {"section": -1}, "`section` must be an integer >= 0"),
            ("synthetic_tissue", {"section": 1.5}, "`section` must be an integer >= 0"),
            ("synthetic_tissue", {"seed": -1}, "`seed` must be an integer >= 0"),
            ("synthetic_tissue", {"size_um": 100}, "`size_um` must be a finite number >= 220"),
            ("synthetic_tissue", {"size_um": float("nan")}, "`size_um` must be a finite number"),
            ("synthetic_tissue", {"um_per_px": float("nan")}, "`um_per_px` must be a finite number > 0"),
            ("synthetic_tissue", {"deformation": float("nan")}, "`deformation` must be a finite number >= 0"),
            ("synthetic_tissue", {"dispersion": 0}, "`dispersion` must be a finite number > 0"),
            ("synthetic_tissue", {"position_noise_um": -5}, "`position_noise_um` must be a finite number >= 0"),
            ("synthetic_reference", {"size_um": 10}, "`size_um` must be a finite number >= 220"),
            ("synthetic_reference", {"n_cells": 2.5}, "`n_cells` must be a positive integer"),
            ("synthetic_reference", {"n_cells": 0}, "`n_cells` must be a positive integer"),
            ("synthetic_reference", {"dispersion": -1}, "`dispersion` must be a finite number > 0"),
            ("synthetic_reference", {"seed": -1}, "`seed` must be an integer >= 0"),
        ],
    )
    def test_bad_arguments(self, function, argument, match):
        defaults = {"synthetic_tissue": {"image": False}, "synthetic_reference": {"n_cells": 10}}[function]
        with pytest.raises(ValueError, match=re.escape(match)):
            getattr(oc.datasets, function)(**{**defaults, "size_um": 800, **argument})


class TestHer2st:
    def test_section_with_labels(self, her2st_path):
        sdata = oc.datasets.her2st("A1", her2st_path)
        table = sdata.tables["table"]
        assert "he" not in sdata.images
        assert table.n_obs > 300 and table.n_vars > 10_000
        assert table.var_names.is_unique
        assert table.obs["label"].notna().mean() > 0.95
        assert "invasive cancer" in table.obs["label"].cat.categories
        # ~1.28 px/µm: 100 µm spots are ~128 px wide
        assert 0.9 < table.uns["her2st"]["px_per_um"] < 1.5
        np.testing.assert_allclose(sdata.shapes["spots"]["radius"], table.uns["her2st"]["spot_diameter_px"] / 2)

    def test_section_with_image(self, her2st_path):
        sdata = oc.datasets.her2st("C2", her2st_path)
        image = sdata.images["he"]["scale0"]["image"]
        height, width = image.shape[1:]
        xy = sdata.tables["table"].obsm["spatial"]
        assert (xy[:, 0] < width).all() and (xy[:, 1] < height).all() and (xy > 0).all()
        assert "label" not in sdata.tables["table"].obs
        # ~290 px per 200 µm array unit in these images (measured from the spot file)
        assert 1.35 < sdata.tables["table"].uns["her2st"]["px_per_um"] < 1.55

    def test_missing_section(self, her2st_path):
        with pytest.raises(FileNotFoundError, match="Z9"):
            oc.datasets.her2st("Z9", her2st_path)

    def test_missing_section_lists_the_available_ones(self, tmp_path):
        (tmp_path / "counts").mkdir()
        for section in ("B1", "A1"):
            (tmp_path / "counts" / f"{section}.tsv.gz").touch()
        with pytest.raises(FileNotFoundError, match="'Z9'.*Available sections: A1, B1"):
            oc.datasets.her2st("Z9", tmp_path)

    def test_file_instead_of_folder(self, tmp_path):
        (tmp_path / "her2st.zip").touch()
        with pytest.raises(NotADirectoryError, match="is a file: pass the folder"):
            oc.datasets.her2st("A1", tmp_path / "her2st.zip")
