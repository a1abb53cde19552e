"""``ann-bench data``: make and inspect VectorSets."""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.markup import escape
from rich.table import Table

from ann_bench.cli.console import RichReporter, err, out
from ann_bench.cli.options import SEED, force_option
from ann_bench.outputs import check_output
from ann_bench.data.vectorset import SynthSpec, VectorSet, check_synth_spec, synth, validate
from ann_bench.distances import METRICS


@click.group()
def data() -> None:
    """Make and inspect vector sets (ann-benchmarks HDF5 layout)."""


@data.command("synth")
@click.argument("output", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--n", "n", type=int, default=100_000, show_default=True, help="Train (base) vectors.")
@click.option("--dim", type=int, default=128, show_default=True, help="Dimension.")
@click.option("--queries", type=int, default=10_000, show_default=True, help="Test (query) vectors.")
@click.option("--clusters", type=int, default=100, show_default=True, help="Mixture components (= labels).")
@click.option("--metric", default="euclidean", show_default=True, help=f"One of {', '.join(METRICS)}.")
@click.option("--seed", type=SEED, default=42, show_default=True, help="Random seed; same seed, same file.")
@click.option("--subspace-dim", type=int, default=None, help="Intrinsic dimension of each cluster [dim/4].")
@click.option("-k", "k", type=int, default=100, show_default=True, help="Ground-truth depth.")
@force_option
def synth_cmd(output: Path, n: int, dim: int, queries: int, clusters: int, metric: str, seed: int,
              subspace_dim: int | None, k: int, force: bool) -> None:
    """Generate a seeded Gaussian mixture on low-dimensional subspaces, with exact ground truth and labels."""
    spec = SynthSpec(n=n, dim=dim, queries=queries, clusters=clusters, metric=metric, seed=seed,
                     subspace_dim=subspace_dim)
    check_synth_spec(spec)
    if k < 1:
        raise click.BadParameter(f"must be >= 1, got {k}", param_hint="-k")
    check_output(output, "dataset", force=force, option="OUTPUT")
    with RichReporter() as rep, rep.task("ground truth", queries) as advance:
        synth(output, spec, k=k, progress=advance)
    out.print(f"wrote {escape(str(output))}: {n:,} train + {queries:,} test vectors, {dim}-d, {metric}, "
              f"{clusters} clusters, ground truth depth {min(k, n)}")


def info_table() -> Table:
    """A two-column table of facts (``data info``, ``index info``): the names never wrap, the values wrap at
    word boundaries and fold what is longer than a line (a path), so nothing is cut with "…" at 80 columns."""
    table = Table(show_header=False, box=None)
    table.add_column("fact", no_wrap=True)
    table.add_column("value", overflow="fold")
    return table


@data.command("info")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the facts as JSON.")
@click.option("--sample", type=int, default=20, show_default=True,
              help="Queries whose ground truth is re-computed to verify the stored one (0: skip).")
def info_cmd(file: Path, as_json: bool, sample: int) -> None:
    """Shape, metric, labels, ground-truth depth and a validation verdict (exit 1 if invalid)."""
    with VectorSet(file) as vs:
        facts = vs.summary()
        verdict = validate(vs, check_groundtruth_sample=sample)
        facts["content_hash"] = vs.content_hash() if verdict.ok else None
    facts["valid"] = verdict.ok
    facts["problems"] = verdict.problems
    facts["warnings"] = verdict.warnings
    if as_json:
        out.print_json(json.dumps(facts))
    else:
        table = info_table()
        for key in ("path", "name", "metric", "dimension", "train", "test", "train_dtype", "groundtruth_depth",
                    "labels", "n_classes", "keys", "attributes", "size_mb", "content_hash"):
            value = facts[key]
            if key == "attributes":
                value = ", ".join(value) or "none"
            table.add_row(key, f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else escape(str(value)))
        for key, value in facts["attrs"].items():
            table.add_row(f"attr {key}", escape(str(value)))  # wrapped by the table, never cut
        out.print(table)
        for w in verdict.warnings:
            err.print(f"[yellow]warning:[/] {escape(w)}")
        for p in verdict.problems:
            err.print(f"[red]problem:[/] {escape(p)}")
        out.print("verdict: [bold green]valid[/]" if verdict.ok else "verdict: [bold red]invalid[/]")
    if not verdict.ok:
        raise SystemExit(1)


@data.command("import")
@click.argument("base", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="The VectorSet to write (.hdf5).")
@click.option("--metric", required=True, help=f"One of {', '.join(METRICS)}.")
@click.option("--queries", type=click.Path(path_type=Path), default=None,
              help="Query vectors; without it a seeded split of the base (--test-size) is used.")
@click.option("--groundtruth", type=click.Path(path_type=Path), default=None,
              help="Exact neighbour ids of the queries (.ivecs, big-ann .ibin/.bin ground truth, .npy); verified "
                   "on a sample. Computed when omitted.")
@click.option("--labels", type=click.Path(path_type=Path), default=None, help="Labels of the base (.npy, IDX or "
              "one per line).")
@click.option("--query-labels", type=click.Path(path_type=Path), default=None, help="Labels of --queries.")
@click.option("--keys", type=click.Path(path_type=Path), default=None,
              help="Item keys of the base (one per line, or a 1-D .npy) [each vector's row number, 0-based].")
@click.option("--query-keys", type=click.Path(path_type=Path), default=None,
              help="Item keys of --queries [row numbers].")
@click.option("--attributes", type=click.Path(path_type=Path), default=None,
              help="Numeric attributes of the base items, for `run --filter \"price<20\"`: a .npz (one array per "
                   "attribute) or a .csv with a header (one column per attribute), one row per base vector.")
@click.option("--test-size", type=int, default=10_000, show_default=True, help="Queries split off the base.")
@click.option("--seed", type=SEED, default=0, show_default=True, help="Seed of the split.")
@click.option("-k", "k", type=int, default=100, show_default=True, help="Ground-truth depth.")
@click.option("--vector-column", default=None,
              help="Parquet: the column of vectors (lists of numbers) [the one list column, else every numeric "
                   "column but the label and key].")
@click.option("--label-column", default=None, help="Parquet: the label column [label, when present].")
@click.option("--key-column", default=None, help="Parquet: the item-key column [id, when present; else row numbers].")
@force_option
def import_cmd(base: Path, output: Path, metric: str, queries, groundtruth, labels, query_labels, keys, query_keys,
               attributes, test_size: int, seed: int, k: int, vector_column: str | None, label_column: str | None,
               key_column: str | None, force: bool) -> None:
    """Import .fvecs/.bvecs/.ivecs, .fbin/.u8bin/.i8bin/.ibin, .npy, IDX, .parquet (pyarrow) or ann-benchmarks
    HDF5 files."""
    from ann_bench.data.importing import import_dataset

    check_output(output, "dataset", inputs=(base, queries, groundtruth, labels, query_labels, keys, query_keys,
                                            attributes), force=force)
    with RichReporter() as rep, rep.task("ground truth", None) as advance:
        path = import_dataset(base, output, metric, queries=queries, groundtruth=groundtruth, labels=labels,
                              query_labels=query_labels, keys=keys, query_keys=query_keys, test_size=test_size,
                              seed=seed, k=k, progress=advance, vector_column=vector_column,
                              label_column=label_column, key_column=key_column, attributes=attributes)
    with VectorSet(path) as vs:
        out.print(f"wrote {escape(str(path))}: {vs.n_train:,} train + {vs.n_test:,} test vectors, {vs.dim}-d, {vs.metric}, "
                  f"ground truth depth {vs.gt_depth}{', labels' if vs.has_labels else ''}"
                  + (f", attributes {', '.join(vs.attribute_names)}" if vs.attribute_names else ""))


@data.command("combine")
@click.argument("parts", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="The combined VectorSet to write (.hdf5); never one of the parts.")
@click.option("--weights", default=None,
              help="One weight > 0 per part, comma separated (1,0.5): part i is multiplied by sqrt(w_i), so w_i "
                   "scales its share of squared distances and dot products [all 1].")
@click.option("--normalize", type=click.Choice(["each", "none"]), default="each", show_default=True,
              help="each: L2-normalise every part's rows before weighting; none: keep them as they are.")
@click.option("--metric", default=None, help=f"One of {', '.join(METRICS)} [the parts' common metric].")
@click.option("-k", "k", type=int, default=100, show_default=True, help="Ground-truth depth.")
@force_option
def combine_cmd(parts: tuple[Path, ...], output: Path, weights: str | None, normalize: str, metric: str | None,
                k: int, force: bool) -> None:
    """Concatenate item-aligned sets column-wise (an ensemble of embeddings of the same items): train and test
    of each part side by side, weighted, with exact ground truth recomputed and keys and labels kept."""
    from ann_bench.data.combine import combine_sets, parse_weights

    check_output(output, "dataset", inputs=parts, force=force)
    with RichReporter() as rep, rep.task("ground truth", None) as advance:
        path = combine_sets(parts, output, weights=parse_weights(weights), normalize=normalize, metric=metric, k=k,
                            progress=advance, force=force)
    with VectorSet(path) as vs:
        dims = " + ".join(str(p["dim"]) for p in json.loads(vs.attrs["parts"]))
        out.print(f"wrote {escape(str(path))}: {vs.n_train:,} train + {vs.n_test:,} test vectors, {vs.dim}-d "
                  f"({dims}), {vs.metric}, ground truth depth {vs.gt_depth}{', labels' if vs.has_labels else ''}"
                  f"{', keys' if vs.has_keys else ''}", soft_wrap=True)


@data.command("cross")
@click.argument("base", type=click.Path(path_type=Path))
@click.argument("queries", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="The VectorSet to write (.hdf5); never BASE or QUERIES.")
@click.option("--base-part", type=click.Choice(["train", "test", "all"]), default="train", show_default=True,
              help="Which vectors of BASE are the base (all: train then test).")
@click.option("--queries-part", type=click.Choice(["train", "test", "all"]), default="test", show_default=True,
              help="Which vectors of QUERIES are the queries (all: train then test).")
@click.option("--metric", default=None, help=f"One of {', '.join(METRICS)} [the sets' common metric].")
@click.option("-k", "k", type=int, default=100, show_default=True, help="Ground-truth depth.")
@force_option
def cross_cmd(base: Path, queries: Path, output: Path, base_part: str, queries_part: str, metric: str | None, k: int,
              force: bool) -> None:
    """Base vectors from one set, queries from another of the same dimension (text queries against images
    that one CLIP model embedded): exact ground truth recomputed, keys and labels kept, both sources recorded."""
    from ann_bench.data.combine import cross_sets

    check_output(output, "dataset", inputs=(base, queries), force=force)
    with RichReporter() as rep, rep.task("ground truth", None) as advance:
        path, warnings = cross_sets(base, queries, output, base_part=base_part, queries_part=queries_part,
                                    metric=metric, k=k, progress=advance, force=force)
    for w in warnings:
        err.print(f"[yellow]warning:[/] {escape(w)}", soft_wrap=True)
    with VectorSet(path) as vs:
        out.print(f"wrote {escape(str(path))}: {vs.n_train:,} base vectors ({escape(base.name)} {base_part}) + "
                  f"{vs.n_test:,} queries ({escape(queries.name)} {queries_part}), {vs.dim}-d, {vs.metric}, ground "
                  f"truth depth {vs.gt_depth}{', labels' if vs.has_labels else ''}", soft_wrap=True)


@data.command("fetch")
@click.argument("name")
@click.option("--mirror", default=None, help="Base URL to download from [$ANN_BENCH_MIRROR, else ann-benchmarks'].")
@click.option("--force", is_flag=True, help="Fetch again even if cached.")
def fetch_cmd(name: str, mirror: str | None, force: bool) -> None:
    """Download (or, for fashion-mnist-784-euclidean, build offline) a catalogue set into the cache."""
    from ann_bench.data.catalogue import fetch

    with RichReporter() as rep, rep.task(f"fetch {name}", None) as advance:
        task = rep.progress.tasks[-1].id

        def on_bytes(done: int, total: int | None) -> None:
            rep.progress.update(task, completed=done, total=total)

        path = fetch(name, mirror=mirror, force=force, progress=on_bytes, gt_progress=advance)
    out.print(f"{escape(name)}: {escape(str(path))}")


@data.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@click.option("--wide", is_flag=True, help="Every column, however narrow the terminal.")
def list_cmd(as_json: bool, wide: bool) -> None:
    """The catalogue of standard sets, and which are cached."""
    from ann_bench.data.catalogue import datasets_dir, listing

    rows = listing()
    if as_json:
        out.print_json(json.dumps(rows))
        return
    from ann_bench.cli.tables import FitTable

    def cached(r) -> str:
        if r["cached"]:
            return "yes"
        if r["offline_build"]:
            return "builds offline"
        return "needs package" if r["debian_package"] and not r["download_mb"] else "-"

    # The name says the dimension and the metric: those columns go first when the terminal is narrow.
    table = FitTable(f"standard datasets (cache: {datasets_dir()})")
    table.add("name", [r["name"] for r in rows])
    table.add("dimension", [str(r["dimension"]) for r in rows], numeric=True, optional=2)
    table.add("train", [f"{r['train']:,}" for r in rows], numeric=True)
    table.add("test", [f"{r['test']:,}" for r in rows], numeric=True)
    table.add("metric", [r["metric"] for r in rows], optional=1)
    table.add("MB", [str(r["download_mb"]) if r["download_mb"] else "-" for r in rows], numeric=True, optional=3)
    table.add("cached", [cached(r) for r in rows])
    table.caption_lines.append("MB: download size; '-': built offline, never downloaded")
    for package in sorted({r["debian_package"] for r in rows if cached(r) == "needs package"}):
        names = ", ".join(r["name"] for r in rows if r["debian_package"] == package and cached(r) == "needs package")
        table.caption_lines.append(f"needs package: {names} is built from the Debian package {package} "
                                   f"(apt-get install {package})")
    out.print(table.render(out.width, wide=wide))
