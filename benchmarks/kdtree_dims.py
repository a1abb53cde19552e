"""The k-d tree against brute force as the dimension grows: where the tree stops paying.

For each dimension, n seeded vectors (``--data gaussian``: i.i.d. standard normal, the textbook worst case;
``--data clustered``: the clustered subspace mixture of ``ann-bench data synth``, intrinsic dimension dim/4),
the exact k = 10 neighbours of ``--queries`` queries by

- ``kdtree`` (scipy cKDTree through ann-bench's backend, leafsize 16, eps = 0: exact), and
- ``flat`` (faiss IndexFlatL2: a scan of every vector, BLAS),

one thread, best of ``--runs``. A tree's pruning skips whole leaves in low dimension; above ~20 dimensions
nearly every leaf lies within the current k-th distance and the tree does a scan with extra overhead.
Prints QPS of both and their ratio, and checks the tree's answers are exact; writes a JSON of the figures.

    python benchmarks/kdtree_dims.py [--n 100000] [--queries 1000] [--dims 2,4,8,16,24,32,64,128]
                                     [--data gaussian|clustered] [--out results/kdtree_dims.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

K = 10


def data(kind: str, n: int, nq: int, dim: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    if kind == "gaussian":
        rng = np.random.default_rng(seed)
        return (rng.standard_normal((n, dim), dtype=np.float32), rng.standard_normal((nq, dim), dtype=np.float32))
    from ann_bench.data.vectorset import SynthSpec, synth_arrays

    arrays = synth_arrays(SynthSpec(n=n, dim=dim, queries=nq, clusters=50, seed=seed))
    return arrays[0], arrays[1]


def best_qps(index, Q: np.ndarray, runs: int) -> tuple[float, np.ndarray]:
    best, I = float("inf"), None
    for _ in range(runs):
        t0 = time.perf_counter()
        _, I = index.query(Q, K)
        best = min(best, time.perf_counter() - t0)
    return len(Q) / best, I


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--dims", default="2,4,8,16,24,32,64,128")
    ap.add_argument("--data", choices=["gaussian", "clustered"], default="gaussian")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("results/kdtree_dims.json"))
    args = ap.parse_args()

    import faiss

    from ann_bench.backends import get_backend

    faiss.omp_set_num_threads(1)
    rows = []
    print(f"{args.data} data, n={args.n:,}, {args.queries:,} queries, k={K}, 1 thread, best of {args.runs}")
    print(f"{'dim':>4} {'kdtree build s':>15} {'kdtree QPS':>11} {'flat QPS':>9} {'kdtree/flat':>12}")
    for dim in (int(d) for d in args.dims.split(",")):
        X, Q = data(args.data, args.n, args.queries, dim, args.seed)
        tree = get_backend("kdtree")("euclidean", dim, threads=1, leafsize=16)
        t0 = time.perf_counter()
        tree.build(X)
        build_s = time.perf_counter() - t0
        tree.set_search_params(eps=0.0)
        flat = get_backend("flat")("euclidean", dim, threads=1)
        flat.build(X)
        q_tree, I_tree = best_qps(tree, Q, args.runs)
        q_flat, I_flat = best_qps(flat, Q, args.runs)
        D_exact = np.sort(((Q[:, None, :] - X[I_flat]) ** 2).sum(-1), axis=1)
        D_tree = np.sort(((Q[:, None, :] - X[I_tree]) ** 2).sum(-1), axis=1)
        exact = bool(np.allclose(D_tree, D_exact, rtol=1e-4, atol=1e-5))
        rows.append({"dim": dim, "kdtree_build_s": build_s, "kdtree_qps": q_tree, "flat_qps": q_flat,
                     "ratio": q_tree / q_flat, "kdtree_exact": exact})
        print(f"{dim:>4} {build_s:>15.2f} {q_tree:>11,.0f} {q_flat:>9,.0f} {q_tree / q_flat:>12.2f}"
              + ("" if exact else "  (NOT exact!)"), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"n": args.n, "queries": args.queries, "data": args.data, "rows": rows},
                                   indent=2))
    print(f"wrote {args.out}")
    return 0 if all(r["kdtree_exact"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
