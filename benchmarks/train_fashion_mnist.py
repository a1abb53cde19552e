"""Metric learning on Fashion-MNIST: untrained vs center loss vs triplet loss, each with and without
augmentation, plus contrastive pairs (siamese) with threshold-based verification accuracy.

    python benchmarks/train_fashion_mnist.py                      # modest settings, ~15-20 min on one core
    python benchmarks/train_fashion_mnist.py --train-limit 60000 --test-limit 10000 --epochs 20   # full

Data: the Debian package dataset-fashion-mnist (60,000 train / 10,000 test 28x28 images, 10 classes), split
by samples (its own files). Every row: the small CNN (2 conv stages, dim 50, L2-normalised), Adam lr 1e-3
with cosine decay, batches of 128 (12 per class, 120 items), seed 0, one thread; evaluation: each test image
queries the other test images (faiss exact search, full ranking), k-means (faiss) for NMI/AMI, 2,000 same-
and 2,000 different-class test pairs for verification accuracy (same when L2 distance < threshold).
Writes a JSON of every row and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from embeddings.training import TrainConfig, train
from embeddings.training.evaluate import THRESHOLDS

ROWS = [  # (label, loss, miner, augment, epochs-multiplier 0 for untrained)
    ("untrained", "triplet", None, False, 0),
    ("center loss (+ softmax)", "center", None, False, 1),
    ("center loss (+ softmax) + aug", "center", None, True, 1),
    ("triplet (semi-hard)", "triplet", "semihard", False, 1),
    ("triplet (semi-hard) + aug", "triplet", "semihard", True, 1),
    ("contrastive pairs (siamese)", "contrastive", None, False, 1),
]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--train-limit", type=int, default=10000)
    p.add_argument("--test-limit", type=int, default=5000)
    p.add_argument("--arch", default="small_cnn")
    p.add_argument("--dim", type=int, default=50)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/train_fashion_mnist.json"))
    p.add_argument("--checkpoints", type=Path, default=None, help="folder to keep each row's checkpoint in")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    rows = []
    t_all = time.perf_counter()
    for label, loss, miner, augment, mult in ROWS:
        t0 = time.perf_counter()
        config = TrainConfig(data="fashion-mnist", arch=args.arch, loss=loss, miner=miner, dim=args.dim,
                             epochs=args.epochs * mult, augment=augment, train_limit=args.train_limit,
                             test_limit=args.test_limit, seed=0, threads=1,
                             thresholds=THRESHOLDS)  # the README's fixed columns (the default is quantiles)
        result = train(config, log=lambda m, label=label: print(f"  [{label}] {m}", flush=True))
        seconds = time.perf_counter() - t0
        if args.checkpoints is not None:
            from embeddings.training import save_checkpoint

            save_checkpoint(result, args.checkpoints / f"{label.split(' (')[0].replace(' ', '_')}"
                                                       f"{'_aug' if augment else ''}.pt")
        rows.append({"row": label, "loss": loss, "miner": miner, "augment": augment, "epochs": config.epochs,
                     "train_seconds": round(result.train_s, 1), "total_seconds": round(seconds, 1),
                     "epoch_losses": result.epoch_losses, "metrics": result.metrics})
        m = result.metrics
        print(f"{label}: P@1 {m['p_at_1']:.4f} R@1 {m['class_recall_at_1']:.4f} MAP@R {m['map_at_r']:.4f} "
              f"NMI {m['nmi']:.4f} ({seconds:.0f} s)", flush=True)
    total = time.perf_counter() - t_all
    doc = {"settings": {"data": "fashion-mnist (Debian dataset-fashion-mnist)", "arch": args.arch, "dim": args.dim,
                        "epochs": args.epochs, "train_limit": args.train_limit, "test_limit": args.test_limit,
                        "batch_size": 128, "lr": 1e-3, "seed": 0, "threads": 1, "reference": "test (leave-one-out)"},
           "host": {"python": platform.python_version(), "torch": str(torch.__version__),
                    "machine": platform.machine(), "processor": platform.processor()},
           "total_seconds": round(total, 1), "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print()
    print("| model | P@1 | P@5 | R@1 (hits/R) | Recall@1 | Recall@8 | MAP | MAP@R | MRR | NMI | AMI | best verif. acc. | train s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        m = r["metrics"]
        print(f"| {r['row']} | {m['p_at_1']:.4f} | {m['p_at_5']:.4f} | {m['class_recall_at_1']:.4f} | "
              f"{m['recall_at_1']:.4f} | {m['recall_at_8']:.4f} | {m['map']:.4f} | {m['map_at_r']:.4f} | "
              f"{m['mrr']:.4f} | {m['nmi']:.4f} | {m['ami']:.4f} | {m['verification_best']['accuracy']:.4f} "
              f"(t={m['verification_best']['threshold']:.2f}) | {r['train_seconds']:.0f} |")
    thresholds = list(rows[-1]["metrics"]["verification"])
    print()
    print("Verification accuracy (same class when L2 distance < t; 2,000 + 2,000 test pairs):")
    print("| model | " + " | ".join(f"t={t}" for t in thresholds) + " |")
    print("|---|" + "---|" * len(thresholds))
    for r in rows:
        print(f"| {r['row']} | " + " | ".join(f"{r['metrics']['verification'][t]:.4f}" for t in thresholds) + " |")
    print(f"\ntotal {total:.0f} s; wrote {args.out}")


if __name__ == "__main__":
    main()
