"""``--executor local``: build jobs one after the other on this machine, each in a fresh worker process
(:func:`ann_bench.bench.worker.run_in_process`: timeout, memory limit, crash isolation), or inline in this
process with ``RunOptions.isolate`` off (debugging, profiling)."""

from __future__ import annotations

import gc
from collections.abc import Callable

import numpy as np

from ann_bench.atomic import raise_if_terminated
from ann_bench.bench.executors.base import Executor, Job
from ann_bench.bench.worker import run_in_process, run_inline


class LocalExecutor(Executor):
    name = "local"

    def run(self, jobs: list[Job], vs, X: np.ndarray, Q: np.ndarray,
            done: Callable[[int], None] | None = None) -> None:
        for i, (job, recorder, label) in enumerate(jobs):
            raise_if_terminated()
            with self.reporter.task(f"build+search {label}", None):
                if self.options.isolate:
                    outcome = run_in_process(job, recorder.on_event, timeout=self.options.timeout,
                                             memory_limit=self.options.memory_limit)
                else:
                    run_inline(job, X, Q, recorder.on_event)
                    outcome = None
            recorder.finish(outcome)
            gc.collect()
            if done is not None:
                done(i)
