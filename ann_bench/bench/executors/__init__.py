"""Where build jobs run: one small interface, two executors.

A sweep (:func:`ann_bench.bench.runner.run_sweep`) and a tune (:mod:`ann_bench.bench.tune`) plan build jobs
(:class:`ann_bench.bench.worker.BuildJob`, each with a :class:`ann_bench.bench.runner.JobRecorder` that turns
its events into stored rows) and hand them to an :class:`Executor`, without knowing which one:

- :class:`~ann_bench.bench.executors.local.LocalExecutor` (``--executor local``, the default): one job after
  the other on this machine, each in a fresh worker process (or inline, for debugging);
- :class:`~ann_bench.bench.executors.ray.RayExecutor` (``--executor ray``): every job a Ray task, run
  concurrently on a cluster, their events streamed back to this process, the only writer of the store.

:func:`open_executor` picks one from :class:`~ann_bench.bench.runner.RunOptions` and holds its resources (a
Ray connection) for the duration of a sweep.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from ann_bench.bench.runner import JobRecorder, Reporter, RunOptions
    from ann_bench.bench.worker import BuildJob
    from ann_bench.data.vectorset import VectorSet

Job = tuple["BuildJob", "JobRecorder", str]  # a job, its recorder, and its label for progress bars


class Executor:
    """Runs build jobs and records their events; see the module docstring."""

    name = "?"

    def __init__(self, options: RunOptions, reporter: Reporter):
        self.options, self.reporter = options, reporter

    def groundtruth(self, vs: VectorSet, k: int, progress: Callable[[int], None] | None = None
                    ) -> tuple[np.ndarray, np.ndarray]:
        """Exact (D float64, I) of depth ``k`` for ``vs``'s queries: stored, or computed here."""
        return vs.groundtruth(k, progress=progress)

    def run(self, jobs: list[Job], vs: VectorSet, X: np.ndarray, Q: np.ndarray,
            done: Callable[[int], None] | None = None) -> None:
        """Run ``jobs`` on ``vs`` (``X``, ``Q``: its vectors, already loaded here) and record every event
        through each job's recorder; return when every job is recorded. ``done(i)`` is called once job ``i``
        is recorded, in the order of ``jobs``."""
        raise NotImplementedError


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
