"""Million-vector scale: `data synth` 1M x 128 and the default sweep of every backend, timed end to end.

Steps, each an `ann-bench` command run as a child process (what a user types), wall-clocked here:

1. ``ann-bench data synth`` ``--n`` x ``--dim`` with ``--queries`` queries (exact 100-NN ground truth);
2. a query subset file for the k-d tree (``--kdtree-queries``): a small HDF5 whose ``train`` is an HDF5
   external link to the big file's (no copy) and whose test/ground truth are the first queries;
3. ``ann-bench run`` per backend with its default grids, ``--threads 1`` for queries and
   ``--build-threads`` for builds, ``--index-cache`` (a resumed sweep reuses built indices), all rows in one
   results store; the k-d tree on the subset file with eps >= 1 only (eps = 0 at 128-d is a scan). As in
   any ``ann-bench run``, settings costlier than one that already reached recall 1.0 are skipped.

Prints every figure of the README's table: per step its wall time (data generation included), per backend
its build seconds and index MB per build configuration, peak worker RSS, best QPS at recall >= 0.9 / 0.99
with its configuration, max recall; the total is the sum of the steps. A resumed run keeps the total honest:
each step's time is summed over every invocation that ran it (``steps.json`` in the work dir; an interrupted
or failed step counts the time it ran), so the total is all the time the sweep took, and the time of this
invocation alone is printed beside it. Draws every backend in one plot (``--out`` with .png; the k-d
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


def ann_bench(*args: str) -> None:
    """Run ``ann-bench ARGS``; stop on failure."""
    print("$ ann-bench " + " ".join(args), flush=True)
    subprocess.run([sys.executable, "-m", "ann_bench", *args], check=True)


class StepTimes:
    """Wall seconds per step, summed over every invocation of the sweep in one work dir (kept in ``path``), so
    a resumed sweep's total is all the time it took, not only the last invocation's. ``this_run``: the seconds
    of this invocation alone."""

    def __init__(self, path: Path):
        self.path = path
        raw = json.loads(path.read_text()) if path.exists() else {}
        # {"step": {"seconds": s, "runs": r}}; a bare number: the file of an older version (one run)
        self.spent = {k: (v if isinstance(v, dict) else {"seconds": float(v), "runs": 1}) for k, v in raw.items()}
        self.this_run: dict[str, float] = {}

    def timed(self, name: str, fn, *args) -> float:
        """Run ``fn(*args)`` and add its wall time to step ``name`` — also when it fails or is interrupted
        (that time was spent too); returns the seconds of this call."""
        t0 = time.perf_counter()
        try:
            fn(*args)
        finally:
            self.add(name, time.perf_counter() - t0)
        return self.this_run[name]

    def add(self, name: str, seconds: float) -> None:
        entry = self.spent.setdefault(name, {"seconds": 0.0, "runs": 0})
        entry["seconds"] += seconds
        entry["runs"] += 1
        self.this_run[name] = self.this_run.get(name, 0.0) + seconds
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(self.spent))
        tmp.replace(self.path)

    def seconds(self, name: str) -> float | None:
        return self.spent[name]["seconds"] if name in self.spent else None

    def runs(self, name: str) -> int:
        return self.spent.get(name, {}).get("runs", 0)


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


def draw(records: list, out: Path, main_hash: str | None = None, kdtree_queries: int | None = None) -> Path:
    """The figure of this sweep (``docs/sweep_1m.png``): every backend's rows on the main set (``main_hash``;
    None: the set most non-k-d-tree rows were measured on) and the k-d tree's on its smaller query set
    (``kdtree_queries`` queries; None: any), drawn as if on the main set and marked "scipy, 200 queries".
    ``scripts/docs_figures.py`` draws the docs figure with this same function."""
    from collections import Counter

    from ann_bench.report.plots import plot_recall_qps

    ok = [r for r in records if r.status == "ok" and r.recall is not None]
    if main_hash is None:
        main_hash = Counter(r.dataset_hash for r in ok if r.backend != "kdtree").most_common(1)[0][0]
    queries = next(r.n_test for r in ok if r.dataset_hash == main_hash)
    rows = [r for r in ok if r.dataset_hash == main_hash and r.backend != "kdtree"]
    rows += [dataclasses.replace(r, dataset_hash=main_hash, impl=f"{r.impl}, {r.n_test} queries", n_test=queries)
             for r in ok if r.backend == "kdtree" and r.dataset_hash != main_hash
             and (kdtree_queries is None or r.n_test == kdtree_queries)]
    out.parent.mkdir(parents=True, exist_ok=True)
    return plot_recall_qps(rows, out)


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
    times = StepTimes(args.workdir / "steps.json")  # every step's wall time, summed across resumed invocations
    figures: dict = {"n": args.n, "dim": args.dim, "queries": args.queries, "build_threads": args.build_threads,
                     "runs": args.runs, "steps": {}}

    if not data.exists():
        times.timed("data synth", ann_bench, "data", "synth", str(data), "--n", str(args.n), "--dim", str(args.dim),
                    "--queries", str(args.queries), "--clusters", "100")
    small = args.workdir / f"synth-{args.n}x{args.dim}-q{args.kdtree_queries}.hdf5"
    if "kdtree" in args.backends and not small.exists():
        subset_file(data, small, args.kdtree_queries)
    common = ["--threads", "1", "--build-threads", str(args.build_threads), "--runs", str(args.runs),
              "--index-cache", "-q", "--results", str(store)]
    for spec in args.backends.split(","):
        if spec == "kdtree":
            seconds = times.timed(spec, ann_bench, "run", "--dataset", str(small), "--backend", "kdtree", "--search",
                                  "kdtree:eps=1,2,4,8", *common)
        else:
            seconds = times.timed(spec, ann_bench, "run", "--dataset", str(data), "--backend", spec, *common)
        print(f"{spec}: {seconds:.0f} s" + (f" (all runs: {times.seconds(spec):.0f} s)" if times.runs(spec) > 1
                                             else ""), flush=True)
    for name in ["data synth", *args.backends.split(",")]:
        if times.seconds(name) is not None:
            figures["steps"][name] = times.seconds(name)
    # The table's rows sum to the total, data generation included, each the time of every invocation that ran it.
    total = sum(figures["steps"].values())
    this_run = sum(times.this_run.values())
    resumed = any(times.runs(name) > 1 or name not in times.this_run for name in figures["steps"])
    figures.update(steps_runs={name: times.runs(name) for name in figures["steps"]}, this_run_s=this_run,
                   resumed=resumed)
    peak_children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024

    from ann_bench.data.vectorset import VectorSet

    with VectorSet(data) as vs:
        main_hash = vs.content_hash()
    with ResultStore(store, create=False) as s:
        records = [r for r in s.records() if r.status == "ok" and r.recall is not None]
    per, plotted = {}, []  # plotted: the rows of the backends swept here (draw() picks the sets)
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
    if resumed:
        print(f"resumed: the total sums every invocation's time in {args.workdir}; this invocation alone took "
              f"{this_run:.0f} s")
    plot = draw(plotted, args.out.with_suffix(".png"), main_hash, args.kdtree_queries)
    args.out.write_text(json.dumps(figures, indent=2, default=str))
    print(f"wrote {args.out} and {plot} (every backend; the k-d tree on its {args.kdtree_queries} queries)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
