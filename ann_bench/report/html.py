"""``report``: one self-contained HTML file (no network: plots inlined as PNG data URIs, inline CSS and a few
lines of inline JS for table sorting) with, per dataset, its facts, the Pareto plots, the Pareto-optimal
configurations per backend, a sortable table of every result, and the hosts and library versions measured.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import json
import os
from collections import Counter, defaultdict
from pathlib import Path

from ann_bench import __version__
from ann_bench.atomic import atomic_path
from ann_bench.report.best import best_configurations
from ann_bench.errors import InputError
from ann_bench.bench.metrics import fmt_recall
from ann_bench.report.plots import pareto_by_group, render_plot
from ann_bench.bench.results import Record, params_str

# Nothing may be fetched: a Content-Security-Policy that allows only inline styles, scripts and data: images.
_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'"

_CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1300px;
       padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 2em; }
h3 { margin-top: 1.5em; }
table { border-collapse: collapse; margin: .5em 0 1.5em; font-size: 12.5px; }
th, td { border: 1px solid #ddd; padding: 3px 7px; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
table.sortable th { cursor: pointer; user-select: none; white-space: nowrap; }
table.sortable th::after { content: " \\2195"; color: #aaa; }
table.sortable th[aria-sort=ascending]::after { content: " \\2191"; color: #222; }
table.sortable th[aria-sort=descending]::after { content: " \\2193"; color: #222; }
tr.failed td { color: #a00; }
div.wide { overflow-x: auto; }
figure { margin: 1em 0; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: #555; font-size: 12.5px; }
.note { color: #555; } code { background: #f5f5f5; padding: 0 3px; }
dl.facts { display: grid; grid-template-columns: max-content auto; gap: 2px 14px; }
dl.facts dt { font-weight: 600; } dl.facts dd { margin: 0; }
"""

# Click a header to sort by it (numbers numerically, empty cells last); click again to reverse.
_JS = """
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
        var v = cell.hasAttribute("data-v") ? cell.getAttribute("data-v") : cell.textContent.trim();
        return v;
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


def build_report(records: list[Record], out: str | os.PathLike, *, source: str = "") -> Path:
    """Write the HTML report of ``records`` (one section per dataset) to ``out`` atomically. ``source`` names
    the results store in the header. InputError if there are no records."""
    if not records:
        raise InputError("no stored results to report; run `ann-bench run` first (or check --dataset/--results)")
    by_dataset: dict[str, list[Record]] = defaultdict(list)
    for r in records:
        by_dataset[r.dataset_hash].append(r)
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>ann-bench report: {_e(', '.join(rs[0].dataset_name for rs in by_dataset.values()))}</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>ann-bench report</h1>",
        f'<p class="note">{len(records)} stored result(s) for {len(by_dataset)} dataset(s)'
        + (f" from <code>{_e(source)}</code>" if source else "")
        + f"; generated {_e(now)} by ann-bench {_e(__version__)}.</p>",
    ]
    if len(by_dataset) > 1:
        parts.append("<ul>" + "".join(f'<li><a href="#ds-{_e(h[:12])}">{_e(rs[0].dataset_name)}</a></li>'
                                      for h, rs in by_dataset.items()) + "</ul>")
    for dataset_hash, rs in by_dataset.items():
        parts += _dataset_section(dataset_hash, rs)
    parts += _environment_section(records)
    parts.append(f"<script>{_JS}</script></body></html>")
    out = Path(out)
    with atomic_path(out, ".html") as tmp:
        tmp.write_text("\n".join(parts), encoding="utf-8")
    return out


def _dataset_section(dataset_hash: str, rs: list[Record]) -> list[str]:
    first = rs[0]
    ok = [r for r in rs if r.status == "ok" and r.recall is not None and r.qps]
    statuses = Counter(r.status for r in rs)
    label_keys = sorted({m for r in ok for m in r.label_metrics if not m.startswith("exact_")})
    facts = [("name", first.dataset_name), ("content hash", dataset_hash), ("file", first.dataset_path or "-"),
             ("train vectors", f"{first.n_train:,}"), ("queries", f"{first.n_test:,}"), ("dimension", first.dim),
             ("metric", first.metric), ("labels", "yes: " + ", ".join(label_keys) if label_keys else "no"),
             ("results", ", ".join(f"{n} {s}" for s, n in sorted(statuses.items()))),
             ("backends", ", ".join(sorted({r.label() for r in rs}))),
             ("modes, k, threads", "; ".join(sorted({f"{r.mode}, k={r.k}, {r.threads} thread(s)" for r in rs})))]
    parts = [f'<h2 id="ds-{_e(dataset_hash[:12])}">Dataset {_e(first.dataset_name)}</h2>', '<dl class="facts">']
    parts += [f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in facts]
    parts.append("</dl>")
    for mode, k in sorted({(r.mode, r.k) for r in ok}):
        sub = [r for r in ok if r.mode == mode and r.k == k]
        parts.append(f"<h3>{_e(mode)} mode, k={k}</h3>")
        parts += _plots(sub, mode, k)
        parts += _best_table(sub, mode, k)
        parts += _pareto_table(sub, k)
    if not ok:
        parts.append('<p class="note">No successful result to plot.</p>')
    parts.append(f"<h3>Every result ({len(rs)})</h3>")
    parts.append('<p class="note">Click a column header to sort.</p>')
    parts += _results_table(rs)
    return parts


def _plots(records: list[Record], mode: str, k: int) -> list[str]:
    plots = [p for p in PLOTS if (p[1] == "p99_ms") == (mode == "single")]
    if mode == "single":
        plots.insert(0, PLOTS[0])
    label = f"precision_at_{k}"
    if any(label in r.label_metrics for r in records):
        plots.append((label, "qps", f"Label-aware Precision@{k} against QPS; dashed: the exact neighbours' value."))
    parts = []
    for x_metric, y_metric, caption in plots:
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


def _best_table(records: list[Record], mode: str, k: int) -> list[str]:
    """Per recall target, each backend's fastest configuration reaching it (`ann-bench best` in a table)."""
    targets = (0.9, 0.95, 0.99)
    groups = sorted({b.group for t in targets for b in best_configurations(records, t, mode=mode, k=k).per_backend})
    parts = [f"<h4>Fastest configuration reaching a recall@{k} (highest QPS; <code>ann-bench best</code>)</h4>",
             '<div class="wide"><table class="sortable"><thead><tr><th>backend</th>'
             + "".join(f"<th>recall ≥ {t}</th>" for t in targets) + "</tr></thead><tbody>"]
    answers = {t: best_configurations(records, t, mode=mode, k=k) for t in targets}
    for group in groups:
        cells = [_txt(group)]
        for t in targets:
            answer = answers[t]
            b = next((b for b in answer.per_backend if b.group == group), None)
            if b is None or b.best is None:
                cells.append('<td class="n" data-v="">-</td>')
                continue
            r, star = b.best, " ★" if answer.winner is b else ""
            cells.append(f'<td class="n" data-v="{r.qps!r}">{_e(f"{r.qps:,.0f}")} QPS{star}<br><small>'
                         f"{_e(params_str(r.build_params) or '-')} {_e(params_str(r.search_params))}</small></td>")
        parts.append("<tr>" + "".join(cells) + "</tr>")
    parts.append('</tbody></table></div><p class="note">★: the fastest of all backends at that recall.</p>')
    return parts


def _pareto_table(records: list[Record], k: int) -> list[str]:
    parts = [f"<h4>Pareto-optimal configurations per backend (recall@{k} up, QPS up)</h4>",
             '<div class="wide"><table class="sortable"><thead><tr><th>backend</th><th>build</th><th>search</th>'
             f"<th>recall@{k}</th><th>QPS</th><th>p99 ms</th><th>build s</th><th>index MB</th></tr></thead><tbody>"]
    for group, front in pareto_by_group(records).items():
        for r in front:
            parts.append("<tr>" + _txt(group) + _txt(params_str(r.build_params) or "-")
                         + _txt(params_str(r.search_params) or "-") + _recall(r.recall) + _num(r.qps, ",.0f")
                         + _num(r.p99_ms, ".3f") + _num(r.build_s, ".2f")
                         + _num(None if r.index_bytes is None else r.index_bytes / 1e6, ",.1f") + "</tr>")
    parts.append("</tbody></table></div>")
    return parts


def _results_table(rs: list[Record]) -> list[str]:
    label_keys = sorted({m for r in rs for m in r.label_metrics if m.startswith("precision_at_")})
    heads = ["backend", "build", "search", "k", "mode", "threads", "status", "recall", "recall (ann-benchmarks rule)", "id recall", "QPS",
             "p50 ms", "p99 ms", "build s", "index MB", "peak RSS MB",
             *(f"P@{m.rsplit('_', 1)[1]}" for m in label_keys), "error"]
    parts = ['<div class="wide"><table class="sortable results"><thead><tr>'
             + "".join(f"<th>{_e(h)}</th>" for h in heads) + "</tr></thead><tbody>"]
    for r in rs:
        cells = [_txt(r.label()), _txt(params_str(r.build_params) or "-"), _txt(params_str(r.search_params) or "-"),
                 _num(r.k, "d"), _txt(r.mode), _num(r.threads, "d"), _txt(r.status), _recall(r.recall),
                 _recall(r.recall_ab), _num(r.id_recall, ".4f"), _num(r.qps, ",.0f"), _num(r.p50_ms, ".3f"), _num(r.p99_ms, ".3f"),
                 _num(r.build_s, ".2f"), _num(mb(r.index_bytes), ",.1f"), _num(mb(r.peak_rss_bytes), ",.0f"),
                 *(_num(r.label_metrics.get(m), ".4f") for m in label_keys), _txt(r.error)]
        cls = "" if r.status == "ok" else ' class="failed"'
        parts.append(f"<tr{cls}>" + "".join(cells) + "</tr>")
    parts.append("</tbody></table></div>")
    return parts


def mb(n: int | None) -> float | None:
    return None if n is None else n / 1e6


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
