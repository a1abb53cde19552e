"""``ann-bench report``: one self-contained HTML file with the plots (interactive, or PNG with ``--static``) and
tables of stored results."""

from __future__ import annotations

from pathlib import Path

import click

from rich.markup import escape

from ann_bench.cli.console import out
from ann_bench.cli.options import dataset_filter, force_option, results_option
from ann_bench.outputs import check_output
from ann_bench.report.html import build_report
from ann_bench.bench.results import ResultStore


@click.command()
@click.option("--dataset", default=None, help="Only this dataset (file, name or content hash) [default: all].")
@click.option("--backend", default=None, help="Only this backend.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Output HTML file.")
@click.option("--static", "static", is_flag=True,
              help="PNG plots instead of interactive ones: a file of a few hundred kB instead of about 5 MB "
                   "(plotly's JavaScript is inlined), for printing or mail.")
@force_option
@results_option
def report(dataset: str | None, backend: str | None, output: Path, static: bool, force: bool,
           results_path: Path) -> None:
    """One self-contained HTML file (opens offline from disk; nothing is fetched): per dataset its facts, the
    Pareto plots (recall against QPS, build time, index size, p99 latency, label metrics), the fastest
    configuration per recall target, the Pareto-optimal configurations per backend, a filterable, sortable table
    of every result; then hosts and library versions. The plots are interactive (about 5 MB: plotly's
    JavaScript is inlined): hover a point for its parameters, click a legend entry to hide a backend."""
    check_output(output, "report", inputs=(results_path,), force=force)
    with ResultStore(results_path, create=False) as store:
        records = store.records(dataset=dataset_filter(dataset), backend=backend)
        apart = [r for r in store.records(dataset=dataset_filter(dataset), backend=backend, filter_spec=None,
                                          stream=None) if r.filter_spec or r.stream_runbook]
    build_report(records, output, source=str(results_path), static=static, apart=apart)
    out.print(f"wrote {escape(str(output))} ({output.stat().st_size / 1e6:.1f} MB)")
