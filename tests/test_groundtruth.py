import numpy as np
import pytest

from ann_bench.distances import distances_to, pairwise
from ann_bench.data.groundtruth import exact_knn


def brute_force(metric, Q, X, k):
    """float64 numpy brute force: (D, I) sorted by (distance, id)."""
    D = pairwise(metric, Q, X)
    I = np.lexsort((np.broadcast_to(np.arange(X.shape[0]), D.shape), D), axis=1)[:, :k]
    return np.take_along_axis(D, I, axis=1), I


@pytest.mark.parametrize("metric", ["euclidean", "angular", "ip"])
@pytest.mark.parametrize("base_chunk", [None, 257])
def test_exact_knn_equals_float64_brute_force(metric, base_chunk, rng):
    X = rng.normal(size=(1200, 12)).astype(np.float32)
    Q = rng.normal(size=(40, 12)).astype(np.float32)
    D, I = exact_knn(X, Q, metric, 50, base_chunk=base_chunk, query_chunk=16)
    D_ref, I_ref = brute_force(metric, Q, X, 50)
    assert D.shape == I.shape == (40, 50)
    np.testing.assert_allclose(D, D_ref, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(I, I_ref)  # continuous data: no ties


def test_ties_are_ordered_by_id_and_distances_are_exact():
    # Four base points at the same distance 1 from the query, one at 0.
    X = np.array([[1, 0], [0, 1], [-1, 0], [0, -1], [0, 0]], dtype=np.float32)
    Q = np.zeros((1, 2), dtype=np.float32)
    D, I = exact_knn(X, Q, "euclidean", 5)
    assert I.tolist() == [[4, 0, 1, 2, 3]]
    assert D.tolist() == [[0, 1, 1, 1, 1]]


def test_k_larger_than_n_is_padded():
    X = np.eye(3, dtype=np.float32)
    D, I = exact_knn(X, X[:1], "euclidean", 5)
    assert I[0, :3].tolist() == [0, 1, 2] and I[0, 3:].tolist() == [-1, -1]
    assert np.isinf(D[0, 3:]).all()


def test_reads_h5py_datasets_in_base_chunks(tmp_path, rng):
    import h5py

    X = rng.normal(size=(900, 8)).astype(np.float32)
    Q = rng.normal(size=(10, 8)).astype(np.float32)
    with h5py.File(tmp_path / "x.h5", "w") as f:
        f["train"] = X
    with h5py.File(tmp_path / "x.h5", "r") as f:
        D, I = exact_knn(f["train"], Q, "angular", 10, base_chunk=100)
    D_ref, I_ref = brute_force("angular", Q, X, 10)
    np.testing.assert_array_equal(I, I_ref)
    np.testing.assert_allclose(D, D_ref, atol=1e-6)


@pytest.mark.parametrize("metric", ["euclidean", "angular", "ip"])
def test_distances_to_matches_pairwise_and_pads(metric, rng):
    X = rng.normal(size=(50, 6))
    Q = rng.normal(size=(4, 6))
    I = np.array([[0, 1, -1], [5, 49, 2], [-1, -1, -1], [7, 7, 8]])
    D = distances_to(metric, Q, X, I)
    full = pairwise(metric, Q, X)
    for q in range(4):
        for j in range(3):
            if I[q, j] < 0:
                assert D[q, j] == np.inf
            else:
                assert D[q, j] == pytest.approx(full[q, I[q, j]], abs=1e-12)
