"""Index: exact k-nearest-neighbour search.

Candidates come from float32 products, |q|^2 + |x|^2 - 2 q.x, which loses precision near zero (an
exact duplicate can come back as 1e-7, i.e. a distance of 3e-4 after the square root) and can swap
near-ties. The index therefore fetches a few more candidates than needed, recomputes their
distances directly as |q - x| in float64, re-sorts and keeps k: the distances are exact Euclidean
distances and exact duplicates are at 0.0, which the `<=` ball membership of the metrics relies on.

Backends: `numpy` (default: `nearest.nearest_candidates` on numpy's BLAS, the fastest on the
machine) or `faiss` (IndexFlatL2; faiss-cpu bundles an old OpenBLAS that runs a generic kernel on
some CPUs, so its speed depends on the wheel). Both give the same distances; `backend` says which
ran.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from audit.nearest import Points, expansion_tolerance, nearest_candidates

DEFAULT_QUERY_BATCH = 4096
BACKENDS = ("numpy", "faiss")


_EXTRA_CANDIDATES = 8  # beyond k, so float32 near-ties in FAISS cannot push a true neighbour out


@dataclass(frozen=True)
class Neighbors:
    """k nearest neighbours per query: `sq_distances` (n, k) float64 squared Euclidean,
    ascending; `indices` (n, k) int64 rows of the indexed set."""

    sq_distances: np.ndarray
    indices: np.ndarray

    @property
    def distances(self) -> np.ndarray:
        return np.sqrt(self.sq_distances)


def as_float32_matrix(x: np.ndarray, name: str = "x") -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (n, d), got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return np.ascontiguousarray(x, dtype=np.float32)


def as_float32_pair(reference: np.ndarray, candidate: np.ndarray, k: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Both sets as float32 matrices of the same dimension, with more than k items each (if given)."""
    x = as_float32_matrix(reference, "reference")
    y = as_float32_matrix(candidate, "candidate")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"reference has dimension {x.shape[1]}, candidate {y.shape[1]}")
    if k is not None and min(len(x), len(y)) <= k:
        raise ValueError(f"need more than k={k} items on each side, have {len(x)} and {len(y)}")
    return x, y


class ExactIndex:
    """Exact (brute-force) Euclidean k-NN over `vectors` (n, d). `exact` is always True here;
    approximate indexes, when added, say so through the same attribute."""

    exact = True

    def __init__(self, vectors: np.ndarray, backend: str = "numpy"):
        if backend not in BACKENDS:
            raise ValueError(f"unknown exact backend '{backend}': use {' or '.join(BACKENDS)}")
        self.vectors = as_float32_matrix(vectors, "vectors")
        self.backend = backend
        self._index = None
        self._points = Points(self.vectors) if backend == "numpy" else None
        self._max_sq_norm = float(np.einsum("ij,ij->i", self.vectors, self.vectors).max()) if len(self.vectors) else 0.0
        if backend == "faiss":
            import faiss

            self._index = faiss.IndexFlatL2(self.vectors.shape[1])
            self._index.add(self.vectors)

    @property
    def ntotal(self) -> int:
        return self.vectors.shape[0]

    @property
    def dim(self) -> int:
        return self.vectors.shape[1]

    def search(self, queries: np.ndarray, k: int, batch_size: int = DEFAULT_QUERY_BATCH) -> Neighbors:
        """The k nearest indexed vectors to each query (queries are another set)."""
        queries = as_float32_matrix(queries, "queries")
        self._check(queries, k, k)
        return self._search(queries, k, batch_size, exclude_self=False)

    def self_search(self, k: int, batch_size: int = DEFAULT_QUERY_BATCH) -> Neighbors:
        """The k nearest *other* indexed vectors to each indexed vector (self excluded by row,
        so an exact duplicate still counts as a neighbour at distance 0)."""
        self._check(self.vectors, k, k + 1)
        return self._search(self.vectors, k, batch_size, exclude_self=True)

    def _check(self, queries: np.ndarray, k: int, needed: int) -> None:
        if queries.shape[1] != self.dim:
            raise ValueError(f"queries have dimension {queries.shape[1]}, index has {self.dim}")
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if needed > self.ntotal:
            raise ValueError(f"k={k} needs at least {needed} indexed vectors, have {self.ntotal}")

    def _search(self, queries: np.ndarray, k: int, batch_size: int, exclude_self: bool) -> Neighbors:
        n = queries.shape[0]
        sq_distances = np.empty((n, k), dtype=np.float64)
        indices = np.empty((n, k), dtype=np.int64)
        fetch = min(k + (1 if exclude_self else 0) + _EXTRA_CANDIDATES, self.ntotal)
        q_sq = np.einsum("ij,ij->i", queries, queries).astype(np.float64)
        for start in range(0, n, batch_size):
            stop = min(start + batch_size, n)
            block = queries[start:stop]
            if self._index is not None:
                approx, idx = self._index.search(block, fetch)
                if exclude_self:
                    keep = not_self(idx, np.arange(start, stop))
                    approx = approx[keep].reshape(len(idx), -1)
                    idx = idx[keep].reshape(len(idx), -1)
            else:
                approx, idx = nearest_candidates(block, self._points, fetch - (1 if exclude_self else 0),
                                                 self_start=start if exclude_self else None)
            sq = self._refine(block, approx.astype(np.float64), idx, k, q_sq[start:stop])
            # Ties broken by index, like a stable sort of the full distance row.
            order = np.lexsort((idx, sq), axis=1)[:, :k]
            sq_distances[start:stop] = np.take_along_axis(sq, order, axis=1)
            indices[start:stop] = np.take_along_axis(idx, order, axis=1)
        return Neighbors(sq_distances, indices)

    def _refine(self, block: np.ndarray, approx: np.ndarray, idx: np.ndarray, k: int, q_sq: np.ndarray
                ) -> np.ndarray:
        """Exact squared distances of the candidates that can still be among the k nearest (within
        the float32 rounding bound of the k-th approximate one); +inf for the rest, which are
        farther than k others for sure."""
        tol = expansion_tolerance(q_sq, self._max_sq_norm, self.dim)
        rows, cols = np.nonzero(approx <= approx[:, k - 1:k] + 2 * tol[:, None])
        # Direct float64 differences: exact duplicates give exactly 0, unlike the norm expansion.
        diff = self.vectors[idx[rows, cols]].astype(np.float64) - block[rows].astype(np.float64)
        sq = np.full(approx.shape, np.inf)
        sq[rows, cols] = np.einsum("nd,nd->n", diff, diff)
        return sq


def not_self(idx: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Mask keeping f - 1 entries of each (n, f) neighbour list: all but the row's own index, or,
    where self is absent (more than f - 1 exact duplicates tie at distance 0), all but the last."""
    is_self = idx == rows[:, None]
    is_self[~is_self.any(axis=1), -1] = True
    return ~is_self
