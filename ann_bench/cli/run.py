"""``ann-bench run``: sweep backends over a dataset and store the measurements."""

from __future__ import annotations

import dataclasses
import shlex
from pathlib import Path

import click
from rich.markup import escape

from ann_bench.cli.console import RichReporter, err, out
from ann_bench.cli.options import SEED, THREADS, pin_cpus_option, results_option
from ann_bench.data.vectorset import DEFAULT_SPEC, GT_SAMPLE, VectorSet, check_groundtruth, default_dataset
from ann_bench.bench.metrics import SATURATION, fmt_recall
from ann_bench.report.plots import pareto_by_group
from ann_bench.bench.executors import open_executor
from ann_bench.bench.executors.ray import require_ray
from ann_bench.bench.results import Record, ResultStore, params_str
from ann_bench.bench.runner import RunOptions, check_k, check_labels, parse_size, plan_sweep, run_sweep
from ann_bench.bench.filters import make_filter, parse_filters, parse_strategies
from ann_bench.errors import InputError


@click.command()
@click.option("--dataset", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help=f"VectorSet HDF5 file [default: the embedded synthetic set {DEFAULT_SPEC.name()}, "
                   "generated once into the cache directory].")
@click.option("--backend", "backends", multiple=True, required=True,
              help="Backend NAME or NAME:IMPL (repeat for several); see `ann-bench backends`.")
@click.option("--build", "build_specs", multiple=True, metavar="[BACKEND:]NAME=V1,V2",
              help="Build parameter values, replacing that parameter's default sweep (repeatable; a parameter "
                   "given twice sweeps the values of both).")
@click.option("--search", "search_specs", multiple=True, metavar="[BACKEND:]NAME=V1,V2",
              help="Search parameter values, replacing that parameter's default sweep (repeatable; a parameter "
                   "given twice sweeps the values of both).")
@click.option("-k", "k", type=int, default=10, show_default=True, help="Neighbours per query (recall@k).")
@click.option("--runs", type=int, default=3, show_default=True, help="Timed runs per configuration; best kept.")
@click.option("--mode", type=click.Choice(["batch", "single", "both"]), default="batch", show_default=True,
              help="batch: all queries in one call; single: one query per call, with latency percentiles.")
@click.option("--threads", type=THREADS, default=1, show_default=True, help="Threads for queries (pinned).")
@click.option("--build-threads", type=THREADS, default=None, help="Threads for building [default: --threads].")
@click.option("--seed", type=SEED, default=0, show_default=True, help="Seed for index construction.")
@click.option("--force", is_flag=True, help="Re-run configurations already in the store.")
@click.option("--timeout", type=float, default=None,
              help="Seconds a build configuration (build + its searches) may take; then it is killed and "
                   "recorded as timeout.")
@click.option("--memory-limit", default=None, metavar="SIZE",
              help="Kill a worker whose RSS passes SIZE (e.g. 8GB) and record it as failed.")
@click.option("--in-process", is_flag=True,
              help="Build in this process instead of a worker per build configuration (debugging, profiling; "
                   "no protection against crashes or hangs).")
@click.option("--executor", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="local: worker processes on this machine; ray: one Ray task per build configuration, on a "
                   "Ray cluster (needs the ray extra).")
@click.option("--address", default=None, metavar="auto|HOST:PORT",
              help="Ray cluster to use with --executor ray [default: $RAY_ADDRESS, else a new local Ray "
                   "instance on this machine].")
@click.option("--autoscaling", is_flag=True,
              help="With --executor ray: the cluster grows on demand, so a task no node can hold yet waits for "
                   "the autoscaler (and says so every 30 s) instead of being refused.")
@click.option("--index-cache/--no-index-cache", default=False, show_default=True,
              help="Save each built index under the cache dir (indices/<dataset hash>/) and load it instead of "
                   "building when the same build configuration runs again (new --search values, a resumed "
                   "sweep). Rows from a loaded index keep the original build's figures and say index_cached.")
@click.option("--exhaustive", is_flag=True,
              help="Measure every search setting. By default, once a setting reaches recall@k 1.0, the costlier "
                   "settings of the same index (larger ef/nprobe/search_k, smaller eps) are skipped: they cannot "
                   "recall more and cost no less, so they are never on the recall/QPS front. So are those past "
                   "where recall levelled off: two steps of more effort in a row (the other search parameters "
                   f"equal) that each moved it by less than {SATURATION:g}.")
@click.option("--quiet", "-q", is_flag=True, help="No line per configuration, only the final table.")
@click.option("--wide", is_flag=True, help="The closing table with every column, however wide the terminal.")
@click.option("--filter", "filters", multiple=True, metavar="SPEC",
              help="Filtered search: label (each query restricted to its own label), label:other (another label), "
                   "selectivity=S[,S...] (a seeded random subset of that fraction of the items), or an item "
                   "attribute: \"tag in 3,7\", \"price<20\". Repeatable. Recall is against the exact filtered "
                   "ground truth; rows are stored with their filter.")
@click.option("--filter-strategy", "filter_strategies", multiple=True, metavar="in-index|post|post:F|partitioned",
              help="With --filter: in-index (the library's own filtered search; flat's is the exact pre-filter), "
                   "post:F (search F*k, keep the allowed), partitioned (an index per category) [default: in-index, "
                   "post:2, post:8, post:32].")
@pin_cpus_option
@click.option("--remeasure-contended", is_flag=True,
              help="Measure again the stored configurations whose row is contended (timed while another process "
                   "had the CPU); the new row replaces it. Configurations measured uncontended are skipped.")
@click.option("--strict", is_flag=True,
              help="Exit 1 when any configuration failed. Without it run exits 0 when at least one configuration "
                   "was measured, and 1 when every configuration of the run failed.")
@results_option
def run(dataset: Path | None, backends: tuple[str, ...], build_specs, search_specs, k: int, runs: int, mode: str,
        threads: int, build_threads: int | None, seed: int, force: bool, timeout: float | None,
        memory_limit: str | None, in_process: bool, executor: str, address: str | None, autoscaling: bool,
        index_cache: bool, exhaustive: bool, filters: tuple[str, ...], filter_strategies: tuple[str, ...],
        pin_cpus: int | None, remeasure_contended: bool, quiet: bool,
        wide: bool, strict: bool, results_path: Path) -> None:
    """Build each configuration once, sweep its search parameters, measure recall@k, QPS, latency, build
    time and index size, and store every result. Ends with the recall/QPS Pareto-optimal configurations.

    Each build configuration runs in a fresh worker process: a crash, hang or memory blow-up becomes a
    failed/timeout row and the sweep goes on. Configurations already stored (status ok) are skipped.
    With --executor ray each build configuration is a task on a Ray cluster; this process still writes the
    results."""
    options = RunOptions(k=k, runs=runs, modes=("batch", "single") if mode == "both" else (mode,),
                         threads=threads, build_threads=build_threads, seed=seed, resume=not force,
                         isolate=not in_process, timeout=timeout,
                         memory_limit=parse_size(memory_limit) if memory_limit is not None else None,
                         executor=executor, address=address, autoscaling=autoscaling, index_cache=index_cache,
                         exhaustive=exhaustive, pin_cpus=pin_cpus, remeasure_contended=remeasure_contended,
                         filters=tuple(parse_filters(filters)),
                         filter_strategies=tuple(parse_strategies(filter_strategies)))
    if filter_strategies and not filters:
        raise InputError("--filter-strategy chooses how filtered searches run; add --filter SPEC")
    options.check()
    if executor == "ray":
        require_ray()  # the install hint before any work
    default = dataset is None
    if default:
        from ann_bench.config import cache_dir

        cached = (cache_dir() / "datasets" / f"{DEFAULT_SPEC.name()}.hdf5").exists()
        what = "reading" if cached else "generating"  # say "generating" only when it is generated
        with RichReporter() as reporter, reporter.task(
                f"{what} the default dataset {DEFAULT_SPEC.name()}", DEFAULT_SPEC.queries) as advance:
            dataset = default_dataset(progress=advance)
    with VectorSet(dataset) as vs:
        # Everything that can be wrong with the input is found here, before any output file is created.
        check_groundtruth(vs)
        check_k(vs, k)
        labels = check_labels(vs)
        for name in options.filters:  # a filter the set cannot have is refused before any file is created
            make_filter(name, vs.n_train, vs.n_test, k, *labels, seed, attribute=vs.attribute)
        plans = plan_sweep(backends, vs.n_train, vs.dim, vs.metric, build_specs, search_specs)
        X = vs.load_train()
        vs.load_test()
        check_groundtruth(vs, X, sample=GT_SAMPLE)  # a few hundred queries, exactly: before any measurement
        # Connected (Ray) before the store is created: a connection that fails leaves no file behind.
        with RichReporter(verbose=not quiet) as reporter, open_executor(options, reporter) as executor, \
                ResultStore(results_path) as store:
            # Which set, once the input, the store and the executor are known good (the default is otherwise silent).
            if not quiet:
                err.print(f"run on {escape(vs.name)}{' (the built-in default set)' if default else ''}: "
                          f"{vs.n_train:,} x {vs.dim} {vs.metric}, {vs.n_test:,} queries, k={k}, "
                          f"{'batch and single' if mode == 'both' else mode} mode, "
                          f"{threads} query thread(s)", soft_wrap=True)
            summary = run_sweep(vs, plans, options, store, reporter, executor=executor)
            # The closing table is the front over everything stored for this dataset, k and thread count —
            # a resumed run's new rows alone would hide faster stored ones.
            stored = [r for r in store.records(dataset=vs.content_hash(), k=k)
                      if r.threads == threads and r.recall is not None]
            # Per filter, each strategy its own line on the front: "hnsw [hnswlib, post:8]"
            filtered = {name: [(dataclasses.replace(r, impl=f"{r.impl}, {r.filter_strategy}"), r.key)
                               for r in store.records(dataset=vs.content_hash(), k=k, filter_spec=name)
                               if r.threads == threads and r.recall is not None]
                        for name in options.filters}
    if summary.skipped_existing and not quiet:
        err.print(f"skipped {summary.skipped_existing} configuration(s) already in {escape(str(results_path))} "
                  "(--force re-runs them)")
    for line in [] if quiet else skip_summary(summary.skipped_detail):
        err.print(f"[dim]{escape(line)}[/]", soft_wrap=True)
    for r in summary.failed:
        err.print(f"[red]failed[/] {escape(r.label())} {escape(params_str(r.build_params))} "
                  f"{escape(params_str(r.search_params))}: "
                  f"{escape(r.error)}")
    new = {r.key for r in summary.records if r.status == "ok"}
    if not options.filters:
        print_pareto(stored, k, new=new, wide=wide)
    for name, pairs in filtered.items():
        print_pareto([r for r, _ in pairs], k, new={r.key for r, key in pairs if key in new}, wide=wide,
                     what=f"filter {name}, ")
    contended = [r for r in summary.records if r.contended]
    if contended:
        err.print(f"[yellow]contended:[/] {len(contended)} of {len(summary.records)} row(s) were timed while another "
                  f"process had the CPU (the worker got {min(r.cpu_share for r in contended):.0%}–"
                  f"{max(r.cpu_share for r in contended):.0%} of its query threads' time, load average up to "
                  f"{max(r.load_avg or 0 for r in contended):.1f}, though up to 3 × --runs runs looked for a quiet "
                  "one): their QPS and latencies are the machine's, not the library's; re-measure them on a quieter "
                  "machine with --remeasure-contended", soft_wrap=True)
    store_arg = escape(shlex.quote(str(results_path)))
    if options.filters:
        out.print(f"results: {escape(str(results_path))} ({len(summary.records)} new row(s)); list them with "
                  f"`ann-bench results --results {store_arg} --filter {escape(shlex.quote(options.filters[0]))}`",
                  soft_wrap=True)
    else:
        out.print(f"results: {escape(str(results_path))} ({len(summary.records)} new row(s)); plot them with "
                  f"`ann-bench plot --results {store_arg} -o plot.png`", soft_wrap=True)
    failed = len(summary.failed)
    if summary.records and failed == len(summary.records):
        err.print(f"[red]nothing was measured:[/] all {failed} configuration(s) of this run failed (errors above)",
                  soft_wrap=True)
        raise SystemExit(1)
    if strict and failed:
        err.print(f"[red]--strict:[/] {failed} of {len(summary.records)} configuration(s) failed", soft_wrap=True)
        raise SystemExit(1)


def print_pareto(records: list[Record], k: int, new: set[str] | None = None, wide: bool = False,
                 what: str = "") -> None:
    """The recall/QPS front per backend of ``records``, one table per mode; rows whose key is in ``new`` (measured
    by this run) are marked with *. Fitted to the terminal (see :mod:`ann_bench.cli.tables`): p99, index MB,
    build s and P@k are left out in that order when it is too narrow."""
    from ann_bench.cli.tables import FitTable, params_columns

    for mode in ("batch", "single"):
        chosen = [r for r in records if r.status == "ok" and r.mode == mode]
        if not chosen:
            continue
        key = f"precision_at_{k}"
        exact = next((r.label_metrics[f"exact_{key}"] for r in chosen if f"exact_{key}" in r.label_metrics), None)
        front = [(group, r) for group, rs in pareto_by_group(chosen).items() for r in rs]
        rows = [r for _, r in front]
        table = FitTable(f"Pareto-optimal configurations ({what}recall@{k} vs QPS, {mode} mode, "
                         f"threads={chosen[0].threads}; "
                         "every stored row of this dataset, * = measured now)")
        build, search, captions = params_columns(rows, lambda r: r.label())
        table.caption_lines += captions
        table.add("backend", [("*" if new is not None and r.key in new else "") + group for group, r in front])
        table.add("build", build)
        table.add("search", search)
        table.add(f"recall@{k}", [fmt_recall(r.recall) for r in rows], numeric=True)
        table.add("QPS", [f"{r.qps:,.0f}" for r in rows], numeric=True)
        table.add("p99 ms", [f"{r.p99_ms:.3f}" if r.p99_ms else "-" for r in rows], numeric=True, optional=1)
        table.add("build s", [f"{r.build_s:.2f}" if r.build_s is not None else "-" for r in rows], numeric=True,
                  optional=3)
        table.add("index MB", [f"{r.index_bytes / 1e6:.1f}" if r.index_bytes else "-" for r in rows], numeric=True,
                  optional=2)
        if exact is not None:  # a set with labels: the retrieval quality each configuration keeps
            values = [r.label_metrics.get(key) for r in rows]
            table.add(f"P@{k} (exact {exact:.4f})", ["-" if v is None else f"{v:.4f}" for v in values], numeric=True,
                      optional=4)
        out.print(table.render(out.width, wide=wide))


def skip_summary(detail: list[tuple[str, str, str]], shown: int = 4) -> list[str]:
    """One line per index for the settings a sweep skipped: how many, and per reason (the most frequent
    first) the first few settings and why."""
    by_index: dict[str, dict[str, list[str]]] = {}
    for index, setting, reason in detail:
        by_index.setdefault(index, {}).setdefault(reason, []).append(setting)
    lines = []
    for index, reasons in by_index.items():
        parts = []
        for reason, settings in sorted(reasons.items(), key=lambda kv: -len(kv[1])):
            listed = ", ".join(settings[:shown]) + (f" … (+{len(settings) - shown})" if len(settings) > shown else "")
            parts.append(f"{listed} — {reason}")
        lines.append(f"skipped {sum(map(len, reasons.values()))} setting(s) of {index}: " + "; ".join(parts))
    return lines

