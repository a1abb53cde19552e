"""Navigable Small World graph: our own implementation, in numba (build f, w, ef_construction, entry;
search ef, m).

Malkov, Ponomarenko, Logvinov, Krylov (2014), "Approximate nearest neighbor algorithm based on navigable
small world graphs", Information Systems 45. One flat graph, no hierarchy (HNSW's later addition) and no
pruning of neighbour lists:

- Build: the points are inserted in id order. Point i is searched for in the graph of the points before it
  with ``w`` restarts, each an ef-bounded best-first search (candidate list of ``ef_construction``), the
  restarts sharing one visited set; it is then linked both ways to the ``f`` nearest points found. Lists only
  grow: the links of early points, made when the graph was sparse, span the whole data set and make it
  navigable. ``parallel=false`` is the paper's build, one point at a time (one thread). ``parallel=true``
  (default) inserts the first 1,024 points so, then the rest in batches of 1/64 of the graph's size (at
  most 4,096): the insertion searches of a batch run on every build thread against the graph as it stood
  before the batch, then the batch's links are made in id order. A point thus misses only its batch-mates
  (< 1.6 % of the graph) as candidates; the batches do not depend on the thread count, so the graph depends
  on the seed alone. Measured with ``benchmarks/nsw_parallel_build.py`` (2,000 queries, f = 10, 2 build
  threads), recall@10 at ef 10, 20, 40, 80, 160 against the one-by-one build: 100k x 64 within 0.0015,
  200k x 128 within 0.0017 (target 0.005). Batches of 1/32 (the first version) missed it at 100k x 64
  (-0.0051 at ef 40, every ef lower); 1/128 gave differences of either sign within 0.0022, the noise
  between two graphs. Build time on 2 threads at 200k x 128 with 1/64 batches (idle host): 44.3 s one by one,
  23.6 s parallel (1.88x); with 1/32 batches an earlier run gave 35.6 vs 22.7 s (1.57x).
  The linking stays sequential, and each search of a batch sees a graph up to 1/64 smaller.
- Search: ``m`` restarts of the same ef-bounded search (list of max(ef, k)), merged; the k nearest.
- Entry points (``entry``): the paper starts every restart at a random node. On clustered data that strands
  queries in the wrong cluster: measured on 20k x 128 vectors from 100 well-separated clusters, f=10,
  ef=10, 65% of the queries found none of their 10 neighbours (recall@10 0.34), against 5% (recall 0.94)
  when the first restart starts at node 0, the oldest node, whose links reach most clusters. So
  ``entry="first"`` (default) starts restart 0 of every search, insertion and query, at node 0 and the others
  at random nodes; ``entry="random"`` is the paper's rule. Random entry points of a query come from a hash
  of (seed, query vector, restart): a query gets the same answer in any batch, mode or thread. With
  ``entry="first"``, w=1 and m=1 nothing is drawn at random, so the seed changes nothing.
- Memory layout: after the build, nodes are renumbered in breadth-first order from node 0 and the vectors
  stored in that order, so the neighbours of the first nodes a search expands lie side by side (10-20%
  more QPS measured); results are mapped back to the original ids inside the timed query.

Distances are squared L2 while searching (``euclidean``; ``angular`` on normalised vectors) or -dot
(``ip``), converted at the end: sqrt for euclidean, /2 for angular (1 - cos = |x - y|^2 / 2).

Batch queries are split into one contiguous chunk per thread, each served by the nogil kernel in a thread
pool with its own visited array. Kernels are compiled on first use and cached on disk by numba; ``build`` and
``load`` run a one-query search so that compilation never falls inside a timed query.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from ann_bench.backends.base import UPDATES_BOTH, Capabilities, Index, Param
from ann_bench.distances import from_squared_l2, normalized
from ann_bench.errors import InputError

_FORMAT = 3  # saved file layout: 2 added ``parallel`` (format 1 was built one by one), 3 ``schedule``
SEQUENTIAL_PREFIX = 1024  # points inserted one by one before batches start
BATCH_DIVISOR = 64  # a batch is at most 1/64 of the graph built so far ...
MAX_BATCH = 4096  # ... and at most this many points
SCHEDULE = (SEQUENTIAL_PREFIX, BATCH_DIVISOR, MAX_BATCH)  # the batches, hence the graph of a parallel build
_FORMAT2_SCHEDULE = (1024, 32, 4096)  # the schedule of parallel files of format 2


def _kernels():
    """The numba kernels module, imported on first use (importing numba takes a while)."""
    from ann_bench.backends import _nsw_kernels

    return _nsw_kernels


class NumbaNSW(Index):
    name = "nsw"
    impl = "numba"
    requires = ("numba",)
    install_hint = "pip install numba"
    description = "navigable small world graph, no hierarchy (Malkov et al. 2014; ours, in numba)"
    capabilities = Capabilities(notes=["parallel=true builds on every build thread (the graph does not depend on "
                                       "the thread count); parallel=false is the paper's one-by-one build"])
    build_params = (
        Param("f", int, 10, "friends: nearest points each inserted point links to, both ways, never pruned",
              min=1, max=4096),
        Param("w", int, 1, "restarts of the insertion search", min=1, max=256),
        Param("ef_construction", int, 100, "candidate list size of the insertion search (>= f)", min=1,
              max=100_000),
        Param("entry", str, "first", "where restart 0 starts: node 0 ('first') or a random node ('random', "
              "as the paper)", choices=("first", "random")),
        Param("parallel", bool, True, "insert in batches searched on all build threads (false: one point at a "
              "time, the paper's build)"),
    )
    search_params = (
        Param("ef", int, 10, "candidate list size (max(ef, k) is used)", min=1, max=1_000_000),
        Param("m", int, 1, "restarts per query, sharing one visited set", min=1, max=256),
    )
    build_grid = {"f": [10, 20], "w": [1], "ef_construction": [100], "entry": ["first"], "parallel": [True]}
    search_grid = {"ef": [10, 20, 40, 80, 160, 320, 640], "m": [1]}
    effort_params = {"ef": +1, "m": +1}

    def __init__(self, metric: str, dim: int, threads: int = 1, seed: int = 0, **build_params: Any):
        super().__init__(metric, dim, threads, seed, **build_params)
        self._X: np.ndarray | None = None  # (n, dim) float32, in graph order
        self._indptr: np.ndarray | None = None  # (n + 1,) int64
        self._adj: np.ndarray | None = None  # (indptr[n],) int32, graph-order node numbers
        self._ids: np.ndarray | None = None  # (n,) int64: original id of each graph-order node
        self._start: np.ndarray | None = None  # (n,) int64 == indptr[:-1]
        self._deg: np.ndarray | None = None  # (n,) int32 == diff(indptr)
        self._visited: np.ndarray | None = None  # (threads, n) int32 stamps, one row per thread
        self._state: np.ndarray | None = None  # (threads, 1) int64: last stamp of each row
        self._pool: ThreadPoolExecutor | None = None
        self._pool_size = 0
        self._kernel = None  # search_batch, bound at build/load
        self._kind = 0  # KIND_L2 or KIND_DOT

    @classmethod
    def validate_build_params(cls, params: dict[str, Any]) -> dict[str, Any]:
        out = super().validate_build_params(params)
        if out["ef_construction"] < out["f"]:
            raise InputError(
                f"{cls.label()}: ef_construction={out['ef_construction']} is smaller than f={out['f']}; the "
                f"insertion search must find f candidates: use ef_construction >= {out['f']}"
            )
        return out

    def search_skip_reason(self, search: dict[str, Any], k: int) -> str | None:
        if search["ef"] < k:
            return f"ef={search['ef']} < k={k}: nsw searches with ef=k"
        return None

    # ---- build ------------------------------------------------------------------------------------------
    def _prepare(self, X: np.ndarray) -> np.ndarray:
        """Vectors (n, dim) as the graph sees them: float32, C-contiguous, normalised for angular."""
        if X.ndim != 2 or X.shape[1] != self.dim:
            raise InputError(f"{self.label()}: expected vectors of shape (n, {self.dim}), got {X.shape}")
        if self.metric == "angular":
            return normalized(X)
        return np.ascontiguousarray(X, dtype=np.float32)

    def _bind(self):
        """Import the kernels; bind the search kernel and the distance kind. Returns the kernels module."""
        K = _kernels()
        self._kernel = K.search_batch
        self._kind = K.KIND_DOT if self.metric == "ip" else K.KIND_L2
        return K

    def warm_up(self) -> None:
        """Compile (first run after install) or load from numba's cache every kernel a build and a search use,
        by building a throwaway graph of the same parameters on a small random set: measured cold, the first
        build took 28.2 s instead of 1.9 s, and that compile time must not land in build_s."""
        n = max(64, 2 * self.params["f"] + 2, self.params["ef_construction"] + 1)
        if self.params["parallel"]:
            n = max(n, SEQUENTIAL_PREFIX + 64)  # past the one-by-one prefix: the batch kernels compile too
        X = np.random.default_rng(0).standard_normal((n, self.dim)).astype(np.float32)
        type(self)(self.metric, self.dim, threads=1, seed=self.seed, **self.params).build(X)

    def build(self, X: np.ndarray) -> None:
        K = self._bind()
        Xp = self._prepare(X)
        p = self.params
        U = np.random.default_rng(self.seed).random((Xp.shape[0], p["w"]))  # insertion entry points
        first = p["entry"] == "first"
        if not p["parallel"]:
            indptr, adj = K.build_graph(Xp, self._kind, p["f"], p["w"], p["ef_construction"], first, U)
        else:
            indptr, adj = self._build_batched(K, Xp, U, first)
        ids = K.bfs_order(indptr, adj, 0)
        indptr, adj = K.permute_graph(indptr, adj, ids)
        self._set_graph(Xp[ids], indptr, adj, ids)  # Xp[ids]: a new array, never the caller's

    def _build_batched(self, K, X: np.ndarray, U: np.ndarray, first: bool) -> tuple[np.ndarray, np.ndarray]:
        """The parallel build (see the module docstring): CSR (indptr, adj) of the graph over X."""
        p = self.params
        n, f = X.shape[0], p["f"]
        pool, start, cap, deg = K.new_graph(n, f)
        visited = np.zeros(n, dtype=np.int32)
        done = min(n, SEQUENTIAL_PREFIX)
        args = (X, self._kind, f, p["w"], p["ef_construction"], first, U)
        pool, used = K.insert_range(*args, pool, 0, start, cap, deg, visited, 0, done)
        pool, used = self._batches(K, X, U, first, pool, used, start, cap, deg, done, n, self.progress)
        return K.to_csr(pool, start, deg)

    def _batches(self, K, X: np.ndarray, U: np.ndarray, first: bool, pool, used: int, start, cap, deg, done: int,
                 n: int, progress=None):
        """Insert nodes done..n-1 in batches (:data:`SCHEDULE`): each batch's insertion searches run on the
        threads at once among the nodes before it, then its links are made in id order. Returns (pool, used)."""
        p = self.params
        f = p["f"]
        workers = max(1, self.threads)
        visited = np.zeros((workers, n), dtype=np.int32)
        args = (X, self._kind, f, p["w"], p["ef_construction"], first, U)
        out = np.empty((MAX_BATCH, f), dtype=np.int32)
        out_n = np.empty(MAX_BATCH, dtype=np.int32)
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="nsw-build") as threads:
            while done < n:
                stop = done + min(n - done, MAX_BATCH, max(1, done // BATCH_DIVISOR))
                bounds = np.linspace(done, stop, min(workers, stop - done) + 1).astype(np.int64)
                jobs = [threads.submit(K.search_range, *args, pool, start, deg, visited[t], int(a), int(b), done,
                                       out, out_n, done)
                        for t, (a, b) in enumerate(zip(bounds[:-1], bounds[1:]))]
                for job in jobs:
                    job.result()
                pool, used = K.link_range(pool, used, start, cap, deg, f, done, stop, out, out_n, done)
                done = stop
                if progress is not None:
                    progress(done, n)
        return pool, used

    def _set_graph(self, X: np.ndarray, indptr: np.ndarray, adj: np.ndarray, ids: np.ndarray) -> None:
        """Install a graph (graph-order vectors X (n, dim) float32, CSR indptr/adj, original ids), then
        compile (or load from numba's cache) the search kernel with a one-query search."""
        self._X = np.ascontiguousarray(X, dtype=np.float32)
        self._indptr = np.ascontiguousarray(indptr, dtype=np.int64)
        self._adj = np.ascontiguousarray(adj, dtype=np.int32)
        self._ids = np.ascontiguousarray(ids, dtype=np.int64)
        self._start = np.ascontiguousarray(self._indptr[:-1])
        self._deg = np.diff(self._indptr).astype(np.int32)
        self._visited = None
        self._built = True
        self._scratch()
        if self._X.shape[0]:
            self._search_chunk(self._X[:1], 1, 10, 1, 0)

    def _scratch(self) -> None:
        """Per-thread visited arrays (threads, n) and the thread pool, sized for the current thread count."""
        n = self._X.shape[0]
        if self._visited is None or self._visited.shape != (self.threads, n):
            self._visited = np.zeros((self.threads, n), dtype=np.int32)
            self._state = np.zeros((self.threads, 1), dtype=np.int64)
        if self._pool is not None and self._pool_size != self.threads:
            self._pool.shutdown()
            self._pool, self._pool_size = None, 0
        if self._pool is None and self.threads > 1:
            self._pool = ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix="nsw")
            self._pool_size = self.threads

    def set_threads(self, threads: int) -> None:
        super().set_threads(threads)
        if self._built:
            self._scratch()

    def _apply_search_params(self, params: dict[str, Any]) -> None:
        pass  # ef and m are passed to each query

    # ---- search -----------------------------------------------------------------------------------------
    def _search_chunk(self, Q: np.ndarray, k: int, ef: int, m: int, row: int,
                      D: np.ndarray | None = None, I: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Search the rows of Q (nq, dim) float32 C-contiguous with visited row ``row``; fills D/I (nq, k)."""
        if D is None:
            D = np.empty((Q.shape[0], k), dtype=np.float32)
            I = np.empty((Q.shape[0], k), dtype=np.int64)
        self._kernel(
            self._X, self._kind, Q, Q.view(np.uint32), self._start, self._deg, self._adj, self._ids, self.seed,
            self.params["entry"] == "first", m, ef, k, self._visited[row], self._state[row], D, I,
        )
        return D, I

    def query(self, Q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(D, I), both (nq, k): squared L2 or -dot (float32) and int64 ids, -1 / +inf where none was found."""
        Q = self._prepare(Q)
        ef = self.search_config.get("ef", 10)
        m = self.search_config.get("m", 1)
        if self._dead is not None:  # tombstones: the whole list, live entries kept
            return self._drop_dead(*self._query(Q, max(ef, k), ef, m), k)
        return self._query(Q, k, ef, m)

    def _query(self, Q: np.ndarray, k: int, ef: int, m: int) -> tuple[np.ndarray, np.ndarray]:
        nq = Q.shape[0]
        workers = min(self.threads, nq)
        if workers <= 1:
            return self._search_chunk(Q, k, ef, m, 0)
        D = np.empty((nq, k), dtype=np.float32)
        I = np.empty((nq, k), dtype=np.int64)
        bounds = np.linspace(0, nq, workers + 1).astype(int)
        jobs = [self._pool.submit(self._search_chunk, Q[a:b], k, ef, m, t, D[a:b], I[a:b])
                for t, (a, b) in enumerate(zip(bounds[:-1], bounds[1:]))]
        for job in jobs:
            job.result()
        return D, I

    # ---- updates: insertion as in the build; deletion by tombstones, not repaired ------------------------------
    updates = UPDATES_BOTH
    update_notes = ("insert: each new point is searched for in the graph and linked both ways to the f nearest found, "
                    "as the build does it: in batches searched on every thread at once (parallel=true; the graph is "
                    "the same for any thread count) or one by one (parallel=false); new points are appended to the "
                    "graph order, which is not re-sorted; delete: tombstones, not repaired: a deleted node keeps its links and vector, searches "
                    "pass through it and drop it from their list of max(ef, k) at the end, so many tombstones near a "
                    "query can leave fewer than k results at a small ef")
    _dead: np.ndarray | None = None  # (labels,) bool: tombstoned labels, once something was removed

    def add(self, X: np.ndarray, ids: np.ndarray) -> None:
        K = self._bind()
        Xp = self._prepare(X)
        p = self.params
        n0, n1 = self._X.shape[0], self._X.shape[0] + Xp.shape[0]
        X_all = np.concatenate([self._X, Xp])
        pool, start, cap, deg, used = self._growable(n1)
        U = np.random.default_rng([self.seed, n0]).random((n1, p["w"]))  # rows n0.. are used
        first = p["entry"] == "first"
        if p["parallel"]:  # as the build: batches searched on every thread at once, linked in id order
            pool, used = self._batches(K, X_all, U, first, pool, used, start, cap, deg, n0, n1)
        else:
            visited = np.zeros(n1, dtype=np.int32)
            pool, used = K.insert_range(X_all, self._kind, p["f"], p["w"], p["ef_construction"], first, U, pool,
                                        used, start, cap, deg, visited, n0, n1)
        indptr, adj = K.to_csr(pool, start, deg)
        labels = np.concatenate([self._ids, np.asarray(ids, dtype=np.int64)])
        self._set_graph(X_all, indptr, adj, labels)
        if self._dead is not None and labels.max() >= self._dead.shape[0]:
            self._dead = np.concatenate([self._dead, np.zeros(labels.max() + 1 - self._dead.shape[0], dtype=bool)])

    def _growable(self, n: int):
        """The CSR graph as the build kernels' growable pool, with room for nodes up to ``n``: (pool, start, cap,
        deg, used); each existing list in a block of capacity max(2, its degree) (full: the next link moves it)."""
        deg = np.zeros(n, dtype=np.int32)
        deg[: self._deg.shape[0]] = self._deg
        cap = np.zeros(n, dtype=np.int32)
        cap[: self._deg.shape[0]] = np.maximum(self._deg, 2)
        start = np.zeros(n, dtype=np.int64)
        start[1:] = np.cumsum(cap[:-1])
        used = int(cap.sum())
        pool = np.empty(max(16, 2 * used + (n - self._deg.shape[0]) * 2 * self.params["f"]), dtype=np.int32)
        owner = np.repeat(np.arange(self._deg.shape[0]), self._deg)
        offset = np.arange(self._adj.shape[0]) - np.repeat(self._indptr[:-1], self._deg)
        pool[start[owner] + offset] = self._adj
        return pool, start, cap, deg, used

    def remove(self, ids: np.ndarray) -> None:
        ids = np.asarray(ids, dtype=np.int64)
        if self._dead is None:
            self._dead = np.zeros(int(self._ids.max()) + 1, dtype=bool)
        self._dead[ids] = True

    def _drop_dead(self, D: np.ndarray, I: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The first k live entries of each row of (D, I) (nq, max(ef, k)), padded with -1 / +inf."""
        ok = (I >= 0) & ~self._dead[np.maximum(I, 0)]
        order = np.argsort(~ok, axis=1, kind="stable")[:, :k]
        keep = np.take_along_axis(ok, order, axis=1)
        I = np.where(keep, np.take_along_axis(I, order, axis=1), -1)
        D = np.where(keep, np.take_along_axis(D, order, axis=1), np.inf).astype(np.float32)
        return D, I

    def convert(self, D: np.ndarray, I: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.metric != "ip":
            D = from_squared_l2(self.metric, D)  # sqrt for euclidean, /2 for angular
        return self.pad(D, I)

    # ---- persistence ------------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        if self._dead is not None:
            raise InputError(f"{self.label()}: an index with deleted items (tombstones) cannot be saved")
        p = self.params
        with open(path, "wb") as fh:  # a file object: np.savez would append ".npz" to a bare path
            np.savez(
                fh, format=np.int64(_FORMAT), metric=np.str_(self.metric), dim=np.int64(self.dim),
                seed=np.int64(self.seed), f=np.int64(p["f"]), w=np.int64(p["w"]),
                ef_construction=np.int64(p["ef_construction"]), entry=np.str_(p["entry"]),
                parallel=np.int64(p["parallel"]), schedule=np.asarray(SCHEDULE, dtype=np.int64),
                X=self._X, indptr=self._indptr, adj=self._adj, ids=self._ids,
            )

    def load(self, path: str | os.PathLike) -> None:
        self._bind()
        with np.load(path, allow_pickle=False) as z:
            if int(z["format"]) not in (1, 2, _FORMAT):
                raise InputError(f"{self.label()}: {os.fspath(path)!r} has format {int(z['format'])}, "
                                 f"this version reads formats 1 to {_FORMAT}; rebuild the index")
            saved = {"metric": str(z["metric"]), "dim": int(z["dim"]), "seed": int(z["seed"]),
                     **{name: int(z[name]) for name in ("f", "w", "ef_construction")}, "entry": str(z["entry"]),
                     "parallel": bool(int(z["parallel"])) if "parallel" in z else False}
            mine = {"metric": self.metric, "dim": self.dim, "seed": self.seed, **self.params}
            wrong = [f"{key}={saved[key]!r} (not {mine[key]!r})" for key in saved if saved[key] != mine[key]]
            if wrong:
                raise InputError(f"{self.label()}: {os.fspath(path)!r} was built with {', '.join(wrong)}")
            schedule = tuple(int(v) for v in z["schedule"]) if "schedule" in z else _FORMAT2_SCHEDULE
            if saved["parallel"] and schedule != SCHEDULE:
                raise InputError(f"{self.label()}: {os.fspath(path)!r} was built in batches of another schedule "
                                 f"(prefix, divisor, cap {schedule}, now {SCHEDULE}): its graph is not the one "
                                 f"this version builds; rebuild the index")
            self._set_graph(z["X"], z["indptr"], z["adj"], z["ids"])

    def index_bytes(self) -> int:
        """Vectors + graph + id map, as stored: X (n, dim) float32, indptr, adj, ids."""
        return int(self._X.nbytes + self._indptr.nbytes + self._adj.nbytes + self._ids.nbytes)
