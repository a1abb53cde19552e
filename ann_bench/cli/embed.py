"""``ann-bench embed`` and ``ann-bench embedders``: raw data + a trained model -> a VectorSet."""

from __future__ import annotations

from pathlib import Path

import click
from rich.markup import escape
from rich.table import Table

from ann_bench.cli.console import RichReporter, err, out
from ann_bench.cli.options import SEED, build_model_options, force_option, model_options
from ann_bench.distances import METRICS
from ann_bench.data.embed import EmbedOptions, embed_to_vectorset


@click.command()
@click.option("--model", "model", multiple=True,
              help="A registered embedder (`ann-bench embedders`), a TorchScript file PATH.pt, or ARCH:PATH.pt "
                   "for a state_dict of a named architecture. Optional for .npy / 2-D IDX features (identity). "
                   "Repeat it for an ensemble: each model's vectors are L2-normalised, weighted (--weights) and "
                   "concatenated.")
@click.option("--input", "input_path", required=True, type=click.Path(path_type=Path),
              help="Image folder (one subfolder per class), IDX file, text file (one item a line), .csv/.tsv with "
                   "a header, or .npy features.")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The VectorSet to write (HDF5, ann-benchmarks layout).")
@click.option("--queries", default=None, type=click.Path(path_type=Path),
              help="A separate query input of the same kind (default: hold out --test-size items of --input).")
@click.option("--test-size", type=int, default=None,
              help="Items of --input held out at random as queries [min(1000, n/10)].")
@click.option("--labels", default=None, type=click.Path(path_type=Path),
              help="Labels of a .npy / IDX input (1-D .npy or IDX); IDX images pick up their *-labels-idx1 "
                   "sibling themselves.")
@click.option("--queries-labels", default=None, type=click.Path(path_type=Path), help="Labels of --queries.")
@click.option("--label-column", default=None, help="Label column of a .csv/.tsv input [label, when present].")
@click.option("--text-column", default=None, help="Text column of a .csv/.tsv input [text, or the first other].")
@click.option("--key-column", default=None,
              help="Item-key column of a .csv/.tsv input [id, when present; else the data row number]. Keys name "
                   "items in `ann-bench search` output: images get their relative path, text lines their line "
                   "number, arrays their row number.")
@click.option("--metric", default=None, help=f"One of {', '.join(METRICS)} [the embedder's own].")
@click.option("--weights", default=None,
              help="With several --model: one weight > 0 per model, comma separated (1,0.5); model i's vectors "
                   "are multiplied by sqrt(w_i) [all 1].")
@click.option("--normalize/--no-normalize", default=None,
              help="L2-normalise the vectors [the embedder's default: on for trained models, off for identity].")
@click.option("--batch-size", type=int, default=None, help="Items per forward pass [the embedder's default].")
@model_options
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda or cuda:N.")
@click.option("--seed", type=SEED, default=0, show_default=True, help="Seed of the train/test split.")
@click.option("-k", "k", type=int, default=100, show_default=True, help="Ground-truth depth.")
@force_option
def embed(model: tuple[str, ...], input_path: Path, output: Path, queries: Path | None, test_size: int | None,
          labels: Path | None, queries_labels: Path | None, label_column: str | None, text_column: str | None,
          key_column: str | None, metric: str | None, weights: str | None, normalize: bool | None,
          batch_size: int | None, layer: str | None, pooling: str | None, num_classes: int | None,
          tokenizer: Path | None, preprocess: str | None, device: str, seed: int, k: int, force: bool) -> None:
    """Embed raw inputs with a trained model into a VectorSet: train/test vectors, exact ground truth, labels
    when the input has them, and provenance (model, checkpoint sha256, input, date, normalisation)."""
    from ann_bench.data.combine import parse_weights

    parsed = parse_weights(weights)
    model_options = build_model_options(layer, pooling, num_classes, tokenizer, preprocess)
    options = EmbedOptions(batch_size=batch_size, normalize=normalize, metric=metric, test_size=test_size,
                           seed=seed, k=k, device=device, force=force,
                           weights=tuple(parsed) if parsed is not None else None, model_options=model_options)
    models = list(model) if len(model) > 1 else (model[0] if model else None)
    with RichReporter() as rep:
        summary = embed_to_vectorset(models, input_path, output, queries=queries, labels=labels,
                                     queries_labels=queries_labels, label_column=label_column,
                                     text_column=text_column, key_column=key_column, options=options,
                                     reporter=rep)
    for w in summary.warnings:
        err.print(f"[yellow]warning:[/] {escape(w)}", soft_wrap=True)
    classes = f", {summary.n_classes} classes" if summary.n_classes else ", no labels"
    if summary.models:
        parts = " + ".join(f"{m['model']} ({m['dim']}-d, weight {m['weight']:g})" for m in summary.models)
        out.print(f"wrote {escape(str(summary.path))}: {summary.n_train:,} train + {summary.n_test:,} test vectors, "
                  f"{summary.dim}-d, {summary.metric} (each model normalised){classes}; models {escape(parts)} at "
                  f"{summary.items_per_s:,.0f} items/s", soft_wrap=True)
        return
    out.print(f"wrote {escape(str(summary.path))}: {summary.n_train:,} train + {summary.n_test:,} test vectors, "
              f"{summary.dim}-d, {summary.metric}{' (normalised)' if summary.normalized else ''}{classes}; "
              f"model {escape(summary.model)} at {summary.items_per_s:,.0f} items/s", soft_wrap=True)


@click.command()
def embedders() -> None:
    """List the registered embedders, what they take and whether they are installed."""
    from ann_bench.errors import EXTRAS
    from embeddings import ARCHITECTURE_NAMES, MODEL_FORMS, missing_embedders, registry

    rows = []  # (name, input, dim, metric, normalise, batch, available, what it needs when not, description)
    for name, cls in registry().items():
        ok, hint = cls.available(), cls.install_hint()
        rows.append((name, cls.input_kind or "image/array", str(cls.dim or "any"), cls.metric,
                     "yes" if cls.normalize else "no", str(cls.batch_size), ok, "" if ok else hint, cls.description))
    for name, module in missing_embedders().items():
        dist, extra = EXTRAS[module]
        rows.append((name, "-", "-", "-", "-", "-", False, f'needs {dist}: pip install -e ".[{extra}]"', ""))
    # One table where the description gets a readable column; in a narrower terminal the descriptions (and
    # install lines) follow the table as lines of their own instead of being folded a word per line.
    wide = out.width >= 140
    out.print("[italic]embedders (--model NAME)[/]")  # titles as lines of their own, as every table's
    table = Table()
    for col in ("name", "input", "dim", "metric", "normalise", "batch", "available") + (("description",) if wide else ()):
        table.add_column(col, no_wrap=not wide and col != "available")
    for *facts, ok, hint, description in rows:
        available = "yes" if ok else "[red]no[/]" + (f" ({escape(hint)})" if hint and wide else "")
        table.add_row(*map(escape, facts), available, *((escape(description),) if wide else ()))
    out.print(table)
    if not wide:
        for name, *_, ok, hint, description in rows:
            line = f"[bold]{escape(name)}[/]: {escape(description)}" if description else f"[bold]{escape(name)}[/]:"
            if hint:
                line += f" [red]not installed[/] ({escape(hint)})"
            out.print(line, soft_wrap=True)
    out.print("[italic]your own model (--model FORM)[/]")
    forms = Table(expand=not wide)  # ratios apply to an expanded table
    forms.add_column("form", ratio=3)  # the longer text gets more of a narrow terminal
    forms.add_column("available", ratio=2)
    forms.add_row("PATH.pt — TorchScript (images or arrays)", _available(("torch",)))
    forms.add_row(f"ARCH:PATH.pt — a state_dict of {', '.join(ARCHITECTURE_NAMES)}", _available(("torch",)))
    for _, what, needs in MODEL_FORMS.values():
        forms.add_row(escape(what), _available(needs))
    out.print(forms)
    out.print("Weights load with torch.load(weights_only=True); nothing is downloaded: a name that is not a local "
              "file or directory is refused.", soft_wrap=True)


def _available(modules: tuple[str, ...]) -> str:
    """'yes', or 'no' with the install line of the first missing module."""
    from ann_bench.errors import EXTRAS, first_missing

    missing = first_missing(*modules)
    if missing is None:
        return "yes"
    dist, extra = EXTRAS.get(missing, (missing, None))
    return "[red]no[/] (" + escape(f'needs {dist}: pip install -e ".[{extra}]"' if extra else
                                   f"needs {dist}: pip install {dist}") + ")"
