"""The documentation cannot go stale quietly.

1. ``mkdocs build --strict`` succeeds (broken links between pages, missing images and pages left out of the
   nav fail it).
2. Every ``ann-bench …`` command sample in a fenced code block of README.md and docs/**/*.md parses against
   the real click CLI: the subcommand exists, every option exists, every value is accepted by the option's
   type or choices, required options are present. Click parses; no command callback runs.
   A synopsis (``ann-bench plot -o FILE.png [-y qps|…]`` in a ``text`` block under a heading) names a real
   command and only its options and choices.
3. Every shell block after a ``<!-- test: run -->`` line, in README.md and docs/**/*.md, runs end to end:
   each page's marked blocks in order in one temporary directory (see test_marked_examples_run_in_page_order).
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import click
import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"

# Fenced blocks whose every line is a shell command line ("console": only the lines after a "$ " prompt).
SHELL_LANGS = {"bash", "sh", "shell", "zsh"}
CONSOLE_LANGS = {"console", "shell-session"}
PLAIN_LANGS = {""}  # output samples, with maybe a command line among them
# A command's synopsis (``ann-bench plot -o FILE.png [-y qps|build_s|…]``) under its heading: not a command
# line, but its subcommand must exist and every option it names must be one of the command's.
SYNOPSIS_LANGS = {"text"}
_FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})\s*([\w+-]*)")
_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
_SEPARATORS = {"&&", "||", ";", "|", "&"}


@dataclass(frozen=True)
class Sample:
    """One ``ann-bench`` command found in a code block: where it starts and its arguments after ``ann-bench``."""

    source: str
    line: int
    args: tuple[str, ...]

    def __str__(self) -> str:
        return shlex.join(("ann-bench", *self.args))


def _strip_comment(line: str) -> str:
    """The line without a shell comment: a ``#`` at the start of a word, outside quotes (``a#b`` stays)."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i]
    return line


def _code_blocks(text: str):
    """(language, [(line number, line), ...]) of each fenced code block of a markdown text."""
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence, lang = m.groups()
        body, i = [], i + 1
        while i < len(lines) and not lines[i].strip().startswith(fence):
            body.append((i + 1, lines[i][len(indent):] if lines[i].startswith(indent) else lines[i].lstrip()))
            i += 1
        yield lang.lower(), body
        i += 1


def _logical_lines(body):
    """Join ``\\`` continuations: (first line number, joined line)."""
    start, parts = None, []
    for number, line in body:
        if start is None:
            start = number
        if line.rstrip().endswith("\\"):
            parts.append(line.rstrip()[:-1])
            continue
        parts.append(line)
        yield start, " ".join(parts)
        start, parts = None, []
    if parts:
        yield start, " ".join(parts)


def _is_command_line(line: str) -> bool:
    """A line that starts with ``ann-bench`` (after a ``$`` prompt and ``NAME=value`` assignments)."""
    words = line.split()
    if words[:1] == ["$"]:
        words = words[1:]
    while words and _ASSIGNMENT.match(words[0]):
        words = words[1:]
    return words[:1] == ["ann-bench"]


def commands_in(text: str, source: str) -> list[Sample]:
    """Every ``ann-bench`` command in the fenced code blocks of a markdown text."""
    samples = []
    for lang, body in _code_blocks(text):
        if lang not in SHELL_LANGS | CONSOLE_LANGS | PLAIN_LANGS:
            continue
        for number, line in _logical_lines(body):
            stripped = line.strip()
            if lang in CONSOLE_LANGS:
                if not stripped.startswith("$ "):
                    continue  # output
                stripped = stripped[2:]
            elif lang in PLAIN_LANGS:
                if not _is_command_line(stripped):
                    continue  # output
                stripped = stripped[2:] if stripped.startswith("$ ") else stripped
            code = _strip_comment(stripped)
            if "ann-bench" not in code:
                continue
            lexer = shlex.shlex(code, posix=True, punctuation_chars=";&|")
            lexer.whitespace_split = True
            lexer.commenters = ""
            command: list[str] = []
            for token in [*lexer, ";"]:
                if token not in _SEPARATORS:
                    command.append(token)
                    continue
                while command and _ASSIGNMENT.match(command[0]):
                    command.pop(0)  # ANN_BENCH_CACHE=/x ann-bench ...
                if command[:1] == ["ann-bench"]:
                    samples.append(Sample(source, number, tuple(command[1:])))
                command = []
    return samples


def check_command(args: tuple[str, ...] | list[str]) -> str | None:
    """None when ``ann-bench ARGS`` parses against the real CLI, else click's message. Nothing is run:
    ``make_context`` parses and converts the parameters but never calls a command's callback."""
    from ann_bench.cli import cli

    cmd: click.Command = cli
    name, parent, rest = "ann-bench", None, list(args)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            while True:
                ctx = cmd.make_context(name, rest, parent=parent)
                if not isinstance(cmd, click.Group):
                    return None
                # A group keeps its subcommand and the arguments after it (click < 9: in _protected_args).
                rest = [*getattr(ctx, "_protected_args", ()), *ctx.args]
                if not rest and cmd.invoke_without_command:  # a group that is a command too (`stream --runbook`)
                    return None
                if not rest:
                    return f"{ctx.command_path}: no subcommand (one of: {', '.join(sorted(cmd.commands))})"
                sub_name, sub, rest = cmd.resolve_command(ctx, rest)
                cmd, name, parent = sub, sub_name, ctx
    except click.exceptions.Exit:
        return None  # --help, --version
    except click.ClickException as exc:
        return exc.format_message()


def problems(samples) -> list[str]:
    out = []
    for sample in samples:
        message = check_command(sample.args)
        if message is not None:
            out.append(f"{sample.source}:{sample.line}: {sample}: {message}")
    return out


_SYNOPSIS_OPTION = re.compile(r"(?<![\w-])(--?[A-Za-z][\w-]*)")


def synopses_in(text: str, source: str) -> list[Sample]:
    """Every ``ann-bench …`` line of the synopsis (``text``) blocks of a markdown text, split at spaces."""
    return [Sample(source, number, tuple(line.split()[1:]))
            for lang, body in _code_blocks(text) if lang in SYNOPSIS_LANGS
            for number, line in _logical_lines(body) if line.split()[:1] == ["ann-bench"]]


def check_synopsis(words: tuple[str, ...] | list[str]) -> str | None:
    """None when a synopsis names a real command and only its options; else what is wrong. The words after
    ``ann-bench`` that name subcommands lead to the command; every ``-x``/``--name`` after them must be one
    of its options, and a value written ``a|b|c`` right after an option with choices must list only those."""
    from ann_bench.cli import cli

    cmd: click.Command = cli
    path, rest = ["ann-bench"], list(words)
    while isinstance(cmd, click.Group):
        if cmd.invoke_without_command and (not rest or rest[0] not in cmd.commands):
            break  # a group that is a command too: its own options follow
        if not rest or rest[0] not in cmd.commands:
            return f"{' '.join(path)}: no subcommand {rest[:1]} (one of: {', '.join(sorted(cmd.commands))})"
        path.append(rest[0])
        cmd = cmd.commands[rest.pop(0)]
    options = {opt: param for param in cmd.params if isinstance(param, click.Option)
               for opt in (*param.opts, *param.secondary_opts)}
    options.update({"-h": None, "--help": None})
    for i, word in enumerate(rest):
        for name in _SYNOPSIS_OPTION.findall(word):
            if name not in options:
                return f"{' '.join(path)} has no option {name} (options: {', '.join(sorted(options))})"
        option = options.get(word.strip("[]()"))
        if option is not None and isinstance(option.type, click.Choice) and i + 1 < len(rest) \
                and "|" in rest[i + 1]:
            values = rest[i + 1].strip("[]()").split("|")
            wrong = [v for v in values if v not in option.type.choices and v not in ("…", "...")]
            if wrong:
                return f"{' '.join(path)} {word}: {wrong} not among {list(option.type.choices)}"
    return None


def synopsis_problems(samples) -> list[str]:
    out = []
    for sample in samples:
        message = check_synopsis(sample.args)
        if message is not None:
            out.append(f"{sample.source}:{sample.line}: {sample}: {message}")
    return out


def doc_files() -> list[Path]:
    return [README, *sorted(DOCS.rglob("*.md"))]


# --- 1. the site builds -------------------------------------------------------------------------------


def test_mkdocs_build_strict(tmp_path):
    try:
        import mkdocs  # noqa: F401
        import material  # noqa: F401
    except ImportError:
        pytest.fail('mkdocs-material is not installed: pip install -e ".[docs]" '
                    '(or pip install "mkdocs-material>=9.5")')
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(ROOT / "mkdocs.yml"),
         "-d", str(tmp_path / "site")],
        capture_output=True, text=True, timeout=300, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (tmp_path / "site" / "index.html").is_file()


def test_readme_is_a_front_page_whose_links_resolve():
    text = README.read_text()
    assert len(text.splitlines()) <= 150, "README.md is the front page: at most 150 lines, the rest goes to docs/"
    targets = re.findall(r"\]\(([^)\s]+)\)", text)
    assert targets, "the README links into docs/"
    missing = [t for t in targets if not re.match(r"[a-z]+:", t)
               and not (ROOT / t.split("#")[0]).exists()]
    assert not missing, f"README.md links to files that do not exist: {missing}"


# --- 2. every command sample parses ------------------------------------------------------------------


def test_every_command_sample_parses_against_the_cli():
    samples = [s for path in doc_files() for s in commands_in(path.read_text(), path.relative_to(ROOT).as_posix())]
    assert len(samples) > 40, f"only {len(samples)} command samples found: is the extraction broken?"
    found = problems(samples)
    assert not found, "stale command samples:\n" + "\n".join(found)


STALE_PAGE = """\
Some prose with `ann-bench run --nonsense` in it (inline code: not a sample).

```bash
F=/data     # an assignment, no command
ann-bench data synth d.hdf5 --n 1000 --dim 8   # fine
pip install -e . && ann-bench run --dataset d.hdf5 --backend hnsw --frobnicate 3
ANN_BENCH_CACHE=/x ann-bench run --dataset d.hdf5 \\
    --backend hnsw --mode sometimes
ann-bench best --max-memory 2GB
ann-bench plot -o p.png -k ten
ann-bench indexx build -o d
```

```
ann-bench results --dataset d.hdf5
hnsw[hnswlib] M=16 ef=40 batch: recall=0.9776 ann-bench --bogus (output: not a command line)
```

```console
$ ann-bench data info d.hdf5 --jsn
wrote d.hdf5
```

```python
ann_bench = "ann-bench run --not-parsed"
```
"""


def test_the_sample_check_reports_stale_samples():
    samples = commands_in(STALE_PAGE, "docs/stale.md")
    assert [s.line for s in samples] == [5, 6, 7, 9, 10, 11, 15, 20]
    found = problems(samples)
    assert len(found) == 6, found
    assert found[0].startswith("docs/stale.md:6: ann-bench run --dataset d.hdf5 --backend hnsw --frobnicate 3: ")
    assert "--frobnicate" in found[0]
    assert found[1].startswith("docs/stale.md:7: ") and "sometimes" in found[1]  # a value outside the choices
    assert found[2].startswith("docs/stale.md:9: ") and "--recall" in found[2]  # a required option missing
    assert found[3].startswith("docs/stale.md:10: ") and "ten" in found[3]  # not an integer
    assert found[4].startswith("docs/stale.md:11: ") and "indexx" in found[4]  # no such command
    assert found[5].startswith("docs/stale.md:20: ") and "--jsn" in found[5]


def test_every_synopsis_names_real_options():
    samples = [s for path in doc_files() for s in synopses_in(path.read_text(), path.relative_to(ROOT).as_posix())]
    assert len(samples) > 10, f"only {len(samples)} synopses found: is the extraction broken?"
    found = synopsis_problems(samples)
    assert not found, "stale synopses:\n" + "\n".join(found)


def test_the_synopsis_check_reports_stale_synopses():
    page = ("```text\n"
            "ann-bench plot -o FILE.png [-y qps|build_s|…] [--raw/--no-raw] [--dataset D]\n"
            "ann-bench plot -o FILE.png [--colour C]\n"
            "ann-bench plot [-y qps|speed]\n"
            "ann-bench index bild -o DIR\n"
            "```\n"
            "```\nann-bench plot [--colour C]\n```\n")  # an output block: not a synopsis
    samples = synopses_in(page, "docs/x.md")
    assert [s.line for s in samples] == [2, 3, 4, 5]
    found = synopsis_problems(samples)
    assert len(found) == 3, found
    assert "--colour" in found[0] and "speed" in found[1] and "bild" in found[2]
    assert commands_in(page, "docs/x.md")[0].line == 8  # a synopsis is not parsed as a command line


def test_comments_and_chains_are_split_as_the_shell_does():
    (sample,) = commands_in("```bash\nann-bench run --backend 'a#b' --build M=8  # --nonsense\n```\n", "x.md")
    assert sample.args == ("run", "--backend", "a#b", "--build", "M=8")
    assert check_command(sample.args) is None
    assert check_command(("run", "--help")) is None


# --- 3. the marked examples run, in the order the page gives them -------------------------------------

RUN_MARKER = "<!-- test: run -->"
RUN_TIMEOUT_S = 300  # per block; the whole docs test takes about 75 s on 2 cores


@dataclass(frozen=True)
class RunBlock:
    """A shell block marked with ``<!-- test: run -->``: its page, the line of its fence and its script."""

    source: str
    line: int
    script: str


def marked_blocks(text: str, source: str) -> list[RunBlock]:
    """The shell blocks of a markdown text that follow a ``<!-- test: run -->`` line (blank lines between
    them allowed), in page order. A marker followed by anything but a shell block is an error: it would
    silently run nothing."""
    lines = text.splitlines()
    blocks = []
    for i, line in enumerate(lines):
        if line.strip() != RUN_MARKER:
            continue
        j = i + 1
        while j < len(lines) and not lines[j].strip():
            j += 1
        found = list(_code_blocks("\n".join(lines[j:]))) if j < len(lines) and _FENCE.match(lines[j]) else []
        assert found, f"{source}:{i + 1}: {RUN_MARKER} is not followed by a code block"
        lang, body = found[0]
        assert lang in SHELL_LANGS, f"{source}:{j + 1}: the block after {RUN_MARKER} is {lang!r}, not a shell block"
        blocks.append(RunBlock(source, j + 1, "\n".join(line for _, line in body)))
    return blocks


def runnable_pages() -> dict[str, list[RunBlock]]:
    pages = {}
    for path in doc_files():
        name = path.relative_to(ROOT).as_posix()
        blocks = marked_blocks(path.read_text(), name)
        if blocks:
            pages[name] = blocks
    return pages


def run_env(tmp_path: Path) -> dict[str, str]:
    """The environment the marked blocks run in: everything they write stays under tmp_path. HOME, the cache
    (``ANN_BENCH_CACHE``, ``XDG_CACHE_HOME``), matplotlib's and numba's caches point there; ``ann-bench`` and
    ``python`` are this interpreter's (found without a shim that reads HOME); plots draw without a display;
    tables are laid out for 100 columns."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    bin_dir = str(Path(sys.executable).parent)
    return {**os.environ, "HOME": str(home), "ANN_BENCH_CACHE": str(tmp_path / "cache"),
            "XDG_CACHE_HOME": str(home / ".cache"), "MPLCONFIGDIR": str(home / ".config" / "matplotlib"),
            "NUMBA_CACHE_DIR": str(home / ".cache" / "numba"), "MPLBACKEND": "Agg", "COLUMNS": "100",
            "PATH": os.pathsep.join([bin_dir, os.environ.get("PATH", "")]),
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}


def run_blocks(blocks: list[RunBlock], tmp_path: Path) -> Path:
    """Runs each block with ``bash -euo pipefail`` in one working directory, in order, so a block may use
    what an earlier one made; fails on the first block that exits non-zero or does not write its ``-o`` file.
    Returns the working directory."""
    exe = shutil.which("ann-bench", path=str(Path(sys.executable).parent)) or shutil.which("ann-bench")
    assert exe is not None, "ann-bench is not on PATH: pip install -e ."
    env, work = run_env(tmp_path), tmp_path / "work"
    work.mkdir()
    for block in blocks:
        proc = subprocess.run(["bash", "-euo", "pipefail", "-c", block.script], cwd=work, env=env,
                              capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
        assert proc.returncode == 0, (f"{block.source}:{block.line}: exit {proc.returncode}\n{block.script}\n"
                                      f"--- stdout\n{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-4000:]}")
        for sample in commands_in(f"```bash\n{block.script}\n```\n", block.source):
            if "-o" in sample.args:
                name = sample.args[sample.args.index("-o") + 1]
                assert (work / name).exists(), f"{block.source}:{block.line}: {sample} wrote no {name}"
    return work


RUNNABLE = runnable_pages()


def test_the_pages_that_promise_runnable_examples_have_them():
    expected = {"README.md", "docs/quickstart.md", "docs/guide/data.md", "docs/guide/results.md",
                "docs/guide/best.md", "docs/guide/ship.md", "docs/guide/tune.md"}
    assert expected <= set(RUNNABLE), f"no {RUN_MARKER} block on {sorted(expected - set(RUNNABLE))}"
    readme = "\n".join(b.script for b in RUNNABLE["README.md"])
    assert "ann-bench run" in readme and "ann-bench search" in readme, "the README's quick start lost its job"


@pytest.mark.parametrize("page", sorted(RUNNABLE))
def test_marked_examples_run_in_page_order(page, tmp_path):
    """Each page's ``<!-- test: run -->`` blocks, in order, in one temporary directory. Marked are the examples
    that run in seconds on small data: the README's and the quick start's sweeps; data synth, info and
    import; results, plot and report; best; index build and search; tune with a budget of seconds. Each page
    starts by making its own small set. Left parse-only (checked by the sample test above, never run):
    blocks that need big data or downloads (data fetch, SIFT1M, the 1M benchmarks), Debian packages
    (Fashion-MNIST, WordNet), torch models (embed, train, evaluate of embedded sets), a Ray cluster, or a
    long benchmark script, and the sweep of the 50,000 x 64 default set (``ann-bench run --backend hnsw``)."""
    run_blocks(RUNNABLE[page], tmp_path)


def test_a_marked_block_that_fails_names_its_page_and_line(tmp_path):
    page = (f"Intro.\n\n{RUN_MARKER}\n```bash\nmkdir made\n```\n\ntext\n\n{RUN_MARKER}\n\n"
            "```bash\ntest -d made   # the first block's directory is still there\nfalse\n```\n")
    blocks = marked_blocks(page, "docs/x.md")
    assert [b.line for b in blocks] == [4, 12]
    with pytest.raises(AssertionError, match=r"docs/x.md:12: exit 1"):
        run_blocks(blocks, tmp_path)
    with pytest.raises(AssertionError, match="not a shell block"):
        marked_blocks(f"{RUN_MARKER}\n```python\nprint()\n```\n", "docs/y.md")
