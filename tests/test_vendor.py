"""Vendor data as users have it: real Space Ranger outputs, and Visium HD / Xenium / sopa / LazySlide layouts."""

import json
import os
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import pytest
from anndata import AnnData

import omiclip as oc

matplotlib.use("Agg")

# shared/ lies beside the repository, in sessions and in CI (elsewhere: point OMICLIP_VISIUM at it)
VISIUM = Path(os.environ.get("OMICLIP_VISIUM", Path(__file__).resolve().parents[2] / "shared" / "data" / "visium"))
V1 = VISIUM / "scanpy_v1_1.0.0"
CYTASSIST = VISIUM / "cytassist_mouse_sr2"


def _needs(path: Path):
    if not path.is_dir():
        pytest.skip(f"Space Ranger output not found at {path}")


def cytassist_anndata(path: Path) -> AnnData:
    """The CytAssist output (mtx, header-ed positions, lowres only) assembled in scanpy's Visium layout."""
    import matplotlib.pyplot as plt
    import scanpy as sc

    adata = sc.read_10x_mtx(path / "filtered_feature_bc_matrix")
    positions = pd.read_csv(path / "spatial" / "tissue_positions.csv", index_col="barcode")
    adata.obs = adata.obs.join(positions)
    adata.obsm["spatial"] = adata.obs[["pxl_col_in_fullres", "pxl_row_in_fullres"]].to_numpy(float)
    scalefactors = json.loads((path / "spatial" / "scalefactors_json.json").read_text())
    lowres = plt.imread(path / "spatial" / "tissue_lowres_image.png")
    adata.uns["spatial"] = {"cytassist": {"images": {"lowres": lowres}, "scalefactors": scalefactors}}
    return adata


def _chain(data, tiny, table_key=None, *, symbols=True):
    """read → gene_sentences → embed (text, image) → a plot, with no argument beyond the data.

    ``symbols=False``: the data name its genes by Ensembl IDs only (scanpy's V1 test output has no symbol anywhere),
    so sentences are refused with the error that says how to add symbols, and the image half of the chain runs.
    """
    import matplotlib.pyplot as plt

    table = oc._anndata.get_table(data, table_key)
    if symbols:
        oc.pp.gene_sentences(data, table_key=table_key)
        oc.tl.embed(data, modality="text", model=tiny, table_key=table_key, progress=False)
    else:
        with pytest.raises(ValueError, match=r"Ensembl IDs.*`gene_symbols="):
            oc.pp.gene_sentences(data, table_key=table_key)
        assert "gene_sentence" not in table.obs
    oc.tl.embed(data, modality="image", model=tiny, table_key=table_key, progress=False)
    assert table.obsm["X_omiclip_image"].shape == (table.n_obs, 128)
    if symbols:
        assert table.obsm["X_omiclip_text"].shape == table.obsm["X_omiclip_image"].shape
    fig = oc.pl.embedding_rgb(data, use_rep="X_omiclip_image", table_key=table_key, return_fig=True)
    plt.close(fig)
    return table


class TestSpaceRangerV1:
    def test_scanpy_read_visium(self, tiny):
        _needs(V1)
        import scanpy as sc

        adata = sc.read_visium(V1)
        adata.var_names_make_unique()
        # the hires PNG is an all-black placeholder: the chain runs, and says so
        with pytest.warns(UserWarning, match=r"100 of 100 tiles checked .* 'hires' are one flat colour.*\['lowres'\]"):
            table = _chain(adata, tiny, symbols=False)
        assert table.uns["omiclip"]["embed"]["X_omiclip_image"]["tile_size_um"] == pytest.approx(55.0)

    def test_spatialdata_io_visium(self, tiny):
        _needs(V1)
        sdio = pytest.importorskip("spatialdata_io")

        sdata = sdio.visium(V1, dataset_id="V1")
        with pytest.warns(UserWarning, match="'V1_hires_image' are one flat colour"):
            tiles = oc.pp.tiles(sdata)  # two images, no scale stored: the finest image, 55 µm spots
        assert tiles.params["tile_size_um"] == pytest.approx(55.0)
        with pytest.warns(UserWarning, match="one flat colour"):
            _chain(sdata, tiny, symbols=False)

    def test_lowres_is_flagged_as_coarse(self):
        _needs(V1)
        sdio = pytest.importorskip("spatialdata_io")

        sdata = sdio.visium(V1, dataset_id="V1")
        # the sharper hires image is V1's all-black placeholder: not recommended, named as such
        with pytest.warns(UserWarning, match=r"'V1_lowres_image' is 4.\dx coarser \(13.\d µm/px\)") as record:
            oc.pp.tiles(sdata, image_key="V1_lowres_image")
        message = next(str(w.message) for w in record if "coarser" in str(w.message))
        assert "pass it as `image_key=`" not in message
        assert "Sharper images ['V1_hires_image'] are mostly one flat colour" in message

    def test_errors_list_the_images(self):
        _needs(V1)
        import scanpy as sc

        adata = sc.read_visium(V1)
        del adata.uns["spatial"][next(iter(adata.uns["spatial"]))]["images"]["hires"]
        with pytest.warns(UserWarning, match="coarser"):
            assert oc.pp.tiles(adata).params["window_px"] == 4  # lowres only: taken, not KeyError 'hires'
        with pytest.raises(KeyError, match=r"Image 'hires' not in .*images there: \['lowres'\]"):
            oc.pp.tiles(adata, image_key="hires")


def test_cytassist_mtx_assembled_with_scanpy(tiny):
    _needs(CYTASSIST)
    adata = cytassist_anndata(CYTASSIST)
    adata = adata[::20].copy()  # ~150 spots keep the test fast; the layout is what matters
    with pytest.warns(UserWarning, match="coarser"):  # lowres only: tiles are upsampled, and it says so
        _chain(adata, tiny)


# --- whole-slide tiles from the peers: sopa's patches and LazySlide's tiles, made by the tools themselves ---

SLIDE_MPP = 0.5


@pytest.fixture(scope="module")
def slide(tmp_path_factory):
    """A small tiled TIFF at 0.5 µm/px (a textured pink disc on glass), and its pixels."""
    tifffile = pytest.importorskip("tifffile")
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:1536, 0:1536]
    pixels = np.full((1536, 1536, 3), 240, np.uint8)
    disc = (y - 768) ** 2 + (x - 800) ** 2 < 600**2
    texture = rng.integers(0, 60, (1536, 1536, 1))
    pixels[disc] = (np.array([200, 100, 180]) - texture)[disc].astype(np.uint8)
    path = tmp_path_factory.mktemp("slide") / "slide.tif"
    per_cm = 1e4 / SLIDE_MPP
    tifffile.imwrite(path, pixels, tile=(256, 256), photometric="rgb", resolution=(per_cm, per_cm), resolutionunit=3)
    return path, pixels


def _cut(pixels, x0, y0, side):
    return pixels[int(y0) : int(y0) + int(side), int(x0) : int(x0) + int(side)]


def test_sopa_patches_embed_as_sopa_cut_them(slide, tiny):
    sopa = pytest.importorskip("sopa", reason="sopa is in the test extra")
    pytest.importorskip("openslide", reason="sopa reads slides with openslide")
    pytest.importorskip("wsidata", reason="sopa reads slides through wsidata")
    import geopandas as gpd
    import torch
    from shapely.geometry import Point
    from spatialdata.models import ShapesModel

    path, pixels = slide

    class Mean(torch.nn.Module):
        def forward(self, batch):
            return batch.mean(dim=(2, 3))

    sdata = sopa.io.wsi(path, backend="openslide")
    sdata["region_of_interest"] = ShapesModel.parse(gpd.GeoDataFrame(geometry=[Point(800, 768).buffer(500)]))
    key = sopa.patches.compute_embeddings(sdata, Mean(), patch_width=224, roi_key="region_of_interest")
    patches = sdata["embeddings_patches"]
    bounds = np.array(patches["bboxes"].to_list())
    clipped = ~np.isclose(patches.geometry.area, 224**2)
    assert clipped.sum() > 5  # patches that sopa clipped to the outline: their centroid is not their centre

    tiles = oc.pp.tiles(sdata, table_key=key, um_per_px=None)  # no scale, tile size or resolution by hand
    assert tiles.params["tile_size_um"] == pytest.approx(224 * SLIDE_MPP)
    cut = tiles.to_array()
    inside = (bounds[:, 2] <= pixels.shape[1]) & (bounds[:, 3] <= pixels.shape[0])  # sopa pads the rest black
    for i in np.flatnonzero(inside):
        np.testing.assert_array_equal(cut[i], _cut(pixels, bounds[i, 0], bounds[i, 1], 224))
    oc.tl.embed(sdata, modality="image", model=tiny, table_key=key, progress=False)
    assert sdata.tables[key].obsm["X_omiclip_image"].shape == (len(patches), 128)


def test_lazyslide_tiles_embed_as_lazyslide_cut_them(slide, tiny):
    zs = pytest.importorskip("lazyslide", reason="LazySlide is in the test extra")
    wsidata = pytest.importorskip("wsidata")
    path, pixels = slide

    wsi = wsidata.open_wsi(path, reader="openslide", attach_images=True)
    zs.pp.find_tissues(wsi)
    zs.pp.tile_tissues(wsi, 224, mpp=SLIDE_MPP)
    assert type(wsi).__name__ == "WSIData"  # a SpatialData subclass
    boxes = wsi.shapes["tiles"].geometry.bounds.to_numpy()

    tiles = oc.pp.tiles(wsi, um_per_px=None)  # the tiles LazySlide recorded, at the slide's recorded µm/px
    assert tiles.params["tile_size_um"] == pytest.approx(224 * SLIDE_MPP)
    cut = tiles.to_array()
    for i in range(len(boxes)):
        np.testing.assert_array_equal(cut[i], _cut(pixels, boxes[i, 0], boxes[i, 1], 224))
    before = set(wsi.tables)
    copy = oc.tl.embed(wsi, modality="image", model=tiny, progress=False, copy=True)
    assert set(wsi.tables) == before  # copy=True leaves the input as it was
    assert copy.tables["tiles_table"].obsm["X_omiclip_image"].shape == (len(boxes), 128)


def test_lazyslide_tiles_with_the_image_carrying_its_own_transformation():
    """LazySlide's tiles are level-0 pixels of the slide whatever transformations the image records."""
    import geopandas as gpd
    from shapely.geometry import box
    from spatialdata import SpatialData
    from spatialdata.models import Image2DModel, ShapesModel
    from spatialdata.transformations import Scale

    class WSIData(SpatialData):  # LazySlide's class, by name and base
        pass

    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 256, (3, 512, 512), dtype=np.uint8)
    image = Image2DModel.parse(
        pixels, dims=("c", "y", "x"), scale_factors=[2], transformations={"global": Scale([0.5, 0.5], axes=("x", "y"))}
    )
    corners = np.array([[0, 0], [128, 256], [384, 384]])
    tiles = ShapesModel.parse(
        gpd.GeoDataFrame({"tile_id": range(3)}, geometry=[box(x, y, x + 128, y + 128) for x, y in corners])
    )
    wsi = WSIData(images={"wsi": image}, shapes={"tiles": tiles})
    wsi.attrs["slide_properties"] = {"mpp": 0.5}
    wsi.attrs["tile_spec"] = {"tiles": {"height": 128, "width": 128, "mpp": 0.5, "base_width": 128, "base_height": 128}}
    cut = oc.pp.tiles(wsi, um_per_px=None).to_array()
    for i, (x, y) in enumerate(corners):
        np.testing.assert_array_equal(cut[i], pixels[:, y : y + 128, x : x + 128].transpose(1, 2, 0))


# --- Visium HD and Xenium, in the layout spatialdata-io's readers write ---


def _coordinate_image(height, width):
    """RGB pixels that encode their own (y, x), to check where tiles are cut."""
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([y % 256, x % 256, 64 + (y // 256) * 16 + x // 256]).astype(np.uint8)


HD_UM_PER_PX = 0.5  # full-resolution pixel size of the HD fixture
HD_HIRES_SCALEF = 0.125


def visium_hd_sdata(bins=((2, 100), (8, 12), (16, 8))):
    """`spatialdata_io.visium_hd` output: `{id}_square_NNNum` squares and tables `square_NNNum` in full-res pixels."""
    import geopandas as gpd
    from scipy import sparse
    from spatialdata import SpatialData
    from spatialdata.models import Image2DModel, ShapesModel, TableModel
    from spatialdata.transformations import Identity, Scale

    ds = "hd"
    full = _coordinate_image(1000, 1000)
    hires_scale = Scale([HD_HIRES_SCALEF, HD_HIRES_SCALEF], axes=("x", "y"))
    transformations = {ds: Identity(), f"{ds}_downscaled_hires": hires_scale}
    images = {
        f"{ds}_full_image": Image2DModel.parse(
            full, dims=("c", "y", "x"), scale_factors=[2, 2], transformations={ds: Identity()}
        ),
        f"{ds}_hires_image": Image2DModel.parse(
            full[:, ::8, ::8],
            dims=("c", "y", "x"),
            transformations={f"{ds}_downscaled_hires": Identity(), ds: hires_scale.inverse()},
        ),
    }
    shapes, tables, rng = {}, {}, np.random.default_rng(0)
    for bin_um, n in bins:
        side = bin_um / HD_UM_PER_PX
        grid = np.stack(np.meshgrid(np.arange(n), np.arange(n)), -1).reshape(-1, 2)
        centres = (grid + 0.5) * side + 50.0  # (x, y) full-resolution pixels
        name, shapes_name = f"square_{bin_um:03d}um", f"{ds}_square_{bin_um:03d}um"
        circles = ShapesModel.parse(
            centres, geometry=0, radius=np.full(len(centres), side / 2), index=np.arange(len(centres))
        )
        shapes[shapes_name] = ShapesModel.parse(
            gpd.GeoDataFrame(geometry=circles.buffer(side / 2, cap_style=3)), transformations=transformations
        )
        obs = pd.DataFrame(
            {
                "array_row": grid[:, 1],
                "array_col": grid[:, 0],
                "location_id": np.arange(len(centres)),
                "region": pd.Categorical([shapes_name] * len(centres)),
            },
            index=[f"s_{bin_um:03d}um_{i:05d}-1" for i in range(len(centres))],
        )
        counts = sparse.csr_matrix(rng.poisson(1.0, (len(centres), 20)).astype(np.float32))
        table = AnnData(counts, obs=obs, var=pd.DataFrame(index=[f"GENE{g}" for g in range(20)]))
        table.obsm["spatial"] = centres
        tables[name] = TableModel.parse(table, region=shapes_name, region_key="region", instance_key="location_id")
    sdata = SpatialData(images=images, shapes=shapes, tables=tables)
    sdata.attrs["spatialdata_io_reader"] = "visium_hd"
    return sdata


class TestVisiumHD:
    def test_bins_tile_at_their_size_on_the_full_image(self):
        sdata = visium_hd_sdata()
        for bin_um in (8, 16):
            tiles = oc.pp.tiles(sdata, table_key=f"square_{bin_um:03d}um", um_per_px=None)
            assert tiles.params["tile_size_um"] == pytest.approx(bin_um)  # scale from the bin size
            assert tiles.level.um_per_px == pytest.approx(HD_UM_PER_PX)  # the full image, not hires
            centres = sdata.tables[f"square_{bin_um:03d}um"].obsm["spatial"]
            cut, half = tiles.to_array(), tiles.params["tile_px"] // 2
            for i in (0, len(cut) - 1):
                x, y = np.floor(centres[i] + 0.5).astype(int)
                assert tuple(cut[i][half, half, :2]) == (y % 256, x % 256)

    def test_bins_embed_with_no_extra_argument(self, tiny):
        sdata = visium_hd_sdata(bins=((16, 6),))
        oc.tl.embed(sdata, modality="image", model=tiny, progress=False)
        assert sdata.tables["square_016um"].obsm["X_omiclip_image"].shape == (36, 128)

    def test_2um_bins_pool_into_pseudo_spots(self):
        sdata = visium_hd_sdata(bins=((2, 100),))
        out = oc.pp.pseudo_spots(sdata)  # 2 µm bins as cells: no scale given
        table = out.tables["pseudo_spots_table"]
        assert table.uns["microns_per_unit"] == pytest.approx(HD_UM_PER_PX)
        bins = sdata.tables["square_002um"].obsm["spatial"]
        radius_px = 55 / 2 / HD_UM_PER_PX
        for centre, n_cells in zip(table.obsm["spatial"], table.obs["n_cells"], strict=True):
            assert n_cells == (np.linalg.norm(bins - centre, axis=1) < radius_px).sum()  # counted by hand
        assert table.obs["n_cells"].max() == pytest.approx(np.pi * 27.5**2 / 4, rel=0.03)  # a whole 55 µm disc
        # the spots sit where the bins were: their tiles come from the same full-resolution pixels
        tiles = oc.pp.tiles(out, image_key="hd_full_image", um_per_px=None)
        assert tiles.params["tile_size_um"] == pytest.approx(55)
        x, y = np.floor(table.obsm["spatial"][0] + 0.5).astype(int)
        half = tiles.params["tile_px"] // 2
        assert tuple(tiles.to_array()[0][half, half, :2]) == (y % 256, x % 256)


XENIUM_PIXEL_UM = 0.2125


def xenium_sdata(n_cells=400, seed=0):
    """`spatialdata_io.xenium` output: cells in µm (Scale 1/pixel_size to the morphology pixels of "global"), a
    fluorescence `morphology_focus`, and an aligned H&E `he_image` (affine to "global")."""
    import geopandas as gpd  # noqa: F401  (ShapesModel needs it)
    from spatialdata import SpatialData
    from spatialdata.models import Image2DModel, ShapesModel, TableModel
    from spatialdata.transformations import Affine, Identity, Scale

    rng = np.random.default_rng(seed)
    size_um = 240.0
    xy = rng.uniform(5, size_um - 5, (n_cells, 2))
    cell_ids = [f"cell{i:05d}-1" for i in range(n_cells)]
    obs = pd.DataFrame(
        {
            "cell_id": cell_ids,
            "cell_area": rng.uniform(50, 120, n_cells),
            "region": pd.Categorical(["cell_circles"] * n_cells),
        },
        index=[str(i) for i in range(n_cells)],
    )
    table = AnnData(rng.poisson(0.5, (n_cells, 30)).astype(np.float32), obs=obs)
    table.var_names = [f"GENE{g}" for g in range(30)]
    table.obsm["spatial"] = xy
    to_pixels = Scale([1 / XENIUM_PIXEL_UM, 1 / XENIUM_PIXEL_UM], axes=("x", "y"))
    circles = ShapesModel.parse(
        xy,
        geometry=0,
        radius=np.sqrt(obs["cell_area"].to_numpy() / np.pi),
        index=pd.Index(cell_ids),
        transformations={"global": to_pixels},
    )
    morphology_px = int(size_um / XENIUM_PIXEL_UM)
    morphology = rng.integers(0, 4000, (1, morphology_px, morphology_px), dtype=np.uint16)
    he_um_per_px = 0.5  # H&E pixels → morphology pixels
    he_to_morphology = he_um_per_px / XENIUM_PIXEL_UM
    matrix = np.array([[he_to_morphology, 0, 0], [0, he_to_morphology, 0], [0, 0, 1]])
    images = {
        "morphology_focus": Image2DModel.parse(
            morphology, dims=("c", "y", "x"), transformations={"global": Identity()}
        ),
        "he_image": Image2DModel.parse(
            _coordinate_image(int(size_um / he_um_per_px), int(size_um / he_um_per_px)),
            dims=("c", "y", "x"),
            transformations={"global": Affine(matrix, input_axes=("x", "y"), output_axes=("x", "y"))},
        ),
    }
    table = TableModel.parse(table, region="cell_circles", region_key="region", instance_key="cell_id")
    sdata = SpatialData(images=images, shapes={"cell_circles": circles}, tables={"table": table})
    sdata.attrs["spatialdata_io_reader"] = "xenium"
    return sdata


class TestXenium:
    def test_cells_pool_into_pseudo_spots_in_microns(self):
        sdata = xenium_sdata()
        out = oc.pp.pseudo_spots(sdata)  # Xenium's coordinates are µm: no scale given
        table = out.tables["pseudo_spots_table"]
        cells = sdata.tables["table"].obsm["spatial"]
        for centre, n_cells in zip(table.obsm["spatial"], table.obs["n_cells"], strict=True):
            assert n_cells == (np.linalg.norm(cells - centre, axis=1) < 27.5).sum()
        # the pseudo-spots' tiles come from the aligned H&E, not the fluorescence morphology image
        tiles = oc.pp.tiles(out, um_per_px=None)
        assert tiles.params["tile_size_um"] == pytest.approx(55) and tiles.level.um_per_px == pytest.approx(0.5)
        x, y = np.floor(table.obsm["spatial"][0] / 0.5 + 0.5).astype(int)  # the pixel at the centre of an even tile
        half = tiles.params["tile_px"] // 2
        assert tuple(tiles.to_array()[0][half, half, :2]) == (y % 256, x % 256)

    def test_cells_tile_on_the_he_image(self):
        sdata = xenium_sdata(n_cells=20)
        tiles = oc.pp.tiles(sdata, um_per_px=None)
        assert tiles.level.um_per_px == pytest.approx(0.5)  # H&E chosen; µm from Xenium's coordinates
        with pytest.raises(ValueError, match="'morphology_focus' must be RGB or RGBA.*not H&E"):
            oc.pp.tiles(sdata, image_key="morphology_focus")


# --- `microns_per_unit=`: taken where it must be given, and every error that asks for it can follow it ---


def test_every_scale_error_can_be_followed_where_it_is_raised(section, tiny):
    table = section.tables["table"]
    del table.uns["microns_per_unit"]  # a scale neither stored nor recorded
    for call in (
        lambda **kw: oc.pp.tiles(section, **kw),
        lambda **kw: oc.tl.embed(section, modality="image", model=tiny, progress=False, **kw),
        lambda **kw: oc.pp.pseudo_spots(section, **kw),
    ):
        with pytest.raises(ValueError, match="pass `microns_per_unit=`"):
            call()
        call(microns_per_unit=1.0)  # the advice works in the function that gave it


def test_align_warns_when_only_one_scale_is_known(section):
    source, target = section.tables["table"].copy(), section.tables["table"].copy()
    del target.uns["microns_per_unit"]
    with pytest.warns(UserWarning, match="pass `target_microns_per_unit=`"):
        oc.tl.align(source, target, use_rep=None, max_iter=5, refine_iter=0, progress=False)
    target.obsm["spatial"] = target.obsm["spatial"] * 2  # the target in half-µm units
    oc.tl.align(source, target, use_rep=None, target_microns_per_unit=0.5, progress=False)
    moved = source.obsm["spatial_aligned"]
    np.testing.assert_allclose(moved, target.obsm["spatial"], atol=1.0)  # converted, then exact


def test_pseudo_spots_from_scanpy_visium_take_the_spot_scale():
    _needs(V1)
    import scanpy as sc

    adata = sc.read_visium(V1)
    adata.var_names_make_unique()
    spots = oc.pp.pseudo_spots(adata, spot_diameter_um=110, spacing_um=200)  # no scale given: 55 µm spots
    diameter_px = next(iter(adata.uns["spatial"].values()))["scalefactors"]["spot_diameter_fullres"]
    assert spots.uns["microns_per_unit"] == pytest.approx(55 / diameter_px)


def test_grid_on_a_slide_takes_the_pixel_size_it_records():
    """sopa's and wsidata's slides carry their µm per pixel in the image's attrs: a grid needs no scale."""
    from spatialdata import SpatialData
    from spatialdata.models import Image2DModel

    pixels = np.full((3, 400, 400), 240, np.uint8)
    pixels[:, 100:300, 100:300] = np.array([190, 90, 170])[:, None, None]  # stained tissue on glass
    image = Image2DModel.parse(pixels, dims=("c", "y", "x"), scale_factors=[2])
    image.attrs["metadata"] = {"mpp": 0.5}  # as sopa.io.wsi records it
    sdata = SpatialData(images={"wsi": image})
    grid = oc.pp.tiles(sdata, grid=True, tile_size_um=50, um_per_px=None)
    assert grid.params["tile_px"] == 100 and len(grid) == 4  # 100 µm of tissue, 50 µm tiles at 0.5 µm/px
