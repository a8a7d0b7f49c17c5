"""Loki Align: CPD core, oc.tl.align / align_stack, oc.pp.pseudo_spots."""

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scanpy as sc
from scipy import sparse

import omiclip as oc
from omiclip._core.cpd import CPDOptions, apply_affine, nonrigid_cpd, rigid_fit

SPOT_UM = 55.0  # synthetic spot diameter


def rotation(degrees: float, shift=(0.0, 0.0)) -> np.ndarray:
    t = np.deg2rad(degrees)
    return np.array([[np.cos(t), -np.sin(t), shift[0]], [np.sin(t), np.cos(t), shift[1]], [0, 0, 1]])


@pytest.fixture(scope="module")
def pair(joint_pca):
    """Sections 0 (target) and 1 (source, rotated, bent, with a missing fragment) with a joint expression PCA."""
    target = oc.datasets.synthetic_tissue(section=0, seed=1, size_um=2000, image=False).tables["table"]
    source = oc.datasets.synthetic_tissue(section=1, seed=1, size_um=2000, image=False).tables["table"]
    joint_pca(source, target)
    return source, target


def moved_copy(table, matrix):
    moved = table.copy()
    moved.obsm["spatial"] = apply_affine(matrix, table.obsm["spatial"])
    return moved


def error_um(a, b):
    return float(np.linalg.norm(np.asarray(a) - np.asarray(b), axis=1).mean())


class TestCore:
    def test_rigid_fit_recovers_rotation_and_refuses_reflection(self):
        xy = np.random.default_rng(0).random((50, 2)) * 100
        matrix = rotation(30, (5, -7))
        np.testing.assert_allclose(rigid_fit(xy, apply_affine(matrix, xy)), matrix, atol=1e-10)
        mirrored = xy * [-1, 1]
        assert np.linalg.det(rigid_fit(xy, mirrored)[:2, :2]) > 0

    def test_matches_pycpd_with_only_xy_moving(self):
        """Same σ² path and result as pycpd's DeformableRegistration restricted to x, y (the official modification).

        pycpd 2.0 has no low-rank option, so this compares with the exact kernel; at β = 2 on a unit square our rank-100
        kernel equals it to within the tolerance.
        """
        pycpd = pytest.importorskip("pycpd")
        rng = np.random.default_rng(0)
        xy = rng.random((300, 2))
        features = np.c_[np.sin(3 * xy[:, 0]), xy[:, 0] * xy[:, 1]]
        target = np.c_[xy, features]
        source = np.c_[apply_affine(rotation(10, (0.05, 0)), xy), features]

        class Official(pycpd.DeformableRegistration):
            def transform_point_cloud(self, Y=None):
                self.W[:, 2:] = 0
                return super().transform_point_cloud(Y)

        reference = Official(X=target, Y=source, alpha=0.5, max_iterations=5, tolerance=0)
        moved, _ = reference.register()
        ours = nonrigid_cpd(source, target, CPDOptions(max_iter=5, tol=0))
        assert ours.sigma2 == pytest.approx(reference.sigma2, rel=1e-3)
        np.testing.assert_allclose(ours.moved, moved[:, :2], atol=1e-4)

    def test_subsampled_fit_is_evaluated_at_every_point(self):
        rng = np.random.default_rng(1)
        xy = rng.random((1500, 2))
        features = np.c_[np.cos(4 * xy[:, 1]), xy[:, 0] ** 2]
        source = np.c_[apply_affine(rotation(8, (0.03, -0.02)), xy), features]
        result = nonrigid_cpd(source, np.c_[xy, features], CPDOptions(max_points=400, n_landmarks=200))
        assert result.n_points == (400, 400)
        assert result.moved.shape == (1500, 2)
        spacing = 1 / np.sqrt(1500)
        assert error_um(result.moved, xy) < 0.2 * spacing


class TestAlign:
    def test_rotated_translated_copy_comes_back(self, pair):
        _, target = pair
        source = moved_copy(target, rotation(15, (150, -80)))
        oc.tl.align(source, target, use_rep="X_pca", progress=False)
        assert error_um(source.obsm["spatial_aligned"], target.obsm["spatial"]) < 0.1 * SPOT_UM
        matrix = source.uns["omiclip"]["align"]["spatial_aligned"]["matrix"]
        np.testing.assert_allclose(matrix, np.linalg.inv(rotation(15, (150, -80))), atol=1e-2)

    def test_identical_sections_stay_put(self, pair):
        _, target = pair
        source = target.copy()
        oc.tl.align(source, target, use_rep="X_pca", progress=False)
        assert error_um(source.obsm["spatial_aligned"], target.obsm["spatial"]) < 0.01 * SPOT_UM

    def test_nonrigid_beats_rigid_on_a_bent_copy(self, pair):
        _, target = pair
        source = target.copy()
        xy = target.obsm["spatial"]
        bend = 120 * np.exp(-(((xy - xy.mean(0)) / 500) ** 2).sum(1))  # a local shift of up to 120 µm
        source.obsm["spatial"] = xy + np.c_[bend, 0.5 * bend]
        oc.tl.align(source, target, use_rep="X_pca", progress=False)
        rigid = error_um(source.obsm["spatial_aligned"], xy)
        nonrigid = error_um(source.obsm["spatial_aligned_nonrigid"], xy)
        assert nonrigid < 0.5 * rigid

    def test_synthetic_section_pair_far_better_than_unaligned(self, pair):
        source, target = pair
        truth = source.obsm["true_spatial"]
        result = oc.tl.align(source, target, use_rep="X_pca", mode="nonrigid", progress=False, copy=True)
        assert "spatial_aligned" not in source.obsm
        unaligned = error_um(source.obsm["spatial"], truth)
        aligned = error_um(result.obsm["spatial_aligned"], truth)
        assert aligned < min(0.25 * unaligned, 1.5 * SPOT_UM)

    def test_an_offset_between_modalities_is_centred_away(self, pair):
        """Like CLIP's image–text gap: the source's embedding is the target's plus a constant vector."""
        _, target = pair
        source = moved_copy(target, rotation(15, (150, -80)))
        pcs = target.obsm["X_pca"]
        source.obsm["X_other"] = pcs + 2 * pcs.std(0)  # two standard deviations along every PC
        kwargs = {"use_rep": "X_other", "target_rep": "X_pca", "progress": False, "copy": True}
        centred = oc.tl.align(source, target, center=True, **kwargs)
        raw = oc.tl.align(source, target, **kwargs)  # official default: never centred, also across modalities
        assert centred.uns["omiclip"]["align"]["spatial_aligned"]["center"]
        assert not raw.uns["omiclip"]["align"]["spatial_aligned"]["center"]
        assert error_um(centred.obsm["spatial_aligned"], target.obsm["spatial"]) < 0.1 * SPOT_UM
        assert error_um(raw.obsm["spatial_aligned"], target.obsm["spatial"]) > SPOT_UM

    def test_coordinates_in_other_units_are_converted(self, pair):
        _, target = pair
        source = moved_copy(target, rotation(-10, (40, 60)))
        source.obsm["spatial"] = source.obsm["spatial"] * 2.0  # half-µm pixels
        source.uns["microns_per_unit"] = 0.5
        oc.tl.align(source, target, use_rep="X_pca", progress=False)
        assert error_um(source.obsm["spatial_aligned"], target.obsm["spatial"]) < 0.1 * SPOT_UM

    @pytest.mark.parametrize("stored", [0.0, -2.0, np.nan, "abc"])
    def test_a_bad_stored_scale_is_an_error_not_a_mirrored_result(self, pair, stored):
        source, target = pair
        target = target.copy()
        target.uns["microns_per_unit"] = stored  # -2 used to mirror the result silently, 0 to divide by zero
        with pytest.raises(ValueError, match=r"`target.uns\['microns_per_unit'\]` is .*, not a finite number > 0: "
                           r"correct it, or pass `target_microns_per_unit=`"):  # fmt: skip
            oc.tl.align(source, target, use_rep="X_pca", progress=False, copy=True)
        assert "spatial_aligned" not in source.obsm
        aligned = oc.tl.align(source, target, use_rep="X_pca", target_microns_per_unit=1.0, progress=False, copy=True)
        assert "spatial_aligned" in aligned.obsm  # the way out the message names works

    def test_spatialdata_elements_overlay_the_target(self, section):
        from spatialdata.transformations import get_transformation

        target = section.tables["table"]
        sc.pp.pca(target, n_comps=10, random_state=0)
        source = oc.datasets.synthetic_tissue(size_um=1200, um_per_px=2.0, seed=3)
        table = source.tables["table"]
        table.obsm["X_pca"] = target.obsm["X_pca"]
        table.obsm["spatial"] = apply_affine(rotation(12, (30, -20)), target.obsm["spatial"])
        source.shapes["spots"].geometry = source.shapes["spots"].geometry.affine_transform(
            [*rotation(12)[:2, :2].ravel(), 30, -20]
        )
        before = get_transformation(source.images["he"], get_all=True)

        moved = oc.tl.align(source, section, use_rep="X_pca", progress=False, copy=True)
        assert get_transformation(source.images["he"], get_all=True) == before  # copy=True: input untouched
        assert "aligned" not in get_transformation(source.shapes["spots"], get_all=True)
        to_target = get_transformation(moved.shapes["spots"], "aligned").to_affine_matrix(("x", "y"), ("x", "y"))
        centres = np.c_[moved.shapes["spots"].geometry.x, moved.shapes["spots"].geometry.y]
        assert error_um(apply_affine(to_target, centres), target.obsm["spatial"]) < 0.1 * SPOT_UM
        assert "aligned" in get_transformation(moved.images["he"], get_all=True)

    @pytest.mark.parametrize(
        ("change", "error", "match"),
        [
            (lambda s, t: s.obsm.pop("spatial"), KeyError, "obsm\\['spatial'\\]"),
            (lambda s, t: s.obsm.pop("X_pca"), KeyError, "X_pca"),
            (lambda s, t: s.obsm.__setitem__("X_pca", s.obsm["X_pca"][:, :5]), ValueError, "dimensions differ"),
            (lambda s, t: s.obsm["spatial"].__setitem__((0, 0), np.nan), ValueError, "NaN"),
            (lambda s, t: s.obsm.__setitem__("spatial", np.zeros((s.n_obs, 2))), ValueError, "one position"),
            (lambda s, t: s.obsm.__setitem__("spatial", np.zeros((s.n_obs, 3))), ValueError, "n_obs, 2"),
        ],
    )
    def test_bad_input_is_explained_and_leaves_the_source_alone(self, pair, change, error, match):
        source, target = (table.copy() for table in pair)
        change(source, target)
        keys = set(source.obsm)
        with pytest.raises(error, match=match):
            oc.tl.align(source, target, use_rep="X_pca", progress=False)
        assert set(source.obsm) == keys and "omiclip" not in source.uns

    def test_copies_own_their_elements(self, section):
        """A `copy=True` result, aligned later in place, must not move the input's image, shapes or points."""
        from spatialdata.transformations import get_transformation

        before = {
            kind: {n: dict(get_transformation(e, get_all=True)) for n, e in getattr(section, kind).items()}
            for kind in ("images", "shapes", "points")
        }
        table = section.tables["table"]
        table.obsm["X_pca"] = np.asarray(table.obsm["spatial"])  # any shared representation will do
        copied = oc.pp.gene_sentences(section, copy=True)
        oc.tl.align(copied, table, use_rep="X_pca", progress=False)
        pooled = oc.pp.pseudo_spots(section, microns_per_unit=1.0)
        oc.tl.align(pooled, table, use_rep=None, progress=False)
        for kind, transformations in before.items():
            for name, known in transformations.items():
                assert dict(get_transformation(getattr(section, kind)[name], get_all=True)) == known
        assert "aligned" in get_transformation(copied.images["he"], get_all=True)

    def test_several_tables_are_chosen_by_key(self, section):
        from omiclip._anndata import working_copy

        table = section.tables["table"]
        table.obsm["X_pca"] = np.asarray(table.obsm["spatial"])
        section.tables["extra"] = table.copy()
        other = working_copy(section, copy=True)
        with pytest.raises(ValueError, match="choose one with `table_key=`"):
            oc.tl.align(other, section, table_key="table", use_rep="X_pca", progress=False)
        oc.tl.align(other, section, table_key="table", target_table_key="table", use_rep="X_pca", progress=False)
        oc.tl.align_stack([section, other], table_key="table", use_rep="X_pca", progress=False)
        moved = other.tables["table"].obsm["spatial_aligned"]
        assert error_um(moved, table.obsm["spatial"]) < 0.01 * SPOT_UM  # identical sections stay put

    def test_fewer_than_three_spots(self, pair):
        source, target = pair
        with pytest.raises(ValueError, match="at least 3"):
            oc.tl.align(source[:2].copy(), target, use_rep="X_pca", progress=False)

    def test_non_convergence_warns_with_numbers(self, pair):
        source, target = (table.copy() for table in pair)
        with pytest.warns(RuntimeWarning, match=r"did not converge in 2 iterations \(σ² = "):
            oc.tl.align(source, target, use_rep="X_pca", max_iter=2, progress=False)
        assert source.uns["omiclip"]["align"]["spatial_aligned"]["converged"] is False


class TestAlignStack:
    @pytest.mark.parametrize("chain_neighbours", [False, True])
    def test_stack_lands_on_the_reference(self, pair, chain_neighbours):
        _, target = pair
        placements = [rotation(-12, (50, 0)), np.eye(3), rotation(9, (-40, 30)), rotation(20, (-60, 80))]
        sections = [moved_copy(target, matrix) for matrix in placements]
        oc.tl.align_stack(
            sections, reference=1, chain_neighbours=chain_neighbours, z_spacing=5.0, use_rep="X_pca", progress=False
        )
        for position, section in enumerate(sections):
            assert error_um(section.obsm["spatial_aligned"], target.obsm["spatial"]) < 0.1 * SPOT_UM
            assert section.uns["omiclip"]["align"]["spatial_aligned"]["stack_position"] == position
            np.testing.assert_allclose(section.obsm["spatial_aligned_3d"][:, 2], (position - 1) * 5.0)

    def test_needs_two_sections_and_a_valid_reference(self, pair):
        with pytest.raises(ValueError, match="at least 2"):
            oc.tl.align_stack([pair[0]])
        with pytest.raises(ValueError, match="reference"):
            oc.tl.align_stack(list(pair), reference=2)

    def test_errors_name_the_section(self, pair):
        _, target = pair
        sections = [target.copy(), moved_copy(target, rotation(5)), moved_copy(target, rotation(-5))]
        del sections[2].obsm["X_pca"]
        with pytest.raises(KeyError, match=r"Aligning `sections\[2\]` onto `sections\[1\]`: .*'X_pca'"):
            oc.tl.align_stack(sections, reference=0, chain_neighbours=True, use_rep="X_pca", progress=False)
        assert all("spatial_aligned" not in section.obsm for section in sections)  # nothing written
        sections[2] = target[:2].copy()
        with pytest.raises(ValueError, match=r"The section `sections\[2\]` has 2 spots"):
            oc.tl.align_stack(sections, use_rep="X_pca", progress=False)


class TestPseudoSpots:
    @staticmethod
    def cells(xy, counts, cell_type):
        adata = ad.AnnData(sparse.csr_matrix(np.asarray(counts, dtype=np.float32)))
        adata.var_names = ["A", "B"]
        adata.obs["cell_type"] = pd.Categorical(cell_type)
        adata.obsm["spatial"] = np.asarray(xy, dtype=float)
        return adata

    def test_sums_the_cells_inside_each_spot(self):
        # grid starts at the bounding box's corner (0, 0); the next spot of the row is at (100, 0)
        xy = [[0, 0], [10, 5], [100, 20], [50, 0], [200, 0]]  # (50, 0) lies between spots
        cells = self.cells(xy, [[1, 0], [2, 1], [0, 5], [9, 9], [3, 3]], ["t", "b", "t", "b", "b"])
        spots = oc.pp.pseudo_spots(cells, groupby="cell_type", microns_per_unit=1.0)
        by_centre = {tuple(np.round(c).astype(int)): i for i, c in enumerate(spots.obsm["spatial"])}
        first, second = by_centre[(0, 0)], by_centre[(100, 0)]
        np.testing.assert_array_equal(spots.X[first].toarray(), [[3, 1]])
        np.testing.assert_array_equal(spots.X[second].toarray(), [[0, 5]])
        assert spots.obs["n_cells"].iloc[first] == 2
        assert spots.obsm["cell_counts"].iloc[first].to_dict() == {"b": 1, "t": 1}
        assert spots.X.sum() == 3 + 1 + 5 + 6  # the cell at (50, 0) is between spots
        assert spots.n_obs == 3

    def test_units_follow_microns_per_unit(self):
        cells = self.cells([[0, 0], [20, 0]], [[1, 1], [1, 1]], ["a", "a"])
        cells.uns["microns_per_unit"] = 2.0  # 20 units = 40 µm: outside a 55 µm spot around (0, 0)
        assert oc.pp.pseudo_spots(cells).obs["n_cells"].tolist() == [1]
        cells.uns["microns_per_unit"] = 1.0
        assert oc.pp.pseudo_spots(cells).obs["n_cells"].tolist() == [2]

    def test_synthetic_cells_become_spots_that_align(self, pair):
        """A single-cell–resolution section pooled into pseudo-spots keeps its expression totals per region."""
        rng = np.random.default_rng(0)
        xy = rng.uniform(0, 1000, (4000, 2))
        counts = rng.poisson(2, (4000, 2))
        spots = oc.pp.pseudo_spots(self.cells(xy, counts, ["a"] * 4000), microns_per_unit=1.0)
        expected_fraction = (np.pi * 27.5**2) / (100 * 100 * np.sqrt(3) / 2)  # spot area / hex cell area
        assert spots.obs["n_cells"].sum() / 4000 == pytest.approx(expected_fraction, rel=0.1)

    def test_spatialdata_output_is_linked_to_circles(self, section):
        table = section.tables["table"]
        cells = self.cells(table.obsm["spatial"], np.ones((table.n_obs, 2)), ["a"] * table.n_obs)
        section.tables["table"] = cells
        cells.uns["microns_per_unit"] = 1.0
        out = oc.pp.pseudo_spots(section, spot_diameter_um=80, spacing_um=150)
        assert set(out.images) == set(section.images)
        assert len(out.shapes["pseudo_spots"]) == out.tables["pseudo_spots_table"].n_obs
        assert out.tables["pseudo_spots_table"].uns["spatialdata_attrs"]["region"] == "pseudo_spots"

    def test_unknown_scale_is_an_error(self):
        with pytest.raises(ValueError, match="microns_per_unit"):
            oc.pp.pseudo_spots(self.cells([[0, 0], [1, 1]], [[1, 1], [1, 1]], ["a", "a"]))
        with pytest.raises(ValueError, match="`microns_per_unit` must be a finite number > 0"):
            oc.pp.pseudo_spots(self.cells([[0, 0], [1, 1]], [[1, 1], [1, 1]], ["a", "a"]), microns_per_unit=np.nan)

    def test_values_that_are_not_counts_are_pooled_with_a_warning(self):
        cells = self.cells([[0, 0], [1, 1]], [[np.log1p(3), 0], [1, 2]], ["a", "a"])  # a log1p value among counts
        with pytest.warns(UserWarning, match=r"1 of 3 stored values are not whole numbers.*layer='counts'"):
            spots = oc.pp.pseudo_spots(cells, microns_per_unit=1.0)
        np.testing.assert_allclose(spots.X.toarray(), [[np.log1p(3) + 1, 2]], rtol=1e-6)

    def test_unlabelled_cells_are_counted_with_a_warning(self):
        cells = self.cells([[0, 0], [1, 1], [2, 2]], np.ones((3, 2)), ["a", "b", "a"])
        cells.obs["cell_type"] = cells.obs["cell_type"].cat.add_categories("unused")
        cells.obs.loc[cells.obs_names[1], "cell_type"] = np.nan
        with pytest.warns(UserWarning, match=r"1 of 3 observations have no `.obs\['cell_type'\]` label"):
            spots = oc.pp.pseudo_spots(cells, groupby="cell_type", microns_per_unit=1.0)
        assert spots.obs["n_cells"].tolist() == [3]
        assert spots.obsm["cell_counts"].iloc[0].to_dict() == {"a": 2, "b": 0, "unused": 0}  # the NaN one: nowhere

    @pytest.mark.parametrize(("value", "match"), [(np.nan, "NaN or inf"), (np.inf, "NaN or inf"), (-1.0, "negative")])
    def test_counts_must_be_summable(self, value, match):
        cells = self.cells([[0, 0], [1, 1]], [[1, value], [1, 1]], ["a", "a"])
        with pytest.raises(ValueError, match=match):
            oc.pp.pseudo_spots(cells, microns_per_unit=1.0)


def test_tiles_still_read_after_align(section):
    """After align, spots and image share two coordinate systems; tiles must still find the one map between them."""
    table = section.tables["table"]
    sc.pp.pca(table, n_comps=5, random_state=0)
    before = oc.pp.tiles(section, image_key="he").to_array()
    oc.tl.align(section, section, use_rep="X_pca", progress=False)
    np.testing.assert_array_equal(oc.pp.tiles(section, image_key="he").to_array(), before)


def test_default_is_the_official_solver_and_switches_past_the_exact_kernel_limit(pair, monkeypatch):
    """Official defaults (exact kernel, no cap, |Δσ²| <= 1e-9, float64); too large a source gets the scalable solver."""
    source, target = pair
    official = oc.tl.align(source, target, use_rep="X_pca", progress=False, copy=True)
    exact = official.uns["omiclip"]["align"]["spatial_aligned"]
    assert (exact["kernel"], exact["max_points"], exact["max_iter"], exact["tol"], exact["dtype"]) == (
        "exact", "all", "none", 1e-9, "float64"
    )  # fmt: skip
    assert (exact["scaling"], exact["center"]) == ("each", False)
    with pytest.raises(ValueError, match="give `tol > 0` or an `rtol`"):
        oc.tl.align(source, target, use_rep="X_pca", tol=0, progress=False)
    monkeypatch.setattr("omiclip.tl._align._EXACT_KERNEL_MAX_POINTS", source.n_obs - 1)
    with pytest.warns(UserWarning, match=f"{source.n_obs:,} spots: the exact motion kernel"):
        scaled = oc.tl.align(source, target, use_rep="X_pca", max_iter=50, progress=False, copy=True)
    params = scaled.uns["omiclip"]["align"]["spatial_aligned"]
    assert (params["kernel"], params["n_landmarks"], params["max_points"], params["max_iter"], params["rtol"]) == (
        "nystrom", 1000, 5000, 50, 1e-5
    )  # fmt: skip
    truth = source.obsm["true_spatial"]
    official_error = error_um(official.obsm["spatial_aligned"], truth)
    assert error_um(scaled.obsm["spatial_aligned"], truth) < 1.2 * official_error + 0.1 * SPOT_UM
