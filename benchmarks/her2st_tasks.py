"""PredEx and Annotate on real HER2+ sections, with baselines on the same split.

    python benchmarks/her2st_tasks.py [--data ../shared/data/her2st] [--epochs 30]

PredEx: leave one of C2, C3, C4 out; fine-tune omiclip-tiny from scratch on the other two; predict the
held-out section's expression (log1p of counts per 10,000) from its H&E tiles. Mean per-gene Pearson
correlation over the 100 and 300 most expressed genes of the training sections, and MSE, for:
PredEx (official weights over all training spots; and top-50), the training mean, k-NN on simple
colour/texture features of the tiles, and ridge regression on the tiny model's image embeddings.

Annotate: A1's spots (pathologist labels) by the text embeddings of their gene sentences against
marker-gene sentences of the pathologist's classes, with the model fine-tuned on C2 + C3 (the last fold).
Writes benchmarks/results/her2st_tasks.json.
"""

import argparse
import json
from pathlib import Path

import numpy as np
import scanpy as sc
from sklearn.linear_model import Ridge
from sklearn.preprocessing import StandardScaler

import omiclip as oc

SECTIONS = ("C2", "C3", "C4")
# textbook markers of the pathologist's classes in Andersson et al. 2021 (not tuned on the data)
MARKERS = {
    "invasive cancer": ["ERBB2", "GRB7", "KRT19", "KRT8", "EPCAM", "MKI67"],
    "cancer in situ": ["KRT5", "KRT14", "ACTA2", "MYH11", "ERBB2", "KRT8"],
    "connective tissue": ["COL1A1", "COL1A2", "COL3A1", "DCN", "LUM", "FBLN1"],
    "adipose tissue": ["ADIPOQ", "PLIN1", "FABP4", "LEP", "CFD", "LPL"],
    "immune infiltrate": ["PTPRC", "CD3D", "CD2", "MS4A1", "CD79A", "IGKC"],
}


def log_normalised(table):
    adata = table.copy()
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    return adata


def tile_features(tiles: np.ndarray) -> np.ndarray:
    """Colour and texture: RGB mean/std, grey-level gradient energy, fraction of dark (nuclear) pixels."""
    rgb = tiles.astype(np.float32) / 255
    grey = rgb.mean(axis=-1)
    gy, gx = np.gradient(grey, axis=(1, 2))
    return np.column_stack(
        [
            rgb.mean(axis=(1, 2)),
            rgb.std(axis=(1, 2)),
            np.sqrt(gx**2 + gy**2).mean(axis=(1, 2)),
            (grey < 0.5).mean(axis=(1, 2)),
        ]
    )


def scores(truth: np.ndarray, predicted: np.ndarray) -> dict:
    pcc = np.nan_to_num(oc.metrics.pearson(truth, predicted))  # constant predictions correlate 0
    return {"pcc": float(pcc.mean()), "mse": oc.metrics.mse(truth, predicted)}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared/data/her2st"))
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--lr", type=float, default=5e-4)
    args = parser.parse_args()

    sections = {name: oc.datasets.her2st(name, args.data) for name in SECTIONS}
    for sdata in sections.values():
        oc.pp.gene_sentences(sdata)
    untrained = oc.models.load("omiclip-tiny")
    rows = []
    for held_out in SECTIONS:
        train_names = [n for n in SECTIONS if n != held_out]
        tuned = oc.tl.finetune(
            [sections[n] for n in train_names], model=untrained, epochs=args.epochs, lr=args.lr, progress=False
        )
        for sdata in sections.values():
            oc.tl.embed(sdata, model=tuned, progress=False)
            oc.tl.embed(sdata, modality="image", model=tuned, progress=False)
        train = sc.concat([sections[n].tables["table"] for n in train_names], join="inner", index_unique="-")
        train.obsm["X_omiclip_text"] = np.concatenate(
            [sections[n].tables["table"].obsm["X_omiclip_text"] for n in train_names]
        )
        train_image = np.concatenate([sections[n].tables["table"].obsm["X_omiclip_image"] for n in train_names])
        test = sections[held_out].tables["table"]
        train_norm, test_norm = log_normalised(train), log_normalised(test)
        common = train_norm.var_names.intersection(test_norm.var_names)
        mean = np.asarray(train_norm[:, common].X.mean(axis=0)).ravel()
        train_tiles = np.concatenate([oc.pp.tiles(sections[n]).to_array() for n in train_names])
        test_tiles = oc.pp.tiles(sections[held_out]).to_array()
        scaler = StandardScaler().fit(tile_features(train_tiles))
        for n_genes in (100, 300):
            genes = common[np.argsort(-mean, kind="stable")[:n_genes]]
            truth = test_norm[:, genes].X.toarray()
            train_expr = train_norm[:, genes].X.toarray()
            predictions = {}
            for label, kwargs in (("PredEx (official: all spots, raw weights)", {}), ("PredEx (top-50)", {"k": 50})):
                predictions[label] = oc.tl.predex(test, train_norm, genes=genes, progress=False, **kwargs).X
            predictions["training mean"] = np.broadcast_to(train_expr.mean(axis=0), truth.shape)
            features_train = scaler.transform(tile_features(train_tiles))
            features_test = scaler.transform(tile_features(test_tiles))
            distance = ((features_test[:, None] - features_train[None]) ** 2).sum(-1)
            neighbours = np.argsort(distance, axis=1)[:, :10]
            predictions["k-NN (10) on colour/texture features"] = train_expr[neighbours].mean(axis=1)
            ridge = Ridge(alpha=1.0).fit(train_image, train_expr)
            predictions["ridge on omiclip-tiny image embeddings"] = ridge.predict(test.obsm["X_omiclip_image"])
            for label, predicted in predictions.items():
                rows.append({"held_out": held_out, "genes": n_genes, "method": label, **scores(truth, predicted)})

    # Annotate A1 by marker genes, with the last fold's model (fine-tuned on C2 + C3)
    a1 = oc.datasets.her2st("A1", args.data)
    oc.pp.gene_sentences(a1)
    oc.tl.embed(a1, model=tuned, progress=False)
    table = a1.tables["table"]
    oc.tl.annotate(a1, MARKERS, model=tuned, use_rep="X_omiclip_text")
    labelled = table.obs["label"].isin(list(MARKERS)).to_numpy()
    truth, predicted = table.obs["label"][labelled].astype(str), table.obs["omiclip_annotation"][labelled].astype(str)
    majority = truth.value_counts().index[0]
    annotation = {
        "weighted_f1": oc.metrics.weighted_f1(truth, predicted),
        "majority_class_weighted_f1": oc.metrics.weighted_f1(truth, [majority] * len(truth)),
        "n_spots": int(labelled.sum()),
    }

    print(f"{'held out':<9}{'genes':>6}  {'method':<44}{'PCC':>7}{'MSE':>8}")
    for r in rows:
        print(f"{r['held_out']:<9}{r['genes']:>6}  {r['method']:<44}{r['pcc']:>7.3f}{r['mse']:>8.3f}")
    print("mean over held-out sections:")
    for n_genes in (100, 300):
        for label in dict.fromkeys(r["method"] for r in rows):
            picked = [r for r in rows if r["method"] == label and r["genes"] == n_genes]
            print(
                f"  {n_genes:>4} genes  {label:<44}{np.mean([r['pcc'] for r in picked]):>7.3f}{np.mean([r['mse'] for r in picked]):>8.3f}"
            )
    print(
        f"A1 annotation by marker genes (text embeddings): weighted F1 {annotation['weighted_f1']:.3f}, "
        f"majority class {annotation['majority_class_weighted_f1']:.3f}, {annotation['n_spots']} spots"
    )
    out = Path(__file__).parent / "results" / "her2st_tasks.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), "predex": rows, "annotation": annotation}, indent=2))


if __name__ == "__main__":
    main()
