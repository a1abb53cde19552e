"""onng[ngt] against the exact oracle in every metric, and its contracts (save/load, padding, threads, CLI)."""

import gc
import json
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("ngtpy")

from click.testing import CliRunner  # noqa: E402

from ann_bench.backends import get_backend, implementations  # noqa: E402
from ann_bench.cli import cli  # noqa: E402
from ann_bench.distances import pairwise  # noqa: E402
from ann_bench.errors import InputError  # noqa: E402
from ann_bench.bench.metrics import check_no_duplicates, id_recall  # noqa: E402
from oracle import assert_matches_oracle  # noqa: E402 (tests/ is on sys.path)

BUILD = {"edge_size": 60, "outdegree": 10, "indegree": 60}
SEARCH = {"epsilon": 0.2, "search_edge_size": 0}


@pytest.fixture(scope="module")
def data():
    from ann_bench.data.vectorset import SynthSpec, synth_arrays

    train, test, _, _ = synth_arrays(SynthSpec(n=2000, dim=16, queries=100, clusters=10, seed=11))
    return train, test


def built(metric, X, threads=1, **override):
    index = get_backend("onng", "ngt")(metric, X.shape[1], threads=threads, **{**BUILD, **override})
    index.build(X)
    index.set_search_params(**SEARCH)
    return index


@pytest.fixture(scope="module")
def euclidean_index(data):
    return built("euclidean", data[0])


def test_registered():
    cls = implementations("onng")["ngt"]
    assert cls.label() == "onng[ngt]" and cls.requires == ("ngtpy",)
    assert cls.effort_params == {"epsilon": +1}


@pytest.mark.parametrize("metric,floor", [("euclidean", 0.99), ("angular", 0.99), ("ip", 0.99)])
def test_against_exact_oracle(metric, floor, data, euclidean_index):
    X, Q = data
    index = euclidean_index if metric == "euclidean" else built(metric, X)
    D, I = index.search(Q, 10)
    # Native L2 / sqrt(2 - 2 cos) / the L2 of NGT's extended vectors come back as L2, 1 - cos and -dot.
    assert (I >= 0).all()
    assert_matches_oracle(D, I, Q, X, metric, floor)


def test_hand_worked_distances():
    X = np.array([[3.0, 4.0], [1.0, 0.0], [0.0, 2.0]], dtype=np.float32)
    q = np.array([[1.0, 0.0]], dtype=np.float32)
    expected = {  # by hand: |q - x| ; 1 - cos ; -<q, x>
        "euclidean": ([1, 2, 0], [0.0, np.sqrt(5), np.sqrt(20)]),
        "angular": ([1, 0, 2], [0.0, 0.4, 1.0]),
        "ip": ([0, 1, 2], [-3.0, -1.0, 0.0]),
    }
    for metric, (ids, dists) in expected.items():
        D, I = built(metric, X).search(q, 3)
        np.testing.assert_array_equal(I, [ids])
        np.testing.assert_allclose(D, [dists], rtol=1e-5, atol=1e-5)


def test_ip_single_queries_equal_the_batch(data):
    """The extra column of D (|q|^2) travels with each row, so single-query results concatenate correctly."""
    X, Q = data
    index = built("ip", X[:500])
    D, I = index.convert(*index.query(Q[:20], 10))
    parts = [index.query(Q[i : i + 1], 10) for i in range(20)]
    D1, I1 = index.convert(np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
    np.testing.assert_array_equal(I, I1)
    np.testing.assert_allclose(D, D1, rtol=1e-6)


def test_larger_epsilon_does_not_recall_less(data, euclidean_index):
    X, Q = data
    true_I = np.argsort(pairwise("euclidean", Q, X), axis=1, kind="stable")[:, :10]
    recalls = []
    for epsilon in (-0.4, 0.0, 0.2):
        euclidean_index.set_search_params(epsilon=epsilon, search_edge_size=-2)
        recalls.append(id_recall(euclidean_index.search(Q, 10)[1], true_I, 10).mean())
    euclidean_index.set_search_params(**SEARCH)
    assert recalls[0] < recalls[2] and recalls == sorted(recalls)


def test_save_load_gives_identical_results(data, tmp_path):
    X, Q = data
    a = built("angular", X)
    a.save(tmp_path / "index.bin")
    b = get_backend("onng", "ngt")("angular", X.shape[1], **BUILD)
    b.set_search_params(**SEARCH)
    b.load(tmp_path / "index.bin")
    for x, y in zip(a.search(Q, 10), b.search(Q, 10)):
        np.testing.assert_array_equal(x, y)
    assert a.index_bytes() == b.index_bytes() == (tmp_path / "index.bin").stat().st_size
    assert a.index_bytes() >= X.nbytes
    # One tar, deterministic: saving again gives the same bytes.
    b.save(tmp_path / "again.bin")
    assert (tmp_path / "again.bin").read_bytes() == (tmp_path / "index.bin").read_bytes()


def test_load_refuses_another_build_and_other_files(data, tmp_path):
    X, _ = data
    built("euclidean", X[:200]).save(tmp_path / "index.bin")
    other = get_backend("onng", "ngt")("euclidean", X.shape[1], **{**BUILD, "outdegree": 20})
    with pytest.raises(InputError, match=r"was built with outdegree=10 \(not 20\)"):
        other.load(tmp_path / "index.bin")
    with pytest.raises(InputError, match=r"was built with metric='euclidean' \(not 'ip'\)"):
        get_backend("onng", "ngt")("ip", X.shape[1], **BUILD).load(tmp_path / "index.bin")
    (tmp_path / "junk.bin").write_bytes(b"not a tar file at all")
    with pytest.raises(InputError, match="is not an onng\\[ngt\\] index saved by ann-bench"):
        get_backend("onng", "ngt")("euclidean", X.shape[1], **BUILD).load(tmp_path / "junk.bin")


def test_temporary_directory_lives_with_the_index(data):
    X, _ = data
    index = built("euclidean", X[:200])
    work = index._dir.path
    assert (work / "onng" / "grp").is_file()
    index.close()
    assert not work.exists()
    index = built("euclidean", X[:200])
    work = index._dir.path
    del index
    gc.collect()
    assert not work.exists()


def test_padding_when_k_exceeds_n(data):
    X, Q = data
    index = built("euclidean", X[:50])
    D, I = index.search(Q[:7], 60)
    assert D.shape == I.shape == (7, 60)
    assert (I[:, :50] >= 0).all() and (I[:, 50:] == -1).all()
    assert np.isinf(D[:, 50:]).all() and np.isfinite(D[:, :50]).all()
    check_no_duplicates(I)


def test_threads_give_the_same_graph_and_answers(data, euclidean_index):
    X, Q = data
    D1, I1 = euclidean_index.search(Q, 10)
    euclidean_index.set_threads(2)
    D2, I2 = euclidean_index.search(Q, 10)
    euclidean_index.set_threads(1)
    np.testing.assert_array_equal(I1, I2)
    np.testing.assert_array_equal(D1, D2)
    # NGT has no seed; its build measured deterministic for 1 and 2 threads.
    two = built("euclidean", X, threads=2)
    np.testing.assert_array_equal(two.search(Q, 10)[1], I1)


@pytest.mark.parametrize(
    "params,match",
    [
        ({"edges": 10}, r"unknown build parameter 'edges'.*edge_size: int in \[1, 1000\]"),
        ({"outdegree": 0}, "outdegree=0 is out of range"),
        ({"indegree": -1}, "indegree=-1 is out of range"),
        ({"edge_size": "many"}, "edge_size='many' is not an integer"),
    ],
)
def test_invalid_build_parameters(params, match):
    with pytest.raises(InputError, match=match):
        get_backend("onng", "ngt")("euclidean", 8, **params)


@pytest.mark.parametrize(
    "params,match",
    [
        ({"epsilon": -1.0}, r"epsilon=-1.0 is out of range; epsilon: float in \[-0.99, 10\]"),
        ({"search_edge_size": -3}, "search_edge_size=-3 is out of range"),
        ({"ef": 10}, "unknown search parameter 'ef'"),
    ],
)
def test_invalid_search_parameters(params, match):
    with pytest.raises(InputError, match=match):
        get_backend("onng", "ngt")("euclidean", 8).set_search_params(**params)


def test_skip_reason_for_the_index_default_edge_size():
    index = get_backend("onng", "ngt")("euclidean", 8)
    assert "the search of search_edge_size=0" in index.search_skip_reason({"epsilon": 0.1, "search_edge_size": -1}, 10)
    assert index.search_skip_reason({"epsilon": 0.1, "search_edge_size": -2}, 10) is None


def test_wrong_query_dimension_is_refused(euclidean_index, data):
    _, Q = data
    with pytest.raises(InputError, match=r"expected vectors of shape \(n, 16\)"):
        euclidean_index.search(Q[:, :8].copy(), 10)


def test_module_imports_with_numpy_only():
    code = "import sys, ann_bench.backends.ngt\nprint('ngtpy' in sys.modules)\n"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_cli_run_stores_ok_rows(small_set, tmp_path):
    store = tmp_path / "r.sqlite"
    args = ["run", "--dataset", small_set, "--backend", "onng:ngt", "--build", "edge_size=20",
            "--build", "indegree=20", "--search", "epsilon=0,0.1", "--runs", "1", "--mode", "both",
            "--in-process", "--results", store, "--quiet"]
    r = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(cli, ["results", "--results", str(store), "--format", "json"], catch_exceptions=False)
    rows = json.loads(r.output)
    assert len(rows) == 4  # epsilon 0 and 0.1 x 2 modes
    assert {(row["backend"], row["impl"], row["status"]) for row in rows} == {("onng", "ngt", "ok")}
    assert all(row["recall"] > 0.9 and row["index_bytes"] > 0 for row in rows)


def test_zero_vectors_under_angular_are_refused_not_fatal(data):
    """NGT cannot normalise a zero vector: a zero query inside batch_search aborted the process (measured)."""
    X, Q = data
    Xz = X[:200].copy()
    Xz[7] = 0
    with pytest.raises(InputError, match="vector 7 is all zeros, which has no angle"):
        get_backend("onng", "ngt")("angular", X.shape[1], **BUILD).build(Xz)
    index = built("angular", X[:200])
    Qz = Q[:5].copy()
    Qz[3] = 0
    with pytest.raises(InputError, match="query 3 is all zeros"):
        index.search(Qz, 10)
    assert index.search(Q[:5], 10)[1].shape == (5, 10)  # still usable
