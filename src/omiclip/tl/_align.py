from __future__ import annotations

import dataclasses
import inspect
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from anndata import AnnData

from omiclip import _logging as logg
from omiclip._anndata import get_coordinates, get_table, is_spatialdata, reference_pair, working_copy
from omiclip._core import align_omiclip
from omiclip._core.cpd import CPDOptions, apply_affine
from omiclip._core.registration import Alignment, Scaling, align_points, chain
from omiclip._docs import doc_params
from omiclip._keys import ALIGNED_KEY, SPATIAL_KEY, claim, nonrigid_key, record, stack_key
from omiclip._validate import check_choice, check_int, check_number, check_optional_int
from omiclip.tl._model import resolve_device

if TYPE_CHECKING:
    from spatialdata import SpatialData

Mode = Literal["rigid", "nonrigid"]
MODES = ("rigid", "nonrigid")
Flavor = Literal["loki", "omiclip"]
# outlier weight of each flavour when `w` is not given: the official 0, and omiclip's (spots missing on one side)
_FLAVOR_W = {"loki": 0.0, "omiclip": 0.1}
# the source's robust extent over the target's beyond which the omiclip flavour warns about units
_EXTENT_RATIO_WARN = 1.5


@doc_params
def align(
    source: AnnData | SpatialData,
    target: AnnData | SpatialData,
    *,
    use_rep: str | None = "X_omiclip_text",
    target_rep: str | None = None,
    spatial_key: str = SPATIAL_KEY,
    key_added: str = ALIGNED_KEY,
    mode: Mode = "rigid",
    flavor: Flavor = "loki",
    n_pcs: int = 2,
    scaling: Scaling = "each",
    center: bool = False,
    alpha: float = 0.5,
    beta: float = 2.0,
    w: float | None = None,
    n_eig: int = 100,
    n_landmarks: int | None = None,
    max_points: int | None = None,
    max_iter: int | None = None,
    refine_iter: int = 5,
    tol: float = 1e-9,
    rtol: float | None = None,
    dtype: Literal["float64", "float32"] = "float64",
    device: str | None = None,
    seed: int = 0,
    coordinate_system: str = "global",
    new_coordinate_system: str = "aligned",
    table_key: str | None = None,
    target_table_key: str | None = None,
    microns_per_unit: float | None = None,
    target_microns_per_unit: float | None = None,
    progress: bool = True,
    copy: bool = False,
) -> AnnData | SpatialData | None:
    """Align a source section onto a target section by coordinates and embeddings (Loki Align).

    Each section becomes a point cloud ``[x, y, PC1, PC2]``: spot coordinates plus the first ``n_pcs`` principal
    components of its embedding (PCA fitted on the target, applied to the source), min–max scaled as the official
    code does. Non-rigid coherent point drift moves only the coordinate dimensions, so the embedding dimensions
    decide which spots match. A rigid fit (rotation + translation, no reflection) of the source onto its CPD result
    then gives the official output. Both are returned.

    Use ``use_rep="X_omiclip_text"`` for ST→ST, ``use_rep="X_omiclip_image", target_rep="X_omiclip_text"`` for
    H&E→ST, ``"X_pca"`` for the paper's "CPD on PCA" baseline (both PCAs must share one space, e.g. computed on the
    concatenated sections) and ``None`` for coordinates only.

    The defaults are the official run (``align_tissue``): each section min–max scaled on its own, no centring,
    CPD with α 0.5, β 2, w 0, the 100 leading eigenvectors of the exact motion kernel, float64, iterations until σ²
    changes by at most 1e-9. Only the memory differs: the E-step streams over blocks instead of holding the M×N
    posterior. The exact kernel costs O(M³) time and O(M²) memory, where the official code crashes or runs out of
    memory; above 10,000 source spots ``n_landmarks=None`` therefore switches, with a warning, to the scalable
    options: a Nyström kernel on 1,000 landmarks, EM on 5,000-point subsets refined on all points, at most 500
    iterations, relative tolerance 1e-5, float32 (``benchmarks/align_scale.py`` measures the difference). Every
    other deviation from the official code is an option, listed with its measured effect in the documentation's
    page of differences from the official code.

    Parameters
    ----------
    source
        AnnData or SpatialData to move; coordinates in ``.obsm[spatial_key]``.
    target
        AnnData or SpatialData that stays put; never modified.
    use_rep
        Source embedding in ``.obsm``; ``None`` registers coordinates only.
    target_rep
        Target embedding; default ``use_rep``.
    spatial_key
        Coordinates in ``.obsm`` of both. When both scales are known (``microns_per_unit``/
        ``target_microns_per_unit``, ``uns["microns_per_unit"]``, or what the data records: Visium spots, Visium HD
        bins, Xenium µm) the source is converted to the target's units; otherwise both must be in the same units.
    key_added
        ``.obsm`` key of the aligned coordinates (``mode``'s result); with ``mode="rigid"`` the CPD result also goes
        to ``{key_added}_nonrigid``.
    mode
        ``"rigid"`` (official output) or ``"nonrigid"``.
    flavor
        ``"loki"``: the official algorithm. ``"omiclip"``: more accurate (``omiclip._core.align_omiclip``; measured
        in ``benchmarks/align_flavors.py``): both sections in the target's units with one robust length unit
        (``scaling`` is not used; the sections must be in the same units, or both tables must have
        ``uns["microns_per_unit"]``), a σ² of its own for the coordinates and for each PC, an outlier weight ``w``
        (default 0.1) on a uniform density ``w / V``, ``V`` the robust box of the target's coordinates and PCs
        (CPD's ``w / N`` is not a density), and a rigid CPD before the non-rigid one. Same solver options, outputs
        and keys.
    n_pcs
        Embedding principal components added to the coordinates (official: 2).
    scaling
        ``"each"``: each cloud scaled by its own min and max over both axes (official; assumes both cover the same
        tissue). ``"shared"``: both clouds scaled by the target's extent after matching centroids (keeps relative
        size; for sections where one lacks a part of the other).
    center
        Move the source's embedding mean onto the target's before projecting it on the target's PCs. This removes a
        constant offset between the two embeddings, such as the gap between a CLIP model's image and text
        embeddings, which would otherwise hold the clouds apart (only x, y move); recommended for H&E→ST
        (``use_rep != target_rep``). The official code never centres (default ``False``).
    alpha
        λ, weight of the smoothness of the motion (official 0.5).
    beta
        Width of the motion kernel in unit-scaled coordinates (official 2).
    w
        Weight of the uniform outlier component, in [0, 1); default: the flavour's (``"loki"``: 0, the official
        value; ``"omiclip"``: 0.1).
    n_eig
        Rank of the low-rank motion kernel (official 100).
    n_landmarks
        ``None``: eigendecomposition of the exact kernel (official; up to 10,000 source spots, see above). A number:
        Nyström approximation of the kernel from that many random source spots (O(M · n_landmarks)).
    max_points
        EM on at most this many random points of each cloud; ``None`` uses all (official).
    max_iter
        Iteration cap, ``None`` for none (official); a warning reports non-convergence.
    refine_iter
        After an EM on subsets (``max_points``), at most this many iterations on all points, starting from the
        subsets' field; they remove the subsets' sampling noise.
    tol
        Stop when σ² changes by at most this much between iterations (official 1e-9, in unit-scaled coordinates).
    rtol
        Also stop when σ² changes by less than this fraction, or falls to 1e-6 of its start (an exact match).
    dtype
        Precision of the E-step: ``"float64"`` (official) or ``"float32"`` (about twice as fast; the kernel's
        cut-off stays the official one, ~8.5σ).
    device
        Torch device of the E-step (``"cuda"`` when available by default).
    seed
        Seed of the PCA and the subsampling.
    coordinate_system
        For SpatialData: the coordinate system in which both tables' coordinates are expressed.
    new_coordinate_system
        For a SpatialData source: every element with a transformation to ``coordinate_system`` gets one to this
        system, which overlays it on the target's ``coordinate_system`` (rigid result).
    microns_per_unit, target_microns_per_unit
        µm per unit of the source's and the target's coordinates, for data whose scale is neither stored nor
        recorded (e.g. a Visium section and its Xenium pseudo-spots read without omiclip).
    table_key
        Table of a SpatialData source with several tables.
    target_table_key
        Table of a SpatialData target with several tables.
    progress
        Show a progress bar of the iterations.
    {copy}

    Returns
    -------
    ``None``, or a copy of ``source`` when ``copy=True``. Writes to the source table:

    ``.obsm["spatial_aligned"]``
        ``(n_obs, 2)`` source coordinates in the target's coordinate system.
    ``.obsm["spatial_aligned_nonrigid"]``
        The CPD result (with ``mode="rigid"``).
    ``.uns["omiclip"]["align"][key_added]``
        ``matrix`` (3×3 rigid transform from source to target coordinates), ``iterations``, ``sigma2``,
        ``converged`` and the parameters.
    """
    check_choice("mode", mode, MODES)
    _check_coordinate_system(source, coordinate_system, new_coordinate_system)
    source_table, target_table = get_table(source, table_key), get_table(target, target_table_key)
    outputs = [key_added] + ([nonrigid_key(key_added)] if mode == "rigid" else [])
    claim(
        source_table, [("obsm", key) for key in outputs], step="align", reads=[("obsm", spatial_key), ("obsm", use_rep)]
    )
    source_scale = _unit_ratio(
        (source, source_table, table_key, microns_per_unit),
        (target, target_table, target_table_key, target_microns_per_unit),
    )
    result, params, start = _align_tables(
        source_table,
        target_table,
        source_scale=source_scale,
        use_rep=use_rep,
        target_rep=target_rep,
        spatial_key=spatial_key,
        flavor=flavor,
        n_pcs=n_pcs,
        scaling=scaling,
        center=center,
        alpha=alpha,
        beta=beta,
        w=w,
        n_eig=n_eig,
        refine_iter=refine_iter,
        n_landmarks=n_landmarks,
        max_points=max_points,
        max_iter=max_iter,
        tol=tol,
        rtol=rtol,
        dtype=dtype,
        device=device,
        seed=seed,
        progress=progress,
    )

    data = working_copy(source, copy)
    table = get_table(data, table_key)
    added = _write_alignment(table, result, key_added, mode, params)
    if is_spatialdata(data):
        _register_transformation(data, result.matrix, coordinate_system, new_coordinate_system)
        added.append((new_coordinate_system, "rigid transformation of every element (coordinate system)"))
    logg.finished(start, added, note=_summary(result))
    return data if copy else None


def align_stack(
    sections: Sequence[AnnData | SpatialData],
    *,
    reference: int = 0,
    chain_neighbours: bool = False,
    z_spacing: float | None = None,
    key_added: str = ALIGNED_KEY,
    mode: Mode = "rigid",
    spatial_key: str = SPATIAL_KEY,
    **kwargs,
) -> None:
    """Align serial sections into the coordinates of one reference section, e.g. for 3D reconstruction.

    Each section is aligned with :func:`align` either directly to the reference or, with ``chain_neighbours``, to
    its neighbour towards the reference (better for long stacks whose ends differ a lot); chained rigid
    transforms are composed, and a chained non-rigid result is the CPD result in the neighbour's frame mapped on
    by the neighbour's rigid transform.

    Parameters
    ----------
    sections
        AnnData or SpatialData objects in stack order.
    reference
        Position of the reference section; its ``key_added`` is a copy of its own coordinates.
    chain_neighbours
        Align each section to its neighbour instead of to the reference.
    z_spacing
        Distance between consecutive sections (in the reference's units); if given, also writes
        ``.obsm[f"{key_added}_3d"]`` = ``[x, y, z]`` with ``z = (position - reference) * z_spacing``.
    key_added
        ``.obsm`` key of the aligned coordinates in every section.
    mode
        ``"rigid"`` or ``"nonrigid"`` (see :func:`align`).
    spatial_key
        Coordinates in ``.obsm``.
    **kwargs
        Options of :func:`align` (``use_rep``, ``alpha``, ``max_points``, ``table_key``, ``coordinate_system``, …;
        not ``target_table_key``: every section's table is ``table_key``).

    Returns
    -------
    ``None``. Every section's table gets ``.obsm[key_added]`` (and ``_3d``) and ``.uns["omiclip"]["align"][key_added]``
    with ``matrix`` (source → reference, composed when chained), ``stack_position`` and ``stack_reference``.
    """
    n = len(sections)
    if n < 2:
        raise ValueError(f"A stack needs at least 2 sections, got {n}.")
    check_int("reference", reference, min=0, max=n - 1)
    check_choice("mode", mode, MODES)
    if "copy" in kwargs:
        raise TypeError("`align_stack` writes into the sections; copy them first if needed.")
    unknown = sorted(set(kwargs) - {*_TABLE_OPTIONS, *_STACK_OPTIONS})
    if unknown:
        raise TypeError(f"`align_stack` got options it does not take: {unknown}.")
    options = {**_ALIGN_OPTIONS, **kwargs}
    if z_spacing is not None:
        check_number("z_spacing", z_spacing, min=0, min_inclusive=False)
    for section in sections:
        _check_coordinate_system(section, options["coordinate_system"], options["new_coordinate_system"])
    tables = [get_table(section, options["table_key"]) for section in sections]
    outputs = [key_added] + ([stack_key(key_added)] if z_spacing is not None else [])
    for i, table in enumerate(tables):
        claim(
            table,
            [("obsm", key) for key in outputs],
            step="align",
            reads=[("obsm", spatial_key), ("obsm", options["use_rep"])],
        )
        _coordinates(table, spatial_key, f"section `sections[{i}]`")

    # Align every section first, writing nothing, so that a failure leaves all sections as they were.
    results: dict[int, tuple[np.ndarray, np.ndarray, dict]] = {}
    order = sorted((i for i in range(n) if i != reference), key=lambda i: abs(i - reference))
    for i in order:
        towards = (i - 1 if i > reference else i + 1) if chain_neighbours else reference
        scale_of = (sections[i], tables[i]), (sections[towards], tables[towards])
        source_scale = _unit_ratio(
            *((data, table, options["table_key"], options["microns_per_unit"]) for data, table in scale_of)
        )
        try:
            result, params, _ = _align_tables(
                tables[i],
                tables[towards],
                source_scale=source_scale,
                spatial_key=spatial_key,
                **{name: options[name] for name in _TABLE_OPTIONS},
            )
        except (KeyError, ValueError) as error:  # say which pair: the core's message speaks of "the source"
            message = error.args[0] if isinstance(error, KeyError) else str(error)
            raise type(error)(f"Aligning `sections[{i}]` onto `sections[{towards}]`: {message}") from None
        matrix, nonrigid = result.matrix, result.nonrigid
        if towards != reference:  # compose with the neighbour's path to the reference
            towards_matrix = results[towards][0]
            matrix, nonrigid = chain([matrix, towards_matrix]), apply_affine(towards_matrix, nonrigid)
        results[i] = (matrix, nonrigid, {**params, **_facts(result)})
    results[reference] = (np.eye(3), np.asarray(tables[reference].obsm[spatial_key], dtype=np.float64), {})

    for i, (section, table) in enumerate(zip(sections, tables, strict=True)):
        matrix, nonrigid, step = results[i]
        source_xy = np.asarray(table.obsm[spatial_key], dtype=np.float64)
        aligned = nonrigid if mode == "nonrigid" else apply_affine(matrix, source_xy)
        table.obsm[key_added] = aligned
        if z_spacing is not None:
            z = np.full((table.n_obs, 1), (i - reference) * z_spacing)
            table.obsm[stack_key(key_added)] = np.hstack([aligned, z])
        step.update(
            key_added=key_added,
            mode=mode,
            matrix=matrix,
            stack_position=i,
            stack_reference=reference,
            chain_neighbours=chain_neighbours,
        )
        record(table, "align", key_added, step)
        if is_spatialdata(section):
            _register_transformation(section, matrix, options["coordinate_system"], options["new_coordinate_system"])
    logg.info(f"aligned {n - 1} sections onto section {reference}: `.obsm[{key_added!r}]` of every section")


def _align_tables(
    source: AnnData,
    target: AnnData,
    *,
    source_scale: float,
    use_rep: str | None,
    target_rep: str | None,
    spatial_key: str,
    flavor: Flavor,
    n_pcs: int,
    scaling: Scaling,
    center: bool,
    alpha: float,
    beta: float,
    w: float | None,
    n_eig: int,
    n_landmarks: int | None,
    max_points: int | None,
    max_iter: int | None,
    refine_iter: int,
    tol: float,
    rtol: float | None,
    dtype: str,
    device: str | None,
    seed: int,
    progress: bool,
) -> tuple[Alignment, dict[str, Any], Any]:
    """Check the arguments and align the source table onto the target table; nothing is written.

    Returns the alignment, the parameters to record and the start time of the log.
    """
    target_rep = target_rep or use_rep
    source_xy = _coordinates(source, spatial_key, "source")
    target_xy = _coordinates(target, spatial_key, "target")
    _, _, source_emb, target_emb = reference_pair(
        source, target, use_rep, target_rep, names=("the source", "the target")
    )
    if target_emb is not None:
        check_int("n_pcs", n_pcs, min=1, max=min(target_emb.shape))
    check_choice("scaling", scaling, ("shared", "each"))
    check_choice("flavor", flavor, ("loki", "omiclip"))
    w = _FLAVOR_W[flavor] if w is None else w
    check_number("w", w, min=0, max=1, max_inclusive=False)
    check_optional_int("max_iter", max_iter, min=1)
    check_int("refine_iter", refine_iter, min=0)
    check_optional_int("max_points", max_points, min=3)
    check_choice("dtype", dtype, ("float64", "float32"))
    check_number("alpha", alpha, min=0, min_inclusive=False)
    check_number("beta", beta, min=0, min_inclusive=False)
    check_number("tol", tol, min=0)
    if rtol is not None:
        check_number("rtol", rtol, min=0, min_inclusive=False)
    check_int("n_eig", n_eig, min=1)
    check_optional_int("n_landmarks", n_landmarks, min=1)
    check_int("seed", seed, min=0)
    if max_iter is None and tol <= 0 and rtol is None:
        raise ValueError("With `max_iter=None` the iterations stop on `tol` or `rtol`: give `tol > 0` or an `rtol`.")
    options = CPDOptions(
        alpha=alpha,
        beta=beta,
        w=w,
        n_eig=n_eig,
        n_landmarks=n_landmarks,
        max_points=max_points,
        max_iter=max_iter,
        refine_iter=refine_iter,
        tol=tol,
        rtol=rtol,
        dtype=dtype,
        device=resolve_device(device),
        seed=seed,
        progress=progress,
    )
    if n_landmarks is None and source.n_obs > _EXACT_KERNEL_MAX_POINTS:
        options = _scalable_solver(source.n_obs, options)

    start = logg.info(f"aligning {source.n_obs} source spots onto {target.n_obs} target spots")
    cores = {"source_scale": source_scale, "n_pcs": n_pcs, "center": center, "options": options}
    if flavor == "omiclip":
        result, extent_ratio = align_omiclip.align_points(source_xy, target_xy, source_emb, target_emb, **cores)
        _warn_if_extents_differ(extent_ratio)
    else:
        result = align_points(source_xy, target_xy, source_emb, target_emb, scaling=scaling, **cores)
    _warn_if_not_converged(result, options.max_iter)
    solver = {name: getattr(options, name) for name in _RECORDED_SOLVER_OPTIONS}
    solver.update({name: word for name, word in _NONE_MEANS.items() if solver[name] is None})
    params = {
        "use_rep": use_rep,
        "target_rep": target_rep,
        "flavor": flavor,
        "n_pcs": n_pcs,
        "scaling": scaling if flavor == "loki" else "target units, robust extent",
        "center": center,
        **solver,
        "kernel": result.cpd.kernel,
        "seed": seed,
    }
    return result, params, start


# align()'s keyword arguments and defaults: align_stack takes the same ones (one place holds the defaults)
_ALIGN_OPTIONS = {
    name: parameter.default
    for name, parameter in inspect.signature(align).parameters.items()
    if parameter.kind is parameter.KEYWORD_ONLY
}
# those that _align_tables computes with (align_stack takes spatial_key itself), and those align_stack applies
_TABLE_OPTIONS = [
    name for name in inspect.signature(_align_tables).parameters if name in _ALIGN_OPTIONS and name != "spatial_key"
]
_STACK_OPTIONS = ("table_key", "coordinate_system", "new_coordinate_system")


def _coordinates(table: AnnData, spatial_key: str, which: str) -> np.ndarray:
    xy = get_coordinates(table, spatial_key, name=f"the {which}")
    if len(xy) < 3:
        raise ValueError(f"The {which} has {len(xy)} spots; alignment needs at least 3.")
    if np.ptp(xy) == 0:
        raise ValueError(f"All {len(xy)} spots of the {which} are at one position; there is nothing to align.")
    return xy


def _unit_ratio(source: tuple, target: tuple) -> float:
    """Source units → target units when both scales are known; a warning when only one is."""
    from omiclip.pp._spot_geometry import stored_microns_per_unit, table_scale

    scales = []
    sides = ((source, "microns_per_unit", "source"), (target, "target_microns_per_unit", "target"))
    for (data, table, table_key, given), name, side in sides:
        if given is not None:
            check_number(name, given, min=0, min_inclusive=False)
        # a stored scale of 0, < 0 or NaN would divide, mirror or break the CPD
        um = given if given is not None else stored_microns_per_unit(table, side, f"correct it, or pass `{name}=`")
        scales.append(um if um is not None else table_scale(data, table, table_key)[0])
    source_um, target_um = scales
    if (source_um is None) != (target_um is None):
        missing = "microns_per_unit" if source_um is None else "target_microns_per_unit"
        warnings.warn(
            f"Only one section's scale is known; taking both coordinates as the same units. If they are not, pass "
            f"`{missing}=`.",
            UserWarning,
            stacklevel=3,
        )
    if source_um is None or target_um is None:
        return 1.0
    return float(source_um) / float(target_um)


# Above this many source spots, the exact kernel (M×M float64 and its full eigendecomposition: 0.8 GB and about a
# minute at 10,000 on 2 cores, growing as M² and M³) is out of reach; the official code, which also holds M×N×D
# differences, crashes well before.
_EXACT_KERNEL_MAX_POINTS = 10_000
# CPDOptions recorded in uns (device, progress and block size do not change the result); how a None is written
_RECORDED_SOLVER_OPTIONS = (
    "alpha", "beta", "w", "n_eig", "n_landmarks", "max_points", "max_iter", "refine_iter", "tol", "rtol", "dtype",
)  # fmt: skip
_NONE_MEANS = {"n_landmarks": "all", "max_points": "all", "max_iter": "none", "rtol": "none"}
# What the default switches to above that size (the scalable options, measured in benchmarks/align_scale.py)
_SCALABLE_SOLVER = {
    "n_landmarks": 1000,
    "max_points": 5000,
    "max_iter": 500,
    "tol": 0.0,
    "rtol": 1e-5,
    "dtype": "float32",
}


def _scalable_solver(n_source: int, options: CPDOptions) -> CPDOptions:
    """The scalable solver for a source too large for the exact kernel; options the caller set are kept."""
    official = CPDOptions()
    chosen = {
        name: value if (value := getattr(options, name)) != getattr(official, name) else scalable
        for name, scalable in _SCALABLE_SOLVER.items()
    }
    warnings.warn(
        f"The source has {n_source:,} spots: the exact motion kernel of the official code ({n_source:,}² float64, "
        f"{n_source**2 * 8 / 2**30:.1f} GiB, with an O(M³) eigendecomposition) is out of reach above "
        f"{_EXACT_KERNEL_MAX_POINTS:,}, so this run uses " + ", ".join(f"{k}={v!r}" for k, v in chosen.items()) + ". "
        "Pass `n_landmarks=` (and the other options) yourself to choose, and silence this warning.",
        UserWarning,
        stacklevel=3,
    )
    return dataclasses.replace(options, **chosen)


def _warn_if_not_converged(result: Alignment, max_iter: int | None) -> None:
    if not result.cpd.converged:
        warnings.warn(
            f"CPD did not converge in {max_iter} iterations (σ² = {result.cpd.sigma2:.3g}); the result may be "
            "unfinished. Raise `max_iter` or loosen `tol`.",
            RuntimeWarning,
            stacklevel=3,
        )


def _warn_if_extents_differ(ratio: float) -> None:
    if not 1 / _EXTENT_RATIO_WARN <= ratio <= _EXTENT_RATIO_WARN:
        warnings.warn(
            f"The source's extent is {ratio:.2f}× the target's, and flavor='omiclip' keeps both sections' sizes: are "
            "they in the same units? Give both tables `uns['microns_per_unit']`, or use flavor='loki', which scales "
            "each section on its own.",
            RuntimeWarning,
            stacklevel=4,
        )


def _summary(result: Alignment) -> str:
    cpd = result.cpd
    refined = f" + {cpd.refine_iterations} on all points" if cpd.refine_iterations else ""
    return (
        f"    CPD: {cpd.iterations} iterations on {cpd.n_points[0]}/{cpd.n_points[1]} points{refined}, "
        f"σ² {cpd.sigma2:.3g}, kernel rank {cpd.rank}"
    )


def _facts(result: Alignment) -> dict[str, Any]:
    """What an alignment found, for the record: the rigid matrix and how CPD ran."""
    return {
        "matrix": result.matrix,
        "iterations": result.cpd.iterations,
        "refine_iterations": result.cpd.refine_iterations,
        "sigma2": result.cpd.sigma2,
        "converged": result.cpd.converged,
        "n_points_used": list(result.cpd.n_points),
    }


def _write_alignment(table: AnnData, result: Alignment, key_added: str, mode: Mode, params: dict) -> list:
    table.obsm[key_added] = result.rigid if mode == "rigid" else result.nonrigid
    added = [(key_added, f"{mode} aligned coordinates (obsm)")]
    if mode == "rigid":
        table.obsm[nonrigid_key(key_added)] = result.nonrigid
        added.append((nonrigid_key(key_added), "non-rigid (CPD) aligned coordinates (obsm)"))
    record(table, "align", key_added, {**params, "mode": mode, "key_added": key_added, **_facts(result)})
    added.append((f"align/{key_added}", "matrix and parameters (uns['omiclip'])"))
    return added


def _check_coordinate_system(data, coordinate_system: str, new_coordinate_system: str) -> None:
    """The source's systems: ``coordinate_system`` must exist, and the new system must be another one.

    Without the first no element would get the alignment; written into the system it reads, the alignment would
    move every element there (and again on every run).
    """
    if not is_spatialdata(data):
        return
    check_choice("coordinate_system", coordinate_system, data.coordinate_systems)
    if not isinstance(new_coordinate_system, str) or new_coordinate_system == coordinate_system:
        raise ValueError(
            f"`new_coordinate_system` must be a name other than `coordinate_system` ({coordinate_system!r}), got "
            f"{new_coordinate_system!r}: the aligned elements go into a system of their own (default 'aligned')."
        )


def _register_transformation(sdata, matrix: np.ndarray, coordinate_system: str, new_system: str) -> None:
    """Give every element in ``coordinate_system`` a transformation to ``new_system``: its own, then ``matrix``."""
    from spatialdata.transformations import Affine, Sequence, get_transformation, set_transformation

    affine = Affine(matrix, input_axes=("x", "y"), output_axes=("x", "y"))
    for kind in ("images", "labels", "shapes", "points"):
        for element in getattr(sdata, kind).values():
            existing = get_transformation(element, get_all=True)
            if coordinate_system not in existing:
                continue
            transformations = dict(existing)
            transformations[new_system] = Sequence([existing[coordinate_system], affine])
            set_transformation(element, transformations, set_all=True)
