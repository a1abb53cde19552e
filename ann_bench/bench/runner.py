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

import dataclasses
import datetime as _dt
import math
import sqlite3
import re
from collections.abc import Iterable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ann_bench.atomic import free_space, is_disk_full, raise_if_terminated
from ann_bench.backends import Index, get_backend, grid_product
from ann_bench.data.vectorset import GT_SAMPLE, VectorSet, check_groundtruth
from ann_bench.errors import InputError
from ann_bench.bench.metrics import fmt_recall, label_metrics
from ann_bench.bench.results import Record, ResultStore, canon_params
from ann_bench.sysinfo import host, versions
from ann_bench.bench.executors import Executor, open_executor
from ann_bench.bench.worker import BuildJob, saturated_reason

MODES = ("batch", "single")
EXECUTORS = ("local", "ray")
SEED_MAX = 2**31 - 1  # faiss (int), annoy (int) and hnswlib (size_t) all take it


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


# ---- progress reporting -----------------------------------------------------------------------------------
class Reporter:
    """Progress and log hooks; the library default does nothing, the CLI draws rich progress bars."""

    @contextmanager
    def task(self, description: str, total: int | None):
        yield lambda n=1: None

    def log(self, message: str) -> None:
        pass

    def note(self, message: str) -> None:
        """A line about the run itself (data moved, waiting for resources, a retry), not about one configuration:
        shown even where per-configuration lines are not (``run -q``)."""
        self.log(message)

    def build_started(self, label: str) -> None:
        """The timed build of ``label`` (backend[impl] build parameters) started."""

    def build_progress(self, label: str, done: int, total: int) -> None:
        """The library building ``label`` reported ``done`` of ``total`` items inserted."""

    def build_ended(self, label: str) -> None:
        """The build of ``label`` ended (built, failed or stopped)."""


# ---- the sweep --------------------------------------------------------------------------------------------
@dataclass
class RunOptions:
    k: int = 10
    runs: int = 3
    modes: tuple[str, ...] = ("batch",)
    threads: int = 1
    build_threads: int | None = None  # default: threads
    seed: int = 0
    resume: bool = True  # skip configurations already in the store with status ok
    isolate: bool = True  # each build configuration in a fresh worker process
    timeout: float | None = None  # seconds per build configuration (build + its searches), isolated only
    memory_limit: int | None = None  # bytes of worker RSS, isolated only
    executor: str = "local"  # "local": worker processes here; "ray": one Ray task per build configuration
    address: str | None = None  # Ray cluster address ("auto", "HOST:PORT"); None starts a local Ray instance
    index_cache: bool = False  # save each built index in the cache dir; reuse it when the same build recurs
    exhaustive: bool = False  # measure costlier searches even after one of the same index reached recall 1.0
    autoscaling: bool = False  # the Ray cluster can grow: wait for nodes instead of refusing tasks none can hold

    def check(self) -> None:
        if self.k < 1:
            raise InputError(f"-k must be >= 1, got {self.k}")
        if self.runs < 1:
            raise InputError(f"--runs must be >= 1, got {self.runs}")
        if self.threads < 1:
            raise InputError(f"--threads must be >= 1, got {self.threads}")
        if self.build_threads is not None and self.build_threads < 1:
            raise InputError(f"--build-threads must be >= 1, got {self.build_threads}; omit it to build with "
                             "--threads")
        if not 0 <= self.seed <= SEED_MAX:
            raise InputError(f"--seed must be in [0, {SEED_MAX}] (the range faiss, hnswlib and annoy all accept), "
                             f"got {self.seed}")
        bad = [m for m in self.modes if m not in MODES]
        if bad or not self.modes:
            raise InputError(f"unknown mode {bad[0] if bad else ''!r}; use batch, single or both")
        if self.timeout is not None and not (math.isfinite(self.timeout) and self.timeout > 0):
            raise InputError(f"--timeout must be a finite number of seconds > 0, got {self.timeout}; "
                             "omit it for no time limit")
        if self.memory_limit is not None and self.memory_limit <= 0:
            raise InputError(f"--memory-limit must be > 0, got {self.memory_limit}")
        if not self.isolate and (self.timeout is not None or self.memory_limit is not None):
            raise InputError("--timeout and --memory-limit need worker processes; drop --in-process")
        if self.executor not in EXECUTORS:
            raise InputError(f"unknown executor {self.executor!r}; use {' or '.join(EXECUTORS)}")
        if self.executor == "ray" and not self.isolate:
            raise InputError("--in-process builds in this process; it cannot be combined with --executor ray")
        if self.address is not None and self.executor != "ray":
            raise InputError("--address names a Ray cluster; add --executor ray")
        if self.autoscaling and self.executor != "ray":
            raise InputError("--autoscaling is about a Ray cluster that grows; add --executor ray")


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """'2GB', '512MB', '1.5GiB', '1000000' -> bytes. One convention everywhere, as every table prints sizes:
    kB/MB/GB/TB (and k/M/G/T) are powers of 1000 (MB = 10^6 bytes); KiB/MiB/GiB/TiB powers of 1024."""
    m = _SIZE.match(str(text))
    if not m:
        raise InputError(f"malformed size {text!r}: use a number with an optional unit, e.g. 2GB or 512MB "
                         "(MB = 10^6 bytes; MiB = 2^20)")
    base = 1024 if m.group(3).lower().startswith("i") else 1000
    return int(float(m.group(1)) * base ** "_kmgt".index((m.group(2) or "_").lower()))


@dataclass
class SweepSummary:
    records: list[Record] = field(default_factory=list)
    skipped_existing: int = 0
    skipped_redundant: list[str] = field(default_factory=list)
    # The same skips, structured for a summary per index: (index label, setting, reason).
    skipped_detail: list[tuple[str, str, str]] = field(default_factory=list)

    def skip(self, index: str, setting: str, reason: str) -> None:
        self.skipped_redundant.append(f"{index} {setting}: {reason}")
        self.skipped_detail.append((index, setting, reason))

    @property
    def failed(self) -> list[Record]:
        return [r for r in self.records if r.status != "ok"]


def check_k(vs: VectorSet, k: int) -> None:
    if k > vs.n_train:
        raise InputError(f"-k {k} exceeds the {vs.n_train} train vectors of {vs.name}; use -k <= {vs.n_train}")
    if vs.has_groundtruth and k > vs.gt_depth:
        raise InputError(f"-k {k} exceeds the ground-truth depth {vs.gt_depth} of {str(vs.path)!r}; "
                         f"use -k <= {vs.gt_depth}")


def index_cache_dir(dataset_hash: str) -> Path:
    """Where ``--index-cache`` keeps the built indices of one dataset: ``<cache dir>/indices/<hash prefix>``."""
    from ann_bench.config import cache_dir

    return cache_dir() / "indices" / dataset_hash[:16]


def check_labels(vs: VectorSet) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(train_labels (n,), test_labels (nq,)) of ``vs``, or (None, None) when it lacks either; InputError when
    their shapes do not match the vectors."""
    if not vs.has_labels:
        return None, None
    train_labels, test_labels = vs.labels("train"), vs.labels("test")
    for key, labels, n in (("train_labels", train_labels, vs.n_train), ("test_labels", test_labels, vs.n_test)):
        if labels.shape != (n,):
            raise InputError(f"{key!r} in {str(vs.path)!r} has shape {labels.shape}; expected ({n},). Fix or "
                             f"delete the labels (label metrics need one label per vector)")
        if labels.dtype.kind == "f" and not np.isfinite(labels).all():
            row = int(np.flatnonzero(~np.isfinite(labels))[0])
            raise InputError(f"{key!r} in {str(vs.path)!r} holds {labels[row].item()!r} at row {row}; a NaN label equals "
                             "no other, so label metrics would silently count it as a miss. Give every vector a "
                             "label, or delete the labels")
    return train_labels, test_labels


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
    bad_files: list[str] = []
    done = store.keys(dataset["dataset_hash"], bad_files=bad_files) if (store is not None and options.resume) else set()
    for problem in bad_files:
        reporter.log(f"{problem}: measuring it again")
    exact = _exact_rows(store, dataset["dataset_hash"], options) if done and not options.exhaustive else {}
    summary = SweepSummary()
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

                label = f"{plan.cls.label()} {_fmt(build)}"
                probe = plan.cls(vs.metric, vs.dim, **build)  # parameters only: nothing is built
                pending = []
                stored_exact = exact.get((plan.cls.name, plan.cls.impl, canon_params(build)), [])
                for search in plan.searches:
                    reason = probe.search_skip_reason(search, options.k)
                    if reason is not None:
                        summary.skip(label, f"{_fmt(search)} {'+'.join(options.modes)}", reason)
                        advance_sweep(len(options.modes))
                        continue
                    for mode in options.modes:
                        if record(search, mode).key in done:
                            summary.skipped_existing += 1
                            advance_sweep()
                        elif (reason := saturated_reason(plan.cls, search, mode, stored_exact, options.k,
                                                         stored=True)) is not None:
                            summary.skip(label, f"{_fmt(search)} {mode}", reason)
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
                               dataset_hash=dataset["dataset_hash"])
                recorder = JobRecorder(job, record, store, summary, reporter, advance_sweep, exact_labels)
                queued.append((job, recorder, label))
        executor.run(queued, vs, X, Q)
    return summary


class JobRecorder:
    """Turns one build job's events (see :mod:`ann_bench.bench.worker`) into records, stored as they arrive: the
    one code path from events to rows, whichever executor ran the job. ``exact_labels``: the exact
    neighbours' label metrics, added to every successful row's ``label_metrics``."""

    def __init__(self, job: BuildJob, record, store: ResultStore | None, summary: SweepSummary,
                 reporter: Reporter, advance_sweep, exact_labels: dict[str, float] | None = None):
        self.job, self.record, self.store, self.summary = job, record, store, summary
        self.reporter, self.advance_sweep, self.exact_labels = reporter, advance_sweep, exact_labels
        self.build_info: dict[str, Any] = {}
        self.node: dict[str, Any] = {}  # host and versions of the machine that ran the job, when not this one
        self.finished: set[int] = set()
        self.build_label = f"{job.backend}[{job.impl}] {_fmt(job.build)}"
        self.building = False
        self.exact_done: list[tuple[dict[str, Any], str]] = []  # recorded (search, mode) at recall 1.0
        self.retried: dict[str, Any] = {}  # attempts / retry_reason of every row after a retry

    def retry(self, reason: str) -> BuildJob:
        """The job again, for another node after an infrastructure failure (``reason``) lost this attempt:
        what was recorded stays, the rest is measured by the new attempt, whose rows say so."""
        self._build_ended()
        self.retried = {"attempts": self.retried.get("attempts", 1) + 1, "retry_reason": reason}
        self.build_info, self.node = {}, {}
        if self.job.tune is not None:  # a bisection chooses its searches as it goes: it starts over
            self.job.pending.clear()
            self.finished.clear()
            return dataclasses.replace(self.job, pending=self.job.pending)
        return dataclasses.replace(self.job, done=frozenset(self.finished), exact=list(self.exact_done))

    def _build_ended(self) -> None:
        if self.building:
            self.building = False
            self.reporter.build_ended(self.build_label)

    def save(self, i: int, I=None, **fields) -> None:
        raise_if_terminated()
        search, mode = self.job.pending[i]
        rec = self.record(search, mode, **self.node, **self.build_info, **self.retried, **fields)
        if self.store is not None:
            try:
                self.store.save(rec, I)
            except (OSError, sqlite3.Error, InputError) as exc:
                if not is_disk_full(exc):
                    raise
                # The row's transaction rolled back and its neighbour file was removed: the store holds every
                # earlier row, whole. A re-run skips those and measures the rest.
                raise InputError(f"disk full while saving {rec.label()} {_fmt(rec.build_params)} "
                                 f"{_fmt(rec.search_params)} {rec.mode} to {str(self.store.path)!r} "
                                 f"({free_space(self.store.path.parent)} free); {len(self.summary.records)} "
                                 "row(s) of this run were saved and the store is consistent: free some space "
                                 "and run the same command again to finish") from None
        self.summary.records.append(rec)
        self.finished.add(i)
        if rec.status == "ok" and rec.recall is not None and rec.recall >= 1.0:
            self.exact_done.append((search, mode))
        self.reporter.log(_line(rec))
        self.advance_sweep()

    def on_event(self, kind, *payload) -> None:
        if kind == "pending":  # a tuning job chose its next configuration: results refer to it by position
            self.job.pending.append(tuple(payload))
        elif kind == "building":
            self.building = True
            self.reporter.build_started(self.build_label)
        elif kind == "build_progress":
            self.reporter.build_progress(self.build_label, *payload)
        elif kind == "built":
            self._build_ended()
            self.build_info.update(payload[0])
        elif kind == "result":
            i, figures, I = payload
            if self.exact_labels:
                figures = {**figures, "label_metrics": {**figures.get("label_metrics", {}), **self.exact_labels}}
            self.save(i, I, **figures)
        elif kind == "error":
            i, text = payload
            self.save(i, status="failed", error=text)
        elif kind == "skipped":  # not stored: a resumed sweep skips it again from the stored recall-1.0 row
            i, reason = payload
            search, mode = self.job.pending[i]
            self.summary.skip(f"{self.job.backend}[{self.job.impl}] {_fmt(self.job.build)}", f"{_fmt(search)} {mode}",
                              reason)
            self.finished.add(i)
            self.advance_sweep()
        elif kind == "note":
            self.reporter.log(f"{self.job.backend}[{self.job.impl}] {_fmt(self.job.build)}: {payload[0]}")
        elif kind == "build_failed":
            self._build_ended()
            for i in range(len(self.job.pending)):
                self.save(i, status="failed", error=f"build: {payload[0]}")

    def finish(self, outcome: tuple[str, str] | None) -> None:
        """The job is over: with an outcome (status, error) from the executor, every configuration it did not
        report gets that status, its error prefixed by the stage it was in."""
        self._build_ended()
        if outcome is not None:
            status, text = outcome
            stage = "search" if self.build_info else "build"
            for i in range(len(self.job.pending)):
                if i not in self.finished:
                    self.save(i, status=status, error=f"{stage}: {text}")


def _exact_rows(store: ResultStore, dataset_hash: str, options: RunOptions) -> dict[tuple, list[tuple[dict, str]]]:
    """Stored ok rows of this dataset, k and thread count with recall 1.0, as {(backend, impl, build):
    [(search, mode), ...]}: a resumed sweep skips what they make redundant, as the first pass did."""
    out: dict[tuple, list[tuple[dict, str]]] = {}
    for r in store.records(dataset=dataset_hash):
        if (r.status == "ok" and r.recall is not None and r.recall >= 1.0 and r.k == options.k
                and r.threads == options.threads):
            out.setdefault((r.backend, r.impl, canon_params(r.build_params)), []).append((r.search_params, r.mode))
    return out


def _fmt(params: dict[str, Any]) -> str:
    return ",".join(f"{k}={v}" for k, v in params.items()) or "-"


def _line(rec: Record) -> str:
    if rec.status != "ok":
        return f"{rec.label()} {_fmt(rec.build_params)} {_fmt(rec.search_params)} {rec.mode}: {rec.status} {rec.error}"
    precision = rec.label_metrics.get(f"precision_at_{rec.k}")
    return (f"{rec.label()} {_fmt(rec.build_params)} {_fmt(rec.search_params)} {rec.mode}: "
            f"recall={fmt_recall(rec.recall)} qps={rec.qps:,.0f}"
            + (f" precision@{rec.k}={precision:.4f}" if precision is not None else ""))
