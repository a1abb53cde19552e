"""Chroma, embedded: a ``chromadb.PersistentClient`` on a directory, one collection, its HNSW index.

Registered as ``hnsw[chroma]`` (``--backend hnsw:chroma``), the Chroma implementation of the algorithm beside
hnswlib, faiss, usearch. The parameters take the names
the other ``hnsw`` implementations use: ``M`` is Chroma's ``max_neighbors`` (``hnsw:M``), ``ef_construction``
its ``ef_construction`` (``hnsw:construction_ef``), ``ef`` its ``ef_search`` (``hnsw:search_ef``), set through
the collection's ``configuration``. Chroma's local collections offer no other index type wrapped here (its
configuration also names SPANN, not checked), no scalar quantisation and no exact scan.

Measured with chromadb 1.5.9 (tests/test_backend_chroma.py checks each):

- Native distances: ``l2`` is squared L2 (square-rooted for ``euclidean``), ``cosine`` 1 - cos (``angular`` as
  is), ``ip`` 1 - dot (``ip`` = -dot: 1 is subtracted).
- **``collection.modify(configuration={"hnsw": {"ef_search": ...}})`` is stored but not used by the client
  that made it**: its loaded index keeps searching with the old ef (recall@10 0.328 before and after raising
  ef 1 -> 200 on 3k x 16, M 4; 0.886 once the client was reopened). So a new ``ef`` is applied by modify, close
  and reopen, then one query to load the index from disk, all outside the timed region.
- ``add`` takes at most ``client.get_max_batch_size()`` records a call (5,461 here): inserted in such chunks.
- Ids are strings (``str(i)``, turned back into ints after the timed call); the query returns Python lists of
  lists, which is what a user gets and pays for.
- Threads: the HNSW ``num_threads`` setting is accepted at creation but does not appear in the stored
  configuration; queries run on Chroma's own pool. ``--threads`` is not honoured; no seed.
- ``client.close()`` stops the client's system (it starts no Python threads: measured, only the main thread is
  left); ``close`` calls it before the directory goes.

Engine alone: not timed (no ``qps_engine``). Under ``Collection.query`` (argument checks, a telemetry event, the
``QueryResult`` of Python lists) the client calls its Rust bindings, ``chromadb_rust_bindings.Bindings.query``
(typed in ``chromadb_rust_bindings.pyi``), which run the whole search in Chroma's Rust frontend; but they are reached
only through private attributes (``client._server.bindings``) and are not a documented API, and Chroma has no
public segment or HNSW-index API of its own below the client (the hnswlib it uses is compiled into the bindings).
Timed once through those private bindings (20k x 64 synthetic, M 16, ef 40, a 2-core VM), they gave 6 % more batch
QPS and 25 % more single-query QPS than ``Collection.query``: the Python client's share is small.

Build = ``add`` of every vector (``insert_s``; Chroma indexes while adding) + closing and reopening the client
(``index_s``), so that searches run on the index as read back from disk, as after any restart. ``index_bytes`` is the directory on disk:
``chroma.sqlite3`` (every vector also in its log and table) + the HNSW files. Save/load: the directory as one
tar (see :mod:`._dbdir`).
"""

from __future__ import annotations

from functools import partial
from typing import Any

import numpy as np

from ann_bench.backends._dbdir import DatabaseIndex
from ann_bench.backends.base import Capabilities, Param, SingleQuery
from ann_bench.distances import from_squared_l2

CHROMA_METRICS = {"euclidean": "l2", "angular": "cosine", "ip": "ip"}
COLLECTION = "vectors"


class ChromaHNSW(DatabaseIndex):
    name = "hnsw"
    impl = "chroma"
    kind = "chroma"
    requires = ("chromadb",)
    install_hint = 'pip install -e ".[dbs]"'
    description = "hierarchical navigable small world graph in Chroma (embedded PersistentClient)"
    capabilities = Capabilities(threads=False, deterministic=False, notes=[
        "runs through Chroma's client; its own thread pool (--threads not honoured)",
        "build = insert + index flush (build_times); index size = the database directory on disk"])
    build_params = (
        Param("M", int, 16, "links per node per layer (Chroma's max_neighbors, hnsw:M)", min=2, max=512),
        Param("ef_construction", int, 100, "candidate list size while inserting (hnsw:construction_ef)",
              min=1, max=100_000),
    )
    search_params = (Param("ef", int, 100, "candidate list size while searching (ef_search, hnsw:search_ef)",
                           min=1, max=1_000_000),)
    build_grid = {"M": [16, 32], "ef_construction": [200]}
    search_grid = {"ef": [10, 20, 40, 80, 160, 320, 640]}
    effort_params = {"ef": +1}
    no_engine = ("no public layer under Collection.query: the Rust bindings it calls (chromadb_rust_bindings."
                 "Bindings.query, reached as the client's private _server.bindings) are not Chroma's public API")

    def __init__(self, metric: str, dim: int, threads: int = 1, seed: int = 0, **build_params: Any):
        super().__init__(metric, dim, threads, seed, **build_params)
        self.client = self.collection = None
        self._ef: int | None = None  # the ef the open client searches with
        self._held: list = [None, None]  # [directory, its open client]

    def _connect(self) -> None:
        import chromadb
        from chromadb.config import Settings

        self.client = chromadb.PersistentClient(path=str(self.dir.path),
                                                settings=Settings(anonymized_telemetry=False))
        if self._held[0] is not self.dir:  # one closer per directory, closing whichever client is open then
            self._held = [self.dir, self.client]
            self.dir.on_close(partial(_close_held, self._held))
        self._held[1] = self.client

    def _insert(self, X: np.ndarray) -> None:
        self._connect()
        p = self.params
        self.collection = self.client.create_collection(COLLECTION, configuration={"hnsw": {
            "space": CHROMA_METRICS[self.metric], "max_neighbors": p["M"], "ef_construction": p["ef_construction"],
            "ef_search": self.validate_search_params({})["ef"]}})
        self._ef = self.validate_search_params({})["ef"]
        step = self.client.get_max_batch_size()
        for start in range(0, len(X), step):
            stop = min(start + step, len(X))
            self.collection.add(ids=[str(i) for i in range(start, stop)], embeddings=X[start:stop])
            if self.progress is not None:
                self.progress(stop, len(X))

    def _make_index(self) -> None:
        self._reopen()

    def _open(self) -> None:
        self._connect()
        self.collection = self.client.get_collection(COLLECTION)
        self._ef = self.collection.configuration["hnsw"]["ef_search"]

    def _reopen(self) -> None:
        self.client.close()
        self._open()

    def _apply_search_params(self, params: dict[str, Any]) -> None:
        if self.collection is None or params["ef"] == self._ef:
            return
        self.collection.modify(configuration={"hnsw": {"ef_search": params["ef"]}})
        self._reopen()  # the open client keeps its old ef (see the module's docstring)
        self.collection.query(query_embeddings=np.zeros((1, self.dim), np.float32), n_results=1, include=[])

    def query(self, Q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(D, I), both (nq, k): Chroma's distances and ids, padded where fewer than k came back."""
        return _rows(self.collection.query(query_embeddings=Q, n_results=k, include=["distances"]), k)

    def single_query(self, Q: np.ndarray, k: int) -> SingleQuery:
        """Each ``collection.query`` timed; its lists of string ids turned into arrays afterwards."""
        def finish(kept):
            rows = [_rows(r, k) for r in kept]
            return np.concatenate([r[0] for r in rows]), np.concatenate([r[1] for r in rows])

        return SingleQuery(lambda q: self.collection.query(query_embeddings=q, n_results=k, include=["distances"]),
                           finish)

    def convert(self, D: np.ndarray, I: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        D = np.where(I < 0, 0, D)
        if self.metric == "euclidean":
            D = from_squared_l2(self.metric, np.maximum(D, 0))
        elif self.metric == "ip":
            D = D - 1.0  # Chroma's ip is 1 - dot; ours is -dot
        return self.pad(D, I)


def _close_held(held: list) -> None:
    held[1].close()


def _rows(result, k: int) -> tuple[np.ndarray, np.ndarray]:
    """A Chroma QueryResult (lists of string ids and distances per query) into (D, I) (nq, k), padded."""
    nq = len(result["ids"])
    D = np.full((nq, k), np.inf, dtype=np.float32)
    I = np.full((nq, k), -1, dtype=np.int64)
    for row, (ids, dists) in enumerate(zip(result["ids"], result["distances"])):
        I[row, : len(ids)] = np.asarray(ids, dtype=np.int64)
        D[row, : len(dists)] = dists
    return D, I
