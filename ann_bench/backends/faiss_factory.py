"""Any faiss index, described by an ``index_factory`` string (build ``factory``) or by a named preset.

``factory`` is passed to ``faiss.index_factory`` as it is: ``IVF4096,PQ32x4fs``, ``IVF1024_HNSW32,Flat``,
``IVF1024,SQ8``, ``NSG32,Flat``, ``OPQ16,IVF1024,PQ16``, ``HNSW32``, ... with a refinement stage appended as
faiss spells it (``,RFlat``: re-rank with the raw vectors, ``,Refine(SQfp16)``: with 16-bit codes).
``ann-bench run`` splits parameter values on commas, so on the command line a ``+`` stands for each comma
(``--build factory=IVF1024+PQ16x4fs+RFlat``); it is stored with commas. The string is checked before any work
by letting faiss parse it at the data's dimension (a rejected string is a one-line error with faiss's reason).
``IDMap`` strings are refused (the benchmark numbers vectors 0..n-1 itself and IDMap has no plain ``add``), and
so is ``LSH`` (its distances are Hamming distances between bit codes, which no conversion turns into the
dataset's metric).

Presets (build ``preset``, used when ``factory`` is empty; the default sweep is both):

- ``ivf-pq-fastscan``: ``IVF{nlist},PQ{m}x4fs,RFlat`` — 4-bit PQ codes scanned with SIMD (fast-scan), m the
  smallest divisor of dim >= dim/2 (dim/2 for even dims: 2 bits per dimension), re-ranked with the raw vectors
  (search ``k_factor``);
- ``ivf-sq8``: ``IVF{nlist},SQ8`` — 8-bit scalar quantisation, no re-ranking.

``nlist`` 0 (the default) is chosen from n as the ``ivfpq`` backend does: 4*sqrt(n) rounded to a power of two,
at most n/39; the default sweep records the number it chose. ``preset`` and ``nlist`` apply to presets only:
with a ``factory`` string they are recorded as ``none`` / 0 (a command line's factory thus replaces the default
sweep's presets). IVF indices train (every trained stage: OPQ/PCA, the k-means of the lists, PQ/SQ codes) on a
seeded random sample of nlist * ``train_per_list`` vectors (all of them when there are fewer), the k-means
seeded with ``seed``; other trained indices train on every vector. ``efConstruction`` (0: faiss's default, 40)
sets the insertion candidate list of an HNSW graph, or of an IVF's HNSW quantizer, through ParameterSpace
before training and adding; faiss's 40 plateaus near recall 0.98 on clustered data however large efSearch
gets, so set it (200, as ``hnsw:faiss`` does) when you sweep ``HNSW`` strings. A string without an HNSW graph
refuses a non-zero value.

Search parameters are the names faiss's ``ParameterSpace`` knows, applied with ``set_index_parameter``, plus
NSG's ``search_L`` (which ParameterSpace does not know; it is set on the graph), each an int:

- ``nprobe`` (IVF lists visited), ``efSearch`` (an HNSW index's candidate list), ``quantizer_efSearch`` (the
  candidate list of an IVF's HNSW coarse quantizer, ``IVF1024_HNSW32``: faiss's ``efSearch`` reaches the same
  field there, so only ``quantizer_efSearch`` is offered for it) and ``search_L`` (NSG): 0 means "not set".
  An index that has the parameter needs a value: 0 there is skipped by a sweep (it would measure faiss's
  default, 1 for nprobe and 16 for the others, under a label that does not say so; a direct
  ``set_search_params`` without it applies that default). An index that lacks it needs 0: a value there is
  skipped by a sweep and a one-line error from ``set_search_params``.
- ``k_factor``: re-rank the k * k_factor best candidates of the base index with the refinement stage
  (faiss ``IndexRefine.k_factor``); 0 searches the base index alone (its own, approximate, distances), valid
  on every index; >= 1 needs a refinement stage (``,RFlat``). 1 re-ranks only the base's top k: the same ids
  with refined distances.
- ``ht``: polysemous Hamming threshold of a PQ / IVF-PQ index (codes farther than ht bits are not scored);
  0 (faiss's default) filters nothing, valid on every index; ht >= the code's bits also filters nothing and
  is skipped as a duplicate of 0. ``IVFx,PQy`` trains polysemous codes by default, which makes the build
  about 8x slower: write ``IVFx,PQynp`` unless you sweep ``ht``. Fast-scan PQ (``x4fs``) has no ``ht``.

Native distances (measured with faiss 1.15.1 on IVF-Flat, IVF-SQ8, IVF-PQ fast-scan, HNSW and NSG, with and
without RFlat): METRIC_L2 returns squared L2 (square-rooted for ``euclidean``, halved for ``angular`` on
normalised vectors), METRIC_INNER_PRODUCT the inner product (negated for ``ip``); see :class:`FaissIndex`.
Coded indices (PQ, SQ) return their approximate distances; after a ``RFlat`` re-ranking they are exact.

Build times to expect (measured on 3000 x 16 vectors, one thread of a loaded 2-core machine): IVF-Flat, IVF-SQ8
and the fast-scan preset 0.02-0.3 s, HNSW16 0.2 s, NSG16 7-9 s (it first builds a k-NN graph by NN-descent),
OPQ4,IVF32,PQ4 20-30 s (OPQ's alternating training) and IVF32,PQ8 with polysemous training 26-46 s.

Threads: faiss's OpenMP count, pinned for build and search. Determinism: IVF, PQ and SQ builds follow the
seed (sample and k-means) and do not change with the thread count; HNSW and NSG graphs are deterministic with
one build thread only, and HNSW draws its levels from faiss's own fixed seed (``seed`` does not change them).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from ann_bench.backends._faiss import FaissIndex, import_faiss
from ann_bench.backends.base import Capabilities, Index, Param
from ann_bench.backends.ivf import pow2_lists
from ann_bench.errors import InputError

PRESETS = {
    "ivf-pq-fastscan": "IVF{nlist},PQ{m}x4fs,RFlat",
    "ivf-sq8": "IVF{nlist},SQ8",
}

# Search parameters for which 0 means "not set", and faiss's value when not set.
UNSET_DEFAULTS = {"nprobe": 1, "efSearch": 16, "quantizer_efSearch": 16, "search_L": 16}
HT_OFF = 1 << 30  # any ht >= the code's bits turns polysemous filtering off (faiss's ParameterSpace rule)


def fastscan_m(dim: int) -> int:
    """PQ sub-quantizers of the fast-scan preset: the smallest divisor of ``dim`` that is >= dim/2 (dim/2 for
    even dims, 2-dimensional sub-vectors; dim itself for odd dims)."""
    return min(m for m in range(1, dim + 1) if dim % m == 0 and 2 * m >= dim)


def factory_string(build: dict[str, Any], n: int | None, dim: int) -> str:
    """The faiss factory string of validated build parameters for n vectors of dimension dim. ``n`` None (a
    probe that has seen no data) puts 1 list in a preset whose nlist is chosen from n."""
    if build["factory"]:
        return build["factory"]
    nlist = build["nlist"] or (pow2_lists(n, 4) if n is not None else 1)
    return PRESETS[build["preset"]].format(nlist=nlist, m=fastscan_m(dim))


def faiss_message(exc: BaseException) -> str:
    """faiss's own words from a RuntimeError ('Error in <function> at <file>:<line>: <message>'), one line."""
    text = " ".join(str(exc).split())
    m = re.search(r" at \S+:\d+: (.*)$", text)
    return m.group(1) if m else text


def chain(index) -> list:
    """The index and the indices it wraps (IDMap, pre-transform, refinement), outermost first, downcast."""
    faiss = import_faiss()
    out = [faiss.downcast_index(index)]
    while True:
        top = out[-1]
        if isinstance(top, (faiss.IndexIDMap, faiss.IndexIDMap2, faiss.IndexPreTransform)):
            out.append(faiss.downcast_index(top.index))
        elif isinstance(top, faiss.IndexRefine):
            out.append(faiss.downcast_index(top.base_index))
        else:
            return out


@dataclass(frozen=True)
class Knobs:
    """The search parameters an index has, its number of lists (IVF) and its code's bits (PQ, for ht)."""

    names: frozenset[str]
    nlist: int | None
    ht_bits: int | None


def knobs_of(probe) -> Knobs:
    """The search parameters of ``probe``, found by setting each on it: ``probe`` must be a throwaway index
    (an untrained ``index_factory`` result), since the values set stay on it."""
    faiss = import_faiss()
    ps = faiss.ParameterSpace()
    names = set()
    for name in ("nprobe", "quantizer_efSearch", "efSearch", "ht"):
        try:
            ps.set_index_parameter(probe, name, 1)
            names.add(name)
        except RuntimeError:
            pass
    if "quantizer_efSearch" in names:
        names.discard("efSearch")  # faiss's efSearch on an IVF sets its HNSW quantizer's: the same knob
    layers = chain(probe)
    if isinstance(layers[0], faiss.IndexRefine):
        names.add("k_factor")
    if any(isinstance(i, faiss.IndexNSG) for i in layers):
        names.add("search_L")
    nlist = int(faiss.extract_index_ivf(probe).nlist) if "nprobe" in names else None
    ht_bits = next((int(i.pq.code_size) * 8 for i in layers if isinstance(i, (faiss.IndexPQ, faiss.IndexIVFPQ))),
                   None)
    return Knobs(frozenset(names), nlist, ht_bits)


class FaissFactory(FaissIndex):
    name = "faiss"
    description = "any faiss index by index_factory string, or a preset (IVF-PQ fast-scan + re-ranking, IVF-SQ8)"
    capabilities = Capabilities(
        notes=["HNSW and NSG graphs built with several threads are not deterministic",
               "on the command line write each comma of a factory string as '+' (factory=IVF1024+Flat)"],
    )
    build_params = (
        Param("factory", str, "", "a faiss index_factory string, e.g. IVF4096,PQ32x4fs,RFlat (',' may be "
              "written '+'); empty: use preset"),
        Param("preset", str, "none", "a ready-made factory string: ivf-pq-fastscan = IVF{nlist},PQ{dim/2}x4fs,"
              "RFlat; ivf-sq8 = IVF{nlist},SQ8 (ignored when factory is given)",
              choices=("none", *PRESETS)),
        Param("nlist", int, 0, "lists of a preset; 0: 4*sqrt(n) rounded to a power of two (ignored when factory "
              "is given: write it in the string)", min=0, max=1 << 22),
        Param("train_per_list", int, 64, "IVF indices train on a seeded random sample of at most nlist * this "
              "vectors (faiss's own k-means default: 256)", min=39, max=1 << 20),
        Param("efConstruction", int, 0, "HNSW candidate list while inserting (an HNSW index, an IVF's HNSW "
              "quantizer); 0: faiss's default 40", min=0, max=100_000),
    )
    search_params = (
        Param("nprobe", int, 0, "IVF lists visited per query; 0: not set (indices without lists)",
              min=0, max=1 << 22),
        Param("efSearch", int, 0, "HNSW candidate list size; 0: not set (indices without an HNSW graph)",
              min=0, max=1_000_000),
        Param("quantizer_efSearch", int, 0, "candidate list size of an IVF's HNSW coarse quantizer; 0: not set",
              min=0, max=1_000_000),
        Param("search_L", int, 0, "NSG candidate list size; 0: not set (indices without an NSG graph)",
              min=0, max=1_000_000),
        Param("k_factor", int, 0, "re-rank k*k_factor candidates with the refinement stage (RFlat); 0: no "
              "re-ranking", min=0, max=100_000),
        Param("ht", int, 0, "polysemous Hamming threshold (PQ, IVF-PQ); 0: no filtering", min=0, max=1 << 16),
    )
    build_grid = {"preset": list(PRESETS)}
    search_grid = {"nprobe": [0, 1, 2, 4, 8, 16, 32, 64, 128, 256], "k_factor": [0, 4, 16, 64]}
    effort_params = {"nprobe": +1, "efSearch": +1, "quantizer_efSearch": +1, "search_L": +1, "k_factor": +1}
    grid_notes = {"nlist": "4*sqrt(n) rounded to a power of two (presets)",
                  "nprobe": "0 (for indices without lists), then 1 to 256 in powers of two"}

    def __init__(self, metric: str, dim: int, threads: int = 1, seed: int = 0, **build_params: Any):
        super().__init__(metric, dim, threads, seed, **build_params)
        self._knobs: Knobs | None = None
        self._searcher = None

    @classmethod
    def default_build_grid(cls, n: int, dim: int) -> dict[str, list]:
        return {"preset": list(PRESETS), "nlist": [pow2_lists(n, 4)]}

    @classmethod
    def validate_build_params(cls, params: dict[str, Any]) -> dict[str, Any]:
        out = super().validate_build_params(params)
        if out["factory"]:
            out["factory"] = out["factory"].replace("+", ",")
            out["preset"], out["nlist"] = "none", 0
        elif out["preset"] == "none":
            raise InputError(f"{cls.label()}: give factory=STRING (a faiss index_factory string, e.g. "
                             f"factory=IVF1024+Flat) or preset={'|'.join(PRESETS)}")
        return out

    @classmethod
    def check_data(cls, build: dict[str, Any], n: int, dim: int) -> None:
        """Parse the factory string with faiss at dimension ``dim`` (an empty index: no data, no training) and
        check what it needs of the data."""
        faiss = import_faiss()
        string = factory_string(build, n, dim)
        try:
            probe = faiss.index_factory(dim, string, faiss.METRIC_L2)
        except RuntimeError as exc:
            hint = "" if "," in string else " (on the command line write each ',' of the string as '+')"
            raise InputError(f"{cls.label()}: faiss rejects factory {string!r} at dimension {dim}: "
                             f"{faiss_message(exc)}{hint}") from None
        layers = chain(probe)
        if any(isinstance(i, (faiss.IndexIDMap, faiss.IndexIDMap2)) for i in layers):
            raise InputError(f"{cls.label()}: factory {string!r}: drop the IDMap prefix (vectors are numbered "
                             "0..n-1 here, and an IDMap index cannot add without ids)")
        if any(isinstance(i, faiss.IndexLSH) for i in layers):
            raise InputError(f"{cls.label()}: factory {string!r}: LSH returns Hamming distances between bit "
                             "codes, which cannot be converted to the dataset's metric; use another index")
        if build["efConstruction"]:
            try:
                faiss.ParameterSpace().set_index_parameter(probe, "efConstruction", build["efConstruction"])
            except RuntimeError:
                raise InputError(f"{cls.label()}: efConstruction={build['efConstruction']}: factory {string!r} "
                                 "has no HNSW graph; leave efConstruction at 0") from None
        knobs = knobs_of(probe)
        if knobs.nlist is not None and knobs.nlist > n:
            raise InputError(f"{cls.label()}: factory {string!r} has {knobs.nlist} lists, more than the {n} "
                             f"training vectors; use at most {n} (about 4*sqrt(n) = {pow2_lists(n, 4)} is usual)")

    def _string(self) -> str:
        """This configuration's factory string; a preset whose nlist depends on n says so before the build."""
        if self.index is not None:
            return factory_string(self.params, int(self.index.ntotal), self.dim)
        if not self.params["factory"] and not self.params["nlist"]:
            return f"preset {self.params['preset']} (nlist from n)"
        return factory_string(self.params, None, self.dim)

    def knobs(self) -> Knobs | None:
        """The search parameters of this configuration's index, from an empty index made by its factory
        string (None if faiss refuses it with this metric: the build will fail and say why). Before the build
        of a preset whose nlist is chosen from n, ``nlist`` is None."""
        if self._knobs is None:
            faiss = import_faiss()
            n = int(self.index.ntotal) if self.index is not None else None
            try:
                probe = faiss.index_factory(self.dim, factory_string(self.params, n, self.dim), self.faiss_metric())
            except RuntimeError:
                return None
            knobs = knobs_of(probe)
            if n is None and not self.params["factory"] and not self.params["nlist"]:
                knobs = Knobs(knobs.names, None, knobs.ht_bits)
            self._knobs = knobs
        return self._knobs

    def search_skip_reason(self, search: dict[str, Any], k: int) -> str | None:
        knobs = self.knobs()
        if knobs is None:
            return None
        string = self._string()
        for name in UNSET_DEFAULTS:
            if search[name] and name not in knobs.names:
                return f"{name}={search[name]}: {string} has no {name}"
            if not search[name] and name in knobs.names:
                return (f"{name}=0 leaves {string} at faiss's default {name}={UNSET_DEFAULTS[name]}; sweep "
                        f"{name} explicitly")
        if search["k_factor"] and "k_factor" not in knobs.names:
            return f"k_factor={search['k_factor']}: {string} has no refinement stage to re-rank with"
        if search["ht"] and "ht" not in knobs.names:
            return f"ht={search['ht']}: {string} has no polysemous codes"
        if search["ht"] and knobs.ht_bits is not None and search["ht"] >= knobs.ht_bits:
            return f"ht={search['ht']} >= the code's {knobs.ht_bits} bits filters nothing, as ht=0"
        if knobs.nlist is not None and search["nprobe"] > knobs.nlist:
            return f"nprobe={search['nprobe']} > nlist={knobs.nlist} visits nothing more"
        return None

    # ---- the work -----------------------------------------------------------------------------------
    def build(self, X: np.ndarray) -> None:
        super().build(X)
        self._knobs = None  # a preset's nlist is known now
        self._apply_search_params(self.search_config or self.validate_search_params({}))

    def _make_index(self, X: np.ndarray):
        faiss = import_faiss()
        index = faiss.index_factory(self.dim, factory_string(self.params, X.shape[0], self.dim), self.faiss_metric())
        if self.params["efConstruction"]:  # before train (an IVF's HNSW quantizer is built there) and add
            faiss.ParameterSpace().set_index_parameter(index, "efConstruction", self.params["efConstruction"])
        if not index.is_trained:
            index.train(self._training_sample(index, X))
        index.add(X)
        return index

    def _training_sample(self, index, X: np.ndarray) -> np.ndarray:
        """IVF: a seeded random sample of nlist * train_per_list rows of X (X itself when that is all of them),
        k-means seeded and told not to subsample again; other indices: X."""
        faiss = import_faiss()
        try:
            ivf = faiss.extract_index_ivf(index)
        except RuntimeError:
            return X
        per_list = self.params["train_per_list"]
        ivf.cp.seed = self.seed
        ivf.cp.max_points_per_centroid = per_list
        size = int(ivf.nlist) * per_list
        if size >= X.shape[0]:
            return X
        rows = np.sort(np.random.default_rng(self.seed).choice(X.shape[0], size, replace=False))
        return X[rows]

    def _apply_search_params(self, params: dict[str, Any]) -> None:
        if self.index is None:
            return
        faiss = import_faiss()
        knobs = self.knobs()
        for name, value in params.items():
            if value and name not in knobs.names:
                have = ", ".join(sorted(knobs.names)) or "none"
                raise InputError(f"{self.label()}: search parameter {name}={value}: {self._string()} has no "
                                 f"{name} (it has: {have})")
        ps = faiss.ParameterSpace()
        for name in ("nprobe", "efSearch", "quantizer_efSearch"):
            if name in knobs.names:  # every one the index has, so that no earlier setting lingers
                ps.set_index_parameter(self.index, name, params[name] or UNSET_DEFAULTS[name])
        if "ht" in knobs.names:
            ps.set_index_parameter(self.index, "ht", params["ht"] or HT_OFF)
        layers = chain(self.index)
        if "search_L" in knobs.names:
            nsg = next(i for i in layers if isinstance(i, faiss.IndexNSG))
            nsg.nsg.search_L = params["search_L"] or UNSET_DEFAULTS["search_L"]
        self._searcher = self.index
        if "k_factor" in knobs.names:
            if params["k_factor"]:
                layers[0].k_factor = float(params["k_factor"])
            else:
                self._searcher = layers[1]  # the base index alone, no re-ranking

    # A preset's searcher may be a wrapper (refine, pre-transform) whose search parameters differ per preset:
    # no in-index filter is offered rather than one that silently drops the preset's own settings.
    filter_support = ""
    filtered_query = Index.filtered_query

    def _searching(self):
        return self._searcher

    def load(self, path) -> None:
        self._knobs = None
        super().load(path)
