"""Embedders and their training: the models whose vectors `ann-bench embed` writes as VectorSets.

Populated by the embed and train issues (trained checkpoints, the all-MiniLM-L6-v2 adapter, user TorchScript
models); the core engine does not depend on it.
"""
