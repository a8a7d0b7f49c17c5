"""Image embedding: end-to-end throughput, and peak memory on whole-slide images.

    python benchmarks/embed_images.py throughput [--device cpu] [--full-tiles 32]   # also runs unchanged on a GPU
    python benchmarks/embed_images.py memory [--side 40000]

throughput: tiles/s of `oc.tl.embed(modality="image")` (read + preprocess + encode) for omiclip-tiny and
for the full coca_ViT-L-14 architecture (random weights), next to the rate this device's measured matrix
throughput allows for ViT-L/14 (~162 GFLOPs per 224 px tile).

memory: peak RSS of embedding every spot tile of a synthetic zarr slide of `side` x `side` px (and of a
10,000 px one), each in a fresh process, against the naive official approach (load the whole image,
crop each tile with PIL) on the 10,000 px slide. Writes benchmarks/results/embed_images_<mode>.json.
"""

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results"
VIT_L14_GFLOPS_PER_TILE = 162.0
UM_PER_PX = 0.5
SPOT_PITCH_UM = 200.0


def peak_rss_gib() -> float:
    """This process's RSS high-water mark (VmHWM; ru_maxrss would carry the parent's peak across exec)."""
    status = Path("/proc/self/status")
    if status.exists():
        line = next(line for line in status.read_text().splitlines() if line.startswith("VmHWM:"))
        return int(line.split()[1]) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def matmul_gflops(device: str) -> float:
    import torch

    a = torch.randn(4096, 4096, device=device)
    for _ in range(2):
        a @ a
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start, repeats = time.perf_counter(), 5
    for _ in range(repeats):
        a @ a
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return 2 * 4096**3 * repeats / (time.perf_counter() - start) / 1e9


def full_architecture(device: str):
    import open_clip

    from omiclip.models import Encoder
    from omiclip.models._encoder import resolve_device
    from omiclip.models._load import build_model
    from omiclip.models._registry import get_spec

    model, preprocess = build_model(get_spec("omiclip"))
    return Encoder(
        name="omiclip",
        architecture="coca_ViT-L-14",
        model=model,
        tokenizer=open_clip.get_tokenizer("coca_ViT-L-14"),
        preprocess=preprocess,
        device=resolve_device(device),
        checkpoint=None,
        seed=0,
    )


def throughput(args):
    import omiclip as oc
    from omiclip._anndata import working_copy

    sdata = oc.datasets.synthetic_tissue(seed=0)
    n_spots = sdata.tables["table"].n_obs
    rows = []
    cases = [("omiclip-tiny", oc.models.load("omiclip-tiny", device=args.device), n_spots, "fp32")]
    full = full_architecture(args.device)
    cases.append(("coca_ViT-L-14 (full)", full, args.full_tiles, "fp32"))
    if args.device.startswith("cuda"):
        cases.append(("coca_ViT-L-14 (full)", full, args.full_tiles, "bf16"))
    for name, encoder, n_tiles, precision in cases:
        subset = working_copy(sdata, copy=True)
        subset.tables["table"] = subset.tables["table"][:n_tiles].copy()
        warm_up = working_copy(sdata, copy=True)
        warm_up.tables["table"] = warm_up.tables["table"][:4].copy()
        oc.tl.embed(warm_up, modality="image", model=encoder, batch_size=4, precision=precision, progress=False)
        start = time.perf_counter()
        oc.tl.embed(
            subset, modality="image", model=encoder, batch_size=args.batch_size, precision=precision, progress=False
        )
        seconds = time.perf_counter() - start
        rows.append(
            {
                "model": name,
                "precision": precision,
                "tiles": n_tiles,
                "seconds": seconds,
                "tiles_per_s": n_tiles / seconds,
            }
        )
    gflops = matmul_gflops(args.device)
    limit = gflops / VIT_L14_GFLOPS_PER_TILE
    print(f"device {args.device}; fp32 matmul {gflops:,.0f} GFLOP/s -> ViT-L/14 limit {limit:.2f} tiles/s")
    print(f"{'model':<24}{'precision':<10}{'tiles':>7}{'seconds':>9}{'tiles/s':>10}")
    for r in rows:
        print(f"{r['model']:<24}{r['precision']:<10}{r['tiles']:>7}{r['seconds']:>9.1f}{r['tiles_per_s']:>10.2f}")
    full_rate = next(r["tiles_per_s"] for r in rows if r["model"].startswith("coca") and r["precision"] == "fp32")
    print(f"full model at {100 * full_rate / limit:.0f}% of the matmul-bound limit")
    return {"device": args.device, "matmul_gflops": gflops, "vit_l14_limit_tiles_per_s": limit, "rows": rows}


def make_slide(path: Path, side: int) -> None:
    """A synthetic H&E-like slide written straight to zarr, block by block (never whole in memory)."""
    import dask.array as da
    import pandas as pd
    from anndata import AnnData
    from spatialdata import SpatialData
    from spatialdata.models import Image2DModel, ShapesModel, TableModel
    from spatialdata.transformations import Scale

    chunk = 4096

    def block(block_info=None):
        (c0, c1), (y0, y1), (x0, x1) = block_info[None]["array-location"]
        rng = np.random.default_rng([y0, x0])
        yy, xx = np.ogrid[y0:y1, x0:x1]
        tissue = (yy - side / 2) ** 2 + (xx - side / 2) ** 2 < (0.45 * side) ** 2
        nuclei = rng.random((y1 - y0, x1 - x0)) < 0.02
        rgb = np.where(tissue, np.array([230, 150, 200])[:, None, None], 250).astype(np.uint8)
        rgb[:, nuclei & tissue] = np.array([80, 60, 150])[:, None]
        return rgb

    image = da.map_blocks(
        block,
        dtype=np.uint8,
        chunks=((3,), *[(chunk,) * (side // chunk) + ((side % chunk,) if side % chunk else ())] * 2),
    )
    pitch_px = SPOT_PITCH_UM / UM_PER_PX
    centers = np.stack(
        np.meshgrid(np.arange(pitch_px, side, pitch_px), np.arange(pitch_px, side, pitch_px)), -1
    ).reshape(-1, 2)
    centers = centers[((centers - side / 2) ** 2).sum(1) < (0.4 * side) ** 2]
    table = AnnData(
        obs=pd.DataFrame({"spot_id": np.arange(len(centers)), "region": pd.Categorical(["spots"] * len(centers))})
    )
    table.uns["microns_per_unit"] = UM_PER_PX
    SpatialData(
        images={
            "he": Image2DModel.parse(
                image,
                dims=("c", "y", "x"),
                scale_factors=[4, 4, 4],
                transformations={"global": Scale([UM_PER_PX] * 2, axes=("y", "x"))},
            )
        },
        shapes={
            "spots": ShapesModel.parse(
                centers,
                geometry=0,
                radius=np.full(len(centers), 27.5 / UM_PER_PX),
                transformations={"global": Scale([UM_PER_PX] * 2, axes=("x", "y"))},
            )
        },
        tables={"table": TableModel.parse(table, region="spots", region_key="region", instance_key="spot_id")},
    ).write(path, overwrite=True)


def run_case(case: str, store: str) -> dict:
    import spatialdata

    import omiclip as oc

    model = oc.models.load("omiclip-tiny")
    baseline = peak_rss_gib()
    sdata = spatialdata.read_zarr(store)
    start = time.perf_counter()
    if case == "omiclip":
        oc.tl.embed(sdata, modality="image", model=model, progress=False)
        n = sdata.tables["table"].n_obs
    else:  # the official approach: the whole image in memory, one PIL crop per spot
        from PIL import Image

        Image.MAX_IMAGE_PIXELS = None
        whole = Image.fromarray(np.asarray(sdata.images["he"]["scale0"]["image"].data.compute()).transpose(1, 2, 0))
        tiles = oc.pp.tiles(sdata)
        size = tiles.windows.window_px
        crops = [
            np.asarray(whole.crop((x, y, x + size, y + size)).resize((tiles.windows.out_px,) * 2))
            for y, x in tiles.windows.origin
        ]
        model.encode_images(np.stack(crops))
        n = len(crops)
    return {
        "case": case,
        "tiles": n,
        "seconds": time.perf_counter() - start,
        "rss_after_imports_gib": baseline,
        "peak_rss_gib": peak_rss_gib(),
    }


def memory(args):
    RESULTS.mkdir(exist_ok=True)
    rows = []
    for side, cases in ((10_000, ("omiclip", "naive")), (20_000, ("omiclip", "naive")), (args.side, ("omiclip",))):
        store = RESULTS / f"slide_{side}.zarr"
        if not store.exists():
            start = time.perf_counter()
            make_slide(store, side)
            print(f"wrote {store} in {time.perf_counter() - start:.0f} s")
        for case in cases:
            out = subprocess.run(
                [sys.executable, __file__, "_case", case, str(store)], capture_output=True, text=True, check=True
            )
            rows.append({"side_px": side, **json.loads(out.stdout.strip().splitlines()[-1])})
    print(f"{'slide (px)':>12}  {'method':<10}{'tiles':>8}{'seconds':>9}{'RSS after imports':>19}{'peak RSS':>10}")
    for r in rows:
        print(
            f"{r['side_px']:>12,}  {r['case']:<10}{r['tiles']:>8}{r['seconds']:>9.1f}{r['rss_after_imports_gib']:>16.2f} GiB{r['peak_rss_gib']:>6.2f} GiB"
        )
    return {"rows": rows}


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "_case":
        print(json.dumps(run_case(sys.argv[2], sys.argv[3])))
        return
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["throughput", "memory"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--full-tiles", type=int, default=32)
    parser.add_argument("--side", type=int, default=40_000)
    args = parser.parse_args()
    result = throughput(args) if args.mode == "throughput" else memory(args)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"embed_images_{args.mode}.json").write_text(json.dumps({"args": vars(args), **result}, indent=2))


if __name__ == "__main__":
    main()
