"""Exact ground truth at scale: ann-bench's chunked kNN against a raw faiss IndexFlat search.

On ``--n`` x ``--dim`` seeded vectors (the ``data synth`` generator, 100 clusters) and ``--queries`` queries,
the exact ``--k`` nearest neighbours are computed

- **ann-bench**: :func:`ann_bench.data.groundtruth.exact_knn` (faiss ``knn`` over query chunks, then float64
  distances recomputed for the chosen ids and each row re-sorted — what ``data synth``, ``import`` and
  ``embed`` store);
- **faiss**: ``IndexFlatL2`` + ``add`` + one ``search`` of all queries (float32 distances, no re-sort),

each in a fresh process, so that its peak RSS (``ru_maxrss``) is its own; the arrays are written once as
``.npy`` files and memory-mapped-then-loaded by both. Same thread count for both (``--threads``).
Targets: ann-bench's time ≤ 1.25 × faiss's (≥ 0.8 × its speed), and ann-bench's peak RSS ≤ 2 × the data size
(train + queries). Also checks that both return the same neighbour sets (ties aside).

    python benchmarks/groundtruth_speed.py [--n 1000000] [--dim 128] [--queries 10000] [--k 100]
                                           [--threads 2] [--out results/groundtruth_speed.json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def child(kind: str, workdir: Path, k: int, threads: int) -> None:
    """Run one variant; print a JSON line with its time and peak RSS; save its ids."""
    import faiss

    faiss.omp_set_num_threads(threads)
    X = np.load(workdir / "X.npy")
    Q = np.load(workdir / "Q.npy")
    t0 = time.perf_counter()
    if kind == "ann-bench":
        from ann_bench.data.groundtruth import exact_knn

        _, I = exact_knn(X, Q, "euclidean", k)
    else:
        index = faiss.IndexFlatL2(X.shape[1])
        index.add(X)
        _, I = index.search(Q, k)
    elapsed = time.perf_counter() - t0
    np.save(workdir / f"I-{kind}.npy", I)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    print(json.dumps({"kind": kind, "seconds": elapsed, "peak_rss_bytes": peak}))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--queries", type=int, default=10_000)
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--out", type=Path, default=Path("results/groundtruth_speed.json"))
    ap.add_argument("--child", nargs=2, metavar=("KIND", "DIR"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child[0], Path(args.child[1]), args.k, args.threads)
        return 0

    from ann_bench.data.vectorset import SynthSpec, synth_arrays

    workdir = Path(tempfile.mkdtemp(prefix="ann-bench-gt-"))
    t0 = time.perf_counter()
    X, Q, _, _ = synth_arrays(SynthSpec(n=args.n, dim=args.dim, queries=args.queries, clusters=100, seed=42))
    np.save(workdir / "X.npy", X)
    np.save(workdir / "Q.npy", Q)
    data_bytes = X.nbytes + Q.nbytes
    del X, Q
    print(f"data: {args.n:,} x {args.dim} + {args.queries:,} queries = {data_bytes / 2**20:,.0f} MiB "
          f"(generated in {time.perf_counter() - t0:.1f} s); k={args.k}, threads={args.threads}", flush=True)

    figures = {}
    for kind in ("faiss", "ann-bench"):
        proc = subprocess.run([sys.executable, __file__, "--child", kind, str(workdir), "--k", str(args.k),
                               "--threads", str(args.threads)], capture_output=True, text=True, check=True)
        figures[kind] = json.loads(proc.stdout.strip().splitlines()[-1])
        f = figures[kind]
        print(f"{kind:<10} {f['seconds']:8.1f} s   peak RSS {f['peak_rss_bytes'] / 2**20:8,.0f} MiB "
              f"({f['peak_rss_bytes'] / data_bytes:.2f} x data)", flush=True)
    I_ours = np.load(workdir / "I-ann-bench.npy")
    I_faiss = np.load(workdir / "I-faiss.npy")
    same = float(np.mean([len(set(a) & set(b)) / len(a) for a, b in zip(I_ours, I_faiss)]))
    speed = figures["faiss"]["seconds"] / figures["ann-bench"]["seconds"]
    rss_ratio = figures["ann-bench"]["peak_rss_bytes"] / data_bytes
    print(f"ann-bench speed = {speed:.2f} x faiss (target >= 0.8); peak RSS = {rss_ratio:.2f} x data "
          f"(target <= 2); neighbour sets agree {same:.4%}")
    ok = speed >= 0.8 and rss_ratio <= 2
    print("targets " + ("met" if ok else "MISSED"))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"n": args.n, "dim": args.dim, "queries": args.queries, "k": args.k,
                                    "threads": args.threads, "data_bytes": data_bytes, "variants": figures,
                                    "speed_ratio": speed, "rss_ratio": rss_ratio, "agreement": same}, indent=2))
    for p in workdir.iterdir():
        p.unlink()
    workdir.rmdir()
    print(f"wrote {args.out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
