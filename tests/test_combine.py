"""`ann-bench data combine` and `ann-bench embed --model A --model B`: ensembles of item-aligned embeddings."""

import json
import math
import tempfile
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ann_bench.cli import cli
from ann_bench.data.combine import combine_sets
from ann_bench.data.vectorset import VectorSet, write_vectorset
from ann_bench.distances import pairwise
from ann_bench.errors import InputError
from ann_bench.data.formats import write_idx

N, NQ = 300, 20


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def one_line_error(r, *fragments):
    assert r.exit_code == 2, r.output
    assert len(r.output.strip().splitlines()) == 1 and "Traceback" not in r.output, r.output
    for fragment in fragments:
        assert fragment in r.output, r.output


def make_part(path, dim, seed, *, scale=1.0, metric="euclidean", n=N, keys=True, labels=True, edit=None):
    """A set of N train + NQ test items; keys and labels name the same items whatever the part's vectors."""
    rng = np.random.default_rng(seed)
    X = (rng.standard_normal((n, dim)) * scale).astype(np.float32)
    Q = (rng.standard_normal((NQ, dim)) * scale).astype(np.float32)
    train_keys = [f"item-{i}" for i in range(n)] if keys else None
    test_keys = [f"query-{i}" for i in range(NQ)] if keys else None
    if edit is not None:
        edit(train_keys)
    kw = dict(train_labels=np.arange(n) % 5, test_labels=np.arange(NQ) % 5) if labels else {}
    write_vectorset(path, X, Q, metric, train_keys=train_keys, test_keys=test_keys, k=10, **kw)
    return X, Q


def unit(V):
    return V / np.linalg.norm(V.astype(np.float64), axis=1, keepdims=True)


def check_groundtruth_is_brute_force(path):
    with VectorSet(path) as vs:
        X, Q, D, I = vs.load_train(), vs.load_test(), vs.distances, vs.neighbors
        exact = pairwise(vs.metric, Q, X)
    k = D.shape[1]
    true_D = np.sort(exact, axis=1)[:, :k]
    np.testing.assert_allclose(D, true_D, rtol=1e-4, atol=1e-5)  # distances, not ids: ties may reorder ids
    np.testing.assert_allclose(np.take_along_axis(exact, I, axis=1), true_D, rtol=1e-4, atol=1e-5)


def test_combine_two_sets_weights_normalisation_keys_labels(tmp_path):
    A, QA = make_part(tmp_path / "a.hdf5", 6, 1, scale=10.0)  # far apart in scale: normalising matters
    B, QB = make_part(tmp_path / "b.hdf5", 4, 2, scale=0.1)
    out = tmp_path / "e.hdf5"
    r = invoke("data", "combine", tmp_path / "a.hdf5", tmp_path / "b.hdf5", "--weights", "1,0.25", "-o", out,
               "-k", 10)
    assert r.exit_code == 0, r.output
    assert "300 train + 20 test vectors, 10-d (6 + 4), euclidean, ground truth depth 10, labels, keys" in r.output
    with VectorSet(out) as vs:
        E, EQ = vs.load_train(), vs.load_test()
        assert vs.dim == 10 and vs.metric == "euclidean"
        assert list(vs.keys("train")) == [f"item-{i}" for i in range(N)]
        assert list(vs.keys("test")) == [f"query-{i}" for i in range(NQ)]
        np.testing.assert_array_equal(vs.labels("train"), np.arange(N) % 5)
        np.testing.assert_array_equal(vs.labels("test"), np.arange(NQ) % 5)
        attrs = vs.attrs
    for V, first, last in ((E, A, B), (EQ, QA, QB)):  # each part normalised, then scaled by sqrt(w)
        np.testing.assert_allclose(np.linalg.norm(V[:, :6], axis=1), 1.0, rtol=1e-6)
        np.testing.assert_allclose(np.linalg.norm(V[:, 6:], axis=1), math.sqrt(0.25), rtol=1e-6)
        np.testing.assert_allclose(V[:, :6], unit(first), atol=1e-6)
        np.testing.assert_allclose(V[:, 6:], 0.5 * unit(last), atol=1e-6)
    check_groundtruth_is_brute_force(out)
    assert attrs["source"] == "ann-bench data combine" and attrs["normalize"] == "each"
    parts = json.loads(attrs["parts"])
    assert [(p["name"], p["dim"], p["weight"]) for p in parts] == [("a", 6, 1.0), ("b", 4, 0.25)]
    with VectorSet(tmp_path / "a.hdf5") as a:
        assert parts[0]["content_hash"] == a.content_hash() and parts[0]["path"] == str((tmp_path / "a.hdf5").resolve())
    r = invoke("data", "info", out, "--json")
    assert r.exit_code == 0 and json.loads(r.output)["valid"]


def test_normalize_none_keeps_the_vectors_and_the_same_file_twice_is_an_ensemble(tmp_path):
    A, _ = make_part(tmp_path / "a.hdf5", 5, 1, scale=3.0)
    B, _ = make_part(tmp_path / "b.hdf5", 3, 2)
    out = combine_sets([tmp_path / "a.hdf5", tmp_path / "b.hdf5"], tmp_path / "e.hdf5", weights=[4, 1],
                       normalize="none", k=10)
    with VectorSet(out) as vs:
        np.testing.assert_allclose(vs.load_train(), np.hstack([2 * A, B]), rtol=1e-6)
        assert vs.attrs["normalize"] == "none"
    check_groundtruth_is_brute_force(out)
    r = invoke("data", "combine", tmp_path / "a.hdf5", tmp_path / "a.hdf5", "-o", tmp_path / "aa.hdf5", "-k", 10)
    assert r.exit_code == 0, r.output
    with VectorSet(tmp_path / "aa.hdf5") as vs:
        assert vs.dim == 10
        np.testing.assert_allclose(vs.load_train(), np.hstack([unit(A), unit(A)]), atol=1e-6)


def test_keys_of_some_parts_are_kept_and_labels_taken_from_the_first(tmp_path):
    make_part(tmp_path / "a.hdf5", 4, 1, keys=False, labels=False)
    make_part(tmp_path / "b.hdf5", 4, 2)
    out = combine_sets([tmp_path / "a.hdf5", tmp_path / "b.hdf5"], tmp_path / "e.hdf5", k=10)
    with VectorSet(out) as vs:
        assert list(vs.keys("train")[:2]) == ["item-0", "item-1"] and vs.has_labels


def test_key_mismatch_is_one_line_and_writes_nothing(tmp_path):
    make_part(tmp_path / "a.hdf5", 4, 1)

    def swap(keys):
        keys[7], keys[8] = keys[8], keys[7]

    make_part(tmp_path / "b.hdf5", 4, 2, edit=swap)
    out = tmp_path / "e.hdf5"
    r = invoke("data", "combine", tmp_path / "a.hdf5", tmp_path / "b.hdf5", "-o", out)
    one_line_error(r, "train item 7 is 'item-7' in", "but 'item-8' in", "same items in the same order")
    assert not out.exists() and not list(tmp_path.glob("*.tmp*"))


def test_count_and_label_mismatch(tmp_path):
    make_part(tmp_path / "a.hdf5", 4, 1)
    make_part(tmp_path / "short.hdf5", 4, 2, n=N - 1)
    out = tmp_path / "e.hdf5"
    r = invoke("data", "combine", tmp_path / "a.hdf5", tmp_path / "short.hdf5", "-o", out)
    one_line_error(r, "has 299 train + 20 test vectors but", "has 300 + 20")
    make_part(tmp_path / "b.hdf5", 4, 2)
    with h5py.File(tmp_path / "b.hdf5", "a") as f:
        f["train_labels"][3] = 4
    r = invoke("data", "combine", tmp_path / "a.hdf5", tmp_path / "b.hdf5", "-o", out)
    one_line_error(r, "train item 3 has label 3 in", "but 4 in")
    assert not out.exists()


@pytest.mark.parametrize("weights, message", [
    ("1,0", "weight 2 of --weights is 0.0"),
    ("-1,1", "weight 1 of --weights is -1.0"),
    ("1,nan", "weight 2 of --weights is nan"),
    ("inf,1", "weight 1 of --weights is inf"),
    ("1", "--weights has 1 value for 2 parts"),
    ("1,1,1", "--weights has 3 values for 2 parts"),
    ("1,heavy", "'heavy' is not a number"),
])
def test_bad_weights(tmp_path, weights, message):
    make_part(tmp_path / "a.hdf5", 4, 1)
    make_part(tmp_path / "b.hdf5", 3, 2)
    out = tmp_path / "e.hdf5"
    r = invoke("data", "combine", tmp_path / "a.hdf5", tmp_path / "b.hdf5", "--weights", weights, "-o", out)
    one_line_error(r, message)
    assert not out.exists()


def test_refusals_output_is_an_input_one_part_not_a_set_metrics_differ(tmp_path):
    make_part(tmp_path / "a.hdf5", 4, 1)
    make_part(tmp_path / "b.hdf5", 3, 2, metric="angular")
    a, b = tmp_path / "a.hdf5", tmp_path / "b.hdf5"
    before = a.read_bytes()
    one_line_error(invoke("data", "combine", a, b, "-o", a, "--metric", "euclidean"), "is also an input")
    (tmp_path / "link.hdf5").symlink_to(a)
    one_line_error(invoke("data", "combine", a, b, "-o", tmp_path / "link.hdf5", "--metric", "euclidean"),
                   "is also an input")
    assert a.read_bytes() == before
    out = tmp_path / "e.hdf5"
    one_line_error(invoke("data", "combine", a, "-o", out), "at least 2 sets")
    (tmp_path / "notes.txt").write_text("hello\n")
    one_line_error(invoke("data", "combine", a, tmp_path / "notes.txt", "-o", out), "is not an HDF5 file")
    one_line_error(invoke("data", "combine", a, b, "-o", out), "different metrics (a.hdf5: euclidean, "
                   "b.hdf5: angular)", "--metric")
    one_line_error(invoke("data", "combine", a, b, "-o", out, "--normalize", "some"), "--normalize")
    assert not out.exists()
    r = invoke("data", "combine", a, b, "-o", out, "--metric", "angular", "-k", 10)
    assert r.exit_code == 0, r.output
    check_groundtruth_is_brute_force(out)
    write_vectorset(tmp_path / "z.hdf5", np.vstack([np.zeros((1, 4)), np.ones((N - 1, 4))]), np.ones((NQ, 4)),
                    "euclidean", k=5)
    with pytest.raises(InputError, match="train vector 0 of .* is all zeros"):  # no direction to normalise
        combine_sets([tmp_path / "z.hdf5", a], tmp_path / "ez.hdf5")
    assert not (tmp_path / "ez.hdf5").exists()


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    root = tmp_path_factory.mktemp("parts")
    for name, dim, seed, scale in (("a", 5, 11, 1.0), ("b", 3, 12, 7.0), ("c", 2, 13, 0.2)):
        make_part(root / f"{name}.hdf5", dim, seed, scale=scale)
    return [root / f"{name}.hdf5" for name in "abc"]


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(weights=st.lists(st.floats(0.01, 100.0), min_size=2, max_size=3),
       metric=st.sampled_from(["euclidean", "angular", "ip"]))
def test_property_combined_groundtruth_is_brute_force_over_the_weighted_concatenation(parts, weights, metric):
    chosen = parts[: len(weights)]
    with tempfile.TemporaryDirectory() as tmp:
        out = combine_sets(chosen, Path(tmp) / "e.hdf5", weights=weights, metric=metric, k=10)
        with VectorSet(out) as vs:
            E = vs.load_train()
        cols = []
        for path, w in zip(chosen, weights):
            with VectorSet(path) as p:
                cols.append(math.sqrt(w) * unit(p.load_train()))
        np.testing.assert_allclose(E, np.hstack(cols), rtol=1e-5, atol=1e-6)
        check_groundtruth_is_brute_force(out)


# ---- embed --model A --model B ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def digits_idx(tmp_path_factory):
    """120 of scikit-learn's 8x8 digits as an IDX file with its labels, and a second (random) image model."""
    from sklearn.datasets import load_digits

    from embeddings.cnn import SmallCNN

    root = tmp_path_factory.mktemp("digits")
    d = load_digits()
    write_idx(root / "d-images-idx3-ubyte", np.round(d.images[:120] * (255 / 16)).astype(np.uint8))
    write_idx(root / "d-labels-idx1-ubyte", d.target[:120].astype(np.uint8))
    torch.manual_seed(0)
    torch.save(SmallCNN(in_channels=1, widths=(8,), dim=16).eval().state_dict(), root / "sd.pt")
    return root


def test_embed_several_models_equals_combine_of_single_model_sets(tmp_path, digits_idx):
    images, second = digits_idx / "d-images-idx3-ubyte", f"small_cnn:{digits_idx / 'sd.pt'}"
    multi = tmp_path / "multi.hdf5"
    r = invoke("embed", "--model", "digits-cnn", "--model", second, "--weights", "1,0.5", "--input", images,
               "-o", multi, "--test-size", 20, "--seed", 4, "-k", 10)
    assert r.exit_code == 0, r.output
    assert "100 train + 20 test vectors, 80-d, angular (each model normalised), 10 classes" in r.output
    assert "digits-cnn (64-d, weight 1) + small_cnn:" in r.output
    for name, model in (("a", "digits-cnn"), ("b", second)):
        r = invoke("embed", "--model", model, "--input", images, "-o", tmp_path / f"{name}.hdf5", "--test-size",
                   20, "--seed", 4, "-k", 10)
        assert r.exit_code == 0, r.output
    combined = tmp_path / "combined.hdf5"
    r = invoke("data", "combine", tmp_path / "a.hdf5", tmp_path / "b.hdf5", "--weights", "1,0.5", "-o", combined,
               "-k", 10)
    assert r.exit_code == 0, r.output
    with VectorSet(multi) as m, VectorSet(combined) as c:
        assert (m.dim, m.metric) == (80, "angular")
        X = m.load_train()
        np.testing.assert_allclose(X, c.load_train(), atol=1e-6)
        np.testing.assert_allclose(m.load_test(), c.load_test(), atol=1e-6)
        np.testing.assert_allclose(m.distances, c.distances, atol=1e-5)
        for split in ("train", "test"):
            assert list(m.keys(split)) == list(c.keys(split))
            np.testing.assert_array_equal(m.labels(split), c.labels(split))
        attrs = m.attrs
    np.testing.assert_allclose(np.linalg.norm(X[:, :64], axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(X[:, 64:], axis=1), math.sqrt(0.5), rtol=1e-5)
    models = json.loads(attrs["models"])
    assert [(p["model"], p["dim"], p["weight"]) for p in models] == [("digits-cnn", 64, 1.0), (second, 16, 0.5)]
    assert len(models[0]["checkpoint_sha256"]) == 64 and models[1]["model_arch"] == "small_cnn"
    assert attrs["source"] == "ann-bench embed" and attrs["normalize"] == "each" and "normalized" not in attrs
    check_groundtruth_is_brute_force(multi)
    with VectorSet(tmp_path / "a.hdf5") as single:  # one model: the attrs it always had
        assert "models" not in single.attrs and single.attrs["normalized"] and single.attrs["batch_size"] == 256
        assert single.attrs["model"] == "digits-cnn"


def test_embed_library_takes_a_list_and_several_models_default_to_angular(tmp_path):
    from ann_bench.data.embed import EmbedOptions, embed_to_vectorset

    X = np.random.default_rng(0).normal(size=(60, 4)).astype(np.float32)
    np.save(tmp_path / "x.npy", X)
    s = embed_to_vectorset(["identity", "identity"], tmp_path / "x.npy", tmp_path / "ii.hdf5",
                           options=EmbedOptions(test_size=6, k=5, weights=(1.0, 3.0)))
    assert (s.dim, s.metric, s.model) == (8, "angular", "identity + identity")
    with VectorSet(tmp_path / "ii.hdf5") as vs:
        train, keys = vs.load_train(), vs.keys("train").astype(int)
    np.testing.assert_allclose(train, np.hstack([unit(X[keys]), math.sqrt(3) * unit(X[keys])]), atol=1e-6)


@pytest.mark.parametrize("args, message", [
    (["--model", "digits-cnn", "--weights", "1,2"], "--weights needs several --model"),
    (["--model", "digits-cnn", "--model", "digits-cnn", "--weights", "1"], "--weights has 1 value for 2 models"),
    (["--model", "digits-cnn", "--model", "digits-cnn", "--weights", "1,0"], "weight 2 of --weights is 0.0"),
    (["--model", "digits-cnn", "--model", "digits-cnn", "--no-normalize"], "--no-normalize does not apply"),
    (["--model", "digits-cnn", "--model", "nope"], "unknown model 'nope'"),
])
def test_embed_several_models_bad_input(tmp_path, digits_idx, args, message):
    out = tmp_path / "o.hdf5"
    r = invoke("embed", *args, "--input", digits_idx / "d-images-idx3-ubyte", "-o", out)
    one_line_error(r, message)
    assert not out.exists()
