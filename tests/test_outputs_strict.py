"""Issue 31, item 3: every file a command writes is named by the user (or derived from that name) and replaced
only when ann-bench wrote it — known by a marker, not a guess from its first bytes; --force replaces only the
file named by -o; downloads stop at the catalogue's size; over-long names stop in one line. Each case runs the
real command."""

import hashlib
import io
import json
import os
import zipfile

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ann_bench.cli import cli
from ann_bench.outputs import KINDS, check_derived

TINY = ("--n", 200, "--queries", 20, "--dim", 8)


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def digest(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def refused(r, expect):
    text = r.output.strip()
    assert r.exit_code == 2 and len(text.splitlines()) == 1 and expect in text and "Traceback" not in text, text
    return text


def snapshot(folder):
    return {p.name: digest(p) for p in folder.iterdir() if p.is_file()}


@pytest.fixture(scope="module")
def store(tmp_path_factory, small_set):
    path = tmp_path_factory.mktemp("store") / "r.sqlite"
    r = invoke("run", "--dataset", small_set, "--backend", "flat", "--runs", 1, "--in-process", "--results", path,
               "--quiet")
    assert r.exit_code == 0, r.output
    return path


# ---- 1. ownership by marker --------------------------------------------------------------------------------
@pytest.mark.parametrize("name,content", [("package.json", '{"name": "mine", "version": "1.0.0"}\n'),
                                          ("tsconfig.json", '[{"compilerOptions": {}}]\n'),
                                          ("old.json", '[{"key": "abc", "backend": "hnsw", "recall": 0.9}]'),
                                          ("table.csv", "key,backend,recall\nabc,hnsw,0.9\n")])
def test_an_export_never_replaces_a_foreign_json_or_csv_without_force(tmp_path, store, name, content):
    target = tmp_path / name
    target.write_text(content)
    fmt = "csv" if name.endswith(".csv") else "json"
    text = refused(invoke("results", "--results", store, "--format", fmt, "-o", target), "pass --force")
    assert "no ann-bench marker" in text and "versions before this marker count as foreign" in text
    assert target.read_text() == content
    assert invoke("results", "--results", store, "--format", fmt, "-o", target, "--force").exit_code == 0
    assert invoke("results", "--results", store, "--format", fmt, "-o", target).exit_code == 0  # marked now
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]


def test_exports_carry_the_marker_and_read_as_before(tmp_path, store):
    pd = pytest.importorskip("pandas")
    for fmt in ("csv", "json"):
        out = tmp_path / f"e.{fmt}"
        assert invoke("results", "--results", store, "--format", fmt, "-o", out).exit_code == 0
        df = pd.read_csv(out) if fmt == "csv" else pd.read_json(out)
        assert df["ann_bench"].str.startswith("results-export ").all() and "recall" in df.columns
        assert KINDS["export"][1](out)
    plain = json.loads(invoke("results", "--results", store, "--format", "json").output)
    assert "ann_bench" not in plain[0]  # stdout is unchanged


def test_train_never_replaces_a_foreign_zip(tmp_path):
    archive = tmp_path / "archive.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("archive/data.pkl", b"\x80\x02}q\x00.")
        z.writestr("notes.txt", "precious")
    before = digest(archive)
    refused(invoke("train", "--data", "digits", "--epochs", 0, "--train-limit", 100, "--test-limit", 50,
                   "-o", archive), "is not a checkpoint written by `ann-bench train`")
    assert digest(archive) == before and sorted(p.name for p in tmp_path.iterdir() if p.name != "cache") == \
        ["archive.zip"]


@pytest.mark.parametrize("fmt", ["png", "svg", "pdf"])
def test_plots_are_recognised_by_their_marker_only(tmp_path, store, fmt):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    foreign = tmp_path / f"mine.{fmt}"
    fig = plt.figure()
    fig.savefig(foreign, format=fmt)  # a real plot by matplotlib, not by ann-bench
    plt.close(fig)
    before = digest(foreign)
    refused(invoke("plot", "--results", store, "-o", foreign), "not a plot written by ann-bench")
    assert digest(foreign) == before
    ours = tmp_path / f"ours.{fmt}"
    assert invoke("plot", "--results", store, "-o", ours).exit_code == 0
    assert KINDS["plot"][1](ours) and not KINDS["plot"][1](foreign)
    assert invoke("plot", "--results", store, "-o", ours).exit_code == 0


def test_report_replaces_only_its_own_html(tmp_path, store):
    page = tmp_path / "index.html"
    page.write_text("<!DOCTYPE html><html><body>my home page</body></html>")
    refused(invoke("report", "--results", store, "-o", page, "--static"), "not an HTML report written by ann-bench")
    assert "my home page" in page.read_text()
    ours = tmp_path / "r.html"
    assert invoke("report", "--results", store, "-o", ours, "--static").exit_code == 0
    assert invoke("report", "--results", store, "-o", ours, "--static").exit_code == 0


def test_a_dataset_command_replaces_only_an_ann_bench_dataset(tmp_path):
    import h5py

    foreign = tmp_path / "weights.h5"
    with h5py.File(foreign, "w") as f:
        f["train"] = np.zeros((3, 2), dtype=np.float32)  # looks like a set, but ann-bench did not write it
    before = digest(foreign)
    refused(invoke("data", "synth", foreign, *TINY), "not a dataset written by ann-bench")
    assert digest(foreign) == before
    ours = tmp_path / "s.hdf5"
    assert invoke("data", "synth", ours, *TINY).exit_code == 0
    assert invoke("data", "synth", ours, *TINY, "--seed", 3).exit_code == 0


# ---- 2. files written beside the named output ---------------------------------------------------------------
def test_train_never_writes_its_metrics_over_a_file_it_did_not_write(tmp_path, small_set):
    model = tmp_path / "t.pt"
    beside = tmp_path / "t.metrics.json"
    beside.write_bytes(small_set.read_bytes())  # an HDF5 set that happens to have that name
    before = digest(beside)
    args = ("train", "--data", "digits", "--epochs", 0, "--train-limit", 100, "--test-limit", 50, "-o", model)
    for extra in ((), ("--force",)):
        text = refused(invoke(*args, *extra), "would be written beside -o")
        assert "t.metrics.json" in text and "even with --force" in text and "choose another -o" in text
        assert digest(beside) == before and not model.exists()
    beside.unlink()
    r = invoke(*args)
    assert r.exit_code == 0, r.output
    assert KINDS["checkpoint"][1](model) and KINDS["train-metrics"][1](beside)
    assert json.loads(beside.read_text())["ann_bench"]["kind"] == "train-metrics"
    assert invoke(*args).exit_code == 0  # its own checkpoint and metrics: replaced without --force
    from embeddings.cnn import load_checkpoint

    assert load_checkpoint(model)["format"] == "ann-bench-checkpoint"


def test_check_derived_rules(tmp_path):
    from ann_bench.errors import InputError

    named = tmp_path / "m.pt"
    derived = tmp_path / "m.metrics.json"
    assert check_derived(derived, "train-metrics", named) == derived  # none there
    for content in ('{"metrics": {}}', '{"ann_bench": {"kind": "results-export"}}', "text"):
        derived.write_text(content)
        with pytest.raises(InputError, match="never replaces a file you did not name"):
            check_derived(derived, "train-metrics", named)
    derived.write_text('{"ann_bench": {"kind": "train-metrics", "version": "0"}}')
    assert check_derived(derived, "train-metrics", named) == derived
    derived.unlink()
    derived.mkdir()
    with pytest.raises(InputError, match="is a directory"):
        check_derived(derived, "train-metrics", named)


# ---- 3. downloads bounded by the catalogue's size ------------------------------------------------------------
@pytest.fixture
def tiny_entry(monkeypatch):
    from ann_bench.data import catalogue

    e = catalogue.Entry("tiny-8-euclidean", 8, 10, 2, "euclidean", 1)  # about 1 MB
    monkeypatch.setitem(catalogue.CATALOGUE, e.name, e)
    return e


def test_fetch_stops_at_the_catalogue_size(tmp_path, tiny_entry):
    from ann_bench.data.catalogue import cached_path

    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / tiny_entry.filename).write_bytes(b"\0" * (tiny_entry.max_bytes + 1))
    text = refused(invoke("data", "fetch", tiny_entry.name, "--mirror", mirror.as_uri()),
                   "is larger than the catalogue says")
    assert f"{tiny_entry.max_bytes + 1:,} bytes" in text and f"at most {tiny_entry.max_bytes:,} bytes" in text
    assert not cached_path(tiny_entry.name).parent.exists() or not any(cached_path(tiny_entry.name).parent.iterdir())


def test_fetch_stops_an_endless_stream_without_a_length(tmp_path, tiny_entry, monkeypatch):
    """A server that sends no Content-Length and never ends: reading stops just past the catalogue's size."""
    import urllib.request

    from ann_bench.data.catalogue import cached_path

    served = {"bytes": 0}

    class Endless(io.RawIOBase):
        status = 200
        headers = {}

        def read(self, n=-1):
            n = 1 << 16 if n is None or n < 0 else n
            served["bytes"] += n
            return b"\0" * n

    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **kw: Endless())
    refused(invoke("data", "fetch", tiny_entry.name, "--mirror", "https://example.invalid/x"),
            "is larger than the catalogue says")
    assert served["bytes"] <= tiny_entry.max_bytes + 1
    assert not any(p.is_file() for p in cached_path(tiny_entry.name).parent.glob("*"))


# ---- 4. names the file system cannot hold --------------------------------------------------------------------
@pytest.mark.parametrize("command", [("results", "--format", "csv", "-o", "NAME"), ("plot", "-o", "NAME"),
                                     ("report", "-o", "NAME"), ("data", "synth", "NAME", *TINY),
                                     ("train", "--data", "digits", "--epochs", 0, "-o", "NAME")])
def test_a_300_byte_name_is_one_line(tmp_path, store, command):
    name = str(tmp_path / ("x" * 296 + ".png"))
    args = [name if a == "NAME" else a for a in command]
    if command[0] in ("results", "plot", "report"):
        args += ["--results", store]
    text = refused(invoke(*args), "the file name is 300 bytes long")
    assert "255" in text or "more than this file system allows" in text
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "cache") == []


def test_a_300_byte_labels_name_in_train_is_one_line_before_the_progress_bar(tmp_path):
    # train opened --labels under its epoch progress bar: the refusal came after a blank line the bar left
    rng = np.random.default_rng(0)
    np.save(tmp_path / "x.npy", rng.standard_normal((40, 8)).astype(np.float32))
    r = invoke("train", "--data", tmp_path / "x.npy", "--labels", tmp_path / ("x" * 296 + ".npy"), "--arch", "mlp",
               "--epochs", 1, "-o", tmp_path / "m.pt")
    assert r.output.startswith("error: --labels "), repr(r.output)
    refused(r, "the file name is 300 bytes long")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.npy"]


def test_an_input_name_too_long_gives_its_own_byte_count_not_the_whole_paths(tmp_path):
    name = tmp_path / ("x" * 295 + ".hdf5")  # 300 bytes, in a folder: the path is longer
    text = refused(invoke("data", "info", name), "(300 bytes) is too long")
    assert "255 bytes per name" in text


def test_a_path_longer_than_path_max_is_one_line(tmp_path, store):
    deep = tmp_path / "/".join(["d" * 200] * 22) / "e.csv"
    refused(invoke("results", "--results", store, "--format", "csv", "-o", deep), "the path is")
    assert not (tmp_path / ("d" * 200)).exists()


def test_a_255_byte_name_is_written_and_its_temporary_name_fits(tmp_path, store, monkeypatch):
    import tempfile

    from ann_bench import atomic

    name = "é" * 125 + "x.csv"  # 255 bytes in UTF-8
    assert len(os.fsencode(name)) == 255
    seen = []
    real = tempfile.mkstemp

    def mkstemp(*a, **kw):
        fd, tmp = real(*a, **kw)
        seen.append(os.path.basename(tmp))
        return fd, tmp

    monkeypatch.setattr(atomic.tempfile, "mkstemp", mkstemp)
    r = invoke("results", "--results", store, "--format", "csv", "-o", tmp_path / name)
    assert r.exit_code == 0, r.output
    assert seen and all(len(os.fsencode(t)) <= 255 for t in seen)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "cache") == [name]


# ---- 5. any name: exactly that file, or one line -------------------------------------------------------------
NAME_CHARS = st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="/\\")
SPECIAL = st.sampled_from(["[", "]", "$", "%", "*", " ", "-", "é", "日", "😀", "$(x)", "{a}", "~"])
NAMES = st.lists(st.one_of(NAME_CHARS, SPECIAL), min_size=1, max_size=300).map("".join)


@settings(max_examples=25, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(stem=NAMES, command=st.sampled_from(["results", "plot", "synth"]))
def test_any_output_name_writes_that_file_or_fails_in_one_line(tmp_path, store, stem, command):
    folder = tmp_path / f"out-{hashlib.sha256(os.fsencode(stem + command)).hexdigest()[:8]}"
    folder.mkdir()
    (folder / "keep.txt").write_text("mine")
    suffix = {"results": ".csv", "plot": ".png", "synth": ".hdf5"}[command]
    name = stem + suffix
    target = folder / name
    before = snapshot(folder)
    if command == "results":
        args = ["results", "--results", store, "--format", "csv", "-o", target]
    elif command == "plot":
        args = ["plot", "--results", store, "-o", target]
    else:
        args = ["data", "synth", *TINY, "--", target]
    r = invoke(*args)
    after = snapshot(folder)
    text = r.output.strip()
    if r.exit_code == 0:
        assert set(after) == set(before) | {name} and after["keep.txt"] == before["keep.txt"], (name, text)
    else:
        assert r.exit_code == 2 and len(text.splitlines()) == 1 and "Traceback" not in text, (name, text)
        assert after == before
    assert not any(p.name.endswith(".tmp") for p in folder.iterdir())
