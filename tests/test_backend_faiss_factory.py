"""faiss[faiss]: any faiss index by factory string, and the two presets, against brute force and their rules."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from ann_bench.backends import get_backend
from ann_bench.backends.faiss_factory import factory_string, fastscan_m
from ann_bench.cli import cli
from ann_bench.distances import pairwise
from ann_bench.errors import InputError
from ann_bench.bench.metrics import check_no_duplicates, id_recall

faiss = pytest.importorskip("faiss")

CASES = {
    # label: (build params, search params, recall@10 floor, distances exact)
    "ivf-flat": ({"factory": "IVF32,Flat"}, {"nprobe": 32}, 1.0, True),
    "preset-sq8": ({"preset": "ivf-sq8", "nlist": 32}, {"nprobe": 32}, 0.95, False),
    "preset-fastscan": ({"preset": "ivf-pq-fastscan", "nlist": 32}, {"nprobe": 32, "k_factor": 16}, 0.97, True),
    "hnsw": ({"factory": "HNSW16"}, {"efSearch": 200}, 0.97, True),
    "ivf-hnsw-quantizer": ({"factory": "IVF32_HNSW8,Flat"}, {"nprobe": 16, "quantizer_efSearch": 64}, 0.97, True),
}



def make(metric, X, threads=1, seed=0, search=None, **build):
    index = get_backend("faiss")(metric, X.shape[1], threads=threads, seed=seed, **build)
    index.check_data(index.params, *X.shape)
    index.build(X)
    if search is not None:
        index.set_search_params(**search)
    return index


def recall(index, Q, gt, **search):
    index.set_search_params(**search)
    return float(id_recall(index.search(Q, 10)[1], gt, 10).mean())


@pytest.mark.parametrize("metric", ["euclidean", "angular", "ip"])
@pytest.mark.parametrize("case", list(CASES))
def test_against_brute_force(case, metric, data):
    X, Q = data
    build, search, floor, exact_distances = CASES[case]
    index = make(metric, X, search=search, **build)
    D, I = index.search(Q, 10)
    assert D.shape == I.shape == (100, 10) and I.dtype == np.int64 and D.dtype == np.float32
    check_no_duplicates(I)
    exact = pairwise(metric, Q, X)
    assert id_recall(I, np.argsort(exact, axis=1, kind="stable")[:, :10], 10).mean() >= floor
    assert np.all(np.diff(D, axis=1) >= -1e-5)  # nearest first, in the dataset's metric
    if exact_distances:  # raw vectors (Flat, HNSW) or re-ranked with them (RFlat): the exact distances
        np.testing.assert_allclose(D, np.take_along_axis(exact, I, axis=1), rtol=1e-4, atol=2e-4)
    else:  # SQ8 codes: approximate, but close
        np.testing.assert_allclose(D, np.take_along_axis(exact, I, axis=1), rtol=0.05, atol=0.05 * np.abs(D).max())


def test_nsg_search_L_is_its_search_parameter(data):
    """NSG has no ParameterSpace knob; search_L is set on its graph, and a longer list recalls more."""
    X, Q = data[0][:800], data[1]
    gt = np.argsort(pairwise("euclidean", Q, X), axis=1)[:, :10]
    index = make("euclidean", X, factory="NSG8,Flat")
    assert index.knobs().names == {"search_L"}
    low, high = recall(index, Q, gt, search_L=10), recall(index, Q, gt, search_L=200)
    assert high >= 0.99 and high >= low


def test_ef_construction_reaches_the_graph(data):
    X, _ = data
    hnsw = make("euclidean", X[:500], factory="HNSW8", efConstruction=200)
    assert faiss.downcast_index(hnsw.index).hnsw.efConstruction == 200
    assert faiss.downcast_index(make("euclidean", X[:500], factory="HNSW8").index).hnsw.efConstruction == 40
    ivf = make("euclidean", X, factory="IVF16_HNSW8,Flat", efConstruction=120)
    assert faiss.downcast_index(faiss.extract_index_ivf(ivf.index).quantizer).hnsw.efConstruction == 120


def test_presets_and_their_factory_strings():
    cls = get_backend("faiss")
    assert fastscan_m(16) == 8 and fastscan_m(128) == 64 and fastscan_m(21) == 21 and fastscan_m(25) == 25
    grid = cls.default_build_grid(100_000, 128)
    assert grid == {"preset": ["ivf-pq-fastscan", "ivf-sq8"], "nlist": [1024]}
    strings = [factory_string(cls.validate_build_params({"preset": p, "nlist": 1024}), 100_000, 128)
               for p in grid["preset"]]
    assert strings == ["IVF1024,PQ64x4fs,RFlat", "IVF1024,SQ8"]
    # nlist 0: chosen from n when the data is there (4*sqrt(n) as a power of two, at most n/39)
    assert factory_string(cls.validate_build_params({"preset": "ivf-sq8"}), 3000, 16) == "IVF64,SQ8"
    for n, dim in ((100_000, 128), (3000, 16), (5000, 21)):  # the default sweep fits any shape
        for preset in grid["preset"]:
            cls.check_data(cls.validate_build_params({"preset": preset, "nlist": 0}), n, dim)


def test_preset_build_from_n_and_its_nlist_skip(data):
    X, Q = data
    index = make("euclidean", X, preset="ivf-sq8")  # nlist 0: 64 lists for 3000 vectors
    assert faiss.extract_index_ivf(index.index).nlist == 64
    sp = index.validate_search_params
    assert index.search_skip_reason(sp({"nprobe": 128}), 10) == "nprobe=128 > nlist=64 visits nothing more"
    probe = get_backend("faiss")("euclidean", 16, preset="ivf-sq8")  # before a build its nlist is unknown
    assert probe.search_skip_reason(sp({"nprobe": 128}), 10) is None


def test_fastscan_preset_re_ranks_to_ivf_flat_recall(data):
    """Same lists (same sample, seed and nlist) as IVF-Flat: re-ranked 4-bit PQ recalls about what IVF-Flat does
    at the same nprobe; without re-ranking (k_factor 0) it recalls far less."""
    X, Q = data
    gt = np.argsort(pairwise("euclidean", Q, X), axis=1)[:, :10]
    flat = make("euclidean", X, factory="IVF32,Flat")
    fast = make("euclidean", X, preset="ivf-pq-fastscan", nlist=32)
    assert isinstance(faiss.downcast_index(fast.index), faiss.IndexRefineFlat)
    for nprobe in (1, 4, 32):
        exact_lists = recall(flat, Q, gt, nprobe=nprobe)
        assert recall(fast, Q, gt, nprobe=nprobe, k_factor=16) >= exact_lists - 0.02
        assert recall(fast, Q, gt, nprobe=nprobe, k_factor=0) < exact_lists - 0.2
    # k_factor 1 re-ranks the base's own top k: its ids, exact distances
    fast.set_search_params(nprobe=4, k_factor=0)
    base_ids = fast.search(Q, 10)[1]
    fast.set_search_params(nprobe=4, k_factor=1)
    np.testing.assert_array_equal(np.sort(fast.search(Q, 10)[1], axis=1), np.sort(base_ids, axis=1))


@pytest.mark.parametrize("build,search", [
    ({"preset": "ivf-pq-fastscan", "nlist": 32}, {"nprobe": 8, "k_factor": 4}),
    ({"preset": "ivf-pq-fastscan", "nlist": 32}, {"nprobe": 8, "k_factor": 0}),
    ({"factory": "HNSW8"}, {"efSearch": 20}),
    ({"factory": "PCA8,IVF16,PQ4np"}, {"nprobe": 4, "ht": 12}),
])
def test_save_load_gives_identical_results(build, search, data, tmp_path):
    X, Q = data
    a = make("angular", X, search=search, **build)
    a.save(tmp_path / "index.faiss")
    b = get_backend("faiss")("angular", 16, **build)
    b.set_search_params(**search)  # set before the load, applied by it
    b.load(tmp_path / "index.faiss")
    for x, y in zip(a.search(Q, 10), b.search(Q, 10)):
        np.testing.assert_array_equal(x, y)
    assert a.index_bytes() == (tmp_path / "index.faiss").stat().st_size


def test_index_bytes_follow_the_encoding(data):
    X, _ = data
    flat = make("euclidean", X, factory="IVF32,Flat").index_bytes()
    sq8 = make("euclidean", X, preset="ivf-sq8", nlist=32).index_bytes()
    fast = make("euclidean", X, preset="ivf-pq-fastscan", nlist=32).index_bytes()
    assert sq8 < flat / 2 < X.nbytes < fast  # 1 byte a dimension; fast-scan keeps the raw vectors to re-rank


def test_search_parameters_the_index_lacks_or_leaves_unset(data):
    cls = get_backend("faiss")
    sp = cls.validate_search_params
    hnsw = cls("euclidean", 16, factory="HNSW8")  # a probe: nothing built
    assert hnsw.search_skip_reason(sp({"efSearch": 8}), 10) is None
    assert hnsw.search_skip_reason(sp({"efSearch": 8, "nprobe": 4}), 10) == "nprobe=4: HNSW8 has no nprobe"
    assert "efSearch=0 leaves HNSW8 at faiss's default efSearch=16" in hnsw.search_skip_reason(sp({}), 10)
    fast = cls("euclidean", 16, preset="ivf-pq-fastscan")
    assert fast.search_skip_reason(sp({"nprobe": 4, "k_factor": 0}), 10) is None  # no re-ranking: a measurement
    assert "has no polysemous codes" in fast.search_skip_reason(sp({"nprobe": 4, "ht": 8}), 10)
    sq8 = cls("euclidean", 16, preset="ivf-sq8", nlist=16)
    assert "no refinement stage" in sq8.search_skip_reason(sp({"nprobe": 4, "k_factor": 4}), 10)
    assert sq8.search_skip_reason(sp({"nprobe": 32}), 10) == "nprobe=32 > nlist=16 visits nothing more"
    ivfhnsw = cls("euclidean", 16, factory="IVF16_HNSW8,Flat")  # faiss's efSearch would set the quantizer's
    assert ivfhnsw.knobs().names == {"nprobe", "quantizer_efSearch"}
    pq = cls("euclidean", 16, factory="IVF16,PQ4np")  # 4 bytes: 32 bits
    assert pq.search_skip_reason(sp({"nprobe": 4, "ht": 31}), 10) is None
    assert "filters nothing" in pq.search_skip_reason(sp({"nprobe": 4, "ht": 32}), 10)
    # Applied directly, a parameter the built index lacks is a one-line error before any search.
    X, Q = data
    built = make("euclidean", X[:500], factory="HNSW8")
    with pytest.raises(InputError, match=r"^faiss\[faiss\]: search parameter nprobe=3: HNSW8 has no nprobe "
                                         r"\(it has: efSearch\)$"):
        built.set_search_params(nprobe=3, efSearch=10)


def test_unset_parameters_do_not_keep_an_earlier_value(data):
    """0 applies faiss's default on an index that has the parameter: nothing lingers from the search before."""
    X, Q = data
    index = make("euclidean", X, factory="IVF32,Flat", search={"nprobe": 1})
    one = index.search(Q, 10)
    index.set_search_params(nprobe=32)
    assert not np.array_equal(index.search(Q, 10)[1], one[1])
    index.set_search_params()
    np.testing.assert_array_equal(index.search(Q, 10)[1], one[1])
    assert faiss.extract_index_ivf(index.index).nprobe == 1


def test_ht_filters_polysemous_codes(data):
    X, Q = data
    index = make("euclidean", X, factory="IVF16,PQ8np", search={"nprobe": 16})
    D0, I0 = index.search(Q, 10)
    index.set_search_params(nprobe=16, ht=8)  # 8 of 64 bits: many candidates filtered out
    D1, I1 = index.search(Q, 10)
    assert (I1 == -1).sum() > (I0 == -1).sum() and np.isinf(D1[I1 == -1]).all()
    index.set_search_params(nprobe=16)  # ht 0: filtering off again
    np.testing.assert_array_equal(index.search(Q, 10)[1], I0)


def test_padding_when_fewer_than_k_results(data):
    X, Q = data
    index = make("euclidean", X[:300], factory="IVF8,Flat", search={"nprobe": 1})
    D, I = index.search(Q, 100)
    pad = I == -1
    assert pad.any() and np.isinf(D[pad]).all() and np.isfinite(D[~pad]).all()


def test_threads_and_seed(data):
    """IVF builds follow the seed, not the thread count; searches do not depend on threads. (IVF-SQ8: a 2-thread
    fast-scan build is slow on a loaded 2-core machine, OpenMP threads waiting on each other.)"""
    X, Q = data
    build = {"preset": "ivf-sq8", "nlist": 32, "search": {"nprobe": 4}}
    one, two = make("euclidean", X, threads=1, seed=3, **build), make("euclidean", X, threads=2, seed=3, **build)
    I1 = one.search(Q, 10)[1]
    np.testing.assert_array_equal(two.search(Q, 10)[1], I1)
    one.set_threads(2)
    np.testing.assert_array_equal(one.search(Q, 10)[1], I1)
    other = make("euclidean", X, seed=4, **build)
    assert not np.array_equal(faiss.extract_index_ivf(other.index).quantizer.reconstruct_n(0, 32),
                              faiss.extract_index_ivf(one.index).quantizer.reconstruct_n(0, 32))


def test_ivf_trains_on_a_sample_of_train_per_list_vectors(data):
    X, _ = data
    centroids = []
    for per_list in (39, 256):  # 16 lists: a sample of 624 vectors, then all 3000
        index = make("euclidean", X, seed=1, factory="IVF16,SQ8", train_per_list=per_list)
        ivf = faiss.extract_index_ivf(index.index)
        assert ivf.cp.max_points_per_centroid == per_list and ivf.cp.seed == 1
        centroids.append(ivf.quantizer.reconstruct_n(0, 16))
    assert not np.allclose(centroids[0], centroids[1])


def test_build_parameter_rules():
    cls = get_backend("faiss")
    # '+' stands for ',' (the command line splits values on commas); a factory string replaces any preset
    assert cls.validate_build_params({"factory": "IVF64+PQ8x4fs+RFlat", "preset": "ivf-sq8", "nlist": 512}) == \
        {"factory": "IVF64,PQ8x4fs,RFlat", "preset": "none", "nlist": 0, "train_per_list": 64, "efConstruction": 0}
    with pytest.raises(InputError, match=r"give factory=STRING .* or preset=ivf-pq-fastscan\|ivf-sq8"):
        cls("euclidean", 16)
    with pytest.raises(InputError, match=r"preset='ivfpq' is not allowed; preset: str one of none, ivf-pq-fastscan"):
        cls("euclidean", 16, preset="ivfpq")
    bad = {
        "IVF16,PQ7": r"faiss rejects factory 'IVF16,PQ7' at dimension 16: .*multiple of the number of subquantizers",
        "IVF16": r"could not parse index string IVF16 \(on the command line write each ',' of the string as '\+'\)",
        "IDMap,Flat": "drop the IDMap prefix",
        "LSH": "Hamming distances",
        "IVF4096,Flat": "has 4096 lists, more than the 3000 training vectors",
    }
    for string, message in bad.items():
        with pytest.raises(InputError, match=message):
            cls.check_data(cls.validate_build_params({"factory": string}), 3000, 16)
    with pytest.raises(InputError, match="efConstruction=200: factory 'IVF16,Flat' has no HNSW graph"):
        cls.check_data(cls.validate_build_params({"factory": "IVF16,Flat", "efConstruction": 200}), 3000, 16)
    assert cls.costlier({"nprobe": 4, "k_factor": 4, "efSearch": 0}, {"nprobe": 8, "k_factor": 4, "efSearch": 0})
    assert not cls.costlier({"nprobe": 4, "ht": 0}, {"nprobe": 4, "ht": 8})


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory):
    path = tmp_path_factory.mktemp("faiss-cli") / "d.hdf5"
    r = CliRunner().invoke(cli, ["data", "synth", str(path), "--n", "1000", "--dim", "8", "--queries", "20",
                                 "--clusters", "4"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    return path


@pytest.mark.parametrize("spec,message", [
    ("factory=IVF16+PQ3", "faiss rejects factory 'IVF16,PQ3' at dimension 8"),
    ("factory=IVF16,Flat", "could not parse index string IVF16 (on the command line write each ','"),
    ("preset=ivf-pq", "preset='ivf-pq' is not allowed"),
])
def test_cli_bad_factory_is_one_line_exit_2(tiny_set, tmp_path, spec, message):
    store = tmp_path / "r.sqlite"
    r = CliRunner().invoke(cli, ["run", "--dataset", str(tiny_set), "--backend", "faiss", "--build", spec,
                                 "--results", str(store)])
    assert r.exit_code == 2, r.output
    assert message in r.output and "Traceback" not in r.output
    assert len(r.output.strip().splitlines()) == 1, r.output
    assert not store.exists()


def test_cli_run_stores_ok_rows(tiny_set, tmp_path):
    store = tmp_path / "r.sqlite"
    args = ["run", "--dataset", tiny_set, "--backend", "faiss:faiss", "--build", "preset=ivf-pq-fastscan",
            "--search", "nprobe=2,64", "--search", "k_factor=0,8", "--runs", "1", "--in-process",
            "--results", store, "--quiet"]
    r = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    args = ["run", "--dataset", tiny_set, "--backend", "faiss", "--build", "factory=IVF8+Flat",
            "--build", "factory=HNSW8", "--search", "efSearch=0,32", "--search", "nprobe=0,1,2", "--runs", "1",
            "--in-process", "--results", store]  # not --quiet: it hides the lines on skipped settings too
    r = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    said = " ".join(r.output.split())  # one summary line per index of the settings skipped, with the reason
    assert "setting(s) of faiss[faiss] factory=IVF8,Flat" in said and said.count(" — ") >= 3  # each reason named
    r = CliRunner().invoke(cli, ["results", "--results", str(store), "--format", "json"], catch_exceptions=False)
    rows = json.loads(r.output)
    assert all(row["status"] == "ok" and row["index_bytes"] > 0 for row in rows)
    got = {(row["build_params"]["factory"], row["build_params"]["preset"], row["search_params"]["nprobe"],
            row["search_params"]["k_factor"], row["search_params"]["efSearch"]): row["recall"] for row in rows}
    # preset: nlist 4*sqrt(1000) -> 128, at most 1000/39 -> 16 lists: nprobe 64 > 16 is skipped
    assert set(got) == {("", "ivf-pq-fastscan", 2, 0, 0), ("", "ivf-pq-fastscan", 2, 8, 0),
                        ("IVF8,Flat", "none", 1, 0, 0), ("IVF8,Flat", "none", 2, 0, 0),
                        ("HNSW8", "none", 0, 0, 32)}
    assert got[("", "ivf-pq-fastscan", 2, 8, 0)] > got[("", "ivf-pq-fastscan", 2, 0, 0)]
    assert got[("HNSW8", "none", 0, 0, 32)] > 0.9
