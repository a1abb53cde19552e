"""The added backends (kdtree, annoy, nsw, hnsw[faiss]) against the exact oracle, and their contracts."""

import subprocess
import sys

import numpy as np
import pytest

from ann_bench.backends import get_backend, implementations
from ann_bench.distances import pairwise
from ann_bench.errors import InputError
from ann_bench.bench.metrics import check_no_duplicates, id_recall

EXTRA = {
    # (name, impl): (build params, most accurate search params, recall@10 floor)
    ("kdtree", "scipy"): ({"leafsize": 16}, {"eps": 0.0}, 1.0),
    ("annoy", "annoy"): ({"n_trees": 20}, {"search_k": 5000}, 0.99),
    ("nsw", "numba"): ({"f": 10, "ef_construction": 64}, {"ef": 100}, 0.99),
    ("hnsw", "faiss"): ({"M": 16, "ef_construction": 100}, {"ef": 200}, 0.99),
}
CASES = [(key, metric) for key in EXTRA for metric in get_backend(*key).capabilities.metrics]


def clustered(n, nq, dim, clusters=10, intrinsic=4, seed=0):
    """Gaussian clusters on random `intrinsic`-dimensional subspaces plus small noise: (X (n, dim), Q (nq, dim))."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((clusters, dim))
    bases = rng.standard_normal((clusters, dim, intrinsic)) / np.sqrt(intrinsic)

    def draw(m):
        label = rng.integers(0, clusters, m)
        z = rng.standard_normal((m, intrinsic))
        X = centers[label] + np.einsum("mdr,mr->md", bases[label], z) + 0.05 * rng.standard_normal((m, dim))
        return X.astype(np.float32)

    return draw(n), draw(nq)


@pytest.fixture(scope="module")
def data():
    return clustered(3000, 100, 16)


def built(key, metric, X, threads=1, seed=0, **override):
    build, search, _ = EXTRA[key]
    index = get_backend(*key)(metric, X.shape[1], threads=threads, seed=seed, **{**build, **override})
    index.build(X)
    index.set_search_params(**search)
    return index


@pytest.mark.parametrize("key,metric", CASES, ids=[f"{n}-{i}-{m}" for (n, i), m in CASES])
def test_against_exact_oracle(key, metric, data):
    X, Q = data
    index = built(key, metric, X)
    D, I = index.search(Q, 10)
    assert D.shape == I.shape == (100, 10) and I.dtype == np.int64 and D.dtype == np.float32
    check_no_duplicates(I)
    assert (I >= 0).all()
    exact = pairwise(metric, Q, X)
    true_I = np.argsort(exact, axis=1, kind="stable")[:, :10]
    assert id_recall(I, true_I, 10).mean() >= EXTRA[key][2]
    # Distances are in the dataset's metric, equal to the exact ones recomputed in float64, nearest first.
    np.testing.assert_allclose(D, np.take_along_axis(exact, I, axis=1), rtol=1e-4, atol=2e-4)
    assert np.all(np.diff(D, axis=1) >= -1e-5)


def test_kdtree_eps_zero_is_exact_and_eps_bounds_the_error(data):
    X, Q = data
    index = built(("kdtree", "scipy"), "euclidean", X)
    exact = pairwise("euclidean", Q, X)
    D, I = index.search(Q, 10)
    np.testing.assert_array_equal(I, np.argsort(exact, axis=1, kind="stable")[:, :10])
    true_D = np.sort(exact, axis=1)[:, :10]
    index.set_search_params(eps=1.0)
    D1, _ = index.search(Q, 10)
    # (1 + eps)-approximate: the j-th distance returned is at most (1 + eps) times the true j-th distance.
    assert np.all(D1 <= (1 + 1.0) * true_D * (1 + 1e-5) + 1e-6)


def test_kdtree_has_no_inner_product():
    with pytest.raises(InputError, match="metric 'ip' is not supported; it supports euclidean, angular"):
        get_backend("kdtree")("ip", 8)


@pytest.mark.parametrize("key", list(EXTRA), ids=[f"{n}-{i}" for n, i in EXTRA])
def test_padding_when_k_exceeds_what_is_reachable(key, data):
    X, Q = data
    index = built(key, "euclidean", X[:50])
    D, I = index.search(Q[:7], 60)
    assert D.shape == I.shape == (7, 60)
    assert (I[:, :50] >= 0).all(), "all 50 points are reachable at these settings"
    assert (I[:, 50:] == -1).all() and np.isinf(D[:, 50:]).all() and np.isfinite(D[:, :50]).all()
    check_no_duplicates(I)


def test_annoy_pads_when_search_k_collects_fewer_than_k(data):
    X, Q = data
    index = built(("annoy", "annoy"), "euclidean", X)
    index.set_search_params(search_k=1)
    D, I = index.search(Q, 100)
    pad = I == -1
    assert pad.any() and np.isinf(D[pad]).all() and np.isfinite(D[~pad]).all()


@pytest.mark.parametrize("key", list(EXTRA), ids=[f"{n}-{i}" for n, i in EXTRA])
def test_save_load_gives_identical_results(key, data, tmp_path):
    X, Q = data
    metric = "angular"
    a = built(key, metric, X)
    a.save(tmp_path / "index.bin")
    b = get_backend(*key)(metric, X.shape[1], **EXTRA[key][0])
    b.set_search_params(**EXTRA[key][1])
    b.load(tmp_path / "index.bin")
    for x, y in zip(a.search(Q, 10), b.search(Q, 10)):
        np.testing.assert_array_equal(x, y)
    assert a.index_bytes() > 0 and b.index_bytes() > 0
    if key != ("annoy", "annoy"):  # annoy's file size depends on its trees, not only on the vectors
        assert a.index_bytes() >= X.nbytes


def test_nsw_refuses_a_file_built_otherwise(data, tmp_path):
    X, _ = data
    built(("nsw", "numba"), "euclidean", X[:100]).save(tmp_path / "nsw.npz")
    other = get_backend("nsw")("euclidean", X.shape[1], f=12, ef_construction=64)
    with pytest.raises(InputError, match=r"was built with f=10 \(not 12\)"):
        other.load(tmp_path / "nsw.npz")


@pytest.mark.parametrize("key", list(EXTRA), ids=[f"{n}-{i}" for n, i in EXTRA])
def test_two_threads_give_the_same_results(key, data):
    X, Q = data
    one = built(key, "euclidean", X, threads=1)
    D1, I1 = one.search(Q, 10)
    one.set_threads(2)
    D2, I2 = one.search(Q, 10)
    np.testing.assert_array_equal(I1, I2)
    np.testing.assert_array_equal(D1, D2)


@pytest.mark.parametrize("entry", ["first", "random"])
def test_nsw_is_deterministic_for_a_seed(entry, data):
    X, Q = data
    runs = [built(("nsw", "numba"), "euclidean", X, seed=3, entry=entry, w=2).search(Q, 10) for _ in range(2)]
    np.testing.assert_array_equal(runs[0][1], runs[1][1])
    np.testing.assert_array_equal(runs[0][0], runs[1][0])


def test_nsw_random_entry_points_follow_the_seed(data):
    X, Q = data
    graphs = [built(("nsw", "numba"), "euclidean", X, seed=s, entry="random")._adj for s in (1, 2)]
    assert not np.array_equal(graphs[0], graphs[1])


def test_nsw_one_query_at_a_time_equals_the_batch(data):
    X, Q = data
    index = built(("nsw", "numba"), "ip", X, entry="random")
    index.set_search_params(ef=20, m=3)
    D, I = index.search(Q, 10)
    single = [index.search(Q[i : i + 1], 10) for i in range(len(Q))]
    np.testing.assert_array_equal(I, np.concatenate([s[1] for s in single]))
    np.testing.assert_array_equal(D, np.concatenate([s[0] for s in single]))


def test_nsw_links_are_never_pruned(data):
    X, _ = data
    f = 6
    index = built(("nsw", "numba"), "euclidean", X[:500], f=f, ef_construction=32)
    # Point i links to min(f, i) earlier points, both ways, and nothing is ever removed.
    assert index._indptr[-1] == 2 * sum(min(f, i) for i in range(500))
    assert np.diff(index._indptr).min() >= f


def test_nsw_restarts_do_not_hurt_and_never_repeat_ids(data):
    X, Q = data
    index = built(("nsw", "numba"), "euclidean", X, f=4, ef_construction=16, entry="random")
    exact = pairwise("euclidean", Q, X)
    true_I = np.argsort(exact, axis=1, kind="stable")[:, :10]
    recalls = []
    for m in (1, 4):
        index.set_search_params(ef=10, m=m)
        _, I = index.search(Q, 10)
        check_no_duplicates(I)
        recalls.append(id_recall(I, true_I, 10).mean())
    assert recalls[1] >= recalls[0]


def test_nsw_hand_worked_line():
    # Five points on a line; the query 2.2 is 0.2 from x=2, 0.8 from x=3 and 1.2 from x=1.
    X = np.array([[0.0], [1.0], [2.0], [3.0], [10.0]], dtype=np.float32)
    index = get_backend("nsw")("euclidean", 1, f=2, ef_construction=4)
    index.build(X)
    index.set_search_params(ef=5)
    D, I = index.search(np.array([[2.2]], dtype=np.float32), 3)
    np.testing.assert_array_equal(I, [[2, 3, 1]])
    np.testing.assert_allclose(D, [[0.2, 0.8, 1.2]], rtol=1e-6)


def test_skip_reasons_for_ef_below_k():
    nsw = get_backend("nsw")("euclidean", 8)
    assert "nsw searches with ef=k" in nsw.search_skip_reason({"ef": 5, "m": 1}, 10)
    assert nsw.search_skip_reason({"ef": 10, "m": 1}, 10) is None
    # faiss stops its search by efSearch even below k (it only sizes the queue max(efSearch, k)).
    assert get_backend("hnsw", "faiss")("euclidean", 8).search_skip_reason({"ef": 5}, 10) is None


def test_faiss_ef_below_k_is_a_different_search(data):
    X, Q = data
    index = built(("hnsw", "faiss"), "euclidean", X, M=4, ef_construction=8)
    results = []
    for ef in (1, 10):
        index.set_search_params(ef=ef)
        results.append(index.search(Q, 10)[1])
    assert not np.array_equal(results[0], results[1])


@pytest.mark.parametrize(
    "key,params,match",
    [
        (("nsw", "numba"), {"friends": 3}, r"unknown build parameter 'friends'.*f: int in \[1, 4096\]"),
        (("nsw", "numba"), {"f": 0}, "f=0 is out of range"),
        (("nsw", "numba"), {"f": 20, "ef_construction": 10}, "ef_construction=10 is smaller than f=20"),
        (("nsw", "numba"), {"entry": "middle"}, "entry='middle' is not allowed; entry: str one of first, random"),
        (("annoy", "annoy"), {"n_trees": "many"}, "n_trees='many' is not an integer"),
        (("kdtree", "scipy"), {"leafsize": 0}, "leafsize=0 is out of range"),
        (("hnsw", "faiss"), {"efConstruction": 40}, "unknown build parameter 'efConstruction'"),
    ],
)
def test_invalid_build_parameters(key, params, match):
    with pytest.raises(InputError, match=match):
        get_backend(*key)("euclidean", 8, **params)


@pytest.mark.parametrize(
    "key,params,match",
    [
        (("nsw", "numba"), {"ef": 0}, "ef=0 is out of range"),
        (("nsw", "numba"), {"nprobe": 4}, "unknown search parameter 'nprobe'"),
        (("annoy", "annoy"), {"search_k": 0}, "search_k=0 is out of range"),
        (("kdtree", "scipy"), {"eps": -1}, r"eps=-1.0 is out of range; eps: float in \[0, 1000000\]"),
        (("kdtree", "scipy"), {"eps": "nan"}, "is not a finite number"),
        (("hnsw", "faiss"), {"ef": 2.5}, "ef=2.5 is not an integer"),
    ],
)
def test_invalid_search_parameters(key, params, match):
    with pytest.raises(InputError, match=match):
        get_backend(*key)("euclidean", 8).set_search_params(**params)


def test_registry_keeps_hnswlib_the_default_hnsw():
    assert list(implementations("hnsw"))[:2] == ["hnswlib", "faiss"]
    assert set(implementations("hnsw")) == {"hnswlib", "faiss", "usearch", "voyager", "nmslib", "chroma", "milvus"}
    assert get_backend("hnsw").impl == "hnswlib"
    assert [get_backend(n).impl for n in ("nsw", "annoy", "kdtree")] == ["numba", "annoy", "scipy"]


def test_backend_modules_import_with_numpy_only():
    code = (
        "import sys\n"
        "import ann_bench.backends.nsw, ann_bench.backends.annoy, ann_bench.backends.kdtree, "
        "ann_bench.backends.hnsw_faiss\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'numba', 'annoy', 'scipy', 'faiss'}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_wrong_query_dimension_is_refused(data):
    X, Q = data
    index = built(("nsw", "numba"), "euclidean", X[:100])
    with pytest.raises(InputError, match=r"expected vectors of shape \(n, 16\)"):
        index.search(Q[:, :8].copy(), 10)


def test_runner_sweeps_the_added_backends(small_set):
    from ann_bench.data.vectorset import VectorSet
    from ann_bench.bench.runner import RunOptions, plan_sweep, run_sweep

    with VectorSet(small_set) as vs:
        plans = plan_sweep(
            ["nsw", "annoy", "kdtree", "hnsw:faiss"], vs.n_train, vs.dim, vs.metric,
            ["nsw:f=8", "nsw:ef_construction=32", "annoy:n_trees=10", "hnsw:M=8"],
            ["nsw:ef=5,40", "annoy:search_k=3000", "kdtree:eps=0", "hnsw:ef=40"],
        )
        summary = run_sweep(vs, plans, RunOptions(k=10, runs=1, modes=("batch", "single")))
    recs = {(r.backend, r.impl, tuple(r.search_params.values()), r.mode): r for r in summary.records}
    assert len(recs) == 8 and all(r.status == "ok" for r in recs.values())
    assert any("ef=5 < k=10" in s for s in summary.skipped_redundant)
    assert recs[("kdtree", "scipy", (0.0,), "batch")].recall == 1.0
    assert all(r.recall >= 0.95 and r.index_bytes > 0 for r in recs.values())


def test_nsw_breadth_first_layout_covers_every_node():
    from ann_bench.backends._nsw_kernels import bfs_order, permute_graph

    # Components {0, 1} and {2, 3} and the lone node 4: the unreachable ones follow in id order.
    indptr = np.array([0, 1, 2, 3, 4, 4], dtype=np.int64)
    adj = np.array([1, 0, 3, 2], dtype=np.int32)
    perm = bfs_order(indptr, adj, 2)
    np.testing.assert_array_equal(perm, [2, 3, 0, 1, 4])
    new_ptr, new_adj = permute_graph(indptr, adj, perm)
    np.testing.assert_array_equal(new_ptr, [0, 1, 2, 3, 4, 4])
    np.testing.assert_array_equal(new_adj, [1, 0, 3, 2])  # 2<->3 became 0<->1, 0<->1 became 2<->3


def test_backends_command_says_how_to_install_a_missing_library(monkeypatch):
    import importlib.util

    from click.testing import CliRunner

    from ann_bench.cli import cli

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "usearch" else real(name, *a))
    r = CliRunner().invoke(cli, ["backends"], catch_exceptions=False)
    assert r.exit_code == 0
    said = " ".join(r.output.split())  # in its own block, and named again in the closing line
    assert 'hnsw[usearch] — ' in said and 'not installed: pip install -e ".[graphs]"' in said
    assert "not installed (1): hnsw[usearch]" in said
    with pytest.raises(InputError, match=r'pip install -e "\.\[graphs\]"'):
        get_backend("hnsw", "usearch").check_available()
