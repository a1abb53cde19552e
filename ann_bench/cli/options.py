"""Options shared by several commands."""

from __future__ import annotations

from pathlib import Path

import click

from ann_bench.config import DEFAULT_RESULTS

force_option = click.option(
    "--force", is_flag=True,
    help="Replace an existing output file that is not of this command's kind (never an input of the command, "
         "a results store or a dataset: those are always refused).")

results_option = click.option(
    "--results", "results_path", type=click.Path(dir_okay=False, path_type=Path), default=DEFAULT_RESULTS,
    help=f"SQLite results store [{DEFAULT_RESULTS}].")  # one token: --help never splits the path across lines


def dataset_filter(value: str | None) -> str | None:
    """A --dataset filter for stored results: an HDF5 path becomes its content hash; else a name or hash."""
    if value is None:
        return None
    path = Path(value).expanduser()
    if path.is_file():
        from ann_bench.data.vectorset import VectorSet

        with VectorSet(path) as vs:
            return vs.content_hash()
    return value
