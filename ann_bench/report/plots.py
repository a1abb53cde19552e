"""Pareto plots drawn from result records only (never from live indices).

The x axis is recall@k by default, or any other stored accuracy figure: ``id_recall`` or a label-aware
metric (``precision_at_10``, ``recall_at_1``, ``map_at_10``, ``mrr``, ...; see :func:`x_metric_names`).
The y axis is a cost or a speed (see :data:`Y_METRICS`): queries per second (higher is better), build time,
index size or p99 latency (lower is better); each backend's Pareto front is computed in that direction.

Each backend/impl keeps one colour and marker in every plot (:func:`style`): the backends ann-bench ships
have fixed slots, plugins get one from a hash of their label.
"""

from __future__ import annotations

import math

import hashlib
import io
import os
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ann_bench.atomic import atomic_path
from ann_bench.errors import InputError
from ann_bench.bench.metrics import pareto_front
from ann_bench.bench.results import Record, short_params, varying

# Fixed colour/marker slots for the backends ann-bench ships, so a backend looks the same in every plot
# whatever else is plotted with it: tab10's colours first, then darker ones, every shipped backend a colour of its
# own (a plot of all 25 has no two alike). Plugins hash into tab20's light shades, which no shipped backend uses.
_KNOWN = (
    ("hnsw[hnswlib]", "#1f77b4", "o"), ("hnsw[faiss]", "#ff7f0e", "s"), ("ivf[faiss]", "#2ca02c", "D"),
    ("ivfpq[faiss]", "#d62728", "^"), ("flat[faiss]", "#9467bd", "v"), ("annoy[annoy]", "#8c564b", "P"),
    ("nsw[numba]", "#e377c2", "*"), ("kdtree[scipy]", "#7f7f7f", "X"),
    ("hnsw[usearch]", "#17becf", "p"), ("hnsw[voyager]", "#393b79", "h"), ("hnsw[nmslib]", "#bcbd22", "<"),
    ("nsw[nmslib]", "#7b4173", ">"), ("nndescent[pynndescent]", "#843c39", "d"), ("onng[ngt]", "#637939", "H"),
    ("vamana[diskannpy]", "#8c6d31", "8"), ("scann[scann]", "#000000", "X"), ("faiss[faiss]", "#e7ba52", "o"),
    # the embedded databases (dbs extra): tab20b's darker shades, which neither the libraries nor plugins use
    ("flat[lancedb]", "#5254a3", "v"), ("ivf[lancedb]", "#6b6ecf", "D"), ("ivfpq[lancedb]", "#8ca252", "^"),
    ("ivfhnswsq[lancedb]", "#bd9e39", "s"), ("hnsw[chroma]", "#ad494a", "o"), ("flat[milvus]", "#d6616b", "v"),
    ("ivf[milvus]", "#a55194", "D"), ("hnsw[milvus]", "#ce6dbd", "o"), ("ivfsq[milvus]", "#9c9ede", "P"),
    ("hnswsq[milvus]", "#de9ed6", "s"),
)
KNOWN_LABELS = tuple(label for label, _, _ in _KNOWN)
_KNOWN_STYLE = {label: (color, marker) for label, color, marker in _KNOWN}
_EXTRA_COLORS = ("#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2", "#c7c7c7",
                 "#dbdb8d", "#9edae5")
_EXTRA_MARKERS = "ph<>*"
_LINESTYLES = ("-", "--", ":", "-.")


_STRATEGY_MARKERS = {"in-index": "o", "post:2": "v", "post:8": "^", "post:32": "s"}


def style(backend: str, impl: str) -> tuple[str, str]:
    """(colour, marker) of a backend/impl: fixed for the shipped backends, a stable hash for plugins. A filtered
    row's impl carries its strategy ("hnswlib, post:8", see ``cli.options.by_strategy``): the backend's colour,
    a marker per strategy."""
    if ", " in impl:
        base, strategy = impl.split(", ", 1)
        color = style(backend, base)[0]
        h = int.from_bytes(hashlib.sha256(strategy.encode()).digest()[:8], "big")
        return color, _STRATEGY_MARKERS.get(strategy, _EXTRA_MARKERS[h % len(_EXTRA_MARKERS)])
    label = f"{backend}[{impl}]"
    if label in _KNOWN_STYLE:
        return _KNOWN_STYLE[label]
    h = int.from_bytes(hashlib.sha256(label.encode()).digest()[:8], "big")
    return _EXTRA_COLORS[h % len(_EXTRA_COLORS)], _EXTRA_MARKERS[(h // len(_EXTRA_COLORS)) % len(_EXTRA_MARKERS)]


@dataclass(frozen=True)
class YMetric:
    """A figure for the y axis: how to read it from a record, its axis label and which way is better."""

    name: str
    label: str  # axis label, with unit
    higher_is_better: bool
    single_only: bool = False  # measured only in single mode (one query per call)

    def value(self, r: Record) -> float | None:
        if self.name == "index_mb":
            return None if r.index_bytes is None else r.index_bytes / 1e6
        return getattr(r, self.name)


Y_METRICS = {
    "qps": YMetric("qps", "Queries per second", True),
    "build_s": YMetric("build_s", "Build time, seconds", False),
    "index_mb": YMetric("index_mb", "Index size, MB (serialized, 1 MB = 10⁶ bytes)", False),
    "p99_ms": YMetric("p99_ms", "p99 query latency, ms (one query per call)", False, single_only=True),
}


def y_metric_of(name: str) -> YMetric:
    if name not in Y_METRICS:
        raise InputError(f"unknown y metric {name!r}; use one of {', '.join(Y_METRICS)}")
    return Y_METRICS[name]


def pareto_indices(xs, ys, higher_is_better: bool = True) -> np.ndarray:
    """Indices of the points not dominated in (x up, y up if ``higher_is_better`` else y down), by x ascending."""
    ys = np.asarray(ys, dtype=np.float64)
    return pareto_front(xs, ys if higher_is_better else -ys)


def latest_dataset(records: list[Record]) -> tuple[list[Record], str | None]:
    """The records of the dataset measured most recently when ``records`` hold several, with a line saying
    which (and how to choose another); ``records`` unchanged and None when they hold one (or none)."""
    ok = [r for r in records if r.status == "ok"]
    hashes = {r.dataset_hash for r in ok}
    if len(hashes) < 2:
        return records, None
    # created_at has one-second resolution; the store's order (insertion) breaks ties.
    latest = max(enumerate(ok), key=lambda item: (item[1].created_at, item[0]))[1]
    others = sorted({f"{r.dataset_name} ({r.dataset_hash[:8]})" for r in ok if r.dataset_hash != latest.dataset_hash})
    note = (f"results hold {len(hashes)} datasets; using the one measured most recently, {latest.dataset_name} "
            f"({latest.dataset_hash[:8]}); pass --dataset NAME|HASH|FILE for another: {', '.join(others)}")
    return [r for r in records if r.dataset_hash == latest.dataset_hash], note


def dataset_choices(records: list[Record]) -> list[str]:
    """One entry per dataset the records hold, by content hash ("a/b (0ae1b2ad)" for one content stored under
    two names): a set is its content, whatever file it was run from."""
    names: dict[str, set[str]] = {}
    for r in records:
        names.setdefault(r.dataset_hash, set()).add(r.dataset_name)
    return sorted(f"{'/'.join(sorted(n))} ({h[:8]})" for h, n in names.items())


def select(records: list[Record], mode: str | None = None, k: int | None = None) -> tuple[list[Record], str, int]:
    """The ok records of one dataset, one mode and one k; InputError saying which option to pass otherwise."""
    ok = [r for r in records if r.status == "ok" and (r.recall is not None or r.recall_ab is not None) and r.qps]
    if not ok:
        raise InputError("no successful results stored; run `ann-bench run` first "
                         "(or check --dataset/--backend/--results)")
    datasets = dataset_choices(ok)  # by content: one set stored under several names is one dataset
    if len(datasets) > 1:
        raise InputError(f"results hold {len(datasets)} datasets ({', '.join(datasets)}); pick one with --dataset")
    modes = sorted({r.mode for r in ok})
    if mode is None:
        mode = "batch" if "batch" in modes else modes[0]
    ok = [r for r in ok if r.mode == mode]
    if not ok:
        raise InputError(f"no results in mode {mode!r}; stored modes: {', '.join(modes)}")
    ks = sorted({r.k for r in ok})
    if k is None:
        if len(ks) > 1:
            raise InputError(f"results hold several k ({', '.join(map(str, ks))}); pick one with -k")
        k = ks[0]
    ok = [r for r in ok if r.k == k]
    if not ok:
        raise InputError(f"no results with k={k}; stored: {', '.join(map(str, ks))}")
    return ok, mode, k


RECALLS = ("recall", "recall_ab", "id_recall")  # the ANN accuracy figures every row has


def x_value(r: Record, x_metric: str = "recall") -> float | None:
    """The figure of ``r`` named ``x_metric``: ``recall``, ``recall_ab``, ``id_recall`` or a key of its label
    metrics."""
    if x_metric in RECALLS:
        return getattr(r, x_metric)
    return r.label_metrics.get(x_metric)


def old_rule_hint(records: list[Record], x_metric: str) -> str:
    """Why rows lack ``recall`` when they were measured by ann-bench 0.1 (whose recall was ann-benchmarks'
    rule, now ``recall_ab``), and what to do; "" otherwise."""
    if x_metric == "recall" and any(r.recall is None and r.recall_ab is not None for r in records):
        return (" (rows measured by ann-bench 0.1 hold only ann-benchmarks' rule, recall_ab: run the same "
                "`ann-bench run` again to measure recall, or pass -x recall_ab)")
    return ""


def x_metric_names(records: list[Record]) -> list[str]:
    """The x metrics the records offer: recall, id_recall and their label metrics (exact_* excluded)."""
    names = list(RECALLS)
    for r in records:
        names += [m for m in r.label_metrics if not m.startswith("exact_") and m not in names]
    return names


def x_label(x_metric: str, k: int) -> str:
    """Axis label for ``x_metric``."""
    if x_metric == "recall":
        return f"Recall@{k} (distance ≤ true {k}-th, ties counted; scale-free)"
    if x_metric == "recall_ab":
        return f"Recall@{k}, ann-benchmarks rule (distance ≤ true {k}-th + 1e-3)"
    if x_metric == "id_recall":
        return f"id recall@{k} (|returned ∩ true top-{k}| / {k})"
    m = re.fullmatch(r"(precision|recall|map)_at_(\d+)", x_metric)
    if m and m.group(1) == "precision":
        return f"Precision@{m.group(2)} (label-aware: share of the top {m.group(2)} with the query's label)"
    if m and m.group(1) == "recall":
        return f"Recall@{m.group(2)} (label-aware: queries with a same-label item in the top {m.group(2)})"
    if m:
        return f"MAP@R truncated at {m.group(2)} (label-aware)"
    if x_metric == "mrr":
        return f"MRR (label-aware: 1 / rank of the first same-label item in the top {k})"
    return x_metric


def group_label(r: Record, with_threads: bool) -> str:
    return f"{r.backend} [{r.impl}]" + (f" {r.threads}t" if with_threads else "")


def _build_keys(records: list[Record]) -> dict[tuple[str, str], set[str]]:
    """Per backend/impl, the build parameters whose value differs among its records."""
    by: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in records:
        by[(r.backend, r.impl)].append(r.build_params)
    return {key: varying(params) for key, params in by.items()}


def groups_of(records: list[Record], by_build: bool = False) -> dict[str, list[Record]]:
    """Records by backend/impl (and thread count if several), in label order; with ``by_build`` also by build
    configuration (its label adds the build parameters that vary, ``hnsw [hnswlib] M32``)."""
    with_threads = len({r.threads for r in records}) > 1
    keys = _build_keys(records) if by_build else {}
    groups: dict[str, list[Record]] = defaultdict(list)
    for r in records:
        label = group_label(r, with_threads)
        if by_build and keys[(r.backend, r.impl)]:
            label += " " + short_params(r.build_params, keys[(r.backend, r.impl)])
        groups[label].append(r)
    return dict(sorted(groups.items()))


def pareto_by_group(records: list[Record], x_metric: str = "recall", y_metric: str = "qps",
                    by_build: bool = False) -> dict[str, list[Record]]:
    """For each backend/impl (and thread count if several; with ``by_build`` each build configuration), its
    Pareto-optimal records in (``x_metric`` up, ``y_metric`` in its better direction: QPS up, build time / index
    size / p99 down), by ``x_metric`` ascending. Records lacking either figure are left out."""
    y = y_metric_of(y_metric)
    fronts = {}
    for g, rs in groups_of(records, by_build).items():
        rs = [r for r in rs if x_value(r, x_metric) is not None and y.value(r) is not None]
        idx = pareto_indices([x_value(r, x_metric) for r in rs], [y.value(r) for r in rs], y.higher_is_better)
        if len(idx):
            fronts[g] = [rs[i] for i in idx]
    return fronts


POINT_LABEL = "point-label"  # gid of the text naming a front point's parameters (tests find them by it)
ANSWER_LABEL = "answer-label"  # gid of the text naming a starred answer (plot --tune)
LABEL_FONTSIZE = 7


def point_labels(front: list[Record], group: list[Record], by_build: bool) -> list[str]:
    """Short labels of a front's points, only the parameters that vary along the front: its search parameters
    (``ef40``; for a front of one point, those that vary within its group), and, when the front mixes build
    configurations, the build parameters that vary along it (``M32 ef40``). When nothing varies, the point's
    search parameters."""
    keep_s = varying([r.search_params for r in (front if len(front) > 1 else group)])
    keep_b = set() if by_build else varying([r.build_params for r in front])
    if not keep_s and not keep_b:  # a point that would say nothing says its search setting
        return ["" if not r.search_params else short_params(r.search_params, None) for r in front]
    return [" ".join(p for p in (short_params(r.build_params, keep_b) if keep_b else "",
                                 short_params(r.search_params, keep_s) if keep_s else "") if p and p != "-")
            for r in front]


def label_order(xy: np.ndarray) -> list[int]:
    """The order in which a front's points ask for a label: its two ends, then its knees (the largest change
    of direction, measured on the drawn positions ``xy``, shape (n, 2), in display units), then the rest."""
    n = len(xy)
    if n <= 2:
        return list(range(n))
    d = np.diff(xy, axis=0)
    angle = np.arctan2(d[:, 1], d[:, 0])
    turn = np.abs((angle[1:] - angle[:-1] + np.pi) % (2 * np.pi) - np.pi)  # at points 1..n-2
    inner = sorted(range(1, n - 1), key=lambda i: (-round(float(turn[i - 1]), 6), i))
    return [0, n - 1, *inner]


def select_for(records: list[Record], mode: str | None, k: int | None, y_metric: str) -> tuple[list[Record], str, int]:
    """:func:`select` for a y metric: p99 latency exists only for single-mode rows, so it picks single mode
    and says so when asked for batch or when no single-mode row is stored."""
    y = y_metric_of(y_metric)
    if y.single_only:
        if mode == "batch":
            raise InputError(f"{y.name} is measured only in single mode (one query per call); drop --mode batch "
                             "or pass --mode single")
        if not any(r.status == "ok" and r.mode == "single" for r in records):
            raise InputError(f"no single-mode results: {y.name} (latency per query) is measured only by "
                             "`ann-bench run --mode single` (or --mode both); batch mode times all queries at once")
        mode = "single"
    return select(records, mode, k)


def plot_figure(records: list[Record], **kwargs):
    """The matplotlib Figure of :func:`plot_recall_qps` (the caller closes it), laid out: every text inside
    the figure, the point labels placed without overlap. Its layout is fixed once drawn (no layout engine
    left to move things at save time).

    Every text is plain: a ``$`` in a dataset or backend name is drawn as typed, never parsed as mathtext
    (which raises on e.g. ``$\\cmd$``); tick labels come from this module's formatters, never from
    matplotlib's mathtext ones (which would then print ``$\\mathdefault{2\\times10^{3}}$``)."""
    import matplotlib

    matplotlib.use("Agg")
    with matplotlib.rc_context({"text.parse_math": False}):
        return _plot_figure(records, **kwargs)


@dataclass
class _Label:
    """A text that wants a place next to the point at ``xy`` (display units)."""

    xy: tuple[float, float]
    text: str
    color: str
    gid: str
    gap: float  # points between the point and the text
    fontsize: float = LABEL_FONTSIZE
    must: bool = False  # placed even where it collides (a tune's answer): where it collides least


def _plot_figure(records: list[Record], *, mode: str | None = None, k: int | None = None,
                 x_scale: str | None = None, raw: bool = True, x_metric: str = "recall", y_metric: str = "qps",
                 highlights: list[tuple[Record, str]] | None = None, targets: list[float] | None = None,
                 title: str | None = None, annotate: bool | None = None, fronts: str = "backend"):
    """``highlights``: (row, text) drawn as stars with their text (a tune's answers); ``targets``: recall
    targets drawn as dotted vertical lines; ``title``: a line added to the title. ``annotate``: label the front
    points with the parameters that vary along their front, as many as fit without overlap, ends and knees
    first (None and True alike; False: none); ``fronts``: ``backend`` (one front per backend/impl over all its
    builds) or ``build`` (one per build configuration, in the backend's colour, one line style each)."""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    y = y_metric_of(y_metric)
    if x_scale is None:
        x_scale = "logit" if x_metric in RECALLS else "linear"
    if x_scale not in ("logit", "linear"):
        raise InputError(f"unknown --x-scale {x_scale!r}; use logit or linear")
    chosen, mode, k = select_for(records, mode, k, y_metric)
    if x_metric.startswith("exact_"):
        raise InputError(f"--x-metric {x_metric!r} is the same for every configuration; plot "
                         f"{x_metric[len('exact_'):]!r} instead (its exact value is drawn as a dashed line)")
    offered = x_metric_names(chosen)
    lacking = sorted({group_label(r, False) for r in chosen} - {group_label(r, False) for r in chosen
                                                                  if x_value(r, x_metric) is not None})
    chosen = [r for r in chosen if x_value(r, x_metric) is not None]
    if not chosen:
        raise InputError(f"no stored result has metric {x_metric!r}{old_rule_hint(records, x_metric)}; available: "
                         f"{', '.join(offered)}"
                         + ("" if len(offered) > 3 else " (label metrics need a dataset with train/test labels)"))
    chosen = [r for r in chosen if y.value(r) is not None]
    if not chosen:
        raise InputError(f"no stored result of mode {mode!r}, k={k} has {y.name}")
    exact = next((r.label_metrics[f"exact_{x_metric}"] for r in chosen if f"exact_{x_metric}" in r.label_metrics),
                 None)
    if fronts not in ("backend", "build"):
        raise InputError(f"unknown --fronts {fronts!r}; use backend or build")
    by_build = fronts == "build"
    annotate = annotate is not False
    threads = sorted({r.threads for r in chosen})
    groups = groups_of(chosen, by_build)
    fronts_of = pareto_by_group(chosen, x_metric, y_metric, by_build)
    # a backend's build configurations, in order: each gets a line style of the backend's colour (--fronts build)
    builds = defaultdict(list)
    for members in groups.values():
        key = (members[0].backend, members[0].impl, members[0].threads)
        builds[key].append(id(members[0]))

    # On a logit axis recall 1.0 is infinitely far right: draw it at 1 - 1/(2 * nq * k), half the recall
    # resolution of the run, where it stays apart from the best imperfect recall, and label that tick "1".
    top = 1 - 0.5 / (max(r.n_test for r in chosen) * k)

    def xval(recall):
        x = np.asarray(recall, dtype=float)
        return np.clip(x, 1e-3, top) if x_scale == "logit" else x

    fig = plt.figure(figsize=(10, 6.4), dpi=120, layout="constrained")  # height: see _lay_out
    ax = fig.add_subplot()
    labelled = []  # (front's data points, their label texts, colour) per front, in legend order
    for group, members in groups.items():
        color, marker = style(members[0].backend, members[0].impl)
        slot = threads.index(members[0].threads) + \
            builds[(members[0].backend, members[0].impl, members[0].threads)].index(id(members[0]))
        linestyle = _LINESTYLES[slot % len(_LINESTYLES)]
        if raw:
            ax.scatter(xval([x_value(r, x_metric) for r in members]), [y.value(r) for r in members], color=color,
                       alpha=0.3, s=16, marker=marker, linewidths=0, zorder=2)
        if group not in fronts_of:
            continue
        front = fronts_of[group]
        points = np.column_stack([xval([x_value(r, x_metric) for r in front]), [y.value(r) for r in front]])
        # A cost front is a staircase: the least cost that reaches a recall is that of the next point right.
        ax.plot(points[:, 0], points[:, 1], color=color, marker=marker, linestyle=linestyle,
                linewidth=2.2 if slot == 0 else 1.6, markersize=6, label=f"{group} ({len(front)})", zorder=3,
                drawstyle="default" if y.higher_is_better else "steps-pre")
        labelled.append((points, point_labels(front, members, by_build) if annotate else [], color))
    target_texts = []
    for target in targets or ():
        ax.axvline(float(xval(target)), color="grey", linestyle=":", linewidth=1, zorder=1)
        target_texts.append(ax.annotate(f"≥ {target:g}", (float(xval(target)), 1.0),
                                        xycoords=("data", "axes fraction"), fontsize=7, color="grey", ha="left",
                                        va="top", xytext=(2, -2), textcoords="offset points", in_layout=False))
    shown = [(r, text) for r, text in highlights or () if x_value(r, x_metric) is not None and y.value(r) is not None]
    stars = []
    for r, text in shown:
        color, _ = style(r.backend, r.impl)
        point = (float(xval(x_value(r, x_metric))), y.value(r))
        ax.scatter([point[0]], [point[1]], marker="*", s=220, color=color, edgecolors="black", linewidths=0.8,
                   zorder=5)
        stars.append((point, text))
    handles, _ = ax.get_legend_handles_labels()
    if shown:
        handles.append(Line2D([], [], color="grey", marker="*", markeredgecolor="black", linestyle="none",
                              markersize=11, label="★ tune's answer per target"))
    if exact is not None:
        handles.append(ax.axvline(float(xval(exact)), color="black", linestyle="--", linewidth=1,
                                  label=f"exact kNN ({exact:.4f})"))
    if raw:
        handles.append(Line2D([], [], color="grey", marker="o", alpha=0.35, linestyle="none", markersize=5,
                              label="faint: every configuration"))
    xs = [x_value(r, x_metric) for r in chosen] + ([exact] if exact is not None else [])
    _set_scales(ax, xs, x_scale, x_metric, top, 0.4 / (max(r.n_test for r in chosen) * k))
    thr = f"{threads[0]} thread{'s' if threads[0] > 1 else ''}" if len(threads) == 1 else \
        f"threads {','.join(map(str, threads))}"
    better = "higher is better" if y.higher_is_better else "lower is better"
    scale = ("logit scale: 0.9, 0.99, 0.999 equally spaced" if x_scale == "logit" else "linear scale")
    xlabel = f"{x_label(x_metric, k)}; {scale} — higher is better"
    if y.name == "qps":
        ylabel = f"Queries per second, {mode} mode, {thr} (log) — {better}"
    elif y.name == "p99_ms":
        ylabel = f"p99 latency, ms ({mode} mode: one query per call, {thr}; log) — {better}"
    else:
        ylabel = f"{y.label} (log) — {better}"
    first = chosen[0]
    filters = sorted({r.filter_spec for r in chosen if r.filter_spec})
    filtered = ""
    if len(filters) == 1:
        filtered = f", filter {filters[0]}"
        if not filters[0].startswith("selectivity="):
            filtered += f" (mean selectivity {np.mean([r.filter_selectivity or 0 for r in chosen]):.3g})"
    heading = (f"{first.dataset_name}: {first.n_train:,} × {first.dim}-d vectors, {first.n_test:,} queries, "
               f"{first.metric}{filtered}\n{_y_title(y)} vs {_x_title(x_metric, k)}: k={k}, {mode} mode, {thr}"
               + ("" if y.name not in ("build_s", "index_mb") else "\n(each build is one row of faint points: "
                  f"its search sweep; the staircase is the least {_y_title(y)} that reaches a recall)")
               + ("" if not lacking else f"\n(not plotted, no stored {x_metric}: {', '.join(lacking)})")
               + (f"\n{title}" if title else ""))
    ax.grid(True, which="major", alpha=0.3)
    ax.grid(True, which="minor", alpha=0.1)
    front_title = ("Pareto front per build configuration" if by_build else "Pareto front per backend") + \
        (" (points on it; labels: search value" + ("" if by_build else ", build where it varies") +
         " along the front, where they fit)" if annotate else " (points on it)")
    _lay_out(fig, ax, handles, front_title, xlabel, ylabel, heading)

    renderer = fig.canvas.get_renderer()
    for text in target_texts:  # a target near the right edge: its text on the line's left
        if text.get_window_extent(renderer).x1 > ax.get_window_extent(renderer).x1 - 1:
            text.set_horizontalalignment("right")
            text.xyann = (-2, -2)
    # Labels last, on the fixed layout: stars' texts first (they must show), then each front's ends, knees, rest.
    wanted = [_Label(ax.transData.transform(point), text, "black", ANSWER_LABEL, 7, fontsize=7, must=True)
              for point, text in stars]
    per_front = []
    for points, texts, color in labelled:
        xy = ax.transData.transform(points)
        per_front.append([_Label(tuple(xy[i]), texts[i], color, POINT_LABEL, 3) for i in label_order(xy)
                          if i < len(texts) and texts[i]])
    for rank in range(max(map(len, per_front), default=0)):  # every front's ends before any front's middle
        wanted += [labels[rank] for labels in per_front if rank < len(labels)]
    markers = [ax.transData.transform(points) for points, _, _ in labelled]
    _place(fig, ax, wanted, np.concatenate(markers) if markers else np.empty((0, 2)),
           [ax.transData.transform(point) for point, _ in stars], target_texts, _drawn_points(ax))
    return fig


def _drawn_points(ax, step: float = 3.0) -> np.ndarray:
    """Where the lines and faint points lie, in display units, shape (n, 2): the lines sampled every ``step``
    pixels. A label had rather not cover them (it may, where it has no other room)."""
    from matplotlib.collections import PathCollection

    out = [np.empty((0, 2))]
    for line in ax.get_lines():
        path = line._get_transformed_path().get_fully_transformed_path()  # as drawn (a staircase stays one)
        xy = path.vertices
        if len(xy) < 2 or line.get_linestyle() in ("None", "none", ""):
            continue
        for a, b in zip(xy[:-1], xy[1:]):
            n = int(np.hypot(*(b - a)) // step) + 1
            out.append(a + (b - a) * np.linspace(0, 1, n + 1)[:, None])
    for coll in ax.collections:
        if isinstance(coll, PathCollection):
            out.append(coll.get_offset_transform().transform(coll.get_offsets()))
    xy = np.concatenate(out)
    return xy[np.isfinite(xy).all(axis=1)]


def log_y_axis(ax) -> None:
    """A log y axis with plain tick labels (:func:`tick_label`), minor ones too when few decades are on view."""
    from matplotlib.ticker import FuncFormatter, LogLocator

    ax.set_yscale("log")
    ax.yaxis.set_minor_locator(LogLocator(subs=(2, 3, 4, 5, 6, 7, 8, 9)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: tick_label(v)))

    def minor(v, _):  # fewer decades on view, more labels, or the axis may show one or two numbers:
        lo, hi = ax.yaxis.get_view_interval()  # under one decade every digit, under two 2 and 5, else none
        digit = round(v / 10 ** math.floor(math.log10(v)))
        return tick_label(v) if hi < 10 * lo or (hi < 100 * lo and digit in (2, 5)) else ""

    ax.yaxis.set_minor_formatter(FuncFormatter(minor))


def _set_scales(ax, xs: list[float], x_scale: str, x_metric: str, top: float, right: float) -> None:
    """Log y, logit or linear x, and plain tick labels on both (never matplotlib's mathtext formatters)."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

    log_y_axis(ax)
    ax.xaxis.set_minor_formatter(NullFormatter())
    if x_scale == "logit":
        ax.set_xscale("logit")
        lo = max(1e-3, min(xs) * 0.9)
        ticks = [t for t in (0.01, 0.1, 0.5, 0.9, 0.99, 0.999, 0.9999, 0.99999) if lo <= t and 1 - t >= 4 * (1 - top)]
        ticks.append(top)
        ax.xaxis.set_major_locator(FixedLocator(ticks))
        ax.xaxis.set_minor_locator(FixedLocator([]))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda t, _: "1" if t >= top else f"{t:g}"))
        ax.set_xlim(lo, 1 - right)
    elif x_metric in RECALLS:
        lo = max(0.0, min(xs) - 0.05)
        ax.set_xlim(lo, 1.0 + 0.01 * (1.0 - lo))  # a point at 1.0 shows whole
        ax.xaxis.set_major_formatter(FuncFormatter(lambda t, _: "" if t > 1 + 1e-9 else f"{t:.4g}"))
    else:  # label metrics: the span of the data, with a margin, so a 0.002 loss in precision is visible
        lo, hi = min(xs), max(xs)
        pad = max(0.1 * (hi - lo), 0.002)
        ax.set_xlim(max(0.0, lo - pad), hi + pad)  # past 1.0 if need be: points at 1.0 stay visible
        ax.xaxis.set_major_formatter(FuncFormatter(lambda t, _: "" if t > 1 + 1e-9 else f"{t:.4g}"))


# Where a long line may break, best first: after ';' or before '—'; then after ',' ':' or ')'; then any space.
_BREAKS = (r"(?<=;) | (?=—)", r"(?<=[;,:)]) | (?=—)", r" ")


def wrap_to(text: str, fits) -> str:
    """``text`` with each line that does not ``fits(line)`` broken at the best places that make every piece
    fit (see :data:`_BREAKS`); a word wider than the room is cut between characters."""
    out = []
    for line in text.split("\n"):
        if fits(line):
            out.append(line)
            continue
        for pattern in _BREAKS:
            pieces: list[str] = []
            for word in re.split(pattern, line):
                if pieces and fits(pieces[-1] + " " + word):
                    pieces[-1] += " " + word
                else:
                    pieces.append(word)
            if all(map(fits, pieces)):
                break
        for piece in pieces:
            while not fits(piece) and len(piece) > 1:
                cut = max(i for i in range(1, len(piece)) if fits(piece[:i]) or i == 1)
                out.append(piece[:cut])
                piece = piece[cut:]
            out.append(piece)
    return "\n".join(out)


AXES_HEIGHT_IN = 4.4  # the plot area's height; the figure grows with its title and legend around it


def _lay_out(fig, ax, handles, legend_title: str, xlabel: str, ylabel: str, heading: str) -> None:
    """Title, axis labels and the legend (below the axes, in as many columns as fit), each wrapped to the room
    it has; the figure as tall as they need around a plot area :data:`AXES_HEIGHT_IN` high; constrained layout
    places them, then the layout is frozen so nothing moves when the point labels are added."""
    from matplotlib.font_manager import FontProperties

    renderer = fig.canvas.get_renderer()

    def fitter(artist, room_px):
        prop = artist if isinstance(artist, FontProperties) else artist.get_fontproperties()
        return lambda s: renderer.get_text_width_height_descent(s, prop, ismath=False)[0] <= room_px

    fig_w = fig.bbox.width
    em = 8 * fig.dpi / 72
    entry = FontProperties(size=8)
    fits = fitter(entry, (fig_w - 24) / 2 - 5.2 * em)
    for h in handles:  # an entry wider than half the figure is wrapped: two columns at least
        h.set_label(wrap_to(h.get_label(), fits))
    widest = max((renderer.get_text_width_height_descent(line, entry, ismath=False)[0]
                  for h in handles for line in h.get_label().split("\n")), default=0)
    # a column: handle (2 em), padding (0.8 em), text, column spacing (2 em)
    ncols = max(1, min(len(handles), int((fig_w - 24 + 2 * em) // (widest + 4.8 * em))))
    legend_title = wrap_to(legend_title, fitter(entry, fig_w - 24))
    while True:
        legend = fig.legend(handles=handles, loc="outside lower center", ncols=ncols, fontsize=8,
                            title_fontsize=8, title=legend_title, frameon=False)
        if ncols == 1 or legend.get_window_extent(renderer).width <= fig_w - 8:
            break
        legend.remove()
        ncols -= 1
    title = ax.set_title(heading, fontsize=10)
    xl = ax.set_xlabel(xlabel, fontsize=9)
    yl = ax.set_ylabel(ylabel, fontsize=9)
    # first guess at the axes' room, then the room it really has (a wrapped label moves the axes a little)
    room = (fig_w * 0.85, AXES_HEIGHT_IN * fig.dpi)
    for _ in range(4):
        title.set_text(wrap_to(heading, fitter(title, room[0])))
        xl.set_text(wrap_to(xlabel, fitter(xl, room[0])))
        yl.set_text(wrap_to(ylabel, fitter(yl, room[1])))
        around = sum(t.get_window_extent(renderer).height for t in (title, xl, legend))
        height = AXES_HEIGHT_IN + (around + 60) / fig.dpi  # 60 px: tick labels and the layout's pads
        fig.set_size_inches(fig.get_figwidth(), height)
        fig.draw_without_rendering()
        box = ax.get_window_extent(renderer)
        if abs(box.width - room[0]) < 1 and abs(box.height - room[1]) < 1:
            break
        room = (max(box.width, fig_w * 0.5), max(box.height, AXES_HEIGHT_IN * fig.dpi * 0.5))
    fig.set_layout_engine("none")


_MAX_COVERED = 6  # line samples (3 px apart) or faint points a label may cover: crossing a line, not along it


def _place(fig, ax, wanted: list[_Label], markers: np.ndarray, stars: list, obstacles: list,
           soft: np.ndarray) -> None:
    """Draw each of ``wanted`` (in order) at one of eight spots around its point where it stays inside the
    axes and overlaps no label already placed, no front marker (``markers``, shape (n, 2), display units),
    no star and no ``obstacles`` (texts already drawn), and covers at most :data:`_MAX_COVERED` of the ``soft``
    points (lines and faint points, shape (m, 2)): the one covering fewest, the first on a tie. One that finds no
    such spot is left out, unless it ``must`` show: then at the spot where it overlaps least. Each is drawn
    with a white halo, so a line it crosses does not cut through its letters."""
    from matplotlib.patheffects import withStroke

    renderer = fig.canvas.get_renderer()
    px = fig.dpi / 72  # display units per point
    inner = ax.get_window_extent(renderer)
    r_marker, r_star = 3.5 * px, 8 * px
    blocked = [np.column_stack([markers - r_marker, markers + r_marker]) if len(markers) else np.empty((0, 4))]
    if stars:
        s = np.asarray(stars, dtype=float)
        blocked.append(np.column_stack([s - r_star, s + r_star]))
    for t in obstacles:
        blocked.append(np.asarray([t.get_window_extent(renderer).extents]))
    blocked = np.concatenate(blocked)
    for label in wanted:
        probe = fig.text(0, 0, label.text, fontsize=label.fontsize)
        extent = probe.get_window_extent(renderer)
        probe.remove()
        w, h, g = extent.width, extent.height, label.gap * px
        x, y = label.xy
        spots = [(x + g, y + g, "left", "bottom"), (x + g, y - g, "left", "top"), (x - g, y + g, "right", "bottom"),
                 (x - g, y - g, "right", "top"), (x, y + 1.6 * g + 2 * px, "center", "bottom"),
                 (x, y - 1.6 * g - 2 * px, "center", "top"), (x + g + 2 * px, y, "left", "center"),
                 (x - g - 2 * px, y, "right", "center")]
        best = None
        for sx, sy, ha, va in spots:
            x0 = sx - {"left": 0, "center": w / 2, "right": w}[ha]
            y0 = sy - {"bottom": 0, "center": h / 2, "top": h}[va]
            box = np.array([x0, y0, x0 + w, y0 + h])
            if box[0] < inner.x0 + 1 or box[1] < inner.y0 + 1 or box[2] > inner.x1 - 1 or box[3] > inner.y1 - 1:
                continue
            # overlap area with everything in the way (1 px of air around each text)
            ow = np.minimum(blocked[:, 2], box[2] + 1) - np.maximum(blocked[:, 0], box[0] - 1)
            oh = np.minimum(blocked[:, 3], box[3] + 1) - np.maximum(blocked[:, 1], box[1] - 1)
            hit = float(np.sum(np.clip(ow, 0, None) * np.clip(oh, 0, None)))
            covered = int(np.count_nonzero((soft[:, 0] >= box[0]) & (soft[:, 0] <= box[2])
                                           & (soft[:, 1] >= box[1]) & (soft[:, 1] <= box[3])))
            if covered > _MAX_COVERED and not label.must:  # running along a line, or over a cloud of points
                continue
            if best is None or (hit, covered) < best[:2]:
                best = (hit, covered, box, ha, va, sx, sy)
            if hit == 0 and covered == 0:
                break
        if best is None or (best[0] > 0 and not label.must):
            continue
        _, _, box, ha, va, sx, sy = best
        ax.annotate(label.text, ax.transData.inverted().transform(label.xy), xytext=((sx - x) / px, (sy - y) / px),
                    textcoords="offset points", fontsize=label.fontsize, color=label.color, ha=ha, va=va,
                    zorder=6 if label.must else 4, gid=label.gid, in_layout=False, annotation_clip=False,
                    path_effects=[withStroke(linewidth=2.5, foreground="white")])
        blocked = np.vstack([blocked, box])


def tick_label(v: float) -> str:
    """A log-axis tick, in the static and the interactive plots: 0.002, 0.5, 3, 40, 2k, 15k, 1.2M."""
    if v >= 1e6:
        return f"{v / 1e6:g}M"
    if v >= 1e3:
        return f"{v / 1e3:g}k"
    return f"{v:.3g}"


def _x_title(x_metric: str, k: int) -> str:
    if x_metric == "recall":
        return f"recall@{k}"
    if x_metric == "recall_ab":
        return f"recall@{k} (ann-benchmarks rule)"
    m = re.fullmatch(r"(precision|recall|map)_at_(\d+)", x_metric)
    if m:
        return {"precision": "Precision", "recall": "Recall", "map": "MAP@R"}[m.group(1)] + \
            ("" if m.group(1) == "map" else f"@{m.group(2)}") + " (labels)"
    return x_metric


def _y_title(y: YMetric) -> str:
    return {"qps": "QPS", "build_s": "build time", "index_mb": "index size", "p99_ms": "p99 latency"}[y.name]


def plot_recall_qps(records: list[Record], out: str | os.PathLike, *, mode: str | None = None,
                    k: int | None = None, x_scale: str | None = None, raw: bool = True,
                    x_metric: str = "recall", y_metric: str = "qps", **marks) -> Path:
    """Draw recall@k (or ``x_metric``) on x against ``y_metric`` (y, log; QPS by default, or build_s,
    index_mb, p99_ms) with each backend's Pareto frontier bold and, with ``raw``, every configuration faint;
    write PNG/SVG/PDF to out. For a label metric the exact neighbours' value is drawn as a dashed vertical line.

    ``x_scale`` None: logit for recall (it spreads 0.9, 0.99, 0.999), linear for label metrics, which level
    off at the exact neighbours' value, usually far below 1; the linear axis then spans the data.
    ``y_metric`` p99_ms picks single mode (the only one with per-query latency). ``marks``: highlights, targets
    and title (a tune's answers), ``annotate`` (search values on the front points) and ``fronts`` (per
    ``backend`` or per ``build`` configuration) of :func:`_plot_figure`."""
    check_plot_output(out)
    return save_figure(plot_figure(records, mode=mode, k=k, x_scale=x_scale, raw=raw, x_metric=x_metric,
                                   y_metric=y_metric, **marks), out)


def check_plot_output(out: str | os.PathLike) -> None:
    """InputError unless ``out`` ends in .png, .svg or .pdf (checked before anything is drawn)."""
    if Path(out).suffix.lstrip(".").lower() not in ("png", "svg", "pdf"):
        raise InputError(f"output {str(out)!r} must end in .png, .svg or .pdf")


def save_figure(fig, out: str | os.PathLike) -> Path:
    """Write ``fig`` to ``out`` in its suffix's format, atomically (a temporary file renamed), and close it."""
    import matplotlib.pyplot as plt

    out = Path(out)
    fmt = out.suffix.lstrip(".").lower()
    try:
        with atomic_path(out, "." + fmt) as tmp:
            fig.savefig(tmp, format=fmt, metadata=_metadata(fmt))
    finally:
        plt.close(fig)
    return out


def render_plot(records: list[Record], fmt: str = "png", **kwargs) -> bytes:
    """The plot of :func:`plot_recall_qps` as bytes (PNG or SVG), for embedding in a report."""
    import matplotlib.pyplot as plt

    fig = plot_figure(records, **kwargs)
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format=fmt, metadata=_metadata(fmt))
    finally:
        plt.close(fig)
    return buf.getvalue()


def _metadata(fmt: str) -> dict:
    # No creation date: the same results give byte-identical files. The software names ann-bench: the marker by
    # which `plot` recognises a plot it may replace without --force (ann_bench.outputs).
    from ann_bench.outputs import SOFTWARE

    return {"png": {"Software": SOFTWARE}, "svg": {"Date": None, "Creator": SOFTWARE},
            "pdf": {"CreationDate": None, "Creator": SOFTWARE}}.get(fmt, {})
