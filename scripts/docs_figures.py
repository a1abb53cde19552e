"""Re-draw every figure in docs/ that ann-bench draws, from the stored results, with the current plotting code.

A figure in the docs is a picture of stored rows; the plotting code changes more often than the rows do. This
script draws each figure again from the results store its benchmark wrote, through the same function the
benchmark (or the documented command) draws it with, so a change to the plots reaches the docs in one
command and no figure goes stale:

- ``all_backends_100k.png``: ``ann-bench plot``, and ``all_backends_100k_index_mb.png``: ``ann-bench plot
  -y index_mb``, on the store of ``benchmarks/core_100k.py`` plus one ``ann-bench run``
  (results/core_100k/ann-bench.sqlite);
- ``sweep_1m.png``: ``benchmarks/sweep_1m.py``'s ``draw`` on its store (~/.cache/ann-bench/sweep_1m/sweep.sqlite);
- ``libraries-SET.png``: ``benchmarks/libraries.py``'s ``draw`` on its store
  (~/.cache/ann-bench/libraries/libraries.sqlite);
- ``fmnist_cnn_precision.png``: ``ann-bench plot --dataset fmnist-cnn -x precision_at_10`` on the store of the
  walk-through in docs/guide/embed.md (results/ann-bench.sqlite);
- ``nsw_vs_hnsw_1m.png``, ``nsw_vs_hnsw_fmnist.png``: ``ann-bench plot --dataset HASH``, as
  ``benchmarks/nsw_vs_hnsw.py`` draws them, on its stores (results/nsw_vs_hnsw-NAME.sqlite).

A figure whose store is missing (or holds none of its rows) is left as it is, with one line naming the
benchmark command that makes the store; the exit status is then 0, or 1 with ``--strict``. A PNG in docs/
that no entry here draws is named too (give it an entry). Nothing is measured: it takes seconds.

    python scripts/docs_figures.py [--only NAME[,NAME...]] [--store NAME=PATH ...] [--out-dir docs] [--strict]

``--store NAME=PATH`` reads figure NAME (its file name without .png) from another store, e.g. the sweep run
with ``--workdir /tmp/abcache/sweep_1m``; ``--out-dir`` writes the figures elsewhere (to compare them first).
``docs/screenshots/`` is not here: ``scripts/docs_screenshot.py`` makes those.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

CORE_100K = ("python benchmarks/core_100k.py --out results/core_100k && ann-bench run --dataset "
             "~/.cache/ann-bench/datasets/synth-100000x128-euclidean-c100-s42.hdf5 --backend nsw --backend annoy "
             "--backend hnsw:faiss --backend kdtree --results results/core_100k/ann-bench.sqlite "
             "(docs/performance.md, Benchmarks)")
EF = "--ef 10,15,20,30,40,60,80,120,160,240,320,480,640"
LIBRARY_SETS = ("wordnet-minilm-384-angular", "fashion-mnist-784-euclidean")


@dataclass(frozen=True)
class Figure:
    """One figure of docs/: its name (the file's, without .png), where its rows are stored (paths or glob
    patterns, relative to the repository or with ~; the first that holds its rows is used), the command
    that makes that store, and how it is drawn: ``draw(store, out)`` returns None once drawn, or why not."""

    name: str
    stores: tuple[str, ...]
    make: str
    draw: Callable[[Path, Path], str | None]


def _records(store: Path):
    from ann_bench.bench.results import ResultStore

    with ResultStore(store, create=False) as s:
        return s.records()


def _digest(store: Path, rows_of: Callable | None) -> str | None:
    """The content hash of the dataset whose rows ``rows_of`` picks (the one measured last if several);
    None when no row is picked. ``rows_of`` None: any dataset (``ann-bench plot`` then takes the latest)."""
    from ann_bench.report.plots import latest_dataset

    rows = [r for r in _records(store) if r.status == "ok" and (rows_of is None or rows_of(r))]
    if not rows:
        return None
    rows, _ = latest_dataset(rows)
    return rows[0].dataset_hash


def cli_plot(*args: str, rows_of: Callable | None = None, what: str = "") -> Callable[[Path, Path], str | None]:
    """``ann-bench plot --results STORE [--dataset HASH] ARGS -o OUT``, run in this process: what the docs and
    ``benchmarks/nsw_vs_hnsw.py`` run. ``rows_of``: which rows are the figure's (by their dataset)."""

    def draw(store: Path, out: Path) -> str | None:
        import click

        from ann_bench.cli import cli

        digest = _digest(store, rows_of)
        if digest is None:
            return f"no rows of {what or 'any dataset'} in {store}"
        argv = ["plot", "--results", str(store), "--dataset", digest, *args, "-o", str(out)]
        try:
            cli.main(argv, prog_name="ann-bench", standalone_mode=False)
        except click.ClickException as exc:
            return f"ann-bench {' '.join(argv)}: {exc.format_message()}"
        return None

    return draw


def sweep_1m(store: Path, out: Path) -> str | None:
    import sweep_1m as bench

    records = _records(store)
    if not any(r.status == "ok" and r.recall is not None for r in records):
        return f"no measured rows in {store}"
    bench.draw(records, out)
    return None


def libraries(set_name: str) -> Callable[[Path, Path], str | None]:
    def draw(store: Path, out: Path) -> str | None:
        import libraries as bench

        from ann_bench.report.plots import latest_dataset

        rows, _ = latest_dataset([r for r in _records(store) if r.dataset_name == set_name])
        return None if bench.draw(rows, out) else f"no batch-mode rows of {set_name} at k=10 in {store}"

    return draw


FIGURES = (
    Figure("all_backends_100k", ("results/core_100k/ann-bench.sqlite",), CORE_100K, cli_plot()),
    Figure("all_backends_100k_index_mb", ("results/core_100k/ann-bench.sqlite",), CORE_100K,
           cli_plot("-y", "index_mb")),
    Figure("sweep_1m", ("~/.cache/ann-bench/sweep_1m/sweep.sqlite",),
           "python benchmarks/sweep_1m.py (1M x 128, every backend; about 45 min on 2 cores)", sweep_1m),
    *(Figure(f"libraries-{s}", ("~/.cache/ann-bench/libraries/libraries.sqlite",),
             f"python benchmarks/libraries.py --sets {s} (docs/performance.md, Every library)", libraries(s))
      for s in LIBRARY_SETS),
    Figure("fmnist_cnn_precision", ("results/ann-bench.sqlite",),
           "the walk-through of docs/guide/embed.md: ann-bench embed --model digits-cnn ... -o fmnist-cnn.hdf5; "
           "ann-bench run --dataset fmnist-cnn.hdf5 --backend hnsw --backend ivf --build hnsw:M=16 "
           "--build ivf:nlist=256",
           cli_plot("-x", "precision_at_10", rows_of=lambda r: r.dataset_name == "fmnist-cnn", what="fmnist-cnn")),
    Figure("nsw_vs_hnsw_1m", ("results/nsw_vs_hnsw-*.sqlite",),
           "python benchmarks/nsw_vs_hnsw.py --dataset ~/.cache/ann-bench/sweep_1m/synth-1000000x128.hdf5 "
           f"--M 16,32 --runs 2 {EF} (after benchmarks/sweep_1m.py)",
           cli_plot(rows_of=lambda r: r.n_train == 1_000_000, what="a 1M set")),
    Figure("nsw_vs_hnsw_fmnist", ("results/nsw_vs_hnsw-*.sqlite",),
           "ann-bench data fetch fashion-mnist-784-euclidean && python benchmarks/nsw_vs_hnsw.py --dataset "
           f"~/.cache/ann-bench/datasets/fashion-mnist-784-euclidean.hdf5 --M 16,32 --runs 2 {EF}",
           cli_plot(rows_of=lambda r: r.dataset_name.startswith("fashion-mnist"), what="fashion-mnist")),
)


def candidates(patterns: tuple[str, ...]) -> list[Path]:
    """The existing stores ``patterns`` name, in order."""
    found = []
    for pattern in patterns:
        path = Path(pattern).expanduser()
        path = path if path.is_absolute() else ROOT / path
        found += sorted(path.parent.glob(path.name)) if any(c in path.name for c in "*?[") else [path]
    return [p for p in found if p.is_file()]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default=None, help="comma-separated figure names (file names without .png)")
    ap.add_argument("--store", action="append", default=[], metavar="NAME=PATH",
                    help="read figure NAME from the store PATH (repeatable)")
    ap.add_argument("--out-dir", type=Path, default=ROOT / "docs", help="where the figures are written [docs/]")
    ap.add_argument("--strict", action="store_true", help="exit 1 when a figure could not be drawn")
    args = ap.parse_args(argv)

    names = {f.name for f in FIGURES}
    stores = {}
    for item in args.store:
        name, sep, path = item.partition("=")
        if not sep or name not in names:
            ap.error(f"--store {item!r}: use NAME=PATH with NAME one of {', '.join(sorted(names))}")
        stores[name] = (path,)
    only = set(args.only.split(",")) if args.only else names
    if only - names:
        ap.error(f"--only: unknown {', '.join(sorted(only - names))}; figures: {', '.join(sorted(names))}")

    missing = 0
    for fig in FIGURES:
        if fig.name not in only:
            continue
        out = args.out_dir / f"{fig.name}.png"
        shown = out.relative_to(ROOT) if out.is_relative_to(ROOT) else out
        why = f"no store at {', '.join(stores.get(fig.name, fig.stores))}"
        for store in candidates(stores.get(fig.name, fig.stores)):
            why = fig.draw(store, out)
            if why is None:
                print(f"{shown}: drawn from {store}")
                break
        else:
            missing += 1
            print(f"{shown}: kept as it is ({why}); make it with: {fig.make}")
    if args.only is None and args.out_dir == ROOT / "docs":
        for png in sorted((ROOT / "docs").glob("*.png")):
            if png.stem not in names:
                print(f"{png.relative_to(ROOT)}: drawn by nothing here; give it an entry in scripts/docs_figures.py")
    return 1 if missing and args.strict else 0


if __name__ == "__main__":
    sys.exit(main())
