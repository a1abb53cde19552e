"""`ann-bench evaluate` (ann_bench/evaluate.py): train's metric-learning figures for any labelled set, exact and
through an index configuration."""

import json

import h5py
from click.testing import CliRunner

from ann_bench.cli import cli
from ann_bench.data.vectorset import VectorSet
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
        for key in ("p_at_1", "recall_at_32", "map_at_r", "mrr"):
            assert flat.index[key] == flat.exact[key]
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
