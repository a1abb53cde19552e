"""Input readers for ``ann-bench embed``: raw data in, :class:`Items` (batches of one kind, optional labels) out.

Formats, recognised by what the path is:

- a directory: images, one subfolder per class (labels = folder names; nested folders belong to their
  top-level class), or images directly inside it (no labels). Pillow decodes; grey images stay 1 channel,
  everything else becomes RGB. Files of other types are ignored;
- an IDX file (MNIST / Fashion-MNIST format, gzipped or not), recognised by its magic number: 3-D (n, H, W)
  is images, 2-D (n, d) is features. Labels come from the sibling ``*-labels-idx1-ubyte[.gz]`` file when
  there is one, or from ``labels=``;
- ``.npy``: 2-D (n, d) features, or 3-D/4-D uint8 images; labels from ``labels=`` (a 1-D ``.npy`` or IDX);
- ``.csv`` / ``.tsv``: one item a row, with a header; the text column is ``text_column`` (default ``text``,
  else the first column that is not the label column), the label column ``label_column`` (default ``label``
  when there is one);
- any other file: text, one item a line (blank lines are skipped), UTF-8.

Every problem is an InputError naming the file: missing, unreadable, empty, an image that does not decode,
a label column that does not exist, labels of the wrong length.
"""

from __future__ import annotations

import csv
import gzip
import io
import os
import re
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ann_bench.errors import InputError, require
from ann_bench.data.formats import IDX_TYPES, read_idx

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm", ".pbm")
_GZIP_MAGIC = b"\x1f\x8b"


@dataclass
class Items:
    """What an input holds: ``count`` items of ``kind`` ("image" | "text" | "array") and optional labels.

    ``data`` is a list of image paths (decoded batch by batch), a list of str, or an array (n, ...) (which
    may be memory-mapped). ``labels`` is (count,) raw values (int or str) or None.
    """

    path: Path
    format: str  # "image-folder" | "idx" | "npy" | "text" | "csv" | "tsv"
    kind: str
    data: Sequence[Any] | np.ndarray = field(repr=False)
    labels: np.ndarray | None = field(default=None, repr=False)
    label_source: str = ""
    # Item keys (one str per item); None means row numbers. See :meth:`item_keys`.
    keys: list[str] | None = field(default=None, repr=False)
    key_source: str = "row number"

    @property
    def count(self) -> int:
        return len(self.data)

    @property
    def feature_dim(self) -> int | None:
        """d of (n, d) array items; None for images and texts."""
        return int(self.data.shape[1]) if self.kind == "array" else None

    def batches(self, batch_size: int) -> Iterator[Any]:
        """Consecutive batches of at most ``batch_size`` items, in order."""
        for start in range(0, self.count, batch_size):
            stop = min(start + batch_size, self.count)
            if self.format == "image-folder":
                yield [decode_image(p) for p in self.data[start:stop]]
            elif isinstance(self.data, np.ndarray):
                yield np.asarray(self.data[start:stop])
            else:
                yield self.data[start:stop]

    def item_keys(self) -> np.ndarray:
        """One key per item (object array of str): an image's path relative to the folder, a text's line number
        in its file (1-based, as an editor shows it), a table's key column or data row number (1-based), and an
        array's row number (0-based, as numpy indexes it)."""
        out = np.empty(self.count, dtype=object)
        out[:] = self.keys if self.keys is not None else [str(i) for i in range(self.count)]
        return out

    def describe(self, i: int) -> str:
        """Where item i comes from, for error messages."""
        if self.format == "image-folder":
            return f"image {str(self.data[i])!r}"
        if self.format == "text":
            return f"item {i} (non-blank line {i + 1}) of {str(self.path)!r}"
        if self.format in ("csv", "tsv"):
            return f"row {i + 1} of {str(self.path)!r}"
        return f"item {i} of {str(self.path)!r}"


# ---- the dispatcher ---------------------------------------------------------------------------------------
def read_input(path: str | os.PathLike, *, labels: str | os.PathLike | None = None, label_column: str | None = None,
               text_column: str | None = None, key_column: str | None = None) -> Items:
    """Read the input at ``path`` (see the module docstring); ``labels``: a labels file (.npy or IDX) for an
    array/IDX input without labels of its own."""
    path = Path(path).expanduser()
    if not path.exists():
        raise InputError(f"input {str(path)!r} does not exist")
    if not os.access(path, os.R_OK):
        raise InputError(f"input {str(path)!r} is not readable; check its permissions")
    if path.is_dir():
        items = read_image_folder(path)
    elif not path.is_file():
        raise InputError(f"input {str(path)!r} is not a file or a directory")
    elif _is_idx(path):
        items = read_idx_items(path)
    elif path.suffix.lower() == ".npy":
        items = read_npy(path)
    elif path.suffix.lower() in (".csv", ".tsv"):
        items = read_table(path, label_column=label_column, text_column=text_column, key_column=key_column)
    else:
        items = read_text(path)
    if items.count == 0:
        raise InputError(f"input {str(path)!r} holds no items")
    if label_column is not None and items.format not in ("csv", "tsv"):
        raise InputError(f"--label-column applies to .csv/.tsv input; {str(path)!r} is {items.format}")
    if key_column is not None and items.format not in ("csv", "tsv"):
        raise InputError(f"--key-column applies to .csv/.tsv input; {str(path)!r} is {items.format}")
    if labels is not None:
        if items.format in ("image-folder", "csv", "tsv"):
            raise InputError(f"--labels applies to .npy and IDX input; {str(path)!r} ({items.format}) carries its "
                             "labels itself")
        items.labels = read_labels(labels, items.count)
        items.label_source = str(Path(labels).expanduser())
    return items


def read_labels(path: str | os.PathLike, count: int) -> np.ndarray:
    """A 1-D labels array from a ``.npy`` or IDX file, checked to have ``count`` entries."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise InputError(f"labels file {str(path)!r} does not exist")
    arr = read_idx(path) if _is_idx(path) else _load_npy(path)
    if arr.ndim != 1:
        raise InputError(f"labels file {str(path)!r} holds shape {arr.shape}; expected 1-D ({count},)")
    if len(arr) != count:
        raise InputError(f"labels file {str(path)!r} has {len(arr)} labels for {count} items; one label per item")
    return np.asarray(arr)


# ---- images -----------------------------------------------------------------------------------------------
def _images_in(folder: Path, recursive: bool) -> list[Path]:
    files = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in files if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def read_image_folder(root: Path) -> Items:
    """A folder of images with one subfolder per class (labels = folder names), or images directly in it."""
    classes = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    loose = _images_in(root, recursive=False)
    paths: list[Path] = []
    labels: list[str] = []
    for d in classes:
        found = _images_in(d, recursive=True)
        paths += found
        labels += [d.name] * len(found)
    if paths and loose:
        raise InputError(f"{str(root)!r} holds images both in class subfolders and directly inside it "
                         f"(e.g. {loose[0].name!r}); put every image in its class folder")
    if not paths and not loose:
        raise InputError(f"no images under {str(root)!r} (looked for {', '.join(IMAGE_EXTENSIONS)}); an image "
                         "folder holds one subfolder per class")
    if loose:
        return Items(root, "image-folder", "image", loose, keys=_relative(loose, root), key_source="relative path")
    return Items(root, "image-folder", "image", paths, np.array(labels), "folder names",
                 keys=_relative(paths, root), key_source="relative path")


def _relative(paths: list[Path], root: Path) -> list[str]:
    return [p.relative_to(root).as_posix() for p in paths]


def decode_image(path: Path) -> np.ndarray:
    """Decode one image with Pillow: (H, W) uint8 for grey images, (H, W, 3) uint8 otherwise."""
    require("PIL", purpose="reading images")
    from PIL import Image, UnidentifiedImageError

    try:
        bomb = (Image.DecompressionBombError, Image.DecompressionBombWarning)
    except AttributeError:  # pragma: no cover - old Pillow
        bomb = ()
    try:
        with Image.open(path) as im:
            im.load()
            mode = "L" if im.mode in ("1", "L", "LA", "I", "I;16", "F") or (
                im.mode == "P" and _grey_palette(im)) else "RGB"
            if im.mode in ("I", "I;16", "F"):
                arr = np.asarray(im, dtype=np.float64)
                span = arr.max() - arr.min()
                return ((arr - arr.min()) * (255.0 / span if span else 0)).round().astype(np.uint8)
            return np.asarray(im.convert(mode), dtype=np.uint8)
    except bomb as exc:
        raise InputError(f"image {str(path)!r} is too large to decode safely ({exc}); shrink or remove it") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise InputError(f"image {str(path)!r} does not decode: {exc}; fix or remove it") from None


def _grey_palette(im) -> bool:
    palette = im.getpalette() or []
    rgb = np.asarray(palette[: 3 * 256]).reshape(-1, 3)
    return bool(len(rgb)) and bool((rgb == rgb[:, :1]).all())


# ---- IDX --------------------------------------------------------------------------------------------------
def _head(path: Path, n: int = 4) -> bytes:
    with open(path, "rb") as f:
        head = f.read(n)
    if head[:2] == _GZIP_MAGIC:
        try:
            with gzip.open(path, "rb") as f:
                return f.read(n)
        except (OSError, EOFError):
            return b""
    return head


def _is_idx(path: Path) -> bool:
    """IDX magic: two zero bytes, a known type code, a dimension count of 1 to 4."""
    if path.suffix.lower() in (".npy", ".csv", ".tsv", ".txt"):
        return False
    try:
        head = _head(path)
    except OSError:
        return False
    return len(head) == 4 and head[:2] == b"\0\0" and head[2] in IDX_TYPES and 1 <= head[3] <= 4


def idx_labels_path(path: Path) -> Path | None:
    """The labels file beside an MNIST-style images file: ``x-images-idx3-ubyte[.gz]`` -> ``x-labels-idx1-ubyte``
    (with or without .gz), or None."""
    stem = re.sub(r"\.gz$", "", path.name)
    name = re.sub(r"images([.\-_])idx3", r"labels\1idx1", stem)
    if name == stem:
        return None
    for candidate in (path.with_name(name), path.with_name(name + ".gz")):
        if candidate.is_file():
            return candidate
    return None


def read_idx_items(path: Path) -> Items:
    arr = read_idx(path)
    if arr.ndim == 3:
        items = Items(path, "idx", "image", arr if arr.dtype == np.uint8 else arr.astype(np.float32))
    elif arr.ndim == 2:
        items = Items(path, "idx", "array", arr.astype(np.float32))
    else:
        raise InputError(f"IDX file {str(path)!r} holds shape {arr.shape}; expected (n, H, W) images or (n, d) "
                         "features (a 1-D IDX file holds labels: pass it with --labels)")
    sibling = idx_labels_path(path)
    if sibling is not None:
        items.labels = read_labels(sibling, items.count)
        items.label_source = str(sibling)
    return items


# ---- arrays -----------------------------------------------------------------------------------------------
def _load_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as exc:
        raise InputError(f"cannot read {str(path)!r}: {exc} (object arrays are refused; save a numeric "
                         "or string array)") from None
    except (OSError, EOFError, zipfile.BadZipFile) as exc:  # EOFError: an empty or truncated file
        raise InputError(f"cannot read {str(path)!r} as .npy: {str(exc) or type(exc).__name__}") from None


def read_npy(path: Path) -> Items:
    arr = _load_npy(path)
    if not isinstance(arr, np.ndarray):  # an .npz archive under an .npy name
        raise InputError(f"{str(path)!r} is an .npz archive, not an .npy array; save one array with np.save")
    if arr.ndim == 2 and arr.dtype.kind in "fiub":
        return Items(path, "npy", "array", arr)
    if arr.ndim in (3, 4) and arr.dtype == np.uint8:
        if arr.ndim == 4 and arr.shape[3] not in (1, 3, 4):
            raise InputError(f"{str(path)!r} holds images of shape {arr.shape[1:]} with {arr.shape[3]} channels; "
                             "image arrays are (n, H, W) grey or (n, H, W, C) with C = 1 (grey), 3 (RGB) or "
                             "4 (RGBA)")
        return Items(path, "npy", "image", arr)
    raise InputError(f"{str(path)!r} holds a {arr.dtype} array of shape {arr.shape}; expected (n, d) numeric "
                     "features or (n, H, W[, C]) uint8 images")


# ---- text -------------------------------------------------------------------------------------------------
def _read_utf8(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(f"{str(path)!r} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise InputError(f"cannot read {str(path)!r}: {exc.strerror}") from None


def read_text(path: Path) -> Items:
    """One item a line; blank lines skipped."""
    text = _read_utf8(path)
    if "\0" in text[:4096]:
        raise InputError(f"{str(path)!r} looks binary, not text, IDX or .npy; see `ann-bench embed --help` for "
                         "the input formats")
    lines = [line.rstrip("\r") for line in text.split("\n")]
    kept = [(n, line) for n, line in enumerate(lines, start=1) if line.strip()]
    return Items(path, "text", "text", [line for _, line in kept], keys=[str(n) for n, _ in kept],
                 key_source="line number")


def read_table(path: Path, *, label_column: str | None = None, text_column: str | None = None,
               key_column: str | None = None) -> Items:
    """A .csv or .tsv with a header row: texts from ``text_column``, labels from ``label_column``, item keys from
    ``key_column`` (default: a column named ``id``, else the data row number, 1-based)."""
    fmt = path.suffix.lower().lstrip(".")
    reader = csv.reader(io.StringIO(_read_utf8(path), newline=""), delimiter="\t" if fmt == "tsv" else ",")
    try:
        rows = [row for row in reader if row]
    except csv.Error as exc:
        raise InputError(f"{str(path)!r} is not valid {fmt.upper()}: {exc}") from None
    if not rows:
        raise InputError(f"input {str(path)!r} holds no items")
    header = [h.strip() for h in rows[0]]
    if label_column is not None and label_column not in header:
        raise InputError(f"label column {label_column!r} is not in {str(path)!r}; its columns: {', '.join(header)}")
    if text_column is not None and text_column not in header:
        raise InputError(f"text column {text_column!r} is not in {str(path)!r}; its columns: {', '.join(header)}")
    if key_column is not None and key_column not in header:
        raise InputError(f"key column {key_column!r} is not in {str(path)!r}; its columns: {', '.join(header)}")
    if label_column is None and "label" in header:
        label_column = "label"
    if key_column is None and "id" in header and text_column != "id" and label_column != "id":
        key_column = "id"
    if text_column is None:
        others = [h for h in header if h not in (label_column, key_column)]
        if not others:
            raise InputError(f"{str(path)!r} has no text column besides the label column {label_column!r}")
        text_column = "text" if "text" in others else others[0]
    ti = header.index(text_column)
    li = header.index(label_column) if label_column is not None else None
    ki = header.index(key_column) if key_column is not None else None
    texts, labels, keys = [], [], []
    for n, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise InputError(f"line {n} of {str(path)!r} has {len(row)} fields; the header has {len(header)}")
        texts.append(row[ti])
        if li is not None:
            labels.append(row[li].strip())
        keys.append(row[ki].strip() if ki is not None else str(len(keys) + 1))
    return Items(path, fmt, "text", texts, np.array(labels) if li is not None else None,
                 f"column {label_column!r}" if li is not None else "", keys=keys,
                 key_source=f"column {key_column!r}" if ki is not None else "data row number")
