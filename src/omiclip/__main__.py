"""Command line: ``omiclip {embed,finetune,align,demo}`` (or ``python -m omiclip``) on SpatialData zarr stores."""

from __future__ import annotations

import argparse
import json
import re
import sys

from omiclip._keys import ALIGNED_KEY, SENTENCE_KEY, embedding_key

EPILOG = "Results are written back into the stores element by element; a failure leaves every stored element intact."
TRUST_HELP = (
    "read a checkpoint that is not plain weights by full unpickling, which runs whatever code the file names: "
    "only for files from a source you trust (default: weights only; such files are refused)"
)


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code (0 ok, 1 bad input or failure, 2 bad arguments)."""
    parser = _parser()
    args = parser.parse_args(argv)
    import scanpy as sc

    sc.settings.verbosity = "hint"  # say what is written where
    try:
        return args.run(args)
    except (KeyError, ValueError, TypeError, OSError, RuntimeError) as err:  # OSError: paths that cannot be written
        message = str(err.args[0] if isinstance(err, KeyError) and err.args else err)
        print(f"omiclip {args.command}: error: {_in_cli_words(message, parser, args.command)}", file=sys.stderr)
        return 1


# Python parameters that the command line spells differently from their option's name
_CLI_ALIASES = {"table_key": "table", "target_table_key": "table"}


def _in_cli_words(message: str, parser: argparse.ArgumentParser, command: str) -> str:
    """An error of the Python API as the command line's user reads it: `batch_size` → `--batch-size`."""
    subcommands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    options = {a.dest: a.option_strings[-1] for a in subcommands.choices[command]._actions if a.option_strings}
    for name in {*options, *_CLI_ALIASES}:
        option = options.get(_CLI_ALIASES.get(name, name))
        if option is not None:
            message = re.sub(rf"`{name}=?`", f"`{option}`", message)
    return message.replace("`oc.tl.embed`", "`omiclip embed`")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="omiclip", description="OmiCLIP / Loki for scverse.", epilog=EPILOG)
    parser.add_argument("--version", action=_Version, help="show the version and exit")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    embed = commands.add_parser("embed", help="embed a store's spots: gene sentences or H&E tiles", epilog=EPILOG)
    embed.add_argument("store", help="SpatialData zarr store")
    embed.add_argument("--modality", choices=["text", "image"], required=True)
    _model_arguments(embed)
    embed.add_argument(
        "--image-key", help="image element (image modality; default: the finest RGB image covering the spots)"
    )
    embed.add_argument(
        "--microns-per-unit",
        type=float,
        help="µm per unit of the spots' coordinates (when the data does not record it)",
    )
    embed.add_argument("--table", help="table element (default: the only one)")
    embed.add_argument("--batch-size", type=int, default=64)
    embed.add_argument(
        "--precision",
        choices=["fp32", "bf16", "fp16", "auto"],
        default="fp32",
        help="fp32 (official, default); bf16: bfloat16 weights on CPU, autocast on CUDA; fp16: autocast on CUDA; "
        "auto: bf16 on CUDA and on CPUs with native bf16 (AMX/AVX-512 BF16), else fp32",
    )
    embed.add_argument("--key-added", help=f"obsm key (default {embedding_key('{modality}')})")
    embed.set_defaults(run=_embed)

    finetune = commands.add_parser("finetune", help="fine-tune on the (tile, sentence) pairs of stores", epilog=EPILOG)
    finetune.add_argument("stores", nargs="+", help="SpatialData zarr stores with an H&E image and counts")
    finetune.add_argument("--out", required=True, help="checkpoint file to write (read it with --checkpoint)")
    _model_arguments(finetune)
    finetune.add_argument("--image-key", help="image element (default: the only one)")
    finetune.add_argument("--epochs", type=int, default=10)
    finetune.add_argument("--batch-size", type=int, default=64)
    finetune.add_argument("--lr", type=float, default=5e-6, help="official 5e-6 for the pretrained model")
    finetune.add_argument("--seed", type=int, default=0)
    finetune.add_argument(
        "--precision",
        choices=["amp", "fp32", "bf16"],
        default="amp",
        help="amp (official OpenCLIP --precision amp: fp16 autocast on CUDA, fp32 on CPU), fp32, or bf16 autocast",
    )
    finetune.add_argument(
        "--keep-last-batch",
        action="store_true",
        help="also train each epoch's last partial batch (default: dropped, as OpenCLIP's loader)",
    )
    finetune.set_defaults(run=_finetune)

    align = commands.add_parser(
        "align",
        help="align SOURCE onto TARGET (Loki Align); writes SOURCE's table and shapes",
        epilog="Writes the source table (obsm spatial_aligned, uns omiclip/align/spatial_aligned with the 3×3 matrix) "
        "and a transformation to the 'aligned' coordinate system for each of the source's elements (shapes, images, "
        "labels, points). " + EPILOG,
    )
    align.add_argument("source", help="SpatialData zarr store to move")
    align.add_argument("target", help="SpatialData zarr store that stays put (read only)")
    align.add_argument("--use-rep", default="X_omiclip_text", help="source embedding; 'none' for coordinates only")
    align.add_argument("--target-rep", help="target embedding (default: --use-rep)")
    align.add_argument(
        "--center",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="move the source embedding's mean onto the target's (recommended for H&E→ST; official: off)",
    )
    align.add_argument("--mode", choices=["rigid", "nonrigid"], default="rigid")
    align.add_argument(
        "--flavor", choices=["loki", "omiclip"], default="loki", help="official algorithm or omiclip's, more accurate"
    )
    align.add_argument("--key-added", default=ALIGNED_KEY)
    align.add_argument(
        "--max-points", type=int, help="EM on random subsets of at most this many points (default: all, official)"
    )
    align.add_argument("--microns-per-unit", type=float, help="µm per unit of the source's coordinates (if unrecorded)")
    align.add_argument("--target-microns-per-unit", type=float, help="µm per unit of the target's coordinates")
    align.add_argument("--device", help="torch device (default: cuda if available)")
    align.set_defaults(run=_align)

    demo = commands.add_parser("demo", help="end-to-end demo on synthetic tissue (offline, CPU, omiclip-tiny)")
    demo.add_argument("--out", default="omiclip_demo", help="folder for the outputs (default: %(default)s)")
    demo.add_argument("--size-um", type=float, default=3000.0, help="side of the synthetic slide in µm")
    demo.add_argument("--epochs", type=int, default=10, help="fine-tuning epochs (default: %(default)s)")
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(run=_demo)
    return parser


def _model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="omiclip", help="omiclip, omiclip-tiny or a checkpoint file (.pt)")
    parser.add_argument(
        "--checkpoint", help="local checkpoint (default: $OMICLIP_CHECKPOINT or ~/.cache/omiclip/checkpoint.pt)"
    )
    parser.add_argument("--device", help="torch device (default: cuda if available)")
    parser.add_argument("--trust-checkpoint", action="store_true", help=TRUST_HELP)


class _Version(argparse.Action):
    """``--version``, with the version looked up only when asked (importlib.metadata is slow to import)."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        from importlib.metadata import version

        print(f"{parser.prog} {version('omiclip')}")
        parser.exit()


def _read(path: str):
    from omiclip.io._zarr import read_store

    return read_store(path)


def _embed(args) -> int:
    import omiclip as oc
    from omiclip._anndata import table_name  # here, not at the top: --help must not import anndata
    from omiclip.io import write_elements

    sdata = _read(args.store)
    table = table_name(sdata, args.table, option="--table")
    if args.modality == "text" and SENTENCE_KEY not in sdata.tables[table].obs:
        oc.pp.gene_sentences(sdata, table_key=table)
    model, checkpoint = args.model, args.checkpoint
    if args.trust_checkpoint:  # the one way to read an untrusted-format file: load it here, by explicit opt-in
        model = oc.models.load(model, checkpoint=checkpoint, device=args.device, trust_checkpoint=True)
        checkpoint = None
    oc.tl.embed(
        sdata,
        modality=args.modality,
        model=model,
        checkpoint=checkpoint,
        image_key=args.image_key,
        microns_per_unit=args.microns_per_unit,
        batch_size=args.batch_size,
        device=args.device,
        precision=args.precision,
        key_added=args.key_added,
        table_key=table,
    )
    write_elements(sdata, table)
    print(f"wrote {args.store}: table {table!r}")
    return 0


def _finetune(args) -> int:
    import omiclip as oc
    from omiclip.io._paths import check_writable

    check_writable(args.out)  # before reading stores and training, not after
    sections = [_read(path) for path in args.stores]
    for sdata in sections:
        for table in sdata.tables:
            if SENTENCE_KEY not in sdata.tables[table].obs:
                oc.pp.gene_sentences(sdata, table_key=table)
    oc.tl.finetune(
        sections if len(sections) > 1 else sections[0],
        model=args.model,
        checkpoint=args.checkpoint,
        image_key=args.image_key,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        device=args.device,
        precision=args.precision,
        drop_last=not args.keep_last_batch,
        save=args.out,
        trust_checkpoint=args.trust_checkpoint,
    )
    print(f"wrote {args.out}")
    return 0


def _align(args) -> int:
    import omiclip as oc
    from omiclip._anndata import table_name
    from omiclip.io import write_elements

    source, target = _read(args.source), _read(args.target)
    table = table_name(source, None, option="--table")
    use_rep = None if args.use_rep.lower() == "none" else args.use_rep
    oc.tl.align(
        source,
        target,
        use_rep=use_rep,
        target_rep=args.target_rep,
        center=args.center,
        mode=args.mode,
        flavor=args.flavor,
        key_added=args.key_added,
        max_points=args.max_points,
        microns_per_unit=args.microns_per_unit,
        target_microns_per_unit=args.target_microns_per_unit,
        device=args.device,
    )
    # shapes are in memory and rewritten whole; images, labels and points are read lazily from the store, where
    # only their transformations change
    write_elements(source, [table, *source.shapes])
    lazy = [name for kind in ("images", "labels", "points") for name in getattr(source, kind)]
    for name in lazy:
        source.write_transformations(name)
    if lazy and source.has_consolidated_metadata():
        source.write_consolidated_metadata()
    print(f"wrote {args.source}: table {table!r}, shapes {list(source.shapes)} and the transformations of {lazy}")
    return 0


def _demo(args) -> int:
    from omiclip._demo import run_demo

    summary = run_demo(args.out, size_um=args.size_um, epochs=args.epochs, seed=args.seed)
    print("omiclip demo summary")
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
