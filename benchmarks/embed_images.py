"""Image embedding: end-to-end throughput (fp32 vs bf16 side by side), and peak memory on whole-slide images.

    python benchmarks/embed_images.py throughput [--device cpu] [--full-tiles 32] [--text 64]
    python benchmarks/embed_images.py throughput --device cuda --full-tiles 20000 --batch-size 256
    python benchmarks/embed_images.py memory [--side 40000]

throughput: tiles/s of `oc.tl.embed(modality="image")` (read + preprocess + encode, overlapped: tiles are
read and preprocessed in a background thread, in pinned memory for a GPU) for omiclip-tiny, and for the full
coca_ViT-L-14 architecture (random weights) in fp32 and bf16 on the same tiles in the same run (CPU: weights
and inputs cast to bfloat16; CUDA: bf16 autocast), with the per-tile cosine of each bf16 embedding to its
fp32 one (min over tiles). The same for the text tower on gene sentences. On CUDA also a variant with the
preprocessing on the GPU (uint8 tiles copied once, bicubic resize and normalisation there; torch's bicubic is
not PIL's, so its cosine to the official PIL path is reported too). Next to it: the rate this device's
measured fp32 matrix throughput allows for ViT-L/14 (~162 GFLOPs per 224 px tile), and the CPU model and
its bf16 flags.

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


def cpu_description() -> dict:
    """CPU model and the flags that decide bf16 speed (recorded with every timing)."""
    from omiclip.models._encoder import cpu_has_native_bf16

    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")), "")
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    wanted = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "amx_int8")
    return {"model": model, "flags": [f for f in wanted if f in flags], "native_bf16": cpu_has_native_bf16()}


def min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.min(np.sum(a * b, axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)))


def int8_copy(encoder):
    """The encoder with its image tower's Linear layers dynamically quantised to int8 (measured, not offered).

    ``torch.ao.quantization.quantize_dynamic`` (deprecated in favour of torchao, which is not a dependency): weights
    int8, activations quantised per batch; attention's input projection is a bare parameter and stays fp32.
    """
    import copy
    import warnings

    import torch

    model = copy.deepcopy(encoder.model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.visual = torch.ao.quantization.quantize_dynamic(model.visual, {torch.nn.Linear}, dtype=torch.qint8)
    quantised = copy.copy(encoder)
    quantised.model = model
    return quantised


def encode_on_gpu(encoder, tiles, batch_size: int) -> np.ndarray:
    """Tiles read in a background thread, copied as uint8 from pinned memory, preprocessed and encoded on the GPU."""
    import open_clip
    import torch
    import torch.nn.functional as F

    from omiclip.models._encoder import prefetch

    device, size = encoder.device, encoder.image_size
    mean = torch.tensor(open_clip.OPENAI_DATASET_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(open_clip.OPENAI_DATASET_STD, device=device).view(1, 3, 1, 1)
    pinned = ((indices, torch.from_numpy(np.stack(batch)).pin_memory()) for indices, batch in tiles.batches(batch_size))
    out = np.empty((len(tiles), encoder.embed_dim), dtype=np.float32)
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
        for indices, batch in prefetch(pinned):
            pixels = batch.to(device, non_blocking=True).permute(0, 3, 1, 2).float() / 255
            # square tiles: resizing the short side to `size` leaves nothing for the centre crop to cut
            pixels = F.interpolate(pixels, size=(size, size), mode="bicubic", antialias=True).clamp_(0, 1)
            features = encoder.model.encode_image((pixels - mean) / std, normalize=False)
            out[indices] = F.normalize(features.float(), dim=-1).cpu().numpy()
    return out


def timed(function, *args, **kwargs):
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - start


def throughput(args):
    import omiclip as oc
    from omiclip._anndata import working_copy

    sdata = oc.datasets.synthetic_tissue(seed=0)
    table = sdata.tables["table"]
    oc.pp.gene_sentences(sdata)

    def subset(n):
        part = working_copy(sdata, copy=True)
        part.tables["table"] = part.tables["table"][:n].copy()
        return part

    def embed_images(encoder, n, precision):
        part = subset(n)
        oc.tl.embed(
            part, modality="image", model=encoder, batch_size=args.batch_size, precision=precision, progress=False
        )
        return part.tables["table"].obsm["X_omiclip_image"]

    rows, images, texts = [], {}, {}

    def done(row):  # printed as soon as measured: a run cut short still leaves its figures
        rows.append(row)
        made = (images if row["tower"] == "image" else texts) if row["model"] == "coca_ViT-L-14" else {}
        if row["precision"] != "fp32" and "fp32" in made and row["precision"] in made:
            row["min_cosine_now"] = min_cosine(made["fp32"], made[row["precision"]])
        print(json.dumps(row), flush=True)

    tiny = oc.models.load("omiclip-tiny", device=args.device)
    embed_images(tiny, 4, "fp32")  # warm-up
    _, seconds = timed(embed_images, tiny, table.n_obs, "fp32")
    done({"model": "omiclip-tiny", "tower": "image", "precision": "fp32", "n": table.n_obs, "seconds": seconds})

    full = full_architecture(args.device)
    for precision in args.precisions:
        embed_images(full, 2, precision)  # warm-up (and, for bf16 on CPU, the first weight cast)
        images[precision], seconds = timed(embed_images, full, args.full_tiles, precision)
        done(
            {
                "model": "coca_ViT-L-14",
                "tower": "image",
                "precision": precision,
                "n": args.full_tiles,
                "seconds": seconds,
            }
        )
    if args.int8 and args.device == "cpu":
        images["int8"], seconds = timed(embed_images, int8_copy(full), args.full_tiles, "fp32")
        done(
            {"model": "coca_ViT-L-14", "tower": "image", "precision": "int8", "n": args.full_tiles, "seconds": seconds}
        )
    if args.device.startswith("cuda"):
        tiles = oc.pp.tiles(subset(args.full_tiles))
        encode_on_gpu(full, oc.pp.tiles(subset(args.batch_size)), args.batch_size)  # warm-up
        images["bf16, GPU preprocessing"], seconds = timed(encode_on_gpu, full, tiles, args.batch_size)
        done(
            {
                "model": "coca_ViT-L-14",
                "tower": "image",
                "precision": "bf16, GPU preprocessing",
                "n": len(tiles),
                "seconds": seconds,
            }
        )
    sentences = table.obs["gene_sentence"].tolist()[: args.text]
    for precision in args.precisions:
        full.encode_text(sentences[:2], precision=precision)  # warm-up
        texts[precision], seconds = timed(
            full.encode_text, sentences, precision=precision, batch_size=args.text_batch_size
        )
        done(
            {"model": "coca_ViT-L-14", "tower": "text", "precision": precision, "n": len(sentences), "seconds": seconds}
        )

    for row in rows:
        row["per_s"] = row["n"] / row["seconds"]
        made = (images if row["tower"] == "image" else texts) if row["model"] == "coca_ViT-L-14" else {}
        if "fp32" in made and row["precision"] in made:
            row["min_cosine_to_fp32"] = min_cosine(made["fp32"], made[row["precision"]])
            fp32_rate = next(
                r["n"] / r["seconds"]
                for r in rows
                if r["model"] == row["model"] and r["tower"] == row["tower"] and r["precision"] == "fp32"
            )
            row["speed_up_vs_fp32"] = row["per_s"] / fp32_rate

    gflops = matmul_gflops(args.device)
    limit = gflops / VIT_L14_GFLOPS_PER_TILE
    cpu = cpu_description()
    print(
        f"CPU {cpu['model']} (flags: {' '.join(cpu['flags'])}; native bf16: {cpu['native_bf16']}); device {args.device}"
    )
    print(f"fp32 matmul {gflops:,.0f} GFLOP/s -> ViT-L/14 limit {limit:.2f} tiles/s")
    print(f"{'model':<15}{'tower':<7}{'precision':<26}{'n':>6}{'seconds':>9}{'per s':>9}{'x fp32':>8}{'min cos':>9}")
    for r in rows:
        extra = f"{r['speed_up_vs_fp32']:>8.2f}{r['min_cosine_to_fp32']:>9.5f}" if "min_cosine_to_fp32" in r else ""
        print(
            f"{r['model']:<15}{r['tower']:<7}{r['precision']:<26}{r['n']:>6}{r['seconds']:>9.1f}{r['per_s']:>9.2f}{extra}"
        )
    full_rate = next(
        r["per_s"] for r in rows if r["model"] == "coca_ViT-L-14" and r["tower"] == "image" and r["precision"] == "fp32"
    )
    print(f"full model fp32 at {100 * full_rate / limit:.0f}% of the fp32 matmul-bound limit")
    return {
        "device": args.device,
        "cpu": cpu,
        "matmul_gflops": gflops,
        "vit_l14_limit_tiles_per_s": limit,
        "rows": rows,
    }


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
    parser.add_argument("--text", type=int, default=64, help="sentences for the text tower")
    parser.add_argument("--text-batch-size", type=int, default=64)
    parser.add_argument("--precisions", default="fp32,bf16", type=lambda text: text.split(","))
    parser.add_argument("--int8", action="store_true", help="CPU: also the image tower dynamically quantised to int8")
    parser.add_argument("--side", type=int, default=40_000)
    args = parser.parse_args()
    result = throughput(args) if args.mode == "throughput" else memory(args)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"embed_images_{args.mode}.json").write_text(json.dumps({"args": vars(args), **result}, indent=2))


if __name__ == "__main__":
    main()
