"""The projector's inputs measured on an audit: real fraction p, sampling bias lambda, size n, and
the synthetic part described by what it is.

p = 1 - the detectors' synthetic share (its interval carried over). lambda by moments, where it is
defined. With the candidate a mixture p R + (1 - p) S of a real part R like the reference and a
synthetic part S, the mixture's total variance is

    tr Cov(candidate) = p tr Cov(R) + (1 - p) tr Cov(S) + p (1 - p) |mean(S) - mean(R)|^2,

and mean(S) = (mean(candidate) - p mean(R)) / (1 - p). So the synthetic part's own offset and
spread ratio s = tr Cov(S) / tr Cov(R) follow from the moments of both sets. MAD's sampling bias
shrinks spread around the same mean: lambda = s where the offset is small next to the spread and
s <= 1. Real generators also move their output (classifier-free guidance in CLIP space pushes
items past the class means): a synthetic part offset by more than OFFSET_LIMIT of the reference's
RMS spread, or spread more than the reference (s above 1 beyond its sampling error), has no
lambda; the inputs then say so (`lam_measured` False, `lam_note`) instead of clipping at 1.
Intervals propagate p's interval and the sampling error of both sets' moments by simulation.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

_Z = 1.959963984540054
OFFSET_LIMIT = 0.25  # |mean(S) - mean(R)| / RMS spread of R above which lambda is not a shrink


def _moments(x: np.ndarray) -> tuple[np.ndarray, float, float]:
    """Mean, total variance (mean squared distance to the mean) and the total variance's standard error."""
    x = np.asarray(x, dtype=np.float64)
    mean = x.mean(axis=0)
    sq = np.einsum("ij,ij->i", x - mean, x - mean)
    return mean, float(sq.mean()), float(sq.std(ddof=1) / math.sqrt(len(sq)))


def synthetic_part(reference: np.ndarray, candidate: np.ndarray, p: float) -> dict[str, float]:
    """The synthetic part's offset (relative to the reference's RMS spread) and spread ratio, from
    the moments of the reference and the candidate at real fraction p < 1."""
    ref_mean, ref_trace, _ = _moments(reference)
    cand_mean, cand_trace, _ = _moments(candidate)
    # |mean difference|^2 is biased up by both means' sampling noise, tr Cov / n each: in 512
    # dimensions that noise alone reads as an offset of 0.3 of the spread at n = 250.
    diff = cand_mean - ref_mean
    noise = cand_trace / max(len(candidate) - 1, 1) + ref_trace / max(len(reference) - 1, 1)
    offset_sq = max(0.0, float(diff @ diff) - noise) / (1 - p) ** 2  # |mean(S) - mean(R)|^2
    spread = (cand_trace - p * ref_trace - p * (1 - p) * offset_sq) / ((1 - p) * ref_trace)
    return {"offset": math.sqrt(offset_sq / ref_trace), "spread_ratio": spread}


def inputs_from_audit(reference: np.ndarray, candidate: np.ndarray, synthetic_share: float,
                      share_interval: tuple[float | None, float | None] | None = None, draws: int = 4000,
                      seed: int = 0) -> dict[str, Any]:
    """Measured p, lambda (with 95% intervals) and n for `project`, and the synthetic part's offset
    and spread. `share_interval` is the synthetic share's 95% interval (None or a missing end: a
    point estimate)."""
    if not math.isfinite(synthetic_share):
        raise ValueError("the synthetic share is unknown: the forecast needs a measured share")
    p = float(np.clip(1 - synthetic_share, 0, 1))
    _, ref_trace, ref_se = _moments(reference)
    _, cand_trace, cand_se = _moments(candidate)
    r = cand_trace / ref_trace
    lo, hi = share_interval or (None, None)
    p_sd = (float(hi) - float(lo)) / (2 * _Z) if lo is not None and hi is not None else 0.0
    out: dict[str, Any] = {
        "real_fraction": p,
        "real_fraction_interval": [float(np.clip(1 - float(hi), 0, 1)), float(np.clip(1 - float(lo), 0, 1))]
        if p_sd > 0 else None,
        "spread_ratio": r,
        "n": int(len(candidate)),
        "method": "p = 1 - synthetic share; lambda = the synthetic part's spread ratio, from both sets' moments",
    }
    if p >= 1:
        return {**out, "lam": 1.0, "lam_interval": [1.0, 1.0], "lam_measured": True,
                "lam_note": "nothing synthetic: no sampling bias to measure"}
    part = synthetic_part(reference, candidate, p)
    rng = np.random.default_rng(seed)
    p_draws = np.clip(rng.normal(p, p_sd, draws), 0, 1 - 1e-6)
    # The offset term is small next to the traces' errors where lambda is measured, so the
    # simulation varies p and the traces and keeps the measured offset.
    scale = rng.normal(cand_trace, cand_se, draws) / rng.normal(ref_trace, ref_se, draws)
    offset_sq = part["offset"] ** 2
    s_draws = (scale - p_draws - p_draws * (1 - p_draws) * offset_sq) / (1 - p_draws)
    s_lo, s_hi = (float(np.percentile(s_draws, q)) for q in (2.5, 97.5))
    out["synthetic_part"] = {**part, "spread_ratio_interval": [s_lo, s_hi]}
    if part["offset"] > OFFSET_LIMIT or s_lo > 1:
        what = (f"offset by {part['offset']:.2f} of the reference's RMS spread" if part["offset"] > OFFSET_LIMIT
                else f"{part['spread_ratio']:.2f}x as spread as the reference")
        return {**out, "lam": 1.0, "lam_interval": [1.0, 1.0], "lam_measured": False,
                "lam_note": f"lambda not measured: the synthetic part is {what}, not a shrunk copy of it "
                            "(sampling bias shrinks spread around the same mean); the forecast assumes lambda = 1"}
    lam_draws = np.clip(s_draws, 1e-3, 1.0)
    return {**out, "lam": float(np.clip(part["spread_ratio"], 1e-3, 1.0)),
            "lam_interval": [float(np.percentile(lam_draws, 2.5)), float(np.percentile(lam_draws, 97.5))],
            "lam_measured": True, "lam_note": "lambda = the synthetic part's spread ratio (same mean)"}


def synthetic_scores(space, synthetic: np.ndarray, real: np.ndarray, seed: int = 0) -> dict[str, float]:
    """The synthetic part scored as a candidate against the forecast space's held-out eval points,
    beside a real sample of the same size: precision, recall and recall relative to the real's."""
    rng = np.random.default_rng([seed, 5])
    size = min(len(synthetic), len(real), len(space.eval_points))
    pick = [x[rng.choice(len(x), size, replace=False)] for x in (synthetic, real)]
    precision, recall = space.precision_recall(*(space.project(x) for x in pick))
    ratio = float(recall[0] / recall[1]) if recall[1] else float("nan")
    # The ratio's 95% interval: both recalls are shares of the same eval points (delta method on
    # the log ratio, binomial variances, the two taken as independent: a little wide).
    m = len(space.eval_points)
    se = math.sqrt(sum((1 - r) / (m * r) for r in recall if r > 0)) if min(recall) > 0 else float("inf")
    return {"precision": float(precision[0]), "recall": float(recall[0]), "real_precision": float(precision[1]),
            "real_recall": float(recall[1]), "relative_recall": ratio,
            "relative_recall_interval": [ratio * math.exp(-_Z * se), ratio * math.exp(_Z * se)], "size": int(size)}


def inputs_meaning(measured: dict[str, Any]) -> dict[str, Any]:
    """What a forecast keeps of the measured inputs to say what they mean (`forecast_story`)."""
    keys = ("synthetic_part", "synthetic_scores", "lam_note")
    return {key: measured[key] for key in keys if measured.get(key) is not None}
