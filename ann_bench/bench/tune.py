"""``ann-bench tune``: the fastest configuration of each backend reaching each recall target, found by search
instead of a fixed grid.

Two levels, each on the measuring core every ``run`` uses (worker processes, timeouts, memory limits, the
results store, Ray):

- **Search parameters by bisection.** On a built index, recall rises with the backend's effort parameter
  (``ef``, ``nprobe``, ``search_k``; ``eps`` falls). :func:`bisect_targets` finds, for each target, the least
  effort whose recall on the *tuning split* of the queries reaches it: an exponential probe from the cheapest
  setting, then a binary search to the exact integer. Targets share their measurements. It runs inside the
  build's worker (:func:`search_phase`), which holds the index; every setting it measures is an ordinary row of
  the store (recall over all queries, QPS, latency, label metrics).
- **Build parameters by multi-objective search.** One Optuna study per backend (TPE, seeded; objectives: the
  speed at each target, 0 where the trial cannot reach it; ``--max-memory``/``--max-build-s`` as Optuna
  constraints, and a build that passes ``--max-build-s`` is killed when it does). Each backend's first trial
  is its default build configuration, so tune starts from what ``run`` would measure. Trials run in rounds,
  one per backend each (one Ray task each with ``--executor ray``), until ``--budget`` or ``--trials``.
- **Pruning.** A target is given up for a build when a setting below it in recall is already slower than the
  best configuration of that backend found so far (more effort only costs more), so hopeless builds stop
  after a probe or two.
- **Validation.** The answers are chosen on the tuning split; their recall on the *held-out* queries (never
  seen by the choice) is reported with a bootstrap 95 % interval.

A log of the tune (trials, their outcome, the answers) is kept beside the store in
``<store>.tunes/<tune id>.json``, rewritten atomically after every trial: a killed tune re-run with the same
command replays its trials (Optuna proposes the same next ones) and measures nothing twice; ``ann-bench plot
--tune`` draws it.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ann_bench.atomic import atomic_path, raise_if_terminated
from ann_bench.backends import Index
from ann_bench.errors import InputError
from ann_bench.bench.runner import JobRecorder

TUNE_LOG_VERSION = 1
BOOTSTRAP = 2000  # resamples of the held-out queries for the recall interval
PRUNE_MARGIN = 0.8  # a target is given up for a build only when a probe is below 80 % of the best speed so far
SATURATION = 0.001  # ... or when two doublings of the effort in a row each gained less recall than this
DEFAULT_BACKENDS = ("hnsw", "ivf", "ivfpq", "annoy", "nsw")


# ---- the effort ladder and the bisection (pure: unit-tested without an index) ----------------------------------
@dataclass(frozen=True)
class Ladder:
    """The values of an effort parameter in increasing effort: every integer in [lo, hi] (``values`` empty), or
    an explicit list (floats: e.g. eps from large to 0)."""

    lo: int = 0
    hi: int = 0
    values: tuple = ()

    def __len__(self) -> int:
        return len(self.values) if self.values else self.hi - self.lo + 1

    def __getitem__(self, i: int):
        if not 0 <= i < len(self):
            raise IndexError(i)
        return self.values[i] if self.values else self.lo + i

    def position(self, i: int) -> float:
        """Where setting i lies on the effort scale the search steps along: log of the value for an integer
        ladder (effort doubles per unit), the index for an explicit list."""
        return math.log(self.lo + i) if not self.values and self.lo + i > 0 else float(i)

    def close(self, fail: int, succ: int) -> bool:
        """Whether the bracket (fail, succ) is narrow enough to stop: adjacent settings, or for an integer ladder
        values within 1/64 of each other (exact up to 64: ef, nprobe; 1.6 % for search_k in the thousands,
        where one more probe per halving buys nothing measurable)."""
        if succ - fail <= 1:
            return True
        return not self.values and (self.lo + succ) - (self.lo + fail) <= (self.lo + succ) // 64

    def nearest(self, position: float) -> int:
        """The setting nearest a position of :meth:`position`'s scale."""
        if self.values or self.lo + 0 <= 0:
            return min(len(self) - 1, max(0, round(position)))
        return min(len(self) - 1, max(0, round(math.exp(min(position, 700.0))) - self.lo))

    def doubled(self, i: int) -> int:
        """The setting with about twice the effort of setting i (at least i + 1, at most the last)."""
        nxt = (2 * (self.lo + i) - self.lo) if not self.values and self.lo + i > 0 else 2 * i + 1
        return min(len(self) - 1, max(i + 1, nxt))


def _logit(r: float) -> float:
    r = min(max(r, 1e-4), 1 - 1e-4)
    return math.log(r / (1 - r))


def saturated(before: float, after: float) -> bool:
    """Whether doubling the effort moved the recall (``before`` -> ``after``, both below the target) by less than
    SATURATION: twice in a row, the recall has levelled off below the target (e.g. IVF-PQ capped by its
    re-ranking depth, whatever nprobe), and doubling on would only measure slower settings."""
    return math.isfinite(before) and after - before < SATURATION


def bisect_targets(ladder: Ladder, probe, targets: list[float], bars: list[float | None] | None = None
                   ) -> dict[float, int | None]:
    """For each target (ascending), the least index i of ``ladder`` (increasing effort; recall assumed monotone)
    whose ``probe(i)`` recall reaches it, or None when the last setting does not (or the target was pruned).

    ``probe(i)`` -> (recall, speed), or None where the setting cannot be measured (counts as not reaching).
    Probes are memoised and shared by the targets. The search doubles the effort from the cheapest setting
    (or from the previous target's answer) until a setting reaches the target (or the recall levels off below
    it: :func:`saturated`), then narrows the bracket to
    adjacent settings (:meth:`Ladder.close`: exact integers up to 64, then within 1/64 of the value): by
    interpolating logit(recall) against log(effort) where that halves the bracket, else by bisection.
    ``bars[j]``: the best speed already known for target j; a probe below target j that is also slower than
    ``PRUNE_MARGIN`` of it prunes target j (more effort is only slower; the margin allows for timing noise)."""
    n = len(ladder)
    seen: dict[int, tuple[float, float] | None] = {}

    def recall(i: int) -> float:
        if i not in seen:
            seen[i] = probe(i)
        got = seen[i]
        return -math.inf if got is None else got[0]

    out: dict[float, int | None] = {}
    start = 0
    for j, target in sorted(enumerate(targets), key=lambda jt: jt[1]):
        bar = bars[j] if bars is not None else None

        def hopeless(i: int) -> bool:
            got = seen.get(i)
            return bar is not None and got is not None and got[0] < target and got[1] < bar * PRUNE_MARGIN

        if any(hopeless(i) for i in seen if i >= start):
            out[target] = None
            continue
        succ = min((i for i in seen if i >= start and recall(i) >= target), default=None)
        fail = max((i for i in seen if start <= i < (succ if succ is not None else n) and recall(i) < target),
                   default=None)
        flat = 0  # consecutive doublings that left the recall where it was
        while succ is None:  # double the effort until the target is reached
            i = start if fail is None else ladder.doubled(fail)
            if recall(i) >= target:
                succ = i
                break
            flat = flat + 1 if fail is not None and saturated(recall(fail), recall(i)) else 0
            if hopeless(i) or i == n - 1 or flat >= 2:
                break
            fail = i
        if succ is None or hopeless(succ):
            out[target] = None
            continue
        pruned, halved = False, True
        while fail is not None and not ladder.close(fail, succ):
            mid = (fail + succ) // 2
            rf, rs = recall(fail), recall(succ)
            if halved and math.isfinite(rf) and rs > rf:  # interpolate where the curve is known on both sides
                pf, ps = ladder.position(fail), ladder.position(succ)
                want = pf + (ps - pf) * (_logit(target) - _logit(rf)) / (_logit(rs) - _logit(rf))
                mid = min(succ - 1, max(fail + 1, ladder.nearest(want)))
            width = succ - fail
            if recall(mid) >= target:
                succ = mid
            else:
                fail = mid
                if hopeless(mid):
                    pruned = True
                    break
            halved = (succ - fail) * 2 <= width
        out[target] = None if pruned else succ
        if not pruned:
            start = succ  # a higher target needs at least this effort
    return out


# ---- what tune explores per backend ----------------------------------------------------------------------------
def effort_ladder(cls: type[Index], build: dict[str, Any], n: int, k: int) -> tuple[str, Ladder] | None:
    """The effort parameter bisected for an index of ``cls`` with ``build``, and its ladder; None for a backend
    without one (flat)."""
    if not cls.effort_params:
        return None
    name = next(iter(cls.effort_params))
    if name == "ef":
        return name, Ladder(k, max(k, min(n, 4096)))
    if name == "nprobe":
        return name, Ladder(1, max(1, int(build.get("nlist", 1))))
    if name == "search_k":
        lo = max(k, int(build.get("n_trees", 1)) * k // 2)
        return name, Ladder(lo, max(lo, 2 * n))
    if name == "eps":  # k-d tree: from a loose bound down to exact
        return name, Ladder(values=(16.0, 8.0, 4.0, 2.0, 1.0, 0.5, 0.25, 0.125, 0.0))
    param = next(p for p in cls.search_params if p.name == name)
    lo, hi = int(param.min or 1), int(min(param.max or 1024, 1 << 16))
    return name, Ladder(lo, hi) if cls.effort_params[name] > 0 else None


def divisors(dim: int, low: int, high: int) -> list[int]:
    return [m for m in range(max(1, low), min(dim, high) + 1) if dim % m == 0]


def build_space(cls: type[Index], n: int, dim: int) -> dict[str, Any]:
    """Optuna distributions of the build parameters tune varies, wider than the default grids; a parameter not
    named here keeps its default (or the value given with --build)."""
    from optuna.distributions import CategoricalDistribution, IntDistribution

    root = math.sqrt(n)
    space: dict[str, Any] = {
        "M": IntDistribution(4, 64, log=True),
        "ef_construction": IntDistribution(40, 800, log=True),
        # sqrt(n)/4 .. 16 sqrt(n) lists, at most one per 39 vectors (fewer and faiss's k-means warns it has too
        # few training points per centroid)
        "nlist": IntDistribution(max(1, min(int(root / 4), n // 39)), max(1, min(int(16 * root), n // 39)),
                                 log=True),
        "n_trees": IntDistribution(2, 256, log=True),
        "f": IntDistribution(4, 48, log=True),
        "leafsize": IntDistribution(4, 256, log=True),
    }
    if cls.name == "nsw":
        space["ef_construction"] = IntDistribution(48, 400, log=True)
    if cls.name == "ivfpq":
        ms = divisors(dim, max(1, dim // 32), min(64, dim // 2 or 1)) or divisors(dim, 1, 64)
        space["m"] = CategoricalDistribution(ms)
        space["nbits"] = CategoricalDistribution([b for b in (4, 6, 8) if 2 ** b <= n] or [4])
        space["rerank"] = CategoricalDistribution([False, True])  # keep raw vectors to re-rank (search refine)
    declared = {p.name: p for p in cls.build_params}
    return {name: dist for name, dist in space.items() if name in declared}


# ---- the job sent to a worker ----------------------------------------------------------------------------------
@dataclass
class TuneSpec:
    """What a build's worker does after the build instead of a fixed list of searches (picklable)."""

    param: str
    ladder: Ladder
    fixed: list[dict[str, Any]]  # the other search parameters: each combination is bisected on its own
    targets: list[float]
    tune_rows: np.ndarray  # ids of the tuning queries
    mode: str
    speed: str  # "qps" | "p99"
    bars: list[float | None]  # per target, the best speed this backend has reached so far
    known: dict[str, tuple[float, float]] = field(default_factory=dict)  # stored rows: canon search -> (recall, speed)
    max_index_bytes: int | None = None
    max_build_s: float | None = None


def speed_of(figures: dict[str, Any], speed: str) -> float:
    """Higher is faster: QPS, or 1000 / p99 latency in ms (queries per second at the p99 latency)."""
    if speed == "qps":
        return float(figures.get("qps") or 0.0)
    p99 = figures.get("p99_ms")
    return 1000.0 / p99 if p99 else 0.0


def tuning_recall(metric: str, Q, X, I, true_D, k: int, rows: np.ndarray) -> np.ndarray:
    """Per-query recall (the primary, tie-aware rule) of ids I (nq, k), for the query ids ``rows``."""
    from ann_bench.distances import distances_to
    from ann_bench.bench.metrics import tie_recall

    return tie_recall(distances_to(metric, Q[rows], X, I[rows]), true_D[rows], k)


def search_phase(job, cls, index, X: np.ndarray, Q: np.ndarray, info: dict[str, Any], emit) -> None:
    """In the worker, after the build: the bisection of ``job.tune`` on ``index``; every measured setting is
    emitted as ``pending`` + ``result`` (or ``error``) events, like a sweep's."""
    from ann_bench.distances import distances_to
    from ann_bench.bench.metrics import label_metrics
    from ann_bench.bench.results import canon_params
    from ann_bench.bench.worker import accuracy, error_text, measure

    spec: TuneSpec = job.tune
    if spec.max_index_bytes is not None and (info.get("index_bytes") or 0) > spec.max_index_bytes:
        emit("note", f"pruned: index {info['index_bytes'] / 1e6:,.1f} MB > --max-memory "
                     f"{spec.max_index_bytes / 1e6:,.1f} MB; no search measured")
        return
    if spec.max_build_s is not None and (info.get("build_s") or 0) > spec.max_build_s:
        emit("note", f"pruned: build {info['build_s']:.1f} s > --max-build-s {spec.max_build_s:g}; no search measured")
        return
    true_D = distances_to(job.metric, Q, X, np.asarray(job.gt_I)[:, : job.k])
    count = len(job.pending)
    for fixed in spec.fixed:
        def probe(i: int, fixed=fixed):
            nonlocal count
            search = cls.validate_search_params({**fixed, spec.param: spec.ladder[i]})
            key = canon_params(search)
            if key in spec.known:
                return spec.known[key]
            if index.search_skip_reason(search, job.k) is not None:
                return None
            raise_if_terminated()
            emit("pending", search, spec.mode)
            at, count = count, count + 1
            try:
                index.set_search_params(**search)
                figures, I = measure(index, Q, job.k, spec.mode, job.runs)
                figures.update(accuracy(job.metric, Q, X, I, job.gt_D, job.gt_I, job.k, true_D))
                if job.train_labels is not None and job.test_labels is not None:
                    figures["label_metrics"] = label_metrics(I, job.train_labels, job.test_labels, job.k)
            except Exception as exc:  # a backend bug: a failed row, and this setting counts as not reaching
                emit("error", at, error_text(exc))
                return None
            emit("result", at, figures, I)
            rec = float(tuning_recall(job.metric, Q, X, I, true_D, job.k, spec.tune_rows).mean())
            return rec, speed_of(figures, spec.speed)

        bisect_targets(spec.ladder, probe, spec.targets, spec.bars)


# ---- the driver ---------------------------------------------------------------------------------------------
@dataclass
class TuneOptions:
    targets: tuple[float, ...] = (0.9, 0.95, 0.99)
    backends: tuple[str, ...] = DEFAULT_BACKENDS
    max_memory: int | None = None  # bytes of serialized index
    max_build_s: float | None = None
    speed: str = "qps"  # "qps" | "p99" (single mode)
    budget_s: float | None = None  # no new trial starts after this
    trials: int = 6  # at most, per backend
    heldout: float = 0.5  # fraction of the queries kept out of the choice
    build_specs: tuple[str, ...] = ()  # --build fixes build parameters (kept out of the search)
    subsample: float | None = None  # search builds on this fraction of the train vectors, then build finalists
    finalists: int = 2  # with subsample: builds per backend carried to the full set, hardest target's first
    search_specs: tuple[str, ...] = ()  # --search fixes the other search parameters

    def check(self) -> None:
        if not self.targets:
            raise InputError("--recall needs at least one target, e.g. --recall 0.95")
        for t in self.targets:
            if not (isinstance(t, float) and 0.0 < t <= 1.0):
                raise InputError(f"--recall {t!r} is not a recall target in (0, 1]; e.g. --recall 0.9,0.95,0.99")
        if self.speed not in ("qps", "p99"):
            raise InputError(f"unknown --metric {self.speed!r}; use qps or p99")
        if self.subsample is not None and not 0.0 < self.subsample < 1.0:
            raise InputError(f"--subsample {self.subsample} must be a fraction in (0, 1), e.g. 0.1")
        if self.finalists < 1:
            raise InputError(f"--finalists must be >= 1, got {self.finalists}")
        if self.trials < 1:
            raise InputError(f"--trials must be >= 1, got {self.trials}")
        if not 0.0 < self.heldout < 1.0:
            raise InputError(f"--heldout {self.heldout} must be a fraction in (0, 1), e.g. 0.5")
        if self.budget_s is not None and not (math.isfinite(self.budget_s) and self.budget_s > 0):
            raise InputError(f"--budget must be a positive duration, e.g. 20m; got {self.budget_s}")
        if self.max_build_s is not None and not (math.isfinite(self.max_build_s) and self.max_build_s > 0):
            raise InputError(f"--max-build-s must be a positive number of seconds, got {self.max_build_s}")
        if self.max_memory is not None and self.max_memory <= 0:
            raise InputError(f"--max-memory must be positive, got {self.max_memory} bytes")


def parse_duration(text: str) -> float:
    """'20m', '90s', '1h30m', '45' (seconds) -> seconds."""
    import re

    s = str(text).strip().lower()
    m = re.fullmatch(r"(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m(?:in)?)?\s*(?:(\d+(?:\.\d+)?)s?)?", s)
    if not s or not m or not any(m.groups()):
        raise InputError(f"malformed duration {text!r}: use e.g. 20m, 90s or 1h30m")
    h, mi, sec = (float(g) if g else 0.0 for g in m.groups())
    return h * 3600 + mi * 60 + sec


def parse_targets(text: str) -> tuple[float, ...]:
    out = []
    for part in str(text).split(","):
        try:
            value = float(part.strip())
        except ValueError:
            raise InputError(f"--recall {part.strip()!r} is not a number; e.g. --recall 0.9,0.95,0.99") from None
        if value not in out:
            out.append(value)
    return tuple(sorted(out))


@dataclass
class Candidate:
    """A measured row of the tune, with its recall on each query split."""

    record: Any  # results.Record
    tune_recall: float
    heldout: np.ndarray  # per-query recall of the held-out queries
    speed: float
    trial: int


@dataclass
class Answer:
    target: float
    group: str
    candidate: Candidate | None
    heldout_ci: tuple[float, float] | None = None
    reason: str = ""

    def as_json(self) -> dict[str, Any]:
        r = self.candidate.record if self.candidate else None
        return {"target": self.target, "backend": r.backend if r else self.group.split("[")[0],
                "impl": r.impl if r else None, "build": r.build_params if r else None,
                "search": r.search_params if r else None,
                "recall": self.candidate.tune_recall if r else None,
                "recall_heldout": float(self.candidate.heldout.mean()) if r else None,
                "recall_heldout_ci95": list(self.heldout_ci) if self.heldout_ci else None,
                "recall_all": r.recall if r else None,
                "qps": r.qps if r else None, "p99_ms": r.p99_ms if r else None,
                "index_bytes": r.index_bytes if r else None, "build_s": r.build_s if r else None,
                "trial": self.candidate.trial if r else None, "row_key": r.key if r else None,
                "reason": self.reason}


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

    def ranked(self) -> list[Answer]:
        """Per target (ascending): the backends' answers, fastest first; those without one last."""
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


def tune_id(dataset_hash: str, plans: list, options: TuneOptions, run_options) -> str:
    ident = [TUNE_LOG_VERSION, dataset_hash, [p.cls.label() for p in plans], list(options.targets),
             options.max_memory, options.max_build_s, options.speed, options.trials, options.heldout,
             list(options.build_specs), list(options.search_specs), options.subsample, options.finalists,
             run_options.k, run_options.threads,
             run_options.build_threads, run_options.seed, run_options.runs]
    return hashlib.sha256(json.dumps(ident, default=str).encode()).hexdigest()[:12]


def log_dir(store_path: Path) -> Path:
    return store_path.with_name(store_path.name + ".tunes")


def read_log(path: Path) -> dict[str, Any]:
    try:
        log = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read the tune log {str(path)!r}: {exc}") from None
    if not isinstance(log, dict) or log.get("version") != TUNE_LOG_VERSION:
        raise InputError(f"{str(path)!r} is not a tune log of this version of ann-bench")
    return log


def tune_marks(log: dict[str, Any], records: list) -> tuple[list, dict[str, Any]]:
    """The rows of a tune's full-set trials among ``records``, and the plot marks of its answers: stars on the
    answer rows (labelled with target and search setting), the targets, a title line."""
    keys = {key for t in log["trials"] if t.get("phase", "full") == "full" for key in t.get("row_keys", [])}
    by_key = {r.key: r for r in records if r.key in keys}
    stars, seen = [], {}
    for a in log.get("answers", []):
        if a.get("row_key") in by_key:
            seen.setdefault(a["row_key"], []).append(f"{a['target']:g}")
    for key, targets in seen.items():
        r = by_key[key]
        setting = ",".join(f"{k}={v}" for k, v in r.search_params.items())
        stars.append((r, f"≥{'/'.join(targets)}: {setting}"))
    title = (f"tune {log['tune_id']}: {len(log['trials'])} trial(s), {len(by_key)} measured settings; "
             f"★ = fastest per backend reaching each target on the tuning queries")
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


def run_tune(vs, options: TuneOptions, run_options, store, reporter=None) -> TuneResult:
    """Tune every backend of ``options`` on ``vs`` with the measuring settings of ``run_options`` (a
    runner.RunOptions: k, runs, threads, seed, executor, timeout, memory limit); rows go to ``store`` (a
    ResultStore, required: it is what makes a killed tune resumable)."""
    from ann_bench.bench.executors import open_executor
    from ann_bench.bench.runner import Reporter

    options.check()
    run_options.check()
    reporter = reporter or Reporter()
    with open_executor(run_options, reporter) as executor:
        return _tune(vs, options, run_options, store, reporter, executor)


class _Data:
    """One vector set as tune measures on it: vectors, ground truth, the recomputed true distances, labels, and
    the rows of the store measured on it."""

    def __init__(self, vs, k: int, reporter, what: str = "ground truth"):
        from ann_bench.data.vectorset import GT_SAMPLE, check_groundtruth
        from ann_bench.distances import distances_to
        from ann_bench.bench.metrics import label_metrics
        from ann_bench.bench.runner import check_labels

        self.vs, self.k = vs, k
        self.X = vs.load_train()
        self.Q = vs.load_test()
        check_groundtruth(vs, self.X, sample=GT_SAMPLE)
        with reporter.task(what, None if vs.has_groundtruth else vs.n_test) as advance:
            self.gt_D, self.gt_I = vs.groundtruth(k, progress=advance)
        self.true_D = distances_to(vs.metric, self.Q, self.X, np.asarray(self.gt_I)[:, :k])
        self.train_labels, self.test_labels = check_labels(vs)
        self.exact_labels = ({f"exact_{name}": v for name, v in
                              label_metrics(self.gt_I, self.train_labels, self.test_labels, k).items()}
                             if self.train_labels is not None else {})
        self.hash = vs.content_hash()
        self.fields = dict(dataset_hash=self.hash, dataset_name=vs.name, dataset_path=str(vs.path.resolve()),
                           metric=vs.metric, n_train=vs.n_train, n_test=vs.n_test, dim=vs.dim)


def subsample_set(vs, X: np.ndarray, fraction: float, seed: int, k: int, progress=None) -> Path:
    """A random ``fraction`` of ``vs``'s train vectors (seeded) with all its queries, labels and exact ground
    truth, written once into the cache (``subsamples/``) and reused."""
    from ann_bench.config import cache_dir
    from ann_bench.data.vectorset import VectorSet, write_vectorset

    n_sub = int(round(vs.n_train * fraction))
    if n_sub < max(1000, 2 * k):
        raise InputError(f"--subsample {fraction} of {vs.n_train} vectors leaves {n_sub}; a subsample needs >= "
                         f"{max(1000, 2 * k)}: raise it or drop --subsample")
    path = cache_dir() / "subsamples" / f"{vs.content_hash()[:16]}-{n_sub}-{seed}.hdf5"
    if path.exists():
        try:
            with VectorSet(path) as sub:
                if sub.n_train == n_sub and sub.gt_depth >= k:
                    return path
        except InputError:
            pass  # unreadable: written again below
    ids = np.sort(np.random.default_rng(seed).choice(vs.n_train, n_sub, replace=False))
    labels = (vs.labels("train")[ids], vs.labels("test")) if vs.has_labels else (None, None)
    path.parent.mkdir(parents=True, exist_ok=True)
    keys = vs.keys("train")
    write_vectorset(path, X[ids], vs.load_test(), vs.metric, train_labels=labels[0], test_labels=labels[1],
                    train_keys=keys[ids] if keys is not None else None, test_keys=vs.keys("test"),
                    attrs={"name": f"{vs.name}-sample{n_sub}", "source": "ann-bench tune --subsample",
                           "parent": vs.content_hash(), "sample_seed": seed}, k=max(k, 10), progress=progress)
    return path


def scale_build(build: dict[str, Any], space: dict[str, Any], factor: float) -> dict[str, Any]:
    """A build configuration found on a subsample, carried to the full set: the number of IVF lists grows with
    sqrt(n) (``factor`` = sqrt(n_full / n_sample)), within its range; graph and tree parameters are kept."""
    out = dict(build)
    if "nlist" in out:
        d = space.get("nlist")
        value = int(round(out["nlist"] * factor))
        out["nlist"] = max(1, value if d is None else min(value, int(d.high)))
    return out


def _tune(vs, options: TuneOptions, run_options, store, reporter, executor) -> TuneResult:
    import optuna

    from ann_bench.data.vectorset import VectorSet, check_groundtruth
    from ann_bench.bench.runner import Reporter, check_k, parse_param_specs, plan_sweep

    reporter = reporter or Reporter()
    check_groundtruth(vs)
    check_k(vs, run_options.k)
    k = run_options.k
    mode = "single" if options.speed == "p99" else "batch"
    tune_rows, held_rows = split_queries(vs.n_test, options.heldout, run_options.seed)
    fixed_build = parse_param_specs(options.build_specs, "--build")  # fixed: kept out of the search
    plans = plan_sweep(options.backends, vs.n_train, vs.dim, vs.metric, options.build_specs, options.search_specs)
    full = _Data(vs, k, reporter)
    tid = tune_id(full.hash, plans, options, run_options)
    path = log_dir(store.path) / f"{tid}.json"
    log = read_log(path) if path.exists() else {
        "version": TUNE_LOG_VERSION, "tune_id": tid, "dataset_hash": full.hash, "dataset_name": vs.name,
        "k": k, "mode": mode, "threads": run_options.threads, "speed": options.speed,
        "targets": list(options.targets), "max_memory": options.max_memory, "max_build_s": options.max_build_s,
        "heldout": options.heldout, "seed": run_options.seed, "subsample": options.subsample, "trials": [],
        "answers": []}
    log["created_at"] = log.get("created_at") or _now()

    def save_log() -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            Path(tmp).write_text(json.dumps(log, indent=1, default=_json_default))

    sample = None
    sample_vs = None
    if options.subsample is not None:
        with reporter.task(f"subsample of {options.subsample:g} of the train vectors", vs.n_test) as advance:
            sample_path = subsample_set(vs, full.X, options.subsample, run_options.seed, k, progress=advance)
        sample_vs = VectorSet(sample_path)
        sample = _Data(sample_vs, k, reporter, "subsample ground truth")
    search_data = sample or full
    phase = "sample" if sample is not None else "full"
    trials = _Trials(options, run_options, store, reporter, executor, mode, tune_rows, held_rows, log, save_log)

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    states: list[_BackendState] = []
    for plan in plans:
        fixed_names = {name for b, name, _ in fixed_build if b in (None, plan.cls.name)}
        space = {name: d for name, d in build_space(plan.cls, search_data.vs.n_train, vs.dim).items()
                 if name not in fixed_names}
        base_build = plan.builds[0]
        if sample is not None and "nlist" in space:  # the default's lists, at the subsample's size
            base_build = scale_build(base_build, {}, math.sqrt(sample.vs.n_train / vs.n_train))
            base_build["nlist"] = min(max(base_build["nlist"], space["nlist"].low), space["nlist"].high)
        effort = effort_ladder(plan.cls, base_build, vs.n_train, k)
        sampler = optuna.samplers.TPESampler(seed=run_options.seed, multivariate=True, n_startup_trials=4)
        study = optuna.create_study(directions=["maximize"] * len(options.targets), sampler=sampler)
        st = _BackendState(plan, space, base_build, _fixed_searches(plan.searches, effort[0] if effort else None),
                           study, options.targets)
        study.enqueue_trial({name: base_build[name] for name in space})  # trial 1: the default build
        for t in log["trials"]:  # replay: Optuna sees the same history and proposes the same next trials
            if t["label"] == plan.cls.label() and t.get("phase", "full") == phase:
                st.replay(t)
        states.append(st)

    candidates = {phase: trials.replayed(search_data, states, phase)}
    t0 = time.perf_counter()
    budget = options.budget_s if sample is None or options.budget_s is None else options.budget_s / 2
    stopped = f"every backend ran its {options.trials} trial(s) (--trials)"
    while True:
        raise_if_terminated()
        active = [s for s in states if s.asked < options.trials and not s.exhausted]
        if not active:
            break
        if budget is not None and time.perf_counter() - t0 >= budget:
            stopped = (f"the --budget of {options.budget_s:g} s was spent" if sample is None else
                       f"half the --budget ({budget:g} s) was spent on the subsample")
            break
        batch = []
        for st in active:
            trial = st.propose()
            st.asked += 1
            entry = trials.entry(st, trial.params, phase)
            build = trials.check_build(st, {**st.base_build, **trial.params}, search_data, entry)
            if build is None or (same := st.tried.get(_canon(build))) is not None:
                if build is not None:  # TPE proposed a build already measured: its outcome, not a second build
                    entry.update({key: same[key] for key in ("state", "values", "constraints", "build_s",
                                                              "index_bytes", "row_keys")})
                    entry["note"] = f"same build as trial {same['number'] + 1}"
                st.tell(trial, entry, entry["values"], entry["constraints"])
                log["trials"].append(entry)
                save_log()
                continue
            batch.append((st, trial, entry, build))
        for (st, trial, entry, build), found in zip(batch, trials.measure(search_data, [
                (st, entry, build) for st, trial, entry, build in batch])):
            candidates[phase].extend(found)
            st.tell(trial, entry, entry["values"], entry["constraints"])
            st.tried[_canon(entry["build"])] = entry

    if sample is not None:
        # The finalists: per backend, the builds that answered a target on the subsample, carried to the full set.
        factor = math.sqrt(vs.n_train / sample.vs.n_train)
        sample_answers = choose_answers(candidates["sample"], options, run_options.seed,
                                        [s.plan.cls.label() for s in states], log, phase="sample")
        finals = []
        for st in states:
            # The hardest target's answer first: low targets are met cheaply by most builds, while the build is
            # what decides the speed at a high one.
            mine = [a for a in sample_answers if a.group == st.plan.cls.label() and a.candidate is not None]
            mine.sort(key=lambda a: -a.target)
            builds: list[dict[str, Any]] = []
            for a in mine:
                b = scale_build(a.candidate.record.build_params, build_space(st.plan.cls, vs.n_train, vs.dim),
                                factor)
                if b not in builds:
                    builds.append(b)
            for number, b in enumerate(builds[: options.finalists]):
                entry = trials.entry(st, {}, "full", number)
                build = trials.check_build(st, b, full, entry)
                if build is not None:
                    finals.append((st, entry, build))
        done = {_canon(t["build"]): t for t in log["trials"] if t.get("phase") == "full" and t.get("build")}
        again = [(st, entry, build) for st, entry, build in finals if _canon(build) not in done]
        candidates["full"] = trials.replayed(full, states, "full")
        for found in trials.measure(full, again, prune=False):
            candidates["full"].extend(found)
        sample_vs.close()

    answers = choose_answers(candidates["full"], options, run_options.seed, [s.plan.cls.label() for s in states],
                             log, phase="full")
    log["answers"] = [a.as_json() for a in answers]
    log["finished_at"] = _now()
    save_log()
    return TuneResult(tid, path, answers, log["trials"], candidates["full"], time.perf_counter() - t0,
                      len(tune_rows), len(held_rows), stopped)


class _Trials:
    """Runs trials (build configurations) on a data set and logs them: the one path from a proposed build to
    stored rows, candidates and a log entry."""

    def __init__(self, options, run_options, store, reporter, executor, mode, tune_rows, held_rows, log,
                 save_log):
        self.options, self.run_options, self.store, self.reporter = options, run_options, store, reporter
        self.executor, self.mode, self.tune_rows, self.held_rows = executor, mode, tune_rows, held_rows
        self.log, self.save_log = log, save_log

    def entry(self, st, params: dict[str, Any], phase: str, number: int | None = None) -> dict[str, Any]:
        if number is None:
            number = sum(1 for t in self.log["trials"] if t["label"] == st.plan.cls.label()
                         and t.get("phase", "full") == phase)
        return {"label": st.plan.cls.label(), "backend": st.plan.cls.name, "impl": st.plan.cls.impl,
                "phase": phase, "number": number, "params": dict(params), "build": None, "state": "",
                "values": None, "constraints": None, "build_s": None, "index_bytes": None, "note": "",
                "row_keys": []}

    def check_build(self, st, build: dict[str, Any], data: _Data, entry) -> dict[str, Any] | None:
        """The validated build, or None (the entry logged as infeasible, with the reason)."""
        if "f" in st.space and "ef_construction" in build and build["ef_construction"] < build["f"]:
            build["ef_construction"] = build["f"]  # our NSW's insertion search must find f candidates
        try:
            build = st.plan.cls.validate_build_params(build)
            st.plan.cls.check_data(build, data.vs.n_train, data.vs.dim)
        except InputError as exc:
            entry.update(state="infeasible", note=str(exc))
            return None
        entry["build"] = build
        if not st.space:
            st.exhausted = True  # nothing to vary (flat): one trial says it all
        return build

    def candidate(self, data: _Data, rec, I, trial: int) -> Candidate:
        per_query = tuning_recall(data.vs.metric, data.Q, data.X, I, data.true_D, data.k, np.arange(data.vs.n_test))
        return Candidate(rec, float(per_query[self.tune_rows].mean()), per_query[self.held_rows],
                         speed_of({"qps": rec.qps, "p99_ms": rec.p99_ms}, self.options.speed), trial)

    def stored_rows(self, data: _Data, cls, build: dict[str, Any]) -> list:
        from ann_bench.bench.results import canon_params

        want = canon_params(build)
        return [r for r in self.store.records(dataset=data.hash, backend=cls.name, mode=self.mode, k=data.k)
                if r.impl == cls.impl and r.threads == self.run_options.threads and r.status == "ok"
                and r.recall is not None and canon_params(r.build_params) == want
                and self.store.neighbors_problem(r) is None]

    def replayed(self, data: _Data, states, phase: str) -> list[Candidate]:
        """The candidates of the logged trials of ``phase`` (their rows, read back from the store)."""
        out = []
        for t in self.log["trials"]:
            st = next((s for s in states if s.plan.cls.label() == t["label"]), None)
            if st is None or t.get("phase", "full") != phase or not t.get("build"):
                continue
            keys = set(t.get("row_keys", []))
            out += [self.candidate(data, r, self.store.load_neighbors(r), t["number"])
                    for r in self.stored_rows(data, st.plan.cls, t["build"]) if r.key in keys]
        return out

    def measure(self, data: _Data, items: list[tuple[Any, dict[str, Any], dict[str, Any]]],
                prune: bool = True) -> list[list[Candidate]]:
        """Build and bisect each (backend state, log entry, build) on ``data`` (in parallel with Ray); fill and
        log each entry; the candidates of each. ``prune``: give a target up once it cannot beat the backend's
        best (the search phase; a finalist is bisected in full)."""
        from ann_bench.bench.results import canon_params
        from ann_bench.bench.runner import SweepSummary, index_cache_dir
        from ann_bench.bench.worker import BuildJob

        options, ro, k = self.options, self.run_options, data.k
        queued = []
        for st, entry, build in items:
            effort = effort_ladder(st.plan.cls, build, data.vs.n_train, k)
            cands = [self.candidate(data, r, self.store.load_neighbors(r), entry["number"])
                     for r in self.stored_rows(data, st.plan.cls, build)]
            spec = None
            if effort is not None:
                spec = TuneSpec(effort[0], effort[1], st.fixed_searches, list(options.targets), self.tune_rows,
                                self.mode, options.speed, [st.best.get(t) if prune else None for t in options.targets],
                                {canon_params(c.record.search_params): (c.tune_recall, c.speed) for c in cands},
                                options.max_memory, options.max_build_s)
            pending = [] if spec is not None else [(s, self.mode) for s in st.plan.searches]
            job = BuildJob(dataset_path=str(data.vs.path), metric=data.vs.metric, dim=data.vs.dim,
                           backend=st.plan.cls.name, impl=st.plan.cls.impl, build=build, pending=pending, k=k,
                           runs=ro.runs, threads=ro.threads, build_threads=ro.build_threads or ro.threads,
                           seed=ro.seed, gt_D=data.gt_D, gt_I=data.gt_I, train_labels=data.train_labels,
                           test_labels=data.test_labels,
                           index_cache=str(index_cache_dir(data.hash)) if ro.index_cache else None,
                           skip_saturated=True, dataset_hash=data.hash, build_limit_s=options.max_build_s, tune=spec)
            recorder = _TuneRecorder(job, _recorder_factory(st.plan.cls, build, k, ro.threads, data.fields),
                                     self.store, SweepSummary(), self.reporter, lambda n=1: None, data.exact_labels)
            where = " on the subsample" if entry["phase"] == "sample" else ""
            label = f"{st.plan.cls.label()} {_fmt(build)} (trial {entry['number'] + 1}{where})"
            needed = not (spec is not None and cands and _resolved(st.plan.cls, spec))
            queued.append((st, entry, build, recorder, cands, label if needed else None))
        to_run = [i for i, q in enumerate(queued) if q[5] is not None]
        out: list[list[Candidate]] = []

        def finish_until(stop: int) -> None:  # each trial is logged as soon as it is recorded, in order
            while len(out) < stop:
                st, entry, build, recorder, cands, label = queued[len(out)]
                mine = cands + [self.candidate(data, r, I, entry["number"]) for r, I in recorder.measured
                                if r.status == "ok"]
                self._finish(st, entry, recorder, mine, prune)
                out.append(mine)

        self.executor.run([(queued[i][3].job, queued[i][3], queued[i][5]) for i in to_run], data.vs, data.X,
                          data.Q, done=lambda j: finish_until(to_run[j] + 1))
        finish_until(len(queued))
        return out

    def _finish(self, st, entry, recorder, mine: list[Candidate], prune: bool) -> None:
        options = self.options
        info = recorder.build_info or (vars(mine[0].record) if mine else {})
        entry["build_s"] = info.get("build_s")
        entry["index_bytes"] = info.get("index_bytes")
        entry["row_keys"] = [c.record.key for c in mine]
        notes = recorder.notes + [f"{r.status}: {r.error}" for r, _ in recorder.measured if r.status != "ok"]
        if recorder.outcome is not None:
            notes.append(f"{recorder.outcome[0]}: {recorder.outcome[1]}")
        entry["note"] = "; ".join(notes)
        values = [max((c.speed for c in mine if c.tune_recall >= target), default=0.0) for target in options.targets]
        if entry["build_s"] is None:
            timed_out = recorder.outcome is not None and recorder.outcome[0] == "timeout"
            entry["state"] = "timeout" if timed_out else "failed"
            values = [0.0] * len(values) if timed_out else None
        else:
            entry["state"] = "complete"
        constraints = _constraint_values(entry, options)
        if entry["state"] == "complete" and any(c > 0 for c in constraints.values()):
            entry["state"] = "pruned"
        if prune and entry["state"] == "complete":
            for target, v in zip(options.targets, values):
                if v > st.best.get(target, 0.0):
                    st.best[target] = v
        entry["values"], entry["constraints"] = values, constraints
        self.log["trials"].append(entry)
        self.save_log()
        where = " (subsample)" if entry["phase"] == "sample" else ""
        self.reporter.log(f"trial {entry['number'] + 1}{where} {st.plan.cls.label()} {_fmt(entry['build'])}: "
                          f"{entry['state']}"
                          + "".join(f", {t}: {v:,.0f}" for t, v in zip(options.targets, values or []) if v)
                          + (f" ({entry['note']})" if entry["note"] else ""))


def choose_answers(candidates: list[Candidate], options: TuneOptions, seed: int, labels: list[str],
                   log: dict[str, Any], phase: str = "full") -> list[Answer]:
    """Per target and backend, the fastest candidate whose tuning recall reaches the target within the
    constraints; its held-out recall interval."""
    out = []
    trials = [t for t in log["trials"] if t.get("phase", "full") == phase]
    ok_trials = {(t["label"], t["number"]) for t in trials if t["state"] == "complete"}
    candidates = list({c.record.key: c for c in candidates}.values())  # a stored row reused by a later trial
    for target in options.targets:
        for label in labels:
            mine = [c for c in candidates if c.record.label() == label]
            within = [c for c in mine if (label, c.trial) in ok_trials and _fits(c.record, options)]
            good = [c for c in within if c.tune_recall >= target]
            if good:
                best = max(good, key=lambda c: (c.speed, c.tune_recall))
                out.append(Answer(target, label, best, bootstrap_ci(best.heldout, seed)))
                continue
            tried = [t for t in trials if t["label"] == label]
            sizes = [t["index_bytes"] for t in tried if t.get("index_bytes") is not None]
            if not mine and tried and all(t["state"] == "pruned" for t in tried) and options.max_memory and sizes \
                    and min(sizes) > options.max_memory:
                reason = f"every index > --max-memory (smallest {min(sizes) / 1e6:,.1f} MB)"
            elif not mine and tried and all(t["state"] in ("pruned", "timeout") for t in tried):
                reason = "every build over --max-build-s or --max-memory"
            elif not mine:
                states = sorted({t["state"] for t in tried})
                reason = f"no trial measured a search setting (trials: {', '.join(states) or 'none'})"
            elif not within:
                reason = "no trial within --max-memory/--max-build-s"
            else:
                reason = f"best tuning recall {max(c.tune_recall for c in within):.4f} < {target}"
            out.append(Answer(target, label, None, None, reason))
    return out


def _fits(r, options: TuneOptions) -> bool:
    return ((options.max_memory is None or (r.index_bytes or 0) <= options.max_memory)
            and (options.max_build_s is None or (r.build_s or 0) <= options.max_build_s))


def _constraint_values(entry: dict[str, Any], options: TuneOptions) -> dict[str, float]:
    """Optuna constraints (feasible when every value <= 0): index bytes over --max-memory, build seconds over
    --max-build-s (a build killed for running longer violates it)."""
    memory = build = 0.0
    if options.max_memory is not None and entry["index_bytes"] is not None:
        memory = float(entry["index_bytes"] - options.max_memory)
    if entry["state"] == "timeout":
        build = 1.0
    elif options.max_build_s is not None and entry["build_s"] is not None:
        build = float(entry["build_s"] - options.max_build_s)
    return {"memory": memory, "build_time": build}


class _BackendState:
    """One backend's study and what tune knows of it."""

    def __init__(self, plan, space, base_build, fixed_searches, study, targets):
        self.plan, self.space, self.base_build, self.targets = plan, space, base_build, list(targets)
        self.fixed_searches, self.study = fixed_searches, study
        self.asked = 0
        self.exhausted = False
        self.best: dict[float, float] = {}  # target -> best speed of a complete trial
        self.tried: dict[str, dict[str, Any]] = {}  # canon build -> its trial entry

    def tell(self, trial, entry, values, constraints) -> None:
        """Report a trial to its study: its speeds at the targets and its constraints (Optuna >= 5's
        ``set_constraint``), or a failure."""
        import optuna

        for key, value in (constraints or {}).items():
            trial.set_constraint(key, value)
        if values is None:
            self.study.tell(trial, state=optuna.trial.TrialState.FAIL)
        else:
            self.study.tell(trial, values)

    def propose(self):
        """The next trial: Optuna's proposal over the build space."""
        trial = self.study.ask()
        for name, d in self.space.items():
            kind = type(d).__name__
            if kind == "IntDistribution":
                trial.suggest_int(name, d.low, d.high, log=d.log)
            elif kind == "FloatDistribution":
                trial.suggest_float(name, d.low, d.high, log=d.log)
            else:
                trial.suggest_categorical(name, d.choices)
        return trial

    def replay(self, entry: dict[str, Any]) -> None:
        """Re-ask a trial of the log and tell it the logged outcome: the sampler's history and random state end
        as they were, so a resumed tune proposes what the killed one would have proposed next."""
        import optuna

        self.asked += 1
        values = entry.get("values")
        trial = self.propose()
        if trial.params == entry["params"]:
            self.tell(trial, entry, values, entry.get("constraints"))
        else:  # another version's space: keep its history as it was logged
            self.study.tell(trial, state=optuna.trial.TrialState.FAIL)
            dists = {name: d for name, d in self.space.items() if name in entry["params"]}
            state = optuna.trial.TrialState.COMPLETE if values is not None else optuna.trial.TrialState.FAIL
            try:
                self.study.add_trial(optuna.trial.create_trial(
                    state=state, values=values, params=entry["params"], distributions=dists,
                    constraints=entry.get("constraints") or None))
            except ValueError:
                pass
        if entry.get("build"):
            self.tried.setdefault(_canon(entry["build"]), entry)
            if entry["state"] == "complete":
                for target, v in zip(self.targets, values):
                    if v > self.best.get(target, 0.0):
                        self.best[target] = v
        if not self.space:
            self.exhausted = True


class _TuneRecorder(JobRecorder):
    """A JobRecorder that also keeps each row's ids (for the split recalls), the job's notes and its outcome."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.measured: list[tuple[Any, np.ndarray | None]] = []
        self.notes: list[str] = []
        self.outcome: tuple[str, str] | None = None

    def save(self, i, I=None, **fields) -> None:
        super().save(i, I, **fields)
        self.measured.append((self.summary.records[-1], I))

    def on_event(self, kind, *payload) -> None:
        if kind == "note":
            self.notes.append(payload[0])
        super().on_event(kind, *payload)

    def finish(self, outcome) -> None:
        self.outcome = outcome
        super().finish(outcome)


def _recorder_factory(cls, build, k, threads, dataset):
    from ann_bench.bench.results import Record
    from ann_bench.sysinfo import host, versions

    def record(search, mode_, **kw):
        kw.setdefault("versions", versions())
        kw.setdefault("host", host())
        return Record(backend=cls.name, impl=cls.impl, build_params=build, search_params=search, k=k, mode=mode_,
                      threads=threads, created_at=_now(), **dataset, **kw)

    return record


def _resolved(cls, spec: TuneSpec) -> bool:
    """Whether the bisection of ``spec`` needs no setting beyond those stored (``spec.known``)."""
    from ann_bench.bench.results import canon_params

    missing = False

    def probe(i: int, fixed: dict[str, Any]):
        nonlocal missing
        got = spec.known.get(canon_params(cls.validate_search_params({**fixed, spec.param: spec.ladder[i]})))
        if got is None:
            missing = True
            return (math.inf, 0.0)  # reaches every target: ends this line of search, which needs the index
        return got

    for fixed in spec.fixed:
        bisect_targets(spec.ladder, lambda i, f=fixed: probe(i, f), spec.targets, spec.bars)
        if missing:
            return False
    return True


def _fixed_searches(searches: list[dict[str, Any]], param: str | None) -> list[dict[str, Any]]:
    """The distinct combinations of the search parameters other than ``param`` (validated settings)."""
    out: list[dict[str, Any]] = []
    for s in searches:
        rest = {name: v for name, v in s.items() if name != param}
        if rest not in out:
            out.append(rest)
    return out or [{}]


def _canon(build: dict[str, Any]) -> str:
    return json.dumps(build, sort_keys=True, default=str)


def _fmt(params: dict[str, Any]) -> str:
    return ",".join(f"{k}={v}" for k, v in params.items()) or "-"


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _json_default(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(type(value).__name__)
