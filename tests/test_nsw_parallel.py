"""Our NSW's parallel build (ann_bench/backends/nsw.py): batches of insertion searches on every build thread;
the graph depends on the seed alone, and recall at equal ef stays that of the one-by-one build."""

import numpy as np
import pytest

from ann_bench.backends import get_backend
from ann_bench.backends.nsw import SEQUENTIAL_PREFIX
from ann_bench.data.vectorset import SynthSpec, synth_arrays
from ann_bench.data.groundtruth import exact_knn
from ann_bench.bench.metrics import id_recall


@pytest.fixture(scope="module")
def data():
    X, Q, _, _ = synth_arrays(SynthSpec(n=6000, dim=16, queries=200, clusters=10, seed=3))
    return X, Q, exact_knn(X, Q, "euclidean", 10)[1]


def build(X, **params):
    index = get_backend("nsw")("euclidean", X.shape[1], **params)
    index.build(X)
    return index


def recall(index, Q, gt, ef):
    index.set_search_params(ef=ef)
    return float(id_recall(index.search(Q, 10)[1], gt, 10).mean())


def test_the_graph_does_not_depend_on_the_thread_count(data):
    X, _, _ = data
    assert X.shape[0] > 4 * SEQUENTIAL_PREFIX  # several batches
    one, two, three = (build(X, threads=t, seed=5) for t in (1, 2, 3))
    for other in (two, three):
        np.testing.assert_array_equal(one._indptr, other._indptr)
        np.testing.assert_array_equal(one._adj, other._adj)
        np.testing.assert_array_equal(one._ids, other._ids)
    # With random entry points the seed chooses the graph; the thread count still does not.
    assert not np.array_equal(build(X, threads=2, seed=6, entry="random")._adj,
                              build(X, threads=2, seed=5, entry="random")._adj)
    np.testing.assert_array_equal(build(X, threads=1, seed=6, entry="random")._adj,
                                  build(X, threads=2, seed=6, entry="random")._adj)


def test_parallel_recall_matches_the_one_by_one_build(data):
    X, Q, gt = data
    sequential, parallel = build(X, parallel=False), build(X, threads=2)
    for ef in (10, 20, 40):
        assert abs(recall(parallel, Q, gt, ef) - recall(sequential, Q, gt, ef)) <= 0.01
    assert recall(parallel, Q, gt, 80) >= 0.99
    # Every point is in the graph and linked: no batch dropped one.
    assert (np.diff(parallel._indptr) >= 1).all() and parallel._adj.size > X.shape[0] * 10


def test_a_parallel_build_saves_and_loads_and_an_old_file_reads_as_one_by_one(data, tmp_path):
    X, Q, gt = data
    small_gt = exact_knn(X[:2000], Q, "euclidean", 10)[1]
    index = build(X[:2000], threads=2)
    index.save(tmp_path / "nsw.npz")
    back = get_backend("nsw")("euclidean", 16)
    back.load(tmp_path / "nsw.npz")
    assert recall(back, Q, small_gt, 20) == recall(index, Q, small_gt, 20)
    with np.load(tmp_path / "nsw.npz") as z:  # a format-1 file (before `parallel`): built one by one
        old = {key: z[key] for key in z.files if key not in ("parallel", "schedule")}
    old["format"] = np.int64(1)
    with open(tmp_path / "old.npz", "wb") as fh:
        np.savez(fh, **old)
    with pytest.raises(Exception, match="parallel=False"):
        get_backend("nsw")("euclidean", 16).load(tmp_path / "old.npz")
    get_backend("nsw")("euclidean", 16, parallel=False).load(tmp_path / "old.npz")
    # A parallel file of format 2 was built with batches of 1/32 of the graph (now 1/64): another graph.
    old = {**old, "format": np.int64(2), "parallel": np.int64(1)}
    with open(tmp_path / "old.npz", "wb") as fh:
        np.savez(fh, **old)
    with pytest.raises(Exception, match="another schedule"):
        get_backend("nsw")("euclidean", 16).load(tmp_path / "old.npz")
