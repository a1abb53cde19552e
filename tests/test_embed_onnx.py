"""`ann-bench embed --model onnx:PATH.onnx`: tiny random-weight torch models exported here with torch.onnx.export
(an image CNN, a feature MLP, a 2-layer BERT with a saved tokenizer); the vectors written are the torch model's own
forward pass on the same preprocessed input, and what cannot run is refused in one line."""

import json
import warnings

import h5py
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")  # torch.onnx.export writes through it

from click.testing import CliRunner  # noqa: E402

from ann_bench.cli import cli  # noqa: E402
from ann_bench.data.formats import write_idx  # noqa: E402
from embeddings.base import ImageSpec, images_to_tensor  # noqa: E402

TEXTS = ["a man is eating food", "a man is eating bread", "the girl is carrying a baby", "a man is riding a horse",
         "a woman is playing violin", "the stock market fell", "the girl is riding a horse",
         "a baby is eating", "a woman is carrying bread", "the man is playing", "food", "the horse"]
QUERIES = ["a girl riding", "the market is eating violin", "baby"]
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + sorted(set(" ".join(TEXTS + QUERIES).split()))


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def export(module, args, path, names, dynamic, outputs=("embedding",)):
    """torch.onnx.export of ``module`` in eval mode; ``dynamic``: input name -> {axis: name}. The TorchScript-based
    exporter takes ~1 s where the dynamo one takes ~5 s; the latter where the former is gone."""
    module.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(module, args, str(path), input_names=list(names), output_names=list(outputs),
                              dynamic_axes=dynamic or None, dynamo=False)
        except (TypeError, RuntimeError, NotImplementedError):
            shapes = {n: {a: torch.export.Dim(d) for a, d in axes.items()} for n, axes in dynamic.items()}
            torch.onnx.export(module, args, str(path), input_names=list(names), output_names=list(outputs),
                              dynamic_shapes=shapes or None, dynamo=True)
    module.eval()  # the exporter restores the mode it found; make sure
    return path


def unit(x):
    x = np.asarray(x, dtype=np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def assert_same_rows(ours, reference):
    cos = np.sum(unit(ours) * unit(reference), axis=1)
    assert cos.min() >= 0.9999, cos.min()
    return float(cos.min())


def read_set(path):
    with h5py.File(path, "r") as f:
        return f["train"][:], f["test"][:], dict(f.attrs)


class ConvNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(8)
        self.head = torch.nn.Linear(8 * 4 * 4, 12)

    def forward(self, x):
        x = torch.nn.functional.adaptive_avg_pool2d(torch.relu(self.bn(self.conv(x))), 4)
        return self.head(x.flatten(1))


class TwoInputs(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(16, 4)

    def forward(self, a, b):
        return self.lin(a + b)


class LastHidden(torch.nn.Module):
    def __init__(self, bert):
        super().__init__()
        self.bert = bert

    def forward(self, input_ids, attention_mask):
        return self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """The exported models, their torch originals, and inputs: grey 28x28 IDX images and 16-d features."""
    root = tmp_path_factory.mktemp("onnx")
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    cnn = ConvNet().eval()
    with torch.no_grad():  # BatchNorm statistics that are not the identity
        cnn.bn.running_mean.uniform_(-0.2, 0.2)
        cnn.bn.running_var.uniform_(0.5, 2.0)
    export(cnn, (torch.randn(2, 3, 32, 32),), root / "cnn.onnx", ["pixels"], {"pixels": {0: "batch"}})
    mlp = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.GELU(), torch.nn.Linear(32, 8)).eval()
    export(mlp, (torch.randn(2, 16),), root / "mlp.onnx", ["features"], {"features": {0: "batch"}})
    export(mlp, (torch.randn(1, 16),), root / "mlp_b1.onnx", ["features"], {})  # batch fixed to 1
    export(mlp, (torch.randn(4, 16),), root / "mlp_b4.onnx", ["features"], {})  # to 4: the last chunk padded
    export(TwoInputs(), (torch.randn(2, 16), torch.randn(2, 16)), root / "two.onnx", ["a", "b"],
           {"a": {0: "batch"}, "b": {0: "batch"}})
    images = rng.integers(0, 256, size=(40, 28, 28), dtype=np.uint8)
    write_idx(root / "img-images-idx3-ubyte", images[:30])
    write_idx(root / "q-images-idx3-ubyte", images[30:])
    X = rng.normal(size=(60, 16)).astype(np.float32)
    np.save(root / "x.npy", X[:50])
    np.save(root / "q.npy", X[50:])
    np.save(root / "x20.npy", rng.normal(size=(30, 20)).astype(np.float32))
    return {"root": root, "cnn": cnn, "mlp": mlp, "images": images, "X": X}


@pytest.fixture(scope="module")
def text_model(models):
    """A 2-layer BERT (hidden 32) with a word-piece tokenizer over a tiny vocabulary, saved and exported with dynamic
    batch and sequence axes."""
    from transformers import BertConfig, BertModel, BertTokenizer

    root = models["root"]
    tok_dir = root / "tok"
    tok_dir.mkdir()
    (root / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    BertTokenizer(vocab_file=str(root / "vocab.txt"), do_lower_case=True).save_pretrained(str(tok_dir))
    torch.manual_seed(1)
    config = BertConfig(vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64)
    bert = LastHidden(BertModel(config)).eval()
    ids = torch.tensor([[2, 5, 6, 7, 3], [2, 8, 3, 0, 0]])
    axes = {0: "batch", 1: "seq"}
    export(bert, (ids, (ids != 0).long()), root / "bert.onnx", ["input_ids", "attention_mask"],
           {"input_ids": axes, "attention_mask": axes}, outputs=("last_hidden_state",))
    (root / "texts.txt").write_text("\n".join(TEXTS) + "\n")
    (root / "queries.txt").write_text("\n".join(QUERIES) + "\n")
    return {"bert": bert, "tok": tok_dir, "root": root}


def test_image_model_matches_torch(models, tmp_path):
    root, out = models["root"], tmp_path / "img.hdf5"
    r = invoke("embed", "--model", f"onnx:{root / 'cnn.onnx'}", "--input", root / "img-images-idx3-ubyte",
               "--queries", root / "q-images-idx3-ubyte", "-o", out, "--batch-size", 7)
    assert r.exit_code == 0, r.output
    assert "30 train + 10 test vectors, 12-d, angular (normalised)" in r.output
    train, test, attrs = read_set(out)
    # grey 28x28 -> RGB by repetition, resized to the graph's 32x32, pixels in [0, 1]
    x = images_to_tensor(models["images"], ImageSpec(size=(32, 32), channels=3))
    with torch.no_grad():
        reference = models["cnn"](x).numpy()
    assert_same_rows(np.concatenate([train, test]), reference)
    assert attrs["model_format"] == "onnx" and attrs["onnx_kind"] == "image" and len(attrs["checkpoint_sha256"]) == 64
    assert json.loads(attrs["onnx_inputs"]) == ["pixels float [batch, 3, 32, 32]"]
    assert attrs["onnx_output"] == "embedding float [batch, 12]" and attrs["onnx_batch"] == "dynamic"
    pre = json.loads(attrs["preprocessing"])
    assert pre["size"] == [32, 32] and pre["channels"] == 3 and pre["mean"] == [0.0] and pre["std"] == [1.0]
    assert attrs["onnxruntime"] and json.loads(attrs["onnx_providers"]) == ["CPUExecutionProvider"]
    assert json.loads(attrs["onnx_threads"])["intra_op"] == 0


def test_image_preprocess_resize_crop_mean_std(models, tmp_path):
    root, out = models["root"], tmp_path / "pre.hdf5"
    r = invoke("embed", "--model", f"onnx:{root / 'cnn.onnx'}", "--input", root / "img-images-idx3-ubyte",
               "--test-size", 5, "-o", out, "--preprocess", "resize=36,crop=32,mean=0.5/0.4/0.3,std=0.25")
    assert r.exit_code == 0, r.output
    with h5py.File(out, "r") as f:
        keys = np.concatenate([f["train_keys"][:], f["test_keys"][:]]).astype(np.int64)
        ours = np.concatenate([f["train"][:], f["test"][:]])
        pre = json.loads(f.attrs["preprocessing"])
    x = images_to_tensor(models["images"][:30], ImageSpec(size=(36, 36), channels=3, mean=(0.5, 0.4, 0.3),
                                                          std=(0.25,)))[:, :, 2:34, 2:34]
    with torch.no_grad():
        reference = models["cnn"](x).numpy()
    assert_same_rows(ours, reference[keys])
    assert pre["resize"] == "36" and pre["crop"] == [32, 32] and pre["mean"] == [0.5, 0.4, 0.3]


@pytest.mark.parametrize("name", ["mlp.onnx", "mlp_b1.onnx", "mlp_b4.onnx"])
def test_array_model_matches_torch(models, tmp_path, name):
    root, out = models["root"], tmp_path / "arr.hdf5"
    r = invoke("embed", "--model", f"onnx:{root / name}", "--input", root / "x.npy", "--queries", root / "q.npy",
               "-o", out, "--batch-size", 16)
    assert r.exit_code == 0, r.output
    train, test, attrs = read_set(out)
    with torch.no_grad():
        reference = models["mlp"](torch.from_numpy(models["X"])).numpy()
    assert_same_rows(np.concatenate([train, test]), reference)
    assert attrs["onnx_kind"] == "array" and attrs["onnx_batch"] == {"mlp.onnx": "dynamic", "mlp_b1.onnx": 1,
                                                                      "mlp_b4.onnx": 4}[name]


@pytest.mark.parametrize("pooling", [None, "cls"])
def test_text_model_matches_torch(text_model, tmp_path, pooling):
    from transformers import AutoTokenizer

    root, out = text_model["root"], tmp_path / "text.hdf5"
    extra = ["--pooling", pooling] if pooling else []
    r = invoke("embed", "--model", f"onnx:{root / 'bert.onnx'}", "--tokenizer", text_model["tok"], *extra,
               "--input", root / "texts.txt", "--queries", root / "queries.txt", "-o", out, "--batch-size", 5)
    assert r.exit_code == 0, r.output
    assert "12 train + 3 test vectors, 32-d, angular (normalised)" in r.output
    train, test, attrs = read_set(out)
    tok = AutoTokenizer.from_pretrained(str(text_model["tok"]), local_files_only=True)
    enc = tok(TEXTS + QUERIES, padding=True, return_tensors="pt")
    with torch.no_grad():
        h = text_model["bert"](enc["input_ids"], enc["attention_mask"])
    m = enc["attention_mask"].unsqueeze(-1).float()
    reference = h[:, 0] if pooling == "cls" else (h * m).sum(1) / m.sum(1)
    assert_same_rows(np.concatenate([train, test]), reference.numpy())
    assert attrs["pooling"] == (pooling or "mean") and attrs["onnx_kind"] == "text"
    files = json.loads(attrs["tokenizer_files"])
    assert "tokenizer_config.json" in files and all(len(v) == 64 for v in files.values())
    assert attrs["tokenizer"] == str(text_model["tok"].resolve())


@pytest.mark.parametrize("args, message", [
    (["--model", "onnx:{root}/two.onnx", "--input", "{root}/x.npy"],
     "unsupported inputs (a float [batch, 16], b float [batch, 16])"),
    (["--model", "onnx:{root}/bert.onnx", "--input", "{root}/texts.txt"], "is a text model (inputs input_ids"),
    (["--model", "onnx:{root}/bert.onnx", "--input", "{root}/texts.txt", "--tokenizer", "{root}/no-tok"],
     "--tokenizer '{root}/no-tok' is not a directory"),
    (["--model", "onnx:{root}/junk.onnx", "--input", "{root}/x.npy"], "cannot load ONNX model '{root}/junk.onnx'"),
    (["--model", "onnx:{root}/missing.onnx", "--input", "{root}/x.npy"], "does not exist"),
    (["--model", "onnx:{root}/cnn.onnx", "--input", "{root}/texts.txt"],
     "takes image input (its inputs: pixels float [batch, 3, 32, 32]), but the input holds text items"),
    (["--model", "onnx:{root}/bert.onnx", "--tokenizer", "{root}/tok", "--input", "{root}/img-images-idx3-ubyte"],
     "takes text input"),
    (["--model", "onnx:{root}/mlp.onnx", "--input", "{root}/x20.npy"], "takes 16-d features"),
    (["--model", "onnx:{root}/cnn.onnx", "--input", "{root}/x.npy", "--tokenizer", "{root}/tok"],
     "--tokenizer does not apply to --model onnx:"),
    (["--model", "onnx:{root}/cnn.onnx", "--input", "{root}/img-images-idx3-ubyte", "--layer", "nope"],
     "--layer 'nope': model onnx:{root}/cnn.onnx has no output of that name; its outputs: embedding float"),
    (["--model", "onnx:{root}/cnn.onnx", "--input", "{root}/img-images-idx3-ubyte", "--preprocess", "crop=24"],
     "crop=24x24 does not fit model"),
    (["--model", "onnx:{root}/mlp.onnx", "--input", "{root}/x.npy", "--pooling", "cls"],
     "--pooling does not apply to --model onnx:"),
])
def test_refusals_one_line(models, text_model, tmp_path, args, message):
    root = models["root"]
    (root / "junk.onnx").write_bytes(b"this is not a protobuf \x00\xff" * 10)
    out = tmp_path / "out.hdf5"
    r = invoke("embed", *[a.format(root=root) for a in args], "-o", out, "--test-size", 3)
    assert r.exit_code == 2, r.output
    assert message.format(root=root) in r.output and "Traceback" not in r.output
    assert len(r.output.strip().splitlines()) == 1, r.output
    assert not out.exists()
