"""``ann-bench index build|info`` and ``ann-bench search``: carry a configuration out of the benchmark into an
application — a saved index directory, and neighbours (keys, ids, distances) for a file of queries."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
from rich.markup import escape

from ann_bench.cli.console import RichReporter, err, out
from ann_bench.cli.options import SEED, THREADS, build_model_options, force_option, model_options
from ann_bench.distances import METRICS
from ann_bench.errors import InputError
from ann_bench.bench.metrics import fmt_recall


def single_params(specs: tuple[str, ...], option: str) -> dict[str, str]:
    """``NAME=VALUE`` strings (several per string, separated by spaces or ';') as a dict; one value each."""
    from ann_bench.bench.runner import parse_param_specs

    params: dict[str, str] = {}
    for backend, name, values in parse_param_specs(specs, option):
        if backend is not None:
            raise InputError(f"{option} {backend}:{name}=...: an index has one backend; write {option} {name}=VALUE")
        if len(values) != 1:
            raise InputError(f"{option} {name}={','.join(values)}: an index takes one value per parameter (a sweep "
                             "is `ann-bench run`)")
        params[name] = values[0]
    return params


@click.group()
def index() -> None:
    """Build an index directory (the library's own file + a manifest + item keys) that `ann-bench search` and
    `ann_bench.open_index` load without rebuilding."""


@index.command("build")
@click.option("--dataset", default=None, type=click.Path(path_type=Path),
              help="An HDF5 vector set (its train split is indexed, with its item keys) or a vector file (.npy, "
                   ".fvecs, .bvecs, .fbin, .u8bin, .i8bin, IDX; needs --metric). With --from-best: [the set of the "
                   "store's most recent run].")
@click.option("--backend", default=None, help="Backend (`ann-bench backends`); or use --from-best.")
@click.option("--impl", default=None, help="Implementation of the backend [its default].")
@click.option("--build", "build_specs", multiple=True, metavar="NAME=VALUE",
              help="A build parameter, e.g. --build M=16 --build ef_construction=200 [the backend's defaults].")
@click.option("--search", "search_specs", multiple=True, metavar="NAME=VALUE",
              help="A default search parameter stored with the index, e.g. --search ef=64 [the backend's defaults].")
@click.option("--from-best", "from_best", is_flag=True,
              help="Take the backend and parameters `ann-bench best --recall R` picks from --results for these "
                   "vectors; their measured recall and QPS go into the manifest.")
@click.option("--recall", type=float, default=None, help="With --from-best: the recall@k target, e.g. 0.95.")
@click.option("--results", "results_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="With --from-best: the results store [results/ann-bench.sqlite].")
@click.option("--max-memory", default=None, metavar="SIZE",
              help="With --from-best: maximum serialized index size, e.g. 512MB (MB = 10^6 bytes).")
@click.option("--max-rss", default=None, metavar="SIZE", help="With --from-best: maximum measured build peak RSS.")
@click.option("--metric", default=None, help=f"Metric of a vector file: {', '.join(METRICS)}.")
@click.option("--keys", default=None, type=click.Path(path_type=Path),
              help="Item keys (one per line, or a 1-D .npy) [the set's keys; row numbers for a vector file].")
@click.option("-k", "k", type=int, default=None,
              help="k of the recall check on the set's test queries (when it has ground truth) [10]; with "
                   "--from-best, the stored k whose recall must reach --recall [the only one stored].")
@click.option("--threads", type=THREADS, default=1, show_default=True, help="Threads for the build and the check.")
@click.option("--seed", type=SEED, default=0, show_default=True, help="Seed of the build.")
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="The index directory to write (created; replaced only with --force and only if ann-bench "
                   "wrote it and nothing else is in it).")
@click.option("--force", is_flag=True,
              help="Replace an existing index directory that ann-bench wrote, verified and holding nothing else "
                   "(never any other directory, never a file of yours).")
def build_cmd(dataset: Path | None, backend: str | None, impl: str | None, build_specs: tuple[str, ...],
              search_specs: tuple[str, ...], from_best: bool, recall: float | None, results_path: Path | None,
              max_memory: str | None, max_rss: str | None, metric: str | None, keys: Path | None, k: int | None,
              threads: int, seed: int, output: Path, force: bool) -> None:
    """Build one index over a vector set and save it as a directory: the library's native file, the item keys,
    and a manifest (backend, parameters, metric, dimension, n, the vectors' hash, library versions, index
    sha256, and — with --from-best — the recall/QPS the store measured for this configuration)."""
    from ann_bench.config import DEFAULT_RESULTS
    from ann_bench.index import build_index_dir
    from ann_bench.bench.runner import parse_size

    if from_best and recall is None:
        raise InputError("--from-best needs --recall R (e.g. --recall 0.95)")
    if recall is not None and not from_best:
        raise InputError("--recall applies with --from-best")
    with RichReporter() as rep, rep.task("building the index", None):
        saved = build_index_dir(
            dataset, output, backend=backend, impl=impl, build=single_params(build_specs, "--build"),
            search=single_params(search_specs, "--search"), metric=metric, keys=keys,
            from_best=recall if from_best else None,
            results=(results_path or DEFAULT_RESULTS) if from_best else results_path,
            max_memory=parse_size(max_memory) if max_memory else None,
            max_rss=parse_size(max_rss) if max_rss else None, k=k, threads=threads, seed=seed, force=force)
    m = saved.manifest
    out.print(f"wrote {escape(str(saved.path))}: {escape(m['backend'] + '[' + m['impl'] + ']')} "
              f"{escape(_params(m['build_params']))}, "
              f"{m['n']:,} x {m['dimension']}-d {m['metric']} of {escape(_source(m))}, built in {m['build_s']:.2f} s, index "
              f"{m['index_file']['bytes'] / 1e6:,.1f} MB{'' if m['keys'] else ', no item keys (row numbers)'}",
              soft_wrap=True)
    _print_figures(m)


def _source(m: dict[str, Any]) -> str:
    src = m.get("source") or {}
    return str(src.get("dataset_name") or Path(src.get("dataset") or src.get("vectors") or "vectors").name)


def _params(params: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in params.items()) or "-"


def _print_figures(m: dict[str, Any]) -> None:
    search = _params(m["search_params"])
    if "measured" in m:
        r = m["measured"]
        out.print(f"measured in the store: recall@{r['k']} {fmt_recall(r['recall'])} at {r['qps']:,.0f} QPS "
                  f"({r['mode']}, {r['threads']} thread{'s' if r['threads'] != 1 else ''}), search {escape(search)}",
                  soft_wrap=True)
    if "recall_check" in m:
        c = m["recall_check"]
        out.print(f"recall check: recall@{c['k']} {fmt_recall(c['recall'])} on the set's {c['queries']:,} test "
                  f"queries at search {escape(search)}", soft_wrap=True)
        if "measured" in m and m["measured"]["recall"] is not None \
                and c["recall"] < m["measured"]["recall"] - 0.01 and c["k"] == m["measured"]["k"]:
            err.print(f"[yellow]warning:[/] the rebuilt index recalls {fmt_recall(c['recall'])}, below the store's "
                      f"{fmt_recall(m['measured']['recall'])} for this configuration (a non-deterministic build?)",
                      soft_wrap=True)


@index.command("info")
@click.argument("directory", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON.")
def info_cmd(directory: Path, as_json: bool) -> None:
    """The manifest of an index directory, after verifying it (the manifest's digest, the keys' and the index
    file's sha256)."""
    from ann_bench.index import open_index

    saved = open_index(directory)
    m = saved.manifest
    if as_json:
        click.echo(json.dumps(m, indent=1))
        return
    from ann_bench.cli.data import info_table

    table = info_table()
    rows = [("backend", f"{m['backend']}[{m['impl']}]"), ("build", _params(m["build_params"])),
            ("search (default)", _params(m["search_params"])), ("metric", m["metric"]),
            ("vectors", f"{m['n']:,} x {m['dimension']}-d"), ("keys", "yes" if m["keys"] else "no (row numbers)"),
            ("index file", f"{m['index_file']['name']}, {m['index_file']['bytes'] / 1e6:,.1f} MB, sha256 verified"),
            ("manifest", f"digest {m['digest'][:16]} verified"),
            ("built", f"{m['created']} in {m['build_s']:.2f} s ({m['threads']} thread(s), seed {m['seed']})"),
            ("loaded in", f"{m['load_s']:.3f} s"), ("vectors hash", m["vectors_hash"]),
            ("source", json.dumps(m.get("source", {}))), ("versions", json.dumps(m.get("versions", {})))]
    for key, value in rows:
        table.add_row(key, escape(str(value)))
    out.print(table)
    _print_figures(m)


@click.command()
@click.argument("directory", type=click.Path(path_type=Path))
@click.option("--queries", required=True, type=click.Path(path_type=Path),
              help="An HDF5 set (its --split, with its keys), a vector file (.npy, .fvecs, .bvecs, .fbin, .u8bin, "
                   ".i8bin, IDX; keys = row numbers), or raw inputs (image folder, text, .csv/.tsv) with --model.")
@click.option("--split", type=click.Choice(["test", "train"]), default="test", show_default=True,
              help="Which split of an HDF5 --queries set: train for item-to-item recommendations.")
@click.option("--query-keys", default=None, type=click.Path(path_type=Path),
              help="Keys of the queries (one per line, or a 1-D .npy).")
@click.option("--model", default=None, help="Embed raw --queries with this embedder (as `ann-bench embed`).")
@click.option("--device", default="cpu", show_default=True, help="With --model: cpu, cuda or cuda:N.")
@model_options
@click.option("-k", "k", type=int, default=10, show_default=True, help="Neighbours per query.")
@click.option("--search", "search_specs", multiple=True, metavar="NAME=VALUE",
              help="Override a search parameter of the index, e.g. --search ef=128 [the manifest's].")
@click.option("--exclude-self", is_flag=True,
              help="Drop each query's own item (an indexed item with the query's key) from its results and still "
                   "return k: item-to-item recommendations.")
@click.option("--format", "layout", type=click.Choice(["long", "wide"]), default="long", show_default=True,
              help="long: keys, ids and distances (CSV/TSV: one row per neighbour); wide: one row per query with "
                   "the k keys in order (a submission file).")
@click.option("--threads", type=THREADS, default=1, show_default=True, help="Search threads.")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Where the neighbours go; the extension picks the format: .csv, .tsv, .jsonl, .npy, .parquet.")
@force_option
def search(directory: Path, queries: Path, split: str, query_keys: Path | None, model: str | None, device: str,
           layer: str | None, pooling: str | None, num_classes: int | None, tokenizer: Path | None,
           preprocess: str | None, k: int, search_specs: tuple[str, ...], exclude_self: bool, layout: str, threads: int, output: Path,
           force: bool) -> None:
    """Search an index directory (`ann-bench index build`) with a file of queries and write each query's key
    with its k neighbours' keys, ids and distances (in the index's metric), in chunks."""
    from ann_bench.index import INDEX_FILE, KEYS_FILE, MANIFEST, open_index
    from ann_bench.outputs import check_output
    from ann_bench.search import read_queries, search_to_file

    index_files = [directory / name for name in (MANIFEST, INDEX_FILE, KEYS_FILE)]
    check_output(output, "neighbours", inputs=(queries, query_keys, *index_files), force=force)
    with RichReporter() as rep:
        with rep.task("loading the index", None):
            saved = open_index(directory, threads=threads)
        options = build_model_options(layer, pooling, num_classes, tokenizer, preprocess)
        if model is None and options.given():
            raise InputError("--layer, --pooling, --num-classes, --tokenizer and --preprocess shape how --model "
                             "embeds raw queries; pass --model too, or drop them")
        q = read_queries(queries, split=split, keys=query_keys, model=model, device=device, reporter=rep,
                         model_options=options)
        with rep.task(f"searching {q.count:,} queries", q.count) as advance:
            summary = search_to_file(saved, q, output, k=k, search_params=single_params(search_specs, "--search"),
                                     exclude_self=exclude_self, layout=layout, progress=advance)
    qps = summary.queries / summary.search_s if summary.search_s > 0 else float("inf")
    excluded = f", {summary.excluded_self:,} self-matches dropped" if exclude_self else ""
    out.print(f"wrote {escape(str(summary.path))}: {summary.queries:,} queries x {summary.k} neighbours "
              f"({layout}){excluded}; searched in {summary.search_s:.2f} s ({qps:,.0f} QPS, "
              f"{threads} thread{'s' if threads != 1 else ''}, load {saved.manifest['load_s']:.2f} s)", soft_wrap=True)
