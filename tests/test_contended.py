"""Issue 33: a row timed while another process had the CPU is marked `contended` (the worker's process CPU time
over wall time, per query thread, below 0.9), and `run` says so in one line; an unthrottled row is not."""

import multiprocessing as mp
import os

import pytest
from click.testing import CliRunner

from ann_bench.bench.metrics import RECALL_RULE
from ann_bench.bench.results import ResultStore
from ann_bench.cli import cli

pytestmark = pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs os.sched_setaffinity")


def _spin(cpu: int) -> None:
    os.sched_setaffinity(0, {cpu})
    while True:
        pass


@pytest.fixture
def one_cpu():
    """This process pinned to one CPU (restored afterwards)."""
    before = os.sched_getaffinity(0)
    cpu = min(before)
    os.sched_setaffinity(0, {cpu})
    yield cpu
    os.sched_setaffinity(0, before)


@pytest.fixture(scope="module")
def heavier_set(tmp_path_factory):
    """Long enough a timed region (about 0.1 s a run) for the scheduler to share the CPU within it."""
    from ann_bench.data.vectorset import SynthSpec, synth

    path = tmp_path_factory.mktemp("contended") / "s.hdf5"
    synth(path, SynthSpec(n=20000, dim=64, queries=500, clusters=10, seed=3), k=10)
    return path


def _run(dataset, store, *extra):
    args = ["run", "--dataset", str(dataset), "--backend", "flat", "--runs", "3", "--in-process",
            "--results", str(store), *extra]
    r = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert r.exit_code == 0, r.output
    with ResultStore(store, create=False) as s:
        return r.output, s.records()


def test_a_throttled_worker_marks_its_row_contended(tmp_path, heavier_set, one_cpu):
    busy = mp.get_context("fork").Process(target=_spin, args=(one_cpu,), daemon=True)
    busy.start()
    try:
        out, rows = _run(heavier_set, tmp_path / "busy.sqlite", "--mode", "single")
    finally:
        busy.kill()
        busy.join()
    (row,) = rows
    assert row.cpu_share is not None and row.cpu_share < 0.8, row.cpu_share
    assert row.runs == 9  # every run contended: up to 3 x --runs timed, looking for a quiet one
    assert row.contended and row.load_avg is not None and row.search_s_median >= row.search_s
    assert "contended" in out
    for args in (("results",), ("best", "--recall", "0.5", "--mode", "single")):
        r = CliRunner().invoke(cli, [*args, "--results", str(tmp_path / "busy.sqlite")], catch_exceptions=False)
        assert r.exit_code == 0 and "contended:" in r.output, r.output

    out, rows = _run(heavier_set, tmp_path / "quiet.sqlite", "--mode", "single")
    (row,) = rows
    assert row.cpu_share > 0.9 and not row.contended, row.cpu_share
    assert row.runs == 3 and row.pinned_cpus is None
    assert "contended" not in out


def test_remeasure_contended_measures_only_the_contended_rows_again(tmp_path, small_set):
    import sqlite3

    store = tmp_path / "r.sqlite"
    base = ["run", "--dataset", str(small_set), "--backend", "flat", "--backend", "kdtree", "--runs", "1",
            "--build", "kdtree:leafsize=16", "--search", "kdtree:eps=0", "--results", str(store)]
    assert CliRunner().invoke(cli, base, catch_exceptions=False).exit_code == 0
    with ResultStore(store, create=False) as s:
        before = {r.backend: r for r in s.records()}
    db = sqlite3.connect(store)
    with db:
        db.execute("UPDATE results SET cpu_share = 0.4 WHERE backend = 'flat'")
    db.close()
    with ResultStore(store, create=False) as s:
        assert [r.backend for r in s.records() if r.contended] == ["flat"]
    r = CliRunner().invoke(cli, base, catch_exceptions=False)  # resumed: nothing to do
    assert r.exit_code == 0 and "skipped 2 configuration(s)" in r.output, r.output
    r = CliRunner().invoke(cli, [*base, "--remeasure-contended"], catch_exceptions=False)
    assert r.exit_code == 0 and "skipped 1 configuration(s)" in r.output, r.output
    with ResultStore(store, create=False) as s:
        after = {r.backend: r for r in s.records()}
    assert after["kdtree"].neighbors_sha256 == before["kdtree"].neighbors_sha256
    assert after["kdtree"].created_at == before["kdtree"].created_at and after["kdtree"].cpu_share == before["kdtree"].cpu_share
    assert after["flat"].cpu_share != 0.4 and len(after) == 2


def test_pin_cpus_pins_every_thread_and_records_the_cpus(tmp_path, small_set):
    allowed = os.sched_getaffinity(0)
    store = tmp_path / "p.sqlite"
    r = CliRunner().invoke(cli, ["run", "--dataset", str(small_set), "--backend", "hnsw", "--runs", "1",
                                 "--pin-cpus", "1", "--results", str(store)], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    with ResultStore(store, create=False) as s:
        rows = s.records()
    assert rows and all(r.pinned_cpus is not None and len(r.pinned_cpus.split(",")) == 1
                        and int(r.pinned_cpus) in allowed for r in rows), [r.pinned_cpus for r in rows]


def test_pinned_covers_threads_started_before_it_and_restores_them():
    import threading

    from ann_bench.bench.worker import pinned

    allowed = sorted(os.sched_getaffinity(0))
    stop, ready, seen = threading.Event(), threading.Event(), {}

    def pool_thread():
        seen["tid"] = threading.get_native_id()
        ready.set()
        stop.wait()

    t = threading.Thread(target=pool_thread)
    t.start()
    ready.wait()
    try:
        with pinned([allowed[-1]]):
            assert os.sched_getaffinity(seen["tid"]) == {allowed[-1]}
            assert os.sched_getaffinity(0) == {allowed[-1]}
        assert os.sched_getaffinity(seen["tid"]) == set(allowed) == os.sched_getaffinity(0)
    finally:
        stop.set()
        t.join()


@pytest.mark.parametrize("args,message", [
    (["--pin-cpus", "1", "--threads", "2"], "--pin-cpus 1 would give 2 query threads 1 CPU(s)"),
    (["--pin-cpus", "1000"], "--pin-cpus 1000: this process may use only"),
    (["--pin-cpus", "0"], "--pin-cpus"),
])
def test_pin_cpus_refuses_what_cannot_be_pinned(tmp_path, small_set, args, message):
    r = CliRunner().invoke(cli, ["run", "--dataset", str(small_set), "--backend", "flat", *args,
                                 "--results", str(tmp_path / "r.sqlite")])
    assert r.exit_code == 2 and message in r.output and "Traceback" not in r.output, r.output
    assert not (tmp_path / "r.sqlite").exists()


def _record(qps, cpu_share, **kw):
    from ann_bench.bench.results import Record

    return Record(backend="hnsw", impl="hnswlib", build_params={"M": kw.pop("M", 16)}, search_params={"ef": qps},
                  k=10, mode="batch", threads=1, dataset_hash="h", dataset_name="d", recall=0.99, qps=qps,
                  cpu_share=cpu_share, index_bytes=1000, recall_rule=RECALL_RULE, **kw)


def test_best_prefers_an_uncontended_row_and_says_what_it_left_out():
    from ann_bench.report.best import best_configurations

    rows = [_record(5000, 0.5), _record(3000, 0.99), _record(2000, 0.97)]
    (b,) = best_configurations(rows, 0.95).per_backend
    assert b.best.qps == 3000 and b.contended_left_out == 1 and b.contended_better == 1
    (b,) = best_configurations([_record(5000, 0.5), _record(4000, 0.6)], 0.95).per_backend
    assert b.best.qps == 5000 and b.contended_left_out == 0  # none uncontended: the best of what there is


def test_the_winner_among_backends_is_uncontended_where_one_qualifies(tmp_path):
    from ann_bench.bench.results import Record, ResultStore
    from ann_bench.report.best import best_configurations

    ivf = Record(backend="ivf", impl="faiss", build_params={"nlist": 64}, search_params={"nprobe": 1}, k=10,
                 mode="batch", threads=1, dataset_hash="h", dataset_name="d", recall=0.99, qps=9000,
                 cpu_share=0.5, index_bytes=1000, recall_rule=RECALL_RULE)
    rows = [_record(5000, 0.99), ivf]
    answer = best_configurations(rows, 0.95)
    assert answer.winner.best.backend == "hnsw"  # ivf measured faster, but only while the CPU was shared
    assert [b.group for b in answer.contended_faster] == ["ivf [faiss]"]
    answer = best_configurations([_record(5000, 0.5), ivf], 0.95)
    assert answer.winner.best.backend == "ivf" and answer.contended_faster == []  # all contended: the fastest
    store = tmp_path / "r.sqlite"
    with ResultStore(store) as s:
        for r in rows:
            s.save(r)
    res = CliRunner().invoke(cli, ["best", "--recall", "0.95", "--results", str(store)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert "winner: hnsw [hnswlib]" in res.stdout
    assert "ivf [faiss] measured better (9,000 QPS) but was timed while another process had the CPU" in \
        " ".join(res.stderr.split())


def test_tune_ranks_a_contended_candidate_after_every_uncontended_one():
    import numpy as np

    from ann_bench.bench.tune.answers import Candidate, choose_answers

    fast = Candidate(_record(5000, 0.5), 0.99, np.ones(4), 5000.0, 0)
    slow = Candidate(_record(3000, 0.99, M=32), 0.99, np.ones(4), 3000.0, 1)
    answers = choose_answers([fast, slow], [0.95], None, ["hnsw[hnswlib]"], False, lambda r: True,
                             lambda *a: "none")
    assert answers[0].candidate is slow


@pytest.mark.parametrize("mode", ["batch", "single"])
def test_a_databases_engine_figure_is_retimed_while_contended(mode):
    """The engine figure (qps_engine) gets the client's protection: while every run so far got under 0.9 of the
    CPU (here an engine that waits instead of computing) up to 3 x runs are timed, and the share is kept."""
    import time

    import numpy as np

    from ann_bench.bench import worker

    class Waiting:
        threads = 1
        calls = 0

        def engine_unavailable(self):
            return None

        def engine_query(self, Q, k):
            Waiting.calls += 1
            time.sleep(0.01)

        def engine_single_query(self, Q, k):
            Waiting.calls += 1
            return (lambda q: time.sleep(0.002)), None, None

    Q = np.zeros((5, 4), dtype=np.float32)
    figures = worker._engine_figures(Waiting(), Q, 10, mode, 2)
    assert Waiting.calls == 2 * (1 + worker.EXTRA_RUNS)  # every run waited: all of them timed
    assert figures["cpu_share_engine"] < 0.5 and figures["qps_engine"] > 0


def test_the_fastest_per_filter_is_uncontended_where_one_reaches_the_target():
    from ann_bench.report.panels import winners_per_filter

    quiet, busy = _record(3000, 0.99, filter_spec="label"), _record(8000, 0.5, filter_spec="label", M=32)
    ((name, _, best),) = winners_per_filter([quiet, busy], targets=(0.9,))
    assert name == "label" and best == [quiet]
    ((_, _, best),) = winners_per_filter([busy], targets=(0.9,))
    assert best == [busy]  # nothing uncontended reaches it: the fastest of what there is
