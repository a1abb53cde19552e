"""hnsw[nmslib] and nsw[nmslib] (sw-graph) against brute force, their distance conventions, save/load,
padding, threads and parameter rules."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

pytest.importorskip("nmslib")

from ann_bench.backends import get_backend, implementations  # noqa: E402
from ann_bench.cli import cli  # noqa: E402
from ann_bench.distances import pairwise  # noqa: E402
from ann_bench.errors import InputError  # noqa: E402
from ann_bench.bench.metrics import check_no_duplicates, id_recall  # noqa: E402
from oracle import assert_matches_oracle  # noqa: E402 (tests/ is on sys.path)

KEYS = [("hnsw", "nmslib"), ("nsw", "nmslib")]
BUILD = {("hnsw", "nmslib"): {"M": 16, "ef_construction": 100}, ("nsw", "nmslib"): {"f": 10, "ef_construction": 64}}
GENEROUS = {"ef": 100}
METRICS = ("euclidean", "angular", "ip")
IDS = [f"{n}-{i}" for n, i in KEYS]



def make(key, metric, X, threads=1, search=GENEROUS, **build):
    index = get_backend(*key)(metric, X.shape[1], threads=threads, **{**BUILD[key], **build})
    index.build(X)
    index.set_search_params(**search)
    return index


@pytest.fixture(scope="module")
def built(data):
    return {(key, metric): make(key, metric, data[0]) for key in KEYS for metric in METRICS}


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("key", KEYS, ids=IDS)
def test_against_brute_force(key, metric, data, built):
    X, Q = data
    index = built[key, metric]
    index.set_search_params(**GENEROUS)
    D, I = index.search(Q, 10)
    # In the dataset's metric (hnsw's squared 'l2' rooted, sw-graph's plain 'l2' kept), nearest first.
    assert (I >= 0).all()
    assert_matches_oracle(D, I, Q, X, metric, 0.99)


@pytest.mark.parametrize("key", KEYS, ids=IDS)
def test_hand_worked_line(key):
    # Five points on a line; the query 2.2 is 0.2 from x=2, 0.8 from x=3 and 1.2 from x=1. A squared
    # distance left unrooted (hnsw's 'l2') would read 0.04, 0.64, 1.44; a rooted L2 twice (sw-graph) 0.45 ...
    X = np.array([[0.0], [1.0], [2.0], [3.0], [10.0]], dtype=np.float32)
    index = get_backend(*key)("euclidean", 1, **({"M": 2, "ef_construction": 8} if key[0] == "hnsw" else {"f": 2}))
    index.build(X)
    index.set_search_params(ef=5)
    D, I = index.search(np.array([[2.2]], dtype=np.float32), 3)
    np.testing.assert_array_equal(I, [[2, 3, 1]])
    np.testing.assert_allclose(D, [[0.2, 0.8, 1.2]], rtol=1e-5)


@pytest.mark.parametrize("key", KEYS, ids=IDS)
def test_larger_ef_recalls_more(key, data, built):
    X, Q = data
    index = built[key, "euclidean"]
    true_I = np.argsort(pairwise("euclidean", Q, X), axis=1, kind="stable")[:, :10]
    recalls = []
    for ef in (1, 10, 100):
        index.set_search_params(ef=ef)
        recalls.append(id_recall(index.search(Q, 10)[1], true_I, 10).mean())
    assert recalls[0] < recalls[2] and recalls[0] <= recalls[1] <= recalls[2] + 1e-9


def test_hnsw_ef_below_k_is_a_real_search_that_may_return_fewer(data, built):
    X, Q = data
    index = built[("hnsw", "nmslib"), "euclidean"]
    assert index.search_skip_reason({"ef": 1}, 10) is None  # measured, not a duplicate of ef = k
    index.set_search_params(ef=1)
    D, I = index.search(Q, 10)
    pad = I == -1
    assert pad.any(), "nmslib's hnsw returned k results at ef 1: the padding path is untested"
    assert np.isinf(D[pad]).all() and np.isfinite(D[~pad]).all()
    check_no_duplicates(I)
    # Padding only at the end of a row, after the results found.
    assert not (pad[:, :-1] & ~pad[:, 1:]).any()


def test_nsw_ef_below_k_still_returns_k(data, built):
    X, Q = data
    index = built[("nsw", "nmslib"), "euclidean"]
    assert index.search_skip_reason({"ef": 1}, 10) is None
    index.set_search_params(ef=1)
    D, I = index.search(Q, 10)
    assert (I >= 0).all() and np.isfinite(D).all()


@pytest.mark.parametrize("key", KEYS, ids=IDS)
def test_padding_when_k_exceeds_n(key, data):
    X, Q = data
    index = make(key, "euclidean", X[:50])
    D, I = index.search(Q[:7], 60)
    assert D.shape == I.shape == (7, 60)
    assert (I[:, :50] >= 0).all() and (I[:, 50:] == -1).all()
    assert np.isinf(D[:, 50:]).all() and np.isfinite(D[:, :50]).all()
    check_no_duplicates(I)


def test_hnsw_save_load_gives_identical_results(data, built, tmp_path):
    X, Q = data
    key = ("hnsw", "nmslib")
    for metric in METRICS:
        a = built[key, metric]
        a.set_search_params(ef=40)
        path = tmp_path / f"{metric}.index"
        a.save(path)
        b = get_backend(*key)(metric, X.shape[1], **BUILD[key])
        b.set_search_params(ef=40)
        b.load(path)
        for x, y in zip(a.search(Q, 10), b.search(Q, 10)):
            np.testing.assert_array_equal(x, y)
        assert b.index_bytes() == a.index_bytes() >= X.nbytes
        assert path.stat().st_size > a.index_bytes()  # both of nmslib's files, packed into one
        # Saving a loaded index again: nmslib's own re-save of a loaded hnsw crashed its next query.
        b.save(tmp_path / "again.index")
        c = get_backend(*key)(metric, X.shape[1], **BUILD[key])
        c.set_search_params(ef=40)
        c.load(tmp_path / "again.index")
        for x, y in zip(a.search(Q, 10), c.search(Q, 10)):
            np.testing.assert_array_equal(x, y)


def test_nsw_cannot_be_saved(data, built, tmp_path):
    X, _ = data
    index = built[("nsw", "nmslib"), "euclidean"]
    with pytest.raises(InputError, match=r"nsw\[nmslib\]: cannot be saved: nmslib reloads a sw-graph with an "
                                         r"arbitrary entry point"):
        index.save(tmp_path / "nsw.index")
    assert not (tmp_path / "nsw.index").exists()
    assert index.index_bytes() >= X.nbytes  # nmslib's two files, written to a scratch folder
    with pytest.raises(InputError, match="cannot be loaded"):
        get_backend("nsw", "nmslib")("euclidean", X.shape[1]).load(tmp_path / "nsw.index")


def test_load_refuses_another_build(data, built, tmp_path):
    X, _ = data
    path = tmp_path / "hnsw.index"
    built[("hnsw", "nmslib"), "euclidean"].save(path)
    with pytest.raises(InputError, match=r"was built with M=16 \(not 8\)"):
        get_backend("hnsw", "nmslib")("euclidean", X.shape[1], M=8, ef_construction=100).load(path)
    with pytest.raises(InputError, match=r"metric='euclidean' \(not 'angular'\)"):
        get_backend("hnsw", "nmslib")("angular", X.shape[1], **BUILD[("hnsw", "nmslib")]).load(path)


@pytest.mark.parametrize("key", KEYS, ids=IDS)
def test_one_thread_builds_are_deterministic_and_search_threads_change_nothing(key, data):
    X, Q = data
    # Two builds in one process: nmslib's level generator lives on the building thread, so a build on the
    # caller's thread would differ from the one before it.
    first, second = make(key, "euclidean", X, search={"ef": 20}), make(key, "euclidean", X, search={"ef": 20})
    D1, I1 = first.search(Q, 10)
    D2, I2 = second.search(Q, 10)
    np.testing.assert_array_equal(I1, I2)
    np.testing.assert_array_equal(D1, D2)
    first.set_threads(2)
    D3, I3 = first.search(Q, 10)
    np.testing.assert_array_equal(I1, I3)
    np.testing.assert_array_equal(D1, D3)


@pytest.mark.parametrize("key", KEYS, ids=IDS)
def test_one_query_at_a_time_equals_the_batch(key, data, built):
    X, Q = data
    index = built[key, "ip"]
    index.set_search_params(ef=20)
    D, I = index.search(Q, 10)
    single = [index.search(Q[i : i + 1], 10) for i in range(len(Q))]
    np.testing.assert_array_equal(I, np.concatenate([s[1] for s in single]))
    np.testing.assert_array_equal(D, np.concatenate([s[0] for s in single]))


def test_caller_array_is_not_modified(data):
    X, _ = data
    Y = X[:200].copy()
    for key in KEYS:
        make(key, "angular", Y)
    np.testing.assert_array_equal(Y, X[:200])


@pytest.mark.parametrize(
    "key,params,match",
    [
        (("nsw", "nmslib"), {"NN": 10}, r"unknown build parameter 'NN'.*f: int in \[1, 4096\]"),
        (("nsw", "nmslib"), {"w": 2}, "unknown build parameter 'w'"),
        (("nsw", "nmslib"), {"f": 0}, "f=0 is out of range"),
        (("hnsw", "nmslib"), {"efConstruction": 40}, "unknown build parameter 'efConstruction'"),
        (("hnsw", "nmslib"), {"M": 1}, "M=1 is out of range"),
        (("hnsw", "nmslib"), {"ef_construction": "lots"}, "ef_construction='lots' is not an integer"),
    ],
)
def test_invalid_build_parameters(key, params, match):
    with pytest.raises(InputError, match=match):
        get_backend(*key)("euclidean", 8, **params)


@pytest.mark.parametrize("key", KEYS, ids=IDS)
def test_invalid_search_parameters(key):
    index = get_backend(*key)("euclidean", 8)
    with pytest.raises(InputError, match="ef=0 is out of range"):
        index.set_search_params(ef=0)
    with pytest.raises(InputError, match="unknown search parameter 'efSearch'"):
        index.set_search_params(efSearch=10)


def test_registry_keeps_the_defaults():
    assert list(implementations("hnsw"))[0] == "hnswlib" and "nmslib" in implementations("hnsw")
    assert list(implementations("nsw")) == ["numba", "nmslib"]


@pytest.mark.parametrize("key", KEYS, ids=IDS)
def test_wrong_dimension_is_refused(key, data, built):
    X, Q = data
    with pytest.raises(InputError, match=r"expected vectors of shape \(n, 8\)"):
        get_backend(*key)("euclidean", 8).build(X)
    # nmslib's hnsw would answer a shorter query from memory past its end
    with pytest.raises(InputError, match=r"expected queries of shape \(nq, 16\), got \(3, 8\)"):
        built[key, "euclidean"].search(Q[:3, :8].copy(), 5)


def test_cli_run_stores_ok_rows(small_set, tmp_path):
    store = tmp_path / "r.sqlite"
    args = ["run", "--dataset", small_set, "--backend", "hnsw:nmslib", "--backend", "nsw:nmslib",
            "--build", "hnsw:M=8", "--build", "nsw:f=8", "--search", "ef=5,40", "--runs", "1", "--mode", "both",
            "--in-process", "--results", store, "--quiet"]
    r = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(cli, ["results", "--results", str(store), "--format", "json"], catch_exceptions=False)
    rows = json.loads(r.output)
    assert len(rows) == 8  # 2 backends x ef 5 and 40 (ef < k is measured) x 2 modes
    assert {(row["backend"], row["impl"], row["status"]) for row in rows} == {("hnsw", "nmslib", "ok"),
                                                                          ("nsw", "nmslib", "ok")}
    assert all(row["index_bytes"] > 0 for row in rows)
    assert all(row["recall"] > 0.9 for row in rows if row["search_params"]["ef"] == 40)

