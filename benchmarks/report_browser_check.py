"""Open an ``ann-bench report`` HTML file in a real headless browser (Debian ``chromium``) and check that it
loads with no console message (errors, uncaught exceptions, Content-Security-Policy violations — the report
logs nothing itself, so any console line is a failure), that every plot image decoded (naturalWidth > 0),
and that clicking a table header sorts the table.

The page is copied with a probe script appended that records what it found in a ``data-probe`` attribute;
chromium ``--dump-dom`` prints the DOM after load and ``--enable-logging=stderr`` prints console messages as
``INFO:CONSOLE`` lines. Optionally saves a screenshot. Exits 1 if a check fails, 2 if chromium is missing.

    apt-get install -y chromium        # Debian; about 35 s
    ann-bench report --results results/ann-bench.sqlite -o report.html
    python benchmarks/report_browser_check.py report.html [--screenshot shot.png]
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

# Appended to a copy of the page: counts decoded images, sorts the results table by QPS by clicking its header
# twice, and writes the findings to <body data-probe="...">.
PROBE = """
<script>
window.addEventListener("load", function () {
  var imgs = Array.prototype.slice.call(document.querySelectorAll("img"));
  var decoded = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; });
  var sorted = null;
  var table = document.querySelector("table.results");
  if (table) {
    var heads = Array.prototype.slice.call(table.tHead.rows[0].cells);
    var col = heads.findIndex(function (h) { return h.textContent === "QPS"; });
    if (col >= 0) {
      heads[col].click(); heads[col].click();  // ascending, then descending
      var vals = Array.prototype.slice.call(table.tBodies[0].rows).map(function (r) {
        return r.cells[col].getAttribute("data-v"); }).filter(function (v) { return v !== ""; }).map(Number);
      sorted = vals.every(function (v, i) { return i === 0 || vals[i - 1] >= v; });
    }
  }
  document.body.setAttribute("data-probe", JSON.stringify({
    images: imgs.length, decoded: decoded.length,
    widths: decoded.map(function (i) { return i.naturalWidth; }),
    tables: document.querySelectorAll("table").length, sorted_desc: sorted}));
});
</script>
"""


@dataclass
class BrowserResult:
    images: int = 0
    decoded: int = 0
    tables: int = 0
    sorted_desc: bool | None = None
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


def check_in_browser(html: str | Path, *, chromium: str | None = None, screenshot: str | Path | None = None,
                     timeout: float = 120) -> BrowserResult:
    """Load ``html`` in headless chromium; a BrowserResult whose ``problems`` is empty when all is well."""
    chromium = chromium or find_chromium()
    if chromium is None:
        raise FileNotFoundError("chromium not found; install it with `apt-get install -y chromium`")
    result = BrowserResult()
    with tempfile.TemporaryDirectory(prefix="ann-bench-browser-") as tmp:
        page = Path(tmp) / "page.html"
        text = Path(html).read_text(encoding="utf-8")
        page.write_text(text.replace("</body>", PROBE + "</body>") if "</body>" in text else text + PROBE,
                        encoding="utf-8")
        base = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                f"--user-data-dir={tmp}/profile", "--enable-logging=stderr", "--v=0",
                "--virtual-time-budget=5000"]
        proc = subprocess.run([*base, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=timeout)
        result.console = [line for line in proc.stderr.splitlines() if ":CONSOLE" in line]
        if screenshot is not None:
            subprocess.run([*base, f"--screenshot={Path(screenshot).resolve()}", "--window-size=1400,3000",
                            Path(html).resolve().as_uri()], capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        result.problems.append(f"chromium exited {proc.returncode}: {proc.stderr.strip()[-500:]}")
    m = re.search(r'data-probe="([^"]*)"', proc.stdout)
    if m is None:
        result.problems.append("the probe did not run (page failed to load, or scripts are blocked)")
    else:
        probe = json.loads(m.group(1).replace("&quot;", '"').replace("&amp;", "&"))
        result.images, result.decoded = probe["images"], probe["decoded"]
        result.tables, result.sorted_desc = probe["tables"], probe["sorted_desc"]
        if result.images == 0:
            result.problems.append("no plot images in the page")
        if result.decoded != result.images:
            result.problems.append(f"only {result.decoded} of {result.images} images decoded")
        if result.sorted_desc is False:
            result.problems.append("clicking the QPS header twice did not sort the results table descending")
    if result.console:
        result.problems.append(f"{len(result.console)} console message(s): " + " | ".join(result.console[:5]))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("html", type=Path)
    parser.add_argument("--screenshot", type=Path, default=None, help="Also save a screenshot (PNG) here.")
    args = parser.parse_args(argv)
    if find_chromium() is None:
        print("chromium not found; install it with `apt-get install -y chromium`", file=sys.stderr)
        return 2
    result = check_in_browser(args.html, screenshot=args.screenshot)
    print(f"{args.html}: {result.decoded}/{result.images} images decoded, {result.tables} tables, "
          f"results table sorts: {result.sorted_desc}, console messages: {len(result.console)}")
    for problem in result.problems:
        print(f"FAIL: {problem}")
    print("OK" if result.ok else "FAILED")
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
