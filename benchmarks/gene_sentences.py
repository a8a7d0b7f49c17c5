"""Gene sentences at scale: oc.pp.gene_sentences vs the official dense pandas `nlargest` rule.

    python benchmarks/gene_sentences.py [--n-obs 100000] [--n-vars 20000] [--genes-per-obs 2000]

Prints a table and writes benchmarks/results/gene_sentences.json. The official approach densifies the
matrix into a DataFrame and calls `Series.nlargest(50)` per row; it runs on a row subset (the full
matrix would need n_obs * n_vars * 8 bytes), and both methods are timed on that same subset.
"""

import argparse
import json
import resource
import time
from pathlib import Path

import numpy as np
import pandas as pd
from anndata import AnnData
from scipy import sparse

import omiclip as oc


def random_counts(n_obs: int, n_vars: int, per_obs: int, seed: int = 0) -> sparse.csr_matrix:
    """Sparse counts with `per_obs` expressed genes per row, heavy-tailed like UMI data."""
    rng = np.random.default_rng(seed)
    gene_weight = rng.pareto(1.0, n_vars) + 0.01
    gene_weight /= gene_weight.sum()
    columns = np.empty((n_obs, per_obs), dtype=np.int32)
    for start in range(0, n_obs, 5000):  # bounded memory while sampling
        stop = min(start + 5000, n_obs)
        keys = rng.random((stop - start, n_vars)).astype(np.float32) ** (1 / (gene_weight * n_vars))
        columns[start:stop] = np.argpartition(-keys, per_obs, axis=1)[:, :per_obs]
    columns.sort(axis=1)
    data = (rng.geometric(0.35, size=n_obs * per_obs) * gene_weight[columns.ravel()] * n_vars).round()
    data = np.maximum(data, 1).astype(np.float32)
    indptr = np.arange(0, n_obs * per_obs + 1, per_obs, dtype=np.int64)
    return sparse.csr_matrix((data, columns.ravel(), indptr), shape=(n_obs, n_vars))


def official(df: pd.DataFrame, n_genes: int) -> list[str]:
    return [" ".join(row.nlargest(n_genes).index) for _, row in df.iterrows()]


def timed(func, *args, **kwargs):
    start = time.perf_counter()
    result = func(*args, **kwargs)
    return time.perf_counter() - start, result


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--n-obs", type=int, default=100_000)
    parser.add_argument("--n-vars", type=int, default=20_000)
    parser.add_argument("--genes-per-obs", type=int, default=2_000)
    parser.add_argument("--official-rows", type=int, default=2_000)
    args = parser.parse_args()

    counts = random_counts(args.n_obs, args.n_vars, args.genes_per_obs)
    genes = [f"GENE{i}" for i in range(args.n_vars)]
    adata = AnnData(counts, var=pd.DataFrame(index=genes))
    # imports (scanpy's logging, open_clip's tokenizer) happen once per process: keep them out of the timings
    oc.pp.gene_sentences(AnnData(np.ones((1, 1), dtype=np.float32)), exclude=None)

    rows = []
    seconds, _ = timed(oc.pp.gene_sentences, adata, exclude=None)
    rows.append(("omiclip, full matrix (CSR)", args.n_obs, seconds))

    subset = adata[: args.official_rows].copy()
    ours_subset, _ = timed(oc.pp.gene_sentences, subset, exclude=None)
    ours_sentences = subset.obs["gene_sentence"].tolist()
    dense_frame = pd.DataFrame(subset.X.toarray(), columns=genes)
    official_subset, official_sentences = timed(official, dense_frame, 50)
    subset_with_padding = subset.copy()
    oc.pp.gene_sentences(subset_with_padding, exclude=None, pad=True)
    identical = subset_with_padding.obs["gene_sentence"].tolist() == official_sentences
    rows.append(("omiclip, subset", args.official_rows, ours_subset))
    rows.append(("official pandas nlargest, subset", args.official_rows, official_subset))
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20

    print(f"{args.n_obs} x {args.n_vars}, {args.genes_per_obs} expressed genes per row, nnz = {counts.nnz:,}")
    print(f"{'method':<36}{'rows':>10}{'seconds':>10}{'rows/s':>12}")
    for name, n, secs in rows:
        print(f"{name:<36}{n:>10}{secs:>10.2f}{n / secs:>12,.0f}")
    ratio = official_subset / ours_subset
    print(
        f"speed-up on the same rows: {ratio:.0f}x; official rule extrapolated to all rows: "
        f"{official_subset * args.n_obs / args.official_rows:,.0f} s"
    )
    print(f"pad=True output identical to the official rule: {identical}; peak RSS {peak_gib:.1f} GiB")

    out = Path(__file__).parent / "results" / "gene_sentences.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "args": vars(args),
                "nnz": int(counts.nnz),
                "rows": [{"method": name, "rows": n, "seconds": secs} for name, n, secs in rows],
                "speedup_same_rows": ratio,
                "identical_to_official_with_pad": identical,
                "peak_rss_gib": peak_gib,
                "ours_first_sentence": ours_sentences[0],
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
