"""Vector file formats other tools use, read memory-mapped (never loaded whole) and written for round trips.

- TEXMEX (SIFT1M, GIST1M): ``.fvecs`` / ``.bvecs`` / ``.ivecs`` — each vector is an int32 dimension followed
  by that many float32 / uint8 / int32 values.
- big-ann-benchmarks: ``.fbin`` / ``.u8bin`` / ``.i8bin`` / ``.ibin`` — a header of two uint32 (n, d), then
  n*d float32 / uint8 / int8 / int32 values, row-major. Its ground-truth files hold (n, k), then n*k int32 ids,
  then n*k float32 distances.
- ``.npy`` (numpy), memory-mapped.
- IDX (MNIST, Fashion-MNIST; optionally gzipped): a magic number giving the element type and rank, the
  dimensions as big-endian int32, then the data; images are flattened to (n, rows*cols).

Every reader returns an array-like of shape (n, d) that slices cheaply (a numpy memmap or view), so a file
larger than memory is read in chunks by whoever consumes it.
"""

from __future__ import annotations

import gzip
import os
import zipfile
from pathlib import Path

import numpy as np

from ann_bench.atomic import atomic_path
from ann_bench.errors import InputError

VECS = {".fvecs": np.float32, ".bvecs": np.uint8, ".ivecs": np.int32}
BINS = {".fbin": np.float32, ".u8bin": np.uint8, ".i8bin": np.int8, ".ibin": np.int32}
IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
FORMATS = (*VECS, *BINS, ".npy", ".idx", ".hdf5", ".parquet")
HEADER_CHUNK = 1 << 20  # records whose dimension headers are checked at a time


def file_format(path: str | os.PathLike) -> str:
    """The format of ``path`` from its suffix (``.gz`` and IDX names such as ``*-idx3-ubyte`` understood)."""
    name = Path(path).name.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    if "-idx" in name or name.endswith(".idx"):
        return ".idx"
    suffix = Path(name).suffix
    if suffix in (".h5", ".hdf5", ".hdf"):
        return ".hdf5"
    if suffix not in FORMATS:
        raise InputError(f"unknown vector file format {Path(path).name!r}; ann-bench reads "
                         f"{', '.join(FORMATS)} (and gzipped IDX)")
    return suffix


def _check_file(path: Path) -> None:
    if not path.is_file():
        raise InputError(f"{str(path)!r} does not exist or is not a file")
    if not os.access(path, os.R_OK):
        raise InputError(f"{str(path)!r} is not readable; check its permissions")


def read_vectors(path: str | os.PathLike) -> np.ndarray:
    """Vectors of a .fvecs/.bvecs/.ivecs/.fbin/.u8bin/.i8bin/.ibin/.npy/IDX/.parquet file, shape (n, d),
    memory-mapped where the format allows (all but gzipped IDX and Parquet). InputError on a truncated or
    malformed file."""
    path = Path(path).expanduser()
    _check_file(path)
    fmt = file_format(path)
    size = path.stat().st_size
    if fmt in VECS:
        dtype = np.dtype(VECS[fmt])
        if size < 4:
            raise InputError(f"{str(path)!r} is too short for {fmt} (no dimension header)")
        d = int(np.fromfile(path, dtype="<i4", count=1)[0])
        record = 4 + d * dtype.itemsize
        if d <= 0 or size % record:
            raise InputError(f"{str(path)!r} is not a valid {fmt} file: first dimension {d}, file size {size} is "
                             f"not a multiple of the record size {record}")
        rec = np.memmap(path, dtype=np.dtype([("d", "<i4"), ("v", dtype.newbyteorder("<"), (d,))]), mode="r")
        # Every record's header, not a sample: a strided view of the int32 headers, checked in chunks.
        for start in range(0, len(rec), HEADER_CHUNK):
            heads = rec["d"][start : start + HEADER_CHUNK]
            bad = np.flatnonzero(heads != d)
            if bad.size:
                row = start + int(bad[0])
                raise InputError(f"{str(path)!r}: vector {row} has dimension {int(heads[bad[0]])} but vector 0 has "
                                 f"{d}; a {fmt} file holds vectors of one dimension (a corrupt or concatenated file?)")
        return rec["v"]
    if fmt in BINS:
        dtype = np.dtype(BINS[fmt]).newbyteorder("<")
        if size < 8:
            raise InputError(f"{str(path)!r} is too short for {fmt} (no n, d header)")
        n, d = (int(x) for x in np.fromfile(path, dtype="<u4", count=2))
        if d == 0 or 8 + n * d * dtype.itemsize > size:
            raise InputError(f"{str(path)!r}: header says {n} x {d} but the file holds {size - 8} bytes of data")
        return np.memmap(path, dtype=dtype, mode="r", offset=8, shape=(n, d))
    if fmt == ".npy":
        try:
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
        except (ValueError, EOFError, OSError, zipfile.BadZipFile) as exc:  # EOFError: empty or truncated
            raise InputError(f"{str(path)!r} is not a readable numeric .npy array: "
                             f"{str(exc) or type(exc).__name__}") from None
        if not isinstance(arr, np.ndarray):  # an .npz archive under an .npy name
            raise InputError(f"{str(path)!r} is an .npz archive, not an .npy array; save one array with np.save")
        if arr.ndim != 2:
            raise InputError(f"{str(path)!r} holds an array of shape {arr.shape}; expected 2-D (n, d)")
        return arr
    if fmt == ".idx":
        arr = read_idx(path)
        return arr.reshape(len(arr), -1)
    if fmt == ".parquet":  # read whole (no memory map); its columns chosen as ann_bench.data.parquet says
        from ann_bench.data.parquet import read_parquet

        return read_parquet(path).X
    raise InputError(f"{str(path)!r} is an HDF5 file: use it with --dataset, or `ann-bench data import` to "
                     "re-validate it")


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """An IDX file (MNIST layout; gzipped or not) as an array of its full shape."""
    path = Path(path)
    _check_file(path)
    try:
        with open(path, "rb") as fh:
            gzipped = fh.read(2) == b"\x1f\x8b"  # by magic, not by name
        opener = gzip.open if gzipped else open
        with opener(path, "rb") as fh:
            header = fh.read(4)
            if len(header) < 4 or header[0] != 0 or header[1] != 0 or header[2] not in IDX_TYPES:
                raise InputError(f"{str(path)!r} is not an IDX file (bad magic number {header.hex()})")
            rank = header[3]
            dims = tuple(int(x) for x in np.frombuffer(fh.read(4 * rank), dtype=">i4"))
            dtype = np.dtype(IDX_TYPES[header[2]])
            data = fh.read()
    except (OSError, EOFError) as exc:
        raise InputError(f"cannot read IDX file {str(path)!r}: {exc}") from None
    count = int(np.prod(dims))
    if len(data) < count * dtype.itemsize:
        raise InputError(f"{str(path)!r} is truncated: {dims} needs {count * dtype.itemsize} bytes, has {len(data)}")
    return np.frombuffer(data, dtype=dtype, count=count).reshape(dims).astype(dtype.newbyteorder("="))


def read_bin_groundtruth(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray | None]:
    """big-ann-benchmarks ground truth: (I (n, k) int32, D (n, k) float32 or None if the file has no distances)."""
    path = Path(path)
    _check_file(path)
    size = path.stat().st_size
    if size < 8:
        raise InputError(f"{str(path)!r} is too short for big-ann ground truth (no n, k header)")
    n, k = (int(x) for x in np.fromfile(path, dtype="<u4", count=2))
    ids = 8 + n * k * 4
    if size < ids:
        raise InputError(f"{str(path)!r}: header says {n} x {k} ids but the file is {size} bytes")
    I = np.fromfile(path, dtype="<i4", count=n * k, offset=8).reshape(n, k)
    D = np.fromfile(path, dtype="<f4", count=n * k, offset=ids).reshape(n, k) if size >= ids + n * k * 4 else None
    return I, D


# ---- writers (for exports and round-trip tests) -------------------------------------------------------------
def write_vecs(path: str | os.PathLike, X: np.ndarray) -> None:
    """Write X (n, d) as .fvecs/.bvecs/.ivecs according to the suffix, atomically."""
    fmt = file_format(path)
    dtype = np.dtype(VECS[fmt]).newbyteorder("<")
    X = np.asarray(X)
    rec = np.empty(len(X), dtype=[("d", "<i4"), ("v", dtype, (X.shape[1],))])
    rec["d"] = X.shape[1]
    rec["v"] = X
    with atomic_path(path) as tmp:
        rec.tofile(tmp)


def write_bin(path: str | os.PathLike, X: np.ndarray) -> None:
    """Write X (n, d) as .fbin/.u8bin/.i8bin/.ibin according to the suffix, atomically."""
    fmt = file_format(path)
    X = np.ascontiguousarray(X, dtype=np.dtype(BINS[fmt]).newbyteorder("<"))
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.array(X.shape, dtype="<u4").tofile(fh)
        X.tofile(fh)


def write_bin_groundtruth(path: str | os.PathLike, I: np.ndarray, D: np.ndarray) -> None:
    """Write big-ann-benchmarks ground truth: (n, k) header, int32 ids, float32 distances."""
    I = np.ascontiguousarray(I, dtype="<i4")
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.array(I.shape, dtype="<u4").tofile(fh)
        I.tofile(fh)
        np.ascontiguousarray(D, dtype="<f4").tofile(fh)


def write_idx(path: str | os.PathLike, arr: np.ndarray) -> None:
    """Write an IDX file (gzipped if the name ends in .gz), uint8/int8/int32/float32/float64."""
    arr = np.asarray(arr)
    codes = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09, np.dtype(np.int32): 0x0C,
             np.dtype(np.float32): 0x0D, np.dtype(np.float64): 0x0E}
    code = codes[arr.dtype]
    big = arr.astype(np.dtype(IDX_TYPES[code]))
    payload = bytes([0, 0, code, arr.ndim]) + np.array(arr.shape, dtype=">i4").tobytes() + big.tobytes()
    opener = gzip.open if str(path).endswith(".gz") else open
    with atomic_path(path) as tmp, opener(tmp, "wb") as fh:
        fh.write(payload)
