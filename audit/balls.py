"""Exact k-NN ball membership between a reference set X and a candidate set Y.

Precision, recall, density and coverage (Kynkäänniemi et al. 2019; Naeem et al. 2020) all ask
which k-NN balls contain which points, each ball with its own radius r_k (distance to the k-th
nearest neighbour in its own set, itself excluded). A plain k-NN search of Y over X is exact only
if it searches far enough; instead this module makes one blocked pass over the X-Y distance matrix
and answers every ball question from it:

    inside_x[j, i] = d(y_j, x_i) <= r_k(x_i)   -> density, precision (per y), coverage (per x)
    inside_y[j, i] = d(y_j, x_i) <= r_k(y_j)   -> recall (per x)

Everything runs on float32 matrix products, made exact by a rounding-error bound: a float32
dot product of length n is off by at most gamma_n * sum |terms| (gamma_n = n u / (1 - n u),
u = 2^-24). Any comparison that the bound cannot settle is redone directly in float64 from the
float32 inputs, so every answer is that of the exact distances (membership uses `<=`: an exact
duplicate at distance 0 is inside a ball of radius 0).

- Radii: `nearest.nearest_candidates` (squared L2 from float32 GEMMs on numpy's BLAS) finds the
  neighbours; only candidates whose approximate distance ties with the k-th within the bound are
  recomputed.
- Cross pass: one GEMM per block on augmented vectors, [y, 1, |y|^2] . [-2x, |x|^2 - r_x^2, 1]
  = d^2 - r_x^2, so a comparison is a sign test. Rows are screened by counts, so index arrays
  are built only for the rare entries within the bound.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from audit.index import as_float32_matrix
from audit.nearest import expansion_tolerance, nearest_candidates

_U = 2.0**-24  # float32 unit roundoff
_BLOCK_BYTES = 8 << 20  # one float32 block of the distance matrix
_EXTRA = 8  # neighbours fetched beyond k, so ties within the error bound are seen


@dataclass
class BallMembership:
    """Which balls hold which points. N = len(reference), M = len(candidate)."""

    k: int
    ref_radii: np.ndarray  # (N,) float64, r_k of each reference point within the reference
    cand_radii: np.ndarray  # (M,) float64, r_k of each candidate point within the candidate
    cand_ball_counts: np.ndarray  # (M,) int64, how many reference balls contain each candidate point
    ref_covered: np.ndarray  # (N,) bool, reference ball holds at least one candidate point
    ref_in_cand_ball: np.ndarray  # (N,) bool, reference point lies in some candidate ball


def ball_membership(reference: np.ndarray, candidate: np.ndarray, k: int = 5) -> BallMembership:
    x = as_float32_matrix(reference, "reference")
    y = as_float32_matrix(candidate, "candidate")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"reference has dimension {x.shape[1]}, candidate {y.shape[1]}")
    return _membership(x, y, knn_sq_radii(x, k), knn_sq_radii(y, k), k)


def candidate_ball_counts(reference: np.ndarray, candidate: np.ndarray, k: int = 5) -> np.ndarray:
    """How many reference k-NN balls hold each candidate item (0: outside the reference
    manifold). Needs only the reference radii, so it scales to large candidate sets."""
    x = as_float32_matrix(reference, "reference")
    y = as_float32_matrix(candidate, "candidate")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"reference has dimension {x.shape[1]}, candidate {y.shape[1]}")
    return _membership(x, y, knn_sq_radii(x, k), None, k).cand_ball_counts


def _gamma(n: int) -> float:
    """Twice the classical bound gamma_n, for safety."""
    return 2.0 * n * _U / (1.0 - n * _U)


def knn_sq_radii(x: np.ndarray, k: int) -> np.ndarray:
    """Exact squared distance from each row of x to its k-th nearest other row (float64)."""
    x = as_float32_matrix(x, "x")
    n, d = x.shape
    if not 1 <= k < n:
        raise ValueError(f"k={k} needs more than k points, have {n}")
    fetch = min(n - 1, k + _EXTRA)
    approx, idx = nearest_candidates(x, x, fetch, self_start=0)
    return _refine_kth(x, approx, idx, k, group=n, all_fetched=fetch >= n - 1)


def grouped_knn_sq_radii(x: np.ndarray, group: int, k: int) -> np.ndarray:
    """knn_sq_radii within each consecutive block of `group` rows (many small sets at once, e.g.
    one per Monte Carlo run): a batched float32 GEMM gives every distance in a set; a partition
    finds each row's approximate k-th; only entries within the float32 rounding bound of it are
    recomputed in float64, and the exact k-th is picked among them."""
    x = as_float32_matrix(x, "x")
    n, d = x.shape
    if n % group or not 1 <= k < group:
        raise ValueError(f"{n} rows do not split into groups of {group} with more than k={k} points each")
    xs = x.reshape(n // group, group, d)
    sq = np.einsum("gij,gij->gi", xs, xs)
    approx = sq[:, :, None] + sq[:, None, :] - 2 * (xs @ xs.transpose(0, 2, 1))
    diagonal = np.arange(group)
    approx[:, diagonal, diagonal] = np.inf
    kth = np.partition(approx, k - 1, axis=2)[:, :, k - 1].astype(np.float64)
    x64 = x.astype(np.float64)
    norms = np.einsum("ij,ij->i", x64, x64)
    # float32 expansion error <= gamma_(d+4) (sqrt(nx) + sqrt(ny))^2, bounded per row.
    tol = expansion_tolerance(norms, norms.max(), d).reshape(kth.shape)
    low, high = (kth - 2 * tol)[:, :, None], (kth + 2 * tol)[:, :, None]
    sure = np.count_nonzero(approx < low, axis=2).reshape(n)  # surely among the k nearest
    g, r, c = np.nonzero((approx >= low) & (approx <= high))  # may be the k-th: compute exactly
    rows, cols = g * group + r, g * group + c
    exact = _exact_sq(x64, x64, rows, cols)
    order = np.lexsort((exact, rows))
    first = np.searchsorted(rows[order], np.arange(n))
    return exact[order][first + (k - sure) - 1]


def _refine_kth(x: np.ndarray, approx: np.ndarray, idx: np.ndarray, k: int, group: int, all_fetched: bool
                ) -> np.ndarray:
    """Exact k-th smallest squared distance per row, from sorted approximate candidates (float32
    expansion |x|^2 + |y|^2 - 2 x.y, self excluded) and their indices. Only candidates that tie
    with the k-th within the rounding bound are recomputed; a row whose ties may reach past the
    fetched candidates is brute-forced within its group."""
    n, d = x.shape
    x64 = x.astype(np.float64)
    norms = np.einsum("ij,ij->i", x64, x64)
    # float32 expansion error <= gamma_(d+4) (sqrt(nx) + sqrt(ny))^2.
    tol = expansion_tolerance(norms, norms.max(), d)
    kth = approx[:, k - 1]
    sure = approx < (kth - 2 * tol)[:, None]  # surely among the k nearest
    unsure = ~sure & (approx <= (kth + 2 * tol)[:, None])  # may be the k-th: compute exactly
    complete = (approx[:, -1] > kth + 2 * tol) | all_fetched  # every possible tie was fetched

    rows, cols = np.nonzero(unsure)
    exact = np.full(approx.shape, np.inf)
    exact[rows, cols] = _exact_sq(x64, x64, rows, idx[rows, cols])
    exact.sort(axis=1)
    need = k - sure.sum(axis=1)  # the k-th overall is this order statistic among the unsure ones
    radii = exact[np.arange(n), need - 1]
    for i in np.flatnonzero(~complete):  # a wall of ties beyond what was fetched: brute force
        peers = np.arange(i // group * group, (i // group + 1) * group)
        row = _exact_sq(x64, x64, np.full(group, i), peers)
        row[i - peers[0]] = np.inf
        radii[i] = np.partition(row, k - 1)[k - 1]
    return radii


def grouped_ball_membership(reference: np.ndarray, ref_sq_radii: np.ndarray, candidates: np.ndarray, group: int,
                            k: int) -> BallMembership:
    """Ball membership of many candidate sets of `group` rows each (stacked) against one
    reference whose squared radii are known: `ref_covered` and `ref_in_cand_ball` come back as
    (n_sets, N), `cand_ball_counts` per stacked row, candidate radii within each set."""
    x = as_float32_matrix(reference, "reference")
    y = as_float32_matrix(candidates, "candidates")
    return _membership(x, y, np.asarray(ref_sq_radii, np.float64), grouped_knn_sq_radii(y, group, k), k, group)


def _membership(x: np.ndarray, y: np.ndarray, rx2: np.ndarray, ry2: np.ndarray | None, k: int,
                group: int | None = None) -> BallMembership:
    """The cross pass. Without candidate radii (ry2 None) recall is skipped (left all False).
    With `group`, y is a stack of sets of that many rows, answered set by set."""
    n, d = x.shape
    m = y.shape[0]
    x64, y64 = x.astype(np.float64), y.astype(np.float64)
    nx = np.einsum("ij,ij->i", x64, x64)
    ny = np.einsum("ij,ij->i", y64, y64)

    # Augmented operands: (y_aug . x_aug) = |y|^2 + |x|^2 - r_x^2 - 2 y.x = d^2 - r_x^2.
    x_aug_t = np.empty((d + 2, n), dtype=np.float32)
    x_aug_t[:d] = -2.0 * x.T
    x_aug_t[d] = nx - rx2
    x_aug_t[d + 1] = 1.0
    y_aug = np.empty((m, d + 2), dtype=np.float32)
    y_aug[:, :d] = y
    y_aug[:, d] = 1.0
    y_aug[:, d + 1] = ny
    ry2_f32 = ry2.astype(np.float32) if ry2 is not None else None

    # Error of one entry <= gamma_(d+4) * sum_t |a_t b_t| <= gamma (nx + |nx - rx2| + 2 ny), which
    # also covers the float32 rounding of the two extra columns. Recall shifts by -r_y^2 in
    # float32 and by +r_x^2 in float64: near the boundary one more rounding of size r^2.
    bound_x = float(np.max(nx + np.abs(nx - rx2)))
    shift = 4.0 * _U * float(max(rx2.max(), ry2.max() if ry2 is not None else 0.0))

    def block(start: int, stop: int):
        s = y_aug[start:stop] @ x_aug_t  # (b, n): d^2 - r_x^2
        tol = _gamma(d + 4) * (bound_x + 2.0 * float(ny[start:stop].max()))
        inside = _sign_test(s, tol, lambda j, i: _exact_sq(y64, x64, j + start, i) <= rx2[i])
        counts = np.count_nonzero(inside, axis=1)
        set_rows = min(group, stop - start)  # a block holds whole sets or lies within one
        covered = inside.reshape(-1, set_rows, n).any(axis=1)
        if ry2 is None:
            return counts, covered, np.zeros_like(covered)
        # Recall needs one bit per (set, reference point): min over the set's rows j of
        # d^2 - r_y^2 = s + r_x^2 - r_y^2; exact checks only where it is within the bound of zero.
        s -= ry2_f32[start:stop, None]
        per_set = s.reshape(-1, set_rows, n)
        col_min = per_set.min(axis=1) + rx2  # float64
        in_cand = col_min <= -(tol + shift)
        unsure_g, unsure_i = np.nonzero(np.abs(col_min) <= tol + shift)
        if len(unsure_g):
            u, j = np.nonzero(per_set[unsure_g, :, unsure_i] + rx2[unsure_i, None] <= tol + shift)
            rows_ = start + unsure_g[u] * set_rows + j
            hit = _exact_sq(y64, x64, rows_, unsure_i[u]) <= ry2[rows_]
            in_cand[unsure_g[u][hit], unsure_i[u][hit]] = True
        return counts, covered, in_cand

    group = group or m
    counts = np.zeros(m, dtype=np.int64)
    covered = np.zeros((m // group, n), dtype=bool)
    in_cand_ball = np.zeros((m // group, n), dtype=bool)
    for start, stop in _blocks(m, group, max(1, _BLOCK_BYTES // (4 * n))):
        c, cov, inc = block(start, stop)
        counts[start:stop] = c
        sets = slice(start // group, start // group + len(cov))
        covered[sets] |= cov  # a set split over blocks is covered if any block covers it
        in_cand_ball[sets] |= inc
    cand_radii = np.sqrt(ry2) if ry2 is not None else np.full(m, np.nan)
    if group == m:  # one candidate set
        covered, in_cand_ball = covered[0], in_cand_ball[0]
    return BallMembership(k, np.sqrt(rx2), cand_radii, counts, covered, in_cand_ball)


def _blocks(m: int, group: int, rows: int):
    """Row ranges of about `rows` rows (a few MB of distances, so the element-wise passes run in
    the last-level cache while BLAS threads the products) that hold whole sets of `group` rows or
    lie within one set."""
    if group <= rows:
        step = rows // group * group
        yield from ((s, min(s + step, m)) for s in range(0, m, step))
    else:
        for first in range(0, m, group):
            yield from ((s, min(s + rows, first + group)) for s in range(first, first + group, rows))


def _sign_test(s: np.ndarray, tol: float, exact) -> np.ndarray:
    """Boolean s <= 0, exact: entries with |s| <= tol are decided by `exact(rows, cols)`. Such
    entries are rare, so rows are screened by counts before any index arrays are built."""
    inside = s <= -tol
    maybe = np.count_nonzero(s <= tol, axis=1) != np.count_nonzero(inside, axis=1)
    rows = np.flatnonzero(maybe)
    if len(rows):
        sub = s[rows]
        j, i = np.nonzero((sub > -tol) & (sub <= tol))
        inside[rows[j], i] = exact(rows[j], i)
    return inside


def _exact_sq(a64: np.ndarray, b64: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """|a_rows - b_cols|^2 in float64, pairwise along the index arrays (chunked)."""
    out = np.empty(len(rows), dtype=np.float64)
    step = 4096
    for s in range(0, len(rows), step):
        diff = a64[rows[s : s + step]] - b64[cols[s : s + step]]
        out[s : s + step] = np.einsum("ij,ij->i", diff, diff)
    return out
