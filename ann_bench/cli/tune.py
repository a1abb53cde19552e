"""``ann-bench tune``: the fastest configuration per backend for each recall target, searched for (bisection of
the search effort, Optuna over the build parameters) instead of swept over a grid."""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.markup import escape
from rich.table import Table

from ann_bench.cli.console import RichReporter, err, out
from ann_bench.cli.options import results_option
from ann_bench.data.vectorset import DEFAULT_SPEC, GT_SAMPLE, VectorSet, check_groundtruth, default_dataset
from ann_bench.bench.metrics import fmt_recall
from ann_bench.bench.executors.ray import require_ray
from ann_bench.bench.results import ResultStore, params_str
from ann_bench.bench.runner import RunOptions, check_k, check_labels, parse_size, plan_sweep
from ann_bench.bench.tune import DEFAULT_BACKENDS, TuneOptions, parse_duration, parse_targets, run_tune, split_queries


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
                   "effort parameter (ef, nprobe, search_k, eps) is always bisected.")
@click.option("--max-memory", default=None, metavar="SIZE",
              help="Constraint: serialized index size (index_bytes) at most SIZE, e.g. 2GB (MB = 10^6 bytes).")
@click.option("--max-build-s", type=float, default=None,
              help="Constraint: build time at most this many seconds; a build running longer is killed.")
@click.option("--metric", "speed", type=click.Choice(["qps", "p99"]), default="qps", show_default=True,
              help="qps: highest queries per second (batch mode); p99: lowest p99 latency (single mode).")
@click.option("--budget", default=None, metavar="DURATION",
              help="No new trial starts after this much time (e.g. 20m, 90s, 1h); trials running then finish.")
@click.option("--trials", type=int, default=6, show_default=True,
              help="Build configurations tried per backend at most (the first is the backend's default).")
@click.option("--subsample", type=float, default=None, metavar="FRACTION",
              help="Search build parameters on this random fraction of the train vectors (e.g. 0.1: builds about "
                   "10x cheaper), then build the best --finalists per backend on the full set and bisect them "
                   "there; the answers come from the full set only.")
@click.option("--finalists", type=int, default=2, show_default=True,
              help="With --subsample: build configurations per backend carried to the full set: the subsample's "
                   "answers, the highest target's first.")
@click.option("--heldout", type=float, default=0.5, show_default=True,
              help="Fraction of the queries held out of the choice, to validate the answers on.")
@click.option("-k", "k", type=int, default=10, show_default=True, help="Neighbours per query (recall@k).")
@click.option("--runs", type=int, default=2, show_default=True, help="Timed runs per measured setting; best kept.")
@click.option("--threads", type=int, default=1, show_default=True, help="Threads for queries (pinned).")
@click.option("--build-threads", type=int, default=None, help="Threads for building [default: --threads].")
@click.option("--seed", type=int, default=0, show_default=True,
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
@click.option("--json", "as_json", is_flag=True, help="Print the answers as a JSON list (nothing else on stdout).")
@click.option("--quiet", "-q", is_flag=True, help="No line per trial, only the answers.")
@results_option
def tune(dataset: Path | None, targets: str, backends, build_specs, search_specs, max_memory: str | None,
         max_build_s: float | None, speed: str, budget: str | None, trials: int, subsample: float | None,
         finalists: int, heldout: float, k: int, runs: int,
         threads: int, build_threads: int | None, seed: int, timeout: float | None, memory_limit: str | None,
         executor: str, address: str | None, autoscaling: bool, index_cache: bool, as_json: bool, quiet: bool,
         results_path: Path) -> None:
    """Find, per backend and recall target, the fastest configuration: the search effort (ef, nprobe,
    search_k, eps) by bisection on each built index, the build parameters by Optuna (seeded TPE) within
    --max-memory/--max-build-s. Every trial is an ordinary measurement stored in --results; a killed tune run
    again resumes where it stopped. Answers are chosen on a tuning split of the queries and validated on the
    held-out split (bootstrap 95 % interval).

    Exit code 0 when every target has an answer, 1 when a target has none, 2 for bad input."""
    options = TuneOptions(targets=parse_targets(targets), backends=tuple(backends) or DEFAULT_BACKENDS,
                          max_memory=parse_size(max_memory) if max_memory is not None else None,
                          max_build_s=max_build_s, speed=speed,
                          budget_s=parse_duration(budget) if budget is not None else None, trials=trials,
                          heldout=heldout, build_specs=tuple(build_specs), search_specs=tuple(search_specs),
                          subsample=subsample, finalists=finalists)
    options.check()
    run_options = RunOptions(k=k, runs=runs, modes=("single",) if speed == "p99" else ("batch",), threads=threads,
                             build_threads=build_threads, seed=seed, timeout=timeout,
                             memory_limit=parse_size(memory_limit) if memory_limit is not None else None,
                             executor=executor, address=address, autoscaling=autoscaling, index_cache=index_cache)
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
        plan_sweep(options.backends, vs.n_train, vs.dim, vs.metric, build_specs, search_specs)
        X = vs.load_train()
        vs.load_test()
        check_groundtruth(vs, X, sample=GT_SAMPLE)
        del X
        with ResultStore(results_path) as store, RichReporter(verbose=not quiet and not as_json) as reporter:
            result = run_tune(vs, options, run_options, store, reporter)
    if as_json:
        click.echo(json.dumps([a.as_json() for a in result.ranked()], indent=1))
    else:
        print_answers(result, options, k)
        out.print(f"tune {result.tune_id}: {len(result.trials)} trial(s) in {result.elapsed_s:,.0f} s, stopped "
                  f"because {escape(result.stopped)}; log {escape(str(result.log_path))}; draw it with "
                  f"`ann-bench plot --tune {result.tune_id} -o tune.png`", soft_wrap=True)
    unmet = [t for t in options.targets if not any(a.candidate for a in result.answers if a.target == t)]
    if unmet:
        err.print(f"no backend reaches recall@{k} {', '.join(map(str, unmet))} within the constraints",
                  soft_wrap=True)
        raise SystemExit(1)


def print_answers(result, options: TuneOptions, k: int) -> None:
    goal = "highest QPS" if options.speed == "qps" else "lowest p99 latency"
    limits = []
    if options.max_memory is not None:
        limits.append(f"index ≤ {options.max_memory / 1e6:,.1f} MB")
    if options.max_build_s is not None:
        limits.append(f"build ≤ {options.max_build_s:g} s")
    table = Table(title=f"tune: {goal} per recall@{k} target{(' (' + ', '.join(limits) + ')') if limits else ''}; "
                        f"recall on {result.n_tune} tuning queries, validated on {result.n_heldout} held-out")
    for col, just in (("target", "right"), ("backend", "left"), ("build", "left"), ("search", "left"),
                      ("recall", "right"), ("held-out [95% CI]", "right"), ("QPS", "right"), ("p99 ms", "right"),
                      ("index MB", "right"), ("build s", "right")):
        table.add_column(col, justify=just, overflow="fold")
    last = None
    for a in result.ranked():
        first = a.target != last
        last = a.target
        if a.candidate is None:
            table.add_row(str(a.target) if first else "", escape(a.group), f"[dim]none: {escape(a.reason)}[/]", *[""] * 7)
            continue
        r = a.candidate.record
        mark = "[bold green]★ [/]" if first else ""
        held = a.candidate.heldout.mean()
        table.add_row(str(a.target) if first else "", mark + escape(a.group), escape(params_str(r.build_params)),
                      escape(params_str(r.search_params)), fmt_recall(a.candidate.tune_recall),
                      f"{fmt_recall(held)} [{a.heldout_ci[0]:.3f}, {a.heldout_ci[1]:.3f}]",
                      f"{r.qps:,.0f}", f"{r.p99_ms:.3f}" if r.p99_ms else "-",
                      f"{r.index_bytes / 1e6:,.1f}" if r.index_bytes is not None else "-",
                      f"{r.build_s:.2f}" if r.build_s is not None else "-")
    out.print(table)
