"""Float32 rounding bounds for tests, derived here from the classical error analysis (Higham,
"Accuracy and Stability of Numerical Algorithms", ch. 3), so a tolerance follows from the inputs'
norms and dimension and holds under any BLAS kernel, summation order or thread count.

u = 2^-24 is float32's unit roundoff and gamma(n) = n u / (1 - n u). A dot product of length n
summed in any order is within gamma(n) sum |a_i b_i| <= gamma(n) |a| |b| of the exact one.
"""

from __future__ import annotations

import numpy as np

U32 = 2.0**-24


def gamma(n: int, u: float = U32) -> float:
    return n * u / (1.0 - n * u)


def sq_distance_bound(q: np.ndarray, x: np.ndarray, extra_terms: int = 4) -> np.ndarray:
    """(len(q), len(x)): a bound on the error of any float32 evaluation of |q|^2 + |x|^2 - 2 q.x
    that forms the three terms as dot products of length <= d + 1 and adds them (a few more
    roundings, `extra_terms`): each term is within gamma(d + extra) of its size, and the three sizes
    add up to (|q| + |x|)^2."""
    d = q.shape[1]
    nq = np.linalg.norm(q.astype(np.float64), axis=1)
    nx = np.linalg.norm(x.astype(np.float64), axis=1)
    return gamma(d + extra_terms) * (nq[:, None] + nx[None, :]) ** 2


def sq_distances64(q: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Squared distances by the expansion in float64, and the bound on their own error (the same
    analysis at float64's unit roundoff, about 10^-9 of the float32 bound)."""
    q64, x64 = q.astype(np.float64), x.astype(np.float64)
    sq = (q64 * q64).sum(1)[:, None] + (x64 * x64).sum(1)[None, :] - 2 * q64 @ x64.T
    return sq, sq_distance_bound(q, x) * (gamma(q.shape[1] + 4, 2.0**-53) / gamma(q.shape[1] + 4))


def assert_within(actual, expected, bound, what: str = "values") -> None:
    """|actual - expected| <= bound elementwise (broadcast), naming the worst entry if not."""
    excess = np.abs(np.asarray(actual, np.float64) - expected) - bound
    if np.any(excess > 0):
        worst = np.unravel_index(np.argmax(excess), excess.shape)
        raise AssertionError(f"{what}: {np.count_nonzero(excess > 0)} entries off by more than their bound, "
                             f"worst at {worst} by {excess[worst]:.3g} beyond it")
