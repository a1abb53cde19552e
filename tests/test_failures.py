"""A sweep survives crashing, hanging and memory-hungry backends, and kill -9 (tests/plugins/faulty_backends.py)."""

import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from ann_bench.data.vectorset import VectorSet
from ann_bench.bench.results import ResultStore
from ann_bench.bench.runner import RunOptions, plan_sweep, run_sweep
from ann_bench.bench.worker import WORKER_LOG, sweep_worker_logs


def sweep(path, backend, build=(), search=(), store=None, **options):
    with VectorSet(path) as vs:
        plans = plan_sweep([backend], vs.n_train, vs.dim, vs.metric, build, search)
        return run_sweep(vs, plans, RunOptions(runs=1, **options), store)


def by(summary, key, value, params="build_params"):
    return next(r for r in summary.records if getattr(r, params)[key] == value)


def test_abort_in_build_becomes_a_failed_row_and_the_sweep_goes_on(small_set, faulty_backends):
    summary = sweep(small_set, "crashing", ["crash=true,false"])
    crashed, fine = by(summary, "crash", True), by(summary, "crash", False)
    assert crashed.status == "failed" and "build: worker killed by SIGABRT" in crashed.error
    assert fine.status == "ok" and fine.recall == 1.0


def test_hang_becomes_a_timeout_row(small_set, faulty_backends):
    t0 = time.perf_counter()
    summary = sweep(small_set, "hanging", search=["hang=false,true"], timeout=8)
    assert time.perf_counter() - t0 < 30
    fine, hung = by(summary, "hang", False, "search_params"), by(summary, "hang", True, "search_params")
    assert fine.status == "ok" and fine.recall == 1.0  # measured before the hang: kept
    assert hung.status == "timeout" and "search: no result within --timeout 8 s" in hung.error
    assert hung.build_s is not None  # the build finished; its figures are on the row


def test_memory_hog_is_killed_at_the_limit(small_set, faulty_backends):
    summary = sweep(small_set, "hog", ["gb=0,4"], memory_limit=1 << 30)
    hog, fine = by(summary, "gb", 4.0), by(summary, "gb", 0.0)
    assert hog.status == "failed" and "memory limit exceeded" in hog.error and "--memory-limit 1,074 MB" in hog.error
    assert fine.status == "ok" and fine.peak_rss_bytes > 0 and fine.rss_delta_bytes is not None


def test_in_process_mode_gives_the_same_recall(small_set, faulty_backends):
    a = sweep(small_set, "hnsw", ["M=8"], ["ef=10,20"], seed=1)
    b = sweep(small_set, "hnsw", ["M=8"], ["ef=10,20"], seed=1, isolate=False)
    assert [r.recall for r in a.records] == [r.recall for r in b.records]


def test_kill_9_mid_sweep_then_resume(small_set, faulty_backends, tmp_path):
    store_path = tmp_path / "r.sqlite"
    steps = ",".join(map(str, range(16)))
    cmd = [sys.executable, "-m", "ann_bench", "run", "--dataset", str(small_set), "--backend", "slow",
           "--search", "sleep=0.25", "--search", f"step={steps}", "--runs", "1", "-q", "--results", str(store_path)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 60
    rows = 0
    while time.time() < deadline and rows < 4:
        time.sleep(0.2)
        if store_path.exists():
            try:
                rows = sqlite3.connect(store_path).execute("SELECT COUNT(*) FROM results").fetchone()[0]
            except sqlite3.OperationalError:
                rows = 0
    import psutil

    workers = psutil.Process(proc.pid).children(recursive=True)
    logs = list(Path(tempfile.gettempdir()).glob(f"{WORKER_LOG}{proc.pid}-*.log"))
    os.kill(proc.pid, signal.SIGKILL)  # the CLI, mid-write or not; its worker is left to notice
    proc.wait()
    assert logs and all(p.exists() for p in logs)  # a parent killed outright cannot remove its worker's log
    assert 4 <= rows < 16, rows
    with ResultStore(store_path) as store:
        assert store.integrity_ok()
        before = {r.search_params["step"] for r in store.records()}
        assert all(r.status == "ok" for r in store.records())
    # The worker of a killed parent does not linger.
    assert workers
    gone, alive = psutil.wait_procs(workers, timeout=5)
    assert not alive
    with ResultStore(store_path) as store:
        summary = sweep(small_set, "slow", search=["sleep=0.25", f"step={steps}"], store=store)
        assert summary.skipped_existing == len(before)
        assert {r.search_params["step"] for r in summary.records} == set(range(16)) - before
        assert len(store.records()) == 16 and store.integrity_ok()
    assert not any(p.exists() for p in logs)  # the next run's first worker swept the dead parent's log


def test_only_a_dead_parents_worker_logs_are_swept():
    live = Path(tempfile.gettempdir()) / f"{WORKER_LOG}{os.getppid()}-test.log"  # our parent: alive
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = Path(tempfile.gettempdir()) / f"{WORKER_LOG}{int(child.stdout)}-test.log"  # exited
    other = Path(tempfile.gettempdir()) / f"{WORKER_LOG}x-test.log"  # not a pid: not ours to judge
    for p in (live, dead, other):
        p.write_text("")
    try:
        assert dead.name in sweep_worker_logs()
        assert live.exists() and other.exists() and not dead.exists()
    finally:
        for p in (live, dead, other):
            p.unlink(missing_ok=True)
