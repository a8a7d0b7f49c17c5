"""PredEx at scale: bounded memory for large references.

    python benchmarks/predex_scale.py [--n 100000] [--genes 300] [--dim 768]

Times `oc.tl.predex` (official weighting over all references, and top-k) for n query x n reference
spots x genes, with peak extra memory (tracemalloc) of each call, next to the official formula
`(S @ X) / S.sum(1)` with the full similarity matrix S, run on a 10,000 x 10,000 subset (the full
100,000^2 S would need 40 GB). Writes benchmarks/results/predex_scale.json.
"""

import argparse
import json
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd
from anndata import AnnData

import omiclip as oc


def unit(rng, n, dim):
    # a shared component, as real CLIP embeddings have: similarities are mostly positive
    x = (rng.normal(size=(n, dim)) + 0.05 * np.sqrt(dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def measure(func):
    tracemalloc.start()
    start = time.perf_counter()
    result = func()
    seconds = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return result, seconds, peak / 2**30


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--genes", type=int, default=300)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--subset", type=int, default=10_000)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    reference = AnnData(
        rng.poisson(2, size=(args.n, args.genes)).astype(np.float32),
        var=pd.DataFrame(index=[f"G{i}" for i in range(args.genes)]),
    )
    reference.obsm["X_omiclip_text"] = unit(rng, args.n, args.dim)
    query = AnnData(obs=pd.DataFrame(index=[f"q{i}" for i in range(args.n)]))
    query.obsm["X_omiclip_image"] = unit(rng, args.n, args.dim)

    rows = []
    for label, n, kwargs in [
        ("omiclip, all references (official weights)", args.subset, {}),
        ("omiclip, top-50", args.subset, {"k": 50}),
        ("omiclip, all references (official weights)", args.n, {}),
        ("omiclip, top-50", args.n, {"k": 50}),
    ]:
        q, r = query[:n].copy(), reference[:n].copy()
        result, seconds, peak = measure(lambda q=q, r=r, kwargs=kwargs: oc.tl.predex(q, r, progress=False, **kwargs))
        rows.append({"method": label, "n": n, "seconds": seconds, "peak_extra_gib": peak})
        if n == args.subset and not kwargs:
            ours = result.X

    q_emb, r_emb = query.obsm["X_omiclip_image"][: args.subset], reference.obsm["X_omiclip_text"][: args.subset]
    expression = reference.X[: args.subset]

    def official():
        similarity = q_emb @ r_emb.T
        return (similarity @ expression) / similarity.sum(axis=1, keepdims=True)

    expected, seconds, peak = measure(official)
    rows.insert(1, {"method": "official formula, full S", "n": args.subset, "seconds": seconds, "peak_extra_gib": peak})
    agree = float(np.max(np.abs(expected - ours) / (np.abs(expected) + 1e-3)))

    print(f"{args.genes} genes, {args.dim}-d embeddings")
    print(f"{'method':<46}{'query x ref':>16}{'seconds':>9}{'peak extra':>12}")
    for r in rows:
        print(f"{r['method']:<46}{r['n']:>8,} x {r['n']:<6,}{r['seconds']:>9.1f}{r['peak_extra_gib']:>8.2f} GiB")
    print(f"max relative difference to the official formula on the subset: {agree:.1e}")
    out = Path(__file__).parent / "results" / "predex_scale.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), "rows": rows, "max_relative_difference": agree}, indent=2))


if __name__ == "__main__":
    main()
