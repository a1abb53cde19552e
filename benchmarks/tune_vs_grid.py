"""`ann-bench tune` against the exhaustive default grid, on the same machine, in one invocation.

For each set — ``synth50k`` (the built-in default set, 50,000 x 64, 1,000 queries: hnsw + ivf, target 0.95),
``synth200k`` (200,000 x 128, 2,000 queries) and ``fashion`` (Fashion-MNIST-784, 60,000 x 784, 10,000 queries;
the Debian package dataset-fashion-mnist): the five default backends hnsw, ivf, ivfpq, annoy, nsw, targets
0.9/0.95/0.99 — or any ``--dataset FILE``:

1. the grid: ``run_sweep`` with every backend's default build and search grids (what ``ann-bench run`` does),
   into its own results store, wall-clocked (a finished grid is kept and not run again: ``grid_done.json``);
2. tune with its default options (the default budget, no trial cap) into another store (so it reuses nothing of
   the grid's), wall-clocked;
3. per target: the grid's overall best QPS among rows with recall >= target (all queries) against tune's answer
   (chosen on the tuning queries, verified on all), their ratio, and tune's held-out recall; per backend the same
   where tune measured it at full size;
4. how well the subsample ranked builds: for each promoted build, its speed on the subsample against its speed on
   the full set, and the Spearman correlation of the two rankings per target.

Targets (issue 29): tune's wall <= 0.5x the grid's on synth50k, <= 0.3x (at most 0.5x) on the others; the answer's
QPS >= 1.0x the grid's overall best at every target; held-out recall >= target - 0.005. Both use the same measuring
settings (--runs 2, one query thread, --build-threads). Prints a table per set and writes every figure to --out.

    python benchmarks/tune_vs_grid.py [--sets synth50k,synth200k,fashion] [--runs 2] [--build-threads 2]
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

from ann_bench.bench.jobs import Reporter  # noqa: E402
from ann_bench.bench.results import ResultStore  # noqa: E402
from ann_bench.bench.runner import RunOptions, plan_sweep, run_sweep  # noqa: E402
from ann_bench.bench.tune import TIME_PARTS, TuneOptions, run_tune  # noqa: E402
from ann_bench.data.vectorset import SynthSpec, VectorSet, default_dataset, synth  # noqa: E402

FIVE = ["hnsw", "ivf", "ivfpq", "annoy", "nsw"]
SETS = {"synth50k": (["hnsw", "ivf"], [0.95]), "synth200k": (FIVE, [0.9, 0.95, 0.99]),
        "fashion": (FIVE, [0.9, 0.95, 0.99])}


class Log(Reporter):
    """A line per measured configuration, trial and note, so a long run shows progress."""

    def log(self, message):
        print("   ", message, flush=True)


def the_set(name: str, workdir: Path) -> Path:
    if name == "synth50k":
        return default_dataset()
    if name == "synth200k":
        path = workdir / "synth-200000x128-q2000.hdf5"
        if not path.exists():
            synth(path, SynthSpec(n=200_000, dim=128, queries=2000, clusters=100, seed=42), k=100)
        return path
    if name == "fashion":
        from ann_bench.data.catalogue import fetch

        return Path(fetch("fashion-mnist-784-euclidean"))
    return Path(name)


def run_options(args) -> RunOptions:
    return RunOptions(runs=args.runs, build_threads=args.build_threads, seed=0)


def grid(path: Path, backends: list[str], store: Path, args) -> float:
    with VectorSet(path) as vs, ResultStore(store) as results:
        plans = plan_sweep(backends, vs.n_train, vs.dim, vs.metric)
        t0 = time.perf_counter()
        run_sweep(vs, plans, run_options(args), results, Log())
        return time.perf_counter() - t0


def tune(path: Path, backends: list[str], targets: list[float], store: Path, args):
    with VectorSet(path) as vs, ResultStore(store) as results:
        t0 = time.perf_counter()
        result = run_tune(vs, TuneOptions(targets=tuple(targets), backends=tuple(backends)), run_options(args),
                          results, Log())
        return time.perf_counter() - t0, result


def spearman(a: list[float], b: list[float]) -> float | None:
    import numpy as np
    from scipy.stats import spearmanr

    if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return None
    return float(spearmanr(a, b).statistic)


def transfer(log: dict, targets: list[float]) -> dict:
    """Each promoted build's first-fidelity speed against its full-size speed, per target, and their rank
    correlation: how well the subsample predicted the full-size ranking."""
    by_build = {(t["label"], json.dumps(t["build"], sort_keys=True)): t for t in log["trials"] if t["rung"] == 0}
    pairs = []
    for t in log["trials"]:
        if t.get("origin") != "promoted" or t["state"] != "complete":
            continue
        parent = by_build.get((t["label"], t.get("parent")))
        if parent is not None:
            pairs.append({"label": t["label"], "sample_build": parent["build"], "full_build": t["build"],
                          "sample": parent["values"], "full": t["values"]})
    corr = {str(target): spearman([p["sample"][j] for p in pairs], [p["full"][j] for p in pairs])
            for j, target in enumerate(targets)}
    return {"pairs": pairs, "spearman": corr}


def compare(name: str, path: Path, backends: list[str], targets: list[float], args) -> dict:
    from ann_bench.report.best import best_configurations

    work = args.workdir / Path(name).stem
    work.mkdir(parents=True, exist_ok=True)
    print(f"== {name}: {path} ({', '.join(backends)}; targets {targets})", flush=True)
    print("-- grid (default build and search grids)", flush=True)
    done = work / "grid_done.json"
    if done.exists() and (work / "grid.sqlite").exists():
        grid_s = json.loads(done.read_text())["grid_s"]
        print(f"   (the grid of a previous run of this script: {grid_s:,.0f} s)", flush=True)
    else:
        for old in work.glob("grid.sqlite*"):
            old.unlink() if old.is_file() else None
        grid_s = grid(path, backends, work / "grid.sqlite", args)
        done.write_text(json.dumps({"grid_s": grid_s}))
    print("-- tune (default options)", flush=True)
    for old in work.glob("tune.sqlite*"):  # a fresh tune each time: nothing replayed
        if old.is_file():
            old.unlink()
        elif old.is_dir():
            import shutil

            shutil.rmtree(old)
    tune_s, result = tune(path, backends, targets, work / "tune.sqlite", args)
    with ResultStore(work / "grid.sqlite", create=False) as store:
        rows = store.records()
    log = json.loads(result.log_path.read_text())
    out = {"set": name, "path": str(path), "backends": backends, "grid_s": grid_s, "tune_s": tune_s,
           "tune_over_grid": tune_s / grid_s, "budget_s": result.budget_s, "jobs": len(result.trials),
           "stopped": result.stopped, "times": result.times, "dropped": result.dropped,
           "transfer": transfer(log, targets), "rows": []}
    print(f"\n{name}: grid {grid_s:,.0f} s, tune {tune_s:,.0f} s ({tune_s / grid_s:.2f}x the grid; budget "
          f"{result.budget_s:,.0f} s), {len(result.trials)} jobs; stopped: {result.stopped}")
    print("time: " + ", ".join(f"{p} {result.times.get(p, 0):,.1f} s" for p in TIME_PARTS))
    for label, why in result.dropped.items():
        print(f"dropped {label}: {why}")
    print(f"{'target':>6} {'grid best':>26} {'QPS':>9} {'tune answer':>26} {'QPS':>9} {'ratio':>6} {'held-out':>9} "
          f"{'ok':>3}")
    for target in targets:
        best = best_configurations(rows, target)
        grid_best = max((b.best for b in best.per_backend if b.best is not None), key=lambda r: r.qps, default=None)
        answer = next((a for a in result.answers if a.target == target and a.role == "winner"), None)
        c = answer.candidate if answer is not None else None
        gq, tq = (grid_best.qps if grid_best else None), (c.record.qps if c else None)
        held = float(c.heldout.mean()) if c is not None else None
        ratio = tq / gq if tq and gq else None
        ok = ratio is not None and ratio >= 1.0 and held >= target - 0.005
        row = {"target": target, "grid_qps": gq, "tune_qps": tq, "ratio": ratio, "heldout": held, "ok": bool(ok),
               "grid_config": None if grid_best is None else [grid_best.label(), grid_best.build_params,
                                                             grid_best.search_params, grid_best.recall],
               "tune_config": None if c is None else [c.record.label(), c.record.build_params,
                                                      c.record.search_params, c.tune_recall],
               "per_backend": {}}
        for b in best.per_backend:
            mine = [a for a in result.answers if a.target == target and a.group == b.group.replace(" ", "")
                    and a.candidate is not None]
            row["per_backend"][b.group] = {"grid": b.best.qps if b.best else None,
                                           "tune": mine[0].candidate.record.qps if mine else None}
        out["rows"].append(row)
        fmt = lambda v, f: "-" if v is None else format(v, f)  # noqa: E731
        g = "-" if grid_best is None else f"{grid_best.label()} {_short(grid_best)}"
        t = "-" if c is None else f"{c.record.label()} {_short(c.record)}"
        print(f"{target:>6} {g[:26]:>26} {fmt(gq, ',.0f'):>9} {t[:26]:>26} {fmt(tq, ',.0f'):>9} "
              f"{fmt(ratio, '.2f'):>6} {fmt(held, '.4f'):>9} {'yes' if ok else 'NO':>3}", flush=True)
    tr = out["transfer"]
    print(f"subsample -> full size: {len(tr['pairs'])} promoted builds; Spearman per target "
          + ", ".join(f"{t}: {'-' if v is None else format(v, '.2f')}" for t, v in tr["spearman"].items()))
    for p in tr["pairs"]:
        print(f"   {p['label']} {p['full_build']}: sample {[round(v) for v in p['sample']]} -> full "
              f"{[round(v) for v in p['full']]}")
    return out


def _short(r) -> str:
    from ann_bench.bench.results import short_params

    return f"{short_params(r.build_params, None)} {short_params(r.search_params, None)}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sets", default="synth50k,synth200k,fashion")
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--build-threads", type=int, default=2)
    ap.add_argument("--workdir", type=Path, default=Path.home() / ".cache" / "ann-bench" / "tune_vs_grid")
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "tune_vs_grid.json")
    args = ap.parse_args()
    report = {"args": {k: str(v) for k, v in vars(args).items()}, "sets": []}
    for name in args.sets.split(","):
        backends, targets = SETS.get(name, (FIVE, [0.9, 0.95, 0.99]))
        report["sets"].append(compare(name, the_set(name, args.workdir), backends, targets, args))
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1, default=str))
    report["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    args.out.write_text(json.dumps(report, indent=1, default=str))
    print(f"\nwrote {args.out}; peak RSS of this process {report['peak_rss_bytes'] / 1e9:.2f} GB")


if __name__ == "__main__":
    main()
