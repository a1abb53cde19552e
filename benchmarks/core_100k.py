"""Acceptance sweep of the core backends on a synthetic 100k x 128 set (issue: core engine).

Generates the set (once, into the cache directory), sweeps flat, hnsw, ivf and ivfpq over their default
grids (1 query thread, batch mode), stores the results, draws the Pareto plot, and checks:

- flat recall@10 == 1.0 exactly;
- hnsw and ivf >= 0.99 at their largest default search setting; ivfpq re-ranked (rerank build) >= 0.95;
- along each build configuration's search sweep, QPS rises as recall falls.

Prints a table, writes a JSON of the figures and exits 1 if a check fails.

    python benchmarks/core_100k.py [--n 100000] [--dim 128] [--queries 10000] [--out results/core_100k]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from ann_bench.config import cache_dir
from ann_bench.data.vectorset import SynthSpec, VectorSet, synth
from ann_bench.report.plots import plot_recall_qps
from ann_bench.bench.results import ResultStore, params_str
from ann_bench.bench.runner import RunOptions, plan_sweep, run_sweep

BACKENDS = ["flat", "hnsw", "ivf", "ivfpq"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--queries", type=int, default=10_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--build-threads", type=int, default=None, help="default: 1, like the queries")
    ap.add_argument("--out", type=Path, default=Path("results/core_100k"))
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    spec = SynthSpec(n=args.n, dim=args.dim, queries=args.queries, clusters=100, seed=42)
    path = cache_dir() / "datasets" / f"{spec.name()}.hdf5"
    if not path.exists():
        t0 = time.perf_counter()
        synth(path, spec)
        print(f"data synth {spec.name()}: {time.perf_counter() - t0:.1f} s (generation + ground truth)")
    options = RunOptions(k=10, runs=args.runs, threads=1, build_threads=args.build_threads, resume=False)
    with VectorSet(path) as vs, ResultStore(args.out / "ann-bench.sqlite") as store:
        plans = plan_sweep(BACKENDS, vs.n_train, vs.dim, vs.metric)
        t0 = time.perf_counter()
        summary = run_sweep(vs, plans, options, store)
        wall = time.perf_counter() - t0
        records = [r for r in store.records(dataset=vs.content_hash()) if r.k == 10 and r.mode == "batch"]
    plot_recall_qps(records, args.out / "core_100k.png")

    rows, failures = [], []
    print(f"{'backend':8} {'build':40} {'search':12} {'recall@10':>9} {'QPS':>10} {'build s':>8} {'index MB':>9}")
    for r in records:
        print(f"{r.backend:8} {params_str(r.build_params):40} {params_str(r.search_params):12} "
              f"{r.recall:9.4f} {r.qps:10,.0f} {r.build_s:8.2f} {r.index_bytes / 1e6:9.1f}")
        rows.append({"backend": r.backend, "impl": r.impl, "build": r.build_params, "search": r.search_params,
                     "recall": r.recall, "id_recall": r.id_recall, "qps": r.qps, "build_s": r.build_s,
                     "index_mb": r.index_bytes / 1e6, "status": r.status, "error": r.error})
    failures += [f"{r.label()} {r.status}: {r.error}" for r in records if r.status != "ok"]

    def by_build(backend):
        groups = {}
        for r in records:
            if r.backend == backend and r.status == "ok":
                groups.setdefault(params_str(r.build_params), []).append(r)
        return groups

    flat = [r for r in records if r.backend == "flat"]
    if not flat or any(r.recall != 1.0 for r in flat):
        failures.append(f"flat recall {[r.recall for r in flat]} != 1.0")
    for backend, floor, only in (("hnsw", 0.99, None), ("ivf", 0.99, None), ("ivfpq", 0.95, "rerank")):
        for build, rs in by_build(backend).items():
            if only and not rs[0].build_params.get(only):
                continue
            last = max(rs, key=lambda r: list(r.search_params.values()))
            if last.recall < floor:
                failures.append(f"{backend} {build} {params_str(last.search_params)}: recall {last.recall:.4f} < {floor}")
    for backend in ("hnsw", "ivf", "ivfpq"):
        for build, rs in by_build(backend).items():
            rs = sorted(rs, key=lambda r: list(r.search_params.values()))
            for a, b in zip(rs, rs[1:]):
                if b.recall < a.recall - 1e-9 or (b.recall > a.recall + 1e-9 and b.qps > a.qps):
                    failures.append(f"{backend} {build}: {params_str(a.search_params)} -> "
                                    f"{params_str(b.search_params)} is not a recall/QPS trade-off")
    (args.out / "core_100k.json").write_text(json.dumps(
        {"dataset": spec.name(), "sweep_wall_s": wall, "rows": rows, "failures": failures,
         "skipped": summary.skipped_redundant}, indent=1))
    print(f"sweep wall time {wall:.0f} s; plot {args.out / 'core_100k.png'}; figures {args.out / 'core_100k.json'}")
    for f in failures:
        print("FAIL", f)
    print("all checks passed" if not failures else f"{len(failures)} check(s) failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
