"""Write docs/screenshots/results-100.png: what `ann-bench results` prints in a 100-column terminal.

Nothing is staged: a small synthetic set is generated and swept with the real commands into a temporary
store, then `ann-bench results` runs (in this process, through the click command) with its console set to
what a 100-column colour terminal gives it, recorded by rich and saved as SVG; headless chromium turns the
SVG into the PNG. About 20 s on 2 cores.

    python scripts/docs_screenshot.py [--out docs/screenshots/results-100.png] [--columns 100]
"""

from __future__ import annotations

import argparse
import io
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def sh(*args: str, cwd: Path, env: dict[str, str]) -> None:
    print("+ " + " ".join(args), file=sys.stderr)
    subprocess.run(args, cwd=cwd, env=env, check=True)


def record_results(work: Path, columns: int):
    """Run `ann-bench results` in ``work`` with a recording console of ``columns`` columns; return it."""
    from rich.console import Console

    sys.path.insert(0, str(ROOT))
    import ann_bench.cli.results as results_cmd
    from ann_bench.cli import cli

    console = Console(record=True, width=columns, force_terminal=True, color_system="truecolor", highlight=False,
                      file=io.StringIO())  # recorded, not shown
    results_cmd.out = console  # the command prints through this module's `out`
    old = Path.cwd()
    os.chdir(work)  # the store's default path, as a user in that folder would type it
    try:
        cli.main(["results"], prog_name="ann-bench", standalone_mode=False)
    finally:
        os.chdir(old)
    return console


def svg_to_png(svg: Path, png: Path, chromium: str) -> None:
    text = svg.read_text()
    m = re.search(r'viewBox="0 0 ([\d.]+) ([\d.]+)"', text)
    if m is None:
        raise SystemExit(f"no viewBox in {svg}")
    width, height = (int(float(v)) + 1 for v in m.groups())
    page = svg.with_suffix(".html")
    page.write_text(f'<!doctype html><html><body style="margin:0;background:#fff">'
                    f'<div style="width:{width}px;height:{height}px">{text}</div></body></html>')
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    "--force-device-scale-factor=1", f"--window-size={width},{height}",
                    f"--screenshot={png}", page.as_uri()], check=True, capture_output=True, timeout=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots" / "results-100.png")
    parser.add_argument("--columns", type=int, default=100)
    parser.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="ann-bench-shot-") as tmp:
        work = Path(tmp)
        env = {**os.environ, "ANN_BENCH_CACHE": str(work / "cache"), "MPLBACKEND": "Agg",
               "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
        sh("ann-bench", "data", "synth", "data/quick.hdf5", "--n", "20000", "--dim", "32", "--queries", "1000",
           cwd=work, env=env)
        sh("ann-bench", "run", "--dataset", "data/quick.hdf5", "--backend", "hnsw", "--backend", "ivf", "-q",
           cwd=work, env=env)
        console = record_results(work, args.columns)
        svg = work / "results.svg"
        console.save_svg(str(svg), title=f"ann-bench results  ({args.columns} columns)")
        args.out.parent.mkdir(parents=True, exist_ok=True)
        svg_to_png(svg, args.out, args.chromium)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e3:.0f} KB)", file=sys.stderr)


if __name__ == "__main__":
    main()
