"""`ann-bench evaluate` (ann_bench/evaluate.py): train's metric-learning figures for any labelled set, exact and
through an index configuration."""

import json

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from ann_bench.cli import cli
from ann_bench.data.vectorset import VectorSet, write_vectorset
from ann_bench.evaluate import evaluate_set
from embeddings.training.evaluate import evaluate as train_evaluate

KEYS = {"p_at_1", "p_at_5", "recall_at_1", "recall_at_32", "map", "map_at_r", "mrr", "nmi", "ami", "verification",
        "verification_best"}


def test_exact_figures_are_trains_and_an_exact_index_changes_nothing(small_set):
    with VectorSet(small_set) as vs:
        result = evaluate_set(vs, reference="test", thresholds=[1.0, 2.0])
        same = train_evaluate(vs.load_test(), vs.labels("test"), reference="test", thresholds=[1.0, 2.0],
                              metric=vs.metric)
        assert set(result.exact) >= KEYS and result.depth is None and result.index is None
        assert result.exact == same  # the one implementation train uses
        flat = evaluate_set(vs, backend="flat")  # reference train, depth 32 by default
        assert flat.depth == 32 and flat.n_reference == vs.n_train
        for key in ("p_at_1", "recall_at_32"):
            assert flat.index[key] == flat.exact[key]
        assert flat.at_depth["index"] == flat.at_depth["exact"]  # MAP@R and MRR to depth 32
        rough = evaluate_set(vs, backend="ivf", build={"nlist": 64}, search={"nprobe": 1})
        assert rough.index["recall_at_32"] <= rough.exact["recall_at_32"] and rough.search == {"nprobe": 1}


def test_default_thresholds_follow_the_distances_at_any_scale(small_set, tmp_path):
    scaled = tmp_path / "scaled.hdf5"
    with h5py.File(small_set) as src, h5py.File(scaled, "w") as dst:
        for key in src:
            dst[key] = src[key][()] * (1000.0 if key in ("train", "test", "distances") else 1)
        dst.attrs.update(src.attrs)
    with VectorSet(small_set) as a, VectorSet(scaled) as b:
        ra, rb = evaluate_set(a), evaluate_set(b)
    assert [float(t) * 1000 for t in ra.exact["verification"]] == [float(t) for t in rb.exact["verification"]]
    assert list(ra.exact["verification"].values()) == list(rb.exact["verification"].values())
    assert 0.5 < ra.exact["verification_best"]["accuracy"] <= 1.0


def test_cli_evaluate_table_json_and_errors(small_set, tmp_path):
    r = CliRunner().invoke(cli, ["evaluate", str(small_set), "--backend", "hnsw", "--build", "M=8",
                                 "--search", "ef=20", "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["backend"] == "hnsw[hnswlib]" and doc["build"]["M"] == 8 and set(doc["index"]) >= KEYS
    r = CliRunner().invoke(cli, ["evaluate", str(small_set), "--thresholds", "0.5,1"])
    assert r.exit_code == 0 and "MAP@R" in r.output and "verification acc. @ distance < 0.5" in r.output
    unlabelled = tmp_path / "u.hdf5"
    with h5py.File(small_set) as src, h5py.File(unlabelled, "w") as dst:
        for key in ("train", "test", "neighbors", "distances"):
            dst[key] = src[key][()]
        dst.attrs.update(src.attrs)
    for args, message in (([str(unlabelled)], "has no labels"),
                          ([str(small_set), "--build", "M=8"], "add --backend"),
                          ([str(small_set), "--backend", "hnsw", "--build", "M=8,16"], "one NAME=VALUE"),
                          ([str(small_set), "--thresholds", "x"], "--thresholds"),
                          ([str(small_set), "--backend", "nope"], "nope")):
        r = CliRunner().invoke(cli, ["evaluate", *args])
        assert r.exit_code == 2 and message in r.output, (args, r.output)


def _map_at_r_by_hand(Q, q_labels, X, x_labels):
    """MAP@R from the whole exact ranking, written out: AP@R = (1/R) sum_{i<=R} P(i) rel(i)."""
    aps = []
    for q, label in zip(Q, q_labels):
        order = np.argsort(((X - q) ** 2).sum(axis=1), kind="stable")
        rel = (x_labels[order] == label).astype(float)
        r = int(rel.sum())
        precision = np.cumsum(rel) / np.arange(1, len(rel) + 1)
        aps.append((precision[:r] * rel[:r]).sum() / r)
    return float(np.mean(aps))


def test_map_at_r_deeper_than_the_index_depth_is_exact_or_left_out(tmp_path):
    """Issue 30: R (the class size, 20 here) > the search depth (4): the exact column is the real MAP@R, the
    index column does not give MAP@R, MAP or MRR (it cannot: it ranks 4 deep), and the 'to depth 4' rows
    compare like with like."""
    rng = np.random.default_rng(3)
    centres = np.array([[0.0, 0.0], [1.5, 0.0], [0.0, 1.5]])
    x_labels = np.repeat(np.arange(3), 20)
    X = (centres[x_labels] + rng.normal(scale=0.8, size=(60, 2))).astype(np.float32)
    q_labels = np.tile(np.arange(3), 4)
    Q = (centres[q_labels] + rng.normal(scale=0.8, size=(12, 2))).astype(np.float32)
    path = tmp_path / "r20.hdf5"
    write_vectorset(path, X, Q, "euclidean", train_labels=x_labels, test_labels=q_labels, k=10)
    truth = _map_at_r_by_hand(Q.astype(np.float64), q_labels, X.astype(np.float64), x_labels)
    with VectorSet(path) as vs:
        plain = evaluate_set(vs)
        shallow = evaluate_set(vs, backend="flat", depth=4)
    assert plain.exact["map_at_r"] == pytest.approx(truth)
    assert shallow.exact["map_at_r"] == pytest.approx(truth) and shallow.exact["map"] == plain.exact["map"]
    assert shallow.max_relevant == 20 and shallow.depth == 4
    for key in ("map_at_r", "map", "mrr", "recall_at_8", "recall_at_32"):
        assert shallow.index[key] is None and "searched to depth 4" in shallow.left_out[key]
    assert "up to 20" in shallow.left_out["map_at_r"]
    assert shallow.index["p_at_1"] == shallow.exact["p_at_1"] and shallow.index["recall_at_4"] is not None
    assert shallow.at_depth["index"]["map_at_r"] == shallow.at_depth["exact"]["map_at_r"] != pytest.approx(truth)
    assert shallow.index["nmi"] is None  # not a figure of the index

    r = CliRunner().invoke(cli, ["evaluate", str(path), "--backend", "flat", "--depth", "4"], terminal_width=200)
    assert r.exit_code == 0, r.output
    rows = {line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:4]]
            for line in r.output.splitlines() if line.startswith("│")}
    assert rows["MAP@R"] == [f"{truth:.4f}", "-"]
    assert rows["MAP@R to depth 4 (R capped at it)"][0] == rows["MAP@R to depth 4 (R capped at it)"][1]
    assert rows["MAP"][1] == rows["MRR"][1] == "-" and rows["NMI (k-means)"][1] == ""
    assert "MAP@R through the index: needs a ranking R deep (R: the query's class size, up to 20 here); the " \
           "index was searched to depth 4" in r.output
    doc = json.loads(CliRunner().invoke(cli, ["evaluate", str(path), "--backend", "flat", "--depth", "4",
                                              "--json"]).stdout)
    assert doc["index"]["map_at_r"] is None and doc["exact"]["map_at_r"] == pytest.approx(truth)
    assert "map_at_r" in doc["index_left_out"] and doc["at_depth"]["exact"]["map_at_r"] is not None
