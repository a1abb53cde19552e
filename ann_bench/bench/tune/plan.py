"""The search plan tune hands a build's worker (:attr:`ann_bench.bench.worker.BuildJob.plan`): after the build, the
effort bisection on cheap probes, then every setting that could be an answer measured again as an ordinary row.

- **Probes** search a fixed subset of the tuning queries (``probe_rows``), one timed run: their recall and speed
  only steer the search. They are reported as ``probe`` events and kept in the tune's log, never stored as rows
  of the results store (a recall over a subset of the queries is not the set's recall).
- **Verification** (full-size builds only): for each target, the least setting the probes found reaching it is
  measured on all queries with ``--runs``, like any row of ``run`` (``pending`` + ``result`` events: stored,
  with recall over all queries and label metrics). When its recall on the tuning queries falls short of the
  target (the probe subset was lucky), the effort is raised in steps of 1/8 until it reaches it (at most
  ``VERIFY_STEPS`` more rows). A target whose probe is already slower than ``PRUNE_MARGIN`` of the backend's best
  verified speed is not verified: it cannot be this backend's answer.

The worker runs :meth:`EffortPlan.execute`; it imports nothing of tune (the plan arrives pickled in the job).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ann_bench.atomic import raise_if_terminated
from ann_bench.bench.tune.effort import PRUNE_MARGIN, Ladder, bisect_targets

PROBE_MIN_S = 0.05  # a probe shorter than this is timed again, best of up to PROBE_MAX_RUNS runs
PROBE_MAX_RUNS = 8
VERIFY_STEPS = 4  # at most this many more settings when a verified recall falls short of a target


def speed_of(figures: dict[str, Any], speed: str) -> float:
    """Higher is faster: QPS, or 1000 / p99 latency in ms (queries per second at the p99 latency)."""
    if speed == "qps":
        return float(figures.get("qps") or 0.0)
    p99 = figures.get("p99_ms")
    return 1000.0 / p99 if p99 else 0.0


def steering_speed(figures: dict[str, Any], speed: str) -> float:
    """The speed a probe steers the search with: :func:`speed_of`, or +inf when the probe's best run was still
    contended after the re-timing :func:`~ann_bench.bench.worker.measure` does (another process had the CPU): a
    speed the machine took away must not prune a target or skip a verification, so such a probe prunes nothing."""
    from ann_bench.bench.results import CONTENDED_SHARE

    share = figures.get("cpu_share")
    return math.inf if share is not None and share < CONTENDED_SHARE else speed_of(figures, speed)


def tuning_recall(metric: str, Q, X, I, true_D, k: int, rows: np.ndarray) -> np.ndarray:
    """Per-query recall (the primary, tie-aware rule) of ids I (len(rows), k) of the queries ``rows``."""
    from ann_bench.bench.metrics import tie_recall
    from ann_bench.distances import distances_to

    return tie_recall(distances_to(metric, Q[rows], X, I), true_D[rows], k)


@dataclass
class EffortPlan:
    """What a build's worker does after the build instead of a fixed list of searches (picklable)."""

    param: str
    ladder: Ladder
    fixed: list[dict[str, Any]]  # the other search parameters: each combination is bisected on its own
    targets: list[float]
    tune_rows: np.ndarray  # ids of the tuning queries (verification recall)
    probe_rows: np.ndarray  # ids of the probe queries (a fixed subset of tune_rows)
    mode: str
    speed: str  # "qps" | "p99"
    bars: list[float | None]  # per target, the best verified speed of this backend so far (None: no pruning)
    verify: bool  # a full-size build: measure the answers on all queries, as stored rows
    known: dict[str, tuple[float, float]] = field(default_factory=dict)  # stored rows: canon search -> (recall, speed)
    max_index_bytes: int | None = None
    max_build_s: float | None = None

    def execute(self, job, cls, index, X: np.ndarray, Q: np.ndarray, info: dict[str, Any], emit) -> None:
        """In the worker, after the build: probes (``probe`` events), then the verified rows (``pending`` +
        ``result``/``error`` events); ``times`` last: seconds spent probing and verifying."""
        from ann_bench.bench.metrics import label_metrics
        from ann_bench.bench.results import canon_params
        from ann_bench.bench.worker import accuracy, error_text, measure
        from ann_bench.distances import distances_to

        if self.max_index_bytes is not None and (info.get("index_bytes") or 0) > self.max_index_bytes:
            emit("note", f"pruned: index {info['index_bytes'] / 1e6:,.1f} MB > --max-memory "
                         f"{self.max_index_bytes / 1e6:,.1f} MB; no search measured")
            return
        if self.max_build_s is not None and (info.get("build_s") or 0) > self.max_build_s:
            emit("note", f"pruned: build {info['build_s']:.1f} s > --max-build-s {self.max_build_s:g}; "
                         "no search measured")
            return
        true_D = distances_to(job.metric, Q, X, np.asarray(job.gt_I)[:, : job.k])  # outside every timed region
        Qp = np.ascontiguousarray(Q[self.probe_rows])
        count = len(job.pending)
        verify_s = 0.0
        self._probe_s = 0.0

        def setting(fixed: dict[str, Any], i: int) -> dict[str, Any]:
            return cls.validate_search_params({**fixed, self.param: self.ladder[i]})

        for fixed in self.fixed:
            probed: dict[int, tuple[float, float] | None] = {}

            def probe(i: int, fixed=fixed, probed=probed):
                probed[i] = self._probe(i, fixed, setting, job, index, Q, Qp, X, true_D, emit)
                return probed[i]

            found = bisect_targets(self.ladder, probe, self.targets, self.bars)
            if not self.verify:
                continue
            checked: dict[int, tuple[float, float] | None] = {}

            def full(i: int, fixed=fixed):
                """Measure setting i on all queries as a stored row: (tuning recall, speed), or None."""
                nonlocal count, verify_s
                if i in checked:
                    return checked[i]
                search = setting(fixed, i)
                key = canon_params(search)
                if key in self.known:  # a stored row: measured on all queries already
                    checked[i] = self.known[key]
                    return checked[i]
                if index.search_skip_reason(search, job.k) is not None:
                    checked[i] = None
                    return None
                raise_if_terminated()
                t0 = time.perf_counter()
                emit("pending", search, self.mode)
                at, count = count, count + 1
                try:
                    index.set_search_params(**search)
                    figures, I = measure(index, Q, job.k, self.mode, job.runs)
                    figures.update(accuracy(job.metric, Q, X, I, job.gt_D, job.gt_I, job.k, true_D))
                    if job.train_labels is not None and job.test_labels is not None:
                        figures["label_metrics"] = label_metrics(I, job.train_labels, job.test_labels, job.k)
                except Exception as exc:
                    emit("error", at, error_text(exc))
                    checked[i] = None
                    return None
                finally:
                    verify_s += time.perf_counter() - t0
                emit("result", at, figures, I)
                rec = float(tuning_recall(job.metric, Q, X, I[self.tune_rows], true_D, job.k, self.tune_rows).mean())
                checked[i] = (rec, speed_of(figures, self.speed))
                return checked[i]

            for j, target in enumerate(self.targets):
                i = found.get(target)
                if i is None:
                    continue
                bar, got = self.bars[j], probed.get(i)
                if bar is not None and got is not None and got[1] < PRUNE_MARGIN * bar:
                    continue  # slower than this backend's best already: it cannot be its answer
                for _ in range(VERIFY_STEPS + 1):
                    got = full(i)
                    if got is None or got[0] >= target or i >= len(self.ladder) - 1:
                        break
                    i = self._raised(i)
        emit("times", {"probe_s": self._probe_s, "verify_s": verify_s})

    _probe_s = 0.0
    _told_contended = False

    def _probe(self, i, fixed, setting, job, index, Q, Qp, X, true_D, emit) -> tuple[float, float] | None:
        """Setting i on the probe queries, one timed run: (recall on them, speed), or None where it cannot be
        measured; a stored row of the setting (``known``) instead of a probe."""
        from ann_bench.bench.results import canon_params
        from ann_bench.bench.worker import error_text, measure

        search = setting(fixed, i)
        key = canon_params(search)
        if key in self.known:
            return self.known[key]
        if index.search_skip_reason(search, job.k) is not None:
            return None
        raise_if_terminated()
        t0 = time.perf_counter()
        try:
            index.set_search_params(**search)
            t1 = time.perf_counter()
            figures, I = measure(index, Qp, job.k, self.mode, 1)
            took = time.perf_counter() - t1
            if took < PROBE_MIN_S:  # a few milliseconds are mostly timer and cache noise: best of more runs
                runs = min(PROBE_MAX_RUNS, max(2, math.ceil(PROBE_MIN_S / max(took, 1e-4))))
                figures, I = measure(index, Qp, job.k, self.mode, runs)
        except Exception as exc:  # a backend bug: this setting counts as not reaching
            emit("note", f"probe {search}: {error_text(exc)}")
            return None
        finally:
            self._probe_s += time.perf_counter() - t0
        got = (float(tuning_recall(job.metric, Q, X, I, true_D, job.k, self.probe_rows).mean()),
               steering_speed(figures, self.speed))
        emit("probe", search, got[0], speed_of(figures, self.speed))  # the log keeps the speed as measured
        if math.isinf(got[1]) and not self._told_contended:  # once per build: a busy machine is busy for all
            self._told_contended = True
            emit("note", f"probe {search}: contended (CPU share {figures['cpu_share']:.2f}), so its speed prunes "
                         "nothing (nor does any later contended probe of this build)")
        return got

    def _raised(self, i: int) -> int:
        """The setting with about 1/8 more effort than setting i (at least the next one)."""
        if self.ladder.values:
            return min(len(self.ladder) - 1, i + 1)
        value = self.ladder[i]
        return min(len(self.ladder) - 1, max(i + 1, int(math.ceil(value * 1.125)) - self.ladder.lo))
