"""Closed forms for the Gaussian stand-in: the fresh loop's limit, and MAD's effective sample size.

Everything here is in the reference's principal axes, where the true covariance is diag(s).
In whitened coordinates every loop is the same rotation-invariant process whatever s is (real
items are N(0, I); the model of generation t is N(mu_t, C_t)); s only enters through the Frechet
distance (FD) of the fitted model to the truth:

    FD_t = mu_t' S mu_t + tr(S C_t) + tr S - 2 tr (S C_t S)^(1/2).

With E C_t = c I, E mu_t mu_t' = v I and C_t's fluctuation around c I Wishart-shaped with m
degrees of freedom (relative entry variance 1/m):

    E FD = v tr S + (1 - sqrt c)^2 tr S + 2 sqrt(c) g(m),   g(m) = tr S - E tr (S W_m S / m)^(1/2).

For a maximum-likelihood fit of n real items this is exact (c = (n-1)/n, m = n - 1); g is
measured once per spectrum by a seeded Monte Carlo of Wishart matrices (`SqrtDeficit`) and is
about K / (4m) for large m, K = sum_ij s_i s_j / (s_i + s_j) + tr S / 2 (d(d + 1) / 4 for an
isotropic S): the covariance error, d^2 / (4n), dominates the mean error, d / n, in high
dimension. For the fresh loop's limit, c and v are exact fixed points and m comes from the
stationary variance of C_t (second order); the tests check both against brute-force loops.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np


def fresh_fixed_point(real_fraction: float, lam: float) -> float:
    """Large-n limit of the fresh loop's covariance scale: c* = p / (1 - lambda (1 - p))."""
    return real_fraction / (1 - lam * (1 - real_fraction))


@dataclass(frozen=True)
class LoopLimit:
    """The fresh loop's stationary state in whitened units: E C = c I, E mu mu' = v I, and the
    Wishart-equivalent degrees of freedom m of C's fluctuation (Var C_ij = c^2 (1 + [i=j]) / m)."""

    c: float
    v: float
    m: float


def fresh_limit(n_real: float, n_synthetic: float, lam: float) -> LoopLimit:
    """Stationary moments of the fresh loop with n_real real and n_synthetic synthetic items a
    generation (n_real >= 1). c and v solve the exact mean recursion's fixed point; the entry
    variance a of C solves its second-order recursion:
        n^2 a = (n_r - 1) + lam^2 (n_s - 1)^2 a + lam^2 (n_s - 1)(a + c^2) + (n_r n_s b / n)^2,
    b = 1/n_r + lam c / n_s + v the per-coordinate variance of the two groups' mean difference."""
    nr, ns = float(n_real), float(n_synthetic)
    if nr < 1:
        raise ValueError("the fresh loop needs at least one real item a generation")
    n = nr + ns
    if ns == 0:
        return LoopLimit((n - 1) / n, 1 / n, n - 1)
    # v = (n_r + n_s lam c) / (n^2 - n_s^2); substitute into c = _next_scale(c, v) and solve for c.
    denom_v = n * n - ns * ns
    coef = n - (ns - 1) * lam - nr * lam / n - (nr * ns / n) * ns * lam / denom_v
    c = ((nr - 1) + ns / n + (nr * ns / n) * nr / denom_v) / coef
    v = (nr + ns * lam * c) / denom_v
    b = 1 / nr + lam * c / ns + v
    a = ((nr - 1) + lam**2 * (ns - 1) * c * c + (nr * ns * b / n) ** 2) / (n * n - lam**2 * (ns - 1) ** 2 - lam**2 * (ns - 1))
    return LoopLimit(c, v, c * c / a)


class SqrtDeficit:
    """g(m) = tr S - E tr (S W_m S / m)^(1/2) for W_m ~ Wishart(m, I_d), S = diag(spectrum):
    how far the square-root term of the FD falls below tr S when the fitted covariance
    fluctuates like m items' scatter. Measured once by a seeded Monte Carlo on a log grid of m
    (common random numbers across the grid, so g is smooth in m; the linear term is removed as a
    control variate), interpolated in log-log; K / (4m) beyond the grid."""

    def __init__(self, spectrum: np.ndarray, draws: int | None = None, points: int = 40, seed: int = 0):
        s = np.sort(np.asarray(spectrum, dtype=np.float64))[::-1]
        if s.ndim != 1 or len(s) == 0 or np.any(s <= 0) or not np.all(np.isfinite(s)):
            raise ValueError("the spectrum must be a non-empty vector of positive variances")
        # One draw's relative error on g is about 2 / d: about 1% needs 40,000 / d^2 draws.
        self.draws = draws or int(np.clip(40_000 / len(s) ** 2, 48, 40_000))
        self.s, self.points, self.seed = s, points, seed

    @property
    def d(self) -> int:
        return len(self.s)

    @cached_property
    def K(self) -> float:
        s = self.s
        return float(np.sum(np.outer(s, s) / (s[:, None] + s[None, :])) + s.sum() / 2)

    @cached_property
    def _grid(self) -> tuple[np.ndarray, np.ndarray]:
        from scipy.stats import chi2

        d, s = self.d, self.s
        rng = np.random.default_rng(self.seed)
        m_max = 400.0 * (d + 1)
        grid = np.unique(np.r_[np.arange(1, min(d, 8) + 1), np.geomspace(1, m_max, self.points)].round(6))
        # Common random numbers: Gaussian rows for rank-deficient draws, and for Bartlett's
        # construction the below-diagonal normals and the uniforms behind the chi-square diagonal.
        rows = rng.standard_normal((self.draws, d, d))
        lower = np.tril(rng.standard_normal((self.draws, d, d)), -1)
        uniforms = rng.uniform(size=(self.draws, d))
        g = np.empty(len(grid))
        for i, m in enumerate(grid):
            if m <= d - 1:  # rank-deficient: m (rounded) Gaussian rows
                z = rows[:, : max(1, int(round(m))), :]
                c = np.einsum("rki,rkj->rij", z, z) / m
            else:  # Bartlett: W = L L', L lower triangular with chi(m - i) on the diagonal
                a = lower.copy()
                a[:, np.arange(d), np.arange(d)] = np.sqrt(chi2.ppf(uniforms, m - np.arange(d)))
                c = a @ a.transpose(0, 2, 1) / m
            scs = s[:, None] * c * s[None, :]
            root_trace = np.sqrt(np.clip(np.linalg.eigvalsh(scs), 0, None)).sum(axis=1)
            linear = 0.5 * (np.einsum("i,rii->r", s, c) + s.sum())  # E = tr S, first-order term
            g[i] = float(np.mean(linear - root_trace))
        return grid, np.maximum(g, 1e-300)

    def __call__(self, m: float) -> float:
        if not m > 0:
            raise ValueError(f"degrees of freedom must be positive, got {m}")
        grid, g = self._grid
        if m >= grid[-1]:
            return self.K / (4 * m) * (g[-1] * 4 * grid[-1] / self.K)  # ~1 / m beyond the grid
        return float(np.exp(np.interp(math.log(max(m, grid[0])), np.log(grid), np.log(g))))


@dataclass(frozen=True)
class Admissibility:
    """MAD eq. 4 for one setting, in FD of the fitted model (MAD's convention)."""

    n_real: int
    n_synthetic: int
    lam: float
    fd_real_only: float  # E FD of a fit to n_real real items
    fd_fresh_limit: float  # E FD at the fresh loop's limit with the synthetic items added
    effective_sample_size: float  # real items alone that are as good as the mixture
    max_admissible_synthetic: float  # largest n_s that keeps n_e >= n_real (inf: no limit found)

    @property
    def admissible(self) -> bool:
        return self.effective_sample_size >= self.n_real

    def to_dict(self) -> dict:
        def finite(x):
            return x if math.isfinite(x) else None

        return {"n_real": self.n_real, "n_synthetic": self.n_synthetic, "lam": self.lam,
                "fd_convention": "fitted model N(mu_t, Sigma_t) against the truth (MAD eq. 4)",
                "fd_real_only": self.fd_real_only, "fd_fresh_limit": self.fd_fresh_limit,
                "effective_sample_size": finite(self.effective_sample_size), "admissible": self.admissible,
                "max_admissible_synthetic": finite(self.max_admissible_synthetic)}


class FrechetForecast:
    """Expected FD of maximum-likelihood Gaussian fits to a truth N(mu, diag(spectrum))."""

    def __init__(self, spectrum: np.ndarray, deficit: SqrtDeficit | None = None):
        self.deficit = deficit or SqrtDeficit(spectrum)
        self.trace = float(self.deficit.s.sum())

    def expected_fd(self, limit: LoopLimit) -> float:
        c = limit.c
        return limit.v * self.trace + (1 - math.sqrt(c)) ** 2 * self.trace + 2 * math.sqrt(c) * self.deficit(limit.m)

    def real_only(self, n: float) -> float:
        """E FD of the fit to n real items (exact up to the Monte Carlo error of g)."""
        return self.expected_fd(fresh_limit(n, 0, 1.0))

    def fresh(self, n_real: float, n_synthetic: float, lam: float) -> float:
        """E FD at the fresh loop's limit."""
        return self.expected_fd(fresh_limit(n_real, n_synthetic, lam))

    def effective_sample_size(self, n_real: float, n_synthetic: float, lam: float) -> float:
        """n_e: the number of real items alone whose fit is as far from the truth as the fresh
        loop's limit (MAD eq. 4); inf when the limit beats any real-only fit we can represent."""
        target = self.fresh(n_real, n_synthetic, lam)
        lo, hi = 2.0, 1e12
        if self.real_only(hi) >= target:
            return math.inf
        if self.real_only(lo) <= target:
            return lo
        for _ in range(200):  # bisection in log n
            mid = math.sqrt(lo * hi)
            lo, hi = (mid, hi) if self.real_only(mid) > target else (lo, mid)
            if hi / lo < 1 + 1e-6:
                break
        return math.sqrt(lo * hi)

    def max_admissible_synthetic(self, n_real: float, lam: float, cap_factor: float = 1e4) -> float:
        """The largest n_s whose fresh-loop limit is no farther from the truth than a fit to the
        n_real real items alone (n_e >= n_real). The limit's FD first falls with n_s (more items)
        and then rises (lambda shrinks the spread): scan a log grid, then bisect the crossing.
        inf when no crossing is found below cap_factor * n_real."""
        budget = self.real_only(n_real)
        grid = np.unique(np.geomspace(1, cap_factor * n_real, 120).round())
        ok = np.array([self.fresh(n_real, ns, lam) <= budget for ns in grid])
        if not ok[0]:
            return 0.0
        bad = np.flatnonzero(~ok)
        if len(bad) == 0:
            return math.inf
        lo, hi = grid[bad[0] - 1], grid[bad[0]]
        while hi - lo > 1:
            mid = math.floor((lo + hi) / 2)
            lo, hi = (mid, hi) if self.fresh(n_real, mid, lam) <= budget else (lo, mid)
        return float(lo)

    def admissibility(self, n_real: int, n_synthetic: int, lam: float) -> Admissibility:
        return Admissibility(int(n_real), int(n_synthetic), float(lam), self.real_only(n_real),
                             self.fresh(n_real, n_synthetic, lam),
                             self.effective_sample_size(n_real, n_synthetic, lam),
                             self.max_admissible_synthetic(n_real, lam))
