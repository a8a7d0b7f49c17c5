"""Are omiclip's results bitwise identical across torch CPU thread counts? Prints a table, writes JSON.

Each step runs in a fresh process per thread count (``torch.set_num_threads``) on a small synthetic section with
omiclip-tiny, with a fixed seed; the outputs are compared bitwise and by their largest difference.

    PYTHONPATH=src python benchmarks/thread_determinism.py --threads 1 2 [--deterministic]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

STEPS = ("embed_text", "embed_image", "finetune", "align", "decompose")


def run_steps(threads: int, deterministic: bool, out: Path) -> None:
    import torch

    torch.set_num_threads(threads)
    if deterministic:
        torch.use_deterministic_algorithms(True)
    import omiclip as oc

    results, seconds = {}, {}
    tiny = oc.models.load("omiclip-tiny", device="cpu")
    sdata = oc.datasets.synthetic_tissue(size_um=1000, um_per_px=2.0, seed=0)
    oc.pp.gene_sentences(sdata)
    table = sdata.tables["table"]
    start = time.perf_counter()
    oc.tl.embed(sdata, modality="text", model=tiny, progress=False)
    seconds["embed_text"] = time.perf_counter() - start
    start = time.perf_counter()
    oc.tl.embed(sdata, modality="image", model=tiny, progress=False)
    seconds["embed_image"] = time.perf_counter() - start
    results["embed_text"] = table.obsm["X_omiclip_text"]
    results["embed_image"] = table.obsm["X_omiclip_image"]
    start = time.perf_counter()
    tuned = oc.tl.finetune(sdata, model=tiny, epochs=2, batch_size=16, lr=1e-4, seed=0, progress=False)
    seconds["finetune"] = time.perf_counter() - start
    results["finetune"] = tuned.encode_text(table.obs["gene_sentence"].tolist()[:32])
    moved = oc.datasets.synthetic_tissue(size_um=1000, um_per_px=2.0, seed=0, section=1, image=False)
    oc.pp.gene_sentences(moved)
    oc.tl.embed(moved, modality="text", model=tiny, progress=False)
    start = time.perf_counter()
    oc.tl.align(moved, sdata, max_iter=50, progress=False)
    seconds["align"] = time.perf_counter() - start
    results["align"] = moved.tables["table"].obsm["spatial_aligned"]
    reference = oc.datasets.synthetic_reference(n_cells=300, size_um=1000, seed=1)
    oc.pp.gene_sentences(reference)
    oc.tl.embed(reference, modality="text", model=tiny, progress=False)
    start = time.perf_counter()
    oc.tl.decompose(sdata, reference, epochs=200, progress=False)
    seconds["decompose"] = time.perf_counter() - start
    results["decompose"] = np.asarray(table.obsm["omiclip_proportions"])
    np.savez(out, **{k: np.asarray(v) for k, v in results.items()}, **{f"s_{k}": v for k, v in seconds.items()})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--deterministic", action="store_true", help="torch.use_deterministic_algorithms(True)")
    parser.add_argument("--out", default="benchmarks/thread_determinism.json")
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        run_steps(int(args.worker[0]), args.deterministic, Path(args.worker[1]))
        return
    runs = {}
    for threads in args.threads:
        path = Path(f"/tmp/omiclip_threads_{threads}.npz")
        command = [sys.executable, __file__, "--worker", str(threads), str(path)]
        subprocess.run(command + (["--deterministic"] if args.deterministic else []), check=True)
        runs[threads] = dict(np.load(path))
    first, *others = args.threads
    rows = []
    for step in STEPS:
        for threads in others:
            a, b = runs[first][step], runs[threads][step]
            rows.append(
                {
                    "step": step,
                    "threads": f"{first} vs {threads}",
                    "bitwise_equal": bool(np.array_equal(a, b)),
                    "max_abs_diff": float(np.abs(a - b).max()),
                    "seconds": [float(runs[t][f"s_{step}"]) for t in args.threads],
                }
            )
    print(f"{'step':<12} {'threads':<8} {'bitwise':<8} {'max |diff|':<11} seconds")
    for row in rows:
        print(
            f"{row['step']:<12} {row['threads']:<8} {row['bitwise_equal']!s:<8} {row['max_abs_diff']:<11.3g} "
            + " / ".join(f"{s:.2f}" for s in row["seconds"])
        )
    Path(args.out).write_text(json.dumps({"deterministic": args.deterministic, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
