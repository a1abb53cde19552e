"""Issue 15, section 2: no user file is ever overwritten or converted by accident; full disks and SIGTERM leave
nothing half-written. Each case runs the real command."""

import errno
import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
import time

import numpy as np
import pytest
from click.testing import CliRunner

from ann_bench.cli import cli
from ann_bench.data.formats import write_vecs


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def digest(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def refused(r, expect):
    text = r.output.strip()
    assert r.exit_code == 2 and len(text.splitlines()) == 1 and expect in text, text
    return text


@pytest.fixture(scope="module")
def store(tmp_path_factory, small_set):
    path = tmp_path_factory.mktemp("store") / "r.sqlite"
    r = invoke("run", "--dataset", small_set, "--backend", "flat", "--runs", 1, "--in-process", "--results", path,
               "--quiet")
    assert r.exit_code == 0, r.output
    return path


# ---- never over an input, a store or a dataset --------------------------------------------------------------
def test_import_onto_its_own_input(tmp_path):
    src = tmp_path / "v.fvecs"
    write_vecs(src, np.random.default_rng(0).random((100, 4), dtype=np.float32))
    before = digest(src)
    refused(invoke("data", "import", src, "-o", src, "--metric", "euclidean", "--test-size", 10),
            "is also an input")
    os.symlink(src, tmp_path / "link.fvecs")
    refused(invoke("data", "import", src, "-o", tmp_path / "link.fvecs", "--metric", "euclidean", "--test-size", 10),
            "is also an input")
    os.link(src, tmp_path / "hard.fvecs")
    refused(invoke("data", "import", tmp_path / "hard.fvecs", "-o", src, "--metric", "euclidean", "--test-size", 10,
                   "--force"), "is also an input")
    assert digest(src) == before


def test_exports_and_reports_never_replace_a_store_or_a_dataset(tmp_path, store, small_set):
    before = (digest(store), digest(small_set))
    refused(invoke("results", "--results", store, "--format", "csv", "-o", store), "is also an input")
    other = tmp_path / "other.sqlite"
    import shutil

    shutil.copy(store, other)
    refused(invoke("results", "--results", store, "--format", "csv", "-o", other, "--force"),
            "is an ann-bench results store")
    refused(invoke("report", "--results", store, "-o", store), "is also an input")
    refused(invoke("report", "--results", store, "-o", small_set, "--force"), "is an HDF5 file")
    refused(invoke("plot", "--results", store, "-o", small_set), "is an HDF5 file")
    assert (digest(store), digest(small_set)) == before


def test_embed_onto_its_labels(tmp_path):
    feats, labels = tmp_path / "f.npy", tmp_path / "L.npy"
    np.save(feats, np.random.default_rng(0).random((40, 5), dtype=np.float32))
    np.save(labels, np.arange(40) % 3)
    before = digest(labels)
    refused(invoke("embed", "--input", feats, "--labels", labels, "-o", labels, "--test-size", 5), "is also an input")
    assert digest(labels) == before


def test_other_files_need_force_but_own_kind_is_replaced(tmp_path, store):
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    png = tmp_path / "p.png"
    png.write_text("not a png")
    refused(invoke("plot", "--results", store, "-o", png), "pass --force")
    assert png.read_text() == "not a png"
    assert invoke("plot", "--results", store, "-o", png, "--force").exit_code == 0
    assert invoke("plot", "--results", store, "-o", png).exit_code == 0  # a plot over a plot: its own kind
    refused(invoke("results", "--results", store, "--format", "json", "-o", notes), "pass --force")
    assert notes.read_text() == "my notes\n"
    assert invoke("results", "--results", store, "--format", "json", "-o", tmp_path / "e.json").exit_code == 0
    assert invoke("results", "--results", store, "--format", "csv", "-o", tmp_path / "e.json").exit_code == 0


def test_results_table_with_output_is_refused_not_ignored(tmp_path, store):
    refused(invoke("results", "--results", store, "-o", tmp_path / "t.txt"), "add --format csv")
    assert not (tmp_path / "t.txt").exists()


# ---- foreign and read-only SQLite files ---------------------------------------------------------------------
def _foreign(path):
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE results (id INTEGER PRIMARY KEY, name TEXT)")
    db.execute("INSERT INTO results (name) VALUES ('precious')")
    db.commit()
    db.close()
    return path


@pytest.mark.parametrize("command", [["results"], ["best", "--recall", "0.9"], ["plot", "-o", "PLOT"],
                                     ["report", "-o", "REPORT"]])
def test_a_foreign_sqlite_file_is_never_changed_by_reading(tmp_path, command):
    path = _foreign(tmp_path / "app.db")
    before, mtime = digest(path), path.stat().st_mtime_ns
    args = [a.replace("PLOT", str(tmp_path / "p.png")).replace("REPORT", str(tmp_path / "r.html")) for a in command]
    refused(invoke(*args, "--results", path), "is not an ann-bench results store")
    assert digest(path) == before and path.stat().st_mtime_ns == mtime
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app.db"]  # no -wal/-shm, no output


def test_run_refuses_a_foreign_sqlite_file_before_writing(tmp_path, small_set):
    path = _foreign(tmp_path / "app.db")
    before = digest(path)
    refused(invoke("run", "--dataset", small_set, "--backend", "flat", "--results", path),
            "is not an ann-bench results store")
    assert digest(path) == before
    text_file = tmp_path / "notes.sqlite"
    text_file.write_text("hello")
    refused(invoke("run", "--dataset", small_set, "--backend", "flat", "--results", text_file), "not an SQLite file")
    assert text_file.read_text() == "hello"


def test_reading_a_store_changes_nothing_and_works_on_read_only_media(tmp_path, store):
    import shutil

    folder = tmp_path / "ro"
    folder.mkdir()
    copy = folder / "r.sqlite"
    shutil.copy(store, copy)
    before = digest(copy)
    assert invoke("results", "--results", copy, "--format", "json").exit_code == 0
    assert digest(copy) == before
    os.chmod(copy, 0o444)
    os.chmod(folder, 0o555)
    try:
        if not os.access(folder, os.W_OK):
            r = invoke("results", "--results", copy, "--format", "json")
            assert r.exit_code == 0 and '"recall"' in r.output
            return
    finally:
        os.chmod(folder, 0o755)
    # root ignores permissions: a real read-only file system (a tmpfs remounted read-only), where SQLite cannot
    # create the WAL store's -shm file
    media = tmp_path / "media"
    media.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(media)], capture_output=True).returncode:
        pytest.skip("root without mount permission: no read-only media to test on")
    try:
        shutil.copy(store, media / "r.sqlite")
        db = sqlite3.connect(media / "r.sqlite")  # a store left in WAL mode (a run still writing, an older ann-bench)
        assert db.execute("PRAGMA journal_mode=WAL").fetchone()[0] == "wal"
        db.close()
        assert subprocess.run(["mount", "-o", "remount,ro", str(media)], capture_output=True).returncode == 0
        r = invoke("results", "--results", media / "r.sqlite", "--format", "json")
        assert r.exit_code == 0 and '"recall"' in r.output, r.output
    finally:
        subprocess.run(["umount", str(media)], capture_output=True)


def test_an_old_unmarked_store_is_read_unchanged_and_upgraded_by_run(tmp_path, store, small_set):
    """A store of an earlier ann-bench (user_version 1, no marker, fewer columns): read commands read it with
    defaults for the missing columns and change nothing; run upgrades it and keeps its rows."""
    import shutil

    old = tmp_path / "old.sqlite"
    shutil.copy(store, old)
    db = sqlite3.connect(old)
    db.execute("PRAGMA journal_mode=DELETE")
    for column in ("recall_ab", "index_cached", "neighbors_sha256"):
        db.execute(f"ALTER TABLE results DROP COLUMN {column}")
    db.execute("PRAGMA application_id = 0")
    db.execute("PRAGMA user_version = 1")
    db.commit()
    db.close()
    before = digest(old)
    r = invoke("results", "--results", old, "--format", "json")
    assert r.exit_code == 0 and '"recall"' in r.output, r.output
    assert digest(old) == before and sorted(p.name for p in tmp_path.iterdir()) == ["old.sqlite"]
    r = invoke("run", "--dataset", small_set, "--backend", "flat", "--runs", 1, "--in-process", "--results", old,
               "--quiet")
    assert r.exit_code == 0, r.output
    db = sqlite3.connect(old)
    assert db.execute("PRAGMA application_id").fetchone()[0] != 0
    assert {"recall_ab", "index_cached"} <= {row[1] for row in db.execute("PRAGMA table_info(results)")}
    assert db.execute("SELECT count(*) FROM results").fetchone()[0] >= 1
    db.close()


def test_a_wal_store_on_read_only_media_reads_immutable(store, monkeypatch):
    """Where SQLite cannot create the -shm file beside a WAL store (read-only media), the read-only open fails;
    the store is then opened immutable, and reads the same rows."""
    from ann_bench.bench import results

    real = sqlite3.connect
    opened = []

    class NoShm:
        def __init__(self, db):
            self.db = db

        def execute(self, *a):
            raise sqlite3.OperationalError("unable to open database file")

        def close(self):
            self.db.close()

    def connect(database, *a, **kw):
        opened.append(str(database))
        db = real(database, *a, **kw)
        return db if "immutable=1" in str(database) else NoShm(db)

    monkeypatch.setattr(results.sqlite3, "connect", connect)
    db = results._connect_read_only(store)
    assert db.execute("SELECT count(*) FROM results").fetchone()[0] >= 1
    db.close()
    assert "mode=ro" in opened[0] and "immutable=1" in opened[1]


# ---- full disk and signals ---------------------------------------------------------------------------------
def test_full_disk_during_synth_leaves_nothing(tmp_path, monkeypatch):
    from ann_bench.data import vectorset as datasets

    def full(*a, **kw):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(datasets, "exact_knn", full)
    r = invoke("data", "synth", tmp_path / "s.hdf5", "--n", 500, "--dim", 4, "--queries", 10, "--clusters", 2)
    refused(r, "no space left to write")
    assert list(tmp_path.iterdir()) == []


def test_full_disk_during_run_stops_with_one_line_and_a_rerun_finishes(tmp_path, small_set, monkeypatch):
    from ann_bench.bench import results

    store = tmp_path / "r.sqlite"
    real_save = results.ResultStore.save
    calls = {"n": 0}

    def save(self, record, neighbors=None):
        calls["n"] += 1
        if calls["n"] == 3:
            raise sqlite3.OperationalError("database or disk is full")
        return real_save(self, record, neighbors)

    monkeypatch.setattr(results.ResultStore, "save", save)
    args = ("run", "--dataset", small_set, "--backend", "hnsw", "--build", "M=8", "--search", "ef=10,20,40,80",
            "--exhaustive", "--runs", 1, "--in-process", "--results", store, "--quiet")
    text = refused(invoke(*args), "disk full while saving hnsw[hnswlib]")
    assert "2 row(s) of this run were saved" in text
    with sqlite3.connect(store) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert db.execute("SELECT count(*) FROM results").fetchone()[0] == 2
    monkeypatch.undo()
    r = invoke(*args)
    assert r.exit_code == 0, r.output
    with sqlite3.connect(store) as db:
        assert db.execute("SELECT count(*) FROM results WHERE status = 'ok'").fetchone()[0] == 4


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="tmpfs")
def test_full_disk_on_a_real_tiny_filesystem(tmp_path, small_set):
    mount = tmp_path / "full"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (not root, or no mount permission)")
    try:
        r = subprocess.run([sys.executable, "-m", "ann_bench", "data", "synth", str(mount / "s.hdf5"), "--n", "20000",
                            "--dim", "32", "--queries", "50"], capture_output=True, text=True, timeout=120)
        assert r.returncode == 2, r.stderr
        assert "no space left to write" in r.stderr and "Traceback" not in r.stderr
        assert os.listdir(mount) == []
    finally:
        subprocess.run(["umount", str(mount)], capture_output=True)


def test_sigterm_during_synth_leaves_no_temporary_file(tmp_path):
    # 20,000 queries against 200,000 vectors: the exact ground truth, computed while the temporary file is
    # open, takes many seconds in 2,048-query chunks, so the signal lands inside the write.
    proc = subprocess.Popen([sys.executable, "-m", "ann_bench", "data", "synth", str(tmp_path / "s.hdf5"), "--n",
                             "200000", "--dim", "64", "--queries", "20000"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    seen = False
    while time.monotonic() < deadline and proc.poll() is None and not seen:
        seen = any(p.name.endswith(".tmp") for p in tmp_path.iterdir())
        time.sleep(0.02)
    assert seen, "the temporary file never appeared"
    proc.send_signal(signal.SIGTERM)
    proc.wait(120)
    assert proc.returncode == 128 + signal.SIGTERM
    assert list(tmp_path.iterdir()) == []


# ---- names --------------------------------------------------------------------------------------------------
def test_a_240_character_output_name(tmp_path):
    name = "v" * 234 + ".hdf5"
    r = invoke("data", "synth", tmp_path / name, "--n", 300, "--dim", 4, "--queries", 5, "--clusters", 2)
    assert r.exit_code == 0, r.output
    assert [p.name for p in tmp_path.iterdir()] == [name]


def test_output_into_proc(tmp_path, store):
    r = invoke("results", "--results", store, "--format", "csv", "-o", "/proc/ann-bench-test.csv")
    assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1, r.output


def test_the_hint_after_run_quotes_the_store_path(tmp_path, small_set):
    store = tmp_path / "my results $x" / "r [1].sqlite"
    r = invoke("run", "--dataset", small_set, "--backend", "flat", "--runs", 1, "--in-process", "--results", store)
    assert r.exit_code == 0, r.output
    assert f"ann-bench plot --results '{store}' -o plot.png" in r.output.replace("\n", "")


def test_embed_never_writes_over_an_image_of_its_input_folder_or_its_model(tmp_path):
    from PIL import Image

    folder = tmp_path / "imgs" / "a"
    folder.mkdir(parents=True)
    for i in range(4):
        Image.new("L", (8, 8), color=i * 40).save(folder / f"x{i}.png")
    image = folder / "x0.png"
    before = digest(image)
    refused(invoke("embed", "--model", "digits-cnn", "--input", tmp_path / "imgs", "-o", image, "--test-size", 1,
                   "--force"), "is also an input")
    assert digest(image) == before
    from embeddings.cnn import DigitsCNN

    model = tmp_path / "m.pt"
    model.write_bytes(DigitsCNN.checkpoint.read_bytes())
    refused(invoke("embed", "--model", f"small_cnn:{model}", "--input", tmp_path / "imgs", "-o", model,
                   "--test-size", 1, "--force"), "is also an input")
