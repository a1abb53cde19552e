"""ann-bench: benchmark approximate nearest-neighbour indices on your own embeddings."""

__version__ = "0.1.0"
