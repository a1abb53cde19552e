"""ONNG through Yahoo Japan's NGT (``pip install ngt``, module ``ngtpy``): an optimised neighbourhood graph.

ONNG (Iwasaki & Miyazaki 2018) is built in two steps, as NGT's own recipe (``ngt create -E edge_size``, then
``ngt reconstruct-graph -m S -o outdegree -i indegree``) and ann-benchmarks' NGT-onng do:

1. an ANNG — each point inserted by a graph search, linked to its ``edge_size`` nearest found, both ways —
   through ``ngtpy.create`` + ``Index.batch_insert``;
2. ``ngtpy.Optimizer(outdegree, indegree).execute``: a new graph keeping each node's ``outdegree`` shortest
   edges plus, reversed, the ``indegree`` shortest edges pointing at it, then NGT's path adjustment (edges
   with a shorter two-hop detour are removed).

Search (``Index.batch_search``) starts from seeds found in NGT's tree and explores the graph within a radius
(1 + ``epsilon``) times the current k-th distance; ``search_edge_size`` limits the edges followed from each
node: -2 follows 30 + 10^(20 * epsilon) (NGT's dynamic rule, which ann-benchmarks searches with, here with
NGT's default coefficients: see below), 0 all of them, N > 0 the first N.

- NGT's search-coefficient, prefetch and accuracy-table optimisation that ``ngt reconstruct-graph`` also runs
  by default is NOT run: it draws queries with C's ``rand()`` and times searches, so the graph properties it
  writes changed between two identical builds (measured: dynamic base/rate 4/52, then 16/20), and it made
  the optimiser step take 30-35 s instead of 4.4 s on 3,000 x 16 vectors.
- PANNG (the pruned ANNG) is not offered: its pruning is ``ngt prune``, a command of NGT's C++ tool that the
  Python package neither ships nor exposes.
- Native distances, measured: ``euclidean`` -> 'L2' (L2 as is); ``angular`` -> 'Normalized L2' (NGT
  normalises vectors and queries; sqrt(2 - 2 cos), turned into 1 - cos = d^2 / 2; the distance
  ann-benchmarks' NGT-onng uses for angular data); ``ip`` -> 'Inner Product', which NGT answers as an L2
  search over vectors extended by sqrt(M - |x|^2), M the largest squared norm in the data, and the query by 0:
  d^2 = |q|^2 + M - 2 q.x. Turning d back into -q.x needs |q|^2, so for ``ip`` :meth:`query` also computes the
  queries' squared norms (one pass over Q) and returns them as an extra last column of D, which
  :meth:`convert` uses and drops.
- Threads: ``batch_insert(num_threads)`` for the build; the optimiser and ``batch_search`` use OpenMP, whose
  thread count is pinned through ``omp_set_num_threads`` of the libgomp that the ngt wheel bundles (re-pinned
  when :meth:`query` runs on another thread than the last pinning). A batch of at most 4 queries per thread
  runs on one thread (hnswlib's rule): waking the team for a single query cost more than the query.
- NGT has no seed. Builds measured byte-identical over repeated runs and over 1 and 2 build threads (20,000 x
  32); searches return the same answers for any thread count.
- NGT keeps the index in a directory: it is built in a temporary directory that lives as long as this object
  (removed by :meth:`close` or garbage collection); ``save`` packs that directory into ONE uncompressed tar
  with a small manifest (metric, dimension, build parameters, M), ``load`` unpacks it into a fresh temporary
  directory and opens it read-only. A file built with other settings is refused. ``index_bytes`` is the
  saved file's size.
- ``k`` larger than the number of vectors, or a search that finds fewer: the missing places are -1 / +inf.
- An all-zero vector or query under ``angular`` is an InputError: NGT cannot normalise it, and a zero query
  inside ``batch_search`` aborted the whole process (an exception thrown in its OpenMP loop). So for
  ``angular`` :meth:`query` first checks that every row of Q has a non-zero entry.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
import os
import shutil
import threading
from functools import partial
from typing import Any

import numpy as np

from ann_bench.backends._packdir import WorkDir, check_manifest, native_output_silenced, pack_dir, unpack_dir
from ann_bench.backends.base import Capabilities, Index, Param, SingleQuery
from ann_bench.distances import zero_rows
from ann_bench.errors import InputError

NGT_DISTANCES = {"euclidean": "L2", "angular": "Normalized L2", "ip": "Inner Product"}
_FORMAT = 1

_GOMP: list = []  # [ctypes library or None], resolved once


def _ngtpy():
    """ngtpy, refused in one line where usearch's binary was loaded first: measured, ngtpy's batch_insert then
    fails with an empty RuntimeError (the two extensions clash over C++ runtime symbols). ngtpy loaded first
    works with usearch loaded after it, so the usearch backend loads ngtpy first when it is installed; ann-bench
    runs each build in its own worker process, where only one library is loaded."""
    import sys

    if "ngtpy" not in sys.modules and "usearch.compiled" in sys.modules:
        raise InputError("onng[ngt]: ngtpy cannot work in a process that loaded usearch before it (their binaries "
                         "clash); import ngtpy (or ann_bench.backends.ngt) before usearch, or use another process")
    import ngtpy

    return ngtpy


def _gomp():
    """The OpenMP runtime that ngtpy uses (the wheel bundles its own libgomp), or None if none is found."""
    if not _GOMP:
        ngtpy = _ngtpy()

        lib = None
        here = os.path.dirname(ngtpy.__file__)
        candidates = sorted(glob.glob(os.path.join(here, "ngt.libs", "libgomp*.so*")))
        candidates += [name for name in (ctypes.util.find_library("gomp"),) if name]
        for candidate in candidates:
            try:
                lib = ctypes.CDLL(candidate)
                lib.omp_set_num_threads.argtypes = [ctypes.c_int]
                break
            except (OSError, AttributeError):
                lib = None
        _GOMP.append(lib)
    return _GOMP[0]


class NgtONNG(Index):
    name = "onng"
    impl = "ngt"
    requires = ("ngtpy",)
    install_hint = 'pip install -e ".[graphs]"'
    description = "optimised neighbourhood graph: ANNG with reconstructed out/in-degrees (Yahoo Japan NGT)"
    capabilities = Capabilities(notes=["NGT has no seed; builds measured identical for 1 and 2 threads"])
    build_params = (
        Param("edge_size", int, 100, "edges per node of the initial ANNG (edge_size_for_creation)", min=1, max=1000),
        Param("outdegree", int, 10, "shortest outgoing edges of each node kept in the ONNG", min=1, max=1000),
        Param("indegree", int, 120, "shortest incoming edges of each node added, reversed, to the ONNG",
              min=0, max=1000),
    )
    search_params = (
        Param("epsilon", float, 0.1, "search radius coefficient: explore within (1 + epsilon) x the k-th "
              "distance (NGT: > -1)", min=-0.99, max=10.0),
        Param("search_edge_size", int, -2, "edges followed per node: -2 = 30 + 10^(20 epsilon) (dynamic), "
              "0 = all, N = the first N", min=-2, max=10_000),
    )
    build_grid = {"edge_size": [100], "outdegree": [10], "indegree": [120]}
    search_grid = {
        "epsilon": [-0.4, -0.1, 0.0, 0.02, 0.03, 0.04, 0.05, 0.07, 0.1, 0.2],
        "search_edge_size": [-2],
    }
    effort_params = {"epsilon": +1}

    def __init__(self, metric: str, dim: int, threads: int = 1, seed: int = 0, **build_params: Any):
        super().__init__(metric, dim, threads, seed, **build_params)
        self.index = None
        self._dir: WorkDir | None = None
        self._n = 0
        self._max_magnitude = 0.0  # M, for 'ip'
        self._pinned: tuple[int, int] | None = None  # (thread id, count) of the last omp_set_num_threads

    # ---- threads --------------------------------------------------------------------------------------
    def _pin(self, threads: int | None = None) -> None:
        threads = self.threads if threads is None else threads
        lib = _gomp()
        if lib is not None:
            lib.omp_set_num_threads(threads)
        self._pinned = (threading.get_ident(), threads)

    def set_threads(self, threads: int) -> None:
        super().set_threads(threads)
        self._pin()

    # ---- build / save / load --------------------------------------------------------------------------
    def build(self, X: np.ndarray) -> None:
        ngtpy = _ngtpy()

        X = np.ascontiguousarray(X, dtype=np.float32)
        if X.ndim != 2 or X.shape[1] != self.dim:
            raise InputError(f"{self.label()}: expected vectors of shape (n, {self.dim}), got {X.shape}")
        if X.shape[0] == 0:
            raise InputError(f"{self.label()}: cannot build an index over 0 vectors")
        if self.metric == "angular":
            self._refuse_zero_rows(X, "vector")
        self.close()
        self._pin()
        work = WorkDir(self, "ann-bench-ngt-")
        anng, onng = str(work.path / "anng"), str(work.path / "onng")
        p = self.params
        # edge_size_for_search=0 while inserting, as NGT's ONNG recipe (ngt create -S 0).
        ngtpy.create(anng, self.dim, edge_size_for_creation=p["edge_size"], edge_size_for_search=0,
                     distance_type=NGT_DISTANCES[self.metric], object_type="Float")
        index = ngtpy.Index(anng, log_disabled=True)
        index.batch_insert(X, num_threads=self.threads)
        index.save()
        index.close()
        optimizer = ngtpy.Optimizer(num_of_outgoings=p["outdegree"], num_of_incomings=p["indegree"],
                                    log_disabled=True)
        optimizer.set_processing_modes(shortcut_reduction=True, search_parameter_optimization=False,
                                       prefetch_parameter_optimization=False, accuracy_table_generation=False)
        with native_output_silenced():  # it prints memory figures to stderr even with log_disabled
            optimizer.execute(anng, onng)
        shutil.rmtree(anng, ignore_errors=True)
        if self.metric == "ip":
            self._max_magnitude = float(_property(onng).get("MaxMagnitude", 0.0))
        self._dir, self._n = work, X.shape[0]
        self._open(onng)

    def _open(self, path: str) -> None:
        ngtpy = _ngtpy()

        self.index = ngtpy.Index(path, read_only=True, log_disabled=True)
        self._built = True
        self._apply_search_params(self.search_config or self.validate_search_params({}))

    def _manifest(self) -> dict[str, Any]:
        return {"format": _FORMAT, "backend": self.label(), "metric": self.metric, "dim": self.dim,
                **self.params, "n": self._n, "max_magnitude": self._max_magnitude}

    def save(self, path: str | os.PathLike) -> None:
        if self.index is None:
            raise InputError(f"{self.label()}: nothing to save; build or load the index first")
        pack_dir(self._dir.path / "onng", path, self._manifest())

    def load(self, path: str | os.PathLike) -> None:
        self.close()
        work = WorkDir(self, "ann-bench-ngt-")
        onng = work.path / "onng"
        onng.mkdir()
        try:
            saved = unpack_dir(path, onng, f"an {self.label()} index")
            check_manifest(self.label(), path, saved, {"format": _FORMAT, "backend": self.label(),
                                                       "metric": self.metric, "dim": self.dim, **self.params})
        except BaseException:
            work.close()
            raise
        self._dir, self._n, self._max_magnitude = work, int(saved["n"]), float(saved["max_magnitude"])
        self._pin()
        self._open(str(onng))

    def close(self) -> None:
        """Close the NGT index and remove its temporary directory (also done when this object is collected)."""
        if self.index is not None:
            self.index.close()
            self.index = None
        if self._dir is not None:
            self._dir.close()
            self._dir = None
        self._built = False

    def _refuse_zero_rows(self, X: np.ndarray, what: str) -> None:
        zero = zero_rows(X)
        if zero.size:
            raise InputError(f"{self.label()}: {what} {int(zero[0])} is all zeros, which has no angle; NGT's "
                             f"normalised distance would abort the process on it")

    # ---- search ---------------------------------------------------------------------------------------
    def _apply_search_params(self, params: dict[str, Any]) -> None:
        if self.index is not None:
            self.index.set(epsilon=params["epsilon"], edge_size=params["search_edge_size"])

    def search_skip_reason(self, search: dict[str, Any], k: int) -> str | None:
        if search["search_edge_size"] == -1:
            return ("search_edge_size=-1 reads the index's edge_size_for_search, 0 here: the search of "
                    "search_edge_size=0")
        return None

    def query(self, Q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(D, I) with NGT's distances; for ``ip`` D has one more column, the queries' squared norms."""
        Q = self._queries(Q, len(Q))
        results = _ngtpy().BatchResults()
        self.index.batch_search(Q, results, k)
        return self._unpack([results], Q, k)

    def single_query(self, Q: np.ndarray, k: int):
        """The bare loop's call (a BatchResults, ``batch_search`` into it), unpacked after the timed run."""
        if not (Q.dtype == np.float32 and Q.flags.c_contiguous):  # the rows timed are Q's own
            return super().single_query(Q, k)
        Q = self._queries(Q, 1)
        return SingleQuery(partial(_search_into_new, self.index.batch_search, _ngtpy().BatchResults, k=k),
                           partial(self._unpack, Q=Q, k=k))

    def _queries(self, Q: np.ndarray, batch: int) -> np.ndarray:
        """Q checked and float32, and this thread's OpenMP team sized for batches of ``batch`` queries."""
        Q = np.ascontiguousarray(Q, dtype=np.float32)
        self.check_shape(Q)
        if self.metric == "angular" and not Q.any(axis=1).all():
            self._refuse_zero_rows(Q, "query")
        threads = _threads_for(batch, self.threads)
        if self._pinned != (threading.get_ident(), threads):
            self._pin(threads)
        return Q

    def _unpack(self, batches: list, Q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The BatchResults of consecutive batches of Q's rows -> (D, I) for all of Q (see :meth:`query`)."""
        nq = Q.shape[0]
        ids = np.concatenate([b.get_indexed_ids() for b in batches])
        dists = np.concatenate([b.get_indexed_distances() for b in batches])
        if ids.size == nq * k:  # every query found k: the usual case
            I, D = ids.reshape(nq, k), dists.reshape(nq, k)
        else:
            I = np.full((nq, k), -1, dtype=np.int32)
            D = np.full((nq, k), np.inf, dtype=np.float32)
            counts = np.concatenate([np.diff(b.get_index().astype(np.int64)) for b in batches])
            rows = np.repeat(np.arange(nq), counts)
            cols = np.arange(ids.size) - np.repeat(np.cumsum(counts) - counts, counts)
            I[rows, cols], D[rows, cols] = ids, dists
        if self.metric == "ip":
            D = np.column_stack([D, np.einsum("ij,ij->i", Q, Q, dtype=np.float64)])
        return D, I

    def convert(self, D: np.ndarray, I: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        D = np.asarray(D, dtype=np.float64)
        if self.metric == "angular":
            D = np.square(D) / 2  # sqrt(2 - 2 cos) -> 1 - cos
        elif self.metric == "ip":
            q2 = D[:, -1:]
            D = (np.square(D[:, :-1]) - q2 - self._max_magnitude) / 2  # d^2 = |q|^2 + M - 2 q.x -> -q.x
        return self.pad(D, I)


def _search_into_new(batch_search, results_type, q: np.ndarray, k: int):
    """One ``batch_search`` into a fresh results object, returned: single mode's timed call."""
    results = results_type()
    batch_search(q, results, k)
    return results


def _threads_for(nq: int, threads: int) -> int:
    """OpenMP threads for a batch of ``nq`` queries: one when there are at most 4 queries per thread (hnswlib's
    rule), as waking a team costs more than such a batch: single queries with 2 threads ran 4x to 90x slower
    than with 1 (5,000 x 16, a loaded 2-core machine)."""
    return 1 if nq <= 4 * threads else threads


def _property(path: str) -> dict[str, str]:
    """NGT's property file ``prf`` of the index at ``path``: name -> value (text)."""
    out = {}
    with open(os.path.join(path, "prf"), encoding="utf-8", errors="replace") as fh:
        for line in fh:
            key, sep, value = line.rstrip("\n").partition("\t")
            if sep:
                out[key] = value
    return out

