"""`ann-bench tune` (ann_bench/bench/tune/): the bisection finds the least effort exactly, answers are ordinary rows
verified on all queries, a killed tune resumes without measuring anything twice, constraints hold, answers are
validated on held-out queries, rows already in the store are candidates, the budget and Ctrl-C end it with an
answer."""

import json
import math

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from ann_bench.cli import cli
from ann_bench.data.vectorset import VectorSet
from ann_bench.errors import InputError
from ann_bench.bench.results import ResultStore
from ann_bench.bench.runner import RunOptions
from ann_bench.bench.tune import (Ladder, TuneOptions, bisect_targets, bootstrap_ci, parse_duration, parse_targets,
                            run_tune, split_queries)


# ---- the bisection --------------------------------------------------------------------------------------------
@settings(max_examples=200, deadline=None, derandomize=True)
@given(steps=st.lists(st.floats(0, 0.2), min_size=1, max_size=60), lo=st.integers(1, 50),
       targets=st.lists(st.floats(0.05, 1.0), min_size=1, max_size=3, unique=True))
def test_bisection_finds_the_least_effort_exactly(steps, lo, targets):
    """Any monotone recall curve over an integer ladder: each target gets the least setting reaching it (or None
    when none does, or when the recall levelled off on the way), in at most ~2 log2(n) + 2 probes per target."""
    curve = np.minimum(np.cumsum(steps), 1.0)
    ladder = Ladder(lo, lo + len(curve) - 1)  # values up to 109: exact up to 64, within 1/64 above
    probed = []

    def probe(i):
        probed.append(i)
        return float(curve[i]), 1.0 / (i + 1)

    found = bisect_targets(ladder, probe, targets)
    for t in targets:
        reaching = np.flatnonzero(curve >= t)
        if found[t] is None:  # unreachable, or given up after two doublings in a row that gained < 0.001
            below = sorted(i for i in probed if curve[i] < t)
            gains = [curve[b] - curve[a] for a, b in zip(below, below[1:])]
            assert not reaching.size or any(g1 < 0.001 and g2 < 0.001 for g1, g2 in zip(gains, gains[1:]))
            continue
        least = int(reaching[0])
        assert curve[found[t]] >= t  # reaches it, and is the least one up to the ladder's tolerance
        assert found[t] == least or ladder[found[t]] - ladder[least] <= ladder[found[t]] // 64
    assert len(probed) == len(set(probed))  # memoised: no setting measured twice
    assert len(probed) <= len(targets) * (2 * math.log2(len(curve) + 1) + 2)


def test_bisection_on_a_float_ladder_and_with_unmeasurable_settings():
    ladder = Ladder(values=(16.0, 8.0, 4.0, 2.0, 1.0, 0.5, 0.0))  # eps: large is cheap
    curve = [0.3, 0.5, None, 0.85, 0.93, 0.97, 1.0]  # setting 2 cannot be measured: it counts as not reaching
    found = bisect_targets(ladder, lambda i: None if curve[i] is None else (curve[i], 1.0), [0.4, 0.9, 0.99])
    assert found == {0.4: 1, 0.9: 4, 0.99: 6}


def test_a_recall_that_levels_off_below_the_target_stops_the_doubling():
    """IVF-PQ with a shallow re-ranking: recall stops at 0.92 whatever nprobe; the search gives up after two
    doublings that gained nothing instead of measuring ever slower settings up to the last."""
    probed = []

    def probe(i):
        probed.append(i)
        return min(0.92, 0.5 + 0.1 * math.log2(i + 1)), 1.0 / (i + 1)

    assert bisect_targets(Ladder(1, 4096), probe, [0.95]) == {0.95: None}
    assert max(probed) < 128 and len(probed) <= 9
    # A curve still closing the gap is followed to the target.
    assert bisect_targets(Ladder(1, 4096), lambda i: (1 - 0.5 / (i + 1), 1.0), [0.999])[0.999] == 499


def test_a_target_that_cannot_beat_the_best_so_far_is_pruned():
    """Below the target and already slower than the backend's best: more effort is slower still."""
    curve = np.linspace(0.5, 1.0, 100)
    probed = []

    def probe(i):
        probed.append(i)
        return float(curve[i]), 1000.0 / (i + 1)

    found = bisect_targets(Ladder(1, 100), probe, [0.9], bars=[700.0])
    assert found == {0.9: None} and len(probed) <= 2  # the second setting is already too slow (500 < 0.8 x 700)
    assert bisect_targets(Ladder(1, 100), probe, [0.9], bars=[1.0]) == {0.9: 80}


def test_a_contended_probe_prunes_nothing():
    """A probe whose best run was still contended steers with +inf: its slow speed was the machine's, so the
    target the same figures would prune is bisected to the end."""
    from ann_bench.bench.tune.plan import speed_of, steering_speed

    assert steering_speed({"qps": 500.0, "cpu_share": 0.95}, "qps") == 500.0
    assert steering_speed({"qps": 500.0, "cpu_share": None}, "qps") == 500.0  # share unknown: as measured
    assert steering_speed({"qps": 500.0, "cpu_share": 0.5}, "qps") == math.inf
    assert steering_speed({"p99_ms": 4.0, "cpu_share": 0.5}, "p99") == math.inf
    assert speed_of({"p99_ms": 4.0, "cpu_share": 0.5}, "p99") == 250.0
    curve = np.linspace(0.5, 1.0, 100)

    def probe(i):  # every probe as slow as the pruned one above, but contended
        return float(curve[i]), steering_speed({"qps": 1000.0 / (i + 1), "cpu_share": 0.5}, "qps")

    assert bisect_targets(Ladder(1, 100), probe, [0.9], bars=[700.0]) == {0.9: 80}


def test_durations_targets_and_splits():
    assert parse_duration("20m") == 1200 and parse_duration("1h30m") == 5400 and parse_duration("45") == 45
    assert parse_duration("90s") == 90
    for bad in ("", "soon", "-5m", "m"):
        with pytest.raises(InputError, match="duration"):
            parse_duration(bad)
    assert parse_targets("0.99, 0.9,0.95,0.9") == (0.9, 0.95, 0.99)
    with pytest.raises(InputError, match="not a number"):
        parse_targets("0.9,high")
    for bad in ((), (0.0,), (1.5,)):
        with pytest.raises(InputError):
            TuneOptions(targets=bad).check()
    tune_ids, held = split_queries(100, 0.5, seed=3)
    assert len(tune_ids) == len(held) == 50 and not set(tune_ids) & set(held)
    assert (split_queries(100, 0.5, seed=3)[0] == tune_ids).all()
    with pytest.raises(InputError, match="too few"):
        split_queries(15, 0.5, seed=0)
    lo, hi = bootstrap_ci(np.r_[np.ones(90), np.zeros(10)], seed=0)
    assert lo < 0.9 < hi and 0.8 < lo and hi < 0.97


# ---- end to end ---------------------------------------------------------------------------------------------
def tune(path, store_path, reporter=None, **kw):
    backends = kw.pop("backends", ("hnsw", "ivf"))
    run = RunOptions(runs=1, seed=kw.pop("seed", 0))
    kw.setdefault("budget_s", 600.0)  # the trial caps end these tunes, not the clock: deterministic
    options = TuneOptions(backends=backends, trials=kw.pop("trials", 2), **kw)
    with VectorSet(path) as vs, ResultStore(store_path) as store:
        return run_tune(vs, options, run, store, reporter)


def rows(store_path):
    with ResultStore(store_path, create=False) as store:
        return {r.key: r.created_at for r in store.records()}


def test_tune_answers_are_stored_rows_validated_on_held_out_queries(small_set, tmp_path):
    result = tune(small_set, tmp_path / "r.sqlite", targets=(0.8, 0.95), per_backend=True)
    stored = rows(tmp_path / "r.sqlite")
    assert result.n_tune == result.n_heldout == 50
    found = [a for a in result.answers if a.candidate is not None]
    assert {a.group for a in found} == {"hnsw[hnswlib]", "ivf[faiss]"}
    for a in found:
        c = a.candidate
        assert c.record.key in stored and c.record.status == "ok"  # measured on all queries, stored
        assert c.tune_recall >= a.target
        assert a.heldout_ci[0] <= c.heldout.mean() <= a.heldout_ci[1]
    # The bisection is exact on the probes: on each ivf build, the least nprobe probed reaching 0.95 is 1 or has
    # its predecessor probed below it. Probes are kept in the log, never as rows of the store.
    log = json.loads(result.log_path.read_text())
    for trial in (t for t in log["trials"] if t["backend"] == "ivf"):
        probes = {s["nprobe"]: r for s, r, _ in trial["probes"]}
        least = min((n for n, r in probes.items() if r >= 0.95), default=None)
        assert least is None or least == 1 or probes.get(least - 1, 1.0) < 0.95, sorted(probes.items())
    assert len(stored) == sum(len(t["row_keys"]) for t in log["trials"])
    assert [t["build"] for t in log["trials"] if t["backend"] == "hnsw"][0] == {"M": 16, "ef_construction": 200}
    assert len(log["answers"]) == 4 and set(log["times"]) >= {"builds", "probes", "verification", "overhead"}


def test_the_default_answer_is_the_winner_and_a_runner_up(small_set, tmp_path):
    result = tune(small_set, tmp_path / "r.sqlite", targets=(0.9,), trials=1)
    winner, second = result.ranked()
    assert (winner.role, second.role) == ("winner", "runner-up") and winner.group != second.group
    assert winner.candidate.speed >= second.candidate.speed


def test_rows_already_in_the_store_are_candidates_and_never_measured_again(small_set, tmp_path):
    """A grid run first: tune answers at least as fast as the best stored row reaching each target on the tuning
    queries, leaves every stored row as it was, and answers a target only a stored row reaches."""
    from ann_bench.bench.runner import plan_sweep, run_sweep

    store_path = tmp_path / "r.sqlite"
    with VectorSet(small_set) as vs, ResultStore(store_path) as store:
        run_sweep(vs, plan_sweep(["ivf"], vs.n_train, vs.dim, vs.metric), RunOptions(runs=1), store)
    before = rows(store_path)
    result = tune(small_set, store_path, backends=("ivf",), targets=(0.9, 0.999), trials=1)
    after = rows(store_path)
    assert all(after[key] == when for key, when in before.items())
    stored = [c for c in result.candidates if c.trial < 0]
    assert {c.record.key for c in stored} == set(before)
    for target in (0.9, 0.999):
        best_stored = max((c.speed for c in stored if c.tune_recall >= target), default=0.0)
        answer = next(a for a in result.answers if a.target == target and a.role == "winner")
        assert answer.candidate is not None and answer.candidate.speed >= best_stored


def test_the_budget_ends_the_tune_with_an_answer(small_set, tmp_path):
    """No trial cap: the budget ends it, with an answer from the first full-size build on, and the log and the
    summary say why it stopped and where the time went."""
    result = tune(small_set, tmp_path / "r.sqlite", backends=("ivf",), targets=(0.9,), trials=None, budget_s=6.0)
    assert "budget" in result.stopped or "would not finish" in result.stopped
    assert result.answers[0].candidate is not None
    assert result.elapsed_s < 6.0 + 30.0  # a job in flight at the deadline is stopped, not waited for
    assert set(result.times) >= {"builds", "probes", "verification", "workers", "overhead"}
    assert abs(sum(result.times.values()) - result.elapsed_s) < 0.5


def test_interrupted_tune_ends_with_the_answers_of_what_it_measured(small_set, tmp_path):
    """Ctrl-C (or SIGTERM, which the CLI turns into the same exit) during the third job: the two measured before
    stay, the answers come from them, and the tune says it stopped early."""
    from ann_bench.bench.jobs import Reporter

    class Interrupting(Reporter):
        lines = 0

        def log(self, message):
            if message.startswith("trial "):
                Interrupting.lines += 1
                if Interrupting.lines == 2:
                    raise KeyboardInterrupt

    result = tune(small_set, tmp_path / "r.sqlite", Interrupting(), backends=("ivf",), targets=(0.9,), trials=4)
    assert result.early and "stopped early" in result.stopped
    assert len(result.trials) == 2 and result.answers[0].candidate is not None
    assert rows(tmp_path / "r.sqlite")  # what was measured is kept


def test_a_killed_tune_resumes_the_same_trials_and_measures_nothing_twice(small_set, tmp_path):
    store = tmp_path / "r.sqlite"
    first = tune(small_set, store, trials=2, backends=("hnsw",))
    before = rows(store)
    # Re-running the same command measures nothing; one more trial measures only that trial.
    again = tune(small_set, store, trials=2, backends=("hnsw",))
    assert rows(store) == before and len(again.trials) == 2
    more = tune(small_set, store, trials=3, backends=("hnsw",))
    after = rows(store)
    assert all(after[key] == when for key, when in before.items())
    # A fresh tune with the same seed proposes the same builds as the resumed one.
    fresh = tune(small_set, tmp_path / "fresh.sqlite", trials=3, backends=("hnsw",))
    assert [t["build"] for t in fresh.trials] == [t["build"] for t in more.trials]
    assert [t["build"] for t in first.trials] == [t["build"] for t in more.trials][:2]


def test_constraints_are_respected(small_set, tmp_path):
    result = tune(small_set, tmp_path / "r.sqlite", backends=("hnsw",), max_memory=10_000, trials=2)
    assert all(a.candidate is None for a in result.answers)
    assert all(t["state"] == "pruned" and t["values"] == [0.0] * 3 for t in result.trials)
    assert "--max-memory" in result.answers[0].reason and result.answers[0].candidate is None
    # A build running past --max-build-s is killed and counts as infeasible.
    slow = tune(small_set, tmp_path / "s.sqlite", backends=("hnsw",), max_build_s=1e-3, trials=1,
                build_specs=("ef_construction=800", "M=64"))
    assert slow.trials[0]["state"] in ("timeout", "pruned") and slow.answers[0].candidate is None


def test_subsample_searches_small_and_answers_from_the_full_set(small_set, tmp_path):
    """Builds start on the subsample; only the top third there (at least the best) is built on the full set,
    with its IVF lists scaled by sqrt(n); the answers are full-set rows, and nothing of the subsample is stored."""
    result = tune(small_set, tmp_path / "r.sqlite", backends=("ivf",), subsample=0.4, trials=3)
    phases = [t["phase"] for t in result.trials]
    assert phases[0] == "sample" and "full" in phases and phases.count("full") <= phases.count("sample")
    with VectorSet(small_set) as vs:
        full_hash = vs.content_hash()
    assert all(c.record.dataset_hash == full_hash for c in result.candidates)
    with ResultStore(tmp_path / "r.sqlite", create=False) as store:
        assert {r.dataset_hash for r in store.records()} == {full_hash}
    sample = {json.dumps(t["build"], sort_keys=True): t for t in result.trials if t["phase"] == "sample"}
    for t in (t for t in result.trials if t["phase"] == "full"):
        parents = [s for s in sample.values() if round(s["build"]["nlist"] * (1 / 0.4) ** 0.5) == t["build"]["nlist"]]
        assert parents, t["build"]
    assert any(a.candidate is not None for a in result.answers)


def test_cli_tune_json_and_exit_codes(small_set, tmp_path):
    store = str(tmp_path / "r.sqlite")
    res = CliRunner().invoke(cli, ["tune", "--dataset", str(small_set), "--results", store, "--backend", "ivf",
                                   "--trials", "2", "--recall", "0.9", "--runs", "1", "--json"])
    assert res.exit_code == 0, res.output
    answers = json.loads(res.stdout)
    assert set(answers[0]) >= {"target", "backend", "impl", "build", "search", "recall", "recall_heldout", "qps",
                               "p99_ms", "index_bytes", "build_s"}
    assert answers[0]["recall"] >= 0.9 and answers[0]["role"] == "winner"
    res = CliRunner().invoke(cli, ["tune", "--dataset", str(small_set), "--results", store, "--backend", "ivf",
                                   "--trials", "1", "--recall", "0.9", "--runs", "1"])
    assert res.exit_code == 0, res.output
    first = res.output.splitlines()[0]
    assert "synth-3000x16" in first and "budget" in first  # the first line names the set and the budget
    assert "time (s): builds" in res.output and "the winner" in res.output
    # Nobody meets the target: said, exit 1.
    res = CliRunner().invoke(cli, ["tune", "--dataset", str(small_set), "--results", store, "--backend", "ivf",
                                   "--trials", "1", "--max-memory", "1kB", "--runs", "1"])
    assert res.exit_code == 1 and "no backend reaches" in res.output
    for args, message in ((["--recall", "2"], "recall target"), (["--budget", "soon"], "duration"),
                          (["--backend", "nope"], "nope"), (["--heldout", "1"], "--heldout")):
        res = CliRunner().invoke(cli, ["tune", "--dataset", str(small_set), "--results", store, *args])
        assert res.exit_code == 2 and message in res.output, res.output


def test_tune_for_p99_latency_measures_single_mode(small_set, tmp_path):
    """--metric p99: each setting is measured one query per call; the answer is the lowest p99 reaching the
    target ("speed" 1000 / p99 ms)."""
    result = tune(small_set, tmp_path / "r.sqlite", backends=("ivf",), speed="p99", trials=1, targets=(0.9,))
    answer = result.answers[0]
    assert answer.candidate is not None and answer.candidate.record.mode == "single"
    assert answer.candidate.speed == pytest.approx(1000 / answer.candidate.record.p99_ms)
    reaching = [c for c in result.candidates if c.tune_recall >= 0.9]
    assert answer.candidate.record.p99_ms == min(c.record.p99_ms for c in reaching)


def test_sigterm_ends_the_cli_tune_with_its_current_answer(small_set, tmp_path):
    """SIGTERM once the first answer is printed: exit 0, the answer table, "stopped early", the rows kept."""
    import os
    import signal
    import subprocess
    import sys
    import time

    store = tmp_path / "r.sqlite"
    proc = subprocess.Popen([sys.executable, "-m", "ann_bench", "tune", "--dataset", str(small_set), "--results",
                             str(store), "--recall", "0.9", "--backend", "ivf", "--backend", "hnsw", "--budget",
                             "10m", "--runs", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "COLUMNS": "120"})
    deadline = time.monotonic() + 120
    seen = []
    for line in proc.stderr:  # the answer is announced on stderr as soon as it exists
        seen.append(line)
        if "] >= 0.9:" in line or time.monotonic() > deadline:
            break
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, "".join(seen) + stderr
    assert "stopped early" in stdout and "ivf[faiss]" in stdout and "Traceback" not in stderr
    assert rows(store)


def test_fidelities_and_the_default_budget():
    """Large sets start on a sixteenth (at least 10,000 vectors); the default budget is under half the grid's
    estimate, which grows with the set and the backends."""
    from ann_bench.bench.runner import plan_sweep
    from ann_bench.bench.tune import default_budget, estimate_grid_s, fidelities

    assert fidelities(3000, None) == [3000] and fidelities(39_999, None) == [39_999]
    assert fidelities(50_000, None) == [10_000, 50_000] and fidelities(1_000_000, None) == [62_500, 1_000_000]
    assert fidelities(50_000, 0.2) == [10_000, 50_000] and fidelities(50_000, 1.0) == [50_000]
    small = plan_sweep(["hnsw", "ivf"], 50_000, 64, "euclidean")
    five = plan_sweep(["hnsw", "ivf", "ivfpq", "annoy", "nsw"], 200_000, 128, "euclidean")
    for plans, n, dim, nq in ((small, 50_000, 64, 1000), (five, 200_000, 128, 2000)):
        budget, grid = default_budget(plans, n, dim, nq, runs=2)
        assert budget <= 0.5 * grid or budget == 5.0
    assert estimate_grid_s(five, 200_000, 128, 2000, 2) > estimate_grid_s(small, 50_000, 64, 1000, 2)
    assert estimate_grid_s(small, 50_000, 64, 1000, 2, threads=2) < estimate_grid_s(small, 50_000, 64, 1000, 2)


def test_a_backend_with_nothing_to_tune_is_measured_once(small_set, tmp_path):
    """flat has no build parameters and no effort knob: one job at full size, then nothing more for it (its
    empty build once made every later pass measure it again)."""
    result = tune(small_set, tmp_path / "r.sqlite", backends=("flat", "ivf"), targets=(0.9,), trials=3,
                  subsample=0.5)
    flat = [t for t in result.trials if t["backend"] == "flat"]
    assert len(flat) == 1 and flat[0]["phase"] == "full" and flat[0]["verify_s"] > 0
    assert any(a.group == "flat[faiss]" for a in result.answers)
