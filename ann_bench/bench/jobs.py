"""The types a sweep (:mod:`ann_bench.bench.runner`), a tune (:mod:`ann_bench.bench.tune`) and the executors
(:mod:`ann_bench.bench.executors`) share: the run's options (:class:`RunOptions`), progress hooks
(:class:`Reporter`), the record of what a run measured and skipped (:class:`SweepSummary`), and
:class:`JobRecorder`, the one code path from a build job's events (see :mod:`ann_bench.bench.worker`) to stored
rows; with the checks of a dataset every command makes before any work (:func:`check_k`, :func:`check_labels`).

They sit below runner, tune and executors, which all import them from here: this module imports none of those.
"""

from __future__ import annotations

import dataclasses
import math
import re
import sqlite3
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ann_bench.atomic import free_space, is_disk_full, raise_if_terminated
from ann_bench.bench.metrics import fmt_recall
from ann_bench.bench.results import Record, ResultStore, short_params
from ann_bench.data.arrays import SEED_MAX, check_seed, check_threads  # noqa: F401 (SEED_MAX: re-exported)
from ann_bench.data.vectorset import VectorSet, read_checked_labels
from ann_bench.errors import InputError

if TYPE_CHECKING:
    from ann_bench.bench.worker import BuildJob

MODES = ("batch", "single")
EXECUTORS = ("local", "ray")


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


# ---- options, summary, checks -----------------------------------------------------------------------------
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
    pin_cpus: int | None = None  # the worker's timed searches run on this many of the least busy CPUs
    remeasure_contended: bool = False  # a resumed sweep measures stored contended rows again
    filters: tuple[str, ...] = ()  # run --filter: filter names (ann_bench.bench.filters.parse_filters)
    filter_strategies: tuple[str, ...] = ("in-index", "post:2", "post:8", "post:32")

    def check(self) -> None:
        if self.k < 1:
            raise InputError(f"-k must be >= 1, got {self.k}")
        if self.runs < 1:
            raise InputError(f"--runs must be >= 1, got {self.runs}")
        check_threads(self.threads, "--threads")
        if self.build_threads is not None:
            check_threads(self.build_threads, "--build-threads")
        check_seed(self.seed)
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
        if self.pin_cpus is not None:
            from ann_bench.bench.worker import check_pin_cpus

            check_pin_cpus(self.pin_cpus, self.threads, local=self.executor == "local")


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
    they do not fit the vectors or a label is missing — through the one check of labels
    (:func:`ann_bench.data.vectorset.read_checked_labels`) that import, embed, combine and evaluate use too."""
    if not vs.has_labels:
        return None, None
    return read_checked_labels(vs, "train"), read_checked_labels(vs, "test")


# ---- from events to rows ----------------------------------------------------------------------------------
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
        self.build_label = short_label(f"{job.backend}[{job.impl}]", job.build)
        self.building = False
        self.exact_done: list[tuple[dict[str, Any], str]] = []  # recorded (search, mode) at recall 1.0
        self.measured_done: list[tuple[dict[str, Any], str, float]] = []  # recorded ok (search, mode, recall)
        self.retried: dict[str, Any] = {}  # attempts / retry_reason of every row after a retry

    def retry(self, reason: str) -> BuildJob:
        """The job again, for another node after an infrastructure failure (``reason``) lost this attempt:
        what was recorded stays, the rest is measured by the new attempt, whose rows say so."""
        self._build_ended()
        self.retried = {"attempts": self.retried.get("attempts", 1) + 1, "retry_reason": reason}
        self.build_info, self.node = {}, {}
        if self.job.plan is not None:  # a search plan chooses its searches as it goes: it starts over
            self.job.pending.clear()
            self.finished.clear()
            return dataclasses.replace(self.job, pending=self.job.pending)
        return dataclasses.replace(self.job, done=frozenset(self.finished), exact=list(self.exact_done),
                                   measured=[*self.job.measured, *self.measured_done])

    def _build_ended(self) -> None:
        if self.building:
            self.building = False
            self.reporter.build_ended(self.build_label)

    def save(self, i: int, I=None, **fields) -> None:
        raise_if_terminated()
        search, mode = self.job.pending[i]
        # A result's own figures win over the build's: a filtered row searched in per-label partitions reports
        # the partitions' build time and size, not the whole index's.
        rec = self.record(search, mode, **{**self.node, **self.build_info, **self.retried, **fields})
        kept = False
        if self.store is not None:
            try:
                kept = self.store.save(rec, I)
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
        if rec.status == "ok" and rec.recall is not None:
            self.measured_done.append((search, mode, rec.recall))
            if rec.recall >= 1.0:
                self.exact_done.append((search, mode))
        kept_note = " (its earlier measured row is kept beside this failure)" if kept else ""
        self.reporter.log(_line(rec) + kept_note)
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
        elif kind == "skipped":  # not stored: a resumed sweep skips it again from the stored rows that made it so
            i, reason = payload
            search, mode = self.job.pending[i]
            self.summary.skip(self.build_label, short_label("", search, mode), reason)
            self.finished.add(i)
            self.advance_sweep()
        elif kind == "note":
            self.reporter.log(f"{self.build_label}: {payload[0]}")
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


def _fmt(params: dict[str, Any]) -> str:
    return ",".join(f"{k}={v}" for k, v in params.items()) or "-"


def short_label(head: str, params: dict[str, Any], mode: str = "batch") -> str:
    """``hnsw[hnswlib] M16 efC200``: a label and its parameters in their short forms (see
    :func:`~ann_bench.bench.results.short_value`), and the mode when it is not the default batch."""
    parts = [head, short_params(params, None) if params else "", "" if mode == "batch" else mode]
    return " ".join(p for p in parts if p)


def _line(rec: Record) -> str:
    """One configuration's line: ``hnsw[hnswlib] M16 efC200 ef10: recall 0.9406, 133,501 QPS, P@10 0.9990``
    (single mode adds its p99 latency); compact so that it fits 80 columns for most backends."""
    head = short_label(short_label(rec.label(), rec.build_params), rec.search_params, rec.mode)
    if rec.status != "ok":
        return f"{head}: {rec.status}: {rec.error}"
    figures = [f"recall {fmt_recall(rec.recall)}", f"{rec.qps:,.0f} QPS"]
    if rec.mode == "single" and rec.p99_ms is not None:
        figures.append(f"p99 {rec.p99_ms:.3f} ms")
    precision = rec.label_metrics.get(f"precision_at_{rec.k}")
    if precision is not None:
        figures.append(f"P@{rec.k} {precision:.4f}")
    if rec.contended:
        figures.append(f"contended (CPU share {rec.cpu_share:.2f})")
    return f"{head}: {', '.join(figures)}"
