"""k-d tree through scipy.spatial.cKDTree (build leafsize; search eps, the (1 + eps)-approximate query).

A k-d tree splits space one coordinate at a time; its pruning works in low dimension and degrades toward a
scan of every leaf above about 20 dimensions, where it is mostly useful as a second exact baseline
(``eps=0`` is exact) and as a reminder of why graphs and quantisers exist. With ``eps > 0`` a branch is
skipped unless it may hold a point nearer than (true k-th distance) / (1 + eps): every returned distance is
within a factor 1 + eps of the true one.

- Metrics: ``euclidean`` (native L2) and ``angular`` (L2 on normalised vectors; 1 - cos = L2^2 / 2). No
  ``ip``: an inner product is not a metric a k-d tree can prune with.
- cKDTree keeps its own float64 copy of the data (twice the memory of the float32 input) and converts each
  query batch to float64.
- When fewer than k points are found (k > n), cKDTree reports index n and distance +inf; these become -1.
- ``query(..., workers=threads)`` splits a batch over threads; the build is single-threaded.
- save/load write the tree's own arrays (cKDTree's pickle state) to an ``.npz`` read with ``allow_pickle=False``:
  a saved index (``ann-bench index build``) may come from elsewhere, and loading it must run no code.
"""

from __future__ import annotations

import io
import os
from typing import Any

import numpy as np

from ann_bench.backends.base import Capabilities, Index, Param
from ann_bench.distances import normalized
from ann_bench.errors import InputError


_FORMAT = 1  # of the saved .npz


class ScipyKDTree(Index):
    name = "kdtree"
    impl = "scipy"
    requires = ("scipy",)
    install_hint = "pip install scipy"
    description = "k-d tree, exact or (1+eps)-approximate (scipy cKDTree); slow above ~20 dimensions"
    capabilities = Capabilities(
        metrics=("euclidean", "angular"),
        notes=["build is single-threaded; queries use the thread count",
               "keeps a float64 copy of the data"],
    )
    build_params = (Param("leafsize", int, 16, "points per leaf, where the tree stops splitting", min=1,
                          max=1_000_000),)
    search_params = (Param("eps", float, 0.0, "approximation: distances within a factor 1 + eps; 0 = exact",
                           min=0.0, max=1e6),)
    build_grid = {"leafsize": [16, 64]}
    search_grid = {"eps": [0.0, 0.5, 1.0, 2.0, 4.0, 8.0]}
    effort_params = {"eps": -1}  # eps = 0 is exact: the most effort

    def __init__(self, metric: str, dim: int, threads: int = 1, seed: int = 0, **build_params: Any):
        super().__init__(metric, dim, threads, seed, **build_params)
        self.tree = None

    def _prepare(self, X: np.ndarray) -> np.ndarray:
        """Vectors as the tree sees them (n, dim): normalised (new array) for angular, else unchanged."""
        if X.ndim != 2 or X.shape[1] != self.dim:
            raise InputError(f"{self.label()}: expected vectors of shape (n, {self.dim}), got {X.shape}")
        return normalized(X) if self.metric == "angular" else X

    def build(self, X: np.ndarray) -> None:
        from scipy.spatial import cKDTree

        # cKDTree copies the data (to float64), so the caller's array is neither kept nor modified.
        self.tree = cKDTree(self._prepare(X), leafsize=self.params["leafsize"])
        self._built = True

    def _apply_search_params(self, params: dict[str, Any]) -> None:
        pass  # eps is passed to each query

    def query(self, Q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(D, I), both (nq, k): float64 L2 distances and int64 ids, id n and +inf where none was found."""
        Q = self._prepare(Q)
        eps = self.search_config.get("eps", 0.0)
        # k as a list keeps the (nq, k) shape even for k = 1.
        return self.tree.query(Q, k=list(range(1, k + 1)), eps=eps, p=2, workers=self.threads)

    def convert(self, D: np.ndarray, I: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        I = np.where(I >= self.tree.n, -1, I).astype(np.int64)
        if self.metric == "angular":
            D = np.square(D) / 2  # 1 - cos from L2 between unit vectors
        return self.pad(D, I)

    _STATE = ("tree", "data", "n", "m", "leafsize", "maxes", "mins", "indices")  # cKDTree.__getstate__, in order

    def _write(self, fh) -> None:
        state = self.tree.__getstate__()
        if any(x is not None for x in state[len(self._STATE):]):  # boxsize: never set by this backend
            raise InputError(f"{self.label()}: a periodic (boxsize) tree cannot be saved")
        np.savez(fh, format=np.int64(_FORMAT), **{name: np.asarray(v) for name, v in zip(self._STATE, state)})

    def save(self, path: str | os.PathLike) -> None:
        with open(path, "wb") as fh:  # a file object: np.savez would append ".npz" to a bare path
            self._write(fh)

    def load(self, path: str | os.PathLike) -> None:
        from scipy.spatial import cKDTree

        try:
            with np.load(path, allow_pickle=False) as z:
                if int(z["format"]) != _FORMAT:
                    raise InputError(f"{self.label()}: {os.fspath(path)!r} has format {int(z['format'])}, this "
                                     f"version reads {_FORMAT}; rebuild the index")
                state = tuple(z[name] for name in self._STATE)
        except (ValueError, OSError, KeyError, EOFError) as exc:
            raise InputError(f"{self.label()}: {os.fspath(path)!r} is not a k-d tree file this version wrote "
                             f"({exc}); rebuild the index") from None
        tree_buf, data, n, m, leafsize, maxes, mins, indices = state
        if int(m) != self.dim or data.shape != (int(n), self.dim):
            raise InputError(f"{self.label()}: index file {os.fspath(path)!r} holds {int(m)}-d vectors, "
                             f"not {self.dim}-d")
        tree = cKDTree.__new__(cKDTree)
        tree.__setstate__((tree_buf, data, int(n), int(m), int(leafsize), maxes, mins, indices, None, None))
        self.tree = tree
        self._built = True

    def index_bytes(self) -> int:
        buf = io.BytesIO()
        self._write(buf)
        return buf.getbuffer().nbytes
