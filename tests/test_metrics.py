import numpy as np
import pytest

from ann_bench.bench.metrics import (DuplicateIdsError, check_no_duplicates, distance_recall, id_recall,
                               latency_summary, pareto_front)


def test_distance_recall_hand_computed():
    gt = np.array([[1.0, 2.0, 3.0, 4.0]])
    # k=3: threshold = 3 + 1e-3. Returned distances 1, 3.0005 (within epsilon), 3.5 (beyond) -> 2/3.
    run = np.array([[1.0, 3.0005, 3.5]])
    assert distance_recall(run, gt, 3)[0] == pytest.approx(2 / 3)


def test_distance_recall_counts_ties_at_kth_distance():
    # True top-2 distances are 1 and 2, and a third point also sits at distance 2 (a tie).
    gt = np.array([[1.0, 2.0, 2.0]])
    run = np.array([[1.0, 2.0]])  # the tied point returned instead of the listed one
    assert distance_recall(run, gt, 2)[0] == 1.0
    # id recall does not know about ties: the tied point's id is not in the listed top-2.
    assert id_recall(np.array([[0, 9]]), np.array([[0, 1, 9]]), 2)[0] == 0.5


def test_padding_counts_as_a_miss():
    gt = np.array([[0.5, 0.6, 0.7]])
    run = np.array([[0.5, np.inf, np.inf]])  # -1 padding recomputes to +inf
    assert distance_recall(run, gt, 3)[0] == pytest.approx(1 / 3)
    assert id_recall(np.array([[4, -1, -1]]), np.array([[4, 5, -1]]), 3)[0] == pytest.approx(1 / 3)


def test_recall_per_query_and_k_slicing():
    gt = np.array([[1.0, 2.0, 3.0], [1.0, 1.5, 2.0]])
    run = np.array([[1.0, 2.0, 9.0], [5.0, 6.0, 7.0]])
    np.testing.assert_allclose(distance_recall(run, gt, 2), [1.0, 0.0])
    np.testing.assert_allclose(distance_recall(run, gt, 3), [2 / 3, 0.0])


def test_duplicates_are_an_error_but_padding_is_not():
    check_no_duplicates(np.array([[1, 2, -1, -1]]))
    with pytest.raises(DuplicateIdsError, match="query 1 got id 3 twice"):
        check_no_duplicates(np.array([[1, 2, 3], [3, 4, 3]]))


def test_latency_summary_from_one_run():
    t = np.full(1000, 0.001)
    t[-1] = 0.101  # one slow query
    s = latency_summary(t)
    assert s["p50_ms"] == pytest.approx(1.0)
    assert s["p999_ms"] > 1.0
    assert s["qps"] == pytest.approx(1000 / t.sum())
    assert s["mean_ms"] == pytest.approx(t.mean() * 1e3)


def test_pareto_front_hand_worked():
    recall = [0.5, 0.6, 0.6, 0.9, 0.8, 1.0, 0.95]
    qps = [1000, 900, 500, 300, 200, 100, 50]
    # (0.6, 500) is dominated by (0.6, 900); (0.8, 200) by (0.9, 300); (0.95, 50) by (1.0, 100).
    assert pareto_front(recall, qps).tolist() == [0, 1, 3, 5]
    assert pareto_front([], []).tolist() == []
