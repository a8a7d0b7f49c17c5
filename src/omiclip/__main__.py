"""Command line: ``omiclip demo`` (``python -m omiclip demo``)."""

from __future__ import annotations

import argparse
import json
import sys


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    parser = argparse.ArgumentParser(prog="omiclip", description="OmiCLIP / Loki for scverse.")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="end-to-end demo on synthetic tissue (offline, CPU, omiclip-tiny)")
    demo.add_argument("--out", default="omiclip_demo", help="folder for the outputs (default: %(default)s)")
    demo.add_argument("--size-um", type=float, default=3000.0, help="side of the synthetic slide in µm")
    demo.add_argument("--epochs", type=int, default=10, help="fine-tuning epochs (default: %(default)s)")
    demo.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    if args.command == "demo":
        import scanpy as sc

        from ._demo import run_demo

        sc.settings.verbosity = "hint"  # say what is written where

        summary = run_demo(args.out, size_um=args.size_um, epochs=args.epochs, seed=args.seed)
        print("omiclip demo summary")
        print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
