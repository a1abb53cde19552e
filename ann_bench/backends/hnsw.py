"""Hierarchical Navigable Small World graphs through hnswlib (build M, ef_construction; search ef).

hnswlib's native distances: 'l2' is squared L2, 'cosine' is 1 - cos (it normalises internally), 'ip' is
1 - dot; all three are converted to the dataset's metric. hnswlib raises ef to k silently, so search
configurations with ef < k are skipped as duplicates of ef = k.
"""

from __future__ import annotations

import os
from functools import partial
from typing import Any

import numpy as np

from ann_bench.backends.base import UPDATES_BOTH, Index, Param, copied_pairs
from ann_bench.distances import from_squared_l2

SPACES = {"euclidean": "l2", "angular": "cosine", "ip": "ip"}


class HnswlibHNSW(Index):
    name = "hnsw"
    impl = "hnswlib"
    requires = ("hnswlib",)
    install_hint = "pip install hnswlib"
    description = "hierarchical navigable small world graph (hnswlib)"
    build_params = (
        Param("M", int, 16, "graph degree (links per node per layer; 2*M on layer 0)", min=2, max=512),
        Param("ef_construction", int, 200, "candidate list size while inserting", min=1, max=100_000),
        Param("replace_deleted", bool, False, "updates: an insert reuses a deleted item's slot (hnswlib's "
              "allow_replace_deleted / replace_deleted) instead of growing the index", implicit=True),
    )
    search_params = (Param("ef", int, 10, "candidate list size while searching", min=1, max=1_000_000),)
    build_grid = {"M": [16, 32], "ef_construction": [200]}
    search_grid = {"ef": [10, 20, 40, 80, 160, 320, 640]}
    effort_params = {"ef": +1}

    def __init__(self, metric: str, dim: int, threads: int = 1, seed: int = 0, **build_params: Any):
        super().__init__(metric, dim, threads, seed, **build_params)
        self.index = None
        self._free = 0  # deleted slots an insert may take (replace_deleted); unknown after a load: none

    def build(self, X: np.ndarray) -> None:
        import hnswlib

        n = X.shape[0]
        index = hnswlib.Index(space=SPACES[self.metric], dim=self.dim)
        index.init_index(
            max_elements=n, M=self.params["M"], ef_construction=self.params["ef_construction"],
            random_seed=self.seed, allow_replace_deleted=self.params.get("replace_deleted", False),
        )
        index.set_num_threads(self.threads)
        # One thread inserts in id order, which makes the graph deterministic for a seed.
        index.add_items(X, np.arange(n), num_threads=self.threads)
        self.index = index
        self._built = True

    updates = UPDATES_BOTH
    update_notes = ("add_items (the index resized to twice its capacity when full); mark_deleted: a deleted item "
                    "stays in the graph as a tombstone searches pass through and never return; with build "
                    "replace_deleted=true an insert takes a deleted item's slot (replace_deleted), so the index "
                    "stops growing once deletions keep pace, else deleted memory is never reused")

    def add(self, X: np.ndarray, ids: np.ndarray) -> None:
        self.check_shape(X)
        reuse = self.params.get("replace_deleted", False)
        # the count includes deleted items; with reuse, each deleted slot takes one new item
        free = self._free if reuse else 0
        need = self.index.get_current_count() + max(0, X.shape[0] - free)
        if need > self.index.get_max_elements():
            self.index.resize_index(max(need, 2 * self.index.get_max_elements()))
        self.index.add_items(X, np.asarray(ids, dtype=np.int64), num_threads=self.threads, replace_deleted=reuse)
        self._free = max(0, free - X.shape[0])

    def remove(self, ids: np.ndarray) -> None:
        ids = np.asarray(ids, dtype=np.int64).tolist()
        for label in ids:
            self.index.mark_deleted(label)
        self._free += len(ids)

    def search_skip_reason(self, search: dict[str, Any], k: int) -> str | None:
        if search["ef"] < k:
            return f"ef={search['ef']} < k={k}: hnswlib searches with ef=k"
        return None

    def _apply_search_params(self, params: dict[str, Any]) -> None:
        if self.index is not None:
            self.index.set_ef(params["ef"])

    def set_threads(self, threads: int) -> None:
        super().set_threads(threads)
        if self.index is not None:
            self.index.set_num_threads(self.threads)

    def query(self, Q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        I, D = self.index.knn_query(Q, k=k, num_threads=self.threads)
        return D, I

    filter_support = "hnswlib knn_query(filter=callable): a Python call per visited node"

    def filtered_query(self, Q: np.ndarray, k: int, bitmap: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        allowed = bitmap.tobytes()  # bytes indexing is the cheapest test a Python callable can make

        def accept(i: int) -> bool:
            return (allowed[i >> 3] >> (i & 7)) & 1 == 1

        try:
            I, D = self.index.knn_query(Q, k=k, num_threads=self.threads, filter=accept)
        except RuntimeError:  # fewer than k allowed items reachable: hnswlib refuses the whole batch
            return self._filtered_rows(Q, k, accept)
        return D, I

    def _filtered_rows(self, Q: np.ndarray, k: int, accept) -> tuple[np.ndarray, np.ndarray]:
        """Row by row, each padded with -1 / inf where hnswlib found fewer than k allowed items (it raises)."""
        D = np.full((Q.shape[0], k), np.inf, dtype=np.float32)
        I = np.full((Q.shape[0], k), -1, dtype=np.int64)
        for row in range(Q.shape[0]):
            for kk in range(k, 0, -1):
                try:
                    ids, dist = self.index.knn_query(Q[row : row + 1], k=kk, num_threads=1, filter=accept)
                except RuntimeError:
                    continue
                I[row, :kk], D[row, :kk] = ids[0], dist[0]
                break
        return D, I

    def single_query(self, Q: np.ndarray, k: int):
        return copied_pairs(partial(self.index.knn_query, k=k, num_threads=self.threads), Q.shape[0], swap=True)

    def convert(self, D: np.ndarray, I: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        I = I.astype(np.int64)
        if self.metric == "euclidean":
            D = from_squared_l2(self.metric, D)
        elif self.metric == "ip":
            D = D - 1.0  # hnswlib 'ip' is 1 - dot; ours is -dot
        return self.pad(D, I)

    def save(self, path: str | os.PathLike) -> None:
        self.index.save_index(os.fspath(path))

    def load(self, path: str | os.PathLike) -> None:
        import hnswlib

        index = hnswlib.Index(space=SPACES[self.metric], dim=self.dim)
        index.load_index(os.fspath(path), allow_replace_deleted=self.params.get("replace_deleted", False))
        index.set_num_threads(self.threads)
        self.index = index
        self._built = True
        self._apply_search_params(self.search_config or self.validate_search_params({}))
