"""``ann-bench backends``: what can be benchmarked, with which parameters and defaults."""

from __future__ import annotations

import importlib.util
import json

import click
from rich.markup import escape
from rich.table import Table

from ann_bench.backends import all_backends
from ann_bench.cli.console import out


def describe_backends() -> list[dict]:
    rows = []
    for cls in all_backends():
        def params(declared, grid):
            return [{"name": p.name, "type": p.type.__name__, "default": p.default, "allowed": p.describe(),
                     "help": p.help, "grid": cls.grid_notes.get(p.name) or grid.get(p.name, [p.default])}
                    for p in declared]

        rows.append({
            "backend": cls.name, "impl": cls.impl, "description": cls.description,
            "metrics": list(cls.capabilities.metrics),
            "available": all(importlib.util.find_spec(m) is not None for m in cls.requires),
            "install": cls.install_hint or " ".join(f"pip install {m}" for m in cls.requires),
            "build": params(cls.build_params, cls.build_grid),
            "search": params(cls.search_params, cls.search_grid),
        })
    return rows


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def backends(as_json: bool) -> None:
    """List backends, implementations, their parameters and default sweeps."""
    rows = describe_backends()
    if as_json:
        out.print_json(json.dumps(rows))
        return
    table = Table(title="ann-bench backends (first implementation of a name is its default)")
    for col in ("backend", "impl", "metrics", "build parameters [default sweep]", "search parameters [default sweep]"):
        table.add_column(col)

    def fmt(params):
        return "\n".join(f"{p['allowed']} (default {p['default']})\n  sweep: {p['grid']}" for p in params) or "-"

    for r in rows:
        name = escape(r["backend"]) if r["available"] else \
            f"{escape(r['backend'])} [red](not installed: {escape(r['install'])})[/]"
        table.add_row(f"{name}\n[dim]{escape(r['description'])}[/]", r["impl"], ", ".join(r["metrics"]),
                      escape(fmt(r["build"])), escape(fmt(r["search"])))
    out.print(table)
    missing = [r for r in rows if not r["available"]]
    if missing:
        out.print("not installed: " + "; ".join(f"{r['backend']}[{r['impl']}]: {r['install']}" for r in missing),
                  soft_wrap=True, markup=False)
