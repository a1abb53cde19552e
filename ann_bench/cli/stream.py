"""``ann-bench stream``: a collection that changes — a runbook of builds, inserts, deletes and searches, measured
step by step for each backend; ``ann-bench stream make-runbook``: the common shapes as runbook files."""

from __future__ import annotations

import shlex
from pathlib import Path

import click
from rich.markup import escape

from ann_bench.cli.console import RichReporter, err, out
from ann_bench.cli.options import SEED, THREADS, force_option, results_option
from ann_bench.errors import InputError


@click.group(invoke_without_command=True)
@click.option("--runbook", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="The runbook (YAML): steps build/insert/delete/search over rows of the set's train vectors; "
                   "write one with `ann-bench stream make-runbook`.")
@click.option("--dataset", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="VectorSet HDF5 file whose train rows the runbook names.")
@click.option("--backend", "backends", multiple=True,
              help="Backend NAME or NAME:IMPL (repeat for several). Those without updates are rebuilt from scratch "
                   "at every insert/delete step, and their rows say so (see `ann-bench backends`).")
@click.option("--build", "build_specs", multiple=True, metavar="[BACKEND:]NAME=V",
              help="A build parameter's value (one per backend) [default: the first of its default grid for the "
                   "initial build's size].")
@click.option("--search", "search_specs", multiple=True, metavar="[BACKEND:]NAME=V",
              help="The search setting every search step uses (one value per parameter).")
@click.option("-k", "k", type=int, default=10, show_default=True, help="Neighbours per query (recall@k).")
@click.option("--runs", type=int, default=3, show_default=True, help="Timed runs per search step; best kept.")
@click.option("--mode", type=click.Choice(["batch", "single", "both"]), default="single", show_default=True,
              help="single: one query per call (QPS and p99 latency); batch: all queries in one call.")
@click.option("--threads", type=THREADS, default=1, show_default=True, help="Threads for queries.")
@click.option("--build-threads", type=THREADS, default=None,
              help="Threads for builds, inserts and deletes (each row records them) [default: --threads].")
@click.option("--seed", type=SEED, default=0, show_default=True, help="Seed for index construction.")
@click.option("--force", is_flag=True, help="Measure again the steps already stored for this runbook.")
@click.option("--timeout", type=float, default=None,
              help="Seconds one backend's whole runbook may take; then its worker is killed and the step it was in "
                   "is recorded as timeout.")
@click.option("--memory-limit", default=None, metavar="SIZE", help="Kill a worker whose RSS passes SIZE (e.g. 8GB).")
@click.option("--checkpoint-every", type=click.FloatRange(min=0), default=300, show_default=True, metavar="SECONDS",
              help="Save each backend's updated index (in the cache) at most this often, after an update step: a "
                   "re-run after a crash or a kill starts from it instead of replaying the runbook (0: after every "
                   "update step). Removed when the runbook ends.")
@click.option("--in-process", is_flag=True, help="Run in this process (debugging; no crash isolation).")
@click.option("--quiet", "-q", is_flag=True, help="No line per step.")
@results_option
@click.pass_context
def stream(ctx: click.Context, runbook: Path | None, dataset: Path | None, backends: tuple[str, ...], build_specs,
           search_specs, k: int, runs: int, mode: str, threads: int, build_threads: int | None, seed: int,
           force: bool, timeout: float | None, memory_limit: str | None, checkpoint_every: float, in_process: bool,
           quiet: bool, results_path: Path) -> None:
    """Run a runbook (a collection that grows and loses items) on each backend, each in its own worker: at every
    search step recall@k against the exact top-k of the live items, QPS and p99; at every insert/delete step the
    items/s and the index's memory; at the end the backend rebuilt from scratch on the final live set. A re-run
    measures only the steps not stored yet, from the last checkpoint where one was saved. List the rows with
    `ann-bench results --stream NAME`, draw them with `ann-bench plot --stream NAME`."""
    if ctx.invoked_subcommand is not None:
        if runbook is not None or backends:
            raise InputError(f"--runbook/--backend belong to `ann-bench stream`, not to `stream "
                             f"{ctx.invoked_subcommand}`")
        return
    from ann_bench.bench.jobs import RunOptions, check_k, parse_size
    from ann_bench.bench.results import ResultStore
    from ann_bench.bench.runbook import check_runbook, read_runbook
    from ann_bench.bench.stream import plan_stream, run_stream
    from ann_bench.data.vectorset import VectorSet

    if runbook is None or dataset is None or not backends:
        missing = [o for o, v in (("--runbook", runbook), ("--dataset", dataset), ("--backend", backends)) if not v]
        raise InputError(f"stream needs {', '.join(missing)}: e.g. `ann-bench stream --runbook grow.yaml --dataset "
                         "set.hdf5 --backend hnsw --search ef=64` (write a runbook with `ann-bench stream "
                         "make-runbook`)")
    options = RunOptions(k=k, runs=runs, modes=("batch", "single") if mode == "both" else (mode,), threads=threads,
                         build_threads=build_threads, seed=seed, isolate=not in_process, timeout=timeout,
                         memory_limit=parse_size(memory_limit) if memory_limit is not None else None)
    options.check()
    rb = read_runbook(runbook)
    with VectorSet(dataset) as vs:
        check_k(vs, k)
        check_runbook(rb, vs.n_train, k)  # every refusal before any file is created
        configs = plan_stream(backends, rb.build_ids.size, vs.dim, vs.metric, build_specs, search_specs)
        with RichReporter(verbose=not quiet) as reporter, ResultStore(results_path) as store:
            if not quiet:
                err.print(f"stream {escape(rb.ident)} on {escape(vs.name)}: {len(rb.steps)} steps, "
                          f"{vs.n_test:,} queries, k={k}, {mode} mode, {threads} thread(s)", soft_wrap=True)
            summary = run_stream(vs, rb, configs, options, store, reporter, force=force,
                                 checkpoint_every=checkpoint_every)
    if summary.skipped_existing and not quiet:
        err.print(f"skipped {summary.skipped_existing} step row(s) already stored (--force measures them again)")
    for c in configs:
        support = c.cls.update_support(c.build)
        err.print(f"[dim]{escape(c.cls.label())}: updates {escape(support)}"
                  + (f" — {escape(c.cls.update_notes)}" if c.cls.update_notes else "") + "[/]", soft_wrap=True)
    failed = summary.failed
    for r in failed:
        err.print(f"[red]failed[/] {escape(r.label())} step {r.stream_step} {escape(r.stream_op)}: "
                  f"{escape(r.error)}", soft_wrap=True)
    out.print(f"results: {escape(str(results_path))} ({len(summary.records)} new row(s)); list them with "
              f"`ann-bench results --results {escape(shlex.quote(str(results_path)))} --stream "
              f"{escape(shlex.quote(rb.name))}`", soft_wrap=True)
    if summary.records and len(failed) == len(summary.records):
        raise SystemExit(1)


@stream.command("make-runbook")
@click.option("--dataset", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="The set the runbook is for (its size; its labels for --shape clustered).")
@click.option("--shape", type=click.Choice(["grow", "slide", "clustered"]), required=True,
              help="grow: from --start of the items to all, in --steps equal inserts; slide: grow to a window of "
                   "--window of the items, then each step inserts the next batch and deletes the oldest; clustered: "
                   "each insert brings the items of labels not seen before.")
@click.option("--steps", type=click.IntRange(1, 100_000), default=9, show_default=True,
              help="Inserts after the build (each followed by a search).")
@click.option("--start", type=float, default=0.1, show_default=True,
              help="The initial build's fraction of the items (clustered: of the labels).")
@click.option("--window", type=float, default=0.5, show_default=True, help="slide: the live fraction kept.")
@click.option("--size", type=click.IntRange(1), default=None,
              help="Use only the first SIZE train rows [default: all].")
@click.option("--name", default=None, help="The runbook's name [default: the shape].")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="The runbook file to write (YAML).")
@force_option
def make_runbook(dataset: Path, shape: str, steps: int, start: float, window: float, size: int | None,
                 name: str | None, output: Path, force: bool) -> None:
    """Write a runbook of a common shape for a set."""
    from ann_bench.atomic import atomic_path
    from ann_bench.bench.runbook import dump_runbook, make_runbook as make
    from ann_bench.data.vectorset import VectorSet, read_checked_labels
    from ann_bench.outputs import RUNBOOK_MARKER, check_output

    check_output(output, "runbook", inputs=(dataset,), force=force)
    with VectorSet(dataset) as vs:
        n = vs.n_train if size is None else size
        if n > vs.n_train:
            raise InputError(f"--size {n} exceeds the {vs.n_train} train vectors of {vs.name}")
        labels = None
        if shape == "clustered":
            labels = read_checked_labels(vs, "train") if vs.has_labels else None
            labels = labels[:n] if labels is not None else None
        data = make(shape, n, steps=steps, start=start, window=window, labels=labels, name=name)
        head = f"{RUNBOOK_MARKER.decode()} ({shape}, {n} items of {vs.name})\n"
    with atomic_path(output) as tmp:
        Path(tmp).write_text(head + dump_runbook(data), encoding="utf-8")
    counts = {op: sum(1 for s in data["steps"] if (s if isinstance(s, str) else next(iter(s))) == op)
              for op in ("build", "insert", "delete", "search")}
    out.print(f"wrote {escape(str(output))}: {len(data['steps'])} steps ("
              + ", ".join(f"{v} {k}" for k, v in counts.items() if v) + ")")


def stream_table(records, source: str):
    """Stream rows as a :class:`~ann_bench.cli.tables.FitTable`, in step order per backend: step, operation, live
    items, recall, QPS, p99, items/s of updates and builds, index MB, how the backend updates."""
    from ann_bench.bench.metrics import fmt_recall
    from ann_bench.cli.tables import FitTable

    def ok(r) -> bool:
        return r.status == "ok"

    records = sorted(records, key=lambda r: (r.label(), r.stream_runbook, r.stream_step or 0, r.mode))
    runbooks = sorted({r.stream_runbook for r in records})
    table = FitTable(f"{len(records)} stream row(s) of {', '.join(runbooks)} in {source}")
    table.add("backend", [r.label() for r in records])
    table.add("runbook", [r.stream_runbook for r in records], optional=8)
    table.add("step", [str(r.stream_step) for r in records], numeric=True)
    table.add("op", [r.stream_op + ("" if r.mode == "batch" or r.stream_op not in ("search", "rebuild")
                                    else f" ({r.mode})") for r in records])
    table.add("live", [f"{r.live_n:,}" if r.live_n is not None else "-" for r in records], numeric=True)
    table.add("status", [r.status if ok(r) else f"[red]{escape(r.status)}[/]" for r in records], optional=6,
              markup=True)
    table.add("recall", [fmt_recall(r.recall) if ok(r) and r.recall is not None else "-" for r in records],
              numeric=True)
    table.add("QPS", [f"{r.qps:,.0f}" if ok(r) and r.qps else "-" for r in records], numeric=True)
    table.add("p99 ms", [f"{r.p99_ms:.3f}" if ok(r) and r.p99_ms else "-" for r in records], numeric=True,
              optional=3)
    table.add("items/s", [f"{r.items_per_s:,.0f}" if ok(r) and r.items_per_s else "-" for r in records],
              numeric=True)
    table.add("index MB", [f"{r.index_bytes / 1e6:.1f}" if r.index_bytes else "-" for r in records], numeric=True,
              optional=4)
    table.add("updates", [r.stream_updates or "-" for r in records], optional=5)
    update_threads = sorted({r.update_threads for r in records if r.update_threads})
    table.caption_lines.append("items/s: of the build, the insert or delete (\"none: rebuilt each step\": of the "
                               "rebuild from scratch)"
                               + (f", with {','.join(map(str, update_threads))} thread(s)" if update_threads else "")
                               + "; rebuild: the backend built anew on the final live set")
    return table
