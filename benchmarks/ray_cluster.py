"""A sweep on a two-node Ray cluster without a shared path, against the local executor on the same machine.

Runs, as child processes, what a user would type: ``ann-bench run --backend hnsw --backend ivf`` (default
grids, one query thread, one timed run per setting) on the set of ``benchmarks/sweep_1m.py`` (1M x 128; made
with ``ann-bench data synth`` when missing)

1. with the local executor, one configuration after another, builds on one thread, and
2. with ``--executor ray`` on a cluster started here with ``ray start``: a head and a worker node of one CPU
   each, every node with its own temp and cache directories (tests/raycluster.py), builds on one thread, two
   at a time. No task reads the dataset path: the vectors reach each node through the object store and are
   cached there once per node.

Builds use one thread in both, so both runs build the same indices (a multi-threaded HNSW build is not
deterministic) and every recall must be equal.

Prints both wall times, the MB of vectors that went to the nodes (the run's own line; sets over 64 MiB, which
go in chunks and are copied once per node — a smaller set is one object of the object store, not counted), and
whether every configuration has the same recall in both stores. Locally one core builds and searches; the
cluster uses both cores, at the cost of data transfer, per-node copies and task start-up.

    python benchmarks/ray_cluster.py [--dataset PATH] [--n 1000000] [--dim 128] [--queries 10000]
                                     [--build hnsw:M=16 --build ivf:nlist=1024]
                                     [--workdir ~/.cache/ann-bench/ray_cluster]
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # raycluster.py: the multi-node cluster the tests use

from raycluster import Cluster  # noqa: E402


def ann_bench(*args: str) -> tuple[float, str]:
    """Run ``ann-bench ARGS``; its wall time and stderr (stop on failure)."""
    cmd = [sys.executable, "-m", "ann_bench", *args]
    print("$ ann-bench " + " ".join(args), flush=True)
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        sys.exit(f"failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    return seconds, done.stderr


def recalls(store: Path) -> dict[str, float]:
    from ann_bench.bench.results import ResultStore, canon_params

    with ResultStore(store, create=False) as s:
        return {f"{r.backend}[{r.impl}] {canon_params(r.build_params)} {canon_params(r.search_params)}": r.recall
                for r in s.records() if r.status == "ok"}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", type=Path, default=None)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--queries", type=int, default=10_000)
    ap.add_argument("--backends", default="hnsw,ivf")
    ap.add_argument("--build", action="append", default=[], metavar="BACKEND:PARAM=VALUES",
                    help="passed to both runs as `ann-bench run --build` (default: each backend's default grid)")
    ap.add_argument("--workdir", type=Path, default=Path("~/.cache/ann-bench/ray_cluster").expanduser())
    ap.add_argument("--out", type=Path, default=Path("results/ray_cluster.json"))
    args = ap.parse_args()

    args.workdir.mkdir(parents=True, exist_ok=True)
    data = args.dataset or Path(f"~/.cache/ann-bench/sweep_1m/synth-{args.n}x{args.dim}.hdf5").expanduser()
    if not data.exists():
        ann_bench("data", "synth", str(data), "--n", str(args.n), "--dim", str(args.dim), "--queries",
                  str(args.queries), "--clusters", "100")
    backends = [x for b in args.backends.split(",") for x in ("--backend", b)]
    builds = [x for b in args.build for x in ("--build", b)]
    common = ["--dataset", str(data), *backends, *builds, "--threads", "1", "--runs", "1", "-q"]
    local_store, ray_store = args.workdir / "local.sqlite", args.workdir / "ray.sqlite"
    for store in (local_store, ray_store):
        store.unlink(missing_ok=True)
    figures: dict = {"dataset": str(data), "backends": args.backends, "build": args.build}
    figures["local_s"], _ = ann_bench("run", *common, "--build-threads", "1", "--results", str(local_store))
    root = Path(tempfile.mkdtemp(prefix="abrc"))
    cluster = Cluster(root)
    try:
        cluster.add_worker()
        cluster.wait_for(2)
        figures["ray_s"], said = ann_bench("run", *common, "--build-threads", "1", "--executor", "ray",
                                           "--address", cluster.address, "--results", str(ray_store))
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)
    moved = re.search(r"ray: ([\d,.]+) MB of vectors went to (\d+) node", said)
    figures["vectors_mb_to_nodes"] = float(moved.group(1).replace(",", "")) if moved else None
    figures["nodes_fetched"] = int(moved.group(2)) if moved else None
    a, b = recalls(local_store), recalls(ray_store)
    figures["rows"] = len(a)
    figures["same_recall"] = a == b
    print(f"\nlocal executor: {figures['local_s']:.0f} s; ray, 2 nodes x 1 CPU, no shared path: "
          f"{figures['ray_s']:.0f} s ({figures['ray_s'] / figures['local_s']:.2f}x)")
    print(f"vectors to the nodes: {figures['vectors_mb_to_nodes']} MB to {figures['nodes_fetched']} node(s); "
          f"{len(a)} rows, same recall in both stores: {figures['same_recall']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(figures, indent=1))
    return 0 if figures["same_recall"] else 1


if __name__ == "__main__":
    sys.exit(main())
