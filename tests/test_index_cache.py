"""--index-cache: a built index is saved once and loaded when the same build configuration runs again."""

import numpy as np
import pytest

from ann_bench.data.vectorset import VectorSet
from ann_bench.bench.results import ResultStore
from ann_bench.bench.runner import RunOptions, index_cache_dir, plan_sweep, run_sweep


def sweep(small_set, store_path, search, *, isolate=False, index_cache=True, backends=("hnsw",),
          build=("M=8",)):
    with VectorSet(small_set) as vs, ResultStore(store_path) as store:
        plans = plan_sweep(list(backends), vs.n_train, vs.dim, vs.metric, list(build), [search])
        summary = run_sweep(vs, plans, RunOptions(k=10, runs=1, isolate=isolate, index_cache=index_cache), store)
        return vs.content_hash(), summary, store.records()


@pytest.mark.parametrize("isolate", [False, True])
def test_new_search_values_reuse_the_built_index(small_set, tmp_path, isolate):
    store = tmp_path / "r.sqlite"
    digest, _, first = sweep(small_set, store, "ef=10,20", isolate=isolate)
    assert [r.index_cached for r in first] == [0, 0]
    files = sorted(p.suffix for p in index_cache_dir(digest).iterdir())
    assert files == [".index", ".json"]
    _, _, rows = sweep(small_set, store, "ef=10,20,40", isolate=isolate)
    new = [r for r in rows if r.search_params == {"ef": 40}]
    assert len(rows) == 3 and new[0].index_cached == 1
    # the build figures are those of the original build, and the loaded index answers like the built one
    assert new[0].build_s == first[0].build_s and new[0].index_bytes == first[0].index_bytes
    _, _, again = sweep(small_set, tmp_path / "fresh.sqlite", "ef=40", isolate=isolate, index_cache=False)
    assert again[0].recall == pytest.approx(new[0].recall)
    assert again[0].index_cached == 0


def test_other_build_parameters_do_not_hit_the_cache(small_set, tmp_path):
    store = tmp_path / "r.sqlite"
    sweep(small_set, store, "ef=10", build=("M=8",))
    _, _, rows = sweep(small_set, store, "ef=10", build=("M=12",))
    assert {r.build_params["M"]: r.index_cached for r in rows} == {8: 0, 12: 0}


@pytest.mark.parametrize("backend, build, search", [("ivf", "nlist=16", "nprobe=2"), ("annoy", "n_trees=5", "search_k=50"),
                                                    ("nsw", "f=6", "ef=10"), ("kdtree", "leafsize=16", "eps=0")])
def test_every_backend_round_trips_through_the_cache(small_set, tmp_path, backend, build, search):
    store = tmp_path / "r.sqlite"
    _, _, first = sweep(small_set, store, search, backends=(backend,), build=(build,))
    _, _, rows = sweep(small_set, tmp_path / "second.sqlite", search, backends=(backend,), build=(build,))
    assert rows[0].index_cached == 1
    assert rows[0].recall == pytest.approx(first[0].recall)


def test_old_store_gains_the_new_column(tmp_path):
    import sqlite3

    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)
    import dataclasses

    from ann_bench.bench.results import Record

    # A store of the first version: every column but those added since (index_cached), no marker.
    old = [f.name for f in dataclasses.fields(Record) if f.name != "index_cached"]
    db.execute(f"CREATE TABLE results (key TEXT PRIMARY KEY, {', '.join(old)})")
    db.execute("PRAGMA user_version = 1")
    db.commit()
    db.close()
    with ResultStore(path) as store:
        cols = {row[1] for row in store.db.execute("PRAGMA table_info(results)")}
    assert "index_cached" in cols and "recall" in cols
