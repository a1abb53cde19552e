"""Issue 31, the store's edges and the dataset's identity: every case that used to give a silently wrong figure,
lose a measured row or leave files the user did not name, as a test."""

import multiprocessing as mp
import os
import sqlite3
import string

import h5py
import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ann_bench.bench.results import ResultStore
from ann_bench.cli import cli
from ann_bench.data.vectorset import VectorSet


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def ok(*args):
    r = invoke(*args)
    assert r.exit_code == 0, r.output
    return r.output


def one_line(r, expect=""):
    text = r.output.strip()
    assert r.exit_code == 2, text
    assert "Traceback" not in text and len(text.splitlines()) == 1 and text.startswith("error:"), text
    assert expect in text, text
    return text


def run(dataset, store, *extra):
    return ok("run", "--dataset", dataset, "--backend", "flat", "--runs", 1, "--in-process", "--results", store,
              *extra)


def _copy_with_labels(src, dst, train_labels, test_labels):
    with h5py.File(src) as f, h5py.File(dst, "w") as g:
        for key in ("train", "test", "neighbors", "distances"):
            g.create_dataset(key, data=f[key][...])
        for key, value in f.attrs.items():
            if key != "name":  # named by their file names
                g.attrs[key] = value
        g.create_dataset("train_labels", data=train_labels)
        g.create_dataset("test_labels", data=test_labels)


# ---- the dataset's identity -------------------------------------------------------------------------------
def test_labels_keys_and_ground_truth_are_in_the_identity(tmp_path, small_set):
    with h5py.File(small_set) as f:
        train_labels, test_labels = f["train_labels"][...], f["test_labels"][...]
    shuffled = np.random.default_rng(0).permutation(train_labels)
    a, b = tmp_path / "a.hdf5", tmp_path / "b.hdf5"
    _copy_with_labels(small_set, a, train_labels, test_labels)
    _copy_with_labels(small_set, b, shuffled, test_labels)
    with VectorSet(a) as va, VectorSet(b) as vb:
        assert va.vectors_hash() == vb.vectors_hash()
        assert va.content_hash() != vb.content_hash()
    store = tmp_path / "r.sqlite"
    first = run(a, store, "-k", 10)
    second = run(b, store, "-k", 10)
    assert "already in the store" not in second  # measured again, not the first set's row
    with ResultStore(store, create=False) as s:
        p = {r.dataset_name: r.label_metrics["precision_at_10"] for r in s.records()}
    assert p["a"] > 0.9 and p["b"] < 0.3, (p, first, second)


def test_identity_is_the_content_not_how_labels_are_stored(tmp_path, small_set):
    with h5py.File(small_set) as f:
        train_labels, test_labels = f["train_labels"][...], f["test_labels"][...]
    a, b = tmp_path / "a.hdf5", tmp_path / "b.hdf5"
    _copy_with_labels(small_set, a, train_labels.astype(np.int32), test_labels.astype(np.int32))
    _copy_with_labels(small_set, b, train_labels.astype(np.int64), test_labels.astype(np.int64))
    with VectorSet(a) as va, VectorSet(b) as vb:
        assert va.content_hash() == vb.content_hash()


def _two_names(small_set, tmp_path):
    """Two copies of ``small_set`` with the same content: a.hdf5 and b.hdf5."""
    with h5py.File(small_set) as f:
        train_labels, test_labels = f["train_labels"][...], f["test_labels"][...]
    a, b = tmp_path / "a.hdf5", tmp_path / "b.hdf5"
    _copy_with_labels(small_set, a, train_labels, test_labels)
    _copy_with_labels(small_set, b, train_labels, test_labels)
    return a, b


def test_one_content_under_two_names_is_one_dataset_chosen_by_any_name(tmp_path, small_set):
    a, b = _two_names(small_set, tmp_path)
    store = tmp_path / "r.sqlite"
    run(a, store)
    assert "0 new row(s)" in run(b, store)  # the same content: its rows are there already
    with VectorSet(a) as vs:
        digest = vs.content_hash()
    for choice in (a, b, "a", "b", str(b.resolve()), digest, digest[:8]):
        out = ok("best", "--results", store, "--recall", "0.9", "--dataset", choice)
        assert "winner" in out, (choice, out)
    ok("best", "--results", store, "--recall", "0.9")  # one dataset: no --dataset needed
    ok("plot", "--results", store, "-o", tmp_path / "p.png", "--dataset", "b")


def test_rows_measured_under_two_names_of_one_content_are_one_dataset(tmp_path, small_set):
    # The second name adds rows of its own (another backend): best/plot/report/index --from-best saw two
    # datasets, "a (hash)" and "b (hash)", and refused even with --dataset a.
    a, b = _two_names(small_set, tmp_path)
    store = tmp_path / "r.sqlite"
    run(a, store)
    assert "0 new row(s)" not in run(b, store, "--backend", "hnsw", "--build", "M=8", "--search", "ef=40")
    for choice in (None, a, "b"):
        extra = () if choice is None else ("--dataset", choice)
        assert "winner" in ok("best", "--results", store, "--recall", "0.9", *extra)
        ok("plot", "--results", store, "-o", tmp_path / "p.png", "--force", *extra)
    ok("report", "--results", store, "-o", tmp_path / "r.html")
    ok("index", "build", "--from-best", "--results", store, "--recall", "0.9", "-o", tmp_path / "idx")


def test_dataset_filter_is_not_an_sql_pattern(tmp_path, small_set):
    store = tmp_path / "r.sqlite"
    run(small_set, store)
    for pattern in ("%", "_", "%%%%"):
        one_line(invoke("results", "--results", store, "--dataset", pattern), "holds")


# ---- one store, its own files ------------------------------------------------------------------------------
def test_two_stores_with_one_stem_keep_their_neighbour_files_apart(tmp_path, small_set):
    one, two = tmp_path / "r.sqlite", tmp_path / "r.db"
    run(small_set, one)
    run(small_set, two, "-k", 5)
    assert (tmp_path / "r.sqlite.neighbors").is_dir() and (tmp_path / "r.db.neighbors").is_dir()
    for store in (one, two):
        with ResultStore(store, create=False) as s:
            for r in s.records():
                assert s.neighbors_problem(r) is None
                assert r.neighbors_file.startswith(store.name + ".neighbors")


def test_a_store_named_like_a_folder_of_another(tmp_path, small_set):
    run(small_set, tmp_path / "st.sqlite")
    one_line(invoke("run", "--dataset", small_set, "--backend", "flat", "--results",
                    tmp_path / "st.sqlite.neighbors"), "is a directory")
    (tmp_path / "x.sqlite.tunes").write_text("mine")
    r = invoke("run", "--dataset", small_set, "--backend", "flat", "--results", tmp_path / "x.sqlite")
    one_line(r, "should be a folder of the store")
    assert (tmp_path / "x.sqlite.tunes").read_text() == "mine" and not (tmp_path / "x.sqlite").exists()
    # a store whose own name ends in .neighbors is fine: its folder is st.neighbors.neighbors
    run(small_set, tmp_path / "st.neighbors")


def test_a_store_name_too_long_for_its_folder_is_one_line_and_creates_nothing(tmp_path, small_set):
    name = "s" * 240 + ".sqlite"  # fits itself, not with '.neighbors'
    before = set(os.listdir(tmp_path))
    one_line(invoke("run", "--dataset", small_set, "--backend", "flat", "--results", tmp_path / name), "bytes")
    assert set(os.listdir(tmp_path)) == before


def test_a_failed_forced_rerun_keeps_the_measured_row(tmp_path, small_set):
    store = tmp_path / "r.sqlite"
    args = ("--backend", "hnsw", "--build", "M=8", "--search", "ef=10,40", "--runs", 1)
    ok("run", "--dataset", small_set, "--results", store, *args)
    r = invoke("run", "--dataset", small_set, "--results", store, *args, "--force", "--memory-limit", "1MB")
    assert r.exit_code == 1 and "kept beside this failure" in r.output  # 1: nothing was measured
    assert "*hnsw" not in r.output  # the rows it shows were measured before, not now
    with ResultStore(store, create=False) as s:
        rows = s.records()
    measured = [r for r in rows if r.status == "ok"]
    failed = [r for r in rows if r.status != "ok"]
    assert len(measured) == 2 and len(failed) == 2 and all(r.recall > 0.5 for r in measured)
    ok("run", "--dataset", small_set, "--results", store, *args, "--force")  # measured again: failures dropped
    with ResultStore(store, create=False) as s:
        assert sorted(r.status for r in s.records()) == ["ok", "ok"]


def _create(path, barrier, errors):
    barrier.wait()
    try:
        with ResultStore(path):
            pass
    except Exception as exc:  # noqa: BLE001 - reported to the parent
        errors.put(repr(exc))


def test_two_runs_creating_one_store_at_once(tmp_path):
    ctx = mp.get_context("fork")
    for attempt in range(10):
        path = tmp_path / f"s{attempt}.sqlite"
        barrier, errors = ctx.Barrier(2), ctx.Queue()
        procs = [ctx.Process(target=_create, args=(path, barrier, errors)) for _ in range(2)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(30)
        assert errors.empty(), errors.get()
        with ResultStore(path, create=False):
            pass
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_read_only_commands_leave_a_foreign_wal_database_alone(tmp_path):
    foreign = tmp_path / "app.db"
    db = sqlite3.connect(foreign)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE t (x)")
    db.execute("INSERT INTO t VALUES (1)")
    db.commit()
    db.close()
    before = {p: (tmp_path / p).read_bytes() for p in os.listdir(tmp_path)}
    for args in (("results",), ("best", "--recall", "0.9"), ("plot", "-o", tmp_path / "p.png"),
                 ("report", "-o", tmp_path / "r.html")):
        one_line(invoke(*args, "--results", foreign), "not an ann-bench results store")
    after = {p: (tmp_path / p).read_bytes() for p in os.listdir(tmp_path)}
    assert after == before


def test_our_store_at_rest_is_one_file(tmp_path, small_set):
    store = tmp_path / "r.sqlite"
    run(small_set, store)
    ok("results", "--results", store)
    ok("best", "--results", store, "--recall", "0.9")
    assert sorted(os.listdir(tmp_path)) == ["r.sqlite", "r.sqlite.neighbors"]


# ---- arbitrary names: one line or success, nothing of the user's changed -------------------------------------
NAME = st.text(alphabet=st.sampled_from(string.ascii_letters + "[]$%*_ -é中😀'\"<>"), min_size=1, max_size=300)


@settings(max_examples=20, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=NAME)
def test_any_results_and_dataset_name(tmp_path_factory, small_set, name):
    folder = tmp_path_factory.mktemp("names")
    mine = folder / "mine.txt"
    mine.write_text("the user's")
    name = name.lstrip("-") or "x"
    store = folder / name
    r = invoke("run", "--dataset", small_set, "--backend", "flat", "--runs", 1, "--in-process", "--results", store)
    if r.exit_code == 0:
        assert ResultStore(store, create=False).records()
        ok("results", "--results", store, "--dataset", small_set.name)
        one_line(invoke("results", "--results", store, "--dataset", name), "")  # a name no set was run under
    else:
        one_line(r)
        assert sorted(os.listdir(folder)) == ["mine.txt"]
    assert mine.read_text() == "the user's"


# ---- tune's edges --------------------------------------------------------------------------------------------
def test_tune_refuses_a_value_for_its_bisected_effort_parameter(tmp_path, small_set):
    r = invoke("tune", "--dataset", small_set, "--backend", "ivf", "--search", "nprobe=3", "--results",
               tmp_path / "r.sqlite", "--budget", "10")
    one_line(r, "nprobe is ivf[faiss]'s effort parameter")
    assert not (tmp_path / "r.sqlite").exists()


def test_a_dataset_replaced_mid_tune_stops_it_in_one_line(tmp_path, small_set):
    from ann_bench.bench.jobs import Reporter, RunOptions
    from ann_bench.bench.tune import TuneOptions, run_tune
    from ann_bench.data.vectorset import SynthSpec, synth
    from ann_bench.errors import InputError

    path, other = tmp_path / "m.hdf5", tmp_path / "other.hdf5"
    path.write_bytes(small_set.read_bytes())
    synth(other, SynthSpec(n=3000, dim=16, queries=100, clusters=10, seed=99))

    class Swapper(Reporter):
        def log(self, text):
            if text.startswith("trial 1") and other.exists():
                os.replace(other, path)  # the next trial's worker reads the other vectors

    options = TuneOptions(backends=("hnsw",), trials=4, budget_s=600.0)
    with VectorSet(path) as vs, ResultStore(tmp_path / "r.sqlite") as store:
        with pytest.raises(InputError, match="changed while tune ran, so trial 2 measured nothing"):
            run_tune(vs, options, RunOptions(runs=1), store, Swapper())
    log = next((tmp_path / "r.sqlite.tunes").glob("*.json")).read_text()
    assert "changed since the sweep started" in log  # the failed trial's reason is logged


@pytest.mark.parametrize("edit", ['{"version": 3', "[1, 2]", "trial values", "answer target"])
def test_a_malformed_tune_log_is_one_line(tmp_path, small_set, edit):
    import json

    store = tmp_path / "r.sqlite"
    ok("tune", "--dataset", small_set, "--backend", "hnsw", "--trials", 2, "--results", store)
    log = next((tmp_path / "r.sqlite.tunes").glob("*.json"))
    data = json.loads(log.read_text())
    if edit == "trial values":
        data["trials"][0]["values"] = "x"
        text = json.dumps(data)
    elif edit == "answer target":
        data["answers"] = [{"target": "high", "row_key": 3}]
        text = json.dumps(data)
    else:
        text = edit
    log.write_text(text)
    one_line(invoke("plot", "--results", store, "--tune", log.stem, "-o", tmp_path / "t.png"), str(log.name))
