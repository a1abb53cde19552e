"""Ensembles: item-aligned VectorSets concatenated column-wise into one (``ann-bench data combine``).

Parts A (n, dA), B (n, dB), ... holding the same items in the same order become E (n, dA + dB + ...):

    E = [sqrt(w_A) * A', sqrt(w_B) * B', ...]

where ``A'`` is A with its rows L2-normalised (``normalize="each"``, the default) or A as it is (``"none"``).
A squared distance or a dot product over E is then the weighted sum of the parts' own: with normalised parts,
w_i is exactly the share of part i (its rows have norm sqrt(w_i)). Train and test are combined alike; exact
ground truth is recomputed; item keys and labels are kept (and checked to agree: parts whose keys or labels
differ do not hold the same items).

Memory: the output's train and test plus one part at a time.

:func:`cross_sets` (``ann-bench data cross``) joins two sets the other way: the base (train) vectors of one and
the queries (test) of another of the same dimension and metric, e.g. text queries against image vectors that
one CLIP model embedded.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ann_bench.atomic import ensure_writable_dir
from ann_bench.data.arrays import MAGNITUDE_MIN, SQUARED_NORM_MAX
from ann_bench.data.vectorset import (VectorSet, first_duplicate, label_names_of, read_checked_labels,
                                      write_vectorset)
from ann_bench.distances import canonical_metric
from ann_bench.errors import InputError
from ann_bench.data.groundtruth import DEFAULT_K
from ann_bench.outputs import check_output

NORMALIZE_MODES = ("each", "none")
FLOAT32_EPS = float(np.finfo(np.float32).eps)
FLOAT32_TINY = 1e-15  # the smallest sqrt(weight): well above float32's smallest normal number (1.2e-38)
FLOAT32_MAX_FACTOR = 1e15  # the largest: a unit row times it keeps squared norms far inside float32
SOURCE = "ann-bench data combine"


def parse_weights(text: str | None) -> list[float] | None:
    """``"1,0.5"`` -> [1.0, 0.5]; None or "" -> None. InputError on a value that is not a number."""
    if text is None or not str(text).strip():
        return None
    out = []
    for raw in str(text).split(","):
        try:
            out.append(float(raw.strip()))
        except ValueError:
            raise InputError(f"--weights {text!r}: {raw.strip()!r} is not a number; give one weight per part, "
                             "comma separated, e.g. --weights 1,0.5") from None
    return out


def check_weights(weights: Sequence[float] | None, n_parts: int, what: str = "part") -> list[float]:
    """One finite weight > 0 per part (all 1 when None), as floats; InputError otherwise."""
    if weights is None:
        return [1.0] * n_parts
    weights = [float(w) for w in weights]
    if len(weights) != n_parts:
        raise InputError(f"--weights has {len(weights)} value{'s' * (len(weights) != 1)} for {n_parts} {what}s; "
                         f"give one weight per {what}, comma separated (e.g. --weights {','.join(['1'] * n_parts)})")
    for i, w in enumerate(weights):
        if not math.isfinite(w) or w <= 0:
            raise InputError(f"weight {i + 1} of --weights is {w!r}; each weight must be a finite number > 0 "
                             f"(it scales {what} {i + 1}'s share of squared distances and dot products)")
    # Each part is multiplied by sqrt(w) in float32: the factor must be a normal float32, and no part's share
    # may fall below float32's rounding of the others' (it would vanish from every distance, silently).
    for i, w in enumerate(weights):
        factor = math.sqrt(w)
        if not FLOAT32_TINY <= factor <= FLOAT32_MAX_FACTOR:
            raise InputError(f"weight {i + 1} of --weights is {w:g}: {what} {i + 1} would be multiplied by "
                             f"sqrt({w:g}) = {factor:.3g}, and its float32 coordinates and squared distances "
                             f"{'underflow' if factor < 1 else 'overflow'}; give weights between "
                             f"{FLOAT32_TINY ** 2:.0e} and {FLOAT32_MAX_FACTOR ** 2:.0e} (only their ratios matter: "
                             "1,0.5 is 2,1)")
    low, high = int(np.argmin(weights)), int(np.argmax(weights))
    if weights[low] / weights[high] < FLOAT32_EPS:
        raise InputError(f"weight {low + 1} of --weights ({weights[low]:g}) is {weights[high] / weights[low]:.3g} times "
                         f"smaller than weight {high + 1} ({weights[high]:g}): {what} {low + 1}'s share of squared "
                         f"distances would be below float32's rounding ({FLOAT32_EPS:.2g}) and vanish from every "
                         f"distance; keep the weights within a factor {1 / FLOAT32_EPS:.2g} of each other (or leave "
                         f"{what} {low + 1} out)")
    return weights


def check_normalize(normalize: str) -> str:
    mode = str(normalize).strip().lower()
    if mode not in NORMALIZE_MODES:
        raise InputError(f"unknown --normalize {normalize!r}; use one of {', '.join(NORMALIZE_MODES)}")
    return mode


def scale_part(V: np.ndarray, weight: float, normalize: bool, what: Callable[[int], str],
               weight_name: str = "the weight") -> np.ndarray:
    """``sqrt(weight) * V`` (float32), with the rows of V (b, d) first L2-normalised when ``normalize``; V is
    scaled in place (the caller's buffer). InputError on an all-zero row, which has no direction to normalise
    (``what(row)`` names it), and when the weight (``weight_name``) makes the part underflow or overflow float32:
    coordinates that were not all zero become all below MAGNITUDE_MIN (the part would vanish from every
    distance), or a row's squared norm overflows float32 distance arithmetic."""
    if normalize:
        norms = np.sqrt(np.einsum("ij,ij->i", V, V, dtype=np.float64))
        zero = np.flatnonzero(norms == 0)
        if len(zero):
            raise InputError(f"{what(int(zero[0]))} is all zeros, which cannot be L2-normalised; drop it, or "
                             "combine with --normalize none")
        V /= norms.astype(np.float32)[:, None]
    if weight != 1.0 and V.size:
        before = float(np.max(np.abs(V)))
        V *= np.float32(math.sqrt(weight))
        after = float(np.max(np.abs(V)))
        if before > 0 and not after >= MAGNITUDE_MIN:
            raise InputError(f"{weight_name} ({weight:g}) scales the part's largest coordinate from {before:.3g} to "
                             f"{after:.3g}, below {MAGNITUDE_MIN:g}: its squared distances underflow float32 and it "
                             "would vanish from every distance; use a larger weight (only the weights' ratios "
                             "matter)")
        if not np.isfinite(after) or after * after * V.shape[1] > SQUARED_NORM_MAX:
            sq = np.einsum("ij,ij->i", V.astype(np.float64), V.astype(np.float64))
            over = np.flatnonzero(~np.isfinite(sq) | (sq > SQUARED_NORM_MAX))
            if over.size:
                raise InputError(f"{weight_name} ({weight:g}) makes {what(int(over[0]))} so long (squared norm "
                                 f"{sq[over[0]]:.3g}) that float32 distance arithmetic overflows (max "
                                 f"{SQUARED_NORM_MAX:.3g}); use a smaller weight (only the weights' ratios matter)")
    return V


def _scalar(x):
    return x.item() if isinstance(x, np.generic) else x


def _first_difference(a: np.ndarray, b: np.ndarray) -> int | None:
    """The first position where the 1-D arrays a and b (same length) differ, or None."""
    numeric = a.dtype.kind in "biuf" and b.dtype.kind in "biuf"
    if not numeric and (a.dtype.kind in "biuf") != (b.dtype.kind in "biuf"):
        return 0  # numbers against strings: not the same labels
    diff = np.flatnonzero(np.asarray(a != b, dtype=bool).reshape(-1))
    return int(diff[0]) if len(diff) else None


def combine_sets(
    paths: Sequence[str | os.PathLike],
    output: str | os.PathLike,
    *,
    weights: Sequence[float] | None = None,
    normalize: str = "each",
    metric: str | None = None,
    k: int = DEFAULT_K,
    progress: Callable[[int], None] | None = None,
    force: bool = False,
) -> Path:
    """Concatenate the item-aligned VectorSets ``paths`` column-wise into a new VectorSet at ``output``.

    weights: one finite weight > 0 per part (default all 1); part i is multiplied by sqrt(w_i), after its rows
    are L2-normalised when ``normalize`` is "each". metric: the output's metric [the parts' common one; asked
    for when they differ]. k: ground-truth depth. ``progress(b)``: called as ground-truth queries finish.
    force: as ``--force`` (replace an existing output that is not a dataset; never an input).
    Raises InputError, before writing anything, when the parts do not hold the same items (counts, keys or
    labels differ), on bad weights or fewer than 2 parts.
    """
    paths = [Path(p).expanduser() for p in paths]
    if len(paths) < 2:
        raise InputError(f"data combine needs at least 2 sets to concatenate, got {len(paths)}")
    normalize = check_normalize(normalize)
    weights = check_weights(weights, len(paths))
    output = check_output(output, "dataset", inputs=paths, force=force)
    ensure_writable_dir(output)  # before the work, not after it

    # Pass 1: shapes, metrics, keys and labels (no vectors read).
    metrics: list[str] = []
    dims: list[int] = []
    counts: tuple[int, int] | None = None
    kept_keys: dict[str, tuple[np.ndarray, Path, str | None]] = {}  # split -> (keys, part, key source)
    kept_labels: dict[str, tuple[np.ndarray, Path, str | None]] = {}  # split -> (labels, part, label names)
    for path in paths:
        with VectorSet(path) as vs:
            if counts is None:
                counts = (vs.n_train, vs.n_test)
            elif (vs.n_train, vs.n_test) != counts:
                raise InputError(f"{str(path)!r} has {vs.n_train:,} train + {vs.n_test:,} test vectors but "
                                 f"{str(paths[0])!r} has {counts[0]:,} + {counts[1]:,}; combined sets must hold "
                                 "the same items in the same order (embed them with the same --seed and --test-size)")
            metrics.append(vs.metric)
            dims.append(vs.dim)
            attrs = vs.attrs
            for split, n in (("train", counts[0]), ("test", counts[1])):
                keys = vs.keys(split)
                if keys is not None:
                    dup = first_duplicate(keys)
                    if dup is not None:
                        raise InputError(f"{split} key {keys[dup[1]]!r} of {str(path)!r} appears twice, at rows "
                                         f"{dup[0]} and {dup[1]}; keys name items and must be unique per split, and "
                                         "the combined set keeps them: re-create that set with unique keys")
                    if split not in kept_keys:
                        kept_keys[split] = (keys, path, attrs.get("keys"))
                    else:
                        ref, ref_path, _ = kept_keys[split]
                        i = _first_difference(ref, keys)
                        if i is not None:
                            raise InputError(f"{split} item {i} is {ref[i]!r} in {str(ref_path)!r} but {keys[i]!r} "
                                             f"in {str(path)!r}; combined sets must hold the same items in the same "
                                             "order (embed them with the same --seed and --test-size)")
                if f"{split}_labels" in vs.file and vs.file[f"{split}_labels"].shape != (n,):
                    raise InputError(f"'{split}_labels' of {str(path)!r} has shape "
                                     f"{vs.file[f'{split}_labels'].shape} for {n} {split} vectors; one label per "
                                     "vector (check it with `ann-bench data info`)")
                labels = read_checked_labels(vs, split)  # missing labels refused; stored strings decoded
                if labels is not None:
                    if split not in kept_labels:
                        kept_labels[split] = (labels, path, attrs.get("label_names"))
                    else:
                        ref, ref_path, ref_names = kept_labels[split]
                        names = attrs.get("label_names")
                        if ref_names is not None and names is not None and ref_names != names:
                            raise InputError(f"the label names of {str(ref_path)!r} and {str(path)!r} differ "
                                             f"({str(ref_names)[:60]} vs {str(names)[:60]}): the sets do not hold "
                                             "the same items")
                        i = _first_difference(ref, labels)
                        if i is not None:
                            raise InputError(f"{split} item {i} has label {_scalar(ref[i])!r} in {str(ref_path)!r} "
                                             f"but {_scalar(labels[i])!r} in {str(path)!r}: the sets do not hold the "
                                             "same items in the same order")
    if metric is not None:
        metric = canonical_metric(metric)
    elif len(set(metrics)) == 1:
        metric = metrics[0]
    else:
        listed = ", ".join(f"{p.name}: {m}" for p, m in zip(paths, metrics))
        raise InputError(f"the sets have different metrics ({listed}); choose the combined set's with --metric")

    # Pass 2: the vectors, one part at a time, into the output's columns.
    n_train, n_test = counts
    train = np.empty((n_train, sum(dims)), dtype=np.float32)
    test = np.empty((n_test, sum(dims)), dtype=np.float32)
    parts: list[dict[str, Any]] = []
    col = 0
    for path, dim, w in zip(paths, dims, weights):
        with VectorSet(path) as vs:
            for split, block in (("train", vs.load_train()), ("test", vs.load_test())):
                dest = (train if split == "train" else test)[:, col : col + dim]
                dest[...] = block
                scale_part(dest, w, normalize == "each",
                           lambda row, s=split: f"{s} vector {row} of {str(path)!r}",
                           weight_name=f"weight {len(parts) + 1} of --weights")
            parts.append({"path": str(path.resolve()), "name": vs.name, "content_hash": vs.content_hash(),
                          "dim": dim, "weight": w})
        col += dim

    attrs: dict[str, Any] = {"source": SOURCE, "parts": parts, "normalize": normalize}
    train_keys = kept_keys.get("train", (None, None, None))
    test_keys = kept_keys.get("test", (None, None, None))
    if train_keys[2] is not None:
        attrs["keys"] = train_keys[2]
    train_labels = kept_labels.get("train", (None, None, None))
    test_labels = kept_labels.get("test", (None, None, None))
    if train_labels[2] is not None:
        attrs["label_names"] = train_labels[2]
    return write_vectorset(output, train, test, metric, train_labels=train_labels[0], test_labels=test_labels[0],
                           train_keys=train_keys[0], test_keys=test_keys[0], attrs=attrs, k=k, progress=progress)


CROSS_SOURCE = "ann-bench data cross"
CROSS_PARTS = ("train", "test", "all")
# The attrs of each source set that say what produced its vectors, kept in the cross set's provenance.
_CROSS_ATTRS = ("model", "model_format", "model_path", "checkpoint_sha256", "modality", "input", "input_kind",
                "source")


def _cross_part(vs: VectorSet, part: str) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """(vectors, keys, labels as names or ints) of ``part`` ("train", "test" or "all" = train then test)."""
    splits = ("train", "test") if part == "all" else (part,)
    names = label_names_of(vs.attrs)
    vectors, keys, labels = [], [], []
    for split in splits:
        vectors.append(vs.load_train() if split == "train" else vs.load_test())
        keys.append(vs.keys(split))
        lab = read_checked_labels(vs, split)
        if lab is not None and names is not None:
            lab = np.array([names[int(i)] for i in lab], dtype=object)
        labels.append(lab)
    X = np.concatenate(vectors) if len(vectors) > 1 else vectors[0]
    K = None if any(k is None for k in keys) else np.concatenate(keys)
    L = None if any(lab is None for lab in labels) else np.concatenate(labels)
    return np.ascontiguousarray(X, dtype=np.float32), K, L


def cross_sets(
    base: str | os.PathLike,
    queries: str | os.PathLike,
    output: str | os.PathLike,
    *,
    base_part: str = "train",
    queries_part: str = "test",
    metric: str | None = None,
    k: int = DEFAULT_K,
    progress: Callable[[int], None] | None = None,
    force: bool = False,
) -> tuple[Path, list[str]]:
    """A VectorSet whose train vectors come from ``base`` and whose test vectors (queries) come from ``queries``:
    a cross-modal set (text queries against image base vectors embedded by one CLIP model, say).

    base_part / queries_part: which vectors of each set ("train", "test", or "all" = train then test). The sets
    must have one dimension; the metric is their common one (or ``metric``). Exact ground truth is recomputed;
    keys are kept per side; labels are kept when both sides have them and they are comparable (both named or
    both integer; named labels are re-encoded over the union of names). Returns (path, warnings).
    """
    base, queries = Path(base).expanduser(), Path(queries).expanduser()
    for name, part in (("--base-part", base_part), ("--queries-part", queries_part)):
        if part not in CROSS_PARTS:
            raise InputError(f"{name} {part!r}: use one of {', '.join(CROSS_PARTS)}")
    output = check_output(output, "dataset", inputs=[base, queries], force=force)
    ensure_writable_dir(output)
    warnings: list[str] = []
    sides = []
    for path, part in ((base, base_part), (queries, queries_part)):
        with VectorSet(path) as vs:
            X, keys, labels = _cross_part(vs, part)
            attrs = vs.attrs
            info = {"path": str(path.resolve()), "name": vs.name, "content_hash": vs.content_hash(), "part": part,
                    "count": int(len(X)), **{a: attrs[a] for a in _CROSS_ATTRS if a in attrs}}
            sides.append((X, keys, labels, vs.metric, vs.dim, info))
    (Xb, kb, lb, mb, db, ib), (Xq, kq, lq, mq, dq, iq) = sides
    if db != dq:
        raise InputError(f"{str(base)!r} is {db}-d but {str(queries)!r} is {dq}-d; base and queries must come from "
                         "one embedding space (embed both with the same model)")
    if metric is not None:
        metric = canonical_metric(metric)
    elif mb != mq:
        raise InputError(f"the sets have different metrics ({base.name}: {mb}, {queries.name}: {mq}); choose the "
                         "cross set's with --metric")
    else:
        metric = mb
    if ib.get("checkpoint_sha256") != iq.get("checkpoint_sha256"):
        warnings.append(f"{base.name} and {queries.name} were not embedded by the same model (checkpoint sha256 "
                        "differs or is missing): their vectors may not share one space")
    for kind, keys, path in (("base", kb, base), ("queries", kq, queries)):
        dup = first_duplicate(keys) if keys is not None else None
        if dup is not None:
            raise InputError(f"the {kind} key {keys[dup[1]]!r} of {str(path)!r} appears twice (rows {dup[0]} and "
                             f"{dup[1]}); keys must be unique")
    train_labels = test_labels = None
    label_names = None
    if lb is not None and lq is not None:
        named = (lb.dtype == object, lq.dtype == object)
        if all(named):
            label_names = sorted(set(lb) | set(lq))
            index = {n: i for i, n in enumerate(label_names)}
            train_labels = np.fromiter((index[x] for x in lb), dtype=np.int32, count=len(lb))
            test_labels = np.fromiter((index[x] for x in lq), dtype=np.int32, count=len(lq))
        elif not any(named):
            train_labels, test_labels = lb.astype(np.int64), lq.astype(np.int64)
        else:
            warnings.append("one set has named labels and the other integer labels; the cross set has no labels")
    elif (lb is None) != (lq is None):
        warnings.append(f"{(queries if lq is None else base).name} has no labels, so the cross set has none")
    attrs: dict[str, Any] = {"source": CROSS_SOURCE, "base_set": ib, "queries_set": iq}
    if label_names is not None:
        attrs["label_names"] = label_names
    path = write_vectorset(output, Xb, Xq, metric, train_labels=train_labels, test_labels=test_labels,
                           train_keys=kb, test_keys=kq, attrs=attrs, k=k, progress=progress)
    return path, warnings
