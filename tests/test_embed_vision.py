"""`ann-bench embed --model torchvision:ARCH:PATH.pt / timm:NAME:PATH.pt` (embeddings/vision.py).

The vectors a run writes equal the framework's own forward pass (torchvision's model with its classifier set to
Identity, timm's forward_head(pre_logits=True), the model's logits, a module's pooled output) on the same
preprocessed tensors, cosine >= 0.9999 per row; the torch preprocessing equals torchvision's transforms; every
wrong input ends in one line. Tiny random-weight models on 48x48 images keep it fast.

Tests that run a model need a torchvision (and timm) that loads with this torch, and skip otherwise; the
preprocessing tests need only torch; the missing/broken-torchvision lines are tested where torchvision is absent.
"""

import hashlib
import importlib.util
import json
import sys

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from ann_bench.cli import cli

torch = pytest.importorskip("torch")

from embeddings.vision import Preprocess, center_crop, preprocess_images, resized_size  # noqa: E402  (needs torch)


def _vision():
    """(torchvision, timm), or None where either is missing or does not load with this torch (a torchvision
    built for another torch raises RuntimeError on import)."""
    try:
        import timm
        import torchvision
    except (ImportError, RuntimeError, OSError):
        return None
    return torchvision, timm


VISION = _vision()
needs_vision = pytest.mark.skipif(VISION is None, reason="torchvision/timm not installed or not loading with "
                                                         "this torch (the `vision` extra)")
SMALL = ("--preprocess", "resize=64,crop=56")
SMALL_PRE = Preprocess(resize=64, crop=56)


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def one_line_error(*args, expect=()):
    r = invoke(*args)
    text = r.output.strip()
    assert r.exit_code == 2, text
    assert "Traceback" not in text and len(text.splitlines()) == 1, text
    assert text.startswith("error:"), text
    for part in (expect,) if isinstance(expect, str) else expect:
        assert part in text, text
    return text


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """20 images in two class folders: 17 random 48x48 RGB PNGs, two grey ones, one 40x56 (another shape)."""
    from PIL import Image

    root = tmp_path_factory.mktemp("vision") / "imgs"
    rng = np.random.default_rng(0)
    for i in range(20):
        folder = root / f"class{i % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        shape = (48, 48) if i in (3, 8) else (40, 56, 3) if i == 5 else (48, 48, 3)
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(folder / f"img{i:02d}.png")
    return root


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """Random-weight state_dicts saved as users save theirs: torchvision resnet18 (16 classes) and mobilenet_v2
    (8 classes), timm resnet10t (5 classes)."""
    torchvision, timm = VISION
    d = tmp_path_factory.mktemp("weights")
    torch.manual_seed(0)
    models = {"resnet18": torchvision.models.resnet18(num_classes=16),
              "mobilenet_v2": torchvision.models.mobilenet_v2(num_classes=8),
              "resnet10t": timm.create_model("resnet10t", pretrained=False, num_classes=5)}
    paths = {}
    for name, model in models.items():
        _randomise_batchnorm(model)
        paths[name] = d / f"{name}.pt"
        torch.save(model.state_dict(), paths[name])
    return paths


def _randomise_batchnorm(model):
    """Running statistics away from (0, 1), so that eval mode (which the embedder must use) differs from train."""
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)


def _embed(images, out, *args):
    r = invoke("embed", "--input", images, "-o", out, "--test-size", 4, *args)
    assert r.exit_code == 0, r.output
    with h5py.File(out, "r") as f:
        V = np.concatenate([f["train"][:], f["test"][:]])
        keys = [k.decode() if isinstance(k, bytes) else str(k)
                for k in np.concatenate([f["train_keys"][:], f["test_keys"][:]])]
        attrs = dict(f.attrs)
    return V, keys, attrs, r.output


def _reference(images, keys, forward, pre=SMALL_PRE):
    """The framework's own forward pass on each stored image, preprocessed by the same code, L2-normalised."""
    from PIL import Image

    batch = [np.asarray(Image.open(images / k)) for k in keys]  # (H, W) grey, (H, W, 3) RGB, as decode_image
    with torch.inference_mode():
        R = forward(preprocess_images(batch, pre)).reshape(len(keys), -1).double()
    return (R / R.norm(dim=1, keepdim=True)).numpy()


def _cosines(V, R):
    V = V.astype(np.float64)
    return np.einsum("ij,ij->i", V, R) / np.linalg.norm(V, axis=1) / np.linalg.norm(R, axis=1)


def _torchvision_model(name, path, **kwargs):
    torchvision, _ = VISION
    model = torchvision.models.get_model(name, weights=None, **kwargs)
    model.load_state_dict(torch.load(path, weights_only=True))
    return model.eval()


# ---- preprocessing (torch only) ---------------------------------------------------------------------------
def test_resized_size_keeps_the_aspect_ratio_as_torchvision_resize():
    assert resized_size(48, 48, 64) == (64, 64)
    assert resized_size(40, 56, 64) == (64, 89)  # int(64 * 56 / 40) = 89
    assert resized_size(300, 200, 256) == (384, 256)
    assert resized_size(40, 56, (30, 20)) == (30, 20)


def test_center_crop_takes_the_middle():
    x = torch.arange(6 * 8, dtype=torch.float32).reshape(1, 1, 6, 8)
    assert center_crop(x, (2, 4))[0, 0].tolist() == [[18, 19, 20, 21], [26, 27, 28, 29]]
    assert center_crop(x, 6).shape[-2:] == (6, 6)


def test_mixed_shapes_and_grey_images_keep_their_order():
    rng = np.random.default_rng(0)
    rgb, grey, wide = (rng.integers(0, 256, s, dtype=np.uint8) for s in ((48, 48, 3), (48, 48), (40, 56, 3)))
    x = preprocess_images([rgb, grey, wide, rgb], SMALL_PRE)
    assert x.shape == (4, 3, 56, 56)
    assert torch.equal(x[0], x[3])
    alone = [preprocess_images([im], SMALL_PRE)[0] for im in (rgb, grey, wide)]
    for a, b in zip(alone, x[:3]):
        torch.testing.assert_close(a, b)
    g = x[1] * torch.tensor(SMALL_PRE.std).view(3, 1, 1) + torch.tensor(SMALL_PRE.mean).view(3, 1, 1)
    torch.testing.assert_close(g[0], g[1])  # grey repeated into three equal channels
    torch.testing.assert_close(g[0], g[2])


def test_preprocess_overrides_and_refuses_a_crop_that_does_not_fit():
    from ann_bench.errors import InputError

    pre = Preprocess().overridden({"resize": 64, "crop": 56, "mean": (0.5,), "std": (0.25,)})
    assert (pre.resize, pre.crop, pre.mean, pre.std) == (64, 56, (0.5,) * 3, (0.25,) * 3)
    assert "--preprocess resize=64,crop=56" in pre.to_dict()["source"]
    with pytest.raises(InputError, match=r"center crop 224 does not fit in images resized to 64; .*resize=64,crop=56"):
        Preprocess().overridden({"resize": 64})


# ---- against the framework's own forward pass ------------------------------------------------------------
@needs_vision
def test_resnet18_features_equal_torchvision_with_fc_identity(images, weights, tmp_path):
    V, keys, attrs, output = _embed(images, tmp_path / "r18.hdf5", "--model",
                                    f"torchvision:resnet18:{weights['resnet18']}", *SMALL)
    assert "512-d, angular (normalised)" in output
    model = _torchvision_model("resnet18", weights["resnet18"], num_classes=16)
    model.fc = torch.nn.Identity()
    cos = _cosines(V, _reference(images, keys, model))
    assert V.shape == (20, 512) and cos.min() >= 0.9999, cos.min()
    assert attrs["model_form"] == "torchvision" and attrs["model_arch"] == "resnet18"
    assert attrs["model_layer"] == "features" and attrs["model_classifier"] == "fc"
    assert int(attrs["model_num_classes"]) == 16  # read off fc.weight
    assert attrs["checkpoint_sha256"] == hashlib.sha256(weights["resnet18"].read_bytes()).hexdigest()
    assert attrs["model_library"].startswith("torchvision ")
    pre = json.loads(attrs["model_input"])
    assert (pre["resize"], pre["crop"], pre["mean"], pre["interpolation"]) == (64, [56, 56], [0.485, 0.456, 0.406],
                                                                            "bilinear")


@needs_vision
@pytest.mark.parametrize("layer", ["logits", "layer4"])
def test_resnet18_logits_and_a_named_layer(images, weights, tmp_path, layer):
    V, keys, attrs, _ = _embed(images, tmp_path / f"{layer}.hdf5", "--model",
                               f"torchvision:resnet18:{weights['resnet18']}", "--layer", layer, *SMALL)
    model = _torchvision_model("resnet18", weights["resnet18"], num_classes=16)
    if layer == "logits":
        forward, dim = model, 16
    else:
        seen = []
        model.layer4.register_forward_hook(lambda m, i, o: seen.append(o))

        def forward(x):
            seen.clear()
            model(x)
            return seen[0].mean(dim=(2, 3))  # (b, 512, 2, 2) averaged over H, W
        dim = 512
        assert attrs["model_layer_pooling"] == "global average over H, W"
    cos = _cosines(V, _reference(images, keys, forward))
    assert V.shape == (20, dim) and cos.min() >= 0.9999, cos.min()
    assert attrs["model_layer"] == layer


@needs_vision
def test_mobilenet_v2_features_before_classifier(images, weights, tmp_path):
    V, keys, attrs, _ = _embed(images, tmp_path / "mv2.hdf5", "--model",
                               f"torchvision:mobilenet_v2:{weights['mobilenet_v2']}", *SMALL)
    model = _torchvision_model("mobilenet_v2", weights["mobilenet_v2"], num_classes=8)
    model.classifier[-1] = torch.nn.Identity()
    cos = _cosines(V, _reference(images, keys, model))
    assert V.shape == (20, 1280) and cos.min() >= 0.9999, cos.min()
    assert attrs["model_classifier"] == "classifier.1" and int(attrs["model_num_classes"]) == 8


@needs_vision
def test_the_issue_reproducer_is_pointed_at_the_form_that_loads_it(images, weights, tmp_path):
    """`--model mobilenet_v2:m.pt` with torchvision's mobilenet_v2 state_dict (issue 32's first try): the one line
    names `--model torchvision:mobilenet_v2:m.pt`, and that form embeds."""
    import re

    text = one_line_error("embed", "--model", f"mobilenet_v2:{weights['mobilenet_v2']}", "--input", images, "-o",
                          tmp_path / "x.hdf5", expect=f"--model torchvision:mobilenet_v2:{weights['mobilenet_v2']}")
    assert not (tmp_path / "x.hdf5").exists()
    suggested = re.search(r"--model (torchvision:\S+)", text).group(1)
    V, _, attrs, _ = _embed(images, tmp_path / "mv2.hdf5", "--model", suggested, *SMALL)
    assert V.shape == (20, 1280) and attrs["model_form"] == "torchvision"


@needs_vision
@pytest.mark.parametrize("layer", ["features", "logits"])
def test_timm_pre_logits_and_logits(images, weights, tmp_path, layer):
    _, timm = VISION
    V, keys, attrs, _ = _embed(images, tmp_path / "timm.hdf5", "--model", f"timm:resnet10t:{weights['resnet10t']}",
                               "--layer", layer, *SMALL)
    model = timm.create_model("resnet10t", pretrained=False, num_classes=5)
    model.load_state_dict(torch.load(weights["resnet10t"], weights_only=True))
    model.eval()
    pre = Preprocess(resize=64, crop=56, interpolation="bicubic")  # timm's interpolation for resnet10t
    if layer == "features":
        forward, dim = (lambda x: model.forward_head(model.forward_features(x), pre_logits=True)), 512
    else:
        forward, dim = model, 5
    cos = _cosines(V, _reference(images, keys, forward, pre))
    assert V.shape == (20, dim) and cos.min() >= 0.9999, cos.min()
    assert attrs["model_form"] == "timm" and int(attrs["model_num_classes"]) == 5


@needs_vision
def test_wrapped_and_dataparallel_state_dicts_load_alike(weights, tmp_path):
    from embeddings.vision import load

    sd = torch.load(weights["resnet18"], weights_only=True)
    torch.save({"state_dict": {f"module.{k}": v for k, v in sd.items()}, "epoch": 3}, tmp_path / "wrapped.pt")
    torch.save({"model": sd}, tmp_path / "model.pt")
    x = np.random.default_rng(1).integers(0, 256, (3, 48, 48, 3), dtype=np.uint8)
    from embeddings.base import ModelOptions

    opts = ModelOptions(preprocess={"resize": 64, "crop": 56})
    V = [load("torchvision", f"resnet18:{p}", options=opts).embed(x)
         for p in (weights["resnet18"], tmp_path / "wrapped.pt", tmp_path / "model.pt")]
    np.testing.assert_array_equal(V[0], V[1])
    np.testing.assert_array_equal(V[0], V[2])


@needs_vision
def test_module_versions_kept_in_the_state_dict_survive_unwrapping(tmp_path):
    """MNASNet refuses a state_dict without its version (``_metadata``), also once DataParallel's prefix is gone."""
    torchvision, _ = VISION
    from embeddings.vision import load

    model = torchvision.models.mnasnet0_5(num_classes=3).eval()
    torch.save(model.state_dict(), tmp_path / "plain.pt")
    torch.save({"state_dict": torch.nn.DataParallel(model).state_dict()}, tmp_path / "dp.pt")
    x = np.random.default_rng(1).integers(0, 256, (2, 40, 40, 3), dtype=np.uint8)
    from embeddings.base import ModelOptions

    opts = ModelOptions(preprocess={"resize": 40, "crop": 32})
    V = [load("torchvision", f"mnasnet0_5:{tmp_path / p}", options=opts).embed(x) for p in ("plain.pt", "dp.pt")]
    np.testing.assert_array_equal(V[0], V[1])
    assert V[0].shape == (2, 1280)


# ---- the architecture's own preprocessing -----------------------------------------------------------------
@needs_vision
def test_default_preprocessing_from_weights_enums_and_timm():
    from embeddings.vision import _timm_preprocess, _torchvision_preprocess

    torchvision, timm = VISION
    r18 = _torchvision_preprocess(torchvision, "resnet18")
    assert (r18.resize, r18.crop, r18.mean, r18.std, r18.interpolation) == (
        256, 224, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), "bilinear")
    assert r18.source == "ResNet18_Weights.IMAGENET1K_V1 transforms"
    mv2 = _torchvision_preprocess(torchvision, "mobilenet_v2")
    assert (mv2.resize, mv2.crop) == (232, 224)  # IMAGENET1K_V2
    eff = _torchvision_preprocess(torchvision, "efficientnet_b0")
    assert (eff.resize, eff.crop, eff.interpolation) == (256, 224, "bicubic")
    t = _timm_preprocess(timm, timm.create_model("resnet10t", pretrained=False))
    assert (t.resize, t.crop, t.interpolation) == (201, 176, "bicubic")  # floor(176 / 0.875)


@needs_vision
@pytest.mark.parametrize("mode", ["bilinear", "bicubic"])
def test_torch_preprocessing_equals_torchvision_transforms(mode):
    torchvision, _ = VISION
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as TF

    rng = np.random.default_rng(2)
    im = rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)
    pre = Preprocess(resize=64, crop=56, interpolation=mode)
    ours = preprocess_images([im], pre)[0]
    x = torch.from_numpy(im).permute(2, 0, 1).float() / 255
    x = TF.resize(x, 64, interpolation=InterpolationMode(mode), antialias=True)
    theirs = TF.normalize(TF.center_crop(x, 56), list(pre.mean), list(pre.std))
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)


# ---- one-line errors --------------------------------------------------------------------------------------
@needs_vision
def test_resnet18_weights_into_resnet34_name_the_missing_keys(images, weights, tmp_path):
    one_line_error("embed", "--model", f"torchvision:resnet34:{weights['resnet18']}", "--input", images,
                   "-o", tmp_path / "x.hdf5",
                   expect=("does not fit architecture 'resnet34'", "missing keys layer1.2.conv1.weight (64, 64, 3, 3)"))
    assert not (tmp_path / "x.hdf5").exists()


@needs_vision
def test_num_classes_that_disagree_with_the_file(images, weights, tmp_path):
    one_line_error("embed", "--model", f"torchvision:resnet18:{weights['resnet18']}", "--num-classes", 10,
                   "--input", images, "-o", tmp_path / "x.hdf5",
                   expect="shape mismatch fc.weight: file (16, 512), architecture (10, 512)")


@needs_vision
@pytest.mark.parametrize("spec, expect", [
    ("torchvision:resnt18:{resnet18}", ("unknown torchvision architecture 'resnt18'", "close: resnet18")),
    ("timm:resnt10t:{resnet10t}", ("unknown timm model 'resnt10t'", "close: resnet10t")),
    ("torchvision:fasterrcnn_resnet50_fpn:{resnet18}", "is not an image classification model"),
    ("torchvision:resnet18", "expected torchvision:ARCH:PATH.pt"),
    ("torchvision:resnet18:{missing}", "does not exist"),
])
def test_unknown_names_and_forms(images, weights, tmp_path, spec, expect):
    spec = spec.format(**{k: str(v) for k, v in weights.items()}, missing=tmp_path / "no.pt")
    one_line_error("embed", "--model", spec, "--input", images, "-o", tmp_path / "x.hdf5", expect=expect)


@needs_vision
def test_unknown_layer_lists_names_near_it(images, weights, tmp_path):
    one_line_error("embed", "--model", f"torchvision:resnet18:{weights['resnet18']}", "--layer", "layer5",
                   "--input", images, "-o", tmp_path / "x.hdf5",
                   expect=("--layer 'layer5': resnet18 has no module of that name", "layer4"))


@needs_vision
@pytest.mark.parametrize("option, expect", [
    (("--pooling", "mean"), "--pooling does not apply to --model torchvision:..."),
    (("--preprocess", "resize=64"), "the center crop 224 does not fit in images resized to 64"),
])
def test_options_that_do_not_apply_or_fit(images, weights, tmp_path, option, expect):
    one_line_error("embed", "--model", f"torchvision:resnet18:{weights['resnet18']}", *option, "--input", images,
                   "-o", tmp_path / "x.hdf5", expect=expect)


@needs_vision
def test_a_python_object_in_the_file_is_refused(images, tmp_path):
    torch.save({"fc.weight": torch.zeros(2, 2), "note": object()}, tmp_path / "obj.pt")
    one_line_error("embed", "--model", f"torchvision:resnet18:{tmp_path / 'obj.pt'}", "--input", images,
                   "-o", tmp_path / "x.hdf5", expect="refusing to load")


# ---- where torchvision is missing or broken ---------------------------------------------------------------
@pytest.mark.skipif(importlib.util.find_spec("torchvision") is not None, reason="torchvision is installed")
def test_missing_torchvision_is_one_line(images, tmp_path):
    one_line_error("embed", "--model", "torchvision:resnet18:m.pt", "--input", images, "-o", tmp_path / "x.hdf5",
                   expect=("needs torchvision, which is not installed", 'pip install -e ".[vision]"'))


@pytest.mark.skipif("torchvision" in sys.modules or importlib.util.find_spec("torchvision") is not None,
                    reason="a real torchvision is installed")
@pytest.mark.parametrize("prefix", ["torchvision:resnet18", "timm:resnet10t"])
def test_broken_torchvision_is_one_line(images, tmp_path, monkeypatch, prefix):
    """A torchvision built for another torch fails on import with RuntimeError; simulated by a package that does."""
    fake = tmp_path / "site"
    for name in ("torchvision", "timm"):
        (fake / name).mkdir(parents=True)
        (fake / name / "__init__.py").write_text(
            "raise RuntimeError('operator torchvision::nms does not exist')\n" if name == "torchvision" else
            "import torchvision\n")
    monkeypatch.syspath_prepend(str(fake))
    text = one_line_error("embed", "--model", f"{prefix}:m.pt", "--input", images, "-o", tmp_path / "x.hdf5",
                          expect=("torchvision", "does not load with torch", "operator torchvision::nms does not exist",
                                  "--index-url https://download.pytorch.org/whl/cpu"))
    assert "torchvision 0." in text  # the release that pairs with this torch
    assert "torchvision" not in sys.modules
