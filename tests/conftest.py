import importlib.util

import numpy as np
import pytest

# ngtpy must be loaded before usearch's binary in one process (loaded after it, ngtpy's inserts fail: the two
# wheels clash over C++ runtime symbols; see ann_bench/backends/usearch.py). The suite runs both in one process,
# and collecting tests/test_backend_usearch.py imports usearch, so ngtpy is loaded here first.
if importlib.util.find_spec("ngtpy") is not None:
    import ngtpy  # noqa: F401

from ann_bench.data.vectorset import SynthSpec, synth, synth_arrays


@pytest.fixture(scope="session", autouse=True)
def _ray_temp_dir():
    """Ray's session files go to a short temporary folder removed after the run, not /tmp/ray (Ray reads
    $RAY_TMPDIR; socket paths must stay short, so not under pytest's long temporary paths), and the local
    instances the tests start directly (``ray.init()``) run without token authentication, so Ray does not
    leave a token in ~/.ray/auth_token ($RAY_AUTH_MODE)."""
    import os
    import shutil
    import tempfile

    folder = tempfile.mkdtemp(prefix="abr")
    old = {name: os.environ.get(name) for name in ("RAY_TMPDIR", "RAY_AUTH_MODE")}
    os.environ["RAY_TMPDIR"] = folder
    os.environ["RAY_AUTH_MODE"] = "disabled"
    yield
    for name, value in old.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """Every test gets its own cache directory; nothing touches ~/.cache."""
    monkeypatch.setenv("ANN_BENCH_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="session")
def small_spec():
    return SynthSpec(n=3000, dim=16, queries=100, clusters=10, seed=7)


@pytest.fixture(scope="session")
def small_arrays(small_spec):
    return synth_arrays(small_spec)


@pytest.fixture(scope="session")
def small_set(tmp_path_factory, small_spec):
    """A 3000 x 16 euclidean VectorSet with ground truth and labels."""
    path = tmp_path_factory.mktemp("data") / "small.hdf5"
    synth(path, small_spec)
    return path


@pytest.fixture(scope="session")
def data():
    """(train, test): 3000 x 16 clustered vectors and 100 queries, the backends' oracle set (a test module may
    define its own ``data``)."""
    train, test, _, _ = synth_arrays(SynthSpec(n=3000, dim=16, queries=100, clusters=10, seed=11))
    return train, test


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture
def faulty_backends(monkeypatch):
    """Register the failure-injecting backends of tests/plugins/faulty_backends.py, here and in workers."""
    import os
    import sys

    from ann_bench import backends

    plugin_dir = os.path.join(os.path.dirname(__file__), "plugins")
    monkeypatch.syspath_prepend(plugin_dir)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [plugin_dir, os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv(backends.PLUGINS_ENV, "faulty_backends")
    backends._REGISTRY.clear()
    yield
    backends._REGISTRY.clear()
    sys.modules.pop("faulty_backends", None)
