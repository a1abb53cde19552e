"""`ann-bench embed --model st:DIR | hf:DIR | clip:DIR` (issue 32): tiny random-weight models saved here, the
vectors the command writes compared row by row with the framework's own forward pass, provenance, and the
one-line refusals. Nothing is downloaded."""

import json
import os

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from ann_bench.cli import cli

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
st = pytest.importorskip("sentence_transformers")

WORDS = "a the cat dog sat on mat red blue photo of an image car tree runs fast slow big small".split()
TEXTS = ["a cat sat on the mat", "the dog runs fast", "a red car", "a photo of a big tree", "blue image",
         "the small dog sat", "a slow car on the mat", "an image of a cat", "big red tree", "the cat runs",
         "a blue car runs fast", "photo of the mat", "dog", "a tree of cats", "the big small slow dog",
         "unknown words here qq", "cat cat cat cat cat cat cat cat cat cat cat cat cat cat cat cat cat cat cat cat"]
QUERIES = ["a cat", "the red car runs", "photo of a tree", "dog on the mat"]


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def one_line_error(*args, expect=""):
    r = invoke(*args)
    text = r.output.strip()
    assert r.exit_code == 2, text
    assert "Traceback" not in text and len(text.splitlines()) == 1, text
    assert text.startswith("error:") and expect in text, text
    return text


def cosines(A, B):
    A, B = np.asarray(A, np.float64), np.asarray(B, np.float64)
    return np.einsum("ij,ij->i", A, B) / np.linalg.norm(A, axis=1) / np.linalg.norm(B, axis=1)


def st_models():
    """sentence-transformers' module classes (``sentence_transformers.models`` is deprecated from 6.x)."""
    try:
        from types import SimpleNamespace

        from sentence_transformers.base.modules import Normalize, Transformer
        from sentence_transformers.sentence_transformer.modules import Pooling

        return SimpleNamespace(Transformer=Transformer, Pooling=Pooling, Normalize=Normalize)
    except ImportError:
        from sentence_transformers import models

        return models


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A 2-layer BERT (hf:), the same wrapped as sentence-transformers (st:), a tiny CLIP (clip:)."""
    from sentence_transformers import SentenceTransformer
    from transformers import (BertConfig, BertModel, BertTokenizer, CLIPConfig, CLIPImageProcessor, CLIPModel,
                              CLIPProcessor, CLIPTokenizer)

    root = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    bert = root / "bert"
    bert.mkdir()
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS
    (bert / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizer(str(bert / "vocab.txt"), model_max_length=512).save_pretrained(bert)
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=16)  # shorter than the long text: truncation
    BertModel(config).save_pretrained(bert)
    stdir = root / "st"
    tr = st_models().Transformer(str(bert), max_seq_length=12)
    SentenceTransformer(modules=[tr, st_models().Pooling(32, pooling_mode="mean"), st_models().Normalize()]).save(
        str(stdir))
    clip = root / "clip"
    clip.mkdir()
    cvocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for w in WORDS:
        cvocab[w + "</w>"] = len(cvocab)
    for c in "abcdefghijklmnopqrstuvwxyz":
        cvocab.setdefault(c, len(cvocab))
        cvocab.setdefault(c + "</w>", len(cvocab))
    (clip / "vocab.json").write_text(json.dumps(cvocab))
    (clip / "merges.txt").write_text("#version: 0.2\n")
    tok = CLIPTokenizer(str(clip / "vocab.json"), str(clip / "merges.txt"))
    cconfig = CLIPConfig(
        text_config=dict(vocab_size=len(cvocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=16, bos_token_id=0, eos_token_id=1,
                         pad_token_id=1),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=32, patch_size=8),
        projection_dim=16)
    CLIPModel(cconfig).save_pretrained(clip)
    ip = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    CLIPProcessor(image_processor=ip, tokenizer=tok).save_pretrained(clip)
    texts = root / "texts.txt"
    texts.write_text("\n".join(TEXTS) + "\n")
    queries = root / "queries.txt"
    queries.write_text("\n".join(QUERIES) + "\n")
    return {"bert": bert, "st": stdir, "clip": clip, "texts": texts, "queries": queries, "root": root}


@pytest.fixture(scope="module")
def images(models):
    """Two image folders (base, queries) of random pictures of several sizes, grey and RGB: (folders, arrays)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    arrays = {}
    for name, n in (("imgs", 10), ("qimgs", 3)):
        folder = models["root"] / name
        folder.mkdir()
        for i in range(n):
            h, w = int(rng.integers(20, 70)), int(rng.integers(20, 70))
            shape = (h, w) if i % 3 == 0 else (h, w, 3)
            arr = rng.integers(0, 256, shape, dtype=np.uint8)
            Image.fromarray(arr).save(folder / f"{i:02d}.png")
            arrays[f"{name}/{i:02d}.png"] = arr
    return models["root"] / "imgs", models["root"] / "qimgs", arrays


def read_set(path):
    with h5py.File(path, "r") as f:
        keys = {part: [k.decode() if isinstance(k, bytes) else k for k in f[f"{part}_keys"][()]]
                if f"{part}_keys" in f else None for part in ("train", "test")}
        return f["train"][()], f["test"][()], dict(f.attrs), keys


def embed_texts(models, spec, out, *extra):
    r = invoke("embed", "--model", spec, "--input", models["texts"], "--queries", models["queries"], "-o", out, *extra)
    assert r.exit_code == 0, r.output
    return r.output, read_set(out)


def test_st_matches_encode(models, tmp_path):
    from sentence_transformers import SentenceTransformer

    output, (train, test, attrs, _) = embed_texts(models, f"st:{models['st']}", tmp_path / "st.hdf5")
    assert f"{len(TEXTS)} train + {len(QUERIES)} test vectors, 32-d, angular (normalised), no labels" in output
    ref = SentenceTransformer(str(models["st"]), device="cpu", local_files_only=True)
    for got, texts in ((train, TEXTS), (test, QUERIES)):
        want = ref.encode(texts, convert_to_numpy=True, normalize_embeddings=True)
        assert cosines(got, want).min() >= 0.9999
        np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1, atol=1e-5)
    assert attrs["model"] == f"st:{models['st']}" and attrs["model_format"] == "sentence-transformers"
    assert attrs["model_path"] == str(models["st"].resolve()) and len(attrs["checkpoint_sha256"]) == 64
    assert attrs["pooling"] == "mean" and attrs["modules"] == "Transformer, Pooling, Normalize"
    assert attrs["model_max_seq_length"] == 12 and attrs["normalized"] and attrs["distance"] == "angular"


def test_directory_digest_follows_every_file(models, tmp_path):
    import shutil

    from embeddings.hf import sha256_dir

    copy = tmp_path / "copy"
    shutil.copytree(models["st"], copy)
    digest, count = sha256_dir(copy)
    assert (digest, count) == sha256_dir(models["st"]) and count >= 5
    (copy / ".cache").mkdir()
    (copy / ".cache" / "junk").write_text("x")
    assert sha256_dir(copy) == (digest, count)  # hidden files are not the model
    (copy / "1_Pooling" / "config.json").write_text((copy / "1_Pooling" / "config.json").read_text() + " ")
    assert sha256_dir(copy)[0] != digest


def manual_pool(models, texts, pooling):
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(models["bert"]), local_files_only=True)
    model = AutoModel.from_pretrained(str(models["bert"]), local_files_only=True).eval()
    enc = tok(texts, padding=True, truncation=True, max_length=16, return_tensors="pt")
    with torch.no_grad():
        h = model(**enc).last_hidden_state
    if pooling == "cls":
        return h[:, 0].numpy()
    m = enc["attention_mask"].unsqueeze(-1).float()
    return ((h * m).sum(1) / m.sum(1)).numpy()


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_hf_matches_manual_pooling(models, tmp_path, pooling):
    extra = () if pooling == "mean" else ("--pooling", "cls")
    _, (train, test, attrs, _) = embed_texts(models, f"hf:{models['bert']}", tmp_path / "hf.hdf5", *extra)
    for got, texts in ((train, TEXTS), (test, QUERIES)):
        assert cosines(got, manual_pool(models, texts, pooling)).min() >= 0.9999
    assert attrs["pooling"] == pooling and attrs["model_type"] == "bert" and attrs["model_format"] == "transformers"
    assert attrs["model_max_seq_length"] == 16  # tokenizer's 512 capped at the model's position embeddings
    if pooling == "mean":  # the pooling really differs: the two forms do not give the same vectors
        assert cosines(train, manual_pool(models, TEXTS, "cls")).min() < 0.99


def test_clip_texts_and_images_match_the_model(models, images, tmp_path):
    from transformers import AutoTokenizer, CLIPModel

    from embeddings.hf import _features, _image_processor

    spec = f"clip:{models['clip']}"
    model = CLIPModel.from_pretrained(str(models["clip"]), local_files_only=True).eval()
    _, (train, test, attrs, _) = embed_texts(models, spec, tmp_path / "txt.hdf5")
    tok = AutoTokenizer.from_pretrained(str(models["clip"]), local_files_only=True)
    for got, texts in ((train, TEXTS), (test, QUERIES)):
        with torch.no_grad():
            want = _features(model.get_text_features(**tok(texts, padding=True, truncation=True, max_length=16,
                                                            return_tensors="pt"))).numpy()
        assert cosines(got, want).min() >= 0.9999
    assert attrs["modality"] == "text" and attrs["clip_projection_dim"] == 16 and attrs["model_max_seq_length"] == 16

    base, queries, arrays = images
    out = tmp_path / "img.hdf5"
    r = invoke("embed", "--model", spec, "--input", base, "--queries", queries, "-o", out)
    assert r.exit_code == 0, r.output
    assert "10 train + 3 test vectors, 16-d, angular (normalised)" in r.output
    train, test, attrs, keys = read_set(out)
    processor = _image_processor(models["clip"])
    for got, folder, part in ((train, "imgs", "train"), (test, "qimgs", "test")):
        ims = [arrays[f"{folder}/{k}"] for k in keys[part]]
        rgb = [np.repeat(a[:, :, None], 3, axis=2) if a.ndim == 2 else a for a in ims]
        with torch.no_grad():
            want = _features(model.get_image_features(
                pixel_values=processor(rgb, return_tensors="pt")["pixel_values"])).numpy()
        assert cosines(got, want).min() >= 0.9999
    assert attrs["modality"] == "image"
    model_input = json.loads(attrs["model_input"])
    assert model_input["resize"] == {"shortest_edge": 32} and model_input["crop"] == {"height": 32, "width": 32}
    assert model_input["resample"] == "bicubic" and len(model_input["mean"]) == 3


def test_clip_preprocess_overrides_reach_the_processor(models, images):
    from transformers import CLIPImageProcessor

    from embeddings import load_embedder
    from embeddings.base import ModelOptions, parse_preprocess

    _, _, arrays = images
    arr = arrays["imgs/01.png"]
    e = load_embedder(f"clip:{models['clip']}",
                      options=ModelOptions(preprocess=parse_preprocess("resize=64,crop=32,mean=0.5,std=0.25")))
    e.bind("image")
    got = e.pixel_values([arr]).numpy()
    ref = CLIPImageProcessor(size={"shortest_edge": 64}, crop_size={"height": 32, "width": 32},
                             image_mean=[0.5] * 3, image_std=[0.25] * 3)
    np.testing.assert_allclose(got, ref([arr], return_tensors="np")["pixel_values"], atol=1e-5)
    default = load_embedder(f"clip:{models['clip']}")
    default.bind("image")
    assert np.abs(default.pixel_values([arr]).numpy() - got).max() > 0.1
    assert json.loads(json.dumps(e.provenance()["model_input"]))["overridden"] == ["crop", "mean", "resize", "std"]


@pytest.mark.parametrize("prefix", ["st", "hf", "clip"])
def test_a_hub_name_is_refused(prefix, tmp_path):
    texts = tmp_path / "t.txt"
    texts.write_text("\n".join(TEXTS))
    text = one_line_error("embed", "--model", f"{prefix}:sentence-transformers/all-MiniLM-L6-v2", "--input",
                          texts, "-o", tmp_path / "o.hdf5", expect="no such local directory")
    assert "only local directories are read" in text
    assert ("SentenceTransformer(NAME).save(DIR)" if prefix == "st" else "save_pretrained(DIR)") in text


def test_refusals(models, images, tmp_path):
    texts, out = models["texts"], tmp_path / "o.hdf5"
    empty = tmp_path / "empty"
    empty.mkdir()
    for prefix in ("st", "hf", "clip"):
        one_line_error("embed", "--model", f"{prefix}:{empty}", "--input", texts, "-o", out,
                       expect="the directory holds no model")
    one_line_error("embed", "--model", f"st:{models['st']}", "--pooling", "cls", "--input", texts, "-o", out,
                   expect="--pooling does not apply to --model st:")
    one_line_error("embed", "--model", f"hf:{models['bert']}", "--layer", "features", "--input", texts, "-o", out,
                   expect="--layer does not apply to --model hf:")
    one_line_error("embed", "--model", f"hf:{models['bert']}", "--input", images[0], "-o", out,
                   expect="takes text input, but the input holds image items")
    one_line_error("embed", "--model", f"st:{models['st']}", "--input", images[0], "-o", out,
                   expect="takes text input, but the input holds image items")
    one_line_error("embed", "--model", f"hf:{models['clip']}", "--input", texts, "-o", out,
                   expect="use --model clip:DIR")
    one_line_error("embed", "--model", f"clip:{models['bert']}", "--input", texts, "-o", out,
                   expect="not CLIP")
    one_line_error("embed", "--model", f"clip:{models['clip']}", "--preprocess", "crop=48", "--input", images[0],
                   "-o", out, expect="vision tower takes 32x32")
    one_line_error("embed", "--model", f"clip:{models['clip']}", "--preprocess", "resize=40", "--input", texts,
                   "-o", out, expect="--preprocess applies to images")
    npy = tmp_path / "x.npy"
    np.save(npy, np.zeros((20, 4), np.float32))
    one_line_error("embed", "--model", f"clip:{models['clip']}", "--input", npy, "-o", out,
                   expect="takes image or text input")
    assert not out.exists()


def test_cross_modal_set_text_queries_against_images(models, images, tmp_path):
    spec = f"clip:{models['clip']}"
    img, txt, cross = tmp_path / "img.hdf5", tmp_path / "txt.hdf5", tmp_path / "cross.hdf5"
    labelled = tmp_path / "imgs"  # the base images in two named classes
    for i, f in enumerate(sorted(images[0].iterdir())):
        (labelled / ("cats" if i % 2 else "cars")).mkdir(parents=True, exist_ok=True)
        (labelled / ("cats" if i % 2 else "cars") / f.name).write_bytes(f.read_bytes())
    assert invoke("embed", "--model", spec, "--input", labelled, "-o", img, "--test-size", 2).exit_code == 0
    csv = tmp_path / "captions.csv"
    csv.write_text("text,label\n" + "".join(f"{t},{'cats' if 'cat' in t else 'dogs'}\n" for t in TEXTS))
    assert invoke("embed", "--model", spec, "--input", csv, "-o", txt, "--test-size", 5).exit_code == 0
    r = invoke("data", "cross", img, txt, "-o", cross, "--base-part", "all")
    assert r.exit_code == 0, r.output
    assert "10 base vectors (img.hdf5 all) + 5 queries (txt.hdf5 test), 16-d, angular" in r.output
    info = json.loads(invoke("data", "info", cross, "--json").output)
    assert info["valid"], info["problems"]
    b_train, b_test, b_attrs, b_keys = read_set(img)
    _, q_test, q_attrs, q_keys = read_set(txt)
    train, test, attrs, keys = read_set(cross)
    np.testing.assert_array_equal(train, np.concatenate([b_train, b_test]))
    np.testing.assert_array_equal(test, q_test)
    assert keys["train"] == b_keys["train"] + b_keys["test"] and keys["test"] == q_keys["test"]
    assert json.loads(attrs["label_names"]) == ["cars", "cats", "dogs"]  # the union of both sides' names
    with h5py.File(cross, "r") as f:
        names = json.loads(attrs["label_names"])
        assert [names[i] for i in f["train_labels"][:2]] == [k.split("/")[0] for k in keys["train"][:2]]
        D = 1 - (test / np.linalg.norm(test, axis=1)[:, None]) @ (train / np.linalg.norm(train, axis=1)[:, None]).T
        np.testing.assert_array_equal(f["neighbors"][:, :3], np.argsort(D, axis=1, kind="stable")[:, :3])
    base_set, queries_set = json.loads(attrs["base_set"]), json.loads(attrs["queries_set"])
    assert base_set["modality"] == "image" and queries_set["modality"] == "text" and base_set["part"] == "all"
    assert base_set["checkpoint_sha256"] == queries_set["checkpoint_sha256"] == b_attrs["checkpoint_sha256"]
    assert attrs["source"] == "ann-bench data cross"
    st_set = tmp_path / "st.hdf5"
    embed_texts(models, f"st:{models['st']}", st_set)
    one_line_error("data", "cross", img, st_set, "-o", tmp_path / "bad.hdf5", expect="is 16-d but")


def test_search_embeds_queries_as_the_index_was_embedded_or_stops(models, tmp_path):
    """search --model: queries embedded with another pooling (or other weights) than the index's vectors are
    refused in one line; with the same options they are searched."""
    out = tmp_path / "cls.hdf5"
    embed_texts(models, f"hf:{models['bert']}", out, "--pooling", "cls")
    r = invoke("index", "build", "--dataset", out, "--backend", "flat", "-o", tmp_path / "idx")
    assert r.exit_code == 0, r.output
    ask = ("search", tmp_path / "idx", "--queries", models["queries"], "--model", f"hf:{models['bert']}")
    r = invoke(*ask, "-o", tmp_path / "mean.csv")
    assert r.exit_code == 2 and "pooling 'mean'" in r.output and "'cls'" in r.output, r.output
    assert not (tmp_path / "mean.csv").exists()
    r = invoke(*ask, "--pooling", "cls", "-o", tmp_path / "cls.csv")
    assert r.exit_code == 0, r.output
    r = invoke("search", tmp_path / "idx", "--queries", models["queries"], "--model", f"st:{models['st']}",
               "-o", tmp_path / "st.csv")
    assert r.exit_code == 2 and "checkpoint_sha256" in r.output, r.output
    r = invoke("search", tmp_path / "idx", "--queries", out, "--pooling", "cls", "-o", tmp_path / "x.csv")
    assert r.exit_code == 2 and "pass --model too" in r.output, r.output
