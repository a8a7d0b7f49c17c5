import numpy as np
import pytest

import omiclip as oc


def test_image_embeddings_of_spot_tiles(section, tiny):
    oc.tl.embed(section, modality="image", model=tiny, progress=False)
    table = section.tables["table"]
    emb = table.obsm["X_omiclip_image"]
    assert emb.shape == (table.n_obs, tiny.embed_dim) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-5)
    # same values as encoding the tiles directly, in table order
    tiles = oc.pp.tiles(section).to_array()
    np.testing.assert_allclose(emb, tiny.encode_images(tiles), atol=1e-5)
    record = table.uns["omiclip"]["embed"]["X_omiclip_image"]
    assert record["modality"] == "image" and record["tile_px"] == tiles.shape[1] and record["n_padded"] == 0


def test_grid_embeddings_go_to_the_grid_table(section, tiny):
    grid = oc.pp.tiles(section, grid=True, tile_size_um=150)
    oc.tl.embed(section, modality="image", model=tiny, tiles=grid, batch_size=7, progress=False)
    assert section.tables["he_grid_table"].obsm["X_omiclip_image"].shape == (len(grid), tiny.embed_dim)
    assert "X_omiclip_image" not in section.tables["table"].obsm


def test_tiles_of_another_object_are_refused(section, tiny):
    other = oc.datasets.synthetic_tissue(size_um=900, um_per_px=2.0, seed=8)
    with pytest.raises(ValueError, match="other observations"):
        oc.tl.embed(section, modality="image", model=tiny, tiles=oc.pp.tiles(other), table_key="table")


def test_prefetch_passes_errors_and_stops_cleanly():
    from omiclip.models._encoder import prefetch

    def failing():
        yield 1
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        list(prefetch(failing()))
    first = next(prefetch(iter(range(100)), depth=1))  # abandoning the consumer does not hang
    assert first == 0
