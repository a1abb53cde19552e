"""Milvus Lite's index types (flat, ivf, hnsw, ivfsq, hnswsq [milvus], through pymilvus) against the exact oracle, and contracts."""

import threading

import numpy as np
import pytest

pytest.importorskip("milvus_lite")
pytest.importorskip("pymilvus")

from ann_bench.backends import get_backend, implementations  # noqa: E402
from ann_bench.errors import InputError  # noqa: E402
from dbcheck import (assert_dir_goes_with_the_index, assert_engine_matches_client,  # noqa: E402
                     assert_killed_process_dir_swept, assert_save_load_identical, assert_single_equals_batch)
from oracle import assert_matches_oracle  # noqa: E402

CONFIGS = {  # name: (build, most accurate search, recall@10 floor)
    "flat": ({}, {}, 1.0),
    "ivf": ({}, {"nprobe": 128}, 1.0),
    "hnsw": ({}, {"ef": 200}, 0.99),
    "ivfsq": ({}, {"nprobe": 128}, 0.95),  # 8-bit scalar quantisation: approximate ids and distances
    "hnswsq": ({}, {"ef": 200}, 0.9),
}
QUANTISED = {"ivfsq", "hnswsq"}


def built(name, metric, X, **search):
    build, best, _ = CONFIGS[name]
    index = get_backend(name, "milvus")(metric, X.shape[1], **build)
    index.build(X)
    index.set_search_params(**(search or best))
    return index


def test_registered_beside_the_libraries():
    for name in CONFIGS:
        assert implementations(name)["milvus"].label() == f"{name}[milvus]"


@pytest.mark.parametrize("metric", ["euclidean", "angular", "ip"])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_against_exact_oracle(name, metric, data):
    X, Q = data
    index = built(name, metric, X)
    D, I = index.search(Q, 10)
    tol = dict(rtol=2e-2, atol=5e-2) if name in QUANTISED else {}  # SQ8 distances: within 2 % (+0.05)
    assert_matches_oracle(D, I, Q, X, metric, CONFIGS[name][2], **tol)
    index.close()


def test_hand_worked_distances():
    X = np.array([[3.0, 4.0], [1.0, 0.0], [0.0, 2.0]], dtype=np.float32)
    q = np.array([[1.0, 0.0]], dtype=np.float32)
    expected = {"euclidean": ([1, 2, 0], [0.0, np.sqrt(5), np.sqrt(20)]), "angular": ([1, 0, 2], [0.0, 0.4, 1.0]),
                "ip": ([0, 1, 2], [-3.0, -1.0, 0.0])}
    for metric, (ids, dists) in expected.items():
        index = built("flat", metric, X)
        D, I = index.search(q, 3)
        index.close()
        np.testing.assert_array_equal(I, [ids])
        np.testing.assert_allclose(D, [dists], rtol=1e-5, atol=1e-6)


def test_the_index_answers_not_a_brute_force_of_unflushed_rows(data):
    """Rows not flushed are scanned exactly; after the build's flush a small nprobe really loses recall."""
    X, Q = data
    index = built("ivf", "euclidean", X, nprobe=1)
    I = index.search(Q, 10)[1]
    exact = np.argsort(np.linalg.norm(X[None] - Q[:, None], axis=2), axis=1)[:, :10]
    assert np.mean([len(set(a) & set(b)) for a, b in zip(I, exact)]) / 10 < 0.99
    index.close()


def test_refuses_what_milvus_lite_lacks():
    from pymilvus import MilvusException

    index = get_backend("ivf", "milvus")("euclidean", 8)
    index.index_type = "IVF_PQ"
    with pytest.raises(MilvusException, match="reserved for a future phase"):
        index.build(np.random.default_rng(0).standard_normal((100, 8)).astype(np.float32))
    index.close()


def test_single_mode_equals_batch(data):
    X, Q = data
    index = built("hnsw", "angular", X, ef=40)
    assert_single_equals_batch(index, Q[:20])
    index.close()


@pytest.mark.parametrize("name,metric", [("flat", "euclidean"), ("ivf", "angular"), ("hnsw", "ip")])
def test_engine_under_the_client_returns_its_results(name, metric, data):
    """The engine figure (qps_engine) times milvus-lite's own Collection.search on the server's engine: the
    client's ids and distances exactly, at settings short of exact too."""
    X, Q = data
    index = built(name, metric, X, **{"flat": {}, "ivf": {"nprobe": 2}, "hnsw": {"ef": 10}}[name])
    assert_engine_matches_client(index, Q[:30])
    index.close()


def test_save_load_gives_identical_results(data, tmp_path):
    X, Q = data
    assert_save_load_identical("ivf", "milvus", *CONFIGS["ivf"][:2], X, Q, tmp_path)


def test_directory_and_server_threads_go_with_the_index(data):
    X, Q = data
    # closed, and dropped without close() (garbage collection): the directory goes, and the server with it
    assert_dir_goes_with_the_index("hnsw", "milvus", CONFIGS["hnsw"][0], X, Q)
    left = [t.name for t in threading.enumerate() if t.name.startswith("milvus_lite") or "_serve" in t.name]
    assert not left  # the in-process server's threads (its pool, one a collection) are stopped


def test_a_killed_workers_directory_is_gone_at_the_next_run(data):
    X, _ = data
    assert_killed_process_dir_swept("flat", "milvus", {}, X[:500])


def test_build_parameters_pymilvus_cannot_pass_are_not_offered():
    with pytest.raises(InputError, match=r"unknown build parameter 'nlist'; valid: none"):
        get_backend("ivf", "milvus")("euclidean", 8, nlist=16)
    with pytest.raises(InputError, match=r"unknown build parameter 'M'; valid: none"):
        get_backend("hnsw", "milvus")("euclidean", 8, M=16)
    assert get_backend("ivf", "milvus")("euclidean", 8).search_skip_reason({"nprobe": 256}, 10)


def test_a_search_brings_back_ids_not_vectors(data):
    """The client returns every hit's vector unless asked for a field (a 314 MB reply for 10,000 Fashion-MNIST
    queries, refused by gRPC's 256 MB limit): the backend asks for the id alone."""
    X, Q = data
    index = built("flat", "euclidean", X)
    try:
        hits = index._call(Q[:2], 3)
        assert all(set(hit["entity"]) <= {"id"} for row in hits for hit in row), hits[0][0]
    finally:
        index.close()
