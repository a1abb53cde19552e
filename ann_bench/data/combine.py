"""Ensembles: item-aligned VectorSets concatenated column-wise into one (``ann-bench data combine``).

Parts A (n, dA), B (n, dB), ... holding the same items in the same order become E (n, dA + dB + ...):

    E = [sqrt(w_A) * A', sqrt(w_B) * B', ...]

where ``A'`` is A with its rows L2-normalised (``normalize="each"``, the default) or A as it is (``"none"``).
A squared distance or a dot product over E is then the weighted sum of the parts' own: with normalised parts,
w_i is exactly the share of part i (its rows have norm sqrt(w_i)). Train and test are combined alike; exact
ground truth is recomputed; item keys and labels are kept (and checked to agree: parts whose keys or labels
differ do not hold the same items).

Memory: the output's train and test plus one part at a time.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ann_bench.atomic import ensure_writable_dir
from ann_bench.data.vectorset import VectorSet, write_vectorset
from ann_bench.distances import canonical_metric
from ann_bench.errors import InputError
from ann_bench.data.groundtruth import DEFAULT_K
from ann_bench.outputs import check_output

NORMALIZE_MODES = ("each", "none")
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
    return weights


def check_normalize(normalize: str) -> str:
    mode = str(normalize).strip().lower()
    if mode not in NORMALIZE_MODES:
        raise InputError(f"unknown --normalize {normalize!r}; use one of {', '.join(NORMALIZE_MODES)}")
    return mode


def scale_part(V: np.ndarray, weight: float, normalize: bool, what: Callable[[int], str]) -> np.ndarray:
    """``sqrt(weight) * V`` (float32), with the rows of V (b, d) first L2-normalised when ``normalize``; V is
    scaled in place (the caller's buffer). InputError on an all-zero row, which has no direction to normalise
    (``what(row)`` names it)."""
    if normalize:
        norms = np.sqrt(np.einsum("ij,ij->i", V, V, dtype=np.float64))
        zero = np.flatnonzero(norms == 0)
        if len(zero):
            raise InputError(f"{what(int(zero[0]))} is all zeros, which cannot be L2-normalised; drop it, or "
                             "combine with --normalize none")
        V /= norms.astype(np.float32)[:, None]
    if weight != 1.0:
        V *= np.float32(math.sqrt(weight))
    return V


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
                    if split not in kept_keys:
                        kept_keys[split] = (keys, path, attrs.get("keys"))
                    else:
                        ref, ref_path, _ = kept_keys[split]
                        i = _first_difference(ref, keys)
                        if i is not None:
                            raise InputError(f"{split} item {i} is {ref[i]!r} in {str(ref_path)!r} but {keys[i]!r} "
                                             f"in {str(path)!r}; combined sets must hold the same items in the same "
                                             "order (embed them with the same --seed and --test-size)")
                labels = vs.labels(split)
                if labels is not None:
                    labels = np.asarray(labels)
                    if labels.shape != (n,):
                        raise InputError(f"'{split}_labels' of {str(path)!r} has shape {labels.shape} for {n} {split} "
                                         "vectors; one label per vector (check it with `ann-bench data info`)")
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
                            raise InputError(f"{split} item {i} has label {ref[i].item()!r} in {str(ref_path)!r} "
                                             f"but {labels[i].item()!r} in {str(path)!r}: the sets do not hold the "
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
                           lambda row, s=split: f"{s} vector {row} of {str(path)!r}")
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
