"""`ann-bench data import`: other tools' vector files -> a validated VectorSet.

Reads TEXMEX, big-ann-benchmarks, .npy, IDX and ann-benchmarks HDF5 (see :mod:`ann_bench.data.formats`) through
memory maps and copies them into the HDF5 file in chunks, so a base file larger than half the memory still
imports. Parquet tables (:mod:`ann_bench.data.parquet`, read whole) may carry their labels and keys in columns. Queries come from their own file or from a seeded split of the base. Ground truth is computed
exactly unless supplied; supplied ground truth is verified on a sample of queries first.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ann_bench.data.arrays import check_numeric
from ann_bench.data.vectorset import (VectorSet, check_depth, check_float32_source, check_labels_array,
                                      read_checked_labels, validate, write_vectorset)
from ann_bench.distances import canonical_metric, distances_to
from ann_bench.errors import InputError
from ann_bench.data.formats import file_format, read_bin_groundtruth, read_idx, read_vectors
from ann_bench.data.groundtruth import DEFAULT_K, exact_knn
from ann_bench.bench.metrics import distance_recall


class RowSubset:
    """Rows ``rows`` (sorted) of an array-like, itself sliceable like an array: the train part of a split
    without copying the base file."""

    def __init__(self, base, rows: np.ndarray):
        self.base, self.rows = base, np.asarray(rows)
        self.shape = (len(self.rows), base.shape[1])

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key):
        return self.base[self.rows[key]]


def read_labels(path: str | os.PathLike, n: int, what: str) -> np.ndarray:
    """Labels for n vectors from a .npy (n,), an IDX file, or a text file (one label a line, UTF-8: integers when
    every line is one, else strings), checked by :func:`~ann_bench.data.vectorset.check_labels_array` (a
    missing label, NaN or an empty line, is refused naming its row)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise InputError(f"{what} file {str(path)!r} does not exist")
    row_name = None
    if path.suffix == ".npy":
        try:
            labels = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise InputError(f"cannot read {what} file {str(path)!r}: {str(exc) or type(exc).__name__} (object "
                             "arrays are refused; save numbers or strings)") from None
        if not isinstance(labels, np.ndarray):
            raise InputError(f"{what} file {str(path)!r} is an .npz archive; save one array with np.save")
    elif "idx" in path.name.lower():
        labels = read_idx(path)
    else:
        labels = _text_labels(path, what)
        row_name = lambda i: f"line {i + 1}"  # noqa: E731
    if labels.ndim != 1:
        raise InputError(f"{what} file {str(path)!r} holds an array of shape {labels.shape}; expected (n,)")
    if len(labels) != n:
        raise InputError(f"{what} file {str(path)!r} has {len(labels)} labels for {n} vectors")
    return check_labels_array(labels, n, f"{what} file {str(path)!r}", row_name=row_name)


def _text_lines(path: Path, what: str) -> list[str]:
    """The lines of a UTF-8 text file, one item a line (a trailing newline ends the last; CRLF accepted)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(f"{what} file {str(path)!r} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line.rstrip("\r") for line in lines]


def _text_labels(path: Path, what: str) -> np.ndarray:
    """One label a line: int64 when every line is an integer, else str."""
    lines = _text_lines(path, what)
    if lines and all(re.fullmatch(r"\s*[+-]?\d+\s*", line) for line in lines):
        values = [int(line) for line in lines]
        if all(-2**63 <= v < 2**63 for v in values):
            return np.asarray(values, dtype=np.int64)
    out = np.empty(len(lines), dtype=object)
    out[:] = lines
    return out


def read_keys(path: str | os.PathLike, n: int, what: str, unique: bool = True) -> np.ndarray:
    """Item keys for n vectors from a text file (one key a line, UTF-8) or a 1-D .npy of strings or numbers.
    ``unique=False``: keys that only label queries (``search --query-keys``) may repeat."""
    from ann_bench.data.vectorset import check_keys

    path = Path(path).expanduser()
    if not path.is_file():
        raise InputError(f"{what} file {str(path)!r} does not exist")
    if path.suffix == ".npy":
        try:
            keys = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise InputError(f"cannot read {what} file {str(path)!r}: {exc}") from None
        if keys.ndim != 1:
            raise InputError(f"{what} file {str(path)!r} holds an array of shape {keys.shape}; expected (n,)")
    else:
        keys = _text_lines(path, what)
    if len(keys) != n:
        raise InputError(f"{what} file {str(path)!r} has {len(keys)} keys for {n} vectors; one key per vector")
    return check_keys(keys, n, what, unique=unique)


def row_keys(rows) -> np.ndarray:
    """Row numbers as keys (object array of str)."""
    out = np.empty(len(rows), dtype=object)
    out[:] = [str(int(r)) for r in rows]
    return out


def verify_groundtruth(X, Q: np.ndarray, I: np.ndarray, metric: str, sample: int = 20, seed: int = 0) -> None:
    """Recompute the exact neighbours of ``sample`` queries; InputError if the supplied ids I (nq, k) miss them."""
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(len(Q), size=min(sample, len(Q)), replace=False))
    k = I.shape[1]
    D_true, _ = exact_knn(X, Q[rows], metric, k, base_chunk=1 << 18)
    D_given = distances_to(metric, Q[rows], X, I[rows])
    recall = distance_recall(D_given, D_true, k)
    if recall.min() < 1.0:
        q = int(rows[int(np.argmin(recall))])
        raise InputError(f"the supplied ground truth is not exact for query {q} (recall {recall.min():.3f} against "
                         f"neighbours recomputed in metric {metric!r}); wrong metric or wrong file? Omit "
                         "--groundtruth to compute it")


def import_dataset(
    base: str | os.PathLike,
    out: str | os.PathLike,
    metric: str,
    *,
    queries: str | os.PathLike | None = None,
    groundtruth: str | os.PathLike | None = None,
    labels: str | os.PathLike | None = None,
    query_labels: str | os.PathLike | None = None,
    keys: str | os.PathLike | None = None,
    query_keys: str | os.PathLike | None = None,
    attributes: str | os.PathLike | None = None,
    test_size: int = 10_000,
    seed: int = 0,
    k: int = DEFAULT_K,
    progress: Callable[[int], None] | None = None,
    vector_column: str | None = None,
    label_column: str | None = None,
    key_column: str | None = None,
) -> Path:
    """Import ``base`` (and optional queries, ground truth, labels, keys) into a VectorSet at ``out``.

    Item keys: ``keys`` / ``query_keys`` files (one a line, or a 1-D .npy), else each vector's row number in its
    file (0-based), so a split keeps naming the base rows it took. A .parquet base or queries file may hold its
    labels and keys in columns (``label_column``, default ``label``; ``key_column``, default ``id``) and its
    vectors in ``vector_column`` (see :mod:`ann_bench.data.parquet`).
    """
    metric = canonical_metric(metric)
    check_depth(k)
    if query_keys is not None and queries is None:
        raise InputError("--query-keys needs --queries (a split of the base takes its keys from --keys)")
    fmt = file_format(base)
    columns = {"vector_column": vector_column, "label_column": label_column, "key_column": key_column}
    given = [f"--{name.replace('_', '-')}" for name, value in columns.items() if value is not None]
    if given and fmt != ".parquet" and (queries is None or file_format(queries) != ".parquet"):
        raise InputError(f"{'/'.join(given)} name(s) columns of a .parquet file; {str(base)!r} is not one "
                         "(labels and keys of other files: --labels, --keys)")
    if fmt == ".hdf5":
        if keys is not None or query_keys is not None:
            raise InputError("--keys/--query-keys apply to vector files; an HDF5 set keeps its own keys")
        return _reimport_hdf5(base, out, metric, k, progress)
    X, file_labels, file_keys = _read_table_or_vectors(base, columns)
    check_numeric("base", X, f" in {str(base)!r}")  # before any slice is converted: complex, strings
    n, d = X.shape
    base_labels = _one_of(labels, file_labels, n, "--labels", base)
    base_keys = _one_of(keys, file_keys, n, "--keys", base)
    base_keys = base_keys if base_keys is not None else row_keys(range(n))
    base_attributes = read_attributes(attributes, n) if attributes is not None else None
    train_attributes = base_attributes
    if queries is not None:
        Q_raw, q_file_labels, q_file_keys = _read_table_or_vectors(queries, columns)
        check_float32_source("query", Q_raw, 0, f" in {str(queries)!r}")
        Q = np.ascontiguousarray(Q_raw, dtype=np.float32)
        if Q.shape[1] != d:
            raise InputError(f"queries {str(queries)!r} are {Q.shape[1]}-d but the base is {d}-d")
        train, test_labels = X, _one_of(query_labels, q_file_labels, len(Q), "--query-labels", queries)
        _check_label_kinds(base_labels, test_labels)
        train_labels = base_labels
        train_keys = base_keys
        test_keys = _one_of(query_keys, q_file_keys, len(Q), "--query-keys", queries)
        test_keys = test_keys if test_keys is not None else row_keys(range(len(Q)))
    else:
        if not 0 < test_size < n:
            raise InputError(f"--test-size must be in [1, {n - 1}] for {n} base vectors, got {test_size}")
        rng = np.random.default_rng(seed)
        test_rows = np.sort(rng.choice(n, size=test_size, replace=False))
        keep = np.ones(n, dtype=bool)
        keep[test_rows] = False
        check_float32_source("test", X[test_rows], 0, " (of the split)")
        Q = np.ascontiguousarray(X[test_rows], dtype=np.float32)
        train = RowSubset(X, np.flatnonzero(keep))
        train_labels = base_labels[keep] if base_labels is not None else None
        test_labels = base_labels[test_rows] if base_labels is not None else None
        train_keys, test_keys = base_keys[keep], base_keys[test_rows]
        if base_attributes is not None:  # the base rows that stay base keep theirs; queries have none
            train_attributes = {name: column[keep] for name, column in base_attributes.items()}
    neighbors = distances = None
    if groundtruth is not None:
        if queries is None:
            raise InputError("--groundtruth needs --queries: a split of the base has no supplied ground truth")
        if Path(groundtruth).suffix.lower() in (".bin", ".ibin"):  # big-ann layout: ids (then distances)
            neighbors, _ = read_bin_groundtruth(groundtruth)
        else:
            neighbors = np.asarray(read_vectors(groundtruth))
        neighbors = np.asarray(neighbors, dtype=np.int64)
        if neighbors.shape[0] != len(Q):
            raise InputError(f"ground truth {str(groundtruth)!r} has {neighbors.shape[0]} rows for {len(Q)} queries")
        if (neighbors < 0).any() or (neighbors >= n).any():
            raise InputError(f"ground truth {str(groundtruth)!r} holds ids outside [0, {n})")
        neighbors = neighbors[:, :k]
        verify_groundtruth(X, Q, neighbors, metric)
        distances = distances_to(metric, Q, X, neighbors)  # exact, in our metric, whatever the file held
        order = np.lexsort((neighbors, distances), axis=1)
        neighbors = np.take_along_axis(neighbors, order, axis=1)
        distances = np.take_along_axis(distances, order, axis=1)
    attrs = {"name": Path(out).stem, "source": f"ann-bench data import {Path(base).name}",
             "import": json.dumps({"base": str(base), "queries": str(queries) if queries else None,
                                   "groundtruth": str(groundtruth) if groundtruth else None,
                                   "test_size": None if queries else test_size, "seed": seed})}
    return write_vectorset(out, train, Q, metric, neighbors=neighbors, distances=distances,
                           train_labels=train_labels, test_labels=test_labels, train_keys=train_keys,
                           test_keys=test_keys, attrs=attrs, k=k, progress=progress,
                           train_attributes=train_attributes)


def read_attributes(path: str | os.PathLike, n: int) -> dict[str, np.ndarray]:
    """Item attributes from a .npz (one array per attribute) or a .csv with a header row (one column per
    attribute), checked (:func:`~ann_bench.data.vectorset.check_attributes`) for ``n`` base vectors."""
    from ann_bench.data.vectorset import check_attributes

    p = Path(path)
    try:
        if p.suffix.lower() == ".npz":
            with np.load(p, allow_pickle=False) as z:
                columns = {name: z[name] for name in z.files}
        elif p.suffix.lower() == ".csv":
            import csv

            with open(p, newline="", encoding="utf-8") as fh:
                rows = list(csv.reader(fh))
            if not rows:
                raise InputError(f"--attributes {str(p)!r} is empty; expected a header row of attribute names")
            header, body = rows[0], rows[1:]
            bad = next((i for i, r in enumerate(body) if len(r) != len(header)), None)
            if bad is not None:
                raise InputError(f"--attributes {str(p)!r}: row {bad + 2} has {len(body[bad])} value(s) for "
                                 f"{len(header)} column(s)")
            columns = {}
            for j, name in enumerate(header):
                try:
                    values = [float(r[j]) for r in body]
                except ValueError:
                    row = next(i for i, r in enumerate(body) if not _is_number(r[j]))
                    raise InputError(f"--attributes {str(p)!r}: column {name!r} row {row + 2} is "
                                     f"{body[row][j][:40]!r}, not a number") from None
                arr = np.asarray(values)
                columns[name] = arr.astype(np.int64) if np.all(arr == np.round(arr)) and np.all(
                    np.abs(arr) < 2**53) else arr
        else:
            raise InputError(f"--attributes {str(p)!r}: use a .npz (one array per attribute) or a .csv with a "
                             "header row")
    except InputError:
        raise
    except OSError as exc:
        raise InputError(f"cannot read --attributes {str(p)!r}: {exc.strerror or exc}") from None
    except ValueError as exc:  # a damaged .npz, pickled objects
        raise InputError(f"--attributes {str(p)!r} is not a readable .npz of numeric arrays ({exc})") from None
    if not columns:
        raise InputError(f"--attributes {str(p)!r} holds no column")
    return check_attributes(columns, n)


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def _read_table_or_vectors(path, columns: dict[str, str | None]):
    """(vectors, labels or None, keys or None): a .parquet table's columns, or a vector file's vectors."""
    if file_format(path) == ".parquet":
        from ann_bench.data.parquet import read_parquet

        table = read_parquet(path, **columns)
        return table.X, table.labels, table.keys
    return read_vectors(path), None, None


def _one_of(option_file, from_columns, n: int, option: str, path) -> np.ndarray | None:
    """Labels or keys from the ``option`` file, or from the table's column; both at once is refused."""
    if option_file is not None and from_columns is not None:
        raise InputError(f"{option} and a column of {str(path)!r} both give the {option.split('-')[-1]}; give them "
                         f"once (drop {option}, or import a table without that column)")
    if option_file is None:
        if from_columns is not None and not option.endswith("keys"):
            return check_labels_array(from_columns, n, f"the label column of {str(path)!r}")
        return from_columns
    reader = read_keys if option.endswith("keys") else read_labels
    return reader(option_file, n, option)


def _check_label_kinds(train_labels, test_labels) -> None:
    """InputError when one side's labels are numbers and the other's strings: no query could match a class."""
    if train_labels is None or test_labels is None:
        return
    numbers = [np.asarray(a).dtype.kind in "iubf" for a in (train_labels, test_labels)]
    if numbers[0] != numbers[1]:
        kinds = ["numbers" if x else "strings" for x in numbers]
        raise InputError(f"the base labels are {kinds[0]} but the query labels are {kinds[1]} (e.g. "
                         f"{np.asarray(train_labels)[0]!r} and {np.asarray(test_labels)[0]!r}), so no query's label "
                         "could equal a base label; give both in one form")


def _reimport_hdf5(path, out, metric, k, progress) -> Path:
    """An ann-benchmarks HDF5 file, re-validated and rewritten in our layout (with labels if it has them)."""
    with VectorSet(path, metric=metric) as vs:
        # The file's own metric, if it states a known one (a file without one is imported with --metric; its
        # stored ground truth, in an unknown metric, is then recomputed).
        stored = vs.attrs.get("distance")
        try:
            same_metric = stored is not None and canonical_metric(str(stored)) == metric
        except InputError:
            same_metric = False
        verdict = validate(vs, check_groundtruth_sample=20 if same_metric else 0)
        if not verdict.ok:
            raise InputError(f"{str(path)!r} is not a valid VectorSet: {verdict.problems[0]}")
        # Stored ground truth is kept only if it is in the requested metric and deep enough.
        keep_gt = same_metric and vs.has_groundtruth and vs.gt_depth >= min(k, vs.n_train)
        return write_vectorset(
            out, vs.train, vs.load_test(), vs.metric,
            neighbors=vs.neighbors[:, :k] if keep_gt else None, distances=vs.distances[:, :k] if keep_gt else None,
            train_labels=read_checked_labels(vs, "train"), test_labels=read_checked_labels(vs, "test"),
            train_keys=vs.keys("train"), test_keys=vs.keys("test"),
            attrs={**{k2: v for k2, v in vs.attrs.items() if k2 not in ("distance", "dimension")},
                   "source": f"ann-bench data import {Path(path).name}"},
            k=k, progress=progress)
