"""What our NSW build's RSS delta is made of, measured as the worker measures it (after warm_up).

    python benchmarks/nsw_build_memory.py [N] [DIM]        # default 100000 x 64, Gaussian, f=10, 1 thread

Prints the RSS the warm-up adds (numba's runtime, LLVM and the compiled kernels, loaded before the worker's
timer and RSS baseline), the build's RSS delta, index_bytes, and the sizes of the arrays the built index
holds (graph-ordered copy of the vectors, CSR adjacency, ids, per-thread visited arrays), plus the process
peak RSS (which includes the warm-up and the build's temporaries).
"""

from __future__ import annotations

import gc
import resource
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import psutil

from ann_bench.backends import get_backend


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    d = int(sys.argv[2]) if len(sys.argv) > 2 else 64
    X = np.random.default_rng(0).standard_normal((n, d)).astype(np.float32)
    proc = psutil.Process()
    index = get_backend("nsw")("euclidean", d, threads=1)
    r0 = proc.memory_info().rss
    index.warm_up()
    gc.collect()
    r1 = proc.memory_info().rss
    t0 = time.perf_counter()
    index.build(X)
    build_s = time.perf_counter() - t0
    r2 = proc.memory_info().rss
    parts = {"vectors (graph order)": index._X.nbytes, "adjacency": index._adj.nbytes,
             "indptr + start + degree": index._indptr.nbytes + index._start.nbytes + index._deg.nbytes,
             "ids": index._ids.nbytes, "visited (per thread)": index._visited.nbytes}
    print(f"n={n:,} d={d}: warm-up +{(r1 - r0) / 1e6:.1f} MB; build {build_s:.2f} s, RSS delta "
          f"{(r2 - r1) / 1e6:.1f} MB; index_bytes {index.index_bytes() / 1e6:.1f} MB")
    for name, size in parts.items():
        print(f"  {name:26s} {size / 1e6:8.2f} MB")
    print(f"  {'sum':26s} {sum(parts.values()) / 1e6:8.2f} MB")
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6:.1f} MB (includes the input "
          f"{X.nbytes / 1e6:.1f} MB, the warm-up and the build's temporaries)")


if __name__ == "__main__":
    main()
