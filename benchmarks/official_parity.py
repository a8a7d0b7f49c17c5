"""omiclip's defaults side by side with the official Loki functions, on the same inputs.

    LOKI_SRC=/path/to/Loki/src PYTHONPATH=/path/to/extra-deps python benchmarks/official_parity.py \
        [--her2st ../shared/data/her2st] [--out benchmarks/results/official_parity.json]

``LOKI_SRC`` is the ``src/`` folder of a local checkout of the official repository (GuangyuWangLab2021/Loki), which
holds the ``loki`` package; it is imported from there and never copied. The official modules import ``cv2``
(``opencv-python-headless``), ``pycpd``, ``tangram`` and ``open_clip``; install the extras into a separate folder
(``pip install --target``) and put it on ``PYTHONPATH``.

Per task: the official function and omiclip's with its defaults, the largest absolute difference of their outputs
and the seconds each took. Inputs: HER2ST sections (gene sentences on A1's counts; align A2 onto A1 on one joint
PCA of both, as the paper's "CPD on PCA"); a synthetic section and single-cell reference for decompose (the
embeddings are one PCA of spots and cells); seeded random unit embeddings for annotate, retrieve and PredEx.
Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from anndata import AnnData
from threadpoolctl import threadpool_limits

import omiclip as oc
from omiclip._core.mapping import non_maximum_suppression


def official_modules():
    source = os.environ.get("LOKI_SRC")
    if not source or not (Path(source) / "loki" / "align.py").is_file():
        sys.exit("Set LOKI_SRC to the src/ folder of a checkout of the official Loki repository (it holds loki/).")
    sys.path.insert(0, source)
    import loki.align
    import loki.annotate
    import loki.decompose
    import loki.predex
    import loki.preprocess
    import loki.retrieve
    import loki.utils

    return loki


def timed(function, *args, **kwargs):
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - start


def row(task: str, difference: float, official_s: float, omiclip_s: float, note: str = "") -> dict:
    print(f"{task:<48}{difference:>12.2e}{official_s:>12.2f}{omiclip_s:>11.2f}  {note}", flush=True)
    return {"task": task, "max_abs_difference": float(difference), "official_s": official_s, "omiclip_s": omiclip_s,
            "note": note}  # fmt: skip


def sentences(loki, her2st: Path) -> dict:
    table = oc.datasets.her2st("A1", her2st, image=False).tables["table"]
    from omiclip._housekeeping import housekeeping_genes

    housekeeping = pd.DataFrame({"genesymbol": sorted(housekeeping_genes())})  # the official list's symbols
    official, official_s = timed(loki.preprocess.generate_gene_df, table, housekeeping, todense=True)
    ours, omiclip_s = timed(oc.pp.gene_sentences, table, copy=True)
    equal = (ours.obs["gene_sentence"].to_numpy() == official["label"].to_numpy()).mean()
    padded = oc.pp.gene_sentences(table, pad=True, copy=True).obs["gene_sentence"].to_numpy()
    note = f"{equal:.1%} of sentences equal ({(padded == official['label'].to_numpy()).mean():.1%} with pad=True)"
    return row("pp.gene_sentences (HER2ST A1)", 1 - equal, official_s, omiclip_s, note)


def align(loki, her2st: Path) -> dict:
    sys.path.insert(0, str(Path(__file__).parent))
    from _align_methods import joint_pca

    target = oc.datasets.her2st("A1", her2st, image=False).tables["table"]
    source = oc.datasets.her2st("A2", her2st, image=False).tables["table"]
    joint_pca(source, target, n_comps=20)
    target_xy, source_xy = (np.asarray(t.obsm["spatial"], dtype=np.float64) for t in (target, source))

    def official():
        # the notebooks' layout: embedding CSVs are dimensions × spots
        pcs, _ = loki.utils.get_pca_by_fit(target.obsm["X_pca"].T, source.obsm["X_pca"].T)
        image = np.zeros((8, 8, 3), dtype=np.uint8)  # only warped; the coordinates do not depend on it
        return loki.align.align_tissue(target_xy, source_xy, pcs, image)

    (cpd_xy, rigid_xy, _), official_s = timed(official)
    # The official code assumes both sections in one unit; omiclip converts the source when both tables give
    # microns_per_unit (HER2ST: A2's pixels are 0.13% smaller than A1's). Compared without that information:
    units = [table.uns.pop("microns_per_unit") for table in (source, target)]
    ours, omiclip_s = timed(oc.tl.align, source, target, use_rep="X_pca", progress=False, device="cpu", copy=True)
    difference = max(
        np.abs(ours.obsm["spatial_aligned_nonrigid"] - cpd_xy).max(),
        np.abs(ours.obsm["spatial_aligned"] - rigid_xy).max(),
    )
    for table, microns in zip((source, target), units, strict=True):
        table.uns["microns_per_unit"] = microns
    converted = oc.tl.align(source, target, use_rep="X_pca", progress=False, device="cpu", copy=True)
    params = ours.uns["omiclip"]["align"]["spatial_aligned"]
    note = (
        f"{source.n_obs}→{target.n_obs} spots, {params['iterations']} iterations, extent {np.ptp(target_xy):.0f} px; "
        f"with the units converted: rigid differs by {np.abs(converted.obsm['spatial_aligned'] - rigid_xy).max():.2f} px"
    )
    return row("tl.align (HER2ST A2→A1, joint PCA)", difference, official_s, omiclip_s, note)


def decompose(loki) -> dict:
    import scanpy as sc

    section = oc.datasets.synthetic_tissue(size_um=1500, image=False).tables["table"]
    reference = oc.datasets.synthetic_reference(n_cells=600, size_um=1500)
    genes = section.var_names.intersection(reference.var_names)
    both = AnnData(np.vstack([section[:, genes].X.toarray(), reference[:, genes].X.toarray()]).astype(np.float32))
    sc.pp.normalize_total(both, target_sum=1e4)
    sc.pp.log1p(both)
    sc.pp.pca(both, n_comps=32, random_state=0)
    section.obsm["X_omiclip_image"] = both.obsm["X_pca"][: section.n_obs]
    reference.obsm["X_omiclip_text"] = both.obsm["X_pca"][section.n_obs :]
    types = list(reference.obs["cell_type"].cat.categories)

    def official():
        sc_ad = AnnData(reference.obsm["X_omiclip_text"].copy(), obs=reference.obs.copy())
        st_ad = AnnData(section.obsm["X_omiclip_image"].copy(), obs=section.obs[[]].copy())
        return loki.decompose.cell_type_decompose(
            sc_ad, st_ad, cell_type_col="cell_type", NMS_mode=True, major_types=types
        )

    st_ad, official_s = timed(official)
    ours, omiclip_s = timed(
        oc.tl.decompose, section, reference, nms=True, keep_mapping=True, device="cpu", progress=False, copy=True
    )
    # NMS_mode rescales tangram_ct_pred in place; its NMS result is st_ad.obs, the raw map is gone
    official_nms = np.nan_to_num(st_ad.obs[types].to_numpy(dtype=np.float64))  # 0/0 of a type without spread
    ours_nms = ours.obsm["omiclip_proportions_nms"][types].to_numpy()
    on_proportions = non_maximum_suppression(ours.obsm["omiclip_proportions"][types].to_numpy())
    note = (
        f"{section.n_obs} spots, {reference.n_obs} cells, {len(types)} types; kept types differ from the official on "
        f"{((ours_nms > 0) != (official_nms > 0)).any(axis=1).mean():.1%} of spots; with nms_on='proportions' on "
        f"{((on_proportions > 0) != (official_nms > 0)).any(axis=1).mean():.1%}"
    )
    nms = np.abs(ours_nms - official_nms).max()
    return row("tl.decompose nms=True (synthetic, 1000 epochs)", nms, official_s, omiclip_s, note)


def annotate_retrieve_predex(loki) -> list[dict]:
    import torch

    rng = np.random.default_rng(0)

    def unit(x):
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)

    images = unit(rng.normal(size=(2000, 768)) + 0.05)
    texts = unit(rng.normal(size=(5000, 768)) + 0.05)
    query = AnnData(obs=pd.DataFrame(index=[f"q{i}" for i in range(len(images))]))
    query.obsm["X_omiclip_image"] = images
    rows = []

    classes = [f"class{i}" for i in range(8)]
    references = pd.DataFrame(texts[:8], index=classes)

    def official_markers():
        return np.stack(
            [loki.annotate.annotate_with_marker_genes(np.array(classes), image, texts[:8])[0] for image in images]
        )

    official, official_s = timed(official_markers)
    ours, omiclip_s = timed(oc.tl.annotate, query, references, copy=True)
    rows.append(row("tl.annotate (marker genes)", np.abs(ours.obsm["omiclip_annotation_scores"].to_numpy() - official).max(),
                    official_s, omiclip_s, "per-image argmax equal: "
                    f"{(ours.obs['omiclip_annotation'].to_numpy() == np.array(classes)[official.argmax(1)]).all()}"))  # fmt: skip

    def official_bulk():
        return np.stack([
            loki.annotate.annotate_with_bulk(torch.as_tensor(images), torch.as_tensor(texts[i]), tensor=True)[0].numpy()
            for i in range(8)
        ], axis=1)  # fmt: skip

    official, official_s = timed(official_bulk)
    ours, omiclip_s = timed(oc.tl.annotate, query, references, temperature=1.0, copy=True)
    rows.append(row("tl.annotate temperature=1 (bulk, tensor=True)",
                    np.abs(ours.obsm["omiclip_annotation_scores"].to_numpy() - official).max(), official_s, omiclip_s,
                    f"scores ~{official.mean():.1e}"))  # fmt: skip

    expression = rng.poisson(3.0, (len(texts), 300)).astype(np.float32)
    bank = AnnData(
        expression,
        obs=pd.DataFrame({"img_idx": np.arange(len(texts))}, index=[f"r{i}" for i in range(len(texts))]),
        var=pd.DataFrame(index=[f"g{i}" for i in range(300)]),
    )
    bank.obsm["X_omiclip_text"] = texts

    def official_retrieve():
        text = torch.as_tensor(texts)
        return np.array(
            [loki.retrieve.retrieve_st_by_image(torch.as_tensor(image)[None], text, bank.obs) for image in images]
        )

    official, official_s = timed(official_retrieve)
    ours, omiclip_s = timed(oc.tl.retrieve, query, bank, progress=False, copy=True)
    rows.append(row("tl.retrieve (k=3)", np.abs(ours.obsm["omiclip_retrieved"] - official).max(), official_s, omiclip_s,
                    f"{len(images)} queries, {len(texts)} references"))  # fmt: skip

    official, official_s = timed(lambda: loki.predex.predict_st_gene_expr(images @ texts.T, expression))
    ours, omiclip_s = timed(oc.tl.predex, query, bank, genes=list(bank.var_names), progress=False)
    rows.append(row("tl.predex", np.abs(ours.X - official).max(), official_s, omiclip_s,
                    f"expression ~{expression.mean():.1f}; float32 both"))  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--her2st",
        type=Path,
        default=Path(os.environ.get("OMICLIP_HER2ST", "../shared/data/her2st")),
        help="HER2ST folder",
    )
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "official_parity.json")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    loki = official_modules()
    rows = []
    print(f"{'task':<48}{'max |diff|':>12}{'official s':>12}{'omiclip s':>11}  note")
    with threadpool_limits(args.threads):
        import torch

        torch.set_num_threads(args.threads)
        if args.her2st.is_dir():
            rows += [sentences(loki, args.her2st), align(loki, args.her2st)]
        else:
            print(f"no HER2ST data at {args.her2st}: gene sentences and align skipped")
        rows.append(decompose(loki))
        rows += annotate_retrieve_predex(loki)
    print(f"{'task':<48}{'max |diff|':>12}{'official s':>12}{'omiclip s':>11}  note")
    for r in rows:
        print(
            f"{r['task']:<48}{r['max_abs_difference']:>12.2e}{r['official_s']:>12.2f}{r['omiclip_s']:>11.2f}  {r['note']}"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    cpu = platform.processor() or platform.machine()
    args.out.write_text(json.dumps({"cpu": cpu, "threads": args.threads, "rows": rows}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
