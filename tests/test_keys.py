"""Item keys: written by embed and data import, shown by data info, kept by every command that copies a set."""

import json

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from ann_bench.cli import cli
from ann_bench.data.vectorset import VectorSet, write_vectorset
from ann_bench.errors import InputError
from ann_bench.data.formats import write_vecs


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def keys_of(path):
    with VectorSet(path) as vs:
        return vs.keys("train"), vs.keys("test")


def test_keys_round_trip_odd_strings(tmp_path, rng):
    X = rng.standard_normal((50, 4)).astype(np.float32)
    odd = [f"a[{i}] $HOME <é> 'q'\t" for i in range(50)]
    path = write_vectorset(tmp_path / "k.hdf5", X, X[:3], "euclidean", train_keys=odd, test_keys=[b"x", 2, "z"])
    train, test = keys_of(path)
    assert list(train) == odd and list(test) == ["x", "2", "z"]
    with pytest.raises(InputError, match="49 train keys for 50 train vectors"):
        write_vectorset(tmp_path / "bad.hdf5", X, X[:3], "euclidean", train_keys=odd[:-1])
    assert not (tmp_path / "bad.hdf5").exists()


def test_keys_of_wrong_length_in_a_file_are_refused(tmp_path, rng):
    X = rng.standard_normal((20, 4)).astype(np.float32)
    path = write_vectorset(tmp_path / "k.hdf5", X, X[:3], "euclidean")
    with h5py.File(path, "a") as f:
        f.create_dataset("train_keys", data=np.array(["a"] * 19, dtype=object), dtype=h5py.string_dtype())
    with pytest.raises(InputError, match="one key per vector"):
        VectorSet(path)


def test_embed_text_keys_are_line_numbers_and_csv_takes_its_id_column(tmp_path, rng):
    text = tmp_path / "t.txt"
    text.write_text("\n".join(["alpha one", "", "beta two", "gamma three", "", "delta four", "eps five"]) + "\n")
    features = tmp_path / "f.npy"
    np.save(features, rng.standard_normal((30, 6)).astype(np.float32))
    out = tmp_path / "npy.hdf5"
    r = invoke("embed", "--input", features, "-o", out, "--test-size", 5, "--seed", 3)
    assert r.exit_code == 0, r.output
    train, test = keys_of(out)
    assert sorted(map(int, [*train, *test])) == list(range(30))  # a split keeps each row's own number
    with VectorSet(out) as vs:
        X = np.load(features)
        assert np.allclose(vs.load_train(), X[train.astype(int)])  # a key names the row it holds
        assert np.allclose(vs.load_test(), X[test.astype(int)])
        assert vs.attrs["keys"] == "row number"
    from ann_bench.data.inputs import read_input

    items = read_input(text)
    assert list(items.item_keys()) == ["1", "3", "4", "6", "7"]  # blank lines counted, as an editor numbers them
    table = tmp_path / "t.csv"
    table.write_text("id,text,label\nq-17,first text,a\nq-9,second text,b\n")
    items = read_input(table)
    assert list(items.item_keys()) == ["q-17", "q-9"] and list(items.data) == ["first text", "second text"]
    no_id = tmp_path / "n.csv"
    no_id.write_text("text,label\nfirst,a\nsecond,b\n")
    assert list(read_input(no_id).item_keys()) == ["1", "2"]
    assert list(read_input(table, key_column="label").item_keys()) == ["a", "b"]


def test_embed_image_folder_keys_are_relative_paths(tmp_path):
    from PIL import Image

    root = tmp_path / "imgs [x]"
    for cls in ("cat", "dog"):
        (root / cls).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(np.full((8, 8), 40 * i + (cls == "dog") * 7, np.uint8)).save(root / cls / f"{i}$.png")
    out = tmp_path / "img.hdf5"
    r = invoke("embed", "--model", "digits-cnn", "--input", root, "-o", out, "--test-size", 2)
    assert r.exit_code == 0, r.output
    train, test = keys_of(out)
    assert sorted([*train, *test]) == sorted(f"{c}/{i}$.png" for c in ("cat", "dog") for i in range(6))
    r = invoke("data", "info", out, "--json")
    assert json.loads(r.output)["keys"].startswith("yes (")


def test_import_keys_row_numbers_files_and_hdf5_copy(tmp_path, rng):
    X = rng.standard_normal((200, 8)).astype(np.float32)
    write_vecs(tmp_path / "base.fvecs", X)
    out = tmp_path / "imp.hdf5"
    r = invoke("data", "import", tmp_path / "base.fvecs", "-o", out, "--metric", "euclidean", "--test-size", 10)
    assert r.exit_code == 0, r.output
    train, test = keys_of(out)
    with VectorSet(out) as vs:
        assert np.array_equal(vs.load_train(), X[train.astype(int)])
        assert np.array_equal(vs.load_test(), X[test.astype(int)])

    names = tmp_path / "names.txt"
    names.write_text("".join(f"item-{i}\n" for i in range(200)))
    out2 = tmp_path / "named.hdf5"
    r = invoke("data", "import", tmp_path / "base.fvecs", "-o", out2, "--metric", "euclidean", "--test-size", 10,
               "--keys", names)
    assert r.exit_code == 0, r.output
    train2, test2 = keys_of(out2)
    assert list(train2) == [f"item-{k}" for k in train] and list(test2) == [f"item-{k}" for k in test]

    copy = tmp_path / "copy.hdf5"  # re-importing an HDF5 set keeps its keys
    r = invoke("data", "import", out2, "-o", copy, "--metric", "euclidean")
    assert r.exit_code == 0, r.output
    assert [list(a) for a in keys_of(copy)] == [list(train2), list(test2)]

    short = tmp_path / "short.txt"
    short.write_text("a\nb\n")
    bad = tmp_path / "bad.hdf5"
    r = invoke("data", "import", tmp_path / "base.fvecs", "-o", bad, "--metric", "euclidean", "--keys", short)
    assert r.exit_code == 2 and "2 keys for 200 vectors" in r.output and len(r.output.strip().splitlines()) == 1
    assert not bad.exists()


def test_tune_subsample_keeps_keys(tmp_path, rng):
    from ann_bench.bench.tune import subsample_set

    X = rng.standard_normal((3000, 8)).astype(np.float32)
    keys = [f"k{i}" for i in range(3000)]
    path = write_vectorset(tmp_path / "s.hdf5", X, X[:20], "euclidean", train_keys=keys, test_keys=list("abcdefghijklmnopqrst"))
    with VectorSet(path) as vs:
        sub = subsample_set(vs, vs.load_train(), 0.5, 0, 10)
    with VectorSet(sub) as s:
        X_sub, sub_keys = s.load_train(), s.keys("train")
        ids = np.array([int(k[1:]) for k in sub_keys])
        assert np.array_equal(X_sub, X[ids]) and list(s.keys("test")) == list("abcdefghijklmnopqrst")
