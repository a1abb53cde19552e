"""A built index carried out of the benchmark into an application: build, save, open, search.

An *index directory* holds what one library wrote plus what ann-bench knows about it::

    DIR/index.bin       the library's native file (faiss write_index, hnswlib save_index, annoy save, ...)
    DIR/keys.json       the item keys, one per indexed vector (absent when the vectors had none)
    DIR/manifest.json   backend, impl, build and default search parameters, metric, dimension, n, the
                        vectors' content hash, library versions, index file size and sha256, and the
                        recall/QPS measured for this configuration when it came from a results store

The directory is written under a temporary name and renamed into place, so a reader never sees half of one; a
re-opened index is loaded, never rebuilt, and its file is checked against the manifest's sha256 first (a file
swapped or truncated after the build is refused, not searched).

Python API (what the CLI calls)::

    from ann_bench import build_index, open_index
    index = build_index(X, backend="hnsw", metric="angular", M=16, ef_construction=200)
    index.save("my-index")                       # or: ann-bench index build ...
    index = open_index("my-index")
    D, I = index.search(Q, 10, ef=64)            # distances in the set's metric, ids (-1 padded)
    index.keys[I]                                 # item keys of the neighbours
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from ann_bench import __version__
from ann_bench.atomic import _umask, ensure_writable_dir, free_space, is_disk_full, raise_if_terminated
from ann_bench.data.catalogue import sha256_file as file_sha256
from ann_bench.distances import canonical_metric
from ann_bench.errors import InputError

FORMAT = 1
MANIFEST = "manifest.json"
INDEX_FILE = "index.bin"
KEYS_FILE = "keys.json"


def vectors_hash(X: np.ndarray, metric: str) -> str:
    """16 hex digits of sha256 over the metric, the shape and the float32 vectors (in row chunks)."""
    digest = hashlib.sha256(json.dumps([metric, list(X.shape)]).encode())
    for start in range(0, X.shape[0], 1 << 16):
        digest.update(memoryview(np.ascontiguousarray(X[start : start + (1 << 16)], dtype=np.float32)).cast("B"))
    return digest.hexdigest()[:16]


def check_vectors(X, dim: int | None, what: str, metric: str | None = None, first_row: int = 0) -> np.ndarray:
    """X as a C-contiguous float32 (n, d) array, through the one validation of arrays
    (:func:`ann_bench.data.arrays.as_vectors`)."""
    from ann_bench.data.arrays import as_vectors

    return as_vectors(X, what, dim=dim, metric=metric, first_row=first_row, tiny_check=first_row == 0)


class SavedIndex:
    """A built (or loaded) index with its manifest and item keys. :meth:`search` is the one call an application
    needs; :meth:`save` writes an index directory."""

    def __init__(self, index, manifest: dict[str, Any], keys: np.ndarray | None, path: Path | None = None):
        self.index = index
        self.manifest = manifest
        self._keys = keys
        self.path = path
        self._applied: dict[str, Any] | None = None

    # ---- facts ---------------------------------------------------------------------------------------
    @property
    def keys(self) -> np.ndarray:
        """Item keys (object array of str), one per indexed vector: the stored ones, else the row numbers."""
        if self._keys is None:
            from ann_bench.data.importing import row_keys

            self._keys = row_keys(range(self.n))
        return self._keys

    @property
    def has_keys(self) -> bool:
        return bool(self.manifest.get("keys"))

    @property
    def n(self) -> int:
        return int(self.manifest["n"])

    @property
    def dim(self) -> int:
        return int(self.manifest["dimension"])

    @property
    def metric(self) -> str:
        return str(self.manifest["metric"])

    @property
    def search_defaults(self) -> dict[str, Any]:
        return dict(self.manifest.get("search_params") or {})

    def __repr__(self) -> str:
        m = self.manifest
        return (f"SavedIndex({m['backend']}[{m['impl']}], n={m['n']:,}, dim={m['dimension']}, metric={m['metric']}, "
                f"build={m['build_params']}, search={m['search_params']})")

    # ---- searching -----------------------------------------------------------------------------------
    def search(self, Q, k: int = 10, **search_params: Any) -> tuple[np.ndarray, np.ndarray]:
        """Nearest ``k`` indexed vectors of each row of Q (nq, d): (distances, ids), both (nq, k), nearest first.

        A single query may be given as a 1-D vector (d,): it is searched as one row and the results are 2-D
        (1, k), as faiss and hnswlib return them (``D[0]``, ``I[0]`` are its neighbours). A 1-D vector of another
        length than the index's dimension is refused.

        Distances are in the index's metric (``euclidean``: L2; ``angular``: 1 - cos; ``ip``: -dot); ids are
        int64 rows of the indexed vectors, -1 (with distance +inf) where fewer than k were found.
        ``search_params`` override the manifest's defaults for this call (e.g. ``ef=128``)."""
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise InputError(f"k must be a positive integer, got {k!r}")
        Q = np.asarray(Q)
        if Q.ndim == 1:
            if Q.shape[0] != self.dim:
                raise InputError(f"the query is one {Q.shape[0]}-d vector but the index holds {self.dim}-d vectors; "
                                 "embed it with the model that made the index's vectors")
            Q = Q.reshape(1, -1)
        return self.search_checked(check_vectors(Q, self.dim, "queries", self.metric), int(k), **search_params)

    def search_checked(self, Q: np.ndarray, k: int, **search_params: Any) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`search` of queries already passed through :func:`check_vectors` (``search`` times this part
        only, after checking each chunk outside its timer)."""
        wanted = {**self.search_defaults, **search_params}
        if wanted != self._applied:
            self.index.set_search_params(**wanted)
            self._applied = dict(wanted)
        k_eff = min(int(k), self.n)
        D, I = self.index.search(Q, k_eff)
        if k_eff < k:
            D = np.hstack([D, np.full((len(Q), k - k_eff), np.inf, dtype=D.dtype)])
            I = np.hstack([I, np.full((len(Q), k - k_eff), -1, dtype=I.dtype)])
        return D, I

    def key_of(self, I: np.ndarray) -> np.ndarray:
        """The keys of ids I (any shape); '' where an id is -1."""
        keys = self.keys
        out = np.full(np.shape(I), "", dtype=object)
        ok = np.asarray(I) >= 0
        out[ok] = keys[np.asarray(I)[ok]]
        return out

    # ---- saving --------------------------------------------------------------------------------------
    def save(self, directory: str | os.PathLike, *, force: bool = False) -> Path:
        """Write the index directory atomically (see the module docstring). An existing directory is replaced
        only with ``force`` and only when it is an ann-bench index directory."""
        target = check_index_output(directory, force=force)
        parent = ensure_writable_dir(target)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name[:80]}.", suffix=".tmp", dir=parent))
        try:
            t0 = time.perf_counter()
            self.index.save(tmp / INDEX_FILE)
            save_s = time.perf_counter() - t0
            manifest = dict(self.manifest)
            manifest["index_file"] = {"name": INDEX_FILE, "bytes": (tmp / INDEX_FILE).stat().st_size,
                                      "sha256": file_sha256(tmp / INDEX_FILE)}
            manifest["save_s"] = round(save_s, 3)
            if self._keys is not None and manifest.get("keys"):
                with open(tmp / KEYS_FILE, "w", encoding="utf-8") as fh:
                    json.dump(list(self._keys), fh, ensure_ascii=False)
            with open(tmp / MANIFEST, "w", encoding="utf-8") as fh:
                json.dump(manifest, fh, indent=1, sort_keys=False, default=_json_default)
                fh.write("\n")
            os.chmod(tmp, 0o777 & ~_umask())
            raise_if_terminated()
            _swap_into_place(tmp, target)
        except BaseException as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            if is_disk_full(exc):
                raise InputError(f"no space left to write {str(target)!r} ({free_space(parent)} free on its disk); "
                                 "nothing was written: free some space and run the command again") from None
            raise
        self.manifest = manifest
        self.path = target
        return target


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def is_index_dir(path: Path) -> bool:
    """True when ``path`` is a directory holding an ann-bench manifest."""
    manifest = path / MANIFEST
    if not manifest.is_file():
        return False
    try:
        with open(manifest, encoding="utf-8") as fh:
            return json.load(fh).get("ann_bench_index") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def check_index_output(directory: str | os.PathLike, *, force: bool = False,
                       inputs: tuple[str | os.PathLike | None, ...] = ()) -> Path:
    """``directory`` as a Path when an index directory may be written there; InputError otherwise.

    Never over a file, never over a directory ann-bench did not write (whatever ``force``), and over an index
    directory only with ``force``; never where an input lives (an input file inside it would be deleted)."""
    target = Path(directory).expanduser()
    for source in inputs:
        if source is None:
            continue
        src = Path(source).expanduser().resolve()
        if target.resolve() == src or target.resolve() in src.parents:
            raise InputError(f"-o {str(target)!r} holds an input of this command ({str(source)!r}); writing the "
                             "index there would destroy it: choose another output directory")
    if not os.path.lexists(target):
        return target
    if target.is_symlink():
        raise InputError(f"-o {str(target)!r} is a symbolic link; give a real directory path")
    if not target.is_dir():
        raise InputError(f"-o {str(target)!r} exists and is a file, not an index directory; choose another path")
    if not is_index_dir(target):
        if not any(target.iterdir()):
            raise InputError(f"-o {str(target)!r} is an existing empty directory; remove it or choose a new path "
                             "(the index directory is created by the command)")
        raise InputError(f"-o {str(target)!r} is a directory ann-bench did not write (no {MANIFEST}); ann-bench "
                         "never replaces it: choose another path")
    if not force:
        raise InputError(f"-o {str(target)!r} already holds an index; pass --force to replace it, or choose "
                         "another path")
    return target


def _swap_into_place(tmp: Path, target: Path) -> None:
    """Rename ``tmp`` to ``target``; an existing ``target`` (an index directory) is moved aside first and
    removed once the new one is in place."""
    if not os.path.lexists(target):
        os.rename(tmp, target)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{target.name[:80]}.", suffix=".old", dir=target.parent))
    os.rename(target, old / "index")
    try:
        os.rename(tmp, target)
    except BaseException:
        os.rename(old / "index", target)  # put the old one back
        shutil.rmtree(old, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)


# ---- building -----------------------------------------------------------------------------------------
def build_index(X, backend: str = "hnsw", metric: str = "euclidean", *, impl: str | None = None,
                keys=None, threads: int = 1, seed: int = 0, search: dict[str, Any] | None = None,
                source: dict[str, Any] | None = None, **build_params: Any) -> SavedIndex:
    """Build a ``backend`` index over X (n, d) in ``metric`` with ``build_params``; ``search``: the default
    search parameters stored with it; ``keys``: one item key per vector (default: row numbers).

    ``source``: what to record about where the vectors came from (dataset path, name, content hash, ...).
    """
    from ann_bench.backends import get_backend
    from ann_bench.data.vectorset import check_keys
    from ann_bench.sysinfo import versions

    metric = canonical_metric(metric)
    cls = get_backend(backend, impl)
    cls.check_available()
    X = check_vectors(X, None, "vectors", metric)
    index = cls(metric, X.shape[1], threads=threads, seed=seed, **build_params)
    index.check_data(index.params, *X.shape)
    search_params = index.validate_search_params(dict(search or {}))
    key_arr = check_keys(keys, len(X), "item") if keys is not None else None
    index.warm_up()
    t0 = time.perf_counter()
    index.build(X)
    build_s = time.perf_counter() - t0
    index.set_search_params(**search_params)
    manifest = {
        "ann_bench_index": FORMAT,
        "backend": cls.name,
        "impl": cls.impl,
        "build_params": index.params,
        "search_params": search_params,
        "metric": metric,
        "dimension": int(X.shape[1]),
        "n": int(X.shape[0]),
        "vectors_hash": vectors_hash(X, metric),
        "keys": key_arr is not None,
        "threads": int(threads),
        "seed": int(seed),
        "build_s": round(build_s, 3),
        "source": source or {},
        "versions": versions(),
        "ann_bench_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    saved = SavedIndex(index, manifest, key_arr)
    saved._applied = dict(search_params)
    return saved


# ---- opening ------------------------------------------------------------------------------------------
def open_index(directory: str | os.PathLike, *, threads: int = 1, verify: bool = True) -> SavedIndex:
    """Load the index directory written by :meth:`SavedIndex.save` (or ``ann-bench index build``).

    Loads the library's file (no rebuild); ``verify`` checks it against the manifest's size and sha256 first.
    InputError (one line) for a missing or foreign directory, a changed file or an unavailable library."""
    from ann_bench.backends import get_backend

    path = Path(directory).expanduser()
    if not path.is_dir():
        raise InputError(f"index directory {str(path)!r} does not exist; write one with `ann-bench index build`")
    manifest_path = path / MANIFEST
    try:
        with open(manifest_path, encoding="utf-8") as fh:
            manifest = json.load(fh)
    except FileNotFoundError:
        raise InputError(f"{str(path)!r} holds no {MANIFEST}: not an ann-bench index directory") from None
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read {str(manifest_path)!r}: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("ann_bench_index") is None:
        raise InputError(f"{str(manifest_path)!r} is not an ann-bench index manifest")
    if manifest["ann_bench_index"] != FORMAT:
        raise InputError(f"{str(path)!r} is an index of format {manifest['ann_bench_index']!r}; this version "
                         f"reads format {FORMAT}: rebuild it with `ann-bench index build`")
    try:
        cls = get_backend(manifest["backend"], manifest["impl"])
        cls.check_available()
        index_file = path / manifest["index_file"]["name"]
        expected_bytes = int(manifest["index_file"]["bytes"])
        expected_sha = str(manifest["index_file"]["sha256"])
        metric, dim, n = canonical_metric(manifest["metric"]), int(manifest["dimension"]), int(manifest["n"])
        build_params, search_params = dict(manifest["build_params"]), dict(manifest["search_params"])
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"{str(manifest_path)!r} is incomplete or malformed ({type(exc).__name__}: {exc}); "
                         "rebuild the index") from None
    if not index_file.is_file():
        raise InputError(f"index file {str(index_file)!r} is missing; rebuild the index")
    size = index_file.stat().st_size
    if size != expected_bytes:
        raise InputError(f"index file {str(index_file)!r} has {size:,} bytes, the manifest says {expected_bytes:,}: "
                         "changed or truncated since it was built; rebuild the index")
    if verify and file_sha256(index_file) != expected_sha:
        raise InputError(f"index file {str(index_file)!r} does not match the manifest's sha256: changed since it "
                         "was built; rebuild the index")
    keys = None
    if manifest.get("keys"):
        try:
            with open(path / KEYS_FILE, encoding="utf-8") as fh:
                raw = json.load(fh)
        except FileNotFoundError:
            raise InputError(f"{str(path / KEYS_FILE)!r} is missing (the manifest says the index has keys); "
                             "rebuild the index") from None
        except (OSError, ValueError) as exc:
            raise InputError(f"cannot read {str(path / KEYS_FILE)!r}: {exc}") from None
        if not isinstance(raw, list) or len(raw) != n or not all(isinstance(k, str) for k in raw):
            raise InputError(f"{str(path / KEYS_FILE)!r} does not hold {n:,} keys (strings); rebuild the index")
        keys = np.empty(n, dtype=object)
        keys[:] = raw
    index = cls(metric, dim, threads=threads, seed=int(manifest.get("seed", 0)), **build_params)
    t0 = time.perf_counter()
    try:
        index.load(index_file)
    except InputError:
        raise
    except Exception as exc:  # the library's own reader: a foreign or corrupt file
        raise InputError(f"{cls.label()} cannot load {str(index_file)!r}: {type(exc).__name__}: {exc}") from None
    manifest["load_s"] = round(time.perf_counter() - t0, 3)
    index.set_search_params(**search_params)
    saved = SavedIndex(index, manifest, keys, path)
    saved._applied = dict(search_params)
    return saved


# ---- the CLI's inputs -----------------------------------------------------------------------------------
class Vectors:
    """Vectors to index, read from a VectorSet (its train split) or a vector file, with keys and provenance."""

    def __init__(self, X: np.ndarray, metric: str, keys: np.ndarray | None, source: dict[str, Any],
                 dataset_hash: str | None = None, gt: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None):
        self.X, self.metric, self.keys, self.source = X, metric, keys, source
        self.dataset_hash = dataset_hash  # the VectorSet's content hash (the results store's key), if any
        self.gt = gt  # (test, neighbors, distances) when the set has ground truth


def read_vectors_for_index(path: str | os.PathLike, *, metric: str | None = None,
                           keys: str | os.PathLike | None = None) -> Vectors:
    """The vectors ``index build`` indexes: an HDF5 VectorSet's train split (with its keys and ground truth),
    or a .npy/.fvecs/.bvecs/.fbin/.u8bin/.i8bin/IDX/.parquet file (``metric`` required, ``keys`` a keys file)."""
    from ann_bench.data.vectorset import VectorSet
    from ann_bench.data.formats import file_format, read_vectors
    from ann_bench.data.importing import read_keys

    path = Path(path).expanduser()
    if not path.exists():
        raise InputError(f"dataset {str(path)!r} does not exist; check the path")
    if not path.is_file():
        raise InputError(f"dataset {str(path)!r} is not a file (an HDF5 vector set or a vector file)")
    if file_format(path) == ".hdf5":
        with VectorSet(path) as vs:
            if metric is not None and canonical_metric(metric) != vs.metric:
                raise InputError(f"--metric {metric} differs from the set's metric {vs.metric!r}; an index answers "
                                 "in its vectors' metric: drop --metric or re-import the set")
            X = vs.load_train()
            key_arr = vs.keys("train")
            if keys is not None:
                key_arr = read_keys(keys, len(X), "--keys")
            gt = (vs.load_test(), vs.neighbors, vs.distances) if vs.has_groundtruth else None
            source = {"dataset": str(path.resolve()), "dataset_name": vs.name, "dataset_hash": vs.content_hash()}
            return Vectors(X, vs.metric, key_arr, source, vs.content_hash(), gt)
    if metric is None:
        raise InputError(f"--metric is required for a vector file ({str(path)!r} does not say its metric); "
                         "use euclidean, angular or ip")
    metric = canonical_metric(metric)
    raw = read_vectors(path)
    X = check_vectors(raw, None, f"vectors of {str(path)!r}", metric)
    key_arr = read_keys(keys, len(X), "--keys") if keys is not None else None
    return Vectors(X, metric, key_arr, {"vectors": str(path.resolve())})


def recall_check(saved: SavedIndex, vectors: Vectors, k: int) -> dict[str, Any] | None:
    """recall@k of the built index at its default search parameters on the set's test queries (tie-aware, as
    `run` measures it), or None when the set has no ground truth."""
    from ann_bench.bench.worker import accuracy

    if vectors.gt is None:
        return None
    Q, gt_I, gt_D = vectors.gt
    k = min(k, gt_I.shape[1], saved.n)
    _, I = saved.search(Q, k)
    acc = accuracy(saved.metric, Q, vectors.X, I, gt_D, gt_I, k)
    return {"k": k, "queries": int(len(Q)), "recall": round(acc["recall"], 6), "id_recall": round(acc["id_recall"], 6),
            "search_params": saved.search_defaults}


def latest_dataset(results: str | os.PathLike) -> str:
    """The dataset file of the most recent ok row of a results store (InputError when there is none)."""
    from ann_bench.bench.results import ResultStore

    with ResultStore(results, create=False) as store:
        rows = [r for r in store.records() if r.status == "ok" and r.dataset_path]
    if not rows:
        raise InputError(f"the results store {str(results)!r} holds no measured row; pass --dataset")
    latest = max(enumerate(rows), key=lambda item: (item[1].created_at, item[0]))[1]  # ties: the store's order
    if not Path(latest.dataset_path).is_file():
        raise InputError(f"the most recent dataset in {str(results)!r}, {latest.dataset_path!r}, no longer exists; "
                         "pass --dataset")
    return latest.dataset_path


def best_configuration(results: str | os.PathLike, dataset_hash: str | None, recall: float, *,
                       max_memory: int | None = None, max_rss: int | None = None, k: int | None = None,
                       mode: str | None = None, metric: str = "qps"):
    """The stored configuration ``ann-bench best`` picks for these vectors: the winner's Record."""
    from ann_bench.report.best import best_configurations
    from ann_bench.bench.results import ResultStore

    if dataset_hash is None:
        raise InputError("--from-best needs an HDF5 vector set (its content hash names its rows in the results "
                         "store); a plain vector file has no stored results")
    with ResultStore(results, create=False) as store:
        records = [r for r in store.records() if r.dataset_hash == dataset_hash]
    if not records:
        raise InputError(f"the results store {str(results)!r} holds no result for these vectors (content hash "
                         f"{dataset_hash}); run `ann-bench run --dataset ...` first, or pass --backend")
    answer = best_configurations(records, recall, max_memory=max_memory, max_rss=max_rss, metric=metric,
                                 mode=mode, k=k)
    if answer.winner is None:
        closest = max(answer.per_backend, key=lambda b: b.max_recall, default=None)
        hint = f" (closest: {closest.group}, {closest.reason})" if closest is not None else ""
        raise InputError(f"no stored configuration meets recall@{answer.k} >= {recall}{hint}; lower --recall or "
                         "run a wider sweep")
    return answer.winner.best


def build_index_dir(dataset: str | os.PathLike | None, output: str | os.PathLike, *, backend: str | None = None,
                    impl: str | None = None, build: dict[str, Any] | None = None,
                    search: dict[str, Any] | None = None, metric: str | None = None,
                    keys: str | os.PathLike | None = None, from_best: float | None = None,
                    results: str | os.PathLike | None = None, max_memory: int | None = None,
                    max_rss: int | None = None, k: int = 10, threads: int = 1, seed: int = 0,
                    force: bool = False) -> SavedIndex:
    """``ann-bench index build``: read the vectors, pick the configuration (given, or the store's best for
    recall >= ``from_best``), build, check recall on the set's test queries when it has ground truth, save.

    ``dataset`` None with ``from_best``: the set of the most recent row in ``results``."""
    from ann_bench.backends import get_backend

    if dataset is None:
        if from_best is None or results is None:
            raise InputError("pass --dataset (the vectors to index)")
        dataset = latest_dataset(results)

    check_index_output(output, force=force, inputs=(dataset, keys, results))
    ensure_writable_dir(Path(output).expanduser())  # fail before the build, not after it
    build, search = dict(build or {}), dict(search or {})
    measured = None
    if from_best is not None:
        if backend is not None or build or search:
            raise InputError("--from-best takes the backend and its parameters from the results store; drop "
                             "--backend/--build/--search (or drop --from-best)")
        if results is None:
            raise InputError("--from-best needs --results (the store `ann-bench run` wrote)")
    elif backend is None:
        raise InputError("pass --backend (e.g. hnsw), or --from-best --recall R to take `ann-bench best`'s answer")
    vectors = read_vectors_for_index(dataset, metric=metric, keys=keys)
    if from_best is not None:
        r = best_configuration(results, vectors.dataset_hash, from_best, max_memory=max_memory, max_rss=max_rss)
        backend, impl, build, search = r.backend, r.impl, dict(r.build_params), dict(r.search_params)
        k = r.k
        measured = {"results": str(Path(results).expanduser().resolve()), "row": r.key, "recall_target": from_best,
                    "k": r.k, "mode": r.mode, "threads": r.threads, "recall": r.recall, "qps": r.qps,
                    "p99_ms": r.p99_ms, "build_s": r.build_s, "index_bytes": r.index_bytes, "created_at": r.created_at,
                    "host": r.host.get("hostname") if isinstance(r.host, dict) else None}
    cls = get_backend(backend, impl)
    if not cls.capabilities.saveable:
        raise InputError(f"{cls.label()} cannot be saved ({'; '.join(cls.capabilities.notes[:1])}); choose another "
                         "backend or implementation for an index directory")
    saved = build_index(vectors.X, cls.name, vectors.metric, impl=cls.impl, keys=vectors.keys, threads=threads,
                        seed=seed, search=search, source=vectors.source, **build)
    if measured is not None:
        saved.manifest["measured"] = measured
    check = recall_check(saved, vectors, k)
    if check is not None:
        saved.manifest["recall_check"] = check
    saved.save(output, force=force)
    return saved
