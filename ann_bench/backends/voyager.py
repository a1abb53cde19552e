"""Hierarchical Navigable Small World graphs through Spotify Voyager: build M, ef_construction,
storage_data_type; search ef (Voyager's query_ef).

A fourth implementation of ``hnsw``: Voyager is Spotify's successor to Annoy, an HNSW index derived from
hnswlib, with reduced-precision storage. Its own defaults are M 12, ef_construction 200, query ef 10.

Native distances, measured with voyager 2.2.3 (it reports itself as 2.1.0) and converted in
:meth:`convert`: ``Space.Euclidean`` is squared L2 (square-rooted for ``euclidean``), ``Space.Cosine`` is
1 - cos (``angular`` as is; Voyager normalises each vector on insertion, a zero vector stays at distance 1
from everything), ``Space.InnerProduct`` is 1 - dot (``ip`` = -dot, so 1 is subtracted).

Storage (``storage_data_type``), measured:

- ``Float32``: the vectors as given.
- ``E4M3``: an 8-bit float (4 exponent, 3 mantissa bits; ~6 % relative rounding), a quarter of the vector
  bytes; values outside [-448, 448] make the build fail.
- ``Float8``: 8-bit fixed point, round(127 x) / 127, a quarter of the vector bytes; values outside [-1, 1]
  make the build fail, so it suits ``angular`` (vectors normalised before quantising) or data already
  scaled into [-1, 1].

On a clustered synthetic 10k set (M 16, ef_construction 200, ef 200), id recall@10 for angular was
1.0 / 0.66 / 0.90 (Float32 / E4M3 / Float8) at dim 16 and 1.0 / 0.70 / 0.82 at dim 96; euclidean with
E4M3 0.89 at both (Float8 refused: the data leave [-1, 1]). The index took 2.12 / 1.64 / 1.64 MB at dim
16 and 5.32 / 2.44 / 2.44 MB at dim 96. Distances of a reduced-precision index are those to the stored
(rounded) vectors.

Traps (measured):

- ``query`` with ``query_ef < k`` raises RuntimeError (unlike hnswlib, which raises ef to k): such search
  configurations are skipped.
- ``query`` raises RecallError when it finds fewer than k neighbours, e.g. for k > n: with k > n we ask for
  n and pad with -1 / +inf.
- ``add_items`` of zero vectors crashes the process (segmentation fault): an empty build is refused first.
- M = 1 fails ("addPoint failed to allocate linklist"); M starts at 2.

Threads and seeds: ``add_items`` and ``query`` take ``num_threads`` per call (their default, -1, would use
every core; we pass ``threads``). ``seed`` is Voyager's ``random_seed`` (level draws): a one-thread build is
deterministic for a seed and changes with it; a multi-threaded build is not deterministic. Search threads
do not change results.

``save`` writes one file (``Index.save``, with the parameters as metadata); ``load`` reads it
(``Index.load``) and checks the space, dimension, storage type, M and ef_construction against this
instance. ``index_bytes`` is the saved file's size.
"""

from __future__ import annotations

import os
from functools import partial
from typing import Any

import numpy as np

from ann_bench.backends.base import UPDATES_BOTH, Capabilities, Index, Param, SingleQuery
from ann_bench.distances import from_squared_l2
from ann_bench.errors import InputError

VOYAGER_SPACES = {"euclidean": "Euclidean", "angular": "Cosine", "ip": "InnerProduct"}
STORAGE_TYPES = ("Float32", "E4M3", "Float8")


class VoyagerHNSW(Index):
    name = "hnsw"
    impl = "voyager"
    requires = ("voyager",)
    install_hint = 'pip install -e ".[graphs]"'
    description = "hierarchical navigable small world graph (Spotify Voyager), Float32/E4M3/Float8 storage"
    capabilities = Capabilities(notes=["a multi-threaded build is not deterministic",
                                       "storage_data_type=Float8 needs vectors in [-1, 1] (angular: always)"])
    build_params = (
        Param("M", int, 12, "graph degree (links per node per layer; 2*M on layer 0)", min=2, max=512),
        Param("ef_construction", int, 200, "candidate list size while inserting", min=1, max=100_000),
        Param("storage_data_type", str, "Float32", "how vectors are stored (E4M3, Float8: 8 bits a component, "
              "smaller index, lower accuracy; Float8 holds [-1, 1] only)", choices=STORAGE_TYPES),
    )
    search_params = (Param("ef", int, 10, "query_ef: candidate list size while searching (>= k)",
                           min=1, max=1_000_000),)
    build_grid = {"M": [16, 32], "ef_construction": [200], "storage_data_type": ["Float32"]}
    search_grid = {"ef": [10, 20, 40, 80, 160, 320, 640]}
    effort_params = {"ef": +1}

    def __init__(self, metric: str, dim: int, threads: int = 1, seed: int = 0, **build_params: Any):
        super().__init__(metric, dim, threads, seed, **build_params)
        self.index = None
        self.n = 0

    def _kinds(self):
        import voyager

        return (getattr(voyager.Space, VOYAGER_SPACES[self.metric]),
                getattr(voyager.StorageDataType, self.params["storage_data_type"]))

    def build(self, X: np.ndarray) -> None:
        import voyager

        X = np.ascontiguousarray(X, dtype=np.float32)
        if X.ndim != 2 or X.shape[1] != self.dim or X.shape[0] == 0:
            raise InputError(f"{self.label()}: expected vectors of shape (n >= 1, {self.dim}), got {X.shape}")
        space, storage = self._kinds()
        index = voyager.Index(space, self.dim, M=self.params["M"], ef_construction=self.params["ef_construction"],
                              random_seed=self.seed, max_elements=X.shape[0], storage_data_type=storage)
        try:
            index.add_items(X, num_threads=self.threads)  # ids 0 .. n-1, in order
        except ValueError as exc:  # a value the storage type cannot hold
            raise InputError(f"{self.label()}: storage_data_type={self.params['storage_data_type']} cannot "
                             f"store these vectors ({exc}); use Float32, or scale the vectors") from None
        self.index = index
        self.n = X.shape[0]
        self._built = True

    updates = UPDATES_BOTH
    update_notes = ("add_items with ids (the index grows on its own); mark_deleted: the item stays in the graph, "
                    "takes its memory and is never returned (Voyager has no replace of deleted slots in its Python "
                    "API)")

    def add(self, X: np.ndarray, ids: np.ndarray) -> None:
        self.check_shape(X)
        self.index.add_items(np.ascontiguousarray(X, dtype=np.float32),
                             ids=np.asarray(ids, dtype=np.int64).tolist(), num_threads=self.threads)
        self.n += X.shape[0]

    def remove(self, ids: np.ndarray) -> None:
        for label in np.asarray(ids, dtype=np.int64).tolist():
            self.index.mark_deleted(label)
        self.n -= len(ids)

    def search_skip_reason(self, search: dict[str, Any], k: int) -> str | None:
        if search["ef"] < k:
            return f"ef={search['ef']} < k={k}: voyager refuses query_ef < k"
        return None

    def _apply_search_params(self, params: dict[str, Any]) -> None:
        pass  # ef is passed to each query

    def query(self, Q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(D, I), both (nq, k): Voyager's native distances and uint64 ids; for k > n, (nq, n) padded to k."""
        ef = self.search_config.get("ef", self.search_params[0].default)
        if k <= self.n:
            I, D = self.index.query(Q, k, num_threads=self.threads, query_ef=ef)
            return D, I
        # Voyager raises RecallError when it finds fewer than k: ask for all n, then pad.
        I, D = self.index.query(Q, self.n, num_threads=self.threads, query_ef=max(ef, self.n))
        nq = Q.shape[0]
        D = np.concatenate([D, np.full((nq, k - self.n), np.inf, dtype=np.float32)], axis=1)
        I = np.concatenate([I.astype(np.int64), np.full((nq, k - self.n), -1, dtype=np.int64)], axis=1)
        return D, I

    def single_query(self, Q: np.ndarray, k: int) -> SingleQuery:
        """``query`` on each row, its answer copied out and the result dropped at once: each result voyager
        returns pins a buffer of ~1.4 kB (measured, 20k x 128), and keeping 10,000 of them cost 3-7 % of the
        single-query QPS against a loop that drops them (benchmarks/harness_overhead.py)."""
        if k > self.n:
            return super().single_query(Q, k)
        ef = self.search_config.get("ef", self.search_params[0].default)
        I = np.empty((Q.shape[0], k), dtype=np.uint64)
        D = np.empty((Q.shape[0], k), dtype=np.float32)

        def keep(i: int, result: tuple[np.ndarray, np.ndarray]) -> None:
            I[i], D[i] = result[0][0], result[1][0]

        return SingleQuery(partial(self.index.query, k=k, num_threads=self.threads, query_ef=ef),
                           lambda kept: (D, I), keep)

    def convert(self, D: np.ndarray, I: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        I = np.asarray(I).astype(np.int64)
        D = np.where(I < 0, 0, np.asarray(D, dtype=np.float32))
        if self.metric == "euclidean":
            D = from_squared_l2(self.metric, D)
        elif self.metric == "ip":
            D = D - 1.0  # voyager's InnerProduct is 1 - dot; ours is -dot
        return self.pad(D, I)

    def save(self, path: str | os.PathLike) -> None:
        self.index.save(os.fspath(path))

    def load(self, path: str | os.PathLike) -> None:
        import voyager

        index = voyager.Index.load(os.fspath(path))
        space, storage = self._kinds()
        expected = {
            "metric space": (index.space, space),
            "dim": (index.num_dimensions, self.dim),
            "storage_data_type": (index.storage_data_type, storage),
            "M": (index.M, self.params["M"]),
            "ef_construction": (index.ef_construction, self.params["ef_construction"]),
        }
        for what, (found, wanted) in expected.items():
            if found != wanted:
                raise InputError(f"{self.label()}: {os.fspath(path)!r} was built with {what}="
                                 f"{getattr(found, 'name', found)} (not {getattr(wanted, 'name', wanted)}); build "
                                 f"it again with these parameters")
        self.index = index
        self.n = int(index.num_elements)
        self._built = True
