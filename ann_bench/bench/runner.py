"""Sweeps: for each backend and build configuration, build once, then time every search configuration.

Timing rules (see DESIGN.md, "Measurement conventions"):

- only ``index.query`` is inside the timed region, measured with ``time.perf_counter``; search parameters are
  applied before it, native distances converted and exact distances recomputed after it;
- ``batch``: all queries in one call, QPS = nq / wall time, best of ``runs``;
- ``single``: one query per call; per-query latencies give p50/p95/p99/p99.9 and the QPS of the same run
  (the run with the least total time of ``runs``);
- recall@k by ann-benchmarks' rule on float64 distances recomputed outside the timed region, and id recall;
  a duplicate id in a result row is an error (the configuration is recorded as failed);
- when the set has labels, label-aware retrieval metrics (:func:`ann_bench.bench.metrics.label_metrics`) of each
  configuration's ids, and once per sweep those of the exact neighbours, stored in every row's
  ``label_metrics`` under ``exact_*`` keys so the cost of the approximation shows row by row;
- thread counts are pinned through each library and recorded.
"""

from __future__ import annotations

import datetime as _dt
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from ann_bench.backends import Index, get_backend, grid_product
from ann_bench.bench.executors import Executor, open_executor
# The shared job and recording types live in ann_bench.bench.jobs (below runner, tune and the executors); they
# are re-exported here, where callers have always found them.
from ann_bench.bench.jobs import (EXECUTORS, MODES, SEED_MAX, JobRecorder, Reporter, RunOptions,  # noqa: F401
                                  SweepSummary, check_k, check_labels, index_cache_dir, parse_size,
                                  short_label)
from ann_bench.bench.metrics import label_metrics
from ann_bench.bench.results import Record, ResultStore, canon_params
from ann_bench.bench.worker import BuildJob, levelled_reason, saturated_reason
from ann_bench.data.vectorset import GT_SAMPLE, VectorSet, check_groundtruth
from ann_bench.errors import InputError
from ann_bench.sysinfo import host, versions


# ---- parameter grids from the command line ----------------------------------------------------------------
_SPEC = re.compile(r"^(?:(?P<backend>[A-Za-z0-9_\-]+):)?(?P<name>[A-Za-z_][A-Za-z0-9_]*)=(?P<values>[^=]+)$")


def parse_param_specs(specs: Iterable[str], option: str = "--build") -> list[tuple[str | None, str, list[str]]]:
    """Parse ``NAME=V1,V2`` or ``BACKEND:NAME=V1,V2`` strings (several per string, separated by spaces or ';').

    Returns [(backend or None, name, [raw values])]; InputError on a malformed string.
    """
    out = []
    for spec in specs:
        for part in re.split(r"[;\s]+", spec.strip()):
            if not part:
                continue
            m = _SPEC.match(part)
            values = [v.strip() for v in m.group("values").split(",")] if m else []
            if not m or not all(values):
                raise InputError(f"malformed {option} {part!r}: expected NAME=V1,V2,... or BACKEND:NAME=V1,V2,... "
                                 f"(e.g. {option} M=16,32)")
            out.append((m.group("backend"), m.group("name"), values))
    return out


@dataclass
class BackendPlan:
    """One backend implementation with its validated build and search configurations."""

    cls: type[Index]
    builds: list[dict[str, Any]]
    searches: list[dict[str, Any]]

    @property
    def n_configs(self) -> int:
        return len(self.builds) * len(self.searches)


def _override(grid: dict[str, list], cls: type[Index], declared, overrides, kind: str) -> dict[str, list]:
    """``grid`` with the command line's values in place of the defaults. A parameter given several times
    (``--build M=8 --build M=16``) sweeps the union of its values, in the order given."""
    grid = dict(grid)
    names = {p.name: p for p in declared}
    given: dict[str, list] = {}
    for name, values in overrides:
        if name not in names:
            valid = ", ".join(p.describe() for p in declared) or "none"
            raise InputError(f"{cls.label()}: unknown {kind} parameter {name!r}; valid: {valid}")
        merged = given.setdefault(name, [])
        for v in values:
            value = names[name].coerce(v, cls.label())
            if value not in merged:
                merged.append(value)
    grid.update(given)
    return grid


def plan_sweep(
    backends: Sequence[str],
    n: int,
    dim: int,
    metric: str,
    build_specs: Sequence[str] = (),
    search_specs: Sequence[str] = (),
) -> list[BackendPlan]:
    """Validate the whole sweep before any work: backends (``name`` or ``name:impl``), parameter names and
    values, and their fit to the data (n vectors of dimension dim, metric). Unprefixed parameters apply to
    every selected backend that declares them (a name no selected backend declares is an error);
    ``BACKEND:NAME=...`` targets one backend."""
    if not backends:
        raise InputError("no backend given; pass --backend NAME (see `ann-bench backends`)")
    classes: list[type[Index]] = []
    for spec in backends:
        name, _, impl = spec.partition(":")
        cls = get_backend(name, impl or None)
        cls.check_available()
        if metric not in cls.capabilities.metrics:
            raise InputError(f"{cls.label()} does not support metric {metric!r}; it supports "
                             f"{', '.join(cls.capabilities.metrics)}")
        if cls not in classes:
            classes.append(cls)
    parsed = {"build": parse_param_specs(build_specs, "--build"),
              "search": parse_param_specs(search_specs, "--search")}
    names = {cls.name for cls in classes}
    for kind, items in parsed.items():
        for backend, pname, _ in items:
            if backend is not None and backend not in names:
                raise InputError(f"--{kind} names backend {backend!r}, which is not in this run "
                                 f"({', '.join(sorted(names))})")
            targets = [c for c in classes if backend is None or c.name == backend]
            declared = lambda c: c.build_params if kind == "build" else c.search_params  # noqa: E731
            if not any(pname in {p.name for p in declared(c)} for c in targets):
                valid = "; ".join(f"{c.label()}: " + (", ".join(p.describe() for p in declared(c)) or "none")
                                  for c in targets)
                raise InputError(f"unknown {kind} parameter {pname!r}; valid: {valid}")
    plans = []
    for cls in classes:
        def mine(kind):  # unprefixed values go to every backend that declares the parameter
            declared = {p.name for p in (cls.build_params if kind == "build" else cls.search_params)}
            return [(nm, vals) for b, nm, vals in parsed[kind] if b == cls.name or (b is None and nm in declared)]

        build_grid = _override(cls.default_build_grid(n, dim), cls, cls.build_params, mine("build"), "build")
        search_grid = _override(cls.default_search_grid(n, dim), cls, cls.search_params, mine("search"), "search")
        builds = [cls.validate_build_params(p) for p in grid_product(build_grid)]
        for b in builds:
            cls.check_data(b, n, dim)
            cls(metric, dim, **b)  # construction validates the parameters against the metric, allocates nothing
        searches = [cls.validate_search_params(p) for p in grid_product(search_grid)]
        plans.append(BackendPlan(cls, _unique(builds), _unique(searches)))
    return plans


def _unique(configs: list[dict]) -> list[dict]:
    seen, out = set(), []
    for c in configs:
        key = tuple(sorted(c.items()))
        if key not in seen:
            seen.add(key)
            out.append(c)
    return out


# ---- the sweep --------------------------------------------------------------------------------------------
def run_sweep(
    vs: VectorSet,
    plans: list[BackendPlan],
    options: RunOptions,
    store: ResultStore | None = None,
    reporter: Reporter | None = None,
    executor: Executor | None = None,
) -> SweepSummary:
    """Run every plan on ``vs``; store each record as soon as it is measured. Returns the new records.

    Each build configuration runs in a fresh worker process (``options.isolate``), so a crash, a hang
    (``options.timeout``) or a memory blow-up (``options.memory_limit``) becomes failed records for what it
    had not finished, and the sweep goes on. With ``options.resume``, configurations already stored with
    status ok are skipped; failed and timed-out ones are tried again. With ``options.executor == "ray"`` each
    build configuration is a Ray task instead (:mod:`ann_bench.bench.executors`); this process still decides
    what to run and is the only writer of the store. ``executor``: one already opened
    (:func:`ann_bench.bench.executors.open_executor`), else one is opened for this sweep.
    """
    options.check()
    check_groundtruth(vs)
    check_k(vs, options.k)
    reporter = reporter or Reporter()
    if executor is not None:  # opened by the caller (the CLI connects before it creates the store)
        return _sweep(vs, plans, options, store, reporter, executor)
    with open_executor(options, reporter) as executor:
        return _sweep(vs, plans, options, store, reporter, executor)


def _sweep(vs, plans, options, store, reporter, executor: Executor) -> SweepSummary:
    X = vs.load_train()  # read (and hashed) once here: the ground-truth check and the inline executor use it
    Q = vs.load_test()
    check_groundtruth(vs, X, sample=GT_SAMPLE)
    with reporter.task("ground truth", None if vs.has_groundtruth else vs.n_test) as advance:
        gt_D, gt_I = executor.groundtruth(vs, options.k, progress=advance)
    train_labels, test_labels = check_labels(vs)
    exact_labels: dict[str, float] = {}
    if train_labels is not None:
        exact_labels = {f"exact_{name}": value
                        for name, value in label_metrics(gt_I, train_labels, test_labels, options.k).items()}
    dataset = dict(dataset_hash=vs.content_hash(), dataset_name=vs.name, dataset_path=str(vs.path.resolve()),
                   metric=vs.metric, n_train=vs.n_train, n_test=vs.n_test, dim=vs.dim)
    if store is not None:
        store.register_dataset(dataset["dataset_hash"], dataset["dataset_name"], dataset["dataset_path"])
    bad_files: list[str] = []
    done = (store.keys(dataset["dataset_hash"], bad_files=bad_files, contended=not options.remeasure_contended)
            if (store is not None and options.resume) else set())
    for problem in bad_files:
        reporter.log(f"{problem}: measuring it again")
    # Stored rows make costlier settings redundant as the first pass's did: past recall 1.0, or past a levelled-off
    # recall (the worker goes on judging the latter from these rows and its own measurements).
    stored_rows = _stored_rows(store, dataset["dataset_hash"], options) if done and not options.exhaustive else {}
    summary = SweepSummary()
    cases = _filter_cases(vs, X, Q, options, train_labels, test_labels, dataset["dataset_hash"], reporter)
    if cases:
        return _filtered_sweep(vs, plans, options, store, reporter, executor, X, Q, gt_D, gt_I, dataset, done,
                               summary, cases)
    total = sum(p.n_configs for p in plans) * len(options.modes)
    queued: list[tuple[BuildJob, JobRecorder, str]] = []  # planned, then handed to the executor
    with reporter.task("sweep", total) as advance_sweep:
        for plan in plans:
            for build in plan.builds:
                def record(search, mode, _cls=plan.cls, _build=build, **kw) -> Record:
                    kw.setdefault("versions", versions())  # a Ray task reports its own node's
                    kw.setdefault("host", host())
                    return Record(backend=_cls.name, impl=_cls.impl, build_params=_build,
                                  search_params=search, k=options.k, mode=mode, threads=options.threads,
                                  created_at=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                                  **dataset, **kw)

                label = short_label(plan.cls.label(), build)
                probe = plan.cls(vs.metric, vs.dim, **build)  # parameters only: nothing is built
                pending = []
                stored = stored_rows.get((plan.cls.name, plan.cls.impl, canon_params(build)), [])
                stored_exact = [(s, m) for s, m, recall in stored if recall >= 1.0]
                for search in plan.searches:
                    reason = probe.search_skip_reason(search, options.k)
                    if reason is not None:
                        summary.skip(label, short_label("", search, "+".join(options.modes)), reason)
                        advance_sweep(len(options.modes))
                        continue
                    for mode in options.modes:
                        if record(search, mode).key in done:
                            summary.skipped_existing += 1
                            advance_sweep()
                        elif (reason := saturated_reason(plan.cls, search, mode, stored_exact, options.k, stored=True)
                              or levelled_reason(plan.cls, search, mode, stored, options.k, stored=True)) is not None:
                            summary.skip(label, short_label("", search, mode), reason)
                            advance_sweep()
                        else:
                            pending.append((search, mode))
                if not pending:
                    continue
                job = BuildJob(dataset_path=str(vs.path), metric=vs.metric, dim=vs.dim, backend=plan.cls.name,
                               impl=plan.cls.impl, build=build, pending=pending, k=options.k, runs=options.runs,
                               threads=options.threads, build_threads=options.build_threads or options.threads,
                               seed=options.seed, gt_D=gt_D, gt_I=gt_I, train_labels=train_labels,
                               test_labels=test_labels,
                               index_cache=str(index_cache_dir(dataset["dataset_hash"])) if options.index_cache
                               else None, skip_saturated=not options.exhaustive,
                               dataset_hash=dataset["dataset_hash"], vectors_hash=vs.vectors_hash(),
                               measured=stored, pin_cpus=options.pin_cpus)
                recorder = JobRecorder(job, record, store, summary, reporter, advance_sweep, exact_labels)
                queued.append((job, recorder, label))
        executor.run(queued, vs, X, Q)
    return summary


def _filter_cases(vs, X, Q, options: RunOptions, train_labels, test_labels, dataset_hash: str, reporter):
    """The filters of ``options.filters`` with their exact filtered ground truth (cached), or []."""
    if not options.filters:
        return []
    from ann_bench.bench.filters import FilteredCase, filtered_groundtruth, make_filter
    from ann_bench.config import cache_dir

    cases = []
    for name in options.filters:
        flt = make_filter(name, vs.n_train, vs.n_test, options.k, train_labels, test_labels, options.seed,
                          attribute=vs.attribute)
        with reporter.task(f"filtered ground truth ({name})", None):
            D, I = filtered_groundtruth(X, Q, vs.metric, flt, options.k, cache_dir() / "filters" / dataset_hash)
        cases.append(FilteredCase(flt, D, I))
    return cases


def _filtered_sweep(vs, plans, options, store, reporter, executor, X, Q, gt_D, gt_I, dataset, done, summary,
                    cases) -> SweepSummary:
    """``run --filter``: each build configuration once, then every search setting x filter x strategy x mode
    measured on it in the worker (:class:`~ann_bench.bench.filters.FilteredPlan`)."""
    from ann_bench.bench.filters import FilteredPlan

    strategies = list(options.filter_strategies)
    per_search = len(options.modes) * len(cases) * len(strategies)
    total = sum(p.n_configs for p in plans) * per_search
    queued: list[tuple[BuildJob, JobRecorder, str]] = []
    with reporter.task("sweep", total) as advance_sweep:
        for plan in plans:
            for build in plan.builds:
                def record(search, mode, _cls=plan.cls, _build=build, **kw) -> Record:
                    kw.setdefault("versions", versions())
                    kw.setdefault("host", host())
                    return Record(backend=_cls.name, impl=_cls.impl, build_params=_build,
                                  search_params=search, k=options.k, mode=mode, threads=options.threads,
                                  created_at=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                                  **dataset, **kw)

                label = short_label(plan.cls.label(), build)
                probe = plan.cls(vs.metric, vs.dim, **build)
                searches, stored = [], set()
                for search in plan.searches:
                    reason = probe.search_skip_reason(search, options.k)
                    if reason is not None:
                        summary.skip(label, short_label("", search, "+".join(options.modes)), reason)
                        advance_sweep(per_search)
                        continue
                    searches.append(search)
                    for case in cases:
                        for strategy in strategies:
                            for mode in options.modes:
                                key = record(search, mode, filter_spec=case.flt.name, filter_strategy=strategy).key
                                if key in done:
                                    stored.add((canon_params(search), mode, case.flt.name, strategy))
                                    summary.skipped_existing += 1
                                    advance_sweep()
                if len(stored) == len(searches) * per_search:
                    continue
                job = BuildJob(dataset_path=str(vs.path), metric=vs.metric, dim=vs.dim, backend=plan.cls.name,
                               impl=plan.cls.impl, build=build, pending=[], k=options.k, runs=options.runs,
                               threads=options.threads, build_threads=options.build_threads or options.threads,
                               seed=options.seed, gt_D=gt_D, gt_I=gt_I,
                               index_cache=str(index_cache_dir(dataset["dataset_hash"])) if options.index_cache
                               else None, skip_saturated=False, dataset_hash=dataset["dataset_hash"],
                               vectors_hash=vs.vectors_hash(), pin_cpus=options.pin_cpus,
                               plan=FilteredPlan(searches, tuple(options.modes), cases, strategies,
                                                 frozenset(stored)))
                recorder = JobRecorder(job, record, store, summary, reporter, advance_sweep, {})
                queued.append((job, recorder, label))
        executor.run(queued, vs, X, Q)
    return summary


def _stored_rows(store: ResultStore, dataset_hash: str, options: RunOptions
                 ) -> dict[tuple, list[tuple[dict, str, float]]]:
    """Stored ok rows of this dataset, k and thread count, as {(backend, impl, build): [(search, mode, recall),
    ...]}: a resumed sweep skips what they make redundant (recall 1.0 reached, or levelled off, with less effort),
    as the first pass did."""
    out: dict[tuple, list[tuple[dict, str, float]]] = {}
    for r in store.records(dataset=dataset_hash):
        if (r.status == "ok" and r.recall is not None and math.isfinite(r.recall) and r.k == options.k
                and r.threads == options.threads):
            out.setdefault((r.backend, r.impl, canon_params(r.build_params)), []).append(
                (r.search_params, r.mode, r.recall))
    return out
