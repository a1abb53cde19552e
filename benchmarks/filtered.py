"""Filtered search on real and large sets: every strategy's recall/QPS front per selectivity, and the crossover.

    python benchmarks/filtered.py                                     # Fashion-MNIST labels + synthetic 1M x 128
    python benchmarks/filtered.py --sets fashion-mnist-784-euclidean
    python benchmarks/filtered.py --synth-n 200000 --selectivities 0.5,0.1,0.01 --only flat,ivf

Sets: ``fashion-mnist-784-euclidean`` (60,000 images, 10,000 queries, its 10 classes as the filter: ``--filter
label``, each query restricted to its own class, selectivity 0.1) and a synthetic ``--synth-n`` x 128 set (default
1,000,000, with ``--synth-queries`` queries, default 1,000) with ``--filter selectivity=S`` for S in
``--selectivities`` (default 0.5, 0.1, 0.01, 0.001). Each backend runs with ``--filter-strategy in-index,post``
(the library's own filtered call, and post-filtering F * k results for F = 2, 8, 32); ``flat`` in-index is the exact
pre-filter. One store (resumable), one table per set, filter and mode: the fastest configuration of each backend x
strategy at recall@10 >= 0.9 / 0.95 / 0.99, and one plot per filter (``plot --filter``).

``--harness`` first checks that the in-index filtered call is timed as the library's own: faiss IVF with an
``IDSelectorBitmap`` and hnswlib with its ``filter`` callable, through ann-bench's timed region and through a
bare loop of the same call, interleaved (target >= 0.97, as for unfiltered search).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# backend -> (build specs, search specs)
CONFIGS: dict[str, tuple[list[str], list[str]]] = {
    "flat": ([], []),
    "hnsw": (["M=16", "ef_construction=200"], ["ef=16,32,64,128,256"]),
    "hnsw:faiss": (["M=16", "ef_construction=200"], ["ef=16,32,64,128,256"]),
    "ivf": (["nlist=1024"], ["nprobe=4,8,16,32,64,128"]),
}
# Below this selectivity an in-index graph search visits much of the set to find ef allowed items (hnswlib calls its
# Python filter at each): it reaches recall 0.999 at ef 16 on the million, and ef 256 would take most of an hour.
SPARSE = 0.005
SPARSE_SEARCH = {"hnsw": ["ef=16,32,64"], "hnsw:faiss": ["ef=16,32,64"]}


def sh(args: list) -> float:
    cmd = ["ann-bench", *map(str, args)]
    print("$", shlex.join(cmd), flush=True)
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    for line in (done.stdout + done.stderr).strip().splitlines()[-2:]:
        print("   ", line[:220])
    if done.returncode not in (0, 1) or "Traceback (most recent call last)" in done.stderr:
        sys.exit(f"command failed ({done.returncode}): {shlex.join(cmd)}")
    return time.perf_counter() - t0


def harness(n: int = 100_000, nq: int = 2000, rounds: int = 5) -> list[dict]:
    """ann-bench's filtered timed region vs a bare loop of the library's filtered call, batch mode."""
    import faiss
    import numpy as np

    from ann_bench.backends import get_backend
    from ann_bench.bench.filters import make_filter, measure_filtered
    from ann_bench.data.vectorset import SynthSpec, synth_arrays

    faiss.omp_set_num_threads(1)
    X, Q, _, _ = synth_arrays(SynthSpec(n=n, dim=64, queries=nq, clusters=100, seed=5))
    flt = make_filter("selectivity=0.1", n, nq, 10, None, None, seed=0)
    groups = [(g, rows, np.ascontiguousarray(Q[rows])) for g, rows in flt.groups()]
    out = []
    for name, build, search in (("ivf", {"nlist": 256}, {"nprobe": 16}), ("hnsw", {"M": 16}, {"ef": 64})):
        index = get_backend(name)("euclidean", 64, threads=1, **build)
        index.build(X)
        index.set_search_params(**search)
        if name == "ivf":
            ivf = index.index

            def bare_call(Qg, bitmap):
                sel = faiss.IDSelectorBitmap(n, faiss.swig_ptr(bitmap))
                return ivf.search(Qg, 10, params=faiss.SearchParametersIVF(sel=sel, nprobe=search["nprobe"]))
        else:
            lib = index.index

            def bare_call(Qg, bitmap):
                allowed = bitmap.tobytes()
                return lib.knn_query(Qg, k=10, num_threads=1, filter=lambda i: (allowed[i >> 3] >> (i & 7)) & 1 == 1)
        ratios = []
        for r in range(rounds):
            order = ("bare", "ours") if r % 2 == 0 else ("ours", "bare")
            got = {}
            for which in order:
                if which == "bare":
                    t0 = time.perf_counter()
                    for g, _, Qg in groups:
                        bare_call(Qg, flt.bitmaps[g])
                    got[which] = nq / (time.perf_counter() - t0)
                else:
                    figures, _ = measure_filtered(index, Q, groups, flt, 10, "batch", "in-index", 1)
                    got[which] = figures["qps"]
            ratios.append(got["ours"] / got["bare"])
        row = {"backend": name, "paired_median": float(np.median(ratios)), "ratios": ratios}
        print(f"harness {name:<5} in-index filtered, ann-bench / bare: median {row['paired_median']:.3f} "
              f"({' '.join(f'{x:.3f}' for x in ratios)})", flush=True)
        out.append(row)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", default="fashion-mnist-784-euclidean,synth")
    ap.add_argument("--synth-n", type=int, default=1_000_000)
    ap.add_argument("--synth-queries", type=int, default=1000,
                    help="queries of the synthetic set (1,000: at selectivity 0.001 an in-index graph search visits "
                         "much of the million items, so 10,000 queries would take hours on 2 cores)")
    ap.add_argument("--selectivities", default="0.5,0.1,0.01,0.001")
    ap.add_argument("--only", default=None, help="comma-separated subset of " + ", ".join(CONFIGS))
    ap.add_argument("--modes", default="batch", choices=["batch", "single", "both"])
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--build-threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--timeout", type=int, default=3600)
    ap.add_argument("--harness", action="store_true", help="first compare the filtered timed region with a bare loop")
    ap.add_argument("--workdir", type=Path, default=Path("~/.cache/ann-bench/filtered").expanduser())
    ap.add_argument("--out", type=Path, default=Path("results/filtered.json"))
    args = ap.parse_args()

    from ann_bench.bench.results import ResultStore, params_str
    from ann_bench.data.catalogue import cached_path
    from ann_bench.data.vectorset import VectorSet

    figures: dict = {"harness": harness() if args.harness else None, "sets": {}, "wall_s": {}}
    args.workdir.mkdir(parents=True, exist_ok=True)
    store = args.workdir / "filtered.sqlite"
    specs = [s for s in CONFIGS if args.only is None or s in args.only.split(",")]
    for set_name in args.sets.split(","):
        if set_name == "synth":
            path = args.workdir / f"synth-{args.synth_n}x128-q{args.synth_queries}.hdf5"
            if not path.exists():
                sh(["data", "synth", path, "--n", args.synth_n, "--dim", 128, "--queries", args.synth_queries])
            wide = [x for x in args.selectivities.split(",") if float(x) >= SPARSE]
            sparse = [x for x in args.selectivities.split(",") if float(x) < SPARSE]
            filters = [f"selectivity={','.join(part)}" for part in (wide, sparse) if part]
        else:
            path = cached_path(set_name)
            if not path.exists():
                sh(["data", "fetch", set_name])
            filters = ["label"]
        for spec in specs:
            name = spec.split(":")[0]
            build, search = CONFIGS[spec]
            for flt in filters:  # (one command per filter group: the sparse one may take a shorter search grid)
                sparse = flt.startswith("selectivity=") and all(float(x) < SPARSE for x in flt[12:].split(","))
                grid = SPARSE_SEARCH.get(spec, search) if sparse else search
                cmd = ["run", "--dataset", path, "--backend", spec, "-k", 10, "--threads", 1, "--build-threads",
                       args.build_threads, "--runs", args.runs, "--mode", args.modes, "--timeout", args.timeout,
                       "--filter-strategy", "in-index,post", "--index-cache", "-q", "--results", store,
                       "--filter", flt]
                cmd += [x for b in build for x in ("--build", f"{name}:{b}")]
                cmd += [x for s in grid for x in ("--search", f"{name}:{s}")]
                figures["wall_s"][f"{set_name} {spec} {flt}"] = round(sh(cmd), 1)
        with VectorSet(path) as vs:
            digest = vs.content_hash()
        with ResultStore(store, create=False) as s:
            rows = [r for r in s.records(dataset=digest, filter_spec=None)
                    if r.filter_spec and r.status == "ok" and r.k == 10]
        table: dict = {}
        for flt in sorted({r.filter_spec for r in rows}):
            for mode in ("batch", "single"):
                mine = [r for r in rows if r.filter_spec == flt and r.mode == mode]
                if not mine:
                    continue
                lines = [f"\n{set_name}, filter {flt} (mean selectivity {mine[0].filter_selectivity:.3g}), {mode} "
                         "mode (recall@10, 1 query thread; QPS)",
                         "| backend | strategy | QPS at 0.9 | QPS at 0.95 | QPS at 0.99 | max recall |",
                         "|---|---|---:|---:|---:|---:|"]
                entries = {}
                for key in sorted({(r.backend, r.impl, r.filter_strategy) for r in mine}):
                    group = [r for r in mine if (r.backend, r.impl, r.filter_strategy) == key]
                    entry = {"max_recall": max(r.recall for r in group)}
                    for target in (0.9, 0.95, 0.99):
                        ok = [r for r in group if r.recall >= target]
                        best = max(ok, key=lambda r: r.qps) if ok else None
                        entry[f"qps_at_{target}"] = round(best.qps) if best else None
                        entry[f"config_at_{target}"] = (f"{params_str(best.build_params)}; "
                                                        f"{params_str(best.search_params)}" if best else None)
                    entries[f"{key[0]}[{key[1]}] {key[2]}"] = entry
                for label, e in sorted(entries.items(), key=lambda kv: -(kv[1]["qps_at_0.95"] or 0)):
                    cell = lambda t: f"{e[f'qps_at_{t}']:,}" if e[f"qps_at_{t}"] else "-"  # noqa: E731
                    backend, strategy = label.split(" ")
                    lines.append(f"| {backend} | {strategy} | {cell(0.9)} | {cell(0.95)} | {cell(0.99)} | "
                                 f"{e['max_recall']:.4f} |")
                print("\n".join(lines), flush=True)
                table[f"{flt} {mode}"] = entries
        names = sorted({r.filter_spec for r in rows})
        plot = args.out.with_name(f"filtered-{set_name}.png")
        plot.parent.mkdir(parents=True, exist_ok=True)  # one panel per filter when there are several
        selectivities = [n.split("=", 1)[1] for n in names if n.startswith("selectivity=")]
        sh(["plot", "--results", store, "--dataset", digest, "--filter",
            "selectivity=" + ",".join(selectivities) if selectivities else names[0], "-o", plot, "--force"])
        figures["sets"][set_name] = table
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(figures, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
