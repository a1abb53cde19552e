"""Filtered search: each query may only return items of an allowed subset ("the nearest items of this category").

A filter (``run --filter SPEC``) gives every query an allowed subset of the base items:

- ``label``: the query's own label (its test label; the base items of that label);
- ``label:other``: another label than its own, drawn per query from the labels of the set (seeded);
- ``selectivity=S``: a seeded random subset of round(S * n) items; the queries are spread over
  :data:`SYNTH_GROUPS` such subsets (query i uses subset i mod 16), so that neighbouring queries differ;
- ``NAME in V1,V2``, ``NAME<X`` (also ``<=``, ``>``, ``>=``, ``=``, ``!=``): the items whose attribute NAME (a
  numeric column stored with the set, ``data import --attributes``) matches; the same subset for every query.

Queries that share a subset form a *group*: a group's subset is one bitmap (bit i of byte i // 8, least
significant bit first: faiss's ``IDSelectorBitmap`` layout), searched with one library call per group in batch
mode. The exact filtered ground truth is computed per group at BLAS speed (:func:`exact_knn` on the allowed rows)
and cached in the cache dir, keyed by the set's content hash, the filter and k.

Strategies, each measured as its own configuration (the row's ``strategy``):

- ``in-index``: the library's own filtered search, where it has one (:meth:`Index.filtered_query`: faiss
  ``SearchParameters(sel=IDSelectorBitmap)`` for flat, IVF, IVF-PQ and HNSW; hnswlib's ``filter`` callable).
  ``flat`` with ``in-index`` is the pre-filter baseline: an exact scan of the allowed items only;
- ``post:F``: the unfiltered search for F * k neighbours, then the first k allowed ones kept (the mask check is
  timed: a user pays it); fewer than k allowed among them leave -1 / inf, and recall says so;
- ``partitioned``: one index of the same backend and build per category (each label, or the one subset of an
  attribute filter), each query searched in its category's index; the row's build time and index size are the
  partitions' (built in the worker after the main index, each timed). Not for ``selectivity=S``, whose random
  subsets are no categories anyone would partition by.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ann_bench.errors import InputError

SYNTH_GROUPS = 16
POST_FACTORS = (2, 8, 32)  # post:F swept by default
STRATEGIES = ("in-index", "post", "partitioned")


@dataclass
class Filter:
    """One filter over a set: ``name`` (as stored in a row's ``filter``), the groups' bitmaps (G, ceil(n / 8))
    and sizes, and each query's group."""

    name: str
    n: int
    bitmaps: np.ndarray  # (G, ceil(n / 8)) uint8
    sizes: np.ndarray  # (G,) allowed items per group
    query_group: np.ndarray  # (nq,) int

    @property
    def selectivity(self) -> float:
        """The mean over queries of the allowed fraction of the base."""
        return float(self.sizes[self.query_group].mean() / self.n)

    def allowed_ids(self, group: int) -> np.ndarray:
        return np.flatnonzero(np.unpackbits(self.bitmaps[group], count=self.n, bitorder="little"))

    def allows(self, groups: np.ndarray, ids: np.ndarray) -> np.ndarray:
        """Whether item ``ids`` is allowed in group ``groups`` (broadcast together; ids >= 0), read from the
        bitmaps (never an (nq, n) mask)."""
        return ((self.bitmaps[groups, ids >> 3] >> (ids & 7).astype(np.uint8)) & 1).astype(bool)

    def groups(self) -> list[tuple[int, np.ndarray]]:
        """(group, query rows of that group), for every group with a query."""
        return [(int(g), np.flatnonzero(self.query_group == g)) for g in np.unique(self.query_group)]

    def digest(self) -> str:
        h = hashlib.sha256(self.name.encode())
        h.update(self.bitmaps.tobytes())
        h.update(np.ascontiguousarray(self.query_group, dtype=np.int64).tobytes())
        return h.hexdigest()[:20]


_SPEC = re.compile(r"^(label(?::other)?|selectivity=([0-9.eE+-]+(?:,[0-9.eE+-]+)*))$")
_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_ATTR_IN = re.compile(rf"^([A-Za-z_]\w*)\s+in\s+({_NUMBER}(?:\s*,\s*{_NUMBER})*)$")
_ATTR_CMP = re.compile(rf"^([A-Za-z_]\w*)\s*(<=|>=|!=|==|<|>|=)\s*({_NUMBER})$")


def _attribute_filter(text: str) -> str | None:
    """The canonical name of an attribute filter ("tag in 3,7", "price<20"), or None when ``text`` is not one."""
    if m := _ATTR_IN.match(text):
        values = [_number(v) for v in m.group(2).split(",")]
        return f"{m.group(1)} in {','.join(values)}"
    if m := _ATTR_CMP.match(text):
        op = "=" if m.group(2) == "==" else m.group(2)
        return f"{m.group(1)}{op}{_number(m.group(3))}"
    return None


def _number(text: str) -> str:
    value = float(text.strip())
    return str(int(value)) if value.is_integer() and abs(value) < 2**53 else repr(value)


def parse_filters(specs: tuple[str, ...] | list[str]) -> list[str]:
    """``--filter`` values -> one name per filter (``selectivity=0.01,0.1`` is two); InputError naming the valid
    forms."""
    names: list[str] = []
    for spec in specs:
        text = spec.strip()
        m = _SPEC.match(text)
        if not m:
            attribute = _attribute_filter(text)
            if attribute is not None:
                names.append(attribute)
                continue
            raise InputError(f"--filter {spec!r} is not a filter: use label (each query's own label), label:other "
                             "(another label, seeded), selectivity=S[,S...] (a seeded random subset of that "
                             "fraction of the items, 0 < S <= 1), or an item attribute: \"tag in 3,7\", "
                             "\"price<20\" (<, <=, >, >=, =, !=)")
        if m.group(2) is None:
            names.append(text)
            continue
        for part in m.group(2).split(","):
            try:
                s = float(part)
            except ValueError:
                s = float("nan")
            if not 0.0 < s <= 1.0:
                raise InputError(f"--filter selectivity {part!r} must be a fraction in (0, 1], e.g. 0.01")
            names.append(f"selectivity={s:g}")
    return list(dict.fromkeys(names))


def parse_strategies(specs: tuple[str, ...] | list[str]) -> list[str]:
    """``--filter-strategy`` values (``in-index``, ``post`` for the default factors, ``post:4``) -> strategy
    names; default: in-index and post at :data:`POST_FACTORS`."""
    out: list[str] = []
    for spec in specs or ("in-index", "post"):
        for part in filter(None, (p.strip() for p in spec.split(","))):
            if part in ("in-index", "partitioned"):
                out.append(part)
            elif part == "post":
                out += [f"post:{f}" for f in POST_FACTORS]
            elif (m := re.fullmatch(r"post:(\d+)", part)) and 1 <= int(m.group(1)) <= 1024:
                out.append(f"post:{int(m.group(1))}")
            else:
                raise InputError(f"--filter-strategy {part!r}: use in-index, partitioned, post (factors "
                                 f"{', '.join(map(str, POST_FACTORS))}) or post:F with 1 <= F <= 1024")
    return list(dict.fromkeys(out))


def post_factor(strategy: str) -> int | None:
    return int(strategy.split(":")[1]) if strategy.startswith("post:") else None


def make_filter(name: str, n: int, nq: int, k: int, train_labels: np.ndarray | None,
                test_labels: np.ndarray | None, seed: int, attribute=None) -> Filter:
    """The filter ``name`` (from :func:`parse_filters`) over n base items and nq queries. InputError when it needs
    labels the set lacks, or leaves some query fewer than k allowed items. ``attribute(name)``: the base items'
    attribute column (``VectorSet.attribute``), for attribute filters."""
    rng = np.random.default_rng([seed, 0x46494C54])  # "FILT": independent of the builds' seed streams
    nbytes = (n + 7) // 8
    m = c = None
    if not _SPEC.match(name):  # label, label:other and selectivity=S first: those names are reserved
        m = _ATTR_IN.match(name)
        c = None if m else _ATTR_CMP.match(name)
    if m or c:
        column_name = (m or c).group(1)
        if attribute is None:
            raise InputError(f"--filter {name!r} filters on the item attribute {column_name!r}, and this set has "
                             "no attributes: import them with `ann-bench data import --attributes FILE`")
        column = np.asarray(attribute(column_name))
        if m:
            mask = np.isin(column, [float(v) for v in m.group(2).split(",")])
        else:
            value, op = float(c.group(3)), c.group(2)
            mask = {"<": column < value, "<=": column <= value, ">": column > value, ">=": column >= value,
                    "=": column == value, "!=": column != value}[op]
        masks = mask[None, :]
        query_group = np.zeros(nq, dtype=np.int64)
    elif name.startswith("label"):
        if train_labels is None or test_labels is None:
            raise InputError(f"--filter {name} needs labels, and this set has none: import them with "
                             "`ann-bench data import --labels`, or use --filter selectivity=S")
        classes, train_codes = np.unique(train_labels, return_inverse=True)
        lookup = {c.item() if hasattr(c, "item") else c: i for i, c in enumerate(classes)}
        own = np.array([lookup.get(v.item() if hasattr(v, "item") else v, -1) for v in test_labels])
        if name == "label":
            missing = np.flatnonzero(own < 0)
            if missing.size:
                raise InputError(f"--filter label: query {int(missing[0])}'s label {test_labels[missing[0]]!r} has "
                                 "no base item, so it has nothing to find; use --filter label:other or selectivity")
            query_group = own
        else:
            if len(classes) < 2:
                raise InputError("--filter label:other needs at least two labels; this set has one")
            shift = rng.integers(1, len(classes), size=nq)  # never 0: always another label
            query_group = (np.where(own < 0, 0, own) + shift) % len(classes)
        masks = np.zeros((len(classes), n), dtype=bool)
        masks[train_codes, np.arange(n)] = True
    else:
        s = float(name.split("=")[1])
        size = int(round(s * n))
        groups = min(SYNTH_GROUPS, nq)
        masks = np.zeros((groups, n), dtype=bool)
        for g in range(groups):
            masks[g, rng.choice(n, size=size, replace=False)] = True
        query_group = np.arange(nq) % groups
    sizes = masks.sum(axis=1)
    small = [g for g in np.unique(query_group) if sizes[g] < k]
    if small:
        g = small[0]
        raise InputError(f"--filter {name} leaves {int(sizes[g])} allowed item(s) for some queries, fewer than "
                         f"k={k}: recall@{k} would be undefined; use a filter that allows more items, or a smaller -k")
    bitmaps = np.packbits(masks, axis=1, bitorder="little")
    assert bitmaps.shape == (len(masks), nbytes)
    return Filter(name, n, bitmaps, sizes, np.asarray(query_group, dtype=np.int64))


def filtered_groundtruth(X: np.ndarray, Q: np.ndarray, metric: str, flt: Filter, k: int,
                         cache: Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Exact (D, I) (nq, k) of each query among its group's allowed items, nearest first (ties by id), from the
    cache when there (``cache``: a folder; the file is named by the filter's digest and k)."""
    from ann_bench.data.groundtruth import exact_knn

    path = None
    if cache is not None:
        path = cache / f"{flt.digest()}-k{k}.npz"
        if path.exists():
            with np.load(path) as z:
                if z["I"].shape == (Q.shape[0], k):
                    return z["D"], z["I"]
    D = np.full((Q.shape[0], k), np.inf)
    I = np.full((Q.shape[0], k), -1, dtype=np.int64)
    for g, rows in flt.groups():
        ids = flt.allowed_ids(g)
        Dg, Ig = exact_knn(X[ids], Q[rows], metric, k)
        D[rows] = Dg
        I[rows] = np.where(Ig >= 0, ids[np.maximum(Ig, 0)], -1)
    if path is not None:
        from ann_bench.atomic import atomic_path

        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path, ".npz") as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, D=D, I=I, meta=json.dumps({"filter": flt.name, "k": k}))
    return D, I


def check_allowed(I: np.ndarray, flt: Filter) -> int:
    """How many returned ids (not -1) are outside their query's allowed subset: a filtered search that returns
    one is wrong, not approximate."""
    valid = I >= 0
    return int((valid & ~flt.allows(flt.query_group[:, None], np.where(valid, I, 0))).sum())


# ---- measuring (in the worker) -------------------------------------------------------------------------------
@dataclass
class FilteredCase:
    """One filter as the worker measures it: the filter and its exact filtered ground truth (nq, k)."""

    flt: Filter
    gt_D: np.ndarray
    gt_I: np.ndarray


@dataclass
class FilteredPlan:
    """The worker's plan for ``run --filter`` (see :attr:`BuildJob.plan`): every search setting x filter x strategy x
    mode on the built index, each announced (``pending``) and then reported as a row whose ``filter_spec`` and
    ``filter_strategy`` say what it measured; ``done`` holds those already in the store (skipped)."""

    searches: list[dict]
    modes: tuple[str, ...]
    cases: list[FilteredCase]
    strategies: list[str]
    done: frozenset = frozenset()  # (canon search, mode, filter name, strategy)

    def execute(self, job, cls, index, X: np.ndarray, Q: np.ndarray, info: dict, emit) -> None:
        from ann_bench.bench.results import canon_params
        from ann_bench.bench.worker import accuracy, error_text

        for case in self.cases:
            flt = case.flt
            groups = [(g, rows, np.ascontiguousarray(Q[rows])) for g, rows in flt.groups()]  # outside timing
            true_D = _true_distances(job.metric, Q, X, case.gt_I)
            parts: dict | None = None  # per-category indices, built at the first partitioned row that needs them
            for search in self.searches:
                for strategy in self.strategies:
                    for mode in self.modes:
                        if (canon_params(search), mode, flt.name, strategy) in self.done:
                            continue
                        emit("pending", search, mode)
                        i = len(job.pending)
                        job.pending.append((search, mode))
                        if strategy == "in-index" and not cls.filter_support:
                            emit("skipped", i, f"{cls.label()} has no filtered search of its own; post-filtering "
                                               "(strategy post:F) is measured instead")
                            continue
                        if strategy == "partitioned" and flt.name.startswith("selectivity="):
                            emit("skipped", i, "partitioned indices are per category (a label, an attribute "
                                               "filter), not per random subset")
                            continue
                        try:
                            extra: dict = {}
                            if strategy == "partitioned":
                                if parts is None:
                                    parts = build_partitions(cls, job, X, flt, groups)
                                extra = parts["figures"]
                                for part, _ in parts["indices"].values():
                                    part.set_search_params(**search)
                            index.set_search_params(**search)
                            figures, I = measure_filtered(index, Q, groups, flt, job.k, mode, strategy, job.runs,
                                                          parts["indices"] if extra else None)
                            figures.update(extra)
                            outside = check_allowed(I, flt)
                            if outside:
                                raise ValueError(f"{outside} returned id(s) are outside their query's filter "
                                                 f"{flt.name}: a filtered search may not return them")
                            figures.update(accuracy(job.metric, Q, X, I, case.gt_D, case.gt_I, job.k, true_D))
                        except Exception as exc:  # a library's failure becomes a failed row; the sweep goes on
                            emit("error", i, error_text(exc))
                            continue
                        figures.update(filter_spec=flt.name, filter_strategy=strategy,
                                       filter_selectivity=round(flt.selectivity, 6))
                        emit("result", i, figures, I)


def _true_distances(metric: str, Q: np.ndarray, X: np.ndarray, gt_I: np.ndarray) -> np.ndarray:
    from ann_bench.distances import distances_to

    return distances_to(metric, Q, X, np.maximum(gt_I, 0))


def build_partitions(cls, job, X: np.ndarray, flt: Filter, groups) -> dict:
    """One index of ``cls`` with ``job``'s build parameters over each queried group's allowed items: {"indices":
    {group: (index, its item ids)}, "figures": build_s (sum of the timed builds), index_bytes (sum)}."""
    import time

    indices, build_s, size = {}, 0.0, 0
    for g, _, _ in groups:
        ids = flt.allowed_ids(g)
        part = cls(job.metric, job.dim, threads=job.build_threads, seed=job.seed, **job.build)
        part.warm_up()
        t0 = time.perf_counter()
        part.build(np.ascontiguousarray(X[ids]))
        build_s += time.perf_counter() - t0
        part.set_threads(job.threads)
        size += int(part.index_bytes())
        indices[g] = (part, ids)
    return {"indices": indices, "figures": {"build_s": build_s, "index_bytes": size}}


def measure_filtered(index, Q: np.ndarray, groups, flt: Filter, k: int, mode: str, strategy: str,
                     runs: int, parts: dict | None = None) -> tuple[dict, np.ndarray]:
    """Time ``runs`` runs of the filtered search of Q by ``strategy``; the best run's figures and its ids (nq, k)
    in the dataset's metric. Batch: one call per group of queries sharing a subset (in-index, partitioned: in
    the group's own index, ``parts[group] = (index, ids)``) or one call for all (post); single: one call per
    query, each timed. Only the library call(s) and, for post-filtering, the mask check and selection are
    timed; distances are converted and partition ids mapped back after the run."""
    import gc
    import time

    from ann_bench.bench.metrics import latency_summary
    from ann_bench.bench.worker import cpu_figures

    nq = Q.shape[0]
    factor = post_factor(strategy)
    perf, cpu = time.perf_counter, time.process_time
    walls, cpus, results = [], [], []
    enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(runs):
            D = np.full((nq, k), np.inf, dtype=np.float64)
            I = np.full((nq, k), -1, dtype=np.int64)
            lat = np.zeros(nq)
            raw: list = []  # (rows, native D, I, index that answered, partition ids or None), converted after the run
            c0, w0 = cpu(), perf()
            if mode == "batch":
                if parts is not None:
                    for g, rows, Qg in groups:
                        part, ids = parts[g]
                        raw.append((rows, *part.query(Qg, k), part, ids))
                elif factor is None:
                    for g, rows, Qg in groups:
                        raw.append((rows, *index.filtered_query(Qg, k, flt.bitmaps[g]), index, None))
                else:
                    raw.append((slice(None), *_keep_allowed(*index.query(Q, factor * k), flt, flt.query_group, k),
                                index, None))
            else:
                for g, rows, Qg in groups:
                    bitmap, group = flt.bitmaps[g], np.array([g])
                    part, part_ids = parts[g] if parts is not None else (index, None)
                    for j, row in enumerate(rows):
                        q = Qg[j : j + 1]
                        t0 = perf()
                        if parts is not None:
                            d, ids = part.query(q, k)
                        elif factor is None:
                            d, ids = index.filtered_query(q, k, bitmap)
                        else:
                            d, ids = _keep_allowed(*index.query(q, factor * k), flt, group, k)
                        lat[row] = perf() - t0
                        raw.append(([row], d, ids, part, part_ids))
            wall = perf() - w0
            for rows, d, ids, answered, part_ids in raw:
                d, ids = answered.convert(d, ids)
                if part_ids is not None:
                    ids = np.where(ids >= 0, part_ids[np.maximum(ids, 0)], -1)
                D[rows], I[rows] = d, ids
            walls.append(wall if mode == "batch" else float(lat.sum()))
            cpus.append(cpu() - c0)
            results.append((D, I, lat))
    finally:
        if enabled:
            gc.enable()
    best = int(np.argmin(walls))
    D, I, lat = results[best]
    if mode == "batch":
        figures = {"qps": nq / walls[best], "search_s": walls[best], "runs": runs}
    else:
        figures = latency_summary(lat)
        figures.update(search_s=walls[best], runs=runs)
    figures.update(cpu_figures(index, walls, cpus, best))
    return figures, np.asarray(I, dtype=np.int64)


def _keep_allowed(D: np.ndarray, I: np.ndarray, flt: Filter, groups: np.ndarray,
                  k: int) -> tuple[np.ndarray, np.ndarray]:
    """The first k allowed of each row of native (D, I) (nq, F*k), row r filtered by group ``groups[r]``; rows
    with fewer are padded with id -1 (``convert`` makes their distance inf)."""
    I = np.asarray(I, dtype=np.int64)
    ok = (I >= 0) & flt.allows(groups[:, None], np.maximum(I, 0))
    order = np.argsort(~ok, axis=1, kind="stable")[:, :k]  # allowed first, in the library's order
    kept_I = np.take_along_axis(I, order, axis=1)
    kept_D = np.take_along_axis(np.asarray(D), order, axis=1)
    valid = np.take_along_axis(ok, order, axis=1)
    kept_I = np.where(valid, kept_I, -1)
    if kept_I.shape[1] < k:
        pad = k - kept_I.shape[1]
        kept_I = np.pad(kept_I, ((0, 0), (0, pad)), constant_values=-1)
        kept_D = np.pad(kept_D, ((0, 0), (0, pad)), constant_values=np.inf)
    return kept_D, kept_I
