"""``ann-bench search``: an index directory answers a file of queries; neighbours (keys, ids, distances) go to a
CSV, TSV, JSON-lines, .npy or Parquet file, chunk by chunk, written under a temporary name and renamed.

Output layouts (``--format``):

- ``long`` (default): CSV/TSV one row per (query, neighbour): ``query_key, rank, key, id, distance``;
  JSON lines / Parquet one record per query: ``query_key, keys[k], ids[k], distances[k]``;
  .npy a structured array, one element per query, with those four fields.
- ``wide``: one row per query, its key then the k neighbour keys in order (``query_key, key_1 .. key_k``):
  the shape of a "submission" file. JSON lines / Parquet / .npy: ``query_key, keys[k]``.

Padding (fewer than k found): id -1, key "", distance inf (JSON: null).
"""

from __future__ import annotations

import csv
import io
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ann_bench.atomic import atomic_path
from ann_bench.errors import InputError
from ann_bench.index import check_vectors

CHUNK = 4096  # queries searched and written at a time
FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".npy": "npy",
           ".parquet": "parquet"}


# ---- queries ----------------------------------------------------------------------------------------------
@dataclass
class Queries:
    """Queries to search: ``count`` vectors of dimension ``dim`` read chunk by chunk, with a key each."""

    source: str
    count: int
    dim: int
    keys: np.ndarray  # object array of str
    metric: str | None  # the metric the queries' file states (an HDF5 set, an embedder), None for raw arrays
    _read: Any  # (start, stop) -> the rows as stored (any dtype): check_vectors converts them, after its checks
    keys_given: bool = False  # keys that name items (a set's keys, --query-keys, embed's), not row numbers
    train_of: str | None = None  # content hash of the set whose train split these queries are
    model_identity: dict[str, Any] | None = None  # queries embedded here: what made them (MODEL_IDENTITY keys)

    def chunks(self, size: int = CHUNK) -> Iterator[tuple[int, np.ndarray]]:
        for start in range(0, self.count, size):
            yield start, self._read(start, min(start + size, self.count))


def read_queries(path: str | os.PathLike, *, split: str = "test", keys: str | os.PathLike | None = None,
                 model: str | None = None, device: str = "cpu", reporter=None, model_options=None) -> Queries:
    """Queries from an HDF5 set (its ``split``, with its keys), a vector file (.npy, .fvecs, .bvecs, .fbin,
    .u8bin, .i8bin, IDX; keys = row numbers or ``keys``), or raw inputs (images, texts) embedded with
    ``model`` (keys as ``embed`` gives them)."""
    from ann_bench.data.arrays import check_numeric
    from ann_bench.data.formats import file_format, read_vectors
    from ann_bench.data.importing import read_keys, row_keys

    path = Path(path).expanduser()
    if not path.exists():
        raise InputError(f"queries {str(path)!r} do not exist")
    if split not in ("test", "train"):
        raise InputError(f"--split must be test or train, got {split!r}")
    if model is not None:
        return _embedded_queries(path, model, device, keys, reporter, model_options)
    if model_options is not None and model_options.given():
        raise InputError("--layer, --pooling, --num-classes, --tokenizer and --preprocess shape how --model embeds "
                         "raw queries; pass --model too, or drop them")
    if path.is_dir():
        raise InputError(f"{str(path)!r} is a folder: raw inputs (images) need --model to be embedded")
    fmt = file_format(path)
    if fmt == ".hdf5":
        from ann_bench.data.vectorset import VectorSet

        vs = VectorSet(path)
        ds = vs.file[split]
        key_arr = vs.keys(split)
        if keys is not None:
            key_arr = read_keys(keys, ds.shape[0], "--query-keys", unique=False)

        check_numeric(f"queries {path.name} ({split})", ds)

        def read(start, stop, ds=ds):
            return np.asarray(ds[start:stop])  # not cast here: a cast would hide complex or > float32 values

        return Queries(f"{path.name} ({split})", int(ds.shape[0]), int(ds.shape[1]),
                       key_arr if key_arr is not None else row_keys(range(ds.shape[0])), vs.metric, read,
                       keys_given=key_arr is not None, train_of=vs.content_hash() if split == "train" else None)
    if fmt not in (".npy", ".fvecs", ".bvecs", ".fbin", ".u8bin", ".i8bin", ".idx"):
        raise InputError(f"{str(path)!r}: queries are an HDF5 set, a vector file (.npy, .fvecs, .bvecs, .fbin, "
                         ".u8bin, .i8bin, IDX), or raw inputs with --model")
    X = read_vectors(path)  # memory-mapped where the format allows: read chunk by chunk
    check_numeric(f"queries {path.name}", X)
    key_arr = read_keys(keys, X.shape[0], "--query-keys", unique=False) if keys is not None else row_keys(range(X.shape[0]))

    def read(start, stop):
        return np.asarray(X[start:stop])  # not cast here: a cast would hide complex or > float32 values

    return Queries(path.name, int(X.shape[0]), int(X.shape[1]), key_arr, None, read, keys_given=keys is not None)


def _embedded_queries(path: Path, model: str, device: str, keys, reporter, model_options=None) -> Queries:
    from embeddings import load_embedder

    from ann_bench.data.embed import embed_items
    from ann_bench.data.importing import read_keys
    from ann_bench.data.inputs import read_input

    items = read_input(path)
    embedder = load_embedder(model, device=device, options=model_options)
    embedder.bind(items.kind)
    if reporter is not None:
        with reporter.task(f"embedding {path.name}", items.count) as advance:
            Q = embed_items(embedder, items, embedder.batch_size, normalize=embedder.normalize, progress=advance)
    else:
        Q = embed_items(embedder, items, embedder.batch_size, normalize=embedder.normalize)
    key_arr = read_keys(keys, items.count, "--query-keys", unique=False) if keys is not None else items.item_keys()
    identity = model_identity(embedder.provenance())
    return Queries(f"{path.name} (embedded by {embedder.name})", int(Q.shape[0]), int(Q.shape[1]), key_arr,
                   embedder.metric, lambda start, stop: Q[start:stop], keys_given=True, model_identity=identity)


# What must agree between the model that embedded an index's vectors and the one embedding its queries: the
# weights, and the choices that change the vector space (pooling, layer, ONNX output). Preprocessing and the input
# modality may differ (a CLIP index of images searched with texts).
MODEL_IDENTITY = ("checkpoint_sha256", "pooling", "model_layer", "onnx_output")


def model_identity(attrs: dict[str, Any]) -> dict[str, Any]:
    """The :data:`MODEL_IDENTITY` entries of a set's attrs or an embedder's provenance, plus its model's name."""
    out = {key: attrs[key] for key in MODEL_IDENTITY if attrs.get(key) is not None}
    if attrs.get("model") is not None:
        out["model"] = attrs["model"]
    return out


def check_query_model(index, queries: Queries) -> None:
    """InputError when raw queries were embedded by another model (weights, pooling, layer) than the one that made
    the index's vectors, as far as the index's manifest (or its source set) records it: such queries give
    neighbours that mean nothing, with exit 0."""
    if queries.model_identity is None:
        return
    source = index.manifest.get("source", {}) or {}
    made = source.get("model_identity")
    if made is None and source.get("dataset") and Path(source["dataset"]).is_file():
        try:  # an index from before the manifest recorded it: its source set's attrs, if the set is still there
            from ann_bench.data.vectorset import VectorSet

            with VectorSet(source["dataset"]) as vs:
                if vs.content_hash() == source.get("dataset_hash"):
                    made = model_identity(vs.attrs)
        except InputError:
            made = None
    if not made:
        return
    for key in MODEL_IDENTITY:
        if key in made and made[key] != queries.model_identity.get(key):
            raise InputError(f"queries {queries.source} were embedded with {key} {queries.model_identity.get(key)!r}, "
                             f"but the index's vectors with {made[key]!r} (model {made.get('model', '?')}): their "
                             "neighbours would mean nothing; embed the queries with the same model and options")


# ---- searching ------------------------------------------------------------------------------------------
@dataclass
class SearchSummary:
    path: Path
    queries: int
    k: int
    search_s: float  # wall time of the index's search calls only
    excluded_self: int  # results dropped as the query item itself


def search_to_file(index, queries: Queries, output: str | os.PathLike, *, k: int = 10,
                   search_params: dict[str, Any] | None = None, exclude_self: bool = False,
                   layout: str = "long", fmt: str | None = None, progress=None) -> SearchSummary:
    """Search every query in chunks and write the neighbours to ``output`` atomically (see the module
    docstring). ``exclude_self``: drop from each query's results the indexed items whose key equals the
    query's key (item-to-item recommendation: query = an indexed item) and still return k."""
    from ann_bench.data.arrays import check_k

    k = check_k(k)
    if layout not in ("long", "wide"):
        raise InputError(f"--format must be long or wide, got {layout!r}")
    output = Path(output).expanduser()
    fmt = fmt or FORMATS.get(output.suffix.lower())
    if fmt is None:
        raise InputError(f"-o {str(output)!r}: the output's extension says its format; use one of "
                         f"{', '.join(FORMATS)}")
    if queries.count == 0:
        raise InputError(f"queries {queries.source} hold no vectors (0 rows); give at least one query")
    if queries.dim != index.dim:
        raise InputError(f"queries {queries.source} are {queries.dim}-d but the index holds {index.dim}-d vectors; "
                         "embed the queries with the model that made the index's vectors")
    check_query_model(index, queries)
    if queries.metric is not None and queries.metric != index.metric:
        raise InputError(f"queries {queries.source} are in metric {queries.metric!r} but the index searches in "
                         f"{index.metric!r}: neighbours would be ranked by another distance than the queries' "
                         "own; use queries made for this index")
    k = check_k(k, index.n)
    extra = 0
    if exclude_self:
        own_rows = queries.train_of is not None and queries.train_of == index.manifest.get("source", {}).get(
            "dataset_hash") and queries.count == index.n
        if not own_rows and not (index.has_keys and queries.keys_given):
            raise InputError("--exclude-self matches each query to the indexed item with its key: it needs item keys "
                             "on both sides (an index built from a set with keys, and keyed queries), or queries that "
                             "are the index's own vectors (--split train of the set it was built from)")
        _, counts = np.unique(index.keys.astype(str), return_counts=True)
        extra = int(counts.max())  # a query's own key can occur this many times among the results
    fetch = min(k + extra, index.n)
    if fmt == "parquet":
        _pyarrow()
    writer_cls = {"csv": _DelimitedWriter, "tsv": _DelimitedWriter, "jsonl": _JsonlWriter, "npy": _NpyWriter,
                  "parquet": _ParquetWriter}[fmt]
    params = dict(search_params or {})
    search_s = 0.0
    excluded = 0
    with atomic_path(output, output.suffix) as tmp:
        writer = writer_cls(tmp, fmt, layout, k, queries, index)
        try:
            for start, Q in queries.chunks():
                Q = check_vectors(Q, index.dim, f"queries {queries.source}", index.metric, first_row=start)
                t0 = time.perf_counter()
                D, I = index.search_checked(Q, fetch, **params)
                search_s += time.perf_counter() - t0
                qkeys = queries.keys[start : start + len(Q)]
                if exclude_self:
                    D, I, dropped = _drop_self(D, I, index.key_of(I), qkeys, k)
                    excluded += dropped
                else:
                    D, I = D[:, :k], I[:, :k]
                writer.write(qkeys, index.key_of(I), I, D)
                if progress is not None:
                    progress(len(Q))
        finally:
            writer.close()
    return SearchSummary(output, queries.count, k, search_s, excluded)


def _drop_self(D, I, K, qkeys, k):
    """Remove results whose key is the query's own; keep the first k of the rest (padding when short)."""
    self_hit = (K == np.asarray(qkeys, dtype=object)[:, None]) & (I >= 0)
    if not self_hit.any():
        return D[:, :k], I[:, :k], 0
    keep = ~self_hit
    # Stable partition: kept results first, in rank order.
    order = np.argsort(~keep, axis=1, kind="stable")
    D2 = np.take_along_axis(D, order, axis=1)[:, :k].copy()
    I2 = np.take_along_axis(I, order, axis=1)[:, :k].copy()
    short = np.arange(k)[None, :] >= keep.sum(axis=1)[:, None]
    D2[short], I2[short] = np.inf, -1
    return D2, I2, int(self_hit.sum())


# ---- writers ----------------------------------------------------------------------------------------------
def _dist_text(d: float) -> str:
    return "inf" if not np.isfinite(d) else f"{float(d):.9g}"


class _DelimitedWriter:
    def __init__(self, path: Path, fmt: str, layout: str, k: int, queries: Queries, index):
        self.fh = open(path, "w", encoding="utf-8", newline="")
        self.w = csv.writer(self.fh, delimiter="\t" if fmt == "tsv" else ",", lineterminator="\n")
        self.layout = layout
        if layout == "wide":
            self.w.writerow(["query_key", *[f"key_{j + 1}" for j in range(k)]])
        else:
            self.w.writerow(["query_key", "rank", "key", "id", "distance"])

    def write(self, qkeys, K, I, D) -> None:
        if self.layout == "wide":
            self.w.writerows([q, *row] for q, row in zip(qkeys, K.tolist()))
            return
        rows = []
        for q, krow, irow, drow in zip(qkeys, K.tolist(), I.tolist(), D.tolist()):
            rows += [(q, j + 1, key, i, _dist_text(d)) for j, (key, i, d) in enumerate(zip(krow, irow, drow))]
        self.w.writerows(rows)

    def close(self) -> None:
        self.fh.close()


class _JsonlWriter:
    def __init__(self, path: Path, fmt: str, layout: str, k: int, queries: Queries, index):
        self.fh = open(path, "w", encoding="utf-8")
        self.layout = layout

    def write(self, qkeys, K, I, D) -> None:
        buf = io.StringIO()
        for q, krow, irow, drow in zip(qkeys, K.tolist(), I.tolist(), D.tolist()):
            rec: dict[str, Any] = {"query_key": q, "keys": krow}
            if self.layout == "long":
                rec["ids"] = irow
                rec["distances"] = [d if np.isfinite(d) else None for d in drow]
            buf.write(json.dumps(rec, ensure_ascii=False))
            buf.write("\n")
        self.fh.write(buf.getvalue())

    def close(self) -> None:
        self.fh.close()


class _NpyWriter:
    """A structured .npy, written through a memory map: (nq,) records of query_key, keys, ids, distances."""

    def __init__(self, path: Path, fmt: str, layout: str, k: int, queries: Queries, index):
        qlen = max(1, max((len(s) for s in queries.keys), default=1))
        klen = max(1, max((len(s) for s in index.keys), default=1))
        fields = [("query_key", f"<U{qlen}"), ("keys", f"<U{klen}", (k,))]
        if layout == "long":
            fields += [("ids", "<i8", (k,)), ("distances", "<f4", (k,))]
        self.layout = layout
        self.arr = np.lib.format.open_memmap(path, mode="w+", dtype=np.dtype(fields), shape=(queries.count,))
        self.pos = 0

    def write(self, qkeys, K, I, D) -> None:
        block = self.arr[self.pos : self.pos + len(qkeys)]
        block["query_key"] = np.asarray(qkeys, dtype=str)
        block["keys"] = K.astype(str)
        if self.layout == "long":
            block["ids"] = I
            block["distances"] = D
        self.pos += len(qkeys)

    def close(self) -> None:
        self.arr.flush()
        del self.arr


def _pyarrow():
    try:
        import pyarrow
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        raise InputError("writing .parquet needs pyarrow: pip install pyarrow (or pip install -e \".[parquet]\"); "
                         "or write .csv/.jsonl/.npy") from None
    return pyarrow


class _ParquetWriter:
    def __init__(self, path: Path, fmt: str, layout: str, k: int, queries: Queries, index):
        pa = _pyarrow()
        self.pa = pa
        fields = [pa.field("query_key", pa.string()), pa.field("keys", pa.list_(pa.string()))]
        if layout == "long":
            fields += [pa.field("ids", pa.list_(pa.int64())), pa.field("distances", pa.list_(pa.float32()))]
        self.schema = pa.schema(fields)
        self.layout = layout
        self.writer = pa.parquet.ParquetWriter(str(path), self.schema)

    def write(self, qkeys, K, I, D) -> None:
        pa = self.pa
        cols = [pa.array(list(qkeys), pa.string()), pa.array(K.tolist(), pa.list_(pa.string()))]
        if self.layout == "long":
            cols += [pa.array(I.tolist(), pa.list_(pa.int64())), pa.array(D.tolist(), pa.list_(pa.float32()))]
        self.writer.write_table(pa.Table.from_arrays(cols, schema=self.schema))

    def close(self) -> None:
        self.writer.close()
