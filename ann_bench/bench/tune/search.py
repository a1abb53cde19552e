"""Tune's driver: an anytime search across backends and fidelities within a budget.

- **Budget.** ``--budget`` or, by default, 30 % of the default grid's estimated time for the same backends
  (:func:`ann_bench.bench.tune.space.default_budget`). The clock starts with the tune; a job still running when
  it ends is stopped (its worker killed) and what was measured stays. Ctrl-C / SIGTERM ends the same way.
- **Fidelities.** Large sets (n >= 40,000) are searched on a seeded sixteenth of the train vectors first
  (``--subsample`` sets the fraction). Builds that rank in the top third at some target there (successive
  halving, eta = 3, across every backend), and the best of the second-best backend, are candidates for the full
  set (IVF lists scaled by sqrt(n)); one is built there when it can still win: the first of its backend, or one
  whose subsample speed times its backend's measured full/subsample ratio reaches 90 % of the best answer.
- **Order.** Each backend's default build first (cheapest first), then promotions (the best-ranked first: an
  answer on the full set as early as possible), then new builds proposed by each surviving backend's Optuna
  study (seeded multi-objective TPE over :func:`build_space`; ``--max-memory``/``--max-build-s`` as constraints),
  the backend with the fewest builds first. A job whose estimated cost does not fit in the budget left is not
  started.
- **Dropping.** After two builds, a backend whose best speed is below half the best backend's at every target
  gets no more builds (said, with the ratio) — unless ``--per-backend`` asks for an answer from each.
- **Probes and answers.** In each build's worker the effort is bisected on probes of a fixed subset of the
  tuning queries (:class:`ann_bench.bench.tune.plan.EffortPlan`); on full-size builds the settings that could be
  answers are measured again on all queries as ordinary rows of the store. Answers come from those rows, and
  from rows of the same set already in the store, which are never measured again.
- **Resume.** The log (``<store>.tunes/<id>.json``, rewritten atomically after each job) holds each job's
  outcome; the same command again replays it (Optuna proposes the same builds) and measures nothing twice.

Optuna's own pruners (successive halving, Hyperband) are not used: they prune one study's trials by a single
objective reported at steps, while tune compares builds across one study per backend at several recall targets
at once (multi-objective studies cannot prune). The promotion rule is the successive-halving rule, written here.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import os
import time
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ann_bench.atomic import atomic_path, clear_termination, raise_if_terminated
from ann_bench.bench.jobs import JobRecorder, Reporter, SweepSummary, check_k, check_labels, index_cache_dir
from ann_bench.bench.results import canon_params, params_str, short_params
from ann_bench.bench.tune.answers import (TUNE_LOG_VERSION, Answer, Candidate, TuneResult, choose_answers,
                                          log_dir, read_log, split_queries)
from ann_bench.bench.tune.effort import effort_ladder
from ann_bench.bench.tune.plan import EffortPlan, speed_of, tuning_recall
from ann_bench.bench.tune.space import (MIN_BUDGET_S, build_space, default_budget, estimate_build_s,
                                        estimate_setting_s, fidelities, scale_build,
                                        subsample_set)
from ann_bench.errors import InputError

DEFAULT_BACKENDS = ("hnsw", "ivf", "ivfpq", "annoy", "nsw")
ETA = 3  # successive halving: the top 1/ETA of a fidelity's builds (at some target) go on to the next
DROP_RATIO = 0.5  # a backend below this share of the best speed at every target, after DROP_AFTER builds, stops
DROP_AFTER = 2
PROMOTE_MARGIN = 0.9  # a build goes to the full set when its predicted speed there is >= 90 % of the best answer
PROBE_QUERIES = 1000  # probes search at most this many of the tuning queries
TIME_PARTS = ("builds", "probes", "verification", "workers", "subsamples", "loading", "overhead")


@dataclass
class TuneOptions:
    targets: tuple[float, ...] = (0.9, 0.95, 0.99)
    backends: tuple[str, ...] = DEFAULT_BACKENDS
    max_memory: int | None = None  # bytes of serialized index
    max_build_s: float | None = None
    speed: str = "qps"  # "qps" | "p99" (single mode)
    budget_s: float | None = None  # None: derived from the set (half the default grid's estimated time)
    trials: int | None = None  # at most this many first-fidelity builds per backend, its default the first
    heldout: float = 0.5  # fraction of the queries kept out of the choice
    build_specs: tuple[str, ...] = ()  # --build fixes build parameters (kept out of the search)
    subsample: float | None = None  # the first fidelity's fraction of the train vectors (default: automatic)
    search_specs: tuple[str, ...] = ()  # --search fixes the other search parameters
    per_backend: bool = False  # an answer per backend (none is dropped) instead of the winner and runner-up

    def check(self) -> None:
        if not self.targets:
            raise InputError("--recall needs at least one target, e.g. --recall 0.95")
        for t in self.targets:
            if not (isinstance(t, float) and 0.0 < t <= 1.0):
                raise InputError(f"--recall {t!r} is not a recall target in (0, 1]; e.g. --recall 0.9,0.95,0.99")
        if self.speed not in ("qps", "p99"):
            raise InputError(f"unknown --metric {self.speed!r}; use qps or p99")
        if self.subsample is not None and not 0.0 < self.subsample <= 1.0:
            raise InputError(f"--subsample {self.subsample} must be a fraction in (0, 1] (1: no subsample), "
                             "e.g. 0.1")
        if self.trials is not None and self.trials < 1:
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


def fmt_duration(seconds: float) -> str:
    """0:42, 4:10, 1:02:05."""
    s = max(0, int(round(seconds)))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def tune_id(dataset_hash: str, plans: list, options: TuneOptions, run_options) -> str:
    """What makes two tunes the same (a re-run resumes the log): not the budget, which only says how far to go."""
    ident = [TUNE_LOG_VERSION, dataset_hash, [p.cls.label() for p in plans], list(options.targets),
             options.max_memory, options.max_build_s, options.speed, options.heldout,
             list(options.build_specs), list(options.search_specs), options.subsample, options.per_backend,
             run_options.k, run_options.threads, run_options.build_threads, run_options.seed, run_options.runs]
    return hashlib.sha256(json.dumps(ident, default=str).encode()).hexdigest()[:12]


def run_tune(vs, options: TuneOptions, run_options, store, reporter=None) -> TuneResult:
    """Tune the backends of ``options`` on ``vs`` with the measuring settings of ``run_options`` (a RunOptions:
    k, runs, threads, seed, executor, timeout, memory limit); rows go to ``store`` (a ResultStore, required: it is
    what makes a killed tune resumable and what it starts from)."""
    from ann_bench.bench.executors import open_executor

    options.check()
    run_options.check()
    reporter = reporter or Reporter()
    with open_executor(run_options, reporter) as executor:
        return _Tune(vs, options, run_options, store, reporter, executor).run()


class _Data:
    """One vector set as tune measures on it: vectors, ground truth, the true distances, labels."""

    def __init__(self, vs, k: int, reporter, what: str = "ground truth"):
        from ann_bench.bench.metrics import label_metrics
        from ann_bench.data.vectorset import GT_SAMPLE, check_groundtruth
        from ann_bench.distances import distances_to

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
        self.vectors_hash = vs.vectors_hash()
        self.fields = dict(dataset_hash=self.hash, dataset_name=vs.name, dataset_path=str(vs.path.resolve()),
                           metric=vs.metric, n_train=vs.n_train, n_test=vs.n_test, dim=vs.dim)


class _Backend:
    """One backend: its Optuna study (builds at the first fidelity), its builds at each fidelity, why it stopped."""

    def __init__(self, plan, space, base_build, fixed_searches, study):
        self.plan, self.cls, self.label = plan, plan.cls, plan.cls.label()
        self.space, self.base_build, self.fixed_searches, self.study = space, base_build, fixed_searches, study
        self.proposed = 0  # builds asked of the study
        self.dropped = ""  # why no more builds are spent on it
        self.default_rung = 0

    @property
    def searchable(self) -> bool:
        return bool(self.space) and self.study is not None

    def propose(self):
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

    def tell(self, trial, values, constraints) -> None:
        import optuna

        for key, value in (constraints or {}).items():
            trial.set_constraint(key, value)
        if values is None:
            self.study.tell(trial, state=optuna.trial.TrialState.FAIL)
        else:
            self.study.tell(trial, values)


@dataclass
class _Item:
    backend: _Backend
    rung: int
    build: dict[str, Any]
    origin: str  # "default" | "promoted" | "optuna"
    params: dict[str, Any] = field(default_factory=dict)  # the Optuna trial's parameters
    trial: Any = None
    parent: str = ""  # promoted: the canon build it was promoted from


def _file_identity(path) -> tuple | None:
    """(device, inode, size, mtime) of the file at ``path``: a file replaced or rewritten changes it."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def check_search_specs(plans, search_specs) -> None:
    """InputError when a ``--search`` spec names a backend's effort parameter: tune bisects that one for each
    recall target, so a value given for it would be ignored — said in one line instead, with the command that
    measures the value itself."""
    from ann_bench.bench.runner import parse_param_specs

    for backend, name, values in parse_param_specs(search_specs, "--search"):
        for plan in plans:
            if backend in (None, plan.cls.name) and name in plan.cls.effort_params:
                raise InputError(f"--search {name}={','.join(values)}: {name} is {plan.cls.label()}'s effort "
                                 "parameter, which tune bisects for each recall target, so the value would be "
                                 f"ignored; drop it, or measure it with `ann-bench run --backend {plan.cls.name} "
                                 f"--search {name}={','.join(values)}`")


class _Tune:
    def __init__(self, vs, options: TuneOptions, run_options, store, reporter, executor):
        self.vs, self.options, self.ro, self.store, self.reporter = vs, options, run_options, store, reporter
        self.executor = executor
        self.t0 = time.perf_counter()
        self.mode = "single" if options.speed == "p99" else "batch"
        self.k = run_options.k
        self.times = dict.fromkeys(TIME_PARTS, 0.0)

    # ---- set-up -----------------------------------------------------------------------------------------------
    def run(self) -> TuneResult:
        import optuna

        from ann_bench.bench.runner import parse_param_specs, plan_sweep
        from ann_bench.data.vectorset import check_groundtruth

        vs, options, ro = self.vs, self.options, self.ro
        self.file_identity = _file_identity(vs.path)
        check_groundtruth(vs)
        check_k(vs, self.k)
        self.tune_rows, self.held_rows = split_queries(vs.n_test, options.heldout, ro.seed)
        self.probe_rows = self.tune_rows[np.sort(np.random.default_rng(ro.seed).permutation(
            len(self.tune_rows))[:PROBE_QUERIES])]
        plans = plan_sweep(options.backends, vs.n_train, vs.dim, vs.metric, options.build_specs,
                           options.search_specs)
        check_search_specs(plans, options.search_specs)
        default_plans = plan_sweep(options.backends, vs.n_train, vs.dim, vs.metric)
        if options.budget_s is not None:
            self.budget, why = options.budget_s, "--budget"
        else:
            self.budget, grid = default_budget(default_plans, vs.n_train, vs.dim, vs.n_test, ro.runs,
                                               ro.build_threads or ro.threads)
            why = (f"under half the default grid's estimated {fmt_duration(grid)}"
                   if self.budget > MIN_BUDGET_S else f"the least (the default grid: about {fmt_duration(grid)})")
        self.sizes = fidelities(vs.n_train, options.subsample)
        self.top = len(self.sizes) - 1
        names = ", ".join(p.cls.label() for p in plans)
        first = "" if len(self.sizes) == 1 else f"; builds start on {self.sizes[0]:,} vectors"
        self.reporter.note(f"tune {vs.name} ({vs.n_train:,} x {vs.dim}): budget {fmt_duration(self.budget)}")
        self.reporter.note(f"  the budget: {why}")
        self.reporter.note(f"  recall@{self.k} >= {', '.join(map(str, options.targets))}: {names}{first}")
        t = time.perf_counter()
        self.full = _Data(vs, self.k, self.reporter)
        self.times["loading"] += time.perf_counter() - t
        self.store.register_dataset(self.full.hash, vs.name, str(vs.path.resolve()))
        self.tid = tune_id(self.full.hash, plans, options, ro)
        self.path = log_dir(self.store.path) / f"{self.tid}.json"
        self.log = read_log(self.path) if self.path.exists() else {
            "version": TUNE_LOG_VERSION, "tune_id": self.tid, "dataset_hash": self.full.hash,
            "dataset_name": vs.name, "k": self.k, "mode": self.mode, "threads": ro.threads, "speed": options.speed,
            "targets": list(options.targets), "max_memory": options.max_memory, "max_build_s": options.max_build_s,
            "heldout": options.heldout, "seed": ro.seed, "sizes": self.sizes, "trials": [], "answers": []}
        self.log["created_at"] = self.log.get("created_at") or _now()
        self.replay = {(t["label"], t["rung"], _canon(t["build"])): t for t in self.log["trials"]
                       if t.get("build") is not None and t.get("origin") != "stored"}  # stored rows: read again below
        self.unreplayed = dict(self.replay)  # logged jobs not yet replayed: kept in the log until they are
        self.data: dict[int, _Data] = {self.top: self.full}

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
        fixed_build = parse_param_specs(options.build_specs, "--build")
        self.backends: list[_Backend] = []
        for plan in plans:
            fixed_names = {name for b, name, _ in fixed_build if b in (None, plan.cls.name)}
            space = {name: d for name, d in build_space(plan.cls, self.sizes[0], vs.dim).items()
                     if name not in fixed_names}
            base = dict(plan.builds[0])
            if self.top and "nlist" in base:  # the default's lists at the subsample's size
                base = scale_build(base, {}, math.sqrt(self.sizes[0] / vs.n_train))
                if "nlist" in space:
                    base["nlist"] = min(max(base["nlist"], space["nlist"].low), space["nlist"].high)
            effort = effort_ladder(plan.cls, base, vs.n_train, self.k)
            study = None
            if space:
                sampler = optuna.samplers.TPESampler(seed=ro.seed, multivariate=True, n_startup_trials=4)
                study = optuna.create_study(directions=["maximize"] * len(options.targets), sampler=sampler)
            b = _Backend(plan, space, base, _fixed_searches(plan.searches, effort[0] if effort else None), study)
            if effort is None or not space:  # nothing to search on a subsample (flat): its one build, full size
                b.default_rung = self.top
                b.base_build = dict(plan.builds[0])
            self.backends.append(b)

        self.entries: list[dict[str, Any]] = []  # every job's log entry, this run's order
        self.candidates: list[Candidate] = []
        self.stopped = ""
        self.early = False
        self.announced: dict[float, str] = {}
        try:
            self._from_store()
            self._loop()
        except (KeyboardInterrupt, SystemExit) as exc:
            if isinstance(exc, SystemExit) and exc.code in (0, None):
                raise
            clear_termination()
            self.early = True
            self.stopped = "stopped early (interrupted); the answers are those of what was measured until then"
        self.times["overhead"] = max(0.0, self._elapsed() - sum(v for k, v in self.times.items()
                                                                if k != "overhead"))
        answers = self._answers()
        self.log["answers"] = [a.as_json() for a in answers]
        self.log["finished_at"] = _now()
        self.log["times"] = self.times
        self.log["budget_s"] = self.budget
        self.log["stopped"] = self.stopped
        self._save_log()
        for data in self.data.values():
            if data is not self.full:
                data.vs.close()
        return TuneResult(self.tid, self.path, answers, self.entries, self.candidates, self._elapsed(),
                          len(self.tune_rows), len(self.held_rows), self.stopped, self.budget, dict(self.times),
                          {b.label: b.dropped for b in self.backends if b.dropped}, self.early)

    def _elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def _left(self) -> float:
        return self.budget - self._elapsed()

    def _save_log(self) -> None:
        self.log["trials"] = self.entries + list(self.unreplayed.values())
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.path) as tmp:
            Path(tmp).write_text(json.dumps(self.log, indent=1, default=_json_default))

    # ---- what is known ----------------------------------------------------------------------------------------
    def _from_store(self) -> None:
        """Rows of this set already in the store (a grid, an earlier tune): candidates, and builds at full size
        that are never measured again."""
        rows = [r for r in self.store.records(dataset=self.full.hash, mode=self.mode, k=self.k)
                if r.status == "ok" and r.recall is not None and r.threads == self.ro.threads
                and self.store.neighbors_problem(r) is None]
        mine = {key for t in self.replay.values() for key in t.get("row_keys", [])}  # replayed with their trial
        rows = [r for r in rows if r.key not in mine]
        by_build: dict[tuple[str, str], list] = {}
        for r in rows:
            if any(b.label == r.label() for b in self.backends):
                by_build.setdefault((r.label(), canon_params(r.build_params)), []).append(r)
        for (label, _), mine in by_build.items():
            b = next(x for x in self.backends if x.label == label)
            cands = [self._candidate(self.full, r, self.store.load_neighbors(r), -1) for r in mine]
            self.candidates += cands
            entry = self._entry(b, self.top, mine[0].build_params, "stored")
            entry.update(state="complete", build_s=mine[0].build_s, index_bytes=mine[0].index_bytes,
                         row_keys=[c.record.key for c in cands], values=self._values(cands),
                         note=f"{len(cands)} row(s) already in the store")
            self.entries.append(entry)
        if by_build:
            self.reporter.note(f"{len(rows)} row(s) of this set already in {str(self.store.path)!r} "
                               f"({len(by_build)} build(s)) are candidates; none is measured again")
            self._announce()

    def _values(self, cands: list[Candidate]) -> list[float]:
        return [max((c.speed for c in cands if c.tune_recall >= t), default=0.0) for t in self.options.targets]

    # ---- the schedule -----------------------------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            raise_if_terminated()
            left = self._left()
            if left <= 1.0:  # no job starts, and no worker is killed, for the last second
                self.stopped = (f"the budget of {fmt_duration(self.budget)} was spent" if left <= 0 else
                                f"under a second of the {fmt_duration(self.budget)} budget was left")
                return
            item, why_not = self._next(left)
            if item is None:
                self.stopped = why_not
                return
            self._run(item)
            self._drop()
            self._announce()

    def _done(self, b: _Backend, rung: int) -> list[dict[str, Any]]:
        return [e for e in self.entries if e["label"] == b.label and e["rung"] == rung]

    def _has(self, b: _Backend, rung: int, build: dict[str, Any]) -> bool:
        key = _canon(build)
        return any(_canon(e["build"]) == key for e in self._done(b, rung) if e.get("build") is not None)

    def _next(self, left: float) -> tuple[_Item | None, str]:
        """The next job worth its cost, or None and why nothing is."""
        too_big: list[str] = []

        def fits(item: _Item) -> bool:
            est = self._estimate(item)
            if est <= left:
                return True
            too_big.append(f"{item.backend.label} {short_params(item.build, None)} (about {fmt_duration(est)})")
            return False

        active = [b for b in self.backends if not b.dropped]
        # 1. until there is an answer, the best first-fidelity build so far on the full set (an answer early)
        if self.top and not self.candidates:
            early = sorted((e for e in self.entries if e["rung"] == 0 and e["state"] == "complete" and e.get("values")
                            and max(e["values"]) > 0 and not e.get("promoted")), key=lambda e: -max(e["values"]))
            for entry in early[:1]:
                item = self._promotion(entry, active)
                if item is not None and fits(item):
                    entry["promoted"] = True
                    return item, ""
        # 2. every backend's default build on the first fidelity, the cheapest first (a backend with nothing to
        # search, measured at full size only, comes after the promotions)
        def default(b: _Backend) -> _Item | None:
            item = _Item(b, b.default_rung, self._checked(b, b.base_build, b.default_rung), "default")
            return item if item.build is not None and not self._has(b, item.rung, item.build) else None

        order = sorted(active, key=lambda x: self._estimate(_Item(x, x.default_rung, x.base_build, "default")))
        for b in order:
            if (b.default_rung == 0 or not self.top) and (item := default(b)) is not None and fits(item):
                return item, ""
        # 3. promotions: the top 1/ETA of the first fidelity's builds at some target, the best-ranked first
        if self.top:
            for entry in self._promotable():
                item = self._promotion(entry, active)
                if item is None:
                    entry["promoted"] = True
                    continue
                if fits(item):
                    entry["promoted"] = True
                    return item, ""
            for b in order:
                if b.default_rung == self.top and (item := default(b)) is not None and fits(item):
                    return item, ""
        # 4. a new build proposed by a surviving backend's study, the backend with the fewest builds first
        cap = self.options.trials
        searchable = [b for b in active if b.searchable and (cap is None or b.proposed + 1 < cap)]
        for b in sorted(searchable, key=lambda x: (x.proposed, -self._ratio(x))):
            for _ in range(8):  # proposals that repeat a measured build or are infeasible cost nothing
                if cap is not None and b.proposed + 1 >= cap:  # the default build is the first
                    break
                trial = b.propose()
                b.proposed += 1
                build = self._checked(b, {**b.base_build, **trial.params}, 0)
                if build is None:
                    b.tell(trial, None, None)
                    continue
                same = next((e for e in self._done(b, 0) if e.get("build") is not None
                             and _canon(e["build"]) == _canon(build)),
                            None)
                if same is not None:  # TPE proposed a build already measured: its outcome, not a second build
                    b.tell(trial, same.get("values"), same.get("constraints"))
                    continue
                item = _Item(b, 0, build, "optuna", dict(trial.params), trial)
                if fits(item):
                    return item, ""
                b.tell(trial, None, None)
                break
        if too_big:
            return None, (f"the next build would not finish in the {fmt_duration(left)} left: "
                          f"{too_big[0]}")
        if self.options.trials is not None:
            return None, f"every backend ran its {self.options.trials} build(s) (--trials)"
        return None, "no backend has a build left worth measuring"

    def _promotion(self, entry: dict[str, Any], active: list[_Backend]) -> _Item | None:
        """The full-size job of a first-fidelity build (IVF lists scaled by sqrt(n)), or None when its backend
        is dropped, the scaled build cannot be built, or it was measured at full size already."""
        b = next((x for x in active if x.label == entry["label"]), None)
        if b is None:
            return None
        factor = math.sqrt(self.sizes[self.top] / self.sizes[entry["rung"]])
        build = scale_build(entry["build"], build_space(b.cls, self.vs.n_train, self.vs.dim), factor)
        build = self._checked(b, build, self.top)
        if build is None or self._has(b, self.top, build):
            return None
        return _Item(b, self.top, build, "promoted", parent=_canon(entry["build"]))

    def _checked(self, b: _Backend, build: dict[str, Any], rung: int) -> dict[str, Any] | None:
        """The validated build for fidelity ``rung``, or None when it cannot be built there."""
        build = dict(build)
        if "f" in b.space and "ef_construction" in build and build["ef_construction"] < build["f"]:
            build["ef_construction"] = build["f"]  # our NSW's insertion search must find f candidates
        try:
            build = b.cls.validate_build_params(build)
            b.cls.check_data(build, self.sizes[rung], self.vs.dim)
        except InputError:
            return None
        return build

    def _promotable(self) -> list[dict[str, Any]]:
        """First-fidelity builds in the top 1/ETA at some target (per backend with --per-backend), and the best
        build of the second-best backend at each target (the runner-up; it also hedges a ranking the subsample
        biased), not yet promoted, the best-ranked first."""
        complete = [e for e in self.entries if e["rung"] == 0 and e["state"] == "complete" and e.get("values")]
        groups = ([[e for e in complete if e["label"] == b.label] for b in self.backends]
                  if self.options.per_backend else [complete])
        ranked: dict[int, int] = {}
        for group in groups:
            for j in range(len(self.options.targets)):
                order = sorted((e for e in group if e["values"][j] > 0), key=lambda e: -e["values"][j])
                for rank, e in enumerate(order[: max(1, math.ceil(len(order) / ETA))]):
                    ranked[id(e)] = min(ranked.get(id(e), rank), rank)
        if not self.options.per_backend:  # and the best build of the best other backend: the runner-up
            for j in range(len(self.options.targets)):
                best: dict[str, dict[str, Any]] = {}
                for e in sorted((e for e in complete if e["values"][j] > 0), key=lambda e: -e["values"][j]):
                    best.setdefault(e["label"], e)  # each backend's fastest at target j
                order = list(best.values())
                if len(order) > 1:
                    ranked[id(order[1])] = min(ranked.get(id(order[1]), ETA), ETA)
        picks = [e for e in complete if id(e) in ranked and not e.get("promoted") and self._can_win(e, complete)]
        return sorted(picks, key=lambda e: (ranked[id(e)], -max(e["values"])))

    def _can_win(self, e: dict[str, Any], complete: list[dict[str, Any]]) -> bool:
        """Whether a first-fidelity build is worth its full-size build: its backend's best there while the
        backend has none at full size yet (that build calibrates how the backend's speed carries from the
        subsample), or a full-size speed predicted from the subsample — times the full/subsample ratio measured
        on this backend's promoted builds (all backends' while it has none) — of at least PROMOTE_MARGIN of the
        best answer so far at some target (the backend's own with --per-backend)."""
        mine = [x for x in complete if x["label"] == e["label"]]
        has_full = any(x["label"] == e["label"] and x["rung"] == self.top and x["state"] == "complete"
                       for x in self.entries)
        if not has_full and any(e["values"][j] >= max(x["values"][j] for x in mine)
                                for j in range(len(self.options.targets)) if e["values"][j] > 0):
            return True
        best = self._verified_best(e["label"]) if self.options.per_backend else self._values(self.candidates)
        for j in range(len(self.options.targets)):
            if e["values"][j] <= 0:
                continue
            ratio = self._carry(e["label"], j)
            if best[j] <= 0 or ratio is None or e["values"][j] * ratio >= PROMOTE_MARGIN * best[j]:
                return True
        return False

    def _carry(self, label: str, j: int) -> float | None:
        """The median full-size / first-fidelity speed ratio at target j of the promoted builds of ``label``
        (of every backend while it has none), or None when nothing was promoted."""
        first = {(x["label"], _canon(x["build"])): x for x in self.entries if x["rung"] == 0 and x.get("values")}
        ratios: dict[str, list[float]] = {}
        for x in self.entries:
            parent = first.get((x["label"], x.get("parent", "")))
            if x["rung"] == self.top and x["state"] == "complete" and parent is not None and x.get("values") \
                    and parent["values"][j] > 0 and x["values"][j] > 0:
                ratios.setdefault(x["label"], []).append(x["values"][j] / parent["values"][j])
        pool = ratios.get(label) or [r for rs in ratios.values() for r in rs]
        return float(np.median(pool)) if pool else None

    def _ratio(self, b: _Backend) -> float:
        """The backend's best share of the best speed at any target, at the first fidelity."""
        best = self._best(0)
        mine = self._best(0, b.label)
        return max((mine[j] / best[j] for j in range(len(best)) if best[j] > 0), default=0.0)

    def _best(self, rung: int, label: str | None = None) -> list[float]:
        out = [0.0] * len(self.options.targets)
        for e in self.entries:
            if e["rung"] == rung and e["state"] == "complete" and e.get("values") and label in (None, e["label"]):
                out = [max(a, v) for a, v in zip(out, e["values"])]
        return out

    def _drop(self) -> None:
        """Successive halving across backends: stop spending builds on a backend far behind at every target."""
        if self.options.per_backend:
            return
        best = self._best(0)
        for b in self.backends:
            done = [e for e in self._done(b, 0) if e["state"] == "complete"]
            if b.dropped or len(done) < DROP_AFTER or not b.searchable:
                continue
            mine = self._best(0, b.label)
            shares = [(mine[j] / best[j], t) for j, t in enumerate(self.options.targets) if best[j] > 0]
            if shares and max(shares)[0] < DROP_RATIO:
                share, target = max(shares)
                b.dropped = (f"{share:.2f}x the best at {target} after {len(done)} builds" if share > 0 else
                             f"reaches none of {', '.join(map(str, self.options.targets))} after {len(done)} "
                             "builds")
                self.reporter.note(f"dropped {b.label}: {b.dropped}")

    def _estimate(self, item: _Item) -> float:
        """Seconds the job will take: from the backend's measured jobs where there are some (scaled by the
        model's ratio of the two), else the model: the build, the probes and, at full size, the answers
        measured on all queries with --runs."""
        cls, n, dim = item.backend.cls, self.sizes[item.rung], self.vs.dim
        threads = self.ro.build_threads or self.ro.threads
        targets = len(self.options.targets)

        def model(build, rung) -> float:
            size = self.sizes[rung]
            setting = estimate_setting_s(cls, size, dim, self.vs.n_test)
            searches = 6 * targets * setting * len(self.probe_rows) / self.vs.n_test
            if rung == self.top:
                searches += targets * self.ro.runs * setting
            return estimate_build_s(cls, build, size, dim, threads) + searches

        seen = [e for e in self.entries if e["label"] == item.backend.label and e.get("wall_s")
                and e.get("build") is not None and e["state"] in ("complete", "pruned")]
        if not seen:
            return model(item.build, item.rung)
        e = seen[-1]
        # Builds grow faster than the model's (n d)^1.25 from a subsample to millions of vectors (caches: hnswlib
        # 50x from 62,500 to 1M vectors, our NSW 100x): extrapolating upwards, err on the long side.
        up = max(1.0, self.sizes[item.rung] / self.sizes[e["rung"]]) ** 0.25
        return e["wall_s"] * up * model(item.build, item.rung) / max(model(e["build"], e["rung"]), 1e-6)

    # ---- one job ----------------------------------------------------------------------------------------------
    def _data(self, rung: int) -> _Data:
        if rung not in self.data:
            from ann_bench.data.vectorset import VectorSet

            t = time.perf_counter()
            fraction = self.sizes[rung] / self.vs.n_train
            with self.reporter.task(f"subsample of {self.sizes[rung]:,} train vectors", self.vs.n_test) as adv:
                path = subsample_set(self.vs, self.full.X, fraction, self.ro.seed, self.k, progress=adv)
            self.data[rung] = _Data(VectorSet(path), self.k, self.reporter, "subsample ground truth")
            self.times["subsamples"] += time.perf_counter() - t
        return self.data[rung]

    def _entry(self, b: _Backend, rung: int, build: dict[str, Any], origin: str,
               params: dict[str, Any] | None = None) -> dict[str, Any]:
        number = sum(1 for e in self.entries if e["label"] == b.label)
        return {"label": b.label, "backend": b.cls.name, "impl": b.cls.impl, "rung": rung, "n": self.sizes[rung],
                "phase": "full" if rung == self.top else "sample", "origin": origin, "number": number,
                "params": dict(params or {}), "build": build, "state": "", "values": None, "constraints": None,
                "build_s": None, "index_bytes": None, "note": "", "row_keys": [], "probes": [], "wall_s": None,
                "probe_s": 0.0, "verify_s": 0.0}

    def _run(self, item: _Item) -> None:
        from ann_bench.bench.worker import BuildJob

        b, options, ro = item.backend, self.options, self.ro
        entry = self._entry(b, item.rung, item.build, item.origin, item.params)
        entry["parent"] = item.parent
        logged = self.unreplayed.pop((b.label, item.rung, _canon(item.build)), None)
        if logged is not None and logged.get("state") in ("complete", "failed", "pruned", "timeout"):
            keep = {"number", "origin", "params", "parent"}
            entry.update({key: v for key, v in logged.items() if key not in keep})
            entry["note"] = (entry.get("note") or "") + ("; " if entry.get("note") else "") + "replayed from the log"
            if item.rung == self.top:
                keys = set(entry.get("row_keys", []))
                self.candidates += [self._candidate(self.full, r, self.store.load_neighbors(r), entry["number"])
                                    for r in self._stored(b, item.build) if r.key in keys]
            self._finish(item, entry)
            return
        data = self._data(item.rung)
        full = item.rung == self.top
        effort = effort_ladder(b.cls, item.build, data.vs.n_train, self.k)
        known_rows = self._stored(b, item.build) if full else []
        known = [self._candidate(data, r, self.store.load_neighbors(r), entry["number"]) for r in known_rows]
        plan = None
        if effort is not None:
            bars = (self._verified_best(b.label) if full else self._best(item.rung, b.label))
            plan = EffortPlan(effort[0], effort[1], b.fixed_searches, list(options.targets), self.tune_rows,
                              self.probe_rows, self.mode, options.speed,
                              [v if v > 0 else None for v in bars], full,
                              {canon_params(c.record.search_params): (c.tune_recall, c.speed) for c in known},
                              options.max_memory, options.max_build_s)
        pending = [] if plan is not None else [(s, self.mode) for s in b.plan.searches]
        job = BuildJob(dataset_path=str(data.vs.path), metric=data.vs.metric, dim=data.vs.dim, backend=b.cls.name,
                       impl=b.cls.impl, build=item.build, pending=pending, k=self.k, runs=ro.runs,
                       threads=ro.threads, build_threads=ro.build_threads or ro.threads, seed=ro.seed,
                       gt_D=data.gt_D, gt_I=data.gt_I, train_labels=data.train_labels, test_labels=data.test_labels,
                       index_cache=str(index_cache_dir(data.hash)) if ro.index_cache else None,
                       skip_saturated=True, dataset_hash=data.hash, vectors_hash=data.vectors_hash,
                       build_limit_s=options.max_build_s, plan=plan, pin_cpus=ro.pin_cpus)
        recorder = _TuneRecorder(job, _recorder_factory(b.cls, item.build, self.k, ro.threads, data.fields),
                                 self.store if full else None, SweepSummary(), self.reporter, lambda n=1: None,
                                 data.exact_labels)
        where = "" if full else f" on {self.sizes[item.rung]:,} vectors"
        label = (f"{b.cls.name} {self._brief(b.label, item.build)}{where} (trial {len(self.entries) + 1} of "
                 f"~{self._expected_total()} · budget {fmt_duration(max(0.0, self._left()))} left)")
        left = self._left()
        timeout = left if ro.timeout is None else min(ro.timeout, left)
        self.executor.options = replace(ro, timeout=max(timeout, 1.0))
        t = time.perf_counter()
        try:
            self.executor.run([(job, recorder, label)], data.vs, data.X, data.Q)
        except (KeyboardInterrupt, SystemExit):
            entry["interrupted"] = True  # what it measured is kept; the job itself counts for nothing
            raise
        finally:
            self.executor.options = ro
            entry["wall_s"] = time.perf_counter() - t
            self._record(item, entry, recorder, data, known)

    def _record(self, item: _Item, entry, recorder, data: _Data, known: list[Candidate]) -> None:
        full = item.rung == self.top
        info = recorder.build_info
        entry["build_s"] = info.get("build_s")
        entry["index_bytes"] = info.get("index_bytes")
        entry["probes"] = [[s, r, v] for s, r, v in recorder.probes]
        entry["probe_s"] = recorder.times.get("probe_s", 0.0)
        entry["verify_s"] = recorder.times.get("verify_s", 0.0)
        if item.backend.study is None and not recorder.times and entry["build_s"] is not None:
            # nothing to bisect (flat): its searches are measured as a sweep's, on all queries
            entry["verify_s"] = max(0.0, (entry["wall_s"] or 0.0) - entry["build_s"])
        mine = list(known)
        if full:
            mine += [self._candidate(data, r, I, entry["number"]) for r, I in recorder.measured if r.status == "ok"]
            self.candidates += mine[len(known):]
        entry["row_keys"] = [c.record.key for c in mine]
        notes = recorder.notes + [f"{r.status}: {r.error}" for r, _ in recorder.measured if r.status != "ok"]
        if recorder.outcome is not None:
            notes.append(f"{recorder.outcome[0]}: {recorder.outcome[1]}")
        entry["note"] = "; ".join(notes)
        probe_values = [max((v for _, r, v in recorder.probes if r >= t), default=0.0) for t in self.options.targets]
        known_values = self._values(mine)
        values = [max(a, b) for a, b in zip(probe_values, known_values)]
        if entry["build_s"] is None:
            timed_out = recorder.outcome is not None and recorder.outcome[0] == "timeout"
            stopped = entry.get("interrupted") or (timed_out and self._left() <= 1.0)
            entry["state"] = "stopped" if stopped else "timeout" if timed_out else "failed"
            values = [0.0] * len(values) if timed_out else None
        else:
            entry["state"] = "complete"
        entry["values"], entry["constraints"] = values, _constraint_values(entry, self.options)
        if entry["state"] == "complete" and any(c > 0 for c in entry["constraints"].values()):
            entry["state"] = "pruned"
        if entry["state"] == "failed" and _file_identity(self.vs.path) != self.file_identity:
            self._finish(item, entry)  # logged with its reason, then the tune stops: nothing more can be measured
            raise InputError(f"the dataset file {str(self.vs.path)!r} changed while tune ran, so trial "
                             f"{len(self.entries)} measured nothing; the trials before it are logged in "
                             f"{str(self.path)!r}. Run tune again on the file as it is now")
        self.times["builds"] += entry["build_s"] or 0.0
        self.times["probes"] += entry["probe_s"]
        self.times["verification"] += entry["verify_s"]
        self.times["workers"] += max(0.0, (entry["wall_s"] or 0.0) - (entry["build_s"] or 0.0) - entry["probe_s"]
                                     - entry["verify_s"])  # process start, imports, data load, recall
        self._finish(item, entry)

    def _finish(self, item: _Item, entry) -> None:
        if item.trial is not None:
            if entry["state"] == "stopped":
                item.backend.tell(item.trial, None, None)
            else:
                item.backend.tell(item.trial, entry["values"], entry["constraints"])
        self.entries.append(entry)
        self._save_log()
        where = "" if entry["rung"] == self.top else f" on {entry['n']:,}"
        state = entry["state"]
        if state == "complete" and entry["values"]:  # per target: its speed, or "-" where it was not reached
            qps = self.options.speed == "qps"
            unit = "QPS" if qps else "p99 ms"
            shown = [("-" if not v else f"{v:,.0f}" if qps else f"{1000 / v:.3f}") for v in entry["values"]]
            state = (f"{shown[0]} {unit} at recall {self.options.targets[0]}" if len(shown) == 1 else
                     f"{unit} at recall {'/'.join(map(str, self.options.targets))}: {' / '.join(shown)}")
        self.reporter.log(f"trial {len(self.entries)}{where}: {item.backend.label} "
                          f"{self._brief(item.backend.label, entry['build'])}: {state}"
                          + (f" ({entry['note']})" if entry["note"] else ""))

    def _brief(self, label: str, build: dict[str, Any], search: dict[str, Any] | None = None) -> str:
        """A configuration in the fewest words: the build parameters tune searches (or fixed with --build) and
        the search parameters that vary, in the short forms (``nlist255 nprobe4``); all of them in the table."""
        b = next((x for x in self.backends if x.label == label), None)
        if b is None:
            return short_params({**build, **(search or {})}, None)
        keep_b = set(b.space) | {n for n in build if n not in b.base_build or build[n] != b.base_build[n]}
        keep_s = set(b.cls.effort_params) | {n for n in (search or {})
                                             if len({repr(f.get(n)) for f in b.fixed_searches}) > 1}
        text = " ".join(x for x in (short_params(build, keep_b), short_params(search or {}, keep_s)) if x != "-")
        return text or "-"

    def _expected_total(self) -> int:
        """Jobs done so far plus those the budget left would hold at the mean job's wall time."""
        walls = [e["wall_s"] for e in self.entries if e.get("wall_s")]
        mean = sum(walls) / len(walls) if walls else 5.0
        return len(self.entries) + 1 + max(0, int(self._left() / max(mean, 0.1)))

    def _verified_best(self, label: str) -> list[float]:
        return self._values([c for c in self.candidates if c.record.label() == label])

    def _stored(self, b: _Backend, build: dict[str, Any]) -> list:
        want = canon_params(build)
        return [r for r in self.store.records(dataset=self.full.hash, backend=b.cls.name, mode=self.mode, k=self.k)
                if r.impl == b.cls.impl and r.threads == self.ro.threads and r.status == "ok"
                and r.recall is not None and canon_params(r.build_params) == want
                and self.store.neighbors_problem(r) is None]

    def _candidate(self, data: _Data, rec, I, trial: int) -> Candidate:
        per_query = tuning_recall(data.vs.metric, data.Q, data.X, I, data.true_D, data.k, np.arange(data.vs.n_test))
        return Candidate(rec, float(per_query[self.tune_rows].mean()), per_query[self.held_rows],
                         speed_of({"qps": rec.qps, "p99_ms": rec.p99_ms}, self.options.speed), trial)

    # ---- answers ----------------------------------------------------------------------------------------------
    def _answers(self, intervals: bool = True) -> list[Answer]:
        return choose_answers(self.candidates, self.options.targets, self.ro.seed if intervals else None,
                              [b.label for b in self.backends], self.options.per_backend,
                              lambda r: _fits(r, self.options), self._why_none if intervals else lambda *a: "")

    def _why_none(self, label: str | None, target: float, within: list[Candidate]) -> str:
        mine = [c for c in within if label is None or c.record.label() == label]
        tried = [e for e in self.entries if label is None or e["label"] == label]
        full = [e for e in tried if e["rung"] == self.top]
        b = next((x for x in self.backends if x.label == label), None)
        sizes = [e["index_bytes"] for e in tried if e.get("index_bytes") is not None]
        if mine:
            best = max(mine, key=lambda c: c.tune_recall)
            return f"best tuning recall {best.tune_recall:.4f} < {target} ({best.record.label()})"
        if tried and all(e["state"] in ("pruned", "timeout") for e in tried) and self.options.max_memory and sizes \
                and min(sizes) > self.options.max_memory:
            return f"every index > --max-memory (smallest {min(sizes) / 1e6:,.1f} MB)"
        if tried and all(e["state"] in ("pruned", "timeout") for e in tried):
            return "every build over --max-build-s or --max-memory"
        if b is not None and b.dropped:
            return f"dropped: {b.dropped}"
        if not full:
            return "no build measured at full size within the budget"
        return f"no full-size build measured a setting (states: {', '.join(sorted({e['state'] for e in full}))})"

    def _announce(self) -> None:
        """Print the answer per target whenever it changes (without the bootstrap intervals: those are for the
        final table; recomputed after every job they cost 43 s of a 490 s tune on Fashion-MNIST)."""
        current = [a for a in self._answers(intervals=False)
                   if a.candidate is not None and a.role in ("winner", "backend")]
        for a in current:
            r = a.candidate.record
            key = f"{a.group}:{r.key}"
            slot = f"{a.target}:{a.group if a.role == 'backend' else ''}"
            if self.announced.get(slot) == key:
                continue
            self.announced[slot] = key
            speed = f"{r.qps:,.0f} QPS" if self.options.speed == "qps" else f"p99 {r.p99_ms:.3f} ms"
            self.reporter.note(f"[{fmt_duration(self._elapsed())}] >= {a.target}: {a.group} "
                               f"{self._brief(r.label(), r.build_params, r.search_params)}, {speed}")


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


class _TuneRecorder(JobRecorder):
    """A JobRecorder that also keeps each row's ids (for the split recalls), the probes, the job's notes, its
    times and its outcome."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.measured: list[tuple[Any, np.ndarray | None]] = []
        self.notes: list[str] = []
        self.probes: list[tuple[dict[str, Any], float, float]] = []
        self.times: dict[str, float] = {}
        self.outcome: tuple[str, str] | None = None

    def save(self, i, I=None, **fields) -> None:
        super().save(i, I, **fields)
        self.measured.append((self.summary.records[-1], I))

    def on_event(self, kind, *payload) -> None:
        if kind == "probe":
            self.probes.append(tuple(payload))
            return
        if kind == "times":
            self.times.update(payload[0])
            return
        if kind == "note":
            self.notes.append(payload[0])
        if kind == "build_failed" and not self.job.pending:  # a planned job has no rows to carry the reason
            self.notes.append(f"build failed: {payload[0]}")
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


def _fixed_searches(searches: list[dict[str, Any]], param: str | None) -> list[dict[str, Any]]:
    """The distinct combinations of the search parameters other than ``param`` (validated settings)."""
    out: list[dict[str, Any]] = []
    for s in searches:
        rest = {name: v for name, v in s.items() if name != param}
        if rest not in out:
            out.append(rest)
    return out or [{}]


def _canon(build: dict[str, Any] | None) -> str:
    return json.dumps(build, sort_keys=True, default=str)


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
