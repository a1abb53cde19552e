"""hnsw[chroma] (an embedded Chroma PersistentClient) against the exact oracle, and its contracts."""

import numpy as np
import pytest

pytest.importorskip("chromadb")

from ann_bench.backends import get_backend, implementations  # noqa: E402
from ann_bench.errors import InputError  # noqa: E402
from dbcheck import (assert_dir_goes_with_the_index, assert_killed_process_dir_swept,  # noqa: E402
                     assert_save_load_identical, assert_single_equals_batch)
from oracle import assert_matches_oracle  # noqa: E402

BUILD = {"M": 16, "ef_construction": 100}
SEARCH = {"ef": 200}


def built(metric, X, **search):
    index = get_backend("hnsw", "chroma")(metric, X.shape[1], **BUILD)
    index.build(X)
    index.set_search_params(**(search or SEARCH))
    return index


def test_registered_as_an_hnsw_implementation():
    cls = implementations("hnsw")["chroma"]
    assert cls.label() == "hnsw[chroma]" and cls.requires == ("chromadb",)
    assert next(iter(implementations("hnsw"))) == "hnswlib"


@pytest.mark.parametrize("metric,floor", [("euclidean", 0.99), ("angular", 0.99), ("ip", 0.98)])
def test_against_exact_oracle(metric, floor, data):
    X, Q = data
    index = built(metric, X)
    D, I = index.search(Q, 10)
    assert_matches_oracle(D, I, Q, X, metric, floor)
    assert index.build_times.keys() == {"insert_s", "index_s"}
    index.close()


def test_hand_worked_distances():
    X = np.array([[3.0, 4.0], [1.0, 0.0], [0.0, 2.0]], dtype=np.float32)
    q = np.array([[1.0, 0.0]], dtype=np.float32)
    expected = {"euclidean": ([1, 2, 0], [0.0, np.sqrt(5), np.sqrt(20)]), "angular": ([1, 0, 2], [0.0, 0.4, 1.0]),
                "ip": ([0, 1, 2], [-3.0, -1.0, 0.0])}
    for metric, (ids, dists) in expected.items():
        D, I = built(metric, X).search(q, 3)
        np.testing.assert_array_equal(I, [ids])
        np.testing.assert_allclose(D, [dists], rtol=1e-5, atol=1e-6)


def test_a_new_ef_is_searched_with(data):
    """Chroma's open client keeps its old ef after modify(); the backend reopens it, so ef changes recall."""
    X, Q = data
    index = get_backend("hnsw", "chroma")("euclidean", X.shape[1], M=4, ef_construction=10)
    index.build(X)
    exact = np.argsort(np.linalg.norm(X[None] - Q[:, None], axis=2), axis=1)[:, :10]
    recalls = []
    for ef in (1, 200, 1):
        index.set_search_params(ef=ef)
        I = index.search(Q, 10)[1]
        recalls.append(np.mean([len(set(a) & set(b)) for a, b in zip(I, exact)]) / 10)
    assert recalls[1] > recalls[0] + 0.1 and recalls[2] == recalls[0]


def test_single_mode_equals_batch(data):
    X, Q = data
    assert_single_equals_batch(built("angular", X, ef=40), Q[:20])


def test_no_engine_figure_and_why(data):
    """Chroma has no public layer under Collection.query: no qps_engine, and the reason is given."""
    from ann_bench.bench.worker import measure

    X, Q = data
    index = built("euclidean", X, ef=40)
    assert not index.engine and "no public layer" in index.engine_unavailable()
    with pytest.raises(NotImplementedError, match="no public layer"):
        index.engine_query(Q, 10)
    assert "qps_engine" not in measure(index, Q[:10], 10, "batch", 1)[0]
    index.close()


def test_padding_when_k_exceeds_n(data):
    X, Q = data
    index = built("euclidean", X[:50])
    D, I = index.search(Q[:3], 60)
    assert (I[:, :50] >= 0).all() and (I[:, 50:] == -1).all() and np.isinf(D[:, 50:]).all()


def test_save_load_gives_identical_results(data, tmp_path):
    X, Q = data
    assert_save_load_identical("hnsw", "chroma", BUILD, SEARCH, X, Q, tmp_path)


def test_load_refuses_another_build(data, tmp_path):
    X, _ = data
    built("euclidean", X[:200]).save(tmp_path / "c.bin")
    with pytest.raises(InputError, match=r"was built with M=16 \(not 8\)"):
        get_backend("hnsw", "chroma")("euclidean", X.shape[1], M=8, ef_construction=100).load(tmp_path / "c.bin")


def test_directory_goes_with_the_index(data):
    X, Q = data
    assert_dir_goes_with_the_index("hnsw", "chroma", BUILD, X, Q)


def test_a_killed_workers_directory_is_gone_at_the_next_run(data):
    X, _ = data
    assert_killed_process_dir_swept("hnsw", "chroma", BUILD, X[:500])


def test_parameter_names_are_the_hnsw_ones():
    with pytest.raises(InputError, match=r"unknown build parameter 'max_neighbors'.*M: int"):
        get_backend("hnsw", "chroma")("euclidean", 8, max_neighbors=16)
    with pytest.raises(InputError, match=r"unknown search parameter 'search_ef'.*ef: int"):
        get_backend("hnsw", "chroma")("euclidean", 8).set_search_params(search_ef=10)
