"""ann-bench: benchmark approximate nearest-neighbour indices on your own embeddings."""

__version__ = "0.1.0"

__all__ = ["build_index", "open_index", "__version__"]


def __getattr__(name: str):
    # The Python API, imported on first use so that `import ann_bench` (and the CLI's start) stays light.
    if name in ("build_index", "open_index", "SavedIndex"):
        from ann_bench import index

        return getattr(index, name)
    raise AttributeError(f"module 'ann_bench' has no attribute {name!r}")
