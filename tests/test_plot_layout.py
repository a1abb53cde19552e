"""Every plot fits its figure and speaks: on a many-backend store (10 backend groups, long implementation names,
a long dataset name with '$' in it, 40+ points on the fronts) no text is drawn outside the figure, no two
point labels overlap, labels stay inside the axes, and tick labels are plain text (never raw mathtext)."""

from __future__ import annotations

import itertools
from dataclasses import replace

import matplotlib
import numpy as np
import pytest

from ann_bench.bench.results import Record
from ann_bench.bench.tune import tune_marks
from ann_bench.report.html import PLOTS
from ann_bench.report.plots import POINT_LABEL, plot_figure, render_plot

matplotlib.use("Agg")

NAME = "wordnet-minilm-384-angular-glosses-$subset$-deduplicated-2025-06-a-very-long-dataset-name"
MB = 1_000_000


def _row(backend, impl, build, search, recall, qps, size_mb, build_s, mode="batch", p99=None, seed=0):
    p10 = 0.62 + 0.3 * recall
    return Record(dataset_hash="0123456789abcdef", dataset_name=NAME, backend=backend, impl=impl,
                  build_params=build, search_params=search, k=10, mode=mode, threads=1, metric="angular",
                  n_train=1_000_000, n_test=10_000, dim=384, recall=recall, recall_ab=recall, id_recall=recall,
                  recall_rule="relative-1e-06", qps=qps, build_s=build_s, index_bytes=int(size_mb * MB), p99_ms=p99,
                  p50_ms=None if p99 is None else p99 / 2,
                  label_metrics={"precision_at_10": p10, "exact_precision_at_10": 0.92},
                  created_at="2025-06-01 00:00:0%d" % (seed % 10))


# backend, impl, build grid, search name, search values, speed, quality (recall reached per unit of search value)
GROUPS = [
    ("hnsw", "hnswlib", {"M": [12, 16, 48], "ef_construction": [100, 276]}, "ef", [10, 20, 40, 80, 160, 320], 9e4, 0.9),
    ("hnsw", "faiss", {"M": [16, 32], "ef_construction": [200]}, "efSearch", [10, 20, 40, 80, 160], 8e4, 0.85),
    ("ivf", "faiss", {"nlist": [256, 682, 1024]}, "nprobe", [1, 2, 4, 8, 16, 32, 64], 6e4, 0.6),
    ("ivfpq", "faiss", {"m": [48], "nbits": [8], "nlist": [682], "rerank": [False, True], "refine": [0, 10]},
     "nprobe", [1, 2, 4, 8, 16, 32], 5e4, 0.5),
    ("nsw", "numba", {"f": [10, 20]}, "ef", [10, 20, 40, 80, 160, 320], 4e4, 0.8),
    ("annoy", "annoy", {"n_trees": [50, 100]}, "search_k", [500, 1000, 2000, 5000, 10000], 2e4, 0.004),
    ("hnsw", "usearch", {"connectivity": [16, 32]}, "expansion_search", [10, 20, 40, 80, 160], 1e5, 0.95),
    ("scann", "scann", {"num_leaves": [1000]}, "num_leaves_to_search", [10, 20, 40, 80, 160], 1.2e5, 0.7),
    ("graphbeam", "graphbeam-experimental-plugin-with-a-long-implementation-name", {"degree": [24, 40]},
     "beam", [8, 16, 32, 64, 128], 7e4, 0.75),
    ("diskann", "diskannpy-memory-index-with-another-long-name", {"R": [32, 64]}, "L", [10, 20, 40, 80, 160],
     3e4, 0.9),
]


def many_backend_records() -> list[Record]:
    rows, rng, n = [], np.random.default_rng(7), 0
    for backend, impl, grid, sname, svalues, speed, quality in GROUPS:
        names = list(grid)
        for b, combo in enumerate(itertools.product(*grid.values())):
            build = dict(zip(names, combo))
            boost = 1 + 0.15 * b
            size = 60 + 20 * b if backend != "ivfpq" else 5 + 2 * b
            for s in svalues:
                # recall rises with the search value, towards 0.9-0.99 where most backends crowd
                recall = float(1 - np.exp(-quality * boost * s / 4) * 0.4 - rng.uniform(0, 0.005))
                recall = min(max(recall, 0.3), 0.9995)
                qps = speed / (1 + s * 0.05 / boost) * rng.uniform(0.9, 1.1)
                rows.append(_row(backend, impl, build, {sname: s}, recall, qps, size, 3 + 4 * b, seed=n))
                if backend in ("hnsw", "ivf") and s in svalues[1:4]:
                    rows.append(_row(backend, impl, build, {sname: s}, recall, qps * 0.8, size, 3 + 4 * b,
                                     mode="single", p99=1000 / qps * 1.7, seed=n))
                n += 1
    # QPS from 1,500 to 50,000: under two decades, where matplotlib's log axis labels its minor ticks (2x10^3)
    lq = np.log([r.qps for r in rows])
    span = np.log(50000 / 1500)
    scale = lambda q: float(np.exp(np.log(1500) + (np.log(q) - lq.min()) / np.ptp(lq) * span))  # noqa: E731
    return [replace(r, qps=scale(r.qps)) for r in rows]


RECORDS = many_backend_records()


def tune_plot_kwargs():
    """The marks `plot --tune` adds, from a tune log as `ann-bench tune` writes it."""
    batch = [r for r in RECORDS if r.mode == "batch"]
    answers = [max((r for r in batch if r.recall >= t), key=lambda r: r.qps) for t in (0.9, 0.95, 0.99)]
    log = {"tune_id": "4f52fdd6e1a94c0b", "targets": [0.9, 0.95, 0.99],
           "trials": [{"phase": "full", "row_keys": [r.key for r in batch]}] * 30,
           "answers": [{"target": t, "row_key": r.key} for t, r in zip((0.9, 0.95, 0.99), answers)]}
    rows, marks = tune_marks(log, RECORDS)
    return rows, marks


def plot_kinds():
    """(name, records, plot_figure kwargs) for every kind of plot ann-bench draws."""
    kinds = [(f"plot -y {y}", RECORDS, {"y_metric": y}) for y in ("qps", "build_s", "index_mb", "p99_ms")]
    kinds += [("plot -x precision_at_10", RECORDS, {"x_metric": "precision_at_10"}),
              ("plot -x id_recall --x-scale linear", RECORDS, {"x_metric": "id_recall", "x_scale": "linear"}),
              ("plot --fronts build", RECORDS, {"fronts": "build"}),
              ("plot --no-raw --annotate", RECORDS, {"raw": False, "annotate": True}),
              ("plot --tune", *tune_plot_kwargs())]
    for x_metric, y_metric, _ in PLOTS:  # the report's plots, as html.build_report draws them
        kinds.append((f"report {x_metric}/{y_metric}", RECORDS,
                      {"mode": "single" if y_metric == "p99_ms" else "batch", "k": 10, "x_metric": x_metric,
                       "y_metric": y_metric}))
    kinds.append(("report precision_at_10/qps", RECORDS,
                  {"mode": "batch", "k": 10, "x_metric": "precision_at_10", "y_metric": "qps"}))
    return kinds


KINDS = plot_kinds()


def _visible_texts(fig):
    """The texts drawn: tick labels only of the ticks inside the view (matplotlib skips the others)."""
    from matplotlib.text import Text

    ticks, drawn = set(), []
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            lo, hi = sorted(axis.get_view_interval())
            for tick in [*axis.get_major_ticks(), *axis.get_minor_ticks()]:
                ticks |= {id(tick.label1), id(tick.label2)}
                if lo <= tick.get_loc() <= hi:
                    drawn += [t for t in (tick.label1, tick.label2) if t.get_visible()]
    drawn += [t for t in fig.findobj(Text) if id(t) not in ticks and t.get_visible()]
    return [t for t in drawn if t.get_text().strip()]


@pytest.fixture(params=KINDS, ids=[k[0] for k in KINDS])
def drawn(request):
    import matplotlib.pyplot as plt

    _, records, kwargs = request.param
    fig = plot_figure(records, **kwargs)
    fig.canvas.draw()
    yield fig
    plt.close(fig)


def test_nothing_is_drawn_outside_the_figure(drawn):
    renderer = drawn.canvas.get_renderer()
    box = drawn.bbox
    outside = []
    for t in _visible_texts(drawn):
        e = t.get_window_extent(renderer)
        if e.x0 < box.x0 - 0.5 or e.y0 < box.y0 - 0.5 or e.x1 > box.x1 + 0.5 or e.y1 > box.y1 + 0.5:
            outside.append((t.get_text()[:60], tuple(round(v) for v in e.extents)))
    assert not outside, f"figure {tuple(box.extents)}; outside it: {outside}"
    legend = drawn.legends[0] if drawn.legends else drawn.axes[0].get_legend()
    assert legend is not None
    e = legend.get_window_extent(renderer)
    assert box.x0 - 0.5 <= e.x0 and e.x1 <= box.x1 + 0.5 and box.y0 - 0.5 <= e.y0 and e.y1 <= box.y1 + 0.5


def test_point_labels_do_not_overlap_and_stay_in_the_axes(drawn):
    renderer = drawn.canvas.get_renderer()
    ax = drawn.axes[0]
    labels = [t for t in ax.texts if t.get_gid() == POINT_LABEL and t.get_visible()]
    boxes = [t.get_window_extent(renderer) for t in labels]
    for (a, ta), (b, tb) in itertools.combinations(zip(boxes, labels), 2):
        assert not a.overlaps(b), f"{ta.get_text()!r} overlaps {tb.get_text()!r}"
    inner = ax.get_window_extent(renderer)
    for e, t in zip(boxes, labels):
        assert inner.x0 <= e.x0 and e.x1 <= inner.x1 and inner.y0 <= e.y0 and e.y1 <= inner.y1, t.get_text()
    legend = drawn.legends[0] if drawn.legends else ax.get_legend()
    assert not any(e.overlaps(legend.get_window_extent(renderer)) for e in boxes)


def test_tick_labels_are_plain_text(drawn):
    for ax in drawn.axes:
        ticks = [*ax.get_xticklabels(which="both"), *ax.get_yticklabels(which="both"),
                 ax.xaxis.get_offset_text(), ax.yaxis.get_offset_text()]
        raw = [t.get_text() for t in ticks if "$" in t.get_text() or "mathdefault" in t.get_text()]
        assert not raw, raw


@pytest.mark.parametrize("lo, hi", [(1500, 50000), (100, 3000), (2000, 9000), (10, 20), (50, 1e6), (0.02, 0.9)])
def test_log_axis_ticks_are_plain_at_every_span(lo, hi):
    import matplotlib.pyplot as plt

    lq = np.log([r.qps for r in RECORDS])
    rows = [replace(r, qps=float(np.exp(np.log(lo) + (np.log(r.qps) - lq.min()) / np.ptp(lq) * np.log(hi / lo))))
            for r in RECORDS]
    fig = plot_figure(rows)
    fig.canvas.draw()
    shown = [t.get_text() for t in fig.axes[0].get_yticklabels(which="both") if t.get_text()]
    plt.close(fig)
    assert len(shown) >= 2 and not [t for t in shown if "$" in t or "mathdefault" in t], shown


def test_the_default_plot_labels_front_ends_and_knees():
    import matplotlib.pyplot as plt

    fig = plot_figure(RECORDS)
    fig.canvas.draw()
    labels = [t.get_text() for t in fig.axes[0].texts if t.get_gid() == POINT_LABEL]
    assert len(labels) >= 10  # at least one per front; not every one of the 40+
    # in the short form, only what varies along the front: hnswlib's label names ef and the build where it varies
    assert all("=" not in t or "rerank=" in t for t in labels)
    assert not any("nbits" in t for t in labels)  # nbits never varies
    plt.close(fig)


def test_the_report_plot_bytes_are_the_figure():
    png = render_plot(RECORDS, "png", mode="batch", k=10, x_metric="recall", y_metric="index_mb")
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_plot_tune_and_default_on_the_many_backend_store(tmp_path):
    import json

    from click.testing import CliRunner

    from ann_bench.bench.results import ResultStore
    from ann_bench.bench.tune.answers import TUNE_LOG_VERSION, log_dir
    from ann_bench.cli import cli

    store = tmp_path / "r.sqlite"
    with ResultStore(store) as s:
        for r in RECORDS:
            s.save(r)
    rows, marks = tune_plot_kwargs()
    log = {"version": TUNE_LOG_VERSION, "tune_id": "4f52fdd6e1a94c0b", "dataset_hash": rows[0].dataset_hash,
           "mode": "batch", "targets": marks["targets"],
           "trials": [{"phase": "full", "row_keys": [r.key for r in rows]}] * 30,
           "answers": [{"target": t, "row_key": r.key} for t, (r, _) in zip(marks["targets"], marks["highlights"])]}
    log_dir(store).mkdir()
    (log_dir(store) / "4f52fdd6e1a94c0b.json").write_text(json.dumps(log))
    for extra in (["--tune", "latest"], [], ["-y", "index_mb"]):
        res = CliRunner().invoke(cli, ["plot", "--results", str(store), "-o", str(tmp_path / "p.png"), "--force",
                                       *extra], catch_exceptions=False)
        assert res.exit_code == 0, res.output
        assert (tmp_path / "p.png").stat().st_size > 20000


def test_docs_figures_redraws_what_it_has_and_names_the_command_for_the_rest(tmp_path, capsys, monkeypatch):
    import importlib.util
    import sys
    from pathlib import Path

    from ann_bench.bench.results import ResultStore

    path = Path(__file__).resolve().parents[1] / "scripts" / "docs_figures.py"
    spec = importlib.util.spec_from_file_location("docs_figures", path)
    docs_figures = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "docs_figures", docs_figures)  # its dataclass looks itself up there
    monkeypatch.setattr(sys, "path", list(sys.path))  # it puts the repository and benchmarks/ on the path
    spec.loader.exec_module(docs_figures)
    store = tmp_path / "r.sqlite"
    with ResultStore(store) as s:
        for r in RECORDS:
            s.save(replace(r, dataset_name="wordnet-minilm-384-angular"))
    out = tmp_path / "docs"
    only = "sweep_1m,libraries-wordnet-minilm-384-angular,all_backends_100k_index_mb,nsw_vs_hnsw_fmnist"
    argv = ["--out-dir", str(out), "--only", only, "--store", f"sweep_1m={store}",
            "--store", f"libraries-wordnet-minilm-384-angular={store}",
            "--store", f"all_backends_100k_index_mb={store}", "--store", f"nsw_vs_hnsw_fmnist={store}"]
    assert docs_figures.main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert {p.name for p in out.iterdir()} == {"sweep_1m.png", "libraries-wordnet-minilm-384-angular.png",
                                               "all_backends_100k_index_mb.png"}
    kept = [line for line in lines if "kept as it is" in line]
    assert len(kept) == 1 and "nsw_vs_hnsw_fmnist" in kept[0] and "python benchmarks/nsw_vs_hnsw.py" in kept[0]
    assert docs_figures.main([*argv, "--strict"]) == 1
