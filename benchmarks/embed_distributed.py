"""Image embedding on a Dask cluster: tiles/s with 1 vs 2 local workers, and peak memory per worker.

    python benchmarks/embed_distributed.py [--side 40000] [--tiles 20000] [--workers 1 2]
    python benchmarks/embed_distributed.py --scheduler tcp://HOST:8786 --device cuda --precision bf16 \
        --model omiclip --checkpoint /path/checkpoint.pt --tiles 500000          # an existing (GPU) cluster

A Visium-HD-like grid (16 µm tiles at full resolution, 0.5 µm/px) over a synthetic `side` x `side` px zarr
slide (2 cm at 40,000 px; written lazily, block by block, by embed_images.make_slide). `--tiles` tiles
through the middle of the slide are embedded with `oc.tl.embed`: in this process, then with `client=` on
LocalClusters of 1 and 2 workers (1 thread each), each after the model is loaded on every worker; the
same band of a small slide shows that worker memory does not follow the slide's size. Peak memory per
worker is VmHWM from /proc of each worker process. Besides wall-clock tiles/s, tiles per CPU second (this
process and the workers) and the load average are reported: on a shared machine other work takes CPU
time from each run. With --scheduler the slide must be on a file system every worker sees, at the same
path. Writes benchmarks/results/embed_distributed.json.
"""

import argparse
import dataclasses
import json
import os
import time
from pathlib import Path

import numpy as np
from embed_images import RESULTS, make_slide, peak_rss_gib

GIB = 2**30


def worker_memory() -> dict:
    """VmRSS and VmHWM (bytes) of the calling process; run on each worker with `client.run`."""
    lines = Path("/proc/self/status").read_text().splitlines()
    return {
        key: int(value.split()[0]) * 1024
        for key, value in (line.split(":", 1) for line in lines)
        if key in ("VmRSS", "VmHWM")
    }


def load_model(model) -> None:
    from omiclip.tl import _distributed as distributed

    distributed.worker_encoder(model)


def slide(side: int) -> Path:
    store = RESULTS / f"slide_{side}.zarr"
    if not store.exists():
        start = time.perf_counter()
        make_slide(store, side)
        print(f"wrote {store} in {time.perf_counter() - start:.0f} s")
    return store


def band(store: Path, args):
    """The slide with its full grid, cut down to `args.tiles` tiles through the middle (table and tiles)."""
    import spatialdata

    import omiclip as oc
    from omiclip._core.tiling import TileWindows

    sdata = spatialdata.read_zarr(store)
    start, before = time.perf_counter(), peak_rss_gib()
    grid = oc.pp.tiles(sdata, grid=True, tile_size_um=args.tile_um, um_per_px=args.um_per_px)
    made = {"grid_tiles": len(grid), "grid_seconds": time.perf_counter() - start, "grid_gib": peak_rss_gib() - before}
    middle = len(grid) // 2
    keep = np.arange(max(0, middle - args.tiles // 2), min(len(grid), middle + args.tiles - args.tiles // 2))
    windows = grid.windows
    sdata.tables[grid.table_key] = sdata.tables[grid.table_key][keep].copy()
    tiles = dataclasses.replace(
        grid,
        windows=TileWindows(windows.origin[keep], windows.window_px, windows.out_px, windows.image_shape),
        obs_names=grid.obs_names[keep],
    )
    return sdata, tiles, made


def embed(sdata, tiles, args, client=None) -> tuple[np.ndarray, dict]:
    """Embed the tiles; wall time, CPU time (this process + workers) and the machine's load meanwhile."""
    import omiclip as oc

    workers_cpu = client.run(time.process_time) if client else {}
    cpu, load, start = time.process_time(), os.getloadavg()[0], time.perf_counter()
    oc.tl.embed(
        sdata,
        modality="image",
        tiles=tiles,
        model=args.model,
        checkpoint=args.checkpoint,
        device=args.device,
        precision=args.precision,
        batch_size=args.batch_size,
        client=client,
        progress=False,
    )
    seconds = time.perf_counter() - start
    cpu = time.process_time() - cpu
    if client:
        cpu += sum(now - workers_cpu[worker] for worker, now in client.run(time.process_time).items())
    timing = {
        "tiles": len(tiles),
        "seconds": seconds,
        "tiles_per_s": len(tiles) / seconds,
        "cpu_seconds": cpu,
        "tiles_per_cpu_s": len(tiles) / cpu,
        "load": (load + os.getloadavg()[0]) / 2,
    }
    return sdata.tables[tiles.table_key].obsm["X_omiclip_image"], timing


def on_cluster(client, label, side, sdata, tiles, reference, args) -> dict:
    from omiclip.tl import _distributed as distributed

    model = distributed.worker_model(args.model, checkpoint=args.checkpoint, device=args.device)
    client.run(load_model, model)  # steady state: the model is loaded on every worker before timing
    loaded = client.run(worker_memory)
    embeddings, timing = embed(sdata, tiles, args, client=client)
    peak = client.run(worker_memory)
    row = {
        "run": label,
        "side_px": side,
        "workers": len(peak),
        **timing,
        "worker_rss_model_loaded_gib": max(m["VmRSS"] for m in loaded.values()) / GIB,
        "worker_peak_gib": max(m["VmHWM"] for m in peak.values()) / GIB,
    }
    if reference is not None:
        row["max_abs_diff"] = float(np.abs(embeddings - reference).max())
    return row


def local_cluster(n_workers: int):
    from distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=None)
    return cluster, Client(cluster)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--side", type=int, default=40_000)
    parser.add_argument("--small-side", type=int, default=10_000)
    parser.add_argument("--tile-um", type=float, default=16.0)
    parser.add_argument("--um-per-px", type=float, default=0.5)
    parser.add_argument("--tiles", type=int, default=20_000)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--model", default="omiclip-tiny")
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--scheduler", default=None, help="address of a running cluster to use instead")
    args = parser.parse_args()
    RESULTS.mkdir(exist_ok=True)

    sdata, tiles, made = band(slide(args.side), args)
    print(
        f"grid of {made['grid_tiles']:,} tiles of {args.tile_um:g} µm over the {args.side:,} px slide in "
        f"{made['grid_seconds']:.1f} s (+{made['grid_gib']:.2f} GiB in this process); embedding {len(tiles):,}"
    )
    rows = []
    if args.scheduler is None:
        reference, timing = embed(sdata, tiles, args)
        rows.append({"run": "this process", "side_px": args.side, "workers": 0, **timing})
        for n_workers in args.workers:
            cluster, client = local_cluster(n_workers)
            with cluster, client:
                rows.append(on_cluster(client, "LocalCluster", args.side, sdata, tiles, reference, args))
                if n_workers == max(args.workers) and args.small_side:
                    small, small_tiles, _ = band(slide(args.small_side), args)
                    rows.append(on_cluster(client, "LocalCluster", args.small_side, small, small_tiles, None, args))
    else:
        from distributed import Client

        with Client(args.scheduler) as client:
            rows.append(on_cluster(client, "cluster", args.side, sdata, tiles, None, args))

    print(
        f"{'run':<14}{'slide px':>9}{'workers':>8}{'tiles':>8}{'seconds':>9}{'tiles/s':>9}{'tiles/CPU s':>12}"
        f"{'load':>6}{'worker RSS, model':>19}{'worker peak':>13}{'max |diff|':>12}"
    )
    for r in rows:
        memory = (
            f"{r['worker_rss_model_loaded_gib']:>15.2f} GiB{r['worker_peak_gib']:>9.2f} GiB"
            if "worker_peak_gib" in r
            else " " * 32
        )
        diff = f"{r['max_abs_diff']:>12.1e}" if "max_abs_diff" in r else ""
        print(
            f"{r['run']:<14}{r['side_px']:>9,}{r['workers']:>8}{r['tiles']:>8,}{r['seconds']:>9.1f}"
            f"{r['tiles_per_s']:>9.0f}{r['tiles_per_cpu_s']:>12.0f}{r['load']:>6.1f}{memory}{diff}"
        )
    single = next((r for r in rows if r["workers"] == 0), None)
    for r in rows:
        if single and r["workers"] and r["side_px"] == args.side:
            print(
                f"{r['workers']} worker(s): {r['tiles_per_s'] / single['tiles_per_s']:.2f}x the tiles/s and "
                f"{r['tiles_per_cpu_s'] / single['tiles_per_cpu_s']:.2f}x the tiles per CPU second of this process"
            )
    (RESULTS / "embed_distributed.json").write_text(json.dumps({"args": vars(args), **made, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
