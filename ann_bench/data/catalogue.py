"""The standard sets everyone compares on: ann-benchmarks' catalogue, fetched into the cache directory.

``fetch(name)`` downloads ``<mirror>/<name>.hdf5`` with a progress callback, resuming a partial download
(HTTP Range), checks its sha256 (against the catalogue when it lists one, else against ``<file>.sha256`` when
the mirror serves one), validates the HDF5 (structure, ground truth on a sample) and only then renames it into
place. ann-benchmarks itself publishes no checksums: the sha256 seen at first download is recorded beside the
file (``<name>.hdf5.sha256``) and re-checked whenever the file is used through ``fetch``.

``fashion-mnist-784-euclidean`` is built offline from the Debian package ``dataset-fashion-mnist`` when it is
installed (``/usr/share/datasets/fashion-mnist``): the 60,000 training images are the train set and the 10,000
test images the queries, exactly ann-benchmarks' split, as float32 pixel values, with the class labels.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ann_bench.config import cache_dir
from ann_bench.errors import InputError

MIRROR_ENV = "ANN_BENCH_MIRROR"
DEFAULT_MIRROR = "https://ann-benchmarks.com"
FASHION_MNIST_ENV = "ANN_BENCH_FASHION_MNIST_DIR"  # the documented name
FASHION_MNIST_ENV_OLD = "ANN_BENCH_FASHION_MNIST"  # what `train` read before: still accepted
FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"  # the Debian package dataset-fashion-mnist


@dataclass(frozen=True)
class Entry:
    name: str
    dim: int
    n_train: int
    n_test: int
    metric: str
    size_mb: int  # approximate download size
    sha256: str | None = None  # when known; ann-benchmarks publishes none

    @property
    def filename(self) -> str:
        return f"{self.name}.hdf5"

    @property
    def max_bytes(self) -> int:
        """The most bytes a download of this set may have: ``size_mb`` is approximate, so 10 % more (in MiB) and
        one MiB; a mirror that serves more is stopped there (a wrong or hostile file never fills the disk)."""
        return int(self.size_mb * 1.1 * 2**20) + 2**20


CATALOGUE = {e.name: e for e in [
    Entry("deep-image-96-angular", 96, 9_990_000, 10_000, "angular", 3600),
    Entry("fashion-mnist-784-euclidean", 784, 60_000, 10_000, "euclidean", 217),
    Entry("gist-960-euclidean", 960, 1_000_000, 1_000, "euclidean", 3600),
    Entry("glove-25-angular", 25, 1_183_514, 10_000, "angular", 121),
    Entry("glove-50-angular", 50, 1_183_514, 10_000, "angular", 235),
    Entry("glove-100-angular", 100, 1_183_514, 10_000, "angular", 463),
    Entry("glove-200-angular", 200, 1_183_514, 10_000, "angular", 918),
    Entry("mnist-784-euclidean", 784, 60_000, 10_000, "euclidean", 217),
    Entry("nytimes-256-angular", 256, 290_000, 10_000, "angular", 301),
    Entry("sift-128-euclidean", 128, 1_000_000, 10_000, "euclidean", 501),
    # Built offline from Debian packages and packaged models (ann_bench.data.realsets), never downloaded:
    Entry("wordnet-minilm-384-angular", 384, 107_659, 10_000, "angular", 0),
    Entry("fashion-mnist-cnn-50-angular", 50, 60_000, 10_000, "angular", 0),
]}


def entry(name: str) -> Entry:
    if name not in CATALOGUE:
        raise InputError(f"unknown dataset {name!r}; the catalogue has {', '.join(CATALOGUE)} "
                         "(`ann-bench data list`)")
    return CATALOGUE[name]


def datasets_dir() -> Path:
    return cache_dir() / "datasets"


def cached_path(name: str) -> Path:
    return datasets_dir() / entry(name).filename


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def fashion_mnist_source() -> Path:
    """The folder of the four Fashion-MNIST IDX files: ``$ANN_BENCH_FASHION_MNIST_DIR`` (or the older
    ``$ANN_BENCH_FASHION_MNIST``), else the Debian package's folder. One place for `data fetch` and `train`."""
    return Path(os.environ.get(FASHION_MNIST_ENV) or os.environ.get(FASHION_MNIST_ENV_OLD) or FASHION_MNIST_DIR)


def fashion_mnist_dir() -> Path | None:
    """Where the Debian package's IDX files are, or None if it is not installed."""
    path = fashion_mnist_source()
    return path if (path / "train-images-idx3-ubyte.gz").exists() else None


def fashion_mnist_missing() -> str:
    """Why the Fashion-MNIST IDX files were not found and how to get them: the clause that follows "built
    offline from the Debian package dataset-fashion-mnist, " in one error line."""
    for env in (FASHION_MNIST_ENV, FASHION_MNIST_ENV_OLD):
        if os.environ.get(env):
            return (f"but ${env} names {os.environ[env]!r}, which holds no train-images-idx3-ubyte.gz: point it at "
                    "the folder of Fashion-MNIST's four IDX files, or unset it to use the package "
                    "(apt-get install dataset-fashion-mnist)")
    return (f"which is not installed (no IDX files in {FASHION_MNIST_DIR!r}): apt-get install dataset-fashion-mnist, "
            f"or set ${FASHION_MNIST_ENV} to a folder of its four IDX files")


# Catalogue sets built offline from a Debian package -> the package.
DEBIAN_PACKAGES = {
    "fashion-mnist-784-euclidean": "dataset-fashion-mnist",  # else downloaded from ann-benchmarks
    "fashion-mnist-cnn-50-angular": "dataset-fashion-mnist",
    "wordnet-minilm-384-angular": "wordnet-base",
}


def package_installed(name: str) -> bool:
    """Whether the Debian package (or the folder its variable names) that set ``name`` is built from is here."""
    if DEBIAN_PACKAGES.get(name) == "dataset-fashion-mnist":
        return fashion_mnist_dir() is not None
    if DEBIAN_PACKAGES.get(name) == "wordnet-base":
        from ann_bench.data.realsets import WORDNET_FILES, wordnet_dir

        return all((wordnet_dir() / f).is_file() for f in WORDNET_FILES.values())
    return False


def build_fashion_mnist(out: Path, source: Path, progress: Callable[[int], None] | None = None) -> Path:
    """The ann-benchmarks fashion-mnist-784-euclidean set from the four IDX files in ``source``."""
    from ann_bench.data.vectorset import write_vectorset
    from ann_bench.data.formats import read_idx

    def images(name):
        return read_idx(source / f"{name}-images-idx3-ubyte.gz").reshape(-1, 784).astype(np.float32)

    train, test = images("train"), images("t10k")
    train_labels = read_idx(source / "train-labels-idx1-ubyte.gz").astype(np.int32)
    test_labels = read_idx(source / "t10k-labels-idx1-ubyte.gz").astype(np.int32)
    return write_vectorset(out, train, test, "euclidean", train_labels=train_labels, test_labels=test_labels,
                           train_keys=[str(i) for i in range(len(train))], test_keys=[str(i) for i in range(len(test))],
                           attrs={"name": "fashion-mnist-784-euclidean",
                                  "source": f"Fashion-MNIST IDX files in {source} (ann-benchmarks split)"},
                           progress=progress)


def fetch(name: str, mirror: str | None = None, force: bool = False,
          progress: Callable[[int, int | None], None] | None = None,
          gt_progress: Callable[[int], None] | None = None) -> Path:
    """The path of catalogue set ``name`` in the cache, fetching (or building) it first if needed.

    ``progress(done_bytes, total_bytes)`` is called as the download goes.
    """
    e = entry(name)
    out = cached_path(name)
    out.parent.mkdir(parents=True, exist_ok=True)
    record = out.with_name(out.name + ".sha256")
    if out.exists() and not force:
        if record.exists() and sha256_file(out) != record.read_text().split()[0]:
            raise InputError(f"{str(out)!r} no longer matches the sha256 recorded when it was fetched; "
                             "fetch it again with --force")
        return out
    if name == "fashion-mnist-784-euclidean" and mirror is None and fashion_mnist_dir() is not None:
        return build_fashion_mnist(out, fashion_mnist_dir(), progress=gt_progress)
    from ann_bench.data.realsets import REAL_SETS, build

    if name in REAL_SETS:
        if mirror is not None:
            raise InputError(f"{name} is built offline from Debian packages, not downloaded: drop --mirror")
        return build(name, out, progress=gt_progress)
    base = check_mirror(mirror or os.environ.get(MIRROR_ENV) or DEFAULT_MIRROR)
    url = f"{base}/{e.filename}"
    part = out.with_name(out.name + ".part")
    try:
        _download(url, part, progress, limit=e.max_bytes, what=f"{e.filename} (about {e.size_mb:,} MB)")
    except InputError as exc:
        if name != "fashion-mnist-784-euclidean" or mirror is not None:
            raise
        # Without the Debian package the download is only the fallback: name the package first.
        raise InputError(f"{name} is built offline from the Debian package dataset-fashion-mnist, "
                         f"{fashion_mnist_missing()}; downloading it instead failed: {exc}") from None
    expected = e.sha256 or _remote_sha256(url)
    actual = sha256_file(part)
    if expected is not None and actual != expected:
        part.unlink()
        raise InputError(f"checksum mismatch for {url}: sha256 {actual[:16]}… != expected {expected[:16]}…; "
                         "the partial file was removed; try again or another --mirror")
    _check_downloaded(part, e)
    os.replace(part, out)
    record.write_text(f"{actual}  {e.filename}\n")
    return out


def check_mirror(base: str) -> str:
    """``base`` without a trailing slash; InputError unless it is an http(s):// URL with a host or a file:// URL."""
    import urllib.parse

    parsed = urllib.parse.urlsplit(str(base))
    ok = (parsed.scheme in ("http", "https") and parsed.netloc) or (parsed.scheme == "file" and parsed.path)
    try:
        parsed.port  # raises ValueError on a malformed port
    except ValueError:
        ok = False
    if not ok:
        raise InputError(f"malformed mirror URL {base!r}: use http://HOST/PATH, https://HOST/PATH or "
                         f"file:///FOLDER (--mirror or ${MIRROR_ENV})")
    return str(base).rstrip("/")


def _too_large(url: str, part: Path, size: str, limit: int, what: str) -> InputError:
    with contextlib.suppress(OSError):
        part.unlink()
    return InputError(f"the mirror's file {url} is larger than the catalogue says: {size} bytes, but "
                      f"{what} allows at most {limit:,} bytes; stopped, and the partial download was removed: "
                      "check the mirror (--mirror or $" + MIRROR_ENV + ")")


def _download(url: str, part: Path, progress, limit: int | None = None, what: str = "the catalogue") -> None:
    """Download url into part, resuming from part's current size when the server honours Range; never more
    than ``limit`` bytes in all (the catalogue's size): beyond it the partial file is removed, InputError."""
    done = part.stat().st_size if part.exists() else 0
    if limit is not None and done > limit:
        raise _too_large(url, part, f"a partial download of {done:,}", limit, what)
    request = urllib.request.Request(url, headers={"Range": f"bytes={done}-"} if done else {})
    try:
        response = urllib.request.urlopen(request, timeout=60)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and done:  # already complete
            return
        raise InputError(f"cannot download {url}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise InputError(f"cannot download {url}: {reason}; no network? set --mirror or ${MIRROR_ENV} "
                         "to a reachable copy") from None
    with response:
        if done and response.status != 206:  # the server ignored Range: start again
            done = 0
        length = response.headers.get("Content-Length")
        total = done + int(length) if length is not None and length.isdigit() else None
        if limit is not None and total is not None and total > limit:
            raise _too_large(url, part, f"{total:,}", limit, what)
        with open(part, "ab" if done else "wb") as fh:
            while True:
                if limit is not None and done > limit:
                    break
                try:
                    block = response.read(min(1 << 20, limit + 1 - done) if limit is not None else 1 << 20)
                except (OSError, urllib.error.URLError, http.client.HTTPException) as exc:
                    raise InputError(f"download of {url} interrupted at {done:,} bytes ({exc}); run the same "
                                     "command again to resume") from None
                if not block:
                    break
                fh.write(block)
                done += len(block)
                if progress is not None:
                    progress(done, total)
    if limit is not None and done > limit:
        raise _too_large(url, part, f"more than {limit:,}", limit, what)
    if total is not None and done < total:
        raise InputError(f"download of {url} interrupted at {done:,} of {total:,} bytes; run the same command "
                         "again to resume")


def _remote_sha256(url: str) -> str | None:
    with contextlib.suppress(urllib.error.URLError, OSError, ValueError, IndexError):
        with urllib.request.urlopen(url + ".sha256", timeout=30) as response:
            return response.read(4096).decode().split()[0].lower()  # a hash and a name: never more
    return None


def _check_downloaded(path: Path, e: Entry) -> None:
    from ann_bench.data.vectorset import VectorSet, validate

    try:
        with VectorSet(path) as vs:
            verdict = validate(vs, check_groundtruth_sample=5)
            found = (vs.n_train, vs.n_test, vs.dim, vs.metric)
    except InputError as exc:
        path.unlink()
        raise InputError(f"the downloaded {e.filename} is not a valid VectorSet ({exc}); removed") from None
    expected = (e.n_train, e.n_test, e.dim, e.metric)
    if not verdict.ok or found != expected:
        path.unlink()
        problem = verdict.problems[0] if verdict.problems else (
            f"expected {e.n_train:,} train + {e.n_test:,} test vectors, {e.dim}-d, {e.metric}; got "
            f"{found[0]:,} + {found[1]:,}, {found[2]}-d, {found[3]}")
        raise InputError(f"the downloaded {e.filename} is not what the catalogue describes: {problem}; removed")


def listing() -> list[dict]:
    """The catalogue with what is cached, for `ann-bench data list`."""
    rows = []
    for e in CATALOGUE.values():
        path = datasets_dir() / e.filename
        rows.append({"name": e.name, "dimension": e.dim, "train": e.n_train, "test": e.n_test, "metric": e.metric,
                     "download_mb": e.size_mb, "cached": path.exists(), "path": str(path) if path.exists() else "",
                     "offline_build": package_installed(e.name),
                     "debian_package": DEBIAN_PACKAGES.get(e.name)})
    return rows
