"""Our NSW: the one-by-one build (parallel=false) against the batched parallel build, same data and seed.

Builds each in a fresh worker process through ``ann-bench run``'s own measuring core (warm-up outside the
timed region) and prints build seconds and recall@10 at equal ef. Target (issue 16): recall within 0.005 of
the one-by-one build at every ef; the parallel build faster on 2 threads.

    python benchmarks/nsw_parallel_build.py [--n 200000] [--dim 128] [--queries 2000] [--threads 2] [--f 10]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ann_bench.data.vectorset import SynthSpec, VectorSet, synth  # noqa: E402
from ann_bench.bench.runner import RunOptions, plan_sweep, run_sweep  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--queries", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--f", type=int, default=10)
    ap.add_argument("--ef", default="10,20,40,80,160")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "set.hdf5"
        synth(path, SynthSpec(n=args.n, dim=args.dim, queries=args.queries, clusters=100, seed=42), k=10)
        with VectorSet(path) as vs:
            plans = plan_sweep(["nsw"], vs.n_train, vs.dim, vs.metric,
                               [f"f={args.f}", "parallel=false,true"], [f"ef={args.ef}"])
            rows = run_sweep(vs, plans, RunOptions(runs=1, build_threads=args.threads, exhaustive=True)).records
    by = {}
    for r in rows:
        by.setdefault(r.build_params["parallel"], {})[r.search_params["ef"]] = r
    seq, par = by[False], by[True]
    b_seq, b_par = next(iter(seq.values())).build_s, next(iter(par.values())).build_s
    print(f"{args.n:,} x {args.dim}, f={args.f}, {args.threads} build threads: one-by-one build {b_seq:.1f} s, "
          f"parallel {b_par:.1f} s ({b_seq / b_par:.2f}x)")
    worst = 0.0
    for ef in sorted(seq):
        d = par[ef].recall - seq[ef].recall
        worst = max(worst, abs(d))
        print(f"ef={ef:>4}: recall@10 one-by-one {seq[ef].recall:.4f}, parallel {par[ef].recall:.4f} ({d:+.4f})")
    print(f"largest recall difference {worst:.4f} (target <= 0.005): {'met' if worst <= 0.005 else 'MISSED'}")


if __name__ == "__main__":
    main()
