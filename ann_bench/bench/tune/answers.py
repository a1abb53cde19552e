"""Tune's answers: the measured rows it chose from (:class:`Candidate`), the answer per recall target — the overall
winner and its runner-up from another backend, or one per backend (``--per-backend``) — validated on held-out
queries, and the tune's log (``<store>.tunes/<id>.json``) as ``plot --tune`` reads it."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ann_bench.bench.results import short_params
from ann_bench.errors import InputError

TUNE_LOG_VERSION = 2
BOOTSTRAP = 2000  # resamples of the held-out queries for the recall interval


@dataclass
class Candidate:
    """A row measured on all queries (a tune's verified setting, or a row already in the store), with its recall
    on each query split."""

    record: Any  # results.Record
    tune_recall: float
    heldout: np.ndarray  # per-query recall of the held-out queries
    speed: float
    trial: int  # the trial that measured it; -1: a row already in the store


@dataclass
class Answer:
    target: float
    group: str  # backend[impl]
    candidate: Candidate | None
    heldout_ci: tuple[float, float] | None = None
    reason: str = ""
    role: str = "winner"  # "winner" | "runner-up" | "backend" (--per-backend)

    def as_json(self) -> dict[str, Any]:
        r = self.candidate.record if self.candidate else None
        return {"target": self.target, "role": self.role, "backend": r.backend if r else self.group.split("[")[0],
                "impl": r.impl if r else None, "build": r.build_params if r else None,
                "search": r.search_params if r else None,
                "recall": self.candidate.tune_recall if r else None,
                "recall_heldout": float(self.candidate.heldout.mean()) if r else None,
                "recall_heldout_ci95": list(self.heldout_ci) if self.heldout_ci else None,
                "recall_all": r.recall if r else None,
                "qps": r.qps if r else None, "p99_ms": r.p99_ms if r else None,
                "index_bytes": r.index_bytes if r else None, "build_s": r.build_s if r else None,
                "trial": self.candidate.trial if r else None, "stored": bool(r) and self.candidate.trial < 0,
                "row_key": r.key if r else None, "reason": self.reason}


@dataclass
class TuneResult:
    tune_id: str
    log_path: Path
    answers: list[Answer]
    trials: list[dict[str, Any]]
    candidates: list[Candidate]
    elapsed_s: float
    n_tune: int
    n_heldout: int
    stopped: str  # why no further trial started
    budget_s: float = math.inf
    times: dict[str, float] = field(default_factory=dict)  # where the time went (see TIME_PARTS)
    dropped: dict[str, str] = field(default_factory=dict)  # backend -> why no more builds were spent on it
    early: bool = False  # stopped by Ctrl-C / SIGTERM: the answer of what was measured until then

    def ranked(self) -> list[Answer]:
        """Per target (ascending): its answers, fastest first; those without one last."""
        out = []
        for t in sorted({a.target for a in self.answers}):
            mine = [a for a in self.answers if a.target == t]
            out += sorted(mine, key=lambda a: -(a.candidate.speed if a.candidate else -1.0))
        return out


def bootstrap_ci(values: np.ndarray, seed: int, n: int = BOOTSTRAP) -> tuple[float, float]:
    """95 % percentile interval of the mean of ``values`` over ``n`` resamples (seeded)."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return (math.nan, math.nan)
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, values.size, size=(n, values.size))].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(lo), float(hi)


def split_queries(nq: int, heldout: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(tuning ids, held-out ids) of nq queries, sorted, drawn with ``seed``; InputError when either is tiny."""
    n_held = int(round(nq * heldout))
    if n_held < 10 or nq - n_held < 10:
        raise InputError(f"{nq} queries are too few to split into tuning and held-out queries (each needs >= 10; "
                         f"--heldout {heldout}); use a set with more queries")
    perm = np.random.default_rng(seed).permutation(nq)
    return np.sort(perm[n_held:]), np.sort(perm[:n_held])


def log_dir(store_path: Path) -> Path:
    return store_path.with_name(store_path.name + ".tunes")


def read_log(path: Path) -> dict[str, Any]:
    try:
        log = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read the tune log {str(path)!r}: {exc}") from None
    if not isinstance(log, dict) or log.get("version") != TUNE_LOG_VERSION:
        raise InputError(f"{str(path)!r} is not a tune log of this version of ann-bench")
    problem = _log_problem(log)
    if problem:
        raise InputError(f"the tune log {str(path)!r} is malformed ({problem}); it was edited or damaged: delete it "
                         "and run the tune again")
    return log


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _log_problem(log: dict[str, Any]) -> str | None:
    """What in a tune log does not have the shape ``plot --tune`` and a resumed tune read, or None."""
    for name, kind in (("tune_id", str), ("dataset_hash", str), ("trials", list), ("targets", list)):
        if not isinstance(log.get(name), kind):
            return f"{name!r} is not a {kind.__name__}"
    if not all(_is_number(t) for t in log["targets"]):
        return "'targets' holds a value that is not a number"
    for i, t in enumerate(log["trials"]):
        if not isinstance(t, dict):
            return f"trial {i} is not an object"
        checks = (("row_keys", lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v)),
                  ("build", lambda v: isinstance(v, dict)), ("state", lambda v: isinstance(v, str)),
                  ("values", lambda v: v is None or (isinstance(v, list) and all(_is_number(x) for x in v))),
                  ("number", _is_number), ("phase", lambda v: isinstance(v, str)))
        for name, ok in checks:
            if name in t and not ok(t[name]):
                return f"trial {i}'s {name!r} has an unexpected value"
    answers = log.get("answers", [])
    if not isinstance(answers, list) or not all(
            isinstance(a, dict) and _is_number(a.get("target")) and isinstance(a.get("row_key", ""), str)
            for a in answers):
        return "'answers' is not a list of answers with a target and a row key"
    return None


def tune_marks(log: dict[str, Any], records: list) -> tuple[list, dict[str, Any]]:
    """The rows of a tune's full-set trials among ``records``, and the plot marks of its answers: stars on the
    answer rows (labelled with target, backend and search setting in short: ``≥0.9/0.95: hnsw ef40``), the
    targets, a title line."""
    keys = {key for t in log["trials"] if t.get("phase", "full") == "full" for key in t.get("row_keys", [])}
    by_key = {r.key: r for r in records if r.key in keys}
    stars, seen = [], {}
    for a in log.get("answers", []):
        if a.get("row_key") in by_key:
            seen.setdefault(a["row_key"], []).append(f"{a['target']:g}")
    for key, targets in seen.items():
        r = by_key[key]
        stars.append((r, f"≥{'/'.join(targets)}: {r.backend} {short_params(r.search_params, None)}"))
    title = f"tune {log['tune_id']}: {len(log['trials'])} jobs, {len(by_key)} rows; ★ = its answers per target"
    return list(by_key.values()), {"highlights": stars, "targets": log.get("targets"), "title": title}


def find_log(store_path: Path, which: str | None) -> Path:
    """The tune log named by ``which`` (a path, a tune id or its prefix, or None/'latest': the newest)."""
    if which and Path(which).is_file():
        return Path(which)
    folder = log_dir(store_path)
    logs = sorted(folder.glob("*.json"), key=lambda p: p.stat().st_mtime) if folder.is_dir() else []
    if which and which != "latest":
        logs = [p for p in logs if p.stem.startswith(which)]
    if not logs:
        raise InputError(f"no tune log {'matching ' + repr(which) + ' ' if which and which != 'latest' else ''}"
                         f"beside {str(store_path)!r}; run `ann-bench tune` first")
    return logs[-1]




def choose_answers(candidates: list[Candidate], targets, seed: int | None, labels: list[str], per_backend: bool,
                   fits, why_none) -> list[Answer]:
    """Per target: the fastest candidate whose tuning recall reaches it within the constraints (``fits(record)``)
    and the fastest of another backend (runner-up); with ``per_backend``, the fastest of each backend of
    ``labels``. A candidate timed contended (another process had the CPU) ranks after every uncontended one: its
    speed is the machine's, not the library's. ``why_none(label or None, target, within)`` says why a backend (None: any) has no answer.
    ``seed``: of the held-out bootstrap intervals; None leaves them out (the running answer needs none)."""
    def ci(c: Candidate):
        return bootstrap_ci(c.heldout, seed) if seed is not None else None

    out = []
    unique = list({c.record.key: c for c in candidates if c.record.label() in labels}.values())
    within = [c for c in unique if fits(c.record)]
    for target in targets:
        good = [c for c in within if c.tune_recall >= target]
        best: dict[str, Candidate] = {}
        def rank(c: Candidate):
            return not c.record.contended, c.speed, c.tune_recall

        for c in good:
            label = c.record.label()
            if label not in best or rank(c) > rank(best[label]):
                best[label] = c
        if per_backend:
            for label in labels:
                c = best.get(label)
                out.append(Answer(target, label, c, ci(c) if c else None,
                                  "" if c else why_none(label, target, within), "backend"))
            continue
        order = sorted(best.values(), key=rank, reverse=True)
        if not order:
            out.append(Answer(target, "-", None, None, why_none(None, target, within)))
        for c, role in zip(order, ("winner", "runner-up")):
            out.append(Answer(target, c.record.label(), c, ci(c), "", role))
    return out
