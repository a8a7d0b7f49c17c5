from __future__ import annotations

from anndata import AnnData

from omiclip._validate import check_int, check_memory, check_number

from ._spatialdata import build_sdata
from ._synthetic import SPOT_DIAMETER_UM, SectionParams, simulate_reference, simulate_section
from ._tissue_biology import DOMAINS

_MIN_SIZE_UM = 4 * SPOT_DIAMETER_UM  # smaller slides hold too few spots (and no tissue to sample cells from)


def synthetic_tissue(
    *,
    section: int = 0,
    seed: int = 0,
    size_um: float = 3000.0,
    n_domains: int = 5,
    um_per_px: float = 0.75,
    image: bool = True,
    deformation: float = 1.0,
    dispersion: float = 10.0,
    position_noise_um: float = 0.0,
):
    """A synthetic Visium-like section of breast tissue with known ground truth.

    All sections of one ``seed`` (and :func:`synthetic_reference`) come from the same virtual tissue:
    4–6 smooth, irregular domains (``invasive cancer``, ``connective tissue``, ``immune infiltrate``,
    ``adipose tissue``, ``cancer in situ``, ``vascular stroma``), seven cell types with real marker
    genes, cells placed at domain-specific densities. Spots (55 µm, 100 µm hexagonal pitch) sum the
    negative-binomial counts of the cells they cover. The H&E-like image is rendered from the same
    cells: nuclear size and darkness per cell type, eosin density per domain.

    Section 0 lies as the tissue does. Section ``k >= 1`` is a serial section placed on its slide by a
    known rotation, translation and smooth non-rigid warp, with a fragment missing.

    Parameters
    ----------
    section
        Which serial section.
    seed
        Seed of the tissue; the same seed gives the same tissue, sections and reference.
    size_um
        Side of the square slide area, in µm.
    n_domains
        Number of tissue domains (2–6).
    um_per_px
        Pixel size of the full-resolution image (default 0.75 µm: 4000 px for 3 mm).
    image
        Render the H&E image (skip it for expression-only tests).
    deformation
        Scale of rotation, translation and warp of sections ``>= 1`` (0: none).
    dispersion
        Negative-binomial dispersion of spot counts (lower: noisier).
    position_noise_um
        Standard deviation of noise added to the recorded spot positions.

    Returns
    -------
    SpatialData in the ``"global"`` coordinate system (µm) with

    ``images["he"]``
        ``uint8`` RGB multiscale image (Dask-chunked), scaled by ``um_per_px`` into µm.
    ``shapes["spots"]``
        Spot circles (radius 27.5 µm), linked to the table by ``obs["spot_id"]``.
    ``points["cells"]``
        Every simulated cell: ``x``, ``y`` (µm), ``cell_type``.
    ``tables["table"]``
        Counts (sparse) with ``obsm["spatial"]`` (µm), ``obs["domain"]``, ``obs["n_cells"]``,
        ``obsm["true_proportions"]`` (cell-type fractions of the cells under each spot),
        ``obsm["true_spatial"]`` (where each spot lies in section 0's coordinates: the alignment ground
        truth) and ``uns["synthetic"]`` (all parameters, including the warp).
    """
    check_int("section", section, min=0)
    check_int("seed", seed, min=0)
    _check_tissue(size_um, n_domains)
    check_number("um_per_px", um_per_px, min=0, min_inclusive=False)
    check_number("dispersion", dispersion, min=0, min_inclusive=False)
    check_number("deformation", deformation, min=0)
    check_number("position_noise_um", position_noise_um, min=0)
    if image:  # rendering holds a few float64 planes of the whole image at once: about 80 bytes per pixel
        n_px = size_um / um_per_px
        check_memory("um_per_px", um_per_px, 80 * n_px**2, f"a {n_px:.0f} × {n_px:.0f} px image of {size_um:g} µm")
    params = SectionParams(
        seed=seed,
        section=section,
        size_um=float(size_um),
        n_domains=n_domains,
        um_per_px=float(um_per_px),
        deformation=float(deformation),
        dispersion=float(dispersion),
        position_noise_um=float(position_noise_um),
    )
    cells, table, he = simulate_section(params, image=image)
    return build_sdata(
        table,
        spot_radius=SPOT_DIAMETER_UM / 2,
        image=he,
        image_to_global=um_per_px,
        coordinate_system="global",
        cells=cells,
    )


def synthetic_reference(
    *,
    n_cells: int = 3000,
    seed: int = 0,
    size_um: float = 3000.0,
    n_domains: int = 5,
    dispersion: float = 5.0,
) -> AnnData:
    """A single-cell reference for :func:`synthetic_tissue` sections of the same ``seed``.

    Cells of the seven cell types with the tissue's expression programs, measured with gene-wise
    capture biases of their own (as a different platform would), NB counts.

    Parameters
    ----------
    n_cells
        Number of cells.
    seed, size_um, n_domains
        As for :func:`synthetic_tissue` (they define the tissue whose programs are used).
    dispersion
        Negative-binomial dispersion.

    Returns
    -------
    AnnData (cells × genes, sparse counts) with ``obs["cell_type"]`` (categorical).
    """
    check_int("seed", seed, min=0)
    check_int("n_cells", n_cells, min=1)
    _check_tissue(size_um, n_domains)
    check_number("dispersion", dispersion, min=0, min_inclusive=False)
    return simulate_reference(seed, float(size_um), n_domains, n_cells, float(dispersion))


def _check_tissue(size_um, n_domains) -> None:
    check_number("size_um", size_um, min=_MIN_SIZE_UM)
    check_int("n_domains", n_domains, min=2, max=len(DOMAINS))
