"""Our Navigable Small World graph (numba, no hierarchy) against hnswlib's HNSW, one query thread each.

Generates a seeded clustered data set (a mixture of Gaussians on random low-dimensional subspaces plus small
isotropic noise, see :func:`clustered`), computes the exact ground truth with ``faiss.knn``, builds NSW for
each ``--f`` and hnswlib (M=16, ef_construction=200), both with one thread, sweeps ef for both, measures batch
QPS (best of ``--runs``, the runs of all configurations interleaved so that a slow spell of the machine hits
every configuration alike) and id-based recall@10, and interpolates each frontier's QPS at recall 0.9, 0.95
and 0.99. Prints a table with the ratio NSW / hnswlib and the build times; writes the figures as JSON.

    python benchmarks/nsw_vs_hnswlib.py [--n 100000] [--dim 128] [--queries 1000] [--f 10,20]
                                        [--out results/nsw_vs_hnswlib.json]
"""

from __future__ import annotations

import argparse
import json
from importlib import metadata
import platform
import sys
import time
from pathlib import Path

import numpy as np

K = 10
TARGETS = (0.9, 0.95, 0.99)
EF_SWEEP = [10, 12, 15, 20, 30, 40, 60, 80, 120, 160, 240, 320, 640]


def clustered(n: int, nq: int, dim: int, clusters: int = 100, intrinsic: int = 16, noise: float = 0.05,
              seed: int = 42) -> tuple[np.ndarray, np.ndarray]:
    """Embedding-like vectors: (X (n, dim), Q (nq, dim)) float32, drawn alike.

    ``clusters`` centres ~ N(0, I_dim); each cluster spans a random ``intrinsic``-dimensional subspace
    (orthonormal basis) with per-cluster scale ~ U(0.3, 0.6) per direction; every vector gets isotropic noise
    of total norm about ``noise``. Cluster radii (~1.8) are small next to the distances between centres
    (~sqrt(2 dim)), so the clusters are well separated.
    """
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((clusters, dim)).astype(np.float32)
    bases = np.linalg.qr(rng.standard_normal((clusters, dim, intrinsic)))[0].astype(np.float32)
    scales = rng.uniform(0.3, 0.6, clusters).astype(np.float32)

    def draw(m: int) -> np.ndarray:
        out = np.empty((m, dim), dtype=np.float32)
        for start in range(0, m, 20_000):  # chunks keep the (m, dim, intrinsic) gather small
            label = rng.integers(0, clusters, min(20_000, m - start))
            z = rng.standard_normal((len(label), intrinsic)).astype(np.float32) * scales[label, None]
            eps = rng.standard_normal((len(label), dim)).astype(np.float32) * (noise / np.sqrt(dim))
            out[start : start + len(label)] = centers[label] + np.einsum("mdr,mr->md", bases[label], z) + eps
        return out

    return draw(n), draw(nq)


def id_recall(I: np.ndarray, gt: np.ndarray, k: int = K) -> float:
    """Mean |I[:, :k] ∩ gt[:, :k]| / k over the queries."""
    hits = (I[:, :k, None] == gt[:, None, :k]).any(axis=2).sum(axis=1)
    return float(hits.mean() / k)


def frontier(points: list[dict]) -> list[dict]:
    """The Pareto frontier of {recall, qps} points: no other point has both more recall and more QPS."""
    best = []
    for p in sorted(points, key=lambda p: (-p["recall"], -p["qps"])):
        if not best or p["qps"] > best[-1]["qps"]:
            best.append(p)
    return sorted(best, key=lambda p: p["recall"])


def qps_at(points: list[dict], target: float) -> tuple[float | None, str]:
    """QPS at ``target`` recall on the frontier: interpolated (log QPS linear in recall) between the two
    points around it ("interp"); the fastest point above it when every point is above ("bound": a lower
    bound); None when no point reaches it."""
    front = frontier(points)
    above = [p for p in front if p["recall"] >= target]
    if not above:
        return None, "unreached"
    below = [p for p in front if p["recall"] < target]
    hi = above[0]
    if not below:
        return hi["qps"], "bound"
    lo = below[-1]
    t = (target - lo["recall"]) / (hi["recall"] - lo["recall"])
    return float(np.exp(np.log(lo["qps"]) + t * (np.log(hi["qps"]) - np.log(lo["qps"])))), "interp"


def measure(configs: dict, Q: np.ndarray, gt: np.ndarray, runs: int) -> dict:
    """configs {label: (index, search params)} -> {label: {recall, qps}}; runs interleaved, best kept."""
    best = {label: np.inf for label in configs}
    recall = {}
    for _ in range(runs):
        for label, (index, search) in configs.items():
            index.set_search_params(**search)
            t0 = time.perf_counter()
            D, I = index.query(Q, K)
            elapsed = time.perf_counter() - t0
            best[label] = min(best[label], elapsed)
            recall[label] = id_recall(index.convert(D, I)[1], gt)
    return {label: {"recall": recall[label], "qps": len(Q) / best[label]} for label in configs}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--clusters", type=int, default=100)
    ap.add_argument("--intrinsic", type=int, default=16)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--f", default="10,20", help="NSW build values of f, comma-separated")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path("results/nsw_vs_hnswlib.json"))
    args = ap.parse_args()

    import faiss
    import numba

    from ann_bench.backends import get_backend

    faiss.omp_set_num_threads(1)
    numba.set_num_threads(1)
    t0 = time.perf_counter()
    X, Q = clustered(args.n, args.queries, args.dim, args.clusters, args.intrinsic, seed=args.seed)
    _, gt = faiss.knn(Q, X, K)
    print(f"data: {args.n} x {args.dim}, {args.queries} queries, {args.clusters} clusters of intrinsic "
          f"dimension {args.intrinsic}; generated with ground truth in {time.perf_counter() - t0:.1f} s")

    builds = [("hnswlib", get_backend("hnsw", "hnswlib"), {"M": 16, "ef_construction": 200})]
    builds += [(f"nsw f={f}", get_backend("nsw", "numba"), {"f": int(f), "w": 1, "ef_construction": 100})
               for f in args.f.split(",")]
    configs, built = {}, []
    for label, cls, params in builds:
        index = cls("euclidean", args.dim, threads=1, seed=args.seed, **params)
        t0 = time.perf_counter()
        index.build(X)
        build_s = time.perf_counter() - t0
        built.append({"label": label, "impl": cls.impl, "build": params, "build_s": build_s,
                      "index_mb": index.index_bytes() / 1e6})
        print(f"build {label:12} {build_s:7.1f} s  {index.index_bytes() / 1e6:6.1f} MB")
        index.set_threads(1)
        for ef in EF_SWEEP:
            configs[(label, ef)] = (index, {"ef": ef})
    figures = measure(configs, Q, gt, args.runs)

    print(f"\n{'index':12} {'ef':>5} {'recall@10':>9} {'QPS':>9}")
    for (label, ef), fig in figures.items():
        print(f"{label:12} {ef:5d} {fig['recall']:9.4f} {fig['qps']:9,.0f}")
    points = {}
    for (label, ef), fig in figures.items():
        family = "hnswlib" if label == "hnswlib" else "nsw"
        points.setdefault(family, []).append({"config": label, "ef": ef, **fig})
        points.setdefault(label, []).append({"config": label, "ef": ef, **fig})

    print(f"\nQPS at recall@10 (1 thread; 'bound' = every point of the curve is above the target, its fastest "
          f"point shown)\n{'target':>6} {'hnswlib':>16} {'nsw (best f)':>16} {'ratio nsw/hnswlib':>18}")
    summary = []
    for target in TARGETS:
        h, hk = qps_at(points["hnswlib"], target)
        s, sk = qps_at(points["nsw"], target)
        ratio = s / h if s and h else None
        summary.append({"recall": target, "hnswlib_qps": h, "hnswlib_kind": hk, "nsw_qps": s, "nsw_kind": sk,
                        "ratio": ratio, **{f"{lab}_qps": qps_at(points[lab], target)[0] for lab, _, _ in builds}})
        fmt = lambda q, kind: f"{q:,.0f} ({kind})" if q else kind  # noqa: E731
        print(f"{target:6.2f} {fmt(h, hk):>16} {fmt(s, sk):>16} {ratio if ratio else float('nan'):18.2f}")
    for row in built:
        print(f"build {row['label']:12} {row['build_s']:7.1f} s  index {row['index_mb']:6.1f} MB")

    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "data": {"n": args.n, "dim": args.dim, "queries": args.queries, "clusters": args.clusters,
                 "intrinsic": args.intrinsic, "seed": args.seed, "k": K},
        "builds": built,
        "sweep": [{"config": label, "ef": ef, **fig} for (label, ef), fig in figures.items()],
        "qps_at_recall": summary,
        "threads": 1, "runs": args.runs,
        "host": {"machine": platform.machine(), "processor": platform.processor(), "python": sys.version.split()[0]},
        "versions": {name: metadata.version(name) for name in ("numba", "hnswlib", "faiss-cpu", "numpy")},
    }
    args.out.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
