"""The section-alignment methods compared in benchmarks/align_synthetic.py and benchmarks/align_her2st.py.

Every method takes a source and a target AnnData whose ``obsm["spatial"]`` are in the same units (µm here)
and returns the source's coordinates in the target's frame.
"""

import time
import warnings

import numpy as np
import scanpy as sc
from anndata import AnnData

import omiclip as oc

# Loki's pycpd settings (official align.py): alpha 0.5, beta 2, w 0, tolerance 1e-9 on |Δσ²|; it never
# stops on an iteration count, we cap it.
PYCPD_MAX_ITER = 500


def log_normalised(table: AnnData) -> AnnData:
    adata = table.copy()
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    return adata


def joint_pca(source: AnnData, target: AnnData, n_comps: int = 20, seed: int = 0) -> None:
    """``obsm["X_pca"]`` of both from one PCA of the log-normalised expression of both (common genes)."""
    genes = target.var_names.intersection(source.var_names)
    both = sc.concat({"t": target[:, genes], "s": source[:, genes]}, index_unique="-")
    both = log_normalised(both)
    sc.pp.pca(both, n_comps=n_comps, random_state=seed)
    target.obsm["X_pca"] = both.obsm["X_pca"][: target.n_obs]
    source.obsm["X_pca"] = both.obsm["X_pca"][target.n_obs :]


def omiclip(source: AnnData, target: AnnData, use_rep: str | None, target_rep: str | None = None, **kwargs):
    """``oc.tl.align``: {"rigid": official output, "nonrigid": the CPD result}, and whether CPD converged."""
    moved = source.copy()
    with warnings.catch_warnings():  # non-convergence is recorded in uns and reported by the caller
        warnings.simplefilter("ignore", RuntimeWarning)
        oc.tl.align(moved, target, use_rep=use_rep, target_rep=target_rep, progress=False, **kwargs)
    coords = {"rigid": moved.obsm["spatial_aligned"], "nonrigid": moved.obsm["spatial_aligned_nonrigid"]}
    return coords, bool(moved.uns["omiclip"]["align"]["spatial_aligned"]["converged"])


def paste(source: AnnData, target: AnnData, *, norm: bool = False, seed: int = 0) -> np.ndarray:
    """PASTE (paste-bio): ``pairwise_align(target, source)`` then ``stack_slices_pairwise``.

    Defaults (raw counts, KL dissimilarity, alpha 0.1) with ``norm=False``, or ``norm=True``, which divides
    each slice's spatial distances by its smallest one (neighbouring spots at distance 1, as with the array
    coordinates of PASTE's tutorials). PASTE centres both slices (weighted by the transport plan) and
    rotates the second; the target's own shift is added back so the result is in the target's frame.
    """
    import ot
    import paste as pst

    genes = target.var_names.intersection(source.var_names)
    a, b = target[:, genes].copy(), source[:, genes].copy()
    np.random.seed(seed)  # PASTE's solver has no seed argument
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pi = pst.pairwise_align(a, b, norm=norm, backend=ot.backend.NumpyBackend(), gpu_verbose=False)
        new_a, new_b = pst.stack_slices_pairwise([a, b], [pi])
    shift = np.asarray(a.obsm["spatial"]) - np.asarray(new_a.obsm["spatial"])
    return np.asarray(new_b.obsm["spatial"]) + shift.mean(axis=0)


def _unit(xy: np.ndarray) -> tuple[np.ndarray, float, float]:
    """Loki's per-cloud min-max scaling (one min and one range over both axes)."""
    low, span = float(xy.min()), float(np.ptp(xy))
    return (xy - low) / span, low, span


def pycpd(source_xy: np.ndarray, target_xy: np.ndarray, kind: str, max_iter: int = PYCPD_MAX_ITER):
    """pycpd on coordinates only, each cloud min-max scaled as Loki does; back in target units.

    ``kind="nonrigid"``: ``DeformableRegistration(alpha=0.5, beta=2, w=0, tolerance=1e-9)`` (Loki's settings;
    pycpd 2.0 has no low-rank option, so the kernel is the exact one). ``kind="rigid"``: ``RigidRegistration``
    (rotation, translation and scale; pycpd's defaults). Returns the coordinates and the iterations used.
    """
    from pycpd import DeformableRegistration, RigidRegistration

    src, _, _ = _unit(np.asarray(source_xy, dtype=np.float64))
    tgt, low, span = _unit(np.asarray(target_xy, dtype=np.float64))
    if kind == "nonrigid":
        reg = DeformableRegistration(X=tgt, Y=src, alpha=0.5, beta=2.0, w=0.0, tolerance=1e-9, max_iterations=max_iter)
    else:
        reg = RigidRegistration(X=tgt, Y=src, max_iterations=max_iter)
    moved, _ = reg.register()
    return moved * span + low, reg.iteration


def run_all(source: AnnData, target: AnnData, *, image: bool, seed: int = 0) -> tuple[dict, dict, dict]:
    """Every method on one pair: {method: coords}, {method: seconds}, {method: converged/iterations}.

    Needs ``obsm["X_omiclip_text"]`` on both, ``obsm["X_omiclip_image"]`` on the source when ``image``, and
    ``obsm["X_pca"]`` on both (:func:`joint_pca`).
    """
    coords, seconds, info = {}, {}, {}

    def timed(name, fn):
        tic = time.perf_counter()
        out = fn()
        seconds[name] = time.perf_counter() - tic
        return out

    reps = [("omiclip (text)", "X_omiclip_text", None, {})]
    if image:  # centred by default (two representations); uncentred as the official code
        reps.append(("omiclip (image→text)", "X_omiclip_image", "X_omiclip_text", {}))
        reps.append(("omiclip (image→text, not centred)", "X_omiclip_image", "X_omiclip_text", {"center": False}))
    reps += [("CPD on PCA", "X_pca", None, {}), ("omiclip, coordinates only", None, None, {})]
    for name, use_rep, target_rep, options in reps:
        result, converged = timed(
            name, lambda u=use_rep, t=target_rep, o=options: omiclip(source, target, u, t, seed=seed, **o)
        )
        for mode, xy in result.items():
            coords[f"{name}, {mode}"] = xy
        info[name] = {"converged": converged}
    for name, norm in (("PASTE (defaults)", False), ("PASTE (norm=True)", True)):
        coords[name] = timed(name, lambda n=norm: paste(source, target, norm=n, seed=seed))
    for kind in ("nonrigid", "rigid"):
        name = f"pycpd on coordinates, {kind}"
        coords[name], iterations = timed(name, lambda k=kind: pycpd(source.obsm["spatial"], target.obsm["spatial"], k))
        info[name] = {"iterations": int(iterations), "hit_cap": iterations >= PYCPD_MAX_ITER}
    return coords, seconds, info
