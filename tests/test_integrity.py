"""Issue 15, section 1 (bullets 3-5) and the HDF5 cases of section 3: stored ground truth that disagrees with
the vectors, a dataset replaced mid-sweep, bad neighbour files and index-cache entries — each stops or repairs
with one line, never a silent wrong figure."""

import json
import shutil
import sqlite3

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from ann_bench.cli import cli
from ann_bench.data.vectorset import SynthSpec, synth


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def refused(r, expect):
    text = r.output.strip()
    assert r.exit_code == 2 and len(text.splitlines()) == 1 and expect in text, text
    return text


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    path = tmp_path_factory.mktemp("gt") / "base.hdf5"
    synth(path, SynthSpec(n=2000, dim=16, queries=60, clusters=5, seed=1), k=20)
    return path


def variant(tmp_path, base, name, change):
    path = tmp_path / name
    shutil.copy(base, path)
    with h5py.File(path, "r+") as f:
        change(f)
    return path


def replace(f, key, value):
    del f[key]
    f[key] = value


CASES = {
    "distances halved": (lambda f: f["distances"].write_direct(f["distances"][...] / 2),
                         "stored ground-truth distances disagree with the vectors"),
    "ids shuffled within rows": (lambda f: f["neighbors"].write_direct(f["neighbors"][...][:, ::-1].copy()),
                                 "disagree with the vectors"),
    "ids and distances both reversed": (lambda f: (f["neighbors"].write_direct(f["neighbors"][...][:, ::-1].copy()),
                                                   f["distances"].write_direct(f["distances"][...][:, ::-1].copy())),
                                        "not sorted nearest first"),
    "non-integral float ids": (lambda f: replace(f, "neighbors", f["neighbors"][...] + 0.5), "is not an integer"),
    "1-d neighbors": (lambda f: (replace(f, "neighbors", f["neighbors"][:, 0]), replace(f, "distances",
                                                                                      f["distances"][:, 0])),
                      "'neighbors' has shape (60,)"),
    "NaN distance": (lambda f: f["distances"].write_direct(np.where(np.arange(20) == 3, np.nan,
                                                                    f["distances"][...]).astype(np.float32)),
                     "is not a finite number"),
    "NaN label": (lambda f: replace(f, "train_labels", np.where(np.arange(2000) == 9, np.nan, 1.0)),
                  "row 9 has no label (nan)"),
    "dimension attribute": (lambda f: f.attrs.__setitem__("dimension", 15), "attribute dimension=15"),
    "no distance attribute": (lambda f: f.attrs.__delitem__("distance"), "has no 'distance' attribute"),
    "approximate ground truth": (lambda f: (f["neighbors"].write_direct(np.roll(f["neighbors"][...], -1, axis=1)),
                                            f["distances"].write_direct(np.roll(f["distances"][...], -1, axis=1))),
                                 "ground truth"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_ground_truth_stops_run_before_any_measurement(tmp_path, base, case):
    change, expect = CASES[case]
    path = variant(tmp_path, base, "v.hdf5", change)
    store = tmp_path / "r.sqlite"
    text = refused(invoke("run", "--dataset", path, "--backend", "flat", "--results", store), expect)
    assert "Traceback" not in text and "-k <= 0" not in text and "--metric" not in text.split(";")[0]
    assert not store.exists()  # nothing measured, no store created
    r = invoke("data", "info", path)
    assert r.exit_code in (1, 2)  # 1: info reports the problem in its verdict; 2: the file cannot be opened


def test_integral_float_ids_are_read_as_integers(tmp_path, base):
    path = variant(tmp_path, base, "f.hdf5", lambda f: replace(f, "neighbors", f["neighbors"][...].astype(float)))
    r = invoke("run", "--dataset", path, "--backend", "flat", "--runs", 1, "--in-process", "--results",
               tmp_path / "r.sqlite", "--quiet")
    assert r.exit_code == 0, r.output


def test_good_ground_truth_at_extreme_scales_passes(tmp_path, base):
    for scale in (1e-6, 1e6):
        def rescale(f, s=scale):
            for key in ("train", "test"):
                f[key].write_direct((f[key][...] * s).astype(np.float32))
            f["distances"].write_direct((f["distances"][...] * s).astype(np.float32))
        path = variant(tmp_path, base, f"s{scale:g}.hdf5", rescale)
        r = invoke("run", "--dataset", path, "--backend", "flat", "--runs", 1, "--in-process", "--results",
                   tmp_path / f"r{scale:g}.sqlite", "--quiet")
        assert r.exit_code == 0, r.output


def test_dangling_link_and_corrupted_chunk(tmp_path):
    X = np.random.default_rng(0).random((2000, 8), dtype=np.float32)
    ext = tmp_path / "ext.h5"
    with h5py.File(ext, "w") as f:
        f.attrs["distance"] = "euclidean"
        f["train"] = h5py.ExternalLink("missing.h5", "/train")
        f["test"] = X[:5]
    refused(invoke("data", "info", ext), "broken link")
    comp = tmp_path / "comp.h5"
    with h5py.File(comp, "w") as f:
        f.attrs["distance"] = "euclidean"
        f.create_dataset("train", data=X, compression="gzip", chunks=(500, 8))
        f["test"] = X[:5]
    raw = bytearray(comp.read_bytes())
    mid = len(raw) // 2
    raw[mid : mid + 2000] = bytes(b ^ 0xFF for b in raw[mid : mid + 2000])
    comp.write_bytes(bytes(raw))
    refused(invoke("run", "--dataset", comp, "--backend", "flat", "--results", tmp_path / "r.sqlite"),
            "cannot read train rows")


def test_zero_dimensional_vectors(tmp_path):
    path = tmp_path / "z.h5"
    with h5py.File(path, "w") as f:
        f.attrs["distance"] = "euclidean"
        f["train"] = np.zeros((10, 0), dtype=np.float32)
        f["test"] = np.zeros((2, 0), dtype=np.float32)
    for args in (("data", "info", path), ("run", "--dataset", path, "--backend", "flat"),
                 ("data", "import", path, "-o", tmp_path / "o.hdf5", "--metric", "euclidean")):
        refused(invoke(*args), "0-dimensional")
    np.save(tmp_path / "z.npy", np.zeros((10, 0), dtype=np.float32))
    refused(invoke("embed", "--input", tmp_path / "z.npy", "-o", tmp_path / "e.hdf5", "--test-size", 2),
            "dimension 0")


def test_neighbors_path_that_is_a_file(tmp_path, small_set):
    store = tmp_path / "r.sqlite"
    (tmp_path / "r.sqlite.neighbors").write_text("in the way")
    refused(invoke("run", "--dataset", small_set, "--backend", "flat", "--results", store), "but is a file")


# ---- the sweep's own files ---------------------------------------------------------------------------------
def _run(dataset, store, *extra):
    r = invoke("run", "--dataset", dataset, "--runs", 1, "--results", store, *extra)
    assert r.exit_code == 0, r.output
    return r.output


def test_a_bad_neighbour_file_is_named_and_measured_again(tmp_path, small_set):
    store = tmp_path / "r.sqlite"
    args = ("--backend", "hnsw", "--build", "M=8", "--search", "ef=10,20", "--in-process")
    _run(small_set, store, *args)
    files = sorted((tmp_path / "r.sqlite.neighbors").iterdir())
    files[0].write_bytes(files[0].read_bytes()[:-8] + b"\0" * 8)  # altered in place
    files[1].unlink()  # deleted
    out = _run(small_set, store, *args)
    assert out.count("measuring it again") == 2 and str(files[0]) in out and str(files[1]) in out
    assert "2 new row(s)" in out
    from ann_bench.bench.results import ResultStore

    with ResultStore(store, create=False) as s:
        for record in s.records():
            assert s.neighbors_problem(record) is None
            assert s.load_neighbors(record).shape == (100, 10)


def test_a_truncated_cached_index_is_rebuilt_and_named(tmp_path, small_set):
    store = tmp_path / "r.sqlite"
    _run(small_set, store, "--backend", "hnsw", "--build", "M=8", "--search", "ef=10", "--index-cache")
    (cached,) = (tmp_path / "cache" / "indices").rglob("*.index")
    cached.write_bytes(cached.read_bytes()[:1000])
    out = _run(small_set, store, "--backend", "hnsw", "--build", "M=8", "--search", "ef=10,20", "--index-cache")
    assert f"cached index {str(cached)!r} is unusable" in out and "rebuilding it" in out
    assert "failed" not in out
    out = _run(small_set, store, "--backend", "hnsw", "--build", "M=8", "--search", "ef=10,20,40", "--index-cache",
               "--force")
    assert "unusable" not in out and "failed" not in out
    with sqlite3.connect(store) as db:
        assert db.execute("SELECT count(*) FROM results WHERE index_cached = 1").fetchone()[0] == 3


def test_a_dataset_replaced_mid_sweep_fails_its_rows(tmp_path, small_set, monkeypatch):
    """The worker hashes what it loaded; a file swapped after planning fails the rows instead of storing them
    as ok under the old hash."""
    from ann_bench.bench.executors import local as runner

    path = tmp_path / "d.hdf5"
    shutil.copy(small_set, path)
    other = tmp_path / "other.hdf5"
    synth(other, SynthSpec(n=3000, dim=16, queries=100, clusters=10, seed=99))
    real = runner.run_in_process

    def swap_then_run(job, *a, **kw):
        shutil.copy(other, path)  # replaced after the sweep was planned, before the worker opens it
        return real(job, *a, **kw)

    monkeypatch.setattr(runner, "run_in_process", swap_then_run)
    store = tmp_path / "r.sqlite"
    r = invoke("run", "--dataset", path, "--backend", "flat", "--runs", 1, "--results", store)
    assert r.exit_code == 1, r.output  # every configuration failed: a script can tell
    assert "changed since the sweep started" in r.output and "nothing was measured" in r.output
    with sqlite3.connect(store) as db:
        assert db.execute("SELECT status FROM results").fetchall() == [("failed",)]
    rows = json.loads(invoke("results", "--results", store, "--format", "json").output)
    assert rows[0]["recall"] is None


def test_the_missing_distance_fix_that_the_message_suggests_works(tmp_path, base):
    path = variant(tmp_path, base, "nod.hdf5", lambda f: f.attrs.__delitem__("distance"))
    text = refused(invoke("run", "--dataset", path, "--backend", "flat"), "has no 'distance' attribute")
    assert "--metric M" in text
    r = invoke("data", "import", path, "-o", tmp_path / "fixed.hdf5", "--metric", "euclidean")
    assert r.exit_code == 0, r.output
    r = invoke("run", "--dataset", tmp_path / "fixed.hdf5", "--backend", "flat", "--runs", 1, "--in-process",
               "--results", tmp_path / "r.sqlite", "--quiet")
    assert r.exit_code == 0, r.output
