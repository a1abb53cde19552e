"""Issue 15, section 4: property-based tests (Hypothesis) of the readers and parsers.

For any generated input, each command either succeeds with correct figures, or exits 2 with one ``error:`` line
— never a traceback, never a changed input file. Examples are derandomized (the same on every CI run) and sized
so the whole file runs in well under a minute on two cores.
"""

import hashlib
import math
import string

import h5py
import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from ann_bench.cli import cli
from ann_bench.data.formats import read_vectors, write_bin, write_vecs

FAST = settings(max_examples=25, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=True)


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def assert_ok_or_one_line(result) -> bool:
    """True on success; on failure assert the failure is exit 2 with one ``error:`` line and no traceback."""
    if result.exit_code == 0:
        return True
    text = result.output.strip()
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"uncaught {type(result.exception).__name__}: {result.exception}\n{text}")
    assert result.exit_code == 2, text
    assert "Traceback" not in text, text
    assert len(text.splitlines()) == 1 and text.startswith("error:"), text
    return False


# ---- vector files ---------------------------------------------------------------------------------------
finite32 = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, width=32)
shapes = st.tuples(st.integers(2, 40), st.integers(1, 6))


@FAST
@given(X=hnp.arrays(np.float32, shapes, elements=finite32), fmt=st.sampled_from([".fvecs", ".fbin", ".npy"]))
def test_vector_files_round_trip(tmp_path_factory, X, fmt):
    """Any finite float32 (n, d) written in a supported format reads back bit for bit."""
    path = tmp_path_factory.mktemp("v") / f"x{fmt}"
    if fmt == ".fvecs":
        write_vecs(path, X)
    elif fmt == ".fbin":
        write_bin(path, X)
    else:
        np.save(path, X)
    np.testing.assert_array_equal(np.asarray(read_vectors(path)), X)


@FAST
@given(blob=st.binary(min_size=0, max_size=300),
       fmt=st.sampled_from([".fvecs", ".ivecs", ".bvecs", ".fbin", ".u8bin", ".i8bin", ".ibin", ".npy"]))
def test_import_of_arbitrary_bytes(tmp_path_factory, blob, fmt):
    """Random bytes under any vector suffix: `data import` succeeds or says why in one line; the input file is
    never changed and a failure leaves no output."""
    d = tmp_path_factory.mktemp("b")
    src = d / f"in{fmt}"
    src.write_bytes(blob)
    before = digest(src)
    r = invoke("data", "import", src, "-o", d / "out.hdf5", "--metric", "euclidean", "--test-size", 1, "-k", 5)
    ok = assert_ok_or_one_line(r)
    assert digest(src) == before
    assert (d / "out.hdf5").exists() == ok
    assert [p.name for p in d.iterdir() if p.name.startswith(".")] == []  # no temporary file left


@FAST
@given(X=hnp.arrays(np.float32, st.tuples(st.integers(3, 30), st.integers(1, 5)),
                    elements=st.floats(allow_nan=True, allow_infinity=True, width=32)),
       k=st.integers(-3, 40), test_size=st.integers(-1, 40))
def test_import_npy_of_any_floats(tmp_path_factory, X, k, test_size):
    """Any float32 array (NaN, inf, huge) with any -k and --test-size: an exact round trip of the kept rows, or
    one line."""
    d = tmp_path_factory.mktemp("n")
    src = d / "x.npy"
    np.save(src, X)
    before = digest(src)
    r = invoke("data", "import", src, "-o", d / "o.hdf5", "--metric", "euclidean", "--test-size", test_size,
               "-k", k)
    ok = assert_ok_or_one_line(r)
    assert digest(src) == before
    if ok:
        assert np.isfinite(X).all() and k >= 1 and 1 <= test_size < len(X)
        with h5py.File(d / "o.hdf5") as f:
            rows = np.concatenate([f["train"][...], f["test"][...]])
            assert sorted(map(bytes, rows)) == sorted(map(bytes, X))  # the same rows, split
            assert f["neighbors"].shape == (test_size, min(k, len(X) - test_size))


def test_fvecs_with_a_changed_header_deep_in_the_file(tmp_path):
    """Hand-written case: a header that changes after the first thousand records is still found."""
    path = tmp_path / "x.fvecs"
    write_vecs(path, np.ones((3000, 4), dtype=np.float32))
    raw = bytearray(path.read_bytes())
    raw[2500 * 20 : 2500 * 20 + 4] = np.int32(5).tobytes()
    path.write_bytes(bytes(raw))
    r = invoke("data", "import", path, "-o", tmp_path / "o.hdf5", "--metric", "euclidean", "--test-size", 10)
    assert not assert_ok_or_one_line(r)
    assert "vector 2500 has dimension 5" in r.output


@pytest.mark.parametrize("k", [-5, 0])
def test_import_depth_must_be_positive(tmp_path, k):
    src = tmp_path / "x.npy"
    np.save(src, np.ones((20, 3), dtype=np.float32))
    r = invoke("data", "import", src, "-o", tmp_path / "o.hdf5", "--metric", "euclidean", "--test-size", 5, "-k", k)
    assert not assert_ok_or_one_line(r)
    assert f"got {k}" in r.output and not (tmp_path / "o.hdf5").exists()


# ---- HDF5 vector sets -----------------------------------------------------------------------------------
@st.composite
def hdf5_sets(draw):
    """An ann-benchmarks-like file with random variations: dtypes, shapes, attributes, ground truth, labels."""
    n = draw(st.integers(1, 30))
    nq = draw(st.integers(1, 6))
    d = draw(st.integers(0, 4))
    dtype = draw(st.sampled_from([np.float32, np.float64, np.int32, np.uint8, np.float16]))
    nan = st.just(float("nan")) if draw(st.booleans()) else st.nothing()
    elements = (st.one_of(st.floats(-100, 100, width=16), nan) if dtype == np.float16 else
                st.integers(0, 255) if dtype == np.uint8 else st.integers(-100, 100) if dtype == np.int32 else
                st.one_of(st.floats(-100, 100), nan))
    train = draw(hnp.arrays(dtype, (n, d), elements=elements))
    test = draw(hnp.arrays(dtype, (nq, d), elements=elements))
    spec = {"train": train, "test": test}
    attrs = {}
    metric = draw(st.sampled_from(["euclidean", "angular", "ip", "cosine", "hamming", None, "L2"]))
    if metric is not None:
        attrs["distance"] = metric
    if draw(st.booleans()):
        attrs["dimension"] = draw(st.sampled_from([d, d + 1, -1]))
    gt = draw(st.sampled_from(["none", "exact", "float_ids", "one_d", "nan", "shuffled", "halved"]))
    if gt != "none" and d > 0:
        X, Q = train.astype(np.float64), test.astype(np.float64)
        D = np.sqrt(((Q[:, None, :] - X[None, :, :]) ** 2).sum(-1))
        I = np.argsort(D, axis=1, kind="stable")
        Ds = np.take_along_axis(D, I, axis=1)
        if gt == "float_ids":
            I = I.astype(np.float64)
        elif gt == "one_d":
            I, Ds = I[:, 0], Ds[:, 0]
        elif gt == "nan":
            Ds = Ds.copy()
            Ds[0, 0] = np.nan
        elif gt == "shuffled" and n > 1:
            I = I[:, ::-1]
        elif gt == "halved":
            Ds = Ds / 2
        spec["neighbors"], spec["distances"] = I, Ds
    labels = draw(st.sampled_from(["none", "ints", "nan", "strings", "wrong_shape"]))
    if labels == "ints":
        spec["train_labels"], spec["test_labels"] = np.arange(n) % 3, np.arange(nq) % 3
    elif labels == "nan":
        spec["train_labels"], spec["test_labels"] = np.full(n, np.nan), np.zeros(nq)
    elif labels == "strings":
        spec["train_labels"] = np.array([f"c{i % 2}" for i in range(n)], dtype="S3")
        spec["test_labels"] = np.array([b"c0"] * nq, dtype="S3")
    elif labels == "wrong_shape":
        spec["train_labels"], spec["test_labels"] = np.zeros(n + 1), np.zeros(nq)
    return spec, attrs


@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(case=hdf5_sets())
def test_info_and_run_on_any_hdf5(tmp_path_factory, case):
    """`data info` and `run --backend flat` on a random HDF5 variant: run either measures recall 1.0 (flat is
    exact) or exits 2 with one line; the file is never changed."""
    spec, attrs = case
    d = tmp_path_factory.mktemp("h")
    path = d / "s.hdf5"
    with h5py.File(path, "w") as f:
        for key, value in attrs.items():
            f.attrs[key] = value
        for key, value in spec.items():
            f[key] = value
    before = digest(path)
    r = invoke("data", "info", path, "--json")
    assert r.exit_code in (0, 1, 2), r.output  # 1: a valid report that says "invalid"
    if r.exit_code == 2:
        assert_ok_or_one_line(r)
    store = d / "r.sqlite"
    r = invoke("run", "--dataset", path, "--backend", "flat", "-k", 1, "--runs", 1, "--in-process",
               "--results", store, "--quiet")
    if assert_ok_or_one_line(r):
        import sqlite3

        with sqlite3.connect(store) as db:
            rows = db.execute("SELECT status, recall FROM results").fetchall()
        assert rows and all(status == "ok" and math.isclose(recall, 1.0) for status, recall in rows), rows
    assert digest(path) == before


# ---- parameters and filters -----------------------------------------------------------------------------
param_text = st.text(alphabet=string.ascii_letters + string.digits + "=,:;._-+ []$<>e", max_size=24)


@FAST
@given(build=param_text, search=param_text)
def test_parameter_specs(small_set, tmp_path_factory, build, search):
    """Any --build/--search text: a valid sweep (planned without error) or one line."""
    from ann_bench.errors import InputError
    from ann_bench.bench.runner import plan_sweep

    try:
        plan_sweep(["hnsw", "ivf"], 3000, 16, "euclidean", build_specs=[build], search_specs=[search])
    except InputError as exc:
        assert "\n" not in str(exc)


@pytest.fixture(scope="module")
def small_store(tmp_path_factory, small_set):
    store = tmp_path_factory.mktemp("s") / "r.sqlite"
    r = CliRunner().invoke(cli, ["run", "--dataset", str(small_set), "--backend", "hnsw", "--build", "M=8",
                                 "--search", "ef=10,20", "--runs", "1", "--in-process", "--results", str(store),
                                 "--quiet"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    return store


where_text = st.one_of(
    st.text(alphabet=string.ascii_letters + string.digits + "=!<>._-[]$ ", max_size=20),
    st.tuples(st.sampled_from(["recall", "qps", "M", "ef", "backend", "status", "k", "dataset", "index_mb",
                               "precision_at_10", "nope"]),
              st.sampled_from(["=", "!=", ">=", "<=", ">", "<"]),
              st.one_of(st.floats(allow_nan=True).map(repr), st.sampled_from(["hnsw", "ok", "", "nan", "1e400"])))
    .map("".join),
)


@FAST
@given(where=where_text)
def test_results_where(small_store, where):
    """Any --where: rows that satisfy it (checked against the JSON export), or one line."""
    import json

    before = digest(small_store)
    r = invoke("results", "--results", small_store, "--where", where, "--format", "json")
    if assert_ok_or_one_line(r):
        rows = json.loads(r.output) if r.output.strip() else []
        assert len(rows) <= 2
    assert digest(small_store) == before


@FAST
@given(labels=st.one_of(
    hnp.arrays(st.sampled_from([np.int64, np.float64, np.int8, np.bool_]), st.integers(0, 25)),
    hnp.arrays(np.int32, st.tuples(st.integers(1, 20), st.integers(1, 3)))))
def test_import_labels_files(tmp_path_factory, labels):
    """Any labels array beside 20 vectors: imported with the vectors (one label each) or one line."""
    d = tmp_path_factory.mktemp("l")
    src, lab = d / "x.npy", d / "labels.npy"
    np.save(src, np.arange(60, dtype=np.float32).reshape(20, 3))
    np.save(lab, labels)
    before = digest(lab)
    r = invoke("data", "import", src, "-o", d / "o.hdf5", "--metric", "euclidean", "--labels", lab,
               "--test-size", 5, "-k", 3)
    if assert_ok_or_one_line(r):
        assert labels.shape == (20,)
        with h5py.File(d / "o.hdf5") as f:
            assert f["train_labels"].shape == (15,) and f["test_labels"].shape == (5,)
    assert digest(lab) == before
