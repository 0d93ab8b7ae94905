"""Every synthetic-share estimate for a candidate set, with the guards that keep them honest.

- supervised (with a trained `SupervisedProbe`): PACC with a bootstrap interval, EMQ beside it;
  NaN ("not identifiable") when the detector does not separate its own labels;
- unsupervised (reference + candidate only): BBE on a cross-fitted reference-vs-candidate score
  over k-NN density features, its estimate and its (1 - delta) lower bound;
- out-of-manifold share: candidate items outside every reference k-NN ball.

Warnings instead of misleading numbers:
- generator shift: the supervised estimate sits below BBE's by more than their joint uncertainty
  (Z_SHIFT standard errors of the difference, BBE's by bootstrap), so the candidate's synthetic
  items are not what the detector was trained on. While both sets' real parts match, BBE's synthetic share can only err
  low (synthetic items that look real stay in its top bin), so a supervised estimate clearly
  below it is too low. With content shift present too, the warning says it may explain part of
  the gap;
- content shift: the candidate's likely-real part (supervised score < 0.5) spreads over the
  reference's k-means clusters in other proportions than the reference (chi-square p < 0.001 and
  total variation > 0.1), so BBE and the out-of-manifold share count new real content as "other";
- too few items for stable estimates.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from audit.balls import candidate_ball_counts
from audit.metrics import wilson_interval
from detectors.base import FractionEstimate
from detectors.bbe import FOLDS, CrossfitScorer, bbe, crossfit
from detectors.probe import SupervisedProbe

MIN_ITEMS = 200
MIN_SYNTHETIC_TRAINING = 100
# One-sided 1%: BBE's estimate is biased upward on a clean candidate (it takes the best of many
# thresholds), so at 1.96 the guard still called 15% of all-real candidates shifted in one of
# three simulated families; at 2.33 at most 5% (benchmarks/README.md, "generator-shift guard").
Z_SHIFT = 2.326


@dataclass
class FractionReport:
    n_reference: int
    n_candidate: int
    estimates: dict[str, FractionEstimate]
    warnings: list[str]
    item_scores: dict[str, np.ndarray] = field(repr=False, default_factory=dict)  # per candidate item
    # The unsupervised score's fold models, the reference's held-out scores and each candidate
    # item's fold: what scoring more candidate items the same way needs (the per-item pass).
    unsupervised_scorer: CrossfitScorer | None = field(repr=False, default=None)
    reference_scores: np.ndarray | None = field(repr=False, default=None)
    candidate_folds: np.ndarray | None = field(repr=False, default=None)
    generator_shift: bool = False  # the supervised estimate is clearly below BBE's
    content_shift: bool = False  # the likely-real items sit in other reference clusters
    notes: list[str] = field(default_factory=list)  # what the detector is known to do on unseen generators

    @classmethod
    def unavailable(cls, reason: str, n_reference: int, n_candidate: int, with_detector: bool) -> FractionReport:
        """No estimate at all (too few items): every estimate reads "not available" and unknown."""
        missing = FractionEstimate(float("nan"), None, None, f"not available: {reason}")
        names = (["supervised"] if with_detector else []) + ["unsupervised", "out_of_manifold"]
        return cls(n_reference, n_candidate, {name: missing for name in names}, [])

    @property
    def available(self) -> bool:
        return bool(self.item_scores)

    def to_dict(self) -> dict[str, Any]:
        return {
            "n_reference": self.n_reference,
            "n_candidate": self.n_candidate,
            "estimates": {name: e.to_dict() for name, e in self.estimates.items()},
            "warnings": self.warnings,
            "guards": {"generator_shift": self.generator_shift, "content_shift": self.content_shift},
            "notes": self.notes,
        }

    def most_suspicious(self, keys: list[str], top: int = 20, by: str | None = None) -> list[dict[str, Any]]:
        """The candidate items that look most synthetic by the `by` score (default: supervised if
        there is one, else unsupervised), with every per-item score."""
        by = by or ("supervised" if "supervised" in self.item_scores else "unsupervised")
        if by not in self.item_scores:
            return []
        primary = self.item_scores[by]
        order = np.argsort(-primary, kind="stable")[:top]
        return [{"key": keys[i], **{name: float(s[i]) for name, s in self.item_scores.items()}} for i in order]


def minimum_items(k: int) -> int:
    """The fewest items a side needs for the estimates: the cross-fitted density score describes
    every item by its k nearest neighbours outside its own fold, never itself or the item it is
    compared with, so n - ceil(n / FOLDS) - 2 >= k; and more than max(k, 4) items in all."""
    n = max(k, 4) + 1
    while n - -(-n // FOLDS) - 2 < k:
        n += 1
    return n


def share_problem(n_reference: int, n_candidate: int, k: int) -> str | None:
    """Why the synthetic share cannot be estimated on sets this small, or None."""
    need = minimum_items(k)
    if min(n_reference, n_candidate) < need:
        return (f"the synthetic-share estimates need at least {need} items on each side (k={k}), have "
                f"{n_reference} reference and {n_candidate} candidate items")
    return None


def estimate_fraction(
    reference: np.ndarray,
    candidate: np.ndarray,
    detector: SupervisedProbe | None = None,
    candidate_identity: dict | None = None,
    k: int = 5,
    delta: float = 0.05,
    seed: int = 0,
) -> FractionReport:
    x = np.asarray(reference, dtype=np.float32)
    y = np.asarray(candidate, dtype=np.float32)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"reference {x.shape} and candidate {y.shape} must be (n, d) with the same d")
    problem = share_problem(len(x), len(y), k)
    if problem:
        raise ValueError(problem)
    estimates: dict[str, FractionEstimate] = {}
    warnings: list[str] = []
    items: dict[str, np.ndarray] = {}

    if detector is not None:
        scores = detector.scores(y, candidate_identity)
        estimates["supervised"], estimates["supervised_emq"] = detector.estimate(scores, seed=seed)
        items["supervised"] = scores
        if len(detector.oof_synthetic) < MIN_SYNTHETIC_TRAINING:
            warnings.append(f"too few labelled synthetic items ({len(detector.oof_synthetic)} < "
                            f"{MIN_SYNTHETIC_TRAINING}): the supervised estimate is unstable")

    scorer, score_x, score_y, folds_y = crossfit(x, y, seed, k=k)
    estimates["unsupervised"] = bbe(score_x, score_y, delta)
    items["unsupervised"] = atypicality(score_x, score_y)

    counts = candidate_ball_counts(x, y, k)
    outside = int(np.count_nonzero(counts == 0))
    estimates["out_of_manifold"] = FractionEstimate(
        outside / len(y), *wilson_interval(outside, len(y)),
        f"share of candidate items outside every reference {k}-NN ball (Wilson 95%); real held-out "
        "items also fall outside some of the time, so compare with a real sample", {"k": k})
    items["outside_reference_balls"] = (counts == 0).astype(np.float64)

    if min(len(x), len(y)) < MIN_ITEMS:
        warnings.append(f"few items ({len(x)} reference, {len(y)} candidate; fewer than {MIN_ITEMS}): "
                        "estimates are unstable")
    sup, unsup = estimates.get("supervised"), estimates["unsupervised"]
    if sup is not None and not np.isfinite(sup.value):
        warnings.append(f"the detector does not separate real from synthetic (out-of-fold AUC {detector.auc:.3f}): "
                        "the supervised share is not identifiable and any gate on it reads unknown; retrain it "
                        "with more or better labelled synthetic examples")
    content = content_shift(x, y[items["supervised"] < 0.5], seed=seed) if detector is not None else None
    shift = generator_shift(sup, unsup) if sup is not None else None
    if shift is not None and content is not None:
        # Undetected synthetic items also land among the "likely real" ones, so content shift may
        # be a symptom of generator shift as much as a rival explanation: one story, not two
        # pieces of advice that contradict each other.
        warnings.append(disagreement_story(sup, unsup))
    elif shift is not None or content is not None:
        warnings.append(shift or content)
    if detector is None:
        warnings.append("no detector: BBE and the out-of-manifold share count real items unlike the reference "
                        "(content shift) as synthetic, and content shift cannot be checked without one")
    if detector is not None:  # unlike the reference and unlike the detector's synthetic examples: look at these
        items["unexplained"] = items["unsupervised"] * (1.0 - items["supervised"])
    note = detector.unseen_generator_note() if detector is not None else None
    return FractionReport(len(x), len(y), estimates, warnings, items, scorer, score_x, folds_y,
                          generator_shift=shift is not None, content_shift=content is not None,
                          notes=[note] if note else [])


def disagreement_story(supervised: FractionEstimate, unsupervised: FractionEstimate) -> str:
    """The one sentence for a supervised estimate below BBE's while the likely-real items also look
    unlike the reference: what it can mean, which way the numbers would move, how to resolve it."""
    return (f"estimates disagree: the detector finds {supervised.value:.3f} synthetic but BBE finds at least "
            f"{unsupervised.lower:.3f} unlike the reference, so either the candidate holds a generator the detector "
            "has not seen (the true share is then at least BBE's, and retraining the detector with examples of that "
            "generator raises its estimate to meet it) or real content the reference lacks (the detector is then "
            "right, and extending the reference with that content lowers BBE's to meet it); the synthetic-share "
            "gates read unknown until one of the two is done")


@dataclass(frozen=True)
class GateReading:
    """What the synthetic-share gates read: a value, a lower bound, which estimate, and why."""

    value: float
    lower: float
    read: str  # the estimate's name, or "none"
    why: str
    lower_read: str | None = None  # the lower bound's estimate, where it is another one

    def to_dict(self) -> dict[str, Any]:
        return {"value": self.value, "lower": self.lower, "read": self.read, "lower_read": self.lower_read or self.read,
                "why": self.why}


def gate_reading(report: FractionReport, with_detector: bool) -> GateReading:
    """The rule the synthetic-share gates follow: never a number the tool has evidence against.

    BBE's lower bound is valid for the share unlike the reference (synthetic items, or real content
    the reference lacks); the supervised bound is valid while the guards are quiet. So:
    - no detector: BBE's estimate and lower bound;
    - guards quiet: the supervised estimate, and the larger of the two lower bounds;
    - generator shift alone (the detector finds clearly less than BBE): BBE's estimate, and the
      lower bound unknown: the detector's bound is refuted and BBE's, valid but loose on small
      sets, passed 45-75% of candidates 30% from an unseen generator;
    - content shift alone: the supervised estimate and bound (BBE's counts the new real content);
    - both: unknown (the disagreement story says how to resolve it), at the gates' severity."""
    est = report.estimates
    unsup = est.get("unsupervised")
    nan = float("nan")
    if unsup is None or not report.available:
        why = unsup.method if unsup is not None else "no estimate"
        return GateReading(nan, nan, "none", why)
    if not with_detector:
        return GateReading(unsup.value, _bound(unsup), "unsupervised", "no detector: BBE's estimate and lower bound")
    sup = est["supervised"]
    if not np.isfinite(sup.value):
        return GateReading(nan, nan, "supervised", sup.method)
    if report.generator_shift and report.content_shift:
        return GateReading(nan, nan, "none", disagreement_story(sup, unsup))
    if report.generator_shift:
        return GateReading(unsup.value, nan, "unsupervised",
                           f"generator shift: the detector finds clearly less than BBE, so it misses synthetic items "
                           f"BBE sees; BBE's estimate, and no lower bound: BBE's (at least {_lower(unsup):.3f}) "
                           "only floors a share the detector is known to miss")
    if report.content_shift:
        return GateReading(sup.value, _bound(sup), "supervised",
                           "content shift: BBE's bound also counts real content the reference lacks; the detector's "
                           "estimate and interval")
    bbe_higher = _lower(unsup) > _lower(sup)
    return GateReading(sup.value, max(_lower(sup), _lower(unsup)), "supervised",
                       "guards quiet: the detector's estimate, and the larger of the two valid lower bounds",
                       "unsupervised" if bbe_higher else "supervised")


def _lower(e: FractionEstimate) -> float:
    """The lower bound where there is one, else 0: what a max over several bounds may use."""
    return float(e.lower) if e.lower is not None and np.isfinite(e.lower) else 0.0


def _bound(e: FractionEstimate) -> float:
    """The lower bound a gate reads alone: unknown (NaN) where the estimate has none."""
    return float(e.lower) if e.lower is not None else float("nan")


def atypicality(reference_scores: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Per item: the share of (held-out) reference items that look more like the reference than it
    does (0: as typical as the most typical reference item, 1: less typical than every one)."""
    return 1.0 - np.searchsorted(np.sort(reference_scores), scores, side="right") / len(reference_scores)


def generator_shift(supervised: FractionEstimate, unsupervised: FractionEstimate, z: float = Z_SHIFT) -> str | None:
    """A warning when the supervised estimate is below BBE's by more than z standard errors of
    their difference, else None."""
    if not (np.isfinite(supervised.value) and np.isfinite(unsupervised.value)) or supervised.upper is None:
        return None
    se_sup = (supervised.upper - supervised.lower) / (2 * 1.96)  # from the bootstrap 95% interval
    se_unsup = float(unsupervised.details.get("se", 0.0))
    if not np.isfinite(se_unsup):
        return None
    gap = unsupervised.value - supervised.value
    if gap <= z * float(np.hypot(se_sup, se_unsup)):
        return None
    return (f"generator shift: the supervised estimate ({supervised.value:.3f} [{supervised.lower:.3f}, "
            f"{supervised.upper:.3f}]) is below the unsupervised one ({unsupervised.value:.3f}, at least "
            f"{unsupervised.lower:.3f}) by more than their joint uncertainty; the candidate's synthetic items do not "
            "look like the detector's training examples: trust the unsupervised numbers and retrain the detector "
            "on this generator's output")


def content_shift(reference: np.ndarray, likely_real: np.ndarray, n_clusters: int = 10, seed: int = 0) -> str | None:
    """A warning when the likely-real candidate items sit in the reference's k-means clusters in
    other proportions than the reference itself, else None."""
    from scipy.stats import chisquare

    from audit.clusters import kmeans

    if len(likely_real) < 5 * n_clusters:
        return None
    clusters = kmeans(reference, n_clusters, seed)
    expected = clusters.sizes / len(reference)
    observed = np.bincount(clusters.assign(likely_real), minlength=n_clusters)
    tv = 0.5 * float(np.abs(observed / len(likely_real) - expected).sum())
    p = float(chisquare(observed, expected * len(likely_real)).pvalue)
    if p < 1e-3 and tv > 0.1:
        return (f"content shift: the candidate's likely-real items fall in the reference's clusters in other "
                f"proportions (total variation {tv:.2f}, chi-square p = {p:.1e}); the reference may not match "
                "the candidate's real content, which biases the unsupervised estimates upward")
    return None
