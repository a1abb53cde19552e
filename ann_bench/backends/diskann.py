"""Vamana graphs through Microsoft DiskANN's Python package ``diskannpy`` (in-memory index).

Vamana (Subramanya et al. 2019) inserts every point with a greedy search of ``build_complexity`` candidates
(L) from the medoid, then prunes its neighbour list with the alpha rule — a candidate is dropped when a
neighbour already kept is closer to it by a factor ``alpha`` than the new point is — down to ``graph_degree``
(R) edges; reverse edges are added and pruned the same way. A search is a greedy best-first walk keeping the
``complexity`` (L_search) nearest candidates found; larger is slower and more accurate.

- Built by ``diskannpy.build_memory_index`` into a temporary directory, searched through
  ``StaticMemoryIndex.batch_search`` (one call per batch, ``num_threads`` = this index's thread count).
- Native distances, measured: ``euclidean`` -> 'l2', squared L2 (square-rooted); ``angular`` -> 'cosine',
  which normalises the stored vectors but not the query and returns 1 - |q| cos, so :meth:`query` normalises
  the queries (a copy, as the faiss backends do) and the result is 1 - cos as is; ``ip`` -> 'mips', which
  returns the dot product (negated).
- ``complexity`` < k: diskannpy warns and searches with k, so such configurations are skipped as duplicates.
- DiskANN sizes each search thread's scratch space by the complexity the index was loaded with, and clears it
  per query: loaded for L = 1,000 a search at L = 20 ran 5x slower than loaded for 20 (1,000 queries, 5,000 x
  16). So the index is (re)loaded with the search's own complexity when the search parameters change
  (outside the timed region), as if each configuration were measured alone.
- k larger than the number of vectors: DiskANN fills the missing places with uninitialised memory, so the
  search asks for at most n neighbours and pads with -1 / +inf.
- No seed in diskannpy. With one build thread the graph is the same every time (byte-identical files,
  20,000 x 32); with 2 threads DiskANN inserts in parallel and each build gave another graph (measured).
  Searches return the same answers for any thread count; a batch of at most 4 queries per thread runs on
  one thread (hnswlib's rule: waking an OpenMP team for one query cost more than the query — 2 threads ran
  single queries 3x slower than 1 on a 2-core machine).
- It prints progress lines on stdout and stderr from C++; they are silenced while building and loading.
- ``save`` packs the index directory (graph ``ann``, vectors ``ann.data``, ``ann_metadata.bin``; the copy of
  the input vectors that diskannpy writes first is deleted after the build) into ONE uncompressed tar with a
  manifest; ``load`` unpacks it into a temporary directory that lives as long as this object. A file built
  with other settings is refused. ``index_bytes`` is the saved file's size.
"""

from __future__ import annotations

import os
from functools import partial
from typing import Any

import numpy as np

from ann_bench.backends._packdir import WorkDir, check_manifest, native_output_silenced, pack_dir, unpack_dir
from ann_bench.backends.base import Capabilities, Index, Param, SingleQuery, stack_results
from ann_bench.distances import normalized
from ann_bench.errors import InputError

DISKANN_METRICS = {"euclidean": "l2", "angular": "cosine", "ip": "mips"}
PREFIX = "ann"
_FORMAT = 1


class DiskannVamana(Index):
    name = "vamana"
    impl = "diskannpy"
    requires = ("diskannpy",)
    install_hint = "pip install --no-deps diskannpy  (its metadata pins numpy==1.25; it runs with numpy 2)"
    description = "Vamana graph, in memory (Microsoft DiskANN)"
    capabilities = Capabilities(notes=["diskannpy has no seed; a build with more than one thread gives "
                                        "another graph each time"])
    build_params = (
        Param("graph_degree", int, 64, "maximum out-degree R of the graph", min=1, max=4096),
        Param("build_complexity", int, 100, "candidate list size L while inserting", min=1, max=100_000),
        Param("alpha", float, 1.2, "pruning factor (>= 1): larger keeps more long edges", min=1.0, max=10.0),
    )
    search_params = (Param("complexity", int, 10, "candidate list size L_search while searching (>= k)",
                           min=1, max=1_000_000),)
    build_grid = {"graph_degree": [32, 64], "build_complexity": [125], "alpha": [1.2]}
    search_grid = {"complexity": [10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 110, 120, 160, 200]}
    effort_params = {"complexity": +1}

    def __init__(self, metric: str, dim: int, threads: int = 1, seed: int = 0, **build_params: Any):
        super().__init__(metric, dim, threads, seed, **build_params)
        self.index = None
        self._dir: WorkDir | None = None
        self._n = 0
        self._loaded_complexity = 0

    @classmethod
    def check_data(cls, build: dict[str, Any], n: int, dim: int) -> None:
        if n < 2:
            raise InputError(f"{cls.label()}: needs at least 2 vectors, got {n}")

    def build(self, X: np.ndarray) -> None:
        import diskannpy

        X = np.ascontiguousarray(X, dtype=np.float32)
        if X.ndim != 2 or X.shape[1] != self.dim:
            raise InputError(f"{self.label()}: expected vectors of shape (n, {self.dim}), got {X.shape}")
        self.check_data(self.params, X.shape[0], self.dim)
        self.close()
        work = WorkDir(self, "ann-bench-diskann-")
        p = self.params
        with native_output_silenced():
            diskannpy.build_memory_index(
                X, distance_metric=DISKANN_METRICS[self.metric], index_directory=str(work.path),
                complexity=p["build_complexity"], graph_degree=p["graph_degree"], num_threads=self.threads,
                alpha=p["alpha"], index_prefix=PREFIX,
            )
        (work.path / f"{PREFIX}_vectors.bin").unlink(missing_ok=True)  # diskannpy's copy of X, not needed
        self._dir, self._n = work, X.shape[0]
        self._open()

    def _open(self, complexity: int | None = None) -> None:
        """(Re)load the index from its directory, its search scratch sized for ``complexity``."""
        import diskannpy

        if complexity is None:
            complexity = (self.search_config or self.validate_search_params({}))["complexity"]
        self.index = None  # free the previous copy before loading the next one
        with native_output_silenced():
            # num_threads=0: one scratch space per processor, so any later thread count finds one free
            self.index = diskannpy.StaticMemoryIndex(str(self._dir.path), num_threads=0,
                                                     initial_search_complexity=complexity, index_prefix=PREFIX)
        self._loaded_complexity = complexity
        self._built = True

    def _manifest(self) -> dict[str, Any]:
        return {"format": _FORMAT, "backend": self.label(), "metric": self.metric, "dim": self.dim,
                **self.params, "n": self._n}

    def save(self, path: str | os.PathLike) -> None:
        if self.index is None:
            raise InputError(f"{self.label()}: nothing to save; build or load the index first")
        pack_dir(self._dir.path, path, self._manifest())

    def load(self, path: str | os.PathLike) -> None:
        self.close()
        work = WorkDir(self, "ann-bench-diskann-")
        try:
            saved = unpack_dir(path, work.path, f"a {self.label()} index")
            check_manifest(self.label(), path, saved, {"format": _FORMAT, "backend": self.label(),
                                                       "metric": self.metric, "dim": self.dim, **self.params})
        except BaseException:
            work.close()
            raise
        self._dir, self._n = work, int(saved["n"])
        self._open()

    def close(self) -> None:
        """Drop the loaded index and remove its temporary directory (also done when this object is collected)."""
        self.index = None
        if self._dir is not None:
            self._dir.close()
            self._dir = None
        self._built = False

    def search_skip_reason(self, search: dict[str, Any], k: int) -> str | None:
        if search["complexity"] < k:
            return f"complexity={search['complexity']} < k={k}: diskannpy searches with complexity=k"
        return None

    def _apply_search_params(self, params: dict[str, Any]) -> None:
        if self.index is not None and params["complexity"] != self._loaded_complexity:
            self._open(params["complexity"])

    def query(self, Q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        Q = normalized(Q) if self.metric == "angular" else np.ascontiguousarray(Q, dtype=np.float32)
        self.check_shape(Q)
        complexity = self.search_config.get("complexity", self._loaded_complexity)
        found = min(k, self._n)
        threads = 1 if Q.shape[0] <= 4 * self.threads else self.threads  # hnswlib's rule (module docstring)
        I, D = self.index.batch_search(Q, found, max(complexity, found), threads)
        if found < k:  # diskann would return garbage past n: pad instead
            I = np.pad(I.astype(np.int64), ((0, 0), (0, k - found)), constant_values=-1)
            D = np.pad(D, ((0, 0), (0, k - found)), constant_values=np.inf)
        return D, I

    def single_query(self, Q: np.ndarray, k: int):
        """batch_search on each row, one thread; for angular, or k > n, ``query`` (normalising, padding)."""
        if self.metric == "angular" or k > self._n or Q.dtype != np.float32:
            return super().single_query(Q, k)
        self.check_shape(Q)
        complexity = max(self.search_config.get("complexity", self._loaded_complexity), k)
        return SingleQuery(partial(self.index.batch_search, k_neighbors=k, complexity=complexity, num_threads=1),
                           partial(stack_results, swap=True))

    def convert(self, D: np.ndarray, I: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        I = np.asarray(I).astype(np.int64)
        if self.metric == "euclidean":
            D = np.sqrt(np.maximum(D, 0))
        elif self.metric == "ip":
            D = -np.asarray(D)
        return self.pad(D, I)
