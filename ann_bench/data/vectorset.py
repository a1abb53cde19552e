"""VectorSet: the ann-benchmarks HDF5 layout, read lazily, written atomically, validated; and the generator.

Layout (what ann-benchmarks writes and reads):

- datasets ``train`` (n, d) float32, ``test`` (nq, d) float32, ``neighbors`` (nq, depth) int,
  ``distances`` (nq, depth) float — exact neighbours of each test vector, nearest first;
- attrs ``distance`` (``euclidean`` | ``angular`` | ``ip``), ``dimension``, ``point_type`` = "float",
  ``type`` = "dense";
- optional ``train_labels`` (n,), ``test_labels`` (nq,), item keys ``train_keys`` (n,) / ``test_keys`` (nq,)
  (UTF-8 strings naming each item: an image's path relative to its folder, a text's line number, an id column,
  a row number) and provenance attrs (``source``, ``generator``, ...).

``train`` stays on disk until :meth:`VectorSet.load_train` reads it once, in chunks, into one float32 array,
checking for NaN/inf and hashing it on the way; nothing else holds a second copy.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ann_bench import __version__
from ann_bench.atomic import atomic_path, ensure_writable_dir
from ann_bench.distances import METRICS, canonical_metric, normalized
from ann_bench.errors import InputError
from ann_bench.data.arrays import (FLOAT32_MAX, MAGNITUDE_MIN, SQUARED_NORM_MAX, check_float32_source,  # noqa: F401
                                   check_magnitude, check_not_tiny, check_numeric, check_rows)
from ann_bench.data.groundtruth import DEFAULT_K, exact_knn

READ_CHUNK_ROWS = 1 << 16


def _h5py():
    import h5py

    return h5py


class VectorSet:
    """An ann-benchmarks HDF5 file, opened read-only. Use as a context manager or call :meth:`close`.

    Opening checks only what every later step needs (a readable HDF5 file with 2-D ``train`` and ``test`` of
    one dimension and a known metric); :func:`validate` checks everything else.
    """

    def __init__(self, path: str | os.PathLike, metric: str | None = None):
        self.path = Path(path).expanduser()
        if not self.path.exists():
            raise InputError(f"dataset {str(self.path)!r} does not exist; check the path or make one with "
                             "`ann-bench data synth`")
        if not self.path.is_file():
            raise InputError(f"dataset {str(self.path)!r} is not a file")
        if not os.access(self.path, os.R_OK):
            raise InputError(f"dataset {str(self.path)!r} is not readable; check its permissions")
        h5py = _h5py()
        if not h5py.is_hdf5(self.path):
            raise InputError(f"dataset {str(self.path)!r} is not an HDF5 file; ann-bench reads the "
                             "ann-benchmarks HDF5 layout (import other formats with `ann-bench data import`)")
        try:
            self.file = h5py.File(self.path, "r")
        except OSError as exc:
            raise InputError(f"cannot open dataset {str(self.path)!r}: {exc}") from None
        try:
            self._check_structure(metric)
        except BaseException:
            self.file.close()
            raise
        self._train: np.ndarray | None = None
        self._hash: str | None = None  # vectors_hash
        self._content_hash: str | None = None
        self._gt_checked = -1  # the largest sample size check_groundtruth has passed on this open file

    def _check_structure(self, metric: str | None) -> None:
        f = self.file
        for key in ("train", "test", "neighbors", "distances", "train_labels", "test_labels", "train_keys",
                    "test_keys"):
            if key in f:
                try:
                    f[key]
                except (KeyError, OSError, RuntimeError) as exc:  # a dangling external or soft link
                    raise InputError(f"{key!r} in {str(self.path)!r} cannot be opened ({exc}): a broken link to "
                                     "another file? Re-create the set, or copy the array into it") from None
        for key in ("train", "test"):
            if key not in f or not isinstance(f[key], _h5py().Dataset):
                raise InputError(f"dataset {str(self.path)!r} has no {key!r} array; an ann-benchmarks file "
                                 "holds 'train' and 'test' (n x d) arrays")
            if f[key].ndim != 2:
                raise InputError(f"{key!r} in {str(self.path)!r} has shape {f[key].shape}; expected 2-D (n, d)")
            if f[key].dtype.kind not in "fiu":
                raise InputError(f"{key!r} in {str(self.path)!r} has dtype {f[key].dtype}; expected numbers")
        if f["train"].shape[1] != f["test"].shape[1]:
            raise InputError(f"dimension mismatch in {str(self.path)!r}: train is {f['train'].shape[1]}-d, "
                             f"test is {f['test'].shape[1]}-d")
        if f["train"].shape[0] == 0 or f["test"].shape[0] == 0:
            raise InputError(f"{str(self.path)!r} has an empty train or test array "
                             f"(train {f['train'].shape}, test {f['test'].shape})")
        if f["train"].shape[1] == 0:
            raise InputError(f"{str(self.path)!r} holds 0-dimensional vectors (train {f['train'].shape}); there is "
                             "nothing to search: re-create the set from non-empty features")
        for split in ("train", "test"):
            key = f"{split}_keys"
            if key in f and (f[key].ndim != 1 or f[key].shape[0] != f[split].shape[0]):
                raise InputError(f"{key!r} in {str(self.path)!r} has shape {f[key].shape} for {f[split].shape[0]} "
                                 f"{split} vectors; one key per vector (re-create the set, or delete {key!r})")
        raw = metric if metric is not None else _attr_str(f.attrs.get("distance"))
        if raw is None:
            raise InputError(f"{str(self.path)!r} has no 'distance' attribute ({', '.join(METRICS)}); re-import it "
                             f"with `ann-bench data import {str(self.path)!r} -o OUT.hdf5 --metric M`, or set it "
                             "with h5py: f.attrs['distance'] = 'euclidean'")
        self.metric = canonical_metric(raw)
        dim_attr = f.attrs.get("dimension")
        if dim_attr is not None:
            try:
                dim_value = int(np.asarray(dim_attr).reshape(-1)[0])
            except (TypeError, ValueError, IndexError):
                dim_value = None
            if dim_value != f["train"].shape[1]:
                raise InputError(f"{str(self.path)!r}: attribute dimension={_attr_value(dim_attr)!r} but the vectors are "
                                 f"{f['train'].shape[1]}-d; fix the attribute (h5py: f.attrs['dimension'] = "
                                 f"{f['train'].shape[1]}) or re-import the set")

    # ---- facts ----------------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return _attr_str(self.file.attrs.get("name")) or self.path.stem

    @property
    def dim(self) -> int:
        return int(self.file["train"].shape[1])

    @property
    def n_train(self) -> int:
        return int(self.file["train"].shape[0])

    @property
    def n_test(self) -> int:
        return int(self.file["test"].shape[0])

    @property
    def train(self):
        """The train vectors as a lazy h5py dataset (n, d); :meth:`load_train` for an array."""
        return self.file["train"]

    def read(self, key: str, selection=Ellipsis) -> np.ndarray:
        """``self.file[key][selection]``, with an unreadable array (a corrupted compressed chunk, a dangling
        external link or virtual source) reported as one InputError naming the array."""
        try:
            return self.file[key][selection]
        except (OSError, KeyError, RuntimeError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise InputError(f"cannot read {key!r} of {str(self.path)!r}: {first[:160]} (a corrupted or "
                             "truncated file, or a broken external link?); re-create or re-fetch it") from None

    @property
    def test(self) -> np.ndarray:
        """The test vectors (nq, d) float32, C-contiguous."""
        return np.ascontiguousarray(self.read("test"), dtype=np.float32)

    @property
    def has_groundtruth(self) -> bool:
        return "neighbors" in self.file and "distances" in self.file

    @property
    def gt_depth(self) -> int:
        return int(self.file["neighbors"].shape[1]) if self.has_groundtruth and self.file["neighbors"].ndim == 2 else 0

    @property
    def neighbors(self) -> np.ndarray:
        """Exact neighbour ids (nq, depth) int64, nearest first."""
        return np.asarray(self.read("neighbors"), dtype=np.int64)

    @property
    def distances(self) -> np.ndarray:
        """Exact distances (nq, depth) float64 in the set's metric, nearest first."""
        return np.asarray(self.read("distances"), dtype=np.float64)

    def labels(self, split: str) -> np.ndarray | None:
        """Labels of ``split`` ("train" or "test") as an array, or None if the set has none."""
        key = f"{split}_labels"
        return self.read(key) if key in self.file else None

    def keys(self, split: str) -> np.ndarray | None:
        """Item keys of ``split`` ("train" or "test") as an object array of str, or None if the set has none."""
        key = f"{split}_keys"
        if key not in self.file:
            return None
        return self.file[key].asstr()[...].astype(object)

    @property
    def has_keys(self) -> bool:
        return "train_keys" in self.file

    @property
    def attribute_names(self) -> list[str]:
        """Names of the base items' attribute columns (``train_attributes``), sorted; [] without any."""
        return sorted(self.file[ATTRIBUTES]) if ATTRIBUTES in self.file else []

    def attribute(self, name: str) -> np.ndarray:
        """The base items' attribute ``name`` (n,); InputError naming the ones the set has."""
        if name not in self.attribute_names:
            have = ", ".join(self.attribute_names) or "none"
            raise InputError(f"this set has no item attribute {name!r} (it has: {have}); import attributes with "
                             "`ann-bench data import --attributes FILE`")
        return self.file[ATTRIBUTES][name][...]

    @property
    def has_labels(self) -> bool:
        return "train_labels" in self.file and "test_labels" in self.file

    @property
    def attrs(self) -> dict[str, Any]:
        return {k: _attr_value(v) for k, v in self.file.attrs.items()}

    # ---- data -----------------------------------------------------------------------------------------
    def load_train(self) -> np.ndarray:
        """The train vectors (n, d) float32, read once in chunks into one array, checked and hashed on the way.

        Raises InputError on NaN/inf, or on all-zero vectors under ``angular``.
        """
        if self._train is None:
            ds = self.file["train"]
            out = np.empty(ds.shape, dtype=np.float32)
            digest = self._hasher()
            peak = 0.0
            for start in range(0, ds.shape[0], READ_CHUNK_ROWS):
                stop = min(start + READ_CHUNK_ROWS, ds.shape[0])
                try:
                    if ds.dtype == np.float32:
                        ds.read_direct(out, np.s_[start:stop], np.s_[start:stop])
                    else:
                        raw = ds[start:stop]
                        check_float32_source("train", raw, start, f" of {str(self.path)!r}")
                        out[start:stop] = raw
                except (OSError, RuntimeError) as exc:
                    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                    raise InputError(f"cannot read train rows {start}-{stop - 1} of {str(self.path)!r}: "
                                     f"{first[:160]} (a corrupted or truncated file?); re-create or re-fetch it") from None
                chunk = out[start:stop]
                self._check_chunk("train", chunk, start)
                peak = max(peak, check_magnitude("train", chunk, start, f" of {str(self.path)!r}"))
                digest.update(memoryview(chunk).cast("B"))
            check_not_tiny(peak, f"train vectors of {str(self.path)!r}")
            self._train = out
            self._finish_hash(digest)
        return self._train

    def _check_chunk(self, key: str, chunk: np.ndarray, start: int) -> None:
        finite = np.isfinite(chunk).all(axis=1)
        if not finite.all():
            row = start + int(np.flatnonzero(~finite)[0])
            raise InputError(f"{key} vector {row} of {str(self.path)!r} holds NaN or inf; remove or fix it")
        if self.metric == "angular":
            zero = ~np.any(chunk != 0, axis=1)
            if zero.any():
                row = start + int(np.flatnonzero(zero)[0])
                raise InputError(f"{key} vector {row} of {str(self.path)!r} is all zeros, which has no angle "
                                 "under metric 'angular'; drop it or use 'euclidean'")

    def load_test(self) -> np.ndarray:
        """The test vectors, checked like :meth:`load_train`."""
        raw = self.read("test")
        check_float32_source("test", raw, 0, f" of {str(self.path)!r}")
        Q = np.ascontiguousarray(raw, dtype=np.float32)
        self._check_chunk("test", Q, 0)
        check_magnitude("test", Q, 0, f" of {str(self.path)!r}")
        return Q

    def _hasher(self):
        h = hashlib.sha256()
        h.update(json.dumps([self.metric, list(self.file["train"].shape)]).encode())
        return h

    def _finish_hash(self, digest) -> None:
        Q = self.test
        digest.update(memoryview(Q).cast("B"))
        self._hash = digest.hexdigest()[:16]

    def vectors_hash(self) -> str:
        """16 hex digits of sha256 over metric, shapes, train and test vectors (float32): what a worker or a
        Ray node's copy must hold to measure this set (the vectors only)."""
        if self._hash is None:
            if self._train is not None:
                digest = self._hasher()
                digest.update(memoryview(self._train).cast("B"))
            else:
                ds = self.file["train"]
                digest = self._hasher()
                for start in range(0, ds.shape[0], READ_CHUNK_ROWS):
                    chunk = np.ascontiguousarray(self.read("train", np.s_[start : start + READ_CHUNK_ROWS]),
                                                 dtype=np.float32)
                    digest.update(memoryview(chunk).cast("B"))
            self._finish_hash(digest)
        return self._hash

    def content_hash(self) -> str:
        """16 hex digits of sha256 over everything a stored figure depends on: the vectors (:meth:`vectors_hash`),
        the labels (label metrics), the item keys (``--exclude-self``, the keys a search returns) and the stored
        ground truth (recall). The results store's dataset identity and resume key.

        Two files with the same content have the same hash whatever their names; two sets with the same vectors
        and different labels do not (issue 31: a run into a store holding the other's rows would otherwise
        skip them and show the other's label figures)."""
        if self._content_hash is None:
            digest = hashlib.sha256(b"ann-bench dataset identity 2\0" + self.vectors_hash().encode())
            for key in ("train_labels", "test_labels", "train_keys", "test_keys", "neighbors", "distances"):
                if key not in self.file:
                    continue
                digest.update(f"\0{key}".encode())
                digest.update(_canonical_bytes(key, self.file[key]))
            for name in self.attribute_names:  # filters read them: sets without any keep their hash
                digest.update(f"\0{ATTRIBUTES}/{name}".encode())
                digest.update(_canonical_bytes(name, self.file[ATTRIBUTES][name]))
            self._content_hash = digest.hexdigest()[:16]
        return self._content_hash

    def groundtruth(self, k: int, progress: Callable[[int], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Exact (D, I) of depth k for the test vectors: the stored ones when deep enough, else computed."""
        if self.has_groundtruth and self.gt_depth >= k:
            return self.distances[:, :k], self.neighbors[:, :k]
        D, I = exact_knn(self.load_train(), self.load_test(), self.metric, k, progress=progress)
        return D.astype(np.float64), I

    def summary(self) -> dict[str, Any]:
        """The facts `ann-bench data info` shows."""
        return {
            "path": str(self.path),
            "name": self.name,
            "metric": self.metric,
            "dimension": self.dim,
            "train": self.n_train,
            "test": self.n_test,
            "train_dtype": str(self.file["train"].dtype),
            "groundtruth_depth": self.gt_depth,
            "labels": self.has_labels,
            "attributes": self.attribute_names,
            "keys": _keys_example(self.file),
            "n_classes": int(len(np.unique(self.labels("train")))) if self.has_labels else 0,
            "size_mb": round(self.path.stat().st_size / 1e6, 2),
            "attrs": {k: v for k, v in self.attrs.items() if k not in ("distance", "dimension")},
        }

    def close(self) -> None:
        self.file.close()

    def __enter__(self) -> VectorSet:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _canonical_bytes(key: str, ds) -> bytes:
    """An array of a set (labels, keys, ground truth) as bytes that depend on its values, not on how it was
    stored: numbers as int64 or float64 (little-endian), text (str, bytes, objects) as a JSON list of strings."""
    data = ds[...]
    if data.dtype.kind in "SUO":
        values = [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in data.reshape(-1)]
        return json.dumps([list(data.shape), values], ensure_ascii=False).encode()
    kind = "<f8" if data.dtype.kind == "f" else "<i8" if data.dtype.kind in "iub" else None
    if kind is None:
        return repr((data.dtype.str, data.shape)).encode() + data.tobytes()
    return repr(data.shape).encode() + np.ascontiguousarray(data, dtype=kind).tobytes()


def _keys_example(f) -> str:
    """'no', or the first train keys, for `data info`."""
    if "train_keys" not in f:
        return "no"
    ds = f["train_keys"]
    head = [str(k) for k in ds.asstr()[: min(3, ds.shape[0])]]
    shown = ", ".join(repr(k if len(k) <= 40 else k[:39] + "…") for k in head)
    more = ", …" if ds.shape[0] > len(head) else ""
    return f"yes ({shown}{more}){'' if 'test_keys' in f else '; test vectors have none'}"


def check_keys(keys, count: int, what: str, unique: bool = True) -> np.ndarray:
    """Item keys as an object array of str, checked to have ``count`` entries and (``unique``) no repeats;
    InputError otherwise."""
    arr = np.asarray(keys, dtype=object)
    if arr.ndim != 1:
        raise InputError(f"{what} keys must be 1-D (one str per vector), got shape {arr.shape}")
    if len(arr) != count:
        raise InputError(f"{len(arr)} {what} keys for {count} {what} vectors; one key per vector")
    out = np.empty(len(arr), dtype=object)
    for i, k in enumerate(arr):
        out[i] = k.decode("utf-8", "replace") if isinstance(k, bytes) else str(k)
    dup = first_duplicate(out) if unique else None
    if dup is not None:
        first, second = dup
        raise InputError(f"{what} key {out[second]!r} appears twice, at rows {first} and {second}; a key names one "
                         "item, so keys must be unique per split (train, test): fix the keys (or leave them out "
                         "for row numbers)")
    return out


def first_duplicate(values) -> tuple[int, int] | None:
    """(first row, second row) of the first value that repeats (in the order of the second occurrence), or None."""
    seen: dict = {}
    for i, value in enumerate(values):
        j = seen.setdefault(value, i)
        if j != i:
            return j, i
    return None


def write_keys(f, name: str, keys: np.ndarray) -> None:
    """Store keys (object array of str) as a UTF-8 string dataset of an open h5py file."""
    h5py = _h5py()
    f.create_dataset(name, data=keys, dtype=h5py.string_dtype("utf-8"))


# ---- labels -----------------------------------------------------------------------------------------------
MISSING_LABEL_STRINGS = ("", "nan")  # compared stripped and case-folded: what a missing value becomes as text


def check_labels_array(labels, count: int | None, what: str, *, names=None, row_name=None) -> np.ndarray:
    """Labels as ann-bench stores and compares them, or InputError in one line naming the first bad row.

    The one check of labels, wherever they enter (``data import``, ``embed``, ``data combine``) or are read
    back (``evaluate``, ``run``'s label metrics, ``data info``). Returns (count,) int64 for integer labels,
    float64 for real ones, else str with h5py's UTF-8 string dtype (bytes decoded as UTF-8), so a set stores
    and reads them one way. A missing label (NaN, None, an empty string or the text ``nan``) is refused: it
    would become a class of its own whose members all "match" each other. ``names``: the label names that
    integer codes index (a set's ``label_names`` attribute), checked alike. ``what``: the labels' source for
    the message; ``row_name(i)``: how to name row i there [``row i``]."""
    h5py = _h5py()
    arr = np.asarray(labels)
    if arr.ndim != 1 or (count is not None and len(arr) != count):
        raise InputError(f"{what} has shape {arr.shape}; expected ({count if count is not None else 'n'},): one "
                         "label per vector")
    kind = arr.dtype.kind
    row_name = row_name or (lambda i: f"row {i}")
    fix = ("every vector needs one (missing labels would form a class of their own, all matching each other): "
           "drop the rows without a label, or give them one")
    if kind in "iub":
        codes = arr.astype(np.int64)
        if names is not None:
            bad = [i for i, name in enumerate(names) if is_missing_label(name)]  # codes index names
            if bad:
                hit = np.flatnonzero(np.isin(codes, bad))
                if hit.size:  # codes outside the names are left to the caller: they name no class
                    row = int(hit[0])
                    raise InputError(f"{what}: {row_name(row)} has no label (its label name is "
                                     f"{names[codes[row]]!r}); {fix}")
        return codes
    if kind == "f":
        bad = np.flatnonzero(~np.isfinite(arr))
        if bad.size:
            row = int(bad[0])
            raise InputError(f"{what}: {row_name(row)} has no label ({arr[row].item()!r}); {fix}")
        return arr.astype(np.float64)
    if kind not in "USO":
        raise InputError(f"{what} has dtype {arr.dtype}; labels are integers, real numbers or strings")
    out = np.empty(len(arr), dtype=h5py.string_dtype("utf-8"))
    numbers = kind == "O"  # an object array of Python numbers (a table's column) stays numbers
    for i, value in enumerate(arr):
        if isinstance(value, np.generic):
            value = value.item()
        numbers = numbers and isinstance(value, (int, float)) and not isinstance(value, bool)
        if isinstance(value, bytes):
            try:
                value = value.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise InputError(f"{what}: the label of {row_name(i)} is not UTF-8 ({exc.reason} at byte "
                                 f"{exc.start}); store labels as UTF-8 text") from None
        if is_missing_label(value):
            raise InputError(f"{what}: {row_name(i)} has no label ({value!r}); {fix}")
        out[i] = str(value)
    if numbers and len(arr):
        values = [v.item() if isinstance(v, np.generic) else v for v in arr]
        return np.asarray(values, dtype=np.int64 if all(isinstance(v, int) for v in values) else np.float64)
    return out


def is_missing_label(value) -> bool:
    """True for what stands for a missing label: None, a float NaN, an empty string or the text 'nan'."""
    if value is None:
        return True
    if isinstance(value, (float, np.floating)):
        return not np.isfinite(value)
    if isinstance(value, (bytes, np.bytes_)):
        value = bytes(value).decode("utf-8", "replace")
    return isinstance(value, str) and value.strip().casefold() in MISSING_LABEL_STRINGS


def label_names_of(attrs: dict[str, Any]) -> list[str] | None:
    """The ``label_names`` attribute (a JSON list of the names that integer labels index), or None."""
    raw = attrs.get("label_names")
    if raw is None:
        return None
    try:
        names = json.loads(raw) if isinstance(raw, str) else list(raw)
    except (TypeError, ValueError):
        return None
    return [str(n) for n in names] if isinstance(names, list) else None


def read_checked_labels(vs: VectorSet, split: str) -> np.ndarray | None:
    """The labels of ``split`` of ``vs`` through :func:`check_labels_array` (None when it has none)."""
    key = f"{split}_labels"
    if key not in vs.file:
        return None
    n = vs.n_train if split == "train" else vs.n_test
    return check_labels_array(vs.read(key), n, f"{key!r} of {str(vs.path)!r}", names=label_names_of(vs.attrs))


def _attr_str(value) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.ndarray) and value.shape == ():
        value = value.item()
    return str(value)


def _attr_value(value):
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


# ---- validation -------------------------------------------------------------------------------------------
@dataclass
class Verdict:
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def validate(vs: VectorSet, check_groundtruth_sample: int = 20) -> Verdict:
    """Everything that can be wrong with a VectorSet, as problems (it cannot be benchmarked) and warnings.

    Reads the train vectors in chunks (NaN/inf, zero vectors under angular); checks ground-truth ids (range,
    duplicates), the shape of distances and labels, attrs; and re-computes the exact neighbours of a sample of
    ``check_groundtruth_sample`` queries to verify the stored distances.
    """
    v = Verdict()
    f = vs.file
    try:
        X = vs.load_train()
        vs.load_test()
    except InputError as exc:
        v.problems.append(str(exc))
        return v
    dim_attr = f.attrs.get("dimension")  # one that contradicts the vectors is refused when the file is opened
    if dim_attr is None:
        v.warnings.append("no 'dimension' attribute (ann-benchmarks infers it from train)")
    if f["train"].dtype != np.float32:
        v.warnings.append(f"train dtype is {f['train'].dtype}; it is read as float32")
    if not vs.has_groundtruth:
        v.warnings.append("no ground truth ('neighbors'/'distances'): `ann-bench run` computes it each time")
    else:
        problem = groundtruth_problem(vs) or groundtruth_sample_problem(vs, X, check_groundtruth_sample)
        if problem:
            v.problems.append(problem)
    for split, n in (("train", vs.n_train), ("test", vs.n_test)):
        key = f"{split}_labels"
        if key in f and (f[key].ndim != 1 or f[key].shape[0] != n):
            v.problems.append(f"'{key}' has shape {f[key].shape}; expected ({n},)")
        elif key in f:
            try:
                read_checked_labels(vs, split)
            except InputError as exc:
                v.problems.append(str(exc))
        keys = vs.keys(split)
        dup = first_duplicate(keys) if keys is not None else None
        if dup is not None:
            v.problems.append(f"'{split}_keys' holds {keys[dup[1]]!r} twice, at rows {dup[0]} and {dup[1]}; keys "
                              "must be unique per split (`search --exclude-self` and the results name items by "
                              "them): re-create the set with unique keys")
    if ("train_labels" in f) != ("test_labels" in f):
        v.warnings.append("labels for only one of train/test; label metrics need both")
    return v


def groundtruth_problem(vs: VectorSet) -> str | None:
    """What is wrong with the stored ground truth's shape, ids and order, or None. Cheap: no distances."""
    f = vs.file
    N, Dd = f["neighbors"], f["distances"]
    fix = "the ground truth is invalid: recompute it, or drop 'neighbors'/'distances' so `ann-bench run` does"
    if N.ndim != 2 or N.shape[0] != vs.n_test:
        return f"'neighbors' has shape {N.shape}; expected ({vs.n_test}, depth); {fix}"
    if Dd.shape != N.shape:
        return f"'distances' has shape {Dd.shape} but 'neighbors' has {N.shape}; {fix}"
    if N.dtype.kind not in "iuf" or Dd.dtype.kind not in "iuf":
        return f"'neighbors' ({N.dtype}) and 'distances' ({Dd.dtype}) must be numbers; {fix}"
    if N.dtype.kind == "f":  # ids saved as floats: read as integers when every one is integral, else refused
        raw = N[...]
        bad = ~np.isfinite(raw) | (raw != np.round(raw))
        if bad.any():
            q, j = np.argwhere(bad)[0]
            return (f"ground-truth id {raw[q, j].item()!r} of query {int(q)} is not an integer ('neighbors' is stored as "
                    f"{N.dtype}); {fix}")
    I = vs.neighbors
    depth = min(vs.n_train, N.shape[1])  # beyond n, -1 padding is allowed
    bad = (I[:, :depth] < 0) | (I[:, :depth] >= vs.n_train)
    if bad.any() or (I >= vs.n_train).any():
        q, j = np.argwhere(bad)[0] if bad.any() else np.argwhere(I >= vs.n_train)[0]
        return f"ground-truth id {int(I[q, j])} of query {int(q)} is out of range [0, {vs.n_train}); {fix}"
    s = np.sort(I[:, :depth], axis=1)
    dup = (s[:, 1:] == s[:, :-1]).any(axis=1)
    if dup.any():
        return f"ground truth of query {int(np.flatnonzero(dup)[0])} lists an id twice; {fix}"
    D = vs.distances[:, :depth]
    finite = np.isfinite(D)
    if not finite.all():
        q, j = np.argwhere(~finite)[0]
        return f"ground-truth distance {D[q, j].item()!r} of query {int(q)}, neighbour {int(j)} is not a finite number; {fix}"
    if not np.all(np.diff(D, axis=1) >= -1e-5 * np.abs(D[:, 1:])):
        return f"ground-truth distances are not sorted nearest first; {fix}"
    return None


def check_groundtruth(vs: VectorSet, X: np.ndarray | None = None, sample: int = 0) -> None:
    """Raise InputError if the stored ground truth is malformed (see :func:`groundtruth_problem`) or, with the
    train vectors ``X`` and ``sample`` > 0, disagrees with the vectors on a sample of queries
    (see :func:`groundtruth_sample_problem`)."""
    sample = sample if X is not None else 0
    if not vs.has_groundtruth or vs._gt_checked >= sample:  # the CLI and run_sweep both ask: check once
        return
    problem = groundtruth_problem(vs)
    if problem is None and sample > 0:
        problem = groundtruth_sample_problem(vs, X, sample)
    if problem:
        raise InputError(f"{str(vs.path)!r}: {problem}")
    vs._gt_checked = sample


GT_SAMPLE = 300  # queries whose stored ground truth `run` re-computes exactly before any measurement
_EPS32 = float(np.finfo(np.float32).eps)


def distance_tolerance(metric: str, Q: np.ndarray, X: np.ndarray, I: np.ndarray, D: np.ndarray) -> np.ndarray:
    """How far a float32 computation (faiss, numpy in float32) of the exact distances D (nq, k) between the
    queries Q (nq, d) and the rows I (nq, k) of X may stray from their float64 values: rounding only.

    Scale-free: it is a multiple of float32's epsilon times the magnitudes the computation went through
    (the squared norms for euclidean's ||q||^2 + ||x||^2 - 2 q.x, the norms' product for a dot product),
    so multiplying every vector by any factor scales it with the distances."""
    d = Q.shape[1]
    nq = np.linalg.norm(np.asarray(Q, dtype=np.float64), axis=1)[:, None]
    nx = np.linalg.norm(np.asarray(X[np.maximum(I, 0)], dtype=np.float64), axis=2) if I.size else np.zeros(I.shape)
    slack = 4 * d * _EPS32
    if metric == "euclidean":
        # An error e2 on the squared distance moves the distance by at most sqrt(e2), and by e2 / (2 D).
        e2 = slack * (nq ** 2 + nx ** 2)
        return 1e-5 * np.abs(D) + np.minimum(np.sqrt(e2), e2 / np.maximum(2 * np.abs(D), 1e-300))
    if metric == "angular":
        return 1e-5 * np.abs(D) + slack
    return 1e-5 * np.abs(D) + slack * nq * nx


def groundtruth_sample_problem(vs: VectorSet, X: np.ndarray, sample: int = GT_SAMPLE, seed: int = 0) -> str | None:
    """Re-compute, for ``sample`` random queries, the exact distances of the stored neighbour ids (float64) and
    the exact nearest neighbours; what disagrees with the stored ground truth, or None.

    Three checks, each within :func:`distance_tolerance` (float32 rounding, scale-free): the stored distances
    equal the stored ids' exact distances (catches distances of another metric, halved, or of other vectors);
    the stored ids are in distance order (catches ids shuffled within a row); and the i-th stored neighbour is
    as near as the true i-th (catches approximate or stale ground truth). Cost: ``sample`` exact searches."""
    from ann_bench.distances import distances_to

    if sample <= 0 or not vs.has_groundtruth:
        return None
    fix = ("recompute it (drop 'neighbors'/'distances' and `ann-bench run` computes it, or re-import the set "
           "with `ann-bench data import`)")
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(vs.n_test, size=min(sample, vs.n_test), replace=False))
    depth = min(vs.gt_depth, vs.n_train)
    Q = vs.test[rows]
    I = np.asarray(vs.file["neighbors"][...][rows, :depth], dtype=np.int64)
    D = vs.distances[rows, :depth]
    E = distances_to(vs.metric, Q, X, I)
    tol = distance_tolerance(vs.metric, Q, X, I, E)
    off = np.abs(D - E) > tol
    if off.any():
        q, j = np.argwhere(off)[0]
        return (f"stored ground-truth distances disagree with the vectors: query {int(rows[q])}, neighbour {int(j)} "
                f"(id {int(I[q, j])}) is stored at distance {D[q, j]:.6g} but is at {E[q, j]:.6g} in metric "
                f"{vs.metric!r} (a wrong metric, scaled distances, or other vectors?); {fix}")
    unsorted = E[:, 1:] < E[:, :-1] - tol[:, 1:] - tol[:, :-1]
    if unsorted.any():
        q, j = np.argwhere(unsorted)[0]
        return (f"stored ground-truth ids of query {int(rows[q])} are not in distance order (neighbour {int(j) + 1} "
                f"is nearer than neighbour {int(j)}: ids shuffled within a row?); {fix}")
    _, T_ids = exact_knn(X, Q, vs.metric, depth)
    T = np.sort(distances_to(vs.metric, Q, X, T_ids), axis=1)
    far = E > T + 2 * tol
    if far.any():
        q, j = np.argwhere(far)[0]
        return (f"stored ground truth of query {int(rows[q])} is not exact: its neighbour {int(j)} is at "
                f"{E[q, j]:.6g} but the true neighbour {int(j)} is at {T[q, j]:.6g} (approximate or stale "
                f"ground truth?); {fix}")
    return None


# ---- writing ----------------------------------------------------------------------------------------------
def write_vectorset(
    path: str | os.PathLike,
    train,
    test: np.ndarray,
    metric: str,
    *,
    neighbors: np.ndarray | None = None,
    distances: np.ndarray | None = None,
    train_labels: np.ndarray | None = None,
    test_labels: np.ndarray | None = None,
    train_keys=None,
    test_keys=None,
    attrs: dict[str, Any] | None = None,
    k: int = DEFAULT_K,
    progress: Callable[[int], None] | None = None,
    train_attributes: dict[str, np.ndarray] | None = None,
) -> Path:
    """Write a VectorSet atomically (temporary file, then rename) and return its path.

    train: (n, d) array, or any array-like that slices rows (a memmap of a file larger than memory): it is
    copied in chunks, checked for NaN/inf on the way. test: (nq, d). Both are stored as float32. Ground truth of
    depth ``min(k, n)`` is computed with :func:`ann_bench.data.groundtruth.exact_knn` (over the written train in
    chunks when train is not an in-memory array) unless ``neighbors``/``distances`` (nq, depth) are given.
    ``train_keys``/``test_keys``: optional item keys (one str per vector), stored as ``train_keys``/``test_keys``.
    ``train_attributes``: optional numeric columns of the base items ({name: (n,)}), what `run --filter
    "tag in 3,7"` / `"price<20"` filter on; stored in the group ``train_attributes`` (see
    :func:`check_attributes`).
    """
    metric = canonical_metric(metric)
    check_depth(k)
    check_float32_source("test", test, 0)
    test = np.ascontiguousarray(test, dtype=np.float32)
    in_memory = isinstance(train, np.ndarray) and not isinstance(train, np.memmap)
    if in_memory:
        check_float32_source("train", train, 0)  # before the conversion: complex or 1e39 must not pass silently
        train = np.ascontiguousarray(train, dtype=np.float32)
    if len(train.shape) != 2 or test.ndim != 2 or train.shape[1] != test.shape[1]:
        raise InputError(f"train {tuple(train.shape)} and test {test.shape} must be 2-D with the same dimension")
    n, d = (int(x) for x in train.shape)
    if n == 0 or len(test) == 0:
        raise InputError(f"train ({n} rows) and test ({len(test)} rows) must not be empty")
    if d == 0:
        raise InputError(f"the vectors have dimension 0 (train {tuple(train.shape)}); nothing can be searched: "
                         "check the input (an empty feature column? a model that returns nothing?)")
    check_rows("test", test, 0, metric)
    train_keys = check_keys(train_keys, n, "train") if train_keys is not None else None
    train_attributes = check_attributes(train_attributes, n) if train_attributes else None
    test_keys = check_keys(test_keys, len(test), "test") if test_keys is not None else None
    h5py = _h5py()
    with atomic_path(path, ".hdf5") as tmp:
        with h5py.File(tmp, "w") as f:
            f.attrs["distance"] = metric
            f.attrs["dimension"] = d
            f.attrs["point_type"] = "float"
            f.attrs["type"] = "dense"
            f.attrs["ann_bench_version"] = __version__
            f.attrs["created"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
            for key, value in (attrs or {}).items():
                f.attrs[key] = value if isinstance(value, (int, float, str, np.number)) else json.dumps(value)
            ds = f.create_dataset("train", shape=(n, d), dtype=np.float32)
            peak = float(np.max(np.abs(test))) if test.size else 0.0
            for start in range(0, n, READ_CHUNK_ROWS):
                raw = train[start : start + READ_CHUNK_ROWS]
                check_float32_source("train", raw, start)
                block = np.ascontiguousarray(raw, dtype=np.float32)
                check_rows("train", block, start, metric)
                peak = max(peak, float(np.max(np.abs(block))) if block.size else 0.0)
                ds[start : start + len(block)] = block
            check_not_tiny(peak, "the vectors")
            f.create_dataset("test", data=test)
            if neighbors is None:
                distances, neighbors = exact_knn(train if in_memory else ds, test, metric, min(k, n),
                                                 progress=progress)
            f.create_dataset("neighbors", data=np.asarray(neighbors, dtype=np.int32 if n < 2**31 else np.int64))
            f.create_dataset("distances", data=np.asarray(distances, dtype=np.float32))
            if train_labels is not None:
                f.create_dataset("train_labels", data=np.asarray(train_labels))
            if test_labels is not None:
                f.create_dataset("test_labels", data=np.asarray(test_labels))
            if train_keys is not None:
                write_keys(f, "train_keys", train_keys)
            if test_keys is not None:
                write_keys(f, "test_keys", test_keys)
            if train_attributes:
                group = f.create_group(ATTRIBUTES)
                for name, column in train_attributes.items():
                    group.create_dataset(name, data=column)
    return Path(path)


ATTRIBUTES = "train_attributes"  # not "attrs": h5py's .attrs is the file's own metadata, a different thing
_ATTRIBUTE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


def check_attributes(columns: dict[str, Any], n: int) -> dict[str, np.ndarray]:
    """Item attributes as {name: (n,) int64 or float64}; InputError naming the column and what is wrong: a name
    that is not an identifier, a length other than n, text or other non-numbers, NaN or inf."""
    out = {}
    for name, values in columns.items():
        if str(name) in ("label", "selectivity"):
            raise InputError(f"attribute name {name!r} is reserved (--filter {name}... means the set's labels or a "
                             "random subset): rename the column")
        if not _ATTRIBUTE_NAME.match(str(name)):
            raise InputError(f"attribute name {str(name)[:70]!r} is not an identifier (letters, digits, _; at most "
                             "64): filters name it, e.g. --filter \"price<20\"")
        arr = np.asarray(values)
        if arr.ndim != 1 or len(arr) != n:
            raise InputError(f"attribute {name!r} has shape {arr.shape}; expected one value per base vector ({n},)")
        if arr.dtype.kind == "b":
            arr = arr.astype(np.int64)
        if arr.dtype.kind not in "iuf":
            raise InputError(f"attribute {name!r} holds {arr.dtype} values; attributes are numbers (integer tags "
                             "or a numeric column): encode text as integer codes")
        if arr.dtype.kind == "f":
            bad = np.flatnonzero(~np.isfinite(arr))
            if bad.size:
                raise InputError(f"attribute {name!r} of item {int(bad[0])} is {arr[bad[0]]}; attributes must be "
                                 "finite numbers")
            out[name] = arr.astype(np.float64)
        else:
            if arr.dtype.kind == "u" and arr.size and arr.max() > np.iinfo(np.int64).max:
                raise InputError(f"attribute {name!r} holds integers beyond int64")
            out[name] = arr.astype(np.int64)
    return out


def check_depth(k: int) -> None:
    """InputError unless ``k`` (a ground-truth depth) is a positive integer."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise InputError(f"-k (the ground-truth depth) must be an integer >= 1, got {k!r}; the default is "
                         f"{DEFAULT_K}")


# ---- the synthetic generator ------------------------------------------------------------------------------
@dataclass(frozen=True)
class SynthSpec:
    """A Gaussian mixture on low-dimensional random subspaces, the shape of real embedding clouds.

    Each cluster c has a centre mu_c ~ N(0, center_scale^2 I_d), a random orthonormal basis U_c (d x r), and
    decaying axis scales s_j = spread / sqrt(j); a point is mu_c + U_c (z * s) + noise * N(0, I_d), with
    z ~ N(0, I_r). Cluster weights are Dirichlet(2), so cluster sizes are uneven. Labels are cluster ids.
    """

    n: int = 100_000
    dim: int = 128
    queries: int = 10_000
    clusters: int = 100
    metric: str = "euclidean"
    seed: int = 42
    subspace_dim: int | None = None  # default: max(2, dim // 4)
    center_scale: float = 1.0
    spread: float = 1.5
    noise: float = 0.3

    def resolved_subspace(self) -> int:
        r = self.subspace_dim if self.subspace_dim is not None else max(2, self.dim // 4)
        return min(r, self.dim)

    def name(self) -> str:
        return f"synth-{self.n}x{self.dim}-{self.metric}-c{self.clusters}-s{self.seed}"


def check_synth_spec(spec: SynthSpec) -> None:
    for key in ("n", "dim", "queries", "clusters"):
        if getattr(spec, key) < 1:
            raise InputError(f"--{key} must be >= 1, got {getattr(spec, key)}")
    if spec.subspace_dim is not None and not 1 <= spec.subspace_dim <= spec.dim:
        raise InputError(f"--subspace-dim must be in [1, dim={spec.dim}], got {spec.subspace_dim}")
    if spec.clusters > spec.n:
        raise InputError(f"--clusters={spec.clusters} exceeds --n={spec.n}; use fewer clusters")
    canonical_metric(spec.metric)
    # Train and test are generated in memory (float32), then written with ground truth: say so before trying.
    need = (spec.n + spec.queries) * spec.dim * 4 + spec.clusters * spec.dim * 4
    have = _available_memory()
    if have is not None and need > have:
        raise InputError(f"--n {spec.n:,} x --dim {spec.dim} needs {need / 2**30:,.1f} GiB of memory for the "
                         f"vectors alone; this machine has {have / 2**30:,.1f} GiB available. Use a smaller --n "
                         "or --dim")


def _available_memory() -> int | None:
    """Bytes of memory available to this process now (psutil), or None when unknown."""
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except Exception:  # pragma: no cover - psutil is a dependency; be safe on exotic platforms
        return None


def synth_arrays(spec: SynthSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(train (n, d) float32, test (queries, d) float32, train_labels (n,), test_labels (queries,)) for spec.

    Deterministic for ``spec.seed``. Rows are generated in chunks straight into the output arrays.
    """
    check_synth_spec(spec)
    metric = canonical_metric(spec.metric)
    d, r, C = spec.dim, spec.resolved_subspace(), spec.clusters
    root = np.random.SeedSequence(spec.seed)
    main_seed, cluster_seed = root.spawn(2)
    rng = np.random.default_rng(main_seed)
    centers = (rng.standard_normal((C, d)) * spec.center_scale).astype(np.float32)
    weights = rng.dirichlet(np.full(C, 2.0))
    axis_scale = (spec.spread / np.sqrt(np.arange(1, r + 1))).astype(np.float32)
    cluster_seeds = cluster_seed.spawn(C)
    cache_budget = 256 << 20
    cache: dict[int, np.ndarray] = {}

    def basis(c: int) -> np.ndarray:
        if c in cache:
            return cache[c]
        g = np.random.default_rng(cluster_seeds[c]).standard_normal((d, r))
        q, _ = np.linalg.qr(g)
        U = (q[:, :r] * axis_scale).astype(np.float32)  # d x r, columns scaled
        if (len(cache) + 1) * U.nbytes <= cache_budget:
            cache[c] = U
        return U

    def draw(count: int) -> tuple[np.ndarray, np.ndarray]:
        X = np.empty((count, d), dtype=np.float32)
        labels = rng.choice(C, size=count, p=weights).astype(np.int32)
        for start in range(0, count, READ_CHUNK_ROWS):
            stop = min(start + READ_CHUNK_ROWS, count)
            lab = labels[start:stop]
            block = X[start:stop]
            block[:] = rng.standard_normal((stop - start, d), dtype=np.float32) * spec.noise
            block += centers[lab]
            z = rng.standard_normal((stop - start, r), dtype=np.float32)
            order = np.argsort(lab, kind="stable")
            bounds = np.flatnonzero(np.diff(lab[order])) + 1
            for rows in np.split(order, bounds):
                if len(rows):
                    block[rows] += z[rows] @ basis(int(lab[rows[0]])).T
            if metric == "angular":
                block[:] = normalized(block)
        return X, labels

    train, train_labels = draw(spec.n)
    test, test_labels = draw(spec.queries)
    return train, test, train_labels, test_labels


def synth(path: str | os.PathLike, spec: SynthSpec, *, k: int = DEFAULT_K,
          progress: Callable[[int], None] | None = None) -> Path:
    """Generate ``spec`` and write it, with exact ground truth and labels, as a VectorSet at ``path``."""
    check_synth_spec(spec)
    ensure_writable_dir(path)  # fail before the work, not after it
    train, test, train_labels, test_labels = synth_arrays(spec)
    attrs = {
        "name": spec.name(),
        "source": "ann-bench data synth",
        "generator": json.dumps({**spec.__dict__, "subspace_dim": spec.resolved_subspace()}),
    }
    return write_vectorset(path, train, test, spec.metric, train_labels=train_labels, test_labels=test_labels,
                           attrs=attrs, k=k, progress=progress)


DEFAULT_SPEC = SynthSpec(n=50_000, dim=64, queries=1_000, clusters=50, metric="euclidean", seed=42)


def default_dataset(progress: Callable[[int], None] | None = None) -> Path:
    """The embedded default set, generated once into the cache directory (no download)."""
    from ann_bench.config import cache_dir

    path = cache_dir() / "datasets" / f"{DEFAULT_SPEC.name()}.hdf5"
    if not path.exists():
        synth(path, DEFAULT_SPEC, progress=progress)
    return path
