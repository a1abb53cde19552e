"""Sweeps on a Ray cluster (``ann-bench run --executor ray``): one Ray task per build configuration.

What runs where:

- the driver (the ``ann-bench`` process) validates the sweep, computes or reads the ground truth, skips the
  configurations already stored (resume) and is the only writer of the results store: each task streams
  the worker events of :mod:`ann_bench.bench.worker` back (a Ray streaming generator) and the driver turns them
  into rows through the same :class:`ann_bench.bench.jobs.JobRecorder` as the local executor;
- a task reserves ``max(--threads, --build-threads)`` CPUs and, with ``--memory-limit``, that much of Ray's
  ``memory`` resource; on its node it runs :func:`ann_bench.bench.worker.run_in_process`, so the build and its
  searches happen in a fresh process with the same timeout, memory-limit and crash handling as locally
  (and the same error texts: ``build: worker killed by SIGABRT (abort)``), and build memory is measured in
  that fresh process;
- the data: no task reads the dataset path, so the nodes need no shared file system. Sets of at most
  :data:`OBJECT_STORE_MAX_BYTES` (train + test) go once into Ray's object store and reach every task as arrays;
  larger ones go there in train chunks of :data:`CHUNK_BYTES`, and each node copies them once into its own
  cache directory as a VectorSet keyed and verified by the content hash (:func:`_node_copy`; its tasks wait
  for the one copy and then read it like any set). The run says how many bytes went to how many nodes;
- a task lost to the infrastructure — its node died, its Ray worker crashed, an object was lost — runs
  again on a node that is alive, up to :data:`MAX_ATTEMPTS` attempts, measuring only the configurations the
  lost attempt had not recorded; its rows carry ``attempts`` and ``retry_reason``. A failure of the build
  itself (a segfault, an abort, --memory-limit, an exception, Ray's out-of-memory killer) is not retried: it
  becomes ``failed`` rows with its error, as locally; a task still running ``BACKSTOP_GRACE_S`` after its own
  ``--timeout`` is cancelled (``ray.cancel(force=True)``) and recorded as ``timeout``.

Rows carry the host facts and library versions of the node that measured them: timings are per node.

:func:`exact_knn_ray` splits exact ground truth by query chunks over Ray tasks and merges them.

Ray is an optional dependency, imported only here and only when asked for.
"""

from __future__ import annotations

import dataclasses
import math
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np

from ann_bench.bench.executors.base import Executor, Job
from ann_bench.errors import InputError

if TYPE_CHECKING:
    from ann_bench.data.vectorset import VectorSet
    from ann_bench.bench.jobs import JobRecorder, Reporter, RunOptions
    from ann_bench.bench.worker import BuildJob

INSTALL_HINT = "--executor ray needs the ray extra: pip install -e '.[ray]'"
OBJECT_STORE_MAX_BYTES = 64 << 20  # train + test up to this size reach every task as arrays
CHUNK_BYTES = 64 << 20  # larger sets go to the object store in train chunks of this size
MAX_ATTEMPTS = 3  # a task lost to the infrastructure runs again, at most this many attempts in all
PENDING_NOTE_S = 30.0  # a task waiting this long for resources says so (and again every as long)
BACKSTOP_GRACE_S = 30.0  # seconds past --timeout before the driver cancels a task itself
POLL_S = 0.5
FORWARDED_ENV = ("ANN_BENCH_PLUGINS", "PYTHONPATH")  # backend plugins must import on every node


def require_ray():
    """The ray module, or InputError with the install hint."""
    try:
        import ray
    except ImportError:
        raise InputError(INSTALL_HINT) from None
    return ray


def _worker_env() -> dict[str, str]:
    return {name: os.environ[name] for name in FORWARDED_ENV if os.environ.get(name)}


def error_text(exc: BaseException) -> str:
    """One line for a Ray failure: 'WorkerCrashedError: The worker died unexpectedly ...'."""
    ray = require_ray()
    if isinstance(exc, ray.exceptions.RayTaskError):  # an exception raised in the task: its last line
        lines = [line for line in str(exc).strip().splitlines() if line.strip()]
        return f"ray task raised {lines[-1].strip() if lines else type(exc).__name__}"
    first = next((line.strip() for line in str(exc).splitlines() if line.strip()), "")
    return f"ray {type(exc).__name__}: {first}"


def _need(cpus: int, memory: int | None) -> str:
    return f"{cpus} CPU(s)" + (f" and {memory / 2**20:,.0f} MiB of memory" if memory else "")


def infrastructure_failure(exc: BaseException) -> bool:
    """Whether a Ray error lost the task to the infrastructure — its node died, its Ray worker crashed, an
    object it needed was lost — rather than to the build: those are retried, a failure inside the library is
    not. (A library that crashes, aborts or exceeds --memory-limit does so in the task's own worker process
    and comes back as the task's outcome, not as a Ray error; Ray's out-of-memory killer and task errors are
    the build's.)"""
    ray = require_ray()
    ex = ray.exceptions
    lost = tuple(getattr(ex, name) for name in ("NodeDiedError", "WorkerCrashedError", "ObjectLostError",
                                                 "LocalRayletDiedError", "RaySystemError", "ActorDiedError")
                 if hasattr(ex, name))
    oom = getattr(ex, "OutOfMemoryError", ())
    return isinstance(exc, lost) and not isinstance(exc, oom) and not isinstance(exc, ex.RayTaskError)


# ---- on the nodes -----------------------------------------------------------------------------------------
def _build_task(job: BuildJob, data, timeout: float | None, memory_limit: int | None) -> Iterator[tuple]:
    """The body of a build task: ("node", host facts) first, ("data", facts) when it copied the vectors, then the
    worker's events, then ("outcome", x) with run_in_process's outcome. ``data``: (X, Q) from the object store
    (small sets), or a :class:`SharedVectors` copied once per node (:func:`_node_copy`)."""
    from ann_bench.sysinfo import host, versions
    from ann_bench.bench.worker import error_text as worker_error_text
    from ann_bench.bench.worker import run_in_process

    yield ("node", {"host": host(), "versions": versions()})
    if isinstance(data, SharedVectors):  # large: this node's own copy, read by the worker like any set
        import ray

        try:
            path, fetched = _node_copy(ray, data, job)
        except Exception as exc:  # noqa: BLE001 - a node that cannot hold the copy fails the job, visibly
            yield ("build_failed", f"cannot copy the vectors to this node: {worker_error_text(exc)}")
            yield ("outcome", None)
            return
        yield ("data", {"node": ray.get_runtime_context().get_node_id(), "fetched_bytes": fetched})
        job = dataclasses.replace(job, dataset_path=path)
        data = None
    events: queue.Queue = queue.Queue()

    def work() -> None:
        try:
            with _plain_main():
                outcome = run_in_process(job, lambda *event: events.put(event), timeout=timeout,
                                         memory_limit=memory_limit, data=data)
        except BaseException as exc:  # noqa: BLE001 - reported as the job's outcome
            outcome = ("failed", worker_error_text(exc))
        events.put(("outcome", outcome))
        events.put(None)

    threading.Thread(target=work, daemon=True).start()
    while (event := events.get()) is not None:
        yield event


class _ChunkedRows:
    """The train matrix of a :class:`SharedVectors`, sliced by rows as :func:`write_vectorset` reads it; each
    chunk fetched from the object store once."""

    def __init__(self, ray, data: SharedVectors):
        self.ray, self.data = ray, data
        self.shape = (data.n, data.dim)
        self.fetched = 0
        self._cached: tuple[int, np.ndarray] | None = None

    def _chunk(self, c: int) -> np.ndarray:
        if self._cached is None or self._cached[0] != c:
            block = self.ray.get(self.data.train[c])
            self.fetched += block.nbytes
            self._cached = (c, block)
        return self._cached[1]

    def __getitem__(self, rows: slice) -> np.ndarray:
        start, stop, _ = rows.indices(self.data.n)
        parts, r = [], start
        while r < stop:
            c, offset = divmod(r, self.data.rows)
            block = self._chunk(c)[offset : offset + stop - r]
            parts.append(block)
            r += len(block)
        return np.concatenate(parts) if len(parts) != 1 else parts[0]


def _node_copy(ray, data: SharedVectors, job: BuildJob) -> tuple[str, int]:
    """This node's copy of a :class:`SharedVectors` as a VectorSet file in its cache directory (keyed by the
    content hash, verified after writing), made once per node however many tasks need it: (path, bytes fetched
    from the object store for it, 0 when the copy was there)."""
    import fcntl

    from ann_bench.config import cache_dir
    from ann_bench.data.vectorset import VectorSet, write_vectorset

    root = cache_dir() / "ray-vectors"
    root.mkdir(parents=True, exist_ok=True)
    path = root / f"{data.vectors_hash}.hdf5"
    with open(root / f"{data.vectors_hash}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one writer per node; the others wait and then read its copy
        if path.exists():
            try:
                with VectorSet(path, metric=data.metric) as vs:
                    if vs.vectors_hash() == data.vectors_hash:
                        return str(path), 0
            except Exception:  # noqa: BLE001 - a broken copy is made again
                pass
            path.unlink()
        train = _ChunkedRows(ray, data)
        test = ray.get(data.test)
        write_vectorset(path, train, test, data.metric, neighbors=np.asarray(job.gt_I),
                        distances=np.asarray(job.gt_D, dtype=np.float32), attrs={"ray_copy_of": data.vectors_hash})
        with VectorSet(path, metric=data.metric) as vs:
            found = vs.vectors_hash()
        if found != data.vectors_hash:
            path.unlink()
            raise RuntimeError(f"the node's copy of the vectors has vectors hash {found}, not "
                               f"{data.vectors_hash}: an object was corrupted in transit")
        return str(path), train.fetched + test.nbytes


def _build_task_events(job: BuildJob, data, timeout: float | None, memory_limit: int | None) -> list[tuple]:
    """:func:`_build_task`'s events as one list, returned when the job is over (Ray client cannot stream)."""
    return list(_build_task(job, data, timeout, memory_limit))


@contextmanager
def _plain_main() -> Iterator[None]:
    """Hide the Ray worker's main script from multiprocessing's spawn, which would otherwise re-run it (and
    import ray, ~1 s) in every worker process it starts."""
    import sys

    main = sys.modules["__main__"]
    spec, file = getattr(main, "__spec__", None), getattr(main, "__file__", None)
    main.__spec__ = None
    if file is not None:
        del main.__file__
    try:
        yield
    finally:
        main.__spec__ = spec
        if file is not None:
            main.__file__ = file


def _knn_task(dataset_path: str, metric: str, start: int, stop: int, k: int, threads: int, data):
    """Exact (D, I) of depth k for test rows [start, stop), against the train vectors of ``data`` or of the
    file (read in base chunks, never whole)."""
    import faiss

    from ann_bench.data.vectorset import VectorSet
    from ann_bench.data.groundtruth import exact_knn

    faiss.omp_set_num_threads(threads)
    if isinstance(data, SharedVectors):
        import ray

        data = (_ChunkedRows(ray, data)[0 : data.n], ray.get(data.test))
    if data is not None:
        X, Q = data
        return exact_knn(X, Q[start:stop], metric, k)
    with VectorSet(dataset_path, metric=metric) as vs:
        return exact_knn(vs.file["train"], vs.test[start:stop], metric, k)


# ---- the driver -------------------------------------------------------------------------------------------
def _shared_data(ray, vs: VectorSet, X: np.ndarray, Q: np.ndarray):
    """The vectors of ``vs`` in Ray's object store: an object reference to (X, Q) when they are small (at most
    :data:`OBJECT_STORE_MAX_BYTES`; every task gets the arrays), else a :class:`SharedVectors` of train chunks
    that each node copies once into its own cache (:func:`_node_copy`)."""
    if X.nbytes + Q.nbytes <= OBJECT_STORE_MAX_BYTES:
        return ray.put((X, Q))
    rows = max(1, CHUNK_BYTES // max(1, X.shape[1] * X.itemsize))
    train = [ray.put(np.ascontiguousarray(X[i : i + rows])) for i in range(0, X.shape[0], rows)]
    return SharedVectors(vs.vectors_hash(), vs.metric, X.shape[0], X.shape[1], rows, train, ray.put(Q),
                         X.nbytes + Q.nbytes)


@dataclasses.dataclass
class SharedVectors:
    """A large vector set in the object store: train in chunks of ``rows`` rows, test whole (references inside a
    dataclass are not resolved by Ray when the task starts: each node fetches them once, in :func:`_node_copy`)."""

    vectors_hash: str  # VectorSet.vectors_hash: what the node copy must hold
    metric: str
    n: int
    dim: int
    rows: int
    train: list
    test: Any
    nbytes: int


class RaySession:
    """A connection to a Ray cluster, for one sweep."""

    def __init__(self, ray, client: bool = False):
        self.ray = ray
        # Ray client (ray://) has no streaming generators: a task then returns its events all at once, when done
        self.client = client
        self._data: dict[str, Any] = {}
        self.fetched: dict[str, int] = {}  # node id -> bytes of vectors it fetched from the object store

    def data_ref(self, vs: VectorSet, X: np.ndarray | None = None, Q: np.ndarray | None = None):
        """How the tasks get ``vs``'s vectors, put in the object store once per sweep (see
        :func:`_shared_data`): no task reads the dataset path, so the nodes need no shared file system."""
        key = vs.vectors_hash()
        if key not in self._data:
            self._data[key] = _shared_data(self.ray, vs, vs.load_train() if X is None else X,
                                           vs.load_test() if Q is None else Q)
        return self._data[key]

    def fits(self, cpus: int, memory: int | None) -> bool:
        """Whether some alive node offers ``cpus`` CPUs and ``memory`` bytes (free or not)."""
        for node in self.ray.nodes():
            res = node.get("Resources", {}) if node.get("Alive") else {}
            if res.get("CPU", 0) >= cpus and (memory is None or res.get("memory", 0) >= memory):
                return True
        return False

    def check_fits(self, cpus: int, memory: int | None, autoscaling: bool = False,
                   reporter: Reporter | None = None) -> None:
        """InputError unless some alive node offers ``cpus`` CPUs and ``memory`` bytes (else the tasks would
        wait forever) — on a cluster that can grow (``autoscaling``), a note instead: the tasks wait for the
        autoscaler, and say so while they wait."""
        if self.fits(cpus, memory):
            return
        need = _need(cpus, memory)
        if autoscaling:
            if reporter is not None:
                reporter.note(f"ray: no node offers {need} yet; waiting for the autoscaler to add one")
            return
        raise InputError(f"no node of the Ray cluster offers {need}; lower --threads/--build-threads"
                         f"{' or --memory-limit' if memory else ''}, add bigger nodes, or pass --autoscaling "
                         "if the cluster grows on demand")

    def groundtruth(self, vs: VectorSet, k: int, threads: int = 1,
                    progress: Callable[[int], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Exact ground truth of depth k for ``vs``, split over Ray tasks by query chunks (float64 D, like
        :meth:`VectorSet.groundtruth`)."""
        D, I = exact_knn_ray(str(vs.path.resolve()), vs.metric, vs.n_test, k, threads=threads,
                             data=self.data_ref(vs), progress=progress)
        return D.astype(np.float64), I

    def run_jobs(self, jobs: list[tuple[BuildJob, JobRecorder, str]], options: RunOptions, vs: VectorSet,
                 reporter: Reporter, X: np.ndarray | None = None, Q: np.ndarray | None = None) -> None:
        """Submit every job as a Ray task and record the events of each as they stream back. A task lost to
        the infrastructure (its node died, its worker crashed, an object was lost) runs again elsewhere, up to
        :data:`MAX_ATTEMPTS` in all, measuring only what the lost attempt had not recorded."""
        ray = self.ray
        cpus = max(options.threads, options.build_threads or options.threads)
        self.check_fits(cpus, options.memory_limit, options.autoscaling, reporter)
        task_options: dict[str, Any] = {"num_cpus": cpus, "max_retries": 0}
        if not self.client:
            task_options["num_returns"] = "streaming"
        if options.memory_limit is not None:
            task_options["memory"] = options.memory_limit
        env = _worker_env()
        if env:
            task_options["runtime_env"] = {"env_vars": env}
        remote = ray.remote(_build_task_events if self.client else _build_task).options(**task_options)
        data = self.data_ref(vs, X, Q)
        running: dict[Any, _Running] = {}

        def submit(job: BuildJob, recorder: JobRecorder, label: str, attempt: int = 1) -> None:
            gen = remote.remote(job, data, options.timeout, options.memory_limit)
            running[gen] = _Running(recorder, label, attempt)

        def note_waiting() -> None:  # a line per task still waiting for resources, every PENDING_NOTE_S
            now = time.perf_counter()
            for task in running.values():
                if task.started is None and now - task.noted >= PENDING_NOTE_S:
                    task.noted = now
                    free = ray.available_resources().get("CPU", 0)
                    reporter.note(f"ray: {task.label} waits for a node with {_need(cpus, options.memory_limit)} "
                                  f"free ({now - task.submitted:.0f} s so far; {free:g} CPU(s) free in the cluster)")

        with ExitStack() as bars:
            try:
                for job, recorder, label in jobs:
                    submit(job, recorder, label)
                while running:
                    ready, _ = ray.wait(list(running), num_returns=1, timeout=POLL_S)
                    for gen in ready:
                        task = running[gen]
                        over, lost = self._step(gen, task, reporter, bars)
                        if over:
                            del running[gen]
                        if lost is not None:
                            reporter.note(f"{task.label}: {lost}; running it again elsewhere (attempt "
                                          f"{task.attempt + 1} of {MAX_ATTEMPTS})")
                            submit(task.recorder.retry(lost), task.recorder, task.label, task.attempt + 1)
                    self._backstop(running, options.timeout)
                    note_waiting()
            finally:
                for gen in running:  # interrupted (Ctrl-C, an error here): stop what still runs
                    ray.cancel(gen, force=True)

    def _step(self, gen, job: _Running, reporter: Reporter, bars: ExitStack) -> tuple[bool, str | None]:
        """Handle the next event of ``gen`` (with Ray client: every event of the finished task): (whether its
        task is over, the infrastructure failure that lost it when it is to run again, else None)."""
        ray = self.ray
        try:
            if self.client:
                events = ray.get(gen)
            else:
                try:
                    ref = next(gen)
                except StopIteration:
                    job.close(job.outcome or None)
                    return True, None
                events = [ray.get(ref)]
        except ray.exceptions.RayError as exc:  # the task itself failed
            if infrastructure_failure(exc) and job.attempt < MAX_ATTEMPTS:
                job.close_bar()
                return True, error_text(exc)
            job.close(("failed", error_text(exc) + (f" (attempt {job.attempt} of {MAX_ATTEMPTS})"
                                                    if infrastructure_failure(exc) else "")))
            return True, None
        for event in events:
            self._handle(event, job, reporter, bars)
        if self.client:
            job.close(job.outcome or None)
            return True, None
        return False, None

    def _handle(self, event: tuple, job: _Running, reporter: Reporter, bars: ExitStack) -> None:
        if event[0] == "node":
            job.started = time.perf_counter()
            job.recorder.node = event[1]
            job.bar = bars.enter_context(_detached(reporter.task(f"build+search {job.label} (ray)", None)))
        elif event[0] == "data":  # the node fetched the vectors (or found its copy)
            node, fetched = event[1]["node"], event[1]["fetched_bytes"]
            self.fetched[node] = self.fetched.get(node, 0) + fetched
        elif event[0] == "outcome":
            job.outcome = event[1]
        else:
            job.recorder.on_event(*event)

    def _backstop(self, running: dict[Any, _Running], timeout: float | None) -> None:
        if timeout is None:
            return
        now = time.perf_counter()
        for gen, job in list(running.items()):
            if job.started is not None and now - job.started > timeout + BACKSTOP_GRACE_S:
                self.ray.cancel(gen, force=True)
                job.close(("timeout", f"no result within --timeout {timeout:g} s; ray task cancelled"))
                del running[gen]


class RayExecutor(Executor):
    """The :class:`~ann_bench.bench.executors.Executor` of ``--executor ray``: ground truth split over Ray tasks
    when the set does not hold it, every build job a Ray task (see the module docstring)."""

    name = "ray"

    def __init__(self, session: RaySession, options: RunOptions, reporter: Reporter):
        super().__init__(options, reporter)
        self.session = session

    def groundtruth(self, vs: VectorSet, k: int, progress: Callable[[int], None] | None = None
                    ) -> tuple[np.ndarray, np.ndarray]:
        if vs.has_groundtruth and vs.gt_depth >= k:
            return vs.groundtruth(k, progress=progress)
        return self.session.groundtruth(vs, k, threads=self.options.build_threads or self.options.threads,
                                        progress=progress)

    def run(self, jobs: list[Job], vs: VectorSet, X: np.ndarray, Q: np.ndarray,
            done: Callable[[int], None] | None = None) -> None:
        if jobs:
            self.session.run_jobs(jobs, self.options, vs, self.reporter, X, Q)
            hosts = {((recorder.node or {}).get("host") or {}).get("hostname") for _, recorder, _ in jobs} - {None}
            small = X.nbytes + Q.nbytes if X.nbytes + Q.nbytes <= OBJECT_STORE_MAX_BYTES else None
            note = vectors_note(self.session.fetched, small, len(hosts))
            if note is not None:
                self.reporter.note(note)
        for i in range(len(jobs) if done is not None else 0):  # concurrent: recorded once all are over
            done(i)


def vectors_note(fetched: dict[str, int], small_bytes: int | None, hosts: int) -> str | None:
    """The run's closing line on what crossed to the nodes, for every set. ``fetched``: node id -> bytes of a
    large set's copy it fetched (:func:`_node_copy`); ``small_bytes``: train + test bytes of a set sent as one
    object (at most :data:`OBJECT_STORE_MAX_BYTES`), else None; ``hosts``: the hosts the tasks ran on."""
    if small_bytes is not None:
        if not hosts:
            return None  # no task started
        return (f"ray: {small_bytes / 1e6:,.1f} MB of vectors (train + test, one object) went through the object "
                f"store to the tasks on {hosts} host(s) (Ray copies it once to each node that runs a task)")
    if not fetched:
        return None
    moved = sum(fetched.values())
    if moved == 0:
        return (f"ray: the vectors were already on the {len(fetched)} node(s) (copies cached by content hash): "
                "0 MB went through the object store")
    return (f"ray: {moved / 1e6:,.1f} MB of vectors went to {len(fetched)} node(s) through the object store (one "
            "copy per node, cached by content hash)")


class _Running:
    """A submitted build task: its recorder, and what the driver knows of it so far."""

    def __init__(self, recorder: JobRecorder, label: str, attempt: int = 1):
        self.recorder, self.label, self.attempt = recorder, label, attempt
        self.submitted = self.noted = time.perf_counter()
        self.started: float | None = None  # when its first event arrived: the task is running
        self.outcome: tuple[str, str] | None = None
        self.bar = None

    def close_bar(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def close(self, outcome: tuple[str, str] | None) -> None:
        self.close_bar()
        self.recorder.finish(outcome)


class _detached:
    """Enter a context manager now and leave it when :meth:`close` is called (a progress bar per task)."""

    def __init__(self, cm):
        self.cm = cm

    def __enter__(self):
        self.cm.__enter__()
        self.open = True
        return self

    def close(self) -> None:
        if self.open:
            self.open = False
            self.cm.__exit__(None, None, None)

    def __exit__(self, *exc) -> None:
        self.close()


def _check_reachable(address: str | None, timeout_s: float = 5.0) -> None:
    """InputError unless something listens at a ``HOST:PORT`` or ``ray://HOST:PORT`` address: Ray itself
    waits a minute or more for a cluster that is not there. ``auto`` and None are Ray's to resolve."""
    import socket

    if not address or address == "auto":
        return
    hostport = address.removeprefix("ray://")
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit():
        raise InputError(f"--address {address!r} is not HOST:PORT, ray://HOST:PORT or auto")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise InputError(f"cannot connect to the Ray cluster at {address}: {exc.strerror or exc} (is `ray start "
                         "--head` running there, and is the port the right one?)") from None


@contextmanager
def session(address: str | None = None) -> Iterator[RaySession]:
    """Connect to the Ray cluster at ``address`` ("auto", "HOST:PORT"; None: $RAY_ADDRESS or a new local
    instance) unless this process is already connected; disconnect at the end if it connected."""
    ray = require_ray()
    started = False
    token_set = False
    if not ray.is_initialized():
        _check_reachable(address)
        if address is None and not os.environ.get("RAY_ADDRESS") and not _token_configured():
            # A new local instance: Ray would save a token for it in ~/.ray/auth_token, a file the user never
            # named. A token for this instance only, in this process's environment, writes nothing.
            import secrets

            os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)
            token_set = True
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level="WARNING",
                     runtime_env={"env_vars": _worker_env()} if _worker_env() else None)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            where = f"at {address}" if address else "(local)"
            raise InputError(f"cannot connect to the Ray cluster {where}: {str(exc).strip().splitlines()[0]}"
                             ) from None
        started = True
    try:
        yield RaySession(ray, client=bool(address and address.startswith("ray://")))
    finally:
        if started:
            ray.shutdown()
        if token_set:
            os.environ.pop("RAY_AUTH_TOKEN", None)


def _token_configured() -> bool:
    """Whether the user configured Ray's token authentication (then Ray's own settings apply)."""
    from pathlib import Path

    return bool(os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH")
                or os.environ.get("RAY_AUTH_MODE") or (Path.home() / ".ray" / "auth_token").exists())


def exact_knn_ray(dataset_path: str, metric: str, nq: int, k: int, *, chunks: int | None = None,
                  threads: int = 1, data=None,
                  progress: Callable[[int], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest train rows for each of the nq test rows of the VectorSet at ``dataset_path``, as Ray
    tasks over query chunks, merged in order. Needs a connected Ray.

    ``chunks``: number of tasks [default: the cluster's CPUs / threads]; each reserves ``threads`` CPUs and
    reads the train vectors from the path (in base chunks) or from ``data``, an object-store reference to
    (X, Q). Returns D (nq, k) float32 and I (nq, k) int64, like :func:`ann_bench.data.groundtruth.exact_knn`,
    which each task runs on its chunk (each query's row is computed independently, so the merge is exact).
    """
    ray = require_ray()
    if chunks is None:
        cpus = int(ray.cluster_resources().get("CPU", 1))
        chunks = max(1, cpus // max(1, threads))
    step = max(1, math.ceil(nq / max(1, chunks)))
    task_options: dict[str, Any] = {"num_cpus": threads, "max_retries": 0}
    if _worker_env():
        task_options["runtime_env"] = {"env_vars": _worker_env()}
    remote = ray.remote(_knn_task).options(**task_options)
    refs = {remote.remote(dataset_path, metric, s, min(s + step, nq), k, threads, data): s
            for s in range(0, nq, step)}
    parts: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    pending = list(refs)
    try:
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            for ref in ready:
                try:
                    parts[refs[ref]] = ray.get(ref)
                except ray.exceptions.RayError as exc:
                    raise InputError(f"ground truth on Ray failed: {error_text(exc)}") from None
                if progress is not None:
                    progress(parts[refs[ref]][1].shape[0])
    finally:
        for ref in pending:
            ray.cancel(ref, force=True)
    order = sorted(parts)
    return (np.concatenate([parts[s][0] for s in order]), np.concatenate([parts[s][1] for s in order]))
