"""Options shared by several commands."""

from __future__ import annotations

from pathlib import Path

import click

from ann_bench.config import DEFAULT_RESULTS
from ann_bench.data.arrays import SEED_MAX, THREADS_MAX

# Seeds and thread counts every command takes, in the ranges the libraries accept (one line, exit 2, outside):
# numpy/torch seeds are 32-bit; beyond THREADS_MAX threads OpenMP and std::thread pools crash without a word.
SEED = click.IntRange(0, SEED_MAX)
THREADS = click.IntRange(1, THREADS_MAX)

force_option = click.option(
    "--force", is_flag=True,
    help="Replace the named output file even when ann-bench did not write it (never an input of the command, a "
         "results store, or an HDF5 file unless the command writes datasets; files written beside the output "
         "are never replaced).")

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


def stored_records(store, dataset: str | None, **filters) -> list:
    """``store.records`` for a --dataset value (a file, name or hash prefix) and other filters. A --dataset that
    matches no stored set is refused in one line naming the sets the store holds, rather than answered with an
    empty table."""
    from ann_bench.errors import InputError

    key = dataset_filter(dataset)
    records = store.records(dataset=key, **filters)
    if dataset is not None and not records and not store.records(dataset=key):
        held = store.datasets()
        sets = "; ".join(f"{d['dataset_name']} ({d['dataset_hash'][:8]}, {d['rows']} row(s))" for d in held)
        raise InputError(f"no results for --dataset {dataset!r} in {str(store.path)!r}, which holds "
                         + (f"{len(held)} set(s): {sets}; pass one's name, hash or file" if held else
                            "no results yet; run `ann-bench run` first"))
    return records
