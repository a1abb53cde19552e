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
from ann_bench.runner import JobRecorder

TUNE_LOG_VERSION = 1
BOOTSTRAP = 2000  # resamples of the held-out queries for the recall interval
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


def bisect_targets(ladder: Ladder, probe, targets: list[float], bars: list[float | None] | None = None
                   ) -> dict[float, int | None]:
    """For each target (ascending), the least index i of ``ladder`` (increasing effort; recall assumed monotone)
    whose ``probe(i)`` recall reaches it, or None when the last setting does not (or the target was pruned).

    ``probe(i)`` -> (recall, speed), or None where the setting cannot be measured (counts as not reaching).
    Probes are memoised and shared by the targets. The search doubles the effort from the cheapest setting
    (or from the previous target's answer) until a setting reaches the target, then narrows the bracket to
    adjacent settings: by interpolating logit(recall) against log(effort) where that halves the bracket,
    else by bisection — exact integers in a handful of probes. ``bars[j]``: the best speed already known for
    target j; a probe below target j that is also slower prunes target j (more effort is only slower)."""
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
            return bar is not None and got is not None and got[0] < target and got[1] < bar

        if any(hopeless(i) for i in seen if i >= start):
            out[target] = None
            continue
        succ = min((i for i in seen if i >= start and recall(i) >= target), default=None)
        fail = max((i for i in seen if start <= i < (succ if succ is not None else n) and recall(i) < target),
                   default=None)
        while succ is None:  # double the effort until the target is reached
            i = start if fail is None else ladder.doubled(fail)
            if recall(i) >= target:
                succ = i
            elif hopeless(i) or i == n - 1:
                break
            else:
                fail = i
        if succ is None or hopeless(succ):
            out[target] = None
            continue
        pruned, halved = False, True
        while fail is not None and succ - fail > 1:
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
    declared = {p.name: p for p in cls.build_params}
    for p in cls.build_params:  # a declared on/off build choice (e.g. keeping raw vectors to re-rank) is explored
        if p.type is bool and p.name not in space:
            space[p.name] = CategoricalDistribution([False, True])
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
    from ann_bench.metrics import tie_recall

    return tie_recall(distances_to(metric, Q[rows], X, I[rows]), true_D[rows], k)


def search_phase(job, cls, index, X: np.ndarray, Q: np.ndarray, info: dict[str, Any], emit) -> None:
    """In the worker, after the build: the bisection of ``job.tune`` on ``index``; every measured setting is
    emitted as ``pending`` + ``result`` (or ``error``) events, like a sweep's."""
    from ann_bench.distances import distances_to
    from ann_bench.metrics import label_metrics
    from ann_bench.results import canon_params
    from ann_bench.worker import accuracy, error_text, measure

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
    trials: int = 10  # at most, per backend
    heldout: float = 0.5  # fraction of the queries kept out of the choice
    build_specs: tuple[str, ...] = ()  # --build fixes build parameters (kept out of the search)
    search_specs: tuple[str, ...] = ()  # --search fixes the other search parameters

    def check(self) -> None:
        if not self.targets:
            raise InputError("--recall needs at least one target, e.g. --recall 0.95")
        for t in self.targets:
            if not (isinstance(t, float) and 0.0 < t <= 1.0):
                raise InputError(f"--recall {t!r} is not a recall target in (0, 1]; e.g. --recall 0.9,0.95,0.99")
        if self.speed not in ("qps", "p99"):
            raise InputError(f"unknown --metric {self.speed!r}; use qps or p99")
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
                "trial": self.candidate.trial if r else None, "reason": self.reason}


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
             list(options.build_specs), list(options.search_specs), run_options.k, run_options.threads,
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
    from contextlib import ExitStack

    options.check()
    run_options.check()
    with ExitStack() as stack:
        ray_session = None
        if run_options.executor == "ray":
            from ann_bench import ray_executor

            ray_session = stack.enter_context(ray_executor.session(run_options.address))
        return _tune(vs, options, run_options, store, reporter, ray_session)


def _tune(vs, options: TuneOptions, run_options, store, reporter, ray_session) -> TuneResult:
    import optuna

    from ann_bench.datasets import GT_SAMPLE, check_groundtruth
    from ann_bench.distances import distances_to
    from ann_bench.runner import (Reporter, SweepSummary, _run_job, check_k, check_labels,
                                  index_cache_dir, parse_param_specs, plan_sweep)
    from ann_bench.metrics import label_metrics
    from ann_bench.worker import BuildJob

    reporter = reporter or Reporter()
    check_groundtruth(vs)
    check_k(vs, run_options.k)
    mode = "single" if options.speed == "p99" else "batch"
    k = run_options.k
    tune_rows, held_rows = split_queries(vs.n_test, options.heldout, run_options.seed)
    # Build parameters given with --build are fixed; so are the search parameters given with --search.
    fixed_build = parse_param_specs(options.build_specs, "--build")
    plans = plan_sweep(options.backends, vs.n_train, vs.dim, vs.metric, options.build_specs, options.search_specs)
    X = vs.load_train()
    Q = vs.load_test()
    check_groundtruth(vs, X, sample=GT_SAMPLE)
    with reporter.task("ground truth", None if vs.has_groundtruth else vs.n_test) as advance:
        gt_D, gt_I = vs.groundtruth(k, progress=advance)
    true_D = distances_to(vs.metric, Q, X, np.asarray(gt_I)[:, :k])
    train_labels, test_labels = check_labels(vs)
    exact_labels = ({f"exact_{name}": v for name, v in label_metrics(gt_I, train_labels, test_labels, k).items()}
                    if train_labels is not None else {})
    dataset_hash = vs.content_hash()
    dataset = dict(dataset_hash=dataset_hash, dataset_name=vs.name, dataset_path=str(vs.path.resolve()),
                   metric=vs.metric, n_train=vs.n_train, n_test=vs.n_test, dim=vs.dim)
    tid = tune_id(dataset_hash, plans, options, run_options)
    path = log_dir(store.path) / f"{tid}.json"
    log = read_log(path) if path.exists() else {
        "version": TUNE_LOG_VERSION, "tune_id": tid, "dataset_hash": dataset_hash, "dataset_name": vs.name,
        "k": k, "mode": mode, "threads": run_options.threads, "speed": options.speed,
        "targets": list(options.targets), "max_memory": options.max_memory, "max_build_s": options.max_build_s,
        "heldout": options.heldout, "seed": run_options.seed, "trials": [], "answers": []}
    log["created_at"] = log.get("created_at") or _now()

    def save_log() -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            Path(tmp).write_text(json.dumps(log, indent=1, default=_json_default))

    def candidate_of(rec, I, trial: int) -> Candidate:
        per_query = tuning_recall(vs.metric, Q, X, I, true_D, k, np.arange(vs.n_test))
        return Candidate(rec, float(per_query[tune_rows].mean()), per_query[held_rows],
                         speed_of({"qps": rec.qps, "p99_ms": rec.p99_ms}, options.speed), trial)

    def stored_rows(cls, build: dict[str, Any]) -> list:
        from ann_bench.results import canon_params

        want = canon_params(build)
        return [r for r in store.records(dataset=dataset_hash, backend=cls.name, mode=mode, k=k)
                if r.impl == cls.impl and r.threads == run_options.threads and r.status == "ok"
                and r.recall is not None and canon_params(r.build_params) == want
                and store.neighbors_problem(r) is None]

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    states: list[_BackendState] = []
    for plan in plans:
        fixed_names = {name for b, name, _ in fixed_build if b in (None, plan.cls.name)}
        space = {name: d for name, d in build_space(plan.cls, vs.n_train, vs.dim).items() if name not in fixed_names}
        base_build = plan.builds[0]
        effort = effort_ladder(plan.cls, base_build, vs.n_train, k)
        search_grid = plan.searches
        fixed_searches = _fixed_searches(search_grid, effort[0] if effort else None)
        n_targets = len(options.targets)
        sampler = optuna.samplers.TPESampler(seed=run_options.seed, multivariate=True, n_startup_trials=4)
        study = optuna.create_study(directions=["maximize"] * n_targets, sampler=sampler)
        st = _BackendState(plan, space, base_build, fixed_searches, study, options.targets)
        study.enqueue_trial({name: base_build[name] for name in space})  # trial 1: the default build
        for t in log["trials"]:  # replay: Optuna sees the same history and proposes the same next trials
            if t["label"] == plan.cls.label():
                st.replay(t)
        states.append(st)

    candidates: list[Candidate] = []
    for t in log["trials"]:  # rows of replayed trials: the answers consider them too
        st = next((s for s in states if s.plan.cls.label() == t["label"]), None)
        if st is None:
            continue
        keys = set(t.get("row_keys", []))
        for r in stored_rows(st.plan.cls, t["build"]):
            if r.key in keys:
                candidates.append(candidate_of(r, store.load_neighbors(r), t["number"]))

    t0 = time.perf_counter()
    stopped = f"every backend ran its {options.trials} trial(s) (--trials)"
    while True:
        raise_if_terminated()
        active = [s for s in states if s.asked < options.trials and not s.exhausted]
        if not active:
            break
        if options.budget_s is not None and time.perf_counter() - t0 >= options.budget_s:
            stopped = f"the --budget of {options.budget_s:g} s was spent"
            break
        jobs = []
        for st in active:
            trial = st.propose()
            build = {**st.base_build, **trial.params}
            entry = {"label": st.plan.cls.label(), "backend": st.plan.cls.name, "impl": st.plan.cls.impl,
                     "number": st.asked, "params": dict(trial.params), "build": None, "state": "",
                     "values": None, "constraints": None, "build_s": None, "index_bytes": None, "note": "",
                     "row_keys": []}
            st.asked += 1
            if "f" in st.space and "ef_construction" in build and build["ef_construction"] < build["f"]:
                build["ef_construction"] = build["f"]  # our NSW's insertion search must find f candidates
            try:
                build = st.plan.cls.validate_build_params(build)
                st.plan.cls.check_data(build, vs.n_train, vs.dim)
            except InputError as exc:
                entry.update(state="infeasible", note=str(exc))
                st.tell(trial, entry, None, None)
                log["trials"].append(entry)
                save_log()
                continue
            entry["build"] = build
            if not st.space and st.asked > 1:
                st.exhausted = True  # nothing to vary (flat): one trial says it all
            same = st.tried.get(_canon(build))
            if same is not None:  # TPE proposed a build already measured: its outcome, not a second build
                entry.update({k2: same[k2] for k2 in ("state", "values", "constraints", "build_s", "index_bytes",
                                                       "row_keys")})
                entry["note"] = f"same build as trial {same['number']}"
                st.tell(trial, entry, entry["values"], entry["constraints"])
                log["trials"].append(entry)
                save_log()
                continue
            jobs.append((st, trial, entry, build))
        if not jobs:
            continue
        queued = []
        for st, trial, entry, build in jobs:
            effort = effort_ladder(st.plan.cls, build, vs.n_train, k)
            stored = stored_rows(st.plan.cls, build)
            known, cands = {}, []
            from ann_bench.results import canon_params

            for r in stored:
                c = candidate_of(r, store.load_neighbors(r), entry["number"])
                cands.append(c)
                known[canon_params(r.search_params)] = (c.tune_recall, c.speed)
            bars = [st.best.get(target) for target in options.targets]
            spec = None
            if effort is not None:
                spec = TuneSpec(effort[0], effort[1], st.fixed_searches, list(options.targets), tune_rows, mode,
                                options.speed, bars, known, options.max_memory, options.max_build_s)
            summary = SweepSummary()
            label = f"{st.plan.cls.label()} {_fmt(build)} (trial {entry['number'] + 1})"
            pending = [] if spec is not None else [(s, mode) for s in st.plan.searches]
            job = BuildJob(dataset_path=str(vs.path), metric=vs.metric, dim=vs.dim, backend=st.plan.cls.name,
                           impl=st.plan.cls.impl, build=build, pending=pending, k=k, runs=run_options.runs,
                           threads=run_options.threads,
                           build_threads=run_options.build_threads or run_options.threads, seed=run_options.seed,
                           gt_D=gt_D, gt_I=gt_I, train_labels=train_labels, test_labels=test_labels,
                           index_cache=str(index_cache_dir(dataset_hash)) if run_options.index_cache else None,
                           skip_saturated=True, dataset_hash=dataset_hash, build_limit_s=options.max_build_s,
                           tune=spec)
            recorder = _TuneRecorder(job, _recorder_factory(st.plan.cls, build, k, mode, run_options.threads,
                                                            dataset), store, summary, reporter, lambda n=1: None,
                                     exact_labels)
            if spec is not None and _resolved(st.plan.cls, spec, k):
                # Every setting the bisection needs is stored: nothing to build.
                queued.append((st, trial, entry, build, recorder, cands, None))
            else:
                queued.append((st, trial, entry, build, recorder, cands, label))
        to_run = [(q[4].job, q[4], q[6]) for q in queued if q[6] is not None]
        if run_options.executor == "ray" and to_run:
            reporter.log(f"round of {len(to_run)} trial(s) on Ray")
            ray_session.run_jobs(to_run, run_options, vs, reporter)
        else:
            for job, recorder, label in to_run:
                _run_job(job, run_options, X, Q, recorder, reporter, label)
        for st, trial, entry, build, recorder, cands, label in queued:
            new = [candidate_of(r, I, entry["number"]) for r, I in recorder.measured if r.status == "ok"]
            mine = cands + new
            candidates.extend(mine)
            info = recorder.build_info or (vars(mine[0].record) if mine else {})
            entry["build_s"] = info.get("build_s")
            entry["index_bytes"] = info.get("index_bytes")
            entry["row_keys"] = [c.record.key for c in mine]
            failed = [r for r, _ in recorder.measured if r.status != "ok"]
            notes = recorder.notes + [f"{r.status}: {r.error}" for r in failed]
            if recorder.outcome is not None:
                notes.append(f"{recorder.outcome[0]}: {recorder.outcome[1]}")
            entry["note"] = "; ".join(notes)
            constraints = _constraint_values(entry, options)
            values = [max((c.speed for c in mine if c.tune_recall >= target), default=0.0)
                      for target in options.targets]
            if entry["build_s"] is None:
                entry["state"] = "timeout" if recorder.outcome and recorder.outcome[0] == "timeout" else "failed"
                constraints = _constraint_values(entry, options)
                if entry["state"] == "failed":
                    values = None
            elif any(c > 0 for c in constraints.values()):
                entry["state"] = "pruned"
            else:
                entry["state"] = "complete"
                for target, v in zip(options.targets, values):
                    if v > 0 and v > st.best.get(target, 0.0):
                        st.best[target] = v
            entry["values"], entry["constraints"] = values, constraints
            st.tell(trial, entry, values, constraints)
            st.tried[_canon(build)] = entry
            log["trials"].append(entry)
            save_log()
            reporter.log(f"trial {entry['number'] + 1} {st.plan.cls.label()} {_fmt(build)}: {entry['state']}"
                         + "".join(f", {target}: {v:,.0f}" for target, v in zip(options.targets, values) if v)
                         + (f" ({entry['note']})" if entry["note"] else ""))

    answers = choose_answers(candidates, options, run_options.seed, [s.plan.cls.label() for s in states], log)
    log["answers"] = [a.as_json() for a in answers]
    log["finished_at"] = _now()
    save_log()
    return TuneResult(tid, path, answers, log["trials"], candidates, time.perf_counter() - t0,
                      len(tune_rows), len(held_rows), stopped)


def choose_answers(candidates: list[Candidate], options: TuneOptions, seed: int, labels: list[str],
                   log: dict[str, Any]) -> list[Answer]:
    """Per target and backend, the fastest candidate whose tuning recall reaches the target within the
    constraints; its held-out recall interval."""
    out = []
    ok_trials = {(t["label"], t["number"]) for t in log["trials"] if t["state"] == "complete"}
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
            tried = [t for t in log["trials"] if t["label"] == label]
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


def _recorder_factory(cls, build, k, mode, threads, dataset):
    from ann_bench.results import Record
    from ann_bench.sysinfo import host, versions

    def record(search, mode_, **kw):
        kw.setdefault("versions", versions())
        kw.setdefault("host", host())
        return Record(backend=cls.name, impl=cls.impl, build_params=build, search_params=search, k=k, mode=mode_,
                      threads=threads, created_at=_now(), **dataset, **kw)

    return record


def _resolved(cls, spec: TuneSpec, k: int) -> bool:
    """Whether the bisection of ``spec`` needs no setting beyond those stored (``spec.known``)."""
    from ann_bench.results import canon_params

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
