"""Train the ``digits-cnn`` embedder: a small CNN, triplet loss, scikit-learn's 8x8 digits. Reproducible.

    python embeddings/train_digits.py                # writes embeddings/checkpoints/digits_cnn.pt
    python embeddings/train_digits.py --out /tmp/d.pt --epochs 5

Data: the 1,797 digits of ``sklearn.datasets.load_digits`` (bundled with scikit-learn: no download), pixel
values 0..16 scaled to [0, 1] like uint8 images scaled by 1/255. A stratified 80/20 split (seed 0): the
model trains on 80 % and the held-out 20 % are scored at the end (label-aware Precision@10, Recall@1, MAP@R
with exact cosine neighbours among the training digits), stored in the checkpoint's ``meta``.

Training: pytorch-metric-learning's ``TripletMarginLoss`` (margin 0.2, on L2-normalised embeddings) with a
``TripletMarginMiner`` (semi-hard triplets), batches of 16 per class from ``MPerClassSampler``, Adam, and
one-pixel random shifts as augmentation. One thread and fixed seeds: the same torch version gives the same
weights.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from ann_bench.bench.metrics import label_metrics, map_at_r  # noqa: E402
from embeddings.cnn import CHECKPOINT_DIR, CHECKPOINT_FORMAT, SmallCNN  # noqa: E402

SEED = 0


def load_digits_split(seed: int = SEED):
    """(x_train, y_train, x_test, y_test): (n, 8, 8) float32 in [0, 1] and int64 labels, stratified 80/20."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)
    y = d.target.astype(np.int64)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.2, random_state=seed, stratify=y)
    return xtr, ytr, xte, yte


def shift(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random shifts by -1, 0 or +1 pixel in each direction (zero fill): (b, 1, 8, 8) -> (b, 1, 8, 8)."""
    b, _, h, w = x.shape
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1))
    dy = torch.randint(0, 3, (b,), generator=gen)
    dx = torch.randint(0, 3, (b,), generator=gen)
    out = torch.empty_like(x)
    for i in range(b):
        out[i] = padded[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w]
    return out


def embed(model: SmallCNN, x: np.ndarray, mean: float, std: float) -> np.ndarray:
    model.eval()
    with torch.inference_mode():
        t = (torch.from_numpy(x)[:, None] - mean) / std
        v = model(t)
    return torch.nn.functional.normalize(v, dim=1).numpy()


def evaluate(model, xtr, ytr, xte, yte, mean, std, k: int = 10) -> dict[str, float]:
    """Label metrics of the held-out digits' exact cosine neighbours among the training digits."""
    a, b = embed(model, xtr, mean, std), embed(model, xte, mean, std)
    sims = b @ a.T
    order = np.argsort(-sims, axis=1, kind="stable")
    m = label_metrics(order[:, :k], ytr, yte, k)
    m["map_at_r"] = map_at_r(order, ytr, yte)  # full depth: MAP@R exactly
    return {key: round(float(v), 4) for key, v in m.items()}


def train(epochs: int = 40, dim: int = 64, lr: float = 2e-3, seed: int = SEED, log=print) -> tuple[dict, dict]:
    from pytorch_metric_learning import distances, losses, miners, samplers

    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    xtr, ytr, xte, yte = load_digits_split(seed)
    mean, std = float(xtr.mean()), float(xtr.std())
    model = SmallCNN(in_channels=1, widths=(32, 64), dim=dim, pool=2)
    distance = distances.CosineSimilarity()
    loss_fn = losses.TripletMarginLoss(margin=0.2, distance=distance)
    miner = miners.TripletMarginMiner(margin=0.2, type_of_triplets="semihard", distance=distance)
    sampler = samplers.MPerClassSampler(ytr, m=16, batch_size=160, length_before_new_iter=len(ytr))
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    X = (torch.from_numpy(xtr)[:, None] - mean) / std
    Y = torch.from_numpy(ytr)
    gen = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    for epoch in range(epochs):
        model.train()
        ids = torch.tensor(list(iter(sampler)))
        total, batches = 0.0, 0
        for start in range(0, len(ids) - 159, 160):
            b = ids[start : start + 160]
            xb = shift(X[b], gen)
            emb = model(xb)
            loss = loss_fn(emb, Y[b], miner(emb, Y[b]))
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item()
            batches += 1
        sched.step()
        if epoch % 10 == 9 or epoch == epochs - 1:
            log(f"epoch {epoch + 1}/{epochs}: loss {total / max(batches, 1):.4f} ({time.perf_counter() - t0:.1f} s)")
    model.eval()
    scores = evaluate(model, xtr, ytr, xte, yte, mean, std)
    log(f"held-out digits ({len(yte)} queries vs {len(ytr)} train): {scores}")
    checkpoint = {
        "format": CHECKPOINT_FORMAT,
        "arch": "small_cnn",
        "config": model.config,
        "input": {"size": [8, 8], "channels": 1, "mean": [mean], "std": [std]},
        "metric": "angular",
        "normalize": True,
        "state_dict": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "meta": {
            "trained_on": "sklearn.datasets.load_digits, stratified 80/20 split (seed 0), train part",
            "loss": "pytorch-metric-learning TripletMarginLoss(margin=0.2, CosineSimilarity) + "
                    "TripletMarginMiner(semihard); MPerClassSampler(m=16, batch 160); Adam; one-pixel shifts",
            "epochs": epochs, "lr": lr, "seed": seed, "torch": str(torch.__version__),
            "held_out": scores,
        },
    }
    return checkpoint, scores


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=CHECKPOINT_DIR / "digits_cnn.pt")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args(argv)
    checkpoint, _ = train(epochs=args.epochs, dim=args.dim, seed=args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(args.out.name + ".tmp")
    torch.save(checkpoint, tmp)
    tmp.replace(args.out)
    from embeddings.base import sha256_file

    print(f"wrote {args.out} ({args.out.stat().st_size / 1024:.0f} KiB, sha256 {sha256_file(args.out)})")


if __name__ == "__main__":
    main()
