"""Metric-learning training of embedders (``ann-bench train``).

- :mod:`.data` — the datasets (Fashion-MNIST from the Debian package, scikit-learn digits, image folders,
  labelled text/TSV, IDX), split by samples or by classes (test classes unseen in training);
- :mod:`.augment` — batched torch augmentations: random resized crop, horizontal flip, rotation, random erasing;
- :mod:`.sampler` — batches of m items per class;
- :mod:`.center_loss` — center loss (Wen et al., 2016) with softmax cross-entropy, written here;
- :mod:`.losses` — the loss and miner registry (pytorch-metric-learning plus center / softmax);
- :mod:`.evaluate` — retrieval and clustering metrics of the trained embeddings (faiss search and k-means);
- :mod:`.trainer` — the training loop, checkpoints that ``ann-bench embed --model`` loads, the metrics file.
"""

from embeddings.training.trainer import TrainConfig, TrainResult, save_checkpoint, train

__all__ = ["TrainConfig", "TrainResult", "save_checkpoint", "train"]
