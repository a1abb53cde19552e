"""``ann-bench backends``: what can be benchmarked, with which parameters and defaults."""

from __future__ import annotations

import importlib.util
import json
import textwrap

import click

from ann_bench.backends import all_backends
from ann_bench.cli.console import out


def describe_backends() -> list[dict]:
    rows, seen = [], set()
    for cls in all_backends():
        def params(declared, grid):
            return [{"name": p.name, "type": p.type.__name__, "default": p.default, "allowed": p.describe(),
                     "help": p.help, "grid": cls.grid_notes.get(p.name) or grid.get(p.name, [p.default])}
                    for p in declared]

        rows.append({
            "backend": cls.name, "impl": cls.impl, "description": cls.description,
            "default_impl": cls.name not in seen,  # the first implementation of a name is its default
            "metrics": list(cls.capabilities.metrics),
            "available": all(importlib.util.find_spec(m) is not None for m in cls.requires),
            "install": cls.install_hint or " ".join(f"pip install {m}" for m in cls.requires),
            "build": params(cls.build_params, cls.build_grid),
            "search": params(cls.search_params, cls.search_grid),
        })
        seen.add(cls.name)
    return rows


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def backends(as_json: bool) -> None:
    """List backends, implementations, their parameters and default sweeps."""
    rows = describe_backends()
    if as_json:
        out.print_json(json.dumps(rows))
        return
    for n, r in enumerate(rows):
        out.print(("\n" if n else "") + backend_block(r, out.width), markup=False, highlight=False, soft_wrap=True)
    missing = [f"{r['backend']}[{r['impl']}]" for r in rows if not r["available"]]
    if missing:
        out.print(f"not installed ({len(missing)}): {', '.join(missing)}; each block above says how to install it",
                  markup=False)


def backend_block(r: dict, width: int) -> str:
    """One backend as lines of at most ``width`` columns (wrapped at word boundaries, no padding): a heading,
    its metrics, and one line per parameter — its name (never cut), type and range, default and default sweep —
    with what it does on the line below."""
    default = f"; the default implementation of {r['backend']}" if r["default_impl"] else ""
    lines = _wrap(f"{r['backend']}[{r['impl']}] — {r['description']}{default}", width, "", "    ")
    if not r["available"]:
        lines += _wrap(f"not installed: {r['install']}", width, "  ", "    ")
    lines += _wrap(f"metrics: {', '.join(r['metrics'])}", width, "  ", "    ")
    names = [p["name"] for section in ("build", "search") for p in r[section]]
    pad = max(map(len, names), default=1)
    for section in ("build", "search"):
        if not r[section]:
            lines.append(f"  {section}: -")
            continue
        for j, p in enumerate(r[section]):
            kind = p["allowed"].split(": ", 1)[-1]
            sweep = p["grid"] if isinstance(p["grid"], str) else " ".join(str(v) for v in p["grid"])
            lead = f"  {section + ':' if j == 0 else '':7} {p['name']:<{pad}}  "
            more = " " * (len(lead) if len(lead) <= 34 else 12)
            lines += _wrap(f"{lead}{kind}; default {p['default']}; sweep {sweep}", width, "", more)
            if p["help"]:
                lines += _wrap(p["help"], width, more, more)
    return "\n".join(lines)


def _wrap(text: str, width: int, first: str, more: str) -> list[str]:
    return textwrap.wrap(text, width=max(width, 40), initial_indent=first, subsequent_indent=more,
                         break_long_words=False, break_on_hyphens=False, drop_whitespace=True) or [first.rstrip()]
