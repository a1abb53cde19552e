"""nndescent[pynndescent]: PyNNDescent against brute force, its distance conventions and padding, save/load
without pickle, threads, seeds and parameter rules.

The first build of each metric in a process compiles pynndescent's numba kernels (10-35 s each here), so the
indices are built once per module."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

pytest.importorskip("pynndescent")

from ann_bench.backends import get_backend  # noqa: E402
from ann_bench.cli import cli  # noqa: E402
from ann_bench.distances import pairwise  # noqa: E402
from ann_bench.errors import InputError  # noqa: E402
from ann_bench.bench.metrics import check_no_duplicates, id_recall  # noqa: E402
from oracle import assert_matches_oracle  # noqa: E402 (tests/ is on sys.path)

KEY = ("nndescent", "pynndescent")
BUILD = {"n_neighbors": 30}  # at 20 the graph splits by cluster: a few queries found none (recall 0)
GENEROUS = {"epsilon": 0.3}
METRICS = ("euclidean", "angular", "ip")



def make(metric, X, threads=1, seed=0, search=GENEROUS, **build):
    index = get_backend(*KEY)(metric, X.shape[1], threads=threads, seed=seed, **{**BUILD, **build})
    index.check_data(index.params, *X.shape)
    index.build(X)
    index.set_search_params(**search)
    return index


@pytest.fixture(scope="module")
def built(data):
    return {metric: make(metric, data[0]) for metric in METRICS}


@pytest.mark.parametrize("metric", METRICS)
def test_against_brute_force(metric, data, built):
    X, Q = data
    index = built[metric]
    index.set_search_params(**GENEROUS)
    D, I = index.search(Q, 10)
    # In the dataset's metric (L2; 1 - cos; -dot: pynndescent's 'inner_product', not its 'dot'), nearest first.
    assert (I >= 0).all()
    assert_matches_oracle(D, I, Q, X, metric, 0.98)


def test_ip_is_the_inner_product_not_pynndescents_dot():
    # q = (1, 0). By inner product (10, 5) is nearest (dot 10, -dot -10); by angle (1, 0) is (cos 1).
    # pynndescent's 'dot' normalises the data, so it would rank by angle.
    X = np.array([[1, 0], [10, 5], [0, 1], [0.5, 0.4], [2, 3], [3, -1]], dtype=np.float32)
    q = np.array([[1, 0]], dtype=np.float32)
    for metric, nearest, distance in (("ip", 1, -10.0), ("angular", 0, 0.0), ("euclidean", 0, 0.0)):
        index = make(metric, X, n_neighbors=3, search={"epsilon": 1.0})
        D, I = index.search(q, 1)
        assert I[0, 0] == nearest, metric
        np.testing.assert_allclose(D[0, 0], distance, atol=1e-6)


def test_larger_epsilon_recalls_no_less(data, built):
    X, Q = data
    index = built["euclidean"]
    true_I = np.argsort(pairwise("euclidean", Q, X), axis=1, kind="stable")[:, :10]
    recalls = []
    for epsilon in (0.0, 0.1, 0.3):
        index.set_search_params(epsilon=epsilon)
        recalls.append(id_recall(index.search(Q, 10)[1], true_I, 10).mean())
    assert recalls[0] <= recalls[1] <= recalls[2] and recalls[0] < 1.0


@pytest.mark.parametrize("metric", METRICS)
def test_padding_when_k_exceeds_n(metric, data):
    X, Q = data
    index = make(metric, X[:50], n_neighbors=10, search={"epsilon": 0.5})
    D, I = index.search(Q[:7], 60)
    assert D.shape == I.shape == (7, 60)
    assert (I[:, :50] >= 0).all() and (I[:, 50:] == -1).all()
    assert np.isinf(D[:, 50:]).all() and np.isfinite(D[:, :50]).all()
    check_no_duplicates(I)


def test_unfilled_slots_repeating_one_id_become_padding():
    # pynndescent fills the slots it could not fill with one id, repeated; in angular its distance reads 1.0.
    index = get_backend(*KEY)("angular", 4)
    D = np.array([[0.1, 0.5, 1.0, 1.0], [0.2, 0.3, 0.4, 0.6]])
    I = np.array([[3, 7, 7, 7], [1, 2, 5, 0]])
    D2, I2 = index.convert(D, I)
    np.testing.assert_array_equal(I2, [[3, 7, -1, -1], [1, 2, 5, 0]])
    np.testing.assert_array_equal(D2, np.array([[0.1, 0.5, np.inf, np.inf], [0.2, 0.3, 0.4, 0.6]], np.float32))
    # euclidean: an unfilled slot has distance +inf even where its id is not repeated
    D3, I3 = get_backend(*KEY)("euclidean", 4).convert(np.array([[0.1, np.inf]]), np.array([[3, 9]]))
    np.testing.assert_array_equal(I3, [[3, -1]])


@pytest.mark.parametrize("metric", METRICS)
def test_save_load_gives_identical_results_without_pickle(metric, data, built, tmp_path):
    X, Q = data
    a = built[metric]
    a.set_search_params(epsilon=0.1)
    path = tmp_path / "index.npz"
    a.save(path)
    with np.load(path, allow_pickle=False) as z:  # plain arrays and JSON: readable without unpickling
        assert all(z[name].dtype != object for name in z.files)
        assert json.loads(str(z["meta"]))["version"]
    b = get_backend(*KEY)(metric, X.shape[1], **BUILD)
    b.set_search_params(epsilon=0.1)
    b.load(path)
    for x, y in zip(a.search(Q, 10), b.search(Q, 10)):
        np.testing.assert_array_equal(x, y)
    assert b.index_bytes() == a.index_bytes() > X.nbytes
    b.set_threads(2)  # a loaded index switches to the parallel search like a built one
    for x, y in zip(a.search(Q, 10), b.search(Q, 10)):
        np.testing.assert_array_equal(x, y)


def test_load_refuses_another_build_or_version(data, built, tmp_path):
    X, _ = data
    path = tmp_path / "index.npz"
    built["euclidean"].save(path)
    with pytest.raises(InputError, match=r"was built with n_neighbors=30 \(not 10\)"):
        get_backend(*KEY)("euclidean", X.shape[1], n_neighbors=10).load(path)
    with pytest.raises(InputError, match=r"metric='euclidean' \(not 'angular'\)"):
        get_backend(*KEY)("angular", X.shape[1], **BUILD).load(path)
    with np.load(path, allow_pickle=False) as z:
        arrays = {name: z[name] for name in z.files}
    meta = json.loads(str(arrays["meta"]))
    arrays["meta"] = np.str_(json.dumps({**meta, "version": "0.0.1"}))
    with open(tmp_path / "old.npz", "wb") as fh:
        np.savez(fh, **arrays)
    with pytest.raises(InputError, match=r"saved by pynndescent 0.0.1, this is .*; rebuild the index"):
        get_backend(*KEY)("euclidean", X.shape[1], **BUILD).load(tmp_path / "old.npz")


@pytest.mark.parametrize("metric", METRICS)
def test_search_threads_change_nothing(metric, data, built):
    X, Q = data
    index = built[metric]
    index.set_threads(1)
    D1, I1 = index.search(Q, 10)
    index.set_threads(2)
    assert index.index.parallel_batch_queries == (metric != "ip")  # ip: pynndescent's parallel search fails
    D2, I2 = index.search(Q, 10)
    index.set_threads(1)
    np.testing.assert_array_equal(I1, I2)
    np.testing.assert_array_equal(D1, D2)


def test_one_thread_builds_follow_the_seed(data):
    X, _ = data
    # n_neighbors 5: NN-descent stops short of the exact k-NN graph, so the seed shows (at 30 on 1,000 points it
    # converged to the same graph for every seed).
    graphs = [make("euclidean", X, seed=seed, n_neighbors=5).index._search_graph for seed in (3, 3, 4)]
    np.testing.assert_array_equal(graphs[0].indices, graphs[1].indices)
    np.testing.assert_array_equal(graphs[0].indptr, graphs[1].indptr)
    assert graphs[0].indices.shape != graphs[2].indices.shape or (graphs[0].indices != graphs[2].indices).any()


def test_warm_up_builds_nothing_here(data):
    index = get_backend(*KEY)("euclidean", 16, **BUILD)
    index.warm_up()
    assert index.index is None and not index._built


@pytest.mark.parametrize(
    "params,match",
    [
        ({"leaf_size": 30}, r"unknown build parameter 'leaf_size'.*n_neighbors: int in \[2, 1000\]"),
        ({"n_neighbors": 1}, "n_neighbors=1 is out of range"),
        ({"diversify_prob": 1.5}, "diversify_prob=1.5 is out of range"),
        ({"n_neighbors": 4, "pruning_degree_multiplier": 0.1}, "caps every degree at 0"),
        ({"low_memory": "maybe"}, "low_memory='maybe' is not true/false"),
    ],
)
def test_invalid_build_parameters(params, match):
    with pytest.raises(InputError, match=match):
        get_backend(*KEY)("euclidean", 8, **params)


def test_invalid_search_parameters_and_data():
    index = get_backend(*KEY)("euclidean", 8)
    with pytest.raises(InputError, match=r"epsilon=-0.1 is out of range; epsilon: float in \[0, 10\]"):
        index.set_search_params(epsilon=-0.1)
    with pytest.raises(InputError, match="needs more than 30 vectors, the set has 30; use n_neighbors < 30"):
        index.check_data(index.params, 30, 8)
    with pytest.raises(InputError, match=r"expected vectors of shape \(n, 8\)"):
        index.build(np.zeros((40, 4), dtype=np.float32))


def test_wrong_query_dimension_is_refused(data, built):
    _, Q = data
    with pytest.raises(InputError, match=r"expected queries of shape \(nq, 16\), got \(3, 8\)"):
        built["euclidean"].search(Q[:3, :8].copy(), 5)


def test_cli_run_stores_ok_rows(small_set, tmp_path):
    store = tmp_path / "r.sqlite"
    args = ["run", "--dataset", small_set, "--backend", "nndescent:pynndescent", "--build", "n_neighbors=10",
            "--search", "epsilon=0,0.2", "--runs", "1", "--mode", "both", "--in-process", "--results", store,
            "--quiet"]
    r = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(cli, ["results", "--results", str(store), "--format", "json"], catch_exceptions=False)
    rows = json.loads(r.output)
    assert len(rows) == 4  # epsilon 0 and 0.2 x 2 modes
    assert {(row["backend"], row["impl"], row["status"]) for row in rows} == {("nndescent", "pynndescent", "ok")}
    assert all(row["recall"] > 0.9 and row["index_bytes"] > 0 for row in rows)
