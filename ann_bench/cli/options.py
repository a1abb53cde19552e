"""Options shared by several commands."""

from __future__ import annotations

import shlex
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

pin_cpus_option = click.option(
    "--pin-cpus", type=click.IntRange(1, THREADS_MAX), default=None, metavar="N",
    help="Pin the worker's timed searches to the N least busy CPUs (os.sched_setaffinity; N >= --threads): no "
         "migrations between cores mid-measurement. The row records which CPUs.")

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


filter_option = click.option(
    "--filter", "filter_spec", default=None, metavar="SPEC",
    help="The rows of a filtered search (`run --filter SPEC`), each strategy as its own line [default: the "
         "unfiltered rows].")


def by_strategy(records: list) -> list:
    """Filtered rows with their strategy in the implementation's place ("hnswlib, post:8"), so that every table,
    front and answer keeps each strategy apart; unfiltered rows unchanged."""
    import dataclasses

    return [dataclasses.replace(r, impl=f"{r.impl}, {r.filter_strategy}") if r.filter_spec else r for r in records]


def filtered_records(store, dataset: str | None, filter_spec: str, backend: str | None = None,
                     apart: bool = True) -> list:
    """The stored rows of every filter ``filter_spec`` names (``selectivity=0.5,0.1`` names two; ``run --filter``'s
    forms), with ``apart`` each strategy apart (:func:`by_strategy`); InputError naming the stored filters when a
    named one has no rows."""
    from ann_bench.bench.filters import parse_filters
    from ann_bench.errors import InputError

    names = parse_filters([filter_spec])
    records = []
    for name in names:
        rows = stored_records(store, dataset, backend=backend, filter_spec=name)
        if not rows:
            held = sorted({r.filter_spec for r in store.records(dataset=dataset_filter(dataset), filter_spec=None)
                           if r.filter_spec})
            raise InputError(f"no rows of filter {name!r} in {str(store.path)!r}"
                             + (f"; it holds filters {', '.join(held)}" if held else
                                "; it holds no filtered rows: run `ann-bench run --filter SPEC` first"))
        records += rows
    return by_strategy(records) if apart else records


def filtered_note(store, dataset: str | None, filter_spec: str | None) -> str | None:
    """One line naming the filters whose rows a command left out (it shows the unfiltered ones), or None."""
    if filter_spec is not None:
        return None
    names = sorted({r.filter_spec for r in store.records(dataset=dataset_filter(dataset), filter_spec=None)
                    if r.filter_spec})
    if not names:
        return None
    return (f"rows of filtered searches are kept apart (filters {', '.join(names)}): list them with "
            f"`ann-bench results --filter {shlex.quote(names[0])}`")


def stored_records(store, dataset: str | None, **filters) -> list:
    """``store.records`` for a --dataset value (a file, name or hash prefix) and other filters. A --dataset that
    matches no stored set is refused in one line naming the sets the store holds, rather than answered with an
    empty table."""
    from ann_bench.errors import InputError

    key = dataset_filter(dataset)
    records = store.records(dataset=key, **filters)
    if dataset is not None and not records and not store.records(dataset=key, filter_spec=None, stream=None):
        held = store.datasets()
        sets = "; ".join(f"{d['dataset_name']} ({d['dataset_hash'][:8]}, {d['rows']} row(s))" for d in held)
        raise InputError(f"no results for --dataset {dataset!r} in {str(store.path)!r}, which holds "
                         + (f"{len(held)} set(s): {sets}; pass one's name, hash or file" if held else
                            "no results yet; run `ann-bench run` first"))
    return records



_MODEL_OPTIONS = [
    click.option("--layer", default=None,
                 help="torchvision/timm: which output is the embedding: features (the penultimate layer, pooled), "
                      "logits, or a module name (`model.named_modules()`) [features]; onnx: an output name."),
    click.option("--pooling", type=click.Choice(["mean", "cls"]), default=None,
                 help="hf:DIR and onnx text models: pool the token embeddings by their mean (attention-masked) or "
                      "take the first (CLS) token [mean]."),
    click.option("--num-classes", type=click.IntRange(1), default=None,
                 help="torchvision/timm: the classifier width your weights were trained with [read from them]."),
    click.option("--tokenizer", default=None, type=click.Path(path_type=Path),
                 help="onnx: a local tokenizer directory (Hugging Face save_pretrained) for a text model."),
    click.option("--preprocess", default=None, metavar="SETTINGS",
                 help="Image models: override the architecture's preprocessing, e.g. "
                      "resize=256,crop=224,mean=0.485/0.456/0.406,std=0.229/0.224/0.225."),
]


def model_options(f):
    """The options that shape how a user's model runs: ``embed``'s, and ``search --model``'s for its queries
    (which must be embedded exactly as the indexed vectors were)."""
    for option in reversed(_MODEL_OPTIONS):
        f = option(f)
    return f


def build_model_options(layer, pooling, num_classes, tokenizer, preprocess):
    """An ``embeddings.ModelOptions`` from the values of :func:`model_options`."""
    from embeddings.base import ModelOptions, parse_preprocess

    return ModelOptions(layer=layer, pooling=pooling, num_classes=num_classes,
                        tokenizer=str(tokenizer) if tokenizer is not None else None,
                        preprocess=parse_preprocess(preprocess))
