"""One console for all output: results to stdout, progress and errors to stderr, through rich."""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager

import click
from rich.console import Console
from rich.markup import escape
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, ProgressColumn, SpinnerColumn,
                           TimeElapsedColumn)
from rich.table import Column
from rich.text import Text

from ann_bench.bench.jobs import Reporter


class _Console(Console):
    """``print(..., soft_wrap=True)`` means "one line, however long": so it stays in a pipe or a file (grep
    finds it whole), while in a terminal, which would cut it mid-word at its edge, it wraps at word boundaries."""

    def print(self, *objects, soft_wrap=None, **kwargs) -> None:
        super().print(*objects, soft_wrap=False if soft_wrap and self.is_terminal else soft_wrap, **kwargs)


# Pipes and files get a wide console so result tables are not truncated at 80 columns, unless $COLUMNS says
# how wide (rich reads it).
out = _Console(highlight=False, width=None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 200)
err = _Console(stderr=True, highlight=False)


class CliError(click.ClickException):
    """An expected failure: one line on stderr, exit code 2, no traceback."""

    exit_code = 2

    def show(self, file=None) -> None:
        err.print(f"[bold red]error:[/] {escape(self.message)}", soft_wrap=True)  # one line, never wrapped


def abort(message: str) -> None:
    raise CliError(message)


class DescriptionColumn(ProgressColumn):
    """The task's description in whatever width the other columns leave (the table expands to the terminal),
    cut with "…" rather than wrapped: the timers and counts on the right always stay whole."""

    def __init__(self):
        super().__init__(table_column=Column(ratio=1, no_wrap=True, overflow="ellipsis"))

    def render(self, task) -> Text:
        return Text(task.description, no_wrap=True, overflow="ellipsis")


class RateColumn(ProgressColumn):
    """Items per second of a task with a total (embedded items, ground-truth queries), blank otherwise."""

    def render(self, task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("" if speed is None or task.total is None else f"{speed:,.0f}/s", style="progress.data.speed")


class CountColumn(MofNCompleteColumn):
    """"3/10" for a task with a total; blank for one without (a build, a tune's trial): "0/?" says nothing."""

    def render(self, task) -> Text:
        return Text("") if task.total is None else super().render(task)


class EtaColumn(ProgressColumn):
    """"ETA 0:01:23" for a task with a total once it has a rate; blank otherwise (a build, a download of
    unknown size)."""

    def render(self, task) -> Text:
        if task.total is None or task.finished or task.time_remaining is None:
            return Text("")
        seconds = int(task.time_remaining)
        return Text(f"ETA {seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}", style="progress.remaining")


class RichReporter(Reporter):
    """Progress bars for ground truth, builds and sweeps on stderr; result lines above them."""

    def __init__(self, verbose: bool = True):
        self.verbose = verbose
        self.progress = Progress(
            SpinnerColumn(), DescriptionColumn(), BarColumn(bar_width=10), CountColumn(), RateColumn(),
            TimeElapsedColumn(), EtaColumn(), console=err, transient=True, expand=True,
            disable=not err.is_terminal,  # a pipe or a file gets the lines, not bars (nor the newline a stop writes)
        )
        self._builds: dict[str, int] = {}  # build label -> its progress task

    def __enter__(self) -> RichReporter:
        return self  # the display starts with the first task: an early error prints no blank progress line

    def __exit__(self, *exc) -> None:
        if self.progress.live.is_started:  # stopping a display that never started would print a blank line
            self.progress.stop()

    @contextmanager
    def task(self, description: str, total: int | None):
        self.progress.start()  # idempotent
        task_id = self.progress.add_task(description, total=total)  # plain text (DescriptionColumn): no markup
        try:
            yield lambda n=1: self.progress.advance(task_id, n)
        finally:
            if total is None:
                self.progress.update(task_id, total=1, completed=1)
            self.progress.remove_task(task_id) if description.startswith("build") else None

    def log(self, message: str) -> None:
        if self.verbose:
            self.progress.console.print(message, markup=False, soft_wrap=True)

    def note(self, message: str) -> None:
        self.progress.console.print(message, markup=False, soft_wrap=True)  # -q hides configurations, not this

    def build_started(self, label: str) -> None:
        """A bar for the build: elapsed time, and items inserted when the library reports them."""
        self.progress.start()
        self._builds[label] = self.progress.add_task(f"building {label}", total=None)

    def build_progress(self, label: str, done: int, total: int) -> None:
        if label in self._builds:
            self.progress.update(self._builds[label], completed=done, total=total)

    def build_ended(self, label: str) -> None:
        task_id = self._builds.pop(label, None)
        if task_id is not None:
            self.progress.remove_task(task_id)
