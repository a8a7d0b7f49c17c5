"""The end-to-end demo on synthetic tissue: what ``make demo`` runs."""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import numpy as np


def run_demo(out: str | Path = "omiclip_demo", *, size_um: float = 3000.0, seed: int = 0) -> dict:
    """Simulate two serial sections, write gene sentences and text embeddings, save them, summarise.

    Returns the summary printed by ``python -m omiclip demo``.
    """
    import omiclip as oc

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    timings = {}
    tic = time.perf_counter()
    sections = [oc.datasets.synthetic_tissue(section=k, seed=seed, size_um=size_um) for k in (0, 1)]
    timings["simulate"] = time.perf_counter() - tic

    tic = time.perf_counter()
    model = oc.models.load("omiclip-tiny")
    for sdata in sections:
        oc.pp.gene_sentences(sdata)
        oc.tl.embed(sdata, model=model, progress=False)
    timings["sentences + text embeddings"] = time.perf_counter() - tic

    tic = time.perf_counter()
    paths = []
    for k, sdata in enumerate(sections):
        path = out / f"synthetic_section{k}.zarr"
        with warnings.catch_warnings():  # zarr announces a future default on every array it writes
            warnings.filterwarnings("ignore", message="zarr v3 autosharding")
            sdata.write(path, overwrite=True)
        paths.append(str(path))
    timings["write zarr"] = time.perf_counter() - tic

    first, second = (s.tables["table"] for s in sections)
    record = first.uns["omiclip"]["gene_sentences"]
    return {
        "spots per section": [first.n_obs, second.n_obs],
        "genes": first.n_vars,
        "image size (px)": list(sections[0].images["he"]["scale0"]["image"].shape[1:]),
        "median genes per sentence": float(np.median(record["n_genes_kept"])),
        "median genes read by the tokenizer": float(np.median(record["n_genes_in_context"])),
        "text embedding": list(first.obsm["X_omiclip_text"].shape),
        "same-domain match of nearest cross-section spot (text)": _domain_match(first, second),
        "chance level": _chance(first, second),
        "seconds": {k: round(v, 1) for k, v in timings.items()},
        "written": paths,
    }


def _domain_match(reference, query) -> float:
    """Fraction of query spots whose most similar reference spot (by text embedding) has the same domain."""
    nearest = np.argmax(query.obsm["X_omiclip_text"] @ reference.obsm["X_omiclip_text"].T, axis=1)
    return round(float((reference.obs["domain"].to_numpy()[nearest] == query.obs["domain"].to_numpy()).mean()), 3)


def _chance(reference, query) -> float:
    ref = reference.obs["domain"].value_counts(normalize=True)
    qry = query.obs["domain"].value_counts(normalize=True)
    return round(float((ref * qry.reindex(ref.index, fill_value=0)).sum()), 3)
