"""Plots, `best`, the HTML report and `results --sort/--where` on a small hand-built store with hand-worked
Pareto fronts."""

import base64
import dataclasses
import hashlib
import html
import importlib.util
import json
import math
import re
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from ann_bench.report.best import best_configurations
from ann_bench.cli import cli
from ann_bench.errors import InputError
from ann_bench.report.plots import KNOWN_LABELS, pareto_by_group, pareto_indices, plot_recall_qps, style
from ann_bench.report.html import build_report
from ann_bench.bench.results import Record, ResultStore, filter_records, sort_records

MB = 1_000_000


def rec(backend, impl, build, search, recall, qps, build_s, index_bytes, mode="batch", p99=None, p10=None):
    return Record(dataset_hash="feedbeef00112233", dataset_name="toy", backend=backend, impl=impl,
                  build_params=build, search_params=search, k=10, mode=mode, threads=1, metric="euclidean",
                  n_train=1000, n_test=100, dim=8, recall=recall, recall_ab=recall, recall_rule="relative-1e-06",
                  id_recall=recall, qps=qps, build_s=build_s,
                  index_bytes=index_bytes, p99_ms=p99, p50_ms=None if p99 is None else p99 / 2,
                  label_metrics={} if p10 is None else {"precision_at_10": p10, "exact_precision_at_10": 0.9},
                  versions={"numpy": "2"}, host={"cores": 2})


M16, M32 = {"M": 16}, {"M": 32}
RECORDS = [
    # hnsw M=16: build 2 s, 2 MB                                      (recall, QPS)
    rec("hnsw", "hnswlib", M16, {"ef": 10}, 0.80, 5000, 2.0, 2 * MB, p10=0.80),
    rec("hnsw", "hnswlib", M16, {"ef": 20}, 0.90, 4000, 2.0, 2 * MB, p10=0.85),
    rec("hnsw", "hnswlib", M16, {"ef": 40}, 0.95, 2500, 2.0, 2 * MB, p10=0.88),  # dominated by M32 ef=40
    rec("hnsw", "hnswlib", M16, {"ef": 80}, 0.99, 1000, 2.0, 2 * MB, p10=0.89),
    rec("hnsw", "hnswlib", M16, {"ef": 30}, 0.94, 2000, 2.0, 2 * MB, p10=0.87),  # dominated by M16 ef=40
    # hnsw M=32: build 4 s, 3 MB
    rec("hnsw", "hnswlib", M32, {"ef": 10}, 0.85, 4500, 4.0, 3 * MB, p10=0.83),
    rec("hnsw", "hnswlib", M32, {"ef": 40}, 0.97, 2600, 4.0, 3 * MB, p10=0.89),
    rec("hnsw", "hnswlib", M32, {"ef": 80}, 0.995, 900, 4.0, 3 * MB, p10=0.9),
    # ivf: build 0.5 s, 1 MB; flat: 0.01 s, 4 MB
    rec("ivf", "faiss", {"nlist": 16}, {"nprobe": 1}, 0.70, 9000, 0.5, 1 * MB, p10=0.7),
    rec("ivf", "faiss", {"nlist": 16}, {"nprobe": 4}, 0.96, 3000, 0.5, 1 * MB, p10=0.88),
    rec("flat", "faiss", {}, {}, 1.0, 500, 0.01, 4 * MB, p10=0.9),
    # single mode: p99 latency
    rec("hnsw", "hnswlib", M16, {"ef": 40}, 0.95, 2000, 2.0, 2 * MB, mode="single", p99=1.5),
    rec("hnsw", "hnswlib", M16, {"ef": 80}, 0.99, 800, 2.0, 2 * MB, mode="single", p99=3.0),
    rec("hnsw", "hnswlib", M32, {"ef": 40}, 0.97, 2100, 4.0, 3 * MB, mode="single", p99=1.2),
    rec("ivf", "faiss", {"nlist": 16}, {"nprobe": 4}, 0.96, 2500, 0.5, 1 * MB, mode="single", p99=0.9),
    # a failed row is never plotted nor chosen
    Record(dataset_hash="feedbeef00112233", dataset_name="toy", backend="annoy", impl="annoy",
           build_params={"n_trees": 10}, search_params={}, k=10, mode="batch", threads=1, status="failed",
           error="build: <boom> & \"quotes\""),
]


@pytest.fixture
def store(tmp_path):
    path = tmp_path / "r.sqlite"
    with ResultStore(path) as s:
        for r in RECORDS:
            s.save(r)
    return path


def fronts(y_metric, mode="batch"):
    rs = [r for r in RECORDS if r.mode == mode and r.status == "ok"]
    return {g: [(r.build_params.get("M"), r.search_params) for r in front]
            for g, front in pareto_by_group(rs, "recall", y_metric).items()}


def test_pareto_indices_both_directions():
    x, y = [0.5, 0.6, 0.7, 0.9, 0.9], [1, 3, 2, 5, 4]
    assert pareto_indices(x, y, higher_is_better=True).tolist() == [3]
    assert pareto_indices(x, y, higher_is_better=False).tolist() == [0, 2, 4]


def test_pareto_fronts_hand_worked():
    # QPS, higher is better: M16 ef40 (0.95, 2500) loses to M32 ef40 (0.97, 2600); M16 ef30 to M16 ef40.
    assert fronts("qps")["hnsw [hnswlib]"] == [(16, {"ef": 10}), (32, {"ef": 10}), (16, {"ef": 20}),
                                               (32, {"ef": 40}), (16, {"ef": 80}), (32, {"ef": 80})]
    assert fronts("qps")["ivf [faiss]"] == [(None, {"nprobe": 1}), (None, {"nprobe": 4})]
    # Build time and index size, lower is better: each build's best recall; M=32 only for recall > 0.99.
    for y in ("build_s", "index_mb"):
        assert fronts(y)["hnsw [hnswlib]"] == [(16, {"ef": 80}), (32, {"ef": 80})]
        assert fronts(y)["ivf [faiss]"] == [(None, {"nprobe": 4})]
    # p99, lower is better, single mode: M16 ef40 (0.95, 1.5 ms) loses to M32 ef40 (0.97, 1.2 ms).
    assert fronts("p99_ms", "single")["hnsw [hnswlib]"] == [(32, {"ef": 40}), (16, {"ef": 80})]


def _pick(answer):
    return {b.group: None if b.best is None else (b.best.build_params.get("M"), b.best.search_params)
            for b in answer.per_backend}


def test_best_hand_worked():
    a = best_configurations(RECORDS, 0.95)
    assert _pick(a) == {"flat [faiss]": (None, {}), "hnsw [hnswlib]": (32, {"ef": 40}),
                        "ivf [faiss]": (None, {"nprobe": 4})}
    assert a.winner.group == "ivf [faiss]" and a.mode == "batch" and a.k == 10
    a = best_configurations(RECORDS, 0.97)
    assert _pick(a)["ivf [faiss]"] is None and a.winner.group == "hnsw [hnswlib]"
    assert "best recall 0.9600 < 0.97" in next(b.reason for b in a.per_backend if b.group == "ivf [faiss]")
    # 2.5 MiB: hnsw M=32 (3 MB) no longer fits; M=16 ef=80 does.
    a = best_configurations(RECORDS, 0.97, max_memory=int(2.5 * 1024**2))
    assert _pick(a) == {"flat [faiss]": None, "hnsw [hnswlib]": (16, {"ef": 80}), "ivf [faiss]": None}
    assert a.winner.best.qps == 1000
    # p99: single-mode rows, lowest latency wins.
    a = best_configurations(RECORDS, 0.95, metric="p99")
    assert a.mode == "single" and _pick(a)["hnsw [hnswlib]"] == (32, {"ef": 40}) and a.winner.best.p99_ms == 0.9
    assert best_configurations(RECORDS, 0.999).winner.group == "flat [faiss]"
    assert best_configurations(RECORDS, 0.95, max_memory=100).winner is None
    with pytest.raises(InputError, match="unknown --metric"):
        best_configurations(RECORDS, 0.95, metric="latency")
    with pytest.raises(InputError, match="between 0 and 1"):
        best_configurations(RECORDS, 95)
    with pytest.raises(InputError, match="no successful results"):
        best_configurations([], 0.95)
    with pytest.raises(InputError, match="single mode"):
        best_configurations(RECORDS, 0.95, metric="p99", mode="batch")


@pytest.mark.parametrize("y_metric, x_metric", [("qps", "recall"), ("build_s", "recall"), ("index_mb", "recall"),
                                                ("p99_ms", "recall"), ("qps", "precision_at_10")])
def test_every_plot_variant_writes_png_and_svg(tmp_path, y_metric, x_metric):
    for fmt in ("png", "svg"):
        out = plot_recall_qps(RECORDS, tmp_path / f"p.{fmt}", y_metric=y_metric, x_metric=x_metric)
        assert out.stat().st_size > 5000
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert b"<svg" in (tmp_path / "p.svg").read_bytes()[:1000]


def test_p99_needs_single_mode(tmp_path):
    batch_only = [r for r in RECORDS if r.mode == "batch"]
    with pytest.raises(InputError, match="no single-mode results"):
        plot_recall_qps(batch_only, tmp_path / "p.png", y_metric="p99_ms")
    with pytest.raises(InputError, match="drop --mode batch"):
        plot_recall_qps(RECORDS, tmp_path / "p.png", y_metric="p99_ms", mode="batch")
    assert not (tmp_path / "p.png").exists()


def test_styles_are_stable_and_distinct():
    known = [style(*label.rstrip("]").split("[")) for label in KNOWN_LABELS]
    assert len({color for color, _ in known}) == len(known)  # every shipped backend a colour of its own
    assert style("hnsw", "hnswlib") == known[0] and style("myplugin", "x") == style("myplugin", "x")
    assert style("myplugin", "x")[0] not in {color for color, _ in known}
    from ann_bench.backends import all_backends

    shipped = {f"{cls.name}[{cls.impl}]" for cls in all_backends()
               if cls.__module__.startswith("ann_bench.backends.")}
    assert shipped <= set(KNOWN_LABELS), f"no fixed plot style: {sorted(shipped - set(KNOWN_LABELS))}"


def test_filter_and_sort():
    assert {r.backend for r in filter_records(RECORDS, ["backend=hnsw"])} == {"hnsw"}
    assert len(filter_records(RECORDS, ["backend=hnsw", "M=32", "mode=batch"])) == 3
    assert [r.search_params for r in filter_records(RECORDS, ["nprobe>=2", "mode=batch"])] == [{"nprobe": 4}]
    assert len(filter_records(RECORDS, ["status!=ok"])) == 1
    assert len(filter_records(RECORDS, ["dataset=toy", "k=10"])) == len(RECORDS)
    assert filter_records(RECORDS, ["dataset=feedbeef"]) == RECORDS
    qps = [r.qps for r in sort_records(RECORDS, "-qps")]
    assert qps[:2] == [9000, 5000] and qps[-1] is None  # the failed row goes last either way
    assert sort_records(RECORDS, "qps")[0].qps == 500 and sort_records(RECORDS, "qps")[-1].qps is None
    assert [r.backend for r in sort_records(RECORDS, "backend")][:1] == ["annoy"]
    for bad, msg in ((["foo=1"], "unknown --where name 'foo'"), (["backend"], "malformed --where"),
                     (["backend>x"], "needs numbers")):
        with pytest.raises(InputError, match=msg):
            filter_records(RECORDS, bad)
    with pytest.raises(InputError, match="unknown --sort column 'speed'"):
        sort_records(RECORDS, "-speed")


SCRIPT = re.compile(r"<script( [^>]*)?>(.*?)</script>", re.S)


def _scripts(text):
    """(attributes, body) of every <script> element of a page."""
    return [(m.group(1) or "", m.group(2)) for m in SCRIPT.finditer(text)]


def _figures(text):
    """The plotly figures of an interactive report, parsed from their JSON blocks."""
    return [json.loads(body) for attrs, body in _scripts(text) if 'class="plot-data"' in attrs]


def _csp(text):
    return html.unescape(re.search(r'http-equiv="Content-Security-Policy" content="([^"]*)"', text).group(1))


def _sha256(script):
    return "'sha256-" + base64.b64encode(hashlib.sha256(script.encode()).digest()).decode() + "'"


def _no_network(text, static):
    """Nothing in the page may be fetched: no external reference outside plotly's own library, and a CSP that
    forbids every request and runs only the page's own scripts (each named by its hash)."""
    scripts = _scripts(text)
    code = [body for attrs, body in scripts if not attrs]
    library = [body for body in code if body.lstrip().startswith("/**\n* plotly.js")]
    assert len(library) == (0 if static else 1)  # plotly.js inlined once per page, not once per figure
    page = text
    for body in library:
        page = page.replace(body, "")
    assert "http://" not in page and "https://" not in page and "<link" not in page
    assert not re.search(r"\ssrc=[\"'](?!data:image/png)", page)  # only inlined PNGs (--static)
    csp = dict(d.strip().split(" ", 1) for d in _csp(text).split(";"))
    assert csp["default-src"] == csp["connect-src"] == csp["font-src"] == "'none'"
    assert csp["img-src"] == ("data:" if static else "data: blob:")
    assert csp["script-src"] == " ".join(_sha256(body) for body in code)  # no 'unsafe-inline', no 'unsafe-eval'


def test_report_is_self_contained(tmp_path):
    out = build_report(RECORDS, tmp_path / "r.html", source="r.sqlite")
    text = out.read_text()
    _no_network(text, static=False)
    assert text.count('<div class="plot"') == 6  # batch: qps, build, size, P@10; single: qps, p99
    assert len(_figures(text)) == 6 and "<img" not in text
    assert "Content-Security-Policy" in text and 'class="sortable results"' in text and 'class="filter"' in text
    assert "build: &lt;boom&gt; &amp; &quot;quotes&quot;" in text and "<boom>" not in text  # escaped
    assert "Pareto-optimal configurations per backend" in text and "feedbeef00112233" in text
    assert "numpy" in text and "cores" in text
    assert out.stat().st_size < 8e6  # plotly.js (about 4.8 MB) once
    with pytest.raises(InputError, match="no stored results"):
        build_report([], tmp_path / "empty.html")


def test_static_report_keeps_the_pngs(tmp_path):
    text = build_report(RECORDS, tmp_path / "r.html", static=True).read_text()
    _no_network(text, static=True)
    assert text.count('<img class="plot"') == 6 and 'src="data:image/png' in text
    assert "Plotly" not in text and 'class="plot-data"' not in text
    assert 'class="sortable results"' in text and 'class="filter"' in text
    assert len(text) < 1.5e6


def test_interactive_figures_hand_worked(tmp_path):
    text = build_report(RECORDS, tmp_path / "r.html").read_text()
    figs = _figures(text)
    qps = figs[0]
    import plotly.graph_objects as go

    for fig in figs:
        go.Figure(fig)  # plotly accepts every attribute (it raises on a misspelt one)
    by_name = {t["name"]: t for t in qps["data"] if t["mode"] == "lines+markers"}
    assert list(by_name) == ["flat [faiss] (1)", "hnsw [hnswlib] (6)", "ivf [faiss] (2)"]
    assert all(t["legendgroup"] for t in qps["data"])  # front and faint points hide together
    faint = [t for t in qps["data"] if t["mode"] == "markers"]
    assert [t["legendgroup"] for t in faint] == ["flat [faiss]", "hnsw [hnswlib]", "ivf [faiss]"]
    assert [len(t["x"]) for t in faint] == [1, 8, 2] and not any(t["showlegend"] for t in faint)
    # logit x: recall 0.9 at logit(0.9); recall 1 (flat) at 1 - 1/(2 nq k) = 0.9995, the tick labelled "1"
    hnsw = by_name["hnsw [hnswlib] (6)"]
    assert hnsw["x"][2] == pytest.approx(math.log(0.9 / 0.1), abs=1e-6) and hnsw["y"][2] == 4000
    assert by_name["flat [faiss] (1)"]["x"] == [pytest.approx(math.log(0.9995 / 0.0005), abs=1e-6)]
    axis = qps["layout"]["xaxis"]
    assert axis["ticktext"] == ["0.9", "0.99", "1"] and axis["tickvals"][-1] == by_name["flat [faiss] (1)"]["x"][0]
    assert qps["layout"]["yaxis"]["type"] == "log"
    assert qps["layout"]["yaxis"]["ticktext"] == ["500", "1k", "2k", "5k", "10k"]
    # the hover label: full parameters, the real recall, every figure
    label = hnsw["hovertext"][2]
    for part in ("<b>hnsw [hnswlib]</b>", "build: M=16", "search: ef=20", "recall@10 0.9000",
                 "ann-benchmarks rule 0.9000", "QPS 4,000", "build 2.00 s", "index 2.0 MB",
                 "P@10 0.8500 (exact 0.9000)", "batch mode"):
        assert part in label
    assert hnsw["customdata"][2] == ["M=16", "ef=20", 0.9]
    # build time is a cost: a staircase; the label plot has a linear x with the exact value dashed
    assert figs[1]["data"][-2]["line"]["shape"] == "vh" and hnsw["line"]["shape"] == "linear"
    label_plot = figs[3]
    assert label_plot["layout"]["shapes"][0]["x0"] == 0.9 and "tickvals" not in label_plot["layout"]["xaxis"]
    p99 = figs[5]
    assert "p99 latency" in p99["layout"]["yaxis"]["title"]["text"]
    assert "p99 1.200 ms" in p99["data"][-2]["hovertext"][0]


def test_log_ticks_and_recall_zero():
    from ann_bench.report.html import _log_ticks, plot_dict

    ticks = _log_ticks([500, 9000])
    assert ticks["tickvals"] == [500, 1000, 2000, 5000, 10000] and ticks["ticktext"][-1] == "10k"
    assert _log_ticks([0.01, 4.0])["ticktext"] == ["0.01", "0.02", "0.05", "0.1", "0.2", "0.5", "1", "2", "5"]
    assert _log_ticks([10, 1e7])["ticktext"] == ["10", "100", "1k", "10k", "100k", "1M", "10M"]
    zero = rec("ivf", "faiss", {"nlist": 16}, {"nprobe": 0}, 0.0, 20000, 0.5, MB)
    fig = plot_dict([zero, *RECORDS[8:10]], "batch", 10)
    xs = fig["data"][0]["x"]  # recall 0 at 0.001, the left edge, as plots.py draws it; its label says 0
    assert xs[0] == pytest.approx(math.log(1e-3 / (1 - 1e-3)), abs=1e-6) == fig["layout"]["xaxis"]["range"][0]
    assert "recall@10 0.0000" in fig["data"][0]["hovertext"][0]


def test_tables_short_forms_and_no_empty_columns(tmp_path):
    text = build_report(RECORDS, tmp_path / "r.html").read_text()
    results = text[text.index('<table class="sortable results"'):]
    heads = re.findall(r"<th[^>]*>([^<]*)</th>", results[:results.index("</thead>")])
    assert heads == ["backend", "build", "search", "k", "mode", "threads", "status", "recall", "recall (a-b)",
                     "id recall", "QPS", "p50 ms", "p99 ms", "build s", "index MB", "P@10", "error"]  # no RSS: empty
    assert '<td class="p" title="M=32">M32</td>' in results and '<td class="p" title="ef=40">ef40</td>' in results
    assert "<b>ivf[faiss]</b> nlist16" in results  # the fixed build parameter, said once
    batch = text[text.index("<h3>batch mode"):text.index("<h3>single mode")]
    pareto = batch[batch.index("<h4>Pareto-optimal"):]
    heads = re.findall(r"<th[^>]*>([^<]*)</th>", pareto[:pareto.index("</thead>")])
    assert heads == ["backend", "build", "search", "recall@10", "QPS", "build s", "index MB"]  # no p99 in batch
    single = text[text.index("<h3>single mode"):]
    assert "<th>p99 ms</th>" in single[single.index("<h4>Pareto-optimal"):]
    # a batch-only report of one backend and build has no latency, build or RSS column at all
    only = build_report([r for r in RECORDS if r.backend == "ivf" and r.mode == "batch"], tmp_path / "o.html")
    results = only.read_text()[only.read_text().index('<table class="sortable results"'):]
    heads = re.findall(r"<th[^>]*>([^<]*)</th>", results[:results.index("</thead>")])
    assert heads == ["backend", "search", "k", "mode", "threads", "status", "recall", "recall (a-b)", "id recall",
                     "QPS", "build s", "index MB", "P@10"]


HOSTILE = "</script><script>alert(1)</script>"


def hostile_records():
    """Results whose user text (dataset, backend, implementation, parameter names and values, error) tries to
    end the <script> element or inject markup."""
    bad = dict(dataset_name="<boom>", backend=HOSTILE, impl="<b>x</b>&amp;")
    return [dataclasses.replace(r, **bad, build_params={"</script>": "<!--", **r.build_params},
                                search_params={**r.search_params, "q": '"); alert(2); ("'},
                                error=r.error and HOSTILE) for r in RECORDS]


@pytest.mark.parametrize("static", [False, True])
def test_user_text_cannot_break_out(tmp_path, static):
    text = build_report(hostile_records(), tmp_path / "r.html", static=static).read_text()
    _no_network(text, static)
    assert HOSTILE not in text and "</script>=" not in text
    # every </script> closes one of the page's own scripts: data and code ones only
    assert text.count("</script>") == len(_scripts(text)) == (1 if static else 3 + 6)
    assert "<boom>" not in text and "<b>x</b>" not in text and "<!--" not in text
    assert "&lt;/script&gt;&lt;script&gt;alert(1)&lt;/script&gt;" in text
    for fig in _figures(text):  # the JSON parses back to plotly text, escaped for plotly's markup
        names = {t["legendgroup"] for t in fig["data"]}
        assert names == {f"{HOSTILE} [<b>x</b>&amp;]"}  # legendgroup is a key, never shown
        trace = fig["data"][-1]
        assert trace["name"].startswith(html.escape(f"{HOSTILE} [<b>x</b>&amp;]", quote=False))
        assert "&lt;/script&gt;=&lt;!--" in trace["hovertext"][0] and "<b>x</b>" not in trace["hovertext"][0]
        assert trace["customdata"][0][0].startswith("</script>=<!--")  # data, not markup: compared as text


def _browser_check():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "report_browser_check.py"
    spec = importlib.util.spec_from_file_location("report_browser_check", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_report_in_headless_chromium(tmp_path):
    check = _browser_check()
    if check.find_chromium() is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    page = build_report(RECORDS, tmp_path / "r.html")
    result = check.check_in_browser(page)
    # The check fails on any console message, CSP violation, request, undrawn plot or too wide table.
    assert result.ok, result.problems
    assert result.plots == result.drawn == 6 and result.images == 0 and result.sorted_desc is True
    assert result.resources == [] and result.violations == [] and result.console == []
    assert result.fit == {"tables": [], "page": 1280, "window": 1280}
    # The hover label at the pixel of a point names that point's configuration, checked against RECORDS.
    hover = result.hover
    hovered = [r for r in RECORDS if r.mode == "batch" and r.recall == hover["x"] and r.qps == hover["y"]]
    assert len(hovered) == 1 and hover["ok"]
    for name, value in {**hovered[0].build_params, **hovered[0].search_params}.items():
        assert f"{name}={value}" in hover["text"]
    assert f"recall@10 {hovered[0].recall:.4f}" in hover["text"]
    # A legend click hid one backend: both its traces, and its points are no longer drawn.
    assert result.legend["ok"] and result.legend["traces"] == 2 and result.legend["after"] < result.legend["before"]
    assert result.filter["ok"] and result.filter["shown"] < result.filter["rows"] and result.download is True
    # --static: the PNGs decode
    result = check.check_in_browser(build_report(RECORDS, tmp_path / "s.html", static=True))
    assert result.ok, result.problems
    assert result.images == result.decoded == 6 and result.plots == 0 and result.sorted_desc is True
    # user text that tries to end a script runs nothing: the page loads cleanly and shows it as text
    result = check.check_in_browser(build_report(hostile_records(), tmp_path / "h.html"))
    assert result.ok, result.problems
    assert HOSTILE + " [<b>x</b>&amp;]" in result.hover["text"] and "</script>=<!--" in result.hover["text"]
    # The check itself catches console errors, broken images, requests the CSP blocks, and a hover with no label.
    bad = tmp_path / "bad.html"
    bad.write_text('<html><body><img src="data:image/png;base64,AAAA"><script>nope();</script></body></html>')
    result = check.check_in_browser(bad)
    assert not result.ok and result.decoded == 0 and result.console
    fetch = tmp_path / "fetch.html"
    fetch.write_text('<html><head><meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
                     'script-src \'unsafe-inline\'"></head><body><script>fetch("https://example.invalid/x")'
                     ".catch(function () {});</script></body></html>")
    result = check.check_in_browser(fetch)
    assert not result.ok and result.violations and "connect-src" in result.violations[0]
    mute = tmp_path / "mute.html"
    mute.write_text(page.read_text().replace('"hoverinfo":"text"', '"hoverinfo":"skip"'))
    result = check.check_in_browser(mute)
    assert not result.ok and not result.hover["ok"] and result.legend["ok"]


# ---- CLI ------------------------------------------------------------------------------------------------------
def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def test_cli_plot_variants(store, tmp_path):
    for y in ("qps", "build_s", "index_mb", "p99_ms"):
        r = invoke("plot", "--results", store, "-y", y, "-o", tmp_path / f"{y}.png", "--no-raw")
        assert r.exit_code == 0, r.output
        assert (tmp_path / f"{y}.png").stat().st_size > 5000
    r = invoke("plot", "--results", store, "-x", "precision_at_10", "-o", tmp_path / "p10.svg")
    assert r.exit_code == 0 and (tmp_path / "p10.svg").stat().st_size > 5000
    r = invoke("plot", "--results", store, "-y", "p99_ms", "--mode", "batch", "-o", tmp_path / "x.png")
    assert r.exit_code == 2 and "single mode" in r.output and not (tmp_path / "x.png").exists()


def test_cli_best(store):
    r = invoke("best", "--results", store, "--recall", 0.95)
    assert r.exit_code == 0, r.output
    assert "winner: ivf [faiss] nlist=16 nprobe=4: 3,000 QPS at recall 0.9600" in r.output
    r = invoke("best", "--results", store, "--recall", 0.97, "--max-memory", "2.5MB", "--json")
    data = json.loads(r.output)
    assert data["winner"]["group"] == "hnsw [hnswlib]" and data["winner"]["search_params"] == "ef=80"
    assert data["max_memory_bytes"] == 2_500_000  # MB = 10^6 bytes, as the tables print
    r = invoke("best", "--results", store, "--recall", 0.95, "--metric", "p99")
    assert r.exit_code == 0 and "p99 0.900 ms" in r.output and "single mode" in r.output
    r = invoke("best", "--results", store, "--recall", 0.95, "--max-memory", "100")
    assert r.exit_code == 1 and "no configuration meets" in r.output and "error" not in r.output
    r = invoke("best", "--results", store, "--recall", 0.95, "--max-memory", "2XB")
    assert r.exit_code == 2 and "malformed size" in r.output
    r = invoke("best", "--results", store, "--recall", 0.95, "--metric", "speed")
    assert r.exit_code == 2


def test_cli_report(store, tmp_path):
    r = invoke("report", "--results", store, "-o", tmp_path / "r.html")
    assert r.exit_code == 0 and "wrote" in r.output
    text = (tmp_path / "r.html").read_text()
    assert text.count('<div class="plot"') == 6 and "<img" not in text
    r = invoke("report", "--results", store, "-o", tmp_path / "s.html", "--static")
    assert r.exit_code == 0 and "wrote" in r.output
    assert (tmp_path / "s.html").read_text().count('<img class="plot"') == 6
    assert (tmp_path / "s.html").stat().st_size < (tmp_path / "r.html").stat().st_size / 3
    r = invoke("report", "--results", store, "--dataset", "nope", "-o", tmp_path / "n.html")
    assert r.exit_code == 2 and not (tmp_path / "n.html").exists()


def test_empty_store_is_one_line_exit_2(tmp_path):
    empty = tmp_path / "empty.sqlite"
    ResultStore(empty).close()
    commands = (["best", "--recall", "0.9"], ["report", "-o", tmp_path / "r.html"], ["plot", "-o", tmp_path / "p.png"])
    for args in commands:
        r = invoke(*args, "--results", empty)
        assert r.exit_code == 2 and "run `ann-bench run` first" in r.output


def test_cli_results_sort_where_and_pandas(store, tmp_path):
    r = invoke("results", "--results", store, "--where", "backend=hnsw", "--where", "mode=batch", "--sort", "-qps",
               "--format", "json")
    rows = json.loads(r.output)
    assert [row["qps"] for row in rows] == [5000, 4500, 4000, 2600, 2500, 2000, 1000, 900]
    r = invoke("results", "--results", store, "--where", "backend=hnsw", "--sort", "recall")
    assert r.exit_code == 0 and "8 result(s)" not in r.output and "11 result(s)" in r.output
    r = invoke("results", "--results", store, "--where", "color=red")
    assert r.exit_code == 2 and "unknown --where name 'color'" in r.output
    r = invoke("results", "--results", store, "--sort", "speed")
    assert r.exit_code == 2 and "unknown --sort column" in r.output
    pd = pytest.importorskip("pandas")
    for fmt in ("csv", "json"):
        out = tmp_path / f"r.{fmt}"
        r = invoke("results", "--results", store, "--format", fmt, "-o", out, "--sort", "-recall")
        assert r.exit_code == 0
        df = pd.read_csv(out) if fmt == "csv" else pd.read_json(out)
        assert len(df) == len(RECORDS) and df["recall"].iloc[0] == 1.0
        assert {"backend", "qps", "p99_ms", "build_s", "index_bytes", "key"} <= set(df.columns)
        assert df["qps"].dtype.kind == "f" and df["dataset_hash"].iloc[0] == "feedbeef00112233"


def test_best_max_rss_bounds_the_measured_build_peak():
    import dataclasses

    from ann_bench.report.best import best_configurations

    rows = [dataclasses.replace(r, peak_rss_bytes=(400 if r.backend == "ivf" else 100) * MB)
            for r in RECORDS if r.status == "ok"]
    free = best_configurations(rows, 0.95)
    assert free.winner.group.startswith("ivf")
    capped = best_configurations(rows, 0.95, max_rss=200 * MB)
    assert capped.winner.group.startswith("hnsw")
    ivf = next(b for b in capped.per_backend if b.group.startswith("ivf"))
    assert ivf.best is None and "400.0 MB > --max-rss" in ivf.reason
    r = invoke("best", "--results", "nowhere.sqlite", "--recall", 0.9, "--max-rss", "lots")
    assert r.exit_code == 2 and "malformed size" in r.output


def test_cli_best_table_fits_and_wide_shows_everything(store, monkeypatch):
    from ann_bench.cli import console

    monkeypatch.setattr(console.out, "width", 70)
    r = invoke("best", "--results", store, "--recall", 0.95)
    assert r.exit_code == 0, r.output
    table = r.output.split("winner:")[0]
    assert max(len(line) for line in table.splitlines()) <= 70
    assert "M16" in table or "nlist16" in table  # short parameter forms
    words = " ".join(table.split())  # the caption is a line of its own, wrapped at word boundaries
    assert "columns left out to fit 70 columns" in words and "(--wide shows them)" in words
    r = invoke("best", "--results", store, "--recall", 0.95, "--wide")
    assert r.exit_code == 0 and "columns left out" not in r.output and "build s" in r.output
