"""Loki Align accuracy on simulated serial sections with a known warp: omiclip against CPD, PASTE and pycpd.

    python benchmarks/align_synthetic.py [--pairs 20] [--quick]

Each pair: the target is section 0 of a synthetic tissue (``seed`` = pair index; default expression noise, exact
positions); the source is section 1 of the same tissue (rotation, translation, smooth non-rigid warp, a missing
fragment, all known) simulated again with expression and position noise, as the paper's simulations perturb
both: low noise = NB dispersion 10 and 0.1 spot diameter (5.5 µm) of position noise, high noise = dispersion 2
and half a spot diameter (27.5 µm). The same 20 tissues and warps are used at both levels.

omiclip-tiny is fine-tuned once, from scratch, on two sections of *other* tissues (seeds 1000 and 1001, one
at each expression-noise level), then embeds the targets (text) and the sources (text and image). Metric: mean
distance between each source spot's aligned position and its true position in the target's frame
(``obsm["true_spatial"]``), in µm and in spot diameters (55 µm). Prints a table, writes
benchmarks/results/align_synthetic.json.
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from _align_methods import joint_pca, run_all  # benchmarks/ is on sys.path when run as a script
from scipy import stats
from threadpoolctl import threadpool_limits

import omiclip as oc
from omiclip._core.cpd import apply_affine, rigid_fit

SPOT_UM = 55.0
LEVELS = {
    "low": {"dispersion": 10.0, "position_noise_um": 0.1 * SPOT_UM},
    "high": {"dispersion": 2.0, "position_noise_um": 0.5 * SPOT_UM},
}
TRAIN = ((1000, LEVELS["low"]["dispersion"]), (1001, LEVELS["high"]["dispersion"]))
REFERENCE = "omiclip (text), rigid"


def error_um(xy: np.ndarray, truth: np.ndarray) -> float:
    return float(np.linalg.norm(np.asarray(xy) - truth, axis=1).mean())


def fine_tune(args):
    sections = []
    for seed, dispersion in TRAIN:
        sdata = oc.datasets.synthetic_tissue(
            section=0, seed=seed, size_um=args.size_um, um_per_px=args.um_per_px, dispersion=dispersion
        )
        oc.pp.gene_sentences(sdata)
        sections.append(sdata)
    model = oc.models.load("omiclip-tiny", seed=args.seed)
    return oc.tl.finetune(
        sections,
        model=model,
        epochs=args.epochs,
        lr=args.lr,
        seed=args.seed,
        save=args.save_model,
        drop_last=False,
        progress=False,
    )


def source_section(seed: int, level: str, size_um: float, um_per_px: float, image: bool = True):
    """Section 1 of tissue ``seed`` at a noise level, and the mask of its spots that stayed on the slide."""
    sdata = oc.datasets.synthetic_tissue(
        section=1, seed=seed, size_um=size_um, um_per_px=um_per_px, image=image, **LEVELS[level]
    )
    # position noise can carry a spot off the simulated slide (and its image): such a spot was not captured
    table = sdata.tables["table"]
    on_slide = ((table.obsm["spatial"] >= 0) & (table.obsm["spatial"] <= size_um)).all(axis=1)
    if not on_slide.all():
        sdata.tables["table"] = table[on_slide].copy()
    return sdata, on_slide


def evaluate_pair(seed: int, level: str, target, model, args) -> tuple[dict, dict, dict]:
    sdata, on_slide = source_section(seed, level, args.size_um, args.um_per_px)
    oc.pp.gene_sentences(sdata)
    for modality in ("text", "image"):
        oc.tl.embed(sdata, modality=modality, model=model, progress=False)
    source = sdata.tables["table"]
    joint_pca(source, target, seed=args.seed)
    coords, seconds, info = run_all(source, target, image=True, seed=args.seed)
    # how well the image tower matches the text tower on this section (random: 0.10)
    info["image->text recall@10% (source)"] = oc.metrics.recall_at_k(
        source.obsm["X_omiclip_image"], source.obsm["X_omiclip_text"], 0.1
    )
    info["n_spots"] = [int(source.n_obs), int(target.n_obs)]
    info["n_off_slide_dropped"] = int((~on_slide).sum())
    truth = source.obsm["true_spatial"]
    xy = np.asarray(source.obsm["spatial"])
    errors = {
        "unaligned": error_um(xy, truth),
        "best rigid transform (oracle)": error_um(apply_affine(rigid_fit(xy, truth), xy), truth),
    }
    errors.update({name: error_um(moved, truth) for name, moved in coords.items()})
    return errors, seconds, info


def summarise(rows: list[dict]) -> list[dict]:
    summary = []
    for level in LEVELS:
        picked = [r for r in rows if r["level"] == level]
        if not picked:
            continue
        reference = np.array([r["error_um"][REFERENCE] for r in picked])
        for method in picked[0]["error_um"]:
            errors = np.array([r["error_um"][method] for r in picked])
            entry = {
                "level": level,
                "method": method,
                "n_pairs": len(picked),
                "mean_um": float(errors.mean()),
                "sd_um": float(errors.std(ddof=1)) if len(errors) > 1 else 0.0,
                "median_um": float(np.median(errors)),
                "mean_spot_diameters": float(errors.mean() / SPOT_UM),
                "omiclip_text_rigid_better": int((reference < errors).sum()),
            }
            if method != REFERENCE and len(errors) > 1 and np.any(reference != errors):
                # one-sided paired Wilcoxon, as the paper's Fig. 2b: is omiclip (text) closer to the truth?
                entry["wilcoxon_p_omiclip_text_rigid_less"] = float(
                    stats.wilcoxon(reference, errors, alternative="less").pvalue
                )
            summary.append(entry)
    return summary


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, default=20, help="tissues (pairs per noise level)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 pairs per level, 2 epochs")
    parser.add_argument("--size-um", type=float, default=2000.0)
    parser.add_argument("--um-per-px", type=float, default=2.0)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="BLAS and torch threads (the machine is shared)")
    parser.add_argument("--model", help="a checkpoint written by --save-model: skip fine-tuning")
    parser.add_argument("--save-model", help="write the fine-tuned checkpoint here")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "align_synthetic.json"))
    args = parser.parse_args()
    if args.quick:
        args.pairs, args.epochs = 2, 2
    torch.set_num_threads(args.threads)
    threadpool_limits(args.threads)

    tic = time.perf_counter()
    model = oc.models.load(args.model) if args.model else fine_tune(args)
    train_seconds = time.perf_counter() - tic
    loss = f", loss {model.history[0]:.3f} -> {model.history[-1]:.3f}" if model.history else ""
    print(f"omiclip-tiny {'loaded' if args.model else 'fine-tuned'} in {train_seconds:.0f} s{loss}")

    rows = []
    for seed in range(args.pairs):
        target_sdata = oc.datasets.synthetic_tissue(section=0, seed=seed, size_um=args.size_um, image=False)
        oc.pp.gene_sentences(target_sdata)
        oc.tl.embed(target_sdata, model=model, progress=False)
        target = target_sdata.tables["table"]
        for level in LEVELS:
            errors, seconds, info = evaluate_pair(seed, level, target, model, args)
            rows.append({"seed": seed, "level": level, "error_um": errors, "seconds": seconds, "info": info})
            print(f"pair {seed:>2} {level:<4}  " + "  ".join(f"{k}: {v:.0f}" for k, v in errors.items()), flush=True)

    summary = summarise(rows)
    mean_seconds = {m: float(np.mean([r["seconds"][m] for r in rows])) for m in rows[0]["seconds"]}
    print(f"\n{'noise':<6}{'method':<42}{'mean µm':>9}{'± sd':>7}{'median':>8}{'spots':>7}{'text wins':>10}{'p':>9}")
    for s in summary:
        p = s.get("wilcoxon_p_omiclip_text_rigid_less")
        print(
            f"{s['level']:<6}{s['method']:<42}{s['mean_um']:>9.1f}{s['sd_um']:>7.1f}{s['median_um']:>8.1f}"
            f"{s['mean_spot_diameters']:>7.2f}{s['omiclip_text_rigid_better']:>6}/{s['n_pairs']:<3}"
            + (f"{p:>9.2g}" if p is not None else f"{'':>9}")
        )
    print(f"spots dropped off the slide (position noise): {sum(r['info']['n_off_slide_dropped'] for r in rows)}")
    print("mean seconds per pair: " + ", ".join(f"{k} {v:.1f}" for k, v in mean_seconds.items()))
    methods = [name for name, value in rows[0]["info"].items() if isinstance(value, dict)]
    not_converged = {
        name: sum(not r["info"][name].get("converged", True) or r["info"][name].get("hit_cap", False) for r in rows)
        for name in methods
    }
    recall = np.mean([r["info"]["image->text recall@10% (source)"] for r in rows])
    print(f"image->text recall@10% on the sources (random 0.10): {recall:.3f}")
    print("runs stopped by the iteration cap: " + ", ".join(f"{k} {v}" for k, v in not_converged.items()))
    print(f"total {time.perf_counter() - tic:.0f} s")

    out = Path(args.out)
    out.parent.mkdir(exist_ok=True)
    payload = {
        "args": vars(args),
        "levels": LEVELS,
        "train": [{"seed": s, "section": 0, "dispersion": d} for s, d in TRAIN],
        "train_seconds": train_seconds,
        "loss": list(model.history),
        "summary": summary,
        "mean_seconds_per_pair": mean_seconds,
        "stopped_by_cap": not_converged,
        "mean_image_text_recall_at_10pct": float(recall),
        "pairs": rows,
    }
    out.write_text(json.dumps(payload, indent=2))


if __name__ == "__main__":
    main()
