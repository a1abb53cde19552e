"""A collection that changes, at scale: a grow-and-slide runbook over a synthetic 1M x 128 set.

Generates the set (``ann-bench data synth``, seeded, with exact ground truth), writes a ``slide`` runbook
(``ann-bench stream make-runbook``: build 10 % of the items, grow in equal batches to a window of half of them,
then each step inserts the next batch and deletes the oldest, until the last row: >= 20 steps), and runs
``ann-bench stream`` on it for hnswlib, faiss IVF, usearch and our NSW, one query thread, single mode (QPS and
p99), each backend in its own worker. Prints the step table per backend (recall per search step, items/s per
insert and delete, the index's size) and the rebuild-from-scratch comparison at the end, and writes the rows as
JSON. Target: the whole script <= 30 min on 2 cores (issue 34).

    python benchmarks/stream.py [--n 1000000] [--dim 128] [--queries 1000] [--steps 24] [--out results/stream]

Not run by the test suite (nor in CI): the figures it prints go to docs/guide/stream.md once measured.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

BACKENDS = ("hnsw:hnswlib", "ivf", "hnsw:usearch", "nsw")
SEARCH = ("hnsw:ef=64", "ivf:nprobe=16", "nsw:ef=64")


def ann_bench(*args: str) -> None:
    """Run one ``ann-bench`` command with this interpreter, echoing it; stop on failure."""
    cmd = [sys.executable, "-m", "ann_bench", *args]
    print("$ ann-bench " + " ".join(args), flush=True)
    subprocess.run(cmd, check=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--steps", type=int, default=24, help="batches after the build (>= 20 steps in all)")
    ap.add_argument("--window", type=float, default=0.5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--build-threads", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=1500, help="seconds per backend's whole runbook")
    ap.add_argument("--out", type=Path, default=Path("results/stream"))
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    data = args.out / f"synth-{args.n}x{args.dim}.hdf5"
    runbook = args.out / "grow-slide.yaml"
    store = args.out / "stream.sqlite"
    t0 = time.perf_counter()
    if not data.exists():
        ann_bench("data", "synth", str(data), "--n", str(args.n), "--dim", str(args.dim), "--queries",
                  str(args.queries))
    ann_bench("stream", "make-runbook", "--dataset", str(data), "--shape", "slide", "--start", "0.1", "--window",
              str(args.window), "--steps", str(args.steps), "--name", "grow-slide", "-o", str(runbook), "--force")
    run = ["stream", "--runbook", str(runbook), "--dataset", str(data), "--mode", "single", "--runs", "1",
           "--threads", str(args.threads), "--build-threads", str(args.build_threads), "--timeout", str(args.timeout),
           "--results", str(store)]
    for b in BACKENDS:
        run += ["--backend", b]
    for s in SEARCH:
        run += ["--search", s]
    ann_bench(*run)
    ann_bench("results", "--results", str(store), "--stream", "grow-slide", "--wide")
    ann_bench("results", "--results", str(store), "--stream", "grow-slide", "--format", "json", "-o",
              str(args.out / "stream.json"), "--force")
    rows = json.loads((args.out / "stream.json").read_text())
    print(f"\n{len(rows)} rows in {time.perf_counter() - t0:,.0f} s; rebuild vs last search step per backend:")
    for backend in sorted({(r["backend"], r["impl"]) for r in rows}):
        mine = [r for r in rows if (r["backend"], r["impl"]) == backend and r["status"] == "ok"]
        last = max((r for r in mine if r["stream_op"] == "search"), key=lambda r: r["stream_step"], default=None)
        fresh = next((r for r in mine if r["stream_op"] == "rebuild"), None)
        update = max((r for r in mine if r["stream_op"] in ("insert", "delete")), key=lambda r: r["stream_step"],
                     default={})  # the index's size is recorded on update steps, not on searches
        if last and fresh:
            print(f"  {backend[0]}[{backend[1]}]: updated recall {last['recall']:.4f} at {last['qps']:,.0f} QPS "
                  f"({(update.get('index_bytes') or 0) / 1e6:.0f} MB at its last update); rebuilt {fresh['recall']:.4f}"
                  f" at {fresh['qps']:,.0f} QPS ({(fresh.get('index_bytes') or 0) / 1e6:.0f} MB)")


if __name__ == "__main__":
    main()
