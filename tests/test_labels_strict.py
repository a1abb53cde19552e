"""Issue 31, labels and keys under hostile input: text labels store and read back, missing labels (NaN, None,
empty) are refused wherever labels enter or are read, byte-string labels evaluate, degenerate label layouts
give "undefined" instead of a number, keys are unique per split, combine weights cannot make a part vanish,
state_dicts that do not fit are one line, complex or string vectors are refused by every import path."""

import json

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from ann_bench.bench.metrics import label_metrics
from ann_bench.cli import cli
from ann_bench.data.formats import write_idx
from ann_bench.data.vectorset import VectorSet, check_labels_array, validate, write_vectorset
from ann_bench.errors import InputError
from ann_bench.evaluate import evaluate_set

N, NQ, D = 240, 30, 8


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False, terminal_width=400)


def one_line_error(r, *fragments):
    assert r.exit_code == 2, r.output
    assert len(r.output.strip().splitlines()) == 1 and "Traceback" not in r.output, r.output
    for fragment in fragments:
        assert fragment in r.output, r.output


@pytest.fixture
def vectors(tmp_path):
    rng = np.random.default_rng(31)
    centres = rng.normal(size=(4, D)) * 4
    labels = rng.integers(0, 4, N)
    X = (centres[labels] + rng.normal(size=(N, D))).astype(np.float32)
    np.save(tmp_path / "x.npy", X)
    return X, labels


def labelled_set(path, train_labels, test_labels, *, seed=0, keys=None):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(len(train_labels), D)).astype(np.float32)
    Q = rng.normal(size=(len(test_labels), D)).astype(np.float32)
    write_vectorset(path, X, Q, "euclidean", train_labels=train_labels, test_labels=test_labels, train_keys=keys,
                    k=10)
    return path


# ---- 1. text labels --------------------------------------------------------------------------------------
def test_text_labels_are_stored_as_strings_or_integers_and_evaluate(tmp_path, vectors):
    _, labels = vectors
    names = np.array(["cat", "dog", "emu", "yak"])
    (tmp_path / "L.txt").write_text("\n".join(names[labels]) + "\n")
    (tmp_path / "I.txt").write_text("\n".join(str(v) for v in labels) + "\n")
    for name, kind in (("L.txt", "O"), ("I.txt", "i")):
        out = tmp_path / f"o-{name}.hdf5"
        r = invoke("data", "import", tmp_path / "x.npy", "-o", out, "--metric", "euclidean", "--labels",
                   tmp_path / name, "--test-size", NQ)
        assert r.exit_code == 0, r.output
        with h5py.File(out) as f:
            assert f["train_labels"].dtype.kind == kind
            if kind == "O":
                assert h5py.check_string_dtype(f["train_labels"].dtype).encoding == "utf-8"
        r = invoke("evaluate", out, "--json")
        assert r.exit_code == 0, r.output
        doc = json.loads(r.stdout)
        assert doc["exact"]["p_at_1"] > 0.9 and not doc["undefined"]
        assert invoke("data", "info", out).exit_code == 0
    with VectorSet(tmp_path / "o-L.txt.hdf5") as a, VectorSet(tmp_path / "o-I.txt.hdf5") as b:
        assert evaluate_set(a).exact == evaluate_set(b).exact  # the same classes, named or numbered


def test_an_empty_text_label_line_is_refused(tmp_path, vectors):
    lines = ["a"] * N
    lines[7] = ""
    (tmp_path / "L.txt").write_text("\n".join(lines) + "\n")
    out = tmp_path / "o.hdf5"
    r = invoke("data", "import", tmp_path / "x.npy", "-o", out, "--metric", "euclidean", "--labels",
               tmp_path / "L.txt")
    one_line_error(r, "line 8 has no label", "drop the rows")
    assert not out.exists()


# ---- 2. missing (NaN / None / empty) labels ---------------------------------------------------------------
def test_nan_labels_are_refused_at_import_embed_and_combine(tmp_path, vectors):
    _, labels = vectors
    bad = labels.astype(float)
    bad[5] = np.nan
    np.save(tmp_path / "Lnan.npy", bad)
    out = tmp_path / "o.hdf5"
    r = invoke("data", "import", tmp_path / "x.npy", "-o", out, "--metric", "euclidean", "--labels",
               tmp_path / "Lnan.npy")
    one_line_error(r, "row 5 has no label (nan)")
    assert not out.exists()
    many = labels.astype(float)
    many[: 2 * N // 3] = np.nan  # the case: most labels NaN
    np.save(tmp_path / "Lmany.npy", many)
    r = invoke("embed", "--input", tmp_path / "x.npy", "--labels", tmp_path / "Lmany.npy", "-o", out,
               "--test-size", NQ)
    one_line_error(r, "item 0 of", "has no label (nan)")
    assert not out.exists()
    csv = tmp_path / "t.csv"
    csv.write_text("text,label\nhello,a\nworld,\nfoo,b\n")
    r = invoke("embed", "--model", "minilm", "--input", csv, "-o", out, "--test-size", 1)
    one_line_error(r, "row 2 of", "has no label ('')")
    assert not out.exists()
    # a set that already holds them (written before this check): combine, evaluate, info, run refuse it
    old = tmp_path / "old.hdf5"
    labelled_set(old, labels, labels[:NQ])
    with h5py.File(old, "a") as f:
        del f["train_labels"]
        f["train_labels"] = bad
    other = labelled_set(tmp_path / "other.hdf5", labels, labels[:NQ], seed=1)
    r = invoke("data", "combine", other, old, "-o", out)
    one_line_error(r, "'train_labels' of", "row 5 has no label (nan)")
    assert not out.exists()
    one_line_error(invoke("evaluate", old), "row 5", "nan")  # bench.jobs.check_labels words it its own way
    r = invoke("data", "info", old)
    assert r.exit_code == 1 and "row 5 has no label" in " ".join(r.output.split()) and "invalid" in r.output
    r = invoke("run", "--dataset", old, "--backend", "flat", "--results", tmp_path / "r.sqlite")
    assert r.exit_code == 2 and "nan" in r.output and "Traceback" not in r.output


@pytest.mark.parametrize("stored, names, row", [
    (np.array([b"a", b"b", b""] * 80, dtype="S1"), None, 2),  # an empty byte string
    (np.array(["a", "b", "nan"] * 80, dtype=object), None, 2),  # the text str(float('nan')) gives
    (np.array([0, 1, 2] * 80), ["a", "b", "nan"], 2),  # codes into label_names (what embed wrote for NaN)
])
def test_missing_labels_already_in_a_set_make_it_invalid(tmp_path, stored, names, row):
    path = labelled_set(tmp_path / "s.hdf5", np.arange(N) % 3, np.arange(NQ) % 3)
    with h5py.File(path, "a") as f:
        del f["train_labels"]
        if stored.dtype == object:
            f.create_dataset("train_labels", data=stored.astype(str).astype(object),
                             dtype=h5py.string_dtype("utf-8"))
            del f["test_labels"]
            f.create_dataset("test_labels", data=np.array(["a", "b", "c"] * 10, dtype=object),
                             dtype=h5py.string_dtype("utf-8"))
        else:
            f["train_labels"] = stored
        if names is not None:
            f.attrs["label_names"] = json.dumps(names)
    with VectorSet(path) as vs:
        verdict = validate(vs, check_groundtruth_sample=0)
    assert not verdict.ok and f"row {row} has no label" in verdict.problems[0]
    one_line_error(invoke("evaluate", path), f"row {row} has no label")


def test_check_labels_array_is_the_one_rule():
    for bad, what in ((np.array([1.0, np.inf]), "inf"), (np.array(["x", None], dtype=object), "None"),
                      (np.array(["x", "  NaN "]), "NaN"), (np.array([b"x", b"\xff"]), "not UTF-8")):
        with pytest.raises(InputError, match=what):
            check_labels_array(bad, 2, "labels")
    assert check_labels_array(np.array([b"a", b"b"]), 2, "labels").tolist() == ["a", "b"]
    assert check_labels_array(np.array([3, 4], dtype=object), 2, "labels").dtype == np.int64
    with pytest.raises(InputError, match="row 1 has no label"):  # run's label metrics, whatever the caller
        label_metrics(np.zeros((2, 1), dtype=np.int64), np.array(["a", ""], dtype=object),
                      np.array(["a", "a"], dtype=object), 1)


# ---- 3. byte-string labels --------------------------------------------------------------------------------
def test_byte_string_labels_evaluate_like_their_strings(tmp_path):
    rng = np.random.default_rng(2)
    x_labels, q_labels = rng.integers(0, 3, N), rng.integers(0, 3, NQ)
    ints = labelled_set(tmp_path / "i.hdf5", x_labels, q_labels)
    raw = labelled_set(tmp_path / "b.hdf5", np.array([b"c%d" % v for v in x_labels]),
                       np.array([b"c%d" % v for v in q_labels]))
    with h5py.File(raw) as f:
        assert f["train_labels"].dtype.kind == "S"
    r = invoke("evaluate", raw, "--json")
    assert r.exit_code == 0, r.output
    got, want = json.loads(r.stdout)["exact"], json.loads(invoke("evaluate", ints, "--json").stdout)["exact"]
    for key in (*RANKING, "nmi", "ami"):
        assert got[key] == pytest.approx(want[key], abs=1e-12), key
    assert got["verification"] == want["verification"]


# ---- 4. degenerate label layouts ---------------------------------------------------------------------------
RANKING = ("p_at_1", "p_at_5", "recall_at_1", "recall_at_32", "map", "map_at_r", "mrr")


@pytest.mark.parametrize("layout", ["distinct", "single", "no-match", "no-pairs"])
def test_degenerate_layouts_give_undefined_not_numbers(tmp_path, layout):
    train = np.arange(N) % 3
    test = {"distinct": np.arange(NQ), "single": np.zeros(NQ, int), "no-match": np.arange(NQ) % 3 + 10,
            "no-pairs": np.arange(NQ) + 100}[layout]
    train = np.zeros(N, int) if layout == "single" else (np.arange(N) % NQ if layout == "distinct" else train)
    path = labelled_set(tmp_path / f"{layout}.hdf5", train, test)
    doc = json.loads(invoke("evaluate", path, "--json").stdout)
    exact, why = doc["exact"], doc["undefined"]
    ranking_undefined = layout in ("single", "no-match", "no-pairs")  # "distinct": its train has each class
    vectors_undefined = layout != "no-match"  # one class, or each query its own: k-means and pairs say nothing
    for key in RANKING:
        assert (exact[key] is None) == ranking_undefined, (key, exact[key])
        assert (key in why) == ranking_undefined
    assert (exact["nmi"] is None) == (exact["ami"] is None) == ("nmi" in why) == vectors_undefined
    assert (exact["verification_best"]["accuracy"] is None) == vectors_undefined
    assert (set(exact["verification"].values()) == {None}) == vectors_undefined
    if vectors_undefined:
        assert ("no same-class pair" if layout != "single" else "no different-class pair") in why["verification"]
    r = invoke("evaluate", path, "--backend", "flat")
    assert r.exit_code == 0, r.output
    rows = {line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:4]]
            for line in r.output.splitlines() if line.startswith("│")}
    assert (rows["NMI (k-means)"] == ["undefined", "-"]) == vectors_undefined
    best = next(v for label, v in rows.items() if label.startswith("verification acc. (best threshold"))
    assert (best == ["undefined", "-"]) == vectors_undefined
    assert (rows["Precision@1"] == ["undefined", "-"]) == ranking_undefined
    assert ("- undefined: NMI (k-means), AMI (k-means):" in r.output) == vectors_undefined
    assert ("- undefined: Precision@1, Precision@5" in r.output) == ranking_undefined


def test_partly_degenerate_layouts_say_what_the_figures_count(tmp_path):
    train, test = np.arange(N) % 3, np.concatenate([np.arange(NQ - 5) % 3, np.full(5, 9)])
    path = labelled_set(tmp_path / "p.hdf5", train, test)
    with VectorSet(path) as vs:
        result = evaluate_set(vs)
    assert result.exact["p_at_1"] is not None and result.exact["nmi"] is not None
    assert any("5 of 30 queries have no same-label item" in note for note in result.notes)
    small = labelled_set(tmp_path / "small.hdf5", np.array([0, 1, 0, 1]), np.array([0, 1, 0, 1]))
    with VectorSet(small) as vs:
        few = evaluate_set(vs)  # 4 ranked items: Precision@5 and Recall@4..32 say nothing
    assert few.exact["p_at_5"] is None and "needs 5 ranked items" in few.undefined["p_at_5"]
    assert few.exact["recall_at_4"] is None and few.exact["recall_at_2"] is not None


# ---- 5. duplicate keys -------------------------------------------------------------------------------------
def test_duplicate_keys_are_refused_at_import_and_combine_and_make_a_set_invalid(tmp_path, vectors):
    keys = [str(i) for i in range(N)]
    keys[9] = "3"
    (tmp_path / "K.txt").write_text("\n".join(keys) + "\n")
    out = tmp_path / "o.hdf5"
    r = invoke("data", "import", tmp_path / "x.npy", "-o", out, "--metric", "euclidean", "--keys", tmp_path / "K.txt")
    one_line_error(r, "key '3' appears twice, at rows 3 and 9", "unique")
    assert not out.exists()
    # a set written before the check (keys put in with h5py): invalid, and combine refuses it
    labels = np.arange(N) % 3
    a = labelled_set(tmp_path / "a.hdf5", labels, labels[:NQ])
    b = labelled_set(tmp_path / "b.hdf5", labels, labels[:NQ], seed=1)
    for path in (a, b):
        with h5py.File(path, "a") as f:
            f.create_dataset("train_keys", data=np.array(["same"] * N, dtype=object), dtype=h5py.string_dtype())
    with VectorSet(a) as vs:
        verdict = validate(vs, check_groundtruth_sample=0)
    assert not verdict.ok and "'same' twice, at rows 0 and 1" in verdict.problems[0]
    r = invoke("data", "info", a)
    assert r.exit_code == 1 and "'same' twice" in " ".join(r.output.split()) and "invalid" in r.output
    r = invoke("data", "combine", a, b, "-o", out)
    one_line_error(r, "train key 'same' of", "appears twice, at rows 0 and 1")
    assert not out.exists()


def test_duplicate_keys_are_refused_by_embed_and_the_writer(tmp_path):
    csv = tmp_path / "t.csv"
    csv.write_text("id,text,label\n1,hello,a\n2,world,b\n2,foo,a\n3,bar,b\n")
    out = tmp_path / "o.hdf5"
    r = invoke("embed", "--model", "minilm", "--input", csv, "-o", out, "--test-size", 1)
    one_line_error(r, "the key '2'", "row 2 of", "row 3 of")
    assert not out.exists()
    with pytest.raises(InputError, match="appears twice, at rows 0 and 1"):
        labelled_set(out, np.arange(N) % 3, np.arange(NQ) % 3, keys=np.array(["k"] * N, dtype=object))
    assert not out.exists()


# ---- 6. combine weights that make a part vanish or overflow ------------------------------------------------
@pytest.mark.parametrize("weights, normalize, message", [
    ("1,1e-300", "each", "sqrt(1e-300) = 1e-150"),
    ("1e40,1", "each", "overflow"),
    ("1,1e-8", "each", "vanish from every distance"),  # within float32's range but below its rounding
    ("1e-24,1e-24", "none", "below 1e-15"),  # part 2's coordinates are ~1e-4: scaled by 1e-12
])
def test_weights_that_make_a_part_underflow_or_overflow_are_refused(tmp_path, weights, normalize, message):
    labels = np.arange(N) % 3
    a = labelled_set(tmp_path / "a.hdf5", labels, labels[:NQ])
    b = tmp_path / "b.hdf5"
    rng = np.random.default_rng(4)
    write_vectorset(b, rng.normal(size=(N, D)).astype(np.float32) * 1e-4,
                    rng.normal(size=(NQ, D)).astype(np.float32) * 1e-4, "euclidean", train_labels=labels,
                    test_labels=labels[:NQ], k=10)
    out = tmp_path / "o.hdf5"
    r = invoke("data", "combine", a, b, "-o", out, "--weights", weights, "--normalize", normalize)
    one_line_error(r, message)
    assert not out.exists()
    assert invoke("data", "combine", a, b, "-o", out, "--weights", "1,0.001").exit_code == 0


# ---- 7. state_dicts that do not fit ------------------------------------------------------------------------
def test_state_dicts_that_do_not_fit_are_one_line_naming_keys_and_shapes(tmp_path, vectors):
    torch = pytest.importorskip("torch")
    from embeddings.cnn import SmallCNN
    from embeddings.mlp import MLPHead

    sd = MLPHead(D, [6], 4).state_dict()
    cnn = SmallCNN().state_dict()
    cases = {
        "mlp:extra.pt": ({**sd, "extra.weight": torch.zeros(3, 3)}, "unexpected keys extra.weight (3, 3)"),
        "mlp:missing.pt": ({k: v for k, v in sd.items() if k != "net.0.bias"}, "missing keys net.0.bias (6,)"),
        "mlp:shape.pt": ({**sd, "net.2.weight": torch.zeros(4, 5)}, "net.2.weight: file (4, 5), architecture (4, 6)"),
        "mlp:other.pt": ({"layer1.weight": torch.zeros(6, D)}, "no net.N.weight tensors (its keys: layer1.weight"),
        "mlp:flat.pt": ({"net.0.weight": torch.zeros(3)}, "net.0.weight has shape (3,)"),
        "small_cnn:cnn.pt": ({**cnn, "bogus": torch.zeros(1)}, "unexpected keys bogus (1,)"),
        "small_cnn:cnn2.pt": ({k: v for k, v in cnn.items() if k != "head.bias"}, "missing keys head.bias"),
    }
    out = tmp_path / "o.hdf5"
    for spec, (state, message) in cases.items():
        torch.save(state, tmp_path / spec.split(":")[1])
        model = f"{spec.split(':')[0]}:{tmp_path / spec.split(':')[1]}"
        one_line_error(invoke("embed", "--model", model, "--input", tmp_path / "x.npy", "-o", out, "--test-size",
                              NQ), message)
        assert not out.exists()


# ---- 8. complex and string vectors through every import path -----------------------------------------------
def test_complex_or_string_vectors_are_refused_by_every_import_path(tmp_path, vectors):
    X, _ = vectors
    np.save(tmp_path / "xc.npy", X.astype(np.complex64))
    np.save(tmp_path / "xs.npy", X.astype(str))
    write_idx(tmp_path / "x-idx2-ubyte", (np.abs(X) * 10).astype(np.uint8))
    out = tmp_path / "o.hdf5"
    for args, message in (((tmp_path / "xc.npy",), "base vectors in"),
                          ((tmp_path / "xs.npy",), "hold strings"),
                          ((tmp_path / "x.npy", "--queries", tmp_path / "xc.npy"), "query vectors in"),
                          ((tmp_path / "x-idx2-ubyte", "--queries", tmp_path / "xs.npy"), "hold strings")):
        r = invoke("data", "import", *args, "-o", out, "--metric", "euclidean", "--test-size", NQ)
        one_line_error(r, message)
        assert not out.exists()
    r = invoke("data", "import", tmp_path / "xc.npy", "-o", out, "--metric", "euclidean")
    one_line_error(r, "complex")
    pytest.importorskip("pyarrow")
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"vector": [list(map(str, row)) for row in X[:50]]}), tmp_path / "s.parquet")
    r = invoke("data", "import", tmp_path / "s.parquet", "-o", out, "--metric", "euclidean", "--test-size", 5)
    assert r.exit_code == 2 and "Traceback" not in r.output and not out.exists(), r.output
