import matplotlib

matplotlib.use("Agg")

import inspect
import re
import warnings

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from anndata import AnnData
from matplotlib.colors import to_rgb

import omiclip as oc
from omiclip._anndata import working_copy
from omiclip.pl._embedding import principal_components


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _spots(n: int, seed: int = 0, dim: int = 8) -> AnnData:
    rng = np.random.default_rng(seed)
    adata = AnnData(obs=pd.DataFrame(index=[f"s{i}" for i in range(n)]))
    adata.obsm["spatial"] = rng.uniform(0, 1000, size=(n, 2))
    adata.obsm["X_omiclip_text"] = rng.normal(size=(n, dim)).astype(np.float32)
    return adata


def _patches(ax):
    """Centres and half-sizes of the patches squidpy drew (the last patch collection of the axes)."""
    collection = [c for c in ax.collections if type(c).__name__ == "PatchCollection"][-1]
    boxes = np.array([[*path.vertices.min(axis=0), *path.vertices.max(axis=0)] for path in collection.get_paths()])
    return collection, (boxes[:, :2] + boxes[:, 2:]) / 2, (boxes[:, 2:] - boxes[:, :2]) / 2


def ax_has_no_image(ax) -> bool:
    return len(ax.images) == 0


def _image_to_data(image, ax):
    """The affine from an AxesImage's own coordinates to the axes' data coordinates."""
    return image.get_transform() - ax.transData


def _rigid(xy: np.ndarray, degrees: float, shift) -> np.ndarray:
    angle = np.deg2rad(degrees)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    return xy @ rotation.T + np.asarray(shift)


def test_pcs_as_rgb_follows_the_main_axis():
    t = np.linspace(0, 1, 20)
    embedding = np.column_stack([t, 0.01 * np.sin(7 * t), np.zeros(20)])  # variance almost all along axis 0
    colours = oc.pl.pcs_as_rgb(embedding)
    assert colours.shape == (20, 3) and colours.min() >= 0 and colours.max() <= 1
    red = colours[:, 0]
    assert abs(np.corrcoef(red, t)[0, 1]) > 0.999  # PC1 is the ramp


def test_embedding_rgb_draws_every_observation(tmp_path):
    rng = np.random.default_rng(0)
    adata = AnnData(obs=pd.DataFrame(index=[f"s{i}" for i in range(30)]))
    adata.obsm["X_omiclip_image"] = rng.normal(size=(30, 8)).astype(np.float32)
    adata.obsm["spatial"] = rng.uniform(0, 100, size=(30, 2))
    ax = oc.pl.embedding_rgb(adata, save=tmp_path / "rgb.png", show=False)
    points = ax.collections[0]
    np.testing.assert_allclose(points.get_offsets(), adata.obsm["spatial"])
    np.testing.assert_allclose(
        points.get_facecolors()[:, :3], oc.pl.pcs_as_rgb(adata.obsm["X_omiclip_image"]), atol=1e-6
    )
    assert (tmp_path / "rgb.png").stat().st_size > 1000
    with pytest.raises(KeyError, match="Run `oc.tl.embed` first"):
        oc.pl.embedding_rgb(adata, use_rep="X_omiclip_text", show=False)


class TestAnnotation:
    def test_heat_maps_and_labels_over_the_image(self, section, tmp_path):
        table = section.tables["table"]
        table.obsm["X_omiclip_image"] = table.obsm["true_proportions"].to_numpy(dtype=np.float32)
        references = pd.DataFrame(np.eye(7)[[0, 1, 3]], index=["tumour", "stroma", "immune"])
        oc.tl.annotate(section, references)
        scores = table.obsm["omiclip_annotation_scores"]

        axes = oc.pl.annotation(section, image_key="he", save=tmp_path / "annotation.png", show=False)

        assert [ax.get_title() for ax in axes] == ["tumour", "stroma", "immune", "omiclip_annotation"]
        assert (tmp_path / "annotation.png").stat().st_size > 10_000
        for ax, reference in zip(axes[:3], scores.columns, strict=False):
            collection, centres, half = _patches(ax)
            np.testing.assert_allclose(centres, table.obsm["spatial"], atol=1e-6)
            np.testing.assert_allclose(half, 27.5, atol=1.0)  # 55 µm spots, as cut into tiles
            np.testing.assert_allclose(collection.get_array(), scores[reference])
            # one colour scale for every reference
            assert (collection.norm.vmin, collection.norm.vmax) == (scores.min().min(), scores.max().max())
            (image,) = ax.images  # the 600 px image at 2 µm per pixel spans 1200 µm
            np.testing.assert_allclose(
                _image_to_data(image, ax).transform([[0, 0], [600, 600]]), [[0, 0], [1200, 1200]], atol=1.0
            )
        labels = table.obs["omiclip_annotation"].to_numpy()
        colours = _patches(axes[3])[0].get_facecolors()[:, :3]
        for label in np.unique(labels):
            assert len(np.unique(colours[labels == label], axis=0)) == 1
        assert len(np.unique(colours, axis=0)) == len(np.unique(labels))

    def test_grid_tiles_are_squares(self, section):
        oc.pp.tiles(section, grid=True, tile_size_um=150)
        grid = section.tables["he_grid_table"]
        grid.obsm["omiclip_annotation_scores"] = pd.DataFrame(
            {"a": np.arange(grid.n_obs, dtype=float)}, index=grid.obs_names
        )
        grid.obs["omiclip_annotation"] = pd.Categorical(["a"] * grid.n_obs)
        (ax,) = oc.pl.annotation(section, table_key="he_grid_table", image_key="he", labels=False, show=False)
        collection, centres, half = _patches(ax)
        assert {len(path.vertices) for path in collection.get_paths()} == {5}  # closed rectangles, not circles
        np.testing.assert_allclose(centres, grid.obsm["spatial"], atol=1e-6)
        np.testing.assert_allclose(half, 75 / 2, atol=0.6)  # 150 µm tiles in 2 µm image pixels

    def test_missing_annotation_says_what_to_run(self, section):
        with pytest.raises(KeyError, match="Run `oc.tl.annotate` first"):
            oc.pl.annotation(section, show=False)


def test_proportions_beside_the_truth(section):
    table = section.tables["table"]
    truth = table.obsm["true_proportions"]
    rng = np.random.default_rng(0)
    estimate = truth + rng.uniform(0, 0.2, size=truth.shape)
    table.obsm["omiclip_proportions"] = estimate.div(estimate.sum(axis=1), axis=0)
    shown = list(truth.columns[:2])

    axes = oc.pl.proportions(section, color=shown, truth_key="true_proportions", image_key=None, show=False)

    assert len(axes) == 4
    for i, cell_type in enumerate(shown):
        predicted_ax, truth_ax = axes[2 * i], axes[2 * i + 1]
        r = np.corrcoef(table.obsm["omiclip_proportions"][cell_type], truth[cell_type])[0, 1]
        assert predicted_ax.get_title() == f"{cell_type} (PCC {r:.2f})"
        assert truth_ax.get_title() == f"{cell_type} (truth)"
        predicted, centres, half = _patches(predicted_ax)
        true = _patches(truth_ax)[0]
        np.testing.assert_allclose(true.get_array(), truth[cell_type])
        high = max(table.obsm["omiclip_proportions"][cell_type].max(), truth[cell_type].max())
        for collection in (predicted, true):  # estimate and truth share one scale
            assert (collection.norm.vmin, collection.norm.vmax) == (0.0, high)
        # no image: the 55 µm circles at their size (radius of the shapes), not filling their 100 µm pitch
        np.testing.assert_allclose(half, 27.5, atol=1e-6)
        assert ax_has_no_image(predicted_ax)
    with pytest.raises(KeyError, match="Run `oc.tl.decompose` first"):
        oc.pl.proportions(section, key="absent", show=False)
    with pytest.raises(KeyError, match="Unknown cell types"):
        oc.pl.proportions(section, color=["neuron"], show=False)


def test_visium_anndata_image_is_placed_by_its_scale_factor(section):
    table = section.tables["table"]
    adata = AnnData(obs=table.obs[[]].copy())
    adata.obsm["spatial"] = table.obsm["spatial"]  # full-resolution pixels of 1 µm
    adata.obsm["omiclip_proportions"] = table.obsm["true_proportions"]
    image = np.asarray(section.images["he"]["scale0"]["image"]).transpose(1, 2, 0)  # 2 µm per pixel
    scalefactors = {"tissue_hires_scalef": 0.5, "spot_diameter_fullres": 55.0}
    adata.uns["spatial"] = {"slide": {"images": {"hires": image}, "scalefactors": scalefactors}}

    (ax,) = oc.pl.proportions(adata, color="tumor", image_key="hires", show=False)

    (drawn,) = ax.images
    np.testing.assert_allclose(
        _image_to_data(drawn, ax).transform([[0, 0], [600, 600]]), [[0, 0], [1200, 1200]], atol=1.0
    )
    _, centres, half = _patches(ax)
    np.testing.assert_allclose(centres, adata.obsm["spatial"], atol=1e-6)
    np.testing.assert_allclose(half, 27.5, atol=1.0)


def test_predex_pairs_measured_with_predicted(section):
    table = section.tables["table"]
    genes = list(table.var_names[:2])
    rows = np.arange(0, table.n_obs, 2)  # a prediction for every other spot
    measured = table[rows, genes].X.toarray().astype(float)
    noisy = measured + np.random.default_rng(0).normal(scale=3.0, size=measured.shape)
    predicted = AnnData(noisy, obs=pd.DataFrame(index=table.obs_names[rows]), var=pd.DataFrame(index=genes))

    axes = oc.pl.predex(section, predicted, show=False)

    assert len(axes) == 4
    for i, gene in enumerate(genes):
        r = np.corrcoef(measured[:, i], noisy[:, i])[0, 1]
        assert axes[2 * i].get_title() == f"{gene} measured"
        assert axes[2 * i + 1].get_title() == f"{gene} predicted (PCC {r:.2f})"
        for ax, values in ((axes[2 * i], measured[:, i]), (axes[2 * i + 1], noisy[:, i])):
            collection, centres, _ = _patches(ax)
            np.testing.assert_allclose(centres, table.obsm["spatial"][rows], atol=1e-6)
            np.testing.assert_allclose(collection.get_array(), values)

    table.obsm["predicted"] = pd.DataFrame({genes[0]: np.arange(table.n_obs, dtype=float)}, index=table.obs_names)
    (_, ax) = oc.pl.predex(section, "predicted", color=genes[0], show=False)
    assert ax.get_title().startswith(f"{genes[0]} predicted (PCC ")
    with pytest.raises(KeyError, match="not measured"):
        oc.pl.predex(
            section,
            AnnData(np.ones((2, 1)), obs=pd.DataFrame(index=table.obs_names[:2]), var=pd.DataFrame(index=["GFP"])),
            show=False,
        )
    with pytest.raises(KeyError, match="not in the data"):
        oc.pl.predex(
            section,
            AnnData(np.ones((1, 1)), obs=pd.DataFrame(index=["elsewhere"]), var=pd.DataFrame(index=genes[:1])),
            show=False,
        )


class TestAlignment:
    def test_before_and_after_with_embedding_colours(self, tmp_path):
        target = _spots(40)
        source = _spots(30, seed=1)
        source.obsm["spatial_aligned"] = _rigid(source.obsm["spatial"], 30, (50, -20))

        before, after = oc.pl.alignment(source, target, save=tmp_path / "align.png", show=False)

        colours = oc.pl.pcs_as_rgb(np.vstack([source.obsm["X_omiclip_text"], target.obsm["X_omiclip_text"]]))
        for ax, source_xy in ((before, source.obsm["spatial"]), (after, source.obsm["spatial_aligned"])):
            target_points, source_points = ax.collections
            np.testing.assert_allclose(target_points.get_offsets(), target.obsm["spatial"])
            np.testing.assert_allclose(source_points.get_offsets(), source_xy)
            np.testing.assert_allclose(source_points.get_facecolors()[:, :3], colours[:30], atol=1e-6)
            np.testing.assert_allclose(target_points.get_facecolors()[:, :3], colours[30:], atol=1e-6)
            assert [t.get_text() for t in ax.get_legend().get_texts()] == ["target", "source"]
        assert (before.get_title(), after.get_title()) == ("before alignment", "after alignment")
        _, given = plt.subplots(1, 2)
        assert oc.pl.alignment(source, target, ax=given, show=False) == list(given)
        with pytest.raises(ValueError, match="2 panels, but `ax` holds 1"):
            oc.pl.alignment(source, target, ax=given[0], show=False)
        with pytest.raises(KeyError, match="Run `oc.tl.align` first"):
            oc.pl.alignment(source, target, key="spatial_elsewhere", show=False)

    def test_source_image_moves_with_a_rigid_alignment_only(self, section):
        source, target = working_copy(section, copy=True), section
        spatial = source.tables["table"].obsm["spatial"]
        source.tables["table"].obsm["spatial_aligned"] = _rigid(spatial, 20, (100, -40))
        noise = np.random.default_rng(0).normal(scale=40, size=spatial.shape)
        source.tables["table"].obsm["spatial_aligned_nonrigid"] = spatial + noise

        before, after = oc.pl.alignment(source, target, use_rep=None, image_key="he", show=False)
        assert len(before.images) == 2
        target_image, source_image = after.images
        corners = np.array([[0, 0], [600, 0], [600, 600]])  # image pixels; 2 µm each
        np.testing.assert_allclose(_image_to_data(target_image, after).transform(corners), 2 * corners, atol=1.0)
        np.testing.assert_allclose(
            _image_to_data(source_image, after).transform(corners), _rigid(2 * corners, 20, (100, -40)), atol=1.0
        )
        _, after = oc.pl.alignment(
            source, target, key="spatial_aligned_nonrigid", use_rep=None, image_key="he", show=False
        )
        assert len(after.images) == 1  # a warp cannot move an image by an affine: only the target's is drawn

    def test_images_after_tl_align_on_spatialdata(self, section):
        source, target = working_copy(section, copy=True), section
        for sdata in (source, target):
            table = sdata.tables["table"]
            table.obsm["X_omiclip_text"] = table.obsm["true_proportions"].to_numpy(dtype=np.float32)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            oc.tl.align(source, target, max_iter=5, progress=False, device="cpu")
        oc.pl.alignment(source, target, image_key="he", show=False)

    def test_stack_side_view(self):
        sections = [_spots(20, seed=i) for i in range(3)]
        for i, adata in enumerate(sections):
            adata.obsm["spatial_aligned"] = adata.obsm["spatial"]
            adata.obsm["spatial_aligned_3d"] = np.column_stack([adata.obsm["spatial"], np.full(20, (i - 1) * 10.0)])

        ax = oc.pl.alignment_stack(sections, show=False)
        ax.figure.canvas.draw()  # 3-D colours are final (and depth-sorted) once drawn

        assert ax.name == "3d" and len(ax.collections) == 3
        colours = np.split(oc.pl.pcs_as_rgb(np.vstack([s.obsm["X_omiclip_text"] for s in sections])), 3)
        for i, (collection, adata) in enumerate(zip(ax.collections, sections, strict=True)):
            x, y, z = (np.asarray(v) for v in collection._offsets3d)
            np.testing.assert_allclose(np.column_stack([x, y]), adata.obsm["spatial"])
            np.testing.assert_allclose(z, (i - 1) * 10.0)
            drawn = collection.get_facecolors()[:, :3]
            np.testing.assert_allclose(drawn[np.lexsort(drawn.T)], colours[i][np.lexsort(colours[i].T)], atol=1e-6)
        assert [t.get_text() for t in ax.get_zticklabels()] == ["0", "1", "2"]
        with pytest.raises(ValueError, match="3-D axes"):
            oc.pl.alignment_stack(sections, ax=plt.figure().add_subplot(), show=False)


def test_retrieval_shows_query_and_reference_tiles(section, tmp_path):
    reference = working_copy(section, copy=True)
    query_table, reference_table = section.tables["table"], reference.tables["table"]
    rng = np.random.default_rng(0)
    query_table.obsm["X_omiclip_image"] = rng.normal(size=(query_table.n_obs, 8)).astype(np.float32)
    reference_table.obsm["X_omiclip_text"] = rng.normal(size=(reference_table.n_obs, 8)).astype(np.float32)
    oc.tl.retrieve(section, reference, k=3, progress=False)
    shown = list(query_table.obs_names[[4, 7]])

    axes = oc.pl.retrieval(section, reference, obs=shown, n=2, save=tmp_path / "retrieval.png", show=False)

    assert len(axes) == 6
    tiles = oc.pp.tiles(section, um_per_px=None).to_array()
    retrieved, scores = query_table.obsm["omiclip_retrieved"], query_table.obsm["omiclip_retrieved_scores"]
    for row, query_index in enumerate([4, 7]):
        query_ax, *retrieved_axes = axes[3 * row : 3 * row + 3]
        assert query_ax.get_title() == f"query {shown[row]}"
        np.testing.assert_array_equal(query_ax.images[0].get_array(), tiles[query_index])
        for rank, ax in enumerate(retrieved_axes):
            position = retrieved[query_index, rank]
            name = reference_table.obs_names[position]
            assert ax.get_title() == f"{rank + 1}. {name}\n{scores[query_index, rank]:.3f}"
            np.testing.assert_array_equal(ax.images[0].get_array(), tiles[position])  # same image, same spots
    with pytest.raises(ValueError, match="between 1 and the 3 retrieved"):
        oc.pl.retrieval(section, reference, n=4, show=False)
    with pytest.raises(ValueError, match="reference's H&E"):
        oc.pl.retrieval(section, AnnData(obs=reference_table.obs[[]].copy()), n=2, show=False)
    query_table.obsm["omiclip_retrieved"] = retrieved + reference_table.n_obs  # from another, larger reference
    with pytest.raises(ValueError, match="positions in the searched reference"):
        oc.pl.retrieval(section, reference, obs=shown, n=2, show=False)


class TestEmbedding:
    @staticmethod
    def _both_modalities(n: int = 40) -> AnnData:
        adata = _spots(n)
        adata.obsm["X_omiclip_image"] = adata.obsm["X_omiclip_text"] + 3.0  # a modality gap along one direction
        adata.obs["domain"] = pd.Categorical(np.where(np.arange(n) < n // 2, "a", "b"))
        return adata

    def test_pca_maps_both_modalities_together(self):
        adata = self._both_modalities()
        before = set(adata.obsm)

        axes = oc.pl.embedding(adata, color="domain", basis="pca", show=False)

        assert [ax.get_title() for ax in axes] == ["domain", "modality"]
        expected = principal_components(np.vstack([adata.obsm["X_omiclip_image"], adata.obsm["X_omiclip_text"]]), 2)
        for ax in axes:
            drawn = np.concatenate([c.get_offsets() for c in ax.collections])
            assert len(drawn) == 80
            np.testing.assert_allclose(np.sort(drawn, axis=0), np.sort(expected, axis=0), atol=1e-5)
        assert set(adata.obsm) == before  # computed on a copy
        with pytest.raises(KeyError, match="Did not find 'cell_type' in `.obs`"):
            oc.pl.embedding(adata, color="cell_type", basis="pca", show=False)
        with pytest.raises(KeyError, match="Run `oc.tl.embed` first"):
            oc.pl.embedding(AnnData(obs=adata.obs), show=False)

    @pytest.mark.slow
    def test_umap(self):
        adata = self._both_modalities()
        (ax,) = oc.pl.embedding(adata, use_rep="X_omiclip_text", basis="umap", show=False)
        drawn = np.concatenate([c.get_offsets() for c in ax.collections])
        assert drawn.shape == (40, 2) and np.isfinite(drawn).all()
        assert "X_umap" not in adata.obsm
        # the fewest points a UMAP takes: 2 spots × 2 modalities
        axes = oc.pl.embedding(adata[:2].copy(), show=False)
        assert len(np.concatenate([c.get_offsets() for c in axes[0].collections])) == 4


PLOTS = [getattr(oc.pl, name) for name in oc.pl.__all__ if name != "pcs_as_rgb"]


@pytest.mark.parametrize("func", PLOTS, ids=lambda f: f.__name__)
def test_plots_follow_the_conventions(func):
    params = inspect.signature(func).parameters
    assert next(iter(params)) in {"data", "source", "query", "sections"}
    assert sum(p.kind is p.POSITIONAL_OR_KEYWORD for p in params.values()) <= 2
    for name in ("ax", "save"):
        assert params[name].kind is inspect.Parameter.KEYWORD_ONLY and params[name].default is None
    doc = inspect.getdoc(func)
    section = doc.split("Parameters\n----------")[1].split("Returns\n-------")[0]
    documented = {line.split(" ")[0] for line in section.splitlines() if line and not line[0].isspace()}
    assert set(params) <= documented


def _results(n: int = 20) -> AnnData:
    """Spots with every result the plots draw: annotation, proportions, predicted expression, an alignment."""
    rng = np.random.default_rng(1)
    spots = _spots(n)
    adata = AnnData(
        rng.poisson(5, size=(n, 3)).astype(np.float32),
        obs=spots.obs,
        var=pd.DataFrame(index=["g0", "g1", "g2"]),
        obsm=dict(spots.obsm),
    )
    adata.obsm["X_omiclip_image"] = adata.obsm["X_omiclip_text"] + 1.0
    adata.obs["omiclip_annotation"] = pd.Categorical(rng.choice(["a", "b"], n))
    for key, columns in (("omiclip_annotation_scores", ["a", "b"]), ("omiclip_proportions", ["t1", "t2"])):
        adata.obsm[key] = pd.DataFrame(rng.random((n, 2)), index=adata.obs_names, columns=columns)
    adata.obsm["truth"] = adata.obsm["omiclip_proportions"].copy()
    adata.obsm["prediction"] = pd.DataFrame(adata.X + 1.0, index=adata.obs_names, columns=adata.var_names)
    adata.obsm["spatial_aligned"] = adata.obsm["spatial"] + 10.0
    return adata


def _predicted(adata: AnnData) -> AnnData:
    """The prediction as `oc.tl.predex` returns it."""
    prediction = adata.obsm["prediction"]
    return AnnData(
        prediction.to_numpy(), obs=pd.DataFrame(index=prediction.index), var=pd.DataFrame(index=prediction.columns)
    )


def _with(adata: AnnData, **obsm) -> AnnData:
    for key, value in obsm.items():
        adata.obsm[key] = value
    return adata


@pytest.mark.parametrize(
    ("key", "plot"),
    [
        ("spatial", lambda a: oc.pl.embedding_rgb(a, use_rep="X_omiclip_text", show=False)),
        ("spatial", oc.pl.annotation),
        ("spatial", oc.pl.proportions),
        ("spatial", lambda a: oc.pl.predex(a, "prediction", show=False)),
        ("spatial_aligned", lambda a: oc.pl.alignment(a, a.copy(), show=False)),
        ("spatial_aligned", lambda a: oc.pl.alignment_stack([a, a.copy()], show=False)),
    ],
    ids=["embedding_rgb", "annotation", "proportions", "predex", "alignment", "alignment_stack"],
)
def test_nan_positions_are_an_error(key, plot):
    adata = _results()
    adata.obsm[key][[0, 3]] = np.nan
    with pytest.raises(ValueError, match=rf"`.obsm\['{key}'\]` of the data has 2 rows with NaN/inf; drop those"):
        plot(adata)


@pytest.mark.parametrize(
    ("key", "plot", "where"),
    [
        ("omiclip_annotation_scores", oc.pl.annotation, "`.obsm['omiclip_annotation_scores']`"),
        ("omiclip_proportions", oc.pl.proportions, "`.obsm['omiclip_proportions']`"),
        ("truth", lambda a: oc.pl.proportions(a, truth_key="truth", show=False), "`.obsm['truth']`"),
        ("prediction", lambda a: oc.pl.predex(a, "prediction", show=False), "`.obsm['prediction']`"),
        ("prediction", lambda a: oc.pl.predex(a, _predicted(a), show=False), "`predicted.X`"),
        ("X_omiclip_text", lambda a: oc.pl.pcs_as_rgb(a.obsm["X_omiclip_text"]), "The embedding"),
    ],
    ids=["annotation", "proportions", "truth", "predex key", "predex AnnData", "pcs_as_rgb"],
)
def test_nan_values_to_colour_are_an_error(key, plot, where):
    adata = _results()
    values = adata.obsm[key]
    if isinstance(values, pd.DataFrame):
        values.iloc[[1, 2, 5], 0] = np.nan
    else:
        values[[1, 2, 5], 0] = np.nan
    with pytest.raises(ValueError, match=re.escape(f"{where} has 3 rows with NaN/inf, which have no colour")):
        plot(adata)


@pytest.mark.parametrize(
    ("plot", "match"),
    [
        (lambda a: oc.pl.annotation(a[:0].copy(), show=False), r"The data has no observations \(n_obs == 0\)"),
        (lambda a: oc.pl.predex(a, _predicted(a)[:0].copy(), show=False), r"`predicted` has no observations"),
        (lambda a: oc.pl.annotation(a, color=[], show=False), r"`color` is empty; choose from \['a', 'b'\]"),
        (
            lambda a: oc.pl.proportions(a, color=[], show=False),
            r"`color` is empty; choose from \['t1', 't2'\]",
        ),
        (
            lambda a: oc.pl.annotation(
                _with(a, omiclip_annotation_scores=a.obsm["omiclip_annotation_scores"].iloc[:, :0]),
                labels=False,
                show=False,
            ),
            r"`.obsm\['omiclip_annotation_scores'\]` has no columns, so there are no references to show",
        ),
        (
            lambda a: oc.pl.embedding(a[:3].copy(), use_rep="X_omiclip_text", show=False),
            r"A UMAP needs at least 4 points, got 3 \(3 observations × 1 embeddings\); use `basis='pca'`",
        ),
        (lambda a: oc.pl.embedding(a[:1].copy(), show=False), r"got 2 \(1 observations × 2 embeddings\)"),
        (
            lambda a: oc.pl.alignment_stack([_with(a, spatial_aligned_3d=a.obsm["spatial_aligned"]), a], show=False),
            r"`.obsm\['spatial_aligned_3d'\]` must be \(n_obs, 3\) x/y/z coordinates, got shape \(20, 2\)",
        ),
    ],
    ids=[
        "no spots",
        "empty prediction",
        "no references",
        "no cell types",
        "no score columns",
        "umap 3",
        "umap 2",
        "3d",
    ],
)
def test_unusable_selections_and_shapes_are_clear_errors(plot, match):
    with pytest.raises(ValueError, match=match):
        plot(_results())


@pytest.mark.parametrize("whose", ["data", "prediction"])
def test_predex_needs_unique_gene_names(whose):
    adata = _results()
    predicted = _predicted(adata)
    (adata if whose == "data" else predicted).var_names = ["g0", "g1", "g0"]
    with pytest.raises(
        ValueError, match=rf"of the {whose} must be unique, but \['g0'\] repeat; call `.var_names_make_unique"
    ):
        oc.pl.predex(adata, predicted, show=False)


@pytest.mark.parametrize("func", PLOTS, ids=lambda f: f.__name__)
def test_save_into_a_missing_folder_fails_before_drawing(func, tmp_path):
    missing = tmp_path / "figures"
    n_inputs = sum(p.kind is p.POSITIONAL_OR_KEYWORD for p in inspect.signature(func).parameters.values())
    with pytest.raises(FileNotFoundError, match=re.escape(f"the folder {str(missing)!r} does not exist")):
        func(*[_results()] * n_inputs, save=missing / "plot.png")  # checked first, whatever the inputs
    assert plt.get_fignums() == []


def _visium(section, *, with_image: bool = True) -> AnnData:
    """The synthetic section as scanpy's Visium AnnData: 1 µm full-resolution pixels, a hires image at 2 µm."""
    table = section.tables["table"]
    adata = AnnData(obs=table.obs[[]].copy())
    adata.obsm["spatial"] = table.obsm["spatial"]
    adata.obsm["omiclip_proportions"] = table.obsm["true_proportions"]
    adata.obsm["X_omiclip_image"] = table.obsm["true_proportions"].to_numpy(dtype=np.float32)
    images = {"hires": np.asarray(section.images["he"]["scale0"]["image"]).transpose(1, 2, 0)} if with_image else {}
    scalefactors = {"tissue_hires_scalef": 0.5, "spot_diameter_fullres": 55.0}
    adata.uns["spatial"] = {"slide": {"images": images, "scalefactors": scalefactors}}
    return adata


class TestScanpyForm:
    """show/return_fig/ax as scanpy; the only image by default; colour bars; physical sizes; shared colours."""

    def test_show_and_return_fig(self, monkeypatch):
        shown = []
        monkeypatch.setattr(plt, "show", lambda: shown.append(True))
        adata = _results()
        fig = oc.pl.proportions(adata, return_fig=True)
        assert isinstance(fig, plt.Figure) and shown == []
        assert fig.axes[0].get_title() == "t1"
        axes = oc.pl.proportions(adata, show=False)
        assert [ax.get_title() for ax in axes] == ["t1", "t2"] and shown == []
        assert oc.pl.proportions(adata) is None and shown == [True]  # show=None: shown, nothing returned
        assert isinstance(oc.pl.embedding_rgb(adata, use_rep="X_omiclip_text", return_fig=True), plt.Figure)
        assert isinstance(oc.pl.alignment_stack([adata, adata.copy()], return_fig=True), plt.Figure)

    @pytest.mark.parametrize("func", PLOTS, ids=lambda f: f.__name__)
    def test_every_plot_has_show_and_return_fig(self, func):
        params = inspect.signature(func).parameters
        assert params["show"].default is None and params["return_fig"].default is False

    def test_the_only_image_is_drawn_by_default(self, section):
        table = section.tables["table"]
        table.obsm["omiclip_proportions"] = table.obsm["true_proportions"]
        (ax,) = oc.pl.proportions(section, color="tumor", show=False)
        assert len(ax.images) == 1
        (ax,) = oc.pl.proportions(section, color="tumor", image_key=None, show=False)
        assert len(ax.images) == 0
        adata = _visium(section)
        for plot in (
            lambda **kw: oc.pl.proportions(adata, color="tumor", show=False, **kw)[0],
            lambda **kw: oc.pl.embedding_rgb(adata, show=False, **kw),
        ):
            assert len(plot().images) == 1
            assert len(plot(image_key=None).images) == 0
        adata.uns["spatial"]["other"] = adata.uns["spatial"]["slide"]  # two libraries: which image is ambiguous
        (ax,) = oc.pl.proportions(adata, color="tumor", show=False)
        assert len(ax.images) == 0

    def test_colour_bar_is_labelled_and_no_taller_than_the_map(self):
        adata = _results()
        adata.obsm["spatial"][:, 1] *= 0.3  # a wide map: shorter than its axes
        axes = oc.pl.proportions(adata, show=False)
        axes[0].figure.canvas.draw()
        for ax in axes:
            (bar,) = ax.child_axes
            assert bar.get_ylabel() == "proportion"
            map_height = ax.get_window_extent().height
            assert bar.get_window_extent().height <= map_height + 1e-6
            assert map_height < 0.6 * ax.get_position(original=True).height * ax.figure.bbox.height

    def test_spots_at_their_physical_size_without_an_image(self, section):
        adata = _visium(section, with_image=False)
        (ax,) = oc.pl.proportions(adata, color="tumor", show=False)
        np.testing.assert_allclose(_patches(ax)[2], 27.5, atol=1e-6)  # spot_diameter_fullres 55, pitch 100
        collection = oc.pl.embedding_rgb(adata, show=False).collections[0]
        np.testing.assert_allclose(2 * collection._widths, 55.0)  # EllipseCollection keeps half-widths
        del adata.uns["spatial"]
        adata.uns["microns_per_unit"] = 0.5  # Visium (array_row/array_col): 55 µm = 110 units
        adata.obs["array_row"], adata.obs["array_col"] = 0, 0
        (ax,) = oc.pl.proportions(adata, color="tumor", show=False)
        np.testing.assert_allclose(_patches(ax)[2], 55.0, atol=1e-6)
        adata.obsm["spatial_aligned"] = _rigid(2 * adata.obsm["spatial"], 30, (5, 5))  # twice the scale
        (ax,) = oc.pl.proportions(adata, color="tumor", spatial_key="spatial_aligned", show=False)
        np.testing.assert_allclose(_patches(ax)[2], 110.0, atol=1e-6)

    def test_a_bad_stored_scale_warns_and_spots_take_their_spacing(self, section):
        adata = _visium(section, with_image=False)
        del adata.uns["spatial"]
        adata.obs["array_row"], adata.obs["array_col"] = 0, 0
        adata.uns["microns_per_unit"] = -0.5  # would draw spots of negative size
        with pytest.warns(UserWarning, match=r"`.uns\['microns_per_unit'\]` is -0.5, not a finite number > 0"):
            (ax,) = oc.pl.proportions(adata, color="tumor", show=False)
        np.testing.assert_allclose(_patches(ax)[2], 50.0, atol=1e-6)  # half the 100 µm pitch

    def test_a_bad_recorded_diameter_warns_and_spots_take_their_spacing(self, section):
        adata = _visium(section, with_image=False)
        next(iter(adata.uns["spatial"].values()))["scalefactors"]["spot_diameter_fullres"] = 0.0
        with pytest.warns(UserWarning, match=r"`spot_diameter_fullres` is 0.0, not a finite number > 0"):
            (ax,) = oc.pl.proportions(adata, color="tumor", show=False)
        np.testing.assert_allclose(_patches(ax)[2], 50.0, atol=1e-6)

    def test_categorical_colours_shared_with_scanpy(self):
        import scanpy as sc

        adata = _results()
        adata.obsm["omiclip_annotation_scores"] = pd.DataFrame(
            np.eye(2)[adata.obs["omiclip_annotation"].cat.codes], index=adata.obs_names, columns=["a", "b"]
        )
        assert "omiclip_annotation_colors" not in adata.uns
        axes = oc.pl.annotation(adata, show=False)
        written = list(adata.uns["omiclip_annotation_colors"])  # written as scanpy writes them
        ours = _patches(axes[-1])[0].get_facecolors()[:, :3]
        theirs = sc.pl.embedding(adata, basis="spatial", color="omiclip_annotation", show=False).collections[0]
        np.testing.assert_allclose(ours, theirs.get_facecolors()[:, :3], atol=1e-6)
        assert list(adata.uns["omiclip_annotation_colors"]) == written

        adata.uns["omiclip_annotation_colors"] = ["#000000", "#00ff00"]  # chosen by the user: kept
        axes = oc.pl.annotation(adata, show=False)
        codes = adata.obs["omiclip_annotation"].cat.codes.to_numpy()
        expected = np.array([[0.0, 0.0, 0.0], [0.0, 1.0, 0.0]])[codes]
        np.testing.assert_allclose(_patches(axes[-1])[0].get_facecolors()[:, :3], expected)
        assert list(adata.uns["omiclip_annotation_colors"]) == ["#000000", "#00ff00"]

    def test_embedding_writes_scanpy_colours(self):
        adata = _results()
        adata.obs["domain"] = pd.Categorical(np.where(np.arange(adata.n_obs) < 10, "x", "y"))
        oc.pl.embedding(adata, color="domain", basis="pca", show=False)
        assert len(adata.uns["domain_colors"]) == 2

    def test_alignment_legend_matches_the_spots(self):
        adata = _results()
        for use_rep, expected in ((None, ("tab:blue", "tab:red")), ("X_omiclip_text", ("0.6", "0.6"))):
            ax, _ = oc.pl.alignment(adata, adata.copy(), use_rep=use_rep, show=False)
            target_handle, source_handle = ax.get_legend().legend_handles
            target_spots, source_spots = ax.collections
            for handle, colour in zip((target_handle, source_handle), expected, strict=True):
                np.testing.assert_allclose(to_rgb(handle.get_markerfacecolor()), to_rgb(colour))
            if use_rep is None:  # one colour per section: the spots have the legend's colour
                np.testing.assert_allclose(target_spots.get_facecolors()[0, :3], to_rgb("tab:blue"))
                np.testing.assert_allclose(source_spots.get_facecolors()[0, :3], to_rgb("tab:red"))
            np.testing.assert_allclose(2 * target_spots._widths, 2 * source_spots._widths / 0.6)

    @pytest.mark.parametrize(
        ("plot", "old"),
        [
            (lambda a, **kw: oc.pl.annotation(a, labels=False, show=False, **kw), "references"),
            (lambda a, **kw: oc.pl.proportions(a, show=False, **kw), "cell_types"),
        ],
        ids=["annotation", "proportions"],
    )
    def test_old_names_still_work_with_a_future_warning(self, plot, old):
        adata = _results()
        first = list(adata.obsm["omiclip_proportions" if old == "cell_types" else "omiclip_annotation_scores"])[:1]
        with pytest.warns(FutureWarning, match=f"`{old}=` is now `color=`"):
            (ax,) = plot(adata, **{old: first})
        assert ax.get_title() == first[0]
        with pytest.raises(ValueError, match=f"Pass `color=` only: `{old}=` is its old name"):
            plot(adata, color=first, **{old: first})
        with pytest.warns(FutureWarning, match="`genes=` is now `color=`"):
            oc.pl.predex(adata, "prediction", genes="g0", show=False)
