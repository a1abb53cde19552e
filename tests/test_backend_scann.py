"""scann[scann]: Google ScaNN against brute force, its save/load, padding, threads and parameter rules."""

import json
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

pytest.importorskip("scann")

from ann_bench.backends import get_backend  # noqa: E402
from ann_bench.cli import cli  # noqa: E402
from ann_bench.distances import pairwise  # noqa: E402
from ann_bench.errors import InputError  # noqa: E402
from ann_bench.bench.metrics import check_no_duplicates, id_recall  # noqa: E402
from oracle import assert_matches_oracle  # noqa: E402 (tests/ is on sys.path)

BUILD = {"num_leaves": 32, "dims_per_block": 2}
GENEROUS = {"num_leaves_to_search": 16, "reorder": 200}



def make(metric, X, threads=1, search=GENEROUS, **build):
    index = get_backend("scann")(metric, X.shape[1], threads=threads, **{**BUILD, **build})
    index.check_data(index.params, *X.shape)
    index.build(X)
    index.set_search_params(**search)
    return index


@pytest.fixture(scope="module")
def built(data):
    return {metric: make(metric, data[0]) for metric in ("euclidean", "angular", "ip")}


@pytest.mark.parametrize("metric", ["euclidean", "angular", "ip"])
def test_against_brute_force(metric, data, built):
    X, Q = data
    index = built[metric]
    index.set_search_params(**GENEROUS)
    D, I = index.search(Q, 10)
    # Re-ranked exactly, in the dataset's metric, nearest first.
    assert (I >= 0).all()
    assert_matches_oracle(D, I, Q, X, metric, 0.98)


def test_more_leaves_and_reordering_recall_more(data, built):
    X, Q = data
    gt = np.argsort(pairwise("euclidean", Q, X), axis=1)[:, :10]
    index = built["euclidean"]

    def recall(**search):
        index.set_search_params(**search)
        return float(id_recall(index.search(Q, 10)[1], gt, 10).mean())

    few, many = recall(num_leaves_to_search=1, reorder=100), recall(num_leaves_to_search=16, reorder=100)
    shallow, deep = recall(num_leaves_to_search=4, reorder=10), recall(num_leaves_to_search=4, reorder=100)
    assert few < many and shallow < deep


def test_build_parameters_reach_scann_config(data):
    """aq_threshold 0 is ScaNN's "off" (NaN); dims_per_block and num_leaves go into the config it built with.
    (Builds are not deterministic, so results cannot tell the codebooks apart.)"""
    X, _ = data

    def config(**build):
        index = make("ip", X[:1000], num_leaves=8, **build)
        return " ".join(index.index.config().split())

    assert "noise_shaping_threshold: nan" in config(aq_threshold=0.0)
    on = config(aq_threshold=0.2, dims_per_block=4)
    assert "noise_shaping_threshold: 0.2" in on and "num_dims_per_block: 4" in on and "num_children: 8" in on


def test_save_load_gives_identical_results(data, built, tmp_path):
    X, Q = data
    a = built["angular"]
    a.set_search_params(num_leaves_to_search=4, reorder=50)
    a.save(tmp_path / "index.scann")
    b = get_backend("scann")("angular", 16, **BUILD)
    b.load(tmp_path / "index.scann")
    b.set_search_params(num_leaves_to_search=4, reorder=50)
    for x, y in zip(a.search(Q, 10), b.search(Q, 10)):
        np.testing.assert_array_equal(x, y)
    assert a.index_bytes() == (tmp_path / "index.scann").stat().st_size > X.nbytes  # raw vectors kept
    a.save(tmp_path / "again.scann")  # no times or owners in the archive: the same bytes
    assert (tmp_path / "again.scann").read_bytes() == (tmp_path / "index.scann").read_bytes()


def test_load_refuses_foreign_files(tmp_path):
    import tarfile

    cls = get_backend("scann")
    (tmp_path / "x.bin").write_bytes(b"not a tar")
    with pytest.raises(InputError, match="is not a ScaNN index saved by ann-bench"):
        cls("euclidean", 16, **BUILD).load(tmp_path / "x.bin")
    pkl = tmp_path / "docids.pkl"
    pkl.write_bytes(b"\x80\x04N.")
    with tarfile.open(tmp_path / "p.scann", "w") as tar:
        tar.add(pkl, arcname="scann_docids.pkl")
    with pytest.raises(InputError, match="holds 'scann_docids.pkl'.*refusing it"):
        cls("euclidean", 16, **BUILD).load(tmp_path / "p.scann")


def test_padding_when_fewer_than_k_results(data):
    """ScaNN pads with id 0 and NaN: those become -1 and +inf."""
    X, Q = data
    index = make("euclidean", X[:100], num_leaves=8, search={"num_leaves_to_search": 1, "reorder": 100})
    D, I = index.search(Q, 50)
    pad = I == -1
    assert pad.any() and np.isinf(D[pad]).all() and np.isfinite(D[~pad]).all()
    check_no_duplicates(I)


def test_threads_do_not_change_results(data, built):
    """Searches of one index on 1 or 2 threads agree."""
    X, Q = data
    index = built["euclidean"]
    index.set_search_params(num_leaves_to_search=4, reorder=50)
    D1, I1 = index.search(Q, 10)
    index.set_threads(2)  # search_batched_parallel on 2 threads
    try:
        D2, I2 = index.search(Q, 10)
    finally:
        index.set_threads(1)
    np.testing.assert_array_equal(I1, I2)
    np.testing.assert_array_equal(D1, D2)
    two = make("euclidean", X, threads=2, search={"num_leaves_to_search": 4, "reorder": 50})  # trains on 2
    assert id_recall(two.search(Q, 10)[1], I1, 10).mean() > 0.8  # another build (ScaNN's are not repeatable)


def test_parameters_and_skips():
    cls = get_backend("scann")
    with pytest.raises(InputError, match=r"unknown build parameter 'leaves'.*num_leaves: int"):
        cls("euclidean", 16, leaves=8)
    with pytest.raises(InputError, match=r"aq_threshold=1.5 is out of range"):
        cls("euclidean", 16, aq_threshold=1.5)
    with pytest.raises(InputError, match="num_leaves=5000 exceeds the 3000 vectors"):
        cls.check_data(cls.validate_build_params({"num_leaves": 5000}), 3000, 16)
    with pytest.raises(InputError, match="dims_per_block=32 exceeds the dimension 16"):
        cls.check_data(cls.validate_build_params({"dims_per_block": 32}), 3000, 16)
    index = cls("euclidean", 16, num_leaves=32)
    sp = cls.validate_search_params
    assert index.search_skip_reason(sp({"reorder": 5}), 10) == "reorder=5 < k=10: ScaNN returns only 5 neighbours"
    assert "searches nothing more" in index.search_skip_reason(sp({"num_leaves_to_search": 64}), 10)
    assert index.search_skip_reason(sp({"num_leaves_to_search": 32, "reorder": 10}), 10) is None
    assert cls.default_build_grid(1_000_000, 128)["num_leaves"] == [1024, 2048]
    assert cls.costlier({"num_leaves_to_search": 4, "reorder": 50}, {"num_leaves_to_search": 8, "reorder": 50})


def test_module_imports_without_scann():
    code = ("import sys\nimport ann_bench.backends.scann\n"
            "print('scann' in {m.split('.')[0] for m in sys.modules})\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_cli_run_stores_ok_rows(small_set, tmp_path):
    store = tmp_path / "r.sqlite"
    args = ["run", "--dataset", small_set, "--backend", "scann:scann", "--build", "num_leaves=32",
            "--search", "num_leaves_to_search=2,8", "--search", "reorder=5,50", "--runs", "1", "--in-process",
            "--results", store, "--quiet"]
    r = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(cli, ["results", "--results", str(store), "--format", "json"], catch_exceptions=False)
    rows = json.loads(r.output)
    assert len(rows) == 2  # reorder=5 < k=10 is skipped
    assert {(row["backend"], row["impl"], row["status"]) for row in rows} == {("scann", "scann", "ok")}
    assert all(row["index_bytes"] > 0 for row in rows) and max(row["recall"] for row in rows) > 0.9
