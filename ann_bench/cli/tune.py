"""``ann-bench tune``: the fastest configuration per backend for each recall target, searched for (bisection of
the search effort, Optuna over the build parameters) instead of swept over a grid."""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.markup import escape

from ann_bench.cli.console import RichReporter, err, out
from ann_bench.cli.options import SEED, THREADS, pin_cpus_option, results_option
from ann_bench.data.vectorset import DEFAULT_SPEC, GT_SAMPLE, VectorSet, check_groundtruth, default_dataset
from ann_bench.bench.metrics import fmt_recall
from ann_bench.bench.executors.ray import require_ray
from ann_bench.bench.results import ResultStore
from ann_bench.backends import get_backend
from ann_bench.cli.tables import FitTable, short_params, short_value, varying
from ann_bench.bench.runner import RunOptions, check_k, check_labels, parse_size, plan_sweep
from ann_bench.bench.tune import (DEFAULT_BACKENDS, TIME_PARTS, TuneOptions, check_search_specs, fmt_duration,
                                  parse_duration, parse_targets, run_tune, split_queries)


@click.command()
@click.option("--dataset", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help=f"VectorSet HDF5 file [default: the embedded synthetic set {DEFAULT_SPEC.name()}].")
@click.option("--recall", "targets", default="0.9,0.95,0.99", show_default=True,
              help="Recall@k targets, comma-separated.")
@click.option("--backend", "backends", multiple=True,
              help=f"Backend NAME or NAME:IMPL (repeatable) [default: {', '.join(DEFAULT_BACKENDS)}].")
@click.option("--build", "build_specs", multiple=True, metavar="[BACKEND:]NAME=V",
              help="Fix a build parameter instead of searching it (repeatable).")
@click.option("--search", "search_specs", multiple=True, metavar="[BACKEND:]NAME=V1,V2",
              help="Values of a search parameter other than the bisected effort one (e.g. ivfpq refine); the "
                   "effort parameter (ef, nprobe, search_k, eps) is always bisected, and a value for it is refused.")
@click.option("--max-memory", default=None, metavar="SIZE",
              help="Constraint: serialized index size (index_bytes) at most SIZE, e.g. 2GB (MB = 10^6 bytes).")
@click.option("--max-build-s", type=float, default=None,
              help="Constraint: build time at most this many seconds; a build running longer is killed.")
@click.option("--metric", "speed", type=click.Choice(["qps", "p99"]), default="qps", show_default=True,
              help="qps: highest queries per second (batch mode); p99: lowest p99 latency (single mode).")
@click.option("--budget", default=None, metavar="DURATION",
              help="Stop after this much time (e.g. 20m, 90s, 1h) with the best answer found; a build still "
                   "running then is stopped [default: derived from the set and the backends, under half of what "
                   "`ann-bench run` of their default grids would take; the first line says it].")
@click.option("--trials", type=int, default=None,
              help="At most this many builds per backend on the first fidelity, its default build the first "
                   "(the others proposed by its Optuna study) [default: as the budget allows].")
@click.option("--per-backend", is_flag=True,
              help="An answer per backend for each target (no backend is dropped), instead of the overall "
                   "winner and its runner-up.")
@click.option("--subsample", type=float, default=None, metavar="FRACTION",
              help="Start every backend on this fraction of the train vectors; only builds in the top third "
                   "there are built on the full set (1: no subsample) [default: a sixteenth from 40,000 vectors "
                   "on].")
@click.option("--heldout", type=float, default=0.5, show_default=True,
              help="Fraction of the queries held out of the choice, to validate the answers on.")
@click.option("-k", "k", type=int, default=10, show_default=True, help="Neighbours per query (recall@k).")
@click.option("--runs", type=int, default=2, show_default=True, help="Timed runs per measured setting; best kept.")
@click.option("--threads", type=THREADS, default=1, show_default=True, help="Threads for queries (pinned).")
@click.option("--build-threads", type=THREADS, default=None, help="Threads for building [default: --threads].")
@click.option("--seed", type=SEED, default=0, show_default=True,
              help="Seed of the builds, of Optuna's sampler and of the query split.")
@click.option("--timeout", type=float, default=None, help="Seconds one trial (build + searches) may take.")
@click.option("--memory-limit", default=None, metavar="SIZE", help="Kill a worker whose RSS passes SIZE.")
@click.option("--executor", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="ray: each round's trials (one per backend) run in parallel as Ray tasks.")
@click.option("--address", default=None, metavar="auto|HOST:PORT", help="Ray cluster for --executor ray.")
@click.option("--autoscaling", is_flag=True,
              help="With --executor ray: the cluster grows on demand, so a task no node can hold yet waits for "
                   "the autoscaler (and says so every 30 s) instead of being refused.")
@click.option("--index-cache/--no-index-cache", default=False, show_default=True,
              help="Save built indices in the cache dir and reuse them (see `ann-bench run --help`).")
@pin_cpus_option
@click.option("--json", "as_json", is_flag=True, help="Print the answers as a JSON list (nothing else on stdout).")
@click.option("--quiet", "-q", is_flag=True, help="No line per trial, only the answers.")
@click.option("--wide", is_flag=True, help="Every column of the answer table, however wide the terminal.")
@results_option
def tune(dataset: Path | None, targets: str, backends, build_specs, search_specs, max_memory: str | None,
         max_build_s: float | None, speed: str, budget: str | None, trials: int | None, per_backend: bool,
         subsample: float | None, heldout: float, k: int, runs: int,
         threads: int, build_threads: int | None, seed: int, timeout: float | None, memory_limit: str | None,
         executor: str, address: str | None, autoscaling: bool, index_cache: bool, pin_cpus: int | None,
         as_json: bool, quiet: bool,
         wide: bool,
         results_path: Path) -> None:
    """Which index, with which settings, is fastest at recall@k >= each target on these vectors, within
    --max-memory/--max-build-s and a time budget. Every backend starts with its default build (on a subsample of
    large sets); only builds that can still win are built on the full set, new builds are proposed by Optuna
    (seeded TPE) for the backends that stay in, and the search effort (ef, nprobe, search_k, eps) is bisected on
    each build. The current answer is printed whenever it improves; at --budget, or on Ctrl-C, tune ends with it.
    Answers are rows measured on all queries, chosen on a tuning split of the queries and validated on the
    held-out split (bootstrap 95 % interval); rows of the same set already in --results are candidates too.

    Exit code 0 when every target has an answer (also when stopped early), 1 when a target has none, 2 for bad
    input."""
    options = TuneOptions(targets=parse_targets(targets), backends=tuple(backends) or DEFAULT_BACKENDS,
                          max_memory=parse_size(max_memory) if max_memory is not None else None,
                          max_build_s=max_build_s, speed=speed,
                          budget_s=parse_duration(budget) if budget is not None else None, trials=trials,
                          heldout=heldout, build_specs=tuple(build_specs), search_specs=tuple(search_specs),
                          subsample=subsample, per_backend=per_backend)
    options.check()
    run_options = RunOptions(k=k, runs=runs, modes=("single",) if speed == "p99" else ("batch",), threads=threads,
                             build_threads=build_threads, seed=seed, timeout=timeout,
                             memory_limit=parse_size(memory_limit) if memory_limit is not None else None,
                             executor=executor, address=address, autoscaling=autoscaling, index_cache=index_cache,
                             pin_cpus=pin_cpus)
    run_options.check()
    if executor == "ray":
        require_ray()
    if dataset is None:
        with RichReporter() as reporter, reporter.task(f"the default dataset {DEFAULT_SPEC.name()}",
                                                       DEFAULT_SPEC.queries) as advance:
            dataset = default_dataset(progress=advance)
    with VectorSet(dataset) as vs:
        check_groundtruth(vs)
        check_k(vs, k)
        check_labels(vs)
        split_queries(vs.n_test, heldout, seed)
        check_search_specs(plan_sweep(options.backends, vs.n_train, vs.dim, vs.metric, build_specs, search_specs),
                           search_specs)
        X = vs.load_train()
        vs.load_test()
        check_groundtruth(vs, X, sample=GT_SAMPLE)
        del X
        with ResultStore(results_path) as store, RichReporter(verbose=not quiet and not as_json) as reporter:
            result = run_tune(vs, options, run_options, store, reporter)
    if as_json:
        click.echo(json.dumps([a.as_json() for a in result.ranked()], indent=1))
    else:
        print_answers(result, options, k, wide)
        print_summary(result)
    unmet = [t for t in options.targets if not any(a.candidate for a in result.answers if a.target == t)]
    if unmet:
        err.print(f"no backend reaches recall@{k} {', '.join(map(str, unmet))} within the constraints"
                  + (" in the time it had" if result.early else ""), soft_wrap=True)
        raise SystemExit(1)


def print_answers(result, options: TuneOptions, k: int, wide: bool = False) -> None:
    goal = "highest QPS" if options.speed == "qps" else "lowest p99 latency"
    limits = []
    if options.max_memory is not None:
        limits.append(f"index <= {options.max_memory / 1e6:,.1f} MB")
    if options.max_build_s is not None:
        limits.append(f"build <= {options.max_build_s:g} s")
    title = (f"tune: {goal} at recall@{k} >= target{(' (' + ', '.join(limits) + ')') if limits else ''}")
    rows = result.ranked()
    measured = [a for a in rows if a.candidate is not None]
    short, captions = _short_forms(measured)
    cols: dict[str, list[str]] = {name: [] for name in ("target", "backend", "build", "search", "recall",
                                                         "held-out", "QPS", "p99 ms", "index MB", "build s")}
    last = None
    for a in rows:
        first = a.target != last
        last = a.target
        cols["target"].append(str(a.target) if first else "")
        if a.candidate is None:
            cols["backend"].append(a.group)
            cols["build"].append(f"none: {a.reason}")
            for name in ("search", "recall", "held-out", "QPS", "p99 ms", "index MB", "build s"):
                cols[name].append("")
            continue
        r, c = a.candidate.record, a.candidate
        cols["backend"].append(a.group + (" (stored)" if c.trial < 0 else ""))
        cols["build"].append(short[id(a)][0])
        cols["search"].append(short[id(a)][1])
        cols["recall"].append(fmt_recall(c.tune_recall))
        half = (a.heldout_ci[1] - a.heldout_ci[0]) / 2
        cols["held-out"].append(f"{fmt_recall(c.heldout.mean())}±{half:.3f}".replace("±0.", "±."))
        cols["QPS"].append(f"{r.qps:,.0f}")
        cols["p99 ms"].append(f"{r.p99_ms:.3f}" if r.p99_ms else "-")
        cols["index MB"].append(f"{r.index_bytes / 1e6:,.1f}" if r.index_bytes is not None else "-")
        cols["build s"].append(f"{r.build_s:.2f}" if r.build_s is not None else "-")
    table = FitTable(title, caption_lines=[
        f"recall: on the {result.n_tune:,} tuning queries that chose it; held-out: on the other "
        f"{result.n_heldout:,}, ± half its 95% interval" + ("" if options.per_backend else
                                                           "; per target the winner, then the fastest other "
                                                           "backend"),
        *captions])
    optional = {"held-out": 4, "p99 ms": 1 if options.speed == "qps" else None, "index MB": 3,
                "build s": 2, "QPS": 1 if options.speed == "p99" else None}
    numeric = {"recall", "held-out", "QPS", "p99 ms", "index MB", "build s"}
    for name, values in cols.items():
        table.add(name, values, numeric=name in numeric, optional=optional.get(name))
    out.print(table.render(out.width, wide=wide))
    contended = [a for a in measured if a.candidate.record.contended]
    if contended:
        shares = [a.candidate.record.cpu_share for a in contended]
        err.print(f"[yellow]contended:[/] {len(contended)} answer(s) were timed while another process had the CPU "
                  f"(CPU share {min(shares):.2f}–{max(shares):.2f}, though up to 3 × --runs runs looked for a quiet "
                  "one, and uncontended candidates are always preferred): their QPS is the machine's; "
                  "re-measure them with `ann-bench run … --remeasure-contended` on a quieter machine",
                  soft_wrap=True)


def _short_forms(measured) -> tuple[dict[int, tuple[str, str]], list[str]]:
    """Per answer, its build and search parameters in short form: in the row those that vary among the backend's
    rows, differ from the backend's default, or are effort parameters (ef, nprobe); the rest once per backend
    in a caption line — so that the table fits without folding parameters over several lines."""
    groups: dict[str, list] = {}
    for a in measured:
        groups.setdefault(a.group, []).append(a)
    short, captions = {}, []
    for group, answers in groups.items():
        records = [a.candidate.record for a in answers]
        cls = get_backend(records[0].backend, records[0].impl)
        keep_b = varying([r.build_params for r in records]) | {
            p.name for p in cls.build_params if any(r.build_params.get(p.name, p.default) != p.default for r in records)}
        keep_s = varying([r.search_params for r in records]) | set(cls.effort_params)
        for a, r in zip(answers, records):
            short[id(a)] = (short_params(r.build_params, keep_b), short_params(r.search_params, keep_s))
        fixed = [short_value(n, v) for n, v in records[0].build_params.items() if n not in keep_b]
        fixed += [short_value(n, v) for n, v in records[0].search_params.items() if n not in keep_s]
        if fixed:
            captions.append(f"{group}: {' '.join(fixed)}")
    return short, captions


def print_summary(result) -> None:
    """Why it stopped, which backends it dropped, where the time went, and where the log is."""
    lines = []
    if result.early:
        lines.append(f"stopped early after {fmt_duration(result.elapsed_s)}: the answers above are those of what "
                     "was measured until then")
    else:
        lines.append(f"tune {result.tune_id}: {len(result.trials)} job(s) in {fmt_duration(result.elapsed_s)} "
                     f"of a {fmt_duration(result.budget_s)} budget; stopped because {result.stopped}")
    for label, why in result.dropped.items():
        lines.append(f"dropped {label}: {why}")
    parts = ", ".join(f"{name} {result.times.get(name, 0.0):,.1f}" for name in TIME_PARTS)
    lines.append(f"time (s): {parts}")
    lines.append(f"log {result.log_path}; draw it with `ann-bench plot --tune {result.tune_id} -o tune.png`")
    for line in lines:
        out.print(escape(line))  # wrapped at spaces to the terminal
