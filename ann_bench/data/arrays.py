"""One validation of arrays and scalars, shared by every command and the Python API (issue 31).

Every path that takes vectors from a user — ``data import``, ``embed``, ``index build`` from a file,
``search``'s queries, :func:`ann_bench.build_index` and :meth:`SavedIndex.search` — calls these checks, so
the same input gets the same one-line :class:`~ann_bench.errors.InputError` wherever it enters:

- dtype: real numbers only (complex is refused, not silently cut to its real part; strings and objects are
  refused before a conversion could fail with a traceback);
- shape: 2-D, non-empty, the expected dimension;
- values: finite, within float32's range (every library stores float32), squared norms that do not overflow
  float32 distance arithmetic, not so small that every distance underflows to a tie, and no all-zero row
  under ``angular``;
- scalars: seeds, k and thread counts within what numpy, the libraries and the machine accept.
"""

from __future__ import annotations

import os

import numpy as np

from ann_bench.errors import InputError

FLOAT32_MAX = float(np.finfo(np.float32).max)
# Every library computes distances in float32: ||q||^2 + ||x||^2 - 2 q.x (faiss, hnswlib) must stay finite, and
# differences of squared distances must stay above float32's smallest normal numbers.
SQUARED_NORM_MAX = FLOAT32_MAX / 8
MAGNITUDE_MIN = 1e-15
SEED_MAX = 2**31 - 1  # faiss (int), annoy (int), hnswlib (size_t), numpy and torch all take it
THREADS_MAX = 1024  # beyond this OpenMP (faiss) and std::thread pools (hnswlib) crash without a word


def _noun(name: str) -> str:
    """'train' -> 'train vectors'; a phrase ('queries', "vectors of 'x.npy'") is kept as it is."""
    return f"{name} vectors" if name in ("train", "test", "query", "base") else name


def _row(name: str, row: int) -> str:
    """'train', 5 -> 'train vector 5'; 'queries', 5 -> 'queries: row 5'."""
    return f"{name} vector {row}" if name in ("train", "test", "query", "base") else f"{name}: row {row}"


def check_numeric(name: str, raw, where: str = "") -> None:
    """InputError unless ``raw``'s dtype holds real numbers (float, int, unsigned, bool)."""
    dtype = np.asarray(raw).dtype if not hasattr(raw, "dtype") else raw.dtype
    kind = dtype.kind
    if kind in "fiub":
        return
    if kind == "c":
        raise InputError(f"{_noun(name)}{where} are complex ({dtype}); indices search real vectors and ann-bench "
                         "does not drop the imaginary part: pass the real part, the magnitude, or the real and "
                         "imaginary parts as separate coordinates")
    if kind in "USO":
        raise InputError(f"{_noun(name)}{where} hold {'strings' if kind in 'US' else 'Python objects'} "
                         f"(dtype {dtype}), not numbers; give a numeric array (n, d)")
    raise InputError(f"{_noun(name)}{where} have dtype {dtype}, not numbers; give a float or integer array (n, d)")


def check_float32_source(name: str, raw, start: int, where: str = "") -> None:
    """InputError when ``raw`` (rows start.., any dtype) is not real numbers, or holds a finite value that
    float32 cannot hold: it would become inf when stored, which is not the input's fault of being "NaN or inf"."""
    check_numeric(name, raw, where)
    raw = np.asarray(raw)
    if raw.dtype.kind != "f" or raw.dtype.itemsize <= 4 or raw.size == 0:
        return
    big = np.isfinite(raw) & (np.abs(raw) > FLOAT32_MAX)
    if big.any():
        row, col = np.argwhere(big)[0][:2] if raw.ndim > 1 else (np.argwhere(big)[0][0], 0)
        raise InputError(f"{_row(name, start + int(row))}{where} holds {float(raw[row, col] if raw.ndim > 1 else raw[row]):.4g}, "
                         f"too large for float32 (max {FLOAT32_MAX:.3g}), which ann-bench and every index library "
                         "store vectors in; rescale the vectors (e.g. divide them all by a common factor)")


def check_magnitude(name: str, block: np.ndarray, start: int, where: str = "") -> float:
    """InputError when a float32 row of ``block`` is so large that its squared norm overflows float32
    distance arithmetic; returns the block's largest absolute value (for the too-small check)."""
    if block.size == 0:
        return 0.0
    peak = float(np.max(np.abs(block)))
    if peak * peak * block.shape[1] > SQUARED_NORM_MAX:  # cheap bound first; exact norms only when it fails
        sq = np.einsum("ij,ij->i", block.astype(np.float64), block.astype(np.float64))
        over = np.flatnonzero(sq > SQUARED_NORM_MAX)
        if over.size:
            row = int(over[0])
            raise InputError(f"{_row(name, start + row)}{where} has norm {np.sqrt(sq[row]):.3g}: its squared "
                             f"norm overflows the float32 distance arithmetic of faiss, hnswlib and annoy "
                             f"(max {FLOAT32_MAX:.3g}), so distances would be inf and recall meaningless; rescale "
                             "the vectors (e.g. divide them all by 1e10)")
    return peak


def check_not_tiny(peak: float, what: str) -> None:
    """InputError when every coordinate of a set is below :data:`MAGNITUDE_MIN` in magnitude (but not all
    zero): squared distances underflow float32 and every neighbour would tie at distance 0."""
    if 0 < peak < MAGNITUDE_MIN:
        raise InputError(f"{what}: the largest coordinate is {peak:.3g}; squared distances underflow float32 "
                         "(faiss, hnswlib and annoy compute in float32), so every neighbour would tie at 0; "
                         "rescale the vectors (e.g. multiply them all by 1e10)")


def check_rows(name: str, block: np.ndarray, start: int, metric: str | None, where: str = "") -> float:
    """InputError when a float32 row of ``block`` holds NaN/inf, is all zeros under ``angular``, or overflows
    float32 distance arithmetic; returns the block's largest absolute value."""
    finite = np.isfinite(block).all(axis=1)
    if not finite.all():
        raise InputError(f"{_row(name, start + int(np.flatnonzero(~finite)[0]))}{where} holds NaN or inf; "
                         "remove or fix it")
    if metric == "angular":
        zero = ~np.any(block != 0, axis=1)
        if zero.any():
            raise InputError(f"{_row(name, start + int(np.flatnonzero(zero)[0]))}{where} is all zeros, which has "
                             "no angle under metric 'angular'; drop it or use 'euclidean'")
    return check_magnitude(name, block, start, where)


def as_vectors(X, what: str, *, dim: int | None = None, metric: str | None = None, first_row: int = 0,
               tiny_check: bool = True) -> np.ndarray:
    """``X`` as a C-contiguous float32 (n, d) array after every check above; InputError naming ``what``.

    ``dim``: the dimension the vectors must have (an index's); ``first_row``: the row number of ``X[0]`` in the
    user's file, for the message; ``tiny_check``: refuse a set whose coordinates are all below
    :data:`MAGNITUDE_MIN` (off for a block of queries read in chunks, where one chunk says nothing)."""
    if isinstance(X, (str, bytes)):
        raise InputError(f"{what} are a string ({X[:40]!r}), not vectors; give a numeric array (n, d)")
    try:
        X = np.asarray(X)
    except (ValueError, TypeError) as exc:  # ragged lists
        raise InputError(f"{what} are not a rectangular array of numbers (rows of different lengths?); give a "
                         "numeric array (n, d)") from None
    check_numeric(what, X)
    if X.ndim != 2:
        raise InputError(f"{what} must be 2-D (n, d), got shape {X.shape}; one vector is X[None, :]")
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise InputError(f"{what} are empty (shape {X.shape})")
    if dim is not None and X.shape[1] != dim:
        raise InputError(f"{what} are {X.shape[1]}-d but the index holds {dim}-d vectors; embed them with the "
                         "model that made the index's vectors")
    check_float32_source(what, X, first_row)
    X = np.ascontiguousarray(X, dtype=np.float32)
    peak = check_rows(what, X, first_row, metric)
    if tiny_check:
        check_not_tiny(peak, what)
    return X


def _integer(value, option: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InputError(f"{option} must be an integer, got {value!r}")
    return int(value)


def check_seed(seed, option: str = "--seed") -> int:
    """``seed`` as an int in [0, 2^32 - 1]; InputError otherwise."""
    seed = _integer(seed, option)
    if not 0 <= seed <= SEED_MAX:
        raise InputError(f"{option} must be in [0, {SEED_MAX}] (the range faiss, hnswlib, annoy, numpy and torch "
                         f"all accept), got {seed}")
    return seed


def check_k(k, n: int | None = None, option: str = "-k", what: str = "indexed vectors") -> int:
    """``k`` as an int in [1, n]; InputError otherwise (a k beyond n would allocate nq x k for nothing)."""
    k = _integer(k, option)
    if k < 1:
        raise InputError(f"{option} must be >= 1, got {k}")
    if n is not None and k > n:
        raise InputError(f"{option} {k:,} exceeds the {n:,} {what}; give k <= {n:,}")
    return k


def check_threads(threads, option: str = "--threads") -> int:
    """``threads`` as an int in [1, THREADS_MAX]; InputError otherwise."""
    threads = _integer(threads, option)
    if not 1 <= threads <= THREADS_MAX:
        raise InputError(f"{option} must be in [1, {THREADS_MAX}], got {threads} (this machine has "
                         f"{os.cpu_count()} CPUs)")
    return threads
