"""Vectors from a Parquet table (``data import``, and any command that reads a vector file), through pyarrow
(the ``parquet`` extra).

The vectors are either one column of lists (``list``, ``large_list`` or ``fixed_size_list`` of numbers, every
row the same length) or, when the table has no list column, every numeric column that is not the label or
key column, in the table's order (one column per dimension). ``vector_column`` picks the list column (or a
single numeric column) by name. Labels come from ``label_column`` (default: a column named ``label``) and item
keys from ``key_column`` (default: a column named ``id``), as ``embed`` reads a CSV. The table is read whole
into memory (Parquet has no memory map); a null anywhere is refused with its column and row.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ann_bench.errors import InputError

INSTALL = 'pip install -e ".[parquet]"'


@dataclass
class ParquetVectors:
    X: np.ndarray  # (n, d), the table's numeric dtype
    labels: np.ndarray | None
    keys: np.ndarray | None  # object array of str
    source: str  # which columns the vectors, labels and keys came from


def _pyarrow():
    try:
        import pyarrow
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        raise InputError(f"reading .parquet needs pyarrow, which is not installed: {INSTALL}") from None
    return pyarrow


def _is_list(t) -> bool:
    import pyarrow.types as pt

    return pt.is_list(t) or pt.is_large_list(t) or pt.is_fixed_size_list(t)


def _is_number(t) -> bool:
    import pyarrow.types as pt

    return pt.is_integer(t) or pt.is_floating(t)


def _first_null(column) -> int | None:
    if column.null_count == 0:
        return None
    mask = column.is_null().to_numpy(zero_copy_only=False)
    return int(np.flatnonzero(mask)[0])


def read_parquet(path: str | os.PathLike, *, vector_column: str | None = None, label_column: str | None = None,
                 key_column: str | None = None) -> ParquetVectors:
    """The vectors, labels and keys of a Parquet file (see the module docstring); InputError in one line for
    a missing column, a column of the wrong type, rows of different lengths or a null."""
    pa = _pyarrow()
    import pyarrow.parquet as pq

    path = Path(path).expanduser()
    if not path.is_file():
        raise InputError(f"{str(path)!r} does not exist or is not a file")
    try:
        schema = pq.read_schema(path)
    except (OSError, pa.ArrowException) as exc:
        raise InputError(f"{str(path)!r} is not a readable Parquet file: {str(exc).splitlines()[0][:200]}") from None
    names = list(schema.names)
    for option, column in (("--vector-column", vector_column), ("--label-column", label_column),
                           ("--key-column", key_column)):
        if column is not None and column not in names:
            raise InputError(f"{option} {column!r} is not a column of {str(path)!r}; its columns: {', '.join(names)}")
    if label_column is None and "label" in names and vector_column != "label":
        label_column = "label"
    if key_column is None and "id" in names and "id" not in (vector_column, label_column):
        key_column = "id"
    others = [n for n in names if n not in (label_column, key_column)]
    types = {n: schema.field(n).type for n in names}
    if vector_column is not None:
        if not (_is_list(types[vector_column]) or _is_number(types[vector_column])):
            raise InputError(f"--vector-column {vector_column!r} of {str(path)!r} holds {types[vector_column]}; "
                             "vectors are a column of lists of numbers, or numeric columns")
        vector_columns = [vector_column]
    else:
        lists = [n for n in others if _is_list(types[n])]
        if len(lists) > 1:
            raise InputError(f"{str(path)!r} has {len(lists)} list columns ({', '.join(lists)}); name the vectors' "
                             "column with --vector-column")
        vector_columns = lists or [n for n in others if _is_number(types[n])]
        if not vector_columns:
            raise InputError(f"{str(path)!r} has no vector column: neither a column of lists of numbers nor numeric "
                             f"columns besides the label and key (its columns: {', '.join(names)})")
    try:
        table = pq.read_table(path, columns=[*vector_columns, *(c for c in (label_column, key_column) if c)])
    except (OSError, pa.ArrowException) as exc:
        raise InputError(f"cannot read {str(path)!r}: {str(exc).splitlines()[0][:200]}") from None
    n = table.num_rows
    if n == 0:
        raise InputError(f"{str(path)!r} holds no rows")
    for name in table.column_names:
        row = _first_null(table.column(name))
        if row is not None:
            raise InputError(f"column {name!r} of {str(path)!r} is null in row {row}; fill or drop that row")
    if _is_list(types[vector_columns[0]]):
        X = _list_column(table.column(vector_columns[0]).combine_chunks(), vector_columns[0], path)
        what = f"vectors: list column {vector_columns[0]!r}"
    else:
        X = np.column_stack([table.column(c).to_numpy() for c in vector_columns])
        what = (f"vectors: numeric column {vector_columns[0]!r}" if len(vector_columns) == 1 else
                f"vectors: {len(vector_columns)} numeric columns {vector_columns[0]!r} … {vector_columns[-1]!r}")
    labels = table.column(label_column).to_numpy(zero_copy_only=False) if label_column else None
    keys = None
    if key_column:
        from ann_bench.data.vectorset import check_keys

        keys = check_keys([str(v) for v in table.column(key_column).to_pylist()], n, f"key column {key_column!r}")
    source = "; ".join([what, *([f"labels: column {label_column!r}"] if labels is not None else []),
                        *([f"keys: column {key_column!r}"] if keys is not None else [])])
    return ParquetVectors(X, labels, keys, source)


def _list_column(column, name: str, path: Path) -> np.ndarray:
    """(n, d) of a list column whose rows all hold d numbers."""
    import pyarrow.types as pt

    n = len(column)
    if not _is_number(column.type.value_type):
        raise InputError(f"column {name!r} of {str(path)!r} holds lists of {column.type.value_type}; expected numbers")
    if pt.is_fixed_size_list(column.type):
        d = column.type.list_size
        values = column.flatten()
    else:
        offsets = column.offsets.to_numpy()
        lengths = np.diff(offsets)
        if (lengths != lengths[0]).any():
            row = int(np.flatnonzero(lengths != lengths[0])[0])
            raise InputError(f"column {name!r} of {str(path)!r}: row {row} holds {int(lengths[row])} numbers but row 0 "
                             f"holds {int(lengths[0])}; every vector needs the same length")
        d = int(lengths[0])
        values = column.flatten()  # the values of the rows, offsets applied
    if values.null_count:
        flat = int(np.flatnonzero(values.is_null().to_numpy(zero_copy_only=False))[0])
        raise InputError(f"column {name!r} of {str(path)!r}: row {flat // max(d, 1)} holds a null number")
    if d == 0:
        raise InputError(f"column {name!r} of {str(path)!r} holds empty lists")
    return values.to_numpy().reshape(n, d)
