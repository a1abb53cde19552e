"""``ann-bench plot``: Pareto plot of stored results — recall (or a label metric) against QPS, build time,
index size or p99 latency."""

from __future__ import annotations

from pathlib import Path

import click
from rich.markup import escape

from ann_bench.cli.console import err, out
from ann_bench.cli.options import (filter_option, filtered_records, force_option, results_option,
                                   stored_records)
from ann_bench.outputs import check_output
from ann_bench.report.plots import Y_METRICS, latest_dataset, plot_recall_qps
from ann_bench.bench.results import ResultStore
from ann_bench.errors import InputError


@click.command()
@click.option("--dataset", default=None, help="A dataset file, name or content hash (needed if several).")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Output file: .png, .svg or .pdf.")
@click.option("-y", "--y-metric", type=click.Choice(list(Y_METRICS)), default="qps", show_default=True,
              help="Figure on y (log): qps (higher is better), build_s, index_mb, p99_ms (lower is better; "
                   "p99_ms needs single-mode results). Each backend's Pareto front follows that direction.")
@click.option("--mode", type=click.Choice(["batch", "single"]), default=None,
              help="[default: batch if stored; single for -y p99_ms]")
@click.option("-k", "k", type=int, default=None, help="Which k to plot (needed if several are stored).")
@click.option("--x-scale", type=click.Choice(["logit", "linear"]), default=None,
              help="x axis: logit spreads out recall 0.9, 0.99, 0.999 [logit for recall, linear for label metrics].")
@click.option("--raw/--no-raw", default=True, show_default=True, help="Also draw non-Pareto points, faint.")
@click.option("--backend", default=None, help="Only this backend.")
@click.option("-x", "--x-metric", default="recall", show_default=True,
              help="Figure on x: recall, recall_ab (ann-benchmarks' rule), id_recall, or a label metric of a set "
                   "with labels (precision_at_10, "
                   "recall_at_1, recall_at_10, map_at_10, mrr).")
@click.option("--annotate/--no-annotate", default=None,
              help="Label front points with the parameters that vary along their front (ef40; M32 ef40), as many "
                   "as fit without overlapping: each front's ends and knees first [on].")
@click.option("--fronts", type=click.Choice(["backend", "build"]), default="backend", show_default=True,
              help="One Pareto front per backend (over all its build configurations), or one per build "
                   "configuration (the backend's colour, a line style each).")
@click.option("--tune", "tune_log", default=None, metavar="ID|latest|PATH",
              help="Draw the trials of one `ann-bench tune` (its id, 'latest', or its log file): every setting "
                   "it measured, the fronts, and its answers starred at their targets.")
@click.option("--stream", "stream", default=None, metavar="RUNBOOK",
              help="Plot the rows of `ann-bench stream` runs of this runbook (NAME, NAME@DIGEST or @DIGEST prefix) "
                   "over its steps: recall, QPS, index size and live items per backend, the rebuild starred.")
@filter_option
@force_option
@results_option
def plot(dataset: str | None, output: Path, y_metric: str, mode: str | None, k: int | None, x_scale: str | None,
         raw: bool, backend: str | None, x_metric: str, annotate: bool | None, fronts: str, tune_log: str | None,
         stream: str | None, filter_spec: str | None, force: bool, results_path: Path) -> None:
    """Recall@k (or --x-metric) on x against queries per second (or --y-metric) with each backend's Pareto
    frontier bold and every configuration faint. For a label metric the exact neighbours' value is dashed.

    With --filter naming several filters (selectivity=0.5,0.1,0.01) one panel per filter on one QPS scale; with
    --stream the runbook's steps."""
    check_output(output, "plot", inputs=(results_path,), force=force)
    if stream is not None and (filter_spec is not None or tune_log is not None):
        raise InputError("--stream plots a runbook's steps; it takes neither --filter nor --tune")
    if filter_spec is not None and tune_log is not None:
        raise InputError("--tune draws a tune's trials, which are unfiltered; drop --filter")
    marks = {}
    with ResultStore(results_path, create=False) as store:
        if stream is not None:
            from ann_bench.cli.results import _stream_records
            from ann_bench.report.panels import plot_stream

            records = _stream_records(store, dataset, backend, stream)
            if k is not None:
                records = [r for r in records if r.k == k]
            plot_stream(records, output, mode=mode)
            out.print(f"wrote {escape(str(output))}")
            return
        if filter_spec is not None:
            from ann_bench.bench.filters import parse_filters

            records = filtered_records(store, dataset, filter_spec, backend)
            if dataset is None:
                records, note = latest_dataset(records)
                if note:
                    err.print(f"[yellow]note:[/] {escape(note)}", soft_wrap=True)
            if len(parse_filters([filter_spec])) > 1:
                from ann_bench.report.panels import plot_filter_panels

                plot_filter_panels(records, output, mode=mode, k=k, raw=raw)
                out.print(f"wrote {escape(str(output))}")
                return
        elif tune_log is not None:
            from ann_bench.bench.tune import find_log, read_log, tune_marks

            log = read_log(find_log(results_path, tune_log))
            records, marks = tune_marks(log, store.records(dataset=log["dataset_hash"], backend=backend))
            if mode is None:
                mode = log.get("mode")
        else:
            records = stored_records(store, dataset, backend=backend)
            if dataset is None:
                records, note = latest_dataset(records)
                if note:
                    err.print(f"[yellow]note:[/] {escape(note)}", soft_wrap=True)
    plot_recall_qps(records, output, mode=mode, k=k, x_scale=x_scale, raw=raw, x_metric=x_metric, y_metric=y_metric,
                    annotate=annotate, fronts=fronts, **marks)
    out.print(f"wrote {escape(str(output))}")
