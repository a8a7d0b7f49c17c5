from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Literal

import numpy as np
from anndata import AnnData

from omiclip import _logging as logg
from omiclip._anndata import (
    MICRONS_PER_UNIT_KEY,
    check_same_dim,
    get_coordinates,
    get_rep,
    get_table,
    is_spatialdata,
    record,
    working_copy,
)
from omiclip._core import align_omiclip
from omiclip._core.cpd import apply_affine
from omiclip._core.registration import Alignment, Scaling, align_points, chain

Mode = Literal["rigid", "nonrigid"]
Flavor = Literal["loki", "omiclip"]
# outlier weight of each flavour when `w` is not given: the official 0, and omiclip's (spots missing on one side)
_FLAVOR_W = {"loki": 0.0, "omiclip": 0.1}
# the source's robust extent over the target's beyond which the omiclip flavour warns about units
_EXTENT_RATIO_WARN = 1.5


def align(
    source,
    target,
    *,
    use_rep: str | None = "X_omiclip_text",
    target_rep: str | None = None,
    spatial_key: str = "spatial",
    key_added: str = "spatial_aligned",
    mode: Mode = "rigid",
    flavor: Flavor = "loki",
    n_pcs: int = 2,
    scaling: Scaling = "shared",
    center: bool | None = None,
    alpha: float = 0.5,
    beta: float = 2.0,
    w: float | None = None,
    n_eig: int = 100,
    n_landmarks: int = 1000,
    max_points: int | None = 5000,
    max_iter: int = 500,
    refine_iter: int = 5,
    tol: float = 1e-5,
    device: str | None = None,
    seed: int = 0,
    coordinate_system: str = "global",
    new_coordinate_system: str = "aligned",
    table_key: str | None = None,
    target_table_key: str | None = None,
    progress: bool = True,
    copy: bool = False,
) -> AnnData | None:
    """Align a source section onto a target section by coordinates and embeddings (Loki Align).

    Each section becomes a point cloud ``[x, y, PC1, PC2]``: spot coordinates plus the first ``n_pcs`` principal
    components of its embedding (PCA fitted on the target, applied to the source), min–max scaled as the official
    code does. Non-rigid coherent point drift moves only the coordinate dimensions, so the embedding dimensions
    decide which spots match. A rigid fit (rotation + translation, no reflection) of the source onto its CPD result
    then gives the official output. Both are returned.

    Use ``use_rep="X_omiclip_text"`` for ST→ST, ``use_rep="X_omiclip_image", target_rep="X_omiclip_text"`` for
    H&E→ST, ``"X_pca"`` for the paper's "CPD on PCA" baseline (both PCAs must share one space, e.g. computed on the
    concatenated sections) and ``None`` for coordinates only.

    Unlike the official code (dense M×M kernel with a full eigendecomposition and an M×N posterior, unbounded
    iterations), the E-step streams over blocks, the motion kernel is a Nyström low-rank approximation, iterations
    are capped, and with ``max_points`` the EM runs on a random subset of each cloud whose smooth displacement field
    is then evaluated at every source spot (``benchmarks/align_scale.py`` measures the difference).

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
        Coordinates in ``.obsm`` of both. If both tables have ``uns["microns_per_unit"]`` the source is converted to
        the target's units, otherwise both must be in the same units.
    key_added
        ``.obsm`` key of the aligned coordinates (``mode``'s result); with ``mode="rigid"`` the CPD result also goes
        to ``{key_added}_nonrigid``.
    mode
        ``"rigid"`` (official output) or ``"nonrigid"``.
    flavor
        ``"loki"``: the official algorithm. ``"omiclip"``: more accurate (see :mod:`omiclip._core.align_omiclip`
        and ``docs/benchmarks.md``): both sections in the target's units with one robust length unit (``scaling``
        is not used; the sections must be in the same units, or both tables must have ``uns["microns_per_unit"]``),
        a σ² of its own for the coordinates and for each PC, an outlier weight ``w`` (default 0.1), and a rigid CPD
        before the non-rigid one. Same outputs and keys.
    n_pcs
        Embedding principal components added to the coordinates (official: 2).
    scaling
        ``"shared"``: both clouds scaled by the target's extent after matching centroids (keeps relative size;
        default). ``"each"``: each cloud scaled by its own min and max (official; assumes both cover the same tissue).
    center
        Move the source's embedding mean onto the target's before projecting it on the target's PCs. This removes a
        constant offset between the two embeddings, such as the gap between a CLIP model's image and text
        embeddings, which would otherwise hold the clouds apart (only x, y move). Default: only when
        ``use_rep != target_rep`` (H&E→ST); the official code never centres.
    alpha
        λ, weight of the smoothness of the motion (official 0.5).
    beta
        Width of the motion kernel in unit-scaled coordinates (official 2).
    w
        Weight of the uniform outlier component, in [0, 1); default: the flavour's (``"loki"`` 0, the official
        value; ``"omiclip"`` 0.1).
    n_eig
        Rank of the low-rank motion kernel (official 100).
    n_landmarks
        Nyström landmarks for that kernel; with no more source points than this it is the exact eigendecomposition.
    max_points
        EM on at most this many random points of each cloud; ``None`` uses all (e.g. on a GPU).
    max_iter
        Iteration cap; a warning reports non-convergence.
    refine_iter
        After an EM on subsets (``max_points``), at most this many iterations on all points, starting from the
        subsets' field; they remove the subsets' sampling noise.
    tol
        Stop when σ² changes by less than this fraction between iterations.
    device
        Torch device of the E-step (``"cuda"`` when available by default).
    seed
        Seed of the PCA and the subsampling.
    coordinate_system
        For SpatialData: the coordinate system in which both tables' coordinates are expressed.
    new_coordinate_system
        For a SpatialData source: every element with a transformation to ``coordinate_system`` gets one to this
        system, which overlays it on the target's ``coordinate_system`` (rigid result).
    table_key
        Table of a SpatialData source with several tables.
    target_table_key
        Table of a SpatialData target with several tables.
    progress
        Show a progress bar of the iterations.
    copy
        Return a modified copy of ``source`` instead of writing into it.

    Returns
    -------
    ``None``, or a copy of ``source`` when ``copy=True``. Writes to the source table:

    ``.obsm["spatial_aligned"]``
        ``(n_obs, 2)`` source coordinates in the target's coordinate system.
    ``.obsm["spatial_aligned_nonrigid"]``
        The CPD result (with ``mode="rigid"``).
    ``.uns["omiclip"]["align"]``
        ``matrix`` (3×3 rigid transform from source to target coordinates), ``iterations``, ``sigma2``,
        ``converged`` and the parameters.
    """
    source_table = get_table(source, table_key)
    target_table = get_table(target, target_table_key)
    source_xy = _coordinates(source_table, spatial_key, "source")
    target_xy = _coordinates(target_table, spatial_key, "target")
    source_emb, target_emb = _features(source_table, target_table, use_rep, target_rep or use_rep, n_pcs)
    _check_choice("mode", mode, ("rigid", "nonrigid"))
    _check_choice("scaling", scaling, ("shared", "each"))
    _check_choice("flavor", flavor, ("loki", "omiclip"))
    w = _FLAVOR_W[flavor] if w is None else w
    if not 0 <= w < 1:
        raise ValueError(f"`w` must be in [0, 1), got {w}.")
    if max_iter < 1 or refine_iter < 0 or (max_points is not None and max_points < 3):
        raise ValueError(
            f"Need max_iter >= 1, refine_iter >= 0 and max_points >= 3; got {max_iter}, {refine_iter}, {max_points}."
        )
    source_scale = _unit_ratio(source_table, target_table)
    if center is None:
        center = use_rep is not None and (target_rep or use_rep) != use_rep

    start = logg.info(f"aligning {source_table.n_obs} source spots onto {target_table.n_obs} target spots")
    options = {
        "source_scale": source_scale,
        "n_pcs": n_pcs,
        "center": center,
        "seed": seed,
        "alpha": alpha,
        "beta": beta,
        "w": w,
        "n_eig": n_eig,
        "n_landmarks": n_landmarks,
        "max_points": max_points,
        "max_iter": max_iter,
        "refine_iter": refine_iter,
        "tol": tol,
        "device": _device(device),
        "progress": progress,
    }
    if flavor == "omiclip":
        result, extent_ratio = align_omiclip.align_points(source_xy, target_xy, source_emb, target_emb, **options)
        _warn_if_extents_differ(extent_ratio)
    else:
        result = align_points(source_xy, target_xy, source_emb, target_emb, scaling=scaling, **options)
    _warn_if_not_converged(result, max_iter)

    data = working_copy(source, copy)
    table = get_table(data, table_key)
    params = {
        "use_rep": use_rep,
        "target_rep": target_rep or use_rep,
        "mode": mode,
        "flavor": flavor,
        "n_pcs": n_pcs,
        "scaling": scaling if flavor == "loki" else "target units, robust extent",
        "center": center,
        "alpha": alpha,
        "beta": beta,
        "w": w,
        "n_eig": n_eig,
        "n_landmarks": n_landmarks,
        "max_points": max_points if max_points is not None else "all",
        "max_iter": max_iter,
        "refine_iter": refine_iter,
        "tol": tol,
        "seed": seed,
    }
    added = _write_alignment(table, result, key_added, mode, params)
    if is_spatialdata(data):
        _register_transformation(data, result.matrix, coordinate_system, new_coordinate_system)
        added.append((new_coordinate_system, "rigid transformation of every element (coordinate system)"))
    logg.finished(start, added, note=_summary(result))
    return data if copy else None


def align_stack(
    sections: Sequence,
    *,
    reference: int = 0,
    chain_neighbours: bool = False,
    z_spacing: float | None = None,
    key_added: str = "spatial_aligned",
    mode: Mode = "rigid",
    spatial_key: str = "spatial",
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
        Passed to :func:`align` (``flavor``, ``use_rep``, ``alpha``, ``max_points``, ``table_key``, …).

    Returns
    -------
    ``None``. Every section's table gets ``.obsm[key_added]`` (and ``_3d``) and ``.uns["omiclip"]["align"]`` with
    ``matrix`` (source → reference, composed when chained), ``stack_position`` and ``stack_reference``.
    """
    n = len(sections)
    if n < 2:
        raise ValueError(f"A stack needs at least 2 sections, got {n}.")
    if not 0 <= reference < n:
        raise ValueError(f"`reference` must be a position in the stack (0..{n - 1}), got {reference}.")
    _check_choice("mode", mode, ("rigid", "nonrigid"))
    if "copy" in kwargs:
        raise TypeError("`align_stack` writes into the sections; copy them first if needed.")
    table_key = kwargs.get("table_key")
    tables = [get_table(section, table_key) for section in sections]
    for table in tables:
        _coordinates(table, spatial_key, "section")

    # Align every section first, on copies, so that a failure leaves all sections as they were.
    scratch = "_omiclip_align_stack"
    results: dict[int, tuple[np.ndarray, np.ndarray, dict]] = {}
    order = sorted((i for i in range(n) if i != reference), key=lambda i: abs(i - reference))
    for i in order:
        towards = (i - 1 if i > reference else i + 1) if chain_neighbours else reference
        moved = get_table(sections[i], table_key).copy()  # an AnnData copy is all align needs to write into
        align(
            moved,
            tables[towards],
            spatial_key=spatial_key,
            key_added=scratch,
            mode="nonrigid",
            **{k: v for k, v in kwargs.items() if k not in _SPATIALDATA_ONLY},
        )
        step = dict(moved.uns["omiclip"]["align"])
        matrix, nonrigid = np.asarray(step["matrix"]), np.asarray(moved.obsm[scratch])
        if towards != reference:  # compose with the neighbour's path to the reference
            towards_matrix = results[towards][0]
            matrix, nonrigid = chain([matrix, towards_matrix]), apply_affine(towards_matrix, nonrigid)
        results[i] = (matrix, nonrigid, step)
    results[reference] = (np.eye(3), np.asarray(tables[reference].obsm[spatial_key], dtype=np.float64), {})

    coordinate_system = kwargs.get("coordinate_system", "global")
    new_coordinate_system = kwargs.get("new_coordinate_system", "aligned")
    for i, (section, table) in enumerate(zip(sections, tables, strict=True)):
        matrix, nonrigid, step = results[i]
        source_xy = np.asarray(table.obsm[spatial_key], dtype=np.float64)
        aligned = nonrigid if mode == "nonrigid" else apply_affine(matrix, source_xy)
        table.obsm[key_added] = aligned
        if z_spacing is not None:
            z = np.full((table.n_obs, 1), (i - reference) * z_spacing)
            table.obsm[f"{key_added}_3d"] = np.hstack([aligned, z])
        step.update(
            key_added=key_added,
            mode=mode,
            matrix=matrix,
            stack_position=i,
            stack_reference=reference,
            chain_neighbours=chain_neighbours,
        )
        record(table, "align", step)
        if is_spatialdata(section):
            _register_transformation(section, matrix, coordinate_system, new_coordinate_system)
    logg.info(f"aligned {n - 1} sections onto section {reference}: `.obsm[{key_added!r}]` of every section")


# align() options that only concern a SpatialData source; align_stack applies them itself
_SPATIALDATA_ONLY = ("coordinate_system", "new_coordinate_system", "table_key", "target_table_key")


def _coordinates(table: AnnData, spatial_key: str, which: str) -> np.ndarray:
    xy = get_coordinates(table, spatial_key, name=f"the {which}")
    if len(xy) < 3:
        raise ValueError(f"The {which} has {len(xy)} spots; alignment needs at least 3.")
    if np.ptp(xy) == 0:
        raise ValueError(f"All {len(xy)} spots of the {which} are at one position; there is nothing to align.")
    return xy


def _features(source: AnnData, target: AnnData, use_rep, target_rep, n_pcs: int):
    if use_rep is None:
        return None, None
    source_emb = get_rep(source, use_rep)
    target_emb = get_rep(target, target_rep)
    check_same_dim(source_emb, target_emb, use_rep, target_rep)
    if not 1 <= n_pcs <= min(target_emb.shape):
        raise ValueError(f"`n_pcs` must be between 1 and {min(target_emb.shape)}, got {n_pcs}.")
    return source_emb, target_emb


def _unit_ratio(source: AnnData, target: AnnData) -> float:
    """Source units → target units, when both tables say how many µm one unit is."""
    source_um, target_um = source.uns.get(MICRONS_PER_UNIT_KEY), target.uns.get(MICRONS_PER_UNIT_KEY)
    if source_um is None or target_um is None:
        return 1.0
    return float(source_um) / float(target_um)


def _check_choice(name: str, value, choices: tuple) -> None:
    if value not in choices:
        raise ValueError(f"`{name}` must be one of {choices}, got {value!r}.")


def _device(device: str | None) -> str:
    if device is not None:
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _warn_if_not_converged(result: Alignment, max_iter: int) -> None:
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
            stacklevel=3,
        )


def _summary(result: Alignment) -> str:
    cpd = result.cpd
    refined = f" + {cpd.refine_iterations} on all points" if cpd.refine_iterations else ""
    return (
        f"    CPD: {cpd.iterations} iterations on {cpd.n_points[0]}/{cpd.n_points[1]} points{refined}, "
        f"σ² {cpd.sigma2:.3g}, kernel rank {cpd.rank}"
    )


def _write_alignment(table: AnnData, result: Alignment, key_added: str, mode: Mode, params: dict) -> list:
    table.obsm[key_added] = result.rigid if mode == "rigid" else result.nonrigid
    added = [(key_added, f"{mode} aligned coordinates (obsm)")]
    if mode == "rigid":
        table.obsm[f"{key_added}_nonrigid"] = result.nonrigid
        added.append((f"{key_added}_nonrigid", "non-rigid (CPD) aligned coordinates (obsm)"))
    record(
        table,
        "align",
        {
            **params,
            "key_added": key_added,
            "matrix": result.matrix,
            "iterations": result.cpd.iterations,
            "refine_iterations": result.cpd.refine_iterations,
            "sigma2": result.cpd.sigma2,
            "converged": result.cpd.converged,
            "n_points_used": list(result.cpd.n_points),
        },
    )
    added.append(("align", "matrix and parameters (uns['omiclip'])"))
    return added


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
