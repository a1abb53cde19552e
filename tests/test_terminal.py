"""What a person sees in a real terminal: every line the commands print fits 80 and 120 columns.

The commands run in a pseudo-terminal of that size (not only $COLUMNS), so rich sees a terminal: progress bars,
word wrapping and table fitting behave as they do for a person. Every piece of output between two line breaks or
carriage returns (progress bars redraw with \\r) must fit the width once escape sequences are removed: a longer one
is wrapped by the terminal wherever the edge falls, mid-word.
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import shutil
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest
from rich.cells import cell_len

_ESCAPES = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(\x07|\x1b\\)|\x1b[()][0-9A-Za-z]|\x1b[=>78]")


def in_pty(args: list[str], cols: int, cwd: Path, rows: int = 40, timeout: float = 240) -> tuple[int, str]:
    """Run ``ann-bench ARGS`` with stdin, stdout and stderr on a pseudo-terminal of ``cols`` x ``rows``; its exit
    code and everything it wrote."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "NO_COLOR", "TERM")}
    env["TERM"] = "xterm-256color"
    exe = shutil.which("ann-bench")
    cmd = [exe, *args] if exe else [sys.executable, "-m", "ann_bench.cli", *args]
    proc = subprocess.Popen(cmd, stdin=slave, stdout=slave, stderr=slave, cwd=cwd, env=env, close_fds=True)
    os.close(slave)
    chunks, deadline = [], time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # the child closed the terminal
                    break
                if not data:
                    break
                chunks.append(data)
            elif proc.poll() is not None:
                break
        else:
            proc.kill()
            pytest.fail(f"ann-bench {' '.join(args)} did not finish in {timeout} s")
    finally:
        os.close(master)
    return proc.wait(), b"".join(chunks).decode("utf-8", "replace")


def too_wide(text: str, cols: int) -> list[str]:
    """The pieces of ``text`` (between line breaks and carriage returns, escapes removed) wider than ``cols``."""
    pieces = re.split(r"\r\n|\r|\n", _ESCAPES.sub("", text))
    return [p for p in pieces if cell_len(p) > cols]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    d = tmp_path_factory.mktemp("terminal")
    subprocess.run([shutil.which("ann-bench") or "ann-bench", "data", "synth", "d.hdf5", "--n", "3000", "--dim",
                    "16", "--queries", "200", "--clusters", "10"], cwd=d, check=True, capture_output=True)
    return d


@pytest.mark.parametrize("cols", [80, 120])
def test_every_line_fits_the_terminal(workdir, cols):
    store = f"r{cols}.sqlite"
    commands = [
        ["run", "--dataset", "d.hdf5", "--backend", "hnsw", "--backend", "ivfpq", "--runs", "1",
         "--search", "ef=10,20,40", "--search", "nprobe=1,4", "--results", store],
        ["results", "--results", store],
        ["results", "--results", store, "--wide"][:4],  # --wide may be wider than the terminal: not checked
        ["best", "--recall", "0.9", "--results", store],
        ["best", "--recall", "0.9", "--max-memory", "10MB", "--results", store],
        ["tune", "--dataset", "d.hdf5", "--recall", "0.9,0.95", "--budget", "20s", "--backend", "ivf",
         "--backend", "hnsw", "--results", f"t{cols}.sqlite"],
        ["backends"],
        ["data", "info", "d.hdf5"],
    ]
    for args in commands:
        code, text = in_pty(args, cols, workdir)
        assert code == 0, (args, text[-2000:])
        wide = too_wide(text, cols)
        assert not wide, (args, cols, wide)
    # the first line of run names the set it measured
    code, text = in_pty(commands[0], cols, workdir)
    first = next(line for line in _ESCAPES.sub("", text).splitlines() if line.strip())
    assert "synth-3000x16" in first, first


def test_piped_output_has_no_trailing_padding(workdir):
    store = workdir / "pipe.sqlite"
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    run = subprocess.run(["ann-bench", "run", "--dataset", "d.hdf5", "--backend", "ivf", "--runs", "1", "--search",
                          "nprobe=1,2", "--results", str(store)], cwd=workdir, capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stderr
    for args in (["results"], ["best", "--recall", "0.5"], ["backends"]):
        done = subprocess.run(["ann-bench", *args, *(["--results", str(store)] if args != ["backends"] else [])],
                              cwd=workdir, capture_output=True, text=True, env=env)
        assert done.returncode == 0, done.stderr
        padded = [line for line in done.stdout.splitlines() if line != line.rstrip()]
        assert not padded, (args, padded[:3])
    # a pipe gets no progress display: stderr starts with the run's own first line, no blank line
    assert not run.stderr.startswith("\n") and "\n\n" not in run.stderr, run.stderr


def test_quiet_run_prints_only_the_table(workdir):
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    done = subprocess.run(["ann-bench", "run", "--dataset", "d.hdf5", "--backend", "ivf", "--runs", "1", "--search",
                           "nprobe=1,2,512", "-q", "--results", "q.sqlite"], cwd=workdir, capture_output=True,
                          text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stderr == "", done.stderr  # no skip lines, no blank lines, no dataset line
    assert "Pareto-optimal" in done.stdout and "nprobe=" not in done.stdout


def test_an_unknown_dataset_is_refused_with_the_sets_the_store_holds(workdir):
    from click.testing import CliRunner

    from ann_bench.cli import cli

    runner = CliRunner()
    store = str(workdir / "known.sqlite")
    r = runner.invoke(cli, ["run", "--dataset", str(workdir / "d.hdf5"), "--backend", "flat", "--runs", "1", "-q",
                            "--results", store])
    assert r.exit_code == 0, r.output
    for args in (["results"], ["best", "--recall", "0.5"], ["plot", "-o", str(workdir / "p.png")]):
        r = runner.invoke(cli, [*args, "--dataset", "nosuch", "--results", store])
        assert r.exit_code == 2, (args, r.output)
        lines = r.output.strip().splitlines()
        assert len(lines) == 1 and "no results for --dataset 'nosuch'" in lines[0], r.output
        assert "synth-3000x16" in lines[0]  # the set it does hold, by name
    assert not (workdir / "p.png").exists()


def test_embedders_reads_at_80_columns(workdir):
    # The descriptions were a table column squeezed to 8 characters at 80 columns: one word per line. In a
    # narrow terminal they follow the table as lines of their own, whole phrases on a line.
    code, text = in_pty(["embedders"], 80, workdir)
    assert code == 0, text[-2000:]
    assert not too_wide(text, 80)
    lines = _ESCAPES.sub("", text).splitlines()
    assert any(line.startswith("identity: features already computed") for line in lines), lines
    assert any("onnx:PATH.onnx — an ONNX model run by" in line for line in lines), lines


def test_evaluate_through_an_index_reads_at_80_columns(workdir):
    # The title was a rich table title (centred, its second line indented to the middle) and the index column's
    # header held the whole configuration, squeezing the metric names onto two lines each.
    code, text = in_pty(["evaluate", "d.hdf5", "--backend", "hnsw"], 80, workdir)
    assert code == 0, text[-2000:]
    assert not too_wide(text, 80)
    lines = _ESCAPES.sub("", text).splitlines()
    assert lines[0].startswith("synth-3000x16"), lines[:3]
    assert any("hnsw[hnswlib] to depth 32" in line for line in lines), lines
    assert any(line.startswith("│ MAP@R to depth 32 (R capped at it)") for line in lines), lines
