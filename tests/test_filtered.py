"""Issue 34, filtered search: filters, their exact ground truth, each library's own filtered call, post-filtering,
and `run --filter` / `results --filter` / `best --filter` end to end."""

import numpy as np
import pytest
from click.testing import CliRunner

from ann_bench.backends import get_backend
from ann_bench.bench.filters import (Filter, _keep_allowed, check_allowed, filtered_groundtruth, make_filter,
                                     parse_filters, parse_strategies)
from ann_bench.bench.results import ResultStore
from ann_bench.cli import cli
from ann_bench.distances import pairwise
from ann_bench.errors import InputError


def brute_filtered(X, Q, metric, flt: Filter, k):
    D = pairwise(metric, Q, X)
    allowed = np.unpackbits(flt.bitmaps, axis=1, count=flt.n, bitorder="little").astype(bool)
    D = np.where(allowed[flt.query_group], D, np.inf)
    I = np.argsort(D, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(D, I, axis=1), I


@pytest.fixture
def labelled(small_arrays):
    X, Q, yx, yq = small_arrays
    return X, Q, yx, yq


def test_filters_parse_and_refuse_in_one_line():
    assert parse_filters(["label", "selectivity=0.01,0.1", "label:other", "label"]) == [
        "label", "selectivity=0.01", "selectivity=0.1", "label:other"]
    assert parse_strategies([]) == ["in-index", "post:2", "post:8", "post:32"]
    assert parse_strategies(["post:4,in-index"]) == ["post:4", "in-index"]
    assert parse_filters(["tag in 3, 7.0", "price < 20", "price==2.5", "x != -1"]) == [
        "tag in 3,7", "price<20", "price=2.5", "x!=-1"]
    for bad in ("price<<20", "selectivity=0", "selectivity=1.5", "label:mine", "tag in a,b", "9tag<2"):
        with pytest.raises(InputError, match="--filter"):
            parse_filters([bad])
    with pytest.raises(InputError, match="--filter-strategy 'pre'"):
        parse_strategies(["pre"])


def test_label_filters_allow_exactly_the_labelled_items(labelled):
    X, Q, yx, yq = labelled
    own = make_filter("label", len(X), len(Q), 10, yx, yq, seed=0)
    for q in range(len(Q)):
        assert set(own.allowed_ids(own.query_group[q])) == set(np.flatnonzero(yx == yq[q]))
    other = make_filter("label:other", len(X), len(Q), 10, yx, yq, seed=0)
    for q in range(len(Q)):
        ids = other.allowed_ids(other.query_group[q])
        assert len(set(yx[ids])) == 1 and yx[ids[0]] != yq[q]
    assert make_filter("label:other", len(X), len(Q), 10, yx, yq, seed=0).query_group.tolist() == \
        other.query_group.tolist()  # seeded
    synth = make_filter("selectivity=0.1", len(X), len(Q), 10, None, None, seed=3)
    assert (synth.sizes == 300).all() and synth.selectivity == pytest.approx(0.1)
    assert len(np.unique(synth.query_group)) == 16


def test_a_filter_the_set_cannot_have_is_refused(labelled):
    X, Q, yx, yq = labelled
    with pytest.raises(InputError, match="needs labels"):
        make_filter("label", len(X), len(Q), 10, None, None, 0)
    with pytest.raises(InputError, match="fewer than k=10"):
        make_filter("selectivity=0.001", len(X), len(Q), 10, None, None, 0)


@pytest.mark.parametrize("metric", ["euclidean", "angular", "ip"])
def test_filtered_ground_truth_is_the_exact_filtered_neighbours(labelled, metric, tmp_path):
    X, Q, yx, yq = labelled
    for name in ("label:other", "selectivity=0.05"):
        flt = make_filter(name, len(X), len(Q), 10, yx, yq, seed=1)
        D, I = filtered_groundtruth(X, Q, metric, flt, 10, cache=tmp_path)
        bD, bI = brute_filtered(X, Q, metric, flt, 10)
        np.testing.assert_allclose(D, bD, rtol=1e-4, atol=1e-4)
        assert check_allowed(I, flt) == 0
        again = filtered_groundtruth(X, Q, metric, flt, 10, cache=tmp_path)  # from the cache
        np.testing.assert_array_equal(again[1], I)


@pytest.mark.parametrize("spec,build,search,floor", [
    ("flat", {}, {}, 1.0),
    ("ivf", {"nlist": 16}, {"nprobe": 16}, 1.0),
    ("ivfpq", {"nlist": 16, "m": 4, "rerank": True}, {"nprobe": 16, "refine": 8}, 0.9),
    ("hnsw", {"M": 16}, {"ef": 200}, 0.9),
    ("hnsw:faiss", {"M": 16}, {"ef": 200}, 0.85),
])
@pytest.mark.parametrize("metric", ["euclidean", "angular", "ip"])
def test_in_index_filtering_returns_only_allowed_items(labelled, spec, build, search, floor, metric):
    X, Q, yx, yq = labelled
    name, _, impl = spec.partition(":")
    index = get_backend(name, impl or None)(metric, X.shape[1], **build)
    index.build(X)
    index.set_search_params(**search)
    flt = make_filter("selectivity=0.05", len(X), len(Q), 10, None, None, seed=2)
    _, gt = filtered_groundtruth(X, Q, metric, flt, 10)
    I = np.full((len(Q), 10), -1)
    for g, rows in flt.groups():
        _, I[rows] = index.convert(*index.filtered_query(Q[rows], 10, flt.bitmaps[g]))
    assert check_allowed(I, flt) == 0
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(I, gt)])
    assert recall >= floor, recall


def test_libraries_without_a_filter_say_so():
    assert get_backend("annoy").filter_support == ""
    assert get_backend("faiss").filter_support == ""
    assert "IDSelectorBitmap" in get_backend("ivf").filter_support
    assert "filter" in get_backend("hnsw").filter_support


def test_post_filter_keeps_the_first_allowed_in_the_library_order():
    flt = Filter("t", 16, np.packbits(np.array([[i % 2 == 0 for i in range(16)]]), axis=1, bitorder="little"),
                 np.array([8]), np.zeros(2, dtype=np.int64))
    I = np.array([[3, 4, 1, 6, 8], [1, 3, 5, 7, 2]])
    D = np.arange(10, dtype=np.float32).reshape(2, 5)
    kD, kI = _keep_allowed(D, I, flt, flt.query_group, 2)
    assert kI.tolist() == [[4, 6], [2, -1]]
    assert kD[0].tolist() == [1.0, 3.0]


def _run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def test_run_filter_end_to_end(tmp_path, small_set):
    store = tmp_path / "r.sqlite"
    args = ["run", "--dataset", small_set, "--backend", "flat", "--backend", "hnsw", "--backend", "annoy",
            "--build", "hnsw:M=16", "--build", "annoy:n_trees=10", "--search", "hnsw:ef=64",
            "--search", "annoy:search_k=2000", "--filter", "label:other", "--filter-strategy", "in-index,post:8",
            "--runs", "1", "--mode", "both", "--results", store]
    r = _run(*args)
    assert r.exit_code == 0, r.output
    assert "filter label:other" in r.output and "no filtered search of its own" in r.output
    with ResultStore(store, create=False) as s:
        assert s.records() == []  # unfiltered consumers never see a filtered row
        rows = s.records(filter_spec="label:other")
    ok = [r for r in rows if r.status == "ok"]
    assert {(r.backend, r.filter_strategy, r.mode) for r in ok} == {
        (b, st, m) for b in ("flat", "hnsw") for st in ("in-index", "post:8") for m in ("batch", "single")} | {
        ("annoy", "post:8", m) for m in ("batch", "single")}
    exact = [r for r in ok if r.backend == "flat" and r.filter_strategy == "in-index"]
    assert all(r.recall == 1.0 for r in exact)  # the pre-filter baseline: exact among the allowed items
    assert all(0 < r.filter_selectivity < 0.5 for r in ok)
    r = _run(*args)  # resumed: nothing measured again
    assert r.exit_code == 0 and "skipped" in r.output
    r = _run("results", "--results", store)
    assert r.exit_code == 0 and "results --filter label:other" in r.output
    r = CliRunner().invoke(cli, ["report", "--results", str(store), "-o", str(tmp_path / "r.html"), "--static"])
    assert r.exit_code == 0, r.output  # filtered rows in a section of their own: panels and the winner per filter
    text = (tmp_path / "r.html").read_text()
    assert "<h3>Filtered search (" in text and "fastest at recall@10 ≥ 0.95" in text and "label:other" in text
    r = _run("results", "--results", store, "--filter", "label:other")
    assert r.exit_code == 0 and "post:8" in r.output
    r = _run("best", "--results", store, "--filter", "label:other", "--recall", "0.9")
    assert r.exit_code == 0 and "winner:" in r.output, r.output
    r = _run("plot", "--results", store, "--filter", "label:other", "-o", tmp_path / "f.png")
    assert r.exit_code == 0 and (tmp_path / "f.png").stat().st_size > 10_000, r.output


def test_a_strategy_keeps_its_backends_colour_and_gets_its_own_marker():
    from ann_bench.report.plots import style

    color, marker = style("hnsw", "hnswlib")
    assert style("hnsw", "hnswlib, post:8")[0] == color
    markers = {style("hnsw", f"hnswlib, {s}")[1] for s in ("in-index", "post:2", "post:8", "post:32")}
    assert len(markers) == 4


def test_run_filter_needs_what_the_set_has(tmp_path):
    from ann_bench.data.vectorset import SynthSpec, synth

    path = tmp_path / "s.hdf5"
    synth(path, SynthSpec(n=500, dim=8, queries=20, clusters=4, seed=1))
    store = tmp_path / "r.sqlite"
    r = CliRunner().invoke(cli, ["run", "--dataset", str(path), "--backend", "flat", "--filter", "selectivity=0.001",
                                 "--results", str(store)])
    assert r.exit_code == 2 and "fewer than k=10" in r.output and "Traceback" not in r.output, r.output
    assert not store.exists()
    r = CliRunner().invoke(cli, ["run", "--dataset", str(path), "--backend", "flat", "--filter-strategy", "post",
                                 "--results", str(store)])
    assert r.exit_code == 2 and "add --filter" in r.output


def _attribute_set(tmp_path, n=2000):
    import csv

    rng = np.random.default_rng(4)
    np.save(tmp_path / "x.npy", rng.standard_normal((n, 8)).astype(np.float32))
    with open(tmp_path / "a.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["tag", "price"])
        for i in range(n):
            w.writerow([i % 10, f"{i / n * 100:.2f}"])
    out = tmp_path / "a.hdf5"
    r = _run("data", "import", tmp_path / "x.npy", "-o", out, "--metric", "euclidean", "--attributes",
             tmp_path / "a.csv", "--test-size", 100)
    assert r.exit_code == 0 and "attributes price, tag" in r.output, r.output
    return out


def test_item_attributes_are_imported_split_with_the_base_and_part_of_the_identity(tmp_path):
    from ann_bench.data.vectorset import VectorSet

    path = _attribute_set(tmp_path)
    with VectorSet(path) as vs:
        assert vs.attribute_names == ["price", "tag"] and vs.n_train == 1900
        tag, price = vs.attribute("tag"), vs.attribute("price")
        assert tag.dtype == np.int64 and price.dtype == np.float64 and len(tag) == 1900
        with_attributes = vs.content_hash()
        with pytest.raises(InputError, match="no item attribute 'colour' \\(it has: price, tag\\)"):
            vs.attribute("colour")
    r = _run("data", "import", tmp_path / "x.npy", "-o", tmp_path / "b.hdf5", "--metric", "euclidean",
             "--test-size", 100)
    assert r.exit_code == 0
    with VectorSet(tmp_path / "b.hdf5") as vs:
        assert vs.attribute_names == [] and vs.content_hash() != with_attributes
    flt = make_filter("tag in 3,7", 1900, 100, 10, None, None, 0, attribute=VectorSet(path).attribute)
    assert set(np.flatnonzero(np.isin(tag, [3, 7]))) == set(flt.allowed_ids(0))
    flt = make_filter("price<20", 1900, 100, 10, None, None, 0, attribute=VectorSet(path).attribute)
    assert set(np.flatnonzero(price < 20)) == set(flt.allowed_ids(0))


@pytest.mark.parametrize("body,message", [
    ("tag,price\n1,nan\n", "must be finite"),
    ("tag,price\n1,cheap\n", "not a number"),
    ("tag,price\n1\n", "row 2 has 1 value(s)"),
    ("tag,price\n1,2\n", "one value per base vector"),
    ("1x,price\n1,2\n", "not an identifier"),
    (None, "--attributes '"),
])
def test_bad_attributes_are_refused_in_one_line(tmp_path, body, message):
    np.save(tmp_path / "x.npy", np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
            if "one value" in message else np.random.default_rng(0).standard_normal((1, 4)).astype(np.float32))
    attributes = tmp_path / ("a.csv" if body is not None else "a.txt")
    attributes.write_text(body if body is not None else "tag\n1\n")
    r = CliRunner().invoke(cli, ["data", "import", str(tmp_path / "x.npy"), "-o", str(tmp_path / "o.hdf5"),
                                 "--metric", "euclidean", "--attributes", str(attributes),
                                 "--queries", str(tmp_path / "x.npy")])
    assert r.exit_code == 2 and message in r.output and "Traceback" not in r.output, r.output
    assert r.output.count("\n") == 1 and "(--attributes" not in r.output, r.output  # one line, not nested
    assert not (tmp_path / "o.hdf5").exists()


def test_run_filters_on_attributes(tmp_path):
    path = _attribute_set(tmp_path)
    store = tmp_path / "r.sqlite"
    r = _run("run", "--dataset", path, "--backend", "flat", "--filter", "tag in 3, 7", "--filter", "price >= 50",
             "--filter-strategy", "in-index", "--runs", 1, "--results", store)
    assert r.exit_code == 0, r.output
    with ResultStore(store, create=False) as s:
        rows = s.records(filter_spec=None)
    assert {r.filter_spec for r in rows} == {"tag in 3,7", "price>=50"}
    assert all(r.recall == 1.0 for r in rows)
    assert {round(r.filter_selectivity, 1) for r in rows} == {0.2, 0.5}
    r = CliRunner().invoke(cli, ["run", "--dataset", str(path), "--backend", "flat", "--filter", "colour=3",
                                 "--results", str(tmp_path / "x.sqlite")])
    assert r.exit_code == 2 and "no item attribute 'colour'" in r.output
    r = CliRunner().invoke(cli, ["run", "--dataset", str(path), "--backend", "flat", "--filter", "price<-1",
                                 "--results", str(tmp_path / "x.sqlite")])
    assert r.exit_code == 2 and "leaves 0 allowed item(s)" in r.output


def test_partitioned_indices_search_each_category_in_its_own_index(tmp_path, small_set):
    store = tmp_path / "p.sqlite"
    r = _run("run", "--dataset", small_set, "--backend", "flat", "--backend", "hnsw", "--build", "hnsw:M=16",
             "--search", "hnsw:ef=64", "--filter", "label", "--filter", "selectivity=0.2", "--filter-strategy",
             "partitioned,in-index", "--runs", 1, "--mode", "both", "--results", store)
    assert r.exit_code == 0, r.output
    assert "not per random subset" in r.output
    with ResultStore(store, create=False) as s:
        rows = [r for r in s.records(filter_spec=None) if r.status == "ok"]
    part = {(r.backend, r.mode): r for r in rows if r.filter_strategy == "partitioned"}
    inindex = {(r.backend, r.mode): r for r in rows if r.filter_strategy == "in-index" and r.filter_spec == "label"}
    assert set(part) == {(b, m) for b in ("flat", "hnsw") for m in ("batch", "single")}
    assert all(r.filter_spec == "label" for r in part.values())
    assert part[("flat", "batch")].recall == 1.0 and part[("flat", "single")].recall == 1.0
    assert part[("hnsw", "batch")].recall >= 0.95
    # the partitions' own build figures, not the whole index's
    assert part[("hnsw", "batch")].build_s != inindex[("hnsw", "batch")].build_s


def test_several_selectivities_one_panel_each_and_the_winner_per_filter(tmp_path, small_set):
    """plot --filter selectivity=A,B: one panel per selectivity on one QPS scale, each naming its fastest
    configuration; best --filter A,B: one answer per filter and the winner per filter (the crossover)."""
    import json

    from ann_bench.bench.results import ResultStore
    from ann_bench.cli.options import filtered_records
    from ann_bench.report.panels import _filter_figure

    store = tmp_path / "r.sqlite"
    r = _run("run", "--dataset", small_set, "--backend", "flat", "--backend", "ivf", "--build", "ivf:nlist=16",
             "--search", "ivf:nprobe=2,16", "--filter", "selectivity=0.5,0.02", "--filter-strategy", "in-index,post:8",
             "--runs", "1", "--results", store)
    assert r.exit_code == 0, r.output
    with ResultStore(store, create=False) as s:
        rows = filtered_records(s, None, "selectivity=0.5,0.02")
        assert {r.filter_spec for r in rows} == {"selectivity=0.5", "selectivity=0.02"}
        assert {r.impl for r in rows} == {"faiss, in-index", "faiss, post:8"}
    fig = _filter_figure(rows, mode=None, k=None, raw=True, target=0.9)
    panels = [ax for ax in fig.axes if ax.get_visible()]
    titles = [ax.get_title() for ax in panels]
    assert len(panels) == 2 and titles[0].startswith("selectivity=0.5") and "selectivity=0.02" in titles[1]
    assert all("fastest at recall ≥ 0.9" in t or "nothing reached" in t for t in titles)
    assert panels[0].get_ylim() == panels[1].get_ylim()  # one QPS scale: a crossover reads across panels
    __import__("matplotlib.pyplot").pyplot.close(fig)
    r = _run("plot", "--results", store, "--filter", "selectivity=0.5,0.02", "-o", tmp_path / "p.png")
    assert r.exit_code == 0 and (tmp_path / "p.png").stat().st_size > 10_000, r.output
    r = _run("best", "--results", store, "--filter", "selectivity=0.5,0.02", "--recall", "0.9")
    assert r.exit_code == 0, r.output
    assert "winner per filter" in r.output and "selectivity=0.02: " in r.output and "filter selectivity=0.5)" in r.output
    r = _run("best", "--results", store, "--filter", "selectivity=0.5,0.02", "--recall", "0.9", "--json")
    doc = json.loads(r.output)
    assert [f["filter"] for f in doc["filters"]] == ["selectivity=0.5", "selectivity=0.02"]
    assert doc["filters"][1]["winner"]["filter_selectivity"] < 0.05
    r = _run("results", "--results", store, "--filter", "selectivity=0.5,0.02", "--format", "json")
    assert {row["filter_spec"] for row in json.loads(r.output)} == {"selectivity=0.5", "selectivity=0.02"}
    r = CliRunner().invoke(cli, ["best", "--results", str(store), "--filter", "selectivity=0.3", "--recall", "0.9"])
    assert r.exit_code == 2 and "no rows of filter 'selectivity=0.3'" in r.output
    assert "selectivity=0.02, selectivity=0.5" in r.output and len(r.output.strip().splitlines()) == 1
