"""The end-to-end demo on synthetic tissue: what ``make demo`` runs."""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import numpy as np

from omiclip._validate import check_int


def run_demo(out: str | Path = "omiclip_demo", *, size_um: float = 3000.0, epochs: int = 10, seed: int = 0) -> dict:
    """Simulate two serial sections, fine-tune omiclip-tiny on the first, embed both, evaluate on the second.

    Returns the summary printed by ``python -m omiclip demo``; writes both sections (with embeddings) as
    zarr and a figure into ``out``.
    """
    import omiclip as oc
    from omiclip.io._paths import check_writable

    out = check_writable(out, folder=True)
    check_int("epochs", epochs, min=1)
    timings = {}
    tic = time.perf_counter()
    # simulating checks size_um and seed: the output folder is made only once they are known to be good
    sections = [oc.datasets.synthetic_tissue(section=k, seed=seed, size_um=size_um) for k in (0, 1)]
    out.mkdir(parents=True, exist_ok=True)
    for sdata in sections:
        oc.pp.gene_sentences(sdata)
    timings["simulate + gene sentences"] = time.perf_counter() - tic

    untrained = oc.models.load("omiclip-tiny", seed=seed)
    tic = time.perf_counter()
    before = _retrieval(sections[1], untrained)
    timings["embed section 1 (untrained)"] = time.perf_counter() - tic

    tic = time.perf_counter()
    # from scratch a tiny model needs a far larger learning rate than the official 5e-6 fine-tunes
    tuned = oc.tl.finetune(
        sections[0], model=untrained, epochs=epochs, lr=5e-4, seed=seed, save=out / "omiclip-tiny-finetuned.pt"
    )
    timings["fine-tune on section 0"] = time.perf_counter() - tic

    tic = time.perf_counter()
    after = _retrieval(sections[1], tuned)
    for modality in ("text", "image"):
        oc.tl.embed(sections[0], modality=modality, model=tuned, progress=False)
    timings["embed both sections"] = time.perf_counter() - tic

    tic = time.perf_counter()
    paths = []
    for k, sdata in enumerate(sections):
        path = out / f"synthetic_section{k}.zarr"
        with warnings.catch_warnings():  # zarr announces a future default on every array it writes
            warnings.filterwarnings("ignore", message="zarr v3 autosharding")
            sdata.write(path, overwrite=True)
        paths.append(str(path))
    figure = _figure(sections[1], out / "section1_embeddings.png")
    timings["write zarr + figure"] = time.perf_counter() - tic

    first, second = (s.tables["table"] for s in sections)
    return {
        "spots per section": [first.n_obs, second.n_obs],
        "genes": first.n_vars,
        "image size (px)": list(sections[0].images["he"]["scale0"]["image"].shape[1:]),
        "median expressed genes per sentence": float(np.median(first.obs["gene_sentence_n_expressed"])),
        "median genes read by the tokenizer": float(np.median(first.obs["gene_sentence_n_in_context"])),
        "fine-tuning loss (first, last epoch)": [round(tuned.history[0], 3), round(tuned.history[-1], 3)],
        "section 1 image->text retrieval, untrained": before,
        "section 1 image->text retrieval, fine-tuned on section 0": after,
        "random retrieval": {"recall@1": round(1 / second.n_obs, 4), "recall@5%": 0.05, "recall@10%": 0.1},
        "seconds": {k: round(v, 1) for k, v in timings.items()},
        "written": [*paths, str(out / "omiclip-tiny-finetuned.pt"), str(figure)],
    }


def _retrieval(sdata, model) -> dict:
    """Embed both modalities and score image->text retrieval among the section's spots."""
    import omiclip as oc

    for modality in ("text", "image"):
        oc.tl.embed(sdata, modality=modality, model=model, progress=False)
    table = sdata.tables["table"]
    image, text = table.obsm["X_omiclip_image"], table.obsm["X_omiclip_text"]
    return {
        f"recall@{k}": round(oc.metrics.recall_at_k(image, text, v), 4) for k, v in [(1, 1), ("5%", 0.05), ("10%", 0.1)]
    }


def _figure(sdata, path: Path) -> Path:
    """H&E, true domains and the first three PCs (as RGB) of both embeddings, over the section."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    import omiclip as oc

    table = sdata.tables["table"]
    xy = table.obsm["spatial"]
    image = sdata.images["he"]
    thumb = image[list(image.children)[-1]]["image"].values.transpose(1, 2, 0)
    extent = (0, sdata.tables["table"].uns["synthetic"]["size_um"]) * 2
    fig, axes = plt.subplots(1, 4, figsize=(16, 4.4))
    axes[0].imshow(thumb, extent=(extent[0], extent[1], extent[1], extent[0]))
    axes[0].set_title("H&E (synthetic section 1)")
    codes = table.obs["domain"].cat.codes
    axes[1].scatter(*xy.T, c=codes, cmap="tab10", s=8, vmin=0, vmax=9)
    axes[1].set_title("true domains")
    for ax, key, title in (
        (axes[2], "X_omiclip_image", "image embedding"),
        (axes[3], "X_omiclip_text", "text embedding"),
    ):
        ax.scatter(*xy.T, c=oc.pl.pcs_as_rgb(table.obsm[key]), s=8)
        ax.set_title(f"{title} (PC1-3 as RGB)")
    for ax in axes:
        ax.set_aspect("equal")
        ax.set_xlim(extent[0], extent[1])
        ax.set_ylim(extent[1], extent[0])
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
