"""`run` skips the costlier settings of a line whose recall levelled off (issue 29, item 8): two steps of more
effort in a row that each moved recall@k by less than SATURATION, judged per mode and per combination of the other
search parameters, in one pass and from stored rows alike; --exhaustive measures them anyway."""

import numpy as np
import pytest

from ann_bench import backends as registry
from ann_bench.backends.base import Param
from ann_bench.bench.jobs import JobRecorder, Reporter, SweepSummary
from ann_bench.bench.metrics import SATURATION
from ann_bench.bench.results import Record, ResultStore
from ann_bench.bench.runner import RunOptions, plan_sweep, run_sweep
from ann_bench.bench.worker import BuildJob, levelled_reason
from ann_bench.cli.run import skip_summary
from ann_bench.data.vectorset import VectorSet
from plugins.exact_index import ExactIndex  # tests/ is on sys.path

NPROBE = [1, 2, 4, 8, 16, 32, 64]
# Correct ids out of k = 10 per query at each nprobe: at refine=0 the recall stops at 0.5 from nprobe 4 (an IVF-PQ
# capped by its codes), at refine=10 it keeps rising.
CORRECT = {0: dict(zip(NPROBE, [2, 4, 5, 5, 5, 5, 5])), 10: dict(zip(NPROBE, [3, 4, 5, 6, 7, 8, 9]))}


class Scripted(ExactIndex):
    """Exact search that keeps CORRECT[refine][nprobe] of the k true neighbours of every query and fills the rest
    with the next ones: recall@k is exactly that / k, in either mode."""

    name = "scripted"
    impl = "test"
    search_params = (Param("nprobe", int, 1), Param("refine", int, 0))
    search_grid = {"nprobe": NPROBE, "refine": [0, 10]}
    effort_params = {"nprobe": +1, "refine": +1}

    def _apply_search_params(self, params):
        self.correct = CORRECT[params["refine"]][params["nprobe"]]

    def query(self, Q, k):
        d = self.distances(Q)
        order = np.argsort(d, axis=1, kind="stable")
        I = np.concatenate([order[:, : self.correct], order[:, k : 2 * k - self.correct]], axis=1)
        return np.take_along_axis(d, I, axis=1), I


@pytest.fixture
def scripted():
    registry.get_backend("flat")  # the registry is loaded before ours joins it
    registry.register(Scripted)
    yield
    registry._REGISTRY.pop("scripted", None)


def _sweep(vs, store, grid, **options):
    plans = plan_sweep(["scripted"], vs.n_train, vs.dim, vs.metric, (), grid)
    return run_sweep(vs, plans, RunOptions(runs=1, isolate=False, **options), store)


def _measured(summary, refine=None):
    return [(r.search_params["nprobe"], r.mode) for r in summary.records
            if refine is None or r.search_params["refine"] == refine]


def test_a_levelled_off_line_is_skipped_and_reported_a_rising_one_is_not(small_set, tmp_path, scripted):
    with VectorSet(small_set) as vs, ResultStore(tmp_path / "r.sqlite") as store:
        summary = _sweep(vs, store, ["nprobe=1,2,4,8,16,32,64 refine=0,10"], modes=("batch", "single"))
    assert all(r.status == "ok" for r in summary.records)
    recall = {(r.search_params["refine"], r.search_params["nprobe"], r.mode): r.recall for r in summary.records}
    assert recall[0, 4, "batch"] == recall[0, 16, "single"] == 0.5 and recall[10, 64, "batch"] == pytest.approx(0.9)
    # refine=0: 4 -> 8 -> 16 moved nothing, so 32 and 64 are skipped, in each mode; refine=10 (the other parameter
    # differs: another line) rises all along and is measured in full.
    assert _measured(summary, 0) == [(p, m) for p in NPROBE[:5] for m in ("batch", "single")]
    assert _measured(summary, 10) == [(p, m) for p in NPROBE for m in ("batch", "single")]
    reason = ("recall@10 levelled off at 0.5000 (nprobe=4 → 8 → 16 moved it < 0.001); this costlier setting "
              "cannot reach more")
    assert summary.skipped_detail == [("scripted[test]", f"nprobe{p} refine0{'' if m == 'batch' else ' single'}",
                                       reason) for p in (32, 64) for m in ("batch", "single")]
    [line] = skip_summary(summary.skipped_detail)
    assert line.startswith("skipped 4 setting(s) of scripted[test]: nprobe32 refine0, ") and reason in line


def test_exhaustive_measures_past_the_level(small_set, tmp_path, scripted):
    with VectorSet(small_set) as vs, ResultStore(tmp_path / "r.sqlite") as store:
        summary = _sweep(vs, store, ["nprobe=1,2,4,8,16,32,64 refine=0"], exhaustive=True)
    assert _measured(summary) == [(p, "batch") for p in NPROBE] and not summary.skipped_detail


def test_a_resumed_sweep_judges_the_level_from_the_stored_rows(small_set, tmp_path, scripted):
    with VectorSet(small_set) as vs, ResultStore(tmp_path / "r.sqlite") as store:
        first = _sweep(vs, store, ["nprobe=1,2,4,8 refine=0"])  # one flat step (4 -> 8) stored: not yet level
        assert _measured(first) == [(1, "batch"), (2, "batch"), (4, "batch"), (8, "batch")]
        # Extended: 16 is measured, and with the stored 4 and 8 it makes the second flat step; the worker skips on.
        second = _sweep(vs, store, ["nprobe=1,2,4,8,16,32,64 refine=0"])
        assert _measured(second) == [(16, "batch")] and second.skipped_existing == 4
        assert [s for _, s, _ in second.skipped_detail] == ["nprobe32 refine0", "nprobe64 refine0"]
        assert "(nprobe=4 → 8 → 16 moved it < 0.001); this" in second.skipped_detail[0][2]
        # Again, with a larger grid: the stored rows alone show the level, nothing is built.
        third = _sweep(vs, store, ["nprobe=1,2,4,8,16,32,64,128 refine=0"])
        assert not third.records and len(third.skipped_detail) == 3
        assert all("(nprobe=4 → 8 → 16 moved it < 0.001; stored rows); this costlier setting cannot reach more" in r
                   for _, _, r in third.skipped_detail)
        full = _sweep(vs, store, ["nprobe=1,2,4,8,16,32,64,128 refine=0"], exhaustive=True)
        assert _measured(full) == [(32, "batch"), (64, "batch"), (128, "batch")]


def _m(recalls, mode="batch", **others):
    """measured rows along nprobe: {nprobe: recall} at the other parameters ``others``."""
    return [({"nprobe": p, **others}, mode, r) for p, r in recalls.items()]


def test_the_rule_on_its_own():
    s = {"nprobe": 32, "refine": 0}
    flat = _m({4: 0.5, 8: 0.5 + 0.9 * SATURATION, 16: 0.5 + 1.7 * SATURATION}, refine=0)
    assert "levelled off at 0.5017 (nprobe=4 → 8 → 16 moved it < 0.001)" in levelled_reason(Scripted, s, "batch",
                                                                                               flat, 10)
    assert levelled_reason(Scripted, s, "batch", flat, 10, stored=True).endswith(
        "moved it < 0.001; stored rows); this costlier setting cannot reach more")
    # One step of SATURATION or more: not level. Two points: not enough. Another mode, another refine: other lines.
    assert levelled_reason(Scripted, s, "batch", _m({4: 0.5, 8: 0.5 + SATURATION, 16: 0.5 + SATURATION}, refine=0),
                           10) is None
    assert levelled_reason(Scripted, s, "batch", flat[1:], 10) is None
    assert levelled_reason(Scripted, s, "single", flat, 10) is None
    assert levelled_reason(Scripted, {"nprobe": 32, "refine": 10}, "batch", flat, 10) is None
    # The last three below the setting count, in effort order whatever the order they were measured in; a level
    # at low effort that the recall rose past does not stop a costlier setting.
    rising_after = _m({1: 0.2, 2: 0.2, 4: 0.2, 8: 0.4, 16: 0.6}, refine=0)
    assert levelled_reason(Scripted, s, "batch", rising_after, 10) is None
    assert "nprobe=1 → 2 → 4" in levelled_reason(Scripted, {"nprobe": 8, "refine": 0}, "batch", rising_after[2::-1],
                                                 10)
    # A costlier setting already measured (a stored row) that did reach more: the line had not levelled off.
    assert levelled_reason(Scripted, s, "batch", flat + _m({64: 0.7}, refine=0), 10) is None
    assert levelled_reason(Scripted, s, "batch", flat + _m({64: 0.5 + 2 * SATURATION}, refine=0), 10) is not None
    # Along refine too, at one nprobe.
    along_refine = [({"nprobe": 4, "refine": r}, "batch", 0.7) for r in (0, 10, 20)]
    assert "refine=0 → 10 → 20" in levelled_reason(Scripted, {"nprobe": 4, "refine": 40}, "batch", along_refine, 10)
    assert levelled_reason(Scripted, {"nprobe": 8, "refine": 40}, "batch", along_refine, 10) is None
    # An effort parameter where less is more (k-d tree eps): the order follows the effort, not the value.
    kdtree = registry.get_backend("kdtree")
    eps = [({**kdtree.validate_search_params({}), "eps": e}, "batch", 0.8) for e in (2.0, 1.0, 0.5)]
    assert "eps=2.0 → 1.0 → 0.5" in levelled_reason(kdtree, {**eps[0][0], "eps": 0.0}, "batch", eps, 10)
    assert levelled_reason(kdtree, {**eps[0][0], "eps": 4.0}, "batch", eps, 10) is None
    # No effort parameters, no lines.
    assert levelled_reason(registry.get_backend("flat"), {}, "batch", [({}, "batch", 0.5)] * 3, 10) is None


def test_a_retry_carries_what_was_measured():
    job = BuildJob(dataset_path="x", metric="euclidean", dim=2, backend="scripted", impl="test", build={},
                   pending=[({"nprobe": 8, "refine": 0}, "batch"), ({"nprobe": 16, "refine": 0}, "batch")], k=10,
                   runs=1, threads=1, build_threads=1, seed=0, measured=_m({4: 0.5}, refine=0))

    def record(search, mode, **kw):
        return Record(dataset_hash="h", dataset_name="d", backend="scripted", impl="test", build_params={},
                      search_params=search, k=10, mode=mode, threads=1, **kw)

    recorder = JobRecorder(job, record, None, SweepSummary(), Reporter(), lambda n=1: None)
    recorder.on_event("result", 0, {"recall": 0.5, "qps": 1.0}, None)
    again = recorder.retry("node died")
    assert again.done == {0} and again.measured == _m({4: 0.5, 8: 0.5}, refine=0)


def test_ivfpq_without_reranking_stops_where_its_codes_cap_the_recall(small_set, tmp_path):
    """A real backend in worker processes: the stored rows travel to the worker of a resumed sweep."""
    with VectorSet(small_set) as vs, ResultStore(tmp_path / "r.sqlite") as store:
        def sweep(nprobe):
            plans = plan_sweep(["ivfpq"], vs.n_train, vs.dim, vs.metric, ["nlist=32 m=4 rerank=false"],
                               [f"nprobe={nprobe} refine=0"])
            return run_sweep(vs, plans, RunOptions(runs=1), store)

        first = sweep("1,2,4,8")
        second = sweep("1,2,4,8,16,32,64")
    recall = {r.search_params["nprobe"]: r.recall for r in first.records + second.records}
    # PQ codes of 4 bytes cap the recall near 0.75 from nprobe 4 on, whatever nprobe: 4 -> 8 -> 16 moved nothing.
    assert recall[1] < recall[2] < recall[4] == recall[8] == recall[16] < 0.8 and sorted(recall) == [1, 2, 4, 8, 16]
    skipped = {s: r for _, s, r in second.skipped_detail}
    assert skipped.keys() == {"nprobe32 refine0", "nprobe64 refine0"}
    # Judged in the worker, from the stored 4 and 8 and the 16 it measured (a judgement from stored rows says so).
    assert (f"levelled off at {recall[16]:.4f} (nprobe=4 → 8 → 16 moved it < 0.001)"
            in skipped["nprobe32 refine0"])
    assert "nprobe=64 > nlist=32" in skipped["nprobe64 refine0"]  # redundant before any of this
