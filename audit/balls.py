"""Exact k-NN ball membership between a reference set X and a candidate set Y.

Precision, recall, density and coverage (Kynkäänniemi et al. 2019; Naeem et al. 2020) all ask
which k-NN balls contain which points, each ball with its own radius r_k (distance to the k-th
nearest neighbour in its own set, itself excluded). A plain k-NN search of Y over X is exact only
if it searches far enough; instead this module makes one blocked pass over the X-Y distance matrix
and answers every ball question from it:

    inside_x[j, i] = d(y_j, x_i) <= r_k(x_i)   -> density, precision (per y), coverage (per x)
    inside_y[j, i] = d(y_j, x_i) <= r_k(y_j)   -> recall (per x)

Squared distances come from one float32 GEMM per block on augmented vectors,
[y, 1, |y|^2] . [-2x, |x|^2 - r_x^2, 1] = d^2 - r_x^2, so a comparison is a sign test. The GEMM's
rounding error is bounded (|error| <= gamma_n * sum |terms|); entries whose sign that bound cannot
settle are recomputed directly in float64. The result is exact (membership uses `<=`, so an exact
duplicate at distance 0 is inside a ball of radius 0), at the cost of the matrix products plus a
few passes over each block.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from audit.index import ExactIndex, as_float32_matrix

_U = 2.0**-24  # float32 unit roundoff
_BLOCK_BYTES = 16 << 20  # one float32 block of the distance matrix


@dataclass
class BallMembership:
    """Which balls hold which points. N = len(reference), M = len(candidate)."""

    k: int
    ref_radii: np.ndarray  # (N,) float64, r_k of each reference point within the reference
    cand_radii: np.ndarray  # (M,) float64, r_k of each candidate point within the candidate
    cand_ball_counts: np.ndarray  # (M,) int64, how many reference balls contain each candidate point
    ref_covered: np.ndarray  # (N,) bool, reference ball holds at least one candidate point
    ref_in_cand_ball: np.ndarray  # (N,) bool, reference point lies in some candidate ball


def knn_sq_radii(x: np.ndarray, k: int) -> np.ndarray:
    """Squared distance from each row of x to its k-th nearest other row (float64, exact)."""
    return ExactIndex(x).self_search(k).sq_distances[:, k - 1]


def ball_membership(reference: np.ndarray, candidate: np.ndarray, k: int = 5) -> BallMembership:
    x = as_float32_matrix(reference, "reference")
    y = as_float32_matrix(candidate, "candidate")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"reference has dimension {x.shape[1]}, candidate {y.shape[1]}")
    return _membership(x, y, knn_sq_radii(x, k), knn_sq_radii(y, k), k)


def _membership(x: np.ndarray, y: np.ndarray, rx2: np.ndarray, ry2: np.ndarray, k: int) -> BallMembership:
    n, d = x.shape
    m = y.shape[0]
    x64, y64 = x.astype(np.float64), y.astype(np.float64)
    nx = np.einsum("ij,ij->i", x64, x64)
    ny = np.einsum("ij,ij->i", y64, y64)

    # Augmented operands: (y_aug . x_aug) = |y|^2 + |x|^2 - r_x^2 - 2 y.x = d^2 - r_x^2.
    x_aug = np.empty((n, d + 2), dtype=np.float32)
    x_aug[:, :d] = -2.0 * x
    x_aug[:, d] = nx - rx2
    x_aug[:, d + 1] = 1.0
    y_aug = np.empty((m, d + 2), dtype=np.float32)
    y_aug[:, :d] = y
    y_aug[:, d] = 1.0
    y_aug[:, d + 1] = ny
    x_aug_t = np.ascontiguousarray(x_aug.T)
    rx2_f32 = rx2.astype(np.float32)

    # Error bound of one GEMM entry: gamma_(d+2) * sum_t |a_t b_t|, where
    # sum |a_t b_t| <= 2|x||y| + |nx - rx2| + ny <= nx + |nx - rx2| + 2 ny (also covers the
    # float32 rounding of the two extra columns). Doubled for safety; entries within it are redone.
    gamma = 2.0 * (d + 4) * _U / (1.0 - (d + 4) * _U)
    bound_x = float(np.max(nx + np.abs(nx - rx2), initial=0.0))
    # Recall compares d^2 - r_x^2 + r_x^2 - r_y^2 with 0: two more float32 roundings of size ~r^2.
    shift_bound = 4.0 * _U * float(max(rx2.max(initial=0.0), ry2.max(initial=0.0)))

    counts = np.zeros(m, dtype=np.int64)
    covered = np.zeros(n, dtype=bool)
    in_cand_ball = np.zeros(n, dtype=bool)
    rows = max(1, _BLOCK_BYTES // (4 * n))
    for start in range(0, m, rows):
        stop = min(start + rows, m)
        s = y_aug[start:stop] @ x_aug_t  # (b, n): d^2 - r_x^2
        tol = gamma * (bound_x + 2.0 * float(ny[start:stop].max()))

        inside = _sign_test(s, tol, lambda j, i: _exact_sq(y64, x64, j + start, i) <= rx2[i])
        counts[start:stop] = np.count_nonzero(inside, axis=1)
        covered |= inside.any(axis=0)

        # d^2 - r_y^2 = s + r_x^2 - r_y^2, in place.
        s += rx2_f32
        s -= ry2[start:stop, None].astype(np.float32)
        inside_y = _sign_test(s, tol + shift_bound,
                              lambda j, i: _exact_sq(y64, x64, j + start, i) <= ry2[j + start])
        in_cand_ball |= inside_y.any(axis=0)

    return BallMembership(
        k=k,
        ref_radii=np.sqrt(rx2),
        cand_radii=np.sqrt(ry2),
        cand_ball_counts=counts,
        ref_covered=covered,
        ref_in_cand_ball=in_cand_ball,
    )


def _sign_test(s: np.ndarray, tol: float, exact) -> np.ndarray:
    """Boolean s <= 0, exact: entries with |s| <= tol are decided by `exact(rows, cols)`."""
    inside = s <= -tol
    maybe = s <= tol
    unsure_j, unsure_i = np.nonzero(maybe ^ inside)
    if len(unsure_j):
        inside[unsure_j, unsure_i] = exact(unsure_j, unsure_i)
    return inside


def _exact_sq(a64: np.ndarray, b64: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """|a_rows - b_cols|^2 in float64, pairwise along the index arrays (chunked)."""
    out = np.empty(len(rows), dtype=np.float64)
    step = 4096
    for s in range(0, len(rows), step):
        diff = a64[rows[s : s + step]] - b64[cols[s : s + step]]
        out[s : s + step] = np.einsum("ij,ij->i", diff, diff)
    return out
