"""``oc.tl.align(flavor=...)``: the omiclip flavour against the official one on a known warp, and the plumbing."""

import numpy as np
import pytest
import spatialdata as sd

import omiclip as oc
from omiclip.__main__ import main

PITCH_UM = 100.0  # synthetic Visium-like grid


def warp(xy: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The known warp of issue 17: 25° rotation, a shift, a smooth bend of 0.1 pitch, 10 % of spots cut off one side.

    Returns the moved coordinates of the kept spots and the mask of kept spots.
    """
    centre, size = xy.mean(0), np.ptp(xy)
    direction = np.random.default_rng(seed).normal(size=2)
    along = (xy - centre) @ (direction / np.linalg.norm(direction))
    keep = along < np.quantile(along, 0.9)
    u = (xy - centre) / size
    bend = 0.1 * PITCH_UM * np.column_stack([np.sin(np.pi * u[:, 1]), np.sin(np.pi * u[:, 0])])
    t = np.deg2rad(25)
    rotation = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    moved = (xy + bend - centre) @ rotation.T + centre + [0.1 * size, -0.05 * size]
    return moved[keep], keep


@pytest.fixture(scope="module")
def moved_section(joint_pca):
    """Target: a synthetic section. Source: its moved copy with counts resampled; joint expression PCA on both."""
    target = oc.datasets.synthetic_tissue(section=0, seed=3, size_um=2000, image=False).tables["table"]
    moved_xy, keep = warp(np.asarray(target.obsm["spatial"], dtype=float))
    source = target[keep].copy()
    source.X = np.random.default_rng(1).poisson(np.asarray(source.X.todense())).astype(np.float32)
    source.obsm["spatial"] = moved_xy
    source.obsm["true_spatial"] = np.asarray(target.obsm["spatial"], dtype=float)[keep]
    joint_pca(source, target)
    return source, target


def error_pitch(table, key: str) -> float:
    return float(np.linalg.norm(table.obsm[key] - table.obsm["true_spatial"], axis=1).mean()) / PITCH_UM


def test_omiclip_flavour_beats_the_official_one_on_a_known_warp(moved_section):
    source, target = moved_section
    errors = {}
    for flavor in ("loki", "omiclip"):
        official = {"scaling": "each", "center": False} if flavor == "loki" else {}  # the official recipe
        moved = oc.tl.align(source, target, use_rep="X_pca", flavor=flavor, progress=False, copy=True, **official)
        errors[flavor] = error_pitch(moved, "spatial_aligned")
        errors[f"{flavor} nonrigid"] = error_pitch(moved, "spatial_aligned_nonrigid")
    # unaligned ≈ 4 pitches; no rigid move does better than the bend (~0.08 pitch here), so the rigid outputs can
    # only tie there, while the non-rigid one, which can follow the bend, must be far closer
    assert errors["omiclip"] < 0.3 and errors["omiclip"] <= errors["loki"], errors
    assert errors["omiclip nonrigid"] < 0.5 * errors["loki nonrigid"], errors


def test_same_keys_for_both_flavours_and_the_flavour_is_recorded(moved_section):
    source, target = moved_section
    results = {
        flavor: oc.tl.align(source, target, use_rep="X_pca", flavor=flavor, progress=False, copy=True)
        for flavor in ("loki", "omiclip")
    }
    loki, omiclip = results["loki"], results["omiclip"]
    assert set(loki.obsm) == set(omiclip.obsm)
    assert set(loki.uns["omiclip"]["align"]["spatial_aligned"]) == set(
        omiclip.uns["omiclip"]["align"]["spatial_aligned"]
    )
    assert (
        loki.uns["omiclip"]["align"]["spatial_aligned"]["flavor"] == "loki"
        and loki.uns["omiclip"]["align"]["spatial_aligned"]["w"] == 0.0
    )
    assert (
        omiclip.uns["omiclip"]["align"]["spatial_aligned"]["flavor"] == "omiclip"
        and omiclip.uns["omiclip"]["align"]["spatial_aligned"]["w"] == 0.1
    )
    # the rigid output is the matrix applied to the source's coordinates, in both flavours
    for table in (loki, omiclip):
        matrix = np.asarray(table.uns["omiclip"]["align"]["spatial_aligned"]["matrix"])
        xy = np.asarray(source.obsm["spatial"])
        np.testing.assert_allclose(xy @ matrix[:2, :2].T + matrix[:2, 2], table.obsm["spatial_aligned"], atol=1e-6)
    assert "spatial_aligned" not in source.obsm  # copy=True left the input alone


def test_unknown_flavour_and_sections_in_different_units(moved_section):
    source, target = moved_section
    with pytest.raises(ValueError, match="flavor"):
        oc.tl.align(source, target, use_rep="X_pca", flavor="official", copy=True)
    shrunk = source.copy()
    shrunk.obsm["spatial"] = shrunk.obsm["spatial"] / 3  # e.g. pixels of another resolution, units not declared
    with pytest.warns(RuntimeWarning, match="same units"):
        oc.tl.align(shrunk, target, use_rep="X_pca", flavor="omiclip", progress=False, copy=True)


def test_align_stack_passes_the_flavour(moved_section):
    source, target = moved_section
    sections = [target.copy(), source.copy()]
    oc.tl.align_stack(sections, use_rep="X_pca", flavor="omiclip", progress=False)
    assert sections[1].uns["omiclip"]["align"]["spatial_aligned"]["flavor"] == "omiclip"
    assert error_pitch(sections[1], "spatial_aligned") < 0.3


def test_cli_flavor(section, tmp_path):
    source, target = tmp_path / "source.zarr", tmp_path / "target.zarr"
    section.write(source)
    section.write(target)
    assert main(["align", str(source), str(target), "--use-rep", "none", "--flavor", "omiclip"]) == 0
    table = sd.read_zarr(source).tables["table"]
    assert table.uns["omiclip"]["align"]["spatial_aligned"]["flavor"] == "omiclip"
    xy = np.asarray(table.obsm["spatial"])
    assert np.abs(table.obsm["spatial_aligned"] - xy).max() < 1e-3 * np.ptp(xy)  # a section onto itself stays


def test_outliers_have_a_uniform_density_over_the_given_volume():
    """P·1, Pᵀ·1 and P·X are those of the mixture (1 - w) Σ_m N(x; y_m, diag σ²) / M + w / V, computed directly."""
    import torch

    from omiclip._core.cpd import _expectation

    rng = np.random.default_rng(0)
    source, target = rng.normal(size=(3, 3)), rng.normal(size=(4, 3))
    variances, w, volume = np.array([0.5, 1.0, 2.0]), 0.2, 7.0
    gaussians = np.exp(-0.5 * (((target[None] - source[:, None]) ** 2) / variances).sum(-1))
    gaussians /= np.sqrt(np.prod(2 * np.pi * variances))
    mixture = (1 - w) * gaussians / len(source)  # M × N
    posterior = mixture / (mixture.sum(0) + w / volume)
    as_tensor = lambda a: torch.as_tensor(a, dtype=torch.float64)  # noqa: E731
    P1, Pt1, PX = _expectation(as_tensor(target), as_tensor(source), variances, w, 2, outlier_volume=volume)
    np.testing.assert_allclose(P1.numpy(), posterior.sum(1), rtol=1e-12)
    np.testing.assert_allclose(Pt1.numpy(), posterior.sum(0), rtol=1e-12)
    np.testing.assert_allclose(PX.numpy(), posterior @ target, rtol=1e-12)


def test_align_points_gives_every_e_step_the_target_box(moved_section, monkeypatch):
    """Rigid start, subsets and the iterations on all points share one outlier density: the target's box."""
    import omiclip._core.align_omiclip as flavour
    from omiclip._core.cpd import CPDOptions

    volumes, expectation = [], flavour._expectation

    def recording(*args):
        volumes.append(args[-1])
        return expectation(*args)

    monkeypatch.setattr(flavour, "_expectation", recording)
    source, target = moved_section
    xy = [np.asarray(table.obsm["spatial"], dtype=float) for table in (source, target)]
    options = CPDOptions(w=0.1, max_iter=5, max_points=150, refine_iter=2)
    flavour.align_points(*xy, source.obsm["X_pca"], target.obsm["X_pca"], options=options)
    clouds = flavour.point_clouds(*xy, source.obsm["X_pca"], target.obsm["X_pca"], n_pcs=2, center=False)
    assert len(volumes) >= 7 and set(volumes) == {clouds.target_volume}


def test_rigid_fit_does_not_depend_on_how_densely_the_target_is_sampled(joint_pca):
    """Every target spot twice is the same tissue: the same rigid fit (CPD's 1/N outlier density would halve)."""
    from omiclip._core.align_omiclip import point_clouds, rigid_cpd
    from omiclip._core.cpd import CPDOptions

    source, target = (
        oc.datasets.synthetic_tissue(section=k, seed=0, size_um=2000, image=False).tables["table"] for k in (1, 0)
    )
    joint_pca(source, target)
    xy = {name: np.asarray(table.obsm["spatial"], dtype=float) for name, table in (("s", source), ("t", target))}
    clouds = point_clouds(xy["s"], xy["t"], source.obsm["X_pca"], target.obsm["X_pca"], n_pcs=2, center=False)
    options = CPDOptions(w=0.1, dtype="float64")
    fits = [
        rigid_cpd(clouds.source, np.repeat(clouds.target, k, axis=0), options, outlier_volume=volume)[0]
        for volume in (clouds.target_volume, None)
        for k in (1, 2)
    ]
    np.testing.assert_allclose(fits[1] * clouds.unit, fits[0] * clouds.unit, atol=1e-6)  # µm
    assert np.abs(fits[3] - fits[2]).max() * clouds.unit > 0.1  # CPD's 1/N: the fit moves with the sampling
