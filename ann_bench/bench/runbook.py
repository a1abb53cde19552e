"""Runbooks: a collection that changes, as a list of steps over the rows of a set's train vectors.

A runbook (YAML, in the spirit of big-ann-benchmarks' streaming runbooks) is a mapping with ``steps``, a list in
which each step is one of::

    - build: 0-9999          # the initial items (exactly once, first)
    - insert: 10000-19999    # items added
    - delete: [0-999, 4242]  # items removed
    - search                 # every query searched; recall against the exact top-k of the live items

Ids are rows of the set's train vectors: an integer, an inclusive range ``A-B``, a comma-separated string of
those (``"0-9,20"``), a list of them, or big-ann-benchmarks' half-open ``{start: A, end: B}``. An optional
``name`` names the runbook (else its file name). A runbook is refused, in one line naming the step, when it is
malformed, deletes an id that is not live, inserts one that is, references a row outside the set, or searches
fewer than k live items.

Generators (:func:`make_runbook`) write the common shapes: ``grow`` (10 % to 100 % in equal inserts), ``slide``
(grow to a window, then each step inserts the newest batch and deletes the oldest) and ``clustered`` (each insert
brings the items of labels not seen before).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ann_bench.errors import InputError

OPS = ("build", "insert", "delete", "search")
SHAPES = ("grow", "slide", "clustered")


@dataclass(frozen=True)
class Step:
    op: str  # one of OPS
    ids: np.ndarray | None  # sorted unique int64 rows; None for search


@dataclass(frozen=True)
class Runbook:
    name: str
    steps: tuple[Step, ...]

    @property
    def digest(self) -> str:
        """A hash of the steps (not of their spelling): two files with the same steps share it."""
        h = hashlib.sha256()
        for s in self.steps:
            h.update(s.op.encode())
            h.update(format_ids(s.ids).encode() if s.ids is not None else b"-")
            h.update(b";")
        return h.hexdigest()[:12]

    @property
    def ident(self) -> str:
        """How rows name the runbook: ``NAME@DIGEST``."""
        return f"{self.name}@{self.digest}"

    @property
    def build_ids(self) -> np.ndarray:
        return self.steps[0].ids

    def live_sets(self) -> list[np.ndarray]:
        """The live ids (sorted) after each step."""
        live: set[int] = set()
        out = []
        for s in self.steps:
            if s.op in ("build", "insert"):
                live.update(s.ids.tolist())
            elif s.op == "delete":
                live.difference_update(s.ids.tolist())
            out.append(np.fromiter(sorted(live), dtype=np.int64, count=len(live)))
        return out


# ---- ids ---------------------------------------------------------------------------------------------------
_RANGE = re.compile(r"^\s*(\d+)\s*(?:-\s*(\d+)\s*)?$")


def _parse_part(part, where: str) -> list[np.ndarray]:
    if isinstance(part, bool):
        raise InputError(f"{where}: {part!r} is not an id")
    if isinstance(part, int):
        if part < 0:
            raise InputError(f"{where}: id {part} is negative; ids are rows of the train vectors, 0 .. n-1")
        return [np.array([part], dtype=np.int64)]
    if isinstance(part, dict):
        if set(part) != {"start", "end"} or not all(isinstance(part[k], int) and not isinstance(part[k], bool)
                                                    for k in part):
            raise InputError(f"{where}: a mapping of ids must be {{start: A, end: B}} (half-open, as "
                             f"big-ann-benchmarks), got {part!r}")
        if not 0 <= part["start"] < part["end"]:
            raise InputError(f"{where}: {{start: {part['start']}, end: {part['end']}}} is empty or negative")
        return [np.arange(part["start"], part["end"], dtype=np.int64)]
    if isinstance(part, str):
        out = []
        for piece in part.split(","):
            m = _RANGE.match(piece)
            if not m:
                raise InputError(f"{where}: {piece.strip()!r} is not an id or an inclusive range A-B")
            a, b = int(m.group(1)), int(m.group(2) if m.group(2) is not None else m.group(1))
            if b < a:
                raise InputError(f"{where}: range {a}-{b} is backwards")
            out.append(np.arange(a, b + 1, dtype=np.int64))
        return out
    raise InputError(f"{where}: {part!r} is not an id, a range A-B, a list or {{start, end}}")


def parse_ids(value, where: str) -> np.ndarray:
    """Ids of one step (see the module docstring) -> sorted int64 array; InputError naming ``where`` when
    malformed, empty, or when an id appears twice in the step."""
    parts = value if isinstance(value, list) else [value]
    arrays = [a for p in parts for a in _parse_part(p, where)]
    ids = np.concatenate(arrays) if arrays else np.empty(0, np.int64)
    if ids.size == 0:
        raise InputError(f"{where}: no ids")
    ids = np.sort(ids)
    dup = ids[1:][ids[1:] == ids[:-1]]
    if dup.size:
        raise InputError(f"{where}: id {int(dup[0])} is listed twice in one step")
    return ids


def format_ids(ids: np.ndarray) -> str:
    """Sorted ids as compact text: ``"0-9999,12000,12005-12010"``."""
    ids = np.asarray(ids, dtype=np.int64)
    if ids.size == 0:
        return ""
    breaks = np.flatnonzero(np.diff(ids) != 1) + 1
    parts = []
    for run in np.split(ids, breaks):
        parts.append(str(run[0]) if run.size == 1 else f"{run[0]}-{run[-1]}")
    return ",".join(parts)


# ---- reading and checking ----------------------------------------------------------------------------------
def parse_runbook(data, name: str) -> Runbook:
    """A runbook from its YAML data (a mapping with ``steps``); InputError for a malformed one."""
    if not isinstance(data, dict) or "steps" not in data:
        raise InputError(f"runbook {name}: expected a mapping with 'steps' (a list of build/insert/delete/search "
                         "steps)")
    unknown = sorted(set(data) - {"name", "steps", "n", "shape"})
    if unknown:
        raise InputError(f"runbook {name}: unknown key {unknown[0]!r}; a runbook has name, steps (and n, shape, "
                         "written by make-runbook)")
    name = str(data.get("name") or name)
    raw = data["steps"]
    if not isinstance(raw, list) or not raw:
        raise InputError(f"runbook {name}: 'steps' must be a non-empty list")
    steps = []
    for i, item in enumerate(raw):
        where = f"runbook {name} step {i}"
        if item == "search" or item == {"search": None}:
            steps.append(Step("search", None))
            continue
        if not isinstance(item, dict) or len(item) != 1:
            raise InputError(f"{where}: expected 'search' or one of build: IDS, insert: IDS, delete: IDS; "
                             f"got {item!r}")
        (op, value), = item.items()
        if op not in OPS or op == "search":
            raise InputError(f"{where}: unknown operation {op!r}; use build, insert, delete or search")
        steps.append(Step(op, parse_ids(value, f"{where} ({op})")))
    return Runbook(name, tuple(steps))


def read_runbook(path: str | Path) -> Runbook:
    """The runbook in the YAML file ``path``; InputError (one line) when unreadable or malformed."""
    import yaml

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read runbook {str(path)!r}: {getattr(exc, 'strerror', None) or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise InputError(f"runbook {str(path)!r} is not valid YAML{at}: {getattr(exc, 'problem', exc)}") from None
    return parse_runbook(data, path.stem)


def check_runbook(rb: Runbook, n: int, k: int = 1) -> None:
    """Refuse (InputError, one line naming the step) a runbook that does not start with its one build, references
    a row outside 0..n-1, inserts a live id, deletes an id that is not live, searches fewer than k live items, or
    has no search."""
    if rb.steps[0].op != "build":
        raise InputError(f"runbook {rb.name} step 0: the first step must be build (the initial items), "
                         f"got {rb.steps[0].op}")
    if not any(s.op == "search" for s in rb.steps):
        raise InputError(f"runbook {rb.name} has no search step: nothing would be measured")
    live = np.zeros(n, dtype=bool)
    count = 0
    for i, s in enumerate(rb.steps):
        where = f"runbook {rb.name} step {i} ({s.op})"
        if s.op == "build" and i > 0:
            raise InputError(f"{where}: build may only be the first step; use insert")
        if s.ids is not None and (s.ids[-1] >= n):
            raise InputError(f"{where}: id {int(s.ids[s.ids >= n][0])} is out of range: the set has {n} train "
                             f"vectors (ids 0..{n - 1})")
        if s.op in ("build", "insert"):
            twice = s.ids[live[s.ids]]
            if twice.size:
                raise InputError(f"{where}: id {int(twice[0])} is inserted twice (it is live already)")
            live[s.ids] = True
            count += s.ids.size
        elif s.op == "delete":
            absent = s.ids[~live[s.ids]]
            if absent.size:
                raise InputError(f"{where}: id {int(absent[0])} is not present (never inserted, or deleted "
                                 "already)")
            live[s.ids] = False
            count -= s.ids.size
        elif count < k:
            raise InputError(f"{where}: {count} live item(s), fewer than k={k}: recall@{k} is undefined")


# ---- generators --------------------------------------------------------------------------------------------
def _chunks(lo: int, hi: int, parts: int) -> list[tuple[int, int]]:
    edges = np.linspace(lo, hi, parts + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:]) if b > a]


def make_runbook(shape: str, n: int, steps: int = 9, start: float = 0.1, window: float = 0.5,
                 labels: np.ndarray | None = None, name: str | None = None) -> dict:
    """A runbook (as YAML data) of ``shape`` over rows 0..n-1 (in file order):

    - ``grow``: build the first ``start`` fraction, then ``steps`` equal inserts up to all n, a search after each;
    - ``slide``: build ``start`` of n, grow in batches of the last insert's size until the window (``window``
      of n) is full, then every step inserts the next batch and deletes the oldest as many, until row n-1;
      ``steps`` is the number of batches after the build;
    - ``clustered``: the labels in order of first appearance; build the items of the first ``start`` fraction of
      the labels (at least one), then each insert brings the items of the next labels (``steps`` inserts): new
      items come from labels the index has not seen.
    """
    if shape not in SHAPES:
        raise InputError(f"unknown runbook shape {shape!r}; use {', '.join(SHAPES)}")
    if steps < 1:
        raise InputError(f"--steps must be >= 1, got {steps}")
    if not 0 < start <= 1 or not 0 < window <= 1:
        raise InputError("--start and --window are fractions in (0, 1]")
    out: list = []
    if shape == "grow":
        n0 = max(1, int(round(start * n)))
        out.append({"build": format_ids(np.arange(n0))})
        out.append("search")
        for a, b in _chunks(n0, n, steps):
            out += [{"insert": f"{a}-{b - 1}"}, "search"]
    elif shape == "slide":
        w = max(1, int(round(window * n)))
        n0 = min(w, max(1, int(round(start * n))))
        batch = max(1, (n - n0) // steps)
        out += [{"build": f"0-{n0 - 1}"}, "search"]
        oldest, newest = 0, n0
        while newest < n:
            b = min(batch, n - newest)
            out.append({"insert": f"{newest}-{newest + b - 1}"})
            newest += b
            if newest - oldest > w:
                d = newest - oldest - w
                out.append({"delete": f"{oldest}-{oldest + d - 1}"})
                oldest += d
            out.append("search")
    else:
        if labels is None:
            raise InputError("--shape clustered needs the set's labels, and this set has none: import them with "
                             "`ann-bench data import --labels`, or use --shape grow or slide")
        labels = np.asarray(labels)
        _, first = np.unique(labels, return_index=True)
        order = labels[np.sort(first)]  # labels in order of first appearance
        if len(order) < 2:
            raise InputError("--shape clustered needs at least two labels; this set has one")
        l0 = max(1, int(round(start * len(order))))
        groups = [order[:l0]] + [order[a:b] for a, b in _chunks(l0, len(order), min(steps, len(order) - l0))]
        for i, group in enumerate(groups):
            ids = np.flatnonzero(np.isin(labels, group))
            out += [{"build" if i == 0 else "insert": format_ids(ids)}, "search"]
    data = {"name": name or shape, "shape": shape, "n": int(n), "steps": out}
    parse_runbook(data, data["name"])  # what we write, we can read
    return data


def dump_runbook(data: dict) -> str:
    import yaml

    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False, width=1 << 20)


def runbook_json(rb: Runbook) -> str:
    """The runbook as canonical JSON (for a digest or a record)."""
    return json.dumps([[s.op, format_ids(s.ids) if s.ids is not None else None] for s in rb.steps])
