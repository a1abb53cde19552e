"""Inverted file with exact vectors in the lists: faiss IndexIVFFlat (build nlist, search nprobe)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ann_bench.backends._faiss import FaissIndex, import_faiss
from ann_bench.backends.base import UPDATES_BOTH, Param
from ann_bench.errors import InputError


def pow2_lists(n: int, factor: float) -> int:
    """factor * sqrt(n) rounded to a power of two, at least 1 and at most n // 39 (faiss wants >= 39
    training points per centroid)."""
    target = max(1.0, factor * np.sqrt(max(n, 1)))
    nlist = 2 ** int(round(np.log2(target)))
    cap = max(1, n // 39)
    while nlist > cap and nlist > 1:
        nlist //= 2
    return int(nlist)


class FaissIVFFlat(FaissIndex):
    name = "ivf"
    description = "inverted file, k-means coarse quantizer, exact vectors in the lists (faiss IndexIVFFlat)"
    build_params = (
        Param("nlist", int, 1024, "number of k-means lists", min=1, max=1 << 22),
        Param("train_per_list", int, 64, "k-means trains on a seeded random sample of at most nlist * this "
              "vectors (faiss's own default: 256)", min=39, max=1 << 20),
    )
    search_params = (Param("nprobe", int, 16, "lists visited per query", min=1, max=1 << 22),)
    build_grid = {"nlist": [1024]}
    search_grid = {"nprobe": [1, 2, 4, 8, 16, 32, 64, 128, 256]}
    effort_params = {"nprobe": +1}
    grid_notes = {"nlist": "sqrt(n) and 4*sqrt(n), rounded to powers of two"}

    @classmethod
    def default_build_grid(cls, n: int, dim: int) -> dict[str, list]:
        return {"nlist": sorted({pow2_lists(n, 1), pow2_lists(n, 4)})}

    @classmethod
    def check_data(cls, build: dict[str, Any], n: int, dim: int) -> None:
        if build["nlist"] > n:
            raise InputError(
                f"{cls.label()}: nlist={build['nlist']} exceeds the {n} training vectors; use nlist <= {n} "
                f"(about 4*sqrt(n) = {pow2_lists(n, 4)} is usual)"
            )

    def search_skip_reason(self, search: dict[str, Any], k: int) -> str | None:
        if search["nprobe"] > self.params["nlist"]:
            return f"nprobe={search['nprobe']} > nlist={self.params['nlist']} visits nothing more"
        return None

    updates = UPDATES_BOTH
    update_notes = ("add_with_ids into the lists of the centroids trained at the build (never retrained); "
                    "remove_ids deletes the entries from their lists")

    def add(self, X: np.ndarray, ids: np.ndarray) -> None:
        self.check_shape(X)
        self.index.add_with_ids(self.prepare(X), np.ascontiguousarray(ids, dtype=np.int64))

    def remove(self, ids: np.ndarray) -> None:
        self.index.remove_ids(np.ascontiguousarray(ids, dtype=np.int64))

    def _make_index(self, X: np.ndarray):
        faiss = import_faiss()
        quantizer = faiss.IndexFlat(self.dim, self.faiss_metric())
        index = faiss.IndexIVFFlat(quantizer, self.dim, self.params["nlist"], self.faiss_metric())
        index.cp.seed = self.seed
        index.cp.max_points_per_centroid = self.params["train_per_list"]
        index.train(X)
        index.add(X)
        self._quantizer = quantizer  # the IVF index does not own it from Python's point of view
        return index

    def _apply_search_params(self, params: dict[str, Any]) -> None:
        if self.index is not None:
            import_faiss().extract_index_ivf(self.index).nprobe = params["nprobe"]

    def _search_parameters(self, sel):
        return import_faiss().SearchParametersIVF(sel=sel, nprobe=int(self.search_config["nprobe"]))
