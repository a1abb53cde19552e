import h5py
import numpy as np
import pytest

from ann_bench.data.vectorset import SynthSpec, VectorSet, synth_arrays, validate, write_vectorset
from ann_bench.errors import InputError


def ann_benchmarks_read(path):
    """What ann-benchmarks' own reader does with a dataset file (ann_benchmarks/datasets.py, runner.py)."""
    f = h5py.File(path, "r")
    dimension = int(f.attrs["dimension"]) if "dimension" in f.attrs else len(f["train"][0])
    distance = f.attrs["distance"]
    point_type = f.attrs.get("point_type", "float")
    assert f.attrs.get("type", "dense") == "dense"
    X_train, X_test = np.array(f["train"]), np.array(f["test"])
    neighbors, distances = np.array(f["neighbors"]), np.array(f["distances"])
    f.close()
    return dimension, distance, point_type, X_train, X_test, neighbors, distances


def test_round_trip_and_ann_benchmarks_reader(tmp_path, small_arrays):
    train, test, tl, ql = small_arrays
    path = write_vectorset(tmp_path / "s.hdf5", train, test, "euclidean", train_labels=tl, test_labels=ql,
                           attrs={"source": "test"})
    with VectorSet(path) as vs:
        np.testing.assert_array_equal(vs.load_train(), train)
        np.testing.assert_array_equal(vs.test, test)
        np.testing.assert_array_equal(vs.labels("train"), tl)
        assert (vs.metric, vs.dim, vs.n_train, vs.n_test, vs.gt_depth) == ("euclidean", 16, 3000, 100, 100)
        assert vs.attrs["source"] == "test"
        assert validate(vs).ok
        I = vs.neighbors
    dim, distance, point_type, Xtr, Xte, nb, dist = ann_benchmarks_read(path)
    assert (dim, distance, point_type) == (16, "euclidean", "float")
    np.testing.assert_array_equal(Xtr, train)
    np.testing.assert_array_equal(nb, I)
    assert dist.shape == nb.shape == (100, 100)
    assert not list(tmp_path.glob(".*.tmp")), "no temporary file left behind"


def test_reads_a_file_written_like_ann_benchmarks(tmp_path, rng):
    # ann-benchmarks writes only the 'distance' and 'point_type' attrs, int64/float64 ground truth.
    X = rng.normal(size=(200, 5)).astype(np.float32)
    Q = rng.normal(size=(7, 5)).astype(np.float32)
    from ann_bench.data.groundtruth import exact_knn

    D, I = exact_knn(X, Q, "angular", 100)
    with h5py.File(tmp_path / "ab.hdf5", "w") as f:
        f.attrs["distance"] = "angular"
        f.attrs["point_type"] = "float"
        f.create_dataset("train", data=X)
        f.create_dataset("test", data=Q)
        f.create_dataset("neighbors", data=I.astype(int))
        f.create_dataset("distances", data=D.astype(float))
    with VectorSet(tmp_path / "ab.hdf5") as vs:
        assert vs.metric == "angular" and vs.dim == 5
        verdict = validate(vs)
        assert verdict.ok, verdict.problems
        assert any("dimension" in w for w in verdict.warnings)


def test_synth_is_deterministic_clustered_and_labelled():
    spec = SynthSpec(n=2000, dim=32, queries=50, clusters=5, seed=3)
    a = synth_arrays(spec)
    b = synth_arrays(spec)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    c = synth_arrays(SynthSpec(n=2000, dim=32, queries=50, clusters=5, seed=4))
    assert not np.array_equal(a[0], c[0])
    train, test, labels, _ = a
    assert train.dtype == np.float32 and train.shape == (2000, 32) and set(labels) == set(range(5))
    # Clustered, not uniform noise: points are much nearer their own cluster mean than the global mean.
    within = np.mean([np.linalg.norm(train[labels == c] - train[labels == c].mean(0), axis=1).mean()
                      for c in range(5)])
    overall = np.linalg.norm(train - train.mean(0), axis=1).mean()
    assert within < 0.65 * overall  # uniform noise gives ~1.0
    # Low-dimensional subspaces: a cluster's variance is concentrated in few directions.
    s = np.linalg.svd(train[labels == 0] - train[labels == 0].mean(0), compute_uv=False) ** 2
    assert s[: spec.resolved_subspace()].sum() / s.sum() > 0.6  # isotropic: r/d = 0.25


def test_angular_synth_is_normalised():
    train, test, _, _ = synth_arrays(SynthSpec(n=500, dim=8, queries=10, clusters=3, metric="angular"))
    np.testing.assert_allclose(np.linalg.norm(train, axis=1), 1, rtol=1e-5)


def _write_raw(path, **arrays):
    with h5py.File(path, "w") as f:
        f.attrs["distance"] = arrays.pop("distance", "euclidean")
        for k, v in arrays.items():
            f.create_dataset(k, data=v)
    return path


@pytest.mark.parametrize("case, message", [
    ("missing", "does not exist"),
    ("not_hdf5", "not an HDF5 file"),
    ("no_test", "has no 'test' array"),
    ("dim_mismatch", "dimension mismatch"),
    ("empty", "empty train or test"),
    ("bad_metric", "unknown metric 'hamming'"),
])
def test_open_rejects_bad_files(tmp_path, case, message):
    X = np.ones((10, 4), dtype=np.float32)
    path = tmp_path / "bad.hdf5"
    if case == "not_hdf5":
        path.write_text("hello")
    elif case == "no_test":
        _write_raw(path, train=X)
    elif case == "dim_mismatch":
        _write_raw(path, train=X, test=np.ones((2, 5), dtype=np.float32))
    elif case == "empty":
        _write_raw(path, train=X, test=np.ones((0, 4), dtype=np.float32))
    elif case == "bad_metric":
        _write_raw(path, train=X, test=X[:2], distance="hamming")
    with pytest.raises(InputError, match=message):
        VectorSet(path)


def test_validate_finds_nan_zero_vectors_and_bad_groundtruth(tmp_path, rng):
    X = rng.normal(size=(50, 4)).astype(np.float32)
    Q = rng.normal(size=(3, 4)).astype(np.float32)
    bad = X.copy()
    bad[7, 2] = np.nan
    with VectorSet(_write_raw(tmp_path / "nan.hdf5", train=bad, test=Q)) as vs:
        assert "train vector 7" in validate(vs).problems[0]
    zero = X.copy()
    zero[3] = 0
    with VectorSet(_write_raw(tmp_path / "zero.hdf5", train=zero, test=Q, distance="angular")) as vs:
        assert "all zeros" in validate(vs).problems[0]
    I = np.tile(np.arange(10), (3, 1))
    I_dup = I.copy()
    I_dup[1, 4] = 0
    with VectorSet(_write_raw(tmp_path / "dup.hdf5", train=X, test=Q, neighbors=I_dup,
                              distances=np.zeros((3, 10)))) as vs:
        assert "lists an id twice" in validate(vs).problems[0]
    I_oor = I.copy()
    I_oor[2, 0] = 50
    with VectorSet(_write_raw(tmp_path / "oor.hdf5", train=X, test=Q, neighbors=I_oor,
                              distances=np.zeros((3, 10)))) as vs:
        assert "out of range" in validate(vs).problems[0]
    with VectorSet(_write_raw(tmp_path / "wrong.hdf5", train=X, test=Q, neighbors=I,
                              distances=np.tile(np.arange(10.0), (3, 1)))) as vs:
            assert any("disagree with the vectors" in p for p in validate(vs).problems)


def test_content_hash_ignores_the_name_and_covers_what_figures_depend_on(tmp_path, small_arrays):
    train, test, train_labels, test_labels = small_arrays
    a = write_vectorset(tmp_path / "a.hdf5", train, test, "euclidean", attrs={"name": "one"})
    a2 = write_vectorset(tmp_path / "a2.hdf5", train, test, "euclidean", attrs={"name": "two"})
    b = write_vectorset(tmp_path / "b.hdf5", train, test, "euclidean", k=10)  # other ground truth (depth)
    c = write_vectorset(tmp_path / "c.hdf5", train, test, "angular")
    d = write_vectorset(tmp_path / "d.hdf5", train, test, "euclidean", train_labels=train_labels,
                        test_labels=test_labels)
    with VectorSet(a) as va, VectorSet(a2) as va2, VectorSet(b) as vb, VectorSet(c) as vc, VectorSet(d) as vd:
        assert va.content_hash() == va2.content_hash()
        assert len({va.content_hash(), vb.content_hash(), vc.content_hash(), vd.content_hash()}) == 4
        assert va.vectors_hash() == vb.vectors_hash() == vd.vectors_hash() != vc.vectors_hash()
        h, v = va.content_hash(), va.vectors_hash()
        va._hash = va._content_hash = None
        va.load_train()
        assert va.vectors_hash() == v and va.content_hash() == h  # the same whether hashed while loading or not


def test_failed_write_leaves_nothing(tmp_path, small_arrays):
    train, test, _, _ = small_arrays
    with pytest.raises(InputError):
        write_vectorset(tmp_path / "x.hdf5", train, test[:, :3], "euclidean")
    with pytest.raises(InputError, match="NaN"):
        write_vectorset(tmp_path / "x.hdf5", np.full_like(train, np.nan), test, "euclidean")
    with pytest.raises(TypeError):  # fails inside the HDF5 write: the temporary file must go too
        write_vectorset(tmp_path / "x.hdf5", train, test, "euclidean", neighbors=np.zeros((100, 5)),
                        distances=np.zeros((100, 5)), train_labels=[object()] * 3000)
    assert list(tmp_path.iterdir()) == []


def test_written_files_get_the_usual_permissions(tmp_path, small_arrays):
    import os
    import stat

    train, test, _, _ = small_arrays
    path = write_vectorset(tmp_path / "p.hdf5", train, test, "euclidean")
    mask = os.umask(0o022)
    os.umask(mask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask
