# %% [markdown]
# # Real Visium outputs, as Space Ranger writes them
#
# Users start from a Space Ranger folder, not from a prepared object. This tutorial reads two real outputs with
# the readers scverse provides, spatialdata-io and scanpy (omiclip has none of its own: `pip install
# "omiclip[io]"`), and runs them through gene sentences, both embeddings and plots with no workaround. Along the
# way omiclip says what it takes from the data (the physical scale, the image) and warns where the data spoils
# the result:
#
# - a Space Ranger 1.x output (scanpy's Visium test data: 100 spots, 100 genes), whose hires PNG is an all-black
#   placeholder and whose only real H&E is the 600 px lowres image;
# - a Space Ranger 2.x CytAssist mouse section (2,898 spots) with only the mtx matrix, which neither reader takes:
#   a few scanpy lines assemble it.
#
# Neither has a full-resolution H&E, so the tiles are coarse; the warnings say by how much. See
# [Vendor data](../vendor_data.md) for Visium HD, Xenium, sopa and LazySlide.
#
# **About the numbers.** The embeddings come from `omiclip-tiny` trained from scratch on synthetic tissue for a
# few minutes, not from the official OmiCLIP weights; the reading, tiling and warnings are the same for both.

# %%
import json
import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import scanpy as sc
import spatialdata_io

import omiclip as oc

sc.settings.verbosity = "info"  # omiclip logs each step and what it wrote where
plt.rcParams["figure.dpi"] = 80
MODELS = Path("tutorial_models")  # written by the fine-tuning tutorial
VISIUM = Path(os.environ.get("OMICLIP_VISIUM", "../../../shared/data/visium"))  # not part of omiclip
V1, CYTASSIST = VISIUM / "scanpy_v1_1.0.0", VISIUM / "cytassist_mouse_sr2"
print("Space Ranger outputs", "found" if V1.is_dir() and CYTASSIST.is_dir() else f"not found in {VISIUM}")

# %% [markdown]
# The model: the one the fine-tuning tutorial saved, or the same one trained again (same data and seed).

# %%
path = MODELS / "synthetic.pt"
if path.is_file():
    model = oc.models.load(path)
else:
    MODELS.mkdir(exist_ok=True)
    train = oc.datasets.synthetic_tissue(size_um=3000, um_per_px=2.0, seed=0)
    oc.pp.gene_sentences(train)
    model = oc.tl.finetune(
        train, model="omiclip-tiny", epochs=10, lr=5e-4, seed=0, drop_last=False, save=path, progress=False
    )

# %% [markdown]
# ## Space Ranger 1.x, read with spatialdata-io
#
# `spatialdata_io.visium` gives the spots as circles in full-resolution pixels and both images with their
# transformations. omiclip takes the physical scale from the circles (Visium spots are 55 µm across) and, of the
# two images, the finer one that covers the spots.

# %%
sdata = spatialdata_io.visium(V1, dataset_id="V1")
sdata

# %% [markdown]
# This output names its genes by Ensembl IDs only (`var_names` and `gene_ids` alike; it is scanpy's small test
# output), while OmiCLIP reads gene symbols. `oc.pp.gene_sentences` refuses such names, rather than writing
# sentences of IDs the model cannot read, and says how to give it symbols:

# %%
try:
    oc.pp.gene_sentences(sdata)
except ValueError as error:
    print(error)

# %% [markdown]
# The image side needs no symbols:

# %%
oc.tl.embed(sdata, modality="image", model=model, progress=False)

# %% [markdown]
# The image embedding ran, and the warning says why it is worthless here: the hires image it chose (the finer
# one) is a placeholder, all its tiles one flat colour. The lowres image is real but coarse, and omiclip says by
# how much: a 55 µm spot is 4 pixels wide there, against the ~17 pixels of the ~3.3 µm/px tiles OmiCLIP was trained
# on. It names the sharper hires image only as a likely placeholder (its tiles are one flat colour), not as the way
# out: this output has no usable image at the model's resolution.

# %%
oc.tl.embed(sdata, modality="image", model=model, image_key="V1_lowres_image", progress=False)

# %% [markdown]
# The tiles of both images, as the model sees them before its own resize to 224 px:

# %%
hires = oc.pp.tiles(sdata).to_array()
lowres = oc.pp.tiles(sdata, image_key="V1_lowres_image").to_array()
fig, axes = plt.subplots(2, 6, figsize=(9, 3.4))
for row, (name, tiles) in zip(axes, [("hires", hires), ("lowres", lowres)], strict=True):
    for ax, i in zip(row, np.linspace(0, len(tiles) - 1, 6).astype(int), strict=True):
        ax.imshow(tiles[i])
        ax.set_axis_off()
    row[0].set_title(name, loc="left")
plt.show()

# %% [markdown]
# The image embedding of every spot, coloured by its first three principal components:

# %%
oc.pl.embedding_rgb(sdata, use_rep="X_omiclip_image", title="lowres H&E tiles")

# %% [markdown]
# ## The same output, read with scanpy
#
# `sc.read_visium` gives scanpy's Visium AnnData; the same calls take it. The spot diameter in its scale factors
# gives the scale, and `hires` is taken when there is one, with the same warning (and the same Ensembl IDs, so
# no sentences).

# %%
adata = sc.read_visium(V1)
adata.var_names_make_unique()
oc.tl.embed(adata, modality="image", model=model, progress=False)

# %% [markdown]
# ## Space Ranger 2.x CytAssist, assembled with scanpy
#
# This output has the matrix only as mtx (no `filtered_feature_bc_matrix.h5`), positions with a header, and a
# lowres H&E but no hires. Neither reader takes it; five lines put it into scanpy's Visium layout.

# %%
adata = sc.read_10x_mtx(CYTASSIST / "filtered_feature_bc_matrix")
positions = pd.read_csv(CYTASSIST / "spatial" / "tissue_positions.csv", index_col="barcode")
adata.obs = adata.obs.join(positions)
adata.obsm["spatial"] = adata.obs[["pxl_col_in_fullres", "pxl_row_in_fullres"]].to_numpy(float)
adata.uns["spatial"] = {
    "cytassist": {
        "images": {"lowres": plt.imread(CYTASSIST / "spatial" / "tissue_lowres_image.png")},
        "scalefactors": json.loads((CYTASSIST / "spatial" / "scalefactors_json.json").read_text()),
    }
}
adata

# %%
oc.pp.gene_sentences(adata)
oc.tl.embed(adata, modality="text", model=model, progress=False)
oc.tl.embed(adata, modality="image", model=model, progress=False)

# %% [markdown]
# Only the lowres image exists, so it is taken, with the warning that its tiles are upsampled. Both embeddings on
# the section:

# %%
fig, axes = plt.subplots(1, 2, figsize=(10, 4.6))
oc.pl.embedding_rgb(adata, use_rep="X_omiclip_text", ax=axes[0], title="gene sentences", show=False)
oc.pl.embedding_rgb(adata, use_rep="X_omiclip_image", ax=axes[1], title="lowres H&E tiles", show=False)
plt.show()
