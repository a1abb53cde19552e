"""The training loop of ``ann-bench train``: data, model, loss (+ miner), m-per-class batches, optional
augmentation; then the evaluation and a checkpoint that ``ann-bench embed --model`` loads.

Deterministic for a seed on one thread (``threads``): seeds for torch, numpy and the batch sampler, and torch's
deterministic algorithms during training. Adam with a cosine learning-rate decay over all steps.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ann_bench.errors import InputError
from embeddings.training import evaluate as E
from embeddings.training.center_loss import SoftmaxCenterLoss
from embeddings.training.data import SPLITS, TrainData, load_data
from embeddings.training.losses import check_loss, make_loss, make_miner

ARCHS = {"small_cnn": "image", "mobilenet_v2": "image", "mlp": "text or array"}


@dataclass
class TrainConfig:
    """Everything a training run depends on (stored in the checkpoint's meta)."""

    data: str
    arch: str = "small_cnn"
    loss: str = "triplet"
    miner: str | None = None
    dim: int = 50
    epochs: int = 10
    lr: float = 1e-3
    batch_size: int = 128
    m_per_class: int | None = None  # default: batch_size // classes (every class in every batch), >= 2
    steps_per_epoch: int | None = None  # default: ceil(train items / batch_size)
    augment: bool = False
    split: str = "samples"
    test_size: float = 0.2
    train_limit: int | None = None
    test_limit: int | None = None
    image_size: int | None = None  # default: the first training image's size
    center_weight: float = 0.01  # lambda of the center loss
    center_alpha: float = 0.5  # the centers' update rate
    reference: str = "test"
    baseline: bool = False  # also evaluate the untrained model
    seed: int = 0
    threads: int = 1
    label_column: str | None = None
    text_column: str | None = None
    labels: str | None = None  # a labels file (.npy or IDX) for a .npy/IDX --data without labels of its own
    device: str = "cpu"  # cpu, cuda or cuda:N
    thresholds: tuple[float, ...] | None = None  # verification thresholds; None: quantiles of the distances

    def check(self) -> None:
        if self.arch not in ARCHS:
            raise InputError(f"unknown --arch {self.arch!r}; choose one of: {', '.join(ARCHS)}")
        check_loss(self.loss, self.miner)
        for name, value, low in (("--dim", self.dim, 1), ("--epochs", self.epochs, 0),
                                 ("--batch-size", self.batch_size, 2), ("--threads", self.threads, 1)):
            if value < low:
                raise InputError(f"{name} must be >= {low}, got {value}")
        if not self.lr > 0:
            raise InputError(f"--lr must be > 0, got {self.lr}")
        if self.steps_per_epoch is not None and self.steps_per_epoch < 1:
            raise InputError(f"--steps-per-epoch must be >= 1, got {self.steps_per_epoch}")
        if self.image_size is not None and self.image_size < 4:
            raise InputError(f"--image-size must be >= 4, got {self.image_size}")
        if self.reference not in E.REFERENCES:
            raise InputError(f"unknown --reference {self.reference!r}; choose one of: {', '.join(E.REFERENCES)}")
        if self.split not in SPLITS:
            raise InputError(f"unknown --split {self.split!r}; choose one of: {', '.join(SPLITS)}")
        if self.center_weight < 0 or self.center_alpha <= 0:
            raise InputError("--center-weight must be >= 0 and --center-alpha > 0")
        E.check_thresholds(self.thresholds)
        from embeddings.base import check_device

        check_device(self.device)


@dataclass
class TrainResult:
    checkpoint: dict[str, Any]
    metrics: dict[str, Any]
    baseline: dict[str, Any] | None
    epoch_losses: list[float]
    step_losses: list[float] = field(repr=False)
    train_s: float = 0.0
    eval_s: float = 0.0


# ---- inputs -----------------------------------------------------------------------------------------------
def image_tensors(train_images, test_images, size: int | None):
    """(train, test) normalised (n, C, H, W) tensors and the ImageSpec (size, channels, mean, std) that the
    checkpoint stores, so ``ann-bench embed`` preprocesses exactly the same way."""
    import torch

    from embeddings.base import ImageSpec, images_to_tensor

    first = np.asarray(train_images[0])
    hw = (size, size) if size else (int(first.shape[0]), int(first.shape[1]))
    rgb = any(np.asarray(im).ndim == 3 for im in (train_images if isinstance(train_images, list) else [first]))
    channels = 3 if rgb else 1
    raw = ImageSpec(size=hw, channels=channels, mean=(0.0,) * channels, std=(1.0,) * channels)

    def convert(images):
        return torch.cat([images_to_tensor(images[i : i + 4096], raw) for i in range(0, len(images), 4096)])

    xtr, xte = convert(train_images), convert(test_images)
    mean = xtr.mean(dim=(0, 2, 3))
    std = xtr.std(dim=(0, 2, 3)).clamp(min=1e-6)
    spec = ImageSpec(size=hw, channels=channels, mean=tuple(float(m) for m in mean),
                     std=tuple(float(s) for s in std))
    norm = (lambda x: (x - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1))
    return norm(xtr), norm(xte), spec


def feature_tensors(data: TrainData, log: Callable[[str], None]):
    """(train, test) float tensors of frozen features and the checkpoint's input spec (MiniLM for text)."""
    import torch

    from embeddings.mlp import compute_features, feature_extractor

    if data.kind == "text":
        extractor, spec = feature_extractor("minilm"), {"kind": "text", "features": "minilm"}
        log(f"computing frozen MiniLM features of {len(data.x_train) + len(data.x_test):,} texts")
    else:
        extractor = None
        spec = {"kind": "array", "features": "identity", "dim": int(np.asarray(data.x_train).shape[1])}
    tr, te = (torch.from_numpy(compute_features(extractor, x)) for x in (data.x_train, data.x_test))
    return tr, te, spec


def build_model(arch: str, dim: int, in_shape: tuple[int, ...]):
    """The architecture for inputs of ``in_shape`` ((C, H, W) images or (d,) features)."""
    from embeddings.cnn import SmallCNN
    from embeddings.mlp import MLPHead
    from embeddings.mobilenet import MobileNetV2

    if arch == "small_cnn":
        widths = (32, 64) if min(in_shape[1:]) < 32 else (32, 64, 128)
        return SmallCNN(in_channels=in_shape[0], widths=widths, dim=dim, pool=2)
    if arch == "mobilenet_v2":
        return MobileNetV2(in_channels=in_shape[0], dim=dim)
    return MLPHead(in_dim=in_shape[0], hidden=(256,), dim=dim)


def embed_tensor(model, X, batch: int = 512, device: str = "cpu") -> np.ndarray:
    """Unit-norm embeddings (n, dim) float32 of the input tensor X (on the CPU; batches go to ``device``), the
    module in eval mode."""
    import torch

    model.eval()
    with torch.inference_mode():
        out = [torch.nn.functional.normalize(model(X[i : i + batch].to(device)), dim=1).cpu()
               for i in range(0, len(X), batch)]
    return torch.cat(out).numpy().astype(np.float32)


# ---- training ---------------------------------------------------------------------------------------------
def train(config: TrainConfig, log: Callable[[str], None] | None = None, data: TrainData | None = None,
          on_step: Callable[..., None] | None = None) -> TrainResult:
    """Train per ``config`` (``data`` overrides loading ``config.data``), evaluate, build the checkpoint.

    ``on_step(epoch, step, steps, items, loss)``, when given, is called after every batch (a progress bar)."""
    import copy

    import torch

    import embeddings.training.augment as A

    log = log or (lambda _msg: None)
    config.check()
    torch.manual_seed(config.seed)
    torch.set_num_threads(config.threads)
    try:
        import faiss

        faiss.omp_set_num_threads(config.threads)
    except ImportError:
        pass
    if data is None:
        data = load_data(config.data, split=config.split, test_size=config.test_size, seed=config.seed,
                         train_limit=config.train_limit, test_limit=config.test_limit,
                         label_column=config.label_column, text_column=config.text_column,
                         labels=config.labels)
    wants = ARCHS[config.arch]
    if (data.kind == "image") != (wants == "image"):
        fit = [a for a, k in ARCHS.items() if (k == "image") == (data.kind == "image")]
        raise InputError(f"--arch {config.arch} takes {wants} data but --data {config.data} holds {data.kind} items; "
                         f"use --arch {' or '.join(fit)}")
    if data.kind == "image":
        xtr, xte, image_spec = image_tensors(data.x_train, data.x_test, config.image_size)
        input_spec = image_spec.to_dict()
    else:
        xtr, xte, input_spec = feature_tensors(data, log)
    # Training labels as 0..C-1 (classification losses index their classes by them).
    train_classes, ytr_codes = np.unique(data.y_train, return_inverse=True)
    ytr = torch.from_numpy(ytr_codes.astype(np.int64).reshape(-1))
    n_classes = len(train_classes)
    log(f"data: {data.description}: {len(ytr):,} train items ({n_classes} classes), {len(data.y_test):,} test "
        f"items ({len(np.unique(data.y_test))} classes), split by {data.split}")

    device = config.device
    model = build_model(config.arch, config.dim, tuple(xtr.shape[1:]))
    untrained = copy.deepcopy(model) if config.baseline else None
    model.to(device)
    loss_options = {"center_weight": config.center_weight, "center_alpha": config.center_alpha}
    loss_fn = make_loss(config.loss, n_classes, config.dim, loss_options).to(device)
    miner = make_miner(config.miner)

    def evaluation(net, thresholds) -> dict[str, Any]:
        test = embed_tensor(net, xte, device=device)
        train_emb = embed_tensor(net, xtr, device=device) if config.reference == "train" else None
        return E.evaluate(test, data.y_test, train_emb, data.y_train, reference=config.reference, seed=config.seed,
                          thresholds=thresholds)

    groups = [{"params": list(model.parameters()), "lr": config.lr}]
    loss_params = [p for p in loss_fn.parameters() if p.requires_grad]
    if loss_params:
        groups.append({"params": loss_params, "lr": config.lr * 10})
    opt = torch.optim.Adam(groups)
    m = config.m_per_class or max(2, config.batch_size // n_classes)
    steps = config.steps_per_epoch or max(1, math.ceil(len(ytr) / config.batch_size))
    total = steps * config.epochs
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / max(total, 1))))
    augment = A.Augment() if config.augment and data.kind == "image" else None
    gen = torch.Generator().manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    from embeddings.training.sampler import m_per_class_batches

    epoch_losses: list[float] = []
    step_losses: list[float] = []
    deterministic = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True, warn_only=device != "cpu")  # CUDA: some kernels have no such mode
    t0 = time.perf_counter()
    try:
        for epoch in range(config.epochs):
            model.train()
            losses = []
            for step, ids in enumerate(m_per_class_batches(ytr_codes, m, config.batch_size, steps, rng)):
                idx = torch.from_numpy(ids)
                xb, yb = xtr[idx], ytr[idx]
                if augment is not None:
                    xb = augment(xb, gen)
                xb, yb = xb.to(device), yb.to(device)
                emb = model(xb)
                loss = loss_fn(emb, yb, miner(emb, yb)) if miner is not None else loss_fn(emb, yb)
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
                if isinstance(loss_fn, SoftmaxCenterLoss):
                    loss_fn.after_step(emb.detach(), yb)
                losses.append(float(loss.item()))
                if on_step is not None:
                    on_step(epoch, step + 1, steps, len(ids), losses[-1])
            step_losses += losses
            epoch_losses.append(float(np.mean(losses)))
            log(f"epoch {epoch + 1}/{config.epochs}: loss {epoch_losses[-1]:.4f} "
                f"({time.perf_counter() - t0:.1f} s)")
    finally:
        torch.use_deterministic_algorithms(deterministic)
    train_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    metrics = evaluation(model, config.thresholds)
    eval_s = time.perf_counter() - t1
    log(f"evaluated {len(data.y_test):,} test items in {eval_s:.1f} s")
    baseline = None
    if untrained is not None:  # the untrained weights, at the trained model's verification thresholds
        baseline = evaluation(untrained.to(device), [float(t) for t in metrics["verification"]])
        log(f"untrained: Precision@1 {baseline['p_at_1']:.4f}, MAP@R {baseline['map_at_r']:.4f}")

    import pytorch_metric_learning

    meta = {
        "trained_with": "ann-bench train",
        "data": data.description, "split": data.split, "classes": [str(c) for c in data.classes],
        "train_classes": [str(data.classes[int(c)]) for c in train_classes],
        "n_train": len(ytr), "n_test": len(data.y_test),
        "config": {k: v for k, v in asdict(config).items()}, "m_per_class": int(m), "steps_per_epoch": int(steps),
        "epoch_losses": [round(v, 6) for v in epoch_losses], "train_seconds": round(train_s, 2),
        "eval_seconds": round(eval_s, 2), "metrics": metrics,
        **({"untrained_metrics": baseline} if baseline is not None else {}),
        "torch": str(torch.__version__), "pytorch_metric_learning": str(pytorch_metric_learning.__version__),
    }
    from embeddings.cnn import CHECKPOINT_FORMAT

    from ann_bench.outputs import CHECKPOINT_MARKER

    checkpoint = {  # "ann_bench" first: the marker `train -o` recognises without unpickling (ann_bench.outputs)
        "ann_bench": dict(CHECKPOINT_MARKER), "format": CHECKPOINT_FORMAT, "arch": config.arch, "config": dict(model.config), "input": input_spec,
        "metric": "angular", "normalize": True,
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}, "meta": meta,
    }
    return TrainResult(checkpoint, metrics, baseline, epoch_losses, step_losses, train_s, eval_s)


def metrics_path(checkpoint_path: str | Path) -> Path:
    """Where the metrics of a checkpoint go: beside it, ``NAME.metrics.json``."""
    p = Path(checkpoint_path).expanduser()
    return p.with_name(p.stem + ".metrics.json")


def save_checkpoint(result: TrainResult, path: str | Path) -> tuple[Path, Path]:
    """Write the checkpoint (torch.save, atomically) and its metrics JSON beside it; returns both paths."""
    import torch

    from ann_bench.atomic import atomic_path

    from ann_bench.outputs import check_derived

    path = Path(path).expanduser()
    mpath = check_derived(metrics_path(path), "train-metrics", path)  # again: training takes a while
    with atomic_path(path) as tmp:
        torch.save(result.checkpoint, tmp)
    from ann_bench.outputs import METRICS_MARKER

    doc = {"ann_bench": dict(METRICS_MARKER), "checkpoint": str(path), "metrics": result.metrics, "untrained_metrics": result.baseline,
           "epoch_losses": result.epoch_losses, "train_seconds": round(result.train_s, 2),
           "eval_seconds": round(result.eval_s, 2), "meta": {k: v for k, v in result.checkpoint["meta"].items()
                                                            if k not in ("metrics", "untrained_metrics")}}
    with atomic_path(mpath) as tmp:
        tmp.write_text(json.dumps(doc, indent=2) + "\n")
    return path, mpath


def metrics_table_rows(metrics: dict[str, Any], baseline: dict[str, Any] | None = None) -> list[tuple[str, ...]]:
    """(label, value[, untrained]) rows for printing: the retrieval and clustering metrics, then verification."""
    rows = []
    for key, label in E.TABLE_ROWS:
        rows.append((label, f"{metrics[key]:.4f}", *((f"{baseline[key]:.4f}",) if baseline else ())))
    for t, acc in metrics["verification"].items():
        rows.append((f"verification acc. @ L2 < {t}", f"{acc:.4f}",
                     *((f"{baseline['verification'][t]:.4f}",) if baseline else ())))
    best = metrics["verification_best"]
    rows.append((f"verification acc. (best threshold {best['threshold']:.3f})", f"{best['accuracy']:.4f}",
                 *((f"{baseline['verification_best']['accuracy']:.4f}",) if baseline else ())))
    return rows
