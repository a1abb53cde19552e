"""hnsw[usearch] against the exact oracle in every metric and storage dtype, and its contracts."""

import json

import numpy as np
import pytest

pytest.importorskip("usearch")

from click.testing import CliRunner  # noqa: E402

from ann_bench.backends import get_backend, implementations  # noqa: E402
from ann_bench.cli import cli  # noqa: E402
from ann_bench.distances import pairwise  # noqa: E402
from ann_bench.errors import InputError  # noqa: E402
from ann_bench.bench.metrics import check_no_duplicates, id_recall  # noqa: E402
from oracle import assert_matches_oracle  # noqa: E402

BUILD = {"M": 16, "ef_construction": 100}
SEARCH = {"ef": 200}



def built(metric, X, threads=1, seed=0, **override):
    index = get_backend("hnsw", "usearch")(metric, X.shape[1], threads=threads, seed=seed, **{**BUILD, **override})
    index.build(X)
    index.set_search_params(**SEARCH)
    return index


def test_registered_as_an_hnsw_implementation():
    cls = implementations("hnsw")["usearch"]
    assert cls.label() == "hnsw[usearch]" and cls.requires == ("usearch",)
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


@pytest.mark.parametrize("metric,dtype,floor", [("euclidean", "f16", 0.99), ("angular", "f16", 0.99),
                                                ("ip", "f16", 0.98), ("angular", "i8", 0.9)])
def test_reduced_precision_storage(metric, dtype, floor, data):
    """f16 and i8 shrink the index and stay near the oracle; their distances are between rounded vectors."""
    X, Q = data
    full, small = built(metric, X), built(metric, X, dtype=dtype)
    D, I = small.search(Q, 10)
    check_no_duplicates(I)
    exact = pairwise(metric, Q, X)
    assert id_recall(I, np.argsort(exact, axis=1, kind="stable")[:, :10], 10).mean() >= floor
    tol = 2e-3 if dtype == "f16" else 2e-2
    np.testing.assert_allclose(D, np.take_along_axis(exact, I, axis=1), rtol=tol, atol=tol)
    vector_bytes = {"f16": 2, "i8": 3}[dtype] * X.size  # f32 -> f16 saves 2 bytes a component, -> i8 3
    assert full.index_bytes() - small.index_bytes() == vector_bytes


@pytest.mark.parametrize("metric", ["euclidean", "ip"])
def test_i8_is_refused_where_it_would_rank_by_direction(metric):
    with pytest.raises(InputError, match=r"dtype=i8 normalises every vector.*use dtype=f16"):
        get_backend("hnsw", "usearch")(metric, 8, dtype="i8")


def test_i8_keeps_directions_only():
    """The measured reason i8 is angular only: usearch normalises before quantising, so [0.5, 0] and [2, 0]
    become the same stored vector (a euclidean index would find them equally near the origin)."""
    from usearch.index import Index

    index = Index(ndim=2, metric="l2sq", dtype="i8")
    index.add(np.arange(3), np.array([[0.5, 0.0], [2.0, 0.0], [0.0, 0.25]], dtype=np.float32))
    stored = index.get(np.arange(3), dtype="i8")
    np.testing.assert_array_equal(np.stack(stored), [[127, 0], [127, 0], [0, 127]])


def test_padding_when_k_exceeds_n(data):
    X, Q = data
    index = built("euclidean", X[:50])
    for queries in (Q[:7], Q[:1]):  # a batch, and one query (which usearch answers with 1-d arrays)
        D, I = index.search(queries, 60)
        assert D.shape == I.shape == (len(queries), 60)
        assert (I[:, :50] >= 0).all() and (I[:, 50:] == -1).all()
        assert np.isinf(D[:, 50:]).all() and np.isfinite(D[:, :50]).all()
        check_no_duplicates(I)


def test_one_query_at_a_time_equals_the_batch(data):
    X, Q = data
    index = built("angular", X)
    index.set_search_params(ef=20)
    D, I = index.search(Q, 10)
    single = [index.search(Q[i : i + 1], 10) for i in range(len(Q))]
    np.testing.assert_array_equal(I, np.concatenate([s[1] for s in single]))
    np.testing.assert_array_equal(D, np.concatenate([s[0] for s in single]))


@pytest.mark.parametrize("dtype", ["f32", "f16"])
def test_save_load_gives_identical_results(dtype, data, tmp_path):
    X, Q = data
    a = built("euclidean", X, dtype=dtype)
    a.save(tmp_path / "index.bin")
    assert [p.name for p in tmp_path.iterdir()] == ["index.bin"]
    assert a.index_bytes() == (tmp_path / "index.bin").stat().st_size > X.shape[0] * 2
    b = get_backend("hnsw", "usearch")("euclidean", X.shape[1], **BUILD, dtype=dtype)
    b.set_search_params(**SEARCH)
    b.load(tmp_path / "index.bin")
    for x, y in zip(a.search(Q, 10), b.search(Q, 10)):
        np.testing.assert_array_equal(x, y)
    b.set_search_params(ef=10)  # the search setting is applied to a loaded index, not read from the file
    a.set_search_params(ef=10)
    np.testing.assert_array_equal(a.search(Q, 10)[1], b.search(Q, 10)[1])


def test_load_refuses_another_build_and_a_missing_file(data, tmp_path):
    X, _ = data
    built("euclidean", X[:100]).save(tmp_path / "u.bin")
    other = get_backend("hnsw", "usearch")("euclidean", X.shape[1], M=8)
    with pytest.raises(InputError, match=r"was built with M=16 \(not 8\)"):
        other.load(tmp_path / "u.bin")
    half = get_backend("hnsw", "usearch")("euclidean", X.shape[1], **BUILD, dtype="f16")
    with pytest.raises(InputError, match=r"was built with dtype=f32 \(not f16\)"):
        half.load(tmp_path / "u.bin")
    with pytest.raises(InputError, match="cannot open"):
        other.load(tmp_path / "missing.bin")


def test_threads_do_not_change_search_and_one_thread_builds_are_reproducible(data):
    X, Q = data
    one = built("euclidean", X)
    one.set_search_params(ef=40)
    D1, I1 = one.search(Q, 10)
    one.set_threads(2)
    D2, I2 = one.search(Q, 10)
    np.testing.assert_array_equal(I1, I2)
    np.testing.assert_array_equal(D1, D2)
    again = built("euclidean", X, seed=99)  # usearch has no seed: the one-thread graph is the same
    again.set_search_params(ef=40)
    np.testing.assert_array_equal(again.search(Q, 10)[1], I1)


def test_ef_below_k_is_ef_equal_k_and_skipped(data):
    X, Q = data
    index = built("euclidean", X, M=4, ef_construction=16)
    results = []
    for ef in (1, 5, 10):
        index.set_search_params(ef=ef)
        results.append(index.search(Q, 10)[1])
    np.testing.assert_array_equal(results[0], results[2])
    np.testing.assert_array_equal(results[1], results[2])
    assert "usearch searches with ef=k" in index.search_skip_reason({"ef": 5}, 10)
    assert index.search_skip_reason({"ef": 10}, 10) is None
    cls = type(index)
    assert cls.costlier({"ef": 10}, {"ef": 20}) and not cls.costlier({"ef": 20}, {"ef": 10})


def test_the_callers_array_is_left_alone(data):
    X, Q = data
    X0, Q0 = X.copy(), Q.copy()
    built("angular", X, dtype="i8").search(Q, 10)
    np.testing.assert_array_equal(X, X0)
    np.testing.assert_array_equal(Q, Q0)


def test_parameter_validation_lists_valid_values():
    cls = get_backend("hnsw", "usearch")
    with pytest.raises(InputError, match=r"dtype='f64' is not allowed; dtype: str one of f32, f16, i8"):
        cls("euclidean", 8, dtype="f64")
    with pytest.raises(InputError, match=r"M=1 is out of range; M: int in \[2, 512\]"):
        cls("euclidean", 8, M=1)
    with pytest.raises(InputError, match=r"unknown build parameter 'connectivity'.*M: int"):
        cls("euclidean", 8, connectivity=16)  # the other hnsw implementations' name, M, is the one
    with pytest.raises(InputError, match=r"unknown search parameter 'expansion_search'.*ef: int"):
        cls("euclidean", 8).set_search_params(expansion_search=10)
    with pytest.raises(InputError, match="expected vectors of shape"):
        cls("euclidean", 8).build(np.zeros((10, 4), dtype=np.float32))


def test_cli_run_stores_ok_rows(small_set, tmp_path):
    store = tmp_path / "r.sqlite"
    args = ["run", "--dataset", small_set, "--backend", "hnsw:usearch", "--build", "M=8",
            "--build", "dtype=f32,f16", "--search", "ef=5,20", "--runs", "1", "--mode", "both", "--in-process",
            "--results", store, "--quiet"]
    r = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(cli, ["results", "--results", str(store), "--format", "json"], catch_exceptions=False)
    rows = json.loads(r.output)
    assert len(rows) == 4  # 2 dtypes x ef=20 x 2 modes; ef=5 < k is skipped
    assert {(row["impl"], row["status"]) for row in rows} == {("usearch", "ok")}
    assert {row["build_params"]["dtype"] for row in rows} == {"f32", "f16"}
    assert all(row["recall"] > 0.9 and row["index_bytes"] > 0 for row in rows)
