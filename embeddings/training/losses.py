"""The losses and miners ``ann-bench train`` offers: pytorch-metric-learning's, plus center loss and plain
softmax (:mod:`embeddings.training.center_loss`). Every name maps to a factory and its defaults; unknown
names and miners given to losses that do not take them are InputErrors listing the valid values.

Tuple losses (triplet, contrastive, multi-similarity, circle, lifted-structure, supcon) work on the pairs or
triplets of a batch and take a miner; classification and proxy losses (arcface, cosface, proxy-anchor,
proxy-nca, normalized-softmax, soft-triple, center, softmax) hold per-class parameters, trained with the model
at 10x its learning rate (pytorch-metric-learning's advice for proxies), and take no miner.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ann_bench.errors import InputError


@dataclass(frozen=True)
class LossSpec:
    name: str
    description: str
    factory: Callable[..., Any]  # (num_classes, dim, options) -> nn.Module taking (embeddings, labels[, tuples])
    takes_miner: bool
    per_class: bool  # holds per-class parameters (classifier, proxies, centers)


def _pml():
    from pytorch_metric_learning import distances, losses, miners

    return distances, losses, miners


def _triplet(n, d, o):
    dist, losses, _ = _pml()
    return losses.TripletMarginLoss(margin=o.get("margin", 0.2), distance=dist.CosineSimilarity())


def _contrastive(n, d, o):
    dist, losses, _ = _pml()
    return losses.ContrastiveLoss(pos_margin=0.0, neg_margin=o.get("margin", 1.0), distance=dist.LpDistance())


def _ms(n, d, o):
    _, losses, _ = _pml()
    return losses.MultiSimilarityLoss(alpha=2, beta=50, base=0.5)


def _circle(n, d, o):
    _, losses, _ = _pml()
    return losses.CircleLoss(m=o.get("margin", 0.4), gamma=80)


def _lifted(n, d, o):
    _, losses, _ = _pml()
    return losses.GeneralizedLiftedStructureLoss(neg_margin=o.get("margin", 1.0), pos_margin=0)


def _supcon(n, d, o):
    _, losses, _ = _pml()
    return losses.SupConLoss(temperature=0.1)


def _arcface(n, d, o):
    _, losses, _ = _pml()
    return losses.ArcFaceLoss(num_classes=n, embedding_size=d, margin=28.6, scale=30)


def _cosface(n, d, o):
    _, losses, _ = _pml()
    return losses.CosFaceLoss(num_classes=n, embedding_size=d, margin=0.35, scale=30)


def _proxy_anchor(n, d, o):
    _, losses, _ = _pml()
    return losses.ProxyAnchorLoss(num_classes=n, embedding_size=d, margin=0.1, alpha=32)


def _proxy_nca(n, d, o):
    _, losses, _ = _pml()
    return losses.ProxyNCALoss(num_classes=n, embedding_size=d, softmax_scale=10)


def _norm_softmax(n, d, o):
    _, losses, _ = _pml()
    return losses.NormalizedSoftmaxLoss(num_classes=n, embedding_size=d, temperature=0.05)


def _soft_triple(n, d, o):
    _, losses, _ = _pml()
    return losses.SoftTripleLoss(num_classes=n, embedding_size=d, centers_per_class=2)


def _center(n, d, o):
    from embeddings.training.center_loss import SoftmaxCenterLoss

    return SoftmaxCenterLoss(n, d, weight=o.get("center_weight", 0.01), alpha=o.get("center_alpha", 0.5))


def _softmax(n, d, o):
    from embeddings.training.center_loss import SoftmaxCenterLoss

    return SoftmaxCenterLoss(n, d, weight=0.0)


LOSSES: dict[str, LossSpec] = {s.name: s for s in [
    LossSpec("triplet", "TripletMarginLoss, margin 0.2, cosine similarity", _triplet, True, False),
    LossSpec("contrastive", "ContrastiveLoss (siamese pairs), L2 on unit vectors, negative margin 1.0",
             _contrastive, True, False),
    LossSpec("multi-similarity", "MultiSimilarityLoss (alpha 2, beta 50, base 0.5)", _ms, True, False),
    LossSpec("circle", "CircleLoss (m 0.4, gamma 80)", _circle, True, False),
    LossSpec("lifted-structure", "GeneralizedLiftedStructureLoss (negative margin 1.0)", _lifted, True, False),
    LossSpec("supcon", "SupConLoss (temperature 0.1)", _supcon, True, False),
    LossSpec("arcface", "ArcFaceLoss (margin 28.6 degrees, scale 30)", _arcface, False, True),
    LossSpec("cosface", "CosFaceLoss (margin 0.35, scale 30)", _cosface, False, True),
    LossSpec("proxy-anchor", "ProxyAnchorLoss (margin 0.1, alpha 32)", _proxy_anchor, False, True),
    LossSpec("proxy-nca", "ProxyNCALoss (softmax scale 10)", _proxy_nca, False, True),
    LossSpec("normalized-softmax", "NormalizedSoftmaxLoss (temperature 0.05)", _norm_softmax, False, True),
    LossSpec("soft-triple", "SoftTripleLoss (2 centers per class)", _soft_triple, False, True),
    LossSpec("center", "softmax cross-entropy + lambda * center loss (Wen et al. 2016; written here)",
             _center, False, True),
    LossSpec("softmax", "softmax cross-entropy of a linear classifier (a baseline)", _softmax, False, True),
]}


def _triplet_miner(kind):
    def make(o):
        dist, _, miners = _pml()
        return miners.TripletMarginMiner(margin=o.get("margin", 0.2), type_of_triplets=kind,
                                         distance=dist.CosineSimilarity())
    return make


def _batch_hard(o):
    _, _, miners = _pml()
    return miners.BatchHardMiner()


def _ms_miner(o):
    _, _, miners = _pml()
    return miners.MultiSimilarityMiner(epsilon=0.1)


def _pair_margin(o):
    _, _, miners = _pml()
    return miners.PairMarginMiner(pos_margin=0.2, neg_margin=0.8)


MINERS: dict[str, tuple[str, Callable[[dict], Any]]] = {
    "semihard": ("TripletMarginMiner, semi-hard triplets (margin 0.2)", _triplet_miner("semihard")),
    "hard": ("TripletMarginMiner, hard triplets (margin 0.2)", _triplet_miner("hard")),
    "all": ("TripletMarginMiner, all margin-violating triplets (margin 0.2)", _triplet_miner("all")),
    "batch-hard": ("BatchHardMiner: the hardest positive and negative of each anchor", _batch_hard),
    "multi-similarity": ("MultiSimilarityMiner (epsilon 0.1)", _ms_miner),
    "pair-margin": ("PairMarginMiner (positive margin 0.2, negative 0.8)", _pair_margin),
}


def check_loss(loss: str, miner: str | None) -> LossSpec:
    """The LossSpec of ``loss``; InputError for an unknown loss or miner, or a miner the loss cannot use."""
    if loss not in LOSSES:
        raise InputError(f"unknown --loss {loss!r}; choose one of: {', '.join(LOSSES)}")
    spec = LOSSES[loss]
    if miner is not None:
        if miner not in MINERS:
            raise InputError(f"unknown --miner {miner!r}; choose one of: {', '.join(MINERS)} (or none)")
        if not spec.takes_miner:
            takes = ", ".join(n for n, s in LOSSES.items() if s.takes_miner)
            raise InputError(f"--loss {loss} takes no miner (it trains per-class parameters); miners apply to: {takes}")
    return spec


def make_loss(loss: str, num_classes: int, dim: int, options: dict | None = None):
    return check_loss(loss, None).factory(num_classes, dim, options or {})


def make_miner(miner: str | None, options: dict | None = None):
    if miner is None:
        return None
    if miner not in MINERS:
        raise InputError(f"unknown --miner {miner!r}; choose one of: {', '.join(MINERS)} (or none)")
    return MINERS[miner][1](options or {})
