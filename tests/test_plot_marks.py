"""The plot tells its points apart: search values on the front points (--annotate), one front per build
configuration (--fronts build), and the recall scale named on the axis; builds report progress."""

from __future__ import annotations

import matplotlib
import numpy as np
import pytest
from click.testing import CliRunner

from ann_bench.cli import cli
from ann_bench.data.vectorset import VectorSet
from ann_bench.report.plots import plot_figure, point_labels
from ann_bench.bench.results import ResultStore
from ann_bench.bench.runner import Reporter, RunOptions, plan_sweep, run_sweep
from test_report import RECORDS  # noqa: E402 (tests/ is on sys.path, as for oracle)

matplotlib.use("Agg")
BATCH = [r for r in RECORDS if r.mode == "batch" and r.status == "ok"]


def texts(fig) -> list[str]:
    return [t.get_text() for t in fig.axes[0].texts]


def legend(fig) -> list[str]:  # the figure's legend, below the axes
    return [t.get_text() for t in fig.legends[0].get_texts()]


def test_front_points_carry_their_search_value_and_the_build_where_it_varies():
    fig = plot_figure(BATCH, annotate=True)
    # hnsw's front mixes M=16 and M=32 (hand-worked in test_report): each point says which build it is
    assert {"M16 ef10", "M32 ef10", "M16 ef20", "M32 ef40", "M16 ef80", "M32 ef80"} <= set(texts(fig))
    assert {"nprobe1", "nprobe4"} <= set(texts(fig))
    assert "M16 ef40" not in texts(fig)  # dominated by M32 ef40: not on the front, not labelled
    assert not any(t in ("", "-") for t in texts(fig))  # flat has no search parameter: no label
    assert "labels: search value" in fig.legends[0].get_title().get_text()


def test_annotate_off_and_automatic():
    assert texts(plot_figure(BATCH, annotate=False)) == []
    assert "ef10" in " ".join(texts(plot_figure(BATCH)))  # 9 front points: labelled by default


def test_fronts_per_build_configuration():
    fig = plot_figure(BATCH, fronts="build", annotate=True)
    labels = legend(fig)
    assert any(label.startswith("hnsw [hnswlib] M16 (") for label in labels)
    assert any(label.startswith("hnsw [hnswlib] M32 (") for label in labels)
    # per build, a point's label is its search value only
    assert {"ef10", "ef20", "ef40", "ef80"} <= set(texts(fig)) and "M16 ef10" not in texts(fig)
    lines = {line.get_label(): line for line in fig.axes[0].get_lines()}
    m16 = next(v for k, v in lines.items() if k.startswith("hnsw [hnswlib] M16"))
    m32 = next(v for k, v in lines.items() if k.startswith("hnsw [hnswlib] M32"))
    assert m16.get_color() == m32.get_color() and m16.get_linestyle() != m32.get_linestyle()


def test_point_labels_only_what_varies():
    group = [r for r in BATCH if r.backend == "ivf"]
    assert point_labels(group, group, by_build=False) == ["nprobe1", "nprobe4"]


def test_the_axis_names_its_scale():
    assert "logit scale" in plot_figure(BATCH).axes[0].get_xlabel()
    assert "linear scale" in plot_figure(BATCH, x_scale="linear").axes[0].get_xlabel()


def test_cli_options(tmp_path):
    with ResultStore(tmp_path / "r.sqlite") as s:
        for r in RECORDS:
            s.save(r)
    for extra in (["--annotate", "--fronts", "build"], ["--no-annotate"]):
        r = CliRunner().invoke(cli, ["plot", "--results", str(tmp_path / "r.sqlite"), "-o",
                                     str(tmp_path / "p.png"), "--force", *extra])
        assert r.exit_code == 0, r.output
    r = CliRunner().invoke(cli, ["plot", "--results", str(tmp_path / "r.sqlite"), "-o", str(tmp_path / "q.png"),
                                 "--fronts", "nope"])
    assert r.exit_code == 2 and "nope" in r.output


# ---- build progress ------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend, impl, params", [("nsw", "numba", {"parallel": True, "f": 8}),
                                                    ("hnsw", "usearch", {"M": 8})])
def test_libraries_that_report_build_progress_pass_it_on(backend, impl, params):
    from ann_bench.backends import get_backend

    cls = get_backend(backend, impl)
    try:
        cls.check_available()
    except Exception as exc:  # pragma: no cover - an optional library missing
        pytest.skip(str(exc))
    X = np.random.default_rng(0).standard_normal((6000, 16)).astype(np.float32)
    index = cls("euclidean", 16, threads=2, seed=0, **params)
    index.warm_up()
    seen = []
    index.progress = lambda done, total: seen.append((done, total))
    index.build(X)
    assert seen, "no progress reported"
    assert all(t == 6000 and 0 <= d <= 6000 for d, t in seen)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


class Recording(Reporter):
    def __init__(self):
        self.calls = []

    def build_started(self, label):
        self.calls.append(("started", label))

    def build_progress(self, label, done, total):
        self.calls.append(("progress", label, done, total))

    def build_ended(self, label):
        self.calls.append(("ended", label))


def test_the_sweep_reports_each_build_start_progress_and_end(small_set, tmp_path, monkeypatch):
    import ann_bench.bench.worker as worker

    real = worker._throttled
    monkeypatch.setattr(worker, "_throttled", lambda emit, every_s=0.5: real(emit, 0.0))  # forward every report
    rep = Recording()
    with VectorSet(small_set) as vs, ResultStore(tmp_path / "r.sqlite") as store:
        plans = plan_sweep(["nsw"], vs.n_train, vs.dim, vs.metric, ["f=8", "parallel=true"], ["ef=20"])
        run_sweep(vs, plans, RunOptions(runs=1, isolate=False), store, rep)
    kinds = [c[0] for c in rep.calls]
    assert kinds[0] == "started" and kinds[-1] == "ended" and "progress" in kinds
    label = rep.calls[0][1]
    assert label.startswith("nsw[numba] ") and "f8" in label  # the short form, as the configuration lines print it
    assert all(c[1] == label for c in rep.calls)


def test_an_isolated_build_reports_its_start_and_end(small_set, tmp_path):
    rep = Recording()
    with VectorSet(small_set) as vs, ResultStore(tmp_path / "r.sqlite") as store:
        plans = plan_sweep(["hnsw"], vs.n_train, vs.dim, vs.metric, ["M=8"], ["ef=20"])
        summary = run_sweep(vs, plans, RunOptions(runs=1), store, rep)  # in a worker process
    assert [c[0] for c in rep.calls if c[0] != "progress"] == ["started", "ended"]
    assert summary.records and summary.records[0].status == "ok"
