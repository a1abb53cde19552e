"""Sweeps on a local Ray instance give what the local executor gives; failures become rows
(ann_bench/bench/executors/ray.py)."""

import shutil
import time

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from ann_bench.cli import cli
from ann_bench.data.vectorset import VectorSet
from ann_bench.errors import InputError
from ann_bench.data.groundtruth import exact_knn
from ann_bench.bench.executors.ray import exact_knn_ray  # imports ray only when called
from ann_bench.bench.results import ResultStore
from ann_bench.bench.runner import RunOptions, plan_sweep, run_sweep

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def sweep(path, backends, build=(), search=(), store=None, **options):
    with VectorSet(path) as vs:
        plans = plan_sweep(backends, vs.n_train, vs.dim, vs.metric, build, search)
        return run_sweep(vs, plans, RunOptions(runs=1, **options), store)


def by_key(summary):
    return {r.key: r for r in summary.records}


def test_ray_sweep_gives_the_local_recall_and_resumes(small_set, tmp_path):
    args = (small_set, ["flat", "hnsw", "ivf"], ["M=8", "nlist=16"], ["ef=10,20", "nprobe=1,4"])
    with ResultStore(tmp_path / "local.sqlite") as local_store, ResultStore(tmp_path / "ray.sqlite") as ray_store:
        local = by_key(sweep(*args, store=local_store, seed=1))
        on_ray = by_key(sweep(*args, store=ray_store, seed=1, executor="ray"))
        assert len(local) == 5 and set(on_ray) == set(local)
        for key, r in local.items():
            assert r.status == on_ray[key].status == "ok"
            assert (on_ray[key].recall, on_ray[key].id_recall) == (r.recall, r.id_recall)
        assert on_ray[next(iter(local))].host["hostname"] and on_ray[next(iter(local))].build_s > 0
        # The driver wrote every row and its neighbours.
        rows = ray_store.records()
        assert len(rows) == 5 and all(ray_store.load_neighbors(r).shape == (100, 10) for r in rows)
        # Resume: what the local executor stored is not run again on Ray, and vice versa.
        again = sweep(*args, store=local_store, seed=1, executor="ray")
        assert again.records == [] and again.skipped_existing == 5


def test_crashing_task_becomes_a_failed_row(small_set, faulty_backends):
    summary = sweep(small_set, ["crashing"], ["crash=true,false"], executor="ray")
    crashed = next(r for r in summary.records if r.build_params["crash"])
    fine = next(r for r in summary.records if not r.build_params["crash"])
    assert crashed.status == "failed" and "build: worker killed by SIGABRT" in crashed.error
    assert fine.status == "ok" and fine.recall == 1.0


def test_a_ray_worker_lost_on_every_attempt_becomes_a_failed_row(small_set, faulty_backends):
    summary = sweep(small_set, ["orphaning"], ["kill=true,false"], executor="ray")
    lost = next(r for r in summary.records if r.build_params["kill"])
    fine = next(r for r in summary.records if not r.build_params["kill"])
    # lost to the infrastructure three times (the task's Ray worker died each time): retried, then failed
    assert lost.status == "failed" and lost.error.startswith("build: ray WorkerCrashedError")
    assert lost.error.endswith("(attempt 3 of 3)") and lost.attempts == 3
    assert fine.status == "ok" and fine.recall == 1.0 and fine.attempts == 1 and fine.retry_reason == ""


def test_a_lost_task_runs_again_and_measures_only_what_was_not_recorded(small_set, faulty_backends, tmp_path):
    marker = tmp_path / "killed-once"
    summary = sweep(small_set, ["flaky"], [f"marker={marker}"], ["step=0,1,2,3"], executor="ray")
    rows = {r.search_params["step"]: r for r in summary.records}
    assert sorted(rows) == [0, 1, 2, 3] and len(summary.records) == 4  # each setting stored once
    assert all(r.status == "ok" and r.recall == 1.0 for r in rows.values())
    assert rows[0].attempts == rows[1].attempts == 1 and rows[0].retry_reason == ""  # before the loss
    assert rows[2].attempts == rows[3].attempts == 2  # measured by the second attempt
    assert rows[2].retry_reason.startswith("ray WorkerCrashedError")


def test_a_crash_inside_the_library_is_not_retried(small_set, faulty_backends):
    summary = sweep(small_set, ["crashing"], ["crash=true"], executor="ray")
    (row,) = summary.records
    assert row.status == "failed" and "SIGABRT" in row.error and row.attempts == 1


def test_hang_becomes_a_timeout_row(small_set, faulty_backends):
    t0 = time.perf_counter()
    summary = sweep(small_set, ["hanging"], search=["hang=false,true"], timeout=4, executor="ray")
    assert time.perf_counter() - t0 < 20
    fine = next(r for r in summary.records if not r.search_params["hang"])
    hung = next(r for r in summary.records if r.search_params["hang"])
    assert fine.status == "ok" and fine.recall == 1.0
    assert hung.status == "timeout" and "search: no result within --timeout 4 s" in hung.error


def test_a_task_no_node_can_hold_is_refused(small_set):
    with pytest.raises(InputError, match=r"no node of the Ray cluster offers 3 CPU\(s\)"):
        sweep(small_set, ["flat"], threads=3, executor="ray")


def test_split_groundtruth_equals_local(small_set, tmp_path):
    with VectorSet(small_set) as vs:
        X, Q = vs.load_train(), vs.load_test()
        D, I = exact_knn(X, Q, vs.metric, 20)
        for data in (None, ray.put((X, Q))):  # read from the path, or from the object store
            D_r, I_r = exact_knn_ray(str(small_set), vs.metric, vs.n_test, 20, chunks=3, data=data)
            np.testing.assert_array_equal(I_r, I)
            np.testing.assert_allclose(D_r, D, rtol=1e-6)
    # A set without ground truth gets it from Ray tasks; flat search then has recall 1.
    bare = tmp_path / "bare.hdf5"
    shutil.copy(small_set, bare)
    with h5py.File(bare, "a") as f:
        del f["neighbors"], f["distances"]
    summary = sweep(bare, ["flat"], executor="ray")
    assert [r.recall for r in summary.records] == [1.0]


def test_cli_executor_ray(small_set, tmp_path):
    store = tmp_path / "r.sqlite"
    r = CliRunner().invoke(cli, ["run", "--dataset", str(small_set), "--backend", "ivf", "--build", "nlist=16",
                                 "--search", "nprobe=1,16", "--runs", "1", "--executor", "ray", "--results",
                                 str(store)], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert "Pareto-optimal configurations" in r.output
    with ResultStore(store) as s:
        assert max(row.recall for row in s.records()) == 1.0


def test_task_past_its_timeout_is_cancelled_by_the_driver(small_set, faulty_backends, monkeypatch):
    from ann_bench.bench.executors import ray as ray_executor

    monkeypatch.setattr(ray_executor, "BACKSTOP_GRACE_S", -8.0)  # the driver acts 2 s after the task starts
    summary = sweep(small_set, ["hanging"], search=["hang=true"], timeout=10, executor="ray")
    (hung,) = summary.records
    assert hung.status == "timeout" and "ray task cancelled" in hung.error


def test_memory_limit_is_reserved_and_enforced(small_set, faulty_backends):
    summary = sweep(small_set, ["hog"], ["gb=0,4"], memory_limit=1 << 30, executor="ray")
    hog = next(r for r in summary.records if r.build_params["gb"] == 4.0)
    fine = next(r for r in summary.records if r.build_params["gb"] == 0.0)
    assert hog.status == "failed" and "memory limit exceeded" in hog.error
    assert fine.status == "ok" and fine.peak_rss_bytes > 0


def test_tune_on_ray_runs_the_same_trials_as_locally(small_set, tmp_path):
    """Each job runs as a Ray task; the builds proposed and the recall measured are the local ones."""
    from ann_bench.bench.tune import TuneOptions, run_tune

    def tune(store, executor):
        with VectorSet(small_set) as vs, ResultStore(store) as results:
            return run_tune(vs, TuneOptions(backends=("hnsw", "ivf"), trials=2, targets=(0.9,), budget_s=600.0),
                            RunOptions(runs=1, executor=executor), results)

    local, on_ray = tune(tmp_path / "local.sqlite", "local"), tune(tmp_path / "ray.sqlite", "ray")
    assert [t["build"] for t in on_ray.trials] == [t["build"] for t in local.trials]
    # The same setting recalls the same; which settings are probed can differ, as pruning compares timings.
    recall = lambda result: {c.record.key: c.record.recall for c in result.candidates}  # noqa: E731
    common = recall(on_ray).keys() & recall(local).keys()
    assert common and all(recall(on_ray)[key] == recall(local)[key] for key in common)


def test_a_small_set_says_what_went_to_the_nodes_too(small_set):
    """Issue 30: the closing line on the vectors sent is printed for a set under 64 MiB as well."""
    from ann_bench.bench.jobs import Reporter

    class Logged(Reporter):
        def __init__(self):
            self.lines = []

        def log(self, message):
            self.lines.append(message)

    rep = Logged()
    with VectorSet(small_set) as vs:
        size = (vs.load_train().nbytes + vs.load_test().nbytes) / 1e6
        plans = plan_sweep(["flat"], vs.n_train, vs.dim, vs.metric, (), ())
        run_sweep(vs, plans, RunOptions(runs=1, executor="ray"), None, rep)
    moved = [line for line in rep.lines if "MB of vectors" in line]
    assert moved == [f"ray: {size:,.1f} MB of vectors (train + test, one object) went through the object store to "
                     "the tasks on 1 host(s) (Ray copies it once to each node that runs a task)"]
