"""Every metric that needs pairwise distances, from one blocked pass over them.

Three sweeps of float32 products on numpy's BLAS (`nearest.nearest_candidates`), each block of
squared distances computed once and read, while it is in cache, by everything that needs it:

- X by X: the reference's k-NN radii, each reference item's nearest other item (the scale of the
  calibrated duplicate rule), the CMMD kernel sum over reference pairs;
- Y by Y: the candidate's radii, each candidate item's nearest other candidate item (duplicates
  within the candidate), the CMMD sum over candidate pairs;
- Y by X, once both radii are known: ball membership (precision, recall, density, coverage, tail
  coverage, per-item counts), each candidate item's nearest reference item (copies), the CMMD sum
  over cross pairs.

Exactness stays that of `balls` and `nearest`: the float32 products are only ever trusted outside
their rounding bound; radii, nearest neighbours and ball memberships that the bound leaves open are
recomputed in float64, so they are those of the exact distances. The CMMD sums are float32 terms
summed in float64, as in `metrics.cmmd`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from audit.balls import BallMembership, CrossMembership, refine_kth
from audit.index import as_float32_pair
from audit.kid import CubicSubsetSums, KidSubsets
from audit.nearest import Points, exact_nearest, expansion_tolerance, nearest_candidates, sq_norms, upper_part

EXTRA = 8  # neighbours fetched beyond those needed, so ties within the error bound are seen


@dataclass
class Nearest:
    """Each item's nearest neighbour in a set: exact squared Euclidean distance (float64) and row."""

    sq: np.ndarray
    index: np.ndarray

    @property
    def distance(self) -> np.ndarray:
        return np.sqrt(self.sq)


@dataclass
class PairwiseSummary:
    """What one pass over X X^T, Y Y^T and Y X^T yields (X the reference, Y the candidate)."""

    membership: BallMembership
    reference_nearest: Nearest  # nearest other reference item
    candidate_nearest: Nearest  # nearest other candidate item (empty with one candidate item)
    candidate_to_reference: Nearest  # nearest reference item of each candidate item
    rbf_deficits: dict[str, float] | None  # sums over all ordered pairs of 1 - exp(-gamma d^2)
    rbf_gamma: float | None
    kid_cubic: dict[str, np.ndarray] | None = None  # per KID subset, sums of t^2 (t + 3) (`audit.kid`)


class RbfDeficitSum:
    """Consumer: adds up 1 - exp(-gamma d^2) over all ordered pairs (expm1: the 1s that cancel in
    MMD are never added). In a within-set pass the matrix is symmetric: only the chunk's columns
    from its own first row on are read (the diagonal square as it is, the rest twice), and self
    pairs (d = 0, term 0) are set to exactly 0."""

    def __init__(self, gamma: float, self_pass: bool):
        self.gamma, self.self_pass, self.total = gamma, self_pass, 0.0
        self._buffer = np.empty(0, dtype=np.float32)

    def __call__(self, sq: np.ndarray, start: int, stop: int) -> None:
        upper = upper_part(sq, start, stop) if self.self_pass else sq
        t = _scratch(self, upper.shape)
        np.multiply(upper, -self.gamma, out=t)
        # (A d^2 that float32 rounding made slightly negative gives a term of about -gamma d^2:
        # below 1e-6 even for exact duplicates of unit vectors, so no clamp pass is spent on it.)
        np.expm1(t, out=t)
        if self.self_pass:
            rows = stop - start
            t[np.arange(rows), np.arange(rows)] = 0.0
            self.total -= 2 * float(t.sum(dtype=np.float64)) - float(t[:, :rows].sum(dtype=np.float64))
        else:
            self.total -= float(t.sum(dtype=np.float64))


class MembershipConsumer:
    """Consumer: feeds the blocks to a `CrossMembership`, with their error bound (`_tolerance`
    from the norms of the vectors the products were computed on)."""

    def __init__(self, cross: CrossMembership, query_sq_norms: np.ndarray, max_point_sq_norm: float, d: int):
        self.cross, self.query_sq_norms, self.max_point_sq_norm, self.d = cross, query_sq_norms, max_point_sq_norm, d
        self._buffer = np.empty(0, dtype=np.float32)

    def __call__(self, sq: np.ndarray, start: int, stop: int) -> None:
        tol = float(_tolerance(self.query_sq_norms[start:stop].max(keepdims=True), self.max_point_sq_norm, self.d)[0])
        self.cross.add(sq, tol, start, stop, scratch=_scratch(self, sq.shape))


def _tolerance(query_sq_norms: np.ndarray, max_point_sq_norm: float, d: int) -> np.ndarray:
    """Error bound of a squared distance computed on the centred float32 vectors: the expansion's
    on length-d products, plus the centring's (each centred vector is off by at most u times its
    norm, which moves a squared distance by at most 3u (|q| + |p|)^2): counting 4 more terms in
    the expansion's bound covers it (it adds 8u (|q| + |p|)^2)."""
    return expansion_tolerance(query_sq_norms, max_point_sq_norm, d + 4)


def _scratch(owner, shape: tuple[int, int]) -> np.ndarray:
    """A reusable float32 buffer of `shape` (blocks shrink only at the end of a sweep)."""
    size = shape[0] * shape[1]
    if owner._buffer.size < size:
        owner._buffer = np.empty(size, dtype=np.float32)
    return owner._buffer[:size].reshape(shape)


def pairwise_summary(reference: np.ndarray, candidate: np.ndarray, k: int = 5, rbf_gamma: float | None = None,
                     kid_subsets: KidSubsets | None = None) -> PairwiseSummary:
    """One pass over the three distance matrices (see the module docstring). `rbf_gamma`: also sum
    the Gaussian-kernel deficits CMMD needs; `kid_subsets`: also sum KID's cubic parts over them."""
    x, y = as_float32_pair(reference, candidate, k)
    d = x.shape[1]
    # The products run on vectors centred on the reference mean: distances do not change, and the
    # expansion |q|^2 + |p|^2 - 2 q.p loses far fewer digits (features far from the origin). Every
    # exact re-check is made on the vectors as given.
    mean = x.mean(axis=0, dtype=np.float64)
    xc, yc = (x - mean).astype(np.float32), (y - mean).astype(np.float32)
    nxc, nyc = sq_norms(xc), sq_norms(yc)
    deficits, cubic = {}, {}
    if kid_subsets is not None:
        nx, ny = sq_norms(x), sq_norms(y)
        sets_x, sets_y = kid_subsets.indicators(len(x), len(y))
        kid_consumers = {"xx": CubicSubsetSums(nx, nx, sets_x, sets_x, d, self_pass=True),
                         "yy": CubicSubsetSums(ny, ny, sets_y, sets_y, d, self_pass=True),
                         "xy": CubicSubsetSums(ny, nx, sets_y, sets_x, d, self_pass=False)}

    def extra_consumers(name: str, self_pass: bool) -> tuple:
        extra = []
        if rbf_gamma is not None:
            extra.append(RbfDeficitSum(rbf_gamma, self_pass=self_pass))
        if kid_subsets is not None:
            extra.append(kid_consumers[name])
        return tuple(extra)

    def collect(name: str, consumers: tuple) -> None:
        for consumer in consumers:
            if isinstance(consumer, RbfDeficitSum):
                deficits[name] = consumer.total
            elif isinstance(consumer, CubicSubsetSums):
                cubic[name] = consumer.sums

    def self_sweep(z: np.ndarray, zc: np.ndarray, norms: np.ndarray, points: Points, name: str
                   ) -> tuple[np.ndarray, Nearest]:
        consumers = extra_consumers(name, self_pass=True)
        fetch = min(len(z) - 1, k + EXTRA)
        approx, idx = nearest_candidates(zc, points, fetch, self_start=0, consumers=consumers)
        collect(name, consumers)
        tol = _tolerance(norms, float(norms.max()), d)
        radii = refine_kth(z, approx, idx, k, group=len(z), all_fetched=fetch >= len(z) - 1, tol=tol)
        return radii, Nearest(*exact_nearest(z, z, approx, idx, tol, self_start=0))

    x_points = Points(xc)
    rx2, reference_nearest = self_sweep(x, xc, nxc, x_points, "xx")
    ry2, candidate_nearest = self_sweep(y, yc, nyc, Points(yc), "yy")

    cross = CrossMembership(x, y, rx2, ry2)
    consumers = (MembershipConsumer(cross, nyc, float(nxc.max()), d), *extra_consumers("xy", self_pass=False))
    fetch = min(len(x), 1 + EXTRA)
    approx, idx = nearest_candidates(yc, x_points, fetch, consumers=consumers)
    collect("xy", consumers)
    tol = _tolerance(nyc, float(nxc.max()), d)
    candidate_to_reference = Nearest(*exact_nearest(y, x, approx, idx, tol))
    return PairwiseSummary(cross.result(k), reference_nearest, candidate_nearest, candidate_to_reference,
                           deficits or None, rbf_gamma, cubic or None)
