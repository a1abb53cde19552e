"""Sweeps: for each backend and build configuration, build once, then time every search configuration.

Timing rules (see DESIGN.md, "Measurement conventions"):

- only ``index.query`` is inside the timed region, measured with ``time.perf_counter``; search parameters are
  applied before it, native distances converted and exact distances recomputed after it;
- ``batch``: all queries in one call, QPS = nq / wall time, best of ``runs``;
- ``single``: one query per call; per-query latencies give p50/p95/p99/p99.9 and the QPS of the same run
  (the run with the least total time of ``runs``);
- recall@k by ann-benchmarks' rule on float64 distances recomputed outside the timed region, and id recall;
  a duplicate id in a result row is an error (the configuration is recorded as failed);
- thread counts are pinned through each library and recorded.
"""

from __future__ import annotations

import datetime as _dt
import gc
import re
import time
import traceback
from collections.abc import Iterable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ann_bench.backends import Index, get_backend, grid_product
from ann_bench.datasets import VectorSet
from ann_bench.distances import distances_to
from ann_bench.errors import InputError
from ann_bench.metrics import DuplicateIdsError, check_no_duplicates, distance_recall, id_recall, latency_summary
from ann_bench.results import Record, ResultStore
from ann_bench.sysinfo import host, versions

MODES = ("batch", "single")


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
    grid = dict(grid)
    names = {p.name: p for p in declared}
    for name, values in overrides:
        if name not in names:
            valid = ", ".join(p.describe() for p in declared) or "none"
            raise InputError(f"{cls.label()}: unknown {kind} parameter {name!r}; valid: {valid}")
        grid[name] = [names[name].coerce(v, cls.label()) for v in values]
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

    def check(self) -> None:
        if self.k < 1:
            raise InputError(f"-k must be >= 1, got {self.k}")
        if self.runs < 1:
            raise InputError(f"--runs must be >= 1, got {self.runs}")
        if self.threads < 1 or (self.build_threads is not None and self.build_threads < 1):
            raise InputError(f"--threads must be >= 1, got {self.threads}")
        bad = [m for m in self.modes if m not in MODES]
        if bad or not self.modes:
            raise InputError(f"unknown mode {bad[0] if bad else ''!r}; use batch, single or both")


@dataclass
class SweepSummary:
    records: list[Record] = field(default_factory=list)
    skipped_existing: int = 0
    skipped_redundant: list[str] = field(default_factory=list)


def _rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def check_k(vs: VectorSet, k: int) -> None:
    if k > vs.n_train:
        raise InputError(f"-k {k} exceeds the {vs.n_train} train vectors of {vs.name}; use -k <= {vs.n_train}")
    if vs.has_groundtruth and k > vs.gt_depth:
        raise InputError(f"-k {k} exceeds the ground-truth depth {vs.gt_depth} of {str(vs.path)!r}; "
                         f"use -k <= {vs.gt_depth}")


def run_sweep(
    vs: VectorSet,
    plans: list[BackendPlan],
    options: RunOptions,
    store: ResultStore | None = None,
    reporter: Reporter | None = None,
) -> SweepSummary:
    """Run every plan on ``vs``; store each record as soon as it is measured. Returns the new records."""
    options.check()
    check_k(vs, options.k)
    reporter = reporter or Reporter()
    X = vs.load_train()
    Q = vs.load_test()
    with reporter.task("ground truth", None if vs.has_groundtruth else vs.n_test) as advance:
        gt_D, gt_I = vs.groundtruth(options.k, progress=advance)
    dataset = dict(dataset_hash=vs.content_hash(), dataset_name=vs.name, dataset_path=str(vs.path.resolve()),
                   metric=vs.metric, n_train=vs.n_train, n_test=vs.n_test, dim=vs.dim)
    done = store.keys(dataset["dataset_hash"]) if (store is not None and options.resume) else set()
    summary = SweepSummary()
    total = sum(p.n_configs for p in plans) * len(options.modes)
    with reporter.task("sweep", total) as advance_sweep:
        for plan in plans:
            for build in plan.builds:
                def record(search, mode, **kw) -> Record:
                    return Record(backend=plan.cls.name, impl=plan.cls.impl, build_params=build,
                                  search_params=search, k=options.k, mode=mode, threads=options.threads,
                                  versions=versions(), host=host(),
                                  created_at=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                                  **dataset, **kw)

                pending = [(s, m) for s in plan.searches for m in options.modes
                           if record(s, m).key not in done]
                summary.skipped_existing += len(plan.searches) * len(options.modes) - len(pending)
                if not pending:
                    advance_sweep(len(plan.searches) * len(options.modes))
                    continue
                label = f"{plan.cls.label()} {_fmt(build)}"
                index, build_info, error = _build(plan.cls, vs.metric, vs.dim, X, build, options, reporter, label)
                for search, mode in [(s, m) for s in plan.searches for m in options.modes]:
                    if (search, mode) not in pending:
                        advance_sweep()
                        continue
                    if error is not None:
                        rec = record(search, mode, status="failed", error=error, **build_info)
                        _save(store, rec, None, summary)
                        advance_sweep()
                        continue
                    reason = index.search_skip_reason(search, options.k)
                    if reason is not None:
                        if mode == options.modes[0]:
                            summary.skipped_redundant.append(f"{label} {_fmt(search)}: {reason}")
                        advance_sweep()
                        continue
                    try:
                        index.set_search_params(**search)
                        figures, I = measure(index, Q, options.k, mode, options.runs)
                        figures.update(accuracy(vs.metric, Q, X, I, gt_D, gt_I, options.k))
                        rec = record(search, mode, **build_info, **figures)
                    except Exception as exc:  # a backend bug becomes a failed record; the sweep goes on
                        rec = record(search, mode, status="failed", error=_error_text(exc), **build_info)
                        I = None
                    _save(store, rec, I, summary)
                    reporter.log(_line(rec))
                    advance_sweep()
                del index
                gc.collect()
    return summary


def _save(store: ResultStore | None, rec: Record, I, summary: SweepSummary) -> None:
    if store is not None:
        store.save(rec, I)
    summary.records.append(rec)


def _build(cls, metric, dim, X, build, options, reporter, label):
    """Build one configuration: (index, {build_s, index_bytes, rss_delta_bytes}, error text or None)."""
    info: dict[str, Any] = {}
    try:
        index = cls(metric, dim, threads=options.build_threads or options.threads, seed=options.seed, **build)
        gc.collect()
        rss0 = _rss()
        with reporter.task(f"build {label}", None):
            t0 = time.perf_counter()
            index.build(X)
            info["build_s"] = time.perf_counter() - t0
        info["rss_delta_bytes"] = _rss() - rss0
        info["index_bytes"] = int(index.index_bytes())
        index.set_threads(options.threads)
        return index, info, None
    except InputError:
        raise
    except Exception as exc:
        return None, info, _error_text(exc)


def measure(index: Index, Q: np.ndarray, k: int, mode: str, runs: int) -> tuple[dict[str, Any], np.ndarray]:
    """Time ``runs`` runs of the queries Q (nq, d) in ``mode``; the figures of the best run and its ids."""
    nq = Q.shape[0]
    if mode == "batch":
        best, best_I = np.inf, None
        for _ in range(runs):
            t0 = time.perf_counter()
            D, I = index.query(Q, k)
            elapsed = time.perf_counter() - t0
            if elapsed < best:
                best, best_I = elapsed, (D, I)
        _, I = index.convert(*best_I)
        return {"qps": nq / best, "search_s": best, "runs": runs}, I
    rows = [Q[i : i + 1] for i in range(nq)]  # views prepared outside the timed loop
    lat = np.empty(nq, dtype=np.float64)
    best_total, best_lat, best_res = np.inf, None, None
    query = index.query
    perf = time.perf_counter
    for _ in range(runs):
        results = [None] * nq
        for i, q in enumerate(rows):
            t0 = perf()
            res = query(q, k)
            lat[i] = perf() - t0
            results[i] = res
        total = lat.sum()
        if total < best_total:
            best_total, best_lat, best_res = total, lat.copy(), results
    D = np.concatenate([r[0] for r in best_res])
    I = np.concatenate([r[1] for r in best_res])
    _, I = index.convert(D, I)
    figures = latency_summary(best_lat)
    figures.update(search_s=float(best_total), runs=runs)
    return figures, I


def accuracy(metric: str, Q: np.ndarray, X: np.ndarray, I: np.ndarray, gt_D: np.ndarray, gt_I: np.ndarray,
             k: int) -> dict[str, float]:
    """recall (distance rule) and id recall of ids I (nq, k); DuplicateIdsError if a row repeats an id."""
    if I.shape != (Q.shape[0], k):
        raise ValueError(f"backend returned ids of shape {I.shape}; expected {(Q.shape[0], k)}")
    if (I >= X.shape[0]).any() or (I < -1).any():
        raise ValueError("backend returned an id out of range")
    check_no_duplicates(I)
    exact = distances_to(metric, Q, X, I)
    return {
        "recall": float(distance_recall(exact, gt_D, k).mean()),
        "id_recall": float(id_recall(I, gt_I, k).mean()),
    }


def _error_text(exc: BaseException) -> str:
    if isinstance(exc, DuplicateIdsError):
        return f"duplicate ids: {exc}"
    tb = traceback.extract_tb(exc.__traceback__)
    where = f" (at {tb[-1].filename.rsplit('/', 1)[-1]}:{tb[-1].lineno})" if tb else ""
    return f"{type(exc).__name__}: {exc}{where}"


def _fmt(params: dict[str, Any]) -> str:
    return ",".join(f"{k}={v}" for k, v in params.items()) or "-"


def _line(rec: Record) -> str:
    if rec.status != "ok":
        return f"{rec.label()} {_fmt(rec.build_params)} {_fmt(rec.search_params)} {rec.mode}: {rec.status} {rec.error}"
    return (f"{rec.label()} {_fmt(rec.build_params)} {_fmt(rec.search_params)} {rec.mode}: "
            f"recall={rec.recall:.4f} qps={rec.qps:,.0f}")
