"""Build, save, load and search 1M vectors through the index API (`ann-bench index build` / `search` use the
same functions): the times a user carrying an index into an application pays, and proof that loading does not
rebuild (load time vs build time, and identical answers before and after).

    python benchmarks/index_1m.py                              # 1M x 128, hnsw (hnswlib) and ivf (faiss)
    python benchmarks/index_1m.py --n 200000 --backends ivf    # smaller

Data: sweep_1m.py's synthetic set (same file, made here when absent; --workdir shared). Each backend: build
with --build-threads threads (the build's own timer), save (library write + sha256 of the file + keys +
manifest), open_index with and without the sha256 check, search the 10,000 queries in one batch with one
thread, recall@10 against the stored ground truth. Peak RSS of this process is printed at the end.
Writes a JSON of the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CONFIGS = {
    "hnsw": ({"M": 16, "ef_construction": 200}, {"ef": 64}),
    "ivf": ({"nlist": 4096}, {"nprobe": 16}),
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--queries", type=int, default=10_000)
    ap.add_argument("--backends", default="ivf,hnsw")
    ap.add_argument("--build-threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--workdir", type=Path, default=Path("~/.cache/ann-bench/sweep_1m").expanduser())
    ap.add_argument("--out", type=Path, default=Path("results/index_1m.json"))
    args = ap.parse_args()

    import numpy as np

    import ann_bench
    from ann_bench.data.vectorset import VectorSet
    from ann_bench.bench.metrics import tie_recall
    from ann_bench.distances import distances_to

    args.workdir.mkdir(parents=True, exist_ok=True)
    data = args.workdir / f"synth-{args.n}x{args.dim}.hdf5"
    if not data.exists():
        subprocess.run(["ann-bench", "data", "synth", str(data), "--n", str(args.n), "--dim", str(args.dim),
                        "--queries", str(args.queries), "--clusters", "100"], check=True)
    t0 = time.perf_counter()
    with VectorSet(data) as vs:
        X, Q, gt_I = vs.load_train(), vs.load_test(), vs.neighbors[:, :10]
        name = vs.name
    read_s = time.perf_counter() - t0
    true_D = distances_to("euclidean", Q, X, gt_I)
    figures = {"dataset": name, "n": int(X.shape[0]), "dim": int(X.shape[1]), "queries": int(len(Q)),
               "read_s": round(read_s, 2), "build_threads": args.build_threads, "backends": {}}
    print(f"{name}: read in {read_s:.1f} s")
    for backend in args.backends.split(","):
        build, search = CONFIGS[backend]
        out_dir = args.workdir / f"index-{backend}"
        saved = ann_bench.build_index(X, backend=backend, metric="euclidean", threads=args.build_threads,
                                      search=search, source={"dataset": str(data)}, **build)
        build_s = saved.manifest["build_s"]
        t0 = time.perf_counter()
        if out_dir.exists():
            shutil.rmtree(out_dir)
        saved.save(out_dir)
        save_total_s = time.perf_counter() - t0
        D_built, I_built = saved.search(Q, 10)
        del saved
        t0 = time.perf_counter()
        loaded = ann_bench.open_index(out_dir, threads=1, verify=False)
        load_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        ann_bench.open_index(out_dir, threads=1, verify=True)
        load_verified_s = time.perf_counter() - t0
        loaded.search(Q[:100], 10)  # first touch of the loaded pages is not the search's cost
        t0 = time.perf_counter()
        D, I = loaded.search(Q, 10)
        search_s = time.perf_counter() - t0
        recall = float(tie_recall(distances_to("euclidean", Q, X, I), true_D, 10).mean())
        row = {"build": build, "search": search, "build_s": round(build_s, 2),
               "save_s": round(save_total_s, 2), "library_write_s": loaded.manifest["save_s"],
               "index_mb": round(loaded.manifest["index_file"]["bytes"] / 1e6, 1),
               "load_s": round(load_s, 2), "load_with_sha256_s": round(load_verified_s, 2),
               "search_s": round(search_s, 3), "qps": round(len(Q) / search_s, 1), "recall_at_10": round(recall, 4),
               "same_answers_after_load": bool(np.array_equal(I, I_built))}
        figures["backends"][backend] = row
        print(f"{backend} {build} {search}: build {build_s:.1f} s, save {save_total_s:.1f} s "
              f"({row['index_mb']:,} MB), load {load_s:.2f} s ({load_verified_s:.2f} s with sha256), search "
              f"{len(Q):,} queries {search_s:.2f} s = {row['qps']:,.0f} QPS, recall@10 {recall:.4f}, same answers "
              f"after load: {row['same_answers_after_load']}", flush=True)
        shutil.rmtree(out_dir)
    figures["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6)
    print(f"peak RSS {figures['peak_rss_mb']:,} MB")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
