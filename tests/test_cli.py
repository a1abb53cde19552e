"""The CLI through click's runner: every command, and bad input -> one line, exit 2, nothing half-written."""

import json

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from ann_bench.cli import cli


@pytest.fixture
def runner():
    return CliRunner()


def invoke(runner, *args):
    result = runner.invoke(cli, [str(a) for a in args], catch_exceptions=False)
    return result


def test_synth_info_run_results_plot(runner, tmp_path):
    data = tmp_path / "d.hdf5"
    store = tmp_path / "res" / "r.sqlite"
    r = invoke(runner, "data", "synth", data, "--n", 2000, "--dim", 8, "--queries", 50, "--clusters", 4,
               "--seed", 1)
    assert r.exit_code == 0, r.output
    assert "2,000 train + 50 test vectors" in r.output
    r = invoke(runner, "data", "info", data, "--json")
    assert r.exit_code == 0
    info = json.loads(r.output)
    assert info["valid"] and info["dimension"] == 8 and info["groundtruth_depth"] == 100 and info["labels"]
    r = invoke(runner, "run", "--dataset", data, "--backend", "hnsw", "--backend", "flat", "--build", "M=8",
               "--search", "ef=10,40", "--runs", 1, "--mode", "both", "--results", store)
    assert r.exit_code == 0, r.output
    assert "Pareto-optimal configurations" in r.output and "hnsw [hnswlib]" in r.output
    r = invoke(runner, "results", "--results", store, "--format", "json")
    rows = json.loads(r.output)
    assert len(rows) == 6 and {row["mode"] for row in rows} == {"batch", "single"}
    r = invoke(runner, "results", "--results", store, "--dataset", data, "--backend", "flat", "--format", "csv")
    assert r.exit_code == 0 and len(r.output.strip().splitlines()) == 3
    r = invoke(runner, "results", "--results", store)
    assert "6 result(s)" in r.output
    # Re-running skips what is stored.
    r = invoke(runner, "run", "--dataset", data, "--backend", "flat", "--runs", 1, "--results", store)
    assert "skipped 1 configuration(s) already in" in r.output
    for fmt in ("png", "svg"):
        r = invoke(runner, "plot", "--results", store, "-o", tmp_path / f"p.{fmt}", "--mode", "single")
        assert r.exit_code == 0, r.output
        assert (tmp_path / f"p.{fmt}").stat().st_size > 1000
    r = invoke(runner, "plot", "--results", store, "-o", tmp_path / "lin.png", "--x-scale", "linear", "--no-raw")
    assert r.exit_code == 0


def test_run_without_dataset_uses_the_embedded_default(runner, tmp_path, monkeypatch):
    from ann_bench.data import vectorset as datasets

    small = datasets.SynthSpec(n=1500, dim=8, queries=30, clusters=3, seed=42)
    monkeypatch.setattr(datasets, "DEFAULT_SPEC", small)
    monkeypatch.setattr("ann_bench.cli.run.DEFAULT_SPEC", small)
    r = invoke(runner, "run", "--backend", "flat", "--runs", 1, "--results", tmp_path / "r.sqlite")
    assert r.exit_code == 0, r.output
    assert list((tmp_path / "cache" / "datasets").glob("synth-1500x8-*.hdf5"))


def test_backends_lists_parameters_and_defaults(runner):
    r = invoke(runner, "backends", "--json")
    rows = json.loads(r.output)
    hnsw = next(x for x in rows if x["backend"] == "hnsw" and x["impl"] == "hnswlib")
    assert [p["name"] for p in hnsw["build"]] == ["M", "ef_construction", "replace_deleted"]
    assert hnsw["search"][0]["grid"] == [10, 20, 40, 80, 160, 320, 640]
    r = invoke(runner, "backends")
    assert r.exit_code == 0 and "ivfpq" in r.output


@pytest.fixture
def data(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "d.hdf5"
    CliRunner().invoke(cli, ["data", "synth", str(path), "--n", "500", "--dim", "4", "--queries", "10",
                             "--clusters", "2"], catch_exceptions=False)
    return path


def _raw(path, **arrays):
    with h5py.File(path, "w") as f:
        f.attrs["distance"] = arrays.pop("distance", "euclidean")
        for k, v in arrays.items():
            f[k] = v
    return path


BAD_RUNS = {
    "missing file": (lambda d, t: ["--dataset", t / "nope.hdf5", "--backend", "flat"], "does not exist"),
    "not hdf5": (lambda d, t: ["--dataset", (t / "x.txt").write_text("x") and t / "x.txt", "--backend", "flat"],
                 "not an HDF5 file"),
    "no train": (lambda d, t: ["--dataset", _raw(t / "e.h5", test=np.ones((2, 3))), "--backend", "flat"],
                 "has no 'train' array"),
    "dim mismatch": (lambda d, t: ["--dataset", _raw(t / "m.h5", train=np.ones((5, 3)), test=np.ones((2, 4))),
                                   "--backend", "flat"], "dimension mismatch"),
    "nan": (lambda d, t: ["--dataset", _raw(t / "n.h5", train=np.vstack([np.ones((20, 2)), [[1, np.nan]]]),
                                            test=np.ones((1, 2))), "--backend", "flat"], "train vector 20"),
    "k too large": (lambda d, t: ["--dataset", d, "--backend", "flat", "-k", 101], "ground-truth depth 100"),
    "k beyond train": (lambda d, t: ["--dataset", _raw(t / "s.h5", train=np.eye(5, 3), test=np.ones((2, 3))),
                                     "--backend", "flat", "-k", 6], "exceeds the 5 train vectors"),
    "empty test": (lambda d, t: ["--dataset", _raw(t / "em.h5", train=np.eye(5, 3), test=np.ones((0, 3))),
                                 "--backend", "flat"], "empty train or test"),
    "unknown backend": (lambda d, t: ["--dataset", d, "--backend", "hnws"], "unknown backend 'hnws'"),
    "unknown impl": (lambda d, t: ["--dataset", d, "--backend", "hnsw:nope"], "no implementation 'nope'"),
    "unknown param": (lambda d, t: ["--dataset", d, "--backend", "hnsw", "--build", "MM=3"],
                      "unknown build parameter 'MM'"),
    "bad value": (lambda d, t: ["--dataset", d, "--backend", "hnsw", "--search", "ef=fast"], "is not an integer"),
    "malformed": (lambda d, t: ["--dataset", d, "--backend", "hnsw", "--build", "M16"], "malformed --build"),
    "bad metric": (lambda d, t: ["--dataset", _raw(t / "h.h5", train=np.ones((5, 3)), test=np.ones((2, 3)),
                                                   distance="hamming"), "--backend", "flat"], "unknown metric"),
    "zero runs": (lambda d, t: ["--dataset", d, "--backend", "flat", "--runs", 0], "--runs must be >= 1"),
}


@pytest.mark.parametrize("case", list(BAD_RUNS))
def test_bad_input_is_one_line_and_exit_2(runner, data, tmp_path, case):
    make_args, message = BAD_RUNS[case]
    store = tmp_path / "store" / "r.sqlite"
    r = runner.invoke(cli, ["run", *map(str, make_args(data, tmp_path)), "--results", str(store)])
    assert r.exit_code == 2, r.output
    assert message in r.output
    assert "Traceback" not in r.output
    assert len(r.output.strip().splitlines()) == 1, r.output
    assert not store.exists()


def test_unwritable_results_directory(runner, data, tmp_path):
    # A regular file where a directory should be: cannot be created, whoever runs the test (CI runs as root).
    (tmp_path / "afile").write_text("x")
    r = runner.invoke(cli, ["run", "--dataset", str(data), "--backend", "flat", "--results",
                            str(tmp_path / "afile" / "sub" / "r.sqlite")])
    assert r.exit_code == 2 and "cannot create output directory" in r.output, r.output
    r = runner.invoke(cli, ["data", "synth", str(tmp_path / "afile" / "d.hdf5"), "--n", "100"])
    assert r.exit_code == 2 and "cannot create output directory" in r.output, r.output


def test_synth_bad_options(runner, tmp_path):
    r = runner.invoke(cli, ["data", "synth", str(tmp_path / "x.hdf5"), "--n", "10", "--clusters", "20"])
    assert r.exit_code == 2 and "--clusters=20 exceeds --n=10" in r.output
    r = runner.invoke(cli, ["data", "synth", str(tmp_path / "x.hdf5"), "--metric", "manhattan"])
    assert r.exit_code == 2 and "unknown metric 'manhattan'" in r.output
    assert not list(tmp_path.iterdir())


def test_info_on_invalid_file_exits_1(runner, tmp_path):
    path = _raw(tmp_path / "dup.h5", train=np.eye(4), test=np.eye(4)[:2], neighbors=np.array([[0, 0], [1, 2]]),
                distances=np.zeros((2, 2)))
    r = runner.invoke(cli, ["data", "info", str(path)])
    assert r.exit_code == 1 and "lists an id twice" in r.output and "invalid" in r.output


def test_plot_and_results_without_store(runner, tmp_path):
    r = runner.invoke(cli, ["plot", "--results", str(tmp_path / "none.sqlite"), "-o", str(tmp_path / "p.png")])
    assert r.exit_code == 2 and "does not exist" in r.output
    r = runner.invoke(cli, ["results", "--results", str(tmp_path / "none.sqlite")])
    assert r.exit_code == 2


def test_plot_rejects_bad_output_suffix(runner, data, tmp_path):
    store = tmp_path / "r.sqlite"
    invoke(runner, "run", "--dataset", data, "--backend", "flat", "--runs", 1, "--results", store)
    r = runner.invoke(cli, ["plot", "--results", str(store), "-o", str(tmp_path / "p.jpg")])
    assert r.exit_code == 2 and "must end in .png, .svg or .pdf" in r.output
    assert not (tmp_path / "p.jpg").exists()


def test_more_bad_inputs(runner, data, tmp_path, monkeypatch):
    store = tmp_path / "s" / "r.sqlite"

    def run(*args):
        r = runner.invoke(cli, ["run", *map(str, args), "--results", str(store)])
        assert r.exit_code == 2, r.output
        assert len(r.output.strip().splitlines()) == 1, r.output
        return r.output

    X = np.vstack([np.ones((20, 3)), np.zeros((1, 3))])
    assert "is all zeros" in run("--dataset", _raw(tmp_path / "z.h5", train=X, test=np.ones((2, 3)),
                                                   distance="angular"), "--backend", "flat")
    I = np.tile(np.arange(5), (2, 1))
    dup = I.copy()
    dup[1, 3] = 1
    assert "lists an id twice" in run("--dataset", _raw(tmp_path / "d.h5", train=np.eye(20, 3), test=np.ones((2, 3)),
                                                        neighbors=dup, distances=np.zeros((2, 5))), "--backend", "flat", "-k", 5)
    oor = I.copy()
    oor[0, 0] = 99
    assert "out of range [0, 20)" in run("--dataset", _raw(tmp_path / "o.h5", train=np.eye(20, 3),
                                                           test=np.ones((2, 3)), neighbors=oor,
                                                           distances=np.zeros((2, 5))), "--backend", "flat", "-k", 5)
    assert "is a directory" in run("--dataset", tmp_path, "--backend", "flat")
    assert "malformed size" in run("--dataset", data, "--backend", "flat", "--memory-limit", "lots")
    assert "--timeout must be a finite number of seconds > 0" in run("--dataset", data, "--backend", "flat", "--timeout", 0)
    assert "malformed --search" in run("--dataset", data, "--backend", "hnsw", "--search", "ef")
    # Unreadable: root reads anything, so make the permission check itself say no.
    import os as _os

    real_access = _os.access
    monkeypatch.setattr("os.access", lambda p, mode: False if str(p).endswith("d.hdf5") else real_access(p, mode))
    assert "is not readable" in run("--dataset", data, "--backend", "flat")
    assert not store.exists()


def test_run_exit_code_says_whether_anything_was_measured(runner, small_set, tmp_path, faulty_backends):
    store = tmp_path / "r.sqlite"
    r = invoke(runner, "run", "--dataset", small_set, "--backend", "crashing", "--build", "crash=true", "--runs", 1,
               "--results", store)
    assert r.exit_code == 1 and "nothing was measured: all" in r.output, r.output
    args = ("run", "--dataset", small_set, "--backend", "crashing", "--backend", "flat", "--build",
            "crashing:crash=true", "--runs", 1, "--results", store, "--force")
    r = invoke(runner, *args)
    assert r.exit_code == 0, r.output  # a partial failure: the measured rows are worth having
    r = invoke(runner, *args, "--strict")
    assert r.exit_code == 1 and "--strict:" in r.output, r.output


def test_recall_below_one_never_prints_as_one():
    from ann_bench.bench.metrics import fmt_recall

    assert fmt_recall(0.99997) == "0.99997" and fmt_recall(0.999996) == "0.999996"
    assert fmt_recall(1.0) == "1.0000" and fmt_recall(0.9512) == "0.9512" and fmt_recall(None) == "-"


def test_closing_table_is_the_front_over_everything_stored(runner, small_set, tmp_path):
    store = tmp_path / "r.sqlite"
    base = ("run", "--dataset", small_set, "--backend", "hnsw", "--build", "M=8", "--runs", 1, "--in-process",
            "--results", store, "--quiet")
    r = invoke(runner, *base, "--search", "ef=10")
    assert r.exit_code == 0 and "*hnsw" in r.output and "ef10" in r.output, r.output
    r = invoke(runner, *base, "--search", "ef=40")  # a resumed sweep: ef=10 is stored, not measured now
    assert r.exit_code == 0, r.output
    table = r.output[r.output.index("Pareto-optimal"):]
    assert "ef10" in table  # the stored, faster row is on the front
    r = invoke(runner, *base, "--search", "ef=10")  # nothing new: the table is still printed
    assert r.exit_code == 0 and "Pareto-optimal" in r.output and "0 new row(s)" in r.output, r.output


def test_sizes_follow_one_convention():
    from ann_bench.bench.runner import parse_size

    assert parse_size("512MB") == 512_000_000 and parse_size("2GB") == 2_000_000_000 and parse_size("10k") == 10_000
    assert parse_size("1.5GiB") == int(1.5 * 2**30) and parse_size("512MiB") == 512 * 2**20
    assert parse_size("1000000") == 1_000_000


def test_best_and_plot_default_to_the_most_recent_dataset(tmp_path):
    """After the README's two commands and the Quick start a store holds several sets: best and plot answer for
    the one measured last, and say so, instead of refusing."""
    from ann_bench.data.vectorset import SynthSpec, synth

    runner = CliRunner()
    store = tmp_path / "r.sqlite"
    for seed in (1, 2):
        path = tmp_path / f"s{seed}.hdf5"
        synth(path, SynthSpec(n=1500, dim=8, queries=30, clusters=5, seed=seed))
        r = invoke(runner, "run", "--dataset", path, "--backend", "hnsw", "--build", "M=8", "--search", "ef=40",
                   "--runs", 1, "--in-process", "--results", store)
        assert r.exit_code == 0, r.output
    r = invoke(runner, "best", "--recall", "0.5", "--results", store)
    assert r.exit_code == 0, r.output
    assert "using the one measured most recently, synth-1500x8-euclidean-c5-s2" in " ".join(r.output.split())
    r = invoke(runner, "plot", "--results", store, "-o", tmp_path / "p.png")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "p.png").exists()
    r = invoke(runner, "best", "--recall", "0.5", "--results", store, "--dataset", tmp_path / "s1.hdf5")
    assert r.exit_code == 0 and "most recently" not in r.output


def test_skipped_settings_are_one_line_per_index():
    from ann_bench.cli.run import skip_summary

    detail = [("hnsw[hnswlib] M16", f"ef{e}", "recall@10 already 1.0 at ef80") for e in (160, 320, 640)]
    detail += [("hnsw[hnswlib] M16", "ef5", "ef=5 < k=10: hnswlib searches with ef=k")]
    detail += [("ivf[faiss] nlist16", "nprobe32", "nprobe=32 > nlist=16")]
    lines = skip_summary(detail)
    assert len(lines) == 2
    # each setting beside its own reason, the most frequent reason first
    assert lines[0] == ("skipped 4 setting(s) of hnsw[hnswlib] M16: ef160, ef320, ef640 "
                        "— recall@10 already 1.0 at ef80; ef5 — ef=5 < k=10: hnswlib searches with ef=k")
    assert lines[1].startswith("skipped 1 setting(s) of ivf[faiss] nlist16: nprobe32 — nprobe=32 > nlist=16")


def test_quiet_hides_configuration_lines_not_lines_about_the_run(capsys):
    """`run -q`: no line per configuration, but what the run itself did (vectors moved to Ray nodes, a retry,
    a task waiting for resources) is still said."""
    from ann_bench.cli.console import RichReporter

    with RichReporter(verbose=False) as rep:
        rep.log("hnsw[hnswlib] M=16 ef=10: recall 0.9")
        rep.note("ray: 517.1 MB of vectors went to 2 node(s)")
    err = capsys.readouterr().err
    assert "517.1 MB of vectors went to 2 node(s)" in err and "recall 0.9" not in err
