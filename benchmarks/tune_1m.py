"""`ann-bench tune` at a million vectors: the set of `benchmarks/sweep_1m.py` (1M x 128, 10,000 queries, 100
clusters, seed 42), every graph/IVF/tree-forest backend, targets 0.9/0.95/0.99, timed end to end.

Runs, as child processes (what a user types): ``ann-bench data synth`` (skipped when the file exists), then
``ann-bench tune`` with ``--subsample`` (the build search on a 5 % sample), one query thread, builds on
``--build-threads``, one timed run per setting (as sweep_1m.py's grid). Prints tune's wall time, the peak RSS
of any process (``ru_maxrss`` of the children) and its answers; writes them as JSON. Targets (issue 16):
<= 20 min on 2 cores, peak RSS <= 8 GB. The flat scan (one configuration, recall 1) and the k-d tree (a
scan at 128-d) are left out: there is nothing to tune in either.

    python benchmarks/tune_1m.py [--workdir ~/.cache/ann-bench/sweep_1m] [--subsample 0.05] [--trials 6] [--finalists 1]
        [--backends hnsw,hnsw:faiss,ivf,ivfpq,annoy,nsw] [--out results/tune_1m.json]
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workdir", type=Path, default=Path.home() / ".cache" / "ann-bench" / "sweep_1m")
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--backends", default="hnsw,hnsw:faiss,ivf,ivfpq,annoy,nsw")
    ap.add_argument("--subsample", type=float, default=0.05)
    ap.add_argument("--finalists", type=int, default=1)
    ap.add_argument("--trials", type=int, default=6)
    ap.add_argument("--build-threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "tune_1m.json")
    args = ap.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    data = args.workdir / f"synth-{args.n}x128.hdf5"
    store = args.workdir / "tune.sqlite"
    steps = {}
    if not data.exists():
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "ann_bench", "data", "synth", str(data), "--n", str(args.n),
                        "--dim", "128", "--queries", "10000"], check=True)
        steps["data synth"] = time.perf_counter() - t0
    cmd = [sys.executable, "-m", "ann_bench", "tune", "--dataset", str(data), "--results", str(store),
           "--recall", "0.9,0.95,0.99", "--subsample", str(args.subsample), "--trials", str(args.trials),
           "--finalists", str(args.finalists),
           "--runs", "1", "--build-threads", str(args.build_threads), "--json"]
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
    print(f"\ntune: {steps['tune']:,.0f} s ({steps['tune'] / 60:.1f} min; target <= 20 min), peak RSS of any process "
          f"{peak / 1e9:.2f} GB (target <= 8 GB)" + (f"; data synth {steps['data synth']:,.0f} s"
                                                     if "data synth" in steps else ""))
    print(f"{'target':>6} {'backend':<14} {'QPS':>7} {'recall':>7} {'held-out':>9} {'index MB':>9} "
          f"{'build s':>8}  configuration")
    for a in answers:
        if a["qps"] is None:
            print(f"{a['target']:>6} {a['backend']:<14} none: {a['reason']}")
            continue
        print(f"{a['target']:>6} {a['backend'] + '[' + a['impl'] + ']':<14} {a['qps']:>7,.0f} {a['recall']:>7.4f} "
              f"{a['recall_heldout']:>9.4f} {a['index_bytes'] / 1e6:>9,.0f} {a['build_s']:>8.0f}  "
              f"{a['build']} {a['search']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"steps_s": steps, "peak_rss_bytes": peak, "answers": answers}, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
