"""KID (Binkowski et al. 2018): mean and std over subsets of the unbiased MMD^2 with the kernel
k(a, b) = (t + 1)^3, t = a.b/d; 100 subsets of min(1000, N, M) items a side by default, seeded (the
estimator of clean-fid and torch-fidelity).

The constant 1 of the kernel cancels exactly in the unbiased estimator, so only k - 1 =
3t + t^2 (t + 3) is summed: the 3t part in closed form, 3 (sum a).(sum b)/d in float64, and the
cubic part t^2 (t + 3) element-wise. The subsets are drawn once, up front. Two ways to the same
sums, the cheaper one taken (`kid_in_pass_is_cheaper`):

- subset by subset (`kid`): one product per pair of subsets (S m^2 d multiply-adds);
- inside the pass over all distances (`CubicSubsetSums`, a consumer of `pairwise`): each block
  of distances gives t, and a product with the subsets' indicator matrix adds the cubic part over
  every subset at once (N M S multiply-adds, no product of its own). Cheaper while N M is not much
  above S m^2 (about N = M = 15,000 at the defaults).

Both take float32 products only where t is small (CLIP vectors: |t| <= 1/d times the norms'
product), so that the float32 rounding of t stays far below the estimator's own spread; other
features take the float64 subset loop.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from audit.nearest import upper_part

FLOAT32_T = 0.05  # largest |a.b/d| for which float32 products are used


@dataclass(frozen=True)
class KidSubsets:
    m: int  # items per subset, a side
    pairs: list[tuple[np.ndarray, np.ndarray]]  # (reference rows, candidate rows) per subset

    def indicators(self, n_x: int, n_y: int) -> tuple[np.ndarray, np.ndarray]:
        """(N, S) and (M, S) float32 0/1 matrices: which subsets each item belongs to."""
        a_x = np.zeros((n_x, len(self.pairs)), dtype=np.float32)
        a_y = np.zeros((n_y, len(self.pairs)), dtype=np.float32)
        for s, (ia, ib) in enumerate(self.pairs):
            a_x[ia, s] = 1.0
            a_y[ib, s] = 1.0
        return a_x, a_y


def draw_subsets(n_x: int, n_y: int, n_subsets: int = 100, subset_size: int = 1000, seed: int = 0) -> KidSubsets:
    m = min(subset_size, n_x, n_y)
    if m < 2:
        raise ValueError("KID needs at least 2 items on each side")
    rng = np.random.default_rng(seed)
    return KidSubsets(m, [(rng.choice(n_x, m, replace=False), rng.choice(n_y, m, replace=False))
                          for _ in range(n_subsets)])


def float32_is_enough(x: np.ndarray, y: np.ndarray) -> bool:
    d = x.shape[1]
    max_x = float(np.einsum("ij,ij->i", x, x, dtype=np.float64).max())
    max_y = float(np.einsum("ij,ij->i", y, y, dtype=np.float64).max())
    return math.sqrt(max_x * max_y) / d <= FLOAT32_T


def kid_in_pass_is_cheaper(n_x: int, n_y: int, subsets: KidSubsets, d: int) -> bool:
    """Cost model, in units of one element-wise float32 operation (a multiply-add in a large
    product costs about 1/75 of one here): the pass adds 5 operations and 2S/75 for the indicator
    product on each of its N^2 + M^2 + N M distances; the subset loop does 3 S m^2 entries of
    2d/75 for its products and 4 operations."""
    s = len(subsets.pairs)
    in_pass = (n_x * n_x + n_y * n_y + n_x * n_y) * (5 + 2 * s / 75)
    by_subset = 3 * s * subsets.m**2 * (4 + 2 * d / 75)
    return in_pass < by_subset


def kid(x: np.ndarray, y: np.ndarray, n_subsets: int = 100, subset_size: int = 1000, seed: int = 0
        ) -> tuple[float, float]:
    """KID subset by subset (see the module docstring)."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    d = x.shape[1]
    subsets = draw_subsets(len(x), len(y), n_subsets, subset_size, seed)
    dtype = np.float32 if float32_is_enough(x, y) else np.float64
    # Scaled by d^-1/2, so a product of two rows is t itself.
    xs, ys = (x / math.sqrt(d)).astype(dtype), (y / math.sqrt(d)).astype(dtype)
    cubic = {key: np.empty(n_subsets) for key in ("xx", "yy", "xy")}
    for s, (ia, ib) in enumerate(subsets.pairs):
        a, b = xs[ia], ys[ib]
        diag_a, diag_b = (np.einsum("ij,ij->i", v, v, dtype=np.float64) for v in (a, b))
        # Off the diagonal within each set (a a^T: one triangle computed, it is symmetric).
        cubic["xx"][s] = _cubic_part_sum(a @ a.T) - (diag_a**2 * (diag_a + 3)).sum()
        cubic["yy"][s] = _cubic_part_sum(b @ b.T) - (diag_b**2 * (diag_b + 3)).sum()
        cubic["xy"][s] = _cubic_part_sum(a @ b.T)
    return kid_from_cubic_sums(x, y, subsets, cubic)


def kid_from_cubic_sums(x: np.ndarray, y: np.ndarray, subsets: KidSubsets, cubic: dict[str, np.ndarray]
                        ) -> tuple[float, float]:
    """Mean and std of the subsets' unbiased MMD^2 from their cubic-part sums (within X and Y off
    the diagonal, across all pairs), adding the 3t part in closed form."""
    d, m = x.shape[1], subsets.m
    xs, ys = np.asarray(x, np.float64) / math.sqrt(d), np.asarray(y, np.float64) / math.sqrt(d)
    x_sq, y_sq = np.einsum("ij,ij->i", xs, xs), np.einsum("ij,ij->i", ys, ys)
    values = np.empty(len(subsets.pairs))
    for s, (ia, ib) in enumerate(subsets.pairs):
        sum_a, sum_b = xs[ia].sum(axis=0), ys[ib].sum(axis=0)
        within_a = 3 * (sum_a @ sum_a - x_sq[ia].sum()) + cubic["xx"][s]
        within_b = 3 * (sum_b @ sum_b - y_sq[ib].sum()) + cubic["yy"][s]
        across = 3 * (sum_a @ sum_b) + cubic["xy"][s]
        values[s] = (within_a + within_b) / (m * (m - 1)) - 2 * across / (m * m)
    return float(values.mean()), float(values.std())


def _cubic_part_sum(t: np.ndarray) -> float:
    """sum of t^2 (t + 3) over a matrix of t (overwritten), the sum in float64."""
    u = t + 3
    u *= t
    u *= t
    return float(u.sum(dtype=np.float64))


class CubicSubsetSums:
    """Consumer of the pass over distances: adds t^2 (t + 3) over every subset's pairs at once.

    From a block of squared distances (rows start:stop of one set by all of the other) and the
    vectors' own squared norms, w = |a|^2 + |b|^2 - d^2 = 2 a.b = 2 d t; u = w^2 (w + 6 d) =
    8 d^3 t^2 (t + 3); then (u @ column indicators) weighted by the rows' indicators gives each
    subset's sum. In a within-set pass only the upper triangle is read (`nearest.upper_part`) and
    self pairs are left out."""

    def __init__(self, row_sq_norms: np.ndarray, col_sq_norms: np.ndarray, row_sets: np.ndarray, col_sets: np.ndarray,
                 d: int, self_pass: bool):
        self.row_sq = row_sq_norms.astype(np.float32)
        self.col_sq = col_sq_norms.astype(np.float32)
        self.row_sets, self.col_sets = row_sets, col_sets
        self.d, self.self_pass = d, self_pass
        self.sums = np.zeros(row_sets.shape[1])
        self._w = np.empty(0, dtype=np.float32)
        self._u = np.empty(0, dtype=np.float32)

    def __call__(self, sq: np.ndarray, start: int, stop: int) -> None:
        first = start if self.self_pass else 0  # a within-set pass reads the upper triangle only
        block = upper_part(sq, start, stop) if self.self_pass else sq
        size = block.size
        if self._w.size < size:
            self._w, self._u = np.empty(size, dtype=np.float32), np.empty(size, dtype=np.float32)
        w, u = self._w[:size].reshape(block.shape), self._u[:size].reshape(block.shape)
        np.subtract(self.col_sq[None, first:], block, out=w)
        w += self.row_sq[start:stop, None]
        np.add(w, 6.0 * self.d, out=u)
        u *= w
        u *= w
        if self.self_pass:  # no self pairs; the diagonal square holds both orders, the rest counts twice
            rows = stop - start
            u[np.arange(rows), np.arange(rows)] = 0.0
            u[:, :rows] *= 0.5
        per_row = u @ self.col_sets[first:]  # (rows, S)
        scale = (2.0 if self.self_pass else 1.0) / (8.0 * self.d**3)
        self.sums += scale * np.einsum("rs,rs->s", self.row_sets[start:stop], per_row, dtype=np.float64)
