import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest
from anndata import AnnData

import omiclip as oc


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
    ax = oc.pl.embedding_rgb(adata, save=tmp_path / "rgb.png")
    points = ax.collections[0]
    np.testing.assert_allclose(points.get_offsets(), adata.obsm["spatial"])
    np.testing.assert_allclose(
        points.get_facecolors()[:, :3], oc.pl.pcs_as_rgb(adata.obsm["X_omiclip_image"]), atol=1e-6
    )
    assert (tmp_path / "rgb.png").stat().st_size > 1000
    with pytest.raises(KeyError, match="Run `oc.tl.embed` first"):
        oc.pl.embedding_rgb(adata, use_rep="X_omiclip_text")
