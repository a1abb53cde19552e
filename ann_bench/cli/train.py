"""``ann-bench train``: metric-learning training of an embedder; the checkpoint runs in ``ann-bench embed``."""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.markup import escape
from rich.table import Table

from ann_bench.cli.console import err, out
from ann_bench.cli.options import SEED, THREADS, force_option

class EpochProgress:
    """A bar per epoch on stderr: batches done / total, the running mean loss, items per second and the ETA;
    the trainer's log lines print above it."""

    def __init__(self, epochs: int):
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                   TimeRemainingColumn)

        self.epochs = epochs
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("loss {task.fields[loss]}"), TextColumn("{task.fields[rate]}"),
                                 TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=err,
                                 transient=True)
        self.task = None
        self.epoch = -1
        self.items = 0
        self.losses: list[float] = []
        self.started = 0.0

    def __enter__(self) -> EpochProgress:
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()

    def log(self, message: str) -> None:
        (self.progress.console if self.task is not None else err).print(escape(message), soft_wrap=True)

    def step(self, epoch: int, step: int, steps: int, items: int, loss: float) -> None:
        import time

        if epoch != self.epoch:
            if self.task is not None:
                self.progress.remove_task(self.task)
            self.progress.start()
            self.epoch, self.items, self.losses, self.started = epoch, 0, [], time.perf_counter()
            self.task = self.progress.add_task(f"epoch {epoch + 1}/{self.epochs}", total=steps, loss="-", rate="")
        self.items += items
        self.losses.append(loss)
        elapsed = max(time.perf_counter() - self.started, 1e-9)
        self.progress.update(self.task, completed=step, loss=f"{sum(self.losses) / len(self.losses):.4f}",
                             rate=f"{self.items / elapsed:,.0f} items/s")


_LOSSES = ("triplet, contrastive, multi-similarity, circle, lifted-structure, supcon, arcface, cosface, "
           "proxy-anchor, proxy-nca, normalized-softmax, soft-triple, center, softmax")
_MINERS = "semihard, hard, all, batch-hard, multi-similarity, pair-margin, none"


@click.command()
@click.option("--data", required=True,
              help="fashion-mnist (Debian dataset-fashion-mnist), digits (scikit-learn), an image folder (one "
                   "subfolder per class), an IDX image file with its labels, or a labelled .tsv/.csv of texts.")
@click.option("--arch", default="small_cnn", show_default=True,
              help="small_cnn, mobilenet_v2 (images; from scratch) or mlp (a head over frozen MiniLM features "
                   "for text, or over .npy/IDX features).")
@click.option("--loss", default="triplet", show_default=True, help=f"One of: {_LOSSES}.")
@click.option("--miner", default=None, help=f"For tuple losses: {_MINERS} [none].")
@click.option("--dim", type=int, default=50, show_default=True, help="Embedding dimension (L2-normalised).")
@click.option("--epochs", type=int, default=10, show_default=True, help="Epochs (0: the untrained model).")
@click.option("--lr", type=float, default=1e-3, show_default=True,
              help="Adam learning rate (cosine decay; per-class loss parameters get 10x).")
@click.option("--batch-size", type=int, default=128, show_default=True, help="Items per batch.")
@click.option("--m-per-class", type=int, default=None,
              help="Items of each class in a batch [batch-size // classes, at least 2].")
@click.option("--steps-per-epoch", type=int, default=None, help="Batches per epoch [train items / batch-size].")
@click.option("--augment/--no-augment", default=False, show_default=True,
              help="Images: random resized crop, horizontal flip, rotation, random erasing.")
@click.option("--split", default="samples", show_default=True,
              help="samples (Fashion-MNIST: its own train/test files; others: a stratified --test-size share) or "
                   "classes (first half of the classes train, the rest are unseen test classes).")
@click.option("--test-size", type=float, default=0.2, show_default=True,
              help="Test share for --split samples (not Fashion-MNIST).")
@click.option("--train-limit", type=int, default=None, help="Train on a random subset of this many items.")
@click.option("--test-limit", type=int, default=None, help="Evaluate on a random subset of this many items.")
@click.option("--image-size", type=int, default=None, help="Resize images to N x N [the first image's size].")
@click.option("--center-weight", type=float, default=0.01, show_default=True, help="lambda of --loss center.")
@click.option("--center-alpha", type=float, default=0.5, show_default=True,
              help="Update rate of the class centers (--loss center).")
@click.option("--reference", default="test", show_default=True,
              help="Evaluation database: test (each test item against the other test items) or train.")
@click.option("--baseline/--no-baseline", default=False, show_default=True,
              help="Also evaluate the untrained model and print it beside the trained one.")
@click.option("--label-column", default=None, help="Label column of a .tsv/.csv [label].")
@click.option("--text-column", default=None, help="Text column of a .tsv/.csv [text, or the first other].")
@click.option("--labels", "labels_file", default=None, metavar="FILE",
              help="Labels (.npy or IDX, one per item) for a .npy or IDX --data without labels of its own (e.g. "
                   "features computed elsewhere).")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda or cuda:N (as embed).")
@click.option("--thresholds", default=None, metavar="T1,T2,...",
              help="Verification thresholds (L2 distances between unit embeddings, 0..2) [the 10/25/50/75/90 % "
                   "quantiles of the test pairs' distances].")
@click.option("--seed", type=SEED, default=0, show_default=True, help="Seed of the split, the weights, the batches.")
@click.option("--threads", type=THREADS, default=1, show_default=True, help="torch and faiss threads.")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The checkpoint to write (.pt); its metrics go beside it as NAME.metrics.json.")
@click.option("--json", "as_json", is_flag=True, help="Print the metrics as JSON instead of a table.")
@force_option
def train(data: str, arch: str, loss: str, miner: str | None, dim: int, epochs: int, lr: float, batch_size: int,
          m_per_class: int | None, steps_per_epoch: int | None, augment: bool, split: str, test_size: float,
          train_limit: int | None, test_limit: int | None, image_size: int | None, center_weight: float,
          center_alpha: float, reference: str, baseline: bool, label_column: str | None, text_column: str | None,
          labels_file: str | None, device: str, thresholds: str | None, seed: int, threads: int, output: Path,
          as_json: bool, force: bool) -> None:
    """Train an embedder with a metric-learning loss, evaluate it (Precision@k, Recall@K, MAP, MAP@R, MRR,
    NMI, AMI, verification accuracy) and write a checkpoint that `ann-bench embed --model` runs."""
    from ann_bench.atomic import ensure_writable_dir
    from ann_bench.errors import InputError, require

    require("torch", "pytorch_metric_learning", purpose="`ann-bench train`")
    from embeddings.training.trainer import (
        TrainConfig,
        metrics_path,
        metrics_table_rows,
        save_checkpoint,
    )
    from embeddings.training.evaluate import parse_thresholds
    from embeddings.training.trainer import train as run_training

    config = TrainConfig(data=data, arch=arch, loss=loss, miner=None if miner in (None, "none") else miner, dim=dim,
                         epochs=epochs, lr=lr, batch_size=batch_size, m_per_class=m_per_class,
                         steps_per_epoch=steps_per_epoch, augment=augment, split=split, test_size=test_size,
                         train_limit=train_limit, test_limit=test_limit, image_size=image_size,
                         center_weight=center_weight, center_alpha=center_alpha, reference=reference,
                         baseline=baseline, seed=seed, threads=threads, label_column=label_column,
                         text_column=text_column, labels=labels_file, device=device,
                         thresholds=parse_thresholds(thresholds))
    config.check()
    from ann_bench.outputs import check_derived, check_name, check_output

    output = check_name(output)
    if output.is_dir():
        raise InputError(f"output {str(output)!r} is a directory; give a file name such as model.pt")
    data_file = Path(data).expanduser() if Path(data).expanduser().is_file() else None
    # --labels is first opened under the epoch progress bar: a name the file system refuses is one line here
    labels_path = check_name(labels_file, "--labels") if labels_file is not None else None
    check_output(output, "checkpoint", inputs=(data_file, labels_path), force=force)
    # NAME.metrics.json: a file the user did not name, so never over one ann-bench did not write (even with --force)
    check_derived(metrics_path(output), "train-metrics", output, inputs=(data_file, labels_path))
    ensure_writable_dir(output)
    with EpochProgress(epochs) as bar:
        result = run_training(config, log=bar.log, on_step=bar.step)
    ckpt, mpath = save_checkpoint(result, output)
    if as_json:
        out.print_json(json.dumps({"checkpoint": str(ckpt), "metrics_file": str(mpath), "metrics": result.metrics,
                                   "untrained_metrics": result.baseline, "epoch_losses": result.epoch_losses,
                                   "train_seconds": round(result.train_s, 2)}))
        return
    meta = result.checkpoint["meta"]
    out.print(f"[italic]{arch} / {loss}{' + ' + config.miner if config.miner else ''} on {escape(data)}: "
              f"{meta['n_test']:,} test items vs {reference}[/]", soft_wrap=True)  # a line, not a centred title
    table = Table()
    table.add_column("metric")
    table.add_column("trained", justify="right")
    if result.baseline is not None:
        table.add_column("untrained", justify="right")
    for row in metrics_table_rows(result.metrics, result.baseline):
        table.add_row(*row)
    out.print(table)
    out.print(f"wrote {escape(str(ckpt))} ({ckpt.stat().st_size / 1024:,.0f} KiB) and {escape(str(mpath))}; "
              f"trained {result.train_s:.1f} s; embed with: ann-bench embed --model {escape(str(ckpt))} --input ...",
              soft_wrap=True)
