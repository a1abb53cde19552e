"""LanceDB's index types (flat, ivf, ivfpq, ivfhnswsq [lancedb]) against the exact oracle, and their contracts."""

import numpy as np
import pytest

pytest.importorskip("lancedb")

from ann_bench.backends import get_backend, implementations  # noqa: E402
from ann_bench.errors import InputError  # noqa: E402
from dbcheck import (assert_dir_goes_with_the_index, assert_engine_matches_client,  # noqa: E402
                     assert_killed_process_dir_swept, assert_save_load_identical, assert_single_equals_batch)
from oracle import assert_matches_oracle  # noqa: E402

CONFIGS = {  # name: (build, most accurate search, recall@10 floor)
    "flat": ({}, {}, 1.0),
    "ivf": ({"nlist": 16}, {"nprobe": 16}, 1.0),
    "ivfpq": ({"nlist": 16, "m": 4}, {"nprobe": 16, "refine": 10}, 0.98),
    "ivfhnswsq": ({"nlist": 1, "M": 16, "ef_construction": 100}, {"ef": 100, "refine": 5}, 0.98),
}


def built(name, metric, X, search=None):
    build, best, _ = CONFIGS[name]
    index = get_backend(name, "lancedb")(metric, X.shape[1], **build)
    index.build(X)
    index.set_search_params(**(best if search is None else search))
    return index


def test_registered_beside_the_libraries():
    for name in CONFIGS:
        cls = implementations(name)["lancedb"]
        assert cls.label() == f"{name}[lancedb]" and cls.requires == ("lancedb",)
    assert next(iter(implementations("ivf"))) == "faiss"  # still the default


@pytest.mark.parametrize("metric", ["euclidean", "angular", "ip"])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_against_exact_oracle(name, metric, data):
    X, Q = data
    index = built(name, metric, X)
    D, I = index.search(Q, 10)
    assert_matches_oracle(D, I, Q, X, metric, CONFIGS[name][2])
    assert index.build_times.keys() == {"insert_s", "index_s"}
    index.close()


def test_hand_worked_distances():
    X = np.array([[3.0, 4.0], [1.0, 0.0], [0.0, 2.0]], dtype=np.float32)
    q = np.array([[1.0, 0.0]], dtype=np.float32)
    expected = {  # by hand: |q - x| ; 1 - cos ; -<q, x>
        "euclidean": ([1, 2, 0], [0.0, np.sqrt(5), np.sqrt(20)]),
        "angular": ([1, 0, 2], [0.0, 0.4, 1.0]),
        "ip": ([0, 1, 2], [-3.0, -1.0, 0.0]),
    }
    for metric, (ids, dists) in expected.items():
        D, I = built("flat", metric, X).search(q, 3)
        np.testing.assert_array_equal(I, [ids])
        np.testing.assert_allclose(D, [dists], rtol=1e-5, atol=1e-6)


def test_codes_give_approximate_distances_refine_exact_ones(data):
    X, Q = data
    index = built("ivfpq", "euclidean", X, {"nprobe": 16, "refine": 0})
    D, I = index.search(Q, 10)
    exact = np.linalg.norm(X[I] - Q[:, None], axis=2)
    assert np.abs(D - exact).max() > 0.01  # PQ distances
    index.set_search_params(nprobe=16, refine=10)
    D, I = index.search(Q, 10)
    np.testing.assert_allclose(D, np.linalg.norm(X[I] - Q[:, None], axis=2), rtol=1e-4, atol=2e-4)


@pytest.mark.parametrize("name", ["flat", "ivfpq", "ivfhnswsq"])
def test_single_mode_equals_batch(name, data):
    X, Q = data
    index = built(name, "angular", X, {**CONFIGS[name][1], "refine": 0} if "refine" in CONFIGS[name][1] else None)
    assert_single_equals_batch(index, Q[:20])


@pytest.mark.parametrize("metric", ["euclidean", "angular", "ip"])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_lance_dataset_under_the_client_returns_its_results(name, metric, data):
    """The engine figure (qps_engine) times the table's Lance dataset searched by pylance: the client's ids and
    distances exactly, at a setting short of exact (PQ codes, no refine) as well."""
    pytest.importorskip("lance")
    X, Q = data
    search = {"ivf": {"nprobe": 2}, "ivfpq": {"nprobe": 2, "refine": 0}, "ivfhnswsq": {"ef": 10, "refine": 0}}
    index = built(name, metric, X, search.get(name))
    assert_engine_matches_client(index, Q[:30])
    index.close()


def test_padding_when_k_exceeds_n(data):
    X, Q = data
    index = built("flat", "euclidean", X[:50])
    for queries in (Q[:7], Q[:1]):
        D, I = index.search(queries, 60)
        assert (I[:, :50] >= 0).all() and (I[:, 50:] == -1).all() and np.isinf(D[:, 50:]).all()


@pytest.mark.parametrize("name", ["flat", "ivfpq"])
def test_save_load_gives_identical_results(name, data, tmp_path):
    X, Q = data
    assert_save_load_identical(name, "lancedb", CONFIGS[name][0], CONFIGS[name][1], X, Q, tmp_path)


def test_load_refuses_another_build(data, tmp_path):
    X, _ = data
    built("ivf", "euclidean", X).save(tmp_path / "l.bin")
    other = get_backend("ivf", "lancedb")("euclidean", X.shape[1], nlist=32)
    with pytest.raises(InputError, match=r"was built with nlist=16 \(not 32\)"):
        other.load(tmp_path / "l.bin")
    (tmp_path / "junk.bin").write_bytes(b"not a tar")
    with pytest.raises(InputError, match="is not a ivf\\[lancedb\\] database saved by ann-bench"):
        other.load(tmp_path / "junk.bin")


def test_directory_goes_with_the_index(data):
    X, Q = data
    assert_dir_goes_with_the_index("ivf", "lancedb", CONFIGS["ivf"][0], X, Q)


def test_a_killed_workers_directory_is_gone_at_the_next_run(data):
    X, _ = data
    assert_killed_process_dir_swept("flat", "lancedb", {}, X[:500])


def test_parameters_checked_before_any_work():
    cls = get_backend("ivfpq", "lancedb")
    with pytest.raises(InputError, match="m=5 does not divide the dimension 16"):
        cls.check_data(cls.validate_build_params({"m": 5, "nlist": 4}), 3000, 16)
    with pytest.raises(InputError, match="trains at most n / train_per_list = 46 IVF_PQ partitions"):
        cls.check_data(cls.validate_build_params({"m": 4, "nlist": 64}), 3000, 16)
    with pytest.raises(InputError, match=r"unknown build parameter 'num_partitions'.*nlist: int"):
        cls("euclidean", 16, num_partitions=16)  # the name every ivf implementation takes is nlist
    assert cls.default_build_grid(100_000, 128) == {"nlist": [1024], "train_per_list": [64], "m": [32]}
    assert get_backend("ivf", "lancedb")("euclidean", 16, nlist=4).search_skip_reason({"nprobe": 8}, 10)


def test_a_run_stores_the_build_split_into_insert_and_index_creation(tmp_path, small_set):
    from click.testing import CliRunner

    from ann_bench.bench.results import ResultStore
    from ann_bench.cli import cli

    store = tmp_path / "r.sqlite"
    r = CliRunner().invoke(cli, ["run", "--dataset", str(small_set), "--backend", "ivf:lancedb", "--backend", "flat",
                                 "--build", "ivf:nlist=16", "--search", "ivf:nprobe=4", "--runs", "1",
                                 "--results", str(store)], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    with ResultStore(store, create=False) as s:
        rows = {r.impl: r for r in s.records() if r.status == "ok"}
    db = rows["lancedb"]
    assert db.build_insert_s > 0 and db.build_index_s > 0
    assert db.build_insert_s + db.build_index_s == pytest.approx(db.build_s, rel=0.05, abs=0.01)
    assert rows["faiss"].build_insert_s is None and rows["faiss"].build_index_s is None
