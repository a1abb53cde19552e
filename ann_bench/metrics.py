"""Pure functions over arrays: recall@k, latency percentiles, the Pareto frontier.

No side effects, no normalisation of the caller's arrays.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

RECALL_EPSILON = 1e-3  # ann-benchmarks' tolerance on the k-th distance
PERCENTILES = (50.0, 95.0, 99.0, 99.9)


class DuplicateIdsError(ValueError):
    """A backend returned the same id twice for one query: its results are wrong, not merely approximate."""


def check_no_duplicates(I: np.ndarray) -> None:
    """Raise DuplicateIdsError if any row of I (nq, k) lists a non-negative id twice (-1 is padding)."""
    I = np.asarray(I)
    if I.shape[1] < 2:
        return
    s = np.sort(I, axis=1)
    dup = (s[:, 1:] == s[:, :-1]) & (s[:, 1:] >= 0)
    if dup.any():
        row, col = np.argwhere(dup)[0]
        raise DuplicateIdsError(f"query {int(row)} got id {int(s[row, col])} twice")


def distance_recall(
    run_D: np.ndarray, gt_D: np.ndarray, k: int, epsilon: float = RECALL_EPSILON
) -> np.ndarray:
    """Per-query recall@k by the ann-benchmarks rule.

    run_D: (nq, >=k) exact distances of the returned ids (recomputed, +inf for padding -1);
    gt_D: (nq, >=k) exact distances of the true neighbours, nearest first.
    A returned neighbour counts when its distance is <= the true k-th distance + epsilon, so ties at the
    k-th distance count as hits. Returns (nq,) floats in [0, 1].
    """
    run_D = np.asarray(run_D, dtype=np.float64)[:, :k]
    threshold = np.asarray(gt_D, dtype=np.float64)[:, k - 1 : k] + epsilon
    return np.count_nonzero(run_D <= threshold, axis=1) / k


def id_recall(run_I: np.ndarray, gt_I: np.ndarray, k: int) -> np.ndarray:
    """Per-query |returned ids ∩ true top-k ids| / k. run_I (nq, >=k), gt_I (nq, >=k); -1 never matches."""
    run_I = np.asarray(run_I)[:, :k]
    gt_I = np.asarray(gt_I)[:, :k]
    hits = (run_I[:, :, None] == gt_I[:, None, :]) & (run_I[:, :, None] >= 0)
    return hits.any(axis=2).sum(axis=1) / k


def latency_summary(seconds: Sequence[float] | np.ndarray) -> dict[str, float]:
    """Per-query latencies (seconds) -> mean and p50/p95/p99/p99.9 in milliseconds, plus QPS of that run."""
    t = np.asarray(seconds, dtype=np.float64)
    out = {"mean_ms": float(t.mean() * 1e3)}
    for p, value in zip(PERCENTILES, np.percentile(t, PERCENTILES)):
        out[f"p{p:g}_ms".replace(".", "")] = float(value * 1e3)
    out["qps"] = float(len(t) / t.sum()) if t.sum() > 0 else float("inf")
    return out


def pareto_front(recall: Sequence[float], qps: Sequence[float]) -> np.ndarray:
    """Indices of the points not dominated in (recall up, qps up), sorted by recall ascending.

    A point is dominated when another has recall >= and qps >= with one of them strictly greater.
    Exact duplicates keep only their first occurrence.
    """
    r = np.asarray(recall, dtype=np.float64)
    q = np.asarray(qps, dtype=np.float64)
    if r.size == 0:
        return np.empty(0, dtype=np.int64)
    # Sort by recall descending, then qps descending; sweep keeping points that beat every qps seen so far.
    order = np.lexsort((-q, -r))
    front = []
    best_q = -np.inf
    for i in order:
        if q[i] > best_q:
            front.append(i)
            best_q = q[i]
    return np.array(sorted(front, key=lambda i: (r[i], -q[i])), dtype=np.int64)
