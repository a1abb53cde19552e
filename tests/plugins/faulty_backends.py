"""Backends that fail the way real libraries do, for the runner's failure tests (loaded via ANN_BENCH_PLUGINS).

Each wraps exact faiss search so that its good configurations produce real results.
"""

import os
import time

import numpy as np

from ann_bench.backends import register
from ann_bench.backends.base import Param
from exact_index import ExactIndex as _Exact  # the plugin folder is on sys.path, here and in workers


@register
class Crashing(_Exact):
    """os.abort() in build when crash=true (a C++ assertion, a segfault)."""

    name = "crashing"
    build_params = (Param("crash", bool, False),)

    def build(self, X):
        if self.params["crash"]:
            os.abort()
        super().build(X)


@register
class Hanging(_Exact):
    """Never returns from a search with hang=true (a deadlock)."""

    name = "hanging"
    search_params = (Param("hang", bool, False),)

    def query(self, Q, k):
        if self.search["hang"]:
            while True:
                time.sleep(1)
        return super().query(Q, k)


@register
class Hog(_Exact):
    """Allocates and touches `gb` GiB in build (a memory blow-up)."""

    name = "hog"
    build_params = (Param("gb", float, 0.0),)

    def build(self, X):
        self.ballast = []
        for _ in range(int(self.params["gb"] * 16)):
            self.ballast.append(np.ones(1 << 23))  # 64 MiB each, touched
            time.sleep(0.01)
        super().build(X)


@register
class Duplicating(_Exact):
    """Returns each query's nearest id twice, or raises in build (fail=true)."""

    name = "duplicating"
    build_params = (Param("fail", bool, False),)

    def build(self, X):
        if self.params["fail"]:
            raise RuntimeError("library exploded")
        super().build(X)

    def query(self, Q, k):
        D, I = super().query(Q, k)
        I[:, 1] = I[:, 0]
        return D, I


@register
class Slow(_Exact):
    """Sleeps `sleep` seconds per search call: a sweep long enough to be killed mid-way."""

    name = "slow"
    build_params = (Param("replica", int, 0),)  # several builds of one thing: several tasks to spread
    search_params = (Param("sleep", float, 0.0), Param("step", int, 0))

    def query(self, Q, k):
        time.sleep(self.search["sleep"])
        return super().query(Q, k)


@register
class Orphaning(_Exact):
    """Kills the process that started its worker in build when kill=true: under `--executor ray`, the Ray
    worker running the task dies (as when a node is lost). Never use it with the local executor."""

    name = "orphaning"
    build_params = (Param("kill", bool, False),)

    def build(self, X):
        if self.params["kill"]:
            import signal

            os.kill(os.getppid(), signal.SIGKILL)
            time.sleep(5)  # the worker notices its parent is gone and exits
        super().build(X)


@register
class Flaky(_Exact):
    """Kills the process that started its worker — under `--executor ray`, the Ray worker running the task, as
    when a node is lost — at its search with step=2, once: only while the file `marker` does not exist yet
    (it is created first). The attempt that runs after the loss finds the marker and goes on."""

    name = "flaky"
    build_params = (Param("marker", str, ""),)
    search_params = (Param("step", int, 0),)

    def query(self, Q, k):
        marker = self.params["marker"]
        if self.search["step"] == 2 and marker and not os.path.exists(marker):
            import signal

            open(marker, "w").close()
            time.sleep(1.0)  # the earlier searches' results reach the driver first (in flight, they would be lost)
            os.kill(os.getppid(), signal.SIGKILL)
            time.sleep(5)  # the worker notices its parent is gone and exits
        return super().query(Q, k)
