"""omiclip's defaults against the official Loki algorithms, restated here from the paper's Methods and from what
the official code does (../shared/REFERENCE.md), on small inputs with random embeddings.

The restatements are deliberately plain (dense NumPy, loops where the official code loops) and written for this
file: they are the specification the defaults must meet, to float tolerance. tangram-sc and pycpd are the
references where they apply. ``benchmarks/official_parity.py`` runs the official code itself.
"""

from __future__ import annotations

import inspect

import numpy as np
import pandas as pd
import pytest
import torch
from anndata import AnnData

import omiclip as oc
from omiclip._housekeeping import housekeeping_genes


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


# ---------------------------------------------------------------------------------------------------------------
# Gene sentences (official generate_gene_df)
# ---------------------------------------------------------------------------------------------------------------


def official_sentences(X: np.ndarray, var_names: list[str], n: int = 50) -> list[str]:
    """Drop names with '.' or '-' and housekeeping genes; per row the n largest values, ties and zero-count
    fillers in var order (pandas ``nlargest``, keep='first'), joined by spaces."""
    drop = housekeeping_genes()
    keep = [i for i, g in enumerate(var_names) if "." not in g and "-" not in g and g not in drop]
    sentences = []
    for row in X[:, keep]:
        order = sorted(range(len(keep)), key=lambda j: (-row[j], j))[:n]
        sentences.append(" ".join(var_names[keep[j]] for j in order))
    return sentences


def _expression(n_obs: int, n_genes: int, density: float, seed: int) -> tuple[np.ndarray, list[str]]:
    rng = np.random.default_rng(seed)
    counts = rng.poisson(2.0, (n_obs, n_genes)).astype(np.float32) * (rng.random((n_obs, n_genes)) < density)
    names = [f"G{i}" for i in range(n_genes)]
    names[3], names[7], names[11] = "MT-CO1", "ENSG0001.5", "GAPDH"  # '-', '.', housekeeping
    names[15], names[16] = "ACTB", "B2M"
    return counts, names


def test_gene_sentences_exclusions_ranking_and_ties():
    counts, names = _expression(12, 200, density=0.9, seed=0)  # every row has well over 50 expressed genes
    adata = AnnData(counts, var=pd.DataFrame(index=names))
    oc.pp.gene_sentences(adata)
    assert adata.obs["gene_sentence"].tolist() == official_sentences(counts, names)


@pytest.mark.xfail(
    inspect.signature(oc.pp.gene_sentences).parameters["pad"].default is False,
    reason="needs branch sentences (official zero-count padding as the `pad` default of pp.gene_sentences)",
    strict=True,
)
def test_gene_sentences_padding_with_zero_count_genes():
    counts, names = _expression(12, 200, density=0.1, seed=1)  # ~20 expressed genes per row: padded to 50
    adata = AnnData(counts, var=pd.DataFrame(index=names))
    oc.pp.gene_sentences(adata)
    assert adata.obs["gene_sentence"].tolist() == official_sentences(counts, names)


# ---------------------------------------------------------------------------------------------------------------
# Align (official get_pca_by_fit + align_tissue with its modified pycpd low-rank CPD)
# ---------------------------------------------------------------------------------------------------------------


def official_point_clouds(target_xy, source_xy, target_emb, source_emb):
    """PCA(3) fitted on the target, both projected; the PCs min–max scaled over all 3 columns of both clouds;
    each section's coordinates min–max scaled on their own (one min, one max over both axes); [x, y, PC1, PC2]."""
    from sklearn.decomposition import PCA

    pca = PCA(n_components=3, svd_solver="full").fit(target_emb)
    pcs = np.concatenate([pca.transform(target_emb), pca.transform(source_emb)])
    pcs = (pcs - pcs.min()) / (pcs.max() - pcs.min())
    target = np.c_[(target_xy - target_xy.min()) / np.ptp(target_xy), pcs[: len(target_xy), :2]]
    source = np.c_[(source_xy - source_xy.min()) / np.ptp(source_xy), pcs[len(target_xy) :, :2]]
    return target, source


def official_low_rank_cpd(X, Y, *, alpha=0.5, beta=2.0, n_eig=100, tol=1e-9):
    """Loki's DeformableRegistration(low_rank=True, w=0): CPD (Myronenko & Song 2010, eq. 2-7 of the paper) with
    the n_eig eigenpairs of largest |λ| of the exact kernel; only the first two columns move (W[:, 2:] = 0);
    iterations until |Δσ²| <= tol. Returns the moved source and the number of iterations."""
    M, D = Y.shape
    N = len(X)
    sigma2 = ((X[None, :, :] - Y[:, None, :]) ** 2).sum() / (D * M * N)  # eq. 2
    G = np.exp(-((Y[:, None, :] - Y[None, :, :]) ** 2).sum(2) / (2 * beta**2))  # eq. 3
    eigenvalues, eigenvectors = np.linalg.eigh(G)
    top = np.argsort(np.abs(eigenvalues))[::-1][:n_eig]
    S, Q = eigenvalues[top], eigenvectors[:, top]
    TY, iterations, change = Y.copy(), 0, np.inf
    while change > tol:
        # E-step (eq. 4 with w = 0); column sums floored at float64's eps as the official code does
        P = np.exp(-((X[None, :, :] - TY[:, None, :]) ** 2).sum(2) / (2 * sigma2))
        P = P / np.clip(P.sum(0, keepdims=True), np.finfo(np.float64).eps, None)
        P1, Pt1, PX = P.sum(1), P.sum(0), P @ X
        # M-step (eq. 5) with G = Q S Qᵀ through the Woodbury identity
        reg = alpha * sigma2
        F = PX - P1[:, None] * Y
        inner = reg * np.diag(1 / S) + Q.T @ (P1[:, None] * Q)
        W = (F - (P1[:, None] * Q) @ np.linalg.solve(inner, Q.T @ F)) / reg
        W[:, 2:] = 0  # only the coordinates move
        TY = Y + Q @ (S[:, None] * (Q.T @ W))
        # eq. 7
        new_sigma2 = (Pt1 @ (X**2).sum(1) - 2 * (PX * TY).sum() + P1 @ (TY**2).sum(1)) / (P1.sum() * D)
        if new_sigma2 <= 0:
            new_sigma2 = tol / 10
        change, sigma2, iterations = abs(new_sigma2 - sigma2), new_sigma2, iterations + 1
    return TY, iterations


def official_rigid(source_xy, cpd_xy):
    """Kabsch rotation + translation from the source onto its CPD result, reflections guarded."""
    source_centre, cpd_centre = source_xy.mean(0), cpd_xy.mean(0)
    u, _, vt = np.linalg.svd((source_xy - source_centre).T @ (cpd_xy - cpd_centre))
    rotation = vt.T @ u.T
    if np.linalg.det(rotation) < 0:
        vt[-1] *= -1
        rotation = vt.T @ u.T
    return source_xy @ rotation.T + (cpd_centre - rotation @ source_centre)


def official_align(target_xy, source_xy, target_emb, source_emb):
    target, source = official_point_clouds(target_xy, source_xy, target_emb, source_emb)
    moved, iterations = official_low_rank_cpd(target, source)
    cpd_xy = moved[:, :2] * np.ptp(target_xy) + target_xy.min()
    return cpd_xy, official_rigid(source_xy, cpd_xy), iterations


@pytest.fixture(scope="module")
def sections():
    """Two small sections in pixels: the source a rotated, shifted, slightly bent copy with noisy embeddings."""
    rng = np.random.default_rng(3)
    target_xy = np.stack(np.meshgrid(np.arange(12.0), np.arange(11.0)), -1).reshape(-1, 2) * 30 + 100
    target_emb = np.c_[np.sin(target_xy / 90), np.cos(target_xy / 70), rng.normal(0, 0.3, (len(target_xy), 12))]
    angle = np.deg2rad(12)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    keep = rng.random(len(target_xy)) < 0.85
    source_xy = (target_xy[keep] - 250) @ rotation.T + 280 + 8 * np.sin(target_xy[keep] / 60)
    source_emb = target_emb[keep] + rng.normal(0, 0.1, (keep.sum(), target_emb.shape[1]))
    target = AnnData(obs=pd.DataFrame(index=[f"t{i}" for i in range(len(target_xy))]))
    source = AnnData(obs=pd.DataFrame(index=[f"s{i}" for i in range(keep.sum())]))
    target.obsm["spatial"], target.obsm["X_omiclip_text"] = target_xy, _unit(target_emb)
    source.obsm["spatial"], source.obsm["X_omiclip_text"] = source_xy, _unit(source_emb)
    return source, target


def test_align_defaults_are_the_official_align_tissue(sections):
    source, target = sections
    cpd_xy, rigid_xy, iterations = official_align(
        target.obsm["spatial"],
        source.obsm["spatial"],
        target.obsm["X_omiclip_text"].astype(np.float64),
        source.obsm["X_omiclip_text"].astype(np.float64),
    )
    result = oc.tl.align(source, target, progress=False, device="cpu", copy=True)
    params = result.uns["omiclip"]["align"]["spatial_aligned"]
    assert params["iterations"] == iterations and params["converged"]
    np.testing.assert_allclose(result.obsm["spatial_aligned_nonrigid"], cpd_xy, atol=1e-6 * np.ptp(cpd_xy))
    np.testing.assert_allclose(result.obsm["spatial_aligned"], rigid_xy, atol=1e-6 * np.ptp(rigid_xy))


def test_point_clouds_scale_three_pcs_and_each_section_on_its_own(sections):
    from omiclip._core.registration import point_clouds

    source, target = sections
    emb_s, emb_t = (a.obsm["X_omiclip_text"].astype(np.float64) for a in (source, target))
    ours_source, ours_target, _ = point_clouds(source.obsm["spatial"], target.obsm["spatial"], emb_s, emb_t)
    official_target, official_source = official_point_clouds(
        target.obsm["spatial"], source.obsm["spatial"], emb_t, emb_s
    )
    np.testing.assert_allclose(ours_source, official_source, atol=1e-9)
    np.testing.assert_allclose(ours_target, official_target, atol=1e-9)


def test_cpd_with_the_full_kernel_is_pycpd(sections):
    """With as many eigenvectors as points the low-rank kernel is the exact one: pycpd 2.0's full CPD."""
    pycpd = pytest.importorskip("pycpd")
    from omiclip._core.cpd import CPDOptions, nonrigid_cpd

    source, target = sections
    emb_s, emb_t = (a.obsm["X_omiclip_text"].astype(np.float64) for a in (source, target))
    official_target, official_source = official_point_clouds(
        target.obsm["spatial"], source.obsm["spatial"], emb_t, emb_s
    )

    class CoordinatesMove(pycpd.DeformableRegistration):  # Loki's one change to pycpd: W[:, 2:] = 0
        def transform_point_cloud(self, Y=None):
            self.W[:, 2:] = 0
            return super().transform_point_cloud(Y)

    reference = CoordinatesMove(
        X=official_target, Y=official_source, alpha=0.5, beta=2, w=0, max_iterations=10_000, tolerance=1e-9
    )
    moved, _ = reference.register()
    ours = nonrigid_cpd(official_source, official_target, CPDOptions(n_eig=len(official_source)))
    assert ours.iterations == reference.iteration
    np.testing.assert_allclose(ours.moved, moved[:, :2], atol=1e-7)


def test_kernel_cut_off_is_the_official_float64_one():
    """A target point ~7σ from every source point still pulls (float64 eps floor), also in a float32 E-step."""
    from omiclip._core.cpd import _expectation

    sigma2 = 1.0
    source = torch.zeros((1, 2), dtype=torch.float32)
    target = torch.tensor([[7.0, 0.0], [0.0, 0.5]], dtype=torch.float32)  # exp(-24.5) ≈ 2e-11: < float32 eps
    P1, Pt1, _ = _expectation(target, source, sigma2, 0.0, 1024)
    official = np.exp(-24.5) / max(np.exp(-24.5), np.finfo(np.float64).eps)  # 1: the column sum is above eps
    assert Pt1[0].item() == pytest.approx(official, rel=1e-4)
    assert P1[0].item() == pytest.approx(2.0, rel=1e-4)


# ---------------------------------------------------------------------------------------------------------------
# Decompose (official cell_type_decompose: tangram-sc 1.0.4 in cluster mode, then NMS_mode)
# ---------------------------------------------------------------------------------------------------------------


def official_nms(ct_pred: pd.DataFrame, low: float = 5, high: float = 95) -> pd.DataFrame:
    """normalize_percentile on each type's column, then keep every value equal to its row's maximum."""
    scaled = ct_pred.copy()
    for column in scaled:
        lo, hi = np.percentile(scaled[column], low), np.percentile(scaled[column], high)
        scaled[column] = (np.clip(scaled[column], lo, hi) - lo) / (hi - lo)
    return scaled.where(scaled.eq(scaled.max(axis=1), axis=0), other=0)


def test_decompose_defaults_are_the_official_tangram_run():
    tangram = pytest.importorskip("tangram")
    rng = np.random.default_rng(5)
    types = ["B", "A", "D", "C"]  # categories not in size order; sizes all differ (Tangram sorts by size)
    sizes = {"B": 7, "A": 19, "D": 11, "C": 3}
    profiles = rng.normal(0, 1, (4, 24))
    profiles[:, :4] = -np.abs(profiles[:, :4])  # dimensions never positive: Tangram's gene filter drops them
    labels = np.repeat(np.arange(4), [sizes[t] for t in types])
    cells = profiles[labels] + rng.normal(0, 0.3, (len(labels), 24))
    cells[:, :4] = -np.abs(cells[:, :4])
    mixing = rng.dirichlet(np.ones(4) * 0.5, 60)
    spots = mixing @ profiles + rng.normal(0, 0.1, (60, 24))
    reference = AnnData(obs=pd.DataFrame({"cell_type": pd.Categorical([types[i] for i in labels], categories=types)}))
    reference.obs_names = [f"c{i}" for i in range(len(labels))]
    reference.obsm["X_omiclip_text"] = cells.astype(np.float32)
    spatial = AnnData(obs=pd.DataFrame(index=[f"s{i}" for i in range(60)]))
    spatial.obsm["X_omiclip_image"] = spots.astype(np.float32)
    oc.tl.decompose(spatial, reference, epochs=200, nms=True, keep_mapping=True, progress=False, device="cpu")

    sc_ad = AnnData(cells.astype(np.float32), obs=reference.obs.copy())
    st_ad = AnnData(spots.astype(np.float32), obs=spatial.obs.copy())
    tangram.pp_adatas(sc_ad, st_ad, genes=None)
    ad_map = tangram.map_cells_to_space(
        sc_ad, st_ad, mode="clusters", cluster_label="cell_type", device="cpu", scale=False,
        density_prior="uniform", random_state=10, num_epochs=200, verbose=False,
    )  # fmt: skip
    tangram.project_cell_annotations(ad_map, st_ad, annotation="cell_type")
    ct_pred = st_ad.obsm["tangram_ct_pred"][types]
    assert (
        len(st_ad.uns["training_genes"]) == spatial.uns["omiclip"]["decompose"]["omiclip_proportions"]["n_dims"] <= 20
    )
    np.testing.assert_allclose(spatial.obsm["omiclip_proportions_mapping"][types], ct_pred, atol=2e-5)
    # the notebooks' proportions: the cluster-to-spot map times cell-type counts, normalised per spot
    per_spot = ct_pred * np.array([sizes[t] for t in types])
    np.testing.assert_allclose(
        spatial.obsm["omiclip_proportions"][types], per_spot.div(per_spot.sum(axis=1), axis=0), atol=2e-5
    )
    nms = spatial.obsm["omiclip_proportions_nms"][types]
    expected = official_nms(ct_pred)
    assert ((nms > 0) == (expected > 0)).all().all()
    np.testing.assert_allclose(nms, expected, atol=1e-4)


# ---------------------------------------------------------------------------------------------------------------
# Annotate (official annotate_with_marker_genes, annotate_with_bulk(tensor=True); PLIP fusion, paper eq. 8-11)
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture
def tiles():
    rng = np.random.default_rng(7)
    adata = AnnData(obs=pd.DataFrame(index=[f"p{i}" for i in range(40)]))
    adata.obsm["X_omiclip_image"] = _unit(rng.normal(size=(40, 16)))
    return adata


def test_annotate_markers_are_the_official_sentences_and_argmax(tiles, tiny):
    markers = {"tumor": ["TP53", "EPCAM", "KRAS", "NOT_A_GENE"], "stroma": ["COL1A1", "ACTA2"], "immune": ["PTPRC"]}
    tiles.obsm["X_omiclip_image"] = _unit(np.random.default_rng(8).normal(size=(40, tiny.embed_dim)))
    oc.tl.annotate(tiles, markers, model=tiny)
    classes = np.array(list(markers))
    text = tiny.encode_text([" ".join(genes) for genes in markers.values()])  # the marker list as given
    for image, label, scores in zip(
        tiles.obsm["X_omiclip_image"],
        tiles.obs["omiclip_annotation"],
        tiles.obsm["omiclip_annotation_scores"].values,
        strict=True,
    ):  # the official function takes one image at a time
        dot_similarity = image @ text.T
        np.testing.assert_allclose(scores, dot_similarity, atol=1e-5)
        assert label == classes[dot_similarity.argmax()]


def test_annotate_temperature_is_the_official_bulk_heat_map(tiles):
    rng = np.random.default_rng(9)
    bulk = pd.DataFrame(_unit(rng.normal(size=(2, 16))), index=["tumour bulk", "adipose bulk"])
    oc.tl.annotate(tiles, bulk, temperature=0.05)
    images = torch.as_tensor(tiles.obsm["X_omiclip_image"])
    for name, vector in bulk.iterrows():  # annotate_with_bulk(img, bulk, normalize=True, T=0.05, tensor=True)
        features = torch.as_tensor(vector.to_numpy())
        similarity = torch.nn.CosineSimilarity(dim=1, eps=1e-6)(images, features.unsqueeze(0))
        similarity = similarity / torch.sqrt(torch.tensor([features.shape[0]], dtype=torch.float)) / 0.05
        expected = torch.softmax(similarity.unsqueeze(0), dim=-1)[0].numpy()
        np.testing.assert_allclose(tiles.obsm["omiclip_annotation_scores"][name], expected, rtol=1e-4)


def test_annotate_plip_fusion_is_eq_8_to_11(tiles):
    rng = np.random.default_rng(10)
    references = pd.DataFrame(_unit(rng.normal(size=(3, 16))), index=["ADI", "TUM", "STR"])
    plip = rng.normal(size=(40, 3))
    oc.tl.annotate(tiles, references, other_scores=plip)
    loki = tiles.obsm["X_omiclip_image"] @ references.to_numpy().T
    combined = np.zeros_like(loki)
    for i in range(len(loki)):  # per image I, over texts T
        for scores in (loki[i], plip[i]):
            combined[i] += (scores - scores.min()) / (scores.max() - scores.min())  # eq. 8, 9, summed as eq. 10
    np.testing.assert_allclose(tiles.obsm["omiclip_annotation_scores"], combined, atol=1e-6)
    assert tiles.obs["omiclip_annotation"].tolist() == list(references.index[combined.argmax(axis=1)])  # eq. 11


# ---------------------------------------------------------------------------------------------------------------
# Retrieve and PredEx (official retrieve_st_by_image, predict_st_gene_expr)
# ---------------------------------------------------------------------------------------------------------------


def test_retrieve_default_is_the_official_top_3():
    rng = np.random.default_rng(11)
    query = AnnData(obs=pd.DataFrame(index=[f"q{i}" for i in range(15)]))
    reference = AnnData(
        obs=pd.DataFrame({"img_idx": [f"img{i}.png" for i in range(80)]}, index=[f"r{i}" for i in range(80)])
    )
    query.obsm["X_omiclip_image"] = _unit(rng.normal(size=(15, 16)))
    reference.obsm["X_omiclip_text"] = _unit(rng.normal(size=(80, 16)))
    oc.tl.retrieve(query, reference, progress=False)
    text = torch.as_tensor(reference.obsm["X_omiclip_text"])
    for image, found in zip(query.obsm["X_omiclip_image"], query.obsm["omiclip_retrieved"], strict=True):
        _, indices = torch.topk((torch.as_tensor(image)[None] @ text.T).squeeze(0), 3)
        official = [reference.obs["img_idx"].to_numpy()[i] for i in indices]
        assert list(reference.obs["img_idx"].to_numpy()[found]) == official


def test_predex_default_is_the_official_raw_weighted_mean():
    rng = np.random.default_rng(12)
    query = AnnData(obs=pd.DataFrame(index=[f"q{i}" for i in range(20)]))
    query.obsm["X_omiclip_image"] = _unit(rng.normal(size=(20, 16)) + 1.0)  # mostly positive similarities
    expression = rng.poisson(3.0, (50, 30)).astype(np.float32)
    reference = AnnData(expression, var=pd.DataFrame(index=[f"g{i}" for i in range(30)]))
    reference.obsm["X_omiclip_text"] = _unit(rng.normal(size=(50, 16)) + 1.0)
    predicted = oc.tl.predex(query, reference, genes=list(reference.var_names), progress=False)
    similarity = query.obsm["X_omiclip_image"].astype(np.float64) @ reference.obsm["X_omiclip_text"].T
    official = (similarity @ expression) / similarity.sum(axis=1, keepdims=True)  # eq. 16, raw weights
    np.testing.assert_allclose(predicted.X, official, rtol=1e-4)


# ---------------------------------------------------------------------------------------------------------------
# Metrics (paper eq. 17-33)
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture
def pairs():
    rng = np.random.default_rng(13)
    x = rng.random((25, 4))
    return x, x + rng.normal(0, 0.2, x.shape)


def test_calinski_harabasz_is_eq_17_to_19():
    rng = np.random.default_rng(14)
    points = rng.normal(size=(30, 3)) + np.repeat(np.eye(3) * 3, 10, axis=0)
    labels = np.repeat([0, 1, 2], 10)
    centre = points.mean(0)
    bcss = sum(10 * np.sum((points[labels == c].mean(0) - centre) ** 2) for c in range(3))
    wcss = sum(np.sum((points[labels == c] - points[labels == c].mean(0)) ** 2) for c in range(3))
    assert oc.metrics.calinski_harabasz(points, labels) == pytest.approx((bcss / 2) / (wcss / 27))


def test_pearson_is_eq_20(pairs):
    x, y = pairs
    n = len(x)
    for j in range(x.shape[1]):
        a, b = x[:, j], y[:, j]
        r = (n * (a * b).sum() - a.sum() * b.sum()) / (
            np.sqrt(n * (a**2).sum() - a.sum() ** 2) * np.sqrt(n * (b**2).sum() - b.sum() ** 2)
        )
        assert oc.metrics.pearson(x, y)[j] == pytest.approx(r)


def test_kendall_tau_is_eq_21_with_ties():
    a = np.array([1, 2, 2, 3, 4, 4, 5, 1])
    b = np.array([2, 1, 3, 3, 5, 4, 4, 1])
    concordant = discordant = ties_a = ties_b = 0
    for i in range(len(a)):
        for j in range(i + 1, len(a)):
            da, db = np.sign(a[i] - a[j]), np.sign(b[i] - b[j])
            if da == 0 and db == 0:
                continue
            if da == 0:
                ties_a += 1
            elif db == 0:
                ties_b += 1
            elif da == db:
                concordant += 1
            else:
                discordant += 1
    tau = (concordant - discordant) / np.sqrt((concordant + discordant + ties_a) * (concordant + discordant + ties_b))
    assert oc.metrics.kendall_tau(a, b) == pytest.approx(tau)


def test_js_divergence_is_eq_22_to_24(pairs):
    x, y = pairs
    for j in range(x.shape[1]):
        p, q = x[:, j] / x[:, j].sum(), y[:, j].clip(0) / y[:, j].clip(0).sum()
        m = (p + q) / 2  # eq. 22

        def kl(a, b):  # eq. 23, base 2: the paper's range [0, 1]
            return sum(ai * np.log2(ai / bi) for ai, bi in zip(a, b, strict=True) if ai > 0)

        assert oc.metrics.js_divergence(x, y.clip(0))[j] == pytest.approx(0.5 * kl(p, m) + 0.5 * kl(q, m))


def test_ssim_is_eq_25_of_the_benchmark(pairs):
    """Li et al. 2022 (the SSIM of the deconvolution benchmark): each map / its max; global statistics; k1 0.01,
    k2 0.03, L = 1; l·c·s with C3 = C2 / 2, which is eq. 25."""
    x, y = pairs
    for j in range(x.shape[1]):
        a, b = x[:, j] / x[:, j].max(), y[:, j] / y[:, j].max()
        c1, c2 = 0.01**2, 0.03**2
        sa, sb = np.sqrt(((a - a.mean()) ** 2).mean()), np.sqrt(((b - b.mean()) ** 2).mean())
        sab = ((a - a.mean()) * (b - b.mean())).mean()
        luminance = (2 * a.mean() * b.mean() + c1) / (a.mean() ** 2 + b.mean() ** 2 + c1)
        contrast = (2 * sa * sb + c2) / (sa**2 + sb**2 + c2)
        structure = (sab + c2 / 2) / (sa * sb + c2 / 2)
        assert oc.metrics.ssim(x[:, j], y[:, j]) == pytest.approx(luminance * contrast * structure, rel=1e-12)
        assert oc.metrics.ssim(x[:, j].reshape(5, 5), y[:, j].reshape(5, 5)) == pytest.approx(
            luminance * contrast * structure, rel=1e-12
        )


def test_mse(pairs):
    x, y = pairs
    assert oc.metrics.mse(x, y) == pytest.approx(np.sum((x - y) ** 2) / x.size)


def test_impact_score_is_eq_26_to_30():
    js_per_type = np.array([[0.2, 0.3], [0.4, 0.5], [0.3, 0.1]])  # methods × cell types
    ssim_per_type = np.array([[0.7, 0.5], [0.2, 0.4], [0.5, 0.6]])
    js_m, ssim_m = js_per_type.mean(1), ssim_per_type.mean(1)  # eq. 26, 27
    z_ssim = (ssim_m - ssim_m.mean()) / ssim_m.std()  # eq. 28
    z_js = -(js_m - js_m.mean()) / js_m.std()  # eq. 29
    np.testing.assert_allclose(oc.metrics.impact_score(js_m, ssim_m), (z_js + z_ssim) / 2)  # eq. 30


def test_weighted_f1():
    truth = np.array(["a", "a", "a", "b", "b", "c", "c", "c", "c", "c"])
    predicted = np.array(["a", "b", "a", "b", "c", "c", "c", "a", "c", "b"])
    total = 0.0
    for label in np.unique(truth):
        tp = np.sum((predicted == label) & (truth == label))
        precision = tp / max(np.sum(predicted == label), 1)
        recall = tp / np.sum(truth == label)
        f1 = 0 if tp == 0 else 2 * precision * recall / (precision + recall)
        total += f1 * np.sum(truth == label) / len(truth)
    assert oc.metrics.weighted_f1(truth, predicted) == pytest.approx(total)


def test_recall_at_k():
    rng = np.random.default_rng(15)
    images = _unit(rng.normal(size=(40, 8)))
    texts = _unit(images + rng.normal(0, 0.6, images.shape))
    similarity = images @ texts.T
    for k in (1, 5, 0.1):
        top = int(np.ceil(k * 40)) if k < 1 else k
        hits = [i in np.argsort(-similarity[i], kind="stable")[:top] for i in range(40)]
        assert oc.metrics.recall_at_k(images, texts, k) == pytest.approx(np.mean(hits))
