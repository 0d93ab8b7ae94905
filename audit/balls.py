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
from audit.nearest import exact_sq, expansion_tolerance, nearest_candidates, sq_norms

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
    return refine_kth(x, approx, idx, k, group=n, all_fetched=fetch >= n - 1)


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
    norms = sq_norms(x)
    # float32 expansion error <= gamma_(d+4) (sqrt(nx) + sqrt(ny))^2, bounded per row.
    tol = expansion_tolerance(norms, norms.max(), d).reshape(kth.shape)
    low, high = (kth - 2 * tol)[:, :, None], (kth + 2 * tol)[:, :, None]
    sure = np.count_nonzero(approx < low, axis=2).reshape(n)  # surely among the k nearest
    g, r, c = np.nonzero((approx >= low) & (approx <= high))  # may be the k-th: compute exactly
    rows, cols = g * group + r, g * group + c
    exact = exact_sq(x, x, rows, cols)
    order = np.lexsort((exact, rows))
    first = np.searchsorted(rows[order], np.arange(n))
    return exact[order][first + (k - sure) - 1]


def refine_kth(x: np.ndarray, approx: np.ndarray, idx: np.ndarray, k: int, group: int, all_fetched: bool,
                tol: np.ndarray | None = None) -> np.ndarray:
    """Exact k-th smallest squared distance per row, from sorted approximate candidates (float32
    expansion |x|^2 + |y|^2 - 2 x.y, self excluded) and their indices. Only candidates that tie
    with the k-th within the rounding bound (`tol` per row, by default that of the expansion on x
    itself) are recomputed; a row whose ties may reach past the fetched candidates is brute-forced
    within its group."""
    n, d = x.shape
    if tol is None:
        norms = sq_norms(x)
        tol = expansion_tolerance(norms, norms.max(), d)
    kth = approx[:, k - 1]
    sure = approx < (kth - 2 * tol)[:, None]  # surely among the k nearest
    unsure = ~sure & (approx <= (kth + 2 * tol)[:, None])  # may be the k-th: compute exactly
    complete = (approx[:, -1] > kth + 2 * tol) | all_fetched  # every possible tie was fetched

    rows, cols = np.nonzero(unsure)
    exact = np.full(approx.shape, np.inf)
    exact[rows, cols] = exact_sq(x, x, rows, idx[rows, cols])
    exact.sort(axis=1)
    need = k - sure.sum(axis=1)  # the k-th overall is this order statistic among the unsure ones
    radii = exact[np.arange(n), need - 1]
    for i in np.flatnonzero(~complete):  # a wall of ties beyond what was fetched: brute force
        peers = np.arange(i // group * group, (i // group + 1) * group)
        row = exact_sq(x, x, np.full(group, i), peers)
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
    """The cross pass on its own (see `CrossMembership`). With `group`, y is a stack of sets of
    that many rows, answered set by set."""
    n, d = x.shape
    m = y.shape[0]
    cross = CrossMembership(x, y, rx2, ry2, group)
    # Augmented operands: [y, 1, |y|^2] . [-2x, |x|^2, 1] = d^2 in one GEMM, whose error is at most
    # gamma_(d+2) sum_t |a_t b_t| <= gamma_(d+2) (|x| + |y|)^2 (also covering the float32
    # rounding of the two extra columns).
    x_aug_t = np.empty((d + 2, n), dtype=np.float32)
    x_aug_t[:d] = -2.0 * x.T
    x_aug_t[d] = cross.nx
    x_aug_t[d + 1] = 1.0
    y_aug = np.empty((m, d + 2), dtype=np.float32)
    y_aug[:, :d] = y
    y_aug[:, d] = 1.0
    y_aug[:, d + 1] = cross.ny
    max_x = float(np.sqrt(cross.nx.max()))
    for start, stop in _blocks(m, cross.group, max(1, _BLOCK_BYTES // (4 * n))):
        sq = y_aug[start:stop] @ x_aug_t  # (b, n): d^2
        reach = (float(np.sqrt(cross.ny[start:stop].max())) + max_x) ** 2
        cross.add(sq, _gamma(d + 4) * reach, start, stop)
    return cross.result(k)


def _float32_below(v: np.ndarray) -> np.ndarray:
    """Float32 values <= v (rounded toward -inf): a comparison with them stays on the safe side."""
    f = v.astype(np.float32)
    return np.where(f > v, np.nextafter(f, np.float32(-np.inf)), f)


def _float32_above(v: np.ndarray) -> np.ndarray:
    f = v.astype(np.float32)
    return np.where(f < v, np.nextafter(f, np.float32(np.inf)), f)


class CrossMembership:
    """Ball membership between a reference x and a candidate y, accumulated from blocks of
    approximate squared distances d(y_j, x_i)^2 (rows start:stop of y by all of x, each entry
    within `tol` of the exact value). Without candidate radii (ry2 None) recall is skipped (left
    all False). With `group`, y is a stack of sets of that many rows, answered set by set; a block
    holds whole sets or lies within one."""

    def __init__(self, x: np.ndarray, y: np.ndarray, rx2: np.ndarray, ry2: np.ndarray | None, group: int | None = None):
        self.x, self.y = x, y
        self.nx, self.ny = sq_norms(x), sq_norms(y)
        self.rx2, self.ry2 = rx2, ry2
        self.ry2_f32 = ry2.astype(np.float32) if ry2 is not None else None
        m, n = len(y), len(x)
        self.group = group or m
        self.counts = np.zeros(m, dtype=np.int64)
        self.covered = np.zeros((m // self.group, n), dtype=bool)
        self.in_cand_ball = np.zeros((m // self.group, n), dtype=bool)
        self._tol = None

    def add(self, sq: np.ndarray, tol: float, start: int, stop: int, scratch: np.ndarray | None = None) -> None:
        """One block (`sq` is left as it is; `scratch`, of its shape, is used if given)."""
        rx2, ry2, n = self.rx2, self.ry2, sq.shape[1]
        if self._tol != tol:  # float32 thresholds that settle every entry farther than tol from r_x^2
            self._tol, self._sure_in, self._maybe_in = tol, _float32_below(rx2 - tol), _float32_above(rx2 + tol)
        inside = sq <= self._sure_in
        unsure = sq <= self._maybe_in
        np.not_equal(unsure, inside, out=unsure)
        rows = np.flatnonzero(unsure.any(axis=1))
        if len(rows):
            j, i = np.nonzero(unsure[rows])
            inside[rows[j], i] = exact_sq(self.y, self.x, rows[j] + start, i) <= rx2[i]
        self.counts[start:stop] = _row_counts(inside)
        set_rows = min(self.group, stop - start)
        sets = slice(start // self.group, start // self.group + (stop - start) // set_rows)
        self.covered[sets] |= inside.reshape(-1, set_rows, n).any(axis=1)  # a set split over blocks
        if ry2 is None:
            return
        # Recall needs one bit per (set, reference point): min over the set's rows j of
        # d^2 - r_y(j)^2, computed in float32: beyond tol, the rounding of r_y^2 to float32 and
        # that of the difference (relative, so small where it matters, near 0).
        diff = np.subtract(sq, self.ry2_f32[start:stop, None], out=scratch)
        per_set = diff.reshape(-1, set_rows, n)
        col_min = per_set.min(axis=1)
        margin = 1.01 * tol + 4.0 * _U * float(ry2[start:stop].max())
        in_cand = col_min <= -margin
        unsure_g, unsure_i = np.nonzero(np.abs(col_min) <= margin)
        if len(unsure_g):
            u, j = np.nonzero(per_set[unsure_g, :, unsure_i] <= margin)
            rows_ = start + unsure_g[u] * set_rows + j
            hit = exact_sq(self.y, self.x, rows_, unsure_i[u]) <= ry2[rows_]
            in_cand[unsure_g[u][hit], unsure_i[u][hit]] = True
        self.in_cand_ball[sets] |= in_cand

    def result(self, k: int) -> BallMembership:
        m = len(self.counts)
        cand_radii = np.sqrt(self.ry2) if self.ry2 is not None else np.full(m, np.nan)
        covered, in_cand_ball = self.covered, self.in_cand_ball
        if self.group == m:  # one candidate set
            covered, in_cand_ball = covered[0], in_cand_ball[0]
        return BallMembership(k, np.sqrt(self.rx2), cand_radii, self.counts, covered, in_cand_ball)


def _row_counts(mask: np.ndarray) -> np.ndarray:
    """True entries per row of a boolean matrix (bytes summed in uint16 over column chunks that
    cannot overflow it: several times faster than count_nonzero along an axis)."""
    as_bytes = mask.view(np.uint8)
    total = np.zeros(len(mask), dtype=np.int64)
    for c in range(0, mask.shape[1], 65535):
        total += as_bytes[:, c : c + 65535].sum(axis=1, dtype=np.uint16)
    return total


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
