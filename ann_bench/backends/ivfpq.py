"""Inverted file with product-quantised residuals: faiss IVF-PQ, optionally re-ranked exactly.

Build ``nlist``, ``m`` (sub-quantizers, must divide the dimension), ``nbits`` (bits per code) and ``rerank``
(keep the raw vectors beside the codes, in an IndexRefineFlat, so that searches can re-rank exactly); search
``nprobe`` and ``refine`` (0: the PQ ranking as it is; r >= 1: re-rank the r*k best PQ candidates with exact
distances — faiss's ``k_factor``, set per search, so one ``rerank`` build serves every depth). A ``refine`` > 0
on a build without raw vectors has nothing to re-rank with and is skipped, as is ``refine`` 0 on a ``rerank``
build (it measures the build without raw vectors again, with a larger index). Polysemous training is off (the
``np`` suffix of the factory string): it is on by default in faiss and makes the build about 8x slower for
nothing we measure.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ann_bench.backends._faiss import import_faiss
from ann_bench.backends.base import UPDATES_NONE, Param
from ann_bench.backends.ivf import FaissIVFFlat, pow2_lists
from ann_bench.errors import InputError


def default_m(dim: int) -> int:
    """The divisor of ``dim`` nearest dim/4 (4-dimensional sub-vectors), at most 64."""
    divisors = [m for m in range(1, min(dim, 64) + 1) if dim % m == 0]
    return min(divisors, key=lambda m: (abs(m - dim / 4), -m))


class FaissIVFPQ(FaissIVFFlat):
    """IVF-PQ shares IVF's search side (nprobe, its grid and skip rule) and its nlist check."""

    name = "ivfpq"
    description = "inverted file + product quantization, optional exact re-ranking (faiss IVF-PQ)"
    build_params = (
        Param("nlist", int, 1024, "number of k-means lists", min=1, max=1 << 22),
        FaissIVFFlat.build_params[1],  # train_per_list
        Param("m", int, 16, "PQ sub-quantizers; must divide the dimension", min=1, max=1024),
        Param("nbits", int, 8, "bits per sub-quantizer code", min=4, max=12),
        Param("rerank", bool, False, "keep the raw vectors (IndexRefineFlat) so searches can re-rank exactly "
              "(search refine > 0); the index grows by n * dim * 4 bytes"),
    )
    search_params = (
        FaissIVFFlat.search_params[0],  # nprobe
        Param("refine", int, 0, "re-rank refine*k PQ candidates with exact distances (needs a rerank build); "
              "0 = the PQ ranking", min=0, max=1000),
    )
    build_grid = {"nlist": [1024], "m": [16], "nbits": [8], "rerank": [False, True]}
    search_grid = {**FaissIVFFlat.search_grid, "refine": [0, 10]}
    effort_params = {"nprobe": +1, "refine": +1}
    grid_notes = {"nlist": "4*sqrt(n) rounded to a power of two", "m": "the divisor of dim nearest dim/4, <= 64"}

    @classmethod
    def default_build_grid(cls, n: int, dim: int) -> dict[str, list]:
        return {**{k: list(v) for k, v in cls.build_grid.items()}, "nlist": [pow2_lists(n, 4)], "m": [default_m(dim)]}

    @classmethod
    def check_data(cls, build: dict[str, Any], n: int, dim: int) -> None:
        if dim % build["m"]:
            divisors = [m for m in range(1, min(dim, 64) + 1) if dim % m == 0]
            raise InputError(
                f"{cls.label()}: m={build['m']} does not divide the dimension {dim}; "
                f"use one of {', '.join(map(str, divisors))}"
            )
        super().check_data(build, n, dim)
        if 2 ** build["nbits"] > n:
            raise InputError(
                f"{cls.label()}: nbits={build['nbits']} needs at least {2 ** build['nbits']} training vectors, "
                f"got {n}; lower nbits"
            )

    def search_skip_reason(self, search: dict[str, Any], k: int) -> str | None:
        if search["refine"] > 0 and not self.params["rerank"]:
            return f"refine={search['refine']} needs the raw vectors of a rerank=true build"
        if search["refine"] == 0 and self.params["rerank"]:
            return "refine=0 on a rerank=true build measures the rerank=false build again"
        return super().search_skip_reason(search, k)

    update_notes = ("add_with_ids / remove_ids on the IVF-PQ index (codes of the build's trained quantizers); a "
                    "rerank=true build (IndexRefineFlat, which numbers its raw vectors in order and has no "
                    "remove_ids) has no updates: rebuilt each step")

    @classmethod
    def update_support(cls, build: dict[str, Any]) -> str:
        return UPDATES_NONE if build.get("rerank") else cls.updates

    def add(self, X: np.ndarray, ids: np.ndarray) -> None:
        if self.params["rerank"]:
            raise NotImplementedError(f"{self.label()} rerank=true cannot insert ({UPDATES_NONE})")
        super().add(X, ids)

    def remove(self, ids: np.ndarray) -> None:
        if self.params["rerank"]:
            raise NotImplementedError(f"{self.label()} rerank=true cannot remove ({UPDATES_NONE})")
        super().remove(ids)

    def factory_string(self) -> str:
        p = self.params
        return f"IVF{p['nlist']},PQ{p['m']}x{p['nbits']}np"

    def _make_index(self, X: np.ndarray):
        faiss = import_faiss()
        base = faiss.index_factory(self.dim, self.factory_string(), self.faiss_metric())
        ivf = faiss.extract_index_ivf(base)
        ivf.cp.seed = self.seed
        ivf.cp.max_points_per_centroid = self.params["train_per_list"]
        base.train(X)
        if self.params["rerank"]:
            index = faiss.IndexRefineFlat(base)
            index.add(X)  # adds to the PQ index and keeps the raw vectors for re-ranking
            self._base = base  # keep the wrapped index alive alongside its wrapper
            return index
        base.add(X)
        return base

    def _apply_search_params(self, params: dict[str, Any]) -> None:
        super()._apply_search_params(params)  # nprobe, on the IVF index inside any wrapper
        if self.index is not None and self.params["rerank"] and params["refine"] > 0:
            import_faiss().downcast_index(self.index).k_factor = float(params["refine"])

    def _search_parameters(self, sel):
        faiss = import_faiss()
        ivf = faiss.SearchParametersIVF(sel=sel, nprobe=int(self.search_config["nprobe"]))
        if self._searching() is self.index and self.params["rerank"]:  # the re-ranking wrapper: refine >= 1
            return faiss.IndexRefineSearchParameters(k_factor=float(self.search_config["refine"]),
                                                     base_index_params=ivf)
        return ivf

    def _searching(self):
        """The PQ index alone for refine 0, the re-ranking wrapper for refine >= 1."""
        if self.params["rerank"] and self.search_config.get("refine", 0) == 0:
            return self._pq()
        return self.index

    def _pq(self):
        """The IVF-PQ index inside the re-ranking wrapper (after a build or a load)."""
        base = getattr(self, "_base", None)
        if base is None:
            faiss = import_faiss()
            base = faiss.downcast_index(faiss.downcast_index(self.index).base_index)
            self._base = base
        return base

    def load(self, path) -> None:
        self._base = None
        super().load(path)
