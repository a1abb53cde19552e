"""`ann-bench tune` at a million vectors: the set of `benchmarks/sweep_1m.py` (1M x 128, 10,000 queries, 100
clusters, seed 42), all eight backends of that sweep, targets 0.9/0.95/0.99, timed end to end.

Runs, as child processes (what a user types): ``ann-bench data synth`` (skipped when the file exists), then
``ann-bench tune --budget 19m`` (every backend starts on a sixteenth of the vectors; only builds that can still
win are built at 1M), one query thread, builds on ``--build-threads``, one timed run per setting (as
sweep_1m.py's grid). Prints tune's wall time, the peak RSS of any process (``ru_maxrss`` of the children), its
answers and where the time went; with ``--grid STORE`` (sweep_1m.py's ``sweep.sqlite``) also the grid's best
QPS per target from that store and the ratio. Writes everything as JSON. Targets (issue 29): an answer per target
in <= 20 min on 2 cores, QPS >= 0.97x the 1M grid's overall best per target, peak RSS <= 8 GB.

    python benchmarks/tune_1m.py [--workdir ~/.cache/ann-bench/sweep_1m] [--budget 19m]
        [--backends hnsw,hnsw:faiss,ivf,ivfpq,annoy,nsw,flat,kdtree] [--grid STORE] [--out results/tune_1m.json]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workdir", type=Path, default=Path.home() / ".cache" / "ann-bench" / "sweep_1m")
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--backends", default="hnsw,hnsw:faiss,ivf,ivfpq,annoy,nsw,flat,kdtree")
    ap.add_argument("--budget", default="19m")
    ap.add_argument("--build-threads", type=int, default=2)
    ap.add_argument("--grid", type=Path, default=None, help="sweep_1m.py's results store, to compare with")
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "tune_1m.json")
    args = ap.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    data = args.workdir / f"synth-{args.n}x128.hdf5"
    store = args.workdir / "tune.sqlite"
    for old in [store, *args.workdir.glob("tune.sqlite*")]:  # a fresh tune: nothing replayed or reused
        if old.is_file():
            old.unlink()
        elif old.is_dir():
            import shutil

            shutil.rmtree(old)
    steps = {}
    if not data.exists():
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "ann_bench", "data", "synth", str(data), "--n", str(args.n),
                        "--dim", "128", "--queries", "10000"], check=True)
        steps["data synth"] = time.perf_counter() - t0
    cmd = [sys.executable, "-m", "ann_bench", "tune", "--dataset", str(data), "--results", str(store),
           "--recall", "0.9,0.95,0.99", "--budget", args.budget, "--runs", "1",
           "--build-threads", str(args.build_threads), "--json"]
    for b in args.backends.split(","):
        cmd += ["--backend", b]
    print("$ ann-bench " + " ".join(cmd[3:]), flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
    steps["tune"] = time.perf_counter() - t0
    if proc.returncode not in (0, 1):
        sys.exit(proc.returncode)
    answers = json.loads(proc.stdout)
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    log = json.loads(max((store.parent / (store.name + ".tunes")).glob("*.json"),
                         key=lambda p: p.stat().st_mtime).read_text())
    print(f"\ntune: {steps['tune']:,.0f} s ({steps['tune'] / 60:.1f} min; target <= 20 min), peak RSS of any process "
          f"{peak / 1e9:.2f} GB (target <= 8 GB)" + (f"; data synth {steps['data synth']:,.0f} s"
                                                     if "data synth" in steps else ""))
    print("time (s): " + ", ".join(f"{k} {v:,.1f}" for k, v in log.get("times", {}).items())
          + f"; {len(log['trials'])} jobs; stopped: {log.get('stopped')}")
    grid = {}
    if args.grid is not None:
        from ann_bench.bench.results import ResultStore
        from ann_bench.report.best import best_configurations

        with ResultStore(args.grid, create=False) as gs:
            rows = [r for r in gs.records() if r.n_test == 10_000]  # not the k-d tree's 200-query file
        for target in (0.9, 0.95, 0.99):
            best = [b.best for b in best_configurations(rows, target).per_backend if b.best is not None]
            top = max(best, key=lambda r: r.qps, default=None)
            grid[target] = None if top is None else {"qps": top.qps, "label": top.label(),
                                                     "build": top.build_params, "search": top.search_params}
    print(f"{'target':>6} {'role':<9} {'backend':<14} {'QPS':>7} {'recall':>7} {'held-out':>9} {'index MB':>9} "
          f"{'build s':>8} {'grid QPS':>9} {'ratio':>6}  configuration")
    for a in answers:
        g = grid.get(a["target"])
        if a["qps"] is None:
            print(f"{a['target']:>6} {a['role']:<9} {a['backend']:<14} none: {a['reason']}")
            continue
        ratio = a["qps"] / g["qps"] if g and a["role"] == "winner" else None
        a["grid_qps"], a["ratio"] = (g["qps"] if g else None), ratio
        print(f"{a['target']:>6} {a['role']:<9} {a['backend'] + '[' + a['impl'] + ']':<14} {a['qps']:>7,.0f} "
              f"{a['recall']:>7.4f} {a['recall_heldout']:>9.4f} {a['index_bytes'] / 1e6:>9,.0f} "
              f"{a['build_s']:>8.0f} {'-' if not g else format(g['qps'], ',.0f'):>9} "
              f"{'-' if ratio is None else format(ratio, '.2f'):>6}  {a['build']} {a['search']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"steps_s": steps, "peak_rss_bytes": peak, "answers": answers, "grid": grid,
                                    "times": log.get("times"), "stopped": log.get("stopped"),
                                    "jobs": log["trials"]}, indent=1, default=str))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
