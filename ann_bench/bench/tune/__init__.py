"""``ann-bench tune``: which index, with which settings, is fastest at recall >= R on these vectors, within a
memory limit and a time budget — searched for instead of swept over a grid, and answered better the longer it runs.

The package, each module below the next (every arrow points one way; the worker imports none of them):

- :mod:`.effort` — the search-effort ladder and its bisection (pure);
- :mod:`.plan` — the search plan a build's worker executes: cheap probes, then the answers verified as rows;
- :mod:`.space` — the build space per backend, the fidelities (subsample, full set), the cost model and the
  default budget;
- :mod:`.answers` — candidates, answers, the held-out validation, the tune's log;
- :mod:`.search` — the driver: an anytime successive-halving search across backends and fidelities.
"""

from ann_bench.bench.tune.answers import (TUNE_LOG_VERSION, Answer, Candidate, TuneResult, bootstrap_ci,
                                          choose_answers, find_log, log_dir, read_log, split_queries, tune_marks)
from ann_bench.bench.tune.effort import Ladder, bisect_targets, effort_ladder, saturated
from ann_bench.bench.tune.plan import EffortPlan, speed_of, tuning_recall
from ann_bench.bench.tune.search import (DEFAULT_BACKENDS, TIME_PARTS, TuneOptions, check_search_specs, fmt_duration,
                                         parse_duration, parse_targets, run_tune)
from ann_bench.bench.tune.space import (build_space, default_budget, estimate_build_s, estimate_grid_s, fidelities,
                                        scale_build, subsample_set)

__all__ = ["Answer", "Candidate", "DEFAULT_BACKENDS", "EffortPlan", "Ladder", "TIME_PARTS", "TUNE_LOG_VERSION",
           "TuneOptions", "TuneResult", "bisect_targets", "bootstrap_ci", "build_space", "check_search_specs", "choose_answers",
           "default_budget", "effort_ladder", "estimate_build_s", "estimate_grid_s", "fidelities", "find_log",
           "fmt_duration", "log_dir", "parse_duration", "parse_targets", "read_log", "run_tune", "saturated",
           "scale_build", "speed_of", "split_queries", "subsample_set", "tune_marks", "tuning_recall"]
