"""Million-vector scale: `data synth` 1M x 128 and the default sweep of every backend, timed end to end.

Steps, each an `ann-bench` command run as a child process (what a user types), wall-clocked here:

1. ``ann-bench data synth`` ``--n`` x ``--dim`` with ``--queries`` queries (exact 100-NN ground truth);
2. a query subset file for the k-d tree (``--kdtree-queries``): a small HDF5 whose ``train`` is an HDF5
   external link to the big file's (no copy) and whose test/ground truth are the first queries;
3. ``ann-bench run`` per backend with its default grids, ``--threads 1`` for queries and
   ``--build-threads`` for builds, ``--index-cache`` (a resumed sweep reuses built indices), all rows in one
   results store; the k-d tree on the subset file with eps >= 1 only (eps = 0 at 128-d is a scan). As in
   any ``ann-bench run``, settings costlier than one that already reached recall 1.0 are skipped.

Prints every figure of the README's table, from this one invocation: per step its wall time (data generation
included, also on a resumed run: step times are kept in the work dir), per backend its build seconds and
index MB per build configuration, peak worker RSS, best QPS at recall >= 0.9 / 0.99 with its configuration,
max recall; the total is the sum of the steps. Draws every backend in one plot (``--out`` with .png; the k-d
tree, measured on its smaller query file, is marked "scipy, 200 queries"). Targets: total <= 45 min and peak
<= 8 GB on 2 cores. Writes a JSON of the figures; re-running resumes (done rows skipped).

    python benchmarks/sweep_1m.py [--n 1000000] [--dim 128] [--queries 10000] [--build-threads 2]
                                  [--backends flat,ivf,ivfpq,hnsw,hnsw:faiss,nsw,annoy,kdtree]
                                  [--workdir ~/.cache/ann-bench/sweep_1m] [--out results/sweep_1m.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def ann_bench(*args: str) -> float:
    """Run ``ann-bench ARGS`` and return its wall time; stop on failure."""
    cmd = [sys.executable, "-m", "ann_bench", *args]
    print("$ ann-bench " + " ".join(args), flush=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    return time.perf_counter() - t0


def subset_file(src: Path, dst: Path, nq: int) -> None:
    """A VectorSet with ``src``'s train (external link, no copy) and its first ``nq`` queries."""
    import h5py

    tmp = dst.with_name(dst.name + ".tmp")
    with h5py.File(src, "r") as f, h5py.File(tmp, "w") as g:
        g["train"] = h5py.ExternalLink(os.path.relpath(src, dst.parent), "/train")
        for key in ("test", "neighbors", "distances"):
            g[key] = f[key][:nq]
        for key in ("train_labels",):
            if key in f:
                g[key] = h5py.ExternalLink(os.path.relpath(src, dst.parent), f"/{key}")
        if "test_labels" in f:
            g["test_labels"] = f["test_labels"][:nq]
        for k, v in f.attrs.items():
            g.attrs[k] = v
    tmp.replace(dst)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--queries", type=int, default=10_000)
    ap.add_argument("--kdtree-queries", type=int, default=200)
    ap.add_argument("--build-threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--runs", type=int, default=1,
                    help="timed runs per search setting (each runs all --queries; 1 is enough at 10,000 queries)")
    ap.add_argument("--backends", default="flat,ivf,ivfpq,hnsw,hnsw:faiss,nsw,annoy,kdtree")
    ap.add_argument("--workdir", type=Path, default=Path("~/.cache/ann-bench/sweep_1m").expanduser())
    ap.add_argument("--out", type=Path, default=Path("results/sweep_1m.json"))
    args = ap.parse_args()

    from ann_bench.bench.results import ResultStore, params_str

    args.workdir.mkdir(parents=True, exist_ok=True)
    data = args.workdir / f"synth-{args.n}x{args.dim}.hdf5"
    store = args.workdir / "sweep.sqlite"
    steps_file = args.workdir / "steps.json"  # every step's wall time, kept across resumed invocations
    figures: dict = {"n": args.n, "dim": args.dim, "queries": args.queries, "build_threads": args.build_threads,
                     "runs": args.runs, "steps": {}}
    earlier = json.loads(steps_file.read_text()) if steps_file.exists() else {}

    def step(name: str, seconds: float) -> None:
        figures["steps"][name] = seconds
        steps_file.write_text(json.dumps({**earlier, **figures["steps"]}))

    if not data.exists():
        step("data synth", ann_bench("data", "synth", str(data), "--n", str(args.n), "--dim", str(args.dim),
                                     "--queries", str(args.queries), "--clusters", "100"))
    elif "data synth" in earlier:  # a resumed run: the set was generated by an earlier invocation, counted here
        figures["steps"]["data synth"] = earlier["data synth"]
    small = args.workdir / f"synth-{args.n}x{args.dim}-q{args.kdtree_queries}.hdf5"
    if "kdtree" in args.backends and not small.exists():
        subset_file(data, small, args.kdtree_queries)
    common = ["--threads", "1", "--build-threads", str(args.build_threads), "--runs", str(args.runs),
              "--index-cache", "-q", "--results", str(store)]
    for spec in args.backends.split(","):
        if spec == "kdtree":
            seconds = ann_bench("run", "--dataset", str(small), "--backend", "kdtree", "--search",
                                "kdtree:eps=1,2,4,8", *common)
        else:
            seconds = ann_bench("run", "--dataset", str(data), "--backend", spec, *common)
        step(spec, seconds)
        print(f"{spec}: {seconds:.0f} s", flush=True)
    total = sum(figures["steps"].values())  # the table's rows sum to the total, data generation included
    peak_children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024

    from ann_bench.data.vectorset import VectorSet
    from ann_bench.report.plots import plot_recall_qps

    with VectorSet(data) as vs:
        main_hash = vs.content_hash()
    with ResultStore(store, create=False) as s:
        records = [r for r in s.records() if r.status == "ok" and r.recall is not None]
    per, plotted = {}, []
    print(f"\n{'step':<16} {'wall s':>7} {'builds s':>14} {'index MB':>12} {'peak GB':>8} "
          f"{'QPS@0.9 (config)':>40} {'QPS@0.99 (config)':>40} {'max recall':>10}")
    if "data synth" in figures["steps"]:
        print(f"{'data synth':<16} {figures['steps']['data synth']:>7.0f}")
    for spec in args.backends.split(","):
        name, _, impl = spec.partition(":")
        impl = impl or {"hnsw": "hnswlib", "annoy": "annoy", "kdtree": "scipy", "nsw": "numba"}.get(name, "faiss")
        rows = [r for r in records if r.backend == name and r.impl == impl]
        if spec == "kdtree":  # its smaller query set is another dataset: drawn in the same plot, marked
            rows = [r for r in rows if r.n_test == args.kdtree_queries]
            for r in rows:
                plotted.append(dataclasses.replace(r, dataset_hash=main_hash, impl=f"{r.impl}, {r.n_test} queries",
                                                   n_test=args.queries))
        else:
            rows = [r for r in rows if r.dataset_hash == main_hash]
            plotted += rows
        builds = {json.dumps(r.build_params, sort_keys=True): r for r in rows}
        peak = max((r.peak_rss_bytes or 0) for r in rows) if rows else 0

        def best(t):
            ok = [r for r in rows if r.recall >= t]
            return max(ok, key=lambda r: r.qps) if ok else None

        def cell(r):
            if r is None:
                return "-"
            return f"{r.qps:,.0f} ({params_str(r.build_params)}; {params_str(r.search_params)})"

        b9, b99 = best(0.9), best(0.99)
        per[spec] = {"wall_s": figures["steps"].get(spec),
                     "builds": [(b, r.build_s, r.index_bytes) for b, r in builds.items()],
                     "peak_rss_bytes": peak, "qps_at_0.9": b9.qps if b9 else None,
                     "config_at_0.9": [b9.build_params, b9.search_params] if b9 else None,
                     "qps_at_0.99": b99.qps if b99 else None,
                     "config_at_0.99": [b99.build_params, b99.search_params] if b99 else None,
                     "max_recall": max((r.recall for r in rows), default=None)}
        bs = ", ".join(f"{r.build_s:.0f}" for r in builds.values())
        mb = ", ".join(f"{r.index_bytes / 1e6:,.0f}" for r in builds.values())
        mr = per[spec]["max_recall"]
        print(f"{spec:<16} {figures['steps'].get(spec, 0):>7.0f} {bs:>14} {mb:>12} {peak / 1e9:>8.2f} "
              f"{cell(b9):>40} {cell(b99):>40} {('-' if mr is None else f'{mr:.4f}'):>10}")
    peak_all = max([peak_children] + [v["peak_rss_bytes"] for v in per.values()])
    figures.update(backends=per, total_s=total, peak_rss_bytes=peak_all)
    ok = total <= 45 * 60 and peak_all <= 8e9
    builds_s = sum(seconds or 0 for v in per.values() for _, seconds, _ in v["builds"])
    print(f"{'total':<16} {total:>7.0f} ({total / 60:.1f} min; target <= 45), {builds_s:,.0f} s of builds, "
          f"peak RSS {peak_all / 1e9:.2f} GB (target <= 8): " + ("met" if ok else "MISSED"))
    plot = args.out.with_suffix(".png")
    plot.parent.mkdir(parents=True, exist_ok=True)
    plot_recall_qps(plotted, plot)
    args.out.write_text(json.dumps(figures, indent=2, default=str))
    print(f"wrote {args.out} and {plot} (every backend; the k-d tree on its {args.kdtree_queries} queries)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
