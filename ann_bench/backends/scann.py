"""Google ScaNN: a k-means tree, anisotropic vector quantisation, exact re-ranking (the ``scann`` wheel, no
TensorFlow: its pybind searcher).

The build partitions the vectors with a k-means tree of ``num_leaves`` leaves, encodes each one with
asymmetric hashing (``score_ah``: 4-bit codes of ``dims_per_block``-dimensional blocks, 16 centres a block)
trained with the anisotropic loss of Guo et al. 2020 (``aq_threshold``, ScaNN's
``anisotropic_quantization_threshold``; 0 = off, plain reconstruction loss) and keeps the raw vectors for
exact re-ranking. A query scores the codes in its ``num_leaves_to_search`` nearest leaves and re-ranks the
``reorder`` best of them exactly (ScaNN's ``pre_reorder_num_neighbors``).

- Metrics and native distances (measured with scann 1.4.2): ``euclidean`` -> 'squared_l2', which returns
  squared L2 (square-rooted); ``ip`` -> 'dot_product', which returns the dot product itself, larger nearer
  (negated); ``angular`` -> 'dot_product' on L2-normalised copies (1 - dot). After re-ranking the distances
  are exact.
- Fewer than k results (few leaves searched over few vectors, or ``reorder`` < k) come back as id 0 with a
  NaN distance, not -1: they are turned into -1 / +inf. ScaNN returns only ``reorder`` neighbours when
  ``reorder`` < k, so such searches are skipped by a sweep. ``num_leaves_to_search`` above ``num_leaves`` is
  clamped (skipped too).
- ScaNN refuses more leaves than vectors ("Number of points ... is less than the number of clusters"): checked
  before the build. The k-means tree and the codebooks train on a sample of at most ``train_sample`` vectors.
- Threads: the build trains with ``threads`` (ScaNN's default, 0, would take every core); a batch is searched
  with ``search_batched`` on one thread, with ``search_batched_parallel`` on a pool of ``threads`` otherwise.
  ScaNN has no seed (``seed`` is ignored) and its builds are not deterministic, even on one training thread
  (measured with scann 1.4.2 on 3000 x 16 vectors: builds in separate processes gave different results; builds
  later in one process often repeated that process's first). Searches of one index give the same results on
  any number of threads.
- ``save`` serialises the searcher's directory (asset paths relative) into one uncompressed tar (no times,
  owners or modes: equal indices, equal bytes); ``load`` unpacks it into a temporary directory and opens it
  with the pybind searcher directly, not ``load_searcher``, which would unpickle a ``scann_docids.pkl``.
  ``index_bytes`` is the saved file's size.
- ScaNN's C++ code logs a few lines (``I0000 ...``) to stderr while it builds; they are harmless.
"""

from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from ann_bench.backends.base import Capabilities, Index, Param, SingleQuery, stack_results
from ann_bench.backends.ivf import pow2_lists
from ann_bench.distances import from_inner_product, from_squared_l2, normalized
from ann_bench.errors import InputError

SCANN_METRICS = {"euclidean": "squared_l2", "angular": "dot_product", "ip": "dot_product"}
ASSETS = "scann_assets.pbtxt"


class ScaNN(Index):
    name = "scann"
    impl = "scann"
    requires = ("scann",)
    install_hint = 'pip install -e ".[scann]"'
    description = "k-means tree + anisotropic quantisation + exact re-ranking (Google ScaNN)"
    capabilities = Capabilities(deterministic=False,
                                notes=["ScaNN has no seed; its builds differ from run to run, even on one thread"])
    build_params = (
        Param("num_leaves", int, 1000, "leaves of the k-means tree (at most n)", min=1, max=1 << 22),
        Param("dims_per_block", int, 2, "dimensions per 4-bit code block of the asymmetric hashing",
              min=1, max=1024),
        Param("aq_threshold", float, 0.2, "anisotropic_quantization_threshold of the codebook loss; 0: off",
              min=0.0, max=1.0),
        Param("train_sample", int, 100_000, "vectors sampled to train the tree and the codebooks "
              "(ScaNN's default)", min=16, max=1 << 31),
    )
    search_params = (
        Param("num_leaves_to_search", int, 10, "leaves whose codes are scored per query", min=1, max=1 << 22),
        Param("reorder", int, 100, "best-scored candidates re-ranked exactly (pre_reorder_num_neighbors)",
              min=1, max=1 << 20),
    )
    build_grid = {"num_leaves": [1024], "dims_per_block": [2], "aq_threshold": [0.2]}
    search_grid = {"num_leaves_to_search": [1, 2, 4, 8, 16, 32, 64, 128, 256], "reorder": [20, 50, 100, 250]}
    effort_params = {"num_leaves_to_search": +1, "reorder": +1}
    grid_notes = {"num_leaves": "sqrt(n) and 2*sqrt(n), rounded to powers of two (at most n/39)"}

    def __init__(self, metric: str, dim: int, threads: int = 1, seed: int = 0, **build_params: Any):
        super().__init__(metric, dim, threads, seed, **build_params)
        self.index = None
        self._search = {p.name: p.default for p in self.search_params}  # passed to each search call

    @classmethod
    def default_build_grid(cls, n: int, dim: int) -> dict[str, list]:
        return {**{k: list(v) for k, v in cls.build_grid.items()},
                "num_leaves": sorted({pow2_lists(n, 1), pow2_lists(n, 2)})}

    @classmethod
    def check_data(cls, build: dict[str, Any], n: int, dim: int) -> None:
        if build["num_leaves"] > n:
            raise InputError(f"{cls.label()}: num_leaves={build['num_leaves']} exceeds the {n} vectors; use at "
                             f"most {n} (about sqrt(n) = {pow2_lists(n, 1)} is usual)")
        if build["dims_per_block"] > dim:
            raise InputError(f"{cls.label()}: dims_per_block={build['dims_per_block']} exceeds the dimension "
                             f"{dim}; use at most {dim} (2 is usual)")

    def search_skip_reason(self, search: dict[str, Any], k: int) -> str | None:
        if search["reorder"] < k:
            return f"reorder={search['reorder']} < k={k}: ScaNN returns only {search['reorder']} neighbours"
        if search["num_leaves_to_search"] > self.params["num_leaves"]:
            return (f"num_leaves_to_search={search['num_leaves_to_search']} > num_leaves="
                    f"{self.params['num_leaves']} searches nothing more")
        return None

    # ---- the work -----------------------------------------------------------------------------------
    def _prepare(self, X: np.ndarray) -> np.ndarray:
        if self.metric == "angular":
            return normalized(X)
        return np.ascontiguousarray(X, dtype=np.float32)

    def build(self, X: np.ndarray) -> None:
        from scann import scann_ops_pybind

        X = self._prepare(X)
        if X.ndim != 2 or X.shape[1] != self.dim:
            raise InputError(f"{self.label()}: expected vectors of shape (n, {self.dim}), got {X.shape}")
        p = self.params
        sample = min(p["train_sample"], X.shape[0])
        aq = p["aq_threshold"] if p["aq_threshold"] > 0 else float("nan")  # NaN: ScaNN's "off"
        builder = (
            scann_ops_pybind.builder(X, 10, SCANN_METRICS[self.metric])
            .tree(num_leaves=p["num_leaves"], num_leaves_to_search=min(10, p["num_leaves"]),
                  training_sample_size=sample)
            .score_ah(p["dims_per_block"], anisotropic_quantization_threshold=aq, training_sample_size=sample)
            .reorder(100)
            .set_n_training_threads(self.threads)
        )
        try:
            self.index = builder.build()
        except RuntimeError as exc:  # ScaNN's own words, e.g. too few points for the leaves
            raise InputError(f"{self.label()}: {' '.join(str(exc).split())}") from None
        self.set_threads(self.threads)
        self._built = True

    def _apply_search_params(self, params: dict[str, Any]) -> None:
        self._search = dict(params)

    def set_threads(self, threads: int) -> None:
        super().set_threads(threads)
        if self.index is not None:
            self.index.set_num_threads(self.threads)

    def query(self, Q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        if self.metric == "angular":
            Q = normalized(Q)
        search = self.index.search_batched if self.threads == 1 else self.index.search_batched_parallel
        I, D = search(Q, k, pre_reorder_num_neighbors=self._search["reorder"],
                      leaves_to_search=self._search["num_leaves_to_search"])
        return D, I

    def single_query(self, Q: np.ndarray, k: int):
        """search_batched on each row (one row needs no thread pool); for angular, ``query`` (normalising)."""
        if self.metric == "angular":
            return super().single_query(Q, k)
        return SingleQuery(partial(self.index.search_batched, final_num_neighbors=k,
                                   pre_reorder_num_neighbors=self._search["reorder"],
                                   leaves_to_search=self._search["num_leaves_to_search"]),
                           partial(stack_results, swap=True))

    def convert(self, D: np.ndarray, I: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        missing = np.isnan(D)  # ScaNN pads with id 0 and a NaN distance
        I = np.where(missing, -1, I.astype(np.int64))
        D = np.where(missing, 0, D)
        D = from_squared_l2(self.metric, D) if self.metric == "euclidean" else from_inner_product(self.metric, D)
        return self.pad(D, I)

    def save(self, path: str | os.PathLike) -> None:
        with tempfile.TemporaryDirectory(prefix="ann-bench-scann-") as tmp:
            self.index.serialize(tmp, relative_path=True)
            names = sorted(p.name for p in Path(tmp).iterdir() if p.is_file())
            with open(path, "wb") as raw, tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
                for name in names:
                    file = Path(tmp) / name
                    info = tarfile.TarInfo(name)
                    info.size, info.mtime, info.mode, info.uid, info.gid = file.stat().st_size, 0, 0o644, 0, 0
                    with open(file, "rb") as fh:
                        tar.addfile(info, fh)

    def load(self, path: str | os.PathLike) -> None:
        from scann import scann_ops_pybind

        tmp = tempfile.mkdtemp(prefix="ann-bench-scann-")
        try:
            try:
                with tarfile.open(os.fspath(path), mode="r:") as tar:
                    for member in tar.getmembers():
                        name = member.name
                        if not member.isfile() or "/" in name or name.startswith(".") or name.endswith(".pkl"):
                            raise InputError(f"{self.label()}: {os.fspath(path)} holds {name!r}, which a ScaNN "
                                             "index saved by ann-bench never does; refusing it")
                        with tar.extractfile(member) as src, open(os.path.join(tmp, name), "wb") as dst:
                            shutil.copyfileobj(src, dst)
            except tarfile.TarError as exc:
                raise InputError(f"{self.label()}: {os.fspath(path)} is not a ScaNN index saved by ann-bench "
                                 f"({exc})") from None
            assets = Path(tmp) / ASSETS
            if not assets.is_file():
                raise InputError(f"{self.label()}: {os.fspath(path)} has no {ASSETS}; not a ScaNN index saved "
                                 "by ann-bench")
            native = scann_ops_pybind.scann_pybind.ScannNumpy(tmp, assets.read_text())
            self.index = scann_ops_pybind.ScannSearcher(native)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)  # the searcher holds everything in memory (measured)
        self.set_threads(self.threads)
        self._built = True
