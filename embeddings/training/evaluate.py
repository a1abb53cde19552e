"""Retrieval and clustering metrics of trained embeddings, with faiss (exact inner-product search on unit
vectors, k-means) and the label metrics of :mod:`ann_bench.metrics`.

Protocol (that of metric-learning benchmarks): every test item queries the test set leaving itself out
(``reference="test"``), or queries the training items (``reference="train"``). The whole ranking is computed
chunk by chunk, so MAP and MAP@R are exact. NMI and AMI compare k-means clusters of the test embeddings
(as many as test classes) with the labels. Verification: distances of random same-class and different-class
test pairs, "same" when below a threshold.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ann_bench import metrics as M

K_VALUES = (1, 2, 4, 8, 16, 32)
THRESHOLDS = (0.4, 0.6, 0.8, 1.0, 1.2)  # L2 distances between unit vectors (0..2)
REFERENCES = ("test", "train")


def unit_rows(V: np.ndarray) -> np.ndarray:
    V = np.asarray(V, dtype=np.float32)
    norms = np.linalg.norm(V, axis=1, keepdims=True)
    return np.divide(V, norms, out=np.zeros_like(V), where=norms > 0)


def ranking_metrics(Q: np.ndarray, q_labels: np.ndarray, R: np.ndarray | None = None,
                    r_labels: np.ndarray | None = None, chunk: int = 256) -> dict[str, float]:
    """P@1, P@5, class recall@1/@5 (hits / R_q), Recall@K (any hit) for K_VALUES, MAP, MAP@R and MRR of the
    full rankings. Q (nq, d) unit queries; R (n, d) unit reference or None (leave-one-out within Q)."""
    import faiss

    loo = R is None
    R, r_labels = (Q, q_labels) if loo else (R, r_labels)
    index = faiss.IndexFlatIP(R.shape[1])
    index.add(np.ascontiguousarray(R, dtype=np.float32))
    n = len(R)
    counts = M.class_counts(r_labels, q_labels) - (1 if loo else 0)
    sums: dict[str, float] = {}
    for start in range(0, len(Q), chunk):
        stop = min(start + chunk, len(Q))
        _, I = index.search(np.ascontiguousarray(Q[start:stop], dtype=np.float32), n)
        if loo:  # drop each query itself from its ranking
            keep = I != np.arange(start, stop)[:, None]
            I = I[keep].reshape(stop - start, n - 1)  # a full ranking holds each query exactly once
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


def evaluate(test: np.ndarray, test_labels: np.ndarray, train: np.ndarray | None = None,
             train_labels: np.ndarray | None = None, *, reference: str = "test", seed: int = 0,
             thresholds: Sequence[float] = THRESHOLDS, n_pairs: int = 2000) -> dict:
    """Every figure of a trained embedding: ranking metrics, NMI/AMI of k-means, verification accuracy.

    test (nq, d), train (n, d) embeddings (normalised here, copies); labels (nq,), (n,) ints.
    """
    Q = unit_rows(test)
    test_labels = np.asarray(test_labels)
    if reference == "train":
        out = ranking_metrics(Q, test_labels, unit_rows(train), np.asarray(train_labels))
    else:
        out = ranking_metrics(Q, test_labels)
    out.update(M.cluster_scores(test_labels, kmeans_clusters(Q, len(np.unique(test_labels)), seed)))
    a, b = verification_pairs(test_labels, n_pairs, seed)
    dist = np.linalg.norm(Q[a] - Q[b], axis=1)
    same = test_labels[a] == test_labels[b]
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
