"""The Embedder interface, and the shared torch steps: device checks, inference, image preprocessing.

An embedder turns a batch of items of one kind into vectors:

- ``image``: a batch is a list of uint8 arrays, (H, W) greyscale or (H, W, 3) RGB, as the input readers decode
  them (or one (b, H, W[, 3]) array when all have one shape); :func:`images_to_tensor` resizes and normalises
  them in torch (there is no CPU torchvision here);
- ``text``: a batch is a list of str;
- ``array``: a batch is a (b, d) float array of features computed elsewhere.

``embed(batch)`` returns (b, dim) float32. Subclasses of :class:`TorchEmbedder` fill in ``prepare`` (batch ->
model input on the device) and ``forward`` (model input -> (b, dim) tensor); the base class runs them under
``torch.inference_mode()`` with the module in eval mode.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ann_bench.errors import EXTRAS, InputError, missing_extra

INPUT_KINDS = ("image", "text", "array")


@dataclass(frozen=True)
class ModelOptions:
    """How to run a user's model (``embed --layer/--pooling/--num-classes/--tokenizer/--preprocess``); None: the
    model format's default. Each loader of a ``PREFIX:...`` model form reads the ones it understands and refuses
    the rest in one line (:meth:`refuse_unused`), so an option is never silently ignored."""

    layer: str | None = None  # which output is the embedding: "features" (penultimate), "logits", or a module name
    pooling: str | None = None  # text encoders: "mean" or "cls"
    num_classes: int | None = None  # the classifier width the user's weights were trained with
    tokenizer: str | None = None  # a local tokenizer directory (onnx text models)
    preprocess: dict[str, Any] | None = None  # image preprocessing overrides: resize, crop, mean, std

    def given(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if v is not None}

    def refuse_unused(self, form: str, used: tuple[str, ...]) -> None:
        """InputError when an option outside ``used`` was given for a model of ``form``."""
        options = {"layer": "--layer", "pooling": "--pooling", "num_classes": "--num-classes",
                   "tokenizer": "--tokenizer", "preprocess": "--preprocess"}
        for name in self.given():
            if name not in used:
                takes = ", ".join(options[u] for u in used) or "none of them"
                raise InputError(f"{options[name]} does not apply to --model {form} (it takes {takes})")


def parse_preprocess(text: str | None) -> dict[str, Any] | None:
    """``resize=256,crop=224,mean=0.485/0.456/0.406,std=0.229/0.224/0.225`` -> a dict; InputError otherwise."""
    if text is None:
        return None
    out: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        name = name.strip()
        try:
            if not sep:
                raise ValueError
            if name in ("resize", "crop"):
                sizes = [int(v) for v in value.split("x")]
                if not 1 <= len(sizes) <= 2 or min(sizes) < 1 or max(sizes) > 8192:
                    raise ValueError
                out[name] = sizes[0] if len(sizes) == 1 else tuple(sizes)
            elif name in ("mean", "std"):
                values = tuple(float(v) for v in value.split("/"))
                if len(values) not in (1, 3) or not all(np.isfinite(values)) or (name == "std" and min(values) <= 0):
                    raise ValueError
                out[name] = values
            else:
                raise KeyError(name)
        except KeyError:
            raise InputError(f"--preprocess: unknown setting {name!r}; settings: resize, crop, mean, std "
                             "(e.g. resize=256,crop=224,mean=0.485/0.456/0.406,std=0.229/0.224/0.225)") from None
        except ValueError:
            raise InputError(f"--preprocess: {part!r} is not valid; resize/crop take N or HxW (1..8192), mean/std "
                             "one or three numbers separated by '/' (std > 0)") from None
    return out


class Embedder(ABC):
    """Turns batches of items of kind ``input_kind`` into (b, dim) float32 vectors.

    Class attributes describe a registered embedder without loading it (``ann-bench embedders``); an instance
    holds the loaded model. ``dim`` is None until known for models that only reveal it when run.
    """

    name: ClassVar[str] = ""
    input_kind: ClassVar[str | None] = None  # one of INPUT_KINDS; None: any tensor input (image or array)
    dim: int | None = None
    metric: str = "angular"  # the metric its vectors are meant for
    normalize: bool = True  # L2-normalise its vectors by default
    batch_size: int = 256  # default batch size
    description: ClassVar[str] = ""
    extra: ClassVar[str | None] = None  # the pip extra that provides it, if optional

    def __init__(self, device: str = "cpu"):
        self.device = device
        self.bound_kind: str | None = self.input_kind

    @classmethod
    def check_available(cls) -> None:
        """Raise InputError with an install hint if what this embedder needs is not installed."""

    @classmethod
    def install_hint(cls) -> str | None:
        """How to install what this embedder needs (``pip install -e ".[embed]"``), or None when nothing is
        optional: the one hint ``ann-bench embedders`` lists and :meth:`check_available`'s error gives."""
        return f'pip install -e ".[{cls.extra}]"' if cls.extra else None

    @classmethod
    def require(cls, *modules: str) -> None:
        """InputError naming the first of ``modules`` that is not installed, with :meth:`install_hint`."""
        import importlib.util

        for module in modules:
            try:
                found = importlib.util.find_spec(module) is not None
            except (ImportError, ValueError):
                found = False
            if found:
                continue
            purpose = f"--model {cls.name}"
            dist, extra = EXTRAS.get(module, (module, None))
            if cls.extra is None or extra == cls.extra:
                raise missing_extra(module, purpose)  # the same extra (torch: with the CPU-build note)
            raise InputError(f"{purpose} needs {dist}, which is not installed: {cls.install_hint()}")

    @classmethod
    def available(cls) -> bool:
        try:
            cls.check_available()
        except InputError:
            return False
        return True

    @abstractmethod
    def embed(self, batch: Any) -> np.ndarray:
        """Vectors of a batch of items: (b, dim) float32."""

    def provenance(self) -> dict[str, Any]:
        """What produced the vectors, stored as HDF5 attrs: model name, checkpoint sha256, ..."""
        return {"model": self.name}

    def accepts(self, kind: str) -> bool:
        """Whether this embedder takes input items of ``kind``."""
        return kind == self.input_kind if self.input_kind is not None else kind in ("image", "array")

    def bind(self, kind: str) -> None:
        """Get ready for items of ``kind`` (the input readers' kind); InputError if it cannot take them."""
        if not self.accepts(kind):
            takes = self.input_kind or "image or array"
            raise InputError(f"model {self.name!r} takes {takes} input, but the input holds {kind} items; "
                             "see `ann-bench embedders`")
        self.bound_kind = kind


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def check_device(device: str) -> str:
    """``cpu`` or ``cuda`` (``cuda:N``), checked against this torch; InputError otherwise."""
    import torch

    if device == "cpu":
        return device
    if device == "cuda" or device.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise InputError(f"--device {device}: CUDA is not available to this torch ({torch.__version__}); "
                             "use --device cpu")
        return device
    raise InputError(f"unknown --device {device!r}; use cpu or cuda")


def load_weights(module, state_dict: dict, path: str | Path, arch: str, device: str):
    """``module`` with ``state_dict`` loaded, on ``device``, in eval mode; InputError when the weights do not
    fit the architecture."""
    if not isinstance(state_dict, dict):
        raise InputError(f"{str(path)!r}: its state_dict is a {type(state_dict).__name__}, not a dict of tensors; "
                         "save model.state_dict()")
    problem = state_dict_mismatch(module.state_dict(), state_dict)
    if problem:
        raise InputError(f"{str(path)!r} does not fit architecture {arch!r}: {problem}; save the state_dict of "
                         f"that architecture, or export the model as TorchScript (--model PATH.pt)")
    try:
        module.load_state_dict(state_dict)
    except (RuntimeError, TypeError, ValueError, AttributeError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise InputError(f"{str(path)!r} does not fit architecture {arch!r}: {first[:200]}") from None
    return module.to(device).eval()


def _shape(value) -> str:
    shape = getattr(value, "shape", None)
    return str(tuple(shape)) if shape is not None else type(value).__name__


def state_dict_mismatch(expected: dict, given: dict, shown: int = 3) -> str | None:
    """What keeps ``given`` (a state_dict) from loading into a module whose own state_dict is ``expected``:
    the first missing keys, unexpected keys and shape mismatches, each with shapes; None when it fits."""
    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    wrong = [k for k in expected if k in given and _shape(given[k]) != _shape(expected[k])]

    def listed(keys, form) -> str:
        more = f" and {len(keys) - shown} more" if len(keys) > shown else ""
        return ", ".join(form(k) for k in keys[:shown]) + more

    parts = []
    if missing:
        parts.append(f"missing keys {listed(missing, lambda k: f'{k} {_shape(expected[k])}')}")
    if unexpected:
        parts.append(f"unexpected keys {listed(unexpected, lambda k: f'{k} {_shape(given[k])}')}")
    if wrong:
        parts.append("shape mismatch " + listed(wrong, lambda k: f"{k}: file {_shape(given[k])}, architecture "
                                                               f"{_shape(expected[k])}"))
    return "; ".join(parts) or None


class TorchEmbedder(Embedder):
    """An embedder around a torch module: ``prepare`` a batch, ``forward`` it under inference mode."""

    module: Any  # torch.nn.Module, in eval mode on self.device

    def __init__(self, device: str = "cpu"):
        super().__init__(check_device(device))

    @abstractmethod
    def prepare(self, batch: Any) -> Any:
        """A batch -> the model's input on ``self.device`` (a tensor or a dict of tensors)."""

    def forward(self, x: Any):
        """The model's input -> (b, dim) tensor."""
        return self.module(x)

    def embed(self, batch: Any) -> np.ndarray:
        import torch

        with torch.inference_mode():
            x = self.prepare(batch)
            try:
                y = self.forward(x)
            except Exception as exc:  # the user's model failed on our batch: say whose and what
                first = (str(exc).strip().splitlines() or [""])[-1].strip() or type(exc).__name__
                raise InputError(f"model {self.name!r} failed on a batch of "
                                 f"{_describe_input(x)}: {first[:200]}") from None
        if not isinstance(y, torch.Tensor):
            raise InputError(f"model {self.name!r} returned a {type(y).__name__}, not a tensor; an embedder must "
                             "return one (batch, dim) tensor (wrap a model that returns a tuple)")
        if y.ndim == 0 or y.shape[0] != _batch_len(x):
            raise InputError(f"model {self.name!r} returned a tensor of shape {tuple(y.shape)} for a batch of "
                             f"{_describe_input(x)}; expected (batch, dim)")
        if y.ndim != 2:
            y = y.reshape(y.shape[0], -1)
        if self.dim is None:
            self.dim = int(y.shape[1])
        return y.detach().to("cpu", torch.float32).numpy()


def _batch_len(x: Any) -> int:
    if isinstance(x, dict):
        x = next(iter(x.values()))
    return int(x.shape[0])


def _describe_input(x: Any) -> str:
    if isinstance(x, dict):
        return ", ".join(f"{k} {tuple(v.shape)}" for k, v in x.items())
    return f"shape {tuple(x.shape)}"


# ---- images -----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ImageSpec:
    """How a model wants its images: size (H, W) or None for the native size, channels (1 or 3; 0 keeps the
    decoded ones), and the per-channel mean and std subtracted and divided after scaling uint8 pixels to [0, 1]."""

    size: tuple[int, int] | None = None
    channels: int = 1
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ImageSpec:
        size = d.get("size")
        return cls(size=tuple(int(s) for s in size) if size else None, channels=int(d.get("channels", 1)),
                   mean=tuple(float(m) for m in d.get("mean", (0.0,))),
                   std=tuple(float(s) for s in d.get("std", (1.0,))))

    def to_dict(self) -> dict[str, Any]:
        return {"size": list(self.size) if self.size else None, "channels": self.channels,
                "mean": list(self.mean), "std": list(self.std)}


_LUMA = (0.299, 0.587, 0.114)


def images_to_tensor(images: Sequence[np.ndarray] | np.ndarray, spec: ImageSpec, device: str = "cpu"):
    """Images -> (b, channels, H, W) float32 tensor on ``device``, resized and normalised per ``spec``.

    images: a list of arrays (H, W) or (H, W, C), or one array (b, H, W) / (b, H, W, C); uint8 pixels are
    scaled to [0, 1], other dtypes are taken as they are. RGB becomes grey by luma weights (and grey RGB by
    repetition) when the model wants the other. Resizing is bilinear with antialiasing, in torch. Images of
    different sizes are resized one by one, same-sized ones as one batch; with ``spec.size`` None, every
    image is brought to the size of the first.
    """
    import torch
    import torch.nn.functional as F

    if isinstance(images, np.ndarray) and images.ndim in (3, 4):
        groups = [images]
    else:
        shapes = {np.shape(im) for im in images}
        groups = [np.stack(images)] if len(shapes) == 1 else [np.asarray(im)[None] for im in images]
    size = spec.size or tuple(groups[0].shape[1:3])
    out = []
    for arr in groups:
        arr = np.ascontiguousarray(arr)
        x = torch.from_numpy(arr if arr.flags.writeable else arr.copy()).to(device)  # torch wants writable
        x = x.to(torch.float32) / 255.0 if arr.dtype == np.uint8 else x.to(torch.float32)
        x = x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2)  # (b, C, H, W)
        if x.shape[1] == 4:  # RGBA: drop alpha
            x = x[:, :3]
        if x.shape[1] == 3 and spec.channels == 1:
            x = (x * torch.tensor(_LUMA, device=x.device).view(1, 3, 1, 1)).sum(1, keepdim=True)
        elif x.shape[1] == 1 and spec.channels == 3:
            x = x.expand(-1, 3, -1, -1)
        if tuple(x.shape[2:]) != tuple(size):
            x = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
        out.append(x)
    x = out[0] if len(out) == 1 else torch.cat(out)
    mean = torch.tensor(spec.mean, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
    std = torch.tensor(spec.std, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
    return (x - mean) / std
