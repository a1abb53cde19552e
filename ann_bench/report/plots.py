"""Pareto plots drawn from result records only (never from live indices).

The x axis is recall@k by default, or any other stored accuracy figure: ``id_recall`` or a label-aware
metric (``precision_at_10``, ``recall_at_1``, ``map_at_10``, ``mrr``, ...; see :func:`x_metric_names`).
The y axis is a cost or a speed (see :data:`Y_METRICS`): queries per second (higher is better), build time,
index size or p99 latency (lower is better); each backend's Pareto front is computed in that direction.

Each backend/impl keeps one colour and marker in every plot (:func:`style`): the backends ann-bench ships
have fixed slots, plugins get one from a hash of their label.
"""

from __future__ import annotations

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
# own (a plot of all 17 has no two alike). Plugins hash into tab20's light shades, which no shipped backend uses.
_KNOWN = (
    ("hnsw[hnswlib]", "#1f77b4", "o"), ("hnsw[faiss]", "#ff7f0e", "s"), ("ivf[faiss]", "#2ca02c", "D"),
    ("ivfpq[faiss]", "#d62728", "^"), ("flat[faiss]", "#9467bd", "v"), ("annoy[annoy]", "#8c564b", "P"),
    ("nsw[numba]", "#e377c2", "*"), ("kdtree[scipy]", "#7f7f7f", "X"),
    ("hnsw[usearch]", "#17becf", "p"), ("hnsw[voyager]", "#393b79", "h"), ("hnsw[nmslib]", "#bcbd22", "<"),
    ("nsw[nmslib]", "#7b4173", ">"), ("nndescent[pynndescent]", "#843c39", "d"), ("onng[ngt]", "#637939", "H"),
    ("vamana[diskannpy]", "#8c6d31", "8"), ("scann[scann]", "#000000", "X"), ("faiss[faiss]", "#e7ba52", "o"),
)
KNOWN_LABELS = tuple(label for label, _, _ in _KNOWN)
_KNOWN_STYLE = {label: (color, marker) for label, color, marker in _KNOWN}
_EXTRA_COLORS = ("#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2", "#c7c7c7",
                 "#dbdb8d", "#9edae5")
_EXTRA_MARKERS = "ph<>*"
_LINESTYLES = ("-", "--", ":", "-.")


def style(backend: str, impl: str) -> tuple[str, str]:
    """(colour, marker) of a backend/impl: fixed for the shipped backends, a stable hash for plugins."""
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


def select(records: list[Record], mode: str | None = None, k: int | None = None) -> tuple[list[Record], str, int]:
    """The ok records of one dataset, one mode and one k; InputError saying which option to pass otherwise."""
    ok = [r for r in records if r.status == "ok" and (r.recall is not None or r.recall_ab is not None) and r.qps]
    if not ok:
        raise InputError("no successful results stored; run `ann-bench run` first "
                         "(or check --dataset/--backend/--results)")
    datasets = sorted({r.dataset_name + " (" + r.dataset_hash[:8] + ")" for r in ok})
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


ANNOTATE_AUTO_MAX = 60  # --annotate's default: label front points when the plot has at most this many


def point_labels(front: list[Record], group: list[Record], by_build: bool) -> list[str]:
    """Short labels of a front's points: the search parameters that vary within the group (``ef40``), and,
    when the front mixes build configurations, the build parameters that vary along it (``M32 ef40``)."""
    keep_s = varying([r.search_params for r in group]) or None
    keep_b = set() if by_build else varying([r.build_params for r in front])
    return [" ".join(p for p in (short_params(r.build_params, keep_b) if keep_b else "",
                                 short_params(r.search_params, keep_s)) if p and p != "-") for r in front]


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
    """The matplotlib Figure of :func:`plot_recall_qps` (the caller closes it).

    Every text is plain: a ``$`` in a dataset or backend name is drawn as typed, never parsed as mathtext
    (which raises on e.g. ``$\\cmd$``)."""
    import matplotlib

    matplotlib.use("Agg")
    with matplotlib.rc_context({"text.parse_math": False}):
        return _plot_figure(records, **kwargs)


def _plot_figure(records: list[Record], *, mode: str | None = None, k: int | None = None,
                 x_scale: str | None = None, raw: bool = True, x_metric: str = "recall", y_metric: str = "qps",
                 highlights: list[tuple[Record, str]] | None = None, targets: list[float] | None = None,
                 title: str | None = None, annotate: bool | None = None, fronts: str = "backend"):
    """``highlights``: (row, text) drawn as stars with their text (a tune's answers); ``targets``: recall
    targets drawn as dotted vertical lines; ``title``: a line added to the title. ``annotate``: label each front
    point with its search value (None: when the plot has at most :data:`ANNOTATE_AUTO_MAX` front points);
    ``fronts``: ``backend`` (one front per backend/impl over all its builds) or ``build`` (one per build
    configuration, in the backend's colour, one line style each)."""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator

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
    threads = sorted({r.threads for r in chosen})
    groups = groups_of(chosen, by_build)
    fronts_of = pareto_by_group(chosen, x_metric, y_metric, by_build)
    if annotate is None:
        annotate = sum(map(len, fronts_of.values())) <= ANNOTATE_AUTO_MAX
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

    fig, ax = plt.subplots(figsize=(10, 5.6), dpi=120)
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
        # A cost front is a staircase: the least cost that reaches a recall is that of the next point right.
        ax.plot(xval([x_value(r, x_metric) for r in front]), [y.value(r) for r in front], color=color,
                marker=marker, linestyle=linestyle, linewidth=2.2 if slot == 0 else 1.6, markersize=6,
                label=f"{group} ({len(front)})", zorder=3, drawstyle="default" if y.higher_is_better else "steps-pre")
        if annotate:
            for r, text in zip(front, point_labels(front, members, by_build)):
                if text:
                    ax.annotate(text, (float(xval(x_value(r, x_metric))), y.value(r)), fontsize=6, color=color,
                                xytext=(3, 3), textcoords="offset points", zorder=4)
    for target in targets or ():
        ax.axvline(float(xval(target)), color="grey", linestyle=":", linewidth=1, zorder=1)
        ax.annotate(f"≥ {target:g}", (float(xval(target)), 1.0), xycoords=("data", "axes fraction"), fontsize=7,
                    color="grey", ha="left", va="top", xytext=(2, -2), textcoords="offset points")
    shown = [(r, text) for r, text in highlights or () if x_value(r, x_metric) is not None and y.value(r) is not None]
    for r, text in shown:
        color, _ = style(r.backend, r.impl)
        ax.scatter([float(xval(x_value(r, x_metric)))], [y.value(r)], marker="*", s=220, color=color,
                   edgecolors="black", linewidths=0.8, zorder=5)
        ax.annotate(text, (float(xval(x_value(r, x_metric))), y.value(r)), fontsize=7, xytext=(6, 4),
                    textcoords="offset points", zorder=6)
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
    ax.set_yscale("log")
    ax.yaxis.set_minor_locator(LogLocator(subs=(2, 5)))
    ys = [y.value(r) for r in chosen]
    if max(ys) / max(min(ys), 1e-300) < 30:  # under ~1.5 decades: label 2 and 5 too, or the axis has no numbers
        ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: _short(v)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: _short(v)))
    if x_scale == "logit":
        ax.set_xscale("logit")
        lo = max(1e-3, min(xs) * 0.9)
        ticks = [t for t in (0.01, 0.1, 0.5, 0.9, 0.99, 0.999, 0.9999, 0.99999) if lo <= t and 1 - t >= 4 * (1 - top)]
        ticks.append(top)
        ax.xaxis.set_major_locator(FixedLocator(ticks))
        ax.xaxis.set_minor_locator(FixedLocator([]))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda t, _: "1" if t >= top else f"{t:g}"))
        ax.set_xlim(lo, 1 - 0.4 / (max(r.n_test for r in chosen) * k))
    elif x_metric in RECALLS:
        ax.set_xlim(max(0.0, min(xs) - 0.05), 1.0)
    else:  # label metrics: the span of the data, with a margin, so a 0.002 loss in precision is visible
        lo, hi = min(xs), max(xs)
        pad = max(0.1 * (hi - lo), 0.002)
        ax.set_xlim(max(0.0, lo - pad), hi + pad)  # past 1.0 if need be: points at 1.0 stay visible
        ax.xaxis.set_major_formatter(FuncFormatter(lambda t, _: "" if t > 1 + 1e-9 else f"{t:.4g}"))
    thr = f"{threads[0]} thread{'s' if threads[0] > 1 else ''}" if len(threads) == 1 else \
        f"threads {','.join(map(str, threads))}"
    better = "higher is better" if y.higher_is_better else "lower is better"
    scale = ("logit scale: 0.9, 0.99, 0.999 equally spaced" if x_scale == "logit" else "linear scale")
    ax.set_xlabel(f"{x_label(x_metric, k)}; {scale} — higher is better", fontsize=9)
    if y.name == "qps":
        ylab = f"Queries per second, {mode} mode, {thr} (log) — {better}"
    elif y.name == "p99_ms":
        ylab = f"p99 latency, ms ({mode} mode: one query per call, {thr}; log) — {better}"
    else:
        ylab = f"{y.label} (log) — {better}"
    ax.set_ylabel(ylab, fontsize=9)
    first = chosen[0]
    ax.set_title(f"{first.dataset_name}: {first.n_train:,} × {first.dim}-d vectors, {first.n_test:,} queries, "
                 f"{first.metric}\n{_y_title(y)} vs {_x_title(x_metric, k)}: k={k}, {mode} mode, {thr}"
                 + ("" if y.name not in ("build_s", "index_mb") else "\n(each build is one row of faint points: "
                    f"its search sweep; the staircase is the least {_y_title(y)} that reaches a recall)")
                 + ("" if not lacking else f"\n(not plotted, no stored {x_metric}: {', '.join(lacking)})")
                 + (f"\n{title}" if title else ""),
                 fontsize=10)
    ax.grid(True, which="major", alpha=0.3)
    ax.grid(True, which="minor", alpha=0.1)
    front_title = ("Pareto front per build configuration" if by_build else "Pareto front per backend") + \
        ("\n(points on it; labels: search value" + ("" if by_build else ", build where it varies") + ")"
         if annotate else "\n(points on it)")
    ax.legend(handles=handles, title=front_title, fontsize=8, title_fontsize=8,
              loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    fig.tight_layout()
    return fig


def _short(v: float) -> str:
    """A log-axis tick: 0.002, 0.5, 3, 40, 2k, 15k, 1.2M."""
    if v >= 1e6:
        return f"{v / 1e6:g}M"
    if v >= 1e3:
        return f"{v / 1e3:g}k"
    return f"{v:g}"


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
    import matplotlib.pyplot as plt

    out = Path(out)
    fmt = out.suffix.lstrip(".").lower()
    if fmt not in ("png", "svg", "pdf"):
        raise InputError(f"output {str(out)!r} must end in .png, .svg or .pdf")
    fig = plot_figure(records, mode=mode, k=k, x_scale=x_scale, raw=raw, x_metric=x_metric, y_metric=y_metric,
                      **marks)
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
    # No creation date: the same results give byte-identical files.
    return {"png": {"Software": None}, "svg": {"Date": None}, "pdf": {"CreationDate": None}}.get(fmt, {})
