"""Open an ``ann-bench report`` HTML file in a real headless browser (Debian ``chromium``) and check what a
reader gets:

- it loads with no console message (errors, uncaught exceptions, Content-Security-Policy violations — the report
  logs nothing itself, so any console line is a failure), no CSP violation event, and no request at all
  (``performance.getEntriesByType("resource")`` is empty);
- every plot is there: each PNG decoded (``--static``), or each interactive plotly figure drawn;
- interactive plots: a scripted hover — real mouse events at a point's pixel position on the plot's drag layer,
  computed from the figure's axes (``_fullLayout.xaxis.l2p`` + the plot area's offset) — shows a hover label
  holding that point's build and search parameters; a click on a backend's legend entry hides it (its traces
  ``visible === "legendonly"``, their points no longer drawn); plotly's PNG download (``Plotly.toImage``) works
  under the CSP;
- clicking the results table's QPS header twice sorts it descending, and typing a backend's name in its filter
  box leaves only that backend's rows;
- at the window's width (1280 px by default) no table is wider than its box and the page does not scroll sideways.

The page is copied with a probe script appended (and, first in <head>, a listener for CSP violation events; the
copy's CSP lists their SHA-256 next to the page's own) that records what it found in a ``data-probe``
attribute; chromium ``--dump-dom`` prints the DOM after load and ``--enable-logging=stderr`` prints console
messages as ``INFO:CONSOLE`` lines. Optionally saves a screenshot of the page as it is. Exits 1 if a check
fails, 2 if chromium is missing.

    apt-get install -y chromium        # Debian; about 35 s
    ann-bench report --results results/ann-bench.sqlite -o report.html
    python benchmarks/report_browser_check.py report.html [--screenshot shot.png] [--window-size 1280,2400]
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import html as _html
import json
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

# First in <head> of the copy: records Content-Security-Policy violations (they are also console lines).
EARLY = """
window.__violations = [];
document.addEventListener("securitypolicyviolation", function (e) {
  window.__violations.push(e.violatedDirective + " " + e.blockedURI);
});
"""

# Appended to the copy: waits for the plots, then checks the tables, a hover, a legend click and the PNG
# download, and writes the findings to <body data-probe="...">.
PROBE = """
(function () {
  function wait(ms) { return new Promise(function (done) { setTimeout(done, ms); }); }
  function mouse(el, type, x, y) {
    el.dispatchEvent(new MouseEvent(type, {bubbles: true, cancelable: true, view: window, clientX: x,
                                           clientY: y, button: 0, buttons: type === "mousedown" ? 1 : 0}));
  }
  function points(gd) { return gd.querySelectorAll(".scatterlayer .point").length; }
  function checkTables(found) {
    var table = document.querySelector("table.results");
    if (!table) { return; }
    var heads = Array.prototype.slice.call(table.tHead.rows[0].cells);
    var col = heads.findIndex(function (h) { return h.textContent === "QPS"; });
    if (col >= 0) {
      heads[col].click(); heads[col].click();  // ascending, then descending
      var vals = Array.prototype.slice.call(table.tBodies[0].rows).map(function (r) {
        return r.cells[col].getAttribute("data-v"); }).filter(function (v) { return v !== ""; }).map(Number);
      found.sorted_desc = vals.every(function (v, i) { return i === 0 || vals[i - 1] >= v; });
    }
    var input = document.querySelector("input.filter");
    if (input) {
      var rows = Array.prototype.slice.call(table.tBodies[0].rows);
      var word = rows[rows.length - 1].cells[0].textContent.trim();  // a backend's name
      input.value = word;
      input.dispatchEvent(new Event("input", {bubbles: true}));
      var shown = rows.filter(function (r) { return !r.hidden; });
      var want = rows.filter(function (r) { return r.cells[0].textContent.trim() === word; }).length;
      found.filter = {word: word, rows: rows.length, shown: shown.length, want: want,
                      ok: shown.length === want && shown.every(function (r) {
                        return r.cells[0].textContent.trim() === word; })};
      input.value = "";
      input.dispatchEvent(new Event("input", {bubbles: true}));
      found.filter.cleared = rows.every(function (r) { return !r.hidden; });
    }
  }
  function tooWide() {
    var wide = [];
    document.querySelectorAll("table").forEach(function (t, i) {
      var box = t.parentElement.getBoundingClientRect(), r = t.getBoundingClientRect();
      if (r.right > box.right + 1 || r.right > window.innerWidth) {
        wide.push({table: i, cls: t.className, width: Math.round(r.width), box: Math.round(box.width)});
      }
    });
    return {tables: wide, page: document.documentElement.scrollWidth, window: window.innerWidth};
  }
  function hover(gd) {
    // the middle point of the longest Pareto front (a lines+markers trace) whose points have parameters
    var ti = -1;
    gd.data.forEach(function (t, j) {
      if ((t.mode || "").indexOf("lines") >= 0 && t.x.length && (t.customdata[0][0] || t.customdata[0][1])
          && (ti < 0 || t.x.length > gd.data[ti].x.length)) { ti = j; }
    });
    if (ti < 0) { return null; }
    var trace = gd.data[ti], i = Math.floor(trace.x.length / 2);
    var xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis;
    var drag = gd.querySelector(".draglayer .nsewdrag"), box = drag.getBoundingClientRect();
    var px = box.left + xa.l2p(xa.c2l(trace.x[i])), py = box.top + ya.l2p(ya.c2l(trace.y[i]));
    mouse(drag, "mouseover", px, py);
    mouse(drag, "mousemove", px, py);
    var label = Array.prototype.map.call(gd.querySelectorAll(".hoverlayer .hovertext"), function (t) {
      return t.textContent; }).join(" | ");
    var expect = trace.customdata[i];  // [build params, search params, real x], full names
    var want = [].concat(expect[0] ? expect[0].split(",") : [], expect[1] ? expect[1].split(",") : []);
    var missing = want.filter(function (p) { return label.indexOf(p) < 0; });
    mouse(drag, "mouseout", px, py);
    return {text: label, trace: ti, point: i, x: expect[2], y: trace.y[i], build: expect[0], search: expect[1],
            pixel: [Math.round(px - box.left), Math.round(py - box.top)], missing: missing,
            ok: label.length > 0 && missing.length === 0};
  }
  async function legend(gd) {
    var item = gd.querySelector(".legend .traces");
    if (!item) { return null; }
    var group = item.__data__[0].trace.legendgroup;
    var members = gd.data.filter(function (t) { return t.legendgroup === group; });
    var drop = members.reduce(function (n, t) { return n + t.x.length; }, 0);
    var before = points(gd);
    var toggle = item.querySelector(".legendtoggle"), r = toggle.getBoundingClientRect();
    mouse(toggle, "mousedown", r.left + 5, r.top + 5);
    mouse(toggle, "mouseup", r.left + 5, r.top + 5);
    await wait(gd._context.doubleClickDelay + 300);  // a single click waits out a possible double click
    var after = points(gd);
    var hidden = members.every(function (t) { return t.visible === "legendonly"; });
    return {group: group, traces: members.length, before: before, after: after, drop: drop,
            ok: hidden && drop > 0 && after === before - drop};
  }
  async function run() {
    var found = {};
    var imgs = Array.prototype.slice.call(document.querySelectorAll("img"));
    var decoded = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; });
    found.images = imgs.length; found.decoded = decoded.length;
    found.widths = decoded.map(function (i) { return i.naturalWidth; });
    found.tables = document.querySelectorAll("table").length;
    var divs = Array.prototype.slice.call(document.querySelectorAll("div.plot"));
    found.plots = divs.length;
    for (var t = 0; t < 100 && divs.some(function (d) { return !d._fullLayout; }); t++) { await wait(100); }
    found.drawn = divs.filter(function (d) { return d._fullLayout && d.querySelector(".main-svg"); }).length;
    found.points = divs.reduce(function (n, d) { return n + points(d); }, 0);
    checkTables(found);
    found.fit = tooWide();
    if (divs.length && found.drawn) {
      var gd = divs[0];
      gd.scrollIntoView();
      await wait(100);
      found.hover = hover(gd);
      await wait(100);
      found.legend = await legend(gd);
      try {
        var url = await Plotly.toImage(divs[divs.length - 1], {format: "png", width: 700, height: 450});
        found.download = url.indexOf("data:image/png;base64,") === 0 && url.length > 5000;
      } catch (err) { found.download = "error: " + err; }
    }
    await wait(200);  // violation events are queued as tasks
    found.resources = performance.getEntriesByType("resource").map(function (e) { return e.name; });
    found.violations = window.__violations || null;
    document.body.setAttribute("data-probe", JSON.stringify(found));
  }
  window.addEventListener("load", function () {
    run().catch(function (err) { document.body.setAttribute("data-probe", JSON.stringify({error: String(err)})); });
  });
})();
"""


@dataclass
class BrowserResult:
    images: int = 0
    decoded: int = 0
    plots: int = 0  # interactive (plotly) figures in the page
    drawn: int = 0  # of which plotly drew
    tables: int = 0
    sorted_desc: bool | None = None
    filter: dict | None = None  # {word, rows, shown, want, ok, cleared}
    hover: dict | None = None  # {text, x, y, build, search, pixel, missing, ok}
    legend: dict | None = None  # {group, traces, before, after, drop, ok}
    download: bool | str | None = None
    fit: dict | None = None
    resources: list[str] = field(default_factory=list)
    violations: list[str] | None = None
    console: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def _sha256(script: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(script.encode()).digest()).decode() + "'"


def probed_copy(text: str) -> str:
    """The page with the violation listener first in <head> and the probe before </body>; where the page's CSP
    names its scripts by hash, their hashes are added to script-src (nothing else changes)."""
    early, probe = f"<script>{EARLY}</script>", f"<script>{PROBE}</script>"
    m = re.search(r'(<meta http-equiv="Content-Security-Policy" content=")([^"]*)(">)', text)
    if m is not None:
        csp = _html.unescape(m.group(2))
        if re.search(r"script-src[^;]*'sha256-", csp):
            csp = csp.replace("script-src ", f"script-src {_sha256(EARLY)} {_sha256(PROBE)} ", 1)
        # the listener goes right after the CSP so that it sees violations of every later element
        text = text[:m.start()] + m.group(1) + _html.escape(csp, quote=True) + m.group(3) + early + text[m.end():]
    elif "<head>" in text:
        text = text.replace("<head>", "<head>" + early, 1)
    return text.replace("</body>", probe + "</body>") if "</body>" in text else text + probe


def check_in_browser(html: str | Path, *, chromium: str | None = None, screenshot: str | Path | None = None,
                     window_size: str = "1280,2400", timeout: float = 180) -> BrowserResult:
    """Load ``html`` in headless chromium; a BrowserResult whose ``problems`` is empty when all is well."""
    chromium = chromium or find_chromium()
    if chromium is None:
        raise FileNotFoundError("chromium not found; install it with `apt-get install -y chromium`")
    result = BrowserResult()
    with tempfile.TemporaryDirectory(prefix="ann-bench-browser-") as tmp:
        page = Path(tmp) / "page.html"
        page.write_text(probed_copy(Path(html).read_text(encoding="utf-8")), encoding="utf-8")
        base = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                f"--user-data-dir={tmp}/profile", "--enable-logging=stderr", "--v=0",
                f"--window-size={window_size}", "--hide-scrollbars"]
        proc = subprocess.run([*base, "--virtual-time-budget=20000", "--dump-dom", page.as_uri()],
                              capture_output=True, text=True, timeout=timeout)
        result.console = [line for line in proc.stderr.splitlines() if ":CONSOLE" in line]
        if screenshot is not None:
            subprocess.run([*base, "--virtual-time-budget=10000", f"--screenshot={Path(screenshot).resolve()}",
                            Path(html).resolve().as_uri()], capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        result.problems.append(f"chromium exited {proc.returncode}: {proc.stderr.strip()[-500:]}")
    m = re.search(r'data-probe="([^"]*)"', proc.stdout)
    if m is None:
        result.problems.append("the probe did not run (page failed to load, or scripts are blocked)")
    else:
        _read_probe(json.loads(_html.unescape(m.group(1))), result)
    if result.console:
        result.problems.append(f"{len(result.console)} console message(s): " + " | ".join(result.console[:5]))
    return result


def _read_probe(probe: dict, result: BrowserResult) -> None:
    problems = result.problems
    if "error" in probe:
        problems.append(f"the probe failed: {probe['error']}")
        return
    result.images, result.decoded, result.tables = probe["images"], probe["decoded"], probe["tables"]
    result.plots, result.drawn, result.sorted_desc = probe["plots"], probe["drawn"], probe.get("sorted_desc")
    result.filter, result.hover, result.legend = probe.get("filter"), probe.get("hover"), probe.get("legend")
    result.download, result.fit = probe.get("download"), probe.get("fit")
    result.resources, result.violations = probe["resources"], probe["violations"]
    if result.images == 0 and result.plots == 0:
        problems.append("no plots in the page (neither images nor interactive figures)")
    if result.decoded != result.images:
        problems.append(f"only {result.decoded} of {result.images} images decoded")
    if result.drawn != result.plots:
        problems.append(f"plotly drew only {result.drawn} of {result.plots} interactive plots")
    if result.plots and result.drawn:
        if not (result.hover or {}).get("ok"):
            problems.append(f"hovering a point did not show its parameters: {result.hover}")
        if not (result.legend or {}).get("ok"):
            problems.append(f"clicking a legend entry did not hide the backend's points: {result.legend}")
        if result.download is not True:
            problems.append(f"plotly's PNG download failed: {result.download}")
    if result.sorted_desc is False:
        problems.append("clicking the QPS header twice did not sort the results table descending")
    if result.filter is not None and not (result.filter["ok"] and result.filter["cleared"]):
        problems.append(f"the results filter did not leave only the rows of {result.filter['word']!r}: "
                        f"{result.filter}")
    if result.fit and (result.fit["tables"] or result.fit["page"] > result.fit["window"]):
        problems.append(f"wider than the {result.fit['window']}-px window: {result.fit}")
    if result.resources:
        problems.append(f"{len(result.resources)} request(s): {result.resources[:5]}")
    if result.violations:
        problems.append(f"Content-Security-Policy violations: {result.violations[:5]}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("html", type=Path)
    parser.add_argument("--screenshot", type=Path, default=None, help="Also save a screenshot (PNG) here.")
    parser.add_argument("--window-size", default="1280,2400", help="Browser window W,H in px [1280,2400].")
    args = parser.parse_args(argv)
    if find_chromium() is None:
        print("chromium not found; install it with `apt-get install -y chromium`", file=sys.stderr)
        return 2
    r = check_in_browser(args.html, screenshot=args.screenshot, window_size=args.window_size)
    hover = "-" if r.hover is None else ("shows " + ", ".join(filter(None, (r.hover["build"], r.hover["search"])))
                                         if r.hover["ok"] else "FAILED")
    legend = "-" if r.legend is None else (f"hides {r.legend['group']} ({r.legend['drop']} points)"
                                           if r.legend["ok"] else "FAILED")
    print(f"{args.html}: {r.decoded}/{r.images} images decoded, {r.drawn}/{r.plots} interactive plots drawn, "
          f"{r.tables} tables; results table sorts: {r.sorted_desc}, filters: "
          f"{None if r.filter is None else r.filter['ok']}; hover: {hover}; legend click: {legend}; "
          f"PNG download: {r.download}; requests: {len(r.resources)}, CSP violations: "
          f"{len(r.violations or [])}, console messages: {len(r.console)}")
    for problem in r.problems:
        print(f"FAIL: {problem}")
    print("OK" if r.ok else "FAILED")
    return 0 if r.ok else 1


if __name__ == "__main__":
    sys.exit(main())
