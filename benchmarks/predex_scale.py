"""PredEx at scale: bounded memory for large references.

    python benchmarks/predex_scale.py [--n 100000] [--genes 300] [--dim 768]

Times `oc.tl.predex` (official weighting over all references, and top-k) for n query x n reference
spots x genes, next to the official formula `(S @ X) / S.sum(1)` with the full similarity matrix S on a
10,000 x 10,000 subset (the full 100,000^2 S alone would need 40 GB). Each case runs in a fresh process;
"extra" memory is the peak RSS (VmHWM) above the RSS once the inputs exist.
Writes benchmarks/results/predex_scale.json.
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def rss_gib(field: str) -> float:
    line = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith(field))
    return int(line.split()[1]) / 2**20


def unit(rng, n, dim):
    # a shared component, as real CLIP embeddings have: similarities are mostly positive
    x = (rng.normal(size=(n, dim)) + 0.05 * np.sqrt(dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def run_case(method: str, n: int, genes: int, dim: int) -> dict:
    import pandas as pd
    from anndata import AnnData

    import omiclip as oc

    rng = np.random.default_rng(0)
    reference = AnnData(
        rng.poisson(2, size=(n, genes)).astype(np.float32), var=pd.DataFrame(index=[f"G{i}" for i in range(genes)])
    )
    reference.obsm["X_omiclip_text"] = unit(rng, n, dim)
    query = AnnData(obs=pd.DataFrame(index=[f"q{i}" for i in range(n)]))
    query.obsm["X_omiclip_image"] = unit(rng, n, dim)
    inputs = rss_gib("VmRSS:")
    start = time.perf_counter()
    if method == "official":
        similarity = query.obsm["X_omiclip_image"] @ reference.obsm["X_omiclip_text"].T
        result = (similarity @ reference.X) / similarity.sum(axis=1, keepdims=True)
    else:
        result = oc.tl.predex(query, reference, k=50 if method == "top50" else None, progress=False).X
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "extra_gib": rss_gib("VmHWM:") - inputs,
        "checksum": float(np.float64(result[:100]).sum()),
    }


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "_case":
        print(json.dumps(run_case(sys.argv[2], *map(int, sys.argv[3:6]))))
        return
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--genes", type=int, default=300)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--subset", type=int, default=10_000)
    args = parser.parse_args()
    labels = {
        "official": "official formula, full S",
        "all": "omiclip, all references (official weights)",
        "top50": "omiclip, top-50",
    }
    rows = []
    for method, n in (
        ("official", args.subset),
        ("all", args.subset),
        ("top50", args.subset),
        ("all", args.n),
        ("top50", args.n),
    ):
        command = [sys.executable, __file__, "_case", method, str(n), str(args.genes), str(args.dim)]
        out = subprocess.run(command, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        rows.append({"method": labels[method], "n": n, **json.loads(out)})
    same = abs(rows[0]["checksum"] - rows[1]["checksum"]) <= 1e-4 * abs(rows[0]["checksum"])
    print(f"{args.genes} genes, {args.dim}-d embeddings")
    print(f"{'method':<46}{'query x ref':>18}{'seconds':>9}{'extra RSS':>11}")
    for r in rows:
        print(f"{r['method']:<46}{r['n']:>8,} x {r['n']:<8,}{r['seconds']:>9.1f}{r['extra_gib']:>7.2f} GiB")
    print(f"omiclip's default equals the official formula on the subset: {same}")
    out = Path(__file__).parent / "results" / "predex_scale.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), "rows": rows, "matches_official": same}, indent=2))


if __name__ == "__main__":
    main()
