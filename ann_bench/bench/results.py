"""The results store: one SQLite file (stdlib sqlite3, WAL) and a folder of neighbour files beside it.

One row per (dataset hash, backend, impl, build params, search params, k, mode, threads): re-running a
configuration replaces its row — except that a failed re-run (``run --force``) of a configuration measured ``ok``
is kept beside that row, never over it. The ids each configuration returned are kept in
``<store file name>.neighbors/<key>.npy`` (``r.sqlite.neighbors/`` for ``r.sqlite``: a folder per store file, so
``r.sqlite`` and ``r.db`` never share one) so that recall can be recomputed later (e.g. against deeper ground
truth or with another rule); each is written to a temporary name and renamed before the row that names it is
committed. Every name a dataset was run under (file name, path) is kept in ``dataset_names``, so a set can be
chosen by any of them or by its content hash.

A new store is created whole under a temporary name and linked into place, so two runs creating the same store
at once never see half of one; read-only commands open a file that is not an ann-bench store without creating
anything beside it (no ``-wal``/``-shm``).
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import hashlib
import io
import json
import os
import sqlite3
import time
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ann_bench.atomic import _umask, atomic_path, ensure_writable_dir
from ann_bench.errors import InputError

SCHEMA_VERSION = 1
CONTENDED_SHARE = 0.9  # a timed run that got less CPU than this share of its query threads' wall time


@dataclass
class Record:
    """One measured (or failed) configuration: everything needed to compare, plot and reproduce it."""

    dataset_hash: str
    dataset_name: str
    backend: str
    impl: str
    build_params: dict[str, Any]
    search_params: dict[str, Any]
    k: int
    mode: str  # "batch" | "single"
    threads: int
    status: str = "ok"  # "ok" | "failed" | "timeout"
    error: str = ""
    dataset_path: str = ""
    metric: str = ""
    n_train: int = 0
    n_test: int = 0
    dim: int = 0
    recall: float | None = None  # scale-free, tie-aware (metrics.tie_recall); None on rows of an older rule
    id_recall: float | None = None
    qps: float | None = None
    search_s: float | None = None  # wall time of the run the figures come from
    mean_ms: float | None = None
    p50_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None
    p999_ms: float | None = None
    runs: int = 0
    build_s: float | None = None
    index_bytes: int | None = None
    rss_delta_bytes: int | None = None
    peak_rss_bytes: int | None = None
    index_cached: int = 0  # 1: the index was loaded from the index cache; build figures are those of its build
    label_metrics: dict[str, float] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    host: dict[str, Any] = field(default_factory=dict)
    created_at: str = ""
    neighbors_file: str = ""
    neighbors_sha256: str = ""  # of the neighbour file's bytes: a deleted or altered file is detected
    recall_ab: float | None = None  # ann-benchmarks' rule: distance <= true k-th + 1e-3 (absolute)
    recall_rule: str = ""  # the rule `recall` was computed by; "" on rows of ann-bench < 0.2 (ann-benchmarks')
    attempts: int = 1  # build attempts: > 1 when a Ray node died under an earlier one and the job ran again
    retry_reason: str = ""  # why it ran again (the infrastructure failure of the earlier attempt)
    # What the machine gave the timed runs (issue 33): process CPU time / wall time per query thread of the run the
    # figures come from (< CONTENDED_SHARE: another process had the core part of the time), the 1-minute load
    # average when the runs ended, and the median run's search time beside the best one's (search_s).
    cpu_share: float | None = None
    load_avg: float | None = None
    search_s_median: float | None = None
    pinned_cpus: str | None = None  # "2" or "0,1": the CPUs the timed searches were pinned to (--pin-cpus)
    # Filtered search (run --filter, see ann_bench.bench.filters): the filter ("" for an unfiltered row), the
    # strategy ("in-index", "post:8") and the mean allowed fraction of the base per query. Recall is against the
    # exact *filtered* ground truth.
    filter_spec: str = ""
    filter_strategy: str = ""
    filter_selectivity: float | None = None
    # An embedded database's engine timed without its Python client (Index.engine_query), right after the client on
    # the same queries and mode, best of the same runs: qps stays the client's figure, the one users get (issue 35).
    qps_engine: float | None = None
    cpu_share_engine: float | None = None  # the engine's timed run's CPU share (see cpu_share); < 0.9: contended
    # A collection that changes (ann-bench stream, see ann_bench.bench.stream): the runbook (NAME@DIGEST; "" for a
    # static row), the step's position in it and its operation (build, insert, delete, search; rebuild: the index
    # built from scratch on the final live set), the live items after it, the throughput of an update step
    # (items / update_s), the process RSS after it, and how the backend followed the changes (Index.updates).
    stream_runbook: str = ""
    stream_step: int | None = None
    stream_op: str = ""
    live_n: int | None = None
    items_per_s: float | None = None
    update_s: float | None = None
    rss_bytes: int | None = None
    stream_updates: str = ""
    update_threads: int | None = None  # threads of the build, inserts and deletes (stream --build-threads)
    # An embedded database's build, split (issue 35): inserting the rows, then creating the index (their sum is
    # build_s); None for libraries, whose build is one call.
    build_insert_s: float | None = None
    build_index_s: float | None = None

    @property
    def contended(self) -> bool:
        """Whether the worker got less than 90 % of its query threads' time while it was timed: its QPS and
        latencies are the machine's, not the library's."""
        return self.status == "ok" and self.cpu_share is not None and self.cpu_share < CONTENDED_SHARE

    @property
    def key(self) -> str:
        """The resume key: a hash of the configuration's identity."""
        ident = [self.dataset_hash, self.backend, self.impl, canon_params(self.build_params),
                 canon_params(self.search_params), int(self.k), self.mode, int(self.threads)]
        if self.filter_spec:  # unfiltered rows keep the keys they always had
            ident += [self.filter_spec, self.filter_strategy]
        if self.stream_runbook:  # so do static rows
            ident += [self.stream_runbook, self.stream_step]
        return hashlib.sha256(json.dumps(ident).encode()).hexdigest()[:24]

    def label(self) -> str:
        return f"{self.backend}[{self.impl}]"


def _runbook_matches(stored: str, wanted: str) -> bool:
    """Whether a row's runbook ``stored`` (NAME@DIGEST, "" for static rows) is the ``wanted`` one: "" for static
    rows; else NAME@DIGEST, NAME, or @DIGEST-prefix."""
    if not wanted or not stored:
        return stored == wanted
    name, _, digest = stored.partition("@")
    if wanted.startswith("@"):
        return digest.startswith(wanted[1:])
    return wanted in (stored, name)


_JSON_FIELDS = ("build_params", "search_params", "label_metrics", "versions", "host")
_FIELDS = [f.name for f in dataclasses.fields(Record)]
_DEFAULTS = {f.name: f.default for f in dataclasses.fields(Record) if f.default is not dataclasses.MISSING}


def canon_params(params: dict[str, Any]) -> str:
    """Parameters as canonical JSON (sorted keys): how the store keys and saves them."""
    return json.dumps(params, sort_keys=True, separators=(",", ":"))


def _column_type(f: dataclasses.Field) -> str:
    t = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", "")
    if t.startswith("int"):
        return "INTEGER"
    if t.startswith("float"):
        return "REAL"
    return "TEXT"


SQLITE_MAGIC = b"SQLite format 3\x00"
APPLICATION_ID = 0x414E4E42  # "ANNB" in the SQLite header: the marker of an ann-bench results store
_CORE_COLUMNS = {"key", "dataset_hash", "backend", "impl", "build_params", "search_params", "k", "mode", "threads",
                 "status", "recall", "qps"}


def is_results_store(path: str | os.PathLike) -> bool:
    """Whether ``path`` is an ann-bench results store (marked, or an older unmarked one), read without writing
    or creating anything: the header's application id, else the schema read with SQLite's ``immutable`` flag
    (which takes no lock and makes no ``-wal``/``-shm`` file beside another application's WAL database)."""
    return _probe_kind(Path(path)) in ("marked", "legacy")


def _probe_kind(path: Path) -> str:
    """:func:`_kind` of the file at ``path`` ('absent' or 'not-sqlite' when it is not an SQLite file), without
    creating any file beside it."""
    try:
        with open(path, "rb") as fh:
            header = fh.read(100)
    except OSError:
        return "absent"
    if not header.startswith(SQLITE_MAGIC):
        return "not-sqlite"
    if len(header) >= 72 and int.from_bytes(header[68:72], "big") == APPLICATION_ID:
        return "marked"
    try:
        uri = "file:" + urllib.parse.quote(str(path.resolve()))
        db = sqlite3.connect(f"{uri}?mode=ro&immutable=1", uri=True, timeout=30)
        try:
            return _kind(db)
        finally:
            db.close()
    except sqlite3.Error:
        return "foreign"


def _connect_read_only(path: Path) -> sqlite3.Connection:
    """A connection that cannot write: SQLite's read-only mode, or ``immutable`` where even that needs a write
    (a WAL database on read-only media, whose -shm file cannot be created)."""
    uri = "file:" + urllib.parse.quote(str(path.resolve()))
    db = sqlite3.connect(f"{uri}?mode=ro", uri=True, timeout=30)
    try:
        db.execute("SELECT count(*) FROM sqlite_master").fetchone()
        return db
    except sqlite3.OperationalError:
        db.close()
    db = sqlite3.connect(f"{uri}?mode=ro&immutable=1", uri=True, timeout=30)
    db.execute("SELECT count(*) FROM sqlite_master").fetchone()
    return db


def _kind(db: sqlite3.Connection) -> str:
    """'marked' (an ann-bench store), 'legacy' (an ann-bench store from before the marker), 'empty' (no
    tables) or 'foreign' — found by reading only."""
    if db.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID:
        return "marked"
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if not tables:
        return "empty"
    if "results" in tables and db.execute("PRAGMA user_version").fetchone()[0] == 1:
        cols = {r[1] for r in db.execute("PRAGMA table_info(results)")}
        if _CORE_COLUMNS <= cols:
            return "legacy"
    return "foreign"


FAILED_SUFFIX = "~failed"  # the row key of a failed re-run kept beside its configuration's measured row
# The longest suffix ann-bench adds to a store's file name (its folders and SQLite's side files)
_STORE_SUFFIXES = (".neighbors", ".tunes", "-wal", "-shm", "-journal")


def check_store_name(path: Path) -> None:
    """InputError before anything is created when the store's name, or a name derived from it, is longer than
    the file system allows."""
    name_max = 255
    parent = path.parent if str(path.parent) else Path(".")
    try:
        name_max = os.pathconf(parent if parent.exists() else ".", "PC_NAME_MAX")
    except (OSError, ValueError):
        pass
    longest = len(path.name.encode()) + max(len(s) for s in _STORE_SUFFIXES)
    if longest > name_max:
        raise InputError(f"results store name {path.name[:40]!r}... is {len(path.name.encode())} bytes; with its "
                         f"folder suffix '.neighbors' it exceeds the file system's {name_max}-byte limit: give a "
                         f"--results name of at most {name_max - max(len(s) for s in _STORE_SUFFIXES)} bytes")


def _create_store(path: Path) -> None:
    """Create an empty, marked store at ``path`` atomically: made whole under a temporary name, then hard-linked
    into place (which fails if another process linked its own first: then that one is used). A concurrent
    reader or creator sees no file or a whole store, never a half-created one."""
    import tempfile

    from ann_bench.atomic import _temp_prefix

    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path.name), suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        db = sqlite3.connect(tmp)
        try:
            cols = ", ".join(f"{f.name} {_column_type(f)}" for f in dataclasses.fields(Record))
            with db:
                db.execute(f"CREATE TABLE results (key TEXT PRIMARY KEY, {cols})")
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        finally:
            db.close()
        os.chmod(tmp, 0o666 & ~_umask())
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass  # another run created it first: use that one
        except OSError:  # a file system without hard links: rename, unless another run got there first
            if not os.path.lexists(path):
                os.replace(tmp, path)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def _enter_wal(db: sqlite3.Connection, wait_s: float = 30.0) -> None:
    """Switch ``db`` to WAL mode, waiting while another connection holds the lock the switch needs: SQLite
    answers "database is locked" at once there, without calling the busy handler (seen when two runs create or
    close one store at the same moment)."""
    deadline, pause = time.monotonic() + wait_s, 0.005
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(pause)
            pause = min(pause * 2, 0.2)


class ResultStore:
    """The store at ``path``. Use as a context manager or call :meth:`close`.

    ``create=True`` (``run``): open for writing, creating the store in a new or empty file; a file that holds
    anything else (not SQLite, or another application's SQLite database) is refused before anything is
    written to it. ``create=False`` (``results``, ``plot``, ``report``, ``best``): read-only — the file is
    never written, not even its header, so a store on read-only media can be read too.
    """

    def __init__(self, path: str | os.PathLike, create: bool = True):
        self.path = Path(path).expanduser()
        self.read_only = not create
        not_store = (f"{str(self.path)!r} is not an ann-bench results store; pass another --results path "
                     "(ann-bench never writes into another application's file)")
        exists = self.path.exists()
        if not create and not exists:
            raise InputError(f"results store {str(self.path)!r} does not exist; run `ann-bench run` first "
                             "or pass --results")
        if exists and not self.path.is_file():
            raise InputError(f"results store {str(self.path)!r} is not a file; pass another --results path")
        if exists and self.path.stat().st_size > 0:
            try:
                with open(self.path, "rb") as fh:
                    magic = fh.read(16)
            except OSError as exc:
                raise InputError(f"cannot read results store {str(self.path)!r}: {exc.strerror}") from None
            if magic != SQLITE_MAGIC:
                raise InputError(not_store + " (it is not an SQLite file)")
        elif not create:
            raise InputError(f"results store {str(self.path)!r} is empty; run `ann-bench run` first")
        try:
            if self.read_only:
                if _probe_kind(self.path) not in ("marked", "legacy"):  # before any open that could add files
                    raise InputError(not_store)
                self.db = _connect_read_only(self.path)
                self.db.row_factory = sqlite3.Row
                kind = _kind(self.db)
                if kind not in ("marked", "legacy"):
                    self.db.close()
                    raise InputError(not_store)
                self._check_version()
            else:
                if exists and self.path.stat().st_size > 0:
                    if _probe_kind(self.path) not in ("marked", "legacy"):
                        raise InputError(not_store)
                check_store_name(self.path)
                ensure_writable_dir(self.path)
                for folder in (self.neighbors_dir, self.path.with_name(self.path.name + ".tunes")):
                    if os.path.lexists(folder) and not folder.is_dir():
                        raise InputError(f"{str(folder)!r} should be a folder of the store {str(self.path)!r} but "
                                         "is a file; move it away or pass another --results path")
                if not exists:
                    _create_store(self.path)
                self.db = sqlite3.connect(self.path, timeout=30)
                self.db.row_factory = sqlite3.Row
                _enter_wal(self.db)
                self.db.execute("PRAGMA synchronous=NORMAL")
                self._migrate()
        except sqlite3.DatabaseError as exc:
            raise InputError(f"{str(self.path)!r} is not a readable ann-bench results store ({exc}); "
                             "pass another --results path") from None
        self._columns = {row[1] for row in self.db.execute("PRAGMA table_info(results)")}
        self._has_names = self.db.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'dataset_names'").fetchone() is not None

    def _check_version(self) -> None:
        version = self.db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise InputError(f"results store {str(self.path)!r} has schema {version}, newer than this ann-bench "
                             f"({SCHEMA_VERSION}); upgrade ann-bench")

    @property
    def neighbors_dir(self) -> Path:
        """``<store file name>.neighbors``: one folder per store file (``r.sqlite`` and ``r.db`` never share one).
        Rows written by ann-bench < 0.3 name their files in ``<stem>.neighbors/``; they are read where they are."""
        return self.path.with_name(self.path.name + ".neighbors")

    def _migrate(self) -> None:
        self._check_version()
        cols = ", ".join(f"{f.name} {_column_type(f)}" for f in dataclasses.fields(Record))
        with self.db:
            self.db.execute(f"CREATE TABLE IF NOT EXISTS results (key TEXT PRIMARY KEY, {cols})")
            # Columns added since a store was created (e.g. index_cached) are added, NULL in older rows.
            have = {row[1] for row in self.db.execute("PRAGMA table_info(results)")}
            for f in dataclasses.fields(Record):
                if f.name not in have:
                    self.db.execute(f"ALTER TABLE results ADD COLUMN {f.name} {_column_type(f)}")
            self.db.execute("CREATE INDEX IF NOT EXISTS results_dataset ON results (dataset_hash)")
            self.db.execute("CREATE TABLE IF NOT EXISTS dataset_names (dataset_hash TEXT NOT NULL, "
                            "dataset_name TEXT NOT NULL, dataset_path TEXT NOT NULL, "
                            "PRIMARY KEY (dataset_hash, dataset_name, dataset_path))")
            self.db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            self.db.execute(f"PRAGMA application_id = {APPLICATION_ID}")

    # ---- writing --------------------------------------------------------------------------------------
    def save(self, record: Record, neighbors: np.ndarray | None = None) -> bool:
        """Store ``record`` (replacing a previous one with the same key) and its returned ids (nq, k). True when
        ``record`` failed and was stored beside a measured row of its configuration, which it did not replace."""
        key = record.key
        if neighbors is not None:
            self.neighbors_dir.mkdir(parents=True, exist_ok=True)
            target = self.neighbors_dir / f"{key}.npy"
            I = np.asarray(neighbors)
            I = I.astype(np.int32) if I.size == 0 or I.max() < 2**31 - 1 else I.astype(np.int64)
            buf = io.BytesIO()
            np.save(buf, I)
            with atomic_path(target, ".npy") as tmp:
                with open(tmp, "wb") as fh:
                    fh.write(buf.getvalue())
            record.neighbors_file = str(target.relative_to(self.path.parent))
            record.neighbors_sha256 = hashlib.sha256(buf.getvalue()).hexdigest()
        row = {name: getattr(record, name) for name in _FIELDS}
        for name in _JSON_FIELDS:
            row[name] = canon_params(row[name])
        row["key"] = key
        names = ["key", *_FIELDS]
        placeholders = ", ".join(f":{n}" for n in names)
        with self.db:
            if record.status != "ok":
                # A failed re-run never replaces a measured row: the failure is kept beside it (its own key), and
                # both show in `results`; a later successful run replaces the measured row and drops the failure.
                held = self.db.execute("SELECT status FROM results WHERE key = ?", (key,)).fetchone()
                if held is not None and held[0] == "ok":
                    row["key"] = key + FAILED_SUFFIX
            else:
                self.db.execute("DELETE FROM results WHERE key = ?", (key + FAILED_SUFFIX,))
            self.db.execute(f"INSERT OR REPLACE INTO results ({', '.join(names)}) VALUES ({placeholders})", row)
        return row["key"] != key

    def register_dataset(self, dataset_hash: str, name: str, path: str) -> None:
        """Remember that the set ``dataset_hash`` was run under ``name`` (and ``path``): `--dataset` accepts
        every name a set was given, whichever of them its rows were first measured under."""
        with self.db:
            for alias in dict.fromkeys((name, Path(path).name)):  # its name, and its file's name without a folder
                self.db.execute("INSERT OR IGNORE INTO dataset_names VALUES (?, ?, ?)", (dataset_hash, alias, path))

    # ---- reading --------------------------------------------------------------------------------------
    def keys(self, dataset_hash: str, statuses: tuple[str, ...] = ("ok",),
             bad_files: list[str] | None = None, contended: bool = True) -> set[str]:
        """Keys of the stored configurations of a dataset whose status is one of ``statuses`` and whose
        neighbour file (if they have one) is intact. Rows whose file is missing or altered are left out — so a
        resumed sweep measures them again — and described in ``bad_files`` when a list is given; so are
        contended rows when ``contended`` is False (``run --remeasure-contended``)."""
        marks = ", ".join("?" for _ in statuses)
        rows = self.db.execute(
            f"SELECT * FROM results WHERE dataset_hash = ? AND status IN ({marks})", (dataset_hash, *statuses)
        )
        out = set()
        for row in rows:
            record = self._record(row)
            if record.status == "ok" and record.recall is None:
                continue  # measured by an older recall rule: measure it again
            if not contended and record.contended:
                continue
            problem = self.neighbors_problem(record)
            if problem is None:
                out.add(row["key"])
            elif bad_files is not None:
                bad_files.append(problem)
        return out

    def neighbors_problem(self, record: Record) -> str | None:
        """What is wrong with ``record``'s neighbour file (missing, altered, unreadable), or None."""
        if not record.neighbors_file:
            return None
        path = self.path.parent / record.neighbors_file
        try:
            data = path.read_bytes()
        except OSError as exc:
            return f"neighbour file {str(path)!r} of {record.label()} {params_str(record.search_params)} is " \
                   f"unreadable ({exc.strerror or exc})"
        if record.neighbors_sha256:
            if hashlib.sha256(data).hexdigest() != record.neighbors_sha256:
                return f"neighbour file {str(path)!r} of {record.label()} {params_str(record.search_params)} " \
                       "no longer matches the sha256 recorded when it was written"
        else:
            try:
                np.load(io.BytesIO(data), allow_pickle=False)
            except (ValueError, OSError, EOFError) as exc:
                return f"neighbour file {str(path)!r} is not a readable .npy ({exc})"
        return None

    def records(self, dataset: str | None = None, backend: str | None = None, mode: str | None = None,
                k: int | None = None, filter_spec: str | None = "", stream: str | None = "") -> list[Record]:
        """Stored records, oldest first, filtered by dataset (hash, hash prefix, name or path), backend, mode, k,
        and filter: by default the unfiltered rows only (a filtered row's recall and QPS answer another question),
        ``filter_spec="label"`` the rows of that filter, None every row; and runbook: by default the static rows
        only (a stream row measures an index after updates), ``stream="NAME@DIGEST"`` (or a NAME, or a digest
        prefix) the rows of that runbook, None every row."""
        sql, args = "SELECT * FROM results WHERE 1=1", []
        if dataset:
            # a hash prefix compared as text (not LIKE: '%' and '_' in a name are not wildcards), or any name or path
            # the set was run under
            sql += " AND (substr(dataset_hash, 1, ?) = ? OR dataset_name = ? OR dataset_path = ?"
            args += [len(dataset), dataset, dataset, dataset]
            if self._has_names:
                sql += (" OR dataset_hash IN (SELECT dataset_hash FROM dataset_names WHERE dataset_name = ? "
                        "OR dataset_path = ?)")
                args += [dataset, dataset]
            sql += ")"
        if backend:
            sql += " AND backend = ?"
            args.append(backend)
        if mode:
            sql += " AND mode = ?"
            args.append(mode)
        if k is not None:
            sql += " AND k = ?"
            args.append(int(k))
        sql += " ORDER BY rowid"
        rows = [self._record(r) for r in self.db.execute(sql, args)]
        rows = rows if filter_spec is None else [r for r in rows if (r.filter_spec or "") == filter_spec]
        return rows if stream is None else [r for r in rows if _runbook_matches(r.stream_runbook or "", stream)]

    def runbooks(self, dataset: str | None = None) -> list[str]:
        """The runbooks (NAME@DIGEST) of the stored stream rows, in the order first stored."""
        return list(dict.fromkeys(r.stream_runbook for r in self.records(dataset, filter_spec=None, stream=None)
                                  if r.stream_runbook))

    def datasets(self) -> list[dict[str, Any]]:
        rows = self.db.execute(
            "SELECT dataset_hash, dataset_name, dataset_path, metric, n_train, dim, COUNT(*) AS rows "
            "FROM results GROUP BY dataset_hash ORDER BY MIN(rowid)"
        )
        return [dict(r) for r in rows]

    def load_neighbors(self, record: Record) -> np.ndarray:
        """The ids (nq, k) returned by the configuration of ``record``."""
        if not record.neighbors_file:
            raise InputError(f"record {record.key} has no neighbour file")
        problem = self.neighbors_problem(record)
        if problem is not None:
            raise InputError(f"{problem}; re-measure it with `ann-bench run` (the same command re-runs it)")
        return np.load(self.path.parent / record.neighbors_file, allow_pickle=False)

    def _record(self, row: sqlite3.Row) -> Record:
        # A store from an older ann-bench, opened read-only, may lack columns added since: their defaults.
        data = {name: row[name] if name in self._columns else _DEFAULTS.get(name) for name in _FIELDS}
        for name in _JSON_FIELDS:
            data[name] = json.loads(data[name]) if data[name] else {}
        data["index_cached"] = int(data["index_cached"] or 0)
        for name in ("neighbors_sha256", "recall_rule"):
            data[name] = data[name] or ""
        if not data["recall_rule"] and data["recall_ab"] is None and data["recall"] is not None:
            # A row of an older ann-bench: its `recall` is ann-benchmarks' rule. Shown as recall_ab; `recall` is
            # unknown until re-measured (a resumed `run` does that), never silently the other rule's figure.
            data["recall_ab"], data["recall"] = data["recall"], None
        return Record(**data)

    def integrity_ok(self) -> bool:
        return self.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"

    def close(self) -> None:
        if not self.read_only:
            # At rest the store is one file, out of WAL mode: a later read-only command (results, plot, best) then
            # opens it without creating -wal/-shm beside it. Another connection still open (a concurrent run)
            # keeps WAL on: that one switches it off when it closes.
            with contextlib.suppress(sqlite3.Error):
                self.db.execute("PRAGMA busy_timeout = 0")  # never wait for the other connection
                self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                self.db.execute("PRAGMA journal_mode=DELETE")
        self.db.close()

    def __enter__(self) -> ResultStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ---- exports ----------------------------------------------------------------------------------------------
TABLE_COLUMNS = ["dataset_name", "backend", "impl", "build_params", "search_params", "k", "mode", "threads",
                 "status", "recall", "recall_ab", "id_recall", "qps", "p50_ms", "p99_ms", "build_s", "index_bytes"]


def flat_dict(record: Record) -> dict[str, Any]:
    """A record as one flat dict (params as compact strings), the shape of a CSV row or a DataFrame row."""
    d = dataclasses.asdict(record)
    d["key"] = record.key
    d["build_params"] = params_str(record.build_params)
    d["search_params"] = params_str(record.search_params)
    for name in ("label_metrics", "versions", "host"):
        d[name] = canon_params(d[name])
    return d


ABBREVIATIONS = {
    "ef_construction": "efC", "train_per_list": "tpl", "search_k": "sk", "n_trees": "trees",
    "num_leaves_to_search": "leaves", "num_leaves": "nleaves", "graph_degree": "R", "build_complexity": "L",
    "complexity": "L", "storage_data_type": "type", "pruning_degree_multiplier": "pdm", "diversify_prob": "dp",
    "n_neighbors": "nn", "edge_size": "edge", "search_edge_size": "sedge", "quantizer_efSearch": "qefS",
    "efSearch": "efS", "k_factor": "kf", "dims_per_block": "dpb", "aq_threshold": "aq", "low_memory": "lowmem",
    "outdegree": "out", "indegree": "in", "epsilon": "eps",
}


def short_value(name: str, value: Any) -> str:
    """``M16``, ``efC200``, ``rerank=yes``, ``preset=ivf-sq8``: a parameter in few characters, unambiguous."""
    abbr = ABBREVIATIONS.get(name, name)
    if isinstance(value, bool):
        return f"{abbr}={'yes' if value else 'no'}"
    if isinstance(value, (int, float)):
        text = f"{value:g}" if isinstance(value, float) else str(value)
        return f"{abbr}{text}" if not text.startswith("-") else f"{abbr}={text}"
    return f"{abbr}={value}"


def varying(params: Sequence[dict[str, Any]]) -> set[str]:
    """The names whose value differs among ``params`` (a name missing from some counts as differing)."""
    names = set().union(*params) if params else set()
    return {n for n in names if len({repr(p.get(n)) for p in params}) > 1}


def short_params(params: dict[str, Any], keep: set[str] | None) -> str:
    shown = [short_value(k, v) for k, v in params.items() if keep is None or k in keep]
    return " ".join(shown) or "-"


class ShortForms:
    """Short parameter forms of records (``M16 ef40``), as every table prints them: per group (``group_of``, a
    backend and implementation by default) only the parameters that vary among its records; those fixed within a
    group are said once, in :attr:`fixed` (group -> ``"efC200 tpl64"``)."""

    def __init__(self, records: Sequence[Record], group_of: Callable[[Record], str] = lambda r: r.label()):
        self.group_of = group_of
        groups: dict[str, list[Record]] = {}
        for r in records:
            groups.setdefault(group_of(r), []).append(r)
        self.keep_b = {g: varying([r.build_params for r in rs]) for g, rs in groups.items()}
        self.keep_s = {g: varying([r.search_params for r in rs]) for g, rs in groups.items()}
        self.fixed: dict[str, str] = {}
        for g, rs in groups.items():
            fixed = [short_value(n, v) for n, v in rs[0].build_params.items() if n not in self.keep_b[g]]
            fixed += [short_value(n, v) for n, v in rs[0].search_params.items() if n not in self.keep_s[g]]
            if fixed:
                self.fixed[g] = " ".join(fixed)

    def build(self, r: Record) -> str:
        return short_params(r.build_params, self.keep_b[self.group_of(r)])

    def search(self, r: Record) -> str:
        return short_params(r.search_params, self.keep_s[self.group_of(r)])


def params_str(params: dict[str, Any]) -> str:
    return ",".join(f"{k}={v}" for k, v in params.items())


def to_csv(records: list[Record]) -> str:
    buf = io.StringIO()
    names = ["key", *_FIELDS]
    writer = csv.DictWriter(buf, fieldnames=names, lineterminator="\n")
    writer.writeheader()
    for r in records:
        writer.writerow(flat_dict(r))
    return buf.getvalue()


def to_json(records: list[Record]) -> str:
    return json.dumps([{**dataclasses.asdict(r), "key": r.key} for r in records], indent=1, default=_json_default)


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(type(value).__name__)


# ---- filtering and sorting (``ann-bench results --where/--sort``) -----------------------------------------------
WHERE_KEYS = ("backend", "impl", "mode", "k", "threads", "status", "dataset")
_OPS = ("!=", ">=", "<=", "=", ">", "<")


def _field_value(r: Record, name: str) -> Any:
    """A record's figure named ``name``: a field, ``dataset`` (its name), ``index_mb``, a label metric, or a
    build/search parameter. KeyError if it has none of these."""
    if name == "dataset":
        return r.dataset_name
    if name == "index_mb":
        return None if r.index_bytes is None else r.index_bytes / 1e6
    if name in _FIELDS and name not in _JSON_FIELDS:
        return getattr(r, name)
    for source in (r.search_params, r.build_params, r.label_metrics):
        if name in source:
            return source[name]
    raise KeyError(name)


def _known_names(records: list[Record]) -> list[str]:
    names = [*WHERE_KEYS, *(n for n in _FIELDS if n not in _JSON_FIELDS and n not in WHERE_KEYS), "index_mb"]
    for r in records:
        for source in (r.build_params, r.search_params, r.label_metrics):
            names += [n for n in source if n not in names]
    return names


def parse_where(spec: str) -> tuple[str, str, str]:
    """'backend=hnsw', 'M=16', 'recall>=0.95', 'status!=ok' -> (name, op, value); InputError if malformed."""
    for op in _OPS:
        name, sep, value = spec.partition(op)
        if sep and name.strip() and value.strip() and not any(c in name for c in "<>=!"):
            return name.strip(), op, value.strip()
    raise InputError(f"malformed --where {spec!r}: use NAME=VALUE (or !=, >=, <=, >, <), e.g. backend=hnsw, "
                     "M=16 or recall>=0.95")


def _matches(actual: Any, op: str, wanted: str) -> bool:
    if actual is None:
        return op == "!="
    try:
        a, w = float(actual), float(wanted)
    except (TypeError, ValueError):
        a, w = str(actual), wanted
        if op in ("=", "!="):  # string equality; numbers compare as numbers ("16" = 16, "0.5" = 0.50)
            return (a == w) == (op == "=")
        raise InputError(f"--where {op} needs numbers; {actual!r} or {wanted!r} is not one") from None
    return {"=": a == w, "!=": a != w, ">=": a >= w, "<=": a <= w, ">": a > w, "<": a < w}[op]


def filter_records(records: list[Record], where: list[str] | tuple[str, ...]) -> list[Record]:
    """The records matching every condition of ``where`` (``NAME=VALUE`` or ``NAME<op>VALUE``).

    NAME is a record field (backend, impl, mode, k, threads, status, recall, qps, p99_ms, build_s, ...),
    ``dataset`` (the dataset's name or a prefix of its content hash), ``index_mb``, a build or search parameter
    (``M``, ``ef``, ``nprobe``) or a label metric (``precision_at_10``). A record without the parameter does not
    match (except with ``!=``). An unknown NAME is an InputError listing the known ones."""
    conditions = [parse_where(w) for w in where]
    known = _known_names(records)
    for name, _, _ in conditions:
        if name not in known:
            raise InputError(f"unknown --where name {name!r}; known: {', '.join(known)}")
    kept = []
    for r in records:
        ok = True
        for name, op, value in conditions:
            if name == "dataset" and op in ("=", "!="):
                hit = value in (r.dataset_name, r.dataset_path) or r.dataset_hash.startswith(value)
                ok = ok and hit == (op == "=")
                continue
            try:
                actual = _field_value(r, name)
            except KeyError:
                actual = None
            ok = ok and _matches(actual, op, value)
        if ok:
            kept.append(r)
    return kept


def sort_records(records: list[Record], key: str) -> list[Record]:
    """``records`` sorted by the figure ``key`` (names as for :func:`filter_records`), ascending, or descending
    with a ``-`` prefix; records without it (failed rows, a parameter another backend lacks) go last."""
    descending = key.startswith("-")
    name = key.lstrip("-+")
    known = _known_names(records)
    if name not in known:
        raise InputError(f"unknown --sort column {name!r}; known: {', '.join(known)}")

    def value(r: Record):
        try:
            return _field_value(r, name)
        except KeyError:
            return None

    present = [r for r in records if value(r) is not None]
    missing = [r for r in records if value(r) is None]
    numeric = all(isinstance(value(r), (int, float)) and not isinstance(value(r), bool) for r in present)
    keyfunc = (lambda r: float(value(r))) if numeric else (lambda r: str(value(r)))
    return sorted(present, key=keyfunc, reverse=descending) + missing
