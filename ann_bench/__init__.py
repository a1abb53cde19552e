"""ann-bench: benchmark approximate nearest-neighbour indices on your own embeddings.

Python API: :func:`build_index`, :func:`open_index` and the :class:`SavedIndex` they return (see
``ann_bench.index``)."""

__version__ = "0.1.0"

__all__ = ["build_index", "open_index", "SavedIndex", "__version__"]

_LAZY = ("build_index", "open_index", "SavedIndex")


def __getattr__(name: str):
    # The Python API, imported on first use so that `import ann_bench` (and the CLI's start) stays light.
    if name in _LAZY:
        from ann_bench import index

        return getattr(index, name)
    raise AttributeError(f"module 'ann_bench' has no attribute {name!r}")


def __dir__() -> list[str]:
    # The lazy names are not in the module's namespace until first used; list them for dir() and tab completion.
    return sorted(set(globals()) | set(__all__))
