"""Spotify Annoy: a forest of random-projection trees (build n_trees; search search_k).

Each tree splits the data by hyperplanes between two random points, down to leaves of about ``dim``
points. A query walks all trees at once with one priority queue until ``search_k`` candidates have been
collected, then ranks them exactly. Larger ``n_trees`` buys accuracy with memory and build time, larger
``search_k`` with query time; annoy's own default search_k is n_trees * k.

- Metrics and native distances: ``euclidean`` -> annoy 'euclidean' (L2); ``angular`` -> annoy 'angular',
  which returns sqrt(2 - 2 cos), turned into 1 - cos = d^2 / 2; ``ip`` -> annoy 'dot', which returns the
  dot product, negated.
- Annoy has no batch add: rows are added one at a time, as numpy rows (a ``.tolist()`` per row is slower).
  ``add_item`` after ``build`` raises nothing and the item is never found (annoy 1.17.3: it even counts
  in ``get_n_items``), so the index is created, filled and built in one go.
- ``set_seed`` precedes the first ``add_item``. annoy seeds thread t of a multi-threaded build with
  seed + t, so the forest is reproducible for a given (seed, build threads) but changes with the count.
- Queries are one ``get_nns_by_vector`` call per query; annoy releases the GIL inside it (measured: 2
  threads ran a batch 2.0x faster than 1), so with threads > 1 a batch is split across a thread pool.
- ``save`` writes the nodes and re-opens the file memory-mapped (annoy's behaviour); ``load`` maps it.
  ``index_bytes`` is the saved file's size (the base class's default).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from ann_bench.backends.base import Capabilities, Index, Param
from ann_bench.errors import InputError

ANNOY_METRICS = {"euclidean": "euclidean", "angular": "angular", "ip": "dot"}


class AnnoyForest(Index):
    name = "annoy"
    impl = "annoy"
    requires = ("annoy",)
    install_hint = "pip install annoy"
    description = "forest of random-projection trees (Spotify Annoy)"
    capabilities = Capabilities(notes=["the forest depends on the number of build threads"])
    build_params = (Param("n_trees", int, 100, "random-projection trees in the forest", min=1, max=100_000),)
    search_params = (Param("search_k", int, 10_000, "candidates collected over all trees before ranking "
                           "(annoy's default: n_trees * k; annoy takes a C int)", min=1, max=2**31 - 1),)
    build_grid = {"n_trees": [50, 100]}
    search_grid = {"search_k": [100, 200, 500, 1000, 2000, 5000, 10_000, 20_000, 50_000, 100_000]}
    effort_params = {"search_k": +1}

    def __init__(self, metric: str, dim: int, threads: int = 1, seed: int = 0, **build_params: Any):
        super().__init__(metric, dim, threads, seed, **build_params)
        self.index = None
        self._pool: ThreadPoolExecutor | None = None

    def build(self, X: np.ndarray) -> None:
        from annoy import AnnoyIndex

        X = np.ascontiguousarray(X, dtype=np.float32)
        if X.ndim != 2 or X.shape[1] != self.dim:
            raise InputError(f"{self.label()}: expected vectors of shape (n, {self.dim}), got {X.shape}")
        index = AnnoyIndex(self.dim, ANNOY_METRICS[self.metric])
        index.set_seed(self.seed)  # before the first add_item
        for i in range(X.shape[0]):
            index.add_item(i, X[i])
        index.build(self.params["n_trees"], n_jobs=self.threads)
        self.index = index
        self._built = True

    def _apply_search_params(self, params: dict[str, Any]) -> None:
        pass  # search_k is passed to each query

    def set_threads(self, threads: int) -> None:
        super().set_threads(threads)
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def _run(self, Q: np.ndarray, k: int, search_k: int, D: np.ndarray, I: np.ndarray) -> None:
        """Query each row of Q (m, dim) into the rows of D (m, k) float32 and I (m, k) int64 (pre-padded)."""
        get = self.index.get_nns_by_vector
        for row in range(Q.shape[0]):
            ids, dists = get(Q[row], k, search_k, True)
            found = len(ids)
            I[row, :found] = ids
            D[row, :found] = dists

    def query(self, Q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(D, I), both (nq, k): annoy's native distances and ids, -1 / +inf where fewer were returned."""
        Q = np.ascontiguousarray(Q, dtype=np.float32)
        nq = Q.shape[0]
        search_k = self.search_config.get("search_k", self.search_params[0].default)
        D = np.full((nq, k), np.inf, dtype=np.float32)
        I = np.full((nq, k), -1, dtype=np.int64)
        workers = min(self.threads, nq)
        if workers <= 1:
            self._run(Q, k, search_k, D, I)
            return D, I
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix="annoy")
        bounds = np.linspace(0, nq, workers + 1).astype(int)
        jobs = [self._pool.submit(self._run, Q[a:b], k, search_k, D[a:b], I[a:b])
                for a, b in zip(bounds[:-1], bounds[1:])]
        for job in jobs:
            job.result()
        return D, I

    def convert(self, D: np.ndarray, I: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.metric == "angular":
            D = np.square(D) / 2  # sqrt(2 - 2 cos) -> 1 - cos
        elif self.metric == "ip":
            D = -D
        return self.pad(D, I)

    def save(self, path: str | os.PathLike) -> None:
        if not self.index.save(os.fspath(path)):
            raise OSError(f"annoy could not save the index to {os.fspath(path)!r}")

    def load(self, path: str | os.PathLike) -> None:
        from annoy import AnnoyIndex

        index = AnnoyIndex(self.dim, ANNOY_METRICS[self.metric])
        index.load(os.fspath(path))  # memory-mapped; raises OSError if the file is missing or unreadable
        self.index = index
        self._built = True
