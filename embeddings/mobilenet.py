"""A MobileNetV2-style network in plain torch (Sandler et al., 2018): inverted residual blocks (1x1 expansion,
3x3 depthwise, linear 1x1 projection, residual when shapes allow), ReLU6, global average pooling, a linear
head to ``dim``.

Sized for small images (28x28 Fashion-MNIST, 8x8 digits, 32-64 px folders): the stem keeps the resolution
and the default stages downsample three times. No pretrained weights: none are available offline, so it is
trained from scratch like the small CNN.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ann_bench.errors import InputError

# How to embed with a model ann-bench has no architecture for: a TorchScript file is a --model form of its own.
TORCHSCRIPT_HINT = ("export the model as TorchScript (torch.jit.script(model).save(\"model_ts.pt\")) and pass that "
                    "file itself: --model model_ts.pt")

# (expansion t, output channels c, repeats n, first stride s), as the paper's table 2, scaled down.
DEFAULT_SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 2, 2), (6, 64, 2, 2), (6, 96, 1, 1))


def conv_bn(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, act: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
                               nn.BatchNorm2d(cout)]
    if act:
        layers.append(nn.ReLU6(inplace=True))
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    """1x1 expand (t > 1), 3x3 depthwise with ``stride``, linear 1x1 projection; identity shortcut when the
    stride is 1 and the channel counts match."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int):
        super().__init__()
        hidden = cin * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(conv_bn(cin, hidden, 1))
        layers += [conv_bn(hidden, hidden, 3, stride, groups=hidden), conv_bn(hidden, cout, 1, act=False)]
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x) if self.residual else self.block(x)


class MobileNetV2(nn.Module):
    """Stem conv3x3 (``stem_stride``) to ``stem`` channels, inverted residual stages per ``settings`` (rows of
    (t, c, n, s)), a 1x1 conv to ``last`` channels, global average pooling, linear to ``dim``.

    Takes (b, in_channels, H, W); returns (b, dim). ``width`` multiplies every channel count."""

    def __init__(self, in_channels: int = 1, dim: int = 50, width: float = 1.0, stem: int = 32,
                 stem_stride: int = 1, last: int = 256,
                 settings: tuple | list = DEFAULT_SETTINGS):
        super().__init__()
        settings = [tuple(int(v) for v in row) for row in settings]
        if any(len(row) != 4 for row in settings):
            raise InputError("mobilenet_v2 settings are rows of 4 integers (t, c, n, s)")

        def ch(c: int) -> int:
            return max(8, round(c * width / 8) * 8)

        layers: list[nn.Module] = [conv_bn(in_channels, ch(stem), 3, stem_stride)]
        cin = ch(stem)
        for t, c, n, s in settings:
            for i in range(n):
                layers.append(InvertedResidual(cin, ch(c), s if i == 0 else 1, t))
                cin = ch(c)
        layers.append(conv_bn(cin, ch(last), 1))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(ch(last), dim)
        self.config: dict[str, Any] = {"in_channels": in_channels, "dim": dim, "width": float(width),
                                       "stem": stem, "stem_stride": stem_stride, "last": last,
                                       "settings": [list(row) for row in settings]}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.pool(self.features(x)), 1))

    @staticmethod
    def config_from_state_dict(sd: dict[str, torch.Tensor]) -> dict[str, Any]:
        """The configuration of a bare state_dict of the default architecture (DEFAULT_SETTINGS, width 1,
        stem 32, last 256, stem stride 1): input channels and dim are read from the tensor shapes, and every
        tensor's name and shape must then be the default network's. Strides leave no trace in the weights,
        so a state_dict of any other layout is refused with one line (export it as TorchScript instead)."""
        stem, head = sd.get("features.0.0.weight"), sd.get("head.weight")
        if stem is None or head is None or stem.dim() != 4 or head.dim() != 2:
            raise InputError("this state_dict is not a mobilenet_v2 of ann-bench (no features.0.0.weight / "
                             f"head.weight; torchvision's has a classifier instead): {TORCHSCRIPT_HINT}")
        config = {"in_channels": int(stem.shape[1]), "dim": int(head.shape[0])}
        expected = {k: tuple(v.shape) for k, v in MobileNetV2(**config).state_dict().items()}
        given = {k: tuple(v.shape) for k, v in sd.items()}
        if given != expected:
            wrong = sorted(set(given) ^ set(expected)) or [k for k in expected if given[k] != expected[k]]
            raise InputError(f"this mobilenet_v2 state_dict is not of the default architecture (stages "
                             f"{DEFAULT_SETTINGS}, width 1; differs at {wrong[0]!r}), and a bare state_dict "
                             f"does not say its stage settings or strides: {TORCHSCRIPT_HINT}, or use the "
                             "checkpoint `ann-bench train` writes")
        return {**config, "width": 1.0, "stem": 32, "stem_stride": 1, "last": 256,
                "settings": [list(row) for row in DEFAULT_SETTINGS]}
