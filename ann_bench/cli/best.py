"""``ann-bench best``: per backend, the configuration meeting a recall (and memory) target with the best QPS or
p99 latency, and the overall winner."""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.markup import escape

from ann_bench.report.best import best_configurations
from ann_bench.report.plots import latest_dataset
from ann_bench.cli.console import err, out
from ann_bench.cli.options import filter_option, filtered_records, results_option, stored_records
from ann_bench.report.panels import filter_order
from ann_bench.bench.metrics import fmt_recall
from ann_bench.bench.results import ResultStore, flat_dict, params_str, short_params
from ann_bench.bench.runner import parse_size


@click.command()
@click.option("--recall", type=float, required=True, help="Minimum recall@k (or --x-metric), e.g. 0.95.")
@click.option("--max-memory", default=None, metavar="SIZE",
              help="Maximum index size: the serialized index (index_bytes), not the memory a search needs (see "
                   "--max-rss); e.g. 2GB or 512MB (MB = 10^6 bytes, as the tables print; MiB = 2^20).")
@click.option("--max-rss", default=None, metavar="SIZE",
              help="Maximum peak RSS measured in the build's worker process (dataset, index and build together: "
                   "an upper bound on what building needs), e.g. 4GB.")
@click.option("--metric", type=click.Choice(["qps", "p99"]), default="qps", show_default=True,
              help="qps: highest queries per second; p99: lowest p99 latency (single-mode results).")
@click.option("--dataset", default=None, help="A dataset file, name or content hash (needed if several).")
@click.option("--mode", type=click.Choice(["batch", "single"]), default=None,
              help="[default: batch if stored; single for --metric p99]")
@click.option("-k", "k", type=int, default=None, help="Which k (needed if several are stored).")
@click.option("-x", "--x-metric", default="recall", show_default=True,
              help="The figure --recall bounds: recall, recall_ab (ann-benchmarks' rule), id_recall or a label "
                   "metric (precision_at_10, ...).")
@click.option("--json", "as_json", is_flag=True, help="Print the answer as JSON.")
@click.option("--wide", is_flag=True, help="Every column, however wide the terminal (the table otherwise leaves out "
                                           "p99, build time, index size and candidates, in that order, to fit).")
@filter_option
@results_option
def best(recall: float, max_memory: str | None, max_rss: str | None, metric: str, dataset: str | None,
         mode: str | None, k: int | None, x_metric: str, as_json: bool, wide: bool, filter_spec: str | None,
         results_path: Path) -> None:
    """For each backend, the configuration with recall >= --recall (and index size <= --max-memory) that has
    the highest QPS (or lowest p99 latency), and the overall winner.

    Exit code 0 with an answer; 1 when no configuration meets the constraints (each backend then says how
    close it came); 2 for bad input."""
    limit = parse_size(max_memory) if max_memory is not None else None
    rss_limit = parse_size(max_rss) if max_rss is not None else None
    with ResultStore(results_path, create=False) as store:
        if filter_spec is not None:
            records = filtered_records(store, dataset, filter_spec)
        else:
            records = stored_records(store, dataset)
    if dataset is None:
        records, note = latest_dataset(records)
        if note:
            err.print(f"[yellow]note:[/] {escape(note)}", soft_wrap=True)
    names = [None] if filter_spec is None else sorted({r.filter_spec for r in records}, key=filter_order)
    answers = []
    for name in names:
        mine = records if name is None else [r for r in records if r.filter_spec == name]
        answers.append((name, best_configurations(mine, recall, max_memory=limit, metric=metric, mode=mode, k=k,
                                                  x_metric=x_metric, max_rss=rss_limit)))
    if as_json:
        docs = [dict(_json(answer), **({} if name is None else {"filter": name})) for name, answer in answers]
        head = {"recall": recall, "x_metric": x_metric, "max_memory_bytes": limit, "max_rss_bytes": rss_limit,
                "metric": metric}
        click.echo(json.dumps(dict(head, **docs[0]) if len(docs) == 1 else dict(head, filters=docs), indent=1))
    else:
        for name, answer in answers:
            _print_answer(answer, name, recall, x_metric, metric, max_memory, limit, rss_limit, wide,
                          several=len(answers) > 1)
        if len(answers) > 1:  # the crossover: which backend and strategy wins at each filter
            out.print("winner per filter (where the strategy changes is the crossover):")
            for name, a in answers:
                out.print(f"  {escape(name)}: " + (f"{escape(a.winner.group)}, {a.winner.best.qps:,.0f} QPS"
                                                   if a.winner else "none meets it"))
    if all(answer.winner is None for _, answer in answers):
        click.get_current_context().exit(1)  # an answer, not an error: exit 1, no 'error:' line


def _json(answer) -> dict:
    winner = answer.winner
    return {"mode": answer.mode, "k": answer.k,
            "winner": None if winner is None else {"group": winner.group, **flat_dict(winner.best)},
            "contended_faster": [b.group for b in answer.contended_faster],
            "per_backend": [{"group": b.group, "candidates": b.candidates, "max_recall": b.max_recall,
                             "reason": b.reason, "contended_left_out": b.contended_left_out,
                             "contended_better": b.contended_better,
                             "best": None if b.best is None else flat_dict(b.best)}
                            for b in answer.per_backend]}


def _print_answer(answer, name: str | None, recall: float, x_metric: str, metric: str, max_memory: str | None,
                  limit: int | None, rss_limit: int | None, wide: bool, several: bool = False) -> None:
    """One answer's table, its winner line and its contention notes (``name``: the filter it answers for)."""
    from ann_bench.cli.tables import FitTable

    winner = answer.winner
    constraint = f"{x_metric}@{answer.k} ≥ {recall}" if x_metric == "recall" else f"{x_metric} ≥ {recall}"
    if limit is not None:
        constraint += f", index ≤ {max_memory} ({limit / 1e6:,.1f} MB)"
    if rss_limit is not None:
        constraint += f", build peak RSS ≤ {rss_limit / 1e6:,.1f} MB"
    goal = "highest QPS" if metric == "qps" else "lowest p99 latency"
    rows = sorted(answer.per_backend, key=lambda b: b.best is None)
    where = "" if name is None else f", filter {name}"
    table = FitTable(f"Best configuration per backend: {constraint}, {goal} ({answer.mode} mode, k={answer.k}"
                     f"{where})")

    def col(f):
        return [f(b.best) if b.best is not None else "" for b in rows]

    table.add("backend", [("[bold green]★ [/]" if b is winner else "") + escape(b.group) for b in rows],
              markup=True)
    table.add("build", [short_params(b.best.build_params, None) if b.best is not None else
                        f"none: {b.reason}" for b in rows])
    table.add("search", col(lambda r: short_params(r.search_params, None)))
    table.add(x_metric, col(lambda r: fmt_recall(_x(r, x_metric))), numeric=True)
    table.add("QPS", col(lambda r: f"{r.qps:,.0f}"), numeric=True)
    table.add("p99 ms", col(lambda r: f"{r.p99_ms:.3f}" if r.p99_ms else "-"), numeric=True, optional=1)
    table.add("index MB", col(lambda r: f"{r.index_bytes / 1e6:,.1f}" if r.index_bytes is not None else "-"),
              numeric=True, optional=3)
    table.add("build s", col(lambda r: f"{r.build_s:.2f}" if r.build_s is not None else "-"), numeric=True,
              optional=2)
    table.add("meeting", [str(b.candidates) for b in rows], numeric=True, optional=4)
    out.print(table.render(out.width, wide=wide))
    if winner is None:
        out.print(f"no configuration meets {constraint}{where}")
    else:
        r = winner.best
        fig = f"{r.qps:,.0f} QPS" if metric == "qps" else f"p99 {r.p99_ms:.3f} ms"
        out.print(f"winner{where if several else ''}: {escape(winner.group)} {escape(params_str(r.build_params))} "
                  f"{escape(params_str(r.search_params))}: {fig} at {x_metric} {fmt_recall(_x(r, x_metric))}, "
                  f"index {r.index_bytes / 1e6:,.1f} MB")
        if r.contended:
            err.print(f"[yellow]contended:[/] the winner was timed while another process had the CPU (CPU share "
                      f"{r.cpu_share:.2f}): its QPS is the machine's, not the library's; re-measure it with "
                      "`ann-bench run … --remeasure-contended` on a quieter machine before choosing by it",
                      soft_wrap=True)
    for b in answer.contended_faster:
        r = b.best
        fig = f"{r.qps:,.0f} QPS" if metric == "qps" else f"p99 {r.p99_ms:.3f} ms"
        err.print(f"[yellow]contended:[/] {escape(b.group)} measured better ({fig}) but was timed while another "
                  f"process had the CPU (CPU share {r.cpu_share:.2f}), so the winner is the best uncontended "
                  "configuration; re-measure it with `ann-bench run … --remeasure-contended`", soft_wrap=True)
    left_out = sum(b.contended_left_out for b in answer.per_backend)
    if left_out:
        better = sum(b.contended_better for b in answer.per_backend)
        err.print(f"[yellow]contended:[/] {left_out} row(s) meeting the constraints were left out of the choice: "
                  "they were timed while another process had the CPU"
                  + (f", and {better} of them measured better even so" if better else "")
                  + "; re-measure them with `ann-bench run … --remeasure-contended`", soft_wrap=True)


def _x(r, x_metric: str) -> float:
    from ann_bench.report.plots import x_value

    return x_value(r, x_metric)
