# %% [markdown]
# # Annotate tissue with marker genes or bulk RNA-seq
#
# **Loki Annotate** (Chen et al., *Nature Methods* 2025, Results "Loki Annotate deciphers H&E images with bulk
# RNA-seq data" and "Loki Annotate annotates H&E images based on marker genes"; Methods "Loki Annotate") labels
# tissue by its similarity to references in the shared embedding space. A list of marker genes becomes one gene
# sentence per class, a bulk RNA-seq profile becomes a sentence as a spot does; both are embedded with the text
# encoder, and each H&E tile (or spot) takes the class whose embedding is most similar to its own. No labelled
# images are needed.
#
# **About the numbers.** The model is `omiclip-tiny` trained from scratch for a few minutes, not the official
# OmiCLIP, which was pretrained on 2.2 M pairs and is what makes zero-shot annotation work in the paper.

# %%
import os
from pathlib import Path

import anndata as ad
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import scanpy as sc

import omiclip as oc

sc.settings.verbosity = "info"  # omiclip logs each step and what it wrote where
plt.rcParams["figure.dpi"] = 80
MODELS = Path("tutorial_models")  # written by the fine-tuning tutorial
HER2ST = Path(os.environ.get("OMICLIP_HER2ST", "../../../shared/data/her2st"))  # not part of omiclip
HAVE_HER2ST = (HER2ST / "counts").is_dir()
print("HER2ST data", "found" if HAVE_HER2ST else "not found: the HER2ST part is skipped")


def finetuned(name, sections):
    """The model the fine-tuning tutorial saved as `name`, or the same model trained again (same data and seed)."""
    path = MODELS / f"{name}.pt"
    if path.is_file():
        return oc.models.load(path)
    MODELS.mkdir(exist_ok=True)
    sections = sections()  # the training sections, made only when needed
    for sdata in sections:
        oc.pp.gene_sentences(sdata)
    return oc.tl.finetune(
        sections, model="omiclip-tiny", epochs=10, lr=5e-4, seed=0, drop_last=False, save=path, progress=False
    )


def show_labels(ax, table, column, title, classes, size=6):
    """Spots coloured by label, one fixed colour per class across panels."""
    xy = table.obsm["spatial"]
    for k, label in enumerate(classes):
        inside = (table.obs[column] == label).to_numpy()
        ax.scatter(*xy[inside].T, s=size, color=f"C{k}", label=label)
    ax.set(title=title, aspect="equal", xticks=[], yticks=[])
    ax.invert_yaxis()


# %% [markdown]
# ## Synthetic tissue: marker genes
#
# The model was fine-tuned on section 0; we annotate the H&E tiles of section 1. Its domains are built from seven
# cell types with real marker genes; the two cancer domains (invasive and in situ) share their markers, so they
# form one class here.

# %%
train, test = (oc.datasets.synthetic_tissue(section=k, size_um=2000, um_per_px=2.0, seed=0) for k in (0, 1))
model = finetuned("synthetic", lambda: [train])
oc.tl.embed(test, modality="image", model=model, progress=False)
table = test.tables["table"]
table.obs["truth"] = table.obs["domain"].astype(str).replace({"invasive cancer": "cancer", "cancer in situ": "cancer"})

markers = {
    "cancer": ["EPCAM", "KRT8", "KRT18", "KRT19", "ERBB2", "GRB7", "CDH1", "MUC1"],
    "connective tissue": ["COL1A1", "COL1A2", "COL3A1", "DCN", "LUM", "FAP", "PDGFRA", "POSTN"],
    "immune infiltrate": ["CD3D", "CD2", "IL7R", "CCL5", "MS4A1", "CD79A", "IGKC", "JCHAIN"],
    "adipose tissue": ["ADIPOQ", "PLIN1", "LEP", "FABP4", "CIDEA", "LPL", "PLIN4", "CFD"],
}
oc.tl.annotate(test, markers, model=model)  # use_rep="X_omiclip_image": the tiles
table.obsm["omiclip_annotation_scores"].head(3)


# %%
def report(predicted):
    truth = table.obs["truth"]
    chance = (truth.value_counts(normalize=True) ** 2).sum()  # weighted F1 of guessing at the class frequencies
    majority = oc.metrics.weighted_f1(truth, [truth.value_counts().index[0]] * len(truth))
    f1 = oc.metrics.weighted_f1(truth, predicted.astype(str))
    print(f"weighted F1 {f1:.3f}  (frequency-matched guessing {chance:.3f}, majority class {majority:.3f})")


report(table.obs["omiclip_annotation"])
print(
    "written:",
    "obs['omiclip_annotation'],",
    "obsm['omiclip_annotation_scores'],",
    list(table.uns["omiclip"]["annotate"]["omiclip_annotation"]),
)

# %% [markdown]
# ## Synthetic tissue: bulk profiles
#
# Any expression profile can be a reference: here one pseudo-bulk sample per class, the summed counts of section
# 0's spots of that class (in practice, e.g. GTEx or TCGA samples of the tissue types). `oc.tl.annotate` turns
# each sample into a gene sentence and embeds it. `class_temperature=` reports a softmax over the classes instead of
# raw similarities (`temperature=` is the official bulk heat map: for each sample, a softmax over all observations).

# %%
spots = train.tables["table"]
classes = spots.obs["domain"].astype(str).replace({"invasive cancer": "cancer", "cancer in situ": "cancer"})
bulk = ad.AnnData(
    np.vstack([np.asarray(spots[(classes == c).to_numpy()].X.sum(axis=0)) for c in markers]),
    obs=pd.DataFrame(index=list(markers)),
    var=pd.DataFrame(index=spots.var_names),
)
oc.tl.annotate(test, bulk, model=model, class_temperature=0.05, key_added="bulk_annotation")
report(table.obs["bulk_annotation"])

# %% [markdown]
# Scores of two references (or of a second model, as the paper combines OmiCLIP with PLIP) can be fused with
# `other_scores=`: each set is min–max scaled per observation and the two are summed.

# %%
oc.tl.annotate(test, markers, model=model, other_scores=table.obsm["bulk_annotation_scores"], key_added="fused")
report(table.obs["fused"])

fig, axes = plt.subplots(1, 4, figsize=(14, 3.8))
show_labels(axes[0], table, "truth", "truth", list(markers))
show_labels(axes[1], table, "omiclip_annotation", "marker genes", list(markers))
show_labels(axes[2], table, "bulk_annotation", "pseudo-bulk profiles", list(markers))
xy = table.obsm["spatial"]
dots = axes[3].scatter(*xy.T, c=table.obsm["bulk_annotation_scores"]["cancer"], s=6, cmap="viridis")
axes[3].set(title="P(cancer), bulk profiles", aspect="equal", xticks=[], yticks=[])
axes[3].invert_yaxis()
fig.colorbar(dots, ax=axes[3], shrink=0.7)
axes[0].legend(fontsize=7, markerscale=2, loc="upper center", bbox_to_anchor=(0.5, 0), ncols=2, frameon=False)
fig.tight_layout()

# %% [markdown]
# The labels follow the true domains clearly above frequency-matched guessing, from a model that saw 314 tiles of
# another section and was never told about domains. Both references find adipose tissue and the cancer; the tiny
# model confuses connective tissue and the immune infiltrate with them.

# %% [markdown]
# ## HER2+ breast cancer: section A1 with a pathologist's labels
#
# Section A1 (Andersson et al., *Nat. Commun.* 2021) comes with a pathologist's label per spot, but its H&E image
# is not in the bundled data, so we annotate its spots by their transcriptome embeddings (`use_rep=
# "X_omiclip_text"`) against textbook marker genes of the labels. The model was fine-tuned on sections C2 and C3
# of another patient.

# %%
if HAVE_HER2ST:
    model_her2st = finetuned("her2st_C2_C3", lambda: [oc.datasets.her2st(n, HER2ST) for n in ("C2", "C3")])
    a1 = oc.datasets.her2st("A1", HER2ST)
    oc.pp.gene_sentences(a1)
    oc.tl.embed(a1, model=model_her2st, progress=False)
    her2st_markers = {
        "invasive cancer": ["ERBB2", "GRB7", "KRT19", "KRT8", "EPCAM", "MKI67"],
        "cancer in situ": ["KRT5", "KRT14", "ACTA2", "MYH11", "ERBB2", "KRT8"],
        "connective tissue": ["COL1A1", "COL1A2", "COL3A1", "DCN", "LUM", "FBLN1"],
        "adipose tissue": ["ADIPOQ", "PLIN1", "FABP4", "LEP", "CFD", "LPL"],
        "immune infiltrate": ["PTPRC", "CD3D", "CD2", "MS4A1", "CD79A", "IGKC"],
    }
    oc.tl.annotate(a1, her2st_markers, model=model_her2st, use_rep="X_omiclip_text")
    t = a1.tables["table"]
    labelled = t.obs["label"].isin(list(her2st_markers)).to_numpy()
    truth, predicted = t.obs["label"][labelled].astype(str), t.obs["omiclip_annotation"][labelled].astype(str)
    majority = truth.value_counts().index[0]
    print(
        f"{labelled.sum()} labelled spots; weighted F1 {oc.metrics.weighted_f1(truth, predicted):.3f}, "
        f"always '{majority}' {oc.metrics.weighted_f1(truth, [majority] * len(truth)):.3f}"
    )
    print(pd.crosstab(truth, predicted))

# %%
if HAVE_HER2ST:
    t.obs["pathologist"] = t.obs["label"].where(labelled)
    fig, axes = plt.subplots(1, 2, figsize=(9, 4))
    show_labels(axes[0], t, "pathologist", "A1, pathologist", list(her2st_markers), size=25)
    show_labels(axes[1], t, "omiclip_annotation", "A1, marker genes (omiclip-tiny)", list(her2st_markers), size=25)
    fig.legend(*axes[0].get_legend_handles_labels(), loc="lower center", ncols=5, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.07, 1, 1))

# %% [markdown]
# On A1 the tiny model, trained from scratch on ~370 spots of another patient, calls most spots invasive cancer
# (and many others immune infiltrate), so its weighted F1 is about that of always answering the most frequent
# label; the benchmark in `docs/benchmarks.md` (longer training) lands below it. Marker-based annotation of real
# tissue relies on the pretrained OmiCLIP's text encoder, trained on 2.2 million gene sentences.
