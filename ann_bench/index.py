"""A built index carried out of the benchmark into an application: build, save, open, search.

An *index directory* holds what one library wrote plus what ann-bench knows about it::

    DIR/index.bin       the library's native file (faiss write_index, hnswlib save_index, annoy save, ...)
    DIR/keys.json       the item keys, one per indexed vector (absent when the vectors had none)
    DIR/manifest.json   backend, impl, build and default search parameters, metric, dimension, n, the
                        vectors' content hash, library versions, index file and keys file size and sha256,
                        the recall/QPS measured for this configuration when it came from a results store, and
                        ``digest``: sha256 over all of the above (the manifest's canonical JSON without it)

The directory is written under a temporary name and renamed into place, so a reader never sees half of one; a
re-opened index is loaded, never rebuilt, and the directory is verified as a whole first: the manifest against
its digest, the keys file and the index file against the manifest's sha256. A manifest edited by hand (say its
dimension), a keys file or an index file swapped or truncated after the build is refused, not searched.
``--force`` replaces only such a verified directory holding nothing but these files.

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

FORMAT = 2  # 2: the manifest carries a digest over itself and the keys file's sha256 (1 had neither)
MANIFEST = "manifest.json"
INDEX_FILE = "index.bin"
KEYS_FILE = "keys.json"
DIGEST = "digest"
# Manifest fields that describe one opening, not the directory (never stored, never digested).
_RUNTIME_FIELDS = ("load_s",)


def manifest_digest(manifest: dict[str, Any]) -> str:
    """sha256 of the manifest's canonical JSON (sorted keys, no whitespace) without its ``digest`` field."""
    body = {key: value for key, value in manifest.items() if key != DIGEST}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=_json_default)
    return hashlib.sha256(text.encode()).hexdigest()


class ModifiedIndex(InputError):
    """An index directory whose manifest, keys or index file changed after ann-bench wrote it."""

    def __init__(self, path: Path, reason: str):
        self.reason = reason
        super().__init__(f"index directory {str(path)!r} was modified after ann-bench wrote it ({reason}); its "
                         "answers cannot be trusted: rebuild it with `ann-bench index build`")


def _modified(path: Path, reason: str) -> ModifiedIndex:
    return ModifiedIndex(path, reason)


def check_unique_keys(keys: np.ndarray, what: str) -> None:
    """InputError naming the first repeated key and its two rows (``what``: where the keys came from): an item
    key names one indexed vector (``key_of``, ``--exclude-self`` and every application mapping keys back rely on
    it)."""
    from ann_bench.data.vectorset import first_duplicate

    dup = first_duplicate(keys)
    if dup is not None:
        first, row = dup
        raise InputError(f"duplicate item key {str(keys[row])[:80]!r} in {what}, at rows {first} and {row}; item "
                         "keys must be unique, one per indexed vector: give distinct keys or omit them (row numbers)")


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
        from ann_bench.data.arrays import check_k

        k = check_k(k, self.n, "k")
        if not isinstance(Q, (str, bytes)):
            try:
                arr = np.asarray(Q)
            except (ValueError, TypeError):  # ragged: check_vectors says so in one line
                arr = None
            if arr is not None and arr.ndim == 1 and arr.dtype.kind in "fiub":
                if arr.shape[0] != self.dim:
                    raise InputError(f"the query is one {arr.shape[0]}-d vector but the index holds {self.dim}-d "
                                     "vectors; embed it with the model that made the index's vectors")
                Q = arr.reshape(1, -1)
            elif arr is not None and arr.ndim == 1 and arr.shape[0] > 0:
                Q = arr.reshape(1, -1)  # one vector of strings or complex numbers: refused by its dtype below
        return self.search_checked(check_vectors(Q, self.dim, "queries", self.metric), k, **search_params)

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
        only with ``force`` and only when it is an ann-bench index directory (verified, nothing else in it)."""
        target = check_index_output(directory, force=force)
        parent = ensure_writable_dir(target)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name[:80]}.", suffix=".tmp", dir=parent))
        try:
            t0 = time.perf_counter()
            self.index.save(tmp / INDEX_FILE)
            save_s = time.perf_counter() - t0
            manifest = {key: value for key, value in self.manifest.items()
                        if key not in (DIGEST, "keys_file", *_RUNTIME_FIELDS)}
            manifest["ann_bench_index"] = FORMAT
            manifest["index_file"] = {"name": INDEX_FILE, "bytes": (tmp / INDEX_FILE).stat().st_size,
                                      "sha256": file_sha256(tmp / INDEX_FILE)}
            manifest["save_s"] = round(save_s, 3)
            if self._keys is not None and manifest.get("keys"):
                with open(tmp / KEYS_FILE, "w", encoding="utf-8") as fh:
                    json.dump(list(self._keys), fh, ensure_ascii=False)
                manifest["keys_file"] = {"name": KEYS_FILE, "bytes": (tmp / KEYS_FILE).stat().st_size,
                                         "sha256": file_sha256(tmp / KEYS_FILE)}
            # The digest is taken over the manifest as a reader will parse it back from the file.
            manifest = json.loads(json.dumps(manifest, default=_json_default))
            manifest[DIGEST] = manifest_digest(manifest)
            with open(tmp / MANIFEST, "w", encoding="utf-8") as fh:
                json.dump(manifest, fh, indent=1, sort_keys=False)
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
    """True when ``path`` is a directory holding an ann-bench manifest (of any format; not yet verified)."""
    manifest = path / MANIFEST
    if not manifest.is_file():
        return False
    try:
        with open(manifest, encoding="utf-8") as fh:
            return json.load(fh).get("ann_bench_index") in (1, FORMAT)
    except (OSError, ValueError, AttributeError):
        return False


def _load_manifest(path: Path) -> dict[str, Any]:
    """The manifest of index directory ``path``, checked against its digest; InputError (one line) for a missing,
    unreadable, foreign, old-format or modified one."""
    manifest_path = path / MANIFEST
    try:
        with open(manifest_path, encoding="utf-8") as fh:
            manifest = json.load(fh)
    except FileNotFoundError:
        raise InputError(f"{str(path)!r} holds no {MANIFEST}: not an ann-bench index directory") from None
    except UnicodeDecodeError:
        raise _modified(path, f"{MANIFEST} is not UTF-8 JSON") from None
    except (OSError, ValueError) as exc:
        if isinstance(exc, ValueError):
            raise _modified(path, f"{MANIFEST} is not valid JSON: {str(exc).splitlines()[0][:80]}") from None
        raise InputError(f"cannot read {str(manifest_path)!r}: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("ann_bench_index") is None:
        raise InputError(f"{str(manifest_path)!r} is not an ann-bench index manifest")
    if manifest["ann_bench_index"] == 1:
        raise InputError(f"{str(path)!r} is an index of format 1, written by an earlier ann-bench whose manifest "
                         "carries no checksum, so it cannot be verified; rebuild it with `ann-bench index build` "
                         "(format 2)")
    if manifest["ann_bench_index"] != FORMAT:
        raise InputError(f"{str(path)!r} is an index of format {manifest['ann_bench_index']!r}; this version "
                         f"reads format {FORMAT}: rebuild it with `ann-bench index build`")
    if not isinstance(manifest.get(DIGEST), str):
        raise _modified(path, f"{MANIFEST} has no {DIGEST!r}")
    try:
        digest = manifest_digest(manifest)
    except (TypeError, ValueError):
        digest = None
    if digest != manifest[DIGEST]:
        raise _modified(path, f"{MANIFEST} does not match its digest")
    return manifest


def _check_file(path: Path, manifest: dict[str, Any], field: str, *, hash_it: bool) -> Path:
    """The file the manifest's ``field`` ({name, bytes, sha256}) names, checked to exist with that size (and
    sha256 when ``hash_it``); InputError saying the directory was modified otherwise."""
    entry = manifest.get(field)
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) or "/" in entry["name"] \
            or entry["name"] in ("", ".", "..", MANIFEST):
        raise _modified(path, f"{MANIFEST}'s {field!r} is malformed")
    file = path / entry["name"]
    if not file.is_file():
        raise _modified(path, f"{entry['name']} is missing")
    size = file.stat().st_size
    if size != entry.get("bytes"):
        said = f"{entry['bytes']:,}" if isinstance(entry.get("bytes"), int) else repr(entry.get("bytes"))
        raise _modified(path, f"{entry['name']} has {size:,} bytes, the manifest says {said}: changed or truncated")
    if hash_it and file_sha256(file) != entry.get("sha256"):
        raise _modified(path, f"{entry['name']} does not match the manifest's sha256")
    return file


def _own_files(manifest: dict[str, Any]) -> set[str]:
    """The names of the files an index directory's (not yet verified) manifest says it wrote."""
    names = {MANIFEST}
    for field, default in (("index_file", INDEX_FILE), ("keys_file", KEYS_FILE)):
        entry = manifest.get(field)
        if field == "keys_file" and not manifest.get("keys"):
            continue
        names.add(str(entry.get("name", default)) if isinstance(entry, dict) else default)
    return names


def check_index_output(directory: str | os.PathLike, *, force: bool = False,
                       inputs: tuple[str | os.PathLike | None, ...] = ()) -> Path:
    """``directory`` as a Path when an index directory may be written there; InputError otherwise.

    Never over a file, never over a directory ann-bench did not write (whatever ``force``), and over an index
    directory only with ``force`` and only when it is verified (its manifest's digest, its files' sizes and the
    keys' sha256) and holds nothing but the index's own files: a file of the user's in it is never deleted.
    Never where an input lives (an input file inside it would be deleted). A name the file system cannot hold is
    refused here, naming it, before any build (not after it, as the temporary directory's rename)."""
    from ann_bench.outputs import check_name

    target = check_name(directory, "-o")
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
        why = (f"its {MANIFEST} is not an ann-bench index manifest" if (target / MANIFEST).exists()
               else f"no {MANIFEST}")
        raise InputError(f"-o {str(target)!r} is a directory ann-bench did not write ({why}); ann-bench never "
                         "replaces it: choose another path")
    if not force:
        raise InputError(f"-o {str(target)!r} already holds an index; pass --force to replace it, or choose "
                         "another path")
    with open(target / MANIFEST, encoding="utf-8") as fh:
        manifest = json.load(fh)
    own = _own_files(manifest) if manifest.get("ann_bench_index") == FORMAT else {MANIFEST, INDEX_FILE, KEYS_FILE}
    foreign = sorted(entry.name for entry in target.iterdir() if entry.name not in own or not entry.is_file()
                     or entry.is_symlink())
    if foreign:
        raise InputError(f"-o {str(target)!r} holds {foreign[0]!r}, which is not part of the index ann-bench wrote; "
                         "--force replaces only an index directory with nothing else in it: move that file out or "
                         "choose another path")
    try:
        if manifest.get("ann_bench_index") == FORMAT:
            manifest = _load_manifest(target)
            if manifest.get("keys"):
                _check_file(target, manifest, "keys_file", hash_it=True)
        _check_file(target, manifest, "index_file", hash_it=False)
    except ModifiedIndex as exc:
        raise InputError(f"-o {str(target)!r} was modified after ann-bench wrote it ({exc.reason}); --force never "
                         "deletes what it cannot verify as its own: remove it yourself or choose another "
                         "path") from None
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
    from ann_bench.data.arrays import check_seed, check_threads
    from ann_bench.data.vectorset import check_keys
    from ann_bench.sysinfo import versions

    threads, seed = check_threads(threads, "threads"), check_seed(seed, "seed")
    metric = canonical_metric(metric)
    cls = get_backend(backend, impl)
    cls.check_available()
    X = check_vectors(X, None, "vectors", metric)
    index = cls(metric, X.shape[1], threads=threads, seed=seed, **build_params)
    index.check_data(index.params, *X.shape)
    search_params = index.validate_search_params(dict(search or {}))
    key_arr = check_keys(keys, len(X), "item") if keys is not None else None
    if key_arr is not None:
        check_unique_keys(key_arr, "keys")
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

    Loads the library's file (no rebuild) after verifying the directory as a whole: the manifest against its
    digest, the keys file against its sha256, the index file against its size and (``verify``, the default) its
    sha256. InputError (one line) for a missing or foreign directory, a modified one or an unavailable library."""
    from ann_bench.backends import get_backend
    from ann_bench.data.arrays import check_threads

    threads = check_threads(threads, "threads")
    path = Path(directory).expanduser()
    if not path.is_dir():
        raise InputError(f"index directory {str(path)!r} does not exist; write one with `ann-bench index build`")
    manifest = _load_manifest(path)
    try:
        metric, dim, n = canonical_metric(manifest["metric"]), int(manifest["dimension"]), int(manifest["n"])
        build_params, search_params = dict(manifest["build_params"]), dict(manifest["search_params"])
        cls = get_backend(manifest["backend"], manifest["impl"])
    except InputError:  # an unknown backend or metric: its own line
        raise
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"{str(path / MANIFEST)!r} is incomplete or malformed ({type(exc).__name__}: {exc}); "
                         "rebuild the index") from None
    cls.check_available()
    index_file = _check_file(path, manifest, "index_file", hash_it=verify)
    keys = None
    if manifest.get("keys"):
        keys_file = _check_file(path, manifest, "keys_file", hash_it=True)
        try:
            with open(keys_file, encoding="utf-8") as fh:
                raw = json.load(fh)
        except (OSError, ValueError) as exc:
            raise InputError(f"cannot read {str(keys_file)!r}: {exc}") from None
        if not isinstance(raw, list) or len(raw) != n or not all(isinstance(k, str) for k in raw):
            raise InputError(f"{str(keys_file)!r} does not hold {n:,} keys (strings); rebuild the index")
        keys = np.empty(n, dtype=object)
        keys[:] = raw
        check_unique_keys(keys, f"the keys of index {str(path)!r}")
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
                check_unique_keys(key_arr, f"--keys {str(keys)!r}")
            elif key_arr is not None:
                check_unique_keys(key_arr, f"the train keys of {str(path)!r}")
            gt = (vs.load_test(), vs.neighbors, vs.distances) if vs.has_groundtruth else None
            from ann_bench.search import model_identity

            source = {"dataset": str(path.resolve()), "dataset_name": vs.name, "dataset_hash": vs.content_hash()}
            identity = model_identity(vs.attrs)
            if identity:  # what embedded these vectors: `search --model` embeds its queries the same way, or stops
                source["model_identity"] = identity
            return Vectors(X, vs.metric, key_arr, source, vs.content_hash(), gt)
    if metric is None:
        raise InputError(f"--metric is required for a vector file ({str(path)!r} does not say its metric); "
                         "use euclidean, angular or ip")
    metric = canonical_metric(metric)
    raw = read_vectors(path)
    X = check_vectors(raw, None, f"vectors of {str(path)!r}", metric)
    key_arr = read_keys(keys, len(X), "--keys") if keys is not None else None
    if key_arr is not None:
        check_unique_keys(key_arr, f"--keys {str(keys)!r}")
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
                    max_rss: int | None = None, k: int | None = None, threads: int = 1, seed: int = 0,
                    force: bool = False) -> SavedIndex:
    """``ann-bench index build``: read the vectors, pick the configuration (given, or the store's best for
    recall >= ``from_best``), build, check recall on the set's test queries when it has ground truth, save.

    ``dataset`` None with ``from_best``: the set of the most recent row in ``results``. ``k``: with
    ``from_best``, which stored k the recall target applies to (None: the only one stored), and the recall
    check's k; otherwise the recall check's k (default 10)."""
    from ann_bench.backends import get_backend
    from ann_bench.data.arrays import check_k, check_seed, check_threads

    threads, seed = check_threads(threads), check_seed(seed)
    if k is not None:
        k = check_k(k)

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
        r = best_configuration(results, vectors.dataset_hash, from_best, max_memory=max_memory, max_rss=max_rss, k=k)
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
    check = recall_check(saved, vectors, 10 if k is None else k)
    if check is not None:
        saved.manifest["recall_check"] = check
    saved.save(output, force=force)
    return saved
