"""``report``: one self-contained HTML file (nothing is fetched; inline CSS and scripts, a Content-Security-Policy
that forbids every request) with, per dataset, its facts, the Pareto plots, the fastest configuration per recall
target, the Pareto-optimal configurations per backend, a filterable, sortable table of every result, and the
hosts and library versions measured.

The plots are interactive by default: plotly figures (its JavaScript inlined once, about 4.8 MB) where hovering a
point shows its configuration and clicking a legend entry hides a backend. ``static=True`` draws them as PNG
images instead (:func:`ann_bench.report.plots.render_plot`), a light file for printing.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as _dt
import hashlib
import html
import json
import math
import os
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ann_bench import __version__
from ann_bench.atomic import atomic_path
from ann_bench.outputs import SOFTWARE
from ann_bench.bench.metrics import fmt_recall
from ann_bench.bench.results import Record, ShortForms, params_str
from ann_bench.errors import InputError
from ann_bench.report.best import best_configurations
from ann_bench.report.plots import (tick_label, RECALLS, groups_of, pareto_by_group, render_plot, style, x_label, x_value,
                                    y_metric_of)


def _csp(scripts: list[str], static: bool) -> str:
    """The page's Content-Security-Policy: nothing may be fetched (default-src, connect-src, font-src 'none'),
    and only the page's own inline scripts run: each is named by its SHA-256, so a script that escaping missed
    would not run either. Measured in headless chromium 156 with plotly.js 4.1: plotly needs no 'unsafe-eval'
    (its one ``new Function`` is a fallback behind ``globalThis``; its ``eval`` is in map code we never load) and
    no network; it needs style-src 'unsafe-inline' (it adds a <style> element and style attributes) and, for its
    "download plot as PNG" button, img-src blob: (it draws the SVG through an object URL; data: for static)."""
    hashes = " ".join(f"'sha256-{base64.b64encode(hashlib.sha256(s.encode()).digest()).decode()}'" for s in scripts)
    return ("default-src 'none'; connect-src 'none'; font-src 'none'; base-uri 'none'; form-action 'none'; "
            f"img-src data:{'' if static else ' blob:'}; style-src 'unsafe-inline'; script-src {hashes}")


_CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 1.5em auto; max-width: 1300px;
       padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 2em; }
h3 { margin-top: 1.5em; }
table { border-collapse: collapse; margin: .5em 0 1.5em; font-size: 12.5px; }
th, td { border: 1px solid #ddd; padding: 3px 6px; text-align: left; vertical-align: top; }
th { background: #f3f3f3; font-weight: 600; }
td.n { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.p { min-width: 6em; } span.n { white-space: nowrap; }
td.err { min-width: 12em; max-width: 28em; overflow-wrap: anywhere; }
table.sortable th { cursor: pointer; user-select: none; }
table.sortable th::after { content: "\\00a0\\2195"; color: #aaa; }
table.sortable th[aria-sort=ascending]::after { content: "\\00a0\\2191"; color: #222; }
table.sortable th[aria-sort=descending]::after { content: "\\00a0\\2193"; color: #222; }
tr.failed td { color: #a00; }
div.wide { overflow-x: auto; }
figure { margin: 1em 0; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
div.plot { width: 100%; height: 500px; border: 1px solid #eee; }
figcaption { color: #555; font-size: 12.5px; }
.note { color: #555; font-size: 12.5px; } code { background: #f5f5f5; padding: 0 3px; }
.note.warning { color: #8a5300; }
p.filter input { font: inherit; width: 26em; max-width: 100%; padding: 2px 6px; }
dl.facts { display: grid; grid-template-columns: max-content auto; gap: 2px 14px; }
dl.facts dt { font-weight: 600; } dl.facts dd { margin: 0; }
"""

# Tables: click a header to sort by it (numbers numerically, empty cells last; again to reverse); type in a
# table's filter box to show only the rows holding every word typed (in the text or the full parameter names).
_TABLE_JS = """
document.querySelectorAll("table.sortable").forEach(function (table) {
  var heads = table.tHead.rows[0].cells;
  Array.prototype.forEach.call(heads, function (th, col) {
    th.addEventListener("click", function () {
      var dir = th.getAttribute("aria-sort") === "ascending" ? -1 : 1;
      Array.prototype.forEach.call(heads, function (h) { h.removeAttribute("aria-sort"); });
      th.setAttribute("aria-sort", dir === 1 ? "ascending" : "descending");
      var body = table.tBodies[0];
      var rows = Array.prototype.slice.call(body.rows);
      function key(row) {
        var cell = row.cells[col];
        return cell.hasAttribute("data-v") ? cell.getAttribute("data-v") : cell.textContent.trim();
      }
      rows.sort(function (a, b) {
        var x = key(a), y = key(b);
        if (x === "" || y === "") { return (x === "") - (y === ""); }
        var nx = Number(x), ny = Number(y);
        if (!isNaN(nx) && !isNaN(ny)) { return dir * (nx - ny); }
        return dir * x.localeCompare(y);
      });
      rows.forEach(function (row) { body.appendChild(row); });
    });
  });
});
document.querySelectorAll("input.filter").forEach(function (input) {
  var table = document.getElementById(input.getAttribute("data-table"));
  var count = document.getElementById(input.getAttribute("data-count"));
  var rows = Array.prototype.slice.call(table.tBodies[0].rows);
  rows.forEach(function (row) {
    var titles = Array.prototype.map.call(row.querySelectorAll("[title]"), function (c) { return c.title; });
    row.setAttribute("data-text", (row.textContent + " " + titles.join(" ")).toLowerCase());
  });
  input.addEventListener("input", function () {
    var words = input.value.toLowerCase().split(/\\s+/).filter(Boolean), shown = 0;
    rows.forEach(function (row) {
      var text = row.getAttribute("data-text");
      row.hidden = !words.every(function (w) { return text.indexOf(w) >= 0; });
      shown += row.hidden ? 0 : 1;
    });
    count.textContent = words.length ? shown + " of " + rows.length + " rows" : "";
  });
});
"""

# Draws each figure from its JSON block (data, never code: see _script_json) into the div it names.
_PLOT_JS = """
document.querySelectorAll("script.plot-data").forEach(function (block) {
  var fig = JSON.parse(block.textContent);
  Plotly.newPlot(document.getElementById(block.getAttribute("data-for")), fig.data, fig.layout, {
    displaylogo: false, responsive: true, modeBarButtonsToRemove: ["select2d", "lasso2d"],
    toImageButtonOptions: {format: "png", scale: 2, filename: block.getAttribute("data-for")}});
});
"""

# (x metric, y metric, caption) of each plot; a label metric plot is added when the set has labels.
PLOTS = (
    ("recall", "qps", "Recall against queries per second (higher is better)."),
    ("recall", "build_s", "Recall against build time (lower is better)."),
    ("recall", "index_mb", "Recall against serialized index size (lower is better)."),
    ("recall", "p99_ms", "Recall against p99 latency per query (single mode; lower is better)."),
)


def _e(value) -> str:
    return html.escape(str(value), quote=True)


def _pe(value) -> str:
    """User text inside a plotly string (legend, hover label, title), which plotly reads as a little HTML
    (<br>, <b>, <a href>): ``<``, ``>`` and ``&`` as the entities plotly decodes (it knows no &quot;)."""
    return html.escape(str(value), quote=False)


def _script_json(obj) -> str:
    """JSON to place inside a <script> element: no ``<``, ``>`` or ``&`` (so no ``</script>`` nor ``<!--``), no
    U+2028/2029, no NaN; the same data once parsed."""
    text = json.dumps(obj, ensure_ascii=False, allow_nan=False, separators=(",", ":"), default=_json_default)
    for ch, esc in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"),
                    ("\u2029", "\\u2029")):
        text = text.replace(ch, esc)
    return text


def _json_default(value):
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    return str(value)


def _recall(value) -> str:
    """A recall cell: only an exact 1 reads 1.0000 (see :func:`ann_bench.bench.metrics.fmt_recall`)."""
    if value is None:
        return _num(None, "")
    return f'<td class="n" data-v="{_e(repr(float(value)))}">{_e(fmt_recall(value))}</td>'


def _num(value, fmt: str) -> str:
    """A numeric cell: formatted text, and the raw value in data-v for sorting."""
    if value is None:
        return '<td class="n" data-v=""></td>'
    return f'<td class="n" data-v="{_e(repr(float(value)))}">{_e(format(value, fmt))}</td>'


def _txt(value) -> str:
    return f"<td>{_e(value)}</td>"


def _params_cell(short: str, full: dict) -> str:
    """Short parameter forms (``M16 efC200``), the full names in the cell's tooltip; may wrap."""
    return f'<td class="p" title="{_e(params_str(full))}">{_e(short)}</td>'


def mb(n: int | None) -> float | None:
    return None if n is None else n / 1e6


def build_report(records: list[Record], out: str | os.PathLike, *, source: str = "", static: bool = False,
                 apart: list[Record] | None = None) -> Path:
    """Write the HTML report of ``records`` (one section per dataset) to ``out`` atomically. ``source`` names
    the results store in the header; ``static`` draws PNG plots instead of interactive ones (no plotly.js: a
    file of some hundred kB instead of about 5 MB). ``apart``: rows of filtered searches and of stream runbooks,
    each dataset's in sections of their own (one panel per filter and the winner per filter; each runbook's
    steps), never mixed into the static figures. InputError if there are no records."""
    apart = [r for r in apart or () if r.filter_spec or r.stream_runbook]
    if not records and not apart:
        raise InputError("no stored results to report; run `ann-bench run` first (or check --dataset/--results)")
    plotly_js = None if static else _plotly_js()
    by_dataset: dict[str, list[Record]] = defaultdict(list)
    apart_by: dict[str, list[Record]] = defaultdict(list)
    for r in records:
        by_dataset[r.dataset_hash].append(r)
    for r in apart:
        by_dataset.setdefault(r.dataset_hash, [])
        apart_by[r.dataset_hash].append(r)
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    body = ["<h1>ann-bench report</h1>",
            f'<p class="note">{len(records) + len(apart)} stored result(s) for {len(by_dataset)} dataset(s)'
            + (f" from <code>{_e(source)}</code>" if source else "")
            + f"; generated {_e(now)} by ann-bench {_e(__version__)}."
            + (" Plots: hover a point for its configuration; click a legend entry to hide a backend, "
               "double-click to show it alone; drag to zoom, double-click to zoom out." if not static else "")
            + "</p>"]
    if len(by_dataset) > 1:
        body.append("<ul>" + "".join(f'<li><a href="#ds-{_e(h[:12])}">{_e((rs or apart_by[h])[0].dataset_name)}'
                                     "</a></li>" for h, rs in by_dataset.items()) + "</ul>")
    for dataset_hash, rs in by_dataset.items():
        body += _dataset_section(dataset_hash, rs, static, apart_by[dataset_hash])
    body += _environment_section(records + apart)
    scripts = [_TABLE_JS] if static else [_TABLE_JS, plotly_js, _PLOT_JS]
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{_e(_csp(scripts, static))}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f'<meta name="generator" content="{_e(SOFTWARE)}">',  # the marker `report` recognises (outputs.py)
        f"<title>ann-bench report: {_e(', '.join((rs or apart_by[h])[0].dataset_name for h, rs in by_dataset.items()))}"
        "</title>",
        f"<style>{_CSS}</style></head><body>", *body,
        *(f"<script>{s}</script>" for s in scripts), "</body></html>",
    ]
    out = Path(out)
    with atomic_path(out, ".html") as tmp:
        tmp.write_text("\n".join(parts), encoding="utf-8")
    return out


def _plotly_js() -> str:
    try:
        from plotly.offline import get_plotlyjs
    except ImportError as exc:  # a core dependency: only a broken install lacks it
        raise InputError("the interactive report needs plotly (pip install 'plotly>=5.20'); or pass --static "
                         "for PNG plots") from exc
    js = get_plotlyjs()
    if "</script" in js.lower():  # it would end the <script> element early; never seen, but checked
        raise InputError("plotly's JavaScript contains '</script'; pass --static")
    return js


def _dataset_section(dataset_hash: str, rs: list[Record], static: bool, apart: list[Record]) -> list[str]:
    first = (rs or apart)[0]
    ok = [r for r in rs if r.status == "ok" and r.recall is not None and r.qps]
    statuses = Counter(r.status for r in rs + apart)
    label_keys = sorted({m for r in ok for m in r.label_metrics if not m.startswith("exact_")})
    facts = [("name", first.dataset_name), ("content hash", dataset_hash), ("file", first.dataset_path or "-"),
             ("train vectors", f"{first.n_train:,}"), ("queries", f"{first.n_test:,}"), ("dimension", first.dim),
             ("metric", first.metric), ("labels", "yes: " + ", ".join(label_keys) if label_keys else "no"),
             ("results", ", ".join(f"{n} {s}" for s, n in sorted(statuses.items()))),
             ("backends", ", ".join(sorted({r.label() for r in rs + apart}))),
             ("modes, k, threads", "; ".join(sorted({f"{r.mode}, k={r.k}, {r.threads} thread(s)"
                                                     for r in rs + apart})))]
    anchor = dataset_hash[:12]
    parts = [f'<h2 id="ds-{_e(anchor)}">Dataset {_e(first.dataset_name)}</h2>', '<dl class="facts">']
    parts += [f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in facts]
    parts.append("</dl>")
    contended = [r for r in ok if r.contended]
    if contended:
        parts.append(f'<p class="note warning">Contended: {len(contended)} of {len(ok)} row(s) were timed while '
                     f"another process had the CPU (CPU share {min(r.cpu_share for r in contended):.2f}–"
                     f"{max(r.cpu_share for r in contended):.2f} of their query threads' time): their QPS and "
                     "latencies are the machine's, not the library's; the best-configuration tables choose "
                     "uncontended rows where one qualifies. Re-measure them with "
                     "<code>ann-bench run … --remeasure-contended</code>.</p>")
    for mode, k in sorted({(r.mode, r.k) for r in ok}):
        sub = [r for r in ok if r.mode == mode and r.k == k]
        parts.append(f"<h3>{_e(mode)} mode, k={k}</h3>")
        parts += (_static_plots if static else _interactive_plots)(sub, mode, k, f"{anchor}-{mode}-{k}")
        forms = _ShortForms(sub)
        parts += _best_table(sub, mode, k, forms)
        parts += _pareto_table(sub, k, forms)
    if not ok and rs:
        parts.append('<p class="note">No successful result to plot.</p>')
    if rs:
        parts.append(f"<h3>Every result ({len(rs)})</h3>")
        parts += _results_table(rs, f"results-{anchor}")
    parts += _filtered_section([r for r in apart if r.filter_spec and not r.stream_runbook])
    parts += _stream_sections([r for r in apart if r.stream_runbook])
    return parts


def _png_figure(png: bytes, alt: str, caption: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return (f'<figure><img class="plot" alt="{_e(alt)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{_e(caption)}</figcaption></figure>")


def _filtered_section(rows: list[Record]) -> list[str]:
    """Filtered searches: per mode and k, one panel per filter (a PNG in either report) and the fastest
    backend x strategy per filter and recall target — where it changes is the crossover."""
    from ann_bench.report.panels import render_figure, winners_per_filter

    if not rows:
        return []
    rows = [dataclasses.replace(r, impl=f"{r.impl}, {r.filter_strategy}") for r in rows]
    parts = [f"<h3>Filtered search ({len(rows)} row(s): {_e(', '.join(sorted({r.filter_spec for r in rows})))})"
             "</h3>"]
    ok = [r for r in rows if r.status == "ok" and r.recall is not None and r.qps]
    for mode, k in sorted({(r.mode, r.k) for r in ok}):
        sub = [r for r in ok if r.mode == mode and r.k == k]
        try:
            png = render_figure("filter", sub, mode=mode, k=k)
        except InputError as exc:
            parts.append(f'<p class="note">No filtered plot: {_e(exc)}</p>')
            continue
        parts.append(_png_figure(png, f"filtered search, {mode} mode, k={k}",
                                 f"{mode} mode, k={k}: one panel per filter, one QPS scale; each backend x strategy's "
                                 "Pareto front bold, every configuration faint."))
        targets = (0.9, 0.95, 0.99)
        head = "".join(f"<th>fastest at recall@{k} ≥ {t:g}</th>" for t in targets)
        body = []
        for name, sel, best in winners_per_filter(sub, targets):
            cells = "".join(f"<td>{_e(f'{b.backend} [{b.impl}]')}<br>{b.qps:,.0f} QPS, "
                            f"{_e(params_str(b.search_params))}</td>" if b else "<td>none reached it</td>"
                            for b in best)
            body.append(f"<tr><td>{_e(name)}</td><td class=\"num\">{sel:.3g}</td>{cells}</tr>")
        parts.append(f"<table><thead><tr><th>filter</th><th>mean selectivity</th>{head}</tr></thead>"
                     f"<tbody>{''.join(body)}</tbody></table>")
    parts += _results_table(rows, f"filtered-{rows[0].dataset_hash[:12]}")
    return parts


def _stream_sections(rows: list[Record]) -> list[str]:
    """Each runbook: its steps drawn (recall, QPS, size, live items; the rebuild starred) and one line per
    backend: first and last search, median insert items/s, index size at the end, the rebuild."""
    from ann_bench.report.panels import render_figure, stream_summary

    parts = []
    for runbook in sorted({r.stream_runbook for r in rows}):
        mine = [r for r in rows if r.stream_runbook == runbook]
        parts.append(f"<h3>Runbook {_e(runbook)} ({len(mine)} row(s))</h3>")
        modes = sorted({r.mode for r in mine if r.stream_op in ("search", "rebuild")})
        mode = "single" if "single" in modes or not modes else modes[0]
        try:
            png = render_figure("stream", mine, mode=mode)
            parts.append(_png_figure(png, f"runbook {runbook}", "Recall and QPS at every search step, the index's "
                                     "size and the live items at every step; a star: the backend rebuilt from "
                                     "scratch on the final live set."))
        except InputError as exc:
            parts.append(f'<p class="note">No stream plot: {_e(exc)}</p>')

        def fig(r):
            return f"{fmt_recall(r.recall)}, {r.qps:,.0f} QPS" if r is not None else "-"

        body = "".join(
            f"<tr><td>{_e(s['group'])}</td><td>{_e(s['updates'] or '-')}</td><td>{fig(s['first'])}</td>"
            f"<td>{fig(s['last'])}</td><td class=\"num\">"
            + (f"{s['insert_items_per_s']:,.0f}" if s["insert_items_per_s"] else "-")
            + "</td><td class=\"num\">" + (f"{s['index_bytes'] / 1e6:,.1f}" if s["index_bytes"] else "-")
            + f"</td><td>{fig(s['rebuild'])}</td><td>"
            + (_e(f"{s['failed'].status} at step {s['failed'].stream_step}: {s['failed'].error}") if s["failed"]
               else "") + "</td></tr>" for s in stream_summary(mine, mode))
        parts.append("<table><thead><tr><th>backend</th><th>updates</th><th>first search</th><th>last search</th>"
                     "<th>median insert items/s</th><th>index MB at the end</th><th>rebuilt on the final live set"
                     f"</th><th>failed</th></tr></thead><tbody>{body}</tbody></table>")
    return parts


def _plot_list(records: list[Record], mode: str, k: int) -> list[tuple[str, str, str]]:
    plots = [p for p in PLOTS if (p[1] == "p99_ms") == (mode == "single")]
    if mode == "single":
        plots.insert(0, PLOTS[0])
    label = f"precision_at_{k}"
    if any(label in r.label_metrics for r in records):
        plots.append((label, "qps", f"Label-aware Precision@{k} against QPS; dashed: the exact neighbours' value."))
    return plots


def _static_plots(records: list[Record], mode: str, k: int, anchor: str) -> list[str]:
    parts = []
    for x_metric, y_metric, caption in _plot_list(records, mode, k):
        try:
            png = render_plot(records, "png", mode=mode, k=k, x_metric=x_metric, y_metric=y_metric)
        except InputError as exc:  # e.g. no row has this figure: say so instead of a plot
            parts.append(f'<p class="note">No {_e(y_metric)} plot: {_e(exc)}</p>')
            continue
        data = base64.b64encode(png).decode("ascii")
        alt = f"{x_metric} vs {y_metric}, {mode} mode, k={k}"
        parts.append(f'<figure><img class="plot" alt="{_e(alt)}" src="data:image/png;base64,{data}">'
                     f"<figcaption>{_e(caption)} Bold: each backend's Pareto front; faint: every configuration."
                     "</figcaption></figure>")
    return parts


def _interactive_plots(records: list[Record], mode: str, k: int, anchor: str) -> list[str]:
    parts = []
    for x_metric, y_metric, caption in _plot_list(records, mode, k):
        fig = plot_dict(records, mode, k, x_metric, y_metric)
        if fig is None:
            parts.append(f'<p class="note">No {_e(y_metric)} plot: no stored result of mode {_e(mode)}, k={k} '
                         f"has both {_e(x_metric)} and {_e(y_metric)}.</p>")
            continue
        div = f"plot-{anchor}-{x_metric}-{y_metric}"
        parts.append(f'<figure><div class="plot" id="{_e(div)}"></div>'
                     f'<script type="application/json" class="plot-data" data-for="{_e(div)}">{_script_json(fig)}'
                     f"</script><figcaption>{_e(caption)} Bold: each backend's Pareto front; faint: every "
                     "configuration. Hover a point for its parameters; click a legend entry to hide a backend."
                     "</figcaption></figure>")
    return parts


# matplotlib markers (plots.style) as plotly symbols, so a backend looks alike in both reports
_SYMBOLS = {"o": "circle", "s": "square", "D": "diamond", "^": "triangle-up", "v": "triangle-down", "P": "cross",
            "*": "star", "X": "x", "p": "pentagon", "h": "hexagon", "H": "hexagon2", "<": "triangle-left",
            ">": "triangle-right", "d": "diamond-tall", "8": "octagon"}
_TICKS = (0.01, 0.1, 0.5, 0.9, 0.99, 0.999, 0.9999, 0.99999)
_Y_TITLES = {"qps": "QPS", "build_s": "Build time", "index_mb": "Index size", "p99_ms": "p99 latency"}
_Y_AXES = {"qps": "Queries per second", "build_s": "Build time, s", "index_mb": "Index size, MB",
           "p99_ms": "p99 latency, ms"}  # short enough for a 500-px plot's height


def _log_ticks(values: list[float]) -> dict:
    """Range and ticks of a log axis spanning ``values``: 1, 2, 5 (or 1 to 9 on a short span, only powers of
    ten on a long one) times a power of ten, labelled 0.002, 0.5, 40, 2k, 15k, 1.2M (plotly's own labels mix
    1000 with 10k, and label every digit of a decade)."""
    lo, hi = math.log10(min(values)), math.log10(max(values))
    pad = 0.06 * max(hi - lo, 0.5)
    lo, hi = lo - pad, hi + pad
    decades = range(math.floor(lo), math.ceil(hi) + 1)
    for digits in ((1,), (1, 2, 5), (1, 2, 3, 4, 5, 6, 7, 8, 9)):
        ticks = [d * 10.0 ** e for e in decades for d in digits if lo <= math.log10(d) + e <= hi]
        if len(ticks) >= 4:
            break
    step = max(1, math.ceil(len(ticks) / 10))  # at most about ten labels
    ticks = ticks[::step]
    return {"range": [lo, hi], "tickmode": "array", "tickvals": ticks, "ticktext": [tick_label(v) for v in ticks]}


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


def plot_dict(records: list[Record], mode: str, k: int, x_metric: str = "recall",
              y_metric: str = "qps") -> dict | None:
    """A plotly figure (``{"data": [...], "layout": {...}}``, plain JSON) of ``records`` (one dataset, mode and
    k): per backend its Pareto front bold and every configuration faint, one legend group each; hovering a
    point shows its configuration and figures. The x axis of a recall is logit(recall) on a linear axis with
    ticks labelled in recall (plotly has no logit axis), as :func:`ann_bench.report.plots.plot_figure` draws it:
    a recall of 0 at 0.001, and of 1 at 1 - 1/(2 nq k), half the run's recall resolution, its tick labelled 1.
    User text (names, parameters) is escaped for plotly's markup. None when no record has both figures."""
    y = y_metric_of(y_metric)
    chosen = [r for r in records if _finite(x_value(r, x_metric)) and _finite(y.value(r)) and y.value(r) > 0]
    if not chosen:
        return None
    logit = x_metric in RECALLS
    top = 1 - 0.5 / (max(max(r.n_test for r in chosen), 1) * k)

    def xpos(value: float) -> float:
        return round(_logit(min(max(value, 1e-3), top)), 6) if logit else value

    fronts = pareto_by_group(chosen, x_metric, y_metric)
    on_front = {id(r) for front in fronts.values() for r in front}
    faint, bold = [], []
    for group, members in groups_of(chosen).items():
        color, marker = style(members[0].backend, members[0].impl)
        symbol = _SYMBOLS.get(marker, "circle")
        front = fronts.get(group, [])

        def trace(rs: list[Record], **kw) -> dict:
            return {"type": "scatter", "x": [xpos(x_value(r, x_metric)) for r in rs], "y": [y.value(r) for r in rs],
                    "legendgroup": group, "name": _pe(f"{group} ({len(front)})"), "hoverinfo": "text",
                    "hovertext": [_hover(r, group, k, id(r) in on_front) for r in rs],
                    # what the browser check compares the hover label with: full parameters, the real x
                    "customdata": [[params_str(r.build_params), params_str(r.search_params), x_value(r, x_metric)]
                                   for r in rs],
                    "hoverlabel": {"bgcolor": "white", "bordercolor": color, "font": {"color": "#222"}}, **kw}

        faint.append(trace(members, mode="markers", showlegend=not front, opacity=0.35,
                           marker={"color": color, "symbol": symbol, "size": 7}))
        if front:  # a cost front is a staircase: the least cost reaching a recall is that of the next point right
            bold.append(trace(front, mode="lines+markers",
                              line={"color": color, "width": 2.2, "shape": "linear" if y.higher_is_better else "vh"},
                              marker={"color": color, "symbol": symbol, "size": 8}))
    xs = [x_value(r, x_metric) for r in chosen]
    exact = next((r.label_metrics[f"exact_{x_metric}"] for r in chosen if f"exact_{x_metric}" in r.label_metrics),
                 None)
    nq = max(max(r.n_test for r in chosen), 1)
    if logit:
        lo = max(1e-3, min(xs) * 0.9)
        ticks = [t for t in _TICKS if lo <= t and 1 - t >= 4 * (1 - top)] + [top]
        xaxis = {"range": [_logit(lo), _logit(1 - 0.4 / (nq * k))], "tickmode": "array",
                 "tickvals": [round(_logit(t), 6) for t in ticks],
                 "ticktext": ["1" if t >= top else f"{t:g}" for t in ticks]}
        scale = "logit scale: 0.9, 0.99, 0.999 equally spaced"
    else:
        lo, hi = min(xs + ([exact] if exact is not None else [])), max(xs + ([exact] if exact is not None else []))
        pad = max(0.1 * (hi - lo), 0.002)
        xaxis = {"range": [max(0.0, lo - pad), hi + pad]}
        scale = "linear scale"
    threads = sorted({r.threads for r in chosen})
    thr = f"{threads[0]} thread{'s' if threads[0] > 1 else ''}" if len(threads) == 1 else \
        f"threads {','.join(map(str, threads))}"
    better = "higher is better" if y.higher_is_better else "lower is better"
    layout = {
        "title": {"text": _pe(f"{_Y_TITLES.get(y.name, y.name)} against {x_label(x_metric, k).split(' (')[0]}: "
                              f"k={k}, {mode} mode, {thr}"), "x": 0.01, "xanchor": "left", "font": {"size": 14}},
        "xaxis": {**xaxis, "title": {"text": _pe(f"{x_label(x_metric, k)}; {scale}")}, "zeroline": False},
        "yaxis": {"type": "log", **_log_ticks([y.value(r) for r in chosen]),
                  "title": {"text": _pe(f"{_Y_AXES.get(y.name, y.label)} (log) — {better}")}},
        "hovermode": "closest", "margin": {"l": 70, "r": 20, "t": 45, "b": 55},
        "legend": {"title": {"text": "Pareto front per backend<br>(points on it; click to hide)"},
                   "font": {"size": 11}},
        "hoverlabel": {"align": "left"}, "font": {"family": "system-ui, sans-serif", "size": 12},
    }
    if exact is not None:
        layout["shapes"] = [{"type": "line", "x0": exact, "x1": exact, "y0": 0, "y1": 1, "yref": "paper",
                             "line": {"color": "black", "dash": "dash", "width": 1}}]
        layout["annotations"] = [{"x": exact, "y": 1, "yref": "paper", "xanchor": "right", "yanchor": "top",
                                  "text": f"exact kNN ({exact:.4f})", "showarrow": False, "font": {"size": 11}}]
    return {"data": faint + bold, "layout": layout}


def _finite(value) -> bool:
    return value is not None and math.isfinite(value)


_LABEL_NAMES = (("precision_at_", "P@"), ("recall_at_", "R@"), ("map_at_", "MAP@"))


def _label_name(metric: str) -> str:
    for long, short in _LABEL_NAMES:
        if metric.startswith(long):
            return short + metric[len(long):]
    return "MRR" if metric == "mrr" else metric


def _hover(r: Record, group: str, k: int, on_front: bool) -> str:
    """A point's hover label: who, its full build and search parameters, then every figure it has."""
    def join(items: list[str], width: int = 70) -> str:  # wrap long parameter lists
        lines, line = [], ""
        for item in items:
            if line and len(line) + len(item) + 2 > width:
                lines.append(line + ",")
                line = ""
            line = f"{line}, {item}" if line else item
        return "<br>   ".join(_pe(x) for x in [*lines, line])

    def figs(*pairs) -> str:
        return " · ".join(f"{name} {text}" for name, text in pairs if text is not None)

    rows = [f"<b>{_pe(group)}</b>" + (" — on the Pareto front" if on_front else ""),
            f"build: {join([f'{n}={v}' for n, v in r.build_params.items()]) or '-'}",
            f"search: {join([f'{n}={v}' for n, v in r.search_params.items()]) or '-'}",
            figs((f"recall@{k}", fmt_recall(r.recall) if r.recall is not None else None),
                 ("ann-benchmarks rule", fmt_recall(r.recall_ab) if r.recall_ab is not None else None),
                 ("id recall", None if r.id_recall is None else f"{r.id_recall:.4f}")),
            figs(("QPS", None if r.qps is None else f"{r.qps:,.0f}"),
                 ("p50", None if r.p50_ms is None else f"{r.p50_ms:.3f} ms"),
                 ("p99", None if r.p99_ms is None else f"{r.p99_ms:.3f} ms")),
            figs(("build", None if r.build_s is None else f"{r.build_s:.2f} s"),
                 ("index", None if r.index_bytes is None else f"{r.index_bytes / 1e6:,.1f} MB"),
                 ("peak RSS", None if r.peak_rss_bytes is None else f"{r.peak_rss_bytes / 1e6:,.0f} MB"))]
    labels = [(f"{_pe(_label_name(m))}", f"{v:.4f}" + (f" (exact {r.label_metrics['exact_' + m]:.4f})"
                                                       if f"exact_{m}" in r.label_metrics else ""))
              for m, v in sorted(r.label_metrics.items()) if not m.startswith("exact_")]
    rows.append(figs(*labels))
    rows.append(f"{_pe(r.mode)} mode, {r.threads} thread(s)")
    return "<br>".join(row for row in rows if row)


class _ShortForms(ShortForms):
    """:class:`~ann_bench.bench.results.ShortForms` grouped per backend and implementation under the name the
    report's plots give them, and the note that says the fixed parameters once."""

    def __init__(self, records: list[Record], label: Callable[[Record], str] = lambda r: f"{r.backend} [{r.impl}]"):
        super().__init__(records, label)

    def note(self) -> str:
        if not self.fixed:
            return ""
        return ('<p class="note">The same in every row of a backend: '
                + "; ".join(f"<b>{_e(g)}</b> {_e(text)}" for g, text in sorted(self.fixed.items()))
                + ". Hover a parameter cell for the full names.</p>")


def _best_table(records: list[Record], mode: str, k: int, forms: _ShortForms) -> list[str]:
    """Per recall target, each backend's fastest configuration reaching it (`ann-bench best` in a table)."""
    targets = (0.9, 0.95, 0.99)
    answers = {t: best_configurations(records, t, mode=mode, k=k) for t in targets}
    groups = sorted({b.group for a in answers.values() for b in a.per_backend})
    parts = [f"<h4>Fastest configuration reaching a recall@{k} (highest QPS; <code>ann-bench best</code>)</h4>",
             '<div class="wide"><table class="sortable"><thead><tr><th>backend</th>'
             + "".join(f"<th>recall ≥ {t}</th>" for t in targets) + "</tr></thead><tbody>"]
    for group in groups:
        cells = [_txt(group)]
        for t in targets:
            answer = answers[t]
            b = next((b for b in answer.per_backend if b.group == group), None)
            if b is None or b.best is None:
                cells.append('<td class="n" data-v="">-</td>')
                continue
            r, star = b.best, " ★" if answer.winner is b else ""
            params = " ".join(p for p in (forms.build(r), forms.search(r)) if p != "-") or "-"
            cells.append(f'<td data-v="{r.qps!r}" title="{_e(params_str({**r.build_params, **r.search_params}))}">'
                         f'<span class="n">{_e(f"{r.qps:,.0f}")} QPS{star}</span><br><small>{_e(params)}</small>'
                         "</td>")
        parts.append("<tr>" + "".join(cells) + "</tr>")
    parts.append('</tbody></table></div><p class="note">★: the fastest of all backends at that recall.</p>')
    return parts


@dataclass(frozen=True)
class _Column:
    """A table column: its header, the cell of a record, and whether a record has a value in it (a column
    empty on every row is left out)."""

    head: str
    cell: Callable[[Record], str]
    has: Callable[[Record], bool]
    title: str = ""


def _number_column(head: str, get: Callable[[Record], Any], fmt: str, title: str = "") -> _Column:
    cell = (lambda r: _recall(get(r))) if fmt == "recall" else (lambda r: _num(get(r), fmt))
    return _Column(head, cell, lambda r: get(r) is not None, title)


def _table(columns: list[_Column], records: list[Record], *, table_id: str = "", cls: str = "sortable",
           row_class: Callable[[Record], str] = lambda r: "") -> list[str]:
    columns = [c for c in columns if any(c.has(r) for r in records)]
    heads = "".join(f'<th title="{_e(c.title)}">{_e(c.head)}</th>' if c.title else f"<th>{_e(c.head)}</th>"
                    for c in columns)
    ident = f' id="{_e(table_id)}"' if table_id else ""
    parts = [f'<div class="wide"><table class="{cls}"{ident}><thead><tr>{heads}</tr></thead><tbody>']
    for r in records:
        rc = row_class(r)
        parts.append((f'<tr class="{rc}">' if rc else "<tr>") + "".join(c.cell(r) for c in columns) + "</tr>")
    parts.append("</tbody></table></div>")
    return parts


def _param_columns(forms: _ShortForms) -> list[_Column]:
    return [_Column("build", lambda r: _params_cell(forms.build(r), r.build_params), lambda r: forms.build(r) != "-"),
            _Column("search", lambda r: _params_cell(forms.search(r), r.search_params),
                    lambda r: forms.search(r) != "-")]


def _pareto_table(records: list[Record], k: int, forms: _ShortForms) -> list[str]:
    rows = [(group, r) for group, front in pareto_by_group(records).items() for r in front]
    group_of = {id(r): g for g, r in rows}
    columns = [_Column("backend", lambda r: _txt(group_of[id(r)]), lambda r: True), *_param_columns(forms),
               _number_column(f"recall@{k}", lambda r: r.recall, "recall"),
               _number_column("QPS", lambda r: r.qps, ",.0f"),
               _number_column("p99 ms", lambda r: r.p99_ms, ".3f"),
               _number_column("build s", lambda r: r.build_s, ".2f"),
               _number_column("index MB", lambda r: mb(r.index_bytes), ",.1f")]
    return [f"<h4>Pareto-optimal configurations per backend (recall@{k} up, QPS up)</h4>",
            *_table(columns, [r for _, r in rows]), forms.note()]


def _results_table(rs: list[Record], table_id: str) -> list[str]:
    forms = _ShortForms(rs, Record.label)
    label_keys = sorted({m for r in rs for m in r.label_metrics if m.startswith("precision_at_")})
    columns = [
        _Column("backend", lambda r: _txt(r.label()), lambda r: True),
        _Column("filter", lambda r: _txt(r.filter_spec), lambda r: bool(r.filter_spec)), *_param_columns(forms),
        _number_column("k", lambda r: r.k, "d"), _Column("mode", lambda r: _txt(r.mode), lambda r: True),
        _number_column("threads", lambda r: r.threads, "d"),
        _Column("status", lambda r: _txt(r.status), lambda r: True),
        _number_column("recall", lambda r: r.recall, "recall", "recall@k: distance ≤ true k-th, ties counted"),
        _number_column("recall (a-b)", lambda r: r.recall_ab, "recall",
                       "recall@k by ann-benchmarks' rule: distance ≤ true k-th + 1e-3 (absolute)"),
        _number_column("id recall", lambda r: r.id_recall, ".4f", "|returned ∩ true top-k| / k"),
        _number_column("QPS", lambda r: r.qps, ",.0f"), _number_column("p50 ms", lambda r: r.p50_ms, ".3f"),
        _number_column("p99 ms", lambda r: r.p99_ms, ".3f"), _number_column("build s", lambda r: r.build_s, ".2f"),
        _number_column("index MB", lambda r: mb(r.index_bytes), ",.1f", "serialized index, 1 MB = 10⁶ bytes"),
        _number_column("RSS MB", lambda r: mb(r.peak_rss_bytes), ",.0f", "peak resident memory of the build"),
        *(_number_column(f"P@{m.rsplit('_', 1)[1]}", lambda r, m=m: r.label_metrics.get(m), ".4f",
                         "label-aware precision") for m in label_keys),
        _Column("error", lambda r: f'<td class="err">{_e(r.error)}</td>', lambda r: bool(r.error)),
    ]
    count = f"{table_id}-shown"
    return [f'<p class="filter"><input type="search" class="filter" data-table="{_e(table_id)}" '
            f'data-count="{_e(count)}" placeholder="Filter rows: any text, e.g. hnsw M32 single" '
            f'aria-label="Filter the rows"> <span class="note" id="{_e(count)}"></span> '
            '<span class="note">Click a column header to sort.</span></p>',
            *_table(columns, rs, table_id=table_id, cls="sortable results",
                    row_class=lambda r: "" if r.status == "ok" else "failed"),
            forms.note()]


def _environment_section(records: list[Record]) -> list[str]:
    parts = ["<h2>Hosts and library versions</h2>"]
    for title, attr in (("Host", "host"), ("Versions", "versions")):
        seen = Counter(json.dumps(getattr(r, attr), sort_keys=True) for r in records)
        for blob, n in seen.most_common():
            data = json.loads(blob)
            parts.append(f"<h4>{title} ({n} result(s))</h4>")
            if not data:
                parts.append('<p class="note">not recorded</p>')
                continue
            parts.append("<table><tbody>" + "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>"
                                                    for k, v in data.items()) + "</tbody></table>")
    return parts
