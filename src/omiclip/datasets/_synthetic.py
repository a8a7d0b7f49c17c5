"""Synthetic breast tissue with ground truth: serial sections (spots, H&E, cells) and a single-cell reference.

Every section is cut from one virtual tissue (domains, cell-type composition and expression programs
fixed by ``seed``). Section 0 lies on the slide as the tissue does; section ``k >= 1`` is placed by a
known warp (rotation, translation and a smooth non-rigid displacement) and misses a fragment. Spots,
counts, the H&E image and the cell list of a section are all drawn from the same simulated cells, so
the image carries the signal the model must learn.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import lru_cache

import numpy as np
import pandas as pd
from anndata import AnnData
from scipy import ndimage, sparse
from scipy.spatial import cKDTree

from omiclip._keys import MICRONS_PER_UNIT_KEY

from ._tissue_biology import BACKGROUND_GENES, CELL_TYPES, DOMAINS, MARKERS, NUCLEI

SPOT_DIAMETER_UM = 55.0
SPOT_PITCH_UM = 100.0
_FIELD_RESOLUTION_UM = 10.0  # grid step of the smooth fields that define the tissue
# Ruifrok & Johnston optical-density vectors of hematoxylin and eosin (RGB)
_HEMATOXYLIN_OD = np.array([0.650, 0.704, 0.286])
_EOSIN_OD = np.array([0.072, 0.990, 0.105])


@dataclass(frozen=True)
class Tissue:
    """The virtual tissue, in tissue coordinates (µm, origin at a corner of the square)."""

    size_um: float
    domain_grid: np.ndarray  # (n, n) domain index per field cell, -1 outside the tissue
    composition_grid: np.ndarray  # (n, n, n_types) cell-type fractions per field cell
    genes: np.ndarray
    profiles: np.ndarray  # (n_types, n_genes) mean UMIs per cell
    domains: tuple[str, ...]

    def _cell(self, xy: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        index = np.floor(xy / _FIELD_RESOLUTION_UM).astype(int)
        n = self.domain_grid.shape[0]
        inside = ((index >= 0) & (index < n)).all(axis=1)
        index = np.clip(index, 0, n - 1)
        return index[:, 1], index[:, 0], inside  # row (y), column (x)

    def domain_at(self, xy: np.ndarray) -> np.ndarray:
        """Domain index at tissue coordinates ``(x, y)``; -1 outside the tissue."""
        row, col, inside = self._cell(xy)
        return np.where(inside, self.domain_grid[row, col], -1)

    def composition_at(self, xy: np.ndarray) -> np.ndarray:
        """Expected cell-type fractions at tissue coordinates."""
        row, col, _ = self._cell(xy)
        return self.composition_grid[row, col]


@dataclass(frozen=True)
class SectionWarp:
    """Maps slide coordinates of a section to tissue coordinates (= slide coordinates of section 0).

    ``T(x) = R (x - c) + c + t + sum_j a_j exp(-|x - p_j|^2 / (2 s^2))``
    """

    rotation_deg: float
    translation_um: tuple[float, float]
    center_um: tuple[float, float]
    bump_centers_um: tuple[tuple[float, float], ...]
    bump_shifts_um: tuple[tuple[float, float], ...]
    bump_width_um: float
    missing_center_um: tuple[float, float] | None
    missing_radius_um: float

    def rigid(self, xy: np.ndarray) -> np.ndarray:
        """The rotation and translation alone."""
        theta = np.deg2rad(self.rotation_deg)
        rotation = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
        center = np.asarray(self.center_um)
        return (xy - center) @ rotation.T + center + np.asarray(self.translation_um)

    def __call__(self, xy: np.ndarray) -> np.ndarray:
        out = self.rigid(xy)
        for bump_center, shift in zip(self.bump_centers_um, self.bump_shifts_um, strict=True):
            weight = np.exp(-((xy - np.asarray(bump_center)) ** 2).sum(axis=1) / (2 * self.bump_width_um**2))
            out = out + weight[:, None] * np.asarray(shift)
        return out

    def is_missing(self, tissue_xy: np.ndarray) -> np.ndarray:
        """Whether tissue points fall in the fragment lost from this section."""
        if self.missing_center_um is None:
            return np.zeros(len(tissue_xy), dtype=bool)
        return ((tissue_xy - np.asarray(self.missing_center_um)) ** 2).sum(axis=1) < self.missing_radius_um**2


def _smooth_field(rng: np.random.Generator, n: int, correlation_cells: float) -> np.ndarray:
    field = ndimage.gaussian_filter(rng.standard_normal((n, n)), correlation_cells, mode="reflect")
    return (field - field.mean()) / field.std()


@lru_cache(maxsize=4)
def make_tissue(seed: int, size_um: float, n_domains: int) -> Tissue:
    """Build the virtual tissue (cached: every section and the reference of one seed share it)."""
    if not 2 <= n_domains <= len(DOMAINS):
        raise ValueError(f"`n_domains` must be between 2 and {len(DOMAINS)}, got {n_domains}.")
    rng = np.random.default_rng(seed)
    n = int(np.ceil(size_um / _FIELD_RESOLUTION_UM))
    correlation = n / 10
    # domains: argmax of smooth random fields gives irregular, contiguous regions
    domain_grid = np.argmax(np.stack([_smooth_field(rng, n, correlation) for _ in range(n_domains)]), axis=0)
    # tissue: a wobbly disc covering most of the square
    yy, xx = (np.mgrid[0:n, 0:n] + 0.5) / n - 0.5
    radius = np.hypot(xx, yy) / 0.48
    inside = (1 - radius) + 0.12 * _smooth_field(rng, n, correlation / 2) > 0.05
    domain_grid = np.where(inside, domain_grid, -1)

    n_types = len(CELL_TYPES)
    mean_composition = np.array([[d.composition.get(t, 0.0) for t in CELL_TYPES] for d in DOMAINS[:n_domains]])
    # composition varies smoothly inside each domain (log-normal modulation, renormalised)
    modulation = np.exp(0.6 * np.stack([_smooth_field(rng, n, correlation / 2) for _ in range(n_types)], axis=-1))
    composition = mean_composition[np.clip(domain_grid, 0, None)] * modulation
    composition /= composition.sum(axis=-1, keepdims=True)

    genes = np.array([g for t in CELL_TYPES for g in MARKERS[t]] + list(BACKGROUND_GENES), dtype=object)
    n_markers = sum(len(MARKERS[t]) for t in CELL_TYPES)
    # background: log-normal levels shared by all types, mildly type-specific
    background = rng.lognormal(mean=-0.5, sigma=1.2, size=len(BACKGROUND_GENES))
    profiles = np.empty((n_types, len(genes)))
    profiles[:, n_markers:] = background * rng.lognormal(0, 0.35, size=(n_types, len(BACKGROUND_GENES)))
    profiles[:, :n_markers] = rng.lognormal(-3.0, 0.5, size=(n_types, n_markers))  # leakage
    offset = 0
    for t, cell_type in enumerate(CELL_TYPES):
        k = len(MARKERS[cell_type])
        profiles[t, offset : offset + k] = rng.lognormal(1.2, 0.5, size=k)
        offset += k
    return Tissue(
        size_um=size_um,
        domain_grid=domain_grid,
        composition_grid=composition,
        genes=genes,
        profiles=profiles,
        domains=tuple(d.name for d in DOMAINS[:n_domains]),
    )


def section_warp(seed: int, section: int, size_um: float, *, deformation: float = 1.0) -> SectionWarp:
    """The known placement of ``section`` (identity for section 0)."""
    center = (size_um / 2, size_um / 2)
    if section == 0:
        return SectionWarp(0.0, (0.0, 0.0), center, (), (), 1.0, None, 0.0)
    rng = np.random.default_rng([seed, section])
    sign = rng.choice([-1, 1])
    n_bumps = 4
    return SectionWarp(
        rotation_deg=float(sign * rng.uniform(8, 20) * deformation),
        translation_um=tuple(rng.uniform(-0.05, 0.05, 2) * size_um * deformation),
        center_um=center,
        bump_centers_um=tuple(map(tuple, rng.uniform(0.2, 0.8, (n_bumps, 2)) * size_um)),
        bump_shifts_um=tuple(map(tuple, rng.normal(0, 0.025, (n_bumps, 2)) * size_um * deformation)),
        bump_width_um=0.15 * size_um,
        missing_center_um=tuple(rng.uniform(0.25, 0.75, 2) * size_um),
        missing_radius_um=0.12 * size_um,
    )


def simulate_cells(tissue: Tissue, warp: SectionWarp, rng: np.random.Generator) -> pd.DataFrame:
    """Cells of one section in its slide coordinates: Poisson positions thinned by local density."""
    densities = np.array([d.cells_per_mm2 for d in DOMAINS[: len(tissue.domains)]])
    area_mm2 = (tissue.size_um / 1000) ** 2
    n_candidates = rng.poisson(densities.max() * area_mm2)
    slide_xy = rng.uniform(0, tissue.size_um, size=(n_candidates, 2))
    tissue_xy = warp(slide_xy)
    domain = tissue.domain_at(tissue_xy)
    keep = (domain >= 0) & ~warp.is_missing(tissue_xy)
    keep &= rng.random(n_candidates) < densities[np.clip(domain, 0, None)] / densities.max()
    slide_xy, tissue_xy = slide_xy[keep], tissue_xy[keep]
    cumulative = np.cumsum(tissue.composition_at(tissue_xy), axis=1)
    cell_type = (rng.random((len(slide_xy), 1)) > cumulative).sum(axis=1).clip(max=len(CELL_TYPES) - 1)
    return pd.DataFrame(
        {
            "x": slide_xy[:, 0],
            "y": slide_xy[:, 1],
            "cell_type": pd.Categorical.from_codes(cell_type, categories=list(CELL_TYPES)),
        }
    )


def hex_grid(size_um: float, pitch_um: float = SPOT_PITCH_UM) -> np.ndarray:
    """Visium-like spot centres: rows ``pitch·√3/2`` apart, odd rows shifted by half a pitch."""
    row_step = pitch_um * np.sqrt(3) / 2
    ys = np.arange(pitch_um / 2, size_um, row_step)
    xs = np.arange(pitch_um / 2, size_um, pitch_um / 2)  # every half pitch; each row keeps every other one
    x, y = np.meshgrid(xs, ys)
    row, col = np.meshgrid(np.arange(len(xs)), np.arange(len(ys)))
    on_grid = (row + col) % 2 == 0
    return np.column_stack([x[on_grid], y[on_grid]])


def negative_binomial(rng: np.random.Generator, mean: np.ndarray, dispersion: float) -> np.ndarray:
    """Gamma–Poisson counts with ``var = mean + mean² / dispersion``."""
    return rng.poisson(rng.gamma(dispersion, mean / dispersion)).astype(np.float32)


def simulate_spots(
    tissue: Tissue,
    warp: SectionWarp,
    cells: pd.DataFrame,
    rng: np.random.Generator,
    *,
    dispersion: float,
    position_noise_um: float,
) -> AnnData:
    """Spots over tissue with counts summed from the cells they cover, and their ground truth."""
    centers = hex_grid(tissue.size_um)
    tissue_xy = warp(centers)
    on_tissue = (tissue.domain_at(tissue_xy) >= 0) & ~warp.is_missing(tissue_xy)
    centers, tissue_xy = centers[on_tissue], tissue_xy[on_tissue]

    cell_xy = cells[["x", "y"]].to_numpy()
    members = cKDTree(cell_xy).query_ball_point(centers, r=SPOT_DIAMETER_UM / 2)
    codes = cells["cell_type"].cat.codes.to_numpy()
    n_types = len(CELL_TYPES)
    type_counts = np.zeros((len(centers), n_types))
    for spot, idx in enumerate(members):
        np.add.at(type_counts[spot], codes[idx], 1)
    n_cells = type_counts.sum(axis=1)
    expected = tissue.composition_at(tissue_xy)
    proportions = np.where(n_cells[:, None] > 0, type_counts / np.maximum(n_cells, 1)[:, None], expected)

    # a spot with no nucleus still captures some ambient RNA of its neighbourhood
    mean = (type_counts + 0.5 * expected) @ tissue.profiles
    mean *= rng.lognormal(0, 0.25, size=(len(centers), 1))  # capture efficiency
    counts = negative_binomial(rng, mean, dispersion)

    observed = centers + rng.normal(0, position_noise_um, centers.shape) if position_noise_um else centers
    observed = np.clip(observed, 0, tissue.size_um)  # a recorded position is on the slide (and its image)
    domain = tissue.domain_at(tissue_xy)
    obs = pd.DataFrame(
        {
            "domain": pd.Categorical.from_codes(domain, categories=list(tissue.domains)),
            "n_cells": n_cells.astype(int),
        },
        index=[f"spot_{i}" for i in range(len(centers))],
    )
    adata = AnnData(sparse.csr_matrix(counts), obs=obs, var=pd.DataFrame(index=tissue.genes.astype(str)))
    adata.obsm["spatial"] = observed
    adata.obsm["true_spatial"] = tissue_xy
    adata.obsm["true_proportions"] = pd.DataFrame(proportions, index=obs.index, columns=list(CELL_TYPES))
    return adata


def render_he(
    tissue: Tissue, warp: SectionWarp, cells: pd.DataFrame, rng: np.random.Generator, *, um_per_px: float
) -> np.ndarray:
    """H&E-like RGB image ``(3, y, x)`` of a section: nuclei stamped per cell type over an eosin background.

    Colours follow Beer–Lambert with the standard H&E optical-density vectors; each domain has its own
    background eosin density and each cell type its own nuclear size and darkness.
    """
    n_px = int(round(tissue.size_um / um_per_px))
    # eosin background from the domain map, looked up through the section's warp
    coarse_step_px = max(1, int(round(_FIELD_RESOLUTION_UM / 2 / um_per_px)))
    coarse_n = int(np.ceil(n_px / coarse_step_px))
    coarse_xy = np.stack(np.meshgrid(np.arange(coarse_n), np.arange(coarse_n)), -1).reshape(-1, 2) + 0.5
    coarse_xy = coarse_xy * coarse_step_px * um_per_px
    tissue_xy = warp(coarse_xy)
    domain = tissue.domain_at(tissue_xy)
    domain[warp.is_missing(tissue_xy)] = -1
    eosin_of_domain = np.array([d.eosin for d in DOMAINS[: len(tissue.domains)]] + [0.0])
    eosin = eosin_of_domain[domain].reshape(coarse_n, coarse_n)
    eosin = ndimage.zoom(eosin, coarse_step_px, order=1)[:n_px, :n_px]
    eosin = eosin * np.clip(1 + 0.35 * ndimage.gaussian_filter(rng.standard_normal((n_px, n_px)), 1.5) * 3, 0, 2)

    hematoxylin = np.zeros((n_px, n_px), dtype=np.float32)
    codes = cells["cell_type"].cat.codes.to_numpy()
    cell_px = cells[["x", "y"]].to_numpy() / um_per_px
    for t, cell_type in enumerate(CELL_TYPES):
        nucleus = NUCLEI[cell_type]
        radius_px = max(nucleus.radius_um / um_per_px, 0.7)
        r = int(np.ceil(radius_px))
        dy, dx = np.mgrid[-r : r + 1, -r : r + 1]
        disk = dx**2 + dy**2 <= radius_px**2
        dy, dx = dy[disk], dx[disk]
        centers = np.round(cell_px[codes == t]).astype(int)
        if not len(centers):
            continue
        darkness = nucleus.darkness * rng.uniform(0.8, 1.2, len(centers)).astype(np.float32)
        ys = (centers[:, 1, None] + dy).ravel()
        xs = (centers[:, 0, None] + dx).ravel()
        valid = (ys >= 0) & (ys < n_px) & (xs >= 0) & (xs < n_px)
        hematoxylin[ys[valid], xs[valid]] = np.repeat(darkness, len(dy))[valid]
    hematoxylin *= 1 + 0.15 * rng.standard_normal(hematoxylin.shape).astype(np.float32)  # chromatin texture

    optical_density = 1.4 * hematoxylin[..., None] * _HEMATOXYLIN_OD + 0.7 * eosin[..., None] * _EOSIN_OD
    rgb = 255 * np.exp(-optical_density) + rng.normal(0, 3, optical_density.shape)
    return np.clip(rgb, 0, 255).astype(np.uint8).transpose(2, 0, 1)


@dataclass(frozen=True)
class SectionParams:
    """Parameters of a synthetic section, stored in ``uns["synthetic"]``."""

    seed: int
    section: int
    size_um: float
    n_domains: int
    um_per_px: float
    deformation: float
    dispersion: float
    position_noise_um: float


def simulate_section(params: SectionParams, *, image: bool):
    """Cells, spot table and (optionally) the H&E image of one section, as plain arrays."""
    tissue = make_tissue(params.seed, params.size_um, params.n_domains)
    warp = section_warp(params.seed, params.section, params.size_um, deformation=params.deformation)
    rng = np.random.default_rng([params.seed, params.section, 1])
    cells = simulate_cells(tissue, warp, rng)
    adata = simulate_spots(
        tissue, warp, cells, rng, dispersion=params.dispersion, position_noise_um=params.position_noise_um
    )
    adata.uns["synthetic"] = {**asdict(params), "warp": _plain(asdict(warp))}
    adata.uns[MICRONS_PER_UNIT_KEY] = 1.0  # the "global" coordinate system is in µm
    he = render_he(tissue, warp, cells, rng, um_per_px=params.um_per_px) if image else None
    return cells, adata, he


def simulate_reference(seed: int, size_um: float, n_domains: int, n_cells: int, dispersion: float) -> AnnData:
    """Single cells with the tissue's expression programs, seen through a different platform."""
    tissue = make_tissue(seed, size_um, n_domains)
    rng = np.random.default_rng([seed, 10_000])
    frequencies = tissue.composition_grid[tissue.domain_grid >= 0].mean(axis=0)
    frequencies = 0.5 * frequencies + 0.5 / len(frequencies)  # rare types still get cells
    cell_type = rng.choice(len(CELL_TYPES), size=n_cells, p=frequencies / frequencies.sum())
    platform = rng.lognormal(0, 0.3, size=len(tissue.genes))  # gene-wise capture differs from spots
    mean = tissue.profiles[cell_type] * platform * rng.lognormal(0, 0.3, size=(n_cells, 1)) * 3
    counts = negative_binomial(rng, mean, dispersion)
    obs = pd.DataFrame(
        {"cell_type": pd.Categorical.from_codes(cell_type, categories=list(CELL_TYPES))},
        index=[f"cell_{i}" for i in range(n_cells)],
    )
    adata = AnnData(sparse.csr_matrix(counts), obs=obs, var=pd.DataFrame(index=tissue.genes.astype(str)))
    adata.uns["synthetic"] = {"seed": seed, "size_um": size_um, "n_domains": n_domains, "dispersion": dispersion}
    return adata


def _plain(value):
    """Tuples to lists and None to "none", so the parameters can be written to zarr/h5ad."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return "none" if value is None else value
