"""Million-vector scale: `data synth` 1M x 128 and the default sweep of every backend, timed end to end.

Steps, each an `ann-bench` command run as a child process (what a user types), wall-clocked here:

1. ``ann-bench data synth`` ``--n`` x ``--dim`` with ``--queries`` queries (exact 100-NN ground truth);
2. a query subset file for the k-d tree (``--kdtree-queries``): a small HDF5 whose ``train`` is an HDF5
   external link to the big file's (no copy) and whose test/ground truth are the first queries;
3. ``ann-bench run`` per backend with its default grids, ``--threads 1`` for queries and
   ``--build-threads`` for builds, ``--index-cache`` (a resumed sweep reuses built indices), all rows in one
   results store; the k-d tree on the subset file with eps >= 1 only (eps = 0 at 128-d is a scan). As in
   any ``ann-bench run``, settings costlier than one that already reached recall 1.0 are skipped.

Reports per backend: wall time, build seconds and peak worker RSS (from the stored rows), best QPS at recall
>= 0.9 / 0.99; overall wall time and peak RSS of any process (``ru_maxrss`` of the children). Targets: total
<= 45 min and peak <= 8 GB on 2 cores. Writes a JSON of the figures; re-running resumes (done rows skipped).

    python benchmarks/sweep_1m.py [--n 1000000] [--dim 128] [--queries 10000] [--build-threads 2]
                                  [--backends flat,ivf,ivfpq,hnsw,hnsw:faiss,nsw,annoy,kdtree]
                                  [--workdir ~/.cache/ann-bench/sweep_1m] [--out results/sweep_1m.json]
"""

from __future__ import annotations

import argparse
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

    from ann_bench.results import ResultStore

    args.workdir.mkdir(parents=True, exist_ok=True)
    data = args.workdir / f"synth-{args.n}x{args.dim}.hdf5"
    store = args.workdir / "sweep.sqlite"
    t_start = time.perf_counter()
    figures: dict = {"n": args.n, "dim": args.dim, "queries": args.queries, "build_threads": args.build_threads,
                     "runs": args.runs, "steps": {}}
    if not data.exists():
        figures["steps"]["synth"] = ann_bench("data", "synth", str(data), "--n", str(args.n), "--dim",
                                              str(args.dim), "--queries", str(args.queries), "--clusters", "100")
    small = args.workdir / f"synth-{args.n}x{args.dim}-q{args.kdtree_queries}.hdf5"
    if "kdtree" in args.backends and not small.exists():
        subset_file(data, small, args.kdtree_queries)
    common = ["--threads", "1", "--build-threads", str(args.build_threads), "--runs", str(args.runs),
              "--index-cache", "-q", "--results", str(store)]
    for spec in args.backends.split(","):
        if spec == "kdtree":
            step = ann_bench("run", "--dataset", str(small), "--backend", "kdtree", "--search", "kdtree:eps=1,2,4,8",
                             *common)
        else:
            step = ann_bench("run", "--dataset", str(data), "--backend", spec, *common)
        figures["steps"][spec] = step
        print(f"{spec}: {step:.0f} s", flush=True)
    total = time.perf_counter() - t_start
    peak_children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024

    with ResultStore(store, create=False) as s:
        records = [r for r in s.records() if r.status == "ok"]
    print(f"\n{'backend':<16} {'wall s':>8} {'build s':>16} {'peak RSS GB':>12} {'QPS@0.9':>9} {'QPS@0.99':>9}")
    per = {}
    for spec in args.backends.split(","):
        name, _, impl = spec.partition(":")
        rows = [r for r in records if r.backend == name and (not impl or r.impl == impl)]
        if not impl and rows:
            default_impl = rows[0].impl if name != "hnsw" else "hnswlib"
            rows = [r for r in rows if r.impl == default_impl]
        builds = sorted({(json.dumps(r.build_params, sort_keys=True), r.build_s or 0.0) for r in rows})
        peak = max((r.peak_rss_bytes or 0) for r in rows) if rows else 0

        def best(t):
            ok = [r.qps for r in rows if r.recall is not None and r.recall >= t]
            return max(ok) if ok else None

        per[spec] = {"wall_s": figures["steps"].get(spec), "builds": builds, "peak_rss_bytes": peak,
                     "qps_at_0.9": best(0.9), "qps_at_0.99": best(0.99)}
        bs = ", ".join(f"{b:.0f}" for _, b in builds)
        q9, q99 = best(0.9), best(0.99)
        print(f"{spec:<16} {figures['steps'].get(spec, 0):>8.0f} {bs:>16} {peak / 1e9:>12.2f} "
              f"{(f'{q9:,.0f}' if q9 else '-'):>9} {(f'{q99:,.0f}' if q99 else '-'):>9}")
    peak_all = max([peak_children] + [v["peak_rss_bytes"] for v in per.values()])
    figures.update(backends=per, total_s=total, peak_rss_bytes=peak_all)
    ok = total <= 45 * 60 and peak_all <= 8e9
    print(f"\ntotal {total / 60:.1f} min (target <= 45), peak RSS {peak_all / 1e9:.2f} GB (target <= 8): "
          + ("met" if ok else "MISSED"))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(figures, indent=2, default=str))
    print(f"wrote {args.out}; the store is {store} (`ann-bench plot --results {store} -o sweep_1m.png`)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
