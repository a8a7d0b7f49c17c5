"""Image -> transcriptome retrieval on real HER2+ sections: fine-tune omiclip-tiny on two, test on the third.

    python benchmarks/her2st_retrieval.py [--data ../shared/data/her2st] [--epochs 40]

For each of C2, C3, C4 held out: fine-tune the tiny model from scratch on the other two sections'
(tile, gene sentence) pairs, embed the held-out section, and report the paper's Recall@K: the
fraction of query tiles whose own spot's sentence ranks in the top K% of that section's sentences.
Random ranking gives K%. Prints a table, writes benchmarks/results/her2st_retrieval.json.
"""

import argparse
import json
import time
from pathlib import Path

import omiclip as oc

SECTIONS = ("C2", "C3", "C4")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared/data/her2st"))
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    sections = {name: oc.datasets.her2st(name, args.data) for name in SECTIONS}
    for sdata in sections.values():
        oc.pp.gene_sentences(sdata)
    untrained = oc.models.load("omiclip-tiny", seed=args.seed)
    rows = []
    for held_out in SECTIONS:
        train = [sections[name] for name in SECTIONS if name != held_out]
        start = time.perf_counter()
        tuned = oc.tl.finetune(train, model=untrained, epochs=args.epochs, lr=args.lr, seed=args.seed, progress=False)
        seconds = time.perf_counter() - start
        test = sections[held_out]
        for label, model in (("untrained", untrained), ("fine-tuned", tuned)):
            oc.tl.embed(test, model=model, progress=False)
            oc.tl.embed(test, modality="image", model=model, progress=False)
            table = test.tables["table"]
            image, text = table.obsm["X_omiclip_image"], table.obsm["X_omiclip_text"]
            rows.append(
                {
                    "held_out": held_out,
                    "model": label,
                    "n_spots": int(table.n_obs),
                    "recall_at_5pct": oc.metrics.recall_at_k(image, text, 0.05),
                    "recall_at_10pct": oc.metrics.recall_at_k(image, text, 0.10),
                    "train_seconds": seconds if label == "fine-tuned" else 0.0,
                    "final_loss": tuned.history[-1] if label == "fine-tuned" else None,
                }
            )

    print(f"{'held out':<10}{'model':<12}{'spots':>7}{'R@5%':>8}{'R@10%':>8}{'train s':>9}")
    for row in rows:
        print(
            f"{row['held_out']:<10}{row['model']:<12}{row['n_spots']:>7}{row['recall_at_5pct']:>8.3f}"
            f"{row['recall_at_10pct']:>8.3f}{row['train_seconds']:>9.0f}"
        )
    for label in ("untrained", "fine-tuned"):
        picked = [r for r in rows if r["model"] == label]
        r5 = sum(r["recall_at_5pct"] for r in picked) / len(picked)
        r10 = sum(r["recall_at_10pct"] for r in picked) / len(picked)
        print(f"mean {label:<12} R@5% {r5:.3f}  R@10% {r10:.3f}   (random: 0.050 / 0.100)")
    out = Path(__file__).parent / "results" / "her2st_retrieval.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
