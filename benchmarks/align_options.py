"""The effect of oc.tl.align's options against its official defaults, on the synthetic pairs of align_synthetic.py.

    python benchmarks/align_options.py [--pairs 20] [--level low]

No model: the embedding is one PCA of both sections' log-normalised expression (the paper's "CPD on PCA"), so the
options are measured without fine-tuning (align_synthetic.py has the model-based rows). Per pair, the mean distance
between each source spot's aligned position (rigid, the official output) and its true position, for:
the official defaults; ``scaling="shared"``; the scalable solver (Nyström kernel, subsets, relative tolerance,
float32, what the defaults switch to past 10,000 source spots); and both (the defaults before 2026-12).
Prints a table, writes benchmarks/results/align_options.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
from _align_methods import joint_pca, omiclip  # benchmarks/ is on sys.path when run as a script
from align_synthetic import LEVELS, error_um
from threadpoolctl import threadpool_limits

import omiclip as oc
from omiclip.tl._align import _SCALABLE_SOLVER

CONFIGS = {
    "official defaults (scaling='each', exact kernel, |Δσ²| <= 1e-9)": {},
    "scaling='shared'": {"scaling": "shared"},
    "scalable solver (Nyström 1000, subsets 5000, rtol 1e-5, float32)": dict(_SCALABLE_SOLVER),
    "scaling='shared' + scalable solver (previous defaults)": {"scaling": "shared", **_SCALABLE_SOLVER},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=20)
    parser.add_argument("--level", choices=list(LEVELS), default="low")
    parser.add_argument("--size-um", type=float, default=2000.0)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "align_options.json")
    args = parser.parse_args()
    errors = {name: [] for name in ["unaligned", *CONFIGS]}
    nonrigid = {name: [] for name in CONFIGS}
    seconds = {name: [] for name in CONFIGS}
    with threadpool_limits(1):
        import torch

        torch.set_num_threads(1)
        for seed in range(args.pairs):
            target = oc.datasets.synthetic_tissue(section=0, seed=seed, size_um=args.size_um, image=False)
            source = oc.datasets.synthetic_tissue(
                section=1, seed=seed, size_um=args.size_um, image=False, **LEVELS[args.level]
            )
            target, source = target.tables["table"], source.tables["table"]
            joint_pca(source, target)
            truth = source.obsm["true_spatial"]
            errors["unaligned"].append(error_um(np.asarray(source.obsm["spatial"]), truth))
            for name, options in CONFIGS.items():
                tic = time.perf_counter()
                coords, _ = omiclip(source, target, "X_pca", device="cpu", **options)
                seconds[name].append(time.perf_counter() - tic)
                errors[name].append(error_um(coords["rigid"], truth))
                nonrigid[name].append(error_um(coords["nonrigid"], truth))
            print(f"pair {seed}: rigid " + ", ".join(f"{v[-1]:.1f}" for v in errors.values()), flush=True)
    reference = np.array(errors["official defaults (scaling='each', exact kernel, |Δσ²| <= 1e-9)"])
    print(
        f"\n{args.level} noise, {args.pairs} pairs; error in µm: rigid mean (sd), pairs lower than the defaults; "
        "non-rigid mean (sd); seconds"
    )
    rows = []
    for name, values in errors.items():
        values = np.array(values)
        lower = int((values < reference - 1e-9).sum())
        moved = np.array(nonrigid.get(name, values))
        mean_s = float(np.mean(seconds[name])) if name in seconds else float("nan")
        rows.append({
            "config": name, "rigid_mean_um": values.mean(), "rigid_sd_um": values.std(), "rigid_lower": lower,
            "nonrigid_mean_um": moved.mean(), "nonrigid_sd_um": moved.std(), "seconds": mean_s,
        })  # fmt: skip
        print(
            f"{name:<72}{values.mean():8.1f} ({values.std():.1f}){lower:4d}/{len(values)}"
            f"{moved.mean():8.1f} ({moved.std():.1f}){mean_s:8.2f}"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "level": args.level, "pairs": args.pairs, "cpu": platform.processor(), "rows": rows,
        "rigid_errors": errors, "nonrigid_errors": nonrigid,
    }  # fmt: skip
    args.out.write_text(json.dumps(payload, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
