"""Checks every embedded-database backend passes (LanceDB, Chroma, Milvus Lite): its directory goes with the index,
and a killed process's directory goes at the next construction."""

import gc
import multiprocessing
import os
import signal
from pathlib import Path

import numpy as np

from ann_bench.backends import get_backend
from ann_bench.backends._dbdir import root


def _build_and_wait(name, impl, build, X, conn):
    index = get_backend(name, impl)("euclidean", X.shape[1], **build)
    index.build(X)
    conn.send(str(index.dir.path))
    conn.recv()  # killed while waiting here


def assert_dir_goes_with_the_index(name, impl, build, X, Q):
    """Built, searched, saved size measured: the directory exists; after close() it is gone, and so is the
    directory of an index that is only dropped (garbage collection)."""
    index = get_backend(name, impl)("euclidean", X.shape[1], **build)
    index.build(X)
    path = index.dir.path
    assert path.parent == root() and path.name.startswith(f"{index.kind}-{os.getpid()}-")
    assert index.index_bytes() == sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) > X.nbytes // 2
    index.search(Q, 10)
    index.close()
    assert not path.exists()
    dropped = get_backend(name, impl)("euclidean", X.shape[1], **build)
    dropped.build(X)
    path = dropped.dir.path
    del dropped
    gc.collect()
    assert not path.exists()


def assert_killed_process_dir_swept(name, impl, build, X):
    """A process SIGKILLed after its build leaves its directory; the next construction removes it."""
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_build_and_wait, args=(name, impl, build, X, child))
    proc.start()
    assert parent.poll(120), "the child did not build"
    path = Path(parent.recv())
    os.kill(proc.pid, signal.SIGKILL)
    proc.join(30)
    assert proc.exitcode == -signal.SIGKILL and path.is_dir() and any(path.iterdir())
    get_backend(name, impl)("euclidean", X.shape[1], **build)  # construction sweeps
    assert not path.exists()


def assert_save_load_identical(name, impl, build, search, X, Q, tmp_path, metric="euclidean"):
    cls = get_backend(name, impl)
    a = cls(metric, X.shape[1], **build)
    a.build(X)
    a.set_search_params(**search)
    a.save(tmp_path / "index.bin")
    b = cls(metric, X.shape[1], **build)
    b.set_search_params(**search)
    b.load(tmp_path / "index.bin")
    assert b.dir.path != a.dir.path
    for x, y in zip(a.search(Q, 10), b.search(Q, 10)):
        np.testing.assert_array_equal(x, y)
    a.close()
    b.close()


def assert_same_up_to_ties(D, I, D2, I2, tol=1e-6):
    """The same distances, and the same ids except in the order of equal distances — and at the cut, where a tie
    group reaching the k-th position may be cut anywhere (quantised distances such as PQ codes' tie exactly, and a
    library's batch and one-row kernels may order ties differently)."""
    np.testing.assert_allclose(D2, D, rtol=tol, atol=tol)
    for row, (d, ids, ids2) in enumerate(zip(D, I, I2)):
        at_cut = np.isclose(d, d[-1], rtol=tol, atol=tol)
        start = 0
        while start < len(d) and not at_cut[start]:
            end = start + 1
            while end < len(d) and np.isclose(d[end], d[start], rtol=tol, atol=tol):
                end += 1
            assert set(ids[start:end]) == set(ids2[start:end]), (row, start, ids, ids2)
            start = end


def assert_single_equals_batch(index, Q, k=10):
    """Single mode's timed calls and finish give what one batch call gives."""
    D, I = index.search(Q, k)
    single = index.single_query(Q, k)
    kept = [single.call(Q[i : i + 1]) for i in range(len(Q))]
    Ds, Is = index.convert(*single.finish(kept))
    assert_same_up_to_ties(D, I, Ds, Is)


def assert_engine_matches_client(index, Q, k=10):
    """The engine under the client (``engine_query``), in batch and single mode, returns the client's own ids and
    distances; and the worker times it beside the client (``qps_engine``)."""
    from ann_bench.bench.worker import measure

    assert index.engine and index.engine_unavailable() is None
    D, I = index.query(Q, k)
    De, Ie = index.engine_query(Q, k)
    assert_same_up_to_ties(D, I, De, Ie)
    single = index.engine_single_query(Q, k)
    kept = []
    for i in range(len(Q)):
        res = single.call(Q[i : i + 1])
        kept.append(res if single.keep is None else single.keep(i, res))
    Ds, Is = single.finish(kept)
    assert_same_up_to_ties(D, I, Ds, Is)  # LanceDB IVF_PQ in ip: the one-row call cut a tie at k elsewhere (1 in 300)
    for mode in ("batch", "single"):
        figures, ids = measure(index, Q, k, mode, runs=2)
        assert figures["qps_engine"] > 0 and figures["qps"] > 0
        np.testing.assert_array_equal(ids, index.convert(D, I)[1])
