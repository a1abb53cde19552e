"""The backend interface every index implements, and its declarative parameters.

A backend declares its build parameters and search parameters apart (ann-benchmarks' build arguments vs
query arguments), each with a type, a default, and the allowed values; it also declares default sweep grids.
Parameter names and values are checked before any work is done, and errors list the valid choices.

The runner uses an index in three steps, so that only the library call is timed:

1. ``index.build(X)`` once per build configuration;
2. ``index.set_search_params(**p)`` once per search configuration (outside the timed region);
3. ``index.query(Q, k)`` in the timed region: the raw library call, native distances;
   ``index.convert(D, I)`` afterwards turns them into the dataset's metric, pads with -1 / +inf.
   In single mode (one call per query, each timed) the runner asks ``index.single_query(Q, k)`` for the call
   to time and for what turns the list of its results into ``query``'s (D, I) afterwards: a backend whose
   ``query`` does per-call work besides the library call (converting a list of tuples, padding, a check)
   returns the bare library call there, so that work stays out of every query's latency.

``index.search(Q, k)`` does 3 in one call for everyone else.
"""

from __future__ import annotations

import itertools
import math
import os
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import numpy as np

from ann_bench.distances import METRICS
from ann_bench.errors import InputError

UPDATES_BOTH = "insert+delete"
UPDATES_INSERT = "insert only (deletions as a filter)"
UPDATES_NONE = "none: rebuilt each step"


class SingleQuery(NamedTuple):
    """Single mode's timed call and how its results come back (see :meth:`Index.single_query`).

    ``call(q)`` is timed once per query row q (1, dim). Its result is kept as it is, or, where ``keep`` is
    given, handed to ``keep(i, result)`` right after the timed call (query i) and then dropped: for a library
    whose result objects hold far more memory than the answer (voyager's pin a 1.4 kB buffer each), keeping
    10,000 of them alive would make later calls in the run fault in fresh pages, which the bare loop of a
    user does not. ``finish(kept)`` turns the list of kept results (None where ``keep`` took them) into what
    ``query(Q, k)`` returns, after the run."""

    call: Callable[[np.ndarray], Any]
    finish: Callable[[list], tuple[np.ndarray, np.ndarray]]
    keep: Callable[[int, Any], None] | None = None


def copied_pairs(call: Callable[[np.ndarray], Any], nq: int, swap: bool = False) -> SingleQuery:
    """Single mode for a ``call`` that returns a (D, I) pair of (1, k) arrays — (I, D) with ``swap``: each pair is
    copied into (nq, k) arrays right after its timed call and dropped. Keeping 10,000 pairs alive instead makes
    every later call allocate its result in memory no cache holds, which a user's loop, reusing the memory it
    just freed, does not: measured on hnswlib ef 20 and faiss IVF (20k x 32, ~14 us a query), keeping them cost
    4.7 % of single-mode QPS against a bare loop, copying 0.5-2.6 % (``benchmarks/harness_overhead.py``)."""
    first, second = (1, 0) if swap else (0, 1)
    out: list[np.ndarray] = []

    def keep(i: int, res) -> None:
        d, ids = res[first], res[second]
        if not out:
            out.extend((np.empty((nq, d.shape[1]), d.dtype), np.empty((nq, ids.shape[1]), ids.dtype)))
        out[0][i] = d[0]
        out[1][i] = ids[0]

    return SingleQuery(call, lambda kept: (out[0], out[1]), keep)


def stack_results(results: list[tuple[np.ndarray, np.ndarray]], swap: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Stack single mode's per-query (D, I) pairs — (I, D) pairs with ``swap`` — into one (D, I)."""
    first, second = (1, 0) if swap else (0, 1)
    return (np.concatenate([r[first] for r in results]), np.concatenate([r[second] for r in results]))


@dataclass(frozen=True)
class Param:
    """One tunable parameter: its type, default, allowed values and a line of help."""

    name: str
    type: type  # int, float, bool or str
    default: Any
    help: str = ""
    choices: tuple | None = None
    min: float | None = None
    max: float | None = None
    # Left out of the validated parameters at its default (read it with params.get(name, default)): a parameter
    # added to a backend later keeps the identity, hence the resume keys, of the rows measured before it.
    implicit: bool = False

    def coerce(self, value: Any, backend: str) -> Any:
        """Return ``value`` converted to this parameter's type; raise InputError saying what is allowed."""
        try:
            if self.type is bool:
                if isinstance(value, str):
                    low = value.strip().lower()
                    if low not in ("true", "false", "1", "0", "yes", "no", "on", "off"):
                        raise ValueError
                    value = low in ("true", "1", "yes", "on")
                elif isinstance(value, (bool, np.bool_, int, np.integer)) and value in (0, 1):
                    value = bool(value)
                else:
                    raise ValueError
            elif self.type is int:
                if isinstance(value, (bool, np.bool_)):
                    raise ValueError
                if isinstance(value, str):
                    value = int(value.strip())
                elif isinstance(value, (int, np.integer)):
                    value = int(value)
                elif isinstance(value, (float, np.floating)) and float(value).is_integer():
                    value = int(value)
                else:
                    raise ValueError
            elif self.type is float:
                value = float(value)
                if not math.isfinite(value):
                    raise ValueError
            else:
                value = str(value).strip()
        except (TypeError, ValueError):
            raise InputError(
                f"{backend}: parameter {self.name}={value!r} is not {_a(self.type)}; {self.describe()}"
            ) from None
        if self.choices is not None and value not in self.choices:
            raise InputError(f"{backend}: parameter {self.name}={value!r} is not allowed; {self.describe()}")
        if self.min is not None and value < self.min or self.max is not None and value > self.max:
            raise InputError(f"{backend}: parameter {self.name}={value!r} is out of range; {self.describe()}")
        return value

    def describe(self) -> str:
        """The allowed values in words, e.g. 'M: int in [2, 512]'."""
        if self.choices is not None:
            allowed = "one of " + ", ".join(map(str, self.choices))
        elif self.min is not None and self.max is not None:
            allowed = f"in [{_num(self.min)}, {_num(self.max)}]"
        elif self.min is not None:
            allowed = f">= {_num(self.min)}"
        elif self.max is not None:
            allowed = f"<= {_num(self.max)}"
        else:
            allowed = ""
        return f"{self.name}: {self.type.__name__} {allowed}".rstrip()


def _a(t: type) -> str:
    return {int: "an integer", float: "a finite number", bool: "true/false", str: "a string"}[t]


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def grid_product(grid: dict[str, list]) -> list[dict[str, Any]]:
    """The cartesian product of a grid {name: [values]} as a list of dicts, in a stable order."""
    if not grid:
        return [{}]
    names = list(grid)
    return [dict(zip(names, combo)) for combo in itertools.product(*(grid[n] for n in names))]


@dataclass
class Capabilities:
    """What a backend supports, declared instead of probed."""

    metrics: tuple[str, ...] = METRICS
    threads: bool = True  # honours a thread count for build and search
    deterministic: bool = True  # same seed, same data -> same results
    saveable: bool = True  # save/load round-trips; False: --index-cache builds it anew, `index build` refuses
    notes: list[str] = field(default_factory=list)


class Index(ABC):
    """An ANN index behind one interface. Subclasses set the class attributes and fill in the methods.

    Construction only validates and stores parameters; libraries are imported and memory is allocated in
    :meth:`build`, so a sweep can check every configuration before doing any work.
    """

    name: ClassVar[str]  # "hnsw"
    impl: ClassVar[str]  # "hnswlib" | "faiss" | ...
    requires: ClassVar[tuple[str, ...]] = ()  # importable modules, checked with an install hint
    install_hint: ClassVar[str] = ""
    description: ClassVar[str] = ""
    capabilities: ClassVar[Capabilities] = Capabilities()
    build_params: ClassVar[tuple[Param, ...]] = ()
    search_params: ClassVar[tuple[Param, ...]] = ()
    build_grid: ClassVar[dict[str, list]] = {}  # default sweep of build params
    search_grid: ClassVar[dict[str, list]] = {}  # default sweep of search params
    grid_notes: ClassVar[dict[str, str]] = {}  # words for data-dependent defaults, shown by `ann-bench backends`
    # Search parameters along which search effort grows: +1 where a larger value searches more (ef, nprobe,
    # search_k), -1 where a smaller one does (eps). See :meth:`costlier`.
    effort_params: ClassVar[dict[str, int]] = {}

    def __init__(self, metric: str, dim: int, threads: int = 1, seed: int = 0, **build_params: Any):
        if metric not in self.capabilities.metrics:
            raise InputError(
                f"{self.label()}: metric {metric!r} is not supported; it supports "
                f"{', '.join(self.capabilities.metrics)}"
            )
        if int(threads) < 1:
            raise InputError(f"threads must be >= 1, got {threads}")
        self.metric = metric
        self.dim = int(dim)
        self.threads = int(threads)
        self.seed = int(seed)
        self.params = self.validate_build_params(build_params)
        self.search_config: dict[str, Any] = {}
        self._built = False

    # ---- declarations -------------------------------------------------------------------------------
    @classmethod
    def label(cls) -> str:
        return f"{cls.name}[{cls.impl}]"

    @classmethod
    def default_build_grid(cls, n: int, dim: int) -> dict[str, list]:
        """The default build sweep for a dataset of ``n`` vectors of dimension ``dim``."""
        return {k: list(v) for k, v in cls.build_grid.items()}

    @classmethod
    def default_search_grid(cls, n: int, dim: int) -> dict[str, list]:
        """The default search sweep for a dataset of ``n`` vectors of dimension ``dim``."""
        return {k: list(v) for k, v in cls.search_grid.items()}

    @classmethod
    def _validate(cls, declared: tuple[Param, ...], given: dict[str, Any], kind: str) -> dict[str, Any]:
        by_name = {p.name: p for p in declared}
        unknown = sorted(set(given) - set(by_name))
        if unknown:
            valid = ", ".join(p.describe() for p in declared) or "none"
            raise InputError(f"{cls.label()}: unknown {kind} parameter {unknown[0]!r}; valid: {valid}")
        out = {p.name: p.default for p in declared}
        for key, value in given.items():
            out[key] = by_name[key].coerce(value, cls.label())
        for p in declared:
            if p.implicit and out[p.name] == p.default:
                del out[p.name]
        return out

    @classmethod
    def validate_build_params(cls, params: dict[str, Any]) -> dict[str, Any]:
        """Complete ``params`` with defaults and coerce each value; raise InputError on a bad name or value."""
        return cls._validate(cls.build_params, params, "build")

    @classmethod
    def validate_search_params(cls, params: dict[str, Any]) -> dict[str, Any]:
        return cls._validate(cls.search_params, params, "search")

    @classmethod
    def check_data(cls, build: dict[str, Any], n: int, dim: int) -> None:
        """Raise InputError if the (validated) build parameters cannot work on n vectors of dimension dim."""

    def search_skip_reason(self, search: dict[str, Any], k: int) -> str | None:
        """Why a (validated) search configuration is redundant for this built index at this k, or None.

        E.g. nprobe > nlist in an IVF index, or ef < k in hnswlib, which silently searches with ef = k: the
        runner skips such configurations instead of reporting the same measurement under two labels.
        """
        return None

    @classmethod
    def costlier(cls, a: dict[str, Any], b: dict[str, Any]) -> bool:
        """True if (validated) search configuration ``b`` asks for at least the effort of ``a`` in every effort
        parameter, for more in one, and equals ``a`` in every other parameter.

        Once ``a`` reaches recall 1.0 on an index, such a ``b`` cannot recall more and costs no less: it is
        dominated on every recall/QPS front, so a sweep may skip it (``ann-bench run`` does, unless
        ``--exhaustive``).
        """
        if not cls.effort_params or a.keys() != b.keys():
            return False
        more = False
        for name, value in a.items():
            sign = cls.effort_params.get(name)
            if sign is None:
                if b[name] != value:
                    return False
            elif (b[name] - value) * sign < 0:
                return False
            elif b[name] != value:
                more = True
        return more

    @classmethod
    def check_available(cls) -> None:
        """Raise InputError with an install hint if a library this backend needs cannot be imported."""
        import importlib.util

        for module in cls.requires:
            if importlib.util.find_spec(module) is None:
                hint = cls.install_hint or f"pip install {module}"
                raise InputError(f"{cls.label()} needs the Python package {module!r}; install it: {hint}")

    # ---- the work -----------------------------------------------------------------------------------
    # Set by the worker before build(): a backend whose library reports build progress passes it on as
    # progress(done, total) (items inserted so far). Cheap to call: the worker throttles what it forwards.
    progress: Callable[[int, int], None] | None = None

    @abstractmethod
    def build(self, X: np.ndarray) -> None:
        """Build the index over X (n, dim) float32, C-contiguous. Must not keep a reference it modifies.
        Calls ``self.progress(done, total)`` where the library reports its progress (see ``progress``)."""

    def warm_up(self) -> None:
        """Pay one-time costs that are not the build's — JIT compilation, loading compiled code — before the
        worker starts timing the build and measuring its memory. The libraries wrapped here (compiled ahead of
        time) have none, so the base class does nothing; a JIT-compiled backend (our numba NSW) overrides it."""

    def set_search_params(self, **params: Any) -> None:
        """Validate and apply search parameters; called outside the timed region."""
        self.search_config = self.validate_search_params(params)
        self._apply_search_params(self.search_config)

    @abstractmethod
    def _apply_search_params(self, params: dict[str, Any]) -> None:
        """Apply validated search parameters to the built index."""

    @abstractmethod
    def query(self, Q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The library call, and nothing else: (D_native, I) for Q (nq, dim) float32. Timed by the runner."""

    # The library's own filtered search (run --filter, strategy in-index), or "" where it has none: said, not faked.
    filter_support: ClassVar[str] = ""

    def filtered_query(self, Q: np.ndarray, k: int, bitmap: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The library's filtered search of Q (nq, dim), every query restricted to the items whose bit is set in
        ``bitmap`` (uint8, bit i of byte i // 8, least significant first): (D_native, I) as :meth:`query`, with
        -1 ids where fewer than k allowed items were found. Timed like ``query``: only the library call(s)."""
        raise NotImplementedError(f"{self.label()} has no filtered search of its own")

    # The engine under a database's Python client (issue 35): the lowest public layer that searches the same index,
    # named here, or "" where there is none. ``query`` stays the figure users get (qps); the worker also times
    # ``engine_query`` on the same queries (qps_engine), so the client's share is visible. ``no_engine`` says why a
    # database has none; a library without a client (hnswlib, faiss) has none to split off.
    engine: ClassVar[str] = ""
    no_engine: ClassVar[str] = "the library call is the engine: no client to split off"

    def engine_unavailable(self) -> str | None:
        """Why this index cannot time its engine apart from its client (None: it can, through ``engine_query``).
        Called before the engine is timed, outside the timed region: a backend opens its engine's handle here."""
        return None if self.engine else self.no_engine

    def engine_query(self, Q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The engine's own search of Q (nq, dim) under the current search parameters: (D_native, I) as ``query``
        returns them, the same ids (tested). Timed like ``query``."""
        raise NotImplementedError(f"{self.label()}: {self.no_engine}")

    def engine_single_query(self, Q: np.ndarray, k: int) -> SingleQuery:
        """Single mode's :class:`SingleQuery` for ``engine_query``, as :meth:`single_query` is for ``query``."""
        return SingleQuery(partial(self.engine_query, k=k), stack_results)

    # ---- a collection that changes (ann-bench stream) -------------------------------------------------------
    # How the index follows inserts and deletes, declared, never probed: UPDATES_BOTH (add and remove),
    # UPDATES_INSERT (add; remove hides the items from searches by a filter, their memory stays) or UPDATES_NONE
    # (add/remove raise: `stream` rebuilds the index from scratch at each step). ``update_notes``: how, in words.
    updates: ClassVar[str] = UPDATES_NONE
    update_notes: ClassVar[str] = ""

    @classmethod
    def update_support(cls, build: dict[str, Any]) -> str:
        """:attr:`updates` for a build configuration (validated build parameters): a subclass whose support
        depends on them (IVF-PQ with exact re-ranking has none) says so here."""
        return cls.updates

    def add(self, X: np.ndarray, ids: np.ndarray) -> None:
        """Insert the vectors X (n, dim) float32 into the built index under the labels ``ids`` (n,) int64, which
        searches then return. ``stream`` passes consecutive labels, never reused: after a build over m vectors
        (labels 0..m-1), m, m+1, ... Only where :attr:`updates` is not UPDATES_NONE."""
        raise NotImplementedError(f"{self.label()} cannot insert into a built index ({self.updates})")

    def remove(self, ids: np.ndarray) -> None:
        """Remove the items labelled ``ids`` (n,) int64: searches never return them again. Only where
        :attr:`updates` is not UPDATES_NONE."""
        raise NotImplementedError(f"{self.label()} cannot remove from a built index ({self.updates})")

    @abstractmethod
    def convert(self, D: np.ndarray, I: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Native (D, I) -> (D, I) in the dataset's metric: D float32 (nq, k), +inf where I is -1 (int64)."""

    def check_shape(self, A: np.ndarray, rows: str = "n") -> None:
        """Refuse an array that is not (rows, dim) in one line: what was expected, what came (``rows``: "n" for
        vectors, "nq" for queries). For libraries that would read past a shorter row without a word."""
        if A.ndim != 2 or A.shape[1] != self.dim:
            what = "queries" if rows == "nq" else "vectors"
            raise InputError(f"{self.label()}: expected {what} of shape ({rows}, {self.dim}), got {A.shape}")

    def single_query(self, Q: np.ndarray, k: int) -> SingleQuery:
        """Single mode's :class:`SingleQuery` for the queries Q (nq, dim): ``call(Q[i:i+1])`` is timed once
        per query and may return the library's own result object; ``finish(results)``, outside the timed
        region, turns the list of those results, in query order, into what ``query(Q, k)`` returns.

        Called once per timed run, after ``set_search_params``; checks on Q belong here, not in ``call``.
        Default: ``query`` itself, its (D, I) pairs stacked. Override where ``query`` does per-call work
        besides the library call; ``call`` should then be the library's bound method (``functools.partial``
        adds no Python frame)."""
        return SingleQuery(partial(self.query, k=k), stack_results)

    def search(self, Q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Nearest ``k`` of each row of Q (nq, dim): (D, I), both (nq, k), sorted nearest first.

        D is in the dataset's metric (see :mod:`ann_bench.distances`); I is int64, -1 where fewer than k
        results were found, and D is +inf there.
        """
        return self.convert(*self.query(Q, k))

    @abstractmethod
    def save(self, path: str | os.PathLike) -> None:
        """Write the index to ``path`` (one file)."""

    @abstractmethod
    def load(self, path: str | os.PathLike) -> None:
        """Read an index written by :meth:`save` into this (unbuilt) instance."""

    def index_bytes(self) -> int:
        """Serialized size of the index in bytes (deterministic, unlike RSS). Default: size of a saved file."""
        with tempfile.TemporaryDirectory(prefix="ann-bench-size-") as tmp:
            path = Path(tmp) / "index.bin"
            self.save(path)
            return path.stat().st_size

    def set_threads(self, threads: int) -> None:
        """Pin the number of threads used by the library from now on."""
        self.threads = int(threads)

    # ---- helpers for subclasses ---------------------------------------------------------------------
    @staticmethod
    def pad(D: np.ndarray, I: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Normalise dtypes and put +inf in D wherever I is -1."""
        I = np.asarray(I, dtype=np.int64)
        D = np.array(D, dtype=np.float32, copy=True)
        D[I < 0] = np.inf
        return D, I

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v}" for k, v in self.params.items())
        return f"{type(self).__name__}({self.metric}, dim={self.dim}, {params})"
