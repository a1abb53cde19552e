"""An MLP head over frozen features, and its embedder: labelled text through MiniLM (frozen) then the MLP, or
feature arrays straight into the MLP.

``ann-bench train --arch mlp`` trains the head on features computed once (the frozen MiniLM's 384-d sentence
vectors for text); the checkpoint records which features it takes in ``input``: ``{"kind": "text",
"features": "minilm"}`` or ``{"kind": "array", "features": "identity", "dim": d}``. ``ann-bench embed --model
ckpt.pt`` then runs the same frozen features and the head.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ann_bench.errors import InputError
from embeddings.base import TorchEmbedder, load_weights, sha256_file

FEATURES = ("minilm", "identity")


class MLPHead(nn.Module):
    """Linear-ReLU layers of widths ``hidden``, then a linear layer to ``dim``: (b, in_dim) -> (b, dim)."""

    def __init__(self, in_dim: int = 384, hidden: tuple[int, ...] | list[int] = (256,), dim: int = 50,
                 dropout: float = 0.0):
        super().__init__()
        layers: list[nn.Module] = []
        prev = in_dim
        for h in hidden:
            layers += [nn.Linear(prev, h), nn.ReLU(inplace=True)]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            prev = h
        layers.append(nn.Linear(prev, dim))
        self.net = nn.Sequential(*layers)
        self.config: dict[str, Any] = {"in_dim": in_dim, "hidden": [int(h) for h in hidden], "dim": dim,
                                       "dropout": float(dropout)}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    @staticmethod
    def config_from_state_dict(sd: dict[str, torch.Tensor]) -> dict[str, Any]:
        """The constructor arguments that produced ``sd``, read off its ``net.N.weight`` matrices; what else the
        file holds (other keys, other shapes) is reported when the weights are loaded (``load_weights``)."""
        layers = sorted((int(m.group(1)), k) for k in sd if (m := re.fullmatch(r"net\.(\d+)\.weight", str(k))))
        weights = [sd[k] for _, k in layers]
        if not weights:
            keys = ", ".join(f"{k} {tuple(getattr(v, 'shape', ()))}" for k, v in list(sd.items())[:4])
            raise InputError(f"this state_dict is not an mlp: no net.N.weight tensors (its keys: {keys}"
                             f"{', ...' if len(sd) > 4 else ''}); an mlp head is net.0.weight, net.0.bias, "
                             "net.2.weight, ... (save MLPHead.state_dict(), or export the model as TorchScript)")
        bad = next((k for (_, k), w in zip(layers, weights) if not isinstance(w, torch.Tensor) or w.dim() != 2), None)
        if bad is not None:
            raise InputError(f"this state_dict is not an mlp: {bad} has shape {tuple(getattr(sd[bad], 'shape', ()))}, "
                             "not a 2-D weight matrix (out, in)")
        return {"in_dim": int(weights[0].shape[1]), "hidden": [int(w.shape[0]) for w in weights[:-1]],
                "dim": int(weights[-1].shape[0]), "dropout": 0.0}


def feature_extractor(features: str, device: str = "cpu"):
    """The frozen feature model named ``features``: an Embedder (``minilm``) or None (``identity``)."""
    if features == "identity":
        return None
    if features == "minilm":
        from embeddings.minilm import MiniLM

        MiniLM.check_available()
        return MiniLM(device=device)
    raise InputError(f"unknown feature model {features!r}; known: {', '.join(FEATURES)}")


def compute_features(extractor, items, batch_size: int = 64) -> np.ndarray:
    """Frozen features of ``items`` (a list of str for MiniLM, an (n, d) array for identity): (n, d) float32."""
    if extractor is None:
        return np.asarray(items, dtype=np.float32)
    out = [extractor.embed(list(items[i : i + batch_size])) for i in range(0, len(items), batch_size)]
    return np.concatenate(out).astype(np.float32)


class MLPEmbedder(TorchEmbedder):
    """Frozen features (MiniLM for text, none for arrays) then a trained :class:`MLPHead`."""

    input_kind = "text"
    batch_size = 64

    def __init__(self, path: str | Path, ckpt: dict[str, Any], state_dict: dict[str, torch.Tensor],
                 config: dict[str, Any], device: str = "cpu"):
        super().__init__(device)
        self.path = Path(path)
        spec = dict(ckpt.get("input") or {})
        self.features = str(spec.get("features", "minilm"))
        self.input_kind = str(spec.get("kind", "text"))
        self.bound_kind = self.input_kind
        if self.input_kind not in ("text", "array"):
            raise InputError(f"{str(self.path)!r}: an mlp checkpoint takes text or array input, not {self.input_kind!r}")
        self.extractor = feature_extractor(self.features, device)
        self.module = load_weights(MLPHead(**config), state_dict, self.path, "mlp", self.device)
        self.dim = int(config["dim"])
        self.metric = str(ckpt.get("metric", "angular"))
        self.normalize = bool(ckpt.get("normalize", True))
        self.meta = dict(ckpt.get("meta") or {})
        self.name = f"mlp:{self.path}"

    def accepts(self, kind: str) -> bool:
        return kind == self.input_kind

    def prepare(self, batch: Any):
        feats = compute_features(self.extractor, batch if self.extractor is not None else np.asarray(batch))
        if feats.shape[1] != self.module.config["in_dim"]:
            raise InputError(f"model {self.name!r} takes {self.module.config['in_dim']}-d features, got "
                             f"{feats.shape[1]}-d")
        return torch.from_numpy(feats).to(self.device)

    def provenance(self) -> dict[str, Any]:
        return {"model": self.name, "model_arch": "mlp", "model_path": str(self.path.resolve()),
                "checkpoint_sha256": sha256_file(self.path), "model_features": self.features,
                **({"model_meta": self.meta} if self.meta else {})}
