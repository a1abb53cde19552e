"""hnsw[voyager] against the exact oracle in every metric and storage type, and its contracts."""

import json

import numpy as np
import pytest

pytest.importorskip("voyager")

from click.testing import CliRunner  # noqa: E402

from ann_bench.backends import get_backend, implementations  # noqa: E402
from ann_bench.cli import cli  # noqa: E402
from ann_bench.distances import normalized, pairwise  # noqa: E402
from ann_bench.errors import InputError  # noqa: E402
from ann_bench.bench.metrics import check_no_duplicates, id_recall  # noqa: E402
from oracle import assert_matches_oracle  # noqa: E402

BUILD = {"M": 16, "ef_construction": 100}
SEARCH = {"ef": 200}



def built(metric, X, threads=1, seed=0, **override):
    index = get_backend("hnsw", "voyager")(metric, X.shape[1], threads=threads, seed=seed, **{**BUILD, **override})
    index.build(X)
    index.set_search_params(**SEARCH)
    return index


def test_registered_as_an_hnsw_implementation():
    cls = implementations("hnsw")["voyager"]
    assert cls.label() == "hnsw[voyager]" and cls.requires == ("voyager",)
    assert next(iter(implementations("hnsw"))) == "hnswlib"  # still the default


@pytest.mark.parametrize("metric,floor", [("euclidean", 0.99), ("angular", 0.99), ("ip", 0.98)])
def test_against_exact_oracle(metric, floor, data):
    X, Q = data
    D, I = built(metric, X).search(Q, 10)
    assert (I >= 0).all()
    assert_matches_oracle(D, I, Q, X, metric, floor)  # native distances come back in the set's metric


def test_hand_worked_distances():
    X = np.array([[3.0, 4.0], [1.0, 0.0], [0.0, 2.0]], dtype=np.float32)
    q = np.array([[1.0, 0.0]], dtype=np.float32)
    expected = {  # by hand: |q - x| ; 1 - cos ; -<q, x>
        "euclidean": ([1, 2, 0], [0.0, np.sqrt(5), np.sqrt(20)]),
        "angular": ([1, 0, 2], [0.0, 0.4, 1.0]),
        "ip": ([0, 1, 2], [-3.0, -1.0, 0.0]),
    }
    for metric, (ids, dists) in expected.items():
        index = built(metric, X)
        D, I = index.search(q, 3)
        np.testing.assert_array_equal(I, [ids])
        np.testing.assert_allclose(D, [dists], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("metric,storage,floor,tol", [("euclidean", "E4M3", 0.85, 0.1), ("angular", "E4M3", 0.6, 0.1),
                                                      ("angular", "Float8", 0.85, 0.05)])
def test_reduced_precision_storage(metric, storage, floor, tol, data):
    """E4M3 and Float8 store a byte a component: a smaller index, distances between rounded vectors."""
    X, Q = data
    full, small = built(metric, X), built(metric, X, storage_data_type=storage)
    D, I = small.search(Q, 10)
    check_no_duplicates(I)
    exact = pairwise(metric, Q, X)
    assert id_recall(I, np.argsort(exact, axis=1, kind="stable")[:, :10], 10).mean() >= floor
    np.testing.assert_allclose(D, np.take_along_axis(exact, I, axis=1), rtol=tol, atol=tol)
    assert full.index_bytes() - small.index_bytes() == 3 * X.size  # 4 bytes a component -> 1


def test_float8_needs_values_in_unit_range(data):
    X, Q = data
    assert np.abs(X).max() > 1
    with pytest.raises(InputError, match=r"storage_data_type=Float8 cannot store these vectors.*outside of"):
        built("euclidean", X, storage_data_type="Float8")
    scaled = X / np.abs(X).max()  # inside [-1, 1]: accepted, and near the oracle
    D, I = built("euclidean", scaled, storage_data_type="Float8").search(Q / np.abs(X).max(), 10)
    exact = pairwise("euclidean", Q / np.abs(X).max(), scaled)
    assert id_recall(I, np.argsort(exact, axis=1, kind="stable")[:, :10], 10).mean() >= 0.8


def test_padding_when_k_exceeds_n(data):
    """Voyager raises RecallError for k > n; the backend asks for n and pads."""
    X, Q = data
    index = built("euclidean", X[:50])
    for queries in (Q[:7], Q[:1]):
        D, I = index.search(queries, 60)
        assert D.shape == I.shape == (len(queries), 60)
        assert (I[:, :50] >= 0).all() and (I[:, 50:] == -1).all()
        assert np.isinf(D[:, 50:]).all() and np.isfinite(D[:, :50]).all()
        check_no_duplicates(I)
        exact = pairwise("euclidean", queries, X[:50])
        np.testing.assert_allclose(D[:, :50], np.sort(exact, axis=1), rtol=1e-4, atol=2e-4)


def test_one_query_at_a_time_equals_the_batch(data):
    X, Q = data
    index = built("ip", X)
    index.set_search_params(ef=20)
    D, I = index.search(Q, 10)
    single = [index.search(Q[i : i + 1], 10) for i in range(len(Q))]
    np.testing.assert_array_equal(I, np.concatenate([s[1] for s in single]))
    np.testing.assert_array_equal(D, np.concatenate([s[0] for s in single]))


@pytest.mark.parametrize("metric,storage", [("angular", "Float32"), ("euclidean", "E4M3")])
def test_save_load_gives_identical_results(metric, storage, data, tmp_path):
    X, Q = data
    a = built(metric, X, storage_data_type=storage)
    a.save(tmp_path / "index.bin")
    assert [p.name for p in tmp_path.iterdir()] == ["index.bin"]
    assert a.index_bytes() == (tmp_path / "index.bin").stat().st_size > X.shape[0] * X.shape[1]
    b = get_backend("hnsw", "voyager")(metric, X.shape[1], **BUILD, storage_data_type=storage)
    b.set_search_params(**SEARCH)
    b.load(tmp_path / "index.bin")
    for x, y in zip(a.search(Q, 10), b.search(Q, 10)):
        np.testing.assert_array_equal(x, y)
    assert b.search(Q[:2], 3001)[1][:, 3000].tolist() == [-1, -1]  # n is known after a load


def test_load_refuses_another_build(data, tmp_path):
    X, _ = data
    built("euclidean", X[:100]).save(tmp_path / "v.bin")
    cls = get_backend("hnsw", "voyager")
    with pytest.raises(InputError, match=r"was built with M=16 \(not 8\)"):
        cls("euclidean", X.shape[1], M=8, ef_construction=100).load(tmp_path / "v.bin")
    with pytest.raises(InputError, match=r"was built with metric space=Euclidean \(not Cosine\)"):
        cls("angular", X.shape[1], **BUILD).load(tmp_path / "v.bin")
    with pytest.raises(InputError, match=r"was built with storage_data_type=Float32 \(not E4M3\)"):
        cls("euclidean", X.shape[1], **BUILD, storage_data_type="E4M3").load(tmp_path / "v.bin")


def test_threads_do_not_change_search(data):
    X, Q = data
    one = built("euclidean", X)
    one.set_search_params(ef=40)
    D1, I1 = one.search(Q, 10)
    one.set_threads(2)
    D2, I2 = one.search(Q, 10)
    np.testing.assert_array_equal(I1, I2)
    np.testing.assert_array_equal(D1, D2)


def test_one_thread_build_follows_the_seed(data):
    X, _ = data

    def stored(seed):
        index = built("euclidean", X, seed=seed, M=4, ef_construction=16)
        return index.index.as_bytes()

    assert stored(3) == stored(3)
    assert stored(3) != stored(4)


def test_ef_below_k_is_refused_by_voyager_and_skipped(data):
    X, Q = data
    index = built("euclidean", X[:200])
    index.set_search_params(ef=5)
    with pytest.raises(RuntimeError, match="queryEf must be equal to or greater"):
        index.search(Q, 10)
    assert "voyager refuses query_ef < k" in index.search_skip_reason({"ef": 5}, 10)
    assert index.search_skip_reason({"ef": 10}, 10) is None
    cls = type(index)
    assert cls.costlier({"ef": 10}, {"ef": 20}) and not cls.costlier({"ef": 20}, {"ef": 10})


def test_the_callers_array_is_left_alone(data):
    X, Q = data
    X0, Q0 = X.copy(), Q.copy()
    index = built("angular", X)
    index.search(Q, 10)
    np.testing.assert_array_equal(X, X0)
    np.testing.assert_array_equal(Q, Q0)
    np.testing.assert_allclose(index.index.get_vector(0), normalized(X[:1])[0], rtol=1e-6)  # its own copy


def test_parameter_validation_lists_valid_values():
    cls = get_backend("hnsw", "voyager")
    with pytest.raises(InputError, match=r"storage_data_type='float16' is not allowed; .*one of Float32, E4M3, "
                                         r"Float8"):
        cls("euclidean", 8, storage_data_type="float16")
    with pytest.raises(InputError, match=r"M=1 is out of range; M: int in \[2, 512\]"):
        cls("euclidean", 8, M=1)
    with pytest.raises(InputError, match=r"unknown search parameter 'query_ef'.*ef: int"):
        cls("euclidean", 8).set_search_params(query_ef=10)
    with pytest.raises(InputError, match=r"expected vectors of shape \(n >= 1, 8\)"):
        cls("euclidean", 8).build(np.zeros((0, 8), dtype=np.float32))  # voyager itself crashes on this


def test_cli_run_stores_ok_rows(small_set, tmp_path):
    store = tmp_path / "r.sqlite"
    args = ["run", "--dataset", small_set, "--backend", "hnsw:voyager", "--build", "M=8",
            "--build", "storage_data_type=Float32,E4M3", "--search", "ef=5,20", "--runs", "1", "--mode", "both",
            "--in-process", "--results", store, "--quiet"]
    r = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(cli, ["results", "--results", str(store), "--format", "json"], catch_exceptions=False)
    rows = json.loads(r.output)
    assert len(rows) == 4  # 2 storage types x ef=20 x 2 modes; ef=5 < k is skipped
    assert {(row["impl"], row["status"]) for row in rows} == {("voyager", "ok")}
    assert {row["build_params"]["storage_data_type"] for row in rows} == {"Float32", "E4M3"}
    assert all(row["recall"] > 0.8 and row["index_bytes"] > 0 for row in rows)
