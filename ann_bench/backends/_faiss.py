"""Shared plumbing for the faiss-backed indices: metric mapping, threads, (de)serialisation."""

from __future__ import annotations

import os
from functools import partial
from typing import Any

import numpy as np

from ann_bench.backends.base import Index, copied_pairs
from ann_bench.distances import from_inner_product, from_squared_l2, normalized


def import_faiss():
    import faiss

    return faiss


class FaissIndex(Index):
    """Base for faiss indices. ``angular`` is L2 on normalised vectors (1 - cos = |x - y|^2 / 2), ``ip`` is
    METRIC_INNER_PRODUCT and ``euclidean`` is METRIC_L2 (squared, converted with a square root)."""

    impl = "faiss"
    requires = ("faiss",)
    install_hint = "pip install faiss-cpu"

    def __init__(self, metric: str, dim: int, threads: int = 1, seed: int = 0, **build_params: Any):
        super().__init__(metric, dim, threads, seed, **build_params)
        self.index = None

    # faiss metric constant for this dataset metric
    def faiss_metric(self) -> int:
        faiss = import_faiss()
        return faiss.METRIC_INNER_PRODUCT if self.metric == "ip" else faiss.METRIC_L2

    def prepare(self, X: np.ndarray) -> np.ndarray:
        """Vectors as the index sees them: normalised for angular, else unchanged (no copy)."""
        if self.metric == "angular":
            return normalized(X)
        return np.ascontiguousarray(X, dtype=np.float32)

    def set_threads(self, threads: int) -> None:
        super().set_threads(threads)
        import_faiss().omp_set_num_threads(self.threads)

    def build(self, X: np.ndarray) -> None:
        self.set_threads(self.threads)
        self.index = self._make_index(self.prepare(X))
        self._built = True

    def _make_index(self, X: np.ndarray):
        """Create, train and fill the faiss index over the prepared vectors X."""
        raise NotImplementedError

    def _searching(self):
        """The faiss index whose ``search`` answers queries: the index, or one inside it (a subclass's choice)."""
        return self.index

    def query(self, Q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        if self.metric == "angular":
            Q = normalized(Q)
        return self._searching().search(Q, k)

    def single_query(self, Q: np.ndarray, k: int):
        if self.metric == "angular":  # normalising each query is part of its search: query does it
            return super().single_query(Q, k)
        return copied_pairs(partial(self._searching().search, k=k), Q.shape[0])

    filter_support = "faiss SearchParameters(sel=IDSelectorBitmap)"

    def filtered_query(self, Q: np.ndarray, k: int, bitmap: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        faiss = import_faiss()
        if self.metric == "angular":
            Q = normalized(Q)
        sel = faiss.IDSelectorBitmap(self.index.ntotal, faiss.swig_ptr(bitmap))
        return self._searching().search(Q, k, params=self._search_parameters(sel))

    def _search_parameters(self, sel):
        """faiss search parameters carrying ``sel`` and this index's current search settings (faiss ignores the
        index's own nprobe/efSearch when parameters are passed)."""
        return import_faiss().SearchParameters(sel=sel)

    def convert(self, D: np.ndarray, I: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.metric == "ip":
            D = from_inner_product(self.metric, D)
        else:
            D = from_squared_l2(self.metric, D)
        return self.pad(D, I)

    def save(self, path: str | os.PathLike) -> None:
        import_faiss().write_index(self.index, os.fspath(path))

    def load(self, path: str | os.PathLike) -> None:
        faiss = import_faiss()
        self.set_threads(self.threads)
        self.index = faiss.read_index(os.fspath(path))
        self._built = True
        self._apply_search_params(self.search_config or self.validate_search_params({}))

    def index_bytes(self) -> int:
        return int(import_faiss().serialize_index(self.index).size)
