"""Hierarchical Navigable Small World graphs through faiss IndexHNSWFlat (build M, ef_construction; search ef).

The second implementation of ``hnsw``, beside hnswlib (the default): the same algorithm, another code base.

- ``ef_construction`` is set on ``index.hnsw.efConstruction`` before ``add``. faiss's own default is 40,
  which plateaus near 0.98 recall@10 on clustered data however large ``ef`` gets; ours is 200, as hnswlib's.
- faiss does not raise ``efSearch`` to k the way hnswlib raises ef: it sizes its candidate queue
  max(efSearch, k) but stops the search by ``efSearch`` (measured with faiss 1.15.1: on 20k x 64 Gaussian
  vectors, k=10, efSearch 1, 5, 9 and 10 give recall@10 0.07, 0.22, 0.31 and 0.33 and different ids, always
  k results). So ``ef < k`` is a real, cheaper and less accurate configuration here and is not skipped.
- Levels are drawn from faiss's own generator (seed 12345, not settable from Python): with one build thread
  the graph is deterministic, but ``seed`` does not change it.

Distances: METRIC_L2 (squared, square-rooted for ``euclidean``, halved for ``angular`` on normalised
vectors) or METRIC_INNER_PRODUCT (negated for ``ip``); see :class:`FaissIndex`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ann_bench.backends._faiss import FaissIndex, import_faiss
from ann_bench.backends.base import UPDATES_INSERT, Capabilities, Index, Param
from ann_bench.distances import normalized


class FaissHNSW(FaissIndex):
    name = "hnsw"
    description = "hierarchical navigable small world graph (faiss IndexHNSWFlat)"
    capabilities = Capabilities(
        notes=["the graph does not depend on the seed (faiss draws levels with its own fixed seed)",
               "a multi-threaded build is not deterministic"],
    )
    build_params = (
        Param("M", int, 16, "graph degree (links per node per layer; 2*M on layer 0)", min=2, max=512),
        Param("ef_construction", int, 200, "candidate list size while inserting (faiss default: 40)",
              min=1, max=100_000),
    )
    search_params = (Param("ef", int, 16, "efSearch: candidate list size while searching", min=1, max=1_000_000),)
    build_grid = {"M": [16, 32], "ef_construction": [200]}
    search_grid = {"ef": [10, 20, 40, 80, 160, 320, 640]}
    effort_params = {"ef": +1}

    def _make_index(self, X: np.ndarray):
        """IndexHNSWFlat over the prepared vectors X (n, dim) float32."""
        faiss = import_faiss()
        index = faiss.IndexHNSWFlat(self.dim, self.params["M"], self.faiss_metric())
        index.hnsw.efConstruction = self.params["ef_construction"]  # must precede add
        index.add(X)
        return index

    def _search_parameters(self, sel):
        return import_faiss().SearchParametersHNSW(sel=sel, efSearch=int(self.search_config["ef"]))

    def _apply_search_params(self, params: dict[str, Any]) -> None:
        if self.index is not None:
            self.index.hnsw.efSearch = params["ef"]
        self._live_params = None

    # ---- updates: add, and deletions as a search-time filter ---------------------------------------------------
    updates = UPDATES_INSERT
    update_notes = ("add (faiss numbers items in insertion order: labels must be consecutive); IndexHNSWFlat has no "
                    "remove_ids, so a deleted item stays in the graph and every later search passes an "
                    "IDSelectorBitmap of the live items (SearchParametersHNSW(sel=...)): the deleted item's memory "
                    "stays")
    _live: np.ndarray | None = None  # (ntotal,) bool once something was removed
    _live_params = None  # the search parameters carrying the live items' bitmap (kept alive with it)

    def add(self, X: np.ndarray, ids: np.ndarray) -> None:
        self.check_shape(X)
        ids = np.asarray(ids, dtype=np.int64)
        n0 = self.index.ntotal
        if not np.array_equal(ids, np.arange(n0, n0 + X.shape[0])):
            raise ValueError(f"{self.label()} numbers items in insertion order: labels must be {n0}.."
                             f"{n0 + X.shape[0] - 1}")
        self.index.add(self.prepare(X))
        if self._live is not None:
            self._live = np.concatenate([self._live, np.ones(X.shape[0], dtype=bool)])
            self._live_params = None

    def remove(self, ids: np.ndarray) -> None:
        if self._live is None:
            self._live = np.ones(self.index.ntotal, dtype=bool)
        self._live[np.asarray(ids, dtype=np.int64)] = False
        self._live_params = None

    def _filter_params(self):
        """SearchParametersHNSW with the live items' bitmap, made once per change (outside the timed region's
        loop: a user keeps it too)."""
        if self._live_params is None:
            faiss = import_faiss()
            self._bitmap = np.packbits(self._live, bitorder="little")
            sel = faiss.IDSelectorBitmap(self.index.ntotal, faiss.swig_ptr(self._bitmap))
            self._live_params = (sel, self._search_parameters(sel))
        return self._live_params[1]

    def query(self, Q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        if self._live is None:
            return super().query(Q, k)
        if self.metric == "angular":
            Q = normalized(Q)
        return self.index.search(Q, k, params=self._filter_params())

    def single_query(self, Q: np.ndarray, k: int):
        if self._live is None:
            return super().single_query(Q, k)
        self._filter_params()
        return Index.single_query(self, Q, k)  # query itself: it carries the filter
