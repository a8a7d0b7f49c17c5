"""Reader for the legacy Spatial Transcriptomics release of the HER2+ breast cancer study (Andersson et al. 2021)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
from anndata import AnnData
from scipy import sparse

from omiclip._keys import MICRONS_PER_UNIT_KEY

from ._spatialdata import build_sdata

HER2ST_ENV = "OMICLIP_HER2ST"
SPOT_DIAMETER_UM = 100.0  # legacy ST array: 100 µm spots ...
ARRAY_PITCH_UM = 200.0  # ... 200 µm centre to centre, one array unit apart


def her2st(section: str, path: str | os.PathLike | None = None, *, image: bool = True):
    """Read one section of the HER2ST data set as SpatialData.

    Parameters
    ----------
    section
        Section name, e.g. ``"A1"`` or ``"C2"``.
    path
        Folder with ``counts/{section}.tsv.gz``, ``spots/{section}_selection.tsv`` and optionally
        ``images/{section}.jpg`` and ``labels/{section}_labeled_coordinates.tsv`` (files of the public
        release, gathered in one folder); defaults to ``$OMICLIP_HER2ST``.
    image
        Read the H&E image when the section has one.

    Returns
    -------
    SpatialData in the ``"global"`` coordinate system (pixels of the full-resolution H&E image) with
    ``tables["table"]`` (raw UMI counts, spots × gene symbols; ``obs["array_x"]``, ``obs["array_y"]``;
    ``obsm["spatial"]``: spot centres in pixels; ``obs["label"]``: pathologist label when available;
    ``uns["her2st"]``: section, ``px_per_um`` and ``spot_diameter_px``), ``shapes["spots"]`` (100 µm
    circles) and ``images["he"]`` when present.
    """
    root = _root(path)
    counts_file = root / "counts" / f"{section}.tsv.gz"
    spots_file = root / "spots" / f"{section}_selection.tsv"
    for required in (counts_file, spots_file):
        if not required.is_file():
            available = sorted(path.name.removesuffix(".tsv.gz") for path in root.glob("counts/*.tsv.gz"))
            raise FileNotFoundError(
                f"Section {section!r}: {required} not found in the HER2ST folder {root}. "
                f"Available sections: {', '.join(available) or 'none (no counts/*.tsv.gz)'}."
            )

    counts = pd.read_csv(counts_file, sep="\t", index_col=0)
    spots = pd.read_csv(spots_file, sep="\t")
    if "selected" in spots:  # spots the authors kept as under tissue
        spots = spots[spots["selected"] == 1]
    spots.index = spots["x"].astype(int).astype(str) + "x" + spots["y"].astype(int).astype(str)
    spot_ids = counts.index.intersection(spots.index)
    if spot_ids.empty:
        raise ValueError(f"Section {section!r}: no spot of the counts file is in the spot file.")
    counts, spots = counts.loc[spot_ids], spots.loc[spot_ids]

    obs = pd.DataFrame({"array_x": spots["x"].astype(int), "array_y": spots["y"].astype(int)}, index=spot_ids)
    labels_file = root / "labels" / f"{section}_labeled_coordinates.tsv"
    if labels_file.is_file():
        obs["label"] = _labels(labels_file).reindex(spot_ids).astype("category")
    table = AnnData(
        sparse.csr_matrix(counts.to_numpy(dtype=np.float32)), obs=obs, var=pd.DataFrame(index=counts.columns)
    )
    table.obsm["spatial"] = spots[["pixel_x", "pixel_y"]].to_numpy(dtype=float)
    px_per_um = _px_per_um(spots)
    table.uns[MICRONS_PER_UNIT_KEY] = 1 / px_per_um  # coordinates are full-resolution image pixels
    table.uns["her2st"] = {
        "section": section,
        "px_per_um": px_per_um,
        "spot_diameter_px": SPOT_DIAMETER_UM * px_per_um,
    }

    image_file = root / "images" / f"{section}.jpg"
    he = _read_rgb(image_file) if image and image_file.is_file() else None
    return build_sdata(
        table,
        spot_radius=SPOT_DIAMETER_UM * px_per_um / 2,
        image=he,
        image_to_global=1.0,
        coordinate_system="global",
    )


def _root(path) -> Path:
    if path is None:
        if not os.environ.get(HER2ST_ENV):
            raise ValueError(f"Pass `path=` (the HER2ST folder with counts/ and spots/) or set ${HER2ST_ENV}.")
        path = os.environ[HER2ST_ENV]
    root = Path(path).expanduser()
    if root.is_file():
        raise NotADirectoryError(f"HER2ST path {root} is a file: pass the folder with counts/ and spots/.")
    if not root.is_dir():
        raise FileNotFoundError(f"HER2ST folder {root} does not exist.")
    return root


def _labels(labels_file: Path) -> pd.Series:
    """Pathologist labels indexed by spot id (their ``x``, ``y`` are refined array coordinates)."""
    labels = pd.read_csv(labels_file, sep="\t").dropna(subset=["x", "y"])
    ids = labels["x"].round().astype(int).astype(str) + "x" + labels["y"].round().astype(int).astype(str)
    return pd.Series(labels["label"].to_numpy(), index=ids).groupby(level=0).first()


def _px_per_um(spots: pd.DataFrame) -> float:
    """Image pixels per µm, from the slope of pixel against refined array coordinates (200 µm per unit)."""
    slopes = [np.polyfit(spots[f"new_{axis}"], spots[f"pixel_{axis}"], 1)[0] for axis in ("x", "y")]
    return float(np.mean(np.abs(slopes)) / ARRAY_PITCH_UM)


def _read_rgb(image_file: Path) -> np.ndarray:
    from PIL import Image

    guard = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None  # whole-slide JPEGs exceed PIL's decompression-bomb guard
    try:
        with Image.open(image_file) as img:
            return np.asarray(img.convert("RGB")).transpose(2, 0, 1)
    finally:
        Image.MAX_IMAGE_PIXELS = guard
