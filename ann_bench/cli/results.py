"""``ann-bench results``: the stored measurements as a table, CSV or JSON."""

from __future__ import annotations

from pathlib import Path

import click
from rich.markup import escape

from ann_bench.atomic import atomic_path
from ann_bench.cli.console import err, out
from ann_bench.cli.options import (by_strategy, filtered_records, dataset_filter, filter_option, filtered_note, force_option,
                                   results_option, stored_records)
from ann_bench.errors import InputError
from ann_bench.bench.metrics import fmt_recall
from ann_bench.outputs import check_output
from ann_bench.bench.results import ResultStore, filter_records, params_str, sort_records, to_csv, to_json


@click.command()
@click.option("--dataset", default=None, help="Filter: a dataset file, name or content hash (prefix).")
@click.option("--backend", default=None, help="Filter: backend name.")
@click.option("--where", "where", multiple=True, metavar="NAME=VALUE",
              help="Filter (repeat: all must hold): backend=hnsw, impl=faiss, mode=single, k=10, threads=1, "
                   "status=failed, dataset=NAME, a build/search parameter (M=16, nprobe=8) or a figure with "
                   "=, !=, >=, <=, >, < (recall>=0.95, qps>1000).")
@click.option("--sort", "sort", default=None, metavar="[-]NAME",
              help="Sort by a column (recall, qps, p99_ms, build_s, index_bytes, backend, a parameter ...); "
                   "a leading - sorts descending. Rows without the value go last. [default: stored order]")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write to this file instead of stdout (csv/json).")
@click.option("--wide", is_flag=True, help="Every column, however wide the terminal (the table otherwise leaves out "
              "columns in a stated order to fit, and says which).")
@filter_option
@click.option("--stream", "stream", default=None, metavar="RUNBOOK",
              help="The rows of `ann-bench stream` runs of this runbook (NAME, NAME@DIGEST, or @DIGEST prefix; "
                   "'all': every runbook), step by step [default: the static rows].")
@force_option
@results_option
def results(dataset: str | None, backend: str | None, where: tuple[str, ...], sort: str | None, fmt: str,
            output: Path | None, wide: bool, filter_spec: str | None, stream: str | None, force: bool,
            results_path: Path) -> None:
    """Show stored results. CSV and JSON carry every field (pandas.read_csv / read_json read them directly).

    For sets with labels the table adds P@k (label-aware precision@k of the configuration) and exact P@k
    (that of the exact neighbours): the retrieval quality the index costs."""
    if output is not None:
        if fmt == "table":
            raise InputError(f"-o writes an export: add --format csv or --format json (the table is for the "
                             f"terminal), or drop -o {str(output)!r}")
        check_output(output, "export", inputs=(results_path,), force=force)
    with ResultStore(results_path, create=False) as store:
        if stream is not None:
            records = _stream_records(store, dataset, backend, stream)
            note = None
        else:
            records = (stored_records(store, dataset, backend=backend) if filter_spec is None else
                       filtered_records(store, dataset, filter_spec, backend, apart=False))
            note = filtered_note(store, dataset, filter_spec)
            runbooks = store.runbooks(dataset_filter(dataset))
            if runbooks:
                note = ((note + "; ") if note else "") + (
                    f"rows of stream runbooks are not shown ({', '.join(runbooks)}): add --stream "
                    f"{runbooks[0].partition('@')[0]} to see them")
    if stream is not None and fmt == "table":
        from ann_bench.cli.stream import stream_table

        records = filter_records(records, where) if where else records
        records = sort_records(records, sort) if sort else records
        out.print(stream_table(records, str(results_path)).render(out.width, wide=wide))
        return
    if fmt == "table":
        records = by_strategy(records)
    records = filter_records(records, where) if where else records
    records = sort_records(records, sort) if sort else records
    if fmt == "table":
        out.print(results_table(records, str(results_path)).render(out.width, wide=wide))
        contended = [r for r in records if r.contended]
        if contended:
            err.print(f"[yellow]contended:[/] {len(contended)} of these row(s) were timed while another process had "
                      "the CPU (CPU share below 0.9; the cpu_share column of --format csv/json): their QPS is the "
                      "machine's, not the library's; re-measure them with `ann-bench run … --remeasure-contended` on a quieter "
                      "machine", soft_wrap=True)
        if note:
            err.print(f"[yellow]note:[/] {escape(note)}", soft_wrap=True)
        return
    text = to_csv(records) if fmt == "csv" else to_json(records)
    if output is None:
        click.echo(text, nl=fmt == "json")
    else:
        with atomic_path(output) as tmp:
            tmp.write_text(marked_export(text, fmt), encoding="utf-8")
        out.print(f"wrote {len(records)} result(s) to {escape(str(output))}")


def _stream_records(store, dataset: str | None, backend: str | None, stream: str) -> list:
    """The stored rows of runbook ``stream`` ('all': every runbook); InputError naming the stored runbooks when
    none matches."""
    key = dataset_filter(dataset)
    wanted = None if stream == "all" else stream
    records = [r for r in store.records(dataset=key, backend=backend, filter_spec=None, stream=wanted)
               if r.stream_runbook]
    if not records:
        held = store.runbooks(key)
        raise InputError(f"no stream rows of runbook {stream!r} in {str(store.path)!r}; "
                         + (f"it holds {', '.join(held)}" if held else "run `ann-bench stream --runbook FILE` first"))
    return records


def marked_export(text: str, fmt: str) -> str:
    """The export ``text`` (CSV or JSON of every row) with ann-bench's marker: a last column ``ann_bench`` (CSV),
    a key ``ann_bench`` in each row (JSON), valued ``results-export VERSION``. pandas reads either as before (one
    more column); ``results -o`` replaces a file without --force only when it carries this marker."""
    import csv
    import io
    import json

    from ann_bench.outputs import EXPORT_COLUMN, EXPORT_TAG

    if fmt == "json":
        rows = [{**row, EXPORT_COLUMN: EXPORT_TAG} for row in json.loads(text)]
        return json.dumps(rows, indent=1) + "\n"
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    for i, row in enumerate(csv.reader(io.StringIO(text, newline=""))):
        writer.writerow([*row, EXPORT_COLUMN if i == 0 else EXPORT_TAG])
    return buf.getvalue()


def _fmt_metric(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def results_table(records, source: str):
    """The stored rows as a :class:`FitTable`: short parameter forms, constant columns in the title, optional
    columns dropped to fit in this order: recall ab, exact P@k, p99 ms, build s, index MB, status, dataset."""
    from ann_bench.cli.tables import FitTable, params_columns

    labelled = any(f"precision_at_{r.k}" in r.label_metrics for r in records)
    table = FitTable(f"{len(records)} result(s) in {source}")
    build, search, captions = params_columns(records, lambda r: r.label())
    table.caption_lines += captions
    ok = [r.status == "ok" for r in records]
    table.add("dataset", [r.dataset_name for r in records], optional=7)
    table.add("backend", [r.label() for r in records])
    table.add("build", build)
    table.add("search", search)
    table.add("k", [str(r.k) for r in records], optional=20)
    table.add("mode", [r.mode for r in records], optional=21)
    table.add("thr", [str(r.threads) for r in records], optional=22)
    table.add("status", [r.status if o else f"[red]{escape(r.status)}[/]" for r, o in zip(records, ok)],
              optional=6, markup=True)
    table.add("recall", [fmt_recall(r.recall) if o else "-" for r, o in zip(records, ok)], numeric=True)
    table.add("recall ab", [fmt_recall(r.recall_ab) if o else "-" for r, o in zip(records, ok)], numeric=True,
              optional=1)
    table.add("QPS", [f"{r.qps:,.0f}" if o else "-" for r, o in zip(records, ok)], numeric=True)
    table.add("p99 ms", [f"{r.p99_ms:.3f}" if r.p99_ms else "-" for r in records], numeric=True, optional=3)
    table.add("build s", [f"{r.build_s:.2f}" if r.build_s else "-" for r in records], numeric=True, optional=4)
    table.add("index MB", [f"{r.index_bytes / 1e6:.1f}" if r.index_bytes else "-" for r in records], numeric=True,
              optional=5)
    if labelled:
        table.add("P@k", [_fmt_metric(r.label_metrics.get(f"precision_at_{r.k}")) for r in records], numeric=True)
        table.add("exact P@k", [_fmt_metric(r.label_metrics.get(f"exact_precision_at_{r.k}")) for r in records],
                  numeric=True, optional=2)
    return table

