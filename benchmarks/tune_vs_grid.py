"""`ann-bench tune` against the exhaustive default grid, on the same machine, in one invocation.

For each set (a synthetic 200k x 128 Gaussian mixture; Fashion-MNIST-784 when the Debian package
dataset-fashion-mnist is installed; any --dataset FILE) and the backends hnsw, ivf, ivfpq, annoy, nsw:

1. the grid: ``run_sweep`` with every backend's default build and search grids (what ``ann-bench run`` does),
   into its own results store, wall-clocked;
2. tune: ``run_tune`` with targets 0.9/0.95/0.99 into another store (so it reuses nothing of the grid's),
   wall-clocked;
3. per target and backend: the grid's best QPS among rows with recall >= target (all queries) against tune's
   answer (chosen on the tuning queries) — their ratio — and tune's held-out recall.

Targets (issue 16): tune's QPS >= 0.97x the grid's at each target, held-out recall >= target - 0.005, tune's
wall time <= 30 % of the grid's. Both use the same measuring settings (--runs, 1 query thread, build threads).
Prints a table per set and writes every figure to --out (JSON).

    python benchmarks/tune_vs_grid.py [--sets synth200k,fashion] [--backends hnsw,ivf,ivfpq,annoy,nsw]
        [--queries 2000] [--trials 6] [--subsample 0.1] [--finalists 2] [--runs 2] [--build-threads 2]
        [--workdir ~/.cache/ann-bench/tune_vs_grid] [--out results/tune_vs_grid.json]
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ann_bench.report.best import best_configurations  # noqa: E402
from ann_bench.data.vectorset import SynthSpec, VectorSet, synth  # noqa: E402
from ann_bench.bench.results import ResultStore  # noqa: E402
from ann_bench.bench.runner import RunOptions, plan_sweep, run_sweep  # noqa: E402
from ann_bench.bench.tune import TuneOptions, run_tune  # noqa: E402


class Log:
    """Prints a line per measured configuration and trial, so a long run shows progress."""

    from contextlib import contextmanager

    @contextmanager
    def task(self, description, total):
        yield lambda n=1: None

    def log(self, message):
        print("   ", message, flush=True)


def the_set(name: str, workdir: Path, queries: int) -> Path:
    if name == "synth200k":
        path = workdir / f"synth-200000x128-q{queries}.hdf5"
        if not path.exists():
            synth(path, SynthSpec(n=200_000, dim=128, queries=queries, clusters=100, seed=42), k=100)
        return path
    if name == "fashion":
        from ann_bench.data.catalogue import fetch

        return Path(fetch("fashion-mnist-784-euclidean"))
    return Path(name)


def grid(path: Path, backends: list[str], store: Path, args) -> float:
    with VectorSet(path) as vs, ResultStore(store) as results:
        plans = plan_sweep(backends, vs.n_train, vs.dim, vs.metric)
        t0 = time.perf_counter()
        run_sweep(vs, plans, RunOptions(runs=args.runs, build_threads=args.build_threads, seed=0), results, Log())
        return time.perf_counter() - t0


def tune(path: Path, backends: list[str], store: Path, args):
    with VectorSet(path) as vs, ResultStore(store) as results:
        options = TuneOptions(targets=tuple(args.targets), backends=tuple(backends), trials=args.trials,
                              subsample=args.subsample if vs.n_train >= args.subsample_from else None,
                              finalists=args.finalists)
        t0 = time.perf_counter()
        result = run_tune(vs, options, RunOptions(runs=args.runs, build_threads=args.build_threads, seed=0),
                          results, Log())
        return time.perf_counter() - t0, result


def compare(name: str, path: Path, backends: list[str], args) -> dict:
    work = args.workdir / Path(name).stem
    work.mkdir(parents=True, exist_ok=True)
    print(f"== {name}: {path}", flush=True)
    print("-- grid (default build and search grids)", flush=True)
    done = work / "grid_done.json"  # a finished grid is not run again: its store and wall time are kept
    if done.exists() and (work / "grid.sqlite").exists():
        grid_s = json.loads(done.read_text())["grid_s"]
        print(f"   (the grid of a previous run of this script: {grid_s:,.0f} s)", flush=True)
    else:
        grid_s = grid(path, backends, work / "grid.sqlite", args)
        done.write_text(json.dumps({"grid_s": grid_s}))
    print(f"-- tune (targets {args.targets})", flush=True)
    tune_s, result = tune(path, backends, work / "tune.sqlite", args)
    with ResultStore(work / "grid.sqlite", create=False) as store:
        rows = store.records()
    out = {"set": name, "path": str(path), "grid_s": grid_s, "tune_s": tune_s, "tune_over_grid": tune_s / grid_s,
           "trials": len(result.trials), "rows": []}
    print(f"\n{name}: grid {grid_s:,.0f} s, tune {tune_s:,.0f} s ({100 * tune_s / grid_s:.0f} % of the grid; "
          f"target <= 30 %), {len(result.trials)} trials")
    print(f"{'target':>6} {'backend':<14} {'grid QPS':>10} {'tune QPS':>10} {'ratio':>6} {'held-out':>9} "
          f"{'ok':>3}  tune's configuration")
    for target in args.targets:
        grid_best = {b.group.replace(" ", ""): b for b in
                     best_configurations(rows, target).per_backend}
        for answer in [a for a in result.answers if a.target == target]:
            g = grid_best.get(answer.group)
            gq = g.best.qps if g is not None and g.best is not None else None
            c = answer.candidate
            tq = c.record.qps if c is not None else None
            held = float(c.heldout.mean()) if c is not None else None
            ratio = tq / gq if tq and gq else None
            ok = (ratio is None and gq is None) or (ratio is not None and ratio >= 0.97
                                                    and held >= target - 0.005)
            row = {"target": target, "backend": answer.group, "grid_qps": gq, "tune_qps": tq, "ratio": ratio,
                   "heldout": held, "ok": bool(ok),
                   "grid_config": None if gq is None else [g.best.build_params, g.best.search_params],
                   "tune_config": None if c is None else [c.record.build_params, c.record.search_params]}
            out["rows"].append(row)
            fmt = lambda v, f: "-" if v is None else format(v, f)  # noqa: E731
            print(f"{target:>6} {answer.group:<14} {fmt(gq, ',.0f'):>10} {fmt(tq, ',.0f'):>10} "
                  f"{fmt(ratio, '.2f'):>6} {fmt(held, '.4f'):>9} {'yes' if ok else 'NO':>3}  "
                  f"{'' if c is None else c.record.build_params} {'' if c is None else c.record.search_params}",
                  flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sets", default="synth200k,fashion")
    ap.add_argument("--backends", default="hnsw,ivf,ivfpq,annoy,nsw")
    ap.add_argument("--targets", default="0.9,0.95,0.99")
    ap.add_argument("--queries", type=int, default=2000, help="queries of the synthetic set")
    ap.add_argument("--trials", type=int, default=6)
    ap.add_argument("--subsample", type=float, default=0.1)
    ap.add_argument("--subsample-from", type=int, default=100_000, help="use --subsample from this many vectors")
    ap.add_argument("--finalists", type=int, default=2)
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--build-threads", type=int, default=2)
    ap.add_argument("--workdir", type=Path, default=Path.home() / ".cache" / "ann-bench" / "tune_vs_grid")
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "tune_vs_grid.json")
    args = ap.parse_args()
    args.targets = [float(t) for t in args.targets.split(",")]
    backends = args.backends.split(",")
    report = {"args": {k: str(v) for k, v in vars(args).items()}, "sets": []}
    for name in args.sets.split(","):
        report["sets"].append(compare(name, the_set(name, args.workdir, args.queries), backends, args))
    report["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1, default=str))
    print(f"\nwrote {args.out}; peak RSS of this process {report['peak_rss_bytes'] / 1e9:.2f} GB")


if __name__ == "__main__":
    main()
