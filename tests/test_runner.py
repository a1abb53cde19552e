import pytest

from ann_bench import backends as registry
from ann_bench.data.vectorset import VectorSet
from ann_bench.errors import InputError
from ann_bench.bench.results import ResultStore
from ann_bench.bench.runner import RunOptions, parse_param_specs, plan_sweep, run_sweep


def test_parse_param_specs():
    assert parse_param_specs(["M=16,32", "hnsw:ef=10;ivf:nprobe=1,2"]) == [
        (None, "M", ["16", "32"]), ("hnsw", "ef", ["10"]), ("ivf", "nprobe", ["1", "2"])]
    for bad in ["M16", "M=", "M=1,,2", "=3", "a:b:c=1"]:
        with pytest.raises(InputError, match="malformed --build"):
            parse_param_specs([bad])


def test_plan_sweep_overrides_and_validates():
    plans = plan_sweep(["hnsw", "ivf"], 5000, 16, "euclidean", ["hnsw:M=8,12"], ["ivf:nprobe=1,4"])
    hnsw, ivf = plans
    assert [b["M"] for b in hnsw.builds] == [8, 12] and hnsw.builds[0]["ef_construction"] == 200
    assert [s["nprobe"] for s in ivf.searches] == [1, 4]
    assert len(hnsw.searches) == len(registry.get_backend("hnsw").search_grid["ef"])
    # Unprefixed parameters go to the backends that declare them; a name nobody declares is an error.
    hnsw, ivf = plan_sweep(["hnsw", "ivf"], 5000, 16, "euclidean", ["nlist=64"], ["ef=10", "nprobe=2"])
    assert [s["ef"] for s in hnsw.searches] == [10] and ivf.builds == [{"nlist": 64, "train_per_list": 64}]
    with pytest.raises(InputError, match=r"unknown search parameter 'efs'; valid: hnsw\[hnswlib\]: ef"):
        plan_sweep(["hnsw", "ivf"], 5000, 16, "euclidean", (), ["efs=10"])
    with pytest.raises(InputError, match="unknown build parameter 'nprobe'"):
        plan_sweep(["ivf"], 5000, 16, "euclidean", ["ivf:nprobe=1"])
    with pytest.raises(InputError, match="names backend 'annoy', which is not in this run"):
        plan_sweep(["hnsw"], 5000, 16, "euclidean", ["annoy:n_trees=3"])
    with pytest.raises(InputError, match="M='x' is not an integer"):
        plan_sweep(["hnsw"], 5000, 16, "euclidean", ["M=x"])
    with pytest.raises(InputError, match="nlist=8192 exceeds"):
        plan_sweep(["ivf"], 5000, 16, "euclidean", ["nlist=8192"])
    with pytest.raises(InputError, match="unknown backend"):
        plan_sweep(["bogus"], 5000, 16, "euclidean")


def test_sweep_measures_recall_qps_and_latency(small_set, tmp_path):
    options = RunOptions(k=10, runs=2, modes=("batch", "single"), exhaustive=True)
    with VectorSet(small_set) as vs, ResultStore(tmp_path / "r.sqlite") as store:
        plans = plan_sweep(["flat", "ivf"], vs.n_train, vs.dim, vs.metric, ["nlist=16"], ["nprobe=1,4,16,32"])
        summary = run_sweep(vs, plans, options, store)
        rows = store.records()
        gt_I = vs.neighbors[:, :10]
    # nprobe=32 > nlist=16 is skipped as redundant; flat 1 x 2 modes + ivf 3 x 2 modes.
    assert len(rows) == 8 and all(r.status == "ok" for r in rows)
    assert any("nprobe=32 > nlist=16" in s for s in summary.skipped_redundant)
    flat = [r for r in rows if r.backend == "flat"]
    assert all(r.recall == 1.0 and r.id_recall == 1.0 for r in flat)
    single = [r for r in rows if r.mode == "single"]
    assert all(r.p50_ms <= r.p95_ms <= r.p99_ms <= r.p999_ms for r in single)
    assert all(r.qps == pytest.approx(100 / r.search_s) for r in rows)
    ivf = sorted((r for r in rows if r.backend == "ivf" and r.mode == "batch"), key=lambda r: r.search_params["nprobe"])
    assert ivf[0].recall < ivf[-1].recall == 1.0
    assert all(r.build_s > 0 and r.index_bytes > 0 for r in rows)
    assert rows[0].versions["faiss-cpu"] and rows[0].host["cores"] >= 1
    # The stored neighbours reproduce the recorded id recall.
    with ResultStore(tmp_path / "r.sqlite") as store:
        I = store.load_neighbors(ivf[0])
    from ann_bench.bench.metrics import id_recall

    assert id_recall(I, gt_I, 10).mean() == pytest.approx(ivf[0].id_recall)


def test_resume_skips_finished_configurations(small_set, tmp_path):
    with VectorSet(small_set) as vs, ResultStore(tmp_path / "r.sqlite") as store:
        plans = plan_sweep(["ivf"], vs.n_train, vs.dim, vs.metric, ["nlist=16"], ["nprobe=1,2"])
        first = run_sweep(vs, plans, RunOptions(runs=1), store)
        plans = plan_sweep(["ivf"], vs.n_train, vs.dim, vs.metric, ["nlist=16"], ["nprobe=1,2,4"])
        second = run_sweep(vs, plans, RunOptions(runs=1), store)
        forced = run_sweep(vs, plans, RunOptions(runs=1, resume=False), store)
        assert len(first.records) == 2 and len(second.records) == 1 and second.skipped_existing == 2
        assert len(forced.records) == 3 and len(store.records()) == 3


def test_same_seed_same_recall(small_set, tmp_path):
    recalls = []
    for i in range(2):
        with VectorSet(small_set) as vs:
            plans = plan_sweep(["hnsw"], vs.n_train, vs.dim, vs.metric, ["M=8"], ["ef=10,20"])
            summary = run_sweep(vs, plans, RunOptions(runs=1, seed=3))
        recalls.append([r.recall for r in summary.records])
    assert recalls[0] == recalls[1]


def test_duplicate_ids_and_build_errors_become_failed_records(small_set, faulty_backends):
    with VectorSet(small_set) as vs:
        plans = plan_sweep(["duplicating"], vs.n_train, vs.dim, vs.metric, ["fail=false,true"])
        summary = run_sweep(vs, plans, RunOptions(runs=1))
    ok_build, failed_build = summary.records
    assert ok_build.status == "failed" and "duplicate ids: query 0 got id" in ok_build.error
    assert failed_build.status == "failed" and "RuntimeError: library exploded" in failed_build.error


def test_k_beyond_groundtruth_depth_is_refused(small_set):
    with VectorSet(small_set) as vs:
        plans = plan_sweep(["flat"], vs.n_train, vs.dim, vs.metric)
        with pytest.raises(InputError, match="exceeds the ground-truth depth 100"):
            run_sweep(vs, plans, RunOptions(k=101))


def test_executor_options_are_checked():
    with pytest.raises(InputError, match="unknown executor 'dask'"):
        RunOptions(executor="dask").check()
    with pytest.raises(InputError, match="cannot be combined with --executor ray"):
        RunOptions(executor="ray", isolate=False).check()
    with pytest.raises(InputError, match="--address names a Ray cluster; add --executor ray"):
        RunOptions(address="auto").check()


def test_ray_executor_without_ray_gives_the_install_hint(small_set, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "ray", None)  # as if the extra were not installed
    with VectorSet(small_set) as vs:
        plans = plan_sweep(["flat"], vs.n_train, vs.dim, vs.metric)
        with pytest.raises(InputError, match=r"--executor ray needs the ray extra: pip install -e '\.\[ray\]'"):
            run_sweep(vs, plans, RunOptions(executor="ray"))


def test_a_ray_cluster_that_is_not_there_is_one_line_and_no_store(small_set, tmp_path):
    import socket

    from click.testing import CliRunner

    from ann_bench.cli import cli

    pytest.importorskip("ray")
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    store = tmp_path / "r.sqlite"
    r = CliRunner().invoke(cli, ["run", "--dataset", str(small_set), "--backend", "flat", "--executor", "ray",
                                 "--address", f"127.0.0.1:{port}", "--results", str(store)])
    assert r.exit_code == 2
    assert f"cannot connect to the Ray cluster at 127.0.0.1:{port}: Connection refused" in r.output
    assert not store.exists() and list(tmp_path.iterdir()) == []
    r = CliRunner().invoke(cli, ["run", "--dataset", str(small_set), "--backend", "flat", "--executor", "ray",
                                 "--address", "nowhere", "--results", str(store)])
    assert r.exit_code == 2 and "is not HOST:PORT, ray://HOST:PORT or auto" in r.output and not store.exists()


def test_a_local_ray_instance_leaves_no_token_in_the_home_directory(small_set, tmp_path, monkeypatch):
    """Ray saves a token for a new local instance in ~/.ray/auth_token: a file nobody asked ann-bench for."""
    pytest.importorskip("ray")
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    with VectorSet(small_set) as vs:
        plans = plan_sweep(["flat"], vs.n_train, vs.dim, vs.metric)
        summary = run_sweep(vs, plans, RunOptions(runs=1, executor="ray"))
    assert [r.status for r in summary.records] == ["ok"]
    assert not (tmp_path / ".ray").exists() or not list((tmp_path / ".ray").iterdir())
    import os

    assert "RAY_AUTH_TOKEN" not in os.environ  # this run's token is gone with its instance


def test_costlier_orders_effort_parameters():
    hnsw, nsw, kdtree = (registry.get_backend(n) for n in ("hnsw", "nsw", "kdtree"))
    assert hnsw.costlier({"ef": 20}, {"ef": 40}) and not hnsw.costlier({"ef": 40}, {"ef": 20})
    assert not hnsw.costlier({"ef": 20}, {"ef": 20})
    assert nsw.costlier({"ef": 20, "m": 1}, {"ef": 20, "m": 2}) and not nsw.costlier({"ef": 20, "m": 2}, {"ef": 40, "m": 1})
    assert kdtree.costlier({"eps": 1.0}, {"eps": 0.0}) and not kdtree.costlier({"eps": 0.0}, {"eps": 1.0})
    assert not registry.get_backend("flat").costlier({}, {})


def test_settings_costlier_than_an_exact_one_are_skipped_and_stay_skipped_on_resume(small_set, tmp_path):
    grid = ["nprobe=1,16,12,24"]  # 16 of 32 lists reach recall 1.0 here; 12 is cheaper, so it is still measured
    with VectorSet(small_set) as vs, ResultStore(tmp_path / "r.sqlite") as store:
        plans = plan_sweep(["ivf"], vs.n_train, vs.dim, vs.metric, ["nlist=32"], grid)
        first = run_sweep(vs, plans, RunOptions(runs=1), store)
        measured = {r.search_params["nprobe"]: r.recall for r in first.records}
        exact = min(p for p, rec in measured.items() if rec == 1.0)
        assert measured[1] < 1.0 and measured[16] == 1.0 and 12 in measured and 24 not in measured
        assert any("nprobe24: recall@10 already 1.0 at nprobe16;" in s for s in first.skipped_redundant)
        # Resumed with a larger grid: the stored exact row still makes the costlier settings redundant.
        plans = plan_sweep(["ivf"], vs.n_train, vs.dim, vs.metric, ["nlist=32"], ["nprobe=1,8,12,16,14"])
        second = run_sweep(vs, plans, RunOptions(runs=1), store)
        assert [r.search_params["nprobe"] for r in second.records] == [8] and exact == 12
        assert len(second.skipped_redundant) == 1 and "nprobe14: recall@10 already 1.0 at nprobe12 (stored)" \
            in second.skipped_redundant[0]
        full = run_sweep(vs, plans, RunOptions(runs=1, exhaustive=True), store)
        assert not full.skipped_redundant and [r.search_params["nprobe"] for r in full.records] == [14]


def test_warm_up_runs_before_the_timed_build(small_set, monkeypatch):
    """A backend's one-time costs (numba's compilation for our NSW) stay out of build_s."""
    import time as _time

    from ann_bench.backends.nsw import NumbaNSW as NSW
    from ann_bench.bench.worker import BuildJob, execute_build

    calls = []
    real = NSW.warm_up

    def slow_warm_up(self):
        calls.append("warm_up")
        real(self)
        _time.sleep(1.0)  # as if compiling took a second more

    monkeypatch.setattr(NSW, "warm_up", slow_warm_up)
    with VectorSet(small_set) as vs:
        X, Q = vs.load_train(), vs.load_test()
        gt_D, gt_I = vs.groundtruth(10)
    job = BuildJob(dataset_path=str(small_set), metric="euclidean", dim=16, backend="nsw", impl="numba",
                   build={"f": 8, "w": 1, "ef_construction": 16, "entry": "first"}, pending=[({"ef": 10, "m": 1}, "batch")],
                   k=10, runs=1, threads=1, build_threads=1, seed=0, gt_D=gt_D, gt_I=gt_I)
    events = []
    execute_build(job, X, Q, lambda *e: events.append(e))
    built = next(e[1] for e in events if e[0] == "built")
    assert calls == ["warm_up"] and built["build_s"] < 1.0


def test_nsw_warm_up_compiles_what_the_build_uses():
    from ann_bench.backends.nsw import NumbaNSW as NSW

    index = NSW("angular", 8, f=4, w=1, ef_construction=8, entry="first")
    index.warm_up()  # a small graph of the same parameters: nothing kept on the instance
    assert not index._built


def test_cold_and_warm_nsw_builds_report_the_same_build_time(small_set, tmp_path, monkeypatch):
    """A worker with an empty numba cache compiles every kernel (tens of seconds) in warm_up, outside the
    timed build: its build_s is that of a worker that finds the kernels cached, within noise."""
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "numba-cache"))  # empty: the first worker is cold
    with VectorSet(small_set) as vs:
        plans = plan_sweep(["nsw"], vs.n_train, vs.dim, vs.metric, ["f=10"], ["ef=20"])
        cold, warm = (run_sweep(vs, plans, RunOptions(runs=1, resume=False)).records[0] for _ in range(2))
    assert cold.status == warm.status == "ok"
    assert any((tmp_path / "numba-cache").rglob("*.nbi"))  # the cold worker did compile, into that cache
    assert abs(cold.build_s - warm.build_s) < max(0.5, warm.build_s), (cold.build_s, warm.build_s)


def test_measure_times_with_the_garbage_collector_off_and_restores_it():
    """As timeit does: no collection inside a timed query; the caller's gc state is back afterwards."""
    import gc

    import numpy as np

    from ann_bench.backends.base import Index
    from ann_bench.bench.worker import measure

    class Probe:
        seen: list[bool] = []

        def query(self, Q, k):
            self.seen.append(gc.isenabled())
            return np.zeros((len(Q), k), np.float32), np.zeros((len(Q), k), np.int64)

        def convert(self, D, I):
            return D, I

        single_query = Index.single_query  # single mode's default: query itself
        engine, no_engine, engine_unavailable = Index.engine, Index.no_engine, Index.engine_unavailable  # none

    probe = Probe()
    assert gc.isenabled()
    measure(probe, np.zeros((3, 2), np.float32), 1, "single", 1)
    measure(probe, np.zeros((3, 2), np.float32), 1, "batch", 1)
    assert probe.seen and not any(probe.seen) and gc.isenabled()
