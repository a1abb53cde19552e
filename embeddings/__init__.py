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

from ann_bench.errors import InputError
from embeddings.base import INPUT_KINDS, Embedder

# (module, class) of every registered embedder, in listing order. Modules are imported when needed.
_MODULES = [
    ("embeddings.minilm", "MiniLM"),
    ("embeddings.cnn", "DigitsCNN"),
    ("embeddings.cnn", "FashionCNN"),
    ("embeddings.identity", "Identity"),
]
ARCHITECTURE_NAMES = ("small_cnn", "mobilenet_v2", "mlp")  # keys of embeddings.cnn.ARCHITECTURES, listed without importing torch

_REGISTRY: dict[str, type[Embedder]] = {}


def register(cls: type[Embedder]) -> type[Embedder]:
    """Add an embedder class to the registry (usable as a class decorator)."""
    _REGISTRY[cls.name] = cls
    return cls


def registry() -> dict[str, type[Embedder]]:
    if not _REGISTRY:
        for module, name in _MODULES:
            register(getattr(importlib.import_module(module), name))
    return _REGISTRY


def embedder_names() -> list[str]:
    return list(registry())


def describe_model_forms() -> str:
    return (f"a registered embedder ({', '.join(embedder_names())}), a TorchScript file PATH.pt, or "
            f"ARCH:PATH.pt for a state_dict (architectures: {', '.join(ARCHITECTURE_NAMES)})")


def load_embedder(spec: str, device: str = "cpu") -> Embedder:
    """The embedder ``spec`` names (see the module docstring), loaded on ``device``; InputError otherwise."""
    spec = str(spec).strip()
    if not spec:
        raise InputError(f"no model given; pass --model: {describe_model_forms()}")
    reg = registry()
    if spec in reg:
        cls = reg[spec]
        cls.check_available()
        return cls(device=device)
    arch, sep, rest = spec.partition(":")
    if sep and arch in ARCHITECTURE_NAMES and not Path(spec).exists():
        from embeddings.cnn import open_checkpoint

        path = Path(rest).expanduser()
        if not path.is_file():
            raise InputError(f"model file {rest!r} (in --model {spec}) does not exist")
        return open_checkpoint(path, arch=arch, device=device)
    path = Path(spec).expanduser()
    if path.is_dir():
        raise InputError(f"--model {spec!r} is a directory; give a TorchScript or state_dict file")
    if path.is_file():
        from embeddings.torchscript import TorchScriptEmbedder, is_torchscript

        if is_torchscript(path):
            return TorchScriptEmbedder(path, device=device)
        from embeddings.cnn import open_checkpoint

        return open_checkpoint(path, device=device)  # an ann-bench checkpoint names its architecture
    if sep and arch not in ARCHITECTURE_NAMES and not arch.startswith((".", "/", "~")):
        raise InputError(f"unknown architecture {arch!r} in --model {spec}; architectures: "
                         f"{', '.join(ARCHITECTURE_NAMES)}")
    raise InputError(f"unknown model {spec!r}: not a registered embedder nor an existing file; "
                     f"--model takes {describe_model_forms()}")


__all__ = ["Embedder", "INPUT_KINDS", "register", "registry", "embedder_names", "load_embedder",
           "describe_model_forms", "ARCHITECTURE_NAMES"]
