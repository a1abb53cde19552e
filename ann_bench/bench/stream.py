"""A collection that changes: one backend's whole runbook (:mod:`ann_bench.bench.runbook`) in a worker process.

The parent (:func:`run_stream`) checks the runbook against the set, computes the exact top-k of every query over
the *live* items at each search step incrementally (:class:`LiveGroundTruth`), and hands each backend a
:class:`StreamPlan` through the worker's plan mechanism (:attr:`~ann_bench.bench.worker.BuildJob.plan`): the
worker builds over the runbook's initial rows (``BuildJob.build_rows``) and the plan runs the remaining steps on
that index, reporting one row per step:

- ``build``: build_s, items/s, index_bytes and RSS after it;
- ``insert`` / ``delete``: the update's wall time (``update_s``), items/s, index_bytes and RSS after it, with the
  build's threads (``BuildJob.build_threads``, recorded as ``update_threads``; searches use ``threads``). A backend
  without updates (``Index.updates`` = none) is rebuilt from scratch on the live items instead, and the row says so;
- ``search``: recall@k (both rules, and id recall) against the exact top-k of the live set, QPS and, in single
  mode, latency percentiles, timed by :func:`ann_bench.bench.worker.measure`; a returned id that is not live
  (deleted, or never inserted) fails the row;
- ``rebuild`` (one step past the last): the same backend built from scratch on the final live set and searched at
  the same setting, for comparison.

Labels: the index knows items by consecutive labels (0..m-1 for the build, then m, m+1, ... per insert, never
reused); the plan maps them back to train rows outside the timed region. Resume: a re-run measures and stores
only the steps not already stored. To get there it starts from the last checkpoint — the index and its label
maps saved after an update step, at most every ``checkpoint_every`` seconds, in a folder of the cache
(:func:`checkpoint_folder`), removed when the runbook is played to its end — when every row up to it is stored;
without one (a backend that cannot save its updated index, or none written yet) it plays the runbook again from the
start, since the index must reach the same state.
"""

from __future__ import annotations

import datetime as _dt
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ann_bench.backends.base import UPDATES_NONE
from ann_bench.bench.runbook import Runbook
from ann_bench.errors import InputError


# ---- exact top-k of the live set, kept up to date ------------------------------------------------------------
class LiveGroundTruth:
    """Each query's exact top-k among the live rows of X (n, d), kept across inserts and deletes.

    ``insert``: the exact top-k among the new rows only, merged with the current one; ``delete``: only the queries
    whose top-k lost an item are recomputed, over the whole live set. D (nq, k) float32 distances in the dataset's
    metric, I (nq, k) train rows, sorted by (distance, id) as :func:`~ann_bench.data.groundtruth.exact_knn` sorts.
    ``recomputed`` counts the queries recomputed by deletes (the cost the incremental rule saves)."""

    def __init__(self, X: np.ndarray, Q: np.ndarray, metric: str, k: int):
        self.X, self.Q, self.metric, self.k = X, Q, metric, k
        self.live = np.zeros(X.shape[0], dtype=bool)
        self.D = np.full((Q.shape[0], k), np.inf, dtype=np.float32)
        self.I = np.full((Q.shape[0], k), -1, dtype=np.int64)
        self.recomputed = 0

    def _knn(self, rows: np.ndarray, queries: np.ndarray | slice) -> tuple[np.ndarray, np.ndarray]:
        from ann_bench.data.groundtruth import exact_knn

        D, I = exact_knn(self.X[rows], self.Q[queries], self.metric, self.k)
        return D, np.where(I >= 0, rows[np.maximum(I, 0)], -1)

    def insert(self, ids: np.ndarray) -> None:
        ids = np.sort(np.asarray(ids, dtype=np.int64))
        self.live[ids] = True
        D, I = self._knn(ids, slice(None))
        D, I = np.concatenate([self.D, D], axis=1), np.concatenate([self.I, I], axis=1)
        order = np.lexsort((np.where(I < 0, np.iinfo(np.int64).max, I), D), axis=1)[:, : self.k]
        self.D, self.I = np.take_along_axis(D, order, axis=1), np.take_along_axis(I, order, axis=1)

    def delete(self, ids: np.ndarray) -> None:
        ids = np.asarray(ids, dtype=np.int64)
        self.live[ids] = False
        hit = np.flatnonzero(np.isin(self.I, ids).any(axis=1))
        if hit.size:
            self.D[hit], self.I[hit] = self._knn(np.flatnonzero(self.live), hit)
            self.recomputed += hit.size

    def apply(self, op: str, ids: np.ndarray | None) -> None:
        if op in ("build", "insert"):
            self.insert(ids)
        elif op == "delete":
            self.delete(ids)


CHECKED_QUERIES = 8  # per search step, the queries whose incremental top-k is checked against a from-scratch one


def live_groundtruth(rb: Runbook, X: np.ndarray, Q: np.ndarray, metric: str, k: int
                     ) -> tuple[dict[int, tuple[np.ndarray, np.ndarray]], tuple[np.ndarray, np.ndarray]]:
    """({search step: (D, I)}, (D, I) of the final live set): the exact top-k at every search step of ``rb``, each
    step's checked on a seeded sample of :data:`CHECKED_QUERIES` queries against the top-k computed from scratch
    over the live items (:func:`check_sample`)."""
    gt = LiveGroundTruth(X, Q, metric, k)
    rng = np.random.default_rng(0)
    out = {}
    for i, step in enumerate(rb.steps):
        gt.apply(step.op, step.ids)
        if step.op == "search":
            check_sample(gt, rng.choice(Q.shape[0], min(CHECKED_QUERIES, Q.shape[0]), replace=False), i)
            out[i] = (gt.D.copy(), gt.I.copy())
    return out, (gt.D.copy(), gt.I.copy())


def check_sample(gt: LiveGroundTruth, queries: np.ndarray, step: int) -> None:
    """Stop (one line) when the incremental top-k distances of ``queries`` differ from those computed from scratch
    over the live items: a recall against a wrong ground truth must never be stored."""
    from ann_bench.data.groundtruth import exact_knn

    rows = np.flatnonzero(gt.live)
    D, _ = exact_knn(gt.X[rows], gt.Q[queries], gt.metric, gt.k)
    mine = gt.D[queries]
    scale = max(float(np.max(np.abs(D[np.isfinite(D)]), initial=0.0)), 1e-30)
    bad = ~np.isclose(mine, D, rtol=1e-5, atol=1e-6 * scale) & ~(np.isinf(mine) & np.isinf(D))
    if bad.any():
        q, j = np.argwhere(bad)[0]
        raise InputError(f"the live set's exact top-{gt.k} at step {step} differs from a from-scratch computation "
                         f"(query {int(queries[q])}, neighbour {int(j) + 1}: {mine[q, j]!r} vs {D[q, j]!r}); nothing "
                         "was measured — this is a bug in ann-bench, please report it with the runbook")


# ---- the worker's plan -------------------------------------------------------------------------------------
@dataclass
class StreamPlan:
    """The runbook's steps after the initial build, run on the built index in the worker (see the module
    docstring). ``done``: the (step, mode) pairs already stored, played but not measured again."""

    runbook: Runbook
    search: dict[str, Any]
    modes: tuple[str, ...]
    groundtruth: dict[int, tuple[np.ndarray, np.ndarray]] = field(repr=False)
    final_groundtruth: tuple[np.ndarray, np.ndarray] = field(repr=False)
    done: frozenset = frozenset()
    rebuild: bool = True  # end with the backend built from scratch on the final live set
    # Resume: the index and its label maps after an update step, saved here (a folder of the cache) at most every
    # checkpoint_every seconds of the runbook; a re-run whose stored rows cover every step up to it starts there
    # instead of replaying the runbook. None: never.
    checkpoint_dir: str | None = None
    checkpoint_every: float = 300.0

    def execute(self, job, cls, index, X: np.ndarray, Q: np.ndarray, info: dict, emit) -> None:
        from ann_bench.bench.worker import error_text

        support = cls.update_support(job.build)
        rb = self.runbook
        labels = np.array(rb.build_ids, dtype=np.int64)  # label -> train row
        slot = np.full(X.shape[0], -1, dtype=np.int64)  # train row -> label, -1 when not live
        slot[labels] = np.arange(labels.size)
        live = np.zeros(X.shape[0], dtype=bool)
        live[labels] = True
        n0 = int(labels.size)
        first = 1
        resumed = self._resume(job, cls, emit)
        if resumed is not None:
            step, index, labels, slot, live = resumed
            first = step + 1
        last_saved = time.perf_counter()
        if resumed is None and (0, self.modes[0]) not in self.done:
            self._row(emit, 0, "build", n0, support, build_s=info.get("build_s"),
                      index_bytes=info.get("index_bytes"), items_per_s=_rate(n0, info.get("build_s")),
                      rss_bytes=_rss(), update_threads=job.build_threads)
        try:
            index.set_search_params(**self.search)
        except Exception as exc:
            self._row(emit, 1, "search", n0, support, error=error_text(exc))
            return
        for i, step in list(enumerate(rb.steps))[first:]:
            if step.op == "search":
                D_gt, I_gt = self.groundtruth[i]
                for mode in self.modes:
                    if (i, mode) not in self.done:
                        self._search(emit, job, index, X, Q, i, "search", mode, labels, live, D_gt, I_gt, support)
                continue
            try:
                if support == UPDATES_NONE:
                    live[step.ids] = step.op == "insert"
                    t0 = time.perf_counter()
                    index = _rebuilt(job, cls, X, np.flatnonzero(live), self.search)
                    elapsed = time.perf_counter() - t0
                    labels = np.flatnonzero(live)
                else:
                    if job.build_threads != job.threads:  # updates with the build's threads, searches with --threads
                        index.set_threads(job.build_threads)
                    if step.op == "insert":
                        new = np.arange(labels.size, labels.size + step.ids.size, dtype=np.int64)
                        rows = np.ascontiguousarray(X[step.ids])
                        t0 = time.perf_counter()
                        index.add(rows, new)
                        elapsed = time.perf_counter() - t0
                        labels = np.concatenate([labels, step.ids])
                        slot[step.ids] = new
                    else:
                        gone = slot[step.ids]
                        t0 = time.perf_counter()
                        index.remove(gone)
                        elapsed = time.perf_counter() - t0
                        slot[step.ids] = -1
                    if job.build_threads != job.threads:
                        index.set_threads(job.threads)
                    live[step.ids] = step.op == "insert"
            except Exception as exc:  # the library failed: this step's row says how, and the runbook stops here
                self._row(emit, i, step.op, int(live.sum()), support, error=error_text(exc))
                return
            if (i, self.modes[0]) not in self.done:
                self._row(emit, i, step.op, int(live.sum()), support, update_s=elapsed,
                          items_per_s=_rate(step.ids.size, elapsed), index_bytes=_index_bytes(index),
                          rss_bytes=_rss(), update_threads=job.build_threads)
            if self.checkpoint_dir is not None and time.perf_counter() - last_saved >= self.checkpoint_every:
                self._checkpoint(i, index, labels, slot, live, emit)
                last_saved = time.perf_counter()
        self._drop_checkpoint()  # every step played: a re-run measures from the stored rows alone
        if not self.rebuild:
            return
        end = len(rb.steps)
        if all((end, mode) in self.done for mode in self.modes):
            return
        rows = np.flatnonzero(live)  # (the updated index stays alive beside it: the rebuild's RSS includes it)
        try:
            t0 = time.perf_counter()
            fresh = _rebuilt(job, cls, X, rows, self.search)
            build_s = time.perf_counter() - t0
        except Exception as exc:
            self._row(emit, end, "rebuild", int(rows.size), support, error=error_text(exc))
            return
        extra = dict(build_s=build_s, index_bytes=_index_bytes(fresh), items_per_s=_rate(rows.size, build_s),
                     rss_bytes=_rss(), update_threads=job.build_threads)
        D_gt, I_gt = self.final_groundtruth
        for mode in self.modes:
            if (end, mode) not in self.done:
                self._search(emit, job, fresh, X, Q, end, "rebuild", mode, rows, live, D_gt, I_gt, support, extra)

    def _needed(self, upto: int) -> set:
        """The (step, mode) rows of steps 0..upto that a run measures."""
        modes = self.modes
        return {(i, m) for i, s in enumerate(self.runbook.steps[: upto + 1])
                for m in (modes if s.op == "search" else modes[:1])}

    def _checkpoint(self, step: int, index, labels, slot, live, emit) -> None:
        """Save the index and the label maps after ``step`` into :attr:`checkpoint_dir`, replacing the last one
        (written beside it, then renamed). A backend that cannot save its updated index (our NSW with tombstones)
        gets no checkpoint, said once; a re-run then replays the runbook."""
        import json
        import os
        import shutil
        from pathlib import Path

        from ann_bench.bench.worker import _sha256, error_text

        final = Path(self.checkpoint_dir)
        tmp = final.with_name(f"{final.name}.tmp-{os.getpid()}")
        try:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            index.save(tmp / "index")
            np.savez(tmp / "state.npz", labels=labels, slot=slot, live=live)
            (tmp / "checkpoint.json").write_text(json.dumps({"step": step, "runbook": self.runbook.ident,
                                                             "index_sha256": _sha256(tmp / "index")}))
            shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)
        except Exception as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            emit("note", f"no checkpoint to resume from (saving the updated index failed: {error_text(exc)}); a "
                         "re-run replays the runbook")
            self.checkpoint_dir = None

    def _resume(self, job, cls, emit):
        """(step, index, labels, slot, live) from the checkpoint when every row up to its step is stored, else
        None (no checkpoint, a stale or damaged one, or rows missing before it: the runbook is replayed)."""
        import json
        from pathlib import Path

        from ann_bench.bench.worker import _sha256, error_text

        if self.checkpoint_dir is None or not (Path(self.checkpoint_dir) / "checkpoint.json").is_file():
            return None
        folder = Path(self.checkpoint_dir)
        try:
            meta = json.loads((folder / "checkpoint.json").read_text())
            step = int(meta["step"])
            if meta.get("runbook") != self.runbook.ident or not self._needed(step) <= set(self.done):
                return None
            if _sha256(folder / "index") != meta["index_sha256"]:
                raise ValueError("its index's sha256 differs from the one recorded when it was saved")
            state = np.load(folder / "state.npz")
            index = cls(job.metric, job.dim, threads=job.threads, seed=job.seed, **job.build)
            index.load(folder / "index")
            index.set_threads(job.threads)
        except Exception as exc:
            emit("note", f"checkpoint {str(folder)!r} is unusable ({error_text(exc)}); replaying the runbook")
            return None
        emit("note", f"resumed after step {step} from its checkpoint (steps 0-{step} are stored)")
        return step, index, state["labels"], state["slot"], state["live"]

    def _drop_checkpoint(self) -> None:
        import shutil

        if self.checkpoint_dir is not None:
            shutil.rmtree(self.checkpoint_dir, ignore_errors=True)

    def _row(self, emit, step: int, op: str, live_n: int, support: str, mode: str | None = None,
             error: str | None = None, I=None, **figures) -> None:
        """Announce a row (its step fields) and report it: measured figures, or the error."""
        fields = dict(stream_runbook=self.runbook.ident, stream_step=step, stream_op=op, live_n=live_n,
                      stream_updates=support)
        emit("stream_pending", self.search, mode or self.modes[0], fields)
        if error is not None:
            emit("stream_error", error)
        else:
            emit("stream_result", {k: v for k, v in figures.items() if v is not None}, I)

    def _search(self, emit, job, index, X, Q, step, op, mode, labels, live, D_gt, I_gt, support,
                extra: dict | None = None) -> None:
        from ann_bench.bench.worker import accuracy, error_text, measure

        try:
            figures, I = measure(index, Q, job.k, mode, job.runs)
            found = np.where(I >= 0, labels[np.clip(I, 0, labels.size - 1)], -1)
            bad = (I >= labels.size) | ((found >= 0) & ~live[np.maximum(found, 0)])
            if bad.any():
                row, col = np.argwhere(bad)[0]
                raise ValueError(f"{int(bad.sum())} returned id(s) are not live (query {row} got label {I[row, col]}"
                                 f", train row {found[row, col]}): deleted or never inserted")
            figures.update(accuracy(job.metric, Q, X, found, D_gt, I_gt, job.k))
        except Exception as exc:
            self._row(emit, step, op, int(live.sum()), support, mode=mode, error=error_text(exc))
            return
        self._row(emit, step, op, int(live.sum()), support, mode=mode, I=found, **figures, **(extra or {}))


def _rebuilt(job, cls, X: np.ndarray, rows: np.ndarray, search: dict):
    """A fresh index of the job's build configuration over X[rows], set to ``search``."""
    index = cls(job.metric, job.dim, threads=job.build_threads, seed=job.seed, **job.build)
    index.build(np.ascontiguousarray(X[rows]))
    index.set_threads(job.threads)
    index.set_search_params(**search)
    return index


def _rate(items: int, seconds: float | None) -> float | None:
    return items / seconds if seconds else None


def _rss() -> int:
    from ann_bench.bench.worker import _rss as rss

    return rss()


def _index_bytes(index) -> int | None:
    try:
        return int(index.index_bytes())
    except Exception:  # an index that cannot be serialised after updates (our NSW with tombstones): RSS says it
        return None


# ---- from events to rows -------------------------------------------------------------------------------------
class StreamRecorder:
    """Turns a stream job's events into rows, stored as they arrive; one row per (step, mode). A job that dies
    (crash, timeout, memory limit) leaves a row for the step it was in."""

    def __init__(self, job, record, store, summary, reporter, label: str, support: str):
        self.job, self.record, self.store, self.summary = job, record, store, summary
        self.reporter, self.label, self.support = reporter, label, support
        self.fields: dict[str, Any] | None = None  # the announced row
        self.search_mode: tuple[dict, str] | None = None
        self.last_step = -1
        self.built = False

    def on_event(self, kind, *payload) -> None:
        if kind == "stream_pending":
            search, mode, fields = payload
            self.search_mode, self.fields = (search, mode), fields
            self.last_step = fields["stream_step"]
        elif kind == "stream_result":
            figures, I = payload
            self._save(I, **figures)
        elif kind == "stream_error":
            self._save(status="failed", error=payload[0])
        elif kind == "built":
            self.built = True
        elif kind == "building":
            self.reporter.build_started(self.label)
        elif kind == "build_progress":
            self.reporter.build_progress(self.label, *payload)
        elif kind == "note":
            self.reporter.log(f"{self.label}: {payload[0]}")
        elif kind == "build_failed":
            self._failed(0, "build", f"build: {payload[0]}", "failed")

    def _failed(self, step: int, op: str, error: str, status: str) -> None:
        mode = self.job.plan.modes[0]
        self.search_mode = (self.job.plan.search, mode)
        self.fields = dict(stream_runbook=self.job.plan.runbook.ident, stream_step=step, stream_op=op,
                           stream_updates=self.support)
        self._save(status=status, error=error)

    def _save(self, I=None, **figures) -> None:
        from ann_bench.atomic import raise_if_terminated

        raise_if_terminated()
        search, mode = self.search_mode
        rec = self.record(search, mode, **self.fields, **figures)
        if self.store is not None:
            self.store.save(rec, I)
        self.summary.records.append(rec)
        self.fields = None
        self.reporter.log(step_line(rec))

    def finish(self, outcome: tuple[str, str] | None) -> None:
        self.reporter.build_ended(self.label)
        if outcome is None:
            return
        status, text = outcome
        if self.fields is not None:  # announced, never reported: the worker died in it
            self._save(status=status, error=text)
        else:
            self._failed(self.last_step + 1, "stopped" if self.built else "build", text, status)


def step_line(rec) -> str:
    """One step's line: ``hnsw[hnswlib] step 3 insert: 10,000 live, 52,311 items/s, index 5.1 MB``."""
    from ann_bench.bench.metrics import fmt_recall

    measured = rec.stream_op in ("search", "rebuild") and rec.mode != "batch"
    head = f"{rec.label()} step {rec.stream_step} {rec.stream_op}" + (f" {rec.mode}" if measured else "")
    if rec.status != "ok":
        return f"{head}: {rec.status}: {rec.error}"
    parts = [f"{rec.live_n:,} live"] if rec.live_n is not None else []
    if rec.recall is not None:
        parts += [f"recall {fmt_recall(rec.recall)}", f"{rec.qps:,.0f} QPS"]
        if rec.p99_ms is not None:
            parts.append(f"p99 {rec.p99_ms:.3f} ms")
    if rec.items_per_s is not None and rec.stream_op != "search":
        rebuilt = rec.stream_op in ("insert", "delete") and rec.stream_updates == UPDATES_NONE
        parts.append(f"{rec.items_per_s:,.0f} items/s" + (" (rebuilt from scratch)" if rebuilt else ""))
    if rec.index_bytes:
        parts.append(f"index {rec.index_bytes / 1e6:.1f} MB")
    return f"{head}: {', '.join(parts)}"


# ---- the parent: plan every backend's runbook ----------------------------------------------------------------
@dataclass
class StreamConfig:
    """One backend implementation with its one build and one search configuration (validated)."""

    cls: type
    build: dict[str, Any]
    search: dict[str, Any]


def plan_stream(backends, n0: int, dim: int, metric: str, build_specs=(), search_specs=()) -> list[StreamConfig]:
    """One configuration per backend: each parameter at its value from ``--build``/``--search`` (one value each;
    ``BACKEND:NAME=V`` targets one backend), else the first value of the backend's default grid for the n0 items
    of the initial build (nlist from n0, ...), else its default. InputError before any work."""
    from ann_bench.bench.runner import plan_sweep

    plans = plan_sweep(backends, n0, dim, metric, build_specs, search_specs)
    out = []
    for p in plans:
        for what, configs in (("--build", p.builds), ("--search", p.searches)):
            if len(configs) > 1:
                names = sorted(k for k in configs[0] if len({repr(c[k]) for c in configs}) > 1)
                given = [n for n in names if any(n in s for s in (build_specs if what == "--build"
                                                                  else search_specs))]
                if given:
                    raise InputError(f"stream measures one configuration per backend: give {what} "
                                     f"{given[0]}= one value for {p.cls.label()}")
        out.append(StreamConfig(p.cls, p.builds[0], p.searches[0]))
    return out


def checkpoint_folder(dataset_hash: str, rb: Runbook, c: StreamConfig, seed: int):
    """Where a backend's runbook keeps its checkpoint: a folder of the cache named by the set, the runbook, the
    backend and its build (never beside the user's files)."""
    import hashlib
    import json

    from ann_bench.config import cache_dir

    key = json.dumps([dataset_hash, rb.ident, c.cls.name, c.cls.impl, c.build, seed], sort_keys=True, default=str)
    return cache_dir() / "stream" / hashlib.sha256(key.encode()).hexdigest()[:24]


def run_stream(vs, rb: Runbook, configs: list[StreamConfig], options, store=None, reporter=None,
               force: bool = False, checkpoint_every: float | None = 300.0):
    """Run ``rb`` on ``vs`` for every configuration, each in its own worker (``options.isolate``), storing a row per
    step as it is measured; steps already stored are played but not measured again (unless ``force``). Returns the
    :class:`~ann_bench.bench.jobs.SweepSummary` of the new rows."""
    from ann_bench.bench.executors import open_executor
    from ann_bench.bench.jobs import Reporter, SweepSummary, short_label
    from ann_bench.bench.results import Record
    from ann_bench.bench.worker import BuildJob
    from ann_bench.sysinfo import host, versions

    reporter = reporter or Reporter()
    X, Q = vs.load_train(), vs.load_test()
    with reporter.task(f"exact top-{options.k} of the live set at every step", None):
        gts, final = live_groundtruth(rb, X, Q, vs.metric, options.k)
    dataset = dict(dataset_hash=vs.content_hash(), dataset_name=vs.name, dataset_path=str(vs.path.resolve()),
                   metric=vs.metric, n_train=vs.n_train, n_test=vs.n_test, dim=vs.dim)
    if store is not None:
        store.register_dataset(dataset["dataset_hash"], dataset["dataset_name"], dataset["dataset_path"])
    summary = SweepSummary()
    queued = []
    measured_steps = [(i, m) for i, s in enumerate(rb.steps) if s.op == "search" for m in options.modes]
    measured_steps += [(i, options.modes[0]) for i, s in enumerate(rb.steps) if s.op != "search"]
    measured_steps += [(len(rb.steps), m) for m in options.modes]
    for c in configs:
        def record(search, mode, _cls=c.cls, _build=c.build, **kw) -> Record:
            kw.setdefault("versions", versions())
            kw.setdefault("host", host())
            return Record(backend=_cls.name, impl=_cls.impl, build_params=_build, search_params=search,
                          k=options.k, mode=mode, threads=options.threads,
                          created_at=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                          **dataset, **kw)

        done = set()
        if store is not None and not force:
            stored = {r.key for r in store.records(dataset["dataset_hash"], stream=rb.ident) if r.status == "ok"}
            done = {(i, m) for i, m in measured_steps
                    if record(c.search, m, stream_runbook=rb.ident, stream_step=i).key in stored}
        label = short_label(c.cls.label(), c.build)
        if len(done) == len(measured_steps):
            summary.skipped_existing += len(done)
            continue
        plan = StreamPlan(rb, c.search, tuple(options.modes), gts, final, frozenset(done),
                          checkpoint_dir=None if store is None or checkpoint_every is None else
                          str(checkpoint_folder(dataset["dataset_hash"], rb, c, options.seed)),
                          checkpoint_every=checkpoint_every or 0.0)
        job = BuildJob(dataset_path=str(vs.path), metric=vs.metric, dim=vs.dim, backend=c.cls.name, impl=c.cls.impl,
                       build=c.build, pending=[], k=options.k, runs=options.runs, threads=options.threads,
                       build_threads=options.build_threads or options.threads, seed=options.seed,
                       dataset_hash=dataset["dataset_hash"], vectors_hash=vs.vectors_hash(), plan=plan,
                       build_rows=rb.build_ids)
        summary.skipped_existing += len(done)
        support = c.cls.update_support(c.build)
        queued.append((job, StreamRecorder(job, record, store, summary, reporter, label, support), label))
    with open_executor(options, reporter) as executor:
        executor.run(queued, vs, X, Q)
    return summary
