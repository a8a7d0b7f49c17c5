"""Decompose: speed next to Tangram, and accuracy on synthetic tissue with known cell-type proportions.

    python benchmarks/decompose.py speed     [--spots 5000] [--cells 50000] [--dim 768] [--genes 2000] [--tangram-epochs 10]
    python benchmarks/decompose.py accuracy  [--size-um 3000] [--epochs 20]
    python benchmarks/decompose.py all

speed: cluster mode on random embeddings with a cell-type structure (20 types). Side by side in one process:
`oc.tl.decompose` (1000 epochs), and the official call (`tg.pp_adatas` + `tg.map_cells_to_space(
mode="clusters", scale=False, density_prior="uniform", random_state=10)` + `tg.project_cell_annotations`) on
the same embeddings and on gene expression (`--genes` genes); omiclip on the expression too. Tangram's
1000 epochs would take 10-40 minutes per case here, so it runs 0 and `--tangram-epochs` epochs and its
1000-epoch time is set-up + 1000 x the measured time per epoch. omiclip (seed 10) is then run for the same
number of epochs, and the largest difference between its proportions and the official ones is reported.

accuracy: a synthetic section (seed 0) and a 3,000-cell reference of the same tissue. omiclip-tiny is
fine-tuned from scratch on the spots of one quarter of the section (top left), as the paper fine-tunes on a
quarter; every method is scored on the other three quarters. Per cell type: JS divergence of its
distribution over spots and SSIM of its proportion map (spots on their grid, zero elsewhere); the impact
score (eq. 26-30) across the four main methods: omiclip ST mode (text embeddings of spots), omiclip image
mode, Tangram on expression (official settings, counts) and non-negative least squares on expression.
Variants and baselines are listed below them without an impact score.

Both parts run with `--threads` torch threads (default 1: the machine is shared, and with 2 threads on a
busy 2-core machine every method slows down many times). Writes benchmarks/results/decompose_*.json.
"""

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from anndata import AnnData
from scipy.optimize import nnls

import omiclip as oc
from omiclip._anndata import working_copy

RESULTS = Path(__file__).parent / "results"


def tangram():
    import tangram as tg

    logging.getLogger().setLevel(logging.WARNING)  # tangram sets the root logger to INFO on import
    return tg


def official(reference: AnnData, spatial: AnnData, *, epochs: int = 1000) -> pd.DataFrame:
    """Loki's cell_type_decompose (Tangram calls) plus the notebooks' conversion to proportions."""
    tg = tangram()
    reference, spatial = reference.copy(), spatial.copy()  # both are modified
    tg.pp_adatas(reference, spatial, genes=None)
    ad_map = tg.map_cells_to_space(
        reference, spatial, mode="clusters", cluster_label="cell_type", device="cpu", scale=False,
        density_prior="uniform", random_state=10, num_epochs=epochs, verbose=False,
    )  # fmt: skip
    tg.project_cell_annotations(ad_map, spatial, annotation="cell_type")
    counts = reference.obs["cell_type"].value_counts()
    per_spot = spatial.obsm["tangram_ct_pred"] * counts[spatial.obsm["tangram_ct_pred"].columns]
    return per_spot.div(per_spot.sum(axis=1), axis=0)


def as_matrix(adata: AnnData, key: str) -> AnnData:
    """The representation as X, the way the official code feeds embeddings to Tangram."""
    return AnnData(np.asarray(adata.obsm[key], dtype=np.float32), obs=adata.obs.copy())


def timed(function):
    start = time.perf_counter()
    result = function()
    return result, time.perf_counter() - start


# ---------------------------------------------------------------------------------------------- speed


def structured(rng, n_spots: int, n_cells: int, dim: int, n_types: int):
    """Reference cells = type centre + noise; spots = mixtures of the centres + noise, unit length."""
    centres = rng.normal(size=(n_types, dim)) + 0.3
    codes = rng.choice(n_types, size=n_cells, p=rng.dirichlet(np.full(n_types, 2.0)))
    codes = np.argsort(np.argsort(-np.bincount(codes, minlength=n_types), kind="stable"))[codes]  # type 0 largest
    cells = centres[codes] + rng.normal(0, 1.0, (n_cells, dim))
    spots = rng.dirichlet(np.full(n_types, 0.5), size=n_spots) @ centres + rng.normal(0, 0.3, (n_spots, dim))
    unit = [(x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32) for x in (cells, spots)]
    return unit[0], unit[1], codes, centres


def speed(args) -> dict:
    rng = np.random.default_rng(0)
    cells, spots, codes, centres = structured(rng, args.spots, args.cells, args.dim, args.types)
    categories = [f"type{i}" for i in range(args.types)]
    obs = pd.DataFrame(
        {"cell_type": pd.Categorical.from_codes(codes, categories=categories)},
        index=[f"cell{i}" for i in range(args.cells)],
    )
    reference = AnnData(obs=obs)
    reference.obsm["X_omiclip_text"] = cells
    spatial = AnnData(obs=pd.DataFrame(index=[f"spot{i}" for i in range(args.spots)]))
    spatial.obsm["X_omiclip_image"] = spots
    # expression: Poisson counts of type profiles; spots sum ~10 cells of a random mixture
    profiles = rng.gamma(0.3, 2.0, size=(args.types, args.genes))
    reference.obsm["counts"] = rng.poisson(profiles[codes]).astype(np.float32)
    mixtures = rng.dirichlet(np.full(args.types, 0.5), size=args.spots)
    spatial.obsm["counts"] = rng.poisson(10 * mixtures @ profiles).astype(np.float32)

    tangram()  # imports (scanpy, tangram) and torch's first call are not timed
    oc.tl.decompose(spatial[:10].copy(), reference[:100].copy(), epochs=2, progress=False)
    rows = []
    print(f"{'method':<34}{'data':<36}{'seconds':>9}")
    epochs = args.tangram_epochs
    for data, rep, dim in (
        ("embeddings", ("X_omiclip_text", "X_omiclip_image"), args.dim),
        ("expression", ("counts",) * 2, args.genes),
    ):
        label = f"{args.spots:,} x {args.cells:,} x {dim} ({data})"
        ours, seconds = timed(
            lambda rep=rep: oc.tl.decompose(
                spatial, reference, use_rep=rep[1], reference_rep=rep[0], seed=10, copy=True, progress=False
            )
        )
        rows.append({"method": "oc.tl.decompose", "data": data, "seconds": seconds})
        print(f"{'oc.tl.decompose':<34}{label:<36}{seconds:>9.1f}", flush=True)
        inputs = (as_matrix(reference, rep[0]), as_matrix(spatial, rep[1]))
        _, setup = timed(lambda inputs=inputs: official(*inputs, epochs=0))
        theirs, seconds = timed(lambda inputs=inputs: official(*inputs, epochs=epochs))
        estimate = seconds + max(seconds - setup, 0) / epochs * (1000 - epochs)
        rows.append(
            {
                "method": "official",
                "data": data,
                "seconds": estimate,
                "measured": {"epochs": epochs, "seconds": seconds, "setup": setup},
            }
        )
        print(
            f"{'official (tangram-sc 1.0.4)':<34}{label:<36}{estimate:>9.1f}  ({epochs} epochs measured: {seconds:.1f} s)",
            flush=True,
        )
        if data == "embeddings":  # same start, same number of steps: the same mapping
            ours = oc.tl.decompose(spatial, reference, seed=10, epochs=epochs, copy=True, progress=False)
            proportions = ours.obsm["omiclip_proportions"][categories].to_numpy()
            difference = float(np.abs(proportions - theirs[categories].to_numpy()).max())
    print(f"largest |omiclip - official| proportion after {epochs} epochs on the embeddings: {difference:.2e}")
    for data in ("embeddings", "expression"):
        pair = [r["seconds"] for r in rows if r["data"] == data]
        print(f"speed-up on {data} (1000 epochs): {pair[1] / pair[0]:.0f}x")
    return {"rows": rows, "max_abs_difference": difference}


# ------------------------------------------------------------------------------------------- accuracy


def grid_maps(xy: np.ndarray, values: np.ndarray, pitch_um: float = 100.0) -> np.ndarray:
    """Spot values on the hexagonal grid as images (types × rows × columns), zero where there is no spot."""
    row_step = pitch_um * np.sqrt(3) / 2
    rows = np.round((xy[:, 1] - xy[:, 1].min()) / row_step).astype(int)
    cols = np.floor((xy[:, 0] - xy[:, 0].min()) / pitch_um + 1e-6).astype(int)  # odd rows: shifted by half
    maps = np.zeros((values.shape[1], rows.max() + 1, cols.max() + 1))
    maps[:, rows, cols] = values.T
    return maps


def nnls_proportions(reference: AnnData, spatial_counts: np.ndarray, types: list[str]) -> np.ndarray:
    """Spot counts as a non-negative combination of the reference's mean cell profiles, normalised."""
    labels = reference.obs["cell_type"].to_numpy()
    counts = reference.X.toarray()
    profiles = np.stack([counts[labels == t].mean(axis=0) for t in types])
    weights = np.stack([nnls(profiles.T, spot)[0] for spot in spatial_counts])
    total = weights.sum(axis=1, keepdims=True)
    return np.divide(weights, total, out=np.full_like(weights, 1 / len(types)), where=total > 0)


def scores(truth: np.ndarray, predicted: np.ndarray, xy: np.ndarray) -> dict:
    """Mean over cell types of JS divergence, SSIM and Pearson r, and their per-type values."""
    js = oc.metrics.js_divergence(truth, predicted, axis=0)
    true_maps, predicted_maps = grid_maps(xy, truth), grid_maps(xy, predicted)
    ssim = np.array([oc.metrics.ssim(t, p) for t, p in zip(true_maps, predicted_maps, strict=True)])
    pearson = oc.metrics.pearson(truth, predicted)
    return {
        "js": float(np.nanmean(js)),
        "ssim": float(np.mean(ssim)),
        "pearson": float(np.nanmean(pearson)),
        "js_per_type": js.tolist(),
        "ssim_per_type": ssim.tolist(),
    }


def accuracy(args) -> dict:
    tiny = oc.models.load("omiclip-tiny", device="cpu")
    sdata = oc.datasets.synthetic_tissue(size_um=args.size_um, um_per_px=2.0, seed=0)
    table = sdata.tables["table"]
    reference = oc.datasets.synthetic_reference(n_cells=args.cells, size_um=args.size_um, seed=0)
    oc.pp.gene_sentences(sdata)
    oc.pp.gene_sentences(reference)
    xy = np.asarray(table.obsm["spatial"])
    centre = (xy.min(axis=0) + xy.max(axis=0)) / 2
    train = (xy < centre).all(axis=1)  # the top-left quarter
    truth = table.obsm["true_proportions"]
    types = list(truth.columns)
    print(f"{table.n_obs} spots: fine-tuning on {train.sum()}, scoring {(~train).sum()}; {reference.n_obs} cells")

    start = time.perf_counter()
    oc.tl.embed(sdata, modality="image", model=tiny, key_added="X_untrained_image", progress=False)
    subset = working_copy(sdata, copy=True)
    subset.tables["table"] = table[train].copy()
    tuned = oc.tl.finetune(subset, model=tiny, epochs=args.epochs, lr=5e-4, seed=0, progress=False)
    print(f"fine-tuned in {time.perf_counter() - start:.0f} s")
    for modality in ("text", "image"):
        oc.tl.embed(sdata, modality=modality, model=tuned, progress=False)
    oc.tl.embed(reference, model=tuned, progress=False)
    oc.tl.embed(reference, model=tiny, key_added="X_untrained_text", progress=False)

    held = table[~train].copy()
    held_truth, held_xy = truth.to_numpy()[~train], xy[~train]
    shuffled = reference.copy()
    shuffled.obs["cell_type"] = np.random.default_rng(0).permutation(reference.obs["cell_type"].to_numpy())
    kept = (held.obsm["X_omiclip_image"].max(axis=0) > 0) & (reference.obsm["X_omiclip_text"].max(axis=0) > 0)
    held.obsm["X_image_official_dims"] = held.obsm["X_omiclip_image"][:, kept]
    reference.obsm["X_text_official_dims"] = reference.obsm["X_omiclip_text"][:, kept]

    def omiclip(use_rep, reference_rep="X_omiclip_text", labels=reference, key="omiclip_proportions", **kwargs):
        result = oc.tl.decompose(
            held, labels, use_rep=use_rep, reference_rep=reference_rep, copy=True, progress=False, **kwargs
        )
        return result.obsm[key][types].to_numpy()

    counts = reference.X.toarray().astype(np.float32)
    expression = AnnData(counts, obs=reference.obs[["cell_type"]].copy(), var=reference.var[[]].copy())
    spots_expression = AnnData(held.X.toarray().astype(np.float32), obs=held.obs[[]].copy(), var=held.var[[]].copy())
    composition = reference.obs["cell_type"].value_counts(normalize=True)[types].to_numpy()
    methods = {
        "omiclip, ST mode": lambda: omiclip("X_omiclip_text"),
        "omiclip, image mode": lambda: omiclip("X_omiclip_image"),
        "Tangram, expression (official settings)": lambda: official(expression, spots_expression)[types].to_numpy(),
        "NNLS, expression": lambda: nnls_proportions(reference, held.X.toarray(), types),
        "omiclip, ST mode, scale=True": lambda: omiclip("X_omiclip_text", scale=True),
        "omiclip, image mode, scale=True": lambda: omiclip("X_omiclip_image", scale=True),
        "omiclip, image mode, dims kept by tg.pp_adatas": lambda: omiclip(
            "X_image_official_dims", reference_rep="X_text_official_dims"
        ),
        "omiclip, image mode + NMS (official, 5-95%)": lambda: omiclip(
            "X_omiclip_image", nms=True, key="omiclip_proportions_nms"
        ),
        "omiclip, image mode + NMS (eq. 14 as written)": lambda: omiclip(
            "X_omiclip_image", nms=True, nms_percentiles=None, key="omiclip_proportions_nms"
        ),
        "omiclip, image mode, untrained model": lambda: omiclip("X_untrained_image", reference_rep="X_untrained_text"),
        "omiclip, ST mode, shuffled reference labels": lambda: omiclip("X_omiclip_text", labels=shuffled),
        "reference composition in every spot": lambda: np.tile(composition, (held.n_obs, 1)),
    }
    rows = []
    for name, method in methods.items():
        predicted, seconds = timed(method)
        rows.append({"method": name, "seconds": seconds, **scores(held_truth, predicted, held_xy)})
    main = rows[:4]
    impact = oc.metrics.impact_score([r["js"] for r in main], [r["ssim"] for r in main])
    for row, value in zip(main, impact, strict=True):
        row["impact"] = float(value)
    print(f"{'method':<48}{'JS':>7}{'SSIM':>7}{'r':>7}{'impact':>8}{'s':>7}")
    for r in rows:
        impact = f"{r['impact']:8.2f}" if "impact" in r else f"{'':8}"
        print(f"{r['method']:<48}{r['js']:7.3f}{r['ssim']:7.3f}{r['pearson']:7.3f}{impact}{r['seconds']:7.1f}")
    print("per cell type (main methods), JS / SSIM:")
    for r in main:
        cells = "  ".join(
            f"{t} {j:.2f}/{s:.2f}" for t, j, s in zip(types, r["js_per_type"], r["ssim_per_type"], strict=True)
        )
        print(f"  {r['method']}: {cells}")
    return {"types": types, "spots_scored": int((~train).sum()), "spots_trained": int(train.sum()), "rows": rows}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("part", choices=["speed", "accuracy", "all"])
    parser.add_argument("--spots", type=int, default=5000)
    parser.add_argument("--cells", type=int, default=None, help="reference cells (speed: 50,000; accuracy: 3,000)")
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--types", type=int, default=20)
    parser.add_argument("--genes", type=int, default=2000)
    parser.add_argument("--size-um", type=float, default=3000)
    parser.add_argument("--epochs", type=int, default=20, help="fine-tuning epochs")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--tangram-epochs", type=int, default=10, help="epochs timed for Tangram (then scaled to 1000)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    RESULTS.mkdir(exist_ok=True)
    for part, run, cells in (("speed", speed, 50_000), ("accuracy", accuracy, 3000)):
        if args.part in (part, "all"):
            part_args = argparse.Namespace(**{**vars(args), "cells": args.cells or cells})
            result = run(part_args)
            (RESULTS / f"decompose_{part}.json").write_text(json.dumps({"args": vars(part_args), **result}, indent=2))


if __name__ == "__main__":
    main()
