"""The user's own torchvision or timm network: ``--model torchvision:ARCH:PATH.pt`` / ``timm:NAME:PATH.pt``.

The architecture is built by name with random weights (``torchvision.models.get_model_builder(ARCH)(weights=None,
num_classes=N)``, ``timm.create_model(NAME, pretrained=False, num_classes=N)``; nothing is downloaded), then the
user's state_dict is loaded into it with ``torch.load(weights_only=True)``: tensors only, never Python objects. A
file may hold the state_dict itself or a dict with a ``state_dict`` / ``model`` entry holding it; DataParallel's
``module.`` prefix is stripped. N is ``--num-classes``, or the row count of the classifier's weight in the file.

Which output is the embedding (``--layer``):

- ``features`` (default): the pooled features the classifier reads. torchvision: the model with its classifier
  (the last ``nn.Linear`` it registers, or the last ``nn.Conv2d`` for SqueezeNet: resnet ``fc``, vgg/mobilenet
  ``classifier.N``, vit ``heads.head``, densenet ``classifier``, ...) replaced by ``nn.Identity``; timm:
  ``forward_head(forward_features(x), pre_logits=True)``;
- ``logits``: the model's own output;
- a module name (``model.named_modules()``, e.g. ``layer4``): that module's output, averaged over H and W when it
  is (b, C, H, W) and over tokens when it is (b, N, D). The forward pass stops there.

Images are preprocessed as the architecture's own weights were (:class:`Preprocess`): torchvision's default
weights enum's transform settings (read from the enum, nothing downloaded), timm's
``resolve_model_data_config``, else ImageNet's (resize 256, center crop 224); ``--preprocess`` overrides them.
Resizing, cropping and normalising run in torch (:func:`preprocess_images`), the same code on every install.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import math
from collections import OrderedDict
from dataclasses import dataclass, replace
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

from ann_bench.errors import InputError
from embeddings.base import ImageSpec, ModelOptions, TorchEmbedder, images_to_tensor, load_weights, sha256_file
from embeddings.cnn import load_checkpoint

USED_OPTIONS = ("layer", "num_classes", "preprocess")
LAYERS = ("features", "logits")  # the named outputs; any other --layer is a module name
INTERPOLATIONS = ("bilinear", "bicubic", "nearest")
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"


# ---- preprocessing ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Preprocess:
    """How a vision model wants its images.

    resize: an int resizes the shorter side to it, keeping the aspect ratio (torchvision's ``Resize(int)``);
    (H, W) resizes to exactly that. crop: the center crop, N or (H, W). mean/std: per channel, after scaling
    uint8 pixels to [0, 1]. channels: 3 (grey images are repeated) or 1."""

    resize: int | tuple[int, int] = 256
    crop: int | tuple[int, int] = 224
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)
    interpolation: str = "bilinear"
    channels: int = 3
    source: str = "ImageNet defaults"  # where the settings came from, for provenance

    def overridden(self, settings: dict[str, Any] | None) -> Preprocess:
        """These settings with ``--preprocess`` ones (resize, crop, mean, std) put over them; InputError when the
        crop does not fit inside the resized image or mean/std do not match the channels."""
        if not settings:
            return self.checked()
        given = {k: v for k, v in settings.items() if k in ("resize", "crop", "mean", "std")}
        out = replace(self, **given, source=f"{self.source}, --preprocess {_format_settings(given)}")
        return out.checked(given)

    def checked(self, given: dict[str, Any] | None = None) -> Preprocess:
        given = given or {}
        mean, std = tuple(self.mean), tuple(self.std)
        for name, values in (("mean", mean), ("std", std)):
            if len(values) not in (1, self.channels):
                raise InputError(f"--preprocess {name}: {len(values)} values for a model of {self.channels} "
                                 f"channels; give 1 or {self.channels}")
        mean = mean * self.channels if len(mean) == 1 else mean
        std = std * self.channels if len(std) == 1 else std
        crop, resize = _pair(self.crop), self.resize
        smallest = _pair(resize) if isinstance(resize, tuple) else (resize, resize)
        if crop[0] > smallest[0] or crop[1] > smallest[1]:
            if "resize" in given:
                fix = f"resize={_format_size(resize)},crop={math.floor(min(smallest) * 0.875)}"
                how = f"give a crop no larger, e.g. {fix}"
            else:
                fix = f"resize={math.ceil(max(crop) / 0.875)},crop={_format_size(self.crop)}"
                how = f"give a resize no smaller, e.g. {fix}"
            raise InputError(f"--preprocess: the center crop {_format_size(self.crop)} does not fit in images "
                             f"resized to {_format_size(resize)}; {how}")
        return replace(self, mean=mean, std=std)

    def to_dict(self) -> dict[str, Any]:
        return {"resize": list(self.resize) if isinstance(self.resize, tuple) else self.resize,
                "resize_rule": "exact" if isinstance(self.resize, tuple) else "shorter side",
                "crop": list(_pair(self.crop)), "mean": [float(m) for m in self.mean],
                "std": [float(s) for s in self.std], "interpolation": self.interpolation,
                "channels": self.channels, "source": self.source}


def _pair(size: int | tuple[int, int]) -> tuple[int, int]:
    return (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))


def _format_size(size: int | tuple[int, int]) -> str:
    return str(size) if isinstance(size, int) else f"{size[0]}x{size[1]}"


def _format_settings(settings: dict[str, Any]) -> str:
    def value(v):
        if isinstance(v, tuple) and all(isinstance(x, float) for x in v):
            return "/".join(f"{x:g}" for x in v)
        return _format_size(v) if isinstance(v, (int, tuple)) else str(v)

    return ",".join(f"{k}={value(v)}" for k, v in settings.items())


def resized_size(h: int, w: int, resize: int | tuple[int, int]) -> tuple[int, int]:
    """(H, W) after resizing an h x w image: ``resize`` (H, W) exactly, or the shorter side to the int
    ``resize`` with the longer one scaled and truncated, as torchvision's ``Resize(int)``."""
    if isinstance(resize, tuple):
        return int(resize[0]), int(resize[1])
    if h <= w:
        return int(resize), int(resize * w / h)
    return int(resize * h / w), int(resize)


def center_crop(x: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """The central (H, W) window of (b, C, h, w) images, placed as torchvision's ``center_crop`` (offsets
    rounded); the crop must fit inside the images."""
    ch, cw = _pair(size)
    h, w = int(x.shape[-2]), int(x.shape[-1])
    if ch > h or cw > w:
        raise InputError(f"center crop {ch}x{cw} does not fit in an image of {h}x{w}")
    top, left = int(round((h - ch) / 2.0)), int(round((w - cw) / 2.0))
    return x[..., top:top + ch, left:left + cw]


def resize(x: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    """(b, C, h, w) -> (b, C, H, W) by ``mode`` (bilinear/bicubic with antialiasing, or nearest)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    if mode == "nearest":
        return F.interpolate(x, size=size, mode="nearest")
    return F.interpolate(x, size=size, mode=mode, antialias=True, align_corners=False)


def preprocess_images(images, pre: Preprocess, device: str = "cpu") -> torch.Tensor:
    """uint8 images, a list of (H, W) / (H, W, 3) arrays or one (b, H, W[, 3]) array, -> (b, C, crop H, crop W)
    float32 on ``device``: channels and mean/std by :func:`embeddings.base.images_to_tensor` at the native size,
    then resized (``pre.resize``) and center-cropped (``pre.crop``) in torch. Normalising before resizing gives
    the same pixels as after, since every interpolation here weighs neighbours by weights that sum to one."""
    spec = ImageSpec(size=None, channels=pre.channels, mean=pre.mean, std=pre.std)
    if isinstance(images, np.ndarray) and images.ndim in (3, 4):
        groups = {tuple(images.shape[1:3]): list(range(len(images)))}
        arrays = images
    else:
        arrays = [np.asarray(im) for im in images]
        groups: dict[tuple, list[int]] = {}
        for i, im in enumerate(arrays):
            groups.setdefault(tuple(im.shape), []).append(i)
    parts: list[torch.Tensor] = []
    order: list[int] = []
    for ids in groups.values():
        batch = arrays if isinstance(arrays, np.ndarray) else np.stack([arrays[i] for i in ids])
        x = images_to_tensor(batch, spec, device)
        x = resize(x, resized_size(int(x.shape[2]), int(x.shape[3]), pre.resize), pre.interpolation)
        parts.append(center_crop(x, pre.crop))
        order += ids
    x = parts[0] if len(parts) == 1 else torch.cat(parts)
    if order != list(range(len(order))):
        x = x[torch.argsort(torch.tensor(order, device=x.device))]
    return x.contiguous()


# ---- loading ----------------------------------------------------------------------------------------------
def import_library(name: str, purpose: str):
    """Import torchvision or timm; one InputError when it is installed but does not load with this torch (a
    torchvision built for another torch raises RuntimeError: "operator torchvision::nms does not exist")."""
    try:
        return importlib.import_module(name)
    except (ImportError, RuntimeError, OSError) as exc:
        if isinstance(exc, ModuleNotFoundError) and exc.name == name:
            raise InputError(f"{purpose} needs {name}, which is not installed: pip install -e \".[vision]\" (the "
                             f"torchvision build must match the installed torch {torch.__version__}; PyTorch's CPU "
                             f"index has CPU builds: --index-url {TORCH_CPU_INDEX})") from None
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise InputError(f"{purpose}: {name} {_version(name)} is installed but does not load with torch "
                         f"{torch.__version__} ({first}); {_torchvision_hint(_version('torchvision'))}") from None


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "(unknown version)"


def _torchvision_hint(installed: str) -> str:
    """How to get the torchvision that loads with this torch: torch 2.N pairs with torchvision 0.(N + 15), and a
    CUDA build of the right release still fails beside a CPU torch (and the other way round)."""
    major, minor = (int(p) for p in torch.__version__.split("+")[0].split(".")[:2])
    cpu = f"CPU builds: pip install torchvision --index-url {TORCH_CPU_INDEX}"
    if major != 2:
        return f"install the torchvision release made for torch {major}.{minor} ({cpu})"
    paired = f"0.{minor + 15}"
    if installed.split("+")[0].rsplit(".", 1)[0] == paired:
        build = "CPU" if "+cpu" in torch.__version__ else "CUDA"
        return (f"torchvision {paired} is the right release, so its build is not this torch's ({build}): reinstall "
                f"it from the index this torch came from ({cpu})")
    return f"install torchvision {paired}.*, the release made for torch {major}.{minor} ({cpu})"


def state_dict_of(obj: dict, path: Path) -> dict[str, torch.Tensor]:
    """The state_dict in a loaded file: the dict itself, or its ``state_dict`` / ``model`` entry; DataParallel's
    ``module.`` prefix stripped. InputError when it holds anything but tensors."""
    for key in ("state_dict", "model"):
        if isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not obj:
        raise InputError(f"{str(path)!r} holds an empty state_dict; save model.state_dict()")
    other = next((k for k, v in obj.items() if not isinstance(v, torch.Tensor)), None)
    if other is not None:
        raise InputError(f"{str(path)!r} is not a state_dict: its entry {str(other)!r} is a "
                         f"{type(obj[other]).__name__}, not a tensor (keys: {', '.join(map(str, list(obj)[:6]))}); "
                         "save model.state_dict(), or a dict whose 'state_dict' entry holds it")
    # torch keeps each module's version in the state_dict's ``_metadata`` (MNASNet and BatchNorm read it): keep it
    metadata = getattr(obj, "_metadata", None)
    if all(str(k).startswith("module.") for k in obj):
        obj = OrderedDict((str(k)[len("module."):], v) for k, v in obj.items())
        if metadata is not None:
            metadata = OrderedDict((k[len("module."):] if k.startswith("module.") else "" if k == "module" else k, v)
                                   for k, v in metadata.items())
    out = OrderedDict(obj)
    if metadata is not None:
        out._metadata = metadata
    return out


def classifier_name(model: nn.Module) -> str | None:
    """The name of a torchvision classifier's final layer: the last ``nn.Linear`` the model registers, or the last
    ``nn.Conv2d`` when it has none (SqueezeNet's 1x1 conv classifier); auxiliary heads come before it."""
    linear = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    if linear:
        return linear[-1]
    conv = [name for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    return conv[-1] if conv else None


def _on_meta(build):
    """``build()`` on the meta device (no memory, no init cost), or on the CPU where a builder copies data."""
    try:
        with torch.device("meta"):
            return build()
    except (NotImplementedError, RuntimeError):
        return build()


def _rows(state_dict: dict, key: str | None) -> int | None:
    value = state_dict.get(f"{key}.weight") if key else None
    return int(value.shape[0]) if value is not None and value.ndim >= 1 else None


def _close(name: str, names, n: int = 5, cutoff: float = 0.5) -> list[str]:
    return difflib.get_close_matches(name, list(names), n=n, cutoff=cutoff)


def _build_torchvision(tv, arch: str, state_dict: dict, num_classes: int | None, form: str):
    names = tv.models.list_models(module=tv.models)
    if arch not in names:
        if arch in tv.models.list_models():
            raise InputError(f"--model {form}: {arch!r} is not an image classification model of torchvision "
                             "(detection, segmentation, video and optical-flow models are not embedders here)")
        near = _close(arch, names) or _close(arch.lower(), names, cutoff=0.3)
        raise InputError(f"--model {form}: unknown torchvision architecture {arch!r}; "
                         f"{'close: ' + ', '.join(near) if near else 'e.g. ' + ', '.join(names[:6])} "
                         f"({len(names)} in torchvision.models.list_models(module=torchvision.models))")
    builder = tv.models.get_model_builder(arch)
    if num_classes is None:  # the classifier's rows in the file; None: the file lacks it (load_weights says so)
        num_classes = _rows(state_dict, classifier_name(_on_meta(lambda: builder(weights=None))))
    kwargs = {"num_classes": num_classes} if num_classes is not None else {}
    try:
        model = builder(weights=None, **kwargs)
    except (TypeError, ValueError, RuntimeError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise InputError(f"--model {form}: torchvision could not build {arch!r} with {kwargs}: {first}") from None
    return model, num_classes if num_classes is not None else _rows(model.state_dict(), classifier_name(model))


def _build_timm(timm, name: str, state_dict: dict, num_classes: int | None, form: str):
    if not timm.is_model(name):
        names = timm.list_models()
        near = _close(name, names) or _close(name.lower(), names, cutoff=0.3)
        raise InputError(f"--model {form}: unknown timm model {name!r}; "
                         f"{'close: ' + ', '.join(near) if near else 'see timm.list_models()'}")
    if num_classes is None:
        probe = _on_meta(lambda: timm.create_model(name, pretrained=False))
        head = probe.get_classifier()
        head = head[0] if isinstance(head, (tuple, list)) else head
        key = next((k for k, m in probe.named_modules() if m is head and k), None)
        if key is not None and f"{key}.weight" in probe.state_dict():
            # a file without the classifier's weights was saved headless (timm's num_classes=0)
            num_classes = _rows(state_dict, key) if f"{key}.weight" in state_dict else 0
    kwargs = {"num_classes": num_classes} if num_classes is not None else {}
    try:
        model = timm.create_model(name, pretrained=False, **kwargs)
    except (TypeError, ValueError, RuntimeError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise InputError(f"--model {form}: timm could not build {name!r} with {kwargs}: {first}") from None
    return model, int(model.num_classes)


def _torchvision_preprocess(tv, arch: str) -> Preprocess:
    """The default weights' transform settings of ``arch`` (resize_size, crop_size, mean, std, interpolation),
    read off the weights enum without downloading; ImageNet's defaults where the builder has none."""
    try:
        weights = tv.models.get_model_weights(arch).DEFAULT
        transforms = weights.transforms
        defaults = {k: p.default for k, p in inspect.signature(transforms.func).parameters.items()
                    if p.default is not inspect.Parameter.empty}
        settings = {**defaults, **dict(transforms.keywords)}
        crop, size = settings["crop_size"], settings.get("resize_size", 256)
    except (AttributeError, KeyError, TypeError, ValueError):
        return Preprocess()
    mode = getattr(settings.get("interpolation"), "value", "bilinear")
    size = tuple(size) if isinstance(size, (list, tuple)) and len(size) == 2 else int(
        size[0] if isinstance(size, (list, tuple)) else size)
    crop = tuple(crop) if isinstance(crop, (list, tuple)) and len(crop) == 2 else int(
        crop[0] if isinstance(crop, (list, tuple)) else crop)
    return Preprocess(resize=size, crop=crop, mean=tuple(settings.get("mean", Preprocess.mean)),
                      std=tuple(settings.get("std", Preprocess.std)),
                      interpolation=mode if mode in INTERPOLATIONS else "bilinear",
                      source=f"{type(weights).__name__}.{weights.name} transforms")


def _timm_preprocess(timm, model) -> Preprocess:
    """timm's eval settings: shorter side to floor(size / crop_pct), center crop of ``input_size``."""
    cfg = importlib.import_module("timm.data").resolve_model_data_config(model)
    channels, h, w = (int(v) for v in cfg["input_size"])
    crop_pct = float(cfg.get("crop_pct") or 1.0)
    size = math.floor(h / crop_pct) if h == w else (math.floor(h / crop_pct), math.floor(w / crop_pct))
    mode = str(cfg.get("interpolation", "bilinear"))
    return Preprocess(resize=size, crop=h if h == w else (h, w), mean=tuple(cfg["mean"]), std=tuple(cfg["std"]),
                      interpolation=mode if mode in INTERPOLATIONS else "bilinear",
                      channels=channels if channels in (1, 3) else 3,
                      source=f"timm resolve_model_data_config (crop_pct {crop_pct:g}, "
                             f"{cfg.get('crop_mode', 'center')})")


def load(prefix: str, rest: str, device: str = "cpu", options: ModelOptions | None = None) -> VisionEmbedder:
    """The embedder of ``--model torchvision:ARCH:PATH.pt`` or ``timm:NAME:PATH.pt`` (``rest`` is what follows
    the prefix); InputError in one line for every problem."""
    options = options or ModelOptions()
    form = f"{prefix}:{rest}"
    options.refuse_unused(f"{prefix}:...", used=USED_OPTIONS)
    arch, sep, path = rest.partition(":")
    if prefix not in ("torchvision", "timm"):
        raise InputError(f"--model {form}: embeddings.vision loads torchvision: and timm: models only")
    what = "ARCH" if prefix == "torchvision" else "NAME"
    if not sep or not arch or not path:
        raise InputError(f"--model {form}: expected {prefix}:{what}:PATH.pt (e.g. "
                         f"{prefix}:{'resnet18' if prefix == 'torchvision' else 'resnet10t'}:model.pt)")
    import_library("torchvision", f"--model {prefix}:...")  # timm imports it too (its data transforms)
    library = import_library(prefix, f"--model {prefix}:...")
    return VisionEmbedder(prefix, library, arch, Path(path).expanduser(), device=device, options=options)


class VisionEmbedder(TorchEmbedder):
    """A torchvision or timm architecture with the user's weights; see the module docstring."""

    input_kind = "image"
    batch_size = 64
    description = "a torchvision or timm image model with your state_dict"

    def __init__(self, form: str, library, arch: str, path: Path, device: str = "cpu",
                 options: ModelOptions | None = None):
        super().__init__(device)
        options = options or ModelOptions()
        self.form, self.arch, self.path = form, arch, path
        self.name = f"{form}:{arch}:{path}"
        self.library = f"{form} {_version(form)}"
        state_dict = state_dict_of(load_checkpoint(path), path)  # one-line errors: missing file, pickles, ...
        if form == "torchvision":
            module, self.num_classes = _build_torchvision(library, arch, state_dict, options.num_classes, self.name)
            pre = _torchvision_preprocess(library, arch)
        else:
            module, self.num_classes = _build_timm(library, arch, state_dict, options.num_classes, self.name)
            pre = _timm_preprocess(library, module)
        self.module = load_weights(module, state_dict, path, arch, self.device)
        self.preprocess = pre.overridden(options.preprocess)
        self.layer = options.layer or "features"
        self.classifier: str | None = None
        self.layer_pooling: str | None = None
        self._target: nn.Module | None = None
        if self.layer == "features" and form == "torchvision":
            self.classifier = classifier_name(self.module)
            if self.classifier is None:
                raise InputError(f"--model {self.name}: found no nn.Linear classifier to take the features before; "
                                 "pass --layer logits or --layer MODULE")
            parent, _, child = self.classifier.rpartition(".")
            setattr(self.module.get_submodule(parent), child, nn.Identity())
        elif self.layer == "features":
            head = self.module.get_classifier()
            head = head[0] if isinstance(head, (tuple, list)) else head
            self.classifier = next((k for k, m in self.module.named_modules() if m is head and k), None)
        elif self.layer not in LAYERS:
            self._target = self._named_module(self.layer)
        if self.layer == "logits":
            self.dim = self.num_classes or None

    def _named_module(self, name: str) -> nn.Module:
        modules = dict(self.module.named_modules())
        modules.pop("", None)
        if name in modules:
            return modules[name]
        near = _close(name, modules, n=5, cutoff=0.6)
        if not near:
            near = [k for k in modules if "." not in k][:6]
        raise InputError(f"--layer {name!r}: {self.arch} has no module of that name; --layer takes features, "
                         f"logits or a module name (model.named_modules(): {len(modules)}), e.g. {', '.join(near)}")

    def prepare(self, batch):
        return preprocess_images(batch, self.preprocess, self.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._target is not None:
            return self._forward_to(self._target, x)
        if self.layer == "features" and self.form == "timm":
            return self.module.forward_head(self.module.forward_features(x), pre_logits=True)
        return self.module(x)

    def _forward_to(self, target: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """The output of ``target`` on ``x``, pooled to (b, d); the rest of the forward pass is skipped."""
        seen: list[Any] = []

        def hook(_module, _inputs, output):
            seen.append(output)
            raise _Reached

        handle = target.register_forward_hook(hook)
        try:
            self.module(x)
        except _Reached:
            pass
        finally:
            handle.remove()
        if not seen:
            raise InputError(f"--layer {self.layer!r}: module {self.layer} of {self.arch} did not run in the "
                             "forward pass; choose another (model.named_modules())")
        y = seen[0]
        if isinstance(y, (tuple, list)):
            y = next((t for t in y if isinstance(t, torch.Tensor)), None)
        if not isinstance(y, torch.Tensor):
            raise InputError(f"--layer {self.layer!r}: module {self.layer} returns a {type(seen[0]).__name__}, "
                             "not a tensor; choose another")
        if y.ndim == 4:
            self.layer_pooling = "global average over H, W"
            return y.mean(dim=(2, 3))
        if y.ndim == 3:
            self.layer_pooling = "average over tokens (dim 1)"
            return y.mean(dim=1)
        self.layer_pooling = "none" if y.ndim == 2 else "flattened"
        return y.reshape(y.shape[0], -1)

    def provenance(self) -> dict[str, Any]:
        return {"model": self.name, "model_form": self.form, "model_arch": self.arch,
                "model_path": str(self.path.resolve()), "checkpoint_sha256": sha256_file(self.path),
                "model_num_classes": self.num_classes, "model_layer": self.layer,
                "model_classifier": self.classifier, "model_layer_pooling": self.layer_pooling,
                "model_input": self.preprocess.to_dict(), "model_library": self.library,
                "model_torch": str(torch.__version__)}


class _Reached(Exception):
    """Raised by the forward hook of ``--layer MODULE`` to stop the forward pass once that module has run."""
