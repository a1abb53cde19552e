"""vamana[diskannpy] against the exact oracle in every metric, and its contracts (save/load, padding, threads,
the scratch reload per complexity, CLI)."""

import gc
import json
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("diskannpy")

from click.testing import CliRunner  # noqa: E402

from ann_bench.backends import get_backend, implementations  # noqa: E402
from ann_bench.cli import cli  # noqa: E402
from ann_bench.distances import pairwise  # noqa: E402
from ann_bench.errors import InputError  # noqa: E402
from ann_bench.bench.metrics import check_no_duplicates, id_recall  # noqa: E402
from oracle import assert_matches_oracle  # noqa: E402 (tests/ is on sys.path)

BUILD = {"graph_degree": 32, "build_complexity": 64, "alpha": 1.2}
SEARCH = {"complexity": 64}


@pytest.fixture(scope="module")
def data():
    from ann_bench.data.vectorset import SynthSpec, synth_arrays

    train, test, _, _ = synth_arrays(SynthSpec(n=2000, dim=16, queries=100, clusters=10, seed=11))
    return train, test


def built(metric, X, threads=1, **override):
    index = get_backend("vamana", "diskannpy")(metric, X.shape[1], threads=threads, **{**BUILD, **override})
    index.build(X)
    index.set_search_params(**SEARCH)
    return index


@pytest.fixture(scope="module")
def euclidean_index(data):
    return built("euclidean", data[0])


def test_registered():
    cls = implementations("vamana")["diskannpy"]
    assert cls.label() == "vamana[diskannpy]" and cls.requires == ("diskannpy",)
    assert cls.effort_params == {"complexity": +1}


@pytest.mark.parametrize("metric", ["euclidean", "angular", "ip"])
def test_against_exact_oracle(metric, data, euclidean_index):
    X, Q = data
    index = euclidean_index if metric == "euclidean" else built(metric, X)
    D, I = index.search(Q, 10)
    # Native squared L2 / 1 - cos of a normalised query / dot come back as L2, 1 - cos and -dot.
    assert (I >= 0).all()
    assert_matches_oracle(D, I, Q, X, metric, 0.99)


def test_hand_worked_distances():
    X = np.array([[3.0, 4.0], [1.0, 0.0], [0.0, 2.0]], dtype=np.float32)
    q = np.array([[1.0, 0.0]], dtype=np.float32)
    expected = {  # by hand: |q - x| ; 1 - cos ; -<q, x>
        "euclidean": ([1, 2, 0], [0.0, np.sqrt(5), np.sqrt(20)]),
        "angular": ([1, 0, 2], [0.0, 0.4, 1.0]),
        "ip": ([0, 1, 2], [-3.0, -1.0, 0.0]),
    }
    for metric, (ids, dists) in expected.items():
        D, I = built(metric, X, graph_degree=4, build_complexity=8).search(q, 3)
        np.testing.assert_array_equal(I, [ids])
        np.testing.assert_allclose(D, [dists], rtol=1e-5, atol=1e-5)
    # A query of norm 5 in the same direction: angular distances do not depend on the query's norm.
    D, _ = built("angular", X, graph_degree=4, build_complexity=8).search(5 * q, 3)
    np.testing.assert_allclose(D, [[0.0, 0.4, 1.0]], rtol=1e-5, atol=1e-5)


def test_index_is_reloaded_for_each_complexity(data, euclidean_index, capfd):
    """The search scratch is sized by the complexity the index was loaded with (and cleared per query), so a
    new complexity reloads the index: results equal those of an index loaded for that complexity alone."""
    X, Q = data
    index = euclidean_index
    capfd.readouterr()
    for complexity in (10, 200, 40):
        index.set_search_params(complexity=complexity)
        assert index._loaded_complexity == complexity
        D, I = index.search(Q, 10)
        fresh = get_backend("vamana", "diskannpy")("euclidean", X.shape[1], **BUILD)
        fresh._dir, fresh._n = index._dir, index._n
        fresh._open(complexity)
        fresh.set_search_params(complexity=complexity)
        D2, I2 = fresh.search(Q, 10)
        fresh._dir = None  # shared with `index`: not fresh's to remove
        np.testing.assert_array_equal(I, I2)
        np.testing.assert_array_equal(D, D2)
    out = capfd.readouterr()
    assert "scratch" not in out.out + out.err  # DiskANN's "Attempting to expand query scratch_space" never
    index.set_search_params(**SEARCH)


def test_more_complexity_does_not_recall_less(data, euclidean_index):
    X, Q = data
    true_I = np.argsort(pairwise("euclidean", Q, X), axis=1, kind="stable")[:, :10]
    recalls = []
    for complexity in (10, 20, 80):
        euclidean_index.set_search_params(complexity=complexity)
        recalls.append(id_recall(euclidean_index.search(Q, 10)[1], true_I, 10).mean())
    euclidean_index.set_search_params(**SEARCH)
    assert recalls == sorted(recalls)


def test_build_and_load_print_nothing(data, capfd):
    X, _ = data
    capfd.readouterr()
    built("euclidean", X[:300])
    out = capfd.readouterr()
    assert out.out == "" and out.err == ""


def test_save_load_gives_identical_results(data, tmp_path):
    X, Q = data
    a = built("angular", X)
    a.save(tmp_path / "index.bin")
    b = get_backend("vamana", "diskannpy")("angular", X.shape[1], **BUILD)
    b.set_search_params(**SEARCH)
    b.load(tmp_path / "index.bin")
    for x, y in zip(a.search(Q, 10), b.search(Q, 10)):
        np.testing.assert_array_equal(x, y)
    assert a.index_bytes() == b.index_bytes() == (tmp_path / "index.bin").stat().st_size
    assert a.index_bytes() >= X.nbytes
    b.save(tmp_path / "again.bin")
    assert (tmp_path / "again.bin").read_bytes() == (tmp_path / "index.bin").read_bytes()
    # diskannpy's own copy of the input vectors is not part of the index.
    assert sorted(p.name for p in a._dir.path.iterdir()) == ["ann", "ann.data", "ann_metadata.bin"]


def test_load_refuses_another_build_and_other_files(data, tmp_path):
    X, _ = data
    built("euclidean", X[:200]).save(tmp_path / "index.bin")
    other = get_backend("vamana", "diskannpy")("euclidean", X.shape[1], **{**BUILD, "alpha": 1.0})
    with pytest.raises(InputError, match=r"was built with alpha=1.2 \(not 1.0\)"):
        other.load(tmp_path / "index.bin")
    with pytest.raises(InputError, match=r"was built with dim=16 \(not 8\)"):
        get_backend("vamana", "diskannpy")("euclidean", 8, **BUILD).load(tmp_path / "index.bin")
    (tmp_path / "junk.bin").write_bytes(b"not a tar file at all")
    with pytest.raises(InputError, match=r"is not a vamana\[diskannpy\] index saved by ann-bench"):
        get_backend("vamana", "diskannpy")("euclidean", X.shape[1], **BUILD).load(tmp_path / "junk.bin")


def test_temporary_directory_lives_with_the_index(data):
    X, _ = data
    index = built("euclidean", X[:200])
    work = index._dir.path
    assert (work / "ann").is_file()
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


def test_threads_give_the_same_answers(data, euclidean_index):
    X, Q = data
    D1, I1 = euclidean_index.search(Q, 10)
    euclidean_index.set_threads(2)
    D2, I2 = euclidean_index.search(Q, 10)
    euclidean_index.set_threads(1)
    np.testing.assert_array_equal(I1, I2)
    np.testing.assert_array_equal(D1, D2)
    # No seed in diskannpy; one build thread gives the same graph every time.
    again = built("euclidean", X)
    np.testing.assert_array_equal(again.search(Q, 10)[1], I1)


def test_skip_reason_for_complexity_below_k():
    index = get_backend("vamana", "diskannpy")("euclidean", 8)
    assert "diskannpy searches with complexity=k" in index.search_skip_reason({"complexity": 5}, 10)
    assert index.search_skip_reason({"complexity": 10}, 10) is None


@pytest.mark.parametrize(
    "params,match",
    [
        ({"R": 32}, r"unknown build parameter 'R'.*graph_degree: int in \[1, 4096\]"),
        ({"graph_degree": 0}, "graph_degree=0 is out of range"),
        ({"alpha": 0.9}, r"alpha=0.9 is out of range; alpha: float in \[1, 10\]"),
        ({"build_complexity": "big"}, "build_complexity='big' is not an integer"),
    ],
)
def test_invalid_build_parameters(params, match):
    with pytest.raises(InputError, match=match):
        get_backend("vamana", "diskannpy")("euclidean", 8, **params)


@pytest.mark.parametrize(
    "params,match",
    [({"complexity": 0}, "complexity=0 is out of range"), ({"L": 10}, "unknown search parameter 'L'")],
)
def test_invalid_search_parameters(params, match):
    with pytest.raises(InputError, match=match):
        get_backend("vamana", "diskannpy")("euclidean", 8).set_search_params(**params)


def test_one_vector_is_refused():
    cls = get_backend("vamana", "diskannpy")
    with pytest.raises(InputError, match="needs at least 2 vectors, got 1"):
        cls.check_data(cls.validate_build_params({}), 1, 8)
    with pytest.raises(InputError, match="needs at least 2 vectors, got 1"):
        cls("euclidean", 8).build(np.ones((1, 8), dtype=np.float32))


def test_wrong_query_dimension_is_refused(euclidean_index, data):
    _, Q = data
    with pytest.raises(InputError, match=r"expected vectors of shape \(n, 16\)"):
        euclidean_index.search(Q[:, :8].copy(), 10)


def test_module_imports_with_numpy_only():
    code = "import sys, ann_bench.backends.diskann\nprint('diskannpy' in sys.modules)\n"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_cli_run_stores_ok_rows(small_set, tmp_path):
    store = tmp_path / "r.sqlite"
    args = ["run", "--dataset", small_set, "--backend", "vamana:diskannpy", "--build", "graph_degree=16",
            "--build", "build_complexity=32", "--search", "complexity=5,20,40", "--runs", "1", "--mode", "both",
            "--in-process", "--results", store, "--quiet"]
    r = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(cli, ["results", "--results", str(store), "--format", "json"], catch_exceptions=False)
    rows = json.loads(r.output)
    assert len(rows) == 4  # complexity 20 and 40 x 2 modes; 5 < k is skipped
    assert {(row["backend"], row["impl"], row["status"]) for row in rows} == {("vamana", "diskannpy", "ok")}
    assert all(row["recall"] > 0.9 and row["index_bytes"] > 0 for row in rows)


def test_zero_vectors_under_angular_match_the_oracle(data):
    """A zero query (normalised to zero) is at 1 - cos = 1 from everything, as ann_bench.distances has it."""
    X, Q = data
    Xz, Qz = X[:300].copy(), Q[:3].copy()
    Xz[5], Qz[1] = 0, 0
    D, I = built("angular", Xz, graph_degree=16, build_complexity=32).search(Qz, 5)
    np.testing.assert_allclose(D, np.take_along_axis(pairwise("angular", Qz, Xz), I, axis=1), rtol=1e-4, atol=2e-4)
    np.testing.assert_allclose(D[1], 1.0)
