"""`--executor ray` on a real multi-node Ray cluster started on this machine with `ray start` (a head and a
worker node, each with its own temp and cache directories): no shared path for the dataset, the same recall as
the local executor, a node killed mid-sweep (its tasks finish on the other node), a crash inside a library (one
failed row, not retried), the `auto` and `ray://` addresses."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest
from raycluster import Cluster  # noqa: E402 (tests/ is on sys.path, as for oracle)

from ann_bench.bench.results import ResultStore
from ann_bench.bench.runner import Reporter, RunOptions, plan_sweep, run_sweep
from ann_bench.data.vectorset import VectorSet

ray = pytest.importorskip("ray")
@pytest.fixture(scope="module")
def cluster():
    root = Path(tempfile.mkdtemp(prefix="abc"))  # short: Ray's socket paths must fit in 107 bytes
    c = Cluster(root)
    try:
        c.add_worker()
        c.wait_for(2)
        yield c
    finally:
        c.stop()
        shutil.rmtree(root, ignore_errors=True)


class Logged(Reporter):
    def __init__(self):
        self.lines: list[str] = []

    def log(self, message: str) -> None:
        self.lines.append(message)


def sweep(path, backends, build=(), search=(), store=None, reporter=None, **options):
    with VectorSet(path) as vs:
        plans = plan_sweep(backends, vs.n_train, vs.dim, vs.metric, build, search)
        return run_sweep(vs, plans, RunOptions(runs=1, **options), store, reporter)


@pytest.fixture
def unshared(small_set, tmp_path):
    """A copy of the small set that disappears once the driver has opened it: no node can read its path."""
    path = tmp_path / "gone.hdf5"
    shutil.copy(small_set, path)
    return path


def test_no_shared_path_same_recall_as_local(cluster, small_set, unshared, monkeypatch, tmp_path):
    import ann_bench.bench.executors.ray as ray_executor

    # the large-set path on a small set: train in chunks of 64 KiB, copied once per node
    monkeypatch.setattr(ray_executor, "OBJECT_STORE_MAX_BYTES", 0)
    monkeypatch.setattr(ray_executor, "CHUNK_BYTES", 64 << 10)
    local = sweep(small_set, ["hnsw", "ivf"], ["hnsw:M=8,16", "ivf:nlist=16,32"], ["hnsw:ef=10,40", "ivf:nprobe=1,4"])
    rep = Logged()
    with VectorSet(unshared) as vs:
        os.unlink(unshared)  # the driver holds it open; nothing else can read it from here on
        plans = plan_sweep(["hnsw", "ivf"], vs.n_train, vs.dim, vs.metric, ["hnsw:M=8,16", "ivf:nlist=16,32"],
                           ["hnsw:ef=10,40", "ivf:nprobe=1,4"])
        remote = run_sweep(vs, plans, RunOptions(runs=1, executor="ray", address=cluster.address), None, rep)
    assert all(r.status == "ok" for r in remote.records), [r.error for r in remote.records]
    same = {(r.backend, str(r.build_params), str(r.search_params)): r.recall for r in local.records}
    assert {(r.backend, str(r.build_params), str(r.search_params)): r.recall for r in remote.records} == same
    assert all(r.host for r in remote.records)  # rows carry the facts of the node that measured them
    moved = [line for line in rep.lines if "of vectors went to" in line]
    assert moved and ("to 2 node(s)" in moved[0] or "to 1 node(s)" in moved[0])
    copies = list(cluster.root.glob("cache-*/ray-vectors/*.hdf5"))
    assert 1 <= len(copies) <= 2 and len({c.parent.parent.name for c in copies}) == len(copies)  # one a node


def test_a_node_killed_mid_sweep_its_tasks_finish_elsewhere(cluster, small_set, faulty_backends):
    extra = cluster.add_worker()
    cluster.wait_for(3)
    # 6 tasks of >= 6 s on 3 one-CPU nodes: every node is busy from a few seconds in until ~10 s
    killer = threading.Timer(5.0, cluster.kill_worker, args=(extra,))
    killer.start()
    try:
        summary = sweep(small_set, ["slow"], ["replica=0,1,2,3,4,5"], ["sleep=1.0", "step=0,1,2,3,4,5"],
                        executor="ray", address=cluster.address)
    finally:
        killer.cancel()
    rows = summary.records
    assert len(rows) == 36 and all(r.status == "ok" for r in rows), {r.error for r in rows if r.status != "ok"}
    retried = [r for r in rows if r.attempts > 1]
    assert retried, "no task was running on the killed node"
    assert all(r.retry_reason.startswith("ray ") for r in retried)


def test_a_segfaulting_build_is_one_failed_row_not_retried(cluster, small_set, faulty_backends):
    summary = sweep(small_set, ["crashing"], ["crash=true,false"], executor="ray", address=cluster.address)
    crashed = next(r for r in summary.records if r.build_params["crash"])
    fine = next(r for r in summary.records if not r.build_params["crash"])
    assert crashed.status == "failed" and "SIGABRT" in crashed.error and crashed.attempts == 1
    assert fine.status == "ok" and fine.recall == 1.0


@pytest.mark.parametrize("how", ["auto", "ray://"])
def test_cluster_addresses(cluster, small_set, tmp_path, monkeypatch, how):
    if how == "auto":
        monkeypatch.setenv("RAY_ADDRESS", cluster.address)  # what `ray start --head` tells a shell to export
        address = "auto"
    else:
        address = f"ray://127.0.0.1:{cluster.client_port}"
    with ResultStore(tmp_path / "r.sqlite") as store:
        summary = sweep(small_set, ["flat"], executor="ray", address=address, store=store)
    assert [r.status for r in summary.records] == ["ok"] and summary.records[0].recall == 1.0


def test_a_cluster_that_grows_waits_for_its_node_and_says_so(cluster, small_set, monkeypatch):
    import ann_bench.bench.executors.ray as ray_executor
    from ann_bench.errors import InputError

    with pytest.raises(InputError, match=r"no node of the Ray cluster offers 2 CPU\(s\).*--autoscaling"):
        sweep(small_set, ["flat"], threads=2, executor="ray", address=cluster.address)
    monkeypatch.setattr(ray_executor, "PENDING_NOTE_S", 1.0)
    rep = Logged()
    grown: list[subprocess.Popen] = []

    def autoscaler() -> None:  # adds the node the waiting task asks for, as an autoscaler would
        t0 = time.perf_counter()
        while not any("waits for a node with 2 CPU(s) free" in line for line in rep.lines):
            if time.perf_counter() - t0 > 120:
                return
            time.sleep(0.2)
        grown.append(cluster.add_worker(cpus=2))

    threading.Thread(target=autoscaler, daemon=True).start()
    try:
        summary = sweep(small_set, ["flat"], threads=2, executor="ray", address=cluster.address, autoscaling=True,
                        reporter=rep)
    finally:
        for proc in grown:
            cluster.kill_worker(proc)
    assert [r.status for r in summary.records] == ["ok"]
    assert any("no node offers 2 CPU(s) yet; waiting for the autoscaler" in line for line in rep.lines)
