"""Retrieval and clustering metrics of trained embeddings, with faiss (exact inner-product search on unit
vectors, k-means) and the label metrics of :mod:`ann_bench.bench.metrics`.

Protocol (that of metric-learning benchmarks): every test item queries the test set leaving itself out
(``reference="test"``), or queries the training items (``reference="train"``). The whole ranking is computed
chunk by chunk, so MAP and MAP@R are exact — or, through an ANN index (``search``), the ranking the index
returns to a depth, every figure then "at that depth". Rankings follow the vectors' metric: ``angular``
(trained embedders; cosine on unit vectors), ``euclidean`` or ``ip``. NMI and AMI compare k-means clusters of
the test embeddings (as many as test classes) with the labels. Verification: distances of random
same-class and different-class test pairs, "same" when below a threshold; the thresholds are given, or by
default the 10/25/50/75/90 % quantiles of those pairs' distances (so they suit any scale).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ann_bench.bench import metrics as M

K_VALUES = (1, 2, 4, 8, 16, 32)
THRESHOLDS = (0.4, 0.6, 0.8, 1.0, 1.2)  # L2 distances between unit vectors (0..2): the README's fixed table
QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)  # default thresholds: these quantiles of the pair distances
REFERENCES = ("test", "train")


def check_thresholds(thresholds) -> None:
    """InputError unless ``thresholds`` is None or a non-empty list of finite numbers."""
    if thresholds is None:
        return
    import math

    from ann_bench.errors import InputError

    if not len(thresholds) or any(not (isinstance(t, (int, float)) and math.isfinite(t)) for t in thresholds):
        raise InputError(f"--thresholds {','.join(map(str, thresholds)) or '(none)'}: give finite distances, "
                         "comma-separated, e.g. --thresholds 0.4,0.6,0.8 (for ip: -dot, so negative values)")


def parse_thresholds(text: str | None) -> tuple[float, ...] | None:
    """'0.4,0.6' -> (0.4, 0.6); None stays None (quantiles); InputError for anything else."""
    if text is None:
        return None
    from ann_bench.errors import InputError

    try:
        values = tuple(float(v) for v in str(text).split(","))
    except ValueError:
        raise InputError(f"--thresholds {text!r}: give distances, comma-separated, e.g. 0.4,0.6,0.8") from None
    check_thresholds(values)
    return values


def default_thresholds(distances: np.ndarray) -> list[float]:
    """The QUANTILES of the pair distances, to 3 significant digits (distinct, ascending)."""
    qs = np.quantile(np.asarray(distances, dtype=np.float64), QUANTILES) if len(distances) else np.zeros(1)
    return sorted({float(f"{q:.3g}") for q in qs})


def unit_rows(V: np.ndarray) -> np.ndarray:
    V = np.asarray(V, dtype=np.float32)
    norms = np.linalg.norm(V, axis=1, keepdims=True)
    return np.divide(V, norms, out=np.zeros_like(V), where=norms > 0)


def ranking_metrics(Q: np.ndarray, q_labels: np.ndarray, R: np.ndarray | None = None,
                    r_labels: np.ndarray | None = None, chunk: int = 256, *, metric: str = "angular",
                    search=None, depth: int | None = None) -> dict[str, float]:
    """P@1, P@5, class recall@1/@5 (hits / R_q), Recall@K (any hit) for K_VALUES, MAP, MAP@R and MRR of the
    rankings. Q (nq, d) queries; R (n, d) reference or None (leave-one-out within Q); ``metric`` ranks them
    (angular: unit vectors expected, as :func:`unit_rows` gives). By default the full exact ranking; with
    ``search(Q_chunk, d) -> ids (nq, d)`` (an ANN index over R; -1 for missing) or ``depth``, the first
    ``depth`` of that ranking (each query's own id dropped when leaving one out)."""
    import faiss

    loo = R is None
    R, r_labels = (Q, q_labels) if loo else (R, r_labels)
    n = len(R)
    if search is None:
        index = faiss.IndexFlatL2(R.shape[1]) if metric == "euclidean" else faiss.IndexFlatIP(R.shape[1])
        index.add(np.ascontiguousarray(R, dtype=np.float32))

        def search(Qc, d):
            return index.search(np.ascontiguousarray(Qc, dtype=np.float32), d)[1]

    want = n if depth is None else min(n, depth + (1 if loo else 0))
    counts = M.class_counts(r_labels, q_labels) - (1 if loo else 0)
    sums: dict[str, float] = {}
    for start in range(0, len(Q), chunk):
        stop = min(start + chunk, len(Q))
        I = np.asarray(search(Q[start:stop], want), dtype=np.int64)
        if loo:  # drop each query itself from its ranking (or its last entry when the index missed it)
            own = I == np.arange(start, stop)[:, None]
            own[~own.any(axis=1), -1] = True
            I = I[~own].reshape(stop - start, want - 1)
        ql, rc = q_labels[start:stop], counts[start:stop]
        part = {"p_at_1": M.precision_at_k(I, r_labels, ql, 1), "p_at_5": M.precision_at_k(I, r_labels, ql, 5),
                "class_recall_at_1": M.class_recall_at_k(I, r_labels, ql, 1, relevant=rc),
                "class_recall_at_5": M.class_recall_at_k(I, r_labels, ql, 5, relevant=rc),
                **{f"recall_at_{k}": M.recall_at_k(I, r_labels, ql, k) for k in K_VALUES},
                "map": M.average_precision(I, r_labels, ql, relevant=rc),
                "map_at_r": M.map_at_r(I, r_labels, ql, relevant=rc),
                "mrr": M.mrr(I, r_labels, ql)}
        for key, v in part.items():
            sums[key] = sums.get(key, 0.0) + v * (stop - start)
    return {key: v / len(Q) for key, v in sums.items()}


def kmeans_clusters(X: np.ndarray, k: int, seed: int = 0, niter: int = 25) -> np.ndarray:
    """faiss k-means assignments (n,) of X (n, d) into k clusters (seeded)."""
    import faiss

    X = np.ascontiguousarray(X, dtype=np.float32)
    km = faiss.Kmeans(X.shape[1], k, niter=niter, seed=seed + 1, verbose=False, min_points_per_centroid=1,
                      max_points_per_centroid=100_000)
    km.train(X)
    return km.index.search(X, 1)[1][:, 0]


def verification_pairs(labels: np.ndarray, n_pairs: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(a, b) index arrays: n_pairs same-label pairs then n_pairs different-label pairs (a != b), seeded.
    Same-label pairs draw a random anchor of a class with 2 items or more, then another item of its class."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    order = np.argsort(labels, kind="stable")
    values, starts, sizes = np.unique(labels[order], return_index=True, return_counts=True)
    pos_a = pos_b = np.empty(0, dtype=np.int64)
    if (sizes >= 2).any():
        anchors = np.flatnonzero(sizes[np.searchsorted(values, labels)] >= 2)
        pos_a = rng.choice(anchors, size=n_pairs)
        cls = np.searchsorted(values, labels[pos_a])
        rank = np.empty(len(labels), dtype=np.int64)
        rank[order] = np.arange(len(labels)) - starts[np.searchsorted(values, labels[order])]
        other = rng.integers(0, sizes[cls] - 1)  # among the class's other items
        other = other + (other >= rank[pos_a])
        pos_b = order[starts[cls] + other]
    neg_a = neg_b = np.empty(0, dtype=np.int64)
    if len(values) >= 2:
        a = rng.integers(0, len(labels), size=20 * n_pairs)
        b = rng.integers(0, len(labels), size=20 * n_pairs)
        keep = np.flatnonzero(labels[a] != labels[b])[:n_pairs]
        neg_a, neg_b = a[keep], b[keep]
    return np.concatenate([pos_a, neg_a]), np.concatenate([pos_b, neg_b])


def pair_distances(V: np.ndarray, a: np.ndarray, b: np.ndarray, metric: str) -> np.ndarray:
    """Distances of the pairs (a[i], b[i]) of rows of V in ``metric``'s terms: L2 (angular: of unit vectors,
    which V then holds), or -dot for ip (smaller is nearer, as everywhere)."""
    if metric == "ip":
        return -np.einsum("ij,ij->i", V[a].astype(np.float64), V[b].astype(np.float64))
    return np.linalg.norm(V[a].astype(np.float64) - V[b].astype(np.float64), axis=1)


def _prepared(V: np.ndarray, metric: str) -> np.ndarray:
    return unit_rows(V) if metric == "angular" else np.asarray(V, dtype=np.float32)


def ranking(test: np.ndarray, test_labels: np.ndarray, train: np.ndarray | None = None,
            train_labels: np.ndarray | None = None, *, reference: str = "test", metric: str = "angular",
            search=None, depth: int | None = None) -> dict[str, float]:
    """The ranking figures of :func:`evaluate` only (:func:`ranking_metrics` of the prepared vectors): no
    k-means, no pairs."""
    Q = _prepared(test, metric)
    test_labels = np.asarray(test_labels)
    if reference == "train":
        return ranking_metrics(Q, test_labels, _prepared(train, metric), np.asarray(train_labels), metric=metric,
                               search=search, depth=depth)
    return ranking_metrics(Q, test_labels, metric=metric, search=search, depth=depth)


def ranking_depths(test_labels: np.ndarray, train_labels: np.ndarray | None = None, *,
                   reference: str = "test") -> tuple[int, int]:
    """(largest R, ranking length): the depth MAP@R needs (the most same-class reference items any query has:
    its class size, less itself when leaving one out) and the length of the whole ranking (MAP's, MRR's)."""
    test_labels = np.asarray(test_labels)
    loo = reference != "train"
    ref = test_labels if loo else np.asarray(train_labels)
    counts = M.class_counts(ref, test_labels) - (1 if loo else 0)
    return int(counts.max(initial=0)), len(ref) - (1 if loo else 0)


def evaluate(test: np.ndarray, test_labels: np.ndarray, train: np.ndarray | None = None,
             train_labels: np.ndarray | None = None, *, reference: str = "test", seed: int = 0,
             thresholds: Sequence[float] | None = None, n_pairs: int = 2000, metric: str = "angular",
             search=None, depth: int | None = None) -> dict:
    """Every figure of an embedding: ranking metrics, NMI/AMI of k-means, verification accuracy.

    test (nq, d), train (n, d) embeddings (for ``angular``, normalised here, as copies); labels (nq,), (n,).
    ``thresholds`` None: the QUANTILES of the sampled pairs' distances. ``search``/``depth``: see
    :func:`ranking_metrics` (ranking through an index; NMI/AMI and verification do not depend on it)."""
    Q = _prepared(test, metric)
    test_labels = np.asarray(test_labels)
    out = ranking(test, test_labels, train, train_labels, reference=reference, metric=metric, search=search,
                  depth=depth)
    out.update(M.cluster_scores(test_labels, kmeans_clusters(Q, len(np.unique(test_labels)), seed)))
    a, b = verification_pairs(test_labels, n_pairs, seed)
    dist = pair_distances(Q, a, b, metric)
    same = test_labels[a] == test_labels[b]
    out["verification_thresholds"] = "given" if thresholds is not None else \
        "quantiles " + "/".join(f"{q:g}" for q in QUANTILES) + " of the pair distances"
    thresholds = list(thresholds) if thresholds is not None else default_thresholds(dist)
    acc = M.verification_accuracy(dist, same, thresholds)
    out["verification"] = {f"{t:g}": float(v) for t, v in zip(thresholds, acc)}
    t_best, acc_best = M.best_verification_threshold(dist, same)
    out["verification_best"] = {"threshold": round(t_best, 4), "accuracy": acc_best}
    out["verification_pairs"] = len(a)
    return {k: (float(v) if isinstance(v, (float, np.floating)) else v) for k, v in out.items()}


# Rows of the printed table: (key, label)
TABLE_ROWS = [("p_at_1", "Precision@1"), ("p_at_5", "Precision@5"),
              ("class_recall_at_1", "Recall@1 (hits/R)"), ("class_recall_at_5", "Recall@5 (hits/R)"),
              *[(f"recall_at_{k}", f"Recall@{k} (any hit)") for k in K_VALUES],
              ("map", "MAP"), ("map_at_r", "MAP@R"), ("mrr", "MRR"), ("nmi", "NMI (k-means)"),
              ("ami", "AMI (k-means)")]
