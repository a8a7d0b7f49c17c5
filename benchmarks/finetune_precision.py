"""Fine-tuning on CPU: fp32 (the official `--precision amp` on CPU) against bf16 autocast, same pairs, same seed.

    python benchmarks/finetune_precision.py [--tiny-epochs 3] [--full-steps 3] [--full-batch 4]

omiclip-tiny: `oc.tl.finetune` on a synthetic section (batch 16); the full coca_ViT-L-14 architecture
(random weights): `--full-steps` steps of `--full-batch` pairs (one epoch). Both precisions keep fp32
weights and optimizer state (casting the weights themselves to bf16 would round lr 5e-6 updates away: bf16
resolves 2^-8 relative, see `bf16_update_check`). Prints seconds per step and the loss curves side by side,
with the CPU model and its bf16 flags; writes benchmarks/results/finetune_precision.json.
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch


def bf16_update_check(lr: float = 5e-6) -> dict:
    """Whether an AdamW-sized step (about lr) survives on a weight of 1 stored in bf16 and in fp32."""
    one = torch.ones((), dtype=torch.bfloat16)
    return {"lr": lr, "bf16_weight_changes": bool(one + lr != one), "fp32_weight_changes": bool(1.0 + lr != 1.0)}


def section_with(n_pairs: int, seed: int = 0):
    import omiclip as oc
    from omiclip._anndata import working_copy

    sdata = oc.datasets.synthetic_tissue(seed=seed)
    oc.pp.gene_sentences(sdata)
    part = working_copy(sdata, copy=True)
    part.tables["table"] = part.tables["table"][:n_pairs].copy()
    return part


def run(section, encoder, *, precision: str, epochs: int, batch_size: int, lr: float) -> dict:
    import omiclip as oc

    start = time.perf_counter()
    tuned = oc.tl.finetune(
        section,
        model=encoder,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        warmup=1,
        seed=0,
        device="cpu",
        precision=precision,
        progress=False,
    )
    seconds = time.perf_counter() - start
    steps = epochs * (section.tables["table"].n_obs // batch_size)
    row = {
        "precision": precision,
        "steps": steps,
        "seconds": seconds,
        "s_per_step": seconds / steps,
        "loss": tuned.history,
    }
    print(json.dumps(row), flush=True)  # as soon as measured: a run cut short still leaves its figures
    return row


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tiny-epochs", type=int, default=3)
    parser.add_argument("--tiny-pairs", type=int, default=256)
    parser.add_argument("--full-steps", type=int, default=3)
    parser.add_argument("--full-batch", type=int, default=4)
    parser.add_argument("--skip-full", action="store_true")
    args = parser.parse_args()

    from embed_images import cpu_description, full_architecture  # the same CPU record and full model

    import omiclip as oc

    results = {
        "cpu": cpu_description(),
        "bf16_update_check": bf16_update_check(),
        "torch_threads": torch.get_num_threads(),
    }
    tiny = oc.models.load("omiclip-tiny", device="cpu")
    section = section_with(args.tiny_pairs)
    results["tiny"] = [
        run(section, tiny, precision=precision, epochs=args.tiny_epochs, batch_size=16, lr=5e-4)
        for precision in ("fp32", "bf16")
    ]
    if not args.skip_full:
        full = full_architecture("cpu")
        section = section_with(args.full_steps * args.full_batch)
        results["full"] = [
            run(section, full, precision=precision, epochs=1, batch_size=args.full_batch, lr=5e-6)
            for precision in ("fp32", "bf16")
        ]

    cpu = results["cpu"]
    print(f"CPU {cpu['model']} (flags: {' '.join(cpu['flags'])}; native bf16: {cpu['native_bf16']})")
    print(f"bf16 weight + 5e-6 changes it: {results['bf16_update_check']['bf16_weight_changes']} (fp32: True)")
    print(f"{'model':<15}{'precision':<10}{'steps':>6}{'s/step':>9}{'x fp32':>8}  loss per epoch")
    for model in ("tiny", "full"):
        for row in results.get(model, []):
            speed = results[model][0]["s_per_step"] / row["s_per_step"]
            loss = " ".join(f"{value:.4f}" for value in row["loss"])
            print(f"{model:<15}{row['precision']:<10}{row['steps']:>6}{row['s_per_step']:>9.2f}{speed:>8.2f}  {loss}")
        if model in results:
            fp32, bf16 = (np.asarray(r["loss"]) for r in results[model])
            print(f"{'':<15}max |loss bf16 - fp32| / fp32 = {np.max(np.abs(bf16 - fp32) / fp32):.4f}")
    out = Path(__file__).parent / "results" / "finetune_precision.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), **results}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
