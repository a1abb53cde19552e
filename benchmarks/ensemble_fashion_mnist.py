"""The seed's experiment: 10 recommendations per Fashion-MNIST test image, scored by MAP@10, with two trained
embedders, their ensemble, and each searched exactly and *through* faiss HNSW, faiss IVF and Annoy.

    python benchmarks/ensemble_fashion_mnist.py                 # ~15 min on 2 cores (training included)
    python benchmarks/ensemble_fashion_mnist.py --work DIR      # where models, sets, results and files go
    python benchmarks/ensemble_fashion_mnist.py --limit 3000    # a small run: see below

``--limit N`` runs the same steps on the first N of the 60,000 train images (the database; training then
uses at most N images) and the first max(100, N // 6) of the 10,000 test images (the queries, the full run's
ratio), written as IDX files under DIR/limit-N/, where everything of that run goes; IVF's nlist is then about
4*sqrt(N) (256 at full size). Its figures are not the README's: those come from the default, full run.

Every step is an `ann-bench` command (printed before it runs) and is skipped when its output exists, so an
interrupted run continues:

1. `ann-bench train` two small CNNs on Fashion-MNIST (Debian dataset-fashion-mnist): triplet loss with a
   semi-hard miner (dim 50) and center loss + softmax (dim 64, another seed); 20,000 train images, 4 epochs.
2. `ann-bench embed` the 60,000 train images (database) and 10,000 test images (queries) with each
   (``--limit N``: fewer).
3. `ann-bench data combine` the two sets (each part L2-normalised, weights 1,1) into a 114-d ensemble, and
   `ann-bench embed --model A --model B` to check that one command gives the same vectors.
4. `ann-bench run` on each set: flat (exact), faiss HNSW (M=16, efC=200; ef 10..80), faiss IVF (nlist 256;
   nprobe 1..16), Annoy (50 trees; search_k 500..5000); k = 10, one thread, batch mode. Every row stores
   Precision@10, MAP@10 (MAP@R truncated at 10), Recall@1 and MRR of the index's own top 10.
5. `ann-bench index build --from-best --recall 0.95` on the ensemble and `ann-bench search --format wide`:
   the top-10 recommendation file for the 10,000 test images.

Prints a Markdown table (the README's) and writes DIR/ensemble.json.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

FASHION = Path("/usr/share/datasets/fashion-mnist")
MODELS = {  # name -> train arguments
    "triplet": ["--loss", "triplet", "--miner", "semihard", "--dim", "50", "--seed", "0"],
    "center": ["--loss", "center", "--dim", "64", "--seed", "1"],
}
TRAIN_IMAGES, TEST_IMAGES = 60_000, 10_000


def backends(nlist: int = 256) -> list[tuple[str, list[str]]]:
    return [
        ("exact", ["--backend", "flat"]),
        ("faiss HNSW", ["--backend", "hnsw:faiss", "--build", "hnsw:M=16", "--build", "hnsw:ef_construction=200",
                        "--search", "hnsw:ef=10,20,40,80"]),
        ("faiss IVF", ["--backend", "ivf", "--build", f"ivf:nlist={nlist}", "--search", "ivf:nprobe=1,2,4,16"]),
        ("Annoy", ["--backend", "annoy", "--build", "annoy:n_trees=50", "--search", "annoy:search_k=500,1000,5000"]),
    ]


def limited_images(work: Path, limit: int) -> tuple[Path, Path, int]:
    """(train images, test images, queries) of the first ``limit`` train and max(100, limit // 6) test images,
    as gzipped IDX files (with their labels beside them, which `embed` picks up) under ``work``."""
    from ann_bench.data.formats import read_idx, write_idx

    queries = min(TEST_IMAGES, max(100, limit // 6))
    for split, count in (("train", limit), ("t10k", queries)):
        for kind in ("images-idx3", "labels-idx1"):
            out = work / f"{split}-{kind}-ubyte.gz"
            if not out.exists():
                write_idx(out, read_idx(FASHION / f"{split}-{kind}-ubyte.gz")[:count])
    return work / "train-images-idx3-ubyte.gz", work / "t10k-images-idx3-ubyte.gz", queries


def sh(args: list[str], log: list[dict]) -> float:
    """Run an ann-bench command, echo it, fail loudly; return its wall time."""
    cmd = ["ann-bench", *map(str, args)]
    print("$", shlex.join(cmd), flush=True)
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    dt = time.perf_counter() - t0
    tail = (done.stdout + done.stderr).strip().splitlines()[-3:]
    for line in tail:
        print("   ", line[:200])
    if done.returncode not in (0,):
        sys.exit(f"command failed ({done.returncode}): {shlex.join(cmd)}")
    log.append({"cmd": shlex.join(cmd), "seconds": round(dt, 1)})
    return dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path.home() / ".cache" / "ann-bench" / "ensemble-fmnist")
    ap.add_argument("--train-limit", type=int, default=20000)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--limit", type=int, default=None, metavar="N",
                    help=f"Only the first N of the {TRAIN_IMAGES:,} train images (database; training on at most N) "
                         "and max(100, N // 6) test images, in DIR/limit-N: a small run [all]")
    args = ap.parse_args()
    work = args.work.expanduser()
    if not (FASHION / "train-images-idx3-ubyte.gz").exists():
        sys.exit("needs the Debian package dataset-fashion-mnist (apt-get install dataset-fashion-mnist)")
    train_images, test_images = FASHION / "train-images-idx3-ubyte.gz", FASHION / "t10k-images-idx3-ubyte.gz"
    nlist = 256
    if args.limit is not None:
        if not 1000 <= args.limit <= TRAIN_IMAGES:
            sys.exit(f"--limit must be in [1000, {TRAIN_IMAGES}] (fewer images leave too little to train on), "
                     f"got {args.limit}")
        from ann_bench.backends.ivf import pow2_lists

        work = work / f"limit-{args.limit}"
        work.mkdir(parents=True, exist_ok=True)
        train_images, test_images, queries = limited_images(work, args.limit)
        args.train_limit = min(args.train_limit, args.limit)
        nlist = min(256, pow2_lists(args.limit, 4))
        print(f"--limit {args.limit}: {args.limit:,} train images (database), {queries:,} test images (queries), "
              f"training on {args.train_limit:,}, IVF nlist={nlist}; in {work}", flush=True)
    work.mkdir(parents=True, exist_ok=True)
    log: list[dict] = []

    sets = {}
    for name, train_args in MODELS.items():
        ckpt = work / f"{name}.pt"
        if not ckpt.exists():
            sh(["train", "--data", "fashion-mnist", *train_args, "--epochs", args.epochs, "--train-limit",
                args.train_limit, "--test-limit", 2000, "-o", ckpt], log)
        out = work / f"fmnist-{name}.hdf5"
        if not out.exists():
            sh(["embed", "--model", ckpt, "--input", train_images, "--queries", test_images, "-o", out], log)
        sets[name] = out
    ensemble = work / "fmnist-ensemble.hdf5"
    if not ensemble.exists():
        sh(["data", "combine", sets["triplet"], sets["center"], "--weights", "1,1", "-o", ensemble], log)
    sets["ensemble (combine)"] = ensemble
    direct = work / "fmnist-ensemble-embed.hdf5"
    if not direct.exists():
        sh(["embed", "--model", work / "triplet.pt", "--model", work / "center.pt", "--input", train_images,
            "--queries", test_images, "-o", direct], log)
    import numpy as np

    from ann_bench.data.vectorset import VectorSet

    with VectorSet(ensemble) as a, VectorSet(direct) as b:
        same = float(np.max(np.abs(a.load_train() - b.load_train())))
    print(f"combine vs embed --model A --model B: max |difference| {same:.2e}")

    store = work / "results.sqlite"
    for name, path in sets.items():
        for _, backend_args in backends(nlist):
            sh(["run", "--dataset", path, *backend_args, "-k", 10, "--runs", 3, "--threads", 1,
                "--results", store], log)

    from ann_bench.bench.results import ResultStore

    rows = []
    with ResultStore(store, create=False) as s:
        records = [r for r in s.records() if r.status == "ok" and r.k == 10]
    names = {}
    for name, path in sets.items():
        with VectorSet(path) as vs:
            names[vs.content_hash()] = name
    for r in records:
        if r.dataset_hash not in names:
            continue
        lm = r.label_metrics
        rows.append({"set": names[r.dataset_hash], "backend": f"{r.backend}[{r.impl}]",
                     "build": r.build_params, "search": r.search_params, "recall": r.recall, "qps": r.qps,
                     "precision_at_10": lm.get("precision_at_10"), "map_at_10": lm.get("map_at_10"),
                     "exact_map_at_10": lm.get("exact_map_at_10"), "recall_at_1": lm.get("recall_at_1")})
    order = {n: i for i, n in enumerate(sets)}
    rows.sort(key=lambda x: (order[x["set"]], x["backend"], json.dumps(x["build"]), -(x["recall"] or 0)))

    index_dir = work / "ensemble-index"
    if not index_dir.exists():
        sh(["index", "build", "--dataset", ensemble, "--from-best", "--recall", 0.95, "--results", store,
            "-o", index_dir], log)
    top10 = work / "top10-test.csv"
    if not top10.exists():
        sh(["search", index_dir, "--queries", ensemble, "-k", 10, "--format", "wide", "-o", top10], log)

    print()
    print("| embedder | index | setting | recall@10 | QPS | Precision@10 | MAP@10 | MAP@10 lost to the index |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
    for x in rows:
        setting = " ".join(f"{k}={v}" for k, v in {**x["search"]}.items()) or "-"
        lost = (x["exact_map_at_10"] - x["map_at_10"]) if x["exact_map_at_10"] is not None else None
        print(f"| {x['set']} | {x['backend']} | {setting} | {x['recall']:.4f} | {x['qps']:,.0f} | "
              f"{x['precision_at_10']:.4f} | {x['map_at_10']:.4f} | {lost:+.4f} |")
    (work / "ensemble.json").write_text(json.dumps({"rows": rows, "commands": log, "combine_vs_embed_max_diff": same,
                                                    "limit": args.limit}, indent=1, default=str))
    print(f"\nwrote {work / 'ensemble.json'}; recommendations: {top10}")


if __name__ == "__main__":
    main()
