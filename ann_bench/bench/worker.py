"""One build configuration, measured: build once, time each pending search configuration.

:func:`execute_build` does the work and reports through an ``emit`` callback; :func:`run_in_process` runs it
in a fresh spawned worker process with a timeout and a memory limit, so that a segfault, an abort, an
out-of-memory kill, an exception or a hang in a library becomes a failed (or timed-out) record and the
sweep goes on. The parent process is the only writer of the results store.

Events (tuples) sent to the parent:

- ``("built", info)``: build_s, rss_delta_bytes, peak_rss_bytes, index_bytes;
- ``("result", i, figures, I)``: figures of pending configuration i and the ids it returned (nq, k); with
  labels, ``figures["label_metrics"]`` holds the label-aware metrics of those ids;
- ``("error", i, text)``: pending configuration i failed (e.g. duplicate ids);
- ``("skipped", i, reason)``: pending configuration i was not measured because an earlier one of the same
  index and mode reached recall 1.0 with less effort (see :meth:`Index.costlier`), or because the recall of its
  line had levelled off below it (:func:`levelled_reason`);
- ``("build_failed", text)``: the build raised; every pending configuration fails with it;
- ``("note", text)``: something the user should read that changes no row (a bad index-cache file rebuilt);
- ``("building",)``: the timed build starts now (the parent enforces ``job.build_limit_s`` from here);
- ``("build_progress", done, total)``: items inserted so far, where the library reports it (at most twice a
  second);
- ``("pending", search, mode)``: a job with a search plan (``job.plan``, e.g. tune's bisection) chose the next
  configuration to measure; it is appended to ``pending``, and its ``result`` event follows.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import json
import math
import multiprocessing
import os
import signal
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ann_bench.atomic import pid_alive
from ann_bench.distances import distances_to
from ann_bench.bench.metrics import (RECALL_RULE, SATURATION, DuplicateIdsError, check_no_duplicates, distance_recall,
                                    fmt_recall, id_recall, label_metrics, latency_summary, tie_recall)
from ann_bench.bench.results import CONTENDED_SHARE, short_params
from ann_bench.errors import InputError

POLL_S = 0.05


@dataclass
class BuildJob:
    """Everything a worker needs for one build configuration (picklable)."""

    dataset_path: str
    metric: str
    dim: int
    backend: str
    impl: str
    build: dict[str, Any]
    pending: list[tuple[dict[str, Any], str]]  # (search params, mode) to measure, in order
    k: int
    runs: int
    threads: int
    build_threads: int
    seed: int
    gt_D: np.ndarray = field(repr=False, default=None)
    gt_I: np.ndarray = field(repr=False, default=None)
    train_labels: np.ndarray | None = field(repr=False, default=None)  # (n,), None when the set has no labels
    test_labels: np.ndarray | None = field(repr=False, default=None)  # (nq,)
    index_cache: str | None = None  # directory of saved indices of this dataset; None: always build
    # Skip costlier searches once one reached recall 1.0 or the recall levelled off below them (False: --exhaustive).
    skip_saturated: bool = True
    dataset_hash: str = ""  # content hash of the set the sweep planned (the store's dataset identity)
    vectors_hash: str = ""  # VectorSet.vectors_hash of that set: a worker reading other vectors fails
    build_limit_s: float | None = None  # kill the worker when its build alone takes longer (tune's --max-build-s)
    # A search plan chooses the searches after the build instead of ``pending`` (tune's bisection): any picklable
    # object with ``execute(job, cls, index, X, Q, info, emit)``. The worker runs what it is handed and imports no
    # planner: every arrow in ann_bench/bench points down, from tune to here.
    plan: Any = None
    # A retry after the node of an earlier attempt died: the positions of ``pending`` it already recorded, and the
    # (search, mode) of those that reached recall 1.0 (they make costlier settings redundant, as in one attempt).
    done: frozenset[int] = frozenset()
    exact: list[tuple[dict[str, Any], str]] = field(default_factory=list)
    # (search, mode, recall) already measured on this build configuration: rows of the store a resumed sweep found,
    # and those of an earlier attempt. Where the recall levelled off is judged from them and the new measurements.
    measured: list[tuple[dict[str, Any], str, float]] = field(default_factory=list)
    pin_cpus: int | None = None  # the timed searches run on this many of the least busy CPUs (--pin-cpus)
    build_rows: Any = None  # rows of the train vectors the build uses (ndarray), None: all (stream's initial build)


# ---- measuring --------------------------------------------------------------------------------------------
def measure(index, Q: np.ndarray, k: int, mode: str, runs: int) -> tuple[dict[str, Any], np.ndarray]:
    """Time ``runs`` runs of the queries Q (nq, d) in ``mode``; the figures of the best run and its ids.

    When even the best run got less than :data:`CONTENDED_SHARE` of its query threads' time (another process
    had the CPU), up to ``2 * runs`` more runs are timed, stopping at the first that was not contended: on a
    busy machine the best figure is then one the library earned with the CPU to itself, where that happened.
    The row still records the CPU share of the run its figures come from, and the count of runs.

    The garbage collector is off while timing, as :mod:`timeit` does: the results kept for the recall check
    are thousands of live objects, and a collection they trigger would land in some query's latency."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        return _measure(index, Q, k, mode, runs)
    finally:
        if enabled:
            gc.enable()


EXTRA_RUNS = 2  # at most EXTRA_RUNS * runs more runs when every run so far was contended


def cpu_share(index, wall: float, cpu: float) -> float | None:
    """The process CPU time of one timed run over its wall time, per query thread (1.0: every query thread ran
    all the time; 0.5: half the time, another process had the core the other half)."""
    threads = max(1, int(getattr(index, "threads", 1) or 1))
    return round(min(cpu / (wall * threads), 9.99), 4) if wall > 0 else None


def cpu_figures(index, walls: list[float], cpus: list[float], best: int) -> dict[str, Any]:
    """What the machine gave the timed runs: ``cpu_share`` of the best run (:func:`cpu_share`), the load
    average when they ended, and the median run's wall time beside the best."""
    return {"cpu_share": cpu_share(index, walls[best], cpus[best]), "load_avg": round(os.getloadavg()[0], 2),
            "search_s_median": float(np.median(walls))}


def _contended(index, wall: float, cpu: float) -> bool:
    share = cpu_share(index, wall, cpu)
    return share is not None and share < CONTENDED_SHARE


def _measure(index, Q: np.ndarray, k: int, mode: str, runs: int) -> tuple[dict[str, Any], np.ndarray]:
    nq = Q.shape[0]
    cpu, perf = time.process_time, time.perf_counter
    most = runs * (1 + EXTRA_RUNS)
    walls: list[float] = []
    cpus: list[float] = []
    best_i = 0  # the run the figures come from
    if mode == "batch":
        best, best_res = np.inf, None
        while len(walls) < runs or (len(walls) < most and _contended(index, walls[best_i], cpus[best_i])):
            c0 = cpu()
            t0 = perf()
            res = index.query(Q, k)
            elapsed = perf() - t0
            cpus.append(cpu() - c0)
            walls.append(elapsed)
            if elapsed < best:
                best, best_res = elapsed, res
            best_i = int(np.argmin(walls))
        _, I = index.convert(*best_res)
        figures = {"qps": nq / best, "search_s": best, "runs": len(walls)}
        figures.update(cpu_figures(index, walls, cpus, best_i))
        figures.update(_engine_figures(index, Q, k, mode, runs))
        return figures, I
    rows = [Q[i : i + 1] for i in range(nq)]  # views prepared outside the timed loop
    lat = np.empty(nq, dtype=np.float64)
    best_total, best_lat, best_res, best_finish = np.inf, None, None, None
    totals: list[float] = []
    while len(walls) < runs or (len(walls) < most and _contended(index, walls[best_i], cpus[best_i])):
        # The bare library call where the backend has one; whatever it returns is unpacked after the run.
        query, finish, keep = index.single_query(Q, k)
        results = [None] * nq
        c0, w0 = cpu(), perf()
        for i, q in enumerate(rows):
            t0 = perf()
            res = query(q)
            lat[i] = perf() - t0
            if keep is None:
                results[i] = res
            else:
                keep(i, res)
                # Dropped now, not when the next call's result replaces it: that call can then reuse its memory,
                # as in a user's loop (kept alive, hnswlib ef 20 read 4 % slower: issue 33).
                res = None
        cpus.append(cpu() - c0)
        walls.append(perf() - w0)
        total = lat.sum()
        totals.append(total)
        if total < best_total:
            best_total, best_lat, best_res, best_finish = total, lat.copy(), results, finish
        best_i = int(np.argmin(totals))
    _, I = index.convert(*best_finish(best_res))
    figures = latency_summary(best_lat)
    figures.update(search_s=float(best_total), runs=len(walls))
    figures.update(cpu_figures(index, walls, cpus, best_i))
    figures["search_s_median"] = float(np.median(totals))
    figures.update(_engine_figures(index, Q, k, mode, runs))
    return figures, I


def _engine_figures(index, Q: np.ndarray, k: int, mode: str, runs: int) -> dict[str, float]:
    """``qps_engine``: the QPS of the engine under a database's client (:meth:`Index.engine_query`), timed right after
    the client on the same queries in the same mode, best of ``runs`` runs — and, as for the client, up to
    :data:`EXTRA_RUNS` x ``runs`` more while every run so far was contended; ``cpu_share_engine``: the best run's
    CPU share (:func:`cpu_share`). {} where the index has no such engine."""
    if index.engine_unavailable() is not None:
        return {}
    cpu, perf = time.process_time, time.perf_counter
    walls: list[float] = []  # each run's wall time (for its CPU share)
    cpus: list[float] = []
    totals: list[float] = []  # each run's search time: the batch call, or the sum of the single calls
    best_i = 0
    while len(walls) < runs or (len(walls) < runs * (1 + EXTRA_RUNS) and _contended(index, walls[best_i],
                                                                                    cpus[best_i])):
        c0, w0 = cpu(), perf()
        if mode == "batch":
            index.engine_query(Q, k)
            total = perf() - w0
        else:
            query, _, keep = index.engine_single_query(Q, k)
            total = 0.0
            for i in range(Q.shape[0]):
                q = Q[i : i + 1]
                t0 = perf()
                res = query(q)
                total += perf() - t0
                if keep is not None:
                    keep(i, res)
                res = None
        cpus.append(cpu() - c0)
        walls.append(perf() - w0)
        totals.append(total)
        best_i = int(np.argmin(totals))
    return {"qps_engine": Q.shape[0] / totals[best_i],
            "cpu_share_engine": cpu_share(index, walls[best_i], cpus[best_i])}


def accuracy(metric: str, Q: np.ndarray, X: np.ndarray, I: np.ndarray, gt_D: np.ndarray, gt_I: np.ndarray,
             k: int, true_D: np.ndarray | None = None) -> dict[str, Any]:
    """recall (scale-free, tie-aware), recall_ab (ann-benchmarks' rule) and id recall of ids I (nq, k);
    DuplicateIdsError if a row repeats an id.

    ``true_D``: the true neighbours' distances re-computed in float64 from ``gt_I`` (computed here when
    None; pass it to compute it once per sweep). ``recall_ab`` compares with the stored ``gt_D``, as
    ann-benchmarks does."""
    if I.shape != (Q.shape[0], k):
        raise ValueError(f"backend returned ids of shape {I.shape}; expected {(Q.shape[0], k)}")
    if (I >= X.shape[0]).any() or (I < -1).any():
        raise ValueError("backend returned an id out of range")
    check_no_duplicates(I)
    exact = distances_to(metric, Q, X, I)
    if true_D is None:
        true_D = distances_to(metric, Q, X, np.asarray(gt_I)[:, :k])
    return {
        "recall": float(tie_recall(exact, true_D, k).mean()),
        "recall_ab": float(distance_recall(exact, gt_D, k).mean()),
        "recall_rule": RECALL_RULE,
        "id_recall": float(id_recall(I, gt_I, k).mean()),
    }


def error_text(exc: BaseException) -> str:
    if isinstance(exc, DuplicateIdsError):
        return f"duplicate ids: {exc}"
    tb = traceback.extract_tb(exc.__traceback__)
    where = f" (at {tb[-1].filename.rsplit('/', 1)[-1]}:{tb[-1].lineno})" if tb else ""
    return f"{type(exc).__name__}: {exc}{where}"


def _rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def _peak_rss() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def execute_build(job: BuildJob, X: np.ndarray, Q: np.ndarray, emit: Callable[..., None]) -> None:
    """Build ``job``'s configuration over X (n, d) and measure each pending search on Q (nq, d)."""
    from ann_bench.backends import get_backend

    cls = get_backend(job.backend, job.impl)
    info: dict[str, Any] = {}
    cached = cache_paths(job)
    index = None
    if cached is not None and cached[0].exists() and cached[1].exists():
        try:
            meta = json.loads(cached[1].read_text())
            expected = meta.pop("index_sha256", None)
            if expected is None or _sha256(cached[0]) != expected:
                raise ValueError("its sha256 differs from the one recorded when it was saved")
            index = cls(job.metric, job.dim, threads=job.threads, seed=job.seed, **job.build)
            index.load(cached[0])
            info = {**meta, "index_cached": 1}
        except Exception as exc:  # truncated, altered or unreadable: rebuild it, and say which file was bad
            emit("note", f"cached index {str(cached[0])!r} is unusable ({error_text(exc)}); rebuilding it")
            for path in cached:
                with contextlib.suppress(OSError):
                    path.unlink()
            index, info = None, {}
    try:
        if index is None:
            index = cls(job.metric, job.dim, threads=job.build_threads, seed=job.seed, **job.build)
            index.warm_up()  # JIT compilation is not the build: outside the timed and measured region
            index.progress = _throttled(emit)
            gc.collect()
            emit("building")
            rss0 = _rss()
            t0 = time.perf_counter()
            index.build(X if job.build_rows is None else X[job.build_rows])
            info["build_s"] = time.perf_counter() - t0
            info["rss_delta_bytes"] = _rss() - rss0
            info["peak_rss_bytes"] = _peak_rss()
            info["index_bytes"] = int(index.index_bytes())
            split = getattr(index, "build_times", None) or {}  # a database: insert, then index creation
            if "insert_s" in split and "index_s" in split:
                info["build_insert_s"], info["build_index_s"] = split["insert_s"], split["index_s"]
            if cached is not None:
                save_cached(index, info, *cached)
        index.set_threads(job.threads)
    except Exception as exc:
        emit("build_failed", error_text(exc))
        return
    emit("built", info)
    if job.pin_cpus is None:
        _measure_pending(job, cls, index, X, Q, info, emit)
        return
    try:
        check_pin_cpus(job.pin_cpus, job.threads)  # on this node (a Ray node may have fewer CPUs than the head)
    except InputError as exc:
        emit("build_failed", str(exc))
        return
    cpus = least_busy_cpus(job.pin_cpus)
    with pinned(cpus):
        _measure_pending(job, cls, index, X, Q, info, emit, {"pinned_cpus": ",".join(map(str, cpus))})


def _measure_pending(job: BuildJob, cls, index, X: np.ndarray, Q: np.ndarray, info: dict[str, Any],
                     emit: Callable[..., None], extra: dict[str, Any] | None = None) -> None:
    """Measure each of ``job.pending`` (or run ``job.plan``) on the built ``index``; ``extra`` figures are added
    to every result."""
    if extra:
        emit = _with_figures(emit, extra)
    if job.plan is not None:
        job.plan.execute(job, cls, index, X, Q, info, emit)
        return
    exact: list[tuple[dict[str, Any], str]] = list(job.exact)  # (search, mode) measured at recall 1.0
    measured: list[tuple[dict[str, Any], str, float]] = list(job.measured)  # (search, mode, recall)
    true_D = distances_to(job.metric, Q, X, np.asarray(job.gt_I)[:, : job.k])  # once, outside every timed region
    for i, (search, mode) in enumerate(job.pending):
        if i in job.done:  # recorded by an earlier attempt (see BuildJob.done)
            continue
        reason = None
        if job.skip_saturated:
            reason = (saturated_reason(cls, search, mode, exact, job.k)
                      or levelled_reason(cls, search, mode, measured, job.k))
        if reason is not None:
            emit("skipped", i, reason)
            continue
        try:
            index.set_search_params(**search)
            figures, I = measure(index, Q, job.k, mode, job.runs)
            figures.update(accuracy(job.metric, Q, X, I, job.gt_D, job.gt_I, job.k, true_D))
            if job.train_labels is not None and job.test_labels is not None:  # after timing, like recall
                figures["label_metrics"] = label_metrics(I, job.train_labels, job.test_labels, job.k)
        except Exception as exc:  # a backend bug becomes a failed record; the sweep goes on
            emit("error", i, error_text(exc))
            continue
        emit("result", i, figures, I)
        measured.append((search, mode, figures["recall"]))
        if figures["recall"] >= 1.0:
            exact.append((search, mode))


def _with_figures(emit: Callable[..., None], extra: dict[str, Any]) -> Callable[..., None]:
    def emit_with(*event):
        if event[0] == "result":
            event = (event[0], event[1], {**event[2], **extra}, *event[3:])
        emit(*event)
    return emit_with


# ---- CPU pinning (--pin-cpus) -------------------------------------------------------------------------------
def check_pin_cpus(n: int, threads: int, local: bool = True) -> None:
    """InputError unless ``n`` CPUs can be pinned for ``threads`` query threads (``local``: and this machine
    lets this process use at least ``n``)."""
    if n < 1:
        raise InputError(f"--pin-cpus must be >= 1, got {n}")
    if n < threads:
        raise InputError(f"--pin-cpus {n} would give {threads} query threads {n} CPU(s), and they would take turns: "
                         f"use --pin-cpus {threads} or more, or fewer --threads")
    if local:
        allowed = os.sched_getaffinity(0)
        if n > len(allowed):
            raise InputError(f"--pin-cpus {n}: this process may use only {len(allowed)} CPU(s) "
                             f"({_cpu_list(allowed)}); use --pin-cpus {len(allowed)} or fewer")


def _cpu_list(cpus) -> str:
    return ",".join(map(str, sorted(cpus)))


def least_busy_cpus(n: int, sample_s: float = 0.2) -> list[int]:
    """The ``n`` CPUs this process may use that were least busy over ``sample_s`` seconds (ties: lowest number)."""
    import psutil

    allowed = sorted(os.sched_getaffinity(0))
    busy = psutil.cpu_percent(interval=sample_s, percpu=True)
    return sorted(sorted(allowed, key=lambda c: (busy[c] if c < len(busy) else 0.0, c))[:n])


@contextlib.contextmanager
def pinned(cpus: list[int]):
    """Every thread of this process (a library's thread pool included: affinity is per thread, and threads started
    before this keep their own) restricted to ``cpus``; threads started inside inherit it. Restored on exit."""
    old: dict[int, set[int]] = {}
    for tid in map(int, os.listdir("/proc/self/task")):
        with contextlib.suppress(OSError):  # a thread that ended meanwhile
            old[tid] = os.sched_getaffinity(tid)
            os.sched_setaffinity(tid, cpus)
    try:
        yield
    finally:
        for tid, mask in old.items():
            with contextlib.suppress(OSError):
                os.sched_setaffinity(tid, mask)


def saturated_reason(cls, search: dict[str, Any], mode: str, exact: list[tuple[dict[str, Any], str]], k: int,
                     stored: bool = False) -> str | None:
    """Why ``search`` in ``mode`` need not be measured on an index of backend class ``cls`` whose settings
    ``exact`` [(search, mode), ...] reached recall@k 1.0 (``stored``: as rows of the results store), or None:
    one of them, in the same mode, asks for less effort (:meth:`Index.costlier`)."""
    reached = next((s for s, m in exact if m == mode and cls.costlier(s, search)), None)
    if reached is None:
        return None
    return (f"recall@{k} already 1.0 at {short_params(reached, None)}{' (stored)' if stored else ''}; "
            "this costlier setting cannot beat it")


def levelled_reason(cls, search: dict[str, Any], mode: str, measured: list[tuple[dict[str, Any], str, float]],
                    k: int, stored: bool = False) -> str | None:
    """Why ``search`` in ``mode`` need not be measured on an index of backend class ``cls`` whose settings
    ``measured`` [(search, mode, recall@k), ...] were measured (``stored``: as rows of the results store), or None.

    A *line* is the settings that differ from ``search`` in one effort parameter only (:attr:`Index.effort_params`;
    every other search parameter equal, e.g. ivfpq's nprobe at one ``refine``), in one mode. When the last three
    settings of a line measured with less effort than ``search`` show two steps in a row that each moved the recall
    by less than :data:`~ann_bench.bench.metrics.SATURATION` (the rule tune stops doubling by), the recall has
    levelled off below ``search``: more of that effort is taken to reach no more (e.g. IVF-PQ capped by its codes
    whatever nprobe), so ``search`` is skipped — unless a costlier setting of the line, already measured, did
    reach more."""
    for name, sign in cls.effort_params.items():
        if name not in search:
            continue
        line: dict[Any, float] = {}  # value of ``name`` -> recall, along the line through ``search``
        for s, m, recall in measured:
            if (m == mode and recall is not None and math.isfinite(recall) and s.keys() == search.keys()
                    and all(s[p] == v for p, v in search.items() if p != name)):
                line[s[name]] = recall
        here = search[name] * sign
        below = sorted((v for v in line if v * sign < here), key=lambda v: v * sign)[-3:]
        if len(below) < 3:
            continue
        a, b, c = below
        if not (line[b] - line[a] < SATURATION and line[c] - line[b] < SATURATION):
            continue
        if any(v * sign > here and r >= line[c] + SATURATION for v, r in line.items()):
            continue  # measured with still more effort, it did reach more: the line had not levelled off
        return (f"recall@{k} levelled off at {fmt_recall(line[c])} ({name}={a} → {b} → {c} moved it "
                f"< {SATURATION:g}{'; stored rows' if stored else ''}); this costlier setting cannot reach more")
    return None


# ---- index cache ------------------------------------------------------------------------------------------
def cache_paths(job: BuildJob) -> tuple[Path, Path] | None:
    """(index file, build-figures JSON) of ``job``'s build configuration in its index cache, or None.

    The key covers everything that shapes the built index: backend, implementation, build parameters,
    metric, dimension, build threads and seed, and the library versions (a file saved by another version of
    faiss/hnswlib/annoy is not reused).
    """
    if not job.index_cache:
        return None
    from ann_bench.backends import get_backend
    from ann_bench.sysinfo import versions

    if not get_backend(job.backend, job.impl).capabilities.saveable:
        return None  # built anew every time (e.g. nsw[nmslib], whose reloaded graph searches differently)

    ident = [job.backend, job.impl, sorted(job.build.items()), job.metric, job.dim, job.build_threads, job.seed,
             sorted(versions().items())]
    key = hashlib.sha256(json.dumps(ident, default=str).encode()).hexdigest()[:20]
    base = Path(job.index_cache) / f"{job.backend}-{job.impl}-{key}"
    return base.with_suffix(".index"), base.with_suffix(".json")


def save_cached(index, info: dict[str, Any], path: Path, meta: Path) -> None:
    """Save a freshly built index and its build figures into the cache, each renamed into place; the figures
    last, so a half-saved index is never used."""
    from ann_bench.atomic import atomic_path

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        index.save(tmp)
        digest = _sha256(tmp)
    with atomic_path(meta) as tmp:
        Path(tmp).write_text(json.dumps({**info, "index_sha256": digest}))


def _sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ---- isolation --------------------------------------------------------------------------------------------
def _thread_env(threads: int) -> dict[str, str]:
    """Environment that caps the thread pools libraries create at import (BLAS, OpenMP, numba)."""
    n = str(threads)
    return {"OMP_NUM_THREADS": n, "OPENBLAS_NUM_THREADS": n, "MKL_NUM_THREADS": n, "NUMBA_NUM_THREADS": n}


@contextlib.contextmanager
def _environ(values: dict[str, str]):
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _watch_parent(parent: int) -> None:
    """Exit when the parent dies (kill -9 included), so no orphan keeps computing."""
    while True:
        if os.getppid() != parent:
            os._exit(3)
        time.sleep(0.5)


def _worker_main(job: BuildJob, conn, parent: int, data: tuple[np.ndarray, np.ndarray] | None = None,
                 output: str | None = None) -> None:
    if output is not None:  # what the libraries print (faiss's C++ warnings, a traceback) goes to the parent's file
        fd = os.open(output, os.O_WRONLY | os.O_APPEND)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    if data is not None:
        X, Q = data
    else:
        from ann_bench.data.vectorset import VectorSet

        try:
            with VectorSet(job.dataset_path, metric=job.metric) as vs:
                X = vs.load_train()  # hashed on the way: the check below costs one pass over the test vectors
                Q = vs.load_test()
                found = vs.vectors_hash()
        except Exception as exc:  # the file vanished or broke since the sweep started
            conn.send(("build_failed", f"cannot read the dataset {job.dataset_path!r}: {error_text(exc)}"))
            conn.close()
            return
        if job.vectors_hash and found != job.vectors_hash:
            conn.send(("build_failed", f"the dataset file {job.dataset_path!r} changed since the sweep started "
                                       f"(vectors hash {found}, planned {job.vectors_hash}); nothing was measured "
                                       "on it. Re-run the sweep on the file as it is now"))
            conn.close()
            return

    def emit(*event):
        conn.send(event)

    execute_build(job, X, Q, emit)
    conn.close()


def describe_exit(code: int | None) -> str:
    """Words for a worker's exit code: 'killed by SIGKILL (out of memory?)', 'exit code 3'."""
    if code is None:
        return "still running"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        hint = {"SIGKILL": " (out of memory?)", "SIGSEGV": " (segmentation fault)", "SIGABRT": " (abort)"}.get(name, "")
        return f"worker killed by {name}{hint}"
    return f"worker exited with code {code}"


def run_in_process(job: BuildJob, on_event: Callable[..., None], timeout: float | None = None,
                   memory_limit: int | None = None,
                   data: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[str, str] | None:
    """Run ``job`` in a fresh spawned process, passing its events to ``on_event`` as they arrive.

    The worker reads train (n, d) and test (nq, d) from ``job.dataset_path``, or takes them from ``data``
    (sent to it pickled: for small sets, e.g. arrays a Ray task got from the object store).

    Returns None if the worker finished normally, else (status, error) for whatever it did not report:
    ("timeout", ...) after ``timeout`` seconds, ("failed", ...) when its RSS passed ``memory_limit`` bytes,
    when it crashed, or when it was killed.
    """
    import psutil

    ctx = multiprocessing.get_context("spawn")
    recv, send = ctx.Pipe(duplex=False)
    # The worker's stdout and stderr go to a file read when it ends: a library's own prints would otherwise cut
    # through the progress display and wrap at the terminal's edge. They are reported as notes.
    sweep_worker_logs()
    fd, output = tempfile.mkstemp(prefix=f"{WORKER_LOG}{os.getpid()}-", suffix=".log")
    os.close(fd)
    proc = ctx.Process(target=_worker_main, args=(job, send, os.getpid(), data, output), daemon=True)
    with _environ(_thread_env(max(job.threads, job.build_threads))):
        proc.start()
    send.close()
    start = time.perf_counter()
    outcome: tuple[str, str] | None = None
    try:
        ps = psutil.Process(proc.pid)
    except psutil.Error:
        ps = None
    peak = 0
    building: float | None = None  # when the timed build started, while it runs
    try:
        while True:
            if recv.poll(POLL_S):
                try:
                    event = recv.recv()
                except EOFError:  # the worker closed its end: finished or died
                    proc.join(5)  # let a finished worker exit on its own (else it is killed below, and reads
                    break         # as a crash)
                if event[0] == "building":
                    building = time.perf_counter()
                if event[0] == "built":
                    building = None
                    event[1]["peak_rss_bytes"] = max(event[1].get("peak_rss_bytes") or 0, peak)
                on_event(*event)
                continue
            if not proc.is_alive():
                # Drain anything sent just before exit.
                while recv.poll(0):
                    try:
                        on_event(*recv.recv())
                    except EOFError:
                        break
                break
            now = time.perf_counter()
            if building is not None and job.build_limit_s is not None and now - building > job.build_limit_s:
                outcome = ("timeout", f"build took over {job.build_limit_s:g} s (--max-build-s); worker killed")
                break
            elapsed = now - start
            if timeout is not None and elapsed > timeout:
                outcome = ("timeout", f"no result within --timeout {timeout:g} s; worker killed")
                break
            if ps is not None and memory_limit is not None:
                try:
                    rss = sum(p.memory_info().rss for p in [ps, *ps.children(recursive=True)])
                except psutil.Error:
                    rss = 0
                peak = max(peak, rss)
                if rss > memory_limit:
                    outcome = ("failed", f"memory limit exceeded: RSS {rss / 1e6:,.0f} MB > "
                                         f"--memory-limit {memory_limit / 1e6:,.0f} MB; worker killed")
                    break
    finally:
        if proc.is_alive():
            proc.kill()
        proc.join(5)
        recv.close()
    said = _worker_output(output)
    for line in said[:MAX_OUTPUT_LINES]:
        on_event("note", f"the library printed: {line}")
    if len(said) > MAX_OUTPUT_LINES:
        on_event("note", f"… and {len(said) - MAX_OUTPUT_LINES} more line(s)")
    if outcome is None and proc.exitcode not in (0, None):
        outcome = ("failed", describe_exit(proc.exitcode) + (f"; it last printed: {said[-1]}" if said else ""))
    return outcome


MAX_OUTPUT_LINES = 5
WORKER_LOG = "ann-bench-worker-"  # <temp dir>/ann-bench-worker-<parent pid>-<random>.log while a worker runs


def sweep_worker_logs() -> list[str]:
    """Remove the worker logs whose parent process is gone: a parent killed outright (SIGKILL, the out-of-memory
    killer) cannot remove its worker's log, so the next run does. Returns the names removed."""
    removed = []
    base = Path(tempfile.gettempdir())
    for path in base.glob(f"{WORKER_LOG}*-*.log"):
        pid = path.name[len(WORKER_LOG):].split("-", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not pid_alive(int(pid)):
            with contextlib.suppress(OSError):
                path.unlink()
                removed.append(path.name)
    return removed


def _worker_output(path: str, limit: int = 1 << 16) -> list[str]:
    """The distinct non-blank lines a worker printed (the last ``limit`` bytes), in order; the file is removed."""
    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.path.getsize(path) - limit))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return []
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)
    lines = []
    for line in text.splitlines():
        line = line.strip()
        if line and line not in lines:
            lines.append(line)
    return lines


def _throttled(emit: Callable[..., None], every_s: float = 0.5) -> Callable[[int, int], None]:
    """progress(done, total) for a backend's build that forwards ``("build_progress", done, total)`` at most
    every ``every_s`` seconds: a library may report after every few inserts, the parent needs a few a second."""
    last = [time.perf_counter()]

    def progress(done: int, total: int) -> None:
        now = time.perf_counter()
        if now - last[0] >= every_s:
            last[0] = now
            emit("build_progress", int(done), int(total))

    return progress


def run_inline(job: BuildJob, X: np.ndarray, Q: np.ndarray, on_event: Callable[..., None]) -> None:
    """Run ``job`` in this process (no isolation: for debugging and profiling)."""
    execute_build(job, X, Q, on_event)

