import numpy as np
import pytest
from anndata import AnnData

import omiclip as oc
from omiclip._core import tiling


def _checker(height, width):
    """An image whose pixel (y, x) encodes its own coordinates, to check where windows are cut."""
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([y % 256, x % 256, (y // 256) * 16 + x // 256]).astype(np.uint8)


class TestTilingCore:
    def test_windows_are_cut_where_asked_in_any_order(self):
        image = _checker(600, 700)
        centers = np.array([[100.0, 100.0], [550.0, 20.0], [300.0, 650.0], [10.0, 697.0]])
        windows = tiling.centred_windows(centers, 9, 9, image.shape[1:])
        seen = {}
        for indices, tiles in tiling.iter_tiles(
            windows, lambda y0, y1, x0, x1: image[:, y0:y1, x0:x1], batch_size=3, block_px=256
        ):
            seen.update(zip(indices.tolist(), tiles, strict=True))
        assert sorted(seen) == [0, 1, 2, 3]
        tile = seen[0]
        assert tile.shape == (9, 9, 3)
        assert tile[4, 4, 0] == 100 and tile[4, 4, 1] == 100  # centre pixel is (100, 100)
        # the tile at the right border is padded with white beyond the image
        assert windows.crosses_border.tolist() == [False, False, False, True]
        assert (seen[3][:, 7:] == 255).all() and (seen[3][:, :7, 1] == np.arange(693, 700) % 256).all()

    def test_block_reads_touch_only_needed_regions(self):
        image = _checker(2000, 2000)
        reads = []

        def read(y0, y1, x0, x1):
            reads.append((y1 - y0) * (x1 - x0))
            return image[:, y0:y1, x0:x1]

        centers = np.array([[100.0, 100.0], [120.0, 130.0], [1900.0, 1900.0]])
        windows = tiling.centred_windows(centers, 20, 20, image.shape[1:])
        list(tiling.iter_tiles(windows, read, batch_size=8, block_px=512))
        assert len(reads) == 2  # one read per block holding tiles
        assert sum(reads) < 3 * 60 * 60  # bounding boxes of the windows, not the image

    def test_resample_and_grid(self):
        tile = np.zeros((30, 30, 3), dtype=np.uint8)
        tile[:15] = 200
        small = tiling.resample(tile, 10)
        assert small.shape == (10, 10, 3) and small[0, 0, 0] == 200 and small[-1, 0, 0] == 0
        mask = np.zeros((10, 10), dtype=bool)
        mask[:5] = True  # top half is tissue
        centers = tiling.grid_centers((100, 100), 20, mask, 0.75)
        assert len(centers) == 10 and (centers[:, 0] < 50).all()

    def test_tissue_mask_finds_stained_area(self):
        image = np.full((3, 60, 60), 245, dtype=np.uint8)
        image[:, 10:40, 10:40] = np.array([180, 90, 170])[:, None, None]  # pink-purple
        mask = tiling.tissue_mask(image)
        assert mask[25, 25] and not mask[50, 50]
        assert abs(mask.sum() - 900) < 120


class TestSpotTiles:
    def test_default_tiles_match_hires_convention(self, section):
        tiles = oc.pp.tiles(section)
        assert len(tiles) == section.tables["table"].n_obs
        # 55 µm spots at ~3.3 µm/px (17 px); no level is within 15% (2 and 4 µm/px): level 0 is resampled
        assert tiles.params["level"] == 0 and tiles.params["window_px"] == 28 and tiles.params["tile_px"] == 17
        assert tiles.to_array().shape == (len(tiles), tiles.params["tile_px"], tiles.params["tile_px"], 3)

    def test_tiles_show_the_spot_they_belong_to(self, section):
        table = section.tables["table"]
        tiles = oc.pp.tiles(section, um_per_px=None).to_array()  # full resolution, 2 µm/px here
        full = section.images["he"]["scale0"]["image"].values
        for i in (0, len(tiles) // 2, len(tiles) - 1):
            x, y = np.round(table.obsm["spatial"][i] / 2.0).astype(int)
            half = tiles.shape[1] // 2
            np.testing.assert_array_equal(tiles[i][half, half], full[:, y, x])

    def test_resolution_options(self, section):
        sharp = oc.pp.tiles(section, um_per_px=None)
        assert sharp.params["level"] == 0 and sharp.params["tile_px"] == round(55 / 2.0)
        resampled = oc.pp.tiles(section, um_per_px=5.0, tile_size_um=100)
        assert resampled.params["tile_px"] == 20 and resampled.to_array().shape[1] == 20

    def test_errors(self, section):
        with pytest.raises(KeyError, match="Image 'nope' not found"):
            oc.pp.tiles(section, image_key="nope")
        table = section.tables["table"]
        del table.uns["microns_per_unit"]
        with pytest.raises(ValueError, match="physical scale of .spots. is unknown"):
            oc.pp.tiles(section)
        table.uns["microns_per_unit"] = 1.0
        table.obsm["spatial"] = table.obsm["spatial"]  # shapes are what count: move them off the image
        section.shapes["spots"].geometry = section.shapes["spots"].geometry.translate(50_000, 0)
        with pytest.raises(ValueError, match="entirely outside the image"):
            oc.pp.tiles(section)

    @pytest.mark.parametrize(
        ("kwargs", "match"),
        [
            ({"tile_size_um": np.nan}, "`tile_size_um` must be a finite number > 0"),
            ({"um_per_px": np.nan}, "`um_per_px` must be a finite number > 0"),
            ({"um_per_px": 0}, "`um_per_px` must be a finite number > 0"),
            ({"microns_per_unit": 0}, "`microns_per_unit` must be a finite number > 0"),  # not the stored value
            ({"microns_per_unit": np.inf}, "`microns_per_unit` must be a finite number > 0"),
            ({"grid": True, "tile_size_um": 100, "min_tissue": 2}, "`min_tissue` is the fraction"),
            ({"grid": True, "tile_size_um": 100, "min_tissue": -0.1}, "`min_tissue` is the fraction"),
        ],
    )
    def test_bad_numbers_leave_data_untouched(self, section, kwargs, match):
        shapes, tables = set(section.shapes), set(section.tables)
        with pytest.raises(ValueError, match=match):
            oc.pp.tiles(section, **kwargs)
        assert set(section.shapes) == shapes and set(section.tables) == tables  # no grid written

    def test_stored_microns_per_unit_is_checked(self, section):
        section.tables["table"].uns["microns_per_unit"] = 0.0
        stored = r"`table.uns\['microns_per_unit'\]` is 0.0, not a finite number > 0"
        with pytest.raises(ValueError, match=stored + ": correct it, or pass `microns_per_unit=`"):
            oc.pp.tiles(section)

    def test_instance_ids_not_in_shapes(self, section):
        table = section.tables["table"]
        instance_key = table.uns["spatialdata_attrs"]["instance_key"]
        table.obs[instance_key] = table.obs[instance_key].to_numpy() + 10**6
        with pytest.raises(KeyError, match=rf"{table.n_obs} of {table.n_obs} ids in `.obs\['{instance_key}'\]`"):
            oc.pp.tiles(section)

    def test_grid_tiles_cover_tissue_and_are_linked(self, section):
        grid = oc.pp.tiles(section, grid=True, tile_size_um=100)
        assert grid.table_key == "he_grid_table"
        assert "he_grid" in section.shapes and section.tables["he_grid_table"].n_obs == len(grid)
        covered = len(grid) * 100**2
        assert 0.3 * 1200**2 < covered < 1200**2  # the tissue disc, not the whole slide

    def test_visium_anndata_layout_is_the_official_crop(self):
        rng = np.random.default_rng(0)
        hires = rng.integers(0, 256, (400, 500, 3), dtype=np.uint8)
        adata = AnnData(np.ones((3, 2), dtype=np.float32))
        adata.obsm["spatial"] = np.array([[1000.0, 800.0], [1500.0, 1200.0], [300.0, 300.0]])  # full-res px (x, y)
        scalefactors = {"tissue_hires_scalef": 0.2, "spot_diameter_fullres": 85.0}
        adata.uns["spatial"] = {"lib": {"images": {"hires": hires}, "scalefactors": scalefactors}}
        tiles = oc.pp.tiles(adata)
        assert tiles.params["tile_px"] == 17  # round(85 * 0.2), as the official segment_patches
        x, y = 1000 * 0.2, 800 * 0.2
        np.testing.assert_array_equal(tiles.to_array()[0], hires[int(y) - 8 : int(y) + 9, int(x) - 8 : int(x) + 9])


def test_pyramid_level_near_the_target_is_read_as_is():
    sdata = oc.datasets.synthetic_tissue(size_um=800, um_per_px=0.75, seed=1)
    tiles = oc.pp.tiles(sdata)
    assert tiles.params["level"] == 2  # 3.0 µm/px, within 15% of 3.3
    assert tiles.params["window_px"] == tiles.params["tile_px"] == 18


def _like_he(section, array):
    """An image placed as the section's H&E (same transformations)."""
    from spatialdata.models import Image2DModel
    from spatialdata.transformations import get_transformation

    transformations = get_transformation(section.images["he"], get_all=True)
    return Image2DModel.parse(array, dims=("c", "y", "x"), transformations=transformations)


class TestBadImages:
    def test_wrong_axes_and_dtype(self, section):
        from spatialdata.models import Image2DModel

        gray = np.zeros((1, 64, 64), dtype=np.uint8)
        section.images["gray"] = Image2DModel.parse(gray, dims=("c", "y", "x"))
        with pytest.raises(ValueError, match="RGB or RGBA with axes"):
            oc.pp.tiles(section, image_key="gray")
        section.images["u16"] = Image2DModel.parse(np.zeros((3, 64, 64), dtype=np.uint16), dims=("c", "y", "x"))
        with pytest.raises(ValueError, match="uint8 or float"):
            oc.pp.tiles(section, image_key="u16")

    def test_yxc_read_as_cyx_is_named(self, section):
        from spatialdata.models import Image2DModel

        section.images["mixed"] = Image2DModel.parse(np.zeros((600, 600, 3), np.uint8), dims=("c", "y", "x"))
        with pytest.raises(ValueError, match=r"that is a \(y, x, c\) image read with the wrong axes"):
            oc.pp.tiles(section, image_key="mixed")

    def test_float_images_in_0_255_are_not_clipped(self, section):
        he = section.images["he"]["scale0"]["image"].values
        section.images["f255"] = _like_he(section, he.astype(np.float32))
        section.images["f01"] = _like_he(section, he.astype(np.float32) / 255)
        reference = oc.pp.tiles(section, image_key="he", um_per_px=None).to_array()
        for key in ("f255", "f01"):
            np.testing.assert_array_equal(oc.pp.tiles(section, image_key=key, um_per_px=None).to_array(), reference)

    def test_rgba_alpha_is_respected(self, section):
        he = section.images["he"]["scale0"]["image"].values
        opaque = np.concatenate([he, np.full((1, *he.shape[1:]), 255, np.uint8)])
        section.images["opaque"] = _like_he(section, opaque)
        reference = oc.pp.tiles(section, image_key="he", um_per_px=None).to_array()
        np.testing.assert_array_equal(oc.pp.tiles(section, image_key="opaque", um_per_px=None).to_array(), reference)
        transparent = opaque.copy()
        transparent[3] = 0  # a fully transparent image: nothing there, read as background, and flagged
        section.images["transparent"] = _like_he(section, transparent)
        with pytest.warns(UserWarning, match=r"of \d+ tiles checked .* are one flat colour"):
            tiles = oc.pp.tiles(section, image_key="transparent", um_per_px=None)
        assert (tiles.to_array() == 255).all()

    def test_no_transformation_between_spots_and_image(self, section):
        from spatialdata.transformations import Identity, remove_transformation, set_transformation

        set_transformation(section.shapes["spots"], Identity(), to_coordinate_system="elsewhere")
        remove_transformation(section.shapes["spots"], "global")
        with pytest.raises(ValueError, match="No transformation between 'spots' and image 'he'"):
            oc.pp.tiles(section)

    def test_empty_table(self):
        adata = AnnData(np.ones((0, 2), dtype=np.float32))
        adata.obsm["spatial"] = np.zeros((0, 2))
        scalefactors = {"tissue_hires_scalef": 0.2, "spot_diameter_fullres": 85.0}
        adata.uns["spatial"] = {
            "lib": {"images": {"hires": np.zeros((40, 40, 3), np.uint8)}, "scalefactors": scalefactors}
        }
        with pytest.raises(ValueError, match="no observations"):
            oc.pp.tiles(adata)


def test_visium_anndata_float_and_bad_images():
    adata = AnnData(np.ones((1, 2), dtype=np.float32))
    adata.obsm["spatial"] = np.array([[100.0, 100.0]])
    scalefactors = {"tissue_hires_scalef": 0.5, "spot_diameter_fullres": 20.0}
    adata.uns["spatial"] = {"lib": {"images": {"hires": np.full((80, 80, 3), 0.5)}, "scalefactors": scalefactors}}
    with pytest.warns(UserWarning, match="1 of 1 tiles checked"):  # a flat image, flagged
        assert (oc.pp.tiles(adata).to_array() == 128).all()  # float [0, 1] images are scaled to uint8
    adata.uns["spatial"]["lib"]["images"]["hires"] = np.zeros((80, 80), dtype=np.uint8)
    with pytest.raises(ValueError, match="must be RGB"):
        oc.pp.tiles(adata)
    adata.uns["spatial"]["lib"]["images"]["hires"] = np.zeros((3, 80, 80), dtype=np.uint8)
    with pytest.raises(ValueError, match=r"that is \(c, y, x\), but scanpy's layout is \(y, x, c\)"):
        oc.pp.tiles(adata)
    adata.uns["spatial"]["lib"]["images"]["hires"] = np.zeros((80, 80, 3), dtype=np.uint16)
    with pytest.raises(ValueError, match="uint8 or float"):
        oc.pp.tiles(adata)


def test_coarse_image_warning_recommends_only_a_sharper_image_that_is_not_blank():
    """lowres at ~18 µm/px: the warning points to hires only when hires is not a flat placeholder (as in V1's)."""
    rng = np.random.default_rng(0)
    adata = AnnData(np.ones((20, 2), dtype=np.float32))
    adata.obsm["spatial"] = rng.uniform(400, 1600, (20, 2))  # full-resolution pixels, 1 µm/px (55 px spots)
    scalefactors = {"tissue_hires_scalef": 0.2, "tissue_lowres_scalef": 0.055, "spot_diameter_fullres": 55.0}
    images = {"lowres": rng.integers(0, 255, (110, 110, 3), dtype=np.uint8)}
    adata.uns["spatial"] = {"lib": {"images": images, "scalefactors": scalefactors}}
    for hires, advice in (
        (rng.integers(0, 255, (400, 400, 3), dtype=np.uint8), r"Image 'hires' is sharper \(5 µm/px\)"),
        (np.zeros((400, 400, 3), dtype=np.uint8), r"Use a higher-resolution image.*\['hires'\] are mostly one flat"),
        (np.zeros((400, 400, 3), dtype=np.uint16), r"Use a higher-resolution image[^']*$"),  # unreadable: not named
    ):
        images["hires"] = hires
        with pytest.warns(UserWarning, match=r"'lowres' is 5.5x coarser \(18.2 µm/px\).*" + advice):
            oc.pp.tiles(adata, image_key="lowres")
