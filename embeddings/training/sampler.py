"""Batches of m items per class (as pytorch-metric-learning's MPerClassSampler), from a seeded generator."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from ann_bench.errors import InputError


def default_m(batch_size: int, num_classes: int) -> int:
    """m filling a batch with every class: batch_size // num_classes, at least 2."""
    return max(2, batch_size // max(num_classes, 1))


def m_per_class_batches(labels: np.ndarray, m: int, batch_size: int, n_batches: int,
                        rng: np.random.Generator) -> Iterator[np.ndarray]:
    """``n_batches`` index arrays, each of min(batch_size // m, num_classes) classes x m items.

    labels (n,) int; classes are visited in shuffled rounds so each appears equally often; items of a class
    are drawn without replacement when it has m or more, with replacement otherwise.
    """
    labels = np.asarray(labels)
    classes, inverse = np.unique(labels, return_inverse=True)
    if m < 1:
        raise InputError(f"--m-per-class must be >= 1, got {m}")
    per_batch = min(batch_size // m, len(classes))
    if per_batch < 2:
        raise InputError(f"a batch of {batch_size} with {m} per class holds fewer than 2 classes; raise "
                         f"--batch-size to at least {2 * m} or lower --m-per-class")
    members = [np.flatnonzero(inverse == c) for c in range(len(classes))]
    queue: list[int] = []
    for _ in range(n_batches):
        chosen: list[int] = []
        while len(chosen) < per_batch:
            if not queue:
                queue = list(rng.permutation(len(classes)))
            c = int(queue.pop())
            if c not in chosen:
                chosen.append(c)
        batch = [rng.choice(members[c], size=m, replace=len(members[c]) < m) for c in chosen]
        yield np.concatenate(batch)
