"""Exact brute-force search behind the Index interface: the base of the test backends (the failure-injecting
plugins in faulty_backends.py, the scripted recall curves of test_levelled_off.py). Registers nothing."""

import numpy as np

from ann_bench.backends.base import Index


class ExactIndex(Index):
    impl = "test"

    def build(self, X):
        self.X = np.array(X)

    def _apply_search_params(self, params):
        self.search = params

    def distances(self, Q):
        """Squared L2 distances (nq, n) of the queries to every vector."""
        return ((Q[:, None, :] - self.X[None, :, :]) ** 2).sum(-1)

    def query(self, Q, k):
        d = self.distances(Q)
        I = np.argsort(d, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(d, I, axis=1), I

    def convert(self, D, I):
        return self.pad(np.sqrt(D), I)

    def save(self, path):
        np.save(path, self.X)

    def load(self, path):
        self.X = np.load(path)

    def index_bytes(self):
        return self.X.nbytes
