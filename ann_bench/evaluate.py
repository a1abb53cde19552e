"""``ann-bench evaluate``: the metric-learning evaluation of ``ann-bench train`` (Recall@K for K = 1 … 32,
Precision@1/@5, MAP, MAP@R, MRR, NMI, AMI, verification accuracy) for any labelled vector set — exactly, and
optionally through one index configuration, to see what the approximation costs in retrieval quality.

The figures come from :func:`embeddings.training.evaluate.evaluate` (no torch needed), ranked in the set's
metric. ``reference="train"`` (default here) ranks the train vectors for each test vector — a set written by
``embed`` or ``data import`` holds the database as train and the queries as test; ``reference="test"`` ranks
the test vectors among themselves, leaving each out (the protocol of ``train`` and of metric-learning papers).
Through an index the ranking is what the index returns to ``depth``; the exact figures are then computed to
the same depth beside them, so the two columns compare like with like.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ann_bench.errors import InputError

DEFAULT_DEPTH = 32  # the largest K of Recall@K


@dataclass
class Evaluation:
    dataset: str
    metric: str
    reference: str
    n_queries: int
    n_reference: int
    depth: int | None  # None: the full exact ranking
    exact: dict[str, Any]
    index: dict[str, Any] | None = None
    backend: str | None = None
    build: dict[str, Any] = field(default_factory=dict)
    search: dict[str, Any] = field(default_factory=dict)
    build_s: float | None = None
    search_s: float | None = None

    def as_json(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "metric": self.metric, "reference": self.reference,
                "n_queries": self.n_queries, "n_reference": self.n_reference, "depth": self.depth,
                "exact": self.exact, "index": self.index, "backend": self.backend, "build": self.build,
                "search": self.search, "build_s": self.build_s, "search_s": self.search_s}


def evaluate_set(vs, *, reference: str = "train", thresholds=None, backend: str | None = None,
                 build: dict[str, Any] | None = None, search: dict[str, Any] | None = None,
                 depth: int | None = None, seed: int = 0, threads: int = 1) -> Evaluation:
    """Evaluate the labelled VectorSet ``vs`` exactly, and through ``backend`` (``name`` or ``name:impl``) with
    ``build``/``search`` parameters when given (``depth`` then defaults to DEFAULT_DEPTH)."""
    from embeddings.training import evaluate as E

    from ann_bench.bench.runner import check_labels

    if reference not in E.REFERENCES:
        raise InputError(f"unknown --reference {reference!r}; choose one of: {', '.join(E.REFERENCES)}")
    E.check_thresholds(thresholds)
    train_labels, test_labels = check_labels(vs)
    if train_labels is None or (reference == "test" and test_labels is None):
        raise InputError(f"{str(vs.path)!r} has no labels (train_labels and test_labels); evaluation needs them: "
                         "embed labelled inputs, or import with --labels/--query-labels")
    if len(np.unique(test_labels)) < 2:
        raise InputError(f"the test vectors of {str(vs.path)!r} hold fewer than 2 classes; NMI, AMI and "
                         "verification need at least 2")
    if depth is not None and depth < 1:
        raise InputError(f"--depth must be >= 1, got {depth}")
    if backend is not None and depth is None:
        depth = DEFAULT_DEPTH
    X, Q = vs.load_train(), vs.load_test()
    R, r_labels = (X, train_labels) if reference == "train" else (Q, test_labels)
    kwargs = dict(reference=reference, seed=seed, thresholds=thresholds, metric=vs.metric, depth=depth)
    exact = E.evaluate(Q, test_labels, X, train_labels, **kwargs)
    result = Evaluation(vs.name, vs.metric, reference, len(Q), len(R), depth, exact)
    if backend is None:
        return result
    from ann_bench.backends import get_backend

    name, _, impl = backend.partition(":")
    cls = get_backend(name, impl or None)
    cls.check_available()
    params = cls.validate_build_params(build or {})
    cls.check_data(params, len(R), vs.dim)
    index = cls(vs.metric, vs.dim, threads=threads, seed=seed, **params)
    t0 = time.perf_counter()
    index.build(R)
    result.build_s = time.perf_counter() - t0
    index.set_threads(threads)
    index.set_search_params(**(search or {}))
    result.backend, result.build, result.search = cls.label(), params, dict(index.search_config)
    spent = [0.0]

    def through_index(Qc: np.ndarray, d: int) -> np.ndarray:
        t = time.perf_counter()
        ids = index.search(np.ascontiguousarray(Qc, dtype=np.float32), d)[1]
        spent[0] += time.perf_counter() - t
        return ids

    # The index holds the vectors as given: for angular the evaluation's unit rows rank the same.
    result.index = E.evaluate(Q, test_labels, X, train_labels, **kwargs, search=through_index)
    result.search_s = spent[0]
    return result


def metric_rows(result: Evaluation) -> list[tuple[str, str, str | None]]:
    """(label, exact, through the index or None) rows for printing."""
    from embeddings.training import evaluate as E

    rows = []
    for key, label in E.TABLE_ROWS:
        rows.append((label, f"{result.exact[key]:.4f}",
                     f"{result.index[key]:.4f}" if result.index is not None else None))
    for t, acc in result.exact["verification"].items():
        rows.append((f"verification acc. @ distance < {t}", f"{acc:.4f}", None))
    best = result.exact["verification_best"]
    rows.append((f"verification acc. (best threshold {best['threshold']:g})", f"{best['accuracy']:.4f}", None))
    return rows
