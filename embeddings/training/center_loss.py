"""Center loss (Wen, Zhang, Li, Qiao: "A Discriminative Feature Learning Approach for Deep Face Recognition",
ECCV 2016), combined with softmax cross-entropy as its authors do. pytorch-metric-learning has no center loss.

L = L_S + lambda * L_C with L_S the softmax cross-entropy of a linear classifier over the features and
L_C = 1/2 * mean_i ||x_i - c_{y_i}||^2. The class centers are not trained by the optimizer: after each step
they move by the paper's rule (its Algorithm 1, its own rate alpha),

    delta c_j = sum_{i: y_i = j} (c_j - x_i) / (1 + n_j),    c_j <- c_j - alpha * delta c_j,

so lambda weighs the loss on the features and alpha sets how fast the centers follow.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class CenterLoss(nn.Module):
    """Learnable class centers (num_classes, dim) and L_C = 1/2 mean ||x_i - c_{y_i}||^2."""

    def __init__(self, num_classes: int, dim: int, alpha: float = 0.5):
        super().__init__()
        self.alpha = float(alpha)
        self.register_buffer("centers", torch.zeros(num_classes, dim))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """x (b, dim) features, y (b,) int64 classes -> scalar loss (gradient flows to x only)."""
        return 0.5 * (x - self.centers[y]).pow(2).sum(dim=1).mean()

    @torch.no_grad()
    def update_centers(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Wen et al.'s update: c_j -= alpha * sum_{y_i=j} (c_j - x_i) / (1 + n_j). x (b, dim), y (b,)."""
        x = x.detach().to(self.centers.dtype)
        diff = torch.zeros_like(self.centers).index_add_(0, y, self.centers[y] - x)
        counts = torch.bincount(y, minlength=self.centers.shape[0]).to(x.dtype)
        self.centers -= self.alpha * diff / (1.0 + counts)[:, None]


class SoftmaxCenterLoss(nn.Module):
    """Softmax cross-entropy of a linear classifier over the embeddings, plus ``weight`` * center loss
    (``weight`` 0: plain softmax). Call :meth:`after_step` after each optimizer step to move the centers."""

    def __init__(self, num_classes: int, dim: int, weight: float = 0.01, alpha: float = 0.5):
        super().__init__()
        self.classifier = nn.Linear(dim, num_classes)
        self.weight = float(weight)
        self.center = CenterLoss(num_classes, dim, alpha) if weight > 0 else None

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        loss = F.cross_entropy(self.classifier(x), y)
        if self.center is not None:
            loss = loss + self.weight * self.center(x, y)
        return loss

    def after_step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        if self.center is not None:
            self.center.update_centers(x, y)
