"""``oc.tl.align(flavor="loki")`` (the official algorithm) against ``flavor="omiclip"``, with PASTE and pycpd.

    python benchmarks/align_flavors.py [--parts synthetic warp serial he scale] [--pairs 5] [--threads 1]

Parts (each writes its rows to benchmarks/results/align_flavors.json and prints a table):

* ``synthetic``: the synthetic serial pairs of benchmarks/align_synthetic.py (section 1 of tissue ``seed`` onto its
  section 0; rotation, shift, smooth warp, a missing fragment; two noise levels), on a joint expression PCA
  (``X_pca``). Error: mean distance to the true positions, in spot diameters (55 µm).
* ``warp``: every HER2ST section registered onto a moved copy of itself: 25° rotation, a shift, a smooth bend of
  0.1 spot pitch, the 10 % of spots on one side (random direction) dropped, counts resampled (Poisson); joint
  expression PCA. Error: mean distance to the true positions, in spot pitches (200 µm).
* ``serial``: the real serial pairs of benchmarks/align_her2st.py (A2–A6 → A1, C3, C4 → C2) on a joint expression
  PCA; expression agreement at aligned spots as there (mean per-gene PCC between each source spot and its nearest
  target spot, 100 most expressed genes).
* ``he``: H&E→ST on synthetic pairs (low noise): omiclip-tiny fine-tuned as in benchmarks/align_synthetic.py, source
  image embeddings onto target text embeddings.
* ``scale``: benchmarks/align_scale.py's 50,000 × 50,000 pair (and 5,000), each flavour in a fresh process: seconds,
  peak resident memory, error.

The official recipe is run as ``flavor="loki", scaling="each", center=False``. pycpd runs on coordinates only
(official settings, exact kernel) and PASTE on counts, as in benchmarks/_align_methods.py.
"""

import argparse
import json
import subprocess
import sys
import time
import warnings
from pathlib import Path

import anndata as ad
import numpy as np
import torch
from _align_methods import joint_pca, omiclip, paste, pycpd  # benchmarks/ is on sys.path when run as a script
from align_her2st import TARGETS, expression, match_scores, to_microns
from align_synthetic import LEVELS, SPOT_UM, source_section
from threadpoolctl import threadpool_limits

import omiclip as oc

RESULTS = Path(__file__).parent / "results"
HER2ST_PITCH_UM = 200.0
FLAVORS = {"loki": {"flavor": "loki", "scaling": "each", "center": False}, "omiclip": {"flavor": "omiclip"}}


def flavours(source, target, use_rep, target_rep=None) -> tuple[dict, dict]:
    """Both flavours: {"loki, rigid": xy, "loki, nonrigid": xy, …} and their seconds."""
    coords, seconds = {}, {}
    for name, options in FLAVORS.items():
        tic = time.perf_counter()
        result, _ = omiclip(source, target, use_rep, target_rep, **options)
        seconds[name] = time.perf_counter() - tic
        coords.update({f"{name}, {mode}": xy for mode, xy in result.items()})
    return coords, seconds


def baselines(source, target, seed: int) -> dict:
    """PASTE (defaults) and pycpd (non-rigid, coordinates only); a method that fails is left out with a note."""
    coords = {}
    for name, run in (
        ("PASTE", lambda: paste(source, target, seed=seed)),
        ("pycpd, nonrigid", lambda: pycpd(source.obsm["spatial"], target.obsm["spatial"], "nonrigid")[0]),
    ):
        try:
            coords[name] = run()
        except Exception as error:  # noqa: BLE001 (a baseline that cannot run is reported, not fatal)
            print(f"  {name} failed: {type(error).__name__}: {error}")
    return coords


def best_rigid(xy: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """``xy`` moved by the least-squares rigid fit onto the true positions: what no rigid output can beat."""
    from omiclip._core.cpd import apply_affine, rigid_fit

    xy = np.asarray(xy, dtype=np.float64)
    return apply_affine(rigid_fit(xy, truth), xy)


def mean_distance(xy: np.ndarray, truth: np.ndarray) -> float:
    return float(np.linalg.norm(np.asarray(xy) - truth, axis=1).mean())


def part_synthetic(args) -> list[dict]:
    rows = []
    for seed in range(args.pairs):
        target = oc.datasets.synthetic_tissue(section=0, seed=seed, size_um=args.size_um, image=False).tables["table"]
        for level in LEVELS:
            sdata, _ = source_section(seed, level, args.size_um, args.um_per_px, image=False)
            source = sdata.tables["table"]
            joint_pca(source, target, seed=args.seed)
            coords, seconds = flavours(source, target, "X_pca")
            coords.update(baselines(source, target, args.seed))
            truth = source.obsm["true_spatial"]
            coords["best rigid fit of the truth"] = best_rigid(source.obsm["spatial"], truth)
            errors = {name: mean_distance(xy, truth) / SPOT_UM for name, xy in coords.items()}
            rows.append({"part": "synthetic", "case": f"seed {seed}", "level": level, "error": errors, "s": seconds})
            print(f"synthetic {seed} {level}: " + _line(errors), flush=True)
    return rows


def moved_copy(table: ad.AnnData, seed: int) -> tuple[ad.AnnData, np.ndarray]:
    """A moved copy of a section (µm) and the true positions of its spots (see the module's description)."""
    rng = np.random.default_rng(seed)
    xy = np.asarray(table.obsm["spatial"], dtype=np.float64)
    centre, size = xy.mean(axis=0), np.ptp(xy)
    direction = rng.normal(size=2)
    along = (xy - centre) @ (direction / np.linalg.norm(direction))
    keep = along < np.quantile(along, 0.9)
    u = (xy - centre) / size
    bend = 0.1 * HER2ST_PITCH_UM * np.column_stack([np.sin(np.pi * u[:, 1]), np.sin(np.pi * u[:, 0])])
    angle = np.deg2rad(25)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    moved = (xy + bend - centre) @ rotation.T + centre + [0.1 * size, -0.05 * size]
    source = table[keep].copy()
    source.X = rng.poisson(source.X.toarray()).astype(np.float32)
    source.obsm["spatial"] = moved[keep]
    return source, xy[keep]


def part_warp(args) -> list[dict]:
    rows = []
    names = sorted({name for target, sources in TARGETS.items() for name in (target, *sources)})
    for name in names:
        target = to_microns(oc.datasets.her2st(name, args.data, image=False))
        source, truth = moved_copy(target, args.seed)
        joint_pca(source, target, seed=args.seed)
        coords, seconds = flavours(source, target, "X_pca")
        coords.update(baselines(source, target, args.seed))
        coords["unaligned"] = source.obsm["spatial"]
        errors = {method: mean_distance(xy, truth) / HER2ST_PITCH_UM for method, xy in coords.items()}
        rows.append({"part": "warp", "case": name, "n_spots": target.n_obs, "error": errors, "s": seconds})
        print(f"warp {name} ({target.n_obs} spots): " + _line(errors), flush=True)
    return rows


def part_serial(args) -> list[dict]:
    rows = []
    for target_name, source_names in TARGETS.items():
        target = to_microns(oc.datasets.her2st(target_name, args.data, image=False))
        for source_name in source_names:
            source = to_microns(oc.datasets.her2st(source_name, args.data, image=False))
            joint_pca(source, target, seed=args.seed)
            coords, seconds = flavours(source, target, "X_pca")
            coords.update(baselines(source, target, args.seed))
            coords["unaligned"] = source.obsm["spatial"]
            target_X, source_X, gene_sets = expression(source, target)
            genes = gene_sets["top-expressed"]
            pcc = {
                method: match_scores(xy, target.obsm["spatial"], source_X, target_X, genes)["pcc"]
                for method, xy in coords.items()
            }
            rows.append({"part": "serial", "case": f"{source_name}→{target_name}", "pcc": pcc, "s": seconds})
            print(f"serial {source_name}→{target_name}: " + _line(pcc, "{:.3f}"), flush=True)
    return rows


def part_he(args) -> list[dict]:
    from align_synthetic import fine_tune

    train = argparse.Namespace(
        size_um=args.size_um, um_per_px=args.um_per_px, epochs=args.epochs, lr=5e-4, seed=args.seed, save_model=None
    )
    model = fine_tune(train)
    rows = []
    for seed in range(args.pairs):
        target_sdata = oc.datasets.synthetic_tissue(section=0, seed=seed, size_um=args.size_um, image=False)
        oc.pp.gene_sentences(target_sdata)
        oc.tl.embed(target_sdata, model=model, progress=False)
        sdata, _ = source_section(seed, "low", args.size_um, args.um_per_px)
        oc.tl.embed(sdata, modality="image", model=model, progress=False)
        source, target = sdata.tables["table"], target_sdata.tables["table"]
        coords, seconds = flavours(source, target, "X_omiclip_image", "X_omiclip_text")
        truth = source.obsm["true_spatial"]
        errors = {name: mean_distance(xy, truth) / SPOT_UM for name, xy in coords.items()}
        rows.append({"part": "he", "case": f"seed {seed}", "error": errors, "s": seconds})
        print(f"H&E→ST {seed}: " + _line(errors), flush=True)
    return rows


def run_scale_one(flavor: str, n: int) -> dict:
    """One flavour on align_scale's pair of ``n`` spots, as ``oc.tl.align`` runs it (this process's peak memory)."""
    from align_scale import _peak_rss_gib, make_pair

    source_xy, target_xy, source_f, target_f, truth = make_pair(n)
    source, target = ad.AnnData(obsm={"spatial": source_xy, "f": source_f}), ad.AnnData(obsm={"spatial": target_xy})
    target.obsm["f"] = target_f
    tic = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        oc.tl.align(source, target, use_rep="f", progress=False, **FLAVORS[flavor])
    seconds = time.perf_counter() - tic
    return {
        "flavor": flavor,
        "n": n,
        "seconds": seconds,
        "peak_rss_gib": _peak_rss_gib(),
        "error_rigid_um": mean_distance(source.obsm["spatial_aligned"], truth),
        "error_nonrigid_um": mean_distance(source.obsm["spatial_aligned_nonrigid"], truth),
        "iterations": int(source.uns["omiclip"]["align"]["spatial_aligned"]["iterations"]),
    }


def part_scale(args) -> list[dict]:
    rows = []
    for n in args.sizes:
        for flavor in FLAVORS:
            command = [sys.executable, __file__, "--scale-one", flavor, str(n), "--threads", str(args.threads)]
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                print(f"scale {flavor} {n}: failed: {done.stderr.strip().splitlines()[-1:]}")
                continue
            row = {"part": "scale", **json.loads(done.stdout.strip().splitlines()[-1])}
            rows.append(row)
            print(
                f"scale {flavor} {n}: {row['seconds']:.1f} s, {row['peak_rss_gib']:.2f} GiB, "
                f"error {row['error_rigid_um']:.1f} µm (rigid), {row['error_nonrigid_um']:.1f} µm (non-rigid)",
                flush=True,
            )
    return rows


def _line(values: dict, fmt: str = "{:.3f}") -> str:
    return "  ".join(f"{k}: {fmt.format(v)}" for k, v in values.items())


def summarise(rows: list[dict]) -> None:
    """Means over the cases of each part (the table of docs/benchmarks.md)."""
    groups = {}
    for row in rows:
        if row["part"] == "scale":
            continue
        key = (row["part"], row.get("level", ""))
        values = row.get("error", row.get("pcc"))
        groups.setdefault(key, []).append(values)
    print(f"\n{'part':<18}{'method':<20}{'mean':>8}{'n':>4}")
    for (part, level), cases in groups.items():
        for method in cases[0]:
            values = [case[method] for case in cases if method in case]
            label = f"{part} {level}".strip()
            print(f"{label:<18}{method:<20}{np.mean(values):>8.3f}{len(values):>4}")
    paired_differences(rows)


def paired_differences(rows: list[dict]) -> None:
    """Synthetic pairs: ``omiclip`` − ``loki`` error per output, pair by pair (mean ± standard error, wins).

    The pairs differ far more from each other than the flavours do, so the difference is judged pair by pair.
    """
    synthetic = [row for row in rows if row["part"] == "synthetic"]
    if len(synthetic) < 2:
        return
    print(f"\n{'synthetic, omiclip − loki':<30}{'mean':>8}{'± s.e.':>8}  omiclip closer")
    for level in dict.fromkeys(row["level"] for row in synthetic):
        errors = [row["error"] for row in synthetic if row["level"] == level]
        for output in ("rigid", "nonrigid"):
            diff = np.array([error[f"omiclip, {output}"] - error[f"loki, {output}"] for error in errors])
            se = diff.std(ddof=1) / np.sqrt(len(diff)) if len(diff) > 1 else float("nan")
            label = f"{level}, {output}"
            print(f"{label:<30}{diff.mean():>+8.3f}{se:>8.3f}  {(diff < 0).sum()} of {len(diff)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", nargs="+", default=["synthetic", "warp", "serial", "he", "scale"])
    parser.add_argument("--pairs", type=int, default=5, help="synthetic tissues (pairs per noise level)")
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared/data/her2st"))
    parser.add_argument("--size-um", type=float, default=2000.0)
    parser.add_argument("--um-per-px", type=float, default=2.0)
    parser.add_argument("--epochs", type=int, default=10, help="fine-tuning epochs of the H&E→ST model")
    parser.add_argument("--sizes", type=int, nargs="+", default=[5000, 50000])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="BLAS and torch threads (the machine is shared)")
    parser.add_argument("--scale-one", nargs=2, metavar=("FLAVOR", "N"), help=argparse.SUPPRESS)
    parser.add_argument("--out", default=str(RESULTS / "align_flavors.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    threadpool_limits(args.threads)
    if args.scale_one:
        print(json.dumps(run_scale_one(args.scale_one[0], int(args.scale_one[1]))))
        return

    parts = {"synthetic": part_synthetic, "warp": part_warp, "serial": part_serial, "he": part_he, "scale": part_scale}
    rows, tic = [], time.perf_counter()
    for part in args.parts:
        rows += parts[part](args)
    summarise(rows)
    print(f"total {time.perf_counter() - tic:.0f} s")
    out = Path(args.out)
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
