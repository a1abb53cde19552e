"""User models saved as TorchScript (``torch.jit.save``): ``--model path/to/model.pt``.

``torch.jit.load`` runs no pickled Python: a TorchScript archive holds code in TorchScript's own language and
tensors. A model may carry its own description as an extra file ``ann_bench.json`` (all keys optional)::

    torch.jit.save(torch.jit.script(model), "model.pt", _extra_files={"ann_bench.json": json.dumps({
        "input_kind": "image",                      # or "array"
        "input": {"size": [28, 28], "channels": 1, "mean": [0.286], "std": [0.353]},
        "metric": "angular", "normalize": True})})

Without it the model gets images at their native size and channels, pixels scaled to [0, 1] (or the arrays
as they are), and its vectors are taken for ``euclidean``, not normalised. Its output dimension is whatever it
returns. Text needs a tokenizer, so TorchScript models take images or arrays only.
"""

from __future__ import annotations

import json
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from ann_bench.errors import InputError
from embeddings.base import ImageSpec, TorchEmbedder, images_to_tensor, sha256_file

META_FILE = "ann_bench.json"


def is_torchscript(path: str | Path) -> bool:
    """Whether ``path`` is a TorchScript archive (a zip with ``constants.pkl`` and ``code/``), by its listing."""
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except (zipfile.BadZipFile, OSError):
        return False
    return any(n.endswith("/constants.pkl") for n in names) and any("/code/" in n for n in names)


class TorchScriptEmbedder(TorchEmbedder):
    """A TorchScript module taking (b, C, H, W) float images or (b, d) float arrays, returning (b, dim)."""

    input_kind = None

    def __init__(self, path: str | Path, device: str = "cpu"):
        super().__init__(device)
        import torch

        self.path = Path(path).expanduser()
        extra = {META_FILE: ""}
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # torch >= 2.9 deprecates TorchScript
                module = torch.jit.load(str(self.path), map_location=self.device, _extra_files=extra)
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise InputError(f"cannot load TorchScript model {str(self.path)!r}: {first[:200]}") from None
        try:
            meta = json.loads(extra[META_FILE] or "{}")
        except json.JSONDecodeError as exc:
            raise InputError(f"{META_FILE} inside {str(self.path)!r} is not JSON: {exc}") from None
        kind = meta.get("input_kind")
        if kind not in (None, "image", "array"):
            raise InputError(f"{META_FILE} of {str(self.path)!r}: input_kind {kind!r}; use image or array")
        self.input_kind = kind
        self.bound_kind = kind
        self.image = ImageSpec.from_dict(meta["input"]) if meta.get("input") else ImageSpec(size=None, channels=0)
        self.metric = str(meta.get("metric", "euclidean"))
        self.normalize = bool(meta.get("normalize", False))
        self.dim = int(meta["dim"]) if meta.get("dim") else None
        self.meta = meta
        self.module = module.eval()
        self.name = str(self.path)

    def prepare(self, batch: Any):
        import torch

        if self.bound_kind == "image":
            return images_to_tensor(batch, self.image, self.device)
        return torch.from_numpy(np.array(batch, dtype=np.float32)).to(self.device)  # a copy: inputs may be read-only

    def provenance(self) -> dict[str, Any]:
        return {"model": self.name, "model_format": "torchscript", "model_path": str(self.path.resolve()),
                "checkpoint_sha256": sha256_file(self.path), **({"model_meta": self.meta} if self.meta else {})}
