"""ann-bench stream: runbooks, the incremental exact top-k of the live set, each backend's add/remove, refusals,
resume."""

import numpy as np
import pytest
from click.testing import CliRunner

from ann_bench.backends import get_backend
from ann_bench.backends.base import UPDATES_BOTH, UPDATES_INSERT, UPDATES_NONE
from ann_bench.bench.runbook import check_runbook, format_ids, make_runbook, parse_ids, parse_runbook
from ann_bench.bench.stream import LiveGroundTruth
from ann_bench.cli import cli
from ann_bench.data.groundtruth import exact_knn
from ann_bench.errors import InputError


# ---- runbooks ---------------------------------------------------------------------------------------------------
def test_ids_forms():
    assert parse_ids("0-3,7", "x").tolist() == [0, 1, 2, 3, 7]
    assert parse_ids([5, "1-2", {"start": 8, "end": 10}], "x").tolist() == [1, 2, 5, 8, 9]
    assert format_ids(np.array([0, 1, 2, 3, 7, 9, 10])) == "0-3,7,9-10"


@pytest.mark.parametrize("shape", ["grow", "slide", "clustered"])
def test_generated_runbooks_check(shape):
    labels = np.repeat(np.arange(10), 100)
    data = make_runbook(shape, 1000, steps=5, labels=labels)
    rb = parse_runbook(data, shape)
    check_runbook(rb, 1000, k=10)
    live = rb.live_sets()
    if shape == "grow":
        assert len(live[0]) == 100 and len(live[-1]) == 1000
    if shape == "slide":
        assert len(live[-1]) == 500 and live[-1][0] == 500  # the oldest deleted
        assert sum(s.op == "search" for s in rb.steps) >= 5
    if shape == "clustered":  # every insert brings labels not seen before
        seen = set(labels[rb.steps[0].ids])
        for s in rb.steps[1:]:
            if s.op == "insert":
                new = set(labels[s.ids])
                assert not new & seen
                seen |= new


@pytest.mark.parametrize("steps, says", [
    ([{"build": "0-9"}, {"delete": "20"}, "search"], "id 20 is not present"),
    ([{"build": "0-9"}, {"insert": "5-12"}, "search"], "id 5 is inserted twice"),
    ([{"build": "0-9"}, {"insert": "95-100"}, "search"], "id 100 is out of range"),
    ([{"build": "0-9"}, {"delete": "0-1"}, {"delete": "1"}, "search"], "id 1 is not present"),
    ([{"insert": "0-9"}, "search"], "first step must be build"),
    ([{"build": "0-9"}], "no search step"),
    ([{"build": "0-9"}, {"upsert": "3"}, "search"], "unknown operation 'upsert'"),
    ([{"build": "0-9"}, {"insert": "a-b"}, "search"], "is not an id"),
    ([{"build": "0-9,3"}, "search"], "listed twice"),
    ([{"build": "0-4"}, "search"], "fewer than k=10"),
])
def test_refusals(steps, says):
    with pytest.raises(InputError, match=says):
        check_runbook(parse_runbook({"steps": steps}, "t"), 100, k=10)


def test_refusal_on_the_command_line_is_one_line_and_writes_nothing(tmp_path, small_set):
    rb = tmp_path / "bad.yaml"
    rb.write_text("steps:\n- build: 0-99\n- delete: 150\n- search\n")
    store = tmp_path / "r.sqlite"
    result = CliRunner().invoke(cli, ["stream", "--runbook", str(rb), "--dataset", str(small_set), "--backend", "hnsw",
                                      "--results", str(store)])
    assert result.exit_code == 2, result.output
    assert "step 1 (delete): id 150 is not present" in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
    assert not store.exists()
    rb.write_text("steps: [build: 0-9\n")  # not YAML
    result = CliRunner().invoke(cli, ["stream", "--runbook", str(rb), "--dataset", str(small_set), "--backend", "hnsw",
                                      "--results", str(store)])
    assert result.exit_code == 2 and "not valid YAML" in result.output and not store.exists()


# ---- the exact top-k of the live set -----------------------------------------------------------------------------
@pytest.mark.parametrize("metric", ["euclidean", "angular"])
def test_incremental_groundtruth_equals_from_scratch_at_every_step(metric):
    rng = np.random.default_rng(3)
    X = rng.standard_normal((1200, 12)).astype(np.float32)
    Q = rng.standard_normal((40, 12)).astype(np.float32)
    rb = parse_runbook(make_runbook("slide", 1200, steps=8, start=0.1, window=0.4), "s")
    gt = LiveGroundTruth(X, Q, metric, 10)
    for step, live in zip(rb.steps, rb.live_sets()):
        gt.apply(step.op, step.ids)
        D, I = exact_knn(X[live], Q, metric, 10)
        np.testing.assert_allclose(gt.D, D, rtol=1e-5, atol=1e-6)
        assert (gt.I == live[I]).mean() > 0.99  # ids equal but where distances tie
        assert np.isin(gt.I, live).all()
    assert 0 < gt.recomputed < len(Q) * sum(s.op == "delete" for s in rb.steps)  # only the queries that lost one


# ---- each backend's add/remove -----------------------------------------------------------------------------------
UPDATABLE = [("hnsw", "hnswlib", {}, {"ef": 100}), ("hnsw", "hnswlib", {"replace_deleted": True}, {"ef": 100}),
             ("ivf", "faiss", {"nlist": 8}, {"nprobe": 8}),
             ("ivfpq", "faiss", {"nlist": 8, "m": 4, "nbits": 4}, {"nprobe": 8}),
             ("hnsw", "faiss", {}, {"ef": 100}), ("hnsw", "usearch", {}, {"ef": 100}),
             ("hnsw", "voyager", {}, {"ef": 100}), ("nsw", "numba", {}, {"ef": 100})]


@pytest.mark.parametrize("name, impl, build, search", UPDATABLE, ids=lambda v: v if isinstance(v, str) else "")
def test_add_remove_against_exact(name, impl, build, search):
    cls = get_backend(name, impl)
    pytest.importorskip(cls.requires[0])
    rng = np.random.default_rng(1)
    X = rng.standard_normal((1500, 16)).astype(np.float32)
    Q = rng.standard_normal((30, 16)).astype(np.float32)
    index = cls("euclidean", 16, **build)
    assert cls.update_support(index.params) in (UPDATES_BOTH, UPDATES_INSERT)
    index.build(X[:500])
    index.add(X[500:1000], np.arange(500, 1000))
    index.remove(np.arange(0, 300))
    index.add(X[1000:], np.arange(1000, 1500))
    index.remove(np.arange(1000, 1100))
    index.set_search_params(**search)
    D, I = index.search(Q, 10)
    live = np.setdiff1d(np.arange(1500), np.r_[0:300, 1000:1100])
    assert not np.isin(I[I >= 0], np.r_[0:300, 1000:1100]).any()  # a deleted id is never returned
    gD, gI = exact_knn(X[live], Q, "euclidean", 10)
    found = np.mean([len(set(a) & set(live[b])) for a, b in zip(I, gI)]) / 10
    assert found >= (0.2 if name == "ivfpq" else 0.95)  # PQ codes of 4 x 4 bits: approximate by design
    ok = I >= 0
    np.testing.assert_allclose(D[ok], np.linalg.norm(X[I[ok]] - np.repeat(Q, 10, axis=0)[ok.ravel()], axis=1),
                               rtol=1e-3 if name != "ivfpq" else 1.0, atol=1e-3 if name != "ivfpq" else 10)


def test_hnswlib_replace_deleted_reuses_the_deleted_slots():
    """replace_deleted=true: inserts after deletions take the deleted items' slots, so the index does not grow."""
    cls = get_backend("hnsw", "hnswlib")
    rng = np.random.default_rng(2)
    X = rng.standard_normal((1000, 8)).astype(np.float32)
    sizes = {}
    for reuse in (False, True):
        index = cls("euclidean", 8, replace_deleted=reuse)
        index.build(X[:500])
        index.remove(np.arange(0, 400))
        index.add(X[500:900], np.arange(500, 900))
        sizes[reuse] = index.index.get_current_count()
        index.set_search_params(ef=50)
        _, I = index.search(X[500:510], 1)
        assert (I[:, 0] == np.arange(500, 510)).all()  # the new items are found under their own labels
    assert sizes == {False: 900, True: 500}


def test_declared_support():
    assert get_backend("hnsw", "faiss").updates == UPDATES_INSERT
    assert get_backend("annoy").updates == UPDATES_NONE and get_backend("kdtree").updates == UPDATES_NONE
    ivfpq = get_backend("ivfpq")
    assert ivfpq.update_support(ivfpq.validate_build_params({"rerank": True})) == UPDATES_NONE
    with pytest.raises(NotImplementedError):
        get_backend("annoy")("euclidean", 4).add(np.zeros((1, 4), np.float32), np.array([0]))


# ---- the command: rows, resume ---------------------------------------------------------------------------------
def test_stream_rows_and_resume(tmp_path, small_set):
    from ann_bench.bench.results import ResultStore

    runner = CliRunner()
    rb = tmp_path / "slide.yaml"
    store = tmp_path / "r.sqlite"
    r = runner.invoke(cli, ["stream", "make-runbook", "--dataset", str(small_set), "--shape", "slide", "--steps", "3",
                            "--start", "0.2", "-o", str(rb)])
    assert r.exit_code == 0, r.output
    args = ["stream", "--runbook", str(rb), "--dataset", str(small_set), "--backend", "hnsw", "--backend", "kdtree",
            "--search", "ef=40", "--runs", "1", "--mode", "batch", "--in-process", "--results", str(store)]
    r = runner.invoke(cli, args)
    assert r.exit_code == 0, r.output
    with ResultStore(store, create=False) as s:
        rows = s.records(stream="slide")
        assert s.records() == []  # static commands never see stream rows
    steps = len(parse_runbook(__import__("yaml").safe_load(rb.read_text()), "x").steps)
    assert {r.stream_step for r in rows if r.backend == "hnsw"} == set(range(steps + 1))  # + the rebuild
    assert all(r.status == "ok" for r in rows)
    searches = [r for r in rows if r.stream_op in ("search", "rebuild")]
    assert all(r.recall is not None and r.recall > 0.9 and r.qps for r in searches)
    updates = [r for r in rows if r.stream_op in ("insert", "delete")]
    assert all(r.items_per_s and r.rss_bytes for r in updates)
    assert {r.stream_updates for r in rows if r.backend == "kdtree"} == {UPDATES_NONE}
    r = runner.invoke(cli, args)  # resume: everything stored, nothing measured again
    assert r.exit_code == 0 and "(0 new row(s))" in r.output, r.output
    r = runner.invoke(cli, ["results", "--results", str(store), "--stream", "slide"])
    assert r.exit_code == 0 and "rebuild" in r.output and "kdtree" in r.output


def test_plot_stream_draws_every_step(tmp_path, small_set):
    """plot --stream: recall and QPS per search step, index size per update step, the live items, the rebuild."""
    from ann_bench.bench.results import ResultStore
    from ann_bench.report.panels import _stream_figure

    runner = CliRunner()
    rb, store = tmp_path / "grow.yaml", tmp_path / "r.sqlite"
    assert runner.invoke(cli, ["stream", "make-runbook", "--dataset", str(small_set), "--shape", "grow", "--steps",
                               "3", "-o", str(rb)]).exit_code == 0
    r = runner.invoke(cli, ["stream", "--runbook", str(rb), "--dataset", str(small_set), "--backend", "hnsw",
                            "--backend", "ivf", "--search", "ef=40", "--search", "nprobe=8", "--runs", "1",
                            "--build-threads", "2", "--in-process", "-q", "--results", str(store)])
    assert r.exit_code == 0, r.output
    with ResultStore(store, create=False) as s:
        rows = s.records(stream="grow")
    # updates with the build's threads, searches with --threads; each row says which
    assert {r.update_threads for r in rows if r.stream_op in ("build", "insert", "rebuild")} == {2}
    assert {r.threads for r in rows} == {1}
    fig = _stream_figure(rows, None)
    ax_r, ax_q, ax_m, ax_live = fig.axes
    searches = sorted({r.stream_step for r in rows if r.stream_op == "search"})
    for line in ax_r.get_lines():  # one recall line per backend, a point per search step
        assert list(line.get_xdata()) == searches
    assert len(ax_r.get_lines()) == 2 and len(ax_q.get_lines()) == 2
    assert ax_live.get_lines()[0].get_ydata()[-1] == 3000  # grown to the whole set
    assert len(ax_r.collections) == 2  # the rebuild of each backend, starred
    assert "single mode" in ax_q.get_ylabel()
    __import__("matplotlib.pyplot").pyplot.close(fig)
    r = runner.invoke(cli, ["plot", "--results", str(store), "--stream", "grow", "-o", str(tmp_path / "s.png")])
    assert r.exit_code == 0 and (tmp_path / "s.png").stat().st_size > 10_000, r.output
    r = runner.invoke(cli, ["report", "--results", str(store), "--static", "-o", str(tmp_path / "r.html")])
    assert r.exit_code == 0, r.output  # only stream rows: the report is their section
    text = (tmp_path / "r.html").read_text()
    assert "<h3>Runbook grow@" in text and "rebuilt on the final live set" in text and "hnsw [hnswlib]" in text
    r = runner.invoke(cli, ["plot", "--results", str(store), "--stream", "nope", "-o", str(tmp_path / "t.png")])
    assert r.exit_code == 2 and "no stream rows of runbook 'nope'" in r.output and not (tmp_path / "t.png").exists()
    r = runner.invoke(cli, ["plot", "--results", str(store), "--stream", "grow", "--filter", "label", "-o",
                            str(tmp_path / "t.png")])
    assert r.exit_code == 2 and "neither --filter nor --tune" in r.output


def test_resume_starts_from_the_checkpoint_not_the_start(tmp_path, small_set, monkeypatch):
    """A runbook stopped by a failure mid-way resumes from its last checkpoint: only the later inserts are played,
    and every step's recall equals an uninterrupted run's; the checkpoint is gone once the runbook ends."""
    from ann_bench.backends.ivf import FaissIVFFlat as IVFIndex
    from ann_bench.bench.results import ResultStore
    from ann_bench.config import cache_dir

    runner = CliRunner()
    rb = tmp_path / "slide.yaml"
    assert runner.invoke(cli, ["stream", "make-runbook", "--dataset", str(small_set), "--shape", "slide", "--steps",
                               "5", "--start", "0.2", "-o", str(rb)]).exit_code == 0

    def run(store):
        return runner.invoke(cli, ["stream", "--runbook", str(rb), "--dataset", str(small_set), "--backend", "ivf",
                                   "--build", "nlist=16", "--search", "nprobe=4", "--runs", "1", "--mode", "batch",
                                   "--checkpoint-every", "0", "--in-process", "--results", str(store)])

    def recalls(store):
        with ResultStore(store, create=False) as s:
            return {r.stream_step: r.recall for r in s.records(stream="slide") if r.status == "ok"
                    and r.stream_op in ("search", "rebuild")}

    assert run(tmp_path / "a.sqlite").exit_code == 0
    assert not list((cache_dir() / "stream").iterdir())  # the runbook ended: no checkpoint left
    add, calls, failed = IVFIndex.add, [], []

    def failing_add(self, X, ids):  # the third insert fails, once
        calls.append(len(ids))
        if len(calls) == 3 and not failed:
            failed.append(True)
            raise RuntimeError("disk on fire")
        return add(self, X, ids)

    monkeypatch.setattr(IVFIndex, "add", failing_add)
    r = run(tmp_path / "b.sqlite")
    assert "disk on fire" in r.output and len(list((cache_dir() / "stream").iterdir())) == 1
    calls.clear()
    r = run(tmp_path / "b.sqlite")
    assert r.exit_code == 0 and "resumed after step" in r.output, r.output
    steps = parse_runbook(__import__("yaml").safe_load(rb.read_text()), "x").steps
    assert len(calls) == sum(s.op == "insert" for s in steps) - 2  # the two inserts before the failure: not replayed
    assert recalls(tmp_path / "b.sqlite") == recalls(tmp_path / "a.sqlite"), r.output
    assert not list((cache_dir() / "stream").iterdir())


def test_a_wrong_incremental_ground_truth_stops_the_run():
    """Every search step's exact top-k is checked on a sample against a from-scratch computation."""
    from ann_bench.bench import stream as st

    rng = np.random.default_rng(3)
    X = rng.standard_normal((400, 8)).astype(np.float32)
    Q = rng.standard_normal((20, 8)).astype(np.float32)
    rb = parse_runbook({"name": "t", "steps": [{"build": "0-199"}, "search", {"insert": "200-399"},
                                               {"delete": "0-99"}, "search"]}, "x")
    st.live_groundtruth(rb, X, Q, "euclidean", 5)  # right: passes
    broken = st.LiveGroundTruth.delete
    try:
        st.LiveGroundTruth.delete = lambda self, ids: self.live.__setitem__(np.asarray(ids), False)  # forgets to recompute
        with pytest.raises(InputError, match="differs from a from-scratch computation"):
            st.live_groundtruth(rb, X, Q, "euclidean", 5)
    finally:
        st.LiveGroundTruth.delete = broken


def test_nsw_inserts_in_parallel_batches_and_the_graph_does_not_depend_on_threads():
    """Our NSW's insert runs the build's batches on every thread; the graph is the same for 1 and 2 threads."""
    cls = get_backend("nsw")
    rng = np.random.default_rng(4)
    X = rng.standard_normal((6000, 8)).astype(np.float32)
    graphs = []
    for threads in (1, 2):
        index = cls("euclidean", 8, threads=threads)
        index.build(X[:2000])
        index.add(X[2000:], np.arange(2000, 6000))
        graphs.append((index._indptr.copy(), index._adj.copy()))
        index.set_search_params(ef=64)
        _, I = index.search(X[2000:2100], 1)
        assert np.mean(I[:, 0] == np.arange(2000, 2100)) >= 0.99  # inserted points are found
    np.testing.assert_array_equal(graphs[0][0], graphs[1][0])
    np.testing.assert_array_equal(graphs[0][1], graphs[1][1])


def test_a_parameter_added_later_keeps_the_stored_rows_keys():
    """hnswlib's replace_deleted came after rows were stored: at its default it is not part of a row's identity."""
    cls = get_backend("hnsw", "hnswlib")
    assert cls.validate_build_params({"M": 16}) == {"M": 16, "ef_construction": 200}
    assert cls.validate_build_params({"replace_deleted": "false"}) == {"M": 16, "ef_construction": 200}
    assert cls.validate_build_params({"replace_deleted": "true"})["replace_deleted"] is True
