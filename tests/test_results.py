import io
import json
import sqlite3

import numpy as np
import pytest

from ann_bench.errors import InputError
from ann_bench.bench.results import Record, ResultStore, to_csv, to_json


def make(**kw):
    base = dict(dataset_hash="abcd1234abcd1234", dataset_name="toy", backend="hnsw", impl="hnswlib",
                build_params={"M": 16, "ef_construction": 200}, search_params={"ef": 10}, k=10, mode="batch",
                threads=1, recall=0.9, recall_ab=0.92, recall_rule="relative-1e-06", id_recall=0.89, qps=1234.5, build_s=1.5, index_bytes=1000,
                versions={"numpy": "2"}, host={"cores": 2}, label_metrics={"precision_at_10": 0.7})
    base.update(kw)
    return Record(**base)


def test_round_trip(tmp_path):
    path = tmp_path / "sub" / "store.sqlite"
    I = np.arange(20).reshape(2, 10)
    with ResultStore(path) as store:
        store.save(make(), I)
        store.save(make(search_params={"ef": 20}, recall=0.95))
    with ResultStore(path, create=False) as store:
        rows = store.records()
        assert [r.search_params for r in rows] == [{"ef": 10}, {"ef": 20}]
        first = rows[0]
        assert first.build_params == {"M": 16, "ef_construction": 200} and first.versions == {"numpy": "2"}
        assert first.label_metrics == {"precision_at_10": 0.7} and first.qps == 1234.5 and first.p99_ms is None
        np.testing.assert_array_equal(store.load_neighbors(first), I)
        assert store.keys("abcd1234abcd1234") == {r.key for r in rows}
        assert store.records(dataset="abcd") and not store.records(dataset="zzz")
        assert store.records(dataset="toy", backend="hnsw", mode="batch", k=10) == rows
        assert store.integrity_ok()


def test_same_configuration_replaces_its_row(tmp_path):
    with ResultStore(tmp_path / "s.sqlite") as store:
        store.save(make(recall=0.5))
        store.save(make(recall=0.6))
        store.save(make(threads=2))
        assert sorted(r.recall for r in store.records()) == [0.6, 0.9]


def test_key_ignores_param_order_but_not_values():
    assert make(build_params={"ef_construction": 200, "M": 16}).key == make().key
    assert make(build_params={"M": 32, "ef_construction": 200}).key != make().key
    assert make(mode="single").key != make().key


def test_exports_are_readable(tmp_path):
    import csv

    records = [make(), make(search_params={"ef": 40}, status="failed", error="boom", recall=None, qps=None)]
    rows = list(csv.DictReader(io.StringIO(to_csv(records))))
    assert rows[0]["search_params"] == "ef=10" and rows[1]["error"] == "boom" and rows[1]["recall"] == ""
    data = json.loads(to_json(records))
    assert data[0]["build_params"] == {"M": 16, "ef_construction": 200} and data[1]["status"] == "failed"


def test_not_a_store(tmp_path):
    bad = tmp_path / "bad.sqlite"
    bad.write_text("this is not sqlite" * 100)
    with pytest.raises(InputError, match="not an ann-bench results store"):
        ResultStore(bad)
    with pytest.raises(InputError, match="does not exist"):
        ResultStore(tmp_path / "missing.sqlite", create=False)
