"""Pure functions over arrays: recall@k, latency percentiles, the Pareto frontier, label-aware retrieval metrics.

No side effects, no normalisation of the caller's arrays.

Label-aware metrics take the ids ``I`` (nq, k) a search returned (nearest first, -1 for padding), the labels
of the train (base) vectors (n,) and those of the queries (nq,). A returned neighbour is *relevant* when its
label equals the query's; -1 padding is never relevant. Labels may be of any dtype that compares with ``==``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

RECALL_EPSILON = 1e-3  # ann-benchmarks' absolute tolerance on the k-th distance (recall_ab)
RECALL_RTOL = 1e-6  # ours: relative tolerance on the k-th distance, for ties and float64 rounding only
RECALL_RULE = "relative-1e-06"  # stored with every row: the rule its `recall` was computed by
PERCENTILES = (50.0, 95.0, 99.0, 99.9)
# Recall@k has levelled off when two steps of more search effort in a row each moved it by less than this: `run`
# skips the costlier settings of that line (unless --exhaustive), tune stops doubling the effort.
SATURATION = 0.001


def fmt_recall(value: float | None, digits: int = 4) -> str:
    """A recall as text with at least ``digits`` decimals and as many more as it takes for a value below 1 not
    to read as 1 (0.99997, not 1.0000): only an exact 1 prints as 1.0000. None -> "-"."""
    if value is None:
        return "-"
    value = float(value)
    while value < 1.0 and round(value, digits) >= 1.0 and digits < 12:
        digits += 1
    return f"{value:.{digits}f}"


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


def tie_recall(run_D: np.ndarray, gt_D: np.ndarray, k: int, rtol: float = RECALL_RTOL) -> np.ndarray:
    """Per-query recall@k, scale-free and tie-aware: ann-bench's primary ``recall``.

    run_D: (nq, >=k) exact float64 distances of the returned ids (+inf for padding -1); gt_D: (nq, >=k) exact
    float64 distances of the true neighbours (re-computed from their ids by the same code, so an exact tie
    gives equal numbers). A returned neighbour counts when its distance is <= t_k + rtol * |t_k|, t_k the
    largest of the first k true distances: ties at the k-th distance count, and multiplying every vector by
    any factor leaves the result unchanged (the tolerance scales with the distances), unlike
    :func:`distance_recall`'s absolute 1e-3. Returns (nq,) floats in [0, 1].
    """
    run_D = np.asarray(run_D, dtype=np.float64)[:, :k]
    gt = np.asarray(gt_D, dtype=np.float64)[:, :k]
    kth = np.max(np.where(np.isfinite(gt), gt, -np.inf), axis=1, keepdims=True)
    threshold = kth + rtol * np.abs(kth)
    return np.count_nonzero(run_D <= threshold, axis=1) / k


def distance_recall(
    run_D: np.ndarray, gt_D: np.ndarray, k: int, epsilon: float = RECALL_EPSILON
) -> np.ndarray:
    """Per-query recall@k by the ann-benchmarks rule (stored as ``recall_ab``).

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


# ---- label-aware retrieval metrics ------------------------------------------------------------------------
def relevance(I: np.ndarray, train_labels: np.ndarray, query_labels: np.ndarray) -> np.ndarray:
    """(nq, k) bool: whether neighbour j of query q has q's label. I (nq, k) ids, -1 padding (never relevant);
    train_labels (n,); query_labels (nq,)."""
    I = np.asarray(I)
    train_labels = np.asarray(train_labels)
    query_labels = np.asarray(query_labels)
    if I.ndim != 2 or query_labels.shape != (I.shape[0],):
        raise ValueError(f"ids of shape {I.shape} need query labels of shape ({I.shape[0]},), got {query_labels.shape}")
    valid = I >= 0
    got = train_labels[np.where(valid, I, 0)]
    return valid & (got == query_labels[:, None])


def precision_at_k(I: np.ndarray, train_labels: np.ndarray, query_labels: np.ndarray, k: int) -> float:
    """Precision@k: the mean over queries of (same-label neighbours among the first k) / k.

    I (nq, >=k) ids, nearest first, -1 padding; train_labels (n,); query_labels (nq,). Padding counts as a
    miss (the denominator stays k).
    """
    rel = relevance(np.asarray(I)[:, :k], train_labels, query_labels)
    return float(rel.sum(axis=1).mean() / k)


def recall_at_k(I: np.ndarray, train_labels: np.ndarray, query_labels: np.ndarray, k: int) -> float:
    """Recall@K as metric-learning papers define it: the fraction of queries with at least one same-label
    neighbour among the first k. I (nq, >=k); train_labels (n,); query_labels (nq,).

    Not the ANN recall@k (overlap with the exact neighbours): this one asks whether the search found
    *something of the right class*.
    """
    rel = relevance(np.asarray(I)[:, :k], train_labels, query_labels)
    return float(rel.any(axis=1).mean())


def class_counts(train_labels: np.ndarray, query_labels: np.ndarray) -> np.ndarray:
    """(nq,) int: R_q, the number of train items that have query q's label."""
    train_labels = np.asarray(train_labels)
    query_labels = np.asarray(query_labels)
    values, counts = np.unique(train_labels, return_counts=True)
    pos = np.clip(np.searchsorted(values, query_labels), 0, max(len(values) - 1, 0))
    found = (values[pos] == query_labels) if len(values) else np.zeros(len(query_labels), dtype=bool)
    return np.where(found, counts[pos] if len(values) else 0, 0).astype(np.int64)


def map_at_r(I: np.ndarray, train_labels: np.ndarray, query_labels: np.ndarray, k: int | None = None, *,
             relevant: np.ndarray | None = None) -> float:
    """MAP@R (Musgrave et al., "A Metric Learning Reality Check", 2020), truncated at depth k.

    For query q with R_q train items of its label, AP@R_q = (1/R_q) * sum_{i<=R_q} P(i) * rel(i), where
    P(i) is the precision of the first i neighbours and rel(i) is 1 when neighbour i has q's label.

    Only the first k = I.shape[1] (or ``k``) neighbours are known, so R_q is capped at k:
    r_q = min(R_q, k), AP = (1/r_q) * sum_{i<=r_q} P(i) * rel(i). With k >= R_q this is MAP@R exactly;
    with k < R_q (the usual case: k = 10, hundreds of items per class) it is MAP@R computed on the first k
    positions (stored as ``map_at_{k}``). A query whose label no train item has (R_q = 0) scores 0.

    I (nq, >=k) ids, nearest first, -1 padding; train_labels (n,); query_labels (nq,); ``relevant`` (nq,)
    overrides R_q (e.g. class counts minus the query itself when the queries are the database, leave-one-out).
    """
    I = np.asarray(I)
    k = I.shape[1] if k is None else k
    rel = relevance(I[:, :k], train_labels, query_labels).astype(np.float64)
    counts = class_counts(train_labels, query_labels) if relevant is None else np.asarray(relevant, np.int64)
    r = np.minimum(counts, k)
    ranks = np.arange(1, k + 1, dtype=np.float64)
    precision = np.cumsum(rel, axis=1) / ranks
    within = ranks[None, :] <= r[:, None]
    total = (precision * rel * within).sum(axis=1)
    ap = np.divide(total, r, out=np.zeros_like(total), where=r > 0)
    return float(ap.mean())


def mrr(I: np.ndarray, train_labels: np.ndarray, query_labels: np.ndarray, k: int | None = None) -> float:
    """Mean reciprocal rank of the first same-label neighbour among the first k (0 for a query with none).

    I (nq, >=k) ids, nearest first, -1 padding; train_labels (n,); query_labels (nq,).
    """
    I = np.asarray(I)
    k = I.shape[1] if k is None else k
    rel = relevance(I[:, :k], train_labels, query_labels)
    first = rel.argmax(axis=1)
    rr = np.where(rel.any(axis=1), 1.0 / (first + 1), 0.0)
    return float(rr.mean())


def average_precision(I: np.ndarray, train_labels: np.ndarray, query_labels: np.ndarray, *,
                      relevant: np.ndarray | None = None) -> float:
    """MAP over the whole ranking: for query q with R_q relevant train items, AP = (1/R_q) * sum_i P(i) * rel(i)
    over every position i of I (the full ranking of the database, nearest first). Relevant items missing
    from I count as never retrieved (they add 0). A query with R_q = 0 scores 0.

    I (nq, n) ids, nearest first, -1 padding; train_labels (n,); query_labels (nq,); ``relevant`` (nq,)
    overrides R_q (leave-one-out: the class count minus the query itself).
    """
    I = np.asarray(I)
    rel = relevance(I, train_labels, query_labels).astype(np.float64)
    r = class_counts(train_labels, query_labels) if relevant is None else np.asarray(relevant, np.int64)
    ranks = np.arange(1, I.shape[1] + 1, dtype=np.float64)
    total = (np.cumsum(rel, axis=1) / ranks * rel).sum(axis=1)
    ap = np.divide(total, r, out=np.zeros_like(total), where=r > 0)
    return float(ap.mean())


def class_recall_at_k(I: np.ndarray, train_labels: np.ndarray, query_labels: np.ndarray, k: int, *,
                      relevant: np.ndarray | None = None) -> float:
    """Recall@k in the information-retrieval sense (the seed project's definition): the mean over queries of
    (same-label neighbours among the first k) / R_q, R_q being the number of train items of the query's label
    (``relevant`` overrides it). A query with R_q = 0 scores 0. Not :func:`recall_at_k` (any hit in k).

    I (nq, >=k) ids, nearest first, -1 padding; train_labels (n,); query_labels (nq,).
    """
    rel = relevance(np.asarray(I)[:, :k], train_labels, query_labels)
    r = class_counts(train_labels, query_labels) if relevant is None else np.asarray(relevant, np.int64)
    hits = rel.sum(axis=1).astype(np.float64)
    return float(np.divide(hits, r, out=np.zeros_like(hits), where=r > 0).mean())


def cluster_scores(labels: np.ndarray, clusters: np.ndarray) -> dict[str, float]:
    """NMI and AMI (scikit-learn, arithmetic normalisation) of cluster assignments against the true labels.

    labels (n,) true classes; clusters (n,) cluster ids (e.g. k-means on the embeddings with as many
    clusters as classes). Both are 1 for a perfect clustering, NMI ~ AMI ~ 0 for a random one.
    """
    from sklearn.metrics import adjusted_mutual_info_score, normalized_mutual_info_score

    labels = np.asarray(labels)
    clusters = np.asarray(clusters)
    if labels.shape != clusters.shape or labels.ndim != 1:
        raise ValueError(f"labels {labels.shape} and clusters {clusters.shape} must be two equal 1-D shapes")
    return {"nmi": float(normalized_mutual_info_score(labels, clusters)),
            "ami": float(adjusted_mutual_info_score(labels, clusters))}


def verification_accuracy(distances: np.ndarray, same: np.ndarray, thresholds: Sequence[float]) -> np.ndarray:
    """Pair verification: a pair is predicted "same" when its distance is < threshold; the accuracy of that
    prediction against ``same`` for each threshold.

    distances (p,) pair distances; same (p,) bool (the two items share a label); thresholds (t,).
    Returns (t,) floats in [0, 1].
    """
    d = np.asarray(distances, dtype=np.float64)
    same = np.asarray(same, dtype=bool)
    t = np.asarray(thresholds, dtype=np.float64)
    pred = d[None, :] < t[:, None]
    return (pred == same[None, :]).mean(axis=1)


def best_verification_threshold(distances: np.ndarray, same: np.ndarray) -> tuple[float, float]:
    """(threshold, accuracy) of the best "same when distance < threshold" rule over the pairs given:
    thresholds are tried midway between consecutive distinct distances (and below / above all of them)."""
    d = np.sort(np.unique(np.asarray(distances, dtype=np.float64)))
    cands = np.concatenate([[d[0] - 1.0], (d[1:] + d[:-1]) / 2, [d[-1] + 1.0]]) if len(d) else np.array([0.0])
    acc = verification_accuracy(distances, same, cands)
    best = int(np.argmax(acc))
    return float(cands[best]), float(acc[best])


def label_metrics(I: np.ndarray, train_labels: np.ndarray, query_labels: np.ndarray, k: int) -> dict[str, float]:
    """The label-aware figures stored with every result: ``precision_at_{k}``, ``recall_at_1``,
    ``recall_at_{k}``, ``map_at_{k}`` (MAP@R truncated at k) and ``mrr`` (within the first k).

    I (nq, >=k) ids, nearest first, -1 padding; train_labels (n,); query_labels (nq,).
    """
    I = np.asarray(I)[:, :k]
    train_labels, query_labels = _codes(train_labels, query_labels)
    return {
        f"precision_at_{k}": precision_at_k(I, train_labels, query_labels, k),
        "recall_at_1": recall_at_k(I, train_labels, query_labels, 1),
        f"recall_at_{k}": recall_at_k(I, train_labels, query_labels, k),
        f"map_at_{k}": map_at_r(I, train_labels, query_labels, k),
        "mrr": mrr(I, train_labels, query_labels, k),
    }


def _codes(train_labels: np.ndarray, query_labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both label arrays as int64 codes of one shared vocabulary (fast comparisons for strings and bytes). A
    missing label (NaN, None, "", "nan") raises the InputError of
    :func:`ann_bench.data.vectorset.check_labels_array`, naming its row: it is no class."""
    from ann_bench.data.vectorset import check_labels_array, is_missing_label

    train_labels = np.asarray(train_labels)
    query_labels = np.asarray(query_labels)
    if train_labels.dtype.kind in "iub" and query_labels.dtype.kind in "iub":
        return train_labels.astype(np.int64), query_labels.astype(np.int64)
    both = np.concatenate([train_labels.astype(object), query_labels.astype(object)])
    try:
        values, inverse = np.unique(both, return_inverse=True)
    except TypeError:  # values that do not order (e.g. bytes and str mixed): equality is all we need
        vocab: dict = {}
        inverse = np.fromiter((vocab.setdefault(v, len(vocab)) for v in both), dtype=np.int64, count=len(both))
        values = list(vocab)
    if any(is_missing_label(v) for v in values):  # the rare path: name the row
        check_labels_array(train_labels, None, "the train labels")
        check_labels_array(query_labels, None, "the query labels")
    inverse = np.asarray(inverse, dtype=np.int64).reshape(-1)
    return inverse[: len(train_labels)], inverse[len(train_labels):]
