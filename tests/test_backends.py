"""The core backends (flat, hnsw, ivf, ivfpq) against the exact oracle, and the parameter machinery."""

import numpy as np
import pytest

from ann_bench.backends import all_backends, get_backend, implementations
from ann_bench.backends.base import Param
from ann_bench.backends.ivfpq import default_m
from ann_bench.distances import pairwise
from ann_bench.errors import InputError
from ann_bench.bench.metrics import check_no_duplicates, id_recall

CORE = {
    # backend: (build params, most accurate search params, recall@10 floor)
    "flat": ({}, {}, 1.0),
    "hnsw": ({"M": 16, "ef_construction": 100}, {"ef": 200}, 0.99),
    "ivf": ({"nlist": 32}, {"nprobe": 32}, 1.0),
    "ivfpq": ({"nlist": 16, "m": 8, "nbits": 6, "rerank": True}, {"nprobe": 16, "refine": 10}, 0.95),
}


@pytest.fixture(scope="module")
def data():
    from ann_bench.data.vectorset import SynthSpec, synth_arrays

    train, test, _, _ = synth_arrays(SynthSpec(n=3000, dim=16, queries=100, clusters=10, seed=11))
    return train, test


@pytest.mark.parametrize("metric", ["euclidean", "angular", "ip"])
@pytest.mark.parametrize("name", list(CORE))
def test_backend_against_exact_oracle(name, metric, data):
    X, Q = data
    build, search, floor = CORE[name]
    index = get_backend(name)(metric, X.shape[1], **build)
    index.build(X)
    index.set_search_params(**search)
    D, I = index.search(Q, 10)
    assert D.shape == I.shape == (100, 10) and I.dtype == np.int64 and D.dtype == np.float32
    check_no_duplicates(I)
    exact = pairwise(metric, Q, X)
    true_I = np.argsort(exact, axis=1, kind="stable")[:, :10]
    assert id_recall(I, true_I, 10).mean() >= floor
    # Distances come back in the dataset's metric, sorted nearest first.
    np.testing.assert_allclose(D, np.take_along_axis(exact, I, axis=1), rtol=1e-4, atol=2e-4)
    assert np.all(np.diff(D, axis=1) >= -1e-5)


@pytest.mark.parametrize("name", list(CORE))
def test_save_load_gives_identical_results(name, data, tmp_path):
    X, Q = data
    build, search, _ = CORE[name]
    cls = get_backend(name)
    a = cls("euclidean", X.shape[1], **build)
    a.build(X)
    a.set_search_params(**search)
    a.save(tmp_path / "index.bin")
    b = cls("euclidean", X.shape[1], **build)
    b.set_search_params(**search)
    b.load(tmp_path / "index.bin")
    for x, y in zip(a.search(Q, 10), b.search(Q, 10)):
        np.testing.assert_array_equal(x, y)
    assert a.index_bytes() > X.shape[0] * (4 if name != "ivfpq" else 1)


def test_index_bytes_tracks_what_is_stored(data):
    X, _ = data
    flat = get_backend("flat")("euclidean", 16)
    flat.build(X)
    assert abs(flat.index_bytes() - X.nbytes) < 1024
    pq = get_backend("ivfpq")("euclidean", 16, nlist=16, m=8, nbits=6, rerank=False)
    pq.build(X)
    refined = get_backend("ivfpq")("euclidean", 16, nlist=16, m=8, nbits=6, rerank=True)
    refined.build(X)
    assert pq.index_bytes() < X.nbytes / 2 < refined.index_bytes()


def test_ivfpq_refine_is_a_search_parameter_of_one_rerank_build(data, tmp_path):
    """One build with the raw vectors serves every re-ranking depth; deeper re-ranking recalls more; refine 1
    re-ranks only the PQ top k (same ids as the PQ ranking); settings with nothing to measure are skipped."""
    from ann_bench.data.groundtruth import exact_knn

    X, Q = data
    _, gt = exact_knn(X, Q, "euclidean", 10)
    cls = get_backend("ivfpq")
    pq, rr = cls("euclidean", 16, nlist=16, m=4, nbits=6), cls("euclidean", 16, nlist=16, m=4, nbits=6, rerank=True)
    pq.build(X)
    rr.build(X)

    def recall(index, **search):
        index.set_search_params(nprobe=16, **search)
        I = index.search(Q, 10)[1]
        return float(id_recall(I, gt, 10).mean()), I

    plain, plain_ids = recall(pq, refine=0)
    shallow, shallow_ids = recall(rr, refine=1)
    deep, _ = recall(rr, refine=20)
    assert plain < 0.9 < deep and deep > plain + 0.1
    assert (np.sort(shallow_ids, axis=1) == np.sort(plain_ids, axis=1)).all()  # same codes, same seed: same top k
    assert "needs the raw vectors" in pq.search_skip_reason(cls.validate_search_params({"refine": 4}), 10)
    assert "rerank=false build again" in rr.search_skip_reason(cls.validate_search_params({"refine": 0}), 10)
    assert cls.costlier({"nprobe": 4, "refine": 2}, {"nprobe": 4, "refine": 8})
    rr.save(tmp_path / "rr.index")  # the wrapper and its PQ index come back whole
    back = cls("euclidean", 16, nlist=16, m=4, nbits=6, rerank=True)
    back.load(tmp_path / "rr.index")
    assert recall(back, refine=20)[0] == deep and recall(back, refine=1)[0] == shallow


@pytest.mark.parametrize("metric", ["euclidean", "angular", "ip"])
def test_ivfpq_rerank_of_every_candidate_is_brute_force(metric, data):
    """nprobe = nlist and refine * k >= n re-rank every vector exactly: the distances of brute force (ids may
    differ only between equally distant vectors), whatever the PQ codes got wrong."""
    X, Q = data
    index = get_backend("ivfpq")(metric, 16, nlist=16, m=4, nbits=4, rerank=True)
    index.build(X)
    index.set_search_params(nprobe=16, refine=X.shape[0] // 10)
    D, I = index.search(Q, 10)
    check_no_duplicates(I)
    exact = pairwise(metric, Q, X)
    np.testing.assert_allclose(D, np.sort(exact, axis=1)[:, :10], rtol=1e-4, atol=2e-4)
    np.testing.assert_allclose(np.take_along_axis(exact, I, axis=1), D, rtol=1e-4, atol=2e-4)
    index.set_search_params(nprobe=16, refine=0)  # the PQ ranking alone (coarse 4-bit codes) is far from it
    assert id_recall(index.search(Q, 10)[1], np.argsort(exact, axis=1)[:, :10], 10).mean() < 0.9


def test_padding_when_fewer_than_k_results(data):
    X, Q = data
    index = get_backend("ivf")("euclidean", 16, nlist=64)
    index.build(X[:200])
    index.set_search_params(nprobe=1)
    D, I = index.search(Q, 100)
    pad = I == -1
    assert pad.any() and np.isinf(D[pad]).all() and np.isfinite(D[~pad]).all()


def test_threads_do_not_change_results(data):
    X, Q = data
    one = get_backend("hnsw")("euclidean", 16, threads=1, M=8)
    one.build(X)
    one.set_search_params(ef=50)
    D1, I1 = one.search(Q, 10)
    one.set_threads(2)
    D2, I2 = one.search(Q, 10)
    np.testing.assert_array_equal(I1, I2)


def test_same_seed_same_index(data):
    X, Q = data
    results = []
    for _ in range(2):
        index = get_backend("ivfpq")("euclidean", 16, seed=5, nlist=16, m=8, nbits=6)
        index.build(X)
        index.set_search_params(nprobe=2)
        results.append(index.search(Q, 10))
    np.testing.assert_array_equal(results[0][1], results[1][1])


def test_parameter_validation_lists_valid_values():
    cls = get_backend("hnsw")
    with pytest.raises(InputError, match=r"unknown build parameter 'efc'.*M: int in \[2, 512\]"):
        cls("euclidean", 8, efc=10)
    with pytest.raises(InputError, match=r"M='many' is not an integer"):
        cls("euclidean", 8, M="many")
    with pytest.raises(InputError, match="out of range"):
        cls("euclidean", 8, M=1)
    index = cls("euclidean", 8)
    with pytest.raises(InputError, match="unknown search parameter 'nprobe'"):
        index.set_search_params(nprobe=3)
    with pytest.raises(InputError, match="unknown backend 'hnws'; valid backends: flat, hnsw"):
        get_backend("hnws")
    with pytest.raises(InputError, match="no implementation 'qdrant'"):
        get_backend("hnsw", "qdrant")
    with pytest.raises(InputError, match="metric 'manhattan'"):
        from ann_bench.distances import canonical_metric

        canonical_metric("manhattan")


def test_param_coercion():
    p = Param("x", int, 1, min=0, max=10)
    assert p.coerce("7", "b") == 7 and p.coerce(7.0, "b") == 7
    with pytest.raises(InputError):
        p.coerce(7.5, "b")
    with pytest.raises(InputError):
        p.coerce(True, "b")
    b = Param("flag", bool, False)
    assert b.coerce("yes", "b") is True and b.coerce(0, "b") is False
    f = Param("eps", float, 0.0, min=0)
    with pytest.raises(InputError):
        f.coerce("nan", "b")


def test_data_checks():
    pq = get_backend("ivfpq")
    with pytest.raises(InputError, match="m=7 does not divide the dimension 16; use one of 1, 2, 4, 8, 16"):
        pq.check_data(pq.validate_build_params({"m": 7}), 1000, 16)
    with pytest.raises(InputError, match="nlist=2048 exceeds the 1000 training vectors"):
        get_backend("ivf").check_data({"nlist": 2048}, 1000, 16)
    assert default_m(128) == 32 and default_m(784) == 56 and 100 % default_m(100) == 0


def test_skip_reasons():
    ivf = get_backend("ivf")("euclidean", 8, nlist=16)
    assert ivf.search_skip_reason({"nprobe": 32}, 10) and ivf.search_skip_reason({"nprobe": 16}, 10) is None
    hnsw = get_backend("hnsw")("euclidean", 8)
    assert hnsw.search_skip_reason({"ef": 5}, 10) and hnsw.search_skip_reason({"ef": 10}, 10) is None


def test_registry_declares_grids_and_defaults():
    assert set(implementations("hnsw")) >= {"hnswlib"}
    for cls in all_backends():
        names = {p.name for p in cls.build_params}
        assert set(cls.build_grid) <= names and set(cls.search_grid) <= {p.name for p in cls.search_params}
        for grid in (cls.default_build_grid(100_000, 128),):
            for combo in [dict(zip(grid, v)) for v in zip(*grid.values())]:
                cls.check_data(cls.validate_build_params(combo), 100_000, 128)


@pytest.mark.parametrize("name", ["ivf", "ivfpq"])
def test_ivf_trains_kmeans_on_a_sample_of_train_per_list_vectors(name, rng):
    import faiss

    X = rng.standard_normal((4000, 16)).astype(np.float32)
    centroids = []
    for per_list in (39, 256):  # 16 lists: a sample of 624 vectors, then all 4000
        index = get_backend(name)("euclidean", 16, seed=1, nlist=16, train_per_list=per_list,
                                  **({"m": 4} if name == "ivfpq" else {}))
        index.build(X)
        ivf = faiss.extract_index_ivf(index.index)
        assert ivf.cp.max_points_per_centroid == per_list
        centroids.append(ivf.quantizer.reconstruct_n(0, 16))
    assert not np.allclose(centroids[0], centroids[1])
