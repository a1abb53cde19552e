"""Issue 33: a row timed while another process had the CPU is marked `contended` (the worker's process CPU time
over wall time, per query thread, below 0.9), and `run` says so in one line; an unthrottled row is not."""

import multiprocessing as mp
import os

import pytest
from click.testing import CliRunner

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
    assert row.contended and row.load_avg is not None and row.search_s_median >= row.search_s
    assert "contended" in out
    for args in (("results",), ("best", "--recall", "0.5", "--mode", "single")):
        r = CliRunner().invoke(cli, [*args, "--results", str(tmp_path / "busy.sqlite")], catch_exceptions=False)
        assert r.exit_code == 0 and "contended:" in r.output, r.output

    out, rows = _run(heavier_set, tmp_path / "quiet.sqlite", "--mode", "single")
    (row,) = rows
    assert row.cpu_share > 0.9 and not row.contended, row.cpu_share
    assert "contended" not in out
