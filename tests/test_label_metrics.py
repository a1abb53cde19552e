"""Label-aware retrieval metrics against hand-computed values."""

import numpy as np
import pytest

from ann_bench.bench.metrics import class_counts, label_metrics, map_at_r, mrr, precision_at_k, recall_at_k

# Six train items: label 0 three times (R=3), label 1 twice (R=2), label 2 once (R=1).
TRAIN = np.array([0, 0, 0, 1, 1, 2])
QUERY = np.array([0, 1, 2, 7])  # label 7: no train item has it
I = np.array([
    [0, 3, 1, -1],   # rel 1 0 1 0
    [0, 1, 4, 3],    # rel 0 0 1 1
    [5, -1, -1, -1],  # rel 1 0 0 0 (padding never matches)
    [0, 1, 2, 3],    # rel 0 0 0 0
])


def test_precision_at_k_hand_computed():
    # (2/4 + 2/4 + 1/4 + 0) / 4
    assert precision_at_k(I, TRAIN, QUERY, 4) == pytest.approx(0.3125)
    # k=1: hits 1, 0, 1, 0
    assert precision_at_k(I, TRAIN, QUERY, 1) == pytest.approx(0.5)


def test_recall_at_k_is_at_least_one_hit():
    assert recall_at_k(I, TRAIN, QUERY, 1) == pytest.approx(0.5)
    assert recall_at_k(I, TRAIN, QUERY, 2) == pytest.approx(0.5)
    assert recall_at_k(I, TRAIN, QUERY, 3) == pytest.approx(0.75)
    assert recall_at_k(I, TRAIN, QUERY, 4) == pytest.approx(0.75)


def test_map_at_r_hand_computed():
    # q0: r = min(3, 4) = 3; P(1)=1, P(3)=2/3 -> (1 + 2/3) / 3 = 5/9
    # q1: r = 2; no hit in the first 2 -> 0 (the hits at 3 and 4 are beyond R)
    # q2: r = 1; hit at 1 -> 1
    # q3: R = 0 -> 0
    assert map_at_r(I, TRAIN, QUERY) == pytest.approx((5 / 9 + 0 + 1 + 0) / 4)


def test_map_at_r_exact_when_deep_enough_and_truncated_otherwise():
    train = np.array([1, 1, 0, 0, 0])
    q = np.array([1])
    # R = 2, rel = 1 0 1: MAP@R = (1/2)(1*1 + (1/2)*0) = 0.5; the hit at rank 3 is beyond R.
    assert map_at_r(np.array([[0, 2, 1]]), train, q) == pytest.approx(0.5)
    # Truncated at k = 1 < R: r = 1, AP = P(1) * rel(1) = 1.
    assert map_at_r(np.array([[0, 2, 1]]), train, q, k=1) == pytest.approx(1.0)
    # A perfect ranking scores 1 whatever k.
    assert map_at_r(np.array([[0, 1, 2]]), train, q) == pytest.approx(1.0)


def test_mrr_hand_computed():
    # first hits at ranks 1, 3, 1, none
    assert mrr(I, TRAIN, QUERY) == pytest.approx((1 + 1 / 3 + 1 + 0) / 4)
    assert mrr(I, TRAIN, QUERY, k=2) == pytest.approx((1 + 0 + 1 + 0) / 4)


def test_class_counts():
    np.testing.assert_array_equal(class_counts(TRAIN, QUERY), [3, 2, 1, 0])


def test_label_metrics_keys_and_string_labels_agree_with_ints():
    m = label_metrics(I, TRAIN, QUERY, 4)
    assert set(m) == {"precision_at_4", "recall_at_1", "recall_at_4", "map_at_4", "mrr"}
    assert m["precision_at_4"] == pytest.approx(0.3125)
    assert m["map_at_4"] == pytest.approx(7 / 18)
    assert m["mrr"] == pytest.approx(7 / 12)
    names = np.array(["cat", "dog", "emu", "yak", "zebra", "ant", "owl", "pig"])
    s = label_metrics(I, names[TRAIN], names[QUERY], 4)
    b = label_metrics(I, names[TRAIN].astype(object), names[QUERY].astype("S"), 4)  # bytes vs str: no match
    assert s == pytest.approx(m)
    assert b["precision_at_4"] == 0.0


def test_all_padding_scores_zero():
    pad = np.full((2, 3), -1)
    m = label_metrics(pad, TRAIN, np.array([0, 1]), 3)
    assert all(v == 0.0 for v in m.values())
