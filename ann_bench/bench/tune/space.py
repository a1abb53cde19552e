"""What tune searches over and what it costs: the build space per backend (wider than the default grids), the
fidelities (a subsample of the train vectors, then the full set), and a cost model of builds and of the default
grid, from which the default ``--budget`` is derived (half the grid's estimated time, less a margin)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from ann_bench.backends import Index
from ann_bench.errors import InputError

SUBSAMPLE_FROM = 40_000  # from this many train vectors on, every backend starts on a subsample
SUBSAMPLE_MIN = 10_000  # a subsample holds at least this many vectors
MIN_BUDGET_S = 3.0  # a default budget is never shorter: a few workers' starts and small builds
BUDGET_SHARE = 0.3  # default budget: this share of the default grid's estimated time (never more than half)

# The cost model, fitted to the default grids `ann-bench run` measured on this project's 2-vCPU VM: 200k x 128
# (benchmarks/tune_vs_grid.py: per backend, its builds and its searches after the run's skipping of settings that
# cannot win), checked against 50k x 64 (hnsw + ivf) and the 1M x 128 sweep of benchmarks/sweep_1m.py. Per
# backend: seconds of one default build scaled to 1M x 128 on one thread (t threads: / t^0.85), and seconds of its
# whole default search grid there (10,000 queries, one run). Builds scale as (n * dim)^1.25, searches as
# (n * dim)^0.85 (a scan: ^1); each measured setting adds its recall computation (SETTING_S per 1,000 queries).
REF_SIZE = 1_000_000 * 128
COSTS: dict[str, tuple[float, float]] = {
    "hnsw": (307.0, 105.0), "hnsw:faiss": (374.0, 125.0), "nsw": (252.0, 146.0), "ivf": (21.0, 41.0),
    "ivfpq": (103.0, 124.0), "annoy": (92.0, 1097.0), "flat": (0.7, 159.0), "kdtree": (10.0, 2600.0),
}
SETTING_S = 0.1
SCANS = {"flat", "kdtree"}
WORKER_S = 0.4  # a worker process's start, imports and data load, per build job


def _cost_key(cls: type[Index]) -> str:
    key = f"{cls.name}:{cls.impl}"
    return key if key in COSTS else cls.name if cls.name in COSTS else "hnsw"


def _param_factor(cls: type[Index], build: dict[str, Any]) -> float:
    """How much costlier ``build`` is than the backend's reference default build (1.0)."""
    f = 1.0
    if "ef_construction" in build:
        f *= max(build["ef_construction"], 1) / (100 if cls.name == "nsw" else 200)
    if "M" in build:
        f *= 0.7 + 0.3 * build["M"] / 16
    if "f" in build:
        f *= build["f"] / 15
    if "nlist" in build:
        f *= (max(build["nlist"], 1) / 1024) ** 1.66
    if "n_trees" in build:
        f *= build["n_trees"] / 75
    return max(f, 1e-3)


def estimate_build_s(cls: type[Index], build: dict[str, Any], n: int, dim: int, threads: int = 1) -> float:
    """Estimated seconds of one build job (worker start, build) of ``build`` over n x dim vectors."""
    b, _ = COSTS[_cost_key(cls)]
    return WORKER_S + b * (n * dim / REF_SIZE) ** 1.25 * _param_factor(cls, build) / max(1, threads) ** 0.85


def estimate_setting_s(cls: type[Index], n: int, dim: int, nq: int) -> float:
    """Estimated seconds of one search setting over ``nq`` queries, one run: the backend's default search grid
    at 1M x 128 divided by its settings (two builds' worth), scaled to n x dim."""
    _, s = COSTS[_cost_key(cls)]
    ref_settings = 2 * max(1, math.prod(len(v) for v in cls.search_grid.values()))
    return s / ref_settings * nq / 1e4 * (n * dim / REF_SIZE) ** (1.0 if cls.name in SCANS else 0.85)


def estimate_grid_s(plans, n: int, dim: int, nq: int, runs: int, threads: int = 1) -> float:
    """Estimated seconds of ``ann-bench run`` over ``plans`` (the default grids): every build, every search."""
    total = 0.5  # ground truth check, store
    for plan in plans:
        _, s = COSTS[_cost_key(plan.cls)]
        total += sum(estimate_build_s(plan.cls, b, n, dim, threads) for b in plan.builds)
        ref_settings = 2 * max(1, math.prod(len(v) for v in plan.cls.search_grid.values()))
        scale = (n * dim / REF_SIZE) ** (1.0 if plan.cls.name in SCANS else 0.85)
        total += s * runs * nq / 1e4 * scale * plan.n_configs / ref_settings
        total += SETTING_S * nq / 1000 * plan.n_configs * 0.75  # about a quarter are skipped as unable to win
    return total


def default_budget(plans, n: int, dim: int, nq: int, runs: int, threads: int = 1) -> tuple[float, float]:
    """(budget seconds, the default grid's estimated seconds it is derived from)."""
    grid = estimate_grid_s(plans, n, dim, nq, runs, threads)
    return max(MIN_BUDGET_S, BUDGET_SHARE * grid), grid


def fidelities(n: int, subsample: float | None) -> list[int]:
    """The train-set sizes tune measures builds at, smallest first, the last the full set: a sixteenth of the
    vectors (at least SUBSAMPLE_MIN) where n >= SUBSAMPLE_FROM, or ``--subsample``'s fraction; else n alone."""
    if subsample is not None:
        if subsample >= 1.0:
            return [n]
        return [max(1, int(round(n * subsample))), n]
    if n < SUBSAMPLE_FROM:
        return [n]
    return [max(SUBSAMPLE_MIN, n // 16), n]


def divisors(dim: int, low: int, high: int) -> list[int]:
    return [m for m in range(max(1, low), min(dim, high) + 1) if dim % m == 0]


def build_space(cls: type[Index], n: int, dim: int) -> dict[str, Any]:
    """Optuna distributions of the build parameters tune varies, wider than the default grids; a parameter not
    named here keeps its default (or the value given with --build)."""
    from optuna.distributions import CategoricalDistribution, IntDistribution

    root = math.sqrt(n)
    space: dict[str, Any] = {
        "M": IntDistribution(4, 64, log=True),
        "ef_construction": IntDistribution(40, 800, log=True),
        # sqrt(n)/4 .. 16 sqrt(n) lists, at most one per 39 vectors (fewer and faiss's k-means warns it has too
        # few training points per centroid)
        "nlist": IntDistribution(max(1, min(int(root / 4), n // 39)), max(1, min(int(16 * root), n // 39)),
                                 log=True),
        "n_trees": IntDistribution(2, 256, log=True),
        "f": IntDistribution(4, 48, log=True),
        "leafsize": IntDistribution(4, 256, log=True),
    }
    if cls.name == "nsw":
        space["ef_construction"] = IntDistribution(48, 400, log=True)
    if cls.name == "ivfpq":
        ms = divisors(dim, max(1, dim // 32), min(64, dim // 2 or 1)) or divisors(dim, 1, 64)
        space["m"] = CategoricalDistribution(ms)
        space["nbits"] = CategoricalDistribution([b for b in (4, 6, 8) if 2 ** b <= n] or [4])
        space["rerank"] = CategoricalDistribution([False, True])  # keep raw vectors to re-rank (search refine)
    declared = {p.name: p for p in cls.build_params}
    return {name: dist for name, dist in space.items() if name in declared}


def subsample_set(vs, X: np.ndarray, fraction: float, seed: int, k: int, progress=None) -> Path:
    """A random ``fraction`` of ``vs``'s train vectors (seeded) with all its queries, labels and exact ground
    truth, written once into the cache (``subsamples/``) and reused."""
    from ann_bench.config import cache_dir
    from ann_bench.data.vectorset import VectorSet, write_vectorset

    n_sub = int(round(vs.n_train * fraction))
    if n_sub < max(1000, 2 * k):
        raise InputError(f"--subsample {fraction} of {vs.n_train} vectors leaves {n_sub}; a subsample needs >= "
                         f"{max(1000, 2 * k)}: raise it or drop --subsample")
    path = cache_dir() / "subsamples" / f"{vs.content_hash()[:16]}-{n_sub}-{seed}.hdf5"
    if path.exists():
        try:
            with VectorSet(path) as sub:
                if sub.n_train == n_sub and sub.gt_depth >= k:
                    return path
        except InputError:
            pass  # unreadable: written again below
    ids = np.sort(np.random.default_rng(seed).choice(vs.n_train, n_sub, replace=False))
    labels = (vs.labels("train")[ids], vs.labels("test")) if vs.has_labels else (None, None)
    path.parent.mkdir(parents=True, exist_ok=True)
    keys = vs.keys("train")
    write_vectorset(path, X[ids], vs.load_test(), vs.metric, train_labels=labels[0], test_labels=labels[1],
                    train_keys=keys[ids] if keys is not None else None, test_keys=vs.keys("test"),
                    attrs={"name": f"{vs.name}-sample{n_sub}", "source": "ann-bench tune --subsample",
                           "parent": vs.content_hash(), "sample_seed": seed}, k=max(k, 10), progress=progress)
    return path


def scale_build(build: dict[str, Any], space: dict[str, Any], factor: float) -> dict[str, Any]:
    """A build configuration found on a subsample, carried to the full set: the number of IVF lists grows with
    sqrt(n) (``factor`` = sqrt(n_full / n_sample)), within its range; graph and tree parameters are kept."""
    out = dict(build)
    if "nlist" in out:
        d = space.get("nlist")
        value = int(round(out["nlist"] * factor))
        out["nlist"] = max(1, value if d is None else min(value, int(d.high)))
    return out


