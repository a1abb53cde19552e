"""``ann-bench plot``: recall/QPS Pareto plot of stored results."""

from __future__ import annotations

from pathlib import Path

import click

from ann_bench.cli.console import out
from ann_bench.cli.options import dataset_filter, results_option
from ann_bench.plotting import plot_recall_qps
from ann_bench.results import ResultStore


@click.command()
@click.option("--dataset", default=None, help="A dataset file, name or content hash (needed if several).")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Output file: .png, .svg or .pdf.")
@click.option("--mode", type=click.Choice(["batch", "single"]), default=None, help="[default: batch if stored]")
@click.option("-k", "k", type=int, default=None, help="Which k to plot (needed if several are stored).")
@click.option("--x-scale", type=click.Choice(["logit", "linear"]), default="logit", show_default=True,
              help="Recall axis: logit spreads out 0.9, 0.99, 0.999.")
@click.option("--raw/--no-raw", default=True, show_default=True, help="Also draw non-Pareto points, faint.")
@click.option("--backend", default=None, help="Only this backend.")
@results_option
def plot(dataset: str | None, output: Path, mode: str | None, k: int | None, x_scale: str, raw: bool,
         backend: str | None, results_path: Path) -> None:
    """Recall@k (x) against queries per second (y, log) with each backend's Pareto frontier."""
    with ResultStore(results_path, create=False) as store:
        records = store.records(dataset=dataset_filter(dataset), backend=backend)
    plot_recall_qps(records, output, mode=mode, k=k, x_scale=x_scale, raw=raw)
    out.print(f"wrote {output}")
