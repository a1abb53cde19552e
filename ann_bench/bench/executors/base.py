"""The interface every executor implements (:class:`Executor`) and the unit it runs (:data:`Job`); see
:mod:`ann_bench.bench.executors`. The executors subclass it from here, so the package's ``__init__`` (which
imports them when a sweep asks for one) is never imported back by them."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from ann_bench.bench.jobs import JobRecorder, Reporter, RunOptions
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
