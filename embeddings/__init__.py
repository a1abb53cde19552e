"""Embedders: the models whose vectors ``ann-bench embed`` writes as VectorSets, and their training.

Every embedder implements :class:`embeddings.base.Embedder` (name, input kind, dim, metric, ``embed(batch)``).
:func:`load_embedder` resolves what ``--model`` names:

- a registered name (``ann-bench embedders`` lists them): ``minilm``, ``digits-cnn``, ``fashion-cnn``, ``identity``;
- ``ARCH:path.pt``: a state_dict for a named architecture (:data:`embeddings.cnn.ARCHITECTURES`), loaded with
  ``torch.load(weights_only=True)``;
- ``path.pt``: a TorchScript file (``torch.jit.load``), or an ann-bench checkpoint that names its architecture
  (``ann-bench train`` writes them: image models, or an ``mlp`` head run over frozen MiniLM text features).

Nothing here unpickles arbitrary Python objects, and nothing downloads weights.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from ann_bench.errors import EXTRAS, InputError, missing_extra, require
from embeddings.base import INPUT_KINDS, Embedder, ModelOptions

# (registered name, module, class) of every embedder, in listing order. Modules are imported when needed.
_MODULES = [
    ("minilm", "embeddings.minilm", "MiniLM"),
    ("digits-cnn", "embeddings.cnn", "DigitsCNN"),
    ("fashion-cnn", "embeddings.cnn", "FashionCNN"),
    ("identity", "embeddings.identity", "Identity"),
]
TORCH_PURPOSE = "embedding with a torch model (`ann-bench embed`)"
ARCHITECTURE_NAMES = ("small_cnn", "mobilenet_v2", "mlp")  # keys of embeddings.cnn.ARCHITECTURES, listed without importing torch

_REGISTRY: dict[str, type[Embedder]] = {}
_MISSING: dict[str, str] = {}  # registered name -> the missing module its implementation imports


def register(cls: type[Embedder]) -> type[Embedder]:
    """Add an embedder class to the registry (usable as a class decorator)."""
    _REGISTRY[cls.name] = cls
    return cls


def registry() -> dict[str, type[Embedder]]:
    """The embedders whose modules import; those whose dependencies (torch: the ``embed`` extra) are missing
    are listed by :func:`missing_embedders` instead."""
    if not _REGISTRY and not _MISSING:
        for name, module, cls in _MODULES:
            try:
                register(getattr(importlib.import_module(module), cls))
            except ModuleNotFoundError as exc:
                if exc.name is None or exc.name.split(".")[0] not in EXTRAS:
                    raise
                _MISSING[name] = exc.name.split(".")[0]
    return _REGISTRY


def missing_embedders() -> dict[str, str]:
    """Registered names whose implementation cannot be imported here -> the missing module."""
    registry()
    return dict(_MISSING)


def embedder_names() -> list[str]:
    return list(registry())


def describe_model_forms() -> str:
    return (f"a registered embedder ({', '.join(embedder_names())}), a TorchScript file PATH.pt, "
            f"ARCH:PATH.pt for a state_dict (architectures: {', '.join(ARCHITECTURE_NAMES)}), or "
            f"{', '.join(f'{p}:...' for p in MODEL_FORMS)} (`ann-bench embedders`)")


# Model forms with a prefix: PREFIX -> (module with ``load(prefix, rest, device, options)``, what it names, the
# modules it needs). ``ann-bench embedders`` lists them with whether they are installed.
MODEL_FORMS = {
    "torchvision": ("embeddings.vision", "torchvision:ARCH:PATH.pt — any torchvision.models builder with your "
                    "state_dict", ("torch", "torchvision")),
    "timm": ("embeddings.vision", "timm:NAME:PATH.pt — a timm architecture with your state_dict",
             ("torch", "timm")),
    "st": ("embeddings.hf", "st:DIR — a local sentence-transformers model directory", ("torch",
                                                                                         "sentence_transformers")),
    "hf": ("embeddings.hf", "hf:DIR — a local Hugging Face transformers encoder (mean or CLS pooling)",
           ("torch", "transformers")),
    "clip": ("embeddings.hf", "clip:DIR — a local CLIP checkpoint (transformers): images and texts in one space",
             ("torch", "transformers")),
    "onnx": ("embeddings.onnx", "onnx:PATH.onnx — an ONNX model run by onnxruntime (images, arrays, or text with "
             "--tokenizer DIR)", ("onnxruntime",)),
}


def load_embedder(spec: str, device: str = "cpu", options: ModelOptions | None = None) -> Embedder:
    """The embedder ``spec`` names (see the module docstring), loaded on ``device``; InputError otherwise.
    ``options``: how to run a user's model (``--layer``, ``--pooling``, ...), for the ``PREFIX:...`` forms."""
    spec = str(spec).strip()
    options = options or ModelOptions()
    if not spec:
        raise InputError(f"no model given; pass --model: {describe_model_forms()}")
    prefix, colon, rest = spec.partition(":")
    if colon and prefix in MODEL_FORMS and not Path(spec).exists():
        module, _, needs = MODEL_FORMS[prefix]
        require(*needs, purpose=f"--model {prefix}:...")
        return importlib.import_module(module).load(prefix, rest, device=device, options=options)
    if options.given():
        options.refuse_unused(spec, ())
    reg = registry()
    if spec in _MISSING:
        raise missing_extra(_MISSING[spec], f"--model {spec}")
    if spec in reg:
        cls = reg[spec]
        cls.check_available()
        return cls(device=device)
    arch, sep, rest = spec.partition(":")
    if sep and arch in ARCHITECTURE_NAMES and not Path(spec).exists():
        path = Path(rest).expanduser()
        if not path.is_file():
            raise InputError(f"model file {rest!r} (in --model {spec}) does not exist")
        require("torch", purpose=f"--model {spec}")
        from embeddings.cnn import open_checkpoint

        return open_checkpoint(path, arch=arch, device=device)
    path = Path(spec).expanduser()
    if path.is_dir():
        raise InputError(f"--model {spec!r} is a directory; give a TorchScript or state_dict file")
    if path.is_file():
        require("torch", purpose=f"--model {spec}")
        from embeddings.torchscript import TorchScriptEmbedder, is_torchscript

        if is_torchscript(path):
            return TorchScriptEmbedder(path, device=device)
        from embeddings.cnn import open_checkpoint

        return open_checkpoint(path, device=device)  # an ann-bench checkpoint names its architecture
    if sep and arch not in ARCHITECTURE_NAMES and not arch.startswith((".", "/", "~")):
        if arch.lower() in ("torchscript", "jit", "ts") and Path(rest).expanduser().is_file():
            raise InputError(f"unknown architecture {arch!r} in --model {spec}: a TorchScript file takes no "
                             f"prefix, pass the file itself: --model {rest}")
        raise InputError(f"unknown architecture {arch!r} in --model {spec}; architectures: "
                         f"{', '.join(ARCHITECTURE_NAMES)} (a TorchScript file takes no prefix: --model PATH.pt); "
                         f"a torchvision or timm network's state_dict: --model torchvision:{arch}:{rest} or "
                         f"timm:{arch}:{rest}")
    raise InputError(f"unknown model {spec!r}: not a registered embedder nor an existing file; "
                     f"--model takes {describe_model_forms()}")


__all__ = ["Embedder", "INPUT_KINDS", "MODEL_FORMS", "ModelOptions", "register", "registry", "embedder_names", "load_embedder",
           "describe_model_forms", "ARCHITECTURE_NAMES"]
