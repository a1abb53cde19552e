"""``ann-bench evaluate``: the metric-learning evaluation of ``ann-bench train`` (Recall@K for K = 1 … 32,
Precision@1/@5, MAP, MAP@R, MRR, NMI, AMI, verification accuracy) for any labelled vector set — exactly, and
optionally through one index configuration, to see what the approximation costs in retrieval quality.

The figures come from :func:`embeddings.training.evaluate.evaluate` (no torch needed), ranked in the set's
metric. ``reference="train"`` (default here) ranks the train vectors for each test vector — a set written by
``embed`` or ``data import`` holds the database as train and the queries as test; ``reference="test"`` ranks
the test vectors among themselves, leaving each out (the protocol of ``train`` and of metric-learning papers).

The exact figures always come from the whole exact ranking. Through an index the ranking is only what the
index returns to ``depth`` (32 by default), so a figure is reported through it only when that depth holds all
it needs (:func:`needed_depth`): Precision@k and Recall@K need k; MAP@R needs R, the query's class size (often
thousands); MAP and MRR need the whole ranking. The others are left out with the reason (:func:`left_out`),
and MAP@R and MRR are also given "to depth D" — MAP@R with R capped at D, MRR counting 0 for a query with no
same-class item in the first D — for the exact ranking and the index alike, so those compare like with like.
NMI, AMI and verification are figures of the vectors, not of a ranking: the index does not change them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ann_bench.errors import InputError

DEFAULT_DEPTH = 32  # the largest K of Recall@K
AT_DEPTH = ("map_at_r", "mrr")  # the figures also given "to depth D" when the depth is limited


def needed_depth(key: str, max_relevant: int, n_ranked: int) -> int | None:
    """How deep a ranking must go for figure ``key`` to be its exact definition: k for Precision@k and
    Recall@k, the largest class size R for MAP@R, the whole ranking (``n_ranked``) for MAP and MRR; None for
    the figures that no ranking makes (NMI, AMI, verification)."""
    from embeddings.training.evaluate import K_VALUES

    fixed = {"p_at_1": 1, "p_at_5": 5, "class_recall_at_1": 1, "class_recall_at_5": 5,
             **{f"recall_at_{k}": k for k in K_VALUES}}
    if key in fixed:
        return fixed[key]
    return {"map_at_r": max_relevant, "map": n_ranked, "mrr": n_ranked}.get(key)


@dataclass
class Evaluation:
    dataset: str
    metric: str
    reference: str
    n_queries: int
    n_reference: int
    depth: int | None  # the depth of the index's ranking and of the "to depth" figures; None: no limit
    exact: dict[str, Any]  # always of the whole exact ranking
    index: dict[str, Any] | None = None  # through the index, to ``depth``: only the figures that depth holds
    backend: str | None = None
    build: dict[str, Any] = field(default_factory=dict)
    search: dict[str, Any] = field(default_factory=dict)
    build_s: float | None = None
    search_s: float | None = None
    max_relevant: int = 0  # the largest R (same-class reference items of a query): the depth MAP@R needs
    n_ranked: int = 0  # the length of the whole ranking (MAP's and MRR's depth)
    at_depth: dict[str, dict[str, float]] | None = None  # {"exact": {...}, "index": {...}} of AT_DEPTH to depth
    left_out: dict[str, str] = field(default_factory=dict)  # figure -> why the index column does not give it
    # figure -> why the label layout leaves it undefined (its value is None in every column): see undefined_figures
    undefined: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # what the defined figures count (queries that cannot score)

    def as_json(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "metric": self.metric, "reference": self.reference,
                "n_queries": self.n_queries, "n_reference": self.n_reference, "depth": self.depth,
                "max_relevant": self.max_relevant, "exact": self.exact, "index": self.index,
                "at_depth": self.at_depth, "index_left_out": self.left_out, "undefined": self.undefined,
                "notes": self.notes, "backend": self.backend, "build": self.build, "search": self.search,
                "build_s": self.build_s, "search_s": self.search_s}


RANKING_KEYS = ("p_at_1", "p_at_5", "class_recall_at_1", "class_recall_at_5", "map", "map_at_r", "mrr")
VERIFICATION_KEYS = ("verification", "verification_best")


def label_codes(vs) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(train, test) labels of ``vs`` as int64 codes of one shared vocabulary, read through
    :func:`ann_bench.data.vectorset.check_labels_array` (a missing label is an InputError naming its row; bytes
    are decoded, so stored strings of any kind compare alike); None for a split without labels."""
    from ann_bench.data.vectorset import read_checked_labels

    train, test = read_checked_labels(vs, "train"), read_checked_labels(vs, "test")
    present = [a for a in (train, test) if a is not None]
    if all(a.dtype.kind in "iu" for a in present):
        return train, test
    vocab: dict = {}
    codes = [None if a is None else np.fromiter((vocab.setdefault(v, len(vocab)) for v in a.tolist()),
                                                dtype=np.int64, count=len(a)) for a in (train, test)]
    return codes[0], codes[1]


def undefined_figures(test_labels: np.ndarray, ref_labels: np.ndarray, loo: bool,
                      numbers_vs_strings: bool = False) -> tuple[dict[str, str], list[str]]:
    """({figure: why it is undefined}, notes) for this label layout: the figures that any ranking, clustering
    or threshold would give the same value — a number that says nothing about the vectors.

    test_labels (nq,) the queries'; ref_labels the ranked items' (the test labels again when ``loo``, each query
    left out). Ranking figures need a query with a same-label item to find and an item of another label to
    pass over; Precision@k needs k ranked items, Recall@K (any hit) more than K; NMI and AMI need 2 classes or
    more, and fewer classes than queries; verification needs a same-class and a different-class pair among the
    queries. The notes say how many queries score 0 (no same-label item) or 1 (all items share their label)
    whatever the ranking, when others do not."""
    from embeddings.training.evaluate import K_VALUES

    from ann_bench.bench.metrics import class_counts

    nq = len(test_labels)
    n_ranked = len(ref_labels) - (1 if loo else 0)
    counts = class_counts(ref_labels, test_labels) - (1 if loo else 0)  # R_q: same-label items to find
    ranking = [*RANKING_KEYS, *(f"recall_at_{k}" for k in K_VALUES)]
    why: dict[str, str] = {}
    notes: list[str] = []
    ref = "the other test vectors" if loo else "the train vectors"
    if not (counts > 0).any():
        reason = (f"no query has a same-label item among {ref} "
                  + ("(the train labels are numbers, the test labels strings, or the other way round)"
                     if numbers_vs_strings else "(no query's label appears there)")
                  + ": every ranking scores 0")
        why.update(dict.fromkeys(ranking, reason))
    elif (counts >= n_ranked).all():
        why.update(dict.fromkeys(ranking, f"every one of {ref} has its query's label (one class): every ranking "
                                          "scores 1"))
    else:
        for k in (1, 5):
            if k > n_ranked:
                for key in (f"p_at_{k}", f"class_recall_at_{k}"):
                    why[key] = f"needs {k} ranked items; there are {n_ranked}"
        for k in K_VALUES:
            if k >= n_ranked:
                why[f"recall_at_{k}"] = (f"K = {k} covers all {n_ranked} ranked items: every query whose label is "
                                         "there scores 1 whatever the ranking")
        none = int((counts <= 0).sum())
        if none:
            notes.append(f"{none:,} of {nq:,} queries have no same-label item among {ref}: they score 0 in every "
                         "ranking figure")
        full = int((counts >= n_ranked).sum())
        if full:
            notes.append(f"{full:,} of {nq:,} queries share their label with all of {ref}: they score 1 in every "
                         "ranking figure")
    classes, sizes = np.unique(test_labels, return_counts=True)
    if len(classes) < 2:
        why.update(nmi=f"the {nq:,} test vectors hold one class: any clustering scores the same",
                   ami=f"the {nq:,} test vectors hold one class: any clustering scores the same")
        why.update(dict.fromkeys(VERIFICATION_KEYS, "the test vectors hold one class: there is no different-class "
                                                    "pair, so 'same' for every pair scores 1"))
    elif len(classes) == nq:
        reason = (f"every one of the {nq:,} test vectors is its own class: k-means with one cluster per vector "
                  "matches the labels whatever the vectors")
        why.update(nmi=reason, ami=reason)
    if len(classes) >= 2 and not (sizes >= 2).any():
        why.update(dict.fromkeys(VERIFICATION_KEYS, "no two test vectors share a label: there is no same-class "
                                                    "pair, so 'different' for every pair scores 1"))
    return why, notes


def _blank_undefined(figures: dict[str, Any], undefined: dict[str, str]) -> dict[str, Any]:
    """``figures`` with every undefined one set to None (verification: each threshold's accuracy, and the best)."""
    out = dict(figures)
    for key in undefined:
        if key == "verification" and isinstance(out.get(key), dict):
            out[key] = dict.fromkeys(out[key])
        elif key == "verification_best" and isinstance(out.get(key), dict):
            out[key] = {"threshold": None, "accuracy": None}
        elif key in out:
            out[key] = None
    return out


def _needs(key: str, max_relevant: int, n_ranked: int) -> str:
    if key == "map_at_r":
        return f"a ranking R deep (R: the query's class size, up to {max_relevant:,} here)"
    if key in ("map", "mrr"):
        return f"the whole ranking ({n_ranked:,} deep)"
    return f"depth {needed_depth(key, max_relevant, n_ranked)}"


def left_out(key: str, depth: int, max_relevant: int, n_ranked: int) -> str | None:
    """Why figure ``key`` is not given through an index searched to ``depth``; None when it is."""
    need = needed_depth(key, max_relevant, n_ranked)
    if need is None:
        return "a figure of the vectors, not of a ranking: the index does not change it"
    if need <= depth:
        return None
    return f"needs {_needs(key, max_relevant, n_ranked)}; the index was searched to depth {depth}"


def evaluate_set(vs, *, reference: str = "train", thresholds=None, backend: str | None = None,
                 build: dict[str, Any] | None = None, search: dict[str, Any] | None = None,
                 depth: int | None = None, seed: int = 0, threads: int = 1) -> Evaluation:
    """Evaluate the labelled VectorSet ``vs`` exactly (the whole ranking), and through ``backend`` (``name``
    or ``name:impl``) with ``build``/``search`` parameters when given, to ``depth`` (default DEFAULT_DEPTH).
    ``depth`` without ``backend``: the exact MAP@R and MRR to that depth as well."""
    from embeddings.training import evaluate as E

    from ann_bench.bench.runner import check_labels

    if reference not in E.REFERENCES:
        raise InputError(f"unknown --reference {reference!r}; choose one of: {', '.join(E.REFERENCES)}")
    E.check_thresholds(thresholds)
    train_labels, test_labels = check_labels(vs)
    if train_labels is None or (reference == "test" and test_labels is None):
        raise InputError(f"{str(vs.path)!r} has no labels (train_labels and test_labels); evaluation needs them: "
                         "embed labelled inputs, or import with --labels/--query-labels")
    kinds = {("number" if vs.file[f"{s}_labels"].dtype.kind in "iubf" else "string") for s in ("train", "test")}
    train_labels, test_labels = label_codes(vs)
    if reference == "test" and vs.n_test < 2:
        raise InputError(f"--reference test ranks the test vectors among themselves, each left out; "
                         f"{str(vs.path)!r} has {vs.n_test} test vector: use --reference train")
    if depth is not None and depth < 1:
        raise InputError(f"--depth must be >= 1, got {depth}")
    if backend is not None and depth is None:
        depth = DEFAULT_DEPTH
    undefined, notes = undefined_figures(test_labels, train_labels if reference == "train" else test_labels,
                                         reference == "test", numbers_vs_strings=len(kinds) > 1)
    X, Q = vs.load_train(), vs.load_test()
    R, r_labels = (X, train_labels) if reference == "train" else (Q, test_labels)
    kwargs = dict(reference=reference, metric=vs.metric)
    exact = _blank_undefined(E.evaluate(Q, test_labels, X, train_labels, seed=seed, thresholds=thresholds,
                                        **kwargs), undefined)
    max_relevant, n_ranked = E.ranking_depths(test_labels, train_labels, reference=reference)
    result = Evaluation(vs.name, vs.metric, reference, len(Q), len(R), depth, exact, max_relevant=max_relevant,
                        n_ranked=n_ranked, undefined=undefined, notes=notes)
    if depth is not None and depth < n_ranked:
        at = E.ranking(Q, test_labels, X, train_labels, depth=depth, **kwargs)
        result.at_depth = {"exact": _blank_undefined({key: at[key] for key in AT_DEPTH}, undefined)}
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
    ranked = E.ranking(Q, test_labels, X, train_labels, **kwargs, search=through_index, depth=depth)
    result.search_s = spent[0]
    result.index = {}
    for key in exact:
        reason = left_out(key, depth, max_relevant, n_ranked)
        result.index[key] = ranked[key] if reason is None and key not in undefined else None
        if reason is not None and key in ranked and key not in undefined:
            result.left_out[key] = reason
    if result.at_depth is not None:
        result.at_depth["index"] = _blank_undefined({key: ranked[key] for key in AT_DEPTH}, undefined)
    return result


def metric_rows(result: Evaluation) -> list[tuple[str, str, str | None]]:
    """(label, exact, through the index or None) rows for printing; "-" where the index's depth does not hold
    the figure (:attr:`Evaluation.left_out` says why), "" for the figures of the vectors (NMI, AMI,
    verification)."""
    from embeddings.training import evaluate as E

    def through(key: str) -> str | None:
        if result.index is None:
            return None
        if key in result.left_out or key in result.undefined:
            return "-"
        value = result.index.get(key)
        return "" if value is None else f"{value:.4f}"

    def shown(value) -> str:
        return UNDEFINED if value is None else f"{value:.4f}"

    vector_figure = "-" if result.index is not None else None  # verification: a figure of the vectors
    rows = []
    for key, label in E.TABLE_ROWS:
        rows.append((label, shown(result.exact[key]), through(key)))
        if key in AT_DEPTH and result.at_depth is not None:
            capped = " (R capped at it)" if key == "map_at_r" else ""
            index_value = (result.at_depth.get("index") or {}).get(key)
            rows.append((f"{label} to depth {result.depth}{capped}", shown(result.at_depth["exact"][key]),
                         None if result.index is None else ("-" if index_value is None else f"{index_value:.4f}")))
    blank = "" if result.index is not None else None
    for t, acc in result.exact["verification"].items():
        rows.append((f"verification acc. @ distance < {t}", shown(acc), vector_figure if acc is None else blank))
    best = result.exact["verification_best"]
    if best["accuracy"] is None:
        rows.append(("verification acc. (best threshold)", UNDEFINED, vector_figure))
    else:
        rows.append((f"verification acc. (best threshold {best['threshold']:g})", shown(best["accuracy"]), blank))
    return rows


UNDEFINED = "undefined"


def undefined_notes(result: Evaluation) -> list[str]:
    """One line per reason figures are undefined (shown as "undefined"), naming the figures; then the notes on
    what the defined figures count."""
    from embeddings.training import evaluate as E

    labels = {**dict(E.TABLE_ROWS), "verification": "verification acc. @ each distance",
              "verification_best": "verification acc. (best threshold)"}
    by_reason: dict[str, list[str]] = {}
    for key, reason in result.undefined.items():
        by_reason.setdefault(reason, []).append(labels.get(key, key))
    lines = [f"- undefined: {', '.join(names)}: {reason}" for reason, names in by_reason.items()]
    return lines + [f"- note: {note}" for note in result.notes]


def left_out_notes(result: Evaluation) -> list[str]:
    """One line per reason a figure is missing from the index column ("-"), naming the figures."""
    from embeddings.training import evaluate as E

    if result.index is None or not result.left_out:
        return []
    labels = dict(E.TABLE_ROWS)
    by_need: dict[str, list[str]] = {}
    for key in result.left_out:
        by_need.setdefault(_needs(key, result.max_relevant, result.n_ranked), []).append(labels.get(key, key))
    notes = [f"- {', '.join(names)} through the index: {'needs' if len(names) == 1 else 'need'} {need}; the index "
             f"was searched to depth {result.depth}" for need, names in by_need.items()]
    deepest = max(needed_depth(k, result.max_relevant, result.n_ranked) or 0 for k in result.left_out)
    notes.append(f"  (--depth {deepest} measures them through the index; the rows 'to depth {result.depth}' "
                 "compare the exact ranking and the index at the depth searched)")
    return notes
