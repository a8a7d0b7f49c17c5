# %% [markdown]
# # Decompose spots and H&E tiles into cell types
#
# **Loki Decompose** (Chen et al., *Nature Methods* 2025, Results "Loki Decompose…" and Methods "Loki Decompose",
# equations 12–14) maps a labelled single-cell reference onto spatial observations in the shared embedding space.
# Cells are embedded with the text encoder (their gene sentences); spots with the text encoder (ST mode) or their H&E
# tiles with the image encoder (image mode). A Tangram-style mapping (cluster mode, uniform density prior) is
# optimised so that the mapped cell-type embeddings match each spot's embedding, and it is turned into per-spot
# proportions that sum to 1 (`oc.tl.decompose` documents the conversion).
#
# **About the numbers.** The model is `omiclip-tiny` trained from scratch for a few minutes on one synthetic
# section, not the official OmiCLIP; the synthetic truth lets us score the result.

# %%
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import scanpy as sc

import omiclip as oc

sc.settings.verbosity = "info"  # omiclip logs each step and what it wrote where
plt.rcParams["figure.dpi"] = 80
MODELS = Path("tutorial_models")  # written by the fine-tuning tutorial


def finetuned(name, sections):
    """The model the fine-tuning tutorial saved as `name`, or the same model trained again (same data and seed)."""
    path = MODELS / f"{name}.pt"
    if path.is_file():
        return oc.models.load(path)
    MODELS.mkdir(exist_ok=True)
    sections = sections()
    for sdata in sections:
        oc.pp.gene_sentences(sdata)
    return oc.tl.finetune(
        sections, model="omiclip-tiny", epochs=10, lr=5e-4, seed=0, drop_last=False, save=path, progress=False
    )


# %% [markdown]
# ## Data: a section, a single-cell reference and a model
#
# Section 1 of the synthetic tissue (its true cell-type proportions per spot are in `.obsm["true_proportions"]`),
# a 1,500-cell reference of the same tissue measured on another "platform", and the model fine-tuned on section 0.

# %%
spots = oc.datasets.synthetic_tissue(section=1, size_um=2000, um_per_px=2.0, seed=0)
reference = oc.datasets.synthetic_reference(n_cells=1500, size_um=2000, seed=0)
model = finetuned(
    "synthetic", lambda: [oc.datasets.synthetic_tissue(section=0, size_um=2000, um_per_px=2.0, seed=0)]
)
oc.pp.gene_sentences(spots)
oc.pp.gene_sentences(reference)
oc.tl.embed(spots, modality="text", model=model, progress=False)
oc.tl.embed(spots, modality="image", model=model, progress=False)
oc.tl.embed(reference, modality="text", model=model, progress=False)
reference.obs["cell_type"].value_counts()

# %% [markdown]
# ## Decompose: ST mode and image mode
#
# ST mode maps cells onto the spots' transcriptome embeddings; image mode onto their H&E tile embeddings (the
# default `use_rep`). Each writes a DataFrame of proportions (rows sum to 1) to `.obsm`.

# %%
oc.tl.decompose(spots, reference, use_rep="X_omiclip_text", key_added="proportions_st", progress=False)
oc.tl.decompose(spots, reference, progress=False)  # image mode -> obsm["omiclip_proportions"]
table = spots.tables["table"]
table.obsm["omiclip_proportions"].head()

# %% [markdown]
# ## How close to the truth?
#
# Per cell type: Pearson r between estimated and true proportions across spots, and the Jensen–Shannon divergence
# of the cell type's distribution over the spots (`oc.metrics`). Shuffling the reference's labels gives the floor.

# %%
truth = table.obsm["true_proportions"]


def scores(estimate):
    estimate = estimate[truth.columns].to_numpy()
    return pd.DataFrame(
        {
            "pearson": oc.metrics.pearson(estimate, truth.to_numpy()),
            "js": oc.metrics.js_divergence(estimate, truth.to_numpy()),
        },
        index=truth.columns,
    )


shuffled = reference.copy()
shuffled.obs["cell_type"] = np.random.default_rng(0).permutation(shuffled.obs["cell_type"].to_numpy())
floor = oc.tl.decompose(spots, shuffled, use_rep="X_omiclip_text", key_added="shuffled", copy=True, progress=False)
summary = pd.DataFrame(
    {
        "ST mode": scores(table.obsm["proportions_st"]).mean(),
        "image mode": scores(table.obsm["omiclip_proportions"]).mean(),
        "ST mode, shuffled labels": scores(floor.tables["table"].obsm["shuffled"]).mean(),
    }
).T
summary.round(3)

# %% [markdown]
# ## Maps: estimate beside the truth
#
# `oc.pl.proportions` draws one panel per cell type, each estimate followed by its ground truth on the same colour
# scale; the estimate's title carries the Pearson r.

# %%
oc.pl.proportions(spots, color=list(truth.columns[:4]), key="proportions_st", truth_key="true_proportions")

# %% [markdown]
# Both modes recover the cell-type maps well above the shuffled-label floor. Image mode is weaker than ST mode here:
# the tiny model saw one section of pairs. `docs/benchmarks.md` ("Decompose") compares with Tangram and NNLS on
# expression, which win on this synthetic tissue whose spots are exact linear mixtures of the reference's programs.
