"""LanceDB, embedded (the Lance columnar format on disk), through its synchronous Python client.

The registry maps an algorithm name to its implementations, one a library (``hnsw[usearch]``), so each LanceDB
index type is the ``lancedb`` implementation of the algorithm it is: ``flat[lancedb]`` (no index: LanceDB's
brute-force scan, the exact baseline), ``ivf[lancedb]`` (IVF_FLAT), ``ivfpq[lancedb]`` (IVF_PQ) and
``ivfhnswsq[lancedb]`` (IVF_HNSW_SQ: an HNSW graph over 8-bit scalar-quantised vectors in each IVF partition;
LanceDB has no plain HNSW). ``--backend ivfpq:lancedb`` runs one beside faiss's ``ivfpq``. The parameters take
the names the other implementations use, so one ``--build nlist=256`` reaches both: ``nlist`` is LanceDB's
``num_partitions``, ``train_per_list`` its ``sample_rate`` (k-means trains on nlist x this vectors), ``m`` of
ivfpq its ``num_sub_vectors``, ``M`` / ``ef_construction`` of ivfhnswsq its ``m`` / ``ef_construction``; search
``nprobe`` is ``nprobes``, ``refine`` its ``refine_factor`` (0: not set), ``ef`` its ``ef``.

Measured with lancedb 0.40.0 (tests/test_backend_lancedb.py checks each):

- Native ``_distance``: ``l2`` is squared L2 (square-rooted for ``euclidean``), ``cosine`` 1 - cos (``angular``
  as is), ``dot`` is 1 - dot (``ip`` = -dot: 1 is subtracted).
- IVF_PQ and IVF_HNSW_SQ return the distances of their codes (PQ, SQ), not exact ones: on 3k x 16 the largest
  error was 8.6 (squared L2, PQ) and 0.39 (SQ). ``refine`` >= 1 re-ranks refine x k candidates on the stored
  vectors, which LanceDB always keeps, so it is a search parameter of every build and its distances are exact.
  IVF_FLAT and the scan return exact distances.
- A batch (a 2-d array) is one query with a ``query_index`` column: LanceDB's batch mode (a flat scan shares
  one pass over the table). One query (1, d) is a 1-d vector, as a user would pass it.
- IVF_PQ trains at most n // ``train_per_list`` partitions, with a warning on stderr only (11 of 16 asked on
  3,000 vectors at LanceDB's default sample_rate 256; all 16 at 64): such an ``nlist`` is refused while planning,
  and ``train_per_list`` defaults to 64 (this project's ``ivf`` default) instead of LanceDB's 256.
- ``ef`` is ignored by IVF_PQ and IVF_FLAT (identical results), so it is declared only by ivfhnswsq.
- ``nprobe`` > ``nlist`` visits nothing more: skipped, as for faiss's ivf.
- Threads: LanceDB runs its own thread pools (a tokio runtime and its CPU pool, sized to the machine); the
  client takes no thread count, so ``--threads`` is not honoured. No seed for k-means: builds vary.
- The synchronous client runs every call on one process-wide asyncio thread (``LanceDBBackgroundEventLoop``, a
  daemon shared by every connection in the process); it cannot be stopped per index without breaking later
  connections, so ``close`` drops the connection and removes the files, and the thread ends with the worker.

Engine alone (``engine_query``, the worker's ``qps_engine``): the same table's Lance dataset (``table.to_lance()``,
the ``pylance`` package at the Lance version LanceDB embeds, 13.0.0 for lancedb 0.40) searched by its own
``to_table(nearest={column, q, k, metric, nprobes, refine_factor, ef}, columns=["id", "_distance"])``, a batch as
one 2-d ``q``: the layer under LanceDB's query builder and its background asyncio loop. It returns the client's
ids and distances exactly (tested, every index type and metric).

Build = the table's creation with every vector (``insert_s``) + ``create_index`` (``index_s``; none for flat), in
``build_times``. ``index_bytes`` is the database directory's size on disk (the table keeps the raw vectors, so
every index type's size includes them). Save/load: the directory as one tar (see :mod:`._dbdir`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ann_bench.backends._dbdir import DatabaseIndex
from ann_bench.backends.base import Capabilities, Param, SingleQuery, stack_results
from ann_bench.backends.ivf import pow2_lists
from ann_bench.backends.ivfpq import default_m
from ann_bench.distances import from_squared_l2
from ann_bench.errors import InputError

LANCE_METRICS = {"euclidean": "l2", "angular": "cosine", "ip": "dot"}
TABLE = "vectors"
_NLIST = Param("nlist", int, 256, "IVF partitions (LanceDB's num_partitions)", min=1, max=1 << 20)
_TRAIN = Param("train_per_list", int, 64, "k-means trains on nlist * this vectors (LanceDB's sample_rate)",
               min=2, max=1 << 20)
_NPROBE = Param("nprobe", int, 16, "partitions visited per query (LanceDB's nprobes)", min=1, max=1 << 20)
_REFINE = Param("refine", int, 0, "re-rank refine*k candidates on the stored vectors (LanceDB's refine_factor; "
                "0: not set)", min=0, max=1000)


class LanceFlat(DatabaseIndex):
    """No vector index: LanceDB scans the table (exact). The base of the indexed types below."""

    name = "flat"
    impl = "lancedb"
    kind = "lancedb"
    requires = ("lancedb",)
    install_hint = 'pip install -e ".[dbs]"'
    description = "LanceDB's brute-force scan of a table without a vector index (embedded database)"
    capabilities = Capabilities(threads=False, notes=[
        "runs through LanceDB's client; its own thread pools (--threads not honoured)",
        "build = insert + index creation (build_times); index size = the database directory on disk"])

    engine = "the table's Lance dataset (pylance): LanceDataset.to_table(nearest=...)"

    def __init__(self, metric: str, dim: int, threads: int = 1, seed: int = 0, **build_params: Any):
        super().__init__(metric, dim, threads, seed, **build_params)
        self.db = self.table = self._dataset = None

    def _connect(self) -> None:
        import lancedb

        self.db = lancedb.connect(str(self.dir.path))
        self._dataset = None

    def _insert(self, X: np.ndarray) -> None:
        import pyarrow as pa

        self._connect()
        vectors = pa.FixedSizeListArray.from_arrays(pa.array(X.reshape(-1)), self.dim)
        self.table = self.db.create_table(TABLE, data=pa.table({"id": pa.array(np.arange(len(X))), "vector": vectors}))

    def _index_config(self):
        return None

    def _make_index(self) -> None:
        config = self._index_config()
        if config is not None:
            self.table.create_index("vector", config=config)

    def _open(self) -> None:
        self._connect()
        self.table = self.db.open_table(TABLE)

    def _apply_search_params(self, params: dict[str, Any]) -> None:
        pass

    def _builder(self, q: np.ndarray, k: int):
        """The query a user writes: search, metric, limit, the id and distance columns, the search settings."""
        b = self.table.search(q).distance_type(LANCE_METRICS[self.metric]).limit(k).select(["id", "_distance"])
        p = self.search_config
        if "nprobe" in p:
            b = b.nprobes(p["nprobe"])
        if p.get("refine"):
            b = b.refine_factor(p["refine"])
        if "ef" in p:
            b = b.ef(p["ef"])
        return b

    def query(self, Q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(D, I), both (nq, k): LanceDB's ``_distance`` (+inf where nothing was found) and ids (-1 there)."""
        return _rows(self._builder(Q if len(Q) > 1 else Q[0], k).to_arrow(), len(Q), k)

    def single_query(self, Q: np.ndarray, k: int) -> SingleQuery:
        """Each query's builder and ``to_arrow`` timed; the Arrow tables turned into arrays afterwards."""
        return SingleQuery(lambda q: self._builder(q[0], k).to_arrow(),
                           lambda kept: stack_results([_rows(t, 1, k) for t in kept]))

    def engine_unavailable(self) -> str | None:
        import importlib.util

        if importlib.util.find_spec("lance") is None:
            return "the Lance dataset needs the pylance package (pip install pylance==13.0.0, in the dbs extra)"
        if self._dataset is None:
            self._dataset = self.table.to_lance()  # opened once, outside the timed region
        return None

    def _nearest(self, q: np.ndarray, k: int) -> dict[str, Any]:
        """The Lance scanner's ``nearest`` for ``_builder``'s query: the same metric, k and search settings."""
        nearest = {"column": "vector", "q": q, "k": k, "metric": LANCE_METRICS[self.metric]}
        p = self.search_config
        if "nprobe" in p:
            nearest["nprobes"] = p["nprobe"]
        if p.get("refine"):
            nearest["refine_factor"] = p["refine"]
        if "ef" in p:
            nearest["ef"] = p["ef"]
        return nearest

    def engine_query(self, Q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """``query`` through the Lance dataset itself (see the module's docstring), converted the same way."""
        table = self._dataset.to_table(nearest=self._nearest(Q if len(Q) > 1 else Q[0], k), columns=["id", "_distance"])
        return _rows(table, len(Q), k)

    def engine_single_query(self, Q: np.ndarray, k: int) -> SingleQuery:
        """Each query's ``to_table`` timed; the Arrow tables turned into arrays afterwards, as ``single_query``."""
        return SingleQuery(lambda q: self._dataset.to_table(nearest=self._nearest(q[0], k), columns=["id", "_distance"]),
                           lambda kept: stack_results([_rows(t, 1, k) for t in kept]))

    def convert(self, D: np.ndarray, I: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        D = np.where(I < 0, 0, D)
        if self.metric == "euclidean":
            D = from_squared_l2(self.metric, np.maximum(D, 0))
        elif self.metric == "ip":
            D = D - 1.0  # LanceDB's dot is 1 - dot; ours is -dot
        return self.pad(D, I)


class LanceIVFFlat(LanceFlat):
    name = "ivf"
    description = "LanceDB IVF_FLAT: inverted file, exact vectors in the partitions (embedded database)"
    build_params = (_NLIST, _TRAIN)
    search_params = (_NPROBE,)
    build_grid = {"nlist": [256]}
    search_grid = {"nprobe": [1, 2, 4, 8, 16, 32, 64, 128, 256]}
    effort_params = {"nprobe": +1}
    grid_notes = {"nlist": "sqrt(n) and 4*sqrt(n), rounded to powers of two"}

    @classmethod
    def default_build_grid(cls, n: int, dim: int) -> dict[str, list]:
        return {**{k: list(v) for k, v in cls.build_grid.items()}, "nlist": sorted({pow2_lists(n, 1), pow2_lists(n, 4)})}

    @classmethod
    def check_data(cls, build: dict[str, Any], n: int, dim: int) -> None:
        if build["nlist"] > n:
            raise InputError(f"{cls.label()}: nlist={build['nlist']} exceeds the {n} vectors; use nlist <= {n} "
                             f"(about 4*sqrt(n) = {pow2_lists(n, 4)} is usual)")

    def search_skip_reason(self, search: dict[str, Any], k: int) -> str | None:
        if search["nprobe"] > self.params["nlist"]:
            return f"nprobe={search['nprobe']} > nlist={self.params['nlist']} visits nothing more"
        return None

    def _index_config(self):
        from lancedb.index import IvfFlat

        return IvfFlat(distance_type=LANCE_METRICS[self.metric], num_partitions=self.params["nlist"],
                       sample_rate=self.params["train_per_list"])


class LanceIVFPQ(LanceIVFFlat):
    name = "ivfpq"
    description = "LanceDB IVF_PQ: inverted file + product quantization, optional re-ranking (embedded database)"
    build_params = (_NLIST, _TRAIN, Param("m", int, 16, "PQ sub-vectors, a divisor of the dimension (LanceDB's "
                                          "num_sub_vectors)", min=1, max=4096))
    search_params = (_NPROBE, _REFINE)
    build_grid = {"nlist": [256], "m": [16]}
    search_grid = {"nprobe": [1, 2, 4, 8, 16, 32, 64, 128, 256], "refine": [0, 10]}
    effort_params = {"nprobe": +1}  # refine changes the ranking, not only the effort: a line of its own
    grid_notes = {"nlist": "4*sqrt(n), rounded to a power of two, at most n / train_per_list",
                  "m": "the divisor of dim nearest dim/4"}

    @classmethod
    def default_build_grid(cls, n: int, dim: int) -> dict[str, list]:
        nlist = pow2_lists(n, 4)
        while nlist > 1 and nlist * _TRAIN.default > n:
            nlist //= 2
        return {"nlist": [nlist], "train_per_list": [_TRAIN.default], "m": [default_m(dim)]}

    @classmethod
    def check_data(cls, build: dict[str, Any], n: int, dim: int) -> None:
        if dim % build["m"]:
            divisors = [m for m in range(1, dim + 1) if dim % m == 0]
            raise InputError(f"{cls.label()}: m={build['m']} does not divide the dimension {dim}; "
                             f"use one of {', '.join(map(str, divisors))}")
        if build["nlist"] * build["train_per_list"] > n:
            raise InputError(f"{cls.label()}: LanceDB trains at most n / train_per_list = "
                             f"{n // build['train_per_list']} IVF_PQ partitions on {n} vectors, not nlist={build['nlist']}; "
                             "lower nlist or train_per_list")
        super().check_data(build, n, dim)

    def _index_config(self):
        from lancedb.index import IvfPq

        return IvfPq(distance_type=LANCE_METRICS[self.metric], num_partitions=self.params["nlist"],
                     num_sub_vectors=self.params["m"], sample_rate=self.params["train_per_list"])


class LanceIVFHNSWSQ(LanceIVFFlat):
    name = "ivfhnswsq"
    description = "LanceDB IVF_HNSW_SQ: an HNSW graph over 8-bit scalar-quantised vectors in each IVF partition " \
                  "(embedded database)"
    build_params = (_NLIST, _TRAIN,
                    Param("M", int, 20, "graph links per node (LanceDB's m)", min=2, max=512),
                    Param("ef_construction", int, 300, "candidate list size while inserting", min=1, max=100_000))
    search_params = (_NPROBE, _REFINE, Param("ef", int, 64, "candidate list size while searching (LanceDB's "
                                             "default is 1.5 * k)", min=1, max=1_000_000))
    build_grid = {"nlist": [1], "M": [16, 32], "ef_construction": [200]}
    search_grid = {"nprobe": [1], "refine": [0], "ef": [10, 20, 40, 80, 160, 320, 640]}
    effort_params = {"nprobe": +1, "ef": +1}
    grid_notes = {"nlist": "1 (one graph; larger nlist splits it)"}

    @classmethod
    def default_build_grid(cls, n: int, dim: int) -> dict[str, list]:
        return {k: list(v) for k, v in cls.build_grid.items()}

    def _index_config(self):
        from lancedb.index import HnswSq

        return HnswSq(distance_type=LANCE_METRICS[self.metric], num_partitions=self.params["nlist"],
                      sample_rate=self.params["train_per_list"], m=self.params["M"],
                      ef_construction=self.params["ef_construction"])


def _rows(table, nq: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """A LanceDB result table (``query_index``, ``id``, ``_distance``; no ``query_index`` for one query), each
    query's rows nearest first, into (D, I) (nq, k), +inf / -1 where fewer than k came back."""
    D = np.full((nq, k), np.inf, dtype=np.float32)
    I = np.full((nq, k), -1, dtype=np.int64)
    ids = table["id"].to_numpy()
    dist = table["_distance"].to_numpy()
    which = table["query_index"].to_numpy() if "query_index" in table.column_names else np.zeros(len(ids), np.int64)
    order = np.argsort(which, kind="stable")
    which, ids, dist = which[order], ids[order], dist[order]
    rank = np.arange(len(which)) - np.searchsorted(which, which)
    D[which, rank] = dist
    I[which, rank] = ids
    return D, I
