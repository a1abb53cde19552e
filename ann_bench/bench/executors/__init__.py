"""Where build jobs run: one small interface, two executors.

A sweep (:func:`ann_bench.bench.runner.run_sweep`) and a tune (:mod:`ann_bench.bench.tune`) plan build jobs
(:class:`ann_bench.bench.worker.BuildJob`, each with a :class:`ann_bench.bench.jobs.JobRecorder` that turns
its events into stored rows) and hand them to an :class:`Executor`, without knowing which one:

- :class:`~ann_bench.bench.executors.local.LocalExecutor` (``--executor local``, the default): one job after
  the other on this machine, each in a fresh worker process (or inline, for debugging);
- :class:`~ann_bench.bench.executors.ray.RayExecutor` (``--executor ray``): every job a Ray task, run
  concurrently on a cluster, their events streamed back to this process, the only writer of the store.

:func:`open_executor` picks one from :class:`~ann_bench.bench.jobs.RunOptions` and holds its resources (a
Ray connection) for the duration of a sweep.

The executors import the shared types from :mod:`ann_bench.bench.jobs`, never from runner or tune, which import
the executors.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from ann_bench.bench.executors.base import Executor, Job  # noqa: F401  (the interface, importable from here)

if TYPE_CHECKING:
    from ann_bench.bench.jobs import Reporter, RunOptions


@contextmanager
def open_executor(options: RunOptions, reporter: Reporter) -> Iterator[Executor]:
    """The executor ``options.executor`` names, for the duration of one sweep or tune."""
    if options.executor == "ray":
        from ann_bench.bench.executors.ray import RayExecutor, session

        with session(options.address) as ray:
            yield RayExecutor(ray, options, reporter)
    else:
        from ann_bench.bench.executors.local import LocalExecutor

        yield LocalExecutor(options, reporter)
