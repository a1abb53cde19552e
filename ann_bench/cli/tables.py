"""Tables that fit the terminal: short parameter forms, figures never cut, columns dropped in a stated order.

- Parameters: only those that vary among the table's rows of one backend, in a short form (``M16 efC200``,
  ``nprobe8``); the ones that do not vary are listed once in the caption (``hnsw[hnswlib]: efC200``).
- Columns whose value is the same on every row (one dataset, one k, one mode, …) move to the title.
- Figures are never truncated: a figure column is as wide as its widest value. When the table is still wider
  than the terminal, optional columns are dropped in the order the caller states, and the caption says which
  (``--wide`` keeps every column; CSV/JSON exports are unchanged).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rich.cells import cell_len
from rich.console import Group
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from ann_bench.bench.results import (ABBREVIATIONS, ShortForms, short_params, short_value,  # noqa: F401 (re-exported)
                                     varying)

@dataclass
class Column:
    header: str
    values: list[str]
    numeric: bool = False
    optional: int | None = None  # drop order when too wide: 1 goes first; None: never dropped
    markup: bool = False  # values hold rich markup (already escaped)


@dataclass
class FitTable:
    """Columns of strings, fitted to ``width`` when rendered (see the module docstring)."""

    title: str
    columns: list[Column] = field(default_factory=list)
    caption_lines: list[str] = field(default_factory=list)

    def add(self, header: str, values: list[str], *, numeric: bool = False, optional: int | None = None,
            markup: bool = False) -> None:
        self.columns.append(Column(header, values, numeric, optional, markup))

    def render(self, width: int, wide: bool = False) -> Group:
        """The title, the table and the captions, fitted to ``width``. The title and captions are lines of
        their own rather than the table's (which would centre and pad them to the table's width, with trailing
        spaces in a pipe); in a terminal they wrap at word boundaries."""
        cols = list(self.columns)
        constant = []
        if len(cols) and cols[0].values and len(cols[0].values) > 1:
            for c in list(cols):
                if not c.numeric and set(c.values) == {"-"}:  # e.g. build parameters all in the caption
                    cols.remove(c)
                    continue
                if c.optional is not None and len(set(c.values)) == 1 and "[" not in c.values[0]:
                    if c.values[0].strip() not in ("", "-", "/"):  # a column that says nothing just goes
                        constant.append(f"{c.header} {c.values[0]}")
                    cols.remove(c)
        dropped = []
        if not wide:
            def needed(cs):
                return sum(max([len(c.header)] + [_cells(v, c.markup) for v in c.values]) + 3 for c in cs) + 1

            for c in sorted([c for c in cols if c.optional is not None], key=lambda c: c.optional):
                if needed(cols) <= width:
                    break
                cols.remove(c)
                dropped.append(c.header)
        title = self.title + (f" ({', '.join(constant)})" if constant else "")
        captions = list(self.caption_lines)
        if dropped:
            captions.append(f"columns left out to fit {width} columns: {', '.join(dropped)} (--wide shows them)")
        table = Table()
        for c in cols:
            widest = max([len(v) for v in c.values], default=0)
            if c.numeric:
                table.add_column(c.header, justify="right", no_wrap=True, min_width=max(widest, len(c.header)))
            else:
                table.add_column(c.header, overflow="fold")
        for i in range(len(cols[0].values) if cols else 0):
            table.add_row(*[c.values[i] if c.markup else escape(c.values[i]) for c in cols])
        return Group(Text(title, style="italic"), table, *(Text(c) for c in captions))


def _cells(value: str, markup: bool) -> int:
    """The width ``value`` takes on screen (rich markup, if any, takes none)."""
    return Text.from_markup(value).cell_len if markup else cell_len(value)


def params_columns(records, group_of) -> tuple[list[str], list[str], list[str]]:
    """Short build and search forms for each record (only the parameters that vary within its group), and the
    caption lines for what is fixed per group (:class:`~ann_bench.bench.results.ShortForms`)."""
    forms = ShortForms(records, group_of)
    return ([forms.build(r) for r in records], [forms.search(r) for r in records],
            [f"{g}: {text}" for g, text in forms.fixed.items()])
