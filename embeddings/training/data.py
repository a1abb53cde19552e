"""Training data for ``ann-bench train``: a name or a path in, a labelled train/test split out.

``--data`` takes
- ``fashion-mnist``: the Debian package ``dataset-fashion-mnist`` (IDX files under
  ``/usr/share/datasets/fashion-mnist``; 60,000 train / 10,000 test 28x28 images, 10 classes);
- ``digits``: scikit-learn's 1,797 8x8 digits (bundled, no download), pixels 0..16 scaled to 0..255;
- a path :func:`ann_bench.data.inputs.read_input` reads, with labels: an image folder (one subfolder per class),
  an IDX image file with its ``*-labels-idx1`` sibling, a labelled .tsv/.csv of texts (``label`` and
  ``text`` columns by default), or any .npy/IDX file (images or features) with ``labels`` (a .npy or IDX
  labels file, one label per item).

The split is by samples (Fashion-MNIST: its own train/test files; others: a stratified ``test_size`` share,
seeded) or by classes (the first half of the sorted classes train, the rest are unseen test classes, as the
metric-learning benchmarks CUB/Cars/SOP do).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ann_bench.data.catalogue import fashion_mnist_source
from ann_bench.errors import InputError

DATA_NAMES = ("fashion-mnist", "digits")
SPLITS = ("samples", "classes")


@dataclass
class TrainData:
    """A labelled split. ``x_*``: uint8 images (n, H, W[, 3]) or a list of such arrays, a list of str (text), or
    (n, d) float32 (array); ``y_*``: (n,) int64 class codes into ``classes``."""

    name: str
    kind: str  # "image" | "text" | "array"
    x_train: Any = field(repr=False)
    y_train: np.ndarray = field(repr=False)
    x_test: Any = field(repr=False)
    y_test: np.ndarray = field(repr=False)
    classes: list[str]
    split: str
    description: str = ""

    @property
    def train_classes(self) -> np.ndarray:
        return np.unique(self.y_train)


def _take(x: Any, ids: np.ndarray) -> Any:
    if isinstance(x, np.ndarray):
        return x[ids]
    return [x[int(i)] for i in ids]


def _limit(x: Any, y: np.ndarray, limit: int | None, rng: np.random.Generator) -> tuple[Any, np.ndarray]:
    if limit is None or limit >= len(y):
        return x, y
    if limit < 1:
        raise InputError(f"a train/test limit must be >= 1, got {limit}")
    ids = np.sort(rng.permutation(len(y))[:limit])
    return _take(x, ids), y[ids]


def _fashion_mnist() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from ann_bench.data.formats import read_idx

    names = ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
             "t10k-labels-idx1-ubyte.gz"]
    paths = [fashion_mnist_source() / n for n in names]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise InputError(f"Fashion-MNIST not found ({missing[0]} is missing): apt-get install dataset-fashion-mnist, "
                         "or set ANN_BENCH_FASHION_MNIST_DIR to a folder holding its four IDX files")
    xtr, ytr, xte, yte = (read_idx(p) for p in paths)
    return xtr, ytr.astype(np.int64), xte, yte.astype(np.int64)


FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot"]


def _read_path(path: str, label_column: str | None, text_column: str | None,
               labels: str | None = None) -> tuple[str, Any, np.ndarray]:
    from ann_bench.data.inputs import decode_image, read_input

    items = read_input(path, labels=labels, label_column=label_column, text_column=text_column)
    if items.labels is None:
        raise InputError(f"{str(items.path)!r} has no labels; training needs them (an image folder with one "
                         "subfolder per class, an IDX file with its labels sibling, a .tsv/.csv with a label "
                         "column, or --labels FILE (.npy or IDX) for .npy/IDX input)")
    if items.kind == "image":
        data = [decode_image(p) for p in items.data] if items.format == "image-folder" else np.asarray(items.data)
        if isinstance(data, np.ndarray) and data.dtype != np.uint8:
            raise InputError(f"{str(items.path)!r} holds {data.dtype} images; training takes uint8 images")
    elif items.kind == "text":
        data = list(items.data)
    else:
        data = np.asarray(items.data, dtype=np.float32)
    return items.kind, data, np.asarray(items.labels)


def _codes(labels: np.ndarray) -> tuple[np.ndarray, list[str]]:
    values, codes = np.unique(np.asarray(labels).astype(str) if np.asarray(labels).dtype.kind not in "iu"
                              else np.asarray(labels), return_inverse=True)
    return codes.astype(np.int64).reshape(-1), [str(v) for v in values]


def class_split(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(train ids, test ids): items of the first half of the sorted classes train, the rest test (unseen)."""
    classes = np.unique(y)
    if len(classes) < 4:
        raise InputError(f"--split classes needs at least 4 classes (2 to train, 2 unseen to test); the data has "
                         f"{len(classes)}")
    train_classes = classes[: (len(classes) + 1) // 2]
    mask = np.isin(y, train_classes)
    return np.flatnonzero(mask), np.flatnonzero(~mask)


def sample_split(y: np.ndarray, test_size: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train ids, test ids), stratified by class when every class has 2 items or more; sorted."""
    from sklearn.model_selection import train_test_split

    if not 0 < test_size < 1:
        raise InputError(f"--test-size must be a fraction in (0, 1), got {test_size}")
    ids = np.arange(len(y))
    counts = np.unique(y, return_counts=True)[1]
    stratify = y if counts.min() >= 2 and round(test_size * len(y)) >= len(counts) else None
    try:
        tr, te = train_test_split(ids, test_size=test_size, random_state=seed, stratify=stratify)
    except ValueError as exc:
        raise InputError(f"cannot split {len(y)} items with --test-size {test_size}: {exc}") from None
    return np.sort(tr), np.sort(te)


def load_data(data: str, *, split: str = "samples", test_size: float = 0.2, seed: int = 0,
              train_limit: int | None = None, test_limit: int | None = None, label_column: str | None = None,
              text_column: str | None = None, labels: str | None = None) -> TrainData:
    """The split ``data`` names (see the module docstring); InputError for unknown names and unusable files."""
    if split not in SPLITS:
        raise InputError(f"unknown --split {split!r}; choose one of: {', '.join(SPLITS)}")
    rng = np.random.default_rng(seed)
    if labels is not None and (data in DATA_NAMES or not Path(data).expanduser().exists()):
        raise InputError(f"--labels applies to a .npy or IDX file given as --data; {data!r} carries its own labels")
    if data == "fashion-mnist":
        xtr, ytr, xte, yte = _fashion_mnist()
        classes, kind, desc = FASHION_CLASSES, "image", f"Fashion-MNIST ({fashion_mnist_source()})"
        if split == "classes":
            x, y = np.concatenate([xtr, xte]), np.concatenate([ytr, yte])
            tr, te = class_split(y)
            xtr, ytr, xte, yte = x[tr], y[tr], x[te], y[te]
    else:
        if data == "digits":
            from sklearn.datasets import load_digits

            d = load_digits()
            kind, x = "image", np.round(d.images * (255 / 16)).astype(np.uint8)
            y, classes = d.target.astype(np.int64), [str(i) for i in range(10)]
            desc = "scikit-learn digits (8x8)"
        elif Path(data).expanduser().exists():
            kind, x, raw = _read_path(data, label_column, text_column, labels)
            y, classes = _codes(raw)
            desc = str(Path(data).expanduser().resolve())
        else:
            raise InputError(f"unknown --data {data!r}: not one of {', '.join(DATA_NAMES)} nor an existing path "
                             "(an image folder, an IDX file with labels, a labelled .tsv/.csv)")
        if len(np.unique(y)) < 2:
            raise InputError(f"--data {data}: training needs at least 2 classes, found {len(np.unique(y))}")
        tr, te = class_split(y) if split == "classes" else sample_split(y, test_size, seed)
        xtr, ytr, xte, yte = _take(x, tr), y[tr], _take(x, te), y[te]
    xtr, ytr = _limit(xtr, ytr, train_limit, rng)
    xte, yte = _limit(xte, yte, test_limit, rng)
    if len(np.unique(ytr)) < 2:
        raise InputError(f"the training part of --data {data} holds fewer than 2 classes; use more data")
    return TrainData(data, kind, xtr, ytr, xte, yte, classes, split, desc)
