"""The directory an embedded database (LanceDB, Chroma, Milvus Lite) writes to while its index is open.

Each index owns one directory under ``<cache dir>/dbs/`` (``$ANN_BENCH_CACHE`` chooses the cache dir: on disk,
where a database's files would be in use, not a RAM-backed /tmp), named ``<kind>-<pid>-<random>`` after the
process that made it. It is removed, after the database's client is closed (its threads stopped), by the index's
``close()``, when the index is garbage-collected, or at the interpreter's exit. A process killed outright (SIGKILL,
the out-of-memory killer, a worker's timeout) runs none of these: every new database index sweeps the directories
whose owning process is gone (:func:`sweep_stale`), so such leftovers go at the next run. A recycled pid that is
alive again keeps its dead predecessor's directory until that process, too, has ended.

:class:`DatabaseIndex` is what the three database backends share: the directory, ``close``, ``index_bytes`` (the
directory's size on disk), save/load of the whole directory, and the build split into its two timed steps.

Saved indexes are one uncompressed tar of the directory tree (:func:`pack_tree`), read back by :func:`unpack_tree`,
which accepts regular files and directories with plain relative names only.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
import tempfile
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ann_bench.atomic import pid_alive
from ann_bench.backends.base import Index
from ann_bench.config import cache_dir
from ann_bench.errors import InputError

MANIFEST = "ann-bench.json"


def root() -> Path:
    """Where database directories are made: ``<cache dir>/dbs``."""
    return cache_dir() / "dbs"


def _owner_pid(name: str) -> int | None:
    """The pid in a directory name ``<kind>-<pid>-<random>``, or None for a name of another form."""
    parts = name.split("-")
    return int(parts[1]) if len(parts) >= 3 and parts[1].isdigit() else None


def sweep_stale() -> list[str]:
    """Remove the database directories whose owning process is no longer running; return their names."""
    base = root()
    if not base.is_dir():
        return []
    removed = []
    for entry in base.iterdir():
        pid = _owner_pid(entry.name)
        if pid is not None and pid != os.getpid() and not pid_alive(pid):
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry.name)
    return removed


def _close(closers: list[Callable[[], None]], path: str) -> None:
    """Run the owner's close callbacks (newest first), then remove its directory. Each runs once."""
    while closers:
        try:
            closers.pop()()
        except Exception:  # a client that fails to close must not keep its files on disk
            pass
    shutil.rmtree(path, ignore_errors=True)


class DbDir:
    """A database directory owned by ``owner`` (an index): see the module's docstring.

    ``on_close(fn)`` registers what stops the database's client (its server threads, its open files); those run
    before the directory is removed. Neither holds a reference to the owner, so garbage collection still runs.
    """

    def __init__(self, owner: object, kind: str):
        base = root()
        base.mkdir(parents=True, exist_ok=True)
        self.path = Path(tempfile.mkdtemp(prefix=f"{kind}-{os.getpid()}-", dir=base))
        self._closers: list[Callable[[], None]] = []
        self._finalizer = weakref.finalize(owner, _close, self._closers, str(self.path))

    def on_close(self, fn: Callable[[], None]) -> None:
        self._closers.append(fn)

    def close(self) -> None:
        self._finalizer()

    @property
    def closed(self) -> bool:
        return not self._finalizer.alive

    def size(self) -> int:
        """Bytes of the regular files under the directory (the database's size on disk, apparent sizes)."""
        total = 0
        for folder, _, files in os.walk(self.path):
            for name in files:
                with_path = os.path.join(folder, name)
                if not os.path.islink(with_path):
                    total += os.lstat(with_path).st_size
        return total


def pack_tree(directory: str | os.PathLike, path: str | os.PathLike, manifest: dict[str, Any]) -> None:
    """Write the directory tree under ``directory`` into ONE uncompressed tar at ``path``, after a JSON
    ``manifest``; entries sorted, headers without time or owner, so equal trees give equal bytes."""
    directory = Path(directory)
    with open(path, "wb") as raw, tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        blob = json.dumps(manifest, sort_keys=True).encode()
        tar.addfile(_member(MANIFEST, tarfile.REGTYPE, len(blob)), io.BytesIO(blob))
        for folder, dirs, files in os.walk(directory):
            dirs.sort()
            rel = Path(folder).relative_to(directory)
            for name in dirs:
                tar.addfile(_member((rel / name).as_posix(), tarfile.DIRTYPE, 0))
            for name in sorted(files):
                file = Path(folder) / name
                if file.is_symlink():
                    continue
                with open(file, "rb") as fh:
                    tar.addfile(_member((rel / name).as_posix(), tarfile.REGTYPE, file.stat().st_size), fh)


def _member(name: str, kind: bytes, size: int = 0) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.size, info.mtime, info.uid, info.gid = kind, size, 0, 0, 0
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    return info


def unpack_tree(path: str | os.PathLike, directory: str | os.PathLike, what: str) -> dict[str, Any]:
    """Extract a file written by :func:`pack_tree` into ``directory``; return its manifest. Anything but regular
    files and directories with relative names inside ``directory``, or a file that is no such tar, is an
    InputError naming ``what`` it should have been."""
    source = os.fspath(path)
    bad = f"{source!r} is not {what} saved by ann-bench"
    manifest = None
    try:
        with tarfile.open(source, mode="r:") as tar:
            for member in tar:
                parts = Path(member.name).parts
                if (not (member.isreg() or member.isdir()) or not parts or member.name.startswith("/")
                        or any(p in ("", ".", "..") for p in parts) or "\\" in member.name):
                    raise InputError(f"{bad} (unexpected entry {member.name!r})")
                if member.name == MANIFEST:
                    manifest = json.loads(tar.extractfile(member).read().decode())
                    continue
                target = Path(directory, *parts)
                if member.isdir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with tar.extractfile(member) as fh, open(target, "wb") as out:
                    shutil.copyfileobj(fh, out)
    except (tarfile.TarError, OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{bad} ({exc})") from None
    if not isinstance(manifest, dict):
        raise InputError(f"{bad} (no manifest)")
    return manifest


def check_manifest(manifest: dict[str, Any], expected: dict[str, Any], label: str, source: str) -> None:
    """Refuse a saved database built with other parameters than this index's: name the first that differs."""
    for key, wanted in expected.items():
        found = manifest.get(key)
        if found != wanted:
            raise InputError(f"{label}: {source!r} was built with {key}={found} (not {wanted}); build it again "
                             "with these parameters")


class DatabaseIndex(Index):
    """An index held by an embedded database in a :class:`DbDir`. Subclasses set ``kind`` and fill in
    ``_insert(X)`` (create the table or collection and add the vectors), ``_make_index()`` (build the vector
    index over them), ``_open()`` (reopen the database found in ``self.dir.path`` after :meth:`load`) and, where
    the database buffers writes, ``_flush()`` (before :meth:`save` copies its files).

    ``build`` = insert + index creation; the two are timed apart into ``build_times`` (``insert_s``, ``index_s``).
    The worker records the whole build as ``build_s``: this interface has no field for the split, which the
    benchmarks read from ``build_times``.
    """

    kind: str = "db"

    def __init__(self, metric: str, dim: int, threads: int = 1, seed: int = 0, **build_params: Any):
        super().__init__(metric, dim, threads, seed, **build_params)
        sweep_stale()  # what a killed process left behind goes at the next run
        self.dir: DbDir | None = None
        self.build_times: dict[str, float] = {}

    def _new_dir(self) -> Path:
        if self.dir is not None:
            self.dir.close()
        self.dir = DbDir(self, self.kind)
        return self.dir.path

    def build(self, X: np.ndarray) -> None:
        import time

        X = np.ascontiguousarray(X, dtype=np.float32)
        self.check_shape(X)
        self._new_dir()
        t0 = time.perf_counter()
        self._insert(X)
        t1 = time.perf_counter()
        self._make_index()
        self.build_times = {"insert_s": t1 - t0, "index_s": time.perf_counter() - t1}
        self._built = True
        self._apply_search_params(self.search_config or self.validate_search_params({}))

    def _insert(self, X: np.ndarray) -> None:
        raise NotImplementedError

    def _make_index(self) -> None:
        raise NotImplementedError

    def _open(self) -> None:
        raise NotImplementedError

    def _flush(self) -> None:
        """Make the files on disk hold everything inserted (default: they already do)."""

    def close(self) -> None:
        """Stop the database's client and remove its directory (also done on garbage collection and at exit)."""
        if self.dir is not None:
            self.dir.close()
        self._built = False

    def index_bytes(self) -> int:
        """The database directory's size on disk: the vectors as stored, the index and the database's own files."""
        self._flush()
        return self.dir.size()

    def _manifest(self) -> dict[str, Any]:
        return {"backend": self.label(), "metric": self.metric, "dim": self.dim, **self.params}

    def save(self, path: str | os.PathLike) -> None:
        self._flush()
        pack_tree(self.dir.path, path, self._manifest())

    def load(self, path: str | os.PathLike) -> None:
        target = self._new_dir()
        manifest = unpack_tree(path, target, f"a {self.label()} database")
        check_manifest(manifest, self._manifest(), self.label(), os.fspath(path))
        self._open()
        self._built = True
        self._apply_search_params(self.search_config or self.validate_search_params({}))
