"""Loki Align at scale: wall time, peak memory and accuracy against the number of spots.

    python benchmarks/align_scale.py [--sizes 1000 5000 20000 50000] [--methods omiclip pycpd paste]

Each (method, size) runs in a fresh process so that its peak resident memory (VmHWM) is its own. Data: a Visium-like
hex grid (100 µm pitch) with two smooth "embedding" fields; the source is the target rotated by 10°, shifted, bent by
Gaussian bumps, jittered (5 µm) with noisy features (σ = 5% of their range), and misses a disc of 10% of the spots.
Methods: omiclip (`align_points` as `oc.tl.align` runs it: EM on 5,000-point subsets, 5 refinement iterations on all
points), omiclip on all points (`max_points=None`, as on a GPU), pycpd's DeformableRegistration with the official
settings (dense; only where it fits) and PASTE (paste-bio, on 50 simulated genes; only where it fits). Error = mean
distance between aligned and true positions. Writes benchmarks/results/align_scale.json.
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results"
PITCH_UM = 100.0
# what each method can do here (dense O(N²) memory/O(N³) time beyond these sizes; see the notes in docs)
LIMITS = {"omiclip": 10**9, "omiclip-all-points": 20000, "pycpd": 5000, "paste": 5000}


def make_pair(n: int, seed: int = 0):
    """Target/source coordinates (µm), features and the source's true positions in the target frame."""
    rng = np.random.default_rng(seed)
    side = int(np.ceil(np.sqrt(n / 0.866)))
    rows, cols = np.meshgrid(np.arange(side), np.arange(side), indexing="ij")
    xy = np.column_stack([(cols + 0.5 * (rows % 2)).ravel() * PITCH_UM, rows.ravel() * PITCH_UM * 0.866])[:n]
    size = xy.max()
    u = xy / size
    fields = np.column_stack(
        [np.sin(2 * np.pi * u[:, 0]) + np.cos(3 * np.pi * u[:, 1]), np.cos(2 * np.pi * (u[:, 0] + u[:, 1]))]
    )
    keep = np.linalg.norm(u - [0.35, 0.6], axis=1) > np.sqrt(0.1 / np.pi)  # a missing fragment of the source
    truth = xy[keep]
    bump = np.exp(-(((truth / size - 0.6) / 0.2) ** 2).sum(1))[:, None] * [0.02 * size, -0.015 * size]
    theta = np.deg2rad(10)
    rotation = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    source_xy = (truth + bump - size / 2) @ rotation.T + size / 2 + [0.03 * size, -0.02 * size]
    source_xy += rng.normal(0, 5, source_xy.shape)
    source_features = fields[keep] + rng.normal(0, 0.05 * np.ptp(fields), (keep.sum(), 2))
    target_features = fields + rng.normal(0, 0.05 * np.ptp(fields), fields.shape)
    return source_xy, xy, source_features, target_features, truth


def counts_from_features(features: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    loadings = np.random.default_rng(123).normal(0, 1, (features.shape[1], 50))
    return rng.poisson(np.exp(1 + 0.5 * features @ loadings)).astype(np.float32)


def run_one(method: str, n: int) -> dict:
    source_xy, target_xy, source_f, target_f, truth = make_pair(n)
    start = time.perf_counter()
    info = {}
    if method.startswith("omiclip"):
        from omiclip._core.cpd import CPDOptions
        from omiclip._core.registration import align_points

        max_points = None if method == "omiclip-all-points" else 5000
        result = align_points(source_xy, target_xy, source_f, target_f, options=CPDOptions(max_points=max_points))
        aligned = result.rigid
        info = {
            "iterations": result.cpd.iterations,
            "refine_iterations": result.cpd.refine_iterations,
            "error_nonrigid_um": float(np.linalg.norm(result.nonrigid - truth, axis=1).mean()),
        }
    elif method == "pycpd":
        from pycpd import DeformableRegistration

        from omiclip._core.cpd import apply_affine, rigid_fit
        from omiclip._core.registration import point_clouds

        source, target, (offset, span) = point_clouds(source_xy, target_xy, source_f, target_f, scaling="each")

        class Official(DeformableRegistration):  # Loki's modification: only x, y move
            def transform_point_cloud(self, Y=None):
                self.W[:, 2:] = 0
                return super().transform_point_cloud(Y)

        registration = Official(X=target, Y=source, low_rank=True, alpha=0.5, max_iterations=500, tolerance=1e-9)
        moved, _ = registration.register()
        nonrigid = moved[:, :2] * span + offset
        aligned = apply_affine(rigid_fit(source_xy, nonrigid), source_xy)
        info = {"iterations": registration.iteration}
    elif method == "paste":
        import anndata as ad
        import paste as pst

        slices = []
        for xy, features, seed in ((target_xy, target_f, 1), (source_xy, source_f, 2)):
            adata = ad.AnnData(counts_from_features(features, seed))
            adata.obsm["spatial"] = xy
            slices.append(adata)
        pi = pst.pairwise_align(slices[0], slices[1], verbose=False)
        aligned_slices = pst.stack_slices_pairwise([slices[0].copy(), slices[1].copy()], [pi])
        # PASTE centres both slices; map the source back into the target's frame with the target's shift
        shift = target_xy.mean(0) - aligned_slices[0].obsm["spatial"].mean(0)
        aligned = aligned_slices[1].obsm["spatial"] + shift
    else:
        raise ValueError(method)
    seconds = time.perf_counter() - start
    return {
        "method": method,
        "n_target": len(target_xy),
        "n_source": len(source_xy),
        "seconds": seconds,
        "peak_rss_gib": _peak_rss_gib(),
        "error_um": float(np.linalg.norm(aligned - truth, axis=1).mean()),
        **info,
    }


def _peak_rss_gib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 2**20
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000, 20000, 50000])
    parser.add_argument("--methods", nargs="+", default=["omiclip", "omiclip-all-points", "pycpd", "paste"])
    parser.add_argument("--one", nargs=2, metavar=("METHOD", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one[0], int(args.one[1]))))
        return

    rows = []
    print(f"{'method':<20}{'spots':>8}{'seconds':>10}{'peak GiB':>10}{'error µm':>10}{'iterations':>12}")
    for n in args.sizes:
        for method in args.methods:
            if n > LIMITS[method]:
                continue
            done = subprocess.run(
                [sys.executable, __file__, "--one", method, str(n)], capture_output=True, text=True, check=False
            )
            if done.returncode != 0:
                print(f"{method:<20}{n:>8}  failed: {done.stderr.strip().splitlines()[-1:]}")
                continue
            row = json.loads(done.stdout.strip().splitlines()[-1])
            rows.append(row)
            its = f"{row.get('iterations', '')}" + (
                f"+{row['refine_iterations']}" if "refine_iterations" in row else ""
            )
            print(
                f"{method:<20}{n:>8}{row['seconds']:>10.1f}{row['peak_rss_gib']:>10.2f}{row['error_um']:>10.1f}{its:>12}"
            )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "align_scale.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
