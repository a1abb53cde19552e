"""NN-descent k-NN graphs through PyNNDescent (build n_neighbors, diversify_prob, pruning_degree_multiplier,
low_memory; search epsilon).

Dong, Charikar, Li (2011), "Efficient k-nearest neighbor graph construction for generic similarity measures":
the k-NN graph of the data is refined from a random-projection-forest start by NN-descent (a neighbour of a
neighbour is likely a neighbour), ``n_neighbors`` per point. ``prepare`` then turns it into a search graph:
each point's edges are diversified (an edge is dropped, with probability ``diversify_prob``, when a nearer kept
neighbour is nearer to its end), reverse edges are added and every degree is capped at
round(``pruning_degree_multiplier`` x ``n_neighbors``); a "hub" tree over the data gives each query its
starting points. A query is a best-first search that keeps exploring candidates within ``epsilon`` x the gap
between the current k-th best distance and the graph's smallest edge, so a larger ``epsilon`` searches more.
``prepare`` runs in :meth:`build` (it is part of building the index), never in a timed query.

Native distances, measured with pynndescent 0.7.0 (converted in :meth:`convert`):

- ``euclidean``: L2 (squared L2 while searching, square-rooted by pynndescent).
- ``cosine`` (our ``angular``): 1 - cos (pynndescent normalises a copy of the data; queries in the search).
- ``inner_product`` (our ``ip``): -dot. pynndescent's ``dot`` is NOT an inner product: it normalises the
  data and returns 1 - cos (id recall@10 0.19 against the -dot truth on a clustered set), so ``ip`` uses
  ``inner_product`` (recall 0.99 there at epsilon 0.1).

Traps (measured):

- ``cosine`` and ``inner_product`` search with 1/dot-like proxies that treat every pair with cos <= 0
  (dot <= 0) as infinitely far: such neighbours are found only when nothing better is left, come back in
  no particular order among themselves, and with distance 1.0 (``angular``) or 0.0 (``ip``) instead of their
  true 1 - cos or -dot. Recall (computed from exact distances of the ids) is unaffected by those values.
- Slots the search could not fill come back as the id of the last point in pynndescent's internal order,
  repeated, not -1 (distance +inf in ``euclidean``, but 1.0 / 0.0 in ``angular`` / ``ip`` after its
  correction). :meth:`query` asks for at most n neighbours (so k > n never reaches pynndescent) and
  :meth:`convert` turns +inf distances and repeated ids back into -1 / +inf. A single unfilled slot in
  ``angular`` / ``ip`` holding an id not otherwise returned cannot be told apart (only when fewer than k
  points are reachable from a query's starting points, k <= n).
- NN-descent is numba code whose kernels take the distance function as an argument and cannot be cached on
  disk: the first build in a process compiles for 10-50 s (measured per metric on a busy 2-core machine;
euclidean the longest). :meth:`warm_up` builds and
  searches a small index of the same metric and parameters first, so that is never build time.
  ``inner_product`` has no cached search kernel: ``prepare`` compiles one for each index (1.7 s measured at
  3k x 16), which is inside build_s and inside :meth:`load`.
- On well-separated clusters the search graph falls apart into one piece per cluster, and a query whose
  tree leaf lies in another cluster finds none of its neighbours whatever ``epsilon``: on a 10-cluster
  3k x 16 synthetic set, n_neighbors 20 gave id recall@10 0.95-0.96 with some queries at 0 for every
  epsilon from 0.1 to 1.0 (euclidean); n_neighbors 30 gave 0.993-1.0 with none at 0 (``ip`` still had one).
- Queries whose tree leaf holds fewer than min(k, n_neighbors) points are topped up with random points
  from a generator that restarts at every call but advances along a batch, so a query can get other
  neighbours alone than in a batch (1 query in 100 with ``inner_product``, measured). Repeating a call
  gives the same answer.

Threads and seeds: ``random_state`` is ``seed`` (measured: the search graph changes with it where NN-descent
stops short of the exact k-NN graph, e.g. n_neighbors 5 on 3k x 16; on easy data it converges to the same
graph for every seed). The forest, NN-descent and ``prepare`` run on ``threads`` numba threads (``n_jobs``;
capped at numba's thread count, i.e. the core count). The graph depends on the build's thread count:
measured at 20k x 16 (n_neighbors 10), two 2-thread builds were identical, and differed from the one-thread
build. With ``threads`` > 1 a batch of queries runs in parallel (``parallel_batch_queries``, numba threads;
the search function is set up again when :meth:`set_threads` crosses 1); with one thread the serial kernel
is used. Both gave identical answers on the test set (the random top-ups above could differ). ``ip``
searches on one thread whatever ``threads`` says: pynndescent 0.7.0's parallel search for ``inner_product``
fails to compile (numba TypingError "heap type must be the same as item type" in ``heappush``, measured),
so only its build uses the threads.

Save/load never unpickles: :meth:`save` writes the prepared index's state (the one pickle would write: the
search graph as CSR arrays, the hub tree's arrays, the reordered data, the random states and the settings)
into one ``.npz`` with JSON for the scalars, and :meth:`load` restores it through the class's own
``__setstate__``, which rebuilds the search functions without running NN-descent or ``prepare`` again.
The file records the pynndescent version and is refused by another version. The NN-descent graph itself is
not kept (``compressed=True``, as ann-benchmarks builds it): it is needed only to update an index.
``index_bytes`` is the saved file's size.
"""

from __future__ import annotations

import json
import os
from functools import partial
from typing import Any

import numpy as np

from ann_bench.backends.base import Capabilities, Index, Param, copied_pairs
from ann_bench.errors import InputError

PYNND_METRICS = {"euclidean": "euclidean", "angular": "cosine", "ip": "inner_product"}
_FORMAT = 1  # layout of the saved file


def _library_version() -> str:
    import importlib.metadata

    return importlib.metadata.version("pynndescent")


def _numba_threads(threads: int) -> int:
    """``threads`` capped at the number of threads numba was started with (it refuses more)."""
    import numba

    return max(1, min(int(threads), int(numba.config.NUMBA_NUM_THREADS)))


class PyNNDescent(Index):
    name = "nndescent"
    impl = "pynndescent"
    requires = ("pynndescent",)
    install_hint = 'pip install -e ".[graphs]"'
    description = "NN-descent k-NN graph, diversified, searched from a hub tree (PyNNDescent)"
    capabilities = Capabilities(notes=["the graph depends on the number of build threads",
                                       "the first build in a process compiles numba kernels (warm_up pays it)",
                                       "ip searches on one thread (pynndescent's parallel search fails for it)"])
    build_params = (
        Param("n_neighbors", int, 30, "neighbours per point in the k-NN graph NN-descent builds", min=2,
              max=1000),
        Param("diversify_prob", float, 1.0, "probability of dropping an edge a nearer kept neighbour makes "
              "redundant (0: keep every edge)", min=0.0, max=1.0),
        Param("pruning_degree_multiplier", float, 1.5, "search-graph degree cap, in units of n_neighbors",
              min=0.05, max=100.0),
        Param("low_memory", bool, True, "NN-descent's lower-memory, slower variant"),
    )
    search_params = (Param("epsilon", float, 0.1, "search slack: candidates within epsilon x (k-th best - "
                           "smallest edge) of the k-th best are explored", min=0.0, max=10.0),)
    build_grid = {"n_neighbors": [30, 60], "diversify_prob": [1.0], "pruning_degree_multiplier": [1.5],
                  "low_memory": [True]}
    search_grid = {"epsilon": [0.0, 0.02, 0.04, 0.08, 0.12, 0.16, 0.2, 0.24, 0.32]}
    effort_params = {"epsilon": +1}

    def __init__(self, metric: str, dim: int, threads: int = 1, seed: int = 0, **build_params: Any):
        super().__init__(metric, dim, threads, seed, **build_params)
        self.index = None
        self._n = 0

    @classmethod
    def validate_build_params(cls, params: dict[str, Any]) -> dict[str, Any]:
        out = super().validate_build_params(params)
        if round(out["pruning_degree_multiplier"] * out["n_neighbors"]) < 1:
            raise InputError(f"{cls.label()}: pruning_degree_multiplier={out['pruning_degree_multiplier']} x "
                             f"n_neighbors={out['n_neighbors']} caps every degree at 0; use a product >= 1")
        return out

    @classmethod
    def check_data(cls, build: dict[str, Any], n: int, dim: int) -> None:
        if build["n_neighbors"] >= n:
            raise InputError(f"{cls.label()}: n_neighbors={build['n_neighbors']} needs more than "
                             f"{build['n_neighbors']} vectors, the set has {n}; use n_neighbors < {n}")

    # ---- build ------------------------------------------------------------------------------------------
    def _check(self, X: np.ndarray) -> np.ndarray:
        X = np.ascontiguousarray(X, dtype=np.float32)
        if X.ndim != 2 or X.shape[1] != self.dim:
            raise InputError(f"{self.label()}: expected vectors of shape (n, {self.dim}), got {X.shape}")
        return X

    def warm_up(self) -> None:
        """Compile NN-descent, ``prepare`` and both search kernels (serial and parallel) for this metric and
        these parameters on a small random set: the first build of a process compiled for 10-50 s (measured),
        which must not land in build_s."""
        n = max(300, 4 * self.params["n_neighbors"])
        X = np.random.default_rng(0).standard_normal((n, self.dim)).astype(np.float32)
        tiny = type(self)(self.metric, self.dim, threads=self.threads, seed=self.seed, **self.params)
        tiny.build(X)
        for threads in (self.threads, 1 if self.threads > 1 else 2):
            tiny.set_threads(threads)
            tiny.search(X[:4], 10)
        self._pin_numba_threads()  # the tiny index pinned them for its last thread count

    def build(self, X: np.ndarray) -> None:
        import pynndescent

        X = self._check(X)
        self.check_data(self.params, X.shape[0], self.dim)
        p = self.params
        index = pynndescent.NNDescent(
            X, metric=PYNND_METRICS[self.metric], n_neighbors=p["n_neighbors"],
            diversify_prob=p["diversify_prob"], pruning_degree_multiplier=p["pruning_degree_multiplier"],
            low_memory=p["low_memory"], random_state=self.seed, n_jobs=_numba_threads(self.threads),
            compressed=True, parallel_batch_queries=self._parallel_queries(),
        )
        index.prepare()  # the search graph, the hub tree and the search function: part of the build
        self._install(index, X.shape[0])

    def _install(self, index, n: int) -> None:
        self.index = index
        self._n = int(n)
        self._built = True
        self._pin_numba_threads()
        self._apply_search_params(self.search_config or self.validate_search_params({}))

    def _parallel_queries(self) -> bool:
        """Whether batches are searched on numba threads: with threads > 1, except for ``ip``, whose parallel
        search function pynndescent 0.7.0 cannot compile (numba TypingError in heappush, measured)."""
        return self.threads > 1 and self.metric != "ip"

    def _pin_numba_threads(self) -> None:
        import numba

        numba.set_num_threads(_numba_threads(self.threads))  # the calling thread's count, used by queries

    def set_threads(self, threads: int) -> None:
        super().set_threads(threads)
        if self.index is None:
            return
        parallel = self._parallel_queries()
        if self.index.parallel_batch_queries != parallel:
            # The search function is chosen by this flag when it is set up; the pickle protocol's round trip
            # (no pickling: the state stays in memory) sets it up again, as unpickling would.
            state = self.index.__getstate__()
            state["parallel_batch_queries"] = parallel
            self.index.__setstate__(state)
        self.index.n_jobs = _numba_threads(self.threads)
        self._pin_numba_threads()

    def _apply_search_params(self, params: dict[str, Any]) -> None:
        pass  # epsilon is passed to each query

    # ---- search -----------------------------------------------------------------------------------------
    def query(self, Q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(D, I), both (nq, k): pynndescent's distances and ids; columns beyond n are -1 / +inf."""
        self.check_shape(Q, "nq")
        epsilon = self.search_config.get("epsilon", self.search_params[0].default)
        if k <= self._n:
            I, D = self.index.query(Q, k=k, epsilon=epsilon)
            return D, I
        I, D = self.index.query(Q, k=self._n, epsilon=epsilon)  # pynndescent cannot return more than n
        pad = k - self._n
        return (np.pad(D, ((0, 0), (0, pad)), constant_values=np.inf),
                np.pad(I, ((0, 0), (0, pad)), constant_values=-1))

    def single_query(self, Q: np.ndarray, k: int):
        if k > self._n:
            return super().single_query(Q, k)
        self.check_shape(Q, "nq")
        epsilon = self.search_config.get("epsilon", self.search_params[0].default)
        return copied_pairs(partial(self.index.query, k=k, epsilon=epsilon), Q.shape[0], swap=True)

    def convert(self, D: np.ndarray, I: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        I = np.array(I, dtype=np.int64, copy=True)
        I[np.isinf(np.asarray(D))] = -1  # unfilled slots, euclidean
        # Unfilled slots repeat one id (see the module docstring): a repeat of an id earlier in its row is one.
        order = np.argsort(I, axis=1, kind="stable")
        ranked = np.take_along_axis(I, order, axis=1)
        repeat = np.zeros(I.shape, dtype=bool)
        repeat[:, 1:] = (ranked[:, 1:] == ranked[:, :-1]) & (ranked[:, 1:] >= 0)
        if repeat.any():
            mask = np.zeros(I.shape, dtype=bool)
            np.put_along_axis(mask, order, repeat, axis=1)  # the later positions of each repeated id
            I[mask] = -1
        return self.pad(D, I)

    # ---- persistence ------------------------------------------------------------------------------------
    def _identity(self) -> dict[str, Any]:
        return {"metric": self.metric, "dim": self.dim, "seed": self.seed, **self.params}

    def save(self, path: str | os.PathLike) -> None:
        arrays: dict[str, np.ndarray] = {}
        state = {key: _encode(value, key, arrays, self.label()) for key, value in self.index.__getstate__().items()}
        meta = {"version": _library_version(), "n": self._n, "identity": self._identity(),
                "state": {key: value for key, value in state.items() if value is not None}}
        with open(path, "wb") as fh:  # a file object: np.savez would append ".npz" to a bare path
            np.savez(fh, format=np.int64(_FORMAT), meta=np.str_(json.dumps(meta)), **arrays)

    def load(self, path: str | os.PathLike) -> None:
        import pynndescent

        with np.load(path, allow_pickle=False) as z:
            if "format" not in z or int(z["format"]) != _FORMAT or "meta" not in z:
                raise InputError(f"{self.label()}: {os.fspath(path)!r} is not an ann-bench pynndescent index file "
                                 f"(format {_FORMAT}); rebuild the index")
            meta = json.loads(str(z["meta"]))
            if meta["version"] != _library_version():
                raise InputError(f"{self.label()}: {os.fspath(path)!r} was saved by pynndescent {meta['version']}, "
                                 f"this is {_library_version()}; rebuild the index")
            mine = self._identity()
            wrong = [f"{key}={meta['identity'].get(key)!r} (not {value!r})" for key, value in mine.items()
                     if meta["identity"].get(key) != value]
            if wrong:
                raise InputError(f"{self.label()}: {os.fspath(path)!r} was built with {', '.join(wrong)}")
            state = {key: _decode(value, z) for key, value in meta["state"].items()}
        state["_distance_correction"] = None  # as NNDescent.__init__ starts; __setstate__ sets the metric's
        state["parallel_batch_queries"] = self._parallel_queries()
        state["n_jobs"] = _numba_threads(self.threads)
        index = pynndescent.NNDescent.__new__(pynndescent.NNDescent)
        index.__setstate__(state)  # sets up the distance and search functions again; no NN-descent, no prepare
        self._install(index, meta["n"])


# ---- the state as JSON + arrays -----------------------------------------------------------------------------
def _encode(value: Any, key: str, arrays: dict[str, np.ndarray], label: str) -> Any:
    """A JSON description of one attribute of NNDescent's pickle state, its arrays put into ``arrays``;
    None for a function (set up again by ``__setstate__``). InputError for anything else."""
    from scipy import sparse

    if isinstance(value, type):  # _input_dtype: np.float32
        return {"dtype": np.dtype(value).str}
    if value is None or isinstance(value, (bool, int, float, str)):
        return {"value": value}
    if isinstance(value, np.ndarray):
        if value.dtype.hasobject:
            raise InputError(f"{label}: cannot save the index: its attribute {key!r} holds Python objects")
        name = f"a{len(arrays)}"
        arrays[name] = value
        return {"array": name}
    if isinstance(value, np.generic):
        name = f"a{len(arrays)}"
        arrays[name] = np.asarray(value)
        return {"scalar": name}
    if isinstance(value, (tuple, list)):
        return {"tuple" if isinstance(value, tuple) else "list":
                [_encode(item, key, arrays, label) for item in value]}
    if sparse.issparse(value) and value.format == "csr":
        return {"csr": [_encode(part, key, arrays, label) for part in (value.data, value.indices, value.indptr)],
                "shape": list(value.shape)}
    if callable(value):
        return None
    raise InputError(f"{label}: cannot save the index: pynndescent {_library_version()} keeps {key!r} as a "
                     f"{type(value).__name__}, which ann-bench does not know how to store")


def _decode(desc: dict[str, Any], z) -> Any:
    """The value :func:`_encode` described, its arrays read from the open npz ``z``."""
    from scipy.sparse import csr_array

    if "dtype" in desc:
        return np.dtype(desc["dtype"]).type
    if "value" in desc:
        return desc["value"]
    if "array" in desc:
        return np.ascontiguousarray(z[desc["array"]])
    if "scalar" in desc:
        return z[desc["scalar"]][()]
    if "tuple" in desc:
        return tuple(_decode(item, z) for item in desc["tuple"])
    if "list" in desc:
        return [_decode(item, z) for item in desc["list"]]
    if "csr" in desc:
        data, indices, indptr = (_decode(part, z) for part in desc["csr"])
        matrix = csr_array((data, indices, indptr), shape=tuple(desc["shape"]))
        matrix.has_sorted_indices = True
        return matrix
    raise InputError(f"unreadable pynndescent state entry {desc!r}; rebuild the index")
