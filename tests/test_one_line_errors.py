"""Issue 15, section 3: inputs that used to end in a traceback (or, worse, in silence) now end in one line,
exit 2, naming the value and the fix. One test per case; each runs the real command through click's runner."""

import numpy as np
import pytest
from click.testing import CliRunner

from ann_bench.cli import cli

torch = pytest.importorskip("torch")


def one_line_error(*args, env=None, expect: str = ""):
    """Run ``ann-bench ARGS``; assert exit 2 with a single ``error:`` line containing ``expect``."""
    r = CliRunner().invoke(cli, [str(a) for a in args], env=env, catch_exceptions=False)
    text = r.output.strip()
    assert r.exit_code == 2, text
    assert "Traceback" not in text
    assert len(text.splitlines()) == 1, text
    assert text.startswith("error:"), text
    assert expect in text, text
    return text


@pytest.fixture
def data(small_set):
    return small_set


@pytest.mark.parametrize("value", ["nan", "inf", "-1", "0"])
def test_timeout_must_be_finite_and_positive(data, value):
    one_line_error("run", "--dataset", data, "--backend", "flat", "--timeout", value,
                   expect=f"--timeout must be a finite number of seconds > 0, got {float(value)}")


@pytest.mark.parametrize("seed", [-1, 2**31, 2**64])
def test_seed_outside_what_every_library_takes(data, seed, tmp_path):
    one_line_error("run", "--dataset", data, "--backend", "annoy", "--seed", seed, "--results",
                   tmp_path / "r.sqlite", expect=f"'--seed': {seed} is not in the range 0<=x<=2147483647")
    assert not (tmp_path / "r.sqlite").exists()


def test_seed_at_the_top_of_the_range_builds(data, tmp_path):
    r = CliRunner().invoke(cli, ["run", "--dataset", str(data), "--backend", "annoy", "--build", "n_trees=2",
                                 "--search", "search_k=50", "--seed", str(2**31 - 1), "--runs", "1",
                                 "--in-process", "--results", str(tmp_path / "r.sqlite")], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert "failed" not in r.output


def test_build_threads_zero_names_the_right_option(data):
    text = one_line_error("run", "--dataset", data, "--backend", "flat", "--build-threads", 0,
                          expect="'--build-threads': 0 is not in the range 1<=x<=1024")
    assert "--threads must" not in text


def test_annoy_search_k_beyond_a_c_int_is_refused_before_work(data):
    one_line_error("run", "--dataset", data, "--backend", "annoy", "--search", f"search_k={2**31}",
                   expect="search_k")


def test_annoy_search_k_at_the_c_int_limit_runs(data, tmp_path):
    r = CliRunner().invoke(cli, ["run", "--dataset", str(data), "--backend", "annoy", "--build", "n_trees=2",
                                 "--search", f"search_k={2**31 - 1}", "--runs", "1", "--in-process",
                                 "--results", str(tmp_path / "r.sqlite")], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert "failed" not in r.output


def test_repeated_build_parameter_sweeps_both_values():
    from ann_bench.bench.runner import plan_sweep

    plans = plan_sweep(["hnsw"], 1000, 8, "euclidean", build_specs=["M=8", "M=16", "M=8"],
                       search_specs=["ef=10", "ef=20"])
    assert sorted(b["M"] for b in plans[0].builds) == [8, 16]
    assert sorted(s["ef"] for s in plans[0].searches) == [10, 20]


def test_dollar_math_in_a_dataset_name_is_drawn_as_text(tmp_path, small_arrays):
    from ann_bench.data.vectorset import write_vectorset

    train, test, _, _ = small_arrays
    data = write_vectorset(tmp_path / "m.hdf5", train[:500], test[:20], "euclidean", attrs={"name": r"$\cmd$ [x]"})
    store = tmp_path / "r.sqlite"
    runner = CliRunner()
    r = runner.invoke(cli, ["run", "--dataset", str(data), "--backend", "flat", "--runs", "1", "--in-process",
                            "--results", str(store)], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    r = runner.invoke(cli, ["plot", "--results", str(store), "-o", str(tmp_path / "p.png")], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert (tmp_path / "p.png").stat().st_size > 1000
    r = runner.invoke(cli, ["report", "--results", str(store), "-o", str(tmp_path / "r.html")],
                      catch_exceptions=False)
    assert r.exit_code == 0, r.output
    r = runner.invoke(cli, ["results", "--results", str(store)], catch_exceptions=False)
    assert r"$\cmd$ [x]" in r.output  # rich markup did not eat the brackets


def test_brackets_in_paths_survive_rich_output(tmp_path):
    out = tmp_path / "a[b]" / "[red]x[/].hdf5"
    r = CliRunner().invoke(cli, ["data", "synth", str(out), "--n", "300", "--dim", "4", "--queries", "5",
                                 "--clusters", "2"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert "[red]x[/].hdf5" in r.output


def test_embedders_install_hint_keeps_its_brackets(monkeypatch):
    from embeddings import registry

    cls = registry()["minilm"]
    monkeypatch.setattr(cls, "available", classmethod(lambda c: False))
    r = CliRunner().invoke(cli, ["embedders"], catch_exceptions=False, terminal_width=250)
    assert r.exit_code == 0
    assert 'pip install -e ".[embed]"' in r.output


def test_plugin_that_raises_on_import(tmp_path, monkeypatch):
    (tmp_path / "boom_plugin.py").write_text("raise RuntimeError('boom')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    from ann_bench import backends

    backends._REGISTRY.clear()
    try:
        one_line_error("backends", env={backends.PLUGINS_ENV: "boom_plugin"},
                       expect="backend plugin 'boom_plugin' named in $ANN_BENCH_PLUGINS raised on import: "
                              "RuntimeError: boom")
    finally:
        backends._REGISTRY.clear()


def test_synth_says_how_much_memory_it_needs(tmp_path):
    one_line_error("data", "synth", tmp_path / "big.hdf5", "--n", 10_000_000_000, expect="GiB of memory")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("mirror", ["nonsense", "ht!tp://[bad", "http://host:port/x", "ftp://x/y", "http://"])
def test_malformed_mirror_url(mirror):
    one_line_error("data", "fetch", "sift-128-euclidean", "--mirror", mirror, expect="malformed mirror URL")


@pytest.mark.parametrize("channels", [2, 5])
def test_npy_images_with_odd_channel_counts(tmp_path, channels):
    path = tmp_path / "img.npy"
    np.save(path, np.zeros((6, 8, 8, channels), dtype=np.uint8))
    one_line_error("embed", "--model", "digits-cnn", "--input", path, "--test-size", 2, "-o", tmp_path / "o.hdf5",
                   expect=f"with {channels} channels")
    assert not (tmp_path / "o.hdf5").exists()


def test_decompression_bomb_image(tmp_path):
    from PIL import Image

    folder = tmp_path / "imgs" / "a"
    folder.mkdir(parents=True)
    for i in range(3):
        Image.new("L", (8, 8)).save(folder / f"ok{i}.png")
    Image.new("1", (20_000, 20_000)).save(folder / "bomb.png")  # 1-bit: a small file that decodes to 400 Mpx
    one_line_error("embed", "--model", "digits-cnn", "--input", tmp_path / "imgs", "--test-size", 1,
                   "-o", tmp_path / "o.hdf5", expect="too large to decode safely")


def _checkpoint(tmp_path, name, change):
    import copy

    from embeddings.cnn import DigitsCNN

    ckpt = copy.deepcopy(torch.load(DigitsCNN.checkpoint, weights_only=True))
    change(ckpt)
    path = tmp_path / name
    torch.save(ckpt, path)
    return path


@pytest.mark.parametrize("name, change, expect", [
    ("badcfg.pt", lambda c: c["config"].update(bogus=1), "unexpected keyword argument 'bogus'"),
    ("nosd.pt", lambda c: c.pop("state_dict"), "no 'state_dict' entry"),
    ("sizex.pt", lambda c: c["input"].update(size="x"), "malformed ann-bench checkpoint"),
    ("dimx.pt", lambda c: c["config"].update(dim="x"), "malformed ann-bench checkpoint"),
])
def test_malformed_ann_bench_checkpoints(tmp_path, name, change, expect):
    path = _checkpoint(tmp_path, name, change)
    images = tmp_path / "img.npy"
    np.save(images, np.zeros((6, 8, 8), dtype=np.uint8))
    one_line_error("embed", "--model", path, "--input", images, "--test-size", 2, "-o", tmp_path / "o.hdf5",
                   expect=expect)


class _Raises(torch.nn.Module):
    def forward(self, x):
        raise RuntimeError("nope")


class _Tuple(torch.nn.Module):
    def forward(self, x):
        return x.flatten(1), x.flatten(1)


class _Scalar(torch.nn.Module):
    def forward(self, x):
        return x.sum()


@pytest.mark.parametrize("module, expect", [(_Raises, "failed on a batch of shape"),
                                            (_Tuple, "returned a tuple, not a tensor"),
                                            (_Scalar, "returned a tensor of shape ()")])
def test_torchscript_models_that_misbehave(tmp_path, module, expect):
    path = tmp_path / "m.pt"
    torch.jit.script(module()).save(str(path))
    images = tmp_path / "img.npy"
    np.save(images, np.zeros((6, 8, 8), dtype=np.uint8))
    one_line_error("embed", "--model", path, "--input", images, "--test-size", 2, "-o", tmp_path / "o.hdf5",
                   expect=expect)
    assert not (tmp_path / "o.hdf5").exists()
