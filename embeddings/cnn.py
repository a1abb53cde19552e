"""A small CNN for metric learning on images, its safe checkpoint loader, and the trained digits embedder.

Checkpoints are loaded with ``torch.load(weights_only=True)``: tensors and plain containers only, never
arbitrary Python objects. Two forms are accepted:

- an ann-bench checkpoint, a dict ``{"format": "ann-bench-checkpoint", "arch": "small_cnn", "config": {...},
  "input": {"size": [H, W], "channels": C, "mean": [...], "std": [...]}, "metric": "angular",
  "normalize": True, "state_dict": {...}, "meta": {...}}`` (what ``train_digits.py`` and ``ann-bench train``
  write; ``arch`` is any of :data:`ARCHITECTURES`: ``small_cnn``, ``mobilenet_v2``, or ``mlp`` — a head over
  frozen text/array features that :func:`open_checkpoint` hands to :class:`embeddings.mlp.MLPEmbedder`);
- a bare ``state_dict`` of a named architecture (``--model small_cnn:weights.pt``): its configuration is read
  off the tensor shapes and images are fed at their native size.
"""

from __future__ import annotations

import contextlib

import math
import pickle
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ann_bench.errors import InputError
from embeddings.base import ImageSpec, TorchEmbedder, images_to_tensor, load_weights, sha256_file
from embeddings.mlp import MLPHead
from embeddings.mobilenet import MobileNetV2

CHECKPOINT_FORMAT = "ann-bench-checkpoint"
CHECKPOINT_DIR = Path(__file__).resolve().parent / "checkpoints"


class Stage(nn.Module):
    """conv3x3-BN-ReLU, conv3x3-BN-ReLU, 2x2 max pool."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.pool = nn.MaxPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.conv2(x)))
        return self.pool(x)


class SmallCNN(nn.Module):
    """Stages of :class:`Stage` (one per width), adaptive average pooling to ``pool`` x ``pool``, then a linear
    layer to ``dim``. Takes (b, in_channels, H, W) with H, W >= 2 ** len(widths); returns (b, dim)."""

    def __init__(self, in_channels: int = 1, widths: tuple[int, ...] | list[int] = (32, 64), dim: int = 64,
                 pool: int = 2):
        super().__init__()
        chans = [in_channels, *widths]
        self.stages = nn.ModuleList(Stage(a, b) for a, b in zip(chans[:-1], chans[1:]))
        self.pool = nn.AdaptiveAvgPool2d(pool)
        self.head = nn.Linear(chans[-1] * pool * pool, dim)
        self.config = {"in_channels": in_channels, "widths": list(widths), "dim": dim, "pool": pool}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for stage in self.stages:
            x = stage(x)
        return self.head(torch.flatten(self.pool(x), 1))

    @staticmethod
    def config_from_state_dict(sd: dict[str, torch.Tensor]) -> dict[str, Any]:
        """The constructor arguments that produced ``sd`` (read off its tensor shapes)."""
        try:
            n = 1 + max(int(m.group(1)) for key in sd if (m := re.match(r"stages\.(\d+)\.conv1\.weight$", key)))
            widths = [int(sd[f"stages.{i}.conv1.weight"].shape[0]) for i in range(n)]
            in_channels = int(sd["stages.0.conv1.weight"].shape[1])
            dim, features = (int(s) for s in sd["head.weight"].shape)
        except (KeyError, ValueError, IndexError) as exc:
            raise InputError(f"this state_dict is not a small_cnn ({type(exc).__name__}: {exc}); its keys: "
                             f"{', '.join(list(sd)[:6])}, ...") from None
        return {"in_channels": in_channels, "widths": widths, "dim": dim,
                "pool": int(round(math.sqrt(features / widths[-1])))}


# Every architecture a checkpoint may name; image models except ``mlp`` (a head over frozen text/array
# features, run by embeddings.mlp.MLPEmbedder).
ARCHITECTURES: dict[str, type[nn.Module]] = {"small_cnn": SmallCNN, "mobilenet_v2": MobileNetV2, "mlp": MLPHead}


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """``torch.load(path, weights_only=True)`` with one-line InputErrors; returns the checkpoint dict."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"model file {str(path)!r} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise InputError(f"refusing to load {str(path)!r}: it holds Python objects, not only tensors "
                         f"(torch.load weights_only=True: {first[:160]}); save model.state_dict() instead") from None
    except Exception as exc:  # not a torch file, a TorchScript archive, truncated, ...
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise InputError(f"cannot load {str(path)!r} as a state_dict checkpoint: {first[:200]}") from None
    if not isinstance(obj, dict):
        raise InputError(f"{str(path)!r} holds a {type(obj).__name__}, not a state_dict; save model.state_dict()")
    return obj


@contextlib.contextmanager
def malformed_checkpoint(path: str | Path):
    """Turn the errors a malformed checkpoint raises while it is read (a missing key, a config value of the
    wrong type or name) into one InputError naming the file."""
    try:
        yield
    except KeyError as exc:
        raise InputError(f"malformed ann-bench checkpoint {str(path)!r}: no {exc.args[0]!r} entry; re-save it "
                         "with `ann-bench train`, or export the model as TorchScript") from None
    except (TypeError, ValueError, AttributeError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise InputError(f"malformed ann-bench checkpoint {str(path)!r}: {first[:200]}; re-save it with "
                         "`ann-bench train`, or export the model as TorchScript") from None


def foreign_state_dict_hint(path: Path, state_dict: dict, arch: str | None = None) -> str | None:
    """For a state_dict in none of ann-bench's layouts (a torchvision or timm network's: its classifier is
    ``classifier.N``, ``fc``, ``head.fc``, ...): the ``--model`` forms that load it (issue 32); else None."""
    if any(str(k) in ("head.weight", "net.0.weight") or str(k).startswith("stages.") for k in state_dict):
        return None  # ann-bench's own layouts (small_cnn, mobilenet_v2, mlp)
    name = arch if arch and arch not in ("small_cnn", "mlp") else "ARCH"
    return (f"a torchvision or timm network's state_dict loads in its architecture with --model "
            f'torchvision:{name}:{path} or timm:{name}:{path} (pip install -e ".[vision]")')


def _architecture(arch: str) -> type[nn.Module]:
    if arch not in ARCHITECTURES:
        raise InputError(f"unknown architecture {arch!r}; known: {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[arch]


def open_checkpoint(path: str | Path, arch: str | None = None, device: str = "cpu"):
    """The embedder of a checkpoint file: :class:`CheckpointEmbedder` for image architectures,
    :class:`embeddings.mlp.MLPEmbedder` for ``mlp`` heads over frozen features."""
    path = Path(path).expanduser()
    ckpt = load_checkpoint(path)
    is_ours = ckpt.get("format") == CHECKPOINT_FORMAT
    name = arch or (str(ckpt.get("arch")) if is_ours else None)
    if name != "mlp":
        return CheckpointEmbedder(path, arch=arch, device=device)
    from embeddings.mlp import MLPEmbedder

    if is_ours:
        with malformed_checkpoint(path):
            return MLPEmbedder(path, ckpt, ckpt["state_dict"], dict(ckpt.get("config") or {}), device=device)
    try:
        config = MLPHead.config_from_state_dict(ckpt)
    except InputError as exc:
        raise InputError(f"{str(path)!r}: {exc}") from None
    spec = ({"kind": "text", "features": "minilm"} if config["in_dim"] == 384
            else {"kind": "array", "features": "identity"})
    return MLPEmbedder(path, {"input": spec}, ckpt, config, device=device)


class CheckpointEmbedder(TorchEmbedder):
    """An image embedder from a checkpoint: an ann-bench checkpoint, or a bare state_dict of ``arch``."""

    input_kind = "image"

    def __init__(self, path: str | Path, arch: str | None = None, device: str = "cpu", name: str | None = None):
        super().__init__(device)
        self.path = Path(path).expanduser()
        ckpt = load_checkpoint(self.path)
        if ckpt.get("format") == CHECKPOINT_FORMAT:
            arch = arch or str(ckpt.get("arch"))
            cls = _architecture(arch)
            if cls is MLPHead:
                raise InputError(f"{str(self.path)!r} is an mlp head over text/array features, not an image "
                                 "model; load it with embeddings.load_embedder")
            with malformed_checkpoint(self.path):
                state_dict, config = ckpt["state_dict"], dict(ckpt.get("config") or {})
                self.image = ImageSpec.from_dict(ckpt.get("input") or {})
                self.metric = str(ckpt.get("metric", "angular"))
                self.normalize = bool(ckpt.get("normalize", True))
                self.meta = dict(ckpt.get("meta") or {})
        elif all(isinstance(v, torch.Tensor) for v in ckpt.values()):
            if arch is None:
                hint = foreign_state_dict_hint(self.path, ckpt)
                raise InputError(f"{str(self.path)!r} is a bare state_dict: name its architecture, "
                                 f"--model ARCH:{self.path} (architectures: {', '.join(ARCHITECTURES)})"
                                 + (f"; {hint}" if hint else ""))
            cls = _architecture(arch)
            state_dict = ckpt
            try:
                config = cls.config_from_state_dict(state_dict)
            except InputError as exc:
                hint = foreign_state_dict_hint(self.path, state_dict, arch)
                if hint is None:
                    raise
                raise InputError(f"{str(self.path)!r} is not ann-bench's {arch}: {hint}; else: {exc}") from None
            self.image = ImageSpec(size=None, channels=config["in_channels"])
            self.metric, self.normalize, self.meta = "angular", True, {}
        else:
            raise InputError(f"{str(self.path)!r} is neither a state_dict nor an ann-bench checkpoint "
                             f"(keys: {', '.join(map(str, list(ckpt)[:6]))})")
        self.arch = arch
        with malformed_checkpoint(self.path):
            module = cls(**config)
        self.module = load_weights(module, state_dict, self.path, arch, self.device)
        self.dim = int(config.get("dim")) if config.get("dim") else None
        self.name = name or f"{arch}:{self.path}"

    def prepare(self, batch):
        return images_to_tensor(batch, self.image, self.device)

    def provenance(self) -> dict[str, Any]:
        return {"model": self.name, "model_arch": self.arch, "model_path": str(self.path.resolve()),
                "checkpoint_sha256": sha256_file(self.path), "model_input": self.image.to_dict(),
                **({"model_meta": self.meta} if self.meta else {})}


class DigitsCNN(CheckpointEmbedder):
    """The small CNN trained with a triplet loss on scikit-learn's digits (``train_digits.py``)."""

    name = "digits-cnn"
    input_kind = "image"
    dim = 64
    metric = "angular"
    batch_size = 256
    description = ("small CNN (80k parameters), triplet loss on scikit-learn's 8x8 digits; any image, "
                   "resized to 8x8 grey")
    checkpoint = CHECKPOINT_DIR / "digits_cnn.pt"

    def __init__(self, device: str = "cpu"):
        super().__init__(self.checkpoint, device=device, name=self.name)

    @classmethod
    def check_available(cls) -> None:
        if not cls.checkpoint.is_file():
            raise InputError(f"checkpoint {str(cls.checkpoint)!r} is missing; re-create it with "
                             "`python embeddings/train_digits.py`")


class FashionCNN(DigitsCNN):
    """The small CNN trained with a triplet loss (semi-hard miner) on Fashion-MNIST by ``ann-bench train``."""

    name = "fashion-cnn"
    dim = 50
    description = ("small CNN (2 stages, 50-d), triplet loss on 20,000 Fashion-MNIST images, 4 epochs; any image, "
                   "resized to 28x28 grey")
    checkpoint = CHECKPOINT_DIR / "fashion_cnn.pt"
    recreate = ("ann-bench train --data fashion-mnist --loss triplet --miner semihard --epochs 4 --train-limit 20000 "
                "--test-limit 2000 -o embeddings/checkpoints/fashion_cnn.pt")

    @classmethod
    def check_available(cls) -> None:
        if not cls.checkpoint.is_file():
            raise InputError(f"checkpoint {str(cls.checkpoint)!r} is missing; re-create it with `{cls.recreate}`")

