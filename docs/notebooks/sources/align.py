# %% [markdown]
# # Align serial sections
#
# **Loki Align** (Chen et al., *Nature Methods* 2025, Results "Loki Align aligns ST-to-ST and H&E image-to-ST
# data" and Methods "Loki Align") registers one section onto another. Each section becomes a point cloud of spots
# `[x, y, PC1, PC2]`: the coordinates plus the first two principal components of an OmiCLIP embedding. Coherent
# point drift (CPD) then moves only the coordinates, so the embedding decides which spots correspond; a rigid fit
# (rotation and translation) of the result is the official output. The embedding can be the transcriptome's
# (ST to ST), the tiles' against the transcriptome's (H&E image to ST), or any other shared representation, such
# as an expression PCA.
#
# This tutorial aligns a synthetic pair with a known warp, and real serial HER2+ sections.
#
# **About the numbers.** The embeddings come from `omiclip-tiny` trained from scratch for a few minutes, not from
# the official OmiCLIP weights; the alignment algorithm is the same for both.

# %%
import os
from pathlib import Path

import anndata as ad
import matplotlib.pyplot as plt
import numpy as np
import scanpy as sc
from scipy.spatial import cKDTree

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


def joint_pca(tables, n_comps=20):
    """An expression PCA shared by several sections (log-normalised counts of their common genes) in obsm['X_pca']."""
    both = ad.concat(tables, join="inner", index_unique="-")
    sc.pp.normalize_total(both, target_sum=1e4)
    sc.pp.log1p(both)
    sc.pp.pca(both, n_comps=n_comps, random_state=0)
    bounds = np.cumsum([0] + [t.n_obs for t in tables])
    for table, start, stop in zip(tables, bounds[:-1], bounds[1:], strict=True):
        table.obsm["X_pca"] = both.obsm["X_pca"][start:stop]


# %% [markdown]
# ## Synthetic sections with a known warp
#
# Section 1 is section 0's tissue rotated, shifted, bent by a smooth warp and missing a fragment;
# `obsm["true_spatial"]` holds where each of its spots truly lies in section 0's coordinates, so the error of an
# alignment is a distance in µm (spots are 55 µm wide, 100 µm apart). Section 0 is the target.

# %%
target, source = (oc.datasets.synthetic_tissue(section=k, size_um=2000, um_per_px=2.0, seed=0) for k in (0, 1))
for sdata in (target, source):
    oc.pp.gene_sentences(sdata)
model = finetuned("synthetic", lambda: [target])  # fine-tuned on the target section, as the paper does by default
for sdata in (target, source):
    oc.tl.embed(sdata, modality="text", model=model, progress=False)
    oc.tl.embed(sdata, modality="image", model=model, progress=False)
src, tgt = source.tables["table"], target.tables["table"]
joint_pca([src, tgt])

# %% [markdown]
# Four versions of the same call: OmiCLIP transcriptome embeddings on both sides (ST to ST), the source's tile
# embeddings against the target's transcriptome embeddings (H&E image to ST), the paper's "CPD on PCA" baseline,
# and coordinates alone. `copy=True` returns the aligned table and leaves `source` as it is.


# %%
def error_um(xy):
    return np.linalg.norm(xy - src.obsm["true_spatial"], axis=1).mean()


runs = {
    "ST to ST (X_omiclip_text)": {"use_rep": "X_omiclip_text"},
    "H&E to ST (X_omiclip_image -> X_omiclip_text)": {"use_rep": "X_omiclip_image", "target_rep": "X_omiclip_text"},
    "H&E to ST, centred (center=True)": {"use_rep": "X_omiclip_image", "target_rep": "X_omiclip_text", "center": True},
    "expression PCA (X_pca)": {"use_rep": "X_pca"},
    "coordinates only": {"use_rep": None},
}
print(f"{'unaligned':<48}{error_um(src.obsm['spatial']):8.1f} µm")
print(f"{'':<48}{'rigid':>8}{'non-rigid':>11}")
aligned = {}
for label, kwargs in runs.items():
    aligned[label] = oc.tl.align(source, target, copy=True, progress=False, **kwargs).tables["table"]
    a = aligned[label].obsm
    print(f"{label:<48}{error_um(a['spatial_aligned']):8.1f}{error_um(a['spatial_aligned_nonrigid']):11.1f} µm")

# %% [markdown]
# What one call writes to the source table, and the transform it found:

# %%
result = aligned["ST to ST (X_omiclip_text)"]
print("obsm:", [k for k in result.obsm if k.startswith("spatial_aligned")])
step = result.uns["omiclip"]["align"]["spatial_aligned"]
print({k: step[k] for k in ("use_rep", "target_rep", "mode", "iterations", "converged")})
print("source -> target:\n", np.round(step["matrix"], 3))

# %%
fig, axes = plt.subplots(1, 3, figsize=(11, 3.8))
panels = [
    ("before", src.obsm["spatial"]),
    ("rigid (official output)", result.obsm["spatial_aligned"]),
    ("non-rigid (CPD)", result.obsm["spatial_aligned_nonrigid"]),
]
for ax, (title, xy) in zip(axes, panels, strict=True):
    ax.scatter(*tgt.obsm["spatial"].T, s=6, c="lightgrey", label="target (section 0)")
    ax.scatter(*xy.T, s=6, c="tab:red", label="source (section 1)")
    ax.set(title=title, aspect="equal", xticks=[], yticks=[])
    ax.invert_yaxis()
axes[0].legend(fontsize=7, markerscale=2, loc="upper center", bbox_to_anchor=(0.5, 0), ncols=2, frameon=False)
fig.tight_layout()

# %% [markdown]
# With a SpatialData source (and `copy=False`) every element of the source, its H&E image included, also gets a
# transformation to a new coordinate system `"aligned"` that overlays it on the target's `"global"` system.
#
# On this synthetic pair the rigid fit (the official output) brings the source from ~190 µm off to within about a
# quarter of a spot pitch of the truth, with the transcriptome embeddings or the expression PCA. The non-rigid
# CPD result is less accurate here: it also bends the section where the data do not ask for it, and with the tiny
# model's tile embeddings, which match their transcriptomes only loosely, it pulls spots to wrong places; the rigid
# fit on top of it is robust to that. Coordinates alone also get close here (35 µm), because the outline of this
# tissue is distinctive.
#
# For H&E to ST, `center=True` first moves the mean of the source's tile embeddings onto the mean of the target's
# transcriptome embeddings. A CLIP model keeps its image and text embeddings apart, and only x and y move in the
# CPD, so that offset would otherwise hold the two clouds apart; the default, `center=False`, is the official code
# (on 20 synthetic pairs: 64 µm instead of 42 µm, see the benchmarks page and the page of differences).

# %% [markdown]
# ## Serial HER2+ sections
#
# Sections C2, C3 and C4 of patient C (Andersson et al., *Nat. Commun.* 2021) are serial cuts of one tumour,
# measured with legacy ST (100 µm spots, 200 µm apart), each placed differently on its slide. Coordinates are
# pixels of each section's own H&E image; `uns["microns_per_unit"]`, set by `oc.datasets.her2st`, converts the
# source into the target's units. There is no ground truth, so we compare the expression of each source spot with
# that of the target spot it lands on, gene by gene (median Pearson correlation over the 100 genes most expressed
# in the target, across the source spots), before and after alignment. The model was fine-tuned on C2 and C3.

# %%
if HAVE_HER2ST:
    names = ["C2", "C3", "C4"]
    her2st = {name: oc.datasets.her2st(name, HER2ST) for name in names}
    for sdata in her2st.values():
        oc.pp.gene_sentences(sdata)
    model_her2st = finetuned("her2st_C2_C3", lambda: [her2st["C2"], her2st["C3"]])
    for sdata in her2st.values():
        oc.tl.embed(sdata, modality="text", model=model_her2st, progress=False)
        oc.tl.embed(sdata, modality="image", model=model_her2st, progress=False)
    tables = {name: sdata.tables["table"] for name, sdata in her2st.items()}
    joint_pca(list(tables.values()))
    c2, c3 = tables["C2"], tables["C3"]
    genes = c2.var_names.intersection(c3.var_names)
    top = genes[np.argsort(-np.asarray(c2[:, genes].X.mean(axis=0)).ravel())[:100]]

    def log_expression(table):
        return np.log1p(table[:, top].X.toarray() / np.asarray(table.X.sum(axis=1)) * 1e4)

    def agreement(xy):
        """Median per-gene PCC between the C3 spots and the C2 spots nearest to where they landed."""
        nearest = cKDTree(c2.obsm["spatial"]).query(xy)[1]
        return np.nanmedian(oc.metrics.pearson(log_expression(c3), log_expression(c2)[nearest]))

    print(f"{'C3 -> C2, median per-gene PCC':<48}{'rigid':>8}{'non-rigid':>11}")
    print(f"{'unaligned':<48}{agreement(c3.obsm['spatial']):8.3f}")
    her2st_runs = {
        "ST to ST (X_omiclip_text)": {"use_rep": "X_omiclip_text"},
        "H&E to ST (X_omiclip_image -> X_omiclip_text)": {"use_rep": "X_omiclip_image", "target_rep": "X_omiclip_text"},
        "H&E to ST, centred": {"use_rep": "X_omiclip_image", "target_rep": "X_omiclip_text", "center": True},
        "expression PCA (X_pca)": {"use_rep": "X_pca"},
        "coordinates only": {"use_rep": None},
    }
    for label, kwargs in her2st_runs.items():
        a = oc.tl.align(c3, c2, copy=True, progress=False, **kwargs).obsm
        print(f"{label:<48}{agreement(a['spatial_aligned']):8.3f}{agreement(a['spatial_aligned_nonrigid']):11.3f}")

# %% [markdown]
# `oc.tl.align_stack` aligns a whole stack into the coordinates of one section, here C2, each section onto its
# neighbour (`chain_neighbours=True`, better when the ends of a stack differ a lot). It writes into every section,
# and `z_spacing` adds a third coordinate; the true distance between these sections is not part of the data, so
# the value below (100 µm, in C2's pixels) only spreads them out for the picture.

# %%
if HAVE_HER2ST:
    px_per_um = c2.uns["her2st"]["px_per_um"]
    stack = [her2st[name] for name in names]
    oc.tl.align_stack(
        stack, reference=0, chain_neighbours=True, z_spacing=100 * px_per_um, use_rep="X_omiclip_text", progress=False
    )
    print("written to every section:", [k for k in c3.obsm if k.startswith("spatial_aligned")])
    fig = plt.figure(figsize=(12, 4))
    before = fig.add_subplot(1, 3, 1)
    after = fig.add_subplot(1, 3, 2)
    in3d = fig.add_subplot(1, 3, 3, projection="3d")
    for name in names:
        before.scatter(*tables[name].obsm["spatial"].T, s=8, alpha=0.7, label=name)
        after.scatter(*tables[name].obsm["spatial_aligned"].T, s=8, alpha=0.7)
        in3d.scatter(*tables[name].obsm["spatial_aligned_3d"].T, s=4, alpha=0.7)
    for ax, title in ((before, "each in its own image's pixels"), (after, "aligned into C2's coordinates")):
        ax.set(title=title, aspect="equal", xticks=[], yticks=[])
        ax.invert_yaxis()
    before.legend(fontsize=8, markerscale=2)
    in3d.set(title="stack", xticks=[], yticks=[], zticks=[])
    in3d.invert_yaxis()
    fig.tight_layout()

# %% [markdown]
# Aligned, the sections' spots meet spots of similar expression: the per-gene agreement rises from about zero
# (unaligned, the sections sit in different places of their slides) to a clearly positive value. The paper's median
# PCCs (0.6–0.9) were measured on Visium sections with the pretrained model and are not comparable with these
# legacy-ST sections and a tiny model.
