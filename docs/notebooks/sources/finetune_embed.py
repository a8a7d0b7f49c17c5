# %% [markdown]
# # Fine-tune and embed
#
# OmiCLIP puts an H&E tile and the transcriptome of the same spot into one embedding space: the image tower
# encodes the tile, the text tower encodes the spot's *gene sentence* (its top expressed gene symbols, highest
# first). It is trained contrastively, so that a spot's two embeddings are closer to each other than to those of
# the other spots in the batch (Chen et al., *Nature Methods* 2025, Methods "OmiCLIP model fine-tuning", eq. 1).
# Every Loki task starts from these embeddings, and the paper fine-tunes on the data at hand by default.
#
# This tutorial makes gene sentences, fine-tunes a model, embeds both modalities and checks that the embeddings
# found each other: on a synthetic section with known tissue domains, then on real HER2+ breast cancer sections.
#
# **About the numbers.** The official OmiCLIP weights (`coca_ViT-L-14`, trained on 2.2 M pairs) are not used
# here: this page trains `omiclip-tiny` (same CoCa family, 24 M parameters) *from scratch* on a few hundred
# spots for a few epochs, so that it runs on a laptop CPU in minutes. Expect a clear effect, far from the paper's
# performance. With the official checkpoint (see {doc}`../installation`), replace `"omiclip-tiny"` by
# `"omiclip"` and the learning rate by the official 5e-6.

# %%
import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import scanpy as sc

import omiclip as oc

sc.settings.verbosity = "info"  # omiclip logs each step and what it wrote where
plt.rcParams["figure.dpi"] = 80
MODELS = Path("tutorial_models")  # fine-tuned models, reused by the other tutorials
# HER2ST is not part of omiclip: point $OMICLIP_HER2ST at a folder of the public release (see oc.datasets.her2st)
HER2ST = Path(os.environ.get("OMICLIP_HER2ST", "../../../shared/data/her2st"))
HAVE_HER2ST = (HER2ST / "counts").is_dir()
print("HER2ST data", "found" if HAVE_HER2ST else "not found: the HER2ST part is skipped")

# %% [markdown]
# ## Synthetic tissue
#
# Two serial sections of one virtual breast tissue (2 mm × 2 mm, Visium-like 55 µm spots): section 0 to train
# on, section 1 (rotated, warped, a fragment missing) to test on. Both carry the true tissue domain of each spot.

# %%
sections = [oc.datasets.synthetic_tissue(section=k, size_um=2000, um_per_px=2.0, seed=0) for k in (0, 1)]
train, test = sections
for sdata in sections:
    oc.pp.gene_sentences(sdata)  # obs["gene_sentence"]: the top 50 expressed genes, highest first
print(train)

# %%
table = train.tables["table"]
print(table.obs["gene_sentence"].iloc[0][:200], "...")
print("expressed genes per sentence (median):", np.median(table.obs["gene_sentence_n_expressed"]))
print("genes that fit the 76-token context (median):", np.median(table.obs["gene_sentence_n_in_context"]))

# %% [markdown]
# The official tokenizer keeps 76 tokens, so only the first 20–25 genes of a sentence reach the model; omiclip keeps
# that behaviour and records the count per spot.
#
# Before training, a randomly initialised model cannot match a tile to its own transcriptome. Recall@K (the
# paper's retrieval metric) is the fraction of spots whose own gene sentence is among the top K% of all the
# section's sentences, ranked by similarity to the spot's tile; chance is K%.

# %%
untrained = oc.models.load("omiclip-tiny", seed=0)


def recall(sdata, model):
    """Embed both modalities of a section and score tile -> own gene sentence retrieval."""
    oc.tl.embed(sdata, modality="text", model=model, progress=False)  # obsm["X_omiclip_text"]
    oc.tl.embed(sdata, modality="image", model=model, progress=False)  # obsm["X_omiclip_image"]
    t = sdata.tables["table"]
    return {
        f"Recall@{k:.0%}": round(oc.metrics.recall_at_k(t.obsm["X_omiclip_image"], t.obsm["X_omiclip_text"], k), 3)
        for k in (0.05, 0.1)
    }


print("untrained, section 1:", recall(test, untrained))

# %% [markdown]
# `oc.tl.finetune` cuts one tile per spot (one spot diameter wide, at the ~3.3 µm/px resolution OmiCLIP was
# trained on), pairs it with the spot's sentence and trains with the official augmentations. A model trained from
# scratch needs a much larger learning rate than the official 5e-6. `save=` writes an OpenCLIP-format checkpoint
# after every epoch, loadable with `oc.models.load` and resumable with `resume=`.

# %%
MODELS.mkdir(exist_ok=True)
# from scratch on ~300 pairs every pair counts: train the last partial batch too (the official loader drops it,
# which here leaves out 58 pairs an epoch, and this tiny run then stalls at chance)
tuned = oc.tl.finetune(
    train, model=untrained, epochs=10, lr=5e-4, seed=0, drop_last=False, save=MODELS / "synthetic.pt", progress=False
)
print("loss per epoch:", np.round(tuned.history, 3))
print("section 1 after fine-tuning on section 0:", recall(test, tuned))

# %% [markdown]
# The model never saw section 1. What was written to its table:

# %%
t = test.tables["table"]
print("obsm:", list(t.obsm))
print("uns['omiclip']:", list(t.uns["omiclip"]))
embed_record = t.uns["omiclip"]["embed"]["X_omiclip_image"]
print({k: v for k, v in embed_record.items() if np.isscalar(v)})
print(t.obsm["X_omiclip_image"].shape, t.obsm["X_omiclip_image"].dtype)

# %% [markdown]
# Colouring each spot by the first three principal components of its embedding (as the paper's figures do) shows
# what the model tells apart on section 1: similar colours, similar embeddings.

# %%
fig, axes = plt.subplots(1, 3, figsize=(11, 3.8))
xy = t.obsm["spatial"]
for domain in t.obs["domain"].cat.categories:
    inside = (t.obs["domain"] == domain).to_numpy()
    axes[0].scatter(*xy[inside].T, s=6, label=domain)
axes[0].set(title="true domains", aspect="equal")
axes[0].invert_yaxis()
axes[0].legend(fontsize=7, markerscale=2, loc="upper center", bbox_to_anchor=(0.5, 0), ncols=2, frameon=False)
oc.pl.embedding_rgb(test, use_rep="X_omiclip_image", ax=axes[1], title="image embedding", show=False)
oc.pl.embedding_rgb(test, use_rep="X_omiclip_text", ax=axes[2], title="text embedding", show=False)
axes[0].set_xticks([])
axes[0].set_yticks([])
fig.tight_layout()

# %% [markdown]
# The Calinski–Harabasz score (the paper's measure of how well an embedding separates tissue types; higher is
# better) puts a number on it, here next to the same section embedded by the untrained model:

# %%
oc.tl.embed(test, modality="image", model=untrained, key_added="X_untrained_image", progress=False)
oc.tl.embed(test, modality="text", model=untrained, key_added="X_untrained_text", progress=False)
for label, key in (
    ("image, fine-tuned", "X_omiclip_image"),
    ("image, untrained", "X_untrained_image"),
    ("text, fine-tuned", "X_omiclip_text"),
    ("text, untrained", "X_untrained_text"),
):
    print(f"{label:<20}{oc.metrics.calinski_harabasz(t.obsm[key], t.obs['domain']):8.1f}")

# %% [markdown]
# Training turns the text tower from near-random into one that separates the domains. The image tower separated
# them before training, because the synthetic domains differ in colour and nuclear density, which even a random
# image network picks up; training reshapes it towards what the text tower can match. What fine-tuning adds above
# all is the link between the two towers, measured by the retrieval above: a tile now points to its own
# transcriptome.

# %% [markdown]
# ## HER2+ breast cancer (HER2ST)
#
# Sections C2, C3 and C4 of patient C of Andersson et al. (*Nat. Commun.* 2021): legacy Spatial Transcriptomics,
# 100 µm spots 200 µm apart, ~180 spots each, with H&E images. The data are not shipped with omiclip;
# `oc.datasets.her2st` reads a folder of the public release. We fine-tune on C2 + C3 and test on C4.

# %%
if HAVE_HER2ST:
    her2st = {name: oc.datasets.her2st(name, HER2ST) for name in ("C2", "C3", "C4")}
    for sdata in her2st.values():
        oc.pp.gene_sentences(sdata)
    c4 = her2st["C4"]
    print({name: s.tables["table"].n_obs for name, s in her2st.items()}, "spots")
    print("untrained, C4:", recall(c4, untrained))
    tuned_her2st = oc.tl.finetune(
        [her2st["C2"], her2st["C3"]],
        model="omiclip-tiny",
        epochs=10,
        lr=5e-4,
        seed=0,
        drop_last=False,
        save=MODELS / "her2st_C2_C3.pt",
        progress=False,
    )
    print("loss per epoch:", np.round(tuned_her2st.history, 3))
    print("fine-tuned on C2 + C3, C4:", recall(c4, tuned_her2st))

# %%
if HAVE_HER2ST:
    image = c4.images["he"]
    coarse = image[list(image.children)[-1]]["image"]
    height, width = image["scale0"]["image"].shape[1:]  # HER2ST coordinates are full-resolution pixels
    fig, axes = plt.subplots(1, 2, figsize=(8, 4))
    axes[0].imshow(coarse.values.transpose(1, 2, 0), extent=(0, width, height, 0))
    axes[0].set(title="C4, H&E", xticks=[], yticks=[])
    oc.pl.embedding_rgb(c4, use_rep="X_omiclip_image", ax=axes[1], title="C4, image embedding", show=False)
    axes[1].set(xlim=axes[0].get_xlim(), ylim=axes[0].get_ylim())
    fig.tight_layout()

# %% [markdown]
# On real tissue the tiny model, trained from scratch on ~370 pairs of two sections, retrieves a held-out
# section's transcriptomes only modestly above chance (5% and 10%); `docs/benchmarks.md` has the same experiment
# with 30 epochs on all three folds. The paper's retrieval figures come from the pretrained OmiCLIP, whose
# embeddings this page cannot reproduce without its weights.
