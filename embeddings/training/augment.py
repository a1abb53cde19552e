"""Batched image augmentations in torch (no torchvision here): random resized crop, horizontal flip and
rotation as one affine resampling per image, then random erasing. Seeded through a torch.Generator."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

AUGMENTATIONS = ("crop", "flip", "rotate", "erase")


class Augment:
    """Augment (b, C, H, W) float batches (already normalised).

    - crop: a random region of ``scale`` of the area and aspect ``ratio``, resized back to (H, W);
    - flip: horizontal flip with probability 1/2;
    - rotate: a rotation by U(-degrees, degrees);
    - erase: with probability ``erase_p`` a rectangle of ``erase_scale`` of the area is set to 0 (the mean).

    Pixels brought in from outside the image repeat the border (the background of centred objects).
    """

    def __init__(self, ops: tuple[str, ...] | list[str] = AUGMENTATIONS, scale: tuple[float, float] = (0.6, 1.0),
                 ratio: tuple[float, float] = (3 / 4, 4 / 3), degrees: float = 15.0, erase_p: float = 0.5,
                 erase_scale: tuple[float, float] = (0.02, 0.2)):
        unknown = [op for op in ops if op not in AUGMENTATIONS]
        if unknown:
            from ann_bench.errors import InputError

            raise InputError(f"unknown augmentation {unknown[0]!r}; choose from: {', '.join(AUGMENTATIONS)}")
        self.ops = tuple(ops)
        self.scale, self.ratio, self.degrees = scale, ratio, degrees
        self.erase_p, self.erase_scale = erase_p, erase_scale

    def _uniform(self, b: int, lo: float, hi: float, gen: torch.Generator) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(b, generator=gen)

    def __call__(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        b, _, h, w = x.shape
        if {"crop", "flip", "rotate"} & set(self.ops):
            sw = sh = torch.ones(b)
            cx = cy = torch.zeros(b)
            if "crop" in self.ops:
                area = self._uniform(b, *self.scale, gen)
                logr = self._uniform(b, math.log(self.ratio[0]), math.log(self.ratio[1]), gen)
                sw = torch.sqrt(area * torch.exp(logr)).clamp(max=1.0)
                sh = torch.sqrt(area / torch.exp(logr)).clamp(max=1.0)
                cx = (1 - sw) * (2 * torch.rand(b, generator=gen) - 1)
                cy = (1 - sh) * (2 * torch.rand(b, generator=gen) - 1)
            flip = torch.ones(b)
            if "flip" in self.ops:
                flip = torch.where(torch.rand(b, generator=gen) < 0.5, -1.0, 1.0)
            angle = torch.zeros(b)
            if "rotate" in self.ops:
                angle = self._uniform(b, -self.degrees, self.degrees, gen) * math.pi / 180
            cos, sin = torch.cos(angle), torch.sin(angle)
            # input coords = centre + diag(sw, sh) @ R(angle) @ diag(flip, 1) @ output coords (normalised [-1, 1])
            theta = torch.stack([torch.stack([sw * cos * flip, -sw * sin, cx], 1),
                                 torch.stack([sh * sin * flip, sh * cos, cy], 1)], 1).to(x.dtype)
            grid = F.affine_grid(theta, list(x.shape), align_corners=False)
            x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
        if "erase" in self.ops:
            x = x.clone()
            do = torch.rand(b, generator=gen) < self.erase_p
            area = self._uniform(b, *self.erase_scale, gen)
            logr = self._uniform(b, math.log(0.3), math.log(3.3), gen)
            eh = (torch.sqrt(area / torch.exp(logr)) * h).round().clamp(1, h).long()
            ew = (torch.sqrt(area * torch.exp(logr)) * w).round().clamp(1, w).long()
            top = (torch.rand(b, generator=gen) * (h - eh + 1)).long()
            left = (torch.rand(b, generator=gen) * (w - ew + 1)).long()
            for i in torch.flatten(torch.nonzero(do)).tolist():
                x[i, :, top[i] : top[i] + eh[i], left[i] : left[i] + ew[i]] = 0.0
        return x
