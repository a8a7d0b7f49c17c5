"""Low-count data: does ordering tied genes by mean expression (ties="mean") help over var order (official)?

    python benchmarks/gene_sentence_ties.py [--seeds 0 1 2] [--counts-per-cell 10] [--no-model]

Single cells of the synthetic tissue (section 0 of `oc.datasets.synthetic_tissue`'s virtual tissue, real marker
genes, panel in alphabetical order as Xenium panels are) get Poisson counts with `--counts-per-cell` UMIs on
average (Xenium-like), are pooled into 55 µm pseudo-spots (`oc.pp.pseudo_spots`), and each spot is labelled with
the domain of most of its cells. Sentences are written with `ties="var_order"` and `ties="mean"`; for each, how
well do spots with similar sentences share a domain? Controls: var order set to most expressed first, and random.

- the share of the genes the model reads that are tied at the sentence's lowest count;
- model-free: leave-one-out 15-NN domain accuracy with cosine similarity between the sets of genes the model
  reads (binary bags);
- with `omiclip-tiny` (random weights; its text tower still maps shared words to shared directions): the same
  accuracy on text embeddings;
- reference: the same accuracy on log1p-normalised counts of all genes (what the data holds).

Prints a table and writes benchmarks/results/gene_sentence_ties_{counts per cell}.json.
"""

import argparse
import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from anndata import AnnData
from scipy import sparse

import omiclip as oc
from omiclip.datasets._synthetic import make_tissue, section_warp, simulate_cells

N_NEIGHBOURS = 15


def cells_with_counts(seed: int, counts_per_cell: float, size_um: float = 3000.0, n_domains: int = 5) -> AnnData:
    tissue = make_tissue(seed, size_um, n_domains)
    rng = np.random.default_rng([seed, 0, 1])
    cells = simulate_cells(tissue, section_warp(seed, 0, size_um), rng)
    codes = cells["cell_type"].cat.codes.to_numpy()
    share = tissue.profiles / tissue.profiles.sum(axis=1, keepdims=True)
    counts = rng.poisson(share[codes] * counts_per_cell).astype(np.float32)
    order = np.argsort(tissue.genes.astype(str))  # a panel in alphabetical order, as Xenium lists it
    xy = cells[["x", "y"]].to_numpy()
    domain = np.asarray(tissue.domains, dtype=object)[tissue.domain_at(xy)]
    adata = AnnData(
        sparse.csr_matrix(counts[:, order]),
        obs=pd.DataFrame({"domain": pd.Categorical(domain)}, index=[f"cell_{i}" for i in range(len(cells))]),
        var=pd.DataFrame(index=tissue.genes.astype(str)[order]),
    )
    adata.obsm["spatial"] = xy
    return adata


def knn_accuracy(features: np.ndarray, labels: np.ndarray) -> float:
    """Leave-one-out k-NN majority vote with cosine similarity."""
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    unit = features / np.where(norms > 0, norms, 1)
    similarity = unit @ unit.T
    np.fill_diagonal(similarity, -np.inf)
    neighbours = np.argsort(-similarity, axis=1, kind="stable")[:, :N_NEIGHBOURS]
    codes, labels_coded = np.unique(labels, return_inverse=True)
    votes = np.zeros((len(labels), len(codes)))
    np.add.at(votes, (np.repeat(np.arange(len(labels)), N_NEIGHBOURS), labels_coded[neighbours].ravel()), 1)
    return float((votes.argmax(axis=1) == labels_coded).mean())


def bag_of_read_genes(spots: AnnData) -> np.ndarray:
    genes = {g: i for i, g in enumerate(spots.var_names)}
    bag = np.zeros((spots.n_obs, spots.n_vars), dtype=np.float32)
    for row, (sentence, n_read) in enumerate(
        zip(spots.obs["gene_sentence"], spots.obs["gene_sentence_n_in_context"], strict=True)
    ):
        bag[row, [genes[g] for g in sentence.split()[:n_read]]] = 1
    return bag


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--counts-per-cell", type=float, default=10.0)
    parser.add_argument("--no-model", action="store_true")
    args = parser.parse_args()
    model = None if args.no_model else oc.models.load("omiclip-tiny", device="cpu")

    rows = []
    for seed in args.seeds:
        cells = cells_with_counts(seed, args.counts_per_cell)
        spots = oc.pp.pseudo_spots(cells, groupby="domain", microns_per_unit=1.0)
        composition = spots.obsm["cell_counts"]
        labels = np.asarray(composition.columns)[np.asarray(composition).argmax(axis=1)]
        total = np.asarray(spots.X.sum(axis=1)).ravel()
        normalised = np.log1p(np.asarray(spots.X.todense()) / np.maximum(total, 1)[:, None] * 1e4)
        row = {
            "seed": seed,
            "n_cells": cells.n_obs,
            "n_spots": spots.n_obs,
            "genes": spots.n_vars,
            "median_counts_per_spot": float(np.median(total)),
            "knn_expression": knn_accuracy(normalised, labels),
        }
        # controls: var order itself set to the order wanted (most expressed first; random), ties="var_order"
        mean = np.asarray(spots.X.mean(axis=0)).ravel()
        variants = {
            "var_order": (spots, "var_order"),
            "rarest": (spots, "rarest"),
            "most_expressed_first": (spots[:, np.lexsort((np.arange(spots.n_vars), -mean))].copy(), "var_order"),
            "random_order": (spots[:, np.random.default_rng(seed).permutation(spots.n_vars)].copy(), "var_order"),
        }
        for variant, (table, ties) in variants.items():
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                oc.pp.gene_sentences(table, exclude=None, ties=ties)
            obs = table.obs
            row[f"{variant}_warned"] = any("tie-ordered" in str(w.message) for w in caught)
            row[f"{variant}_tied_share_read"] = float(
                (obs["gene_sentence_n_ties_in_context"] / obs["gene_sentence_n_in_context"].clip(lower=1)).mean()
            )
            row[f"{variant}_tie_ordered"] = (
                table.uns["omiclip"]["gene_sentences"]["gene_sentence"]["n_tie_ordered"] / table.n_obs
            )
            row[f"{variant}_knn_read_genes"] = knn_accuracy(bag_of_read_genes(table), labels)
            if model is not None:
                embeddings = model.encode_text(table.obs["gene_sentence"].tolist(), batch_size=128)
                row[f"{variant}_knn_tiny_model"] = knn_accuracy(embeddings, labels)
        rows.append(row)
        print(row, flush=True)

    frame = pd.DataFrame(rows)
    means = frame.mean(numeric_only=True)
    variants = ["var_order", "rarest", "most_expressed_first", "random_order"]
    print(f"\n{args.counts_per_cell:g} counts per cell, seeds {args.seeds}, means over seeds")
    print(f"{'':<36}" + "".join(f"{v:>22}" for v in variants))
    measures = [("tied_share_read", "genes read that are lowest ties"), ("tie_ordered", "sentences tie-ordered")]
    measures.append(("knn_read_genes", f"{N_NEIGHBOURS}-NN accuracy, genes read"))
    if model is not None:
        measures.append(("knn_tiny_model", f"{N_NEIGHBOURS}-NN accuracy, tiny model"))
    for key, label in measures:
        print(f"{label:<36}" + "".join(f"{means[f'{v}_{key}']:>22.3f}" for v in variants))
    print(f"{f'{N_NEIGHBOURS}-NN accuracy, normalised counts':<36}{means['knn_expression']:>22.3f}")
    out = Path(__file__).parent / "results" / f"gene_sentence_ties_{args.counts_per_cell:g}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), "rows": rows, "means": means.to_dict()}, indent=2, default=float))


if __name__ == "__main__":
    main()
