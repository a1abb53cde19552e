"""The hierarchy question on a real sweep: our NSW (no hierarchy) against hnswlib's HNSW, through ``ann-bench run``.

On any dataset file (``--dataset``; e.g. the 1M x 128 set of ``sweep_1m.py`` or Fashion-MNIST 784-d from
``ann-bench data fetch fashion-mnist-784-euclidean``) this runs one ``ann-bench run`` with hnswlib (``--M``,
ef_construction 200) and NSW (each ``--f``, w 1, ef_construction 100) over a fine ef grid, one query thread,
batch mode, best of ``--runs``, ``--index-cache`` (so the indices ``sweep_1m.py`` built at the same build
threads are loaded, not rebuilt). From the stored rows it interpolates each family's QPS at recall@10 0.9,
0.95 and 0.99 on its Pareto frontier (``nsw_vs_hnswlib.qps_at``: log QPS linear in recall between the two
frontier points around the target), prints the ratio NSW / hnswlib, writes the figures as JSON and the
recall/QPS plot (``ann-bench plot``).

The harness costs at most 3 % of QPS (``harness_overhead.py``), and both families go through it alike.

    python benchmarks/nsw_vs_hnsw.py --dataset FILE [--f 10,20] [--M 16] [--runs 3] [--build-threads 2]
                                     [--store results/nsw_vs_hnsw-NAME.sqlite] [--out results/nsw_vs_hnsw-NAME.json]
                                     [--plot results/nsw_vs_hnsw-NAME.png]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from nsw_vs_hnswlib import TARGETS, qps_at  # noqa: E402  (the same interpolation as the 100k study)
from sweep_1m import ann_bench  # noqa: E402  (run `ann-bench ARGS` as a child process, wall-clocked)

EF = [10, 12, 15, 20, 30, 40, 60, 80, 120, 160, 240, 320, 480, 640, 960]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", required=True, type=Path, help="a dataset file with ground truth")
    ap.add_argument("--f", default="10,20", help="NSW build values of f, comma-separated")
    ap.add_argument("--M", default="16", help="hnswlib build values of M, comma-separated")
    ap.add_argument("--ef", default=",".join(map(str, EF)), help="search ef values for both")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--build-threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--store", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--plot", type=Path, default=None)
    args = ap.parse_args()

    from ann_bench.data.vectorset import VectorSet
    from ann_bench.bench.results import ResultStore

    path = args.dataset.expanduser().resolve()
    with VectorSet(path) as vs:
        name, n, dim, nq, digest = vs.name, vs.n_train, vs.dim, vs.n_test, vs.content_hash()
    store = args.store or Path(f"results/nsw_vs_hnsw-{name}.sqlite")
    out = args.out or store.with_suffix(".json")
    plot = args.plot or store.with_suffix(".png")
    store.parent.mkdir(parents=True, exist_ok=True)

    wall = ann_bench("run", "--dataset", str(path), "--backend", "hnsw", "--backend", "nsw",
                     "--build", f"hnsw:M={args.M}", "--build", f"nsw:f={args.f}", "--search", f"hnsw:ef={args.ef}",
                     "--search", f"nsw:ef={args.ef}", "--threads", "1", "--build-threads", str(args.build_threads),
                     "--runs", str(args.runs), "--index-cache", "-q", "--results", str(store))

    Ms = {int(m) for m in args.M.split(",")}
    fs = {int(f) for f in args.f.split(",")}
    with ResultStore(store, create=False) as s:
        rows = [r for r in s.records(dataset=digest) if r.status == "ok" and r.mode == "batch" and r.k == 10
                and r.threads == 1 and ((r.backend == "hnsw" and r.impl == "hnswlib" and r.build_params["M"] in Ms)
                                        or (r.backend == "nsw" and r.build_params["f"] in fs))]
    points: dict[str, list[dict]] = {}
    builds = {}
    for r in rows:
        label = f"hnswlib M={r.build_params['M']}" if r.backend == "hnsw" else f"nsw f={r.build_params['f']}"
        family = "hnswlib" if r.backend == "hnsw" else "nsw"
        p = {"config": label, "ef": r.search_params["ef"], "recall": r.recall, "qps": r.qps}
        points.setdefault(family, []).append(p)
        points.setdefault(label, []).append(p)
        builds[label] = {"build_s": r.build_s, "index_mb": (r.index_bytes or 0) / 1e6, "cached": bool(r.index_cached)}

    print(f"\n{name}: {n:,} x {dim}, {nq:,} queries, recall@10, 1 query thread, batch, best of {args.runs}")
    print(f"{'index':14} {'ef':>5} {'recall':>7} {'QPS':>9}")
    for label in sorted(builds):
        for p in sorted(points[label], key=lambda p: p["ef"]):
            print(f"{label:14} {p['ef']:5d} {p['recall']:7.4f} {p['qps']:9,.0f}")
    print(f"\n{'target':>6} {'hnswlib QPS':>18} {'nsw QPS (best f)':>18} {'nsw / hnswlib':>14}")
    summary = []
    for target in TARGETS:
        h, hk = qps_at(points.get("hnswlib", []), target)
        v, vk = qps_at(points.get("nsw", []), target)
        ratio = v / h if v and h else None
        summary.append({"recall": target, "hnswlib_qps": h, "hnswlib_kind": hk, "nsw_qps": v, "nsw_kind": vk,
                        "ratio": ratio, **{f"{lab}_qps": qps_at(points[lab], target)[0] for lab in builds}})
        fmt = lambda q, kind: f"{q:,.0f} ({kind})" if q else kind  # noqa: E731
        print(f"{target:6.2f} {fmt(h, hk):>18} {fmt(v, vk):>18} {(f'{ratio:.2f}' if ratio else '-'):>14}")
    for label, b in sorted(builds.items()):
        print(f"build {label:14} {b['build_s']:8.1f} s  {b['index_mb']:8.1f} MB"
              + ("  (loaded from the index cache; build figures of the original build)" if b["cached"] else ""))

    ann_bench("plot", "--results", str(store), "--dataset", digest, "-o", str(plot))
    report = {"dataset": {"name": name, "path": str(path), "n": n, "dim": dim, "queries": nq, "hash": digest},
              "runs": args.runs, "threads": 1, "k": 10, "wall_s": wall, "builds": builds, "points": points.get("hnswlib", []) + points.get("nsw", []),
              "qps_at_recall": summary, "store": str(store), "plot": str(plot)}
    out.write_text(json.dumps(report, indent=2))
    print(f"wrote {out} and {plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
