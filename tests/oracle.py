"""The check every backend passes against brute force: ids, recall floor, exact distances, nearest first."""

import numpy as np

from ann_bench.distances import pairwise
from ann_bench.bench.metrics import check_no_duplicates, id_recall


def assert_matches_oracle(D, I, Q, X, metric, floor, k=10, rtol=1e-4, atol=2e-4):
    """(D, I) of a search of Q over X in ``metric``: shapes and dtypes, no duplicate id, id recall@k >= floor,
    distances equal to the exact ones in the set's metric, sorted nearest first."""
    assert D.shape == I.shape == (len(Q), k) and I.dtype == np.int64 and D.dtype == np.float32
    check_no_duplicates(I)
    exact = pairwise(metric, Q, X)
    assert id_recall(I, np.argsort(exact, axis=1, kind="stable")[:, :k], k).mean() >= floor
    found = I >= 0
    np.testing.assert_allclose(D[found], np.take_along_axis(exact, np.where(found, I, 0), axis=1)[found],
                               rtol=rtol, atol=atol)
    assert np.all(np.diff(D, axis=1) >= -1e-5)
