"""Hierarchical Navigable Small World graphs through USearch (Unum): build M, ef_construction, dtype; search ef.

A third implementation of ``hnsw``, beside hnswlib and faiss: the same algorithm in another code base, with
SIMD distance kernels and a choice of storage precision. The parameters take the names the other ``hnsw``
implementations use, so one ``--build M=16`` reaches all three: ``M`` is USearch's ``connectivity`` (links
per node per layer; 2 * M on the base layer), ``ef_construction`` its ``expansion_add`` (default 128), ``ef``
its ``expansion_search`` (default 64).

Native distances, measured with usearch 2.26.6 and converted to the dataset's metric in :meth:`convert`:
``l2sq`` is squared L2 (square-rooted for ``euclidean``), ``cos`` is 1 - cos (``angular`` as is), ``ip`` is
1 - dot (``ip`` = -dot, so 1 is subtracted). ``cos`` treats a zero vector as at distance 1 from any other
and 0 from another zero vector.

Storage (``dtype``): ``f32`` keeps the vectors as given; ``f16`` rounds each component to half precision
(half the vector bytes; components beyond +-65504 overflow to inf); ``i8`` stores one byte a component.
USearch's ``i8`` normalises every vector to unit length before quantising each component to round(127 x)
(measured: [0.5, 0] and [2, 0] are both stored as [127, 0], for every metric), so it keeps only directions:
it is exact in ranking only for ``angular`` and is refused for ``euclidean`` and ``ip``. Even there it
costs accuracy, more as the dimension grows and each unit-vector component gets fewer of the 255 levels:
on a clustered synthetic 10k set (M 16, ef_construction 200, ef 200), id recall@10 for angular was 0.9995 /
0.9985 / 0.9525 (f32 / f16 / i8) at dim 16 and 1.0 / 0.9995 / 0.894 at dim 96; the index took 2.13 / 1.81 /
1.65 MB and 5.33 / 3.41 / 2.45 MB (the graph's links are the same in all three). Distances of an ``f16`` or
``i8`` index are those between the stored (rounded) vectors.

Traps (measured):

- ``Index.search`` of one query returns a ``Matches`` holding only the results found (1-d arrays), of a
  batch a ``BatchMatches`` of (nq, k) arrays whose unused slots hold key 0 and distance NaN (the docstring
  says "max distances"); :meth:`query` gives one row the batch's shape and :meth:`convert` turns NaN or
  float32-max distances into -1 / +inf.
- ``expansion_search < k`` searches exactly as ``expansion_search = k`` (identical ids for ef 1 ... 10 at
  k = 10), so such configurations are skipped as duplicates, as for hnswlib.
- Queries go through the public ``Index.search``; its Python wrapper costs ~6 us a call over the compiled
  ``search_many`` it wraps (median 24 vs 18 us a single query, 2k x 8-d, ef 20), which single-mode latency
  includes, as a user of the Python API would pay it.
- ``Index.restore`` returns None for a missing file (no exception); :meth:`load` turns that into an error.
  ``ef_construction`` (expansion_add) and ``ef`` (expansion_search) are not stored in the file.

Threads and seeds: ``add`` and ``search`` take a thread count per call (0 would mean every core; we pass
``threads``). USearch draws node levels from its own generator and has no seed parameter: a one-thread build
is deterministic (same ids on every run) but ``seed`` does not change it; a multi-threaded build inserts in
a varying order and is not deterministic. Search threads do not change results.

``save`` writes one file (``Index.save``); ``load`` reads it back into memory (``Index.restore``); the
index size is ``serialized_length``, the saved file's size in bytes.
"""

from __future__ import annotations

import os
from functools import partial
from typing import Any

import numpy as np

from ann_bench.backends.base import UPDATES_BOTH, Capabilities, Index, Param, SingleQuery
from ann_bench.distances import from_squared_l2
from ann_bench.errors import InputError

USEARCH_METRICS = {"euclidean": "l2sq", "angular": "cos", "ip": "ip"}
DTYPES = ("f32", "f16", "i8")
_FLOAT32_MAX = np.finfo(np.float32).max


def _preload_ngtpy() -> None:
    """Load ngtpy (when installed) before usearch's binary: loaded after usearch, ngtpy's inserts fail (a clash of
    C++ runtime symbols between the two wheels, measured with usearch 2.26.6 and ngt 2.8.0); loaded first, both
    work. Matters only where one process uses both (the test suite, a user's script): `run` builds each index in
    its own worker process."""
    import importlib.util
    import sys

    if "usearch.compiled" not in sys.modules and "ngtpy" not in sys.modules \
            and importlib.util.find_spec("ngtpy") is not None:
        import ngtpy  # noqa: F401


def _progress_callback(progress):
    """USearch's progress callback for ``progress(done, total)``, or None. USearch checks the callback's
    annotations (``(int, int) -> bool``) at run time, which this module's postponed annotations would hide:
    they are set as types here."""
    if progress is None:
        return None

    def callback(processed, total):
        progress(processed, total)
        return True  # go on

    callback.__annotations__ = {"processed": int, "total": int, "return": bool}
    return callback


class USearchHNSW(Index):
    name = "hnsw"
    impl = "usearch"
    requires = ("usearch",)
    install_hint = 'pip install -e ".[graphs]"'
    description = "hierarchical navigable small world graph (USearch), f32/f16/i8 storage"
    capabilities = Capabilities(
        notes=["the graph does not depend on the seed (USearch has none)",
               "a multi-threaded build is not deterministic",
               "dtype=i8 normalises the vectors: angular only"],
    )
    build_params = (
        Param("M", int, 16, "links per node per layer, USearch's connectivity (2*M on the base layer)", min=2, max=512),
        Param("ef_construction", int, 128, "candidate list size while inserting (USearch's expansion_add)",
              min=1, max=100_000),
        Param("dtype", str, "f32", "storage precision of the vectors (f16, i8: smaller index, lower accuracy; "
              "i8 for angular only)", choices=DTYPES),
    )
    search_params = (Param("ef", int, 64, "expansion_search: candidate list size while searching",
                           min=1, max=1_000_000),)
    build_grid = {"M": [16, 32], "ef_construction": [200], "dtype": ["f32"]}
    search_grid = {"ef": [10, 20, 40, 80, 160, 320, 640]}
    effort_params = {"ef": +1}

    def __init__(self, metric: str, dim: int, threads: int = 1, seed: int = 0, **build_params: Any):
        super().__init__(metric, dim, threads, seed, **build_params)
        if self.params["dtype"] == "i8" and metric != "angular":
            raise InputError(f"{self.label()}: dtype=i8 normalises every vector to unit length, so it cannot "
                             f"search {metric!r}; use dtype=f16 (or f32), or an angular set")
        self.index = None

    def build(self, X: np.ndarray) -> None:
        _preload_ngtpy()
        from usearch.index import Index as USearchIndex

        X = np.ascontiguousarray(X, dtype=np.float32)
        if X.ndim != 2 or X.shape[1] != self.dim:
            raise InputError(f"{self.label()}: expected vectors of shape (n, {self.dim}), got {X.shape}")
        index = USearchIndex(
            ndim=self.dim, metric=USEARCH_METRICS[self.metric], dtype=self.params["dtype"],
            connectivity=self.params["M"], expansion_add=self.params["ef_construction"],
        )
        index.add(np.arange(X.shape[0], dtype=np.uint64), X, copy=True, threads=self.threads,
                  progress=_progress_callback(self.progress))
        self.index = index
        self._built = True
        self._apply_search_params(self.search_config or self.validate_search_params({}))

    updates = UPDATES_BOTH
    update_notes = ("Index.add (capacity grows on its own); Index.remove(compact=False): the item is marked "
                    "removed, its links stay (compact=True, which removes them, is not used), and searches never "
                    "return it")

    def add(self, X: np.ndarray, ids: np.ndarray) -> None:
        self.check_shape(X)
        self.index.add(np.asarray(ids, dtype=np.uint64), np.ascontiguousarray(X, dtype=np.float32), copy=True,
                       threads=self.threads)

    def remove(self, ids: np.ndarray) -> None:
        self.index.remove(np.asarray(ids, dtype=np.uint64), threads=self.threads)

    def search_skip_reason(self, search: dict[str, Any], k: int) -> str | None:
        if search["ef"] < k:
            return f"ef={search['ef']} < k={k}: usearch searches with ef=k"
        return None

    def _apply_search_params(self, params: dict[str, Any]) -> None:
        if self.index is not None:
            self.index.expansion_search = params["ef"]

    def query(self, Q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(D, I), both (nq, k): USearch's native distances (NaN where nothing was found) and uint64 keys."""
        m = self.index.search(Q, k, threads=self.threads)
        if Q.shape[0] != 1:
            return m.distances, m.keys
        D, I = _rows(1, k)
        _put_match(D, I, 0, m)
        return D, I

    def single_query(self, Q: np.ndarray, k: int) -> SingleQuery:
        """``search`` on each row, its answer copied out and the ``Matches`` dropped at once (each holds ~530 B;
        keeping 10,000 cost ~1.5 % of single-query QPS, measured on 20k x 128)."""
        D, I = _rows(Q.shape[0], k)
        return SingleQuery(partial(self.index.search, count=k, threads=self.threads), lambda kept: (D, I),
                           partial(_put_match, D, I))

    def convert(self, D: np.ndarray, I: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        D = np.asarray(D, dtype=np.float32)
        missing = np.isnan(D) | (D >= _FLOAT32_MAX)  # USearch's unused slots (NaN measured; max documented)
        I = np.where(missing, -1, np.asarray(I).astype(np.int64))
        D = np.where(missing, 0, D)
        if self.metric == "euclidean":
            D = from_squared_l2(self.metric, D)
        elif self.metric == "ip":
            D = D - 1.0  # usearch 'ip' is 1 - dot; ours is -dot
        return self.pad(D, I)

    def save(self, path: str | os.PathLike) -> None:
        self.index.save(os.fspath(path))

    def load(self, path: str | os.PathLike) -> None:
        _preload_ngtpy()
        from usearch.index import Index as USearchIndex
        from usearch.index import MetricKind, ScalarKind

        index = USearchIndex.restore(os.fspath(path), view=False)
        if index is None:  # usearch returns None for a file it cannot open
            raise InputError(f"{self.label()}: cannot open {os.fspath(path)!r} as a USearch index")
        expected = {
            "dim": (index.ndim, self.dim),
            "metric": (index.metric_kind, {"l2sq": MetricKind.L2sq, "cos": MetricKind.Cos,
                                           "ip": MetricKind.IP}[USEARCH_METRICS[self.metric]]),
            "dtype": (index.dtype, getattr(ScalarKind, self.params["dtype"].upper())),
            "M": (index.connectivity, self.params["M"]),
        }
        for what, (found, wanted) in expected.items():
            if found != wanted:
                raise InputError(f"{self.label()}: {os.fspath(path)!r} was built with {what}={_plain(found)} "
                                 f"(not {_plain(wanted)}); build it again with these parameters")
        self.index = index
        self._built = True
        self._apply_search_params(self.search_config or self.validate_search_params({}))

    def index_bytes(self) -> int:
        """The size of the file :meth:`save` writes (``serialized_length``), without writing it."""
        return int(self.index.serialized_length)


def _plain(value: Any) -> str:
    """'L2sq' for MetricKind.L2sq, 'f16' for ScalarKind.F16, str(value) otherwise."""
    name = getattr(value, "name", None)
    if name is None:
        return str(value)
    return name.lower() if name[0] in "FIB" and name[1:].isdigit() else name


def _rows(nq: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(D, I) for nq queries, as USearch leaves unused slots: NaN distance, key 0."""
    return np.full((nq, k), np.nan, dtype=np.float32), np.zeros((nq, k), dtype=np.uint64)


def _put_match(D: np.ndarray, I: np.ndarray, row: int, m) -> None:
    """One query's Matches (1-d, the results found only) into row ``row`` of D and I."""
    found = m.keys.shape[0]
    D[row, :found] = m.distances
    I[row, :found] = m.keys
