"""Milvus Lite, embedded: pymilvus' ``MilvusClient("<dir>/milvus.db")``, as its users open it.

Each index type is the ``milvus`` implementation of the algorithm it is (as for LanceDB): ``flat[milvus]``
(FLAT, exact), ``ivf[milvus]`` (IVF_FLAT) and ``hnsw[milvus]`` (HNSW), with the search parameters the other
implementations use: ``nprobe`` and ``ef``, as Milvus names them.

Measured with milvus-lite 3.2.2 and pymilvus 3.0.2 (tests/test_backend_milvus.py checks each):

- milvus-lite 3.x is a Python engine (faiss-cpu for its indexes) behind a gRPC server that pymilvus starts **in
  this process** on a free localhost port (``milvus_lite.server_manager``): every search is a gRPC round trip
  through the client, which is the cost a Milvus Lite user pays. It starts ~20 threads (the server's pool, one a
  collection); ``close`` stops them (``server_manager_instance.release_server``; ``MilvusClient.close`` alone
  leaves them running, measured) before the directory goes.
- Index types offered: FLAT (= BRUTE_FORCE), IVF_FLAT, IVF_SQ8, HNSW, HNSW_SQ, AUTOINDEX (= HNSW). **IVF_PQ is
  refused** ("reserved for a future phase"); there is no DISKANN, SCANN, GPU or binary index. IVF_SQ8 and
  HNSW_SQ are not wrapped yet.
- Native distances: ``L2`` is squared L2 (square-rooted for ``euclidean``), ``COSINE`` the cosine
  *similarity* (``angular`` = 1 - it), ``IP`` the dot product (``ip`` = -it).
- **Rows not yet flushed are searched by brute force, not by the index** (IVF_FLAT at nprobe 1 and HNSW at ef
  10 both gave recall 1.0 on 3k x 16 before a flush; 0.82 and 0.85 after): the build flushes after inserting,
  before ``create_index``.
- **Build parameters do not reach Milvus Lite through pymilvus**: pymilvus 3.0.2 sends ``add_index(params=...)``
  flattened into key-value pairs (``nlist=16``), while milvus-lite 3.2.2's gRPC translator reads only a JSON
  ``params`` pair, so every index is built with Milvus Lite's defaults: IVF_FLAT nlist = min(128, n), HNSW M 16,
  efConstruction 200 (measured: asked for nlist 16, nprobe 16 gave recall@10 0.82 and nprobe 128 gave 1.0).
  They are therefore not offered as parameters (no ``nlist``, ``M``, ``ef_construction``): a sweep over them
  would measure one index under several labels. Search parameters do arrive (nprobe 1 / 16 / 128: recall 0.17 /
  0.82 / 1.0).
- An index dropped without ``close()`` is garbage-collected like the others (its server stopped, its directory
  removed, tested): nothing pymilvus or milvus-lite keeps refers to it (``gc.get_referrers`` after a build, flush,
  batch and single searches, the engine's, a save, and a build that raised: only the caller's name).
- Threads: the engine's faiss calls use faiss's OpenMP pool; the client takes no thread count: ``--threads``
  is not honoured. No seed.

Engine alone (``engine_query``, the worker's ``qps_engine``): milvus-lite's own public Python API, ``MilvusLite``
and its ``Collection.search(query_vectors, top_k, metric_type, anns_field, output_fields, search_params)``, called on
the very engine the in-process server runs, with the list of lists of floats the server decodes a request into.
That removes pymilvus, protobuf and the localhost gRPC round trip. milvus-lite offers no public way to reach the
server's engine: its ``MilvusLite`` instance is taken from ``server_manager_instance._servers`` (a private dict;
where it is missing, e.g. another milvus-lite, the engine is not timed and the reason is given). A second
``MilvusLite`` on the directory is refused (it holds a ``flock`` on ``LOCK``). Same ids and distances as the client
(tested).

Build = insert of every vector and the flush (``insert_s``) + ``create_index`` and ``load_collection``
(``index_s``), in ``build_times``. ``index_bytes`` is the database directory on disk (the stored vectors,
the index files, Milvus Lite's manifest and write-ahead log). Save/load: the directory as one tar (:mod:`._dbdir`).
"""

from __future__ import annotations

import os
from functools import partial
from typing import Any

import numpy as np

from ann_bench.backends._dbdir import DatabaseIndex
from ann_bench.backends.base import Capabilities, Param, SingleQuery

MILVUS_METRICS = {"euclidean": "L2", "angular": "COSINE", "ip": "IP"}
COLLECTION = "vectors"
_INSERT_ROWS = 10_000  # rows per insert call (one gRPC message each)


class MilvusFlat(DatabaseIndex):
    name = "flat"
    impl = "milvus"
    kind = "milvus"
    requires = ("milvus_lite", "pymilvus")
    install_hint = 'pip install -e ".[dbs]"'
    description = "Milvus Lite FLAT (exact scan) through pymilvus' MilvusClient (embedded database)"
    capabilities = Capabilities(threads=False, deterministic=False, notes=[
        "runs through pymilvus and Milvus Lite's in-process gRPC server (--threads not honoured)",
        "build = insert + index creation (build_times); index size = the database directory on disk"])
    index_type = "FLAT"
    engine = "milvus-lite's own Collection.search, on the engine its in-process gRPC server runs"

    def __init__(self, metric: str, dim: int, threads: int = 1, seed: int = 0, **build_params: Any):
        super().__init__(metric, dim, threads, seed, **build_params)
        self.client = self._engine = None

    def _connect(self) -> None:
        from milvus_lite.server_manager import server_manager_instance
        from pymilvus import MilvusClient

        uri = str(self.dir.path / "milvus.db")
        self._engine = None
        self.dir.on_close(partial(server_manager_instance.release_server, uri))  # runs last: the server
        self.client = MilvusClient(uri)
        self.dir.on_close(self.client.close)

    def _insert(self, X: np.ndarray) -> None:
        from pymilvus import DataType

        self._connect()
        schema = self.client.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=self.dim)
        self.client.create_collection(COLLECTION, schema=schema)
        for start in range(0, len(X), _INSERT_ROWS):
            stop = min(start + _INSERT_ROWS, len(X))
            self.client.insert(COLLECTION, [{"id": i, "vector": X[i]} for i in range(start, stop)])
            if self.progress is not None:
                self.progress(stop, len(X))
        self.client.flush(COLLECTION)  # unflushed rows are searched by brute force, not by the index

    def _make_index(self) -> None:
        params = self.client.prepare_index_params()
        params.add_index(field_name="vector", index_type=self.index_type, metric_type=MILVUS_METRICS[self.metric],
                         params={})
        self.client.create_index(COLLECTION, params)
        self.client.load_collection(COLLECTION)

    def _open(self) -> None:
        self._connect()
        self.client.load_collection(COLLECTION)

    def _flush(self) -> None:
        self.client.flush(COLLECTION)

    def _apply_search_params(self, params: dict[str, Any]) -> None:
        self._search = {"params": dict(params)}

    def _call(self, Q: np.ndarray, k: int):
        # output_fields=[] (or None) makes the client send back every hit's *vector* (measured, pymilvus 3.0.2 with
        # milvus-lite 3.2.2): 10,000 Fashion-MNIST queries at k=10 came to a 314 MB gRPC reply, over the 256 MB
        # limit (RESOURCE_EXHAUSTED), and smaller ones paid for the copy. Asking for the id alone returns only it.
        return self.client.search(COLLECTION, data=Q, limit=k, search_params=self._search, output_fields=["id"])

    def query(self, Q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(D, I), both (nq, k): Milvus's distances and ids, padded where fewer than k came back."""
        return _rows(self._call(Q, k), k)

    def single_query(self, Q: np.ndarray, k: int) -> SingleQuery:
        """Each ``client.search`` timed; its hits turned into arrays afterwards."""
        return SingleQuery(partial(self._call, k=k), partial(_stacked, k=k))

    def engine_unavailable(self) -> str | None:
        if self._engine is None:
            from milvus_lite.server_manager import server_manager_instance

            served = getattr(server_manager_instance, "_servers", {}).get(os.path.abspath(self.dir.path / "milvus.db"))
            if served is None:
                return "milvus-lite's server manager has no _servers entry for this database (not milvus-lite 3.2's)"
            self._engine = served[1].get_collection(COLLECTION)
        return None

    def engine_query(self, Q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """``query`` through milvus-lite's engine itself (see the module's docstring), converted the same way."""
        return _rows(self._engine_call(Q, k), k)

    def _engine_call(self, Q: np.ndarray, k: int):
        return self._engine.search(query_vectors=Q.tolist(), top_k=k, metric_type=MILVUS_METRICS[self.metric],
                                   anns_field="vector", output_fields=[], search_params=self._search["params"])

    def engine_single_query(self, Q: np.ndarray, k: int) -> SingleQuery:
        """Each engine search timed; its hits turned into arrays afterwards, as ``single_query``."""
        return SingleQuery(partial(self._engine_call, k=k), partial(_stacked, k=k))

    def convert(self, D: np.ndarray, I: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        D = np.where(I < 0, 0, D)
        if self.metric == "euclidean":
            D = np.sqrt(np.maximum(D, 0))  # Milvus's L2 is squared
        elif self.metric == "angular":
            D = 1.0 - D  # Milvus's COSINE is the similarity
        else:
            D = -D  # Milvus's IP is the dot product
        return self.pad(D, I)


class MilvusIVFFlat(MilvusFlat):
    name = "ivf"
    description = "Milvus Lite IVF_FLAT (nlist 128: fixed, see docs) through pymilvus' MilvusClient (embedded database)"
    index_type = "IVF_FLAT"
    search_params = (Param("nprobe", int, 10, "lists visited per query (of Milvus Lite's fixed nlist = min(128, n))",
                           min=1, max=65536),)
    search_grid = {"nprobe": [1, 2, 4, 8, 16, 32, 64, 128]}
    effort_params = {"nprobe": +1}
    nlist = 128  # Milvus Lite's default, the only one pymilvus reaches (see the module's docstring)

    def search_skip_reason(self, search: dict[str, Any], k: int) -> str | None:
        if search["nprobe"] > self.nlist:
            return f"nprobe={search['nprobe']} > nlist={self.nlist} (Milvus Lite's) visits nothing more"
        return None



class MilvusHNSW(MilvusFlat):
    name = "hnsw"
    description = "Milvus Lite HNSW (M 16, efConstruction 200: fixed, see docs) through pymilvus' MilvusClient (embedded database)"
    index_type = "HNSW"
    search_params = (Param("ef", int, 64, "candidate list size while searching", min=1, max=1_000_000),)
    search_grid = {"ef": [10, 20, 40, 80, 160, 320, 640]}
    effort_params = {"ef": +1}


class MilvusIVFSQ8(MilvusIVFFlat):
    name = "ivfsq"
    description = ("Milvus Lite IVF_SQ8 (lists of 8-bit scalar-quantised vectors; nlist 128: fixed, see docs) through "
                   "pymilvus' MilvusClient (embedded database)")
    index_type = "IVF_SQ8"


class MilvusHNSWSQ(MilvusHNSW):
    name = "hnswsq"
    description = ("Milvus Lite HNSW_SQ (an HNSW graph over scalar-quantised vectors; M 16, efConstruction 200: "
                   "fixed, see docs) through pymilvus' MilvusClient (embedded database)")
    index_type = "HNSW_SQ"


def _stacked(kept: list, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Single mode's kept hits, one search a query, into (D, I) (nq, k)."""
    rows = [_rows(r, k) for r in kept]
    return np.concatenate([r[0] for r in rows]), np.concatenate([r[1] for r in rows])


def _rows(hits, k: int) -> tuple[np.ndarray, np.ndarray]:
    """pymilvus search hits (one list of {id, distance} per query) into (D, I) (nq, k), padded."""
    D = np.full((len(hits), k), np.inf, dtype=np.float32)
    I = np.full((len(hits), k), -1, dtype=np.int64)
    for row, found in enumerate(hits):
        I[row, : len(found)] = [h["id"] for h in found]
        D[row, : len(found)] = [h["distance"] for h in found]
    return D, I
