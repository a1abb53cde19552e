"""``best``: for each backend, the configuration that meets a recall (and optionally an index-size) constraint
with the best speed figure, and the overall winner — "which index, with which parameters, for 0.95 recall?".
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ann_bench.errors import InputError
from ann_bench.report.plots import groups_of, old_rule_hint, select_for, x_value
from ann_bench.bench.results import Record

BEST_METRICS = {"qps": True, "p99": False}  # figure -> higher is better


@dataclass
class BackendBest:
    """One backend's answer: its best configuration meeting the constraints, or why none does."""

    group: str  # "hnsw [hnswlib]" (with the thread count if several are stored)
    best: Record | None
    candidates: int  # its configurations that meet the constraints
    max_recall: float  # its best recall, whatever the memory (to say how far off it is)
    reason: str = ""  # why none qualifies
    # Rows meeting the constraints left out of the choice because they were timed contended (another process had
    # the CPU) while an uncontended one qualifies; of those, how many measured a better figure even so.
    contended_left_out: int = 0
    contended_better: int = 0


@dataclass
class BestAnswer:
    metric: str  # "qps" | "p99"
    recall: float
    max_memory: int | None
    x_metric: str
    mode: str
    k: int
    per_backend: list[BackendBest] = field(default_factory=list)

    @property
    def winner(self) -> BackendBest | None:
        """The backend whose best is the fastest — among the backends whose best was timed uncontended, where
        there is one (as within a backend: a contended figure is the machine's, not the library's)."""
        found = [b for b in self.per_backend if b.best is not None]
        if not found:
            return None
        pool = [b for b in found if not b.best.contended] or found
        return (max if BEST_METRICS[self.metric] else min)(pool, key=lambda b: figure(b.best, self.metric))

    @property
    def contended_faster(self) -> list[BackendBest]:
        """The backends passed over for the winner although their best measured better: timed contended."""
        winner = self.winner
        if winner is None or winner.best.contended:
            return []
        higher = BEST_METRICS[self.metric]
        win = figure(winner.best, self.metric)
        return [b for b in self.per_backend if b.best is not None and b.best.contended
                and (figure(b.best, self.metric) > win if higher else figure(b.best, self.metric) < win)]


def figure(r: Record, metric: str) -> float | None:
    return r.qps if metric == "qps" else r.p99_ms


def best_configurations(records: list[Record], recall: float, *, max_memory: int | None = None,
                        metric: str = "qps", mode: str | None = None, k: int | None = None,
                        x_metric: str = "recall", max_rss: int | None = None) -> BestAnswer:
    """For each backend/impl, the ok configuration with ``x_metric`` >= ``recall`` and index size (serialized
    ``index_bytes``) <= ``max_memory`` that has the highest QPS (``metric`` "qps") or the lowest p99 latency
    (``metric`` "p99", single mode only). Ties go to the higher recall, then the smaller index. Rows timed
    contended (``Record.contended``) are chosen only where no uncontended row qualifies: their figure is the
    machine's, not the library's — within a backend, and for the winner among the backends.

    ``records`` must hold one dataset (InputError otherwise, naming --dataset); ``mode`` defaults to batch
    (single for p99), ``k`` to the only one stored. No configuration meeting the constraints is not an error:
    the answer's ``winner`` is None and each backend says why."""
    if metric not in BEST_METRICS:
        raise InputError(f"unknown --metric {metric!r}; use one of {', '.join(BEST_METRICS)}")
    if not 0.0 <= recall <= 1.0:
        raise InputError(f"--recall {recall} must be between 0 and 1 (e.g. 0.95)")
    if max_memory is not None and max_memory <= 0:
        raise InputError(f"--max-memory must be positive, got {max_memory} bytes")
    if max_rss is not None and max_rss <= 0:
        raise InputError(f"--max-rss must be positive, got {max_rss} bytes")
    chosen, mode, k = select_for(records, mode, k, "p99_ms" if metric == "p99" else "qps")
    if not any(x_value(r, x_metric) is not None for r in chosen):
        raise InputError(f"no stored result has metric {x_metric!r}{old_rule_hint(chosen, x_metric)}")
    answer = BestAnswer(metric, recall, max_memory, x_metric, mode, k)
    higher = BEST_METRICS[metric]
    for group, members in groups_of(chosen).items():
        members = [r for r in members if x_value(r, x_metric) is not None and figure(r, metric) is not None]
        if not members:
            continue
        top = max(x_value(r, x_metric) for r in members)
        accurate = [r for r in members if x_value(r, x_metric) >= recall]
        fits = [r for r in accurate
                if (max_memory is None or (r.index_bytes is not None and r.index_bytes <= max_memory))
                and (max_rss is None or (r.peak_rss_bytes is not None and r.peak_rss_bytes <= max_rss))]
        reason = ""
        if not accurate:
            reason = f"best {x_metric} {top:.4f} < {recall}"
        elif not fits:
            sizes = [r.index_bytes for r in accurate if r.index_bytes is not None]
            peaks = [r.peak_rss_bytes for r in accurate if r.peak_rss_bytes is not None]
            if max_memory is not None and (not sizes or min(sizes) > max_memory):
                reason = (f"smallest index reaching {x_metric} {recall} is "
                          + (f"{min(sizes) / 1e6:,.1f} MB > --max-memory" if sizes else "unknown"))
            else:
                reason = (f"least build peak RSS reaching {x_metric} {recall} within the limits is "
                          + (f"{min(peaks) / 1e6:,.1f} MB > --max-rss" if peaks else "not recorded"))
        best, left_out, better = None, 0, 0
        if fits:
            sign = 1 if higher else -1

            def rank(r):
                return sign * figure(r, metric), x_value(r, x_metric), -(r.index_bytes or 0)

            quiet = [r for r in fits if not r.contended]
            best = max(quiet or fits, key=rank)
            if quiet:
                left_out = len(fits) - len(quiet)
                better = sum(1 for r in fits if r.contended and rank(r) > rank(best))
        answer.per_backend.append(BackendBest(group, best, len(fits), top, reason, left_out, better))
    return answer
