"""Issue 15, section 1: recall that is right at every scale (``recall``), ann-benchmarks' rule kept exactly
(``recall_ab``), and vectors whose float32 arithmetic would overflow or underflow refused."""

import json
import sqlite3

import h5py
import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from ann_bench.cli import cli
from ann_bench.data.vectorset import SynthSpec, synth_arrays, write_vectorset
from ann_bench.distances import distances_to
from ann_bench.bench.metrics import distance_recall, tie_recall
from ann_bench.bench.worker import accuracy


def ab_recall_reference(run_D, gt_D, k, epsilon=1e-3):
    """ann-benchmarks' get_recall_values with knn_threshold, written out as its loops, in float64."""
    recalls = []
    for i in range(len(run_D)):
        t = float(gt_D[i][k - 1]) + epsilon
        recalls.append(sum(1 for d in run_D[i][:k] if float(d) <= t) / k)
    return np.array(recalls)


def test_worked_example_from_the_readme():
    # true distances 1.0, 2.0, 3.0 (k = 3); returned 1.0, 3.0 (a tie with the 3rd), 3.0005, inf (padding)
    gt = np.array([[1.0, 2.0, 3.0]])
    run = np.array([[1.0, 3.0, 3.0005]])
    assert tie_recall(run, gt, 3)[0] == pytest.approx(2 / 3)  # 3.0005 > 3.0 * (1 + 1e-6): a miss
    assert distance_recall(run, gt, 3)[0] == 1.0  # within + 1e-3: ann-benchmarks counts it
    # the same vectors scaled by 1e-5: the relative rule does not move, the absolute one counts a far miss
    assert tie_recall(run * 1e-5, gt * 1e-5, 3)[0] == pytest.approx(2 / 3)
    far = np.array([[1.0, 3.0, 90.0]]) * 1e-5
    assert tie_recall(far, gt * 1e-5, 3)[0] == pytest.approx(2 / 3)
    assert distance_recall(far, gt * 1e-5, 3)[0] == 1.0  # 90e-5 <= 3e-5 + 1e-3


@settings(max_examples=60, deadline=None, derandomize=True)
@given(gt=hnp.arrays(np.float64, st.tuples(st.integers(1, 8), st.integers(1, 12)),
                     elements=st.floats(-5, 5, allow_nan=False)),
       noise=st.floats(-0.01, 0.01), k=st.integers(1, 12))
def test_recall_ab_is_ann_benchmarks_rule_exactly(gt, noise, k):
    k = min(k, gt.shape[1])
    gt = np.sort(gt, axis=1)
    run = gt + noise * np.arange(gt.shape[1])[None, :]
    np.testing.assert_array_equal(distance_recall(run, gt, k), ab_recall_reference(run, gt, k))


@pytest.mark.parametrize("metric", ["euclidean", "angular", "ip"])
@pytest.mark.parametrize("scale", [1e-5, 1e5])
def test_recall_does_not_move_with_scale(metric, scale):
    """The same returned ids, the vectors multiplied by 1e-5 or 1e5: recall is unchanged for every metric."""
    rng = np.random.default_rng(3)
    X = rng.standard_normal((500, 12)).astype(np.float32)
    Q = rng.standard_normal((40, 12)).astype(np.float32)
    exact = distances_to(metric, Q, X, np.tile(np.arange(500), (40, 1)))
    gt_I = np.argsort(exact, axis=1, kind="stable")[:, :10]
    I = np.argsort(exact + rng.uniform(0, 0.5 * exact.std(), exact.shape), axis=1)[:, :10]  # an approximate answer
    base = accuracy(metric, Q, X, I, np.take_along_axis(exact, gt_I, 1), gt_I, 10)
    Xs, Qs = (X * scale).astype(np.float32), (Q * scale).astype(np.float32)
    exact_s = distances_to(metric, Qs, Xs, gt_I)
    scaled = accuracy(metric, Qs, Xs, I, exact_s, gt_I, 10)
    assert 0 < base["recall"] < 1
    assert scaled["recall"] == base["recall"]
    assert scaled["id_recall"] == base["id_recall"]


@settings(max_examples=40, deadline=None, derandomize=True)
@given(metric=st.sampled_from(["euclidean", "angular", "ip"]), exponent=st.integers(-40, 40),
       seed=st.integers(0, 2 ** 16))
def test_recall_is_the_same_for_every_power_of_two_scale(metric, exponent, seed):
    """Property: for any data and any scale 2**e (exact in float32), recall and id recall are exactly equal."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((200, 6)).astype(np.float32)
    Q = rng.standard_normal((15, 6)).astype(np.float32)
    exact = distances_to(metric, Q, X, np.tile(np.arange(200), (15, 1)))
    gt_I = np.argsort(exact, axis=1, kind="stable")[:, :5]
    I = np.argsort(exact + rng.uniform(0, exact.std(), exact.shape), axis=1)[:, :5]
    base = accuracy(metric, Q, X, I, np.take_along_axis(exact, gt_I, 1), gt_I, 5)
    s = np.float32(2.0 ** exponent)
    Xs, Qs = X * s, Q * s
    scaled = accuracy(metric, Qs, Xs, I, distances_to(metric, Qs, Xs, gt_I), gt_I, 5)
    assert scaled["recall"] == base["recall"] and scaled["id_recall"] == base["id_recall"]


def test_ties_at_the_kth_distance_count():
    X = np.array([[0.0], [1.0], [-1.0], [5.0]], dtype=np.float32)  # ids 1 and 2 tie at distance 1
    Q = np.array([[0.0]], dtype=np.float32)
    gt_I = np.array([[0, 1]])
    gt_D = distances_to("euclidean", Q, X, gt_I)
    for I in ([[0, 2]], [[2, 0]], [[0, 1]]):
        assert accuracy("euclidean", Q, X, np.array(I), gt_D, gt_I, 2)["recall"] == 1.0
    assert accuracy("euclidean", Q, X, np.array([[0, 3]]), gt_D, gt_I, 2)["recall"] == 0.5


def _set(tmp_path, name, X, Q, metric="euclidean"):
    return write_vectorset(tmp_path / name, X, Q, metric, k=10)


def _run(path, store, *extra):
    r = CliRunner().invoke(cli, ["run", "--dataset", str(path), "--runs", "1", "--in-process", "--results",
                                 str(store), "--quiet", *map(str, extra)], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    out = CliRunner().invoke(cli, ["results", "--results", str(store), "--format", "json"], catch_exceptions=False)
    return json.loads(out.output)


def test_ivf_recall_through_run_is_the_same_at_every_scale(tmp_path):
    """Today's bug: ×1e-5 made every index score 1.0 under the absolute rule. Through `run`, IVF nprobe=1 keeps
    its recall at ×2^-17 and ×2^17 exactly (float32 scales exactly by powers of two) and within rounding at
    ×1e-5 and ×1e5; recall_ab shows the old rule's inflation at ×1e-5."""
    train, test, _, _ = synth_arrays(SynthSpec(n=4000, dim=16, queries=200, clusters=20, seed=5))
    args = ("--backend", "ivf", "--build", "nlist=32", "--search", "nprobe=1")
    found = {}
    for scale in (1.0, 2.0 ** -17, 2.0 ** 17, 1e-5, 1e5):
        path = _set(tmp_path, f"s{scale:g}.hdf5", train * np.float32(scale), test * np.float32(scale))
        (row,) = _run(path, tmp_path / f"r{scale:g}.sqlite", *args)
        found[scale] = row
    base = found[1.0]["recall"]
    assert 0.3 < base < 0.95
    assert found[2.0 ** -17]["recall"] == base and found[2.0 ** 17]["recall"] == base
    assert abs(found[1e-5]["recall"] - base) < 0.02 and abs(found[1e5]["recall"] - base) < 0.02
    assert found[1e-5]["recall_ab"] == 1.0  # the absolute tolerance swallows every distance at this scale
    assert found[1.0]["recall_rule"] == "relative-1e-06"


def test_tight_normalised_clusters_recall_follows_id_recall(tmp_path):
    """L2-normalised embeddings in tight clusters (what metric learning produces): every distance is far below
    the 1e-3 of ann-benchmarks' rule, so recall_ab counts misses; recall stays with id recall."""
    rng = np.random.default_rng(11)
    centers = rng.standard_normal((20, 32))
    lab = rng.integers(0, 20, 3200)
    X = (centers[lab] + 0.004 * rng.standard_normal((3200, 32))).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    path = _set(tmp_path, "tight.hdf5", X[:3000], X[3000:], metric="angular")
    (row,) = _run(path, tmp_path / "t.sqlite", "--backend", "annoy", "--build", "n_trees=2", "--search",
                  "search_k=30")
    assert row["recall_ab"] - row["id_recall"] > 0.2  # the absolute rule inflates
    assert abs(row["recall"] - row["id_recall"]) < 0.02  # ours does not (no ties in continuous data)


def test_rows_of_the_old_rule_read_as_recall_ab_and_are_measured_again(tmp_path, small_set):
    store = tmp_path / "r.sqlite"
    _run(small_set, store, "--backend", "flat")
    db = sqlite3.connect(store)  # make the row look like one written by ann-bench 0.1 (ann-benchmarks' rule)
    db.execute("UPDATE results SET recall_rule = '', recall_ab = NULL, recall = 0.987")
    db.commit()
    db.close()
    (row,) = json.loads(CliRunner().invoke(cli, ["results", "--results", str(store), "--format", "json"]).output)
    assert row["recall"] is None and row["recall_ab"] == 0.987
    for args in (["best", "--recall", "0.9"], ["plot", "-o", str(tmp_path / "p.png")]):
        r = CliRunner().invoke(cli, [*args, "--results", str(store)])
        assert r.exit_code == 2 and "measured by ann-bench 0.1" in r.output and "-x recall_ab" in r.output
    r = CliRunner().invoke(cli, ["best", "--recall", "0.9", "-x", "recall_ab", "--results", str(store)])
    assert r.exit_code == 0, r.output
    (row,) = _run(small_set, store, "--backend", "flat")  # resumes: re-measures the old-rule row
    assert row["recall"] == 1.0 and row["recall_rule"] == "relative-1e-06"


# ---- float32 range -------------------------------------------------------------------------------------
def _raw(path, train, test):
    with h5py.File(path, "w") as f:
        f.attrs["distance"] = "euclidean"
        f["train"], f["test"] = train, test
    return path


def one_line(*args):
    r = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1, r.output
    return r.output


def test_norms_that_overflow_float32_are_refused(tmp_path):
    rng = np.random.default_rng(0)
    path = _raw(tmp_path / "big.h5", (rng.standard_normal((300, 8)) * 1e20).astype(np.float32),
                (rng.standard_normal((5, 8)) * 1e20).astype(np.float32))
    text = one_line("run", "--dataset", path, "--backend", "ivf", "--results", tmp_path / "r.sqlite")
    assert "overflows the float32 distance arithmetic" in text and "rescale" in text
    assert not (tmp_path / "r.sqlite").exists()


def test_vectors_so_small_that_distances_underflow_are_refused(tmp_path):
    rng = np.random.default_rng(0)
    path = _raw(tmp_path / "tiny.h5", (rng.standard_normal((300, 8)) * 1e-25).astype(np.float32),
                (rng.standard_normal((5, 8)) * 1e-25).astype(np.float32))
    assert "underflow float32" in one_line("run", "--dataset", path, "--backend", "flat",
                                           "--results", tmp_path / "r.sqlite")


def test_float64_beyond_float32_is_too_large_not_nan(tmp_path):
    X = np.ones((50, 4))
    X[7, 2] = 1e39
    np.save(tmp_path / "x.npy", X)
    text = one_line("data", "import", tmp_path / "x.npy", "-o", tmp_path / "o.hdf5", "--metric", "euclidean",
                    "--test-size", 5)
    assert "too large for float32" in text and "NaN" not in text
    path = _raw(tmp_path / "f64.h5", X, np.ones((3, 4)))
    text = one_line("run", "--dataset", path, "--backend", "flat", "--results", tmp_path / "r.sqlite")
    assert "train vector 7" in text and "too large for float32" in text
