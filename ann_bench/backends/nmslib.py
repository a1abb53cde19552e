"""NMSLIB (Non-Metric Space Library) graphs: HNSW (build M, ef_construction; search ef) and the classic
flat NSW, nmslib's ``sw-graph`` (build f, ef_construction; search ef).

``hnsw[nmslib]`` is HNSW where it was first published (hnswlib is Malkov's later header-only version), built with
``post=0`` (no post-processing of the graph); ``nsw[nmslib]`` is Malkov et al.'s 2014 Navigable Small World
graph as nmslib 2 implements it, beside our own ``nsw[numba]``. Parameter names follow ours where the
meaning is the same: ``f`` is nmslib's ``NN`` (friends each inserted point links to, both ways, never pruned),
``ef_construction`` its ``efConstruction`` (candidate list of the insertion search), ``ef`` its ``efSearch``.
nmslib 2.1's sw-graph has no ``initIndexAttempts`` / ``initSearchAttempts`` any more (both are refused as
unknown parameters, measured): every insertion and every query is one search from the first point inserted,
which is our NSW with ``w = 1, m = 1, entry = first, parallel = false``, so ``w`` and ``m`` are not offered.
Unlike ours, nmslib allows ``ef_construction < f``: the insertion still links the ``f`` nearest points it saw.

Native distances, measured with nmslib 2.1.2 and converted in :meth:`convert`:

- ``l2``: **squared** L2 from ``hnsw`` (its optimised index; square-rooted for ``euclidean``) but plain L2
  from ``sw-graph`` (used as is): the same space name, two conventions.
- ``cosinesimil``: 1 - cos from both (``angular`` as is; vectors need not be normalised).
- ``negdotprod``: -dot from both (``ip`` as is).

Traps (measured):

- ``hnsw`` with ``ef < k`` is a real, cheaper search (unlike hnswlib it does not raise ef to k) and may
  return fewer than k results (1 to 10 at ef 1, k 10): it is measured, the missing slots padded with
  -1 / +inf. ``sw-graph`` always returns k results (its result set keeps the k best of every point visited),
  so ``ef < k`` is a real search there too.
- hnsw answers queries of the wrong dimension without an error (it reads past a shorter vector; sw-graph
  raises "Check failed"): :meth:`query` checks the shape first.
- ``knnQueryBatch`` returns a list of (ids, distances) pairs, of variable length; :meth:`query` copies them
  into (nq, k) arrays, which the timed region includes, as in ann-benchmarks' wrapper (0.8 us a query,
  measured: 113 vs 105 ms for 10k queries at ef 10 on 20k x 32).
- The wheel on PyPI (nmslib 2.1.2, manylinux2014) is compiled without SIMD beyond the x86-64 baseline
  (SSE2): on import it prints to stderr "Your CPU supports instructions that this binary was not compiled to
  use: SSE3 SSE4.1 SSE4.2 AVX AVX2", and its machine code has no AVX instruction. ``pip install --no-binary
  nmslib nmslib`` builds it from source with ``-march=native`` (AVX-512 here; about 5 minutes on 2 cores);
  the ``nmslib-metabrainz`` wheel (2.1.3, the same ``nmslib`` module) has AVX2 and FMA. Measured, hnsw
  search on 20k x 128 (M 16, ef 100, 1,000 queries, one thread, CPU time, best of 10 calls, best of 4
  processes): 171 ms with the PyPI wheel, 121 ms built from source, 135 ms with nmslib-metabrainz
  (sw-graph, NN 10: 671 / 514 / 636 ms; a busy 2-core machine, ~15 % noise). QPS figures depend on which
  one is installed.
- ``saveIndex(path, save_data=True)`` writes two files, ``path`` and ``path.dat``; :meth:`save` packs both
  into one ``.npz`` (bytes, no pickle) with the metric, method and build parameters, and :meth:`load` refuses a
  file of another method, metric, dimension or build parameters.
- An hnsw index that was itself loaded must not be saved again by nmslib: the file it writes loads, then the
  first query kills the process (segmentation fault, measured for l2, cosinesimil and negdotprod). A loaded
  index therefore keeps the two files it was read from and :meth:`save` writes those.
- **sw-graph cannot be reloaded faithfully**, so ``nsw[nmslib]`` cannot be saved (:meth:`save` raises
  InputError): nmslib's ``loadIndex`` makes ``ElList_.begin()`` of an ``unordered_map`` the entry point of
  every search, an arbitrary node instead of the first one inserted. Measured on a clustered 3k x 16 set
  (f 10, ef_construction 100, 200 queries): recall@10 0.974 built vs 0.614 loaded at ef 10, 0.848 vs 0.266
  at ef 1 (the same file loaded twice answers the same). Its ``index_bytes`` is the size of the two files
  ``saveIndex`` writes, as for hnsw.

Threads and seeds: ``indexThreadQty`` is the build's thread count, ``knnQueryBatch(num_threads=...)`` the
query's. nmslib has no seed parameter: it draws HNSW levels from a generator per OS thread, seeded with 0
when the thread starts, so a one-thread build run on the caller's thread would depend on what that thread
built before (two builds in one process differed, measured). The build therefore runs on a fresh thread,
which makes a one-thread build deterministic (same ids on every run); ``seed`` changes nothing. A build on
several threads inserts in a varying order and is not deterministic. sw-graph draws nothing at random.
Search threads do not change results.
"""

from __future__ import annotations

import os
import tempfile
import threading
from abc import abstractmethod
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from ann_bench.backends.base import Capabilities, Index, Param, SingleQuery
from ann_bench.distances import from_squared_l2
from ann_bench.errors import InputError

NMSLIB_SPACES = {"euclidean": "l2", "angular": "cosinesimil", "ip": "negdotprod"}
_FORMAT = 1  # layout of the packed file written by save


class _NmslibGraph(Index):
    """What both nmslib methods share: spaces, the build on a fresh thread, batch queries, packed files."""

    requires = ("nmslib",)
    install_hint = 'pip install -e ".[graphs]"'
    method: str  # nmslib's method name
    capabilities = Capabilities(notes=["nmslib has no seed: seed changes nothing",
                                       "a multi-threaded build is not deterministic"])
    effort_params = {"ef": +1}

    def __init__(self, metric: str, dim: int, threads: int = 1, seed: int = 0, **build_params: Any):
        super().__init__(metric, dim, threads, seed, **build_params)
        self.index = None
        self._files: tuple[bytes, bytes] | None = None  # the (index, data) files a loaded index was read from

    @abstractmethod
    def _nmslib_params(self) -> dict[str, Any]:
        """The build parameters under nmslib's names (without the thread count)."""

    def _new(self):
        import nmslib

        return nmslib.init(method=self.method, space=NMSLIB_SPACES[self.metric])

    def build(self, X: np.ndarray) -> None:
        X = np.ascontiguousarray(X, dtype=np.float32)
        if X.ndim != 2 or X.shape[1] != self.dim:
            raise InputError(f"{self.label()}: expected vectors of shape (n, {self.dim}), got {X.shape}")
        if X.shape[0] == 0:
            raise InputError(f"{self.label()}: cannot build an index of no vectors")
        index = self._new()
        index.addDataPointBatch(X)  # copied into nmslib's own objects
        params = {**self._nmslib_params(), "indexThreadQty": self.threads}
        failure: list[BaseException] = []

        def create() -> None:
            try:
                index.createIndex(params, print_progress=False)
            except BaseException as exc:  # re-raised on the caller's thread
                failure.append(exc)

        # A fresh thread starts nmslib's per-thread generator from its seed (0): see the module docstring.
        worker = threading.Thread(target=create, name="nmslib-build")
        worker.start()
        worker.join()
        if failure:
            raise failure[0]
        self.index = index
        self._files = None
        self._built = True
        self._apply_search_params(self.search_config or self.validate_search_params({}))

    def _apply_search_params(self, params: dict[str, Any]) -> None:
        if self.index is not None:
            self.index.setQueryTimeParams({"efSearch": params["ef"]})

    def query(self, Q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(D, I), both (nq, k): nmslib's native distances and ids, +inf / -1 where fewer were returned."""
        self.check_shape(Q, "nq")  # nmslib's hnsw reads past a shorter vector without a word
        return self._unpack(self.index.knnQueryBatch(Q, k=k, num_threads=self.threads), k)

    def single_query(self, Q: np.ndarray, k: int):
        """knnQueryBatch on each row; its lists of (ids, distances) become arrays after the timed run."""
        self.check_shape(Q, "nq")  # nmslib's hnsw reads past a shorter vector without a word
        return SingleQuery(partial(self.index.knnQueryBatch, k=k, num_threads=self.threads),
                           lambda results: self._unpack([row for rows in results for row in rows], k))

    @staticmethod
    def _unpack(results: list[tuple[np.ndarray, np.ndarray]], k: int) -> tuple[np.ndarray, np.ndarray]:
        """knnQueryBatch's (ids, distances) per query -> (D, I), both (nq, k), +inf / -1 past what was found."""
        nq = len(results)
        D = np.full((nq, k), np.inf, dtype=np.float32)
        I = np.full((nq, k), -1, dtype=np.int64)
        for row, (ids, dists) in enumerate(results):
            found = ids.shape[0]
            I[row, :found] = ids
            D[row, :found] = dists
        return D, I

    def convert(self, D: np.ndarray, I: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        D, I = self.pad(D, I)
        if self.metric == "angular":
            D = np.maximum(D, 0)  # 1 - cos, rounding can dip below 0 for an identical direction
        return D, I

    # ---- persistence ------------------------------------------------------------------------------------
    def _save_files(self) -> tuple[bytes, bytes]:
        """The two files ``saveIndex(save_data=True)`` writes, the index and its data (``.dat``); for a loaded
        index, the two it was read from (nmslib's hnsw re-saves a loaded index into a file that crashes)."""
        if self._files is not None:
            return self._files
        with tempfile.TemporaryDirectory(prefix="ann-bench-nmslib-") as tmp:
            path = Path(tmp) / "index"
            self.index.saveIndex(os.fspath(path), save_data=True)
            return path.read_bytes(), Path(f"{path}.dat").read_bytes()

    def _identity(self) -> dict[str, Any]:
        return {"method": self.method, "metric": self.metric, "dim": self.dim, **self.params}

    def save(self, path: str | os.PathLike) -> None:
        index_file, data_file = self._save_files()
        identity = {key: np.asarray(value) for key, value in self._identity().items()}
        with open(path, "wb") as fh:  # a file object: np.savez would append ".npz" to a bare path
            np.savez(fh, format=np.int64(_FORMAT), index_file=np.frombuffer(index_file, dtype=np.uint8),
                     data_file=np.frombuffer(data_file, dtype=np.uint8), **identity)

    def load(self, path: str | os.PathLike) -> None:
        with np.load(path, allow_pickle=False) as z:
            if "format" not in z or int(z["format"]) != _FORMAT:
                raise InputError(f"{self.label()}: {os.fspath(path)!r} is not an ann-bench nmslib index file "
                                 f"(format {_FORMAT}); rebuild the index")
            mine = self._identity()
            wrong = [f"{key}={z[key].item()!r} (not {value!r})" for key, value in mine.items()
                     if key not in z or z[key].item() != value]
            if wrong:
                raise InputError(f"{self.label()}: {os.fspath(path)!r} was built with {', '.join(wrong)}")
            index_file, data_file = z["index_file"].tobytes(), z["data_file"].tobytes()
        with tempfile.TemporaryDirectory(prefix="ann-bench-nmslib-") as tmp:
            target = Path(tmp) / "index"
            target.write_bytes(index_file)
            Path(f"{target}.dat").write_bytes(data_file)
            index = self._new()
            index.loadIndex(os.fspath(target), load_data=True)
        self.index = index
        self._files = (index_file, data_file)
        self._built = True
        self._apply_search_params(self.search_config or self.validate_search_params({}))

    def index_bytes(self) -> int:
        """The size of the two files nmslib writes (index + data), without the packing around them."""
        return sum(len(part) for part in self._save_files())


class NmslibHNSW(_NmslibGraph):
    name = "hnsw"
    impl = "nmslib"
    method = "hnsw"
    description = "hierarchical navigable small world graph (nmslib, the original code base)"
    build_params = (
        Param("M", int, 16, "graph degree (links per node per layer; 2*M on layer 0)", min=2, max=512),
        Param("ef_construction", int, 200, "candidate list size while inserting (nmslib's efConstruction)",
              min=1, max=100_000),
    )
    search_params = (Param("ef", int, 10, "candidate list size while searching (efSearch; ef < k is a real, "
                           "cheaper search that may return fewer than k)", min=1, max=1_000_000),)
    build_grid = {"M": [16, 32], "ef_construction": [200]}
    search_grid = {"ef": [10, 20, 40, 80, 160, 320, 640]}

    def _nmslib_params(self) -> dict[str, Any]:
        return {"M": self.params["M"], "efConstruction": self.params["ef_construction"], "post": 0}

    def convert(self, D: np.ndarray, I: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.metric == "euclidean":  # hnsw's optimised 'l2' index returns squared L2
            D = from_squared_l2("euclidean", D)  # the padding's +inf stays +inf
        return super().convert(D, I)


class NmslibNSW(_NmslibGraph):
    name = "nsw"
    impl = "nmslib"
    method = "sw-graph"
    description = "navigable small world graph, no hierarchy (nmslib sw-graph, Malkov et al. 2014)"
    capabilities = Capabilities(saveable=False,
                                notes=["cannot be saved: nmslib reloads a sw-graph with another entry point",
                                       "nmslib has no seed: seed changes nothing",
                                       "a multi-threaded build is not deterministic"])
    build_params = (
        Param("f", int, 10, "friends: nearest points each inserted point links to, both ways, never pruned "
              "(nmslib's NN)", min=1, max=4096),
        Param("ef_construction", int, 100, "candidate list size of the insertion search (nmslib's "
              "efConstruction)", min=1, max=100_000),
    )
    search_params = (Param("ef", int, 10, "candidate list size while searching (efSearch; ef < k is a real, "
                           "cheaper search)", min=1, max=1_000_000),)
    build_grid = {"f": [10, 20], "ef_construction": [100]}
    search_grid = {"ef": [10, 20, 40, 80, 160, 320, 640]}

    def _nmslib_params(self) -> dict[str, Any]:
        return {"NN": self.params["f"], "efConstruction": self.params["ef_construction"]}

    def save(self, path: str | os.PathLike) -> None:
        raise InputError(f"{self.label()}: cannot be saved: nmslib reloads a sw-graph with an arbitrary entry "
                         f"point, so a loaded index would answer differently (recall 0.61 vs 0.97 measured); "
                         f"rebuild it instead")

    def load(self, path: str | os.PathLike) -> None:
        raise InputError(f"{self.label()}: cannot be loaded: {self.label()} indices are never saved (nmslib "
                         f"reloads a sw-graph with an arbitrary entry point); rebuild it instead")
