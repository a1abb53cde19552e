"""Exact k-nearest neighbours in chunks with faiss, never an n x n matrix.

faiss' brute-force kernels (``faiss.knn``) search query chunks against base chunks; partial results are
merged, and finally each row's distances are recomputed in float64 and the row re-sorted by (distance, id),
so that the stored distances are exact and ties are ordered deterministically.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ann_bench.distances import distances_to, normalized

DEFAULT_K = 100
BASE_CHUNK_BYTES = 1 << 30  # base rows read at once when the base is not already in memory


def _prepare(metric: str, X: np.ndarray) -> np.ndarray:
    if metric == "angular":
        return normalized(X)
    return np.ascontiguousarray(X, dtype=np.float32)


def exact_knn(
    X,
    Q: np.ndarray,
    metric: str,
    k: int = DEFAULT_K,
    *,
    query_chunk: int = 2048,
    base_chunk: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest rows of X for each row of Q.

    X: (n, d) float32 array, or an h5py dataset read in base chunks; Q: (nq, d).
    Returns D (nq, k) float32 in the metric of :mod:`ann_bench.distances`, I (nq, k) int64, nearest first.
    If k > n, the last columns are padded with -1 / +inf. ``progress(n)`` is called with the number of
    (query, base-chunk) rows finished, for a progress bar over nq * number_of_base_chunks.
    """
    import faiss

    n, d = X.shape
    nq = Q.shape[0]
    k_eff = min(k, n)
    if base_chunk is None:
        base_chunk = n if isinstance(X, np.ndarray) else max(1, BASE_CHUNK_BYTES // (4 * d))
    fmetric = faiss.METRIC_L2 if metric == "euclidean" else faiss.METRIC_INNER_PRODUCT
    Qp = _prepare(metric, Q)
    best_D = np.full((nq, k_eff), np.inf, dtype=np.float32)
    best_I = np.full((nq, k_eff), -1, dtype=np.int64)
    for b0 in range(0, n, base_chunk):
        xb = _prepare(metric, X[b0 : b0 + base_chunk])
        kb = min(k_eff, xb.shape[0])
        for q0 in range(0, nq, query_chunk):
            q = Qp[q0 : q0 + query_chunk]
            D, I = faiss.knn(q, xb, kb, metric=fmetric)
            if fmetric == faiss.METRIC_INNER_PRODUCT:
                D = -D  # smaller is nearer from here on
            I = I + b0
            if b0 == 0 and kb == k_eff:
                best_D[q0 : q0 + len(q)], best_I[q0 : q0 + len(q)] = D, I
            else:
                cand_D = np.concatenate([best_D[q0 : q0 + len(q)], D], axis=1)
                cand_I = np.concatenate([best_I[q0 : q0 + len(q)], I], axis=1)
                order = np.argsort(cand_D, axis=1, kind="stable")[:, :k_eff]
                best_D[q0 : q0 + len(q)] = np.take_along_axis(cand_D, order, axis=1)
                best_I[q0 : q0 + len(q)] = np.take_along_axis(cand_I, order, axis=1)
            if progress is not None:
                progress(len(q))
    # Exact float64 distances for the chosen ids, rows re-sorted by (distance, id).
    exact = distances_to(metric, Q, X, best_I)
    order = np.lexsort((best_I, exact), axis=1)
    I_out = np.take_along_axis(best_I, order, axis=1)
    D_out = np.take_along_axis(exact, order, axis=1).astype(np.float32)
    if k_eff < k:
        I_out = np.concatenate([I_out, np.full((nq, k - k_eff), -1, dtype=np.int64)], axis=1)
        D_out = np.concatenate([D_out, np.full((nq, k - k_eff), np.inf, dtype=np.float32)], axis=1)
    return D_out, I_out
