"""k-means clusters of a reference set, one way for every part of madaudit.

Lloyd's algorithm from scikit-learn, seeded, started from k-means++ centres chosen on a seeded
subsample of at most `INIT_POINTS_PER_CLUSTER` points a cluster: k-means++ over all points costs
several distance passes per centre and was most of the time of a 10,000-point fit, while the
subsample gives the same spread of starting centres (Lloyd's iterations then run on every point,
at most 50: a structureless Gaussian blob needs about 70 to settle, and ends 0.02% lower in
inertia for them).

A fit is remembered for the process, keyed by the data's bytes, the number of clusters and the
seed, so the metrics, the detectors' checks and the projector asking for the same clusters of the
same reference get the same clusters, computed once.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

INIT_POINTS_PER_CLUSTER = 40
MAX_ITER = 50  # Lloyd iterations at most (scikit-learn's default is 300; real CLIP sets converge in about 15)
_CACHE: dict[tuple[str, int, int], Clusters] = {}
_CACHE_SIZE = 8


@dataclass(frozen=True)
class Clusters:
    centroids: np.ndarray  # (n_clusters, d) float64
    labels: np.ndarray  # (n,) int64, the cluster of each fitted point

    @property
    def sizes(self) -> np.ndarray:
        return np.bincount(self.labels, minlength=len(self.centroids))

    def assign(self, points: np.ndarray) -> np.ndarray:
        """The nearest centroid of each point (exact Euclidean)."""
        from audit.index import ExactIndex

        return ExactIndex(self.centroids).search(points, 1).indices[:, 0]


def kmeans(x: np.ndarray, n_clusters: int, seed: int = 0) -> Clusters:
    """Seeded k-means of the rows of x (see the module docstring)."""
    from sklearn.cluster import KMeans, kmeans_plusplus

    x = np.ascontiguousarray(x)
    if x.ndim != 2 or not 1 <= n_clusters <= len(x):
        raise ValueError(f"k-means with {n_clusters} clusters needs at least as many points, have {len(x)}")
    key = (hashlib.blake2b(x.tobytes(), digest_size=16).hexdigest() + str(x.shape) + str(x.dtype), n_clusters, seed)
    if key in _CACHE:
        return _CACHE[key]
    rng = np.random.default_rng(seed)
    n_init_points = min(len(x), INIT_POINTS_PER_CLUSTER * n_clusters)
    sample = x[np.sort(rng.choice(len(x), n_init_points, replace=False))]
    centres, _ = kmeans_plusplus(sample, n_clusters, random_state=seed)
    fit = KMeans(n_clusters=n_clusters, init=centres, n_init=1, max_iter=MAX_ITER, random_state=seed).fit(x)
    result = Clusters(fit.cluster_centers_.astype(np.float64), fit.labels_.astype(np.int64))
    result.centroids.flags.writeable = result.labels.flags.writeable = False  # shared through the cache
    if len(_CACHE) >= _CACHE_SIZE:
        _CACHE.pop(next(iter(_CACHE)))
    _CACHE[key] = result
    return result
