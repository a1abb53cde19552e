"""Figures of several panels: filtered search at several selectivities, and a collection that changes.

- :func:`plot_filter_panels`: one recall/QPS panel per filter (``plot --filter selectivity=0.5,0.1,0.01``), every
  panel on one QPS scale so that the strategy winning at each selectivity — and where that changes, the
  crossover — reads across the panels; each panel's title names its fastest configuration at a recall target.
- :func:`plot_stream`: the rows of one runbook (``plot --stream NAME``) over its steps: recall@k and QPS at every
  search step, the index's size and the live items at every step, and the rebuild from scratch drawn one step past
  the last, per backend.

Both draw from stored rows only, as :mod:`ann_bench.report.plots` does, with its colours and markers (each
backend/impl and each filter strategy looks the same in every figure) and its plain tick labels; every text is
plain (no mathtext) and wrapped to the room it has.
"""

from __future__ import annotations

import math
import os
from collections import defaultdict
from pathlib import Path

import numpy as np

from ann_bench.bench.results import Record
from ann_bench.errors import InputError
from ann_bench.report.plots import (_metadata, _set_scales, check_plot_output, dataset_choices, groups_of, log_y_axis,
                                    pareto_by_group, save_figure, select, style, tick_label, wrap_to, x_value)

PANEL_TARGET = 0.9  # the recall at which each filter panel names its fastest configuration


def render_figure(which: str, records: list[Record], **kwargs) -> bytes:
    """The PNG of a ``filter`` (:func:`plot_filter_panels`) or ``stream`` (:func:`plot_stream`) figure, for a
    report."""
    import io

    import matplotlib
    import matplotlib.pyplot as plt

    matplotlib.use("Agg")
    with matplotlib.rc_context({"text.parse_math": False}):
        if which == "filter":
            fig = _filter_figure(records, mode=kwargs.get("mode"), k=kwargs.get("k"), raw=True,
                                 target=kwargs.get("target", PANEL_TARGET))
        else:
            fig = _stream_figure(records, kwargs.get("mode"))
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", metadata=_metadata("png"))
    finally:
        plt.close(fig)
    return buf.getvalue()


def fastest(rows: list[Record]) -> Record:
    """The row with the highest QPS, among those timed uncontended where there is one (as ``best`` chooses)."""
    return max([r for r in rows if not r.contended] or rows, key=lambda r: r.qps)


def winners_per_filter(records: list[Record], targets=(0.9, 0.95, 0.99)) -> list[tuple[str, float, list]]:
    """Per filter (widest first): (name, mean selectivity, [the fastest row reaching each target, or None]) over
    ``records`` of one mode and k, strategies apart (impl "faiss, post:8")."""
    by: dict[str, list[Record]] = defaultdict(list)
    for r in records:
        if r.status == "ok" and r.recall is not None and r.qps:
            by[r.filter_spec].append(r)
    out = []
    for name in sorted(by, key=filter_order):
        rows = by[name]
        best = []
        for t in targets:
            ok = [r for r in rows if r.recall >= t]
            best.append(fastest(ok) if ok else None)
        out.append((name, float(np.mean([r.filter_selectivity or 0.0 for r in rows])), best))
    return out


def stream_summary(records: list[Record], mode: str) -> list[dict]:
    """Per backend/build of one runbook's rows: the first and last search step (recall, QPS), the median items/s
    of its inserts, the index size at the end, the rebuild (recall, QPS), and the first failure."""
    out = []
    for group, members in groups_of([r for r in records if r.stream_runbook], by_build=True).items():
        members = sorted(members, key=lambda r: r.stream_step or 0)
        search = [r for r in members if r.stream_op == "search" and r.mode == mode and r.status == "ok"]
        rebuild = [r for r in members if r.stream_op == "rebuild" and r.mode == mode and r.status == "ok"]
        inserts = [r.items_per_s for r in members if r.stream_op == "insert" and r.status == "ok" and r.items_per_s]
        sizes = [r for r in members if r.stream_op in ("build", "insert", "delete") and r.status == "ok"
                 and r.index_bytes]
        failed = [r for r in members if r.status != "ok"]
        out.append({"group": group, "updates": members[0].stream_updates, "first": search[0] if search else None,
                    "last": search[-1] if search else None, "rebuild": rebuild[0] if rebuild else None,
                    "insert_items_per_s": float(np.median(inserts)) if inserts else None,
                    "index_bytes": sizes[-1].index_bytes if sizes else None,
                    "failed": failed[0] if failed else None})
    return out


def _fitter(fig, size: float):
    from matplotlib.font_manager import FontProperties

    renderer = fig.canvas.get_renderer()
    prop = FontProperties(size=size)
    return lambda room: (lambda s: renderer.get_text_width_height_descent(s, prop, ismath=False)[0] <= room)


def _legend(fig, handles, title: str) -> None:
    """The legend below every panel, in as many columns as fit the figure's width, entries wrapped to it."""
    fits = _fitter(fig, 8)
    width = fig.bbox.width
    em = 8 * fig.dpi / 72
    for h in handles:
        h.set_label(wrap_to(h.get_label(), fits((width - 24) / 2 - 5.2 * em)))
    renderer = fig.canvas.get_renderer()
    from matplotlib.font_manager import FontProperties

    prop = FontProperties(size=8)
    widest = max((renderer.get_text_width_height_descent(line, prop, ismath=False)[0]
                  for h in handles for line in h.get_label().split("\n")), default=0)
    ncols = max(1, min(len(handles), int((width - 24 + 2 * em) // (widest + 4.8 * em))))
    fig.legend(handles=handles, loc="outside lower center", ncols=ncols, fontsize=8, title_fontsize=8,
               title=wrap_to(title, fits(width - 24)), frameon=False)


def filter_order(name: str) -> tuple:
    """Panels from the widest filter to the narrowest: selectivities descending, other filters after, by name."""
    if name.startswith("selectivity="):
        return (0, -float(name.split("=", 1)[1]), name)
    return (1, 0.0, name)


# ---- filtered search: one panel per filter -----------------------------------------------------------------------
def plot_filter_panels(records: list[Record], out: str | os.PathLike, *, mode: str | None = None,
                       k: int | None = None, raw: bool = True, target: float = PANEL_TARGET) -> Path:
    """Recall@k (logit) against QPS (log, one scale for every panel), one panel per filter of ``records``
    (filtered rows whose impl carries the strategy, see ``cli.options.by_strategy``): each backend x strategy's
    Pareto front bold, every configuration faint; each panel's title says its filter, the mean fraction of items
    a query may return, and the fastest configuration reaching recall ``target`` there."""
    check_plot_output(out)
    import matplotlib

    matplotlib.use("Agg")
    with matplotlib.rc_context({"text.parse_math": False}):
        return save_figure(_filter_figure(records, mode=mode, k=k, raw=raw, target=target), out)


def _filter_figure(records: list[Record], *, mode, k, raw, target):
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    chosen, mode, k = select([r for r in records if r.filter_spec], mode, k)
    by_filter: dict[str, list[Record]] = defaultdict(list)
    for r in chosen:
        by_filter[r.filter_spec].append(r)
    names = sorted(by_filter, key=filter_order)
    ncols = 1 if len(names) == 1 else 2
    nrows = math.ceil(len(names) / ncols)
    fig = plt.figure(figsize=(10, 0.6 + 3.4 * nrows), dpi=120, layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, sharey=True)
    top = 1 - 0.5 / (max(r.n_test for r in chosen) * k)
    groups_all = groups_of(chosen)
    handles = {}
    headings = []
    for i, name in enumerate(names):
        ax = axes[i // ncols][i % ncols]
        rows = by_filter[name]
        fronts = pareto_by_group(rows)
        for group, members in groups_of(rows).items():
            color, marker = style(members[0].backend, members[0].impl)
            xs = np.clip([x_value(r) for r in members], 1e-3, top)
            if raw:
                ax.scatter(xs, [r.qps for r in members], color=color, marker=marker, alpha=0.3, s=14, linewidths=0,
                           zorder=2)
            if group in fronts:
                front = fronts[group]
                line, = ax.plot(np.clip([x_value(r) for r in front], 1e-3, top), [r.qps for r in front],
                                color=color, marker=marker, linewidth=1.8, markersize=5, zorder=3)
                handles.setdefault(group, Line2D([], [], color=color, marker=marker, linewidth=1.8, markersize=5,
                                                 label=group))
        _set_scales(ax, [x_value(r) for r in rows], "logit", "recall", top, 0.4 / (max(r.n_test for r in rows) * k))
        ax.grid(True, which="major", alpha=0.3)
        ax.grid(True, which="minor", alpha=0.1)
        reached = [r for r in rows if x_value(r) >= target]
        mean_sel = float(np.mean([r.filter_selectivity or 0.0 for r in rows]))
        heading = f"{name} — a query may return {mean_sel:.3g} of the items (~{mean_sel * rows[0].n_train:,.0f})"
        if reached:
            win = fastest(reached)
            heading += f"\nfastest at recall ≥ {target:g}: {win.backend} [{win.impl}], {win.qps:,.0f} QPS"
        else:
            heading += f"\nnothing reached recall {target:g} (best {max(x_value(r) for r in rows):.3f})"
        headings.append((ax, heading))
        if i % ncols == 0:
            ax.set_ylabel(f"QPS, {mode} mode (log)", fontsize=9)
        ax.set_xlabel(f"recall@{k} (logit)", fontsize=9)
        ax.tick_params(labelleft=True)
    for j in range(len(names), nrows * ncols):  # an odd number of panels: the last cell empty
        axes[j // ncols][j % ncols].set_visible(False)
    first = chosen[0]
    threads = sorted({r.threads for r in chosen})
    thr = ",".join(map(str, threads)) + (" thread" if threads == [1] else " threads")
    heading = (f"Filtered search on {first.dataset_name}: {first.n_train:,} × {first.dim}-d, {first.n_test:,} "
               f"queries, {first.metric}, k={k}, {mode} mode, {thr} — one panel per filter, one QPS scale")
    fig.suptitle(wrap_to(heading, _fitter(fig, 10)(fig.bbox.width - 24)), fontsize=10)
    if raw:
        handles["faint"] = Line2D([], [], color="grey", marker="o", alpha=0.35, linestyle="none", markersize=5,
                                  label="faint: every configuration")
    ordered = [handles[g] for g in groups_all if g in handles] + ([handles["faint"]] if "faint" in handles else [])
    strategies = {r.filter_strategy for r in chosen}
    meaning = [("in-index", "in-index = the library's own filtered search (flat: exact pre-filter)"),
               ("post", "post:F = the top F·k unfiltered, then filtered"),
               ("partitioned", "partitioned = one index per label")]
    _legend(fig, ordered, "Pareto front per backend [library, strategy]: " + "; ".join(
        text for key, text in meaning if any(s.split(":")[0] == key for s in strategies)))
    fig.draw_without_rendering()  # the panels' widths known: their titles wrapped to them
    fits = _fitter(fig, 9)
    for ax, heading in headings:
        ax.set_title(wrap_to(heading, fits(ax.get_window_extent().width)), fontsize=9)
    fig.draw_without_rendering()
    return fig


# ---- a collection that changes: a runbook's steps ------------------------------------------------------------
def plot_stream(records: list[Record], out: str | os.PathLike, *, mode: str | None = None) -> Path:
    """Three panels over a runbook's steps, one line per backend: recall@k at each search step (the rebuild from
    scratch on the final live set a star one step past the last), QPS (log) likewise, and the index's serialized
    size at each build/insert/delete step with the live items (grey, right axis). ``records``: the stream rows
    of one runbook on one dataset (``results --stream``'s); ``mode``: of the search rows [single if stored]."""
    check_plot_output(out)
    import matplotlib

    matplotlib.use("Agg")
    with matplotlib.rc_context({"text.parse_math": False}):
        return save_figure(_stream_figure(records, mode), out)


def _stream_figure(records: list[Record], mode: str | None):
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    rows = [r for r in records if r.stream_runbook]
    if not rows:
        raise InputError("no stream rows to plot; run `ann-bench stream --runbook FILE` first")
    runbooks = sorted({r.stream_runbook for r in rows})
    if len(runbooks) > 1:
        raise InputError(f"stream rows of {len(runbooks)} runbooks ({', '.join(runbooks)}); pick one with --stream "
                         "NAME@DIGEST")
    datasets = dataset_choices(rows)
    if len(datasets) > 1:
        raise InputError(f"stream rows of {len(datasets)} datasets ({', '.join(datasets)}); pick one with --dataset")
    searched = [r for r in rows if r.stream_op in ("search", "rebuild") and r.status == "ok" and r.recall is not None]
    modes = sorted({r.mode for r in searched})
    if mode is None:
        mode = "single" if "single" in modes or not modes else modes[0]
    if searched and mode not in modes:
        raise InputError(f"no stream search rows in mode {mode!r}; stored: {', '.join(modes)}")
    ks = sorted({r.k for r in rows})
    if len(ks) > 1:
        raise InputError(f"stream rows hold several k ({', '.join(map(str, ks))}); pick one with -k")
    k = ks[0]
    fig = plt.figure(figsize=(10, 8.6), dpi=120, layout="constrained")
    ax_r, ax_q, ax_m = fig.subplots(3, 1, sharex=True, height_ratios=(1.1, 1, 0.9))
    ax_live = ax_m.twinx()
    groups = groups_of(rows, by_build=True)
    handles = []
    end = max(r.stream_step or 0 for r in rows)
    live_by_step: dict[int, int] = {}
    for slot, (group, members) in enumerate(groups.items()):
        color, marker = style(members[0].backend, members[0].impl)
        nudge = 0.5 * (slot - (len(groups) - 1) / 2) / max(len(groups), 1)  # rebuild stars side by side
        members = sorted(members, key=lambda r: r.stream_step or 0)
        for r in members:
            if r.live_n is not None:
                live_by_step.setdefault(r.stream_step, r.live_n)
        search = [r for r in members if r.stream_op == "search" and r.mode == mode and r.status == "ok"
                  and r.recall is not None]
        rebuild = [r for r in members if r.stream_op == "rebuild" and r.mode == mode and r.status == "ok"
                   and r.recall is not None]
        sizes = [r for r in members if r.stream_op in ("build", "insert", "delete") and r.status == "ok"
                 and r.index_bytes]
        failed = [r for r in members if r.status != "ok"]
        steps = [r.stream_step for r in search]
        ax_r.plot(steps, [r.recall for r in search], color=color, marker=marker, markersize=4, linewidth=1.6)
        ax_q.plot(steps, [r.qps for r in search], color=color, marker=marker, markersize=4, linewidth=1.6)
        ax_m.plot([r.stream_step for r in sizes], [r.index_bytes / 1e6 for r in sizes], color=color, marker=marker,
                  markersize=3, linewidth=1.4, drawstyle="steps-post")
        for r in rebuild:
            ax_r.scatter([r.stream_step + nudge], [r.recall], marker="*", s=140, color=color, edgecolors="black",
                         linewidths=0.6, zorder=5)
            ax_q.scatter([r.stream_step + nudge], [r.qps], marker="*", s=140, color=color, edgecolors="black",
                         linewidths=0.6, zorder=5)
            if r.index_bytes:
                ax_m.scatter([r.stream_step + nudge], [r.index_bytes / 1e6], marker="*", s=110, color=color,
                             edgecolors="black", linewidths=0.6, zorder=5)
        label = f"{group} — updates: {members[0].stream_updates or '-'}"
        if failed:
            first = failed[0]
            label += f"; {first.status} at step {first.stream_step} ({first.stream_op})"
            for ax in (ax_r, ax_q):
                ax.axvline(first.stream_step, color=color, linestyle=":", linewidth=1)
        handles.append(Line2D([], [], color=color, marker=marker, linewidth=1.6, markersize=5, label=label))
    live = sorted(live_by_step.items())
    if live:
        ax_live.plot([s for s, _ in live], [n for _, n in live], color="grey", linestyle="--", linewidth=1.2,
                     drawstyle="steps-post", zorder=1)
        handles.append(Line2D([], [], color="grey", linestyle="--", label="live items (right axis of the last panel)"))
    handles.append(Line2D([], [], color="grey", marker="*", markeredgecolor="black", linestyle="none", markersize=11,
                          label=f"rebuilt from scratch on the final live set (step {end})"))
    recalls = [r.recall for r in rows if r.stream_op in ("search", "rebuild") and r.mode == mode
               and r.status == "ok" and r.recall is not None]
    lo = min(recalls, default=0.9)
    ax_r.set_ylim(max(0.0, lo - 0.1 * (1.02 - lo) - 0.005), 1.0 + 0.05 * (1.0 - lo) + 0.002)
    ax_r.set_ylabel(f"recall@{k} of the live set", fontsize=9)
    log_y_axis(ax_q)
    ax_q.set_ylabel(f"QPS, {mode} mode (log)", fontsize=9)
    ax_m.set_ylabel("index size, MB", fontsize=9)
    ax_live.set_ylabel("live items", fontsize=9, color="grey")
    ax_live.tick_params(axis="y", colors="grey", labelsize=8)
    ax_live.yaxis.set_major_formatter(FuncFormatter(lambda v, _: tick_label(v) if v > 0 else "0"))
    ax_live.set_ylim(bottom=0)
    ax_m.set_ylim(bottom=0)
    ax_m.set_xlabel("runbook step (build, inserts, deletes and searches in order; a star: the rebuild)", fontsize=9)
    ax_m.xaxis.set_major_locator(MaxNLocator(integer=True))
    for ax in (ax_r, ax_q, ax_m):
        ax.grid(True, which="major", alpha=0.3)
        ax.tick_params(labelsize=8)
    first = rows[0]
    threads = sorted({r.threads for r in rows})
    heading = (f"Runbook {first.stream_runbook.split('@')[0]} on {first.dataset_name} ({first.n_train:,} × "
               f"{first.dim}-d, {first.n_test:,} queries, {first.metric}): recall, QPS and size at every step; "
               f"k={k}, {mode} mode, {','.join(map(str, threads))} "
               + ("thread" if threads == [1] else "threads"))
    fig.suptitle(wrap_to(heading, _fitter(fig, 10)(fig.bbox.width - 24)), fontsize=10)
    _legend(fig, handles, "One line per backend and build (search setting as stored); how it follows the changes")
    fig.draw_without_rendering()
    return fig
