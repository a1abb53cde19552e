"""The identity embedder: features already computed (a ``.npy`` or IDX array) become the vectors unchanged."""

from __future__ import annotations

import numpy as np

from embeddings.base import Embedder


class Identity(Embedder):
    """(b, d) features in, the same (b, d) float32 out."""

    name = "identity"
    input_kind = "array"
    metric = "euclidean"
    normalize = False
    batch_size = 65536
    description = "features already computed (.npy, IDX): stored as they are; the default for .npy input"

    def embed(self, batch) -> np.ndarray:
        out = np.asarray(batch, dtype=np.float32)
        if self.dim is None:
            self.dim = int(out.shape[1])
        return out
