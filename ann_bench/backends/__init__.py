"""The backend registry: name -> implementations, the first listed being the default.

Backend modules import only numpy at import time; the libraries they wrap are imported in ``build``/``load``,
so listing backends never needs faiss, hnswlib or annoy to be installed.
"""

from __future__ import annotations

import importlib
import os

from ann_bench.backends.base import Index, Param, grid_product
from ann_bench.errors import InputError

# (module, class) for every implementation; within one name, the first is the default implementation.
_MODULES = [
    ("ann_bench.backends.flat", "FaissFlat"),
    ("ann_bench.backends.hnsw", "HnswlibHNSW"),
    ("ann_bench.backends.ivf", "FaissIVFFlat"),
    ("ann_bench.backends.ivfpq", "FaissIVFPQ"),
    ("ann_bench.backends.hnsw_faiss", "FaissHNSW"),
    ("ann_bench.backends.usearch", "USearchHNSW"),
    ("ann_bench.backends.voyager", "VoyagerHNSW"),
    ("ann_bench.backends.nsw", "NumbaNSW"),
    ("ann_bench.backends.nmslib", "NmslibHNSW"),
    ("ann_bench.backends.nmslib", "NmslibNSW"),
    ("ann_bench.backends.pynndescent", "PyNNDescent"),
    ("ann_bench.backends.annoy", "AnnoyForest"),
    ("ann_bench.backends.kdtree", "ScipyKDTree"),
    ("ann_bench.backends.ngt", "NgtONNG"),
    ("ann_bench.backends.diskann", "DiskannVamana"),
    ("ann_bench.backends.faiss_factory", "FaissFactory"),
    ("ann_bench.backends.scann", "ScaNN"),
    ("ann_bench.backends.lancedb", "LanceFlat"),
    ("ann_bench.backends.lancedb", "LanceIVFFlat"),
    ("ann_bench.backends.lancedb", "LanceIVFPQ"),
    ("ann_bench.backends.lancedb", "LanceIVFHNSWSQ"),
    ("ann_bench.backends.chroma", "ChromaHNSW"),
    ("ann_bench.backends.milvus", "MilvusFlat"),
    ("ann_bench.backends.milvus", "MilvusIVFFlat"),
    ("ann_bench.backends.milvus", "MilvusHNSW"),
    ("ann_bench.backends.milvus", "MilvusIVFSQ8"),
    ("ann_bench.backends.milvus", "MilvusHNSWSQ"),
]

PLUGINS_ENV = "ANN_BENCH_PLUGINS"

_REGISTRY: dict[str, dict[str, type[Index]]] = {}


def register(cls: type[Index]) -> type[Index]:
    """Add a backend class to the registry (usable as a class decorator by plugin modules)."""
    _REGISTRY.setdefault(cls.name, {})[cls.impl] = cls
    return cls


def _load() -> dict[str, dict[str, type[Index]]]:
    if not _REGISTRY:
        for module, cls_name in _MODULES:
            register(getattr(importlib.import_module(module), cls_name))
        # Plugins: modules named in $ANN_BENCH_PLUGINS (comma-separated) that call register(). Worker processes
        # inherit the variable, so a plugin backend runs isolated like the built-in ones.
        for module in filter(None, (m.strip() for m in os.environ.get(PLUGINS_ENV, "").split(","))):
            try:
                importlib.import_module(module)
            except ImportError as exc:
                _REGISTRY.clear()
                raise InputError(f"cannot import backend plugin {module!r} named in ${PLUGINS_ENV}: {exc}") from None
            except Exception as exc:  # a plugin's own bug: say whose, in one line
                _REGISTRY.clear()
                raise InputError(f"backend plugin {module!r} named in ${PLUGINS_ENV} raised on import: "
                                 f"{type(exc).__name__}: {exc}; fix the plugin or remove it from "
                                 f"${PLUGINS_ENV}") from None
    return _REGISTRY


def backend_names() -> list[str]:
    return list(_load())


def implementations(name: str) -> dict[str, type[Index]]:
    """The implementations of backend ``name``, default first; InputError listing the valid names."""
    registry = _load()
    if name not in registry:
        raise InputError(f"unknown backend {name!r}; valid backends: {', '.join(registry)}")
    return registry[name]


def get_backend(name: str, impl: str | None = None) -> type[Index]:
    """The Index class for ``name`` (and ``impl``, default: the backend's first implementation)."""
    impls = implementations(name)
    if impl is None:
        return next(iter(impls.values()))
    if impl not in impls:
        raise InputError(f"backend {name!r} has no implementation {impl!r}; valid: {', '.join(impls)}")
    return impls[impl]


def all_backends() -> list[type[Index]]:
    return [cls for impls in _load().values() for cls in impls.values()]


__all__ = ["Index", "Param", "grid_product", "get_backend", "implementations", "backend_names", "all_backends",
           "register"]
