"""The projector's inputs measured on an audit: real fraction p, sampling bias lambda, size n.

p = 1 - the detectors' synthetic share (its interval carried over). lambda by moments: with
synthetic items sharing the reference's mean (MAD's model: sampling bias shrinks spread, not
location), the candidate's total variance is

    tr Cov(candidate) = p tr Cov(reference) + (1 - p) lambda tr Cov(reference),

so lambda = (r - p) / (1 - p) with r the ratio of total variances. Its interval propagates p's
interval and the sampling error of both traces (delta method) by simulation. When the candidate
is nearly all real, lambda is barely identified and the interval says so.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

_Z = 1.959963984540054


def _trace_and_se(x: np.ndarray) -> tuple[float, float]:
    """Total variance (mean squared distance to the mean) and its standard error."""
    x = np.asarray(x, dtype=np.float64)
    sq = np.einsum("ij,ij->i", x - x.mean(axis=0), x - x.mean(axis=0))
    return float(sq.mean()), float(sq.std(ddof=1) / math.sqrt(len(sq)))


def lambda_from_moments(r: float, p: float) -> float:
    """lambda solving r = p + (1 - p) lambda, clipped to [1e-3, 1] (1 when nothing is synthetic)."""
    if p >= 1:
        return 1.0
    return float(np.clip((r - p) / (1 - p), 1e-3, 1.0))


def inputs_from_audit(reference: np.ndarray, candidate: np.ndarray, synthetic_share: float,
                      share_interval: tuple[float | None, float | None] | None = None, draws: int = 4000,
                      seed: int = 0) -> dict[str, Any]:
    """Measured p, lambda (with 95% intervals) and n for `project`. `share_interval` is the
    synthetic share's 95% interval (None or a missing end: a point estimate)."""
    if not math.isfinite(synthetic_share):
        raise ValueError("the synthetic share is unknown: the forecast needs a measured share")
    p = float(np.clip(1 - synthetic_share, 0, 1))
    ref_trace, ref_se = _trace_and_se(reference)
    cand_trace, cand_se = _trace_and_se(candidate)
    r = cand_trace / ref_trace
    lo, hi = share_interval or (None, None)
    p_sd = (float(hi) - float(lo)) / (2 * _Z) if lo is not None and hi is not None else 0.0
    rng = np.random.default_rng(seed)
    p_draws = np.clip(rng.normal(p, p_sd, draws), 0, 1)
    r_draws = rng.normal(cand_trace, cand_se, draws) / rng.normal(ref_trace, ref_se, draws)
    lam_draws = np.array([lambda_from_moments(rr, pp) for rr, pp in zip(r_draws, p_draws)])
    return {
        "real_fraction": p,
        "real_fraction_interval": [float(np.clip(1 - float(hi), 0, 1)), float(np.clip(1 - float(lo), 0, 1))]
        if p_sd > 0 else None,
        "lam": lambda_from_moments(r, p),
        "lam_interval": [float(np.percentile(lam_draws, 2.5)), float(np.percentile(lam_draws, 97.5))],
        "spread_ratio": r,
        "n": int(len(candidate)),
        "method": "p = 1 - synthetic share; lambda from total variances, r = p + (1 - p) lambda",
    }
