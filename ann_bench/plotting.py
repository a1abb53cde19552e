"""Recall/QPS Pareto plots drawn from result records only (never from live indices).

The x axis is recall@k by default, or any other stored accuracy figure: ``id_recall`` or a label-aware
metric (``precision_at_10``, ``recall_at_1``, ``map_at_10``, ``mrr``, ...; see :func:`x_metric_names`).
"""

from __future__ import annotations

import os
import re
from collections import defaultdict
from pathlib import Path

import numpy as np

from ann_bench.atomic import atomic_path
from ann_bench.errors import InputError
from ann_bench.metrics import pareto_front
from ann_bench.results import Record

MARKERS = "osD^vP*Xph<>"


def select(records: list[Record], mode: str | None = None, k: int | None = None) -> tuple[list[Record], str, int]:
    """The ok records of one dataset, one mode and one k; InputError saying which option to pass otherwise."""
    ok = [r for r in records if r.status == "ok" and r.recall is not None and r.qps]
    if not ok:
        raise InputError("no successful results to plot; run `ann-bench run` first (or check --dataset/--results)")
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


def x_value(r: Record, x_metric: str = "recall") -> float | None:
    """The figure of ``r`` named ``x_metric``: ``recall``, ``id_recall`` or a key of its label metrics."""
    if x_metric in ("recall", "id_recall"):
        return getattr(r, x_metric)
    return r.label_metrics.get(x_metric)


def x_metric_names(records: list[Record]) -> list[str]:
    """The x metrics the records offer: recall, id_recall and their label metrics (exact_* excluded)."""
    names = ["recall", "id_recall"]
    for r in records:
        names += [m for m in r.label_metrics if not m.startswith("exact_") and m not in names]
    return names


def x_label(x_metric: str, k: int) -> str:
    """Axis label for ``x_metric``."""
    if x_metric == "recall":
        return f"Recall@{k} (ann-benchmarks rule: distance ≤ true {k}-th + 1e-3)"
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


def pareto_by_group(records: list[Record], x_metric: str = "recall") -> dict[str, list[Record]]:
    """For each backend/impl (and thread count if several), its Pareto-optimal records in (``x_metric`` up,
    QPS up), by ``x_metric`` ascending."""
    with_threads = len({r.threads for r in records}) > 1
    groups: dict[str, list[Record]] = defaultdict(list)
    for r in records:
        groups[group_label(r, with_threads)].append(r)
    return {g: [rs[i] for i in pareto_front([x_value(r, x_metric) for r in rs], [r.qps for r in rs])]
            for g, rs in sorted(groups.items())}


def plot_recall_qps(records: list[Record], out: str | os.PathLike, *, mode: str | None = None,
                    k: int | None = None, x_scale: str | None = None, raw: bool = True,
                    x_metric: str = "recall") -> Path:
    """Draw recall@k (or ``x_metric``) on x against QPS (y, log) with each backend's Pareto frontier; write
    PNG/SVG/PDF to out. For a label metric the exact neighbours' value is drawn as a dashed vertical line.

    ``x_scale`` None: logit for recall (it spreads 0.9, 0.99, 0.999), linear for label metrics, which level
    off at the exact neighbours' value, usually far below 1; the linear axis then spans the data."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FixedLocator, FuncFormatter

    if x_scale is None:
        x_scale = "logit" if x_metric in ("recall", "id_recall") else "linear"
    if x_scale not in ("logit", "linear"):
        raise InputError(f"unknown --x-scale {x_scale!r}; use logit or linear")
    out = Path(out)
    fmt = out.suffix.lstrip(".").lower()
    if fmt not in ("png", "svg", "pdf"):
        raise InputError(f"output {str(out)!r} must end in .png, .svg or .pdf")
    chosen, mode, k = select(records, mode, k)
    if x_metric.startswith("exact_"):
        raise InputError(f"--x-metric {x_metric!r} is the same for every configuration; plot "
                         f"{x_metric[len('exact_'):]!r} instead (its exact value is drawn as a dashed line)")
    offered = x_metric_names(chosen)
    chosen = [r for r in chosen if x_value(r, x_metric) is not None]
    if not chosen:
        raise InputError(f"no stored result has metric {x_metric!r}; available: {', '.join(offered)}"
                         + ("" if len(offered) > 2 else " (label metrics need a dataset with train/test labels)"))
    exact = next((r.label_metrics[f"exact_{x_metric}"] for r in chosen if f"exact_{x_metric}" in r.label_metrics),
                 None)
    with_threads = len({r.threads for r in chosen}) > 1
    fronts = pareto_by_group(chosen, x_metric)

    # On a logit axis recall 1.0 is infinitely far right: draw it at 1 - 1/(2 * nq * k), half the recall
    # resolution of the run, where it stays apart from the best imperfect recall, and label that tick "1".
    top = 1 - 0.5 / (max(r.n_test for r in chosen) * k)

    def xval(recall):
        x = np.asarray(recall, dtype=float)
        return np.clip(x, 1e-3, top) if x_scale == "logit" else x

    fig, ax = plt.subplots(figsize=(8, 5.5), dpi=120)
    cmap = plt.get_cmap("tab10")
    for i, (group, front) in enumerate(fronts.items()):
        color, marker = cmap(i % 10), MARKERS[i % len(MARKERS)]
        if raw:
            members = [r for r in chosen if group_label(r, with_threads) == group]
            ax.scatter(xval([x_value(r, x_metric) for r in members]), [r.qps for r in members], color=color,
                       alpha=0.25, s=14, marker=marker, linewidths=0)
        ax.plot(xval([x_value(r, x_metric) for r in front]), [r.qps for r in front], color=color, marker=marker,
                linewidth=2, markersize=5, label=group)
    if exact is not None:
        ax.axvline(float(xval(exact)), color="black", linestyle="--", linewidth=1, label=f"exact kNN ({exact:.4f})")
    xs = [x_value(r, x_metric) for r in chosen] + ([exact] if exact is not None else [])
    ax.set_yscale("log")
    if x_scale == "logit":
        ax.set_xscale("logit")
        lo = max(1e-3, min(xs) * 0.9)
        ticks = [t for t in (0.01, 0.1, 0.5, 0.9, 0.99, 0.999, 0.9999, 0.99999) if lo <= t and 1 - t >= 4 * (1 - top)]
        ticks.append(top)
        ax.xaxis.set_major_locator(FixedLocator(ticks))
        ax.xaxis.set_minor_locator(FixedLocator([]))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda t, _: "1" if t >= top else f"{t:g}"))
        ax.set_xlim(lo, 1 - 0.4 / (max(r.n_test for r in chosen) * k))
    elif x_metric in ("recall", "id_recall"):
        ax.set_xlim(max(0.0, min(xs) - 0.05), 1.0)
    else:  # label metrics: the span of the data, with a margin, so a 0.002 loss in precision is visible
        lo, hi = min(xs), max(xs)
        pad = max(0.1 * (hi - lo), 0.002)
        ax.set_xlim(max(0.0, lo - pad), min(1.0, hi + pad))
    threads = sorted({r.threads for r in chosen})
    ax.set_xlabel(x_label(x_metric, k))
    ax.set_ylabel(f"Queries per second ({mode} mode, log scale) — higher is better")
    first = chosen[0]
    ax.set_title(f"{first.dataset_name}: {first.n_train:,} × {first.dim}-d, {first.n_test:,} queries, "
                 f"{first.metric}\nk={k}, {mode} mode, threads={','.join(map(str, threads))}", fontsize=10)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(title="Pareto front per backend", fontsize=8, title_fontsize=8, loc="best")
    fig.tight_layout()
    with atomic_path(out, "." + fmt) as tmp:
        fig.savefig(tmp, format=fmt)
    plt.close(fig)
    return out
