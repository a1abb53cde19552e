"""Issue 32: the model forms behind one dispatch — options refused where they do not apply, the forms listed by
`ann-bench embedders`, a missing extra named in one line."""

import numpy as np
import pytest
from click.testing import CliRunner

from ann_bench.cli import cli

pytest.importorskip("torch")


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def one_line(r, expect):
    text = r.output.strip()
    assert r.exit_code == 2 and "Traceback" not in text and len(text.splitlines()) == 1, text
    assert expect in text, text


@pytest.fixture
def features(tmp_path):
    path = tmp_path / "f.npy"
    np.save(path, np.random.default_rng(0).standard_normal((50, 8)).astype(np.float32))
    return path


@pytest.mark.parametrize("option", [("--layer", "features"), ("--pooling", "cls"), ("--num-classes", "3"),
                                    ("--preprocess", "resize=32")])
def test_an_option_the_model_does_not_take_is_refused(tmp_path, features, option):
    r = invoke("embed", "--model", "identity", "--input", features, "-o", tmp_path / "o.hdf5", *option)
    one_line(r, f"{option[0]} does not apply to --model identity")
    assert not (tmp_path / "o.hdf5").exists()


@pytest.mark.parametrize("text, expect", [("resize=0", "is not valid"), ("crop=1x2x3", "is not valid"),
                                          ("mean=1/2", "is not valid"), ("std=0", "is not valid"),
                                          ("scale=2", "unknown setting 'scale'"), ("resize", "is not valid")])
def test_preprocess_settings_are_checked(tmp_path, features, text, expect):
    r = invoke("embed", "--model", "identity", "--input", features, "-o", tmp_path / "o.hdf5", "--preprocess", text)
    one_line(r, expect)


def test_embedders_lists_every_form_with_what_it_needs():
    r = invoke("embedders")
    assert r.exit_code == 0, r.output
    text = " ".join(r.output.split())
    for form in ("torchvision:ARCH:PATH.pt", "timm:NAME:PATH.pt", "st:DIR", "hf:DIR", "clip:DIR", "onnx:PATH.onnx"):
        assert form in text, form


def test_a_missing_framework_is_one_line_naming_its_extra(tmp_path, features, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "timm" else real(name, *a))
    r = invoke("embed", "--model", f"timm:resnet10t:{features}", "--input", features, "-o", tmp_path / "o.hdf5")
    one_line(r, 'needs timm, which is not installed: pip install -e ".[vision]"')


def test_a_model_file_is_an_input_the_output_may_not_name(tmp_path, features):
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"not yet a model")
    r = invoke("embed", "--model", f"onnx:{onnx}", "--input", features, "-o", onnx, "--force")
    one_line(r, "is also an input of this command")
    assert onnx.read_bytes() == b"not yet a model"


def _torchvision_like_state_dict():
    """A few tensors of torchvision.models.mobilenet_v2(num_classes=64).state_dict(): its stem and classifier."""
    import torch

    return {"features.0.0.weight": torch.zeros(32, 3, 3, 3), "features.0.1.weight": torch.ones(32),
            "classifier.1.weight": torch.zeros(64, 1280), "classifier.1.bias": torch.zeros(64)}


@pytest.mark.parametrize("spec, expect", [
    ("mobilenet_v2:{p}", "--model torchvision:mobilenet_v2:{p} or timm:mobilenet_v2:{p}"),  # the first try
    ("small_cnn:{p}", "--model torchvision:ARCH:{p} or timm:ARCH:{p}"),
    ("resnet18:{p}", "--model torchvision:resnet18:{p} or timm:resnet18:{p}"),
    ("{p}", "--model torchvision:ARCH:{p} or timm:ARCH:{p}"),
])
def test_a_torchvision_state_dict_named_the_old_way_is_pointed_at_the_new_forms(tmp_path, features, spec, expect):
    """Issue 32's reproducer, `--model mobilenet_v2:m.pt` with torchvision's state_dict, names the form that
    loads it (torchvision:ARCH:PATH.pt) instead of only telling the user to convert to TorchScript."""
    import torch

    path = tmp_path / "m.pt"
    torch.save(_torchvision_like_state_dict(), path)
    r = invoke("embed", "--model", spec.format(p=path), "--input", features, "-o", tmp_path / "o.hdf5")
    one_line(r, expect.format(p=path))
    assert not (tmp_path / "o.hdf5").exists()


def test_ann_bench_own_state_dicts_get_no_torchvision_hint(tmp_path):
    from embeddings.cnn import SmallCNN, foreign_state_dict_hint
    from embeddings.mlp import MLPHead
    from embeddings.mobilenet import MobileNetV2

    for module in (SmallCNN(), MobileNetV2(), MLPHead(in_dim=8, dim=4)):
        assert foreign_state_dict_hint(tmp_path / "m.pt", module.state_dict()) is None
    assert "torchvision:ARCH:" in foreign_state_dict_hint(tmp_path / "m.pt", _torchvision_like_state_dict())
