"""Per-item density features: what a set of k-NN distances knows that a linear probe cannot.

Synthetic data drawn with sampling bias lambda < 1 (truncation, guidance, low temperature) has
the mean of the real data but less spread: it sits nearer the modes. No linear function of the
embedding sees a difference in spread; distances to neighbours do. For an item z and a "bank" B
of vectors (real examples, labelled synthetic examples, or the candidate itself), the k-NN
density estimate is p_B(z) ~ k / (|B| r_k^B(z)^d_eff), so

    log r_k^R(z) - log r_k^S(z)  ~  (1 / d_eff) log p_S(z) / p_R(z) + const

is a nonparametric log-likelihood ratio between the banks R and S, the statistic an optimal
detector of a density difference thresholds. The features, per bank B:

    log r_1^B(z), log r_k^B(z)          distance to the nearest and to the k-th neighbour in B
    log (r_1^B(z) / r_k^B(nn))          distance to the nearest neighbour relative to that
                                        neighbour's own k-NN radius within B (< 0: inside its ball)

A classifier learns the exponent d_eff and the offsets; the embedding beside them still catches
a generator's systematic offset (the linear-probe signal of Ojha et al. 2023). The distance to
the nearest labelled synthetic example (their nearest-neighbour detector) is log r_1^S.

Items that belong to a bank are scored leave-one-out (`exclude_self`), so an item never counts
itself as a neighbour: training features and scoring features then have the same distribution,
up to a bank of n - 1 against one of n.

Distances come from blocked float32 matrix products with numpy's BLAS (the fastest on the
machine; faiss-cpu bundles an older OpenBLAS that runs a generic kernel on some CPUs). They are
features, not exact metrics: float32 rounding (about 1e-6 relative) is harmless here, and exact
duplicates are floored at a tiny distance instead of log 0.
"""

from __future__ import annotations

import numpy as np

_BLOCK_FLOATS = 1 << 22  # one float32 block of the distance matrix (16 MB)
_FLOOR = 1e-6  # distances below this (duplicates) are read as this, so the log stays finite


def knn_distances(queries: np.ndarray, bank: np.ndarray, k: int, exclude_self: bool = False
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Distances (n, k), ascending, and bank indices (n, k) of each query's k nearest bank items.
    With `exclude_self`, queries are the bank itself and row i never returns item i."""
    q = np.ascontiguousarray(queries, dtype=np.float32)
    b = np.ascontiguousarray(bank, dtype=np.float32)
    if q.ndim != 2 or b.ndim != 2 or q.shape[1] != b.shape[1]:
        raise ValueError(f"queries {q.shape} and bank {b.shape} must be (n, d) with the same d")
    available = len(b) - (1 if exclude_self else 0)
    if not 1 <= k <= available:
        raise ValueError(f"k={k} needs at least {k + int(exclude_self)} bank items, have {len(b)}")
    if exclude_self and len(q) != len(b):
        raise ValueError("exclude_self needs the queries to be the bank itself")
    bank_sq = np.einsum("ij,ij->i", b, b)
    dist = np.empty((len(q), k), dtype=np.float64)
    idx = np.empty((len(q), k), dtype=np.int64)
    rows = max(1, _BLOCK_FLOATS // len(b))
    for start in range(0, len(q), rows):
        block = q[start : start + rows]
        sq = bank_sq[None, :] - 2.0 * (block @ b.T)
        sq += np.einsum("ij,ij->i", block, block)[:, None]
        if exclude_self:
            sq[np.arange(len(block)), np.arange(start, start + len(block))] = np.inf
        part = np.argpartition(sq, k - 1, axis=1)[:, :k] if k < sq.shape[1] else np.tile(np.arange(k), (len(block), 1))
        values = np.take_along_axis(sq, part, axis=1)
        order = np.argsort(values, axis=1, kind="stable")
        idx[start : start + len(block)] = np.take_along_axis(part, order, axis=1)
        dist[start : start + len(block)] = np.sqrt(np.clip(np.take_along_axis(values, order, axis=1), 0, None))
    return dist, idx


class DensityBank:
    """A bank of vectors split into folds, ready to describe any item against the bank items
    outside one fold (cross-fitting: a fold's items are then new to that part of the bank, just
    as a candidate item is). One k-NN pass against the whole bank serves every fold: each row
    fetches `k + EXTRA` neighbours and keeps the first k outside the fold; the rare row that
    runs short is searched again directly."""

    def __init__(self, vectors: np.ndarray, k: int, folds: np.ndarray | None = None):
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self.folds = np.zeros(len(self.vectors), np.int64) if folds is None else np.asarray(folds, np.int64)
        self.k = k
        if len(self.folds) != len(self.vectors):
            raise ValueError("one fold label per bank vector")
        # Every item's own neighbours: radii within any part of the bank are read off them.
        self._own = self.neighbours(self.vectors, members=True)

    def neighbours(self, items: np.ndarray, members: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Distances and indices of the `k + EXTRA` nearest bank items (self excluded for members)."""
        fetch = min(self.k + EXTRA, len(self.vectors) - int(members))
        return knn_distances(self.vectors if members else items, self.vectors, fetch, exclude_self=members)

    def features(self, items: np.ndarray, fold: int = -1, members: bool = False,
                 found: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
        """(n, 3) features of `items` against the bank items not in `fold` (-1: the whole bank).
        With `members`, `items` are the bank itself, each left out of its own neighbours and of
        its neighbours' radii. `found`: `neighbours(items)` of non-members, when already computed."""
        rows = np.arange(len(self.vectors)) if members else None
        if members:
            found = self._own
        dist, idx = self._first_k(items, *(found or self.neighbours(items)), fold, rows)
        nn = idx[:, 0]
        own_dist, _ = self._first_k(self.vectors[nn], *(a[nn] for a in self._own), fold, nn, also_drop=rows)
        nearest = np.maximum(dist[:, 0], _FLOOR)
        kth = np.maximum(dist[:, -1], _FLOOR)
        radius = np.maximum(own_dist[:, -1], _FLOOR)
        return np.column_stack([np.log(nearest), np.log(kth), np.log(nearest / radius)])

    def _first_k(self, queries: np.ndarray, dist: np.ndarray, idx: np.ndarray, fold: int,
                 rows: np.ndarray | None, also_drop: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The first k neighbours outside `fold`, never the query's own bank row (`rows`) nor
        `also_drop`; rows whose fetched list runs short are searched directly."""
        allowed = self.folds[idx] != fold
        if rows is not None:
            allowed &= idx != rows[:, None]
        if also_drop is not None:
            allowed &= idx != also_drop[:, None]
        order = np.argsort(~allowed, axis=1, kind="stable")[:, : self.k]  # allowed first, in distance order
        out_dist, out_idx = np.take_along_axis(dist, order, axis=1), np.take_along_axis(idx, order, axis=1)
        for i in np.flatnonzero(allowed.sum(axis=1) < self.k):
            keep = self.folds != fold
            for r in (rows, also_drop):
                if r is not None:
                    keep[r[i]] = False
            pool = np.flatnonzero(keep)
            if len(pool) < self.k:
                raise ValueError(f"k={self.k} needs more bank items outside fold {fold}, have {len(pool)}")
            d, j = knn_distances(queries[i : i + 1], self.vectors[pool], self.k)
            out_dist[i], out_idx[i] = d[0], pool[j[0]]
        return out_dist, out_idx


FEATURES_PER_BANK = ("log_nn", "log_knn", "log_nn_over_radius")
EXTRA = 16  # neighbours fetched beyond k, so that k remain after leaving one fold out


def feature_names(banks: tuple[str, ...]) -> list[str]:
    return [f"{bank}.{name}" for bank in banks for name in FEATURES_PER_BANK]


def describe(items: np.ndarray, banks: list[DensityBank], fold: int, member_of: int | None = None,
             found: list | None = None, embedding: bool = True) -> np.ndarray:
    """[embedding (if asked), features against each bank outside `fold`]. `member_of`: the index
    of the bank that `items` are (scored leave-one-out there); `found`: per bank, the
    `neighbours(items)` already computed."""
    parts = [items.astype(np.float64)] if embedding else []
    for i, bank in enumerate(banks):
        parts.append(bank.features(items, fold, members=i == member_of, found=found[i] if found else None))
    return np.hstack(parts)
