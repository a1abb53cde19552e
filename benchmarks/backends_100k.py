"""The added backends (nsw, annoy, kdtree, hnsw[faiss]; hnsw[hnswlib] for reference) at their default grids.

Same data as ``nsw_vs_hnswlib.py`` (seeded clustered Gaussians, 100k x 128 by default), one query thread,
batch mode, best of ``--runs``. For every backend: build time and index size of each build configuration,
and the fastest configuration reaching recall@10 >= 0.9 and >= 0.99 (recall by the ann-benchmarks distance
rule, as ``ann-bench run``; id recall alongside). The k-d tree is measured on the first ``--kdtree-queries``
queries only: at 128 dimensions it scans most leaves. Prints a table and writes a JSON of the figures.

    python benchmarks/backends_100k.py [--n 100000] [--dim 128] [--queries 1000] [--kdtree-queries 200]
                                       [--backends nsw,annoy,kdtree,hnsw:faiss,hnsw:hnswlib]
                                       [--out results/backends_100k.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from importlib import metadata
from pathlib import Path

import numpy as np

from nsw_vs_hnswlib import clustered  # the same data (this directory is on sys.path when run as a script)

K = 10
TARGETS = (0.9, 0.99)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--kdtree-queries", type=int, default=200)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--backends", default="nsw,annoy,kdtree,hnsw:faiss,hnsw:hnswlib")
    ap.add_argument("--out", type=Path, default=Path("results/backends_100k.json"))
    args = ap.parse_args()

    import faiss
    import numba

    from ann_bench.backends import get_backend
    from ann_bench.backends.base import grid_product
    from ann_bench.distances import distances_to
    from ann_bench.bench.metrics import distance_recall, id_recall

    faiss.omp_set_num_threads(1)
    numba.set_num_threads(1)
    X, Q = clustered(args.n, args.queries, args.dim, seed=args.seed)
    _, gt_I = faiss.knn(Q, X, K)
    gt_D = distances_to("euclidean", Q, X, gt_I)  # float64, recomputed like the runner's ground truth
    print(f"data: {args.n} x {args.dim}, {args.queries} queries", flush=True)

    rows, summary = [], []
    for spec in args.backends.split(","):
        name, _, impl = spec.partition(":")
        cls = get_backend(name, impl or None)
        nq = args.kdtree_queries if cls.name == "kdtree" else args.queries
        Qb, gtb_D, gtb_I = Q[:nq], gt_D[:nq], gt_I[:nq]
        builds = []
        for build in grid_product(cls.default_build_grid(args.n, args.dim)):
            index = cls("euclidean", args.dim, threads=1, seed=args.seed, **build)
            t0 = time.perf_counter()
            index.build(X)
            build_s = time.perf_counter() - t0
            mb = index.index_bytes() / 1e6
            builds.append({"build": build, "build_s": build_s, "index_mb": mb})
            print(f"{cls.label()} {build}: build {build_s:.1f} s, {mb:.1f} MB", flush=True)
            index.set_threads(1)
            for search in grid_product(cls.default_search_grid(args.n, args.dim)):
                search = cls.validate_search_params(search)
                if index.search_skip_reason(search, K):
                    continue
                index.set_search_params(**search)
                best = np.inf
                for _ in range(args.runs):
                    t0 = time.perf_counter()
                    D, I = index.query(Qb, K)
                    best = min(best, time.perf_counter() - t0)
                _, I = index.convert(D, I)
                recall = float(distance_recall(distances_to("euclidean", Qb, X, I), gtb_D, K).mean())
                row = {"backend": cls.name, "impl": cls.impl, "build": build, "search": search, "queries": nq,
                       "recall": recall, "id_recall": float(id_recall(I, gtb_I, K).mean()), "qps": nq / best,
                       "build_s": build_s, "index_mb": mb}
                rows.append(row)
                print(f"  {search}: recall {recall:.4f}  QPS {nq / best:,.0f}", flush=True)
            del index
        mine = [r for r in rows if r["backend"] == cls.name and r["impl"] == cls.impl]
        entry = {"backend": cls.label(), "queries": nq, "builds": builds}
        for target in TARGETS:
            ok = [r for r in mine if r["recall"] >= target]
            top = max(ok, key=lambda r: r["qps"]) if ok else None
            entry[f"best_at_{target}"] = None if top is None else {
                "qps": top["qps"], "recall": top["recall"], "build": top["build"], "search": top["search"],
                "build_s": top["build_s"], "index_mb": top["index_mb"]}
        summary.append(entry)

    print(f"\n{'backend':14} {'best QPS @>=0.90 (build; search)':58} {'best QPS @>=0.99 (build; search)':58} "
          f"{'build s':>10} {'index MB':>9}")
    for e in summary:
        cells = []
        for target in TARGETS:
            b = e[f"best_at_{target}"]
            cells.append("not reached" if b is None else
                         f"{b['qps']:,.0f} ({_short(b['build'])}; {_short(b['search'])})")
        build_s = "/".join(f"{b['build_s']:.1f}" for b in e["builds"])
        mb = "/".join(f"{b['index_mb']:.0f}" for b in e["builds"])
        print(f"{e['backend']:14} {cells[0]:58} {cells[1]:58} {build_s:>10} {mb:>9}")
    print("(build s and index MB: one figure per default build configuration, in grid order)")

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "data": {"n": args.n, "dim": args.dim, "queries": args.queries, "kdtree_queries": args.kdtree_queries,
                 "seed": args.seed, "k": K},
        "threads": 1, "runs": args.runs, "summary": summary, "sweep": rows,
        "versions": {p: metadata.version(p) for p in ("numba", "hnswlib", "faiss-cpu", "annoy", "scipy", "numpy")},
    }, indent=2))
    print(f"wrote {args.out}")
    return 0


def _short(params: dict) -> str:
    return ",".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


if __name__ == "__main__":
    sys.exit(main())
