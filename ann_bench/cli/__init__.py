"""The ``ann-bench`` command: a root click group, one module per command (group). Thin: parse, call the
library, render with rich. Expected failures (``InputError``) become one line and exit code 2."""

from __future__ import annotations

import errno
import os

import click

from ann_bench import __version__
from ann_bench.cli.console import CliError
from ann_bench.errors import InputError


class AnnBenchGroup(click.Group):
    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except InputError as exc:
            raise CliError(str(exc)) from None
        except click.UsageError as exc:  # click's own parse errors: one line too, with where to look
            where = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx is not None else ""
            raise CliError(exc.format_message() + where) from None
        except OSError as exc:
            # A name the file system refuses, wherever it was given (an input, a folder, a name derived from one):
            # the outputs are checked before any work, this catches the rest in one line.
            if exc.errno not in (errno.ENAMETOOLONG, errno.EILSEQ):
                raise
            name = str(exc.filename or "")
            shown = name if len(name) <= 60 else f"{name[:28]}...{name[-28:]}"
            why = "too long" if exc.errno == errno.ENAMETOOLONG else "not valid on this file system"
            # the byte count of its longest component (the one over the limit), not of the whole path
            longest = max((len(c) for c in os.fsencode(name).split(b"/")), default=0)
            raise CliError(f"file name {shown!r} ({longest} bytes) is {why}: the file system allows "
                           "255 bytes per name; choose a shorter name") from None


@click.group(cls=AnnBenchGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ann-bench")
def cli() -> None:
    """Benchmark approximate nearest-neighbour indices on your own vectors."""


def _register() -> None:
    from ann_bench.cli import (backends, best, data, embed, evaluate, index, plot, report, results, run, stream, train,
                               tune)

    cli.add_command(data.data)
    cli.add_command(embed.embed)
    cli.add_command(embed.embedders)
    cli.add_command(train.train)
    cli.add_command(backends.backends)
    cli.add_command(run.run)
    cli.add_command(results.results)
    cli.add_command(plot.plot)
    cli.add_command(report.report)
    cli.add_command(best.best)
    cli.add_command(tune.tune)
    cli.add_command(stream.stream)
    cli.add_command(evaluate.evaluate)
    cli.add_command(index.index)
    cli.add_command(index.search)


_register()


def _terminate(signum, frame) -> None:
    """SIGTERM ends the command like Ctrl-C does: as an exception, so every temporary file is removed on the
    way out (see :func:`ann_bench.atomic.atomic_path`) and worker processes are stopped."""
    from ann_bench.atomic import request_termination

    request_termination(128 + signum)
    raise SystemExit(128 + signum)


def main() -> None:
    import signal

    signal.signal(signal.SIGTERM, _terminate)
    cli(prog_name="ann-bench")
