"""Loki Align accuracy on real serial sections (HER2ST): omiclip against CPD, PASTE and pycpd, and no alignment.

    python benchmarks/align_her2st.py [--data ../shared/data/her2st] [--epochs 20]

Pairs: A2–A6 each aligned to A1 (counts only, no images: text alignment) and C3, C4 aligned to C2 (with H&E:
text and image→text alignment). Coordinates are converted to µm (each section's ``uns["microns_per_unit"]``).

Models (omiclip-tiny from scratch, lr 5e-4): for the A-series, fine-tuned on the (tile, gene sentence) pairs
of C2–C4 (another patient; the A sections are never seen). For C3/C4 → C2, fine-tuned on the target C2 alone,
the paper's protocol ("we first fine-tuned OmiCLIP using paired ST data and H&E image of the target sample");
the source sections are never seen.

Metric as the paper: after alignment, each source spot is paired with its nearest target spot; per gene, the
Pearson correlation and Kendall's tau across source spots between the source spot's expression and its
partner's (log1p counts per 10,000), over the pair's 100 most expressed genes (mean over genes). The same over
100 dispersion-based highly variable genes is reported for comparison, with Moran's I of both gene sets. An
oracle row gives the best rigid move of a grid for the metric itself (what a perfect rigid method could reach).
Prints tables, writes benchmarks/results/align_her2st.json.
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np
import scanpy as sc
import torch
from _align_methods import joint_pca, log_normalised, run_all  # benchmarks/ is on sys.path when run as a script
from scipy import sparse
from scipy.spatial import cKDTree
from threadpoolctl import threadpool_limits

import omiclip as oc

TARGETS = {"A1": ("A2", "A3", "A4", "A5", "A6"), "C2": ("C3", "C4")}
TRAIN = {"A1": ("C2", "C3", "C4"), "C2": ("C2",)}
N_GENES = 100


def expression(source, target) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Log-normalised expression of both on common genes, and the gene sets: most expressed, HVGs."""
    genes = target.var_names.intersection(source.var_names)
    both = log_normalised(sc.concat({"t": target[:, genes], "s": source[:, genes]}, index_unique="-"))
    X = both.X.toarray() if sparse.issparse(both.X) else np.asarray(both.X)
    top = np.argsort(-X.mean(axis=0), kind="stable")[:N_GENES]
    sc.pp.highly_variable_genes(both, n_top_genes=N_GENES, flavor="seurat")
    hvg = np.flatnonzero(both.var["highly_variable"].to_numpy())
    return X[: target.n_obs], X[target.n_obs :], {"top-expressed": top, "HVG": hvg}


def morans_i(X: np.ndarray, xy: np.ndarray, k: int = 6) -> np.ndarray:
    """Moran's I of each column on the k-nearest-neighbour graph (binary weights); ~0 without spatial pattern."""
    _, idx = cKDTree(xy).query(xy, k=k + 1)
    n = len(xy)
    W = sparse.csr_matrix((np.ones(n * k), (np.repeat(np.arange(n), k), idx[:, 1:].ravel())), shape=(n, n))
    Z = X - X.mean(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return n / W.sum() * (Z * (W @ Z)).sum(axis=0) / (Z**2).sum(axis=0)


def match_scores(aligned_xy, target_xy, source_X, target_X, genes) -> dict:
    """Per-gene PCC and Kendall's tau between each source spot and its nearest target spot (means over genes)."""
    _, nearest = cKDTree(target_xy).query(aligned_xy)
    a, b = source_X[:, genes], target_X[nearest][:, genes]
    pcc = np.nan_to_num(oc.metrics.pearson(a, b))  # a gene constant over the matched spots correlates 0
    tau = np.nan_to_num(oc.metrics.kendall_tau(a, b))
    return {"pcc": float(pcc.mean()), "pcc_median": float(np.median(pcc)), "tau": float(tau.mean())}


def best_rigid_on_grid(source_xy, target_xy, source_X, target_X, genes) -> np.ndarray:
    """Oracle on the metric: of the rigid moves on a grid, the one whose matching gives the highest mean PCC.

    Rotations about the source centroid in ±30° (5° steps), then translations in ±1 mm (100 µm steps), from
    two starts: the source as it is and the source centroid moved onto the target's.
    """
    tree, centre = cKDTree(target_xy), source_xy.mean(axis=0)
    a, b = source_X[:, genes], target_X[:, genes]
    steps = np.arange(-1000.0, 1001.0, 100.0)
    best, best_xy = -np.inf, source_xy
    for start in (np.zeros(2), target_xy.mean(axis=0) - centre):
        for degrees in range(-30, 31, 5):
            t = np.deg2rad(degrees)
            rotation = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
            rotated = (source_xy - centre) @ rotation.T + centre + start
            for dx in steps:
                for dy in steps:
                    moved = rotated + (dx, dy)
                    pcc = np.nan_to_num(oc.metrics.pearson(a, b[tree.query(moved)[1]])).mean()
                    if pcc > best:
                        best, best_xy = pcc, moved
    return best_xy


def to_microns(sdata):
    """The table with ``obsm["spatial"]`` in µm (alignment and matching need one unit for both sections)."""
    table = sdata.tables["table"].copy()
    table.obsm["spatial"] = np.asarray(table.obsm["spatial"], dtype=np.float64) * table.uns["microns_per_unit"]
    table.uns["microns_per_unit"] = 1.0
    return table


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared/data/her2st"))
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="BLAS and torch threads (the machine is shared)")
    parser.add_argument("--models", help="folder for the fine-tuned checkpoints: reused when present")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "align_her2st.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    threadpool_limits(args.threads)

    names = sorted({n for t, sources in TARGETS.items() for n in (t, *sources)} | set(TRAIN["A1"]))
    sections = {name: oc.datasets.her2st(name, args.data) for name in names}
    for sdata in sections.values():
        oc.pp.gene_sentences(sdata)
    untrained = oc.models.load("omiclip-tiny", seed=args.seed)

    rows, training, spatial_signal = [], {}, {}
    tic = time.perf_counter()
    for target_name, source_names in TARGETS.items():
        start = time.perf_counter()
        train = [sections[n] for n in TRAIN[target_name]]
        cached = Path(args.models) / f"align_her2st_{target_name}.pt" if args.models else None
        if cached is not None and cached.is_file():
            model = oc.models.load(cached)
        else:
            model = oc.tl.finetune(
                train, model=untrained, epochs=args.epochs, lr=args.lr, seed=args.seed, save=cached, progress=False
            )
        training[target_name] = {
            "sections": list(TRAIN[target_name]),
            "seconds": time.perf_counter() - start,
            "loss": [model.history[0], model.history[-1]] if model.history else "loaded from a checkpoint",
        }
        print(f"model for → {target_name}: {'+'.join(TRAIN[target_name])}, {training[target_name]}")
        with_image = "he" in sections[target_name].images
        for name in (target_name, *source_names):
            oc.tl.embed(sections[name], model=model, progress=False)
            if with_image and name != target_name:
                oc.tl.embed(sections[name], modality="image", model=model, progress=False)
        target = to_microns(sections[target_name])
        for source_name in source_names:
            source = to_microns(sections[source_name])
            joint_pca(source, target, seed=args.seed)
            coords, seconds, info = run_all(source, target, image=with_image, seed=args.seed)
            target_X, source_X, gene_sets = expression(source, target)
            oracle = best_rigid_on_grid(
                source.obsm["spatial"], target.obsm["spatial"], source_X, target_X, gene_sets["top-expressed"]
            )
            coords = {"unaligned": source.obsm["spatial"], "best rigid move on a grid (oracle)": oracle, **coords}
            if source_name == source_names[0]:  # is there spatial signal in the two gene sets? (target section)
                spatial_signal[target_name] = {
                    label: float(np.nanmedian(morans_i(target_X[:, genes], target.obsm["spatial"])))
                    for label, genes in gene_sets.items()
                }
            for method, xy in coords.items():
                scores = {
                    label: match_scores(xy, target.obsm["spatial"], source_X, target_X, genes)
                    for label, genes in gene_sets.items()
                }
                rows.append(
                    {
                        "target": target_name,
                        "source": source_name,
                        "method": method,
                        **scores,
                        "info": info.get(method, info.get(method.rsplit(", ", 1)[0])),
                    }
                )
            print(
                f"{source_name} → {target_name}: "
                + "  ".join(
                    f"{r['method']}: {r['top-expressed']['pcc']:.3f}" for r in rows if r["source"] == source_name
                ),
                flush=True,
            )

    print(f"\nMoran's I (median over genes, target section; ~0 = no spatial pattern): {spatial_signal}")
    print(f"\n{'pair':<10}{'method':<42}{'PCC':>7}{'median':>8}{'tau':>7}{'PCC HVG':>9}")
    for r in rows:
        top = r["top-expressed"]
        print(
            f"{r['source'] + '→' + r['target']:<10}{r['method']:<42}{top['pcc']:>7.3f}{top['pcc_median']:>8.3f}{top['tau']:>7.3f}{r['HVG']['pcc']:>9.3f}"
        )
    summary = []
    print(f"\nmean over pairs\n{'series':<10}{'method':<42}{'PCC':>7}{'median':>8}{'tau':>7}{'PCC HVG':>9}")
    for target_name in TARGETS:
        for method in dict.fromkeys(r["method"] for r in rows if r["target"] == target_name):
            picked = [r for r in rows if r["target"] == target_name and r["method"] == method]
            entry = {
                "target": target_name,
                "method": method,
                "n_pairs": len(picked),
                **{k: float(np.mean([r["top-expressed"][k] for r in picked])) for k in ("pcc", "pcc_median", "tau")},
                "pcc_hvg": float(np.mean([r["HVG"]["pcc"] for r in picked])),
                "tau_hvg": float(np.mean([r["HVG"]["tau"] for r in picked])),
            }
            summary.append(entry)
            print(
                f"→{target_name:<9}{method:<42}{entry['pcc']:>7.3f}{entry['pcc_median']:>8.3f}{entry['tau']:>7.3f}{entry['pcc_hvg']:>9.3f}"
            )
    print(f"total {time.perf_counter() - tic:.0f} s")

    out = Path(args.out)
    out.parent.mkdir(exist_ok=True)
    payload = {
        "args": vars(args),
        "training": training,
        "morans_i_median": spatial_signal,
        "summary": summary,
        "pairs": rows,
    }
    out.write_text(json.dumps(payload, indent=2))


if __name__ == "__main__":
    main()
