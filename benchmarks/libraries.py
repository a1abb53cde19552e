"""Every backend x implementation on real sets: best QPS at recall@10 >= 0.9 / 0.95 / 0.99, build time, index MB.

    python benchmarks/libraries.py                                   # WordNet (MiniLM) and Fashion-MNIST pixels
    python benchmarks/libraries.py --sets fashion-mnist-784-euclidean --modes batch
    python benchmarks/libraries.py --only hnsw:usearch,hnsw:hnswlib   # a subset

Sets (built or fetched into the cache by `ann-bench data fetch`, offline): ``wordnet-minilm-384-angular``
(107,659 WordNet glosses through all-MiniLM-L6-v2, 10,000 queries) and ``fashion-mnist-784-euclidean``
(ann-benchmarks' set: 60,000 raw 784-pixel images, 10,000 queries), so the ordering can be compared with
ann-benchmarks' published plots. Every run: k = 10, one query thread (``--threads 1``), builds with
``--build-threads`` threads, best of ``--runs`` timed runs, batch and single mode, each library at the
build and search settings below (comparable in spirit to ann-benchmarks' configs, trimmed to fit a 2-core
machine), all rows in one store (resumable: a re-run skips what is stored). Implementations whose library is
not installed are listed as skipped with the install hint.

Prints one Markdown table per set and mode, writes ``--out`` (JSON) and one plot per set.
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

# backend:impl -> (build specs, search specs); None = the backend's own default grids.
CONFIGS: dict[str, tuple[list[str], list[str]] | None] = {
    "flat:faiss": None,
    "hnsw:hnswlib": (["M=16", "ef_construction=200"], ["ef=10,20,40,80,160,320"]),
    "hnsw:faiss": (["M=16", "ef_construction=200"], ["ef=10,20,40,80,160,320"]),
    "hnsw:usearch": (["M=16", "ef_construction=200"], ["ef=10,20,40,80,160,320"]),
    "hnsw:voyager": (["M=16", "ef_construction=200"], ["ef=10,20,40,80,160,320"]),
    "hnsw:nmslib": (["M=16", "ef_construction=200"], ["ef=10,20,40,80,160,320"]),
    "nsw:numba": (["f=16", "ef_construction=100"], ["ef=10,20,40,80,160"]),
    "nsw:nmslib": (["f=16", "ef_construction=100"], ["ef=10,20,40,80,160"]),
    "ivf:faiss": (["nlist=256"], ["nprobe=1,2,4,8,16,32,64"]),
    "ivfpq:faiss": None,
    "faiss:faiss": None,  # the presets: IVF + 4-bit PQ fast-scan with re-ranking, IVF + SQ8
    "annoy:annoy": (["n_trees=50"], ["search_k=500,1000,2000,5000,10000,20000"]),
    "nndescent:pynndescent": None,
    "onng:ngt": None,
    "vamana:diskannpy": None,
    "scann:scann": None,
    # embedded vector databases (extra `dbs`), measured through their own Python clients
    "flat:lancedb": None,
    "ivf:lancedb": (["nlist=256"], ["nprobe=1,2,4,8,16,32,64"]),
    # refine 0 only: LanceDB's refine_factor 10 reads the raw vectors back per query (WordNet: 166-175 QPS at
    # nprobe 1-2, 4 min a setting), which a sweep of every nprobe cannot afford here
    "ivfpq:lancedb": ([], ["nprobe=1,2,4,8,16,32,64,128,256", "refine=0"]),
    "ivfhnswsq:lancedb": (["nlist=1", "M=16", "ef_construction=200"], ["ef=10,20,40,80,160,320"]),
    "hnsw:chroma": (["M=16", "ef_construction=200"], ["ef=10,20,40,80,160,320"]),
    "ivf:milvus": None,  # Milvus Lite's nlist is fixed at 128 (pymilvus cannot pass build parameters)
    "hnsw:milvus": ([], ["ef=10,20,40,80,160,320"]),  # M 16, efConstruction 200, fixed likewise
    "ivfsq:milvus": None,  # IVF_SQ8: 8-bit codes in the lists, nlist 128 likewise
    "hnswsq:milvus": ([], ["ef=10,20,40,80,160,320"]),  # HNSW_SQ: the graph over 8-bit codes
}


def sh(args: list[str]) -> float:
    cmd = ["ann-bench", *map(str, args)]
    print("$", shlex.join(cmd), flush=True)
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    for line in (done.stdout + done.stderr).strip().splitlines()[-2:]:
        print("   ", line[:220])
    # 1: every configuration failed (the rows say why, and the table shows it); a traceback is not that
    if done.returncode not in (0, 1) or "Traceback (most recent call last)" in done.stderr:
        sys.exit(f"command failed ({done.returncode}): {shlex.join(cmd)}")
    return time.perf_counter() - t0


def available(spec: str) -> tuple[bool, str]:
    from ann_bench.backends import get_backend
    from ann_bench.errors import InputError

    name, impl = spec.split(":")
    try:
        get_backend(name, impl).check_available()
    except InputError as exc:
        return False, str(exc)
    return True, ""


def draw(records: list, out: Path) -> Path | None:
    """The figure of one set (``docs/libraries-SET.png``): its batch-mode rows at k = 10 (``records``: the rows
    of that set), every library's front; None when there is no such row. ``scripts/docs_figures.py`` draws the
    docs figures with this same function."""
    from ann_bench.report.plots import plot_recall_qps

    batch = [r for r in records if r.status == "ok" and r.k == 10 and r.mode == "batch"]
    if not batch:
        return None
    out.parent.mkdir(parents=True, exist_ok=True)
    return plot_recall_qps(batch, out)  # its title names the set, k, mode and threads


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", default="wordnet-minilm-384-angular,fashion-mnist-784-euclidean")
    ap.add_argument("--only", default=None, help="comma-separated backend:impl subset")
    ap.add_argument("--modes", default="both", choices=["batch", "single", "both"])
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--build-threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--timeout", type=int, default=1800, help="seconds per build configuration")
    ap.add_argument("--workdir", type=Path, default=Path("~/.cache/ann-bench/libraries").expanduser())
    ap.add_argument("--out", type=Path, default=Path("results/libraries.json"))
    args = ap.parse_args()

    from ann_bench.data.catalogue import cached_path
    from ann_bench.data.vectorset import VectorSet
    from ann_bench.bench.results import ResultStore, params_str

    args.workdir.mkdir(parents=True, exist_ok=True)
    store = args.workdir / "libraries.sqlite"
    specs = [s for s in CONFIGS if args.only is None or s in args.only.split(",")]
    figures: dict = {"sets": {}, "skipped": {}, "wall_s": {}}
    for spec in specs:
        ok, why = available(spec)
        if not ok:
            figures["skipped"][spec] = why
            print(f"skipped {spec}: {why}")
    specs = [s for s in specs if s not in figures["skipped"]]
    for set_name in args.sets.split(","):
        path = cached_path(set_name)
        if not path.exists():
            sh(["data", "fetch", set_name])
        for spec in specs:
            cmd = ["run", "--dataset", path, "--backend", spec, "-k", 10, "--threads", 1, "--build-threads",
                   args.build_threads, "--runs", args.runs, "--mode", args.modes, "--timeout", args.timeout,
                   "--index-cache", "-q", "--results", store]
            cfg = CONFIGS[spec]
            if cfg is not None:
                name = spec.split(":")[0]
                cmd += [x for b in cfg[0] for x in ("--build", f"{name}:{b}")]
                cmd += [x for s in cfg[1] for x in ("--search", f"{name}:{s}")]
            figures["wall_s"][f"{set_name} {spec}"] = round(sh(cmd), 1)

        with VectorSet(path) as vs:
            digest = vs.content_hash()
        with ResultStore(store, create=False) as s:
            records = [r for r in s.records() if r.dataset_hash == digest and r.status == "ok" and r.k == 10]
        table = {}
        for mode in ("batch", "single"):
            rows = [r for r in records if r.mode == mode]
            for spec in specs:
                name, impl = spec.split(":")
                mine = [r for r in rows if r.backend == name and r.impl == impl]
                if not mine:
                    continue
                entry = {"max_recall": max(r.recall for r in mine)}
                for target in (0.9, 0.95, 0.99):
                    ok = [r for r in mine if r.recall >= target]
                    best = max(ok, key=lambda r: r.qps) if ok else None
                    entry[f"qps_at_{target}"] = round(best.qps) if best else None
                    entry[f"config_at_{target}"] = (f"{params_str(best.build_params)}; {params_str(best.search_params)}"
                                                    if best else None)
                builds = {params_str(r.build_params): r for r in mine}
                entry["build_s"] = [round(r.build_s, 1) for r in builds.values() if r.build_s is not None]
                entry["index_mb"] = [round(r.index_bytes / 1e6, 1) for r in builds.values() if r.index_bytes]
                table[f"{mode} {spec}"] = entry
        figures["sets"][set_name] = table
        for mode in ("batch", "single"):
            lines = [f"\n{set_name}, {mode} mode (recall@10, 1 query thread; QPS)",
                     "| backend | QPS at 0.9 | QPS at 0.95 | QPS at 0.99 | max recall | build s | index MB |",
                     "|---|---:|---:|---:|---:|---:|---:|"]
            entries = [(k.split(" ", 1)[1], v) for k, v in table.items() if k.startswith(mode)]
            entries.sort(key=lambda kv: -(kv[1]["qps_at_0.95"] or 0))
            for spec, e in entries:
                cell = lambda t: f"{e[f'qps_at_{t}']:,}" if e[f"qps_at_{t}"] else "-"  # noqa: E731
                lines.append(f"| {spec} | {cell(0.9)} | {cell(0.95)} | {cell(0.99)} | {e['max_recall']:.4f} | "
                             f"{', '.join(map(str, e['build_s']))} | {', '.join(map(str, e['index_mb']))} |")
            print("\n".join(lines))
        plot = draw(records, args.out.with_name(f"libraries-{set_name}.png"))
        if plot:
            print(f"plot: {plot}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(figures, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
