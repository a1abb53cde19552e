"""Sweeps on a Ray cluster (``ann-bench run --executor ray``): one Ray task per build configuration.

What runs where:

- the driver (the ``ann-bench`` process) validates the sweep, computes or reads the ground truth, skips the
  configurations already stored (resume) and is the only writer of the results store: each task streams
  the worker events of :mod:`ann_bench.bench.worker` back (a Ray streaming generator) and the driver turns them
  into rows through the same :class:`ann_bench.bench.runner.JobRecorder` as the local executor;
- a task reserves ``max(--threads, --build-threads)`` CPUs and, with ``--memory-limit``, that much of Ray's
  ``memory`` resource; on its node it runs :func:`ann_bench.bench.worker.run_in_process`, so the build and its
  searches happen in a fresh process with the same timeout, memory-limit and crash handling as locally
  (and the same error texts: ``build: worker killed by SIGABRT (abort)``), and build memory is measured in
  that fresh process;
- the data: sets of at most :data:`OBJECT_STORE_MAX_BYTES` (train + test) go once into Ray's object
  store and reach every task from there; larger ones are read by each task from the dataset path, which
  must therefore be the same on every node (a shared file system);
- a failure of the task itself (its Ray worker or node died, Ray's own out-of-memory killer) becomes
  ``failed`` rows with Ray's error; a task still running ``BACKSTOP_GRACE_S`` after its own ``--timeout``
  is cancelled (``ray.cancel(force=True)``) and recorded as ``timeout``.

Rows carry the host facts and library versions of the node that measured them: timings are per node.

:func:`exact_knn_ray` splits exact ground truth by query chunks over Ray tasks and merges them.

Ray is an optional dependency, imported only here and only when asked for.
"""

from __future__ import annotations

import math
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np

from ann_bench.bench.executors import Executor, Job
from ann_bench.errors import InputError

if TYPE_CHECKING:
    from ann_bench.data.vectorset import VectorSet
    from ann_bench.bench.runner import JobRecorder, Reporter, RunOptions
    from ann_bench.bench.worker import BuildJob

INSTALL_HINT = "--executor ray needs the ray extra: pip install -e '.[ray]'"
OBJECT_STORE_MAX_BYTES = 64 << 20  # train + test up to this size travel through the object store
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


# ---- on the nodes -----------------------------------------------------------------------------------------
def _build_task(job: BuildJob, data, timeout: float | None, memory_limit: int | None) -> Iterator[tuple]:
    """The body of a build task: ("node", host facts) first, then the worker's events, then ("outcome", x)
    with run_in_process's outcome. ``data``: (X, Q) from the object store, or None to read the dataset path."""
    from ann_bench.sysinfo import host, versions
    from ann_bench.bench.worker import error_text as worker_error_text
    from ann_bench.bench.worker import run_in_process

    yield ("node", {"host": host(), "versions": versions()})
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
    if data is not None:
        X, Q = data
        return exact_knn(X, Q[start:stop], metric, k)
    with VectorSet(dataset_path, metric=metric) as vs:
        return exact_knn(vs.file["train"], vs.test[start:stop], metric, k)


# ---- the driver -------------------------------------------------------------------------------------------
def _small_data(ray, vs: VectorSet):
    """An object-store reference to (X, Q) when the set is small, else None."""
    if (vs.n_train + vs.n_test) * vs.dim * 4 > OBJECT_STORE_MAX_BYTES:
        return None
    return ray.put((vs.load_train(), vs.load_test()))


class RaySession:
    """A connection to a Ray cluster, for one sweep."""

    def __init__(self, ray):
        self.ray = ray
        self._data: dict[str, Any] = {}

    def data_ref(self, vs: VectorSet):
        key = str(vs.path.resolve())
        if key not in self._data:
            self._data[key] = _small_data(self.ray, vs)
        return self._data[key]

    def check_fits(self, cpus: int, memory: int | None) -> None:
        """InputError unless some alive node offers ``cpus`` CPUs and ``memory`` bytes (else the tasks would
        wait forever)."""
        for node in self.ray.nodes():
            res = node.get("Resources", {}) if node.get("Alive") else {}
            if res.get("CPU", 0) >= cpus and (memory is None or res.get("memory", 0) >= memory):
                return
        need = f"{cpus} CPU(s)" + (f" and {memory / 2**20:,.0f} MiB of memory" if memory else "")
        raise InputError(f"no node of the Ray cluster offers {need}; lower --threads/--build-threads"
                         f"{' or --memory-limit' if memory else ''}, or add bigger nodes")

    def groundtruth(self, vs: VectorSet, k: int, threads: int = 1,
                    progress: Callable[[int], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Exact ground truth of depth k for ``vs``, split over Ray tasks by query chunks (float64 D, like
        :meth:`VectorSet.groundtruth`)."""
        D, I = exact_knn_ray(str(vs.path.resolve()), vs.metric, vs.n_test, k, threads=threads,
                             data=self.data_ref(vs), progress=progress)
        return D.astype(np.float64), I

    def run_jobs(self, jobs: list[tuple[BuildJob, JobRecorder, str]], options: RunOptions, vs: VectorSet,
                 reporter: Reporter) -> None:
        """Submit every job as a Ray task and record the events of each as they stream back."""
        ray = self.ray
        cpus = max(options.threads, options.build_threads or options.threads)
        self.check_fits(cpus, options.memory_limit)
        task_options: dict[str, Any] = {"num_cpus": cpus, "num_returns": "streaming", "max_retries": 0}
        if options.memory_limit is not None:
            task_options["memory"] = options.memory_limit
        env = _worker_env()
        if env:
            task_options["runtime_env"] = {"env_vars": env}
        remote = ray.remote(_build_task).options(**task_options)
        data = self.data_ref(vs)
        running: dict[Any, _Running] = {}
        with ExitStack() as bars:
            try:
                for job, recorder, label in jobs:
                    gen = remote.remote(job, data, options.timeout, options.memory_limit)
                    running[gen] = _Running(recorder, label)
                while running:
                    ready, _ = ray.wait(list(running), num_returns=1, timeout=POLL_S)
                    for gen in ready:
                        if self._step(gen, running[gen], reporter, bars):
                            del running[gen]
                    self._backstop(running, options.timeout)
            finally:
                for gen in running:  # interrupted (Ctrl-C, an error here): stop what still runs
                    ray.cancel(gen, force=True)

    def _step(self, gen, job: _Running, reporter: Reporter, bars: ExitStack) -> bool:
        """Handle the next event of ``gen``; True when its job is over."""
        ray = self.ray
        try:
            ref = next(gen)
        except StopIteration:
            job.close(job.outcome or None)
            return True
        try:
            event = ray.get(ref)
        except ray.exceptions.RayError as exc:  # the task itself failed
            job.close(("failed", error_text(exc)))
            return True
        if event[0] == "node":
            job.started = time.perf_counter()
            job.recorder.node = event[1]
            job.bar = bars.enter_context(_detached(reporter.task(f"build+search {job.label} (ray)", None)))
        elif event[0] == "outcome":
            job.outcome = event[1]
        else:
            job.recorder.on_event(*event)
        return False

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
            self.session.run_jobs(jobs, self.options, vs, self.reporter)
        for i in range(len(jobs) if done is not None else 0):  # concurrent: recorded once all are over
            done(i)


class _Running:
    """A submitted build task: its recorder, and what the driver knows of it so far."""

    def __init__(self, recorder: JobRecorder, label: str):
        self.recorder, self.label = recorder, label
        self.started: float | None = None  # when its first event arrived: the task is running
        self.outcome: tuple[str, str] | None = None
        self.bar = None

    def close(self, outcome: tuple[str, str] | None) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
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
    if not ray.is_initialized():
        _check_reachable(address)
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level="WARNING",
                     runtime_env={"env_vars": _worker_env()} if _worker_env() else None)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            where = f"at {address}" if address else "(local)"
            raise InputError(f"cannot connect to the Ray cluster {where}: {str(exc).strip().splitlines()[0]}"
                             ) from None
        started = True
    try:
        yield RaySession(ray)
    finally:
        if started:
            ray.shutdown()


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
