"""``ann-bench evaluate SET.hdf5``: metric-learning evaluation of a labelled vector set, exact and optionally
through one index configuration."""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.markup import escape
from rich.table import Table

from ann_bench.cli.console import out
from ann_bench.cli.options import SEED, THREADS
from ann_bench.data.vectorset import VectorSet
from ann_bench.errors import InputError
from ann_bench.evaluate import DEFAULT_DEPTH, evaluate_set, left_out_notes, metric_rows, undefined_notes
from ann_bench.bench.runner import parse_param_specs


def _single_values(specs, option: str) -> dict[str, str]:
    out_params = {}
    for backend, name, values in parse_param_specs(specs, option):
        if backend is not None or len(values) != 1:
            raise InputError(f"{option} takes one NAME=VALUE per parameter here (one configuration), got "
                             f"{(backend + ':') if backend else ''}{name}={','.join(values)}")
        out_params[name] = values[0]
    return out_params


@click.command()
@click.argument("dataset", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--reference", type=click.Choice(["train", "test"]), default="train", show_default=True,
              help="train: rank the train vectors for each test vector (a set from embed/import: database and "
                   "queries); test: rank the test vectors among themselves, each left out (train's protocol).")
@click.option("--thresholds", default=None, metavar="T1,T2,...",
              help="Verification thresholds, in the set's distance [the 10/25/50/75/90 % quantiles of the test "
                   "pairs' distances].")
@click.option("--backend", default=None, help="Also rank through this index (NAME or NAME:IMPL).")
@click.option("--build", "build_specs", multiple=True, metavar="NAME=V", help="Build parameter of --backend.")
@click.option("--search", "search_specs", multiple=True, metavar="NAME=V", help="Search parameter of --backend.")
@click.option("--depth", type=int, default=None,
              help=f"How deep the index ranks [{DEFAULT_DEPTH}]; figures that need more (MAP@R: the class size; MAP, "
                   "MRR: the whole ranking) are left out of its column, and MAP@R and MRR are also given to this "
                   "depth, exact and through the index. The exact column is always the whole exact ranking.")
@click.option("--seed", type=SEED, default=0, show_default=True, help="Seed of k-means, the pairs and the index.")
@click.option("--threads", type=THREADS, default=1, show_default=True, help="Threads of the index.")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
def evaluate(dataset: Path, reference: str, thresholds: str | None, backend: str | None, build_specs, search_specs,
             depth: int | None, seed: int, threads: int, as_json: bool) -> None:
    """Recall@K (K = 1 … 32), Precision@1/@5, MAP, MAP@R, MRR, NMI, AMI and verification accuracy of a labelled
    vector set (one made by embed, data import or data combine), exactly and, with --backend, through that
    index configuration."""
    from embeddings.training.evaluate import parse_thresholds

    if (build_specs or search_specs) and backend is None:
        raise InputError("--build/--search configure an index: add --backend NAME")
    parsed = parse_thresholds(thresholds)
    build, search = _single_values(build_specs, "--build"), _single_values(search_specs, "--search")
    with VectorSet(dataset) as vs:
        if backend is not None:
            from ann_bench.backends import get_backend

            name, _, impl = backend.partition(":")
            cls = get_backend(name, impl or None)
            build, search = cls.validate_build_params(build), cls.validate_search_params(search)
        result = evaluate_set(vs, reference=reference, thresholds=parsed, backend=backend, build=build,
                              search=search, depth=depth, seed=seed, threads=threads)
    if as_json:
        click.echo(json.dumps(result.as_json(), indent=1, default=str))
        return
    against = (f"the {result.n_reference:,} train vectors" if reference == "train" else "each other")
    # The title is a line of its own (as every table's in the CLI): a rich table title is centred on the table's
    # width and wrapped there, indenting its second line to the middle of a narrow terminal.
    index = ""
    if result.index is not None:  # named in full in the title; the column's header is the backend alone
        parts = [result.backend, ",".join(f"{k}={v}" for k, v in result.build.items()),
                 ",".join(f"{k}={v}" for k, v in result.search.items())]
        index = f"; {' '.join(p for p in parts if p)}: its first {result.depth}"
    out.print(f"[italic]{escape(result.dataset)}: {result.n_queries:,} test vectors against {against}, "
              f"{result.metric}; exact: the whole ranking{escape(index)}[/]", soft_wrap=True)
    table = Table()
    table.add_column("metric")
    table.add_column("exact", justify="right")
    if result.index is not None:
        table.add_column(escape(f"{result.backend} to depth {result.depth}"), justify="right")
    for label, exact, through in metric_rows(result):
        table.add_row(escape(label), exact, *([through or ""] if result.index is not None else []))
    out.print(table)
    for note in undefined_notes(result):
        out.print(escape(note), soft_wrap=True)
    for note in left_out_notes(result):
        out.print(escape(note), soft_wrap=True)
    if result.index is not None:
        out.print("NMI, AMI and verification are figures of the vectors: the index does not change them.",
                  soft_wrap=True)
        out.print(f"index built in {result.build_s:.2f} s; its searches took {result.search_s:.2f} s "
                  "(not a benchmark: `ann-bench run` measures speed)", soft_wrap=True)
