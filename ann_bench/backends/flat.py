"""Exact search: faiss IndexFlat. The baseline every approximate index is measured against."""

from __future__ import annotations

from typing import Any

import numpy as np

from ann_bench.backends._faiss import FaissIndex, import_faiss


class FaissFlat(FaissIndex):
    name = "flat"
    description = "exact brute-force search (faiss IndexFlatL2 / IndexFlatIP)"

    def _make_index(self, X: np.ndarray):
        faiss = import_faiss()
        index = faiss.IndexFlat(self.dim, self.faiss_metric())
        index.add(X)
        return index

    def _apply_search_params(self, params: dict[str, Any]) -> None:
        pass
