"""Unsupervised synthetic share: mixture-proportion estimation with BBE.

Best Bin Estimation (Garg, Wu, Smola, Balakrishnan and Lipton, NeurIPS 2021): the candidate is a
mixture alpha * real + (1 - alpha) * other, the reference a sample of "real". A classifier
reference-vs-candidate scores every item; for a threshold c let q_X(c), q_Y(c) be the shares of
held-out reference and candidate items scoring at least c. Since q_Y(c) >= alpha q_X(c) for
every c, q_Y / q_X bounds alpha from above, tightest in the "top bin" where the classifier is
surest an item is real. BBE takes the c minimising the upper confidence bound
    (q_Y(c) + eps_Y) / (q_X(c) - eps_X),  eps = sqrt(log(2 / delta) / (2 n))   (one-sided DKW),
reports alpha_hat = q_Y / q_X there, and 1 - that bound as a (1 - delta) lower bound of the
synthetic share. Only a lower bound is identified: synthetic items that look real cannot be
told apart without labels, and real candidate items unlike the reference (content shift) count
as "other".

The score sees density. BBE wants a score monotone in p_reference(x) / p_candidate(x): the
candidate density is alpha p_real + (1 - alpha) p_other, so where p_other vanishes (the real
tails that biased samples never reach) the ratio peaks at 1 / alpha, and that top bin is where
q_Y / q_X reads alpha. Log k-NN distances estimate log densities (detectors/features.py), so a
logistic regression reference vs candidate on the density features against both sets (a few
numbers per item, so a few hundred items train it) approximates that ratio. The embedding is
left out by default: with 512 more inputs and a few hundred items the classifier ranks worse,
on spread and on offsets alike (benchmarks/README.md compares "density", "density+embedding"
and the old "linear" probe).

Cross-fitting keeps the bound honest: every item of both sets gets one of FOLDS folds; fold f is
scored by a model trained on the other folds' items, with features against the other folds' part
of the banks (each training item left out of its own neighbours), and fold f's items are
described against that same part. So a held-out reference item and a real candidate item are
exchangeable for the score, which is all BBE's inequality needs. Banks and training use a seeded
subset of at most MAX_BANK items per set; every item is scored.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from detectors.base import FractionEstimate
from detectors.features import DensityBank, describe
from detectors.linear import Logistic

MAX_BANK = 10_000  # items per set that serve as neighbours and training examples
FOLDS = 10  # each item is described against 90% of the banks
MAX_TRAIN_PER_SIDE = 10_000  # the linear comparison score
BOOTSTRAPS = 200  # replicates for the standard error of BBE's estimate


def crossfit_scores(reference: np.ndarray, candidate: np.ndarray, seed: int = 0, k: int = 5,
                    score: str = "density") -> tuple[np.ndarray, np.ndarray]:
    """Held-out scores (higher = more like the reference) for every reference and candidate item:
    a logistic regression reference vs candidate on the k-NN density features (`"density"`), on
    them and the embedding (`"density+embedding"`), or a 2-fold linear probe on the embedding
    alone (`"linear"`)."""
    if score == "linear":
        return _linear_scores(np.asarray(reference, np.float32), np.asarray(candidate, np.float32), seed)
    _, score_x, score_y, _ = crossfit(reference, candidate, seed, k, embedding=score == "density+embedding")
    return score_x, score_y


@dataclass
class CrossfitScorer:
    """The fold models of a cross-fitted density score and the banks they describe items against:
    `score` gives any new item the score a held-out item of fold f would get."""

    banks: list[DensityBank]
    models: list[Logistic]
    embedding: bool

    def score(self, items: np.ndarray, folds: np.ndarray) -> np.ndarray:
        """Scores of `items`, item i by the model of fold folds[i], against the banks outside it."""
        items = np.asarray(items, dtype=np.float32)
        found = [bank.neighbours(items) for bank in self.banks]  # one search, every fold
        out = np.empty(len(items))
        for f in np.unique(folds):
            rows = np.flatnonzero(folds == f)
            chosen = [(d[rows], i[rows]) for d, i in found]
            out[rows] = self.models[f].predict(describe(items[rows], self.banks, int(f), found=chosen,
                                                        embedding=self.embedding))
        return out


def crossfit(reference: np.ndarray, candidate: np.ndarray, seed: int = 0, k: int = 5, embedding: bool = False
             ) -> tuple[CrossfitScorer, np.ndarray, np.ndarray, np.ndarray]:
    """The density score cross-fitted over FOLDS folds: (scorer, reference scores, candidate
    scores, each candidate item's fold)."""
    x = np.asarray(reference, dtype=np.float32)
    y = np.asarray(candidate, dtype=np.float32)
    rng = np.random.default_rng(seed)
    sides = []
    for items in (x, y):
        order = rng.permutation(len(items))
        folds = np.empty(len(items), np.int64)
        folds[order] = np.arange(len(items)) % FOLDS
        bank_rows = np.sort(order[:MAX_BANK])
        sides.append((items, folds, bank_rows, DensityBank(items[bank_rows], k, folds[bank_rows])))
    banks = [bank for *_, bank in sides]
    found = [[bank.neighbours(items) for bank in banks] for items, *_ in sides]  # one search, every fold
    models = []
    for f in range(FOLDS):
        # Train on the bank items outside fold f, described against the banks outside fold f.
        train, labels = [], []
        for s, (_, folds, bank_rows, own) in enumerate(sides):
            rows = folds[bank_rows] != f
            chosen = [(d[bank_rows], i[bank_rows]) for d, i in found[s]]  # the own bank reads its own lists
            train.append(describe(own.vectors, banks, f, member_of=s, found=chosen, embedding=embedding)[rows])
            labels.append(np.full(int(rows.sum()), 1.0 - s))  # 1 = reference
        models.append(Logistic.fit(np.vstack(train), np.concatenate(labels), balanced=True))
    scores = [np.empty(len(x)), np.empty(len(y))]
    for s, (items, folds, _, _) in enumerate(sides):
        for f in range(FOLDS):
            rows = np.flatnonzero(folds == f)
            chosen = [(d[rows], i[rows]) for d, i in found[s]]
            scores[s][rows] = models[f].predict(describe(items[rows], banks, f, found=chosen, embedding=embedding))
    return CrossfitScorer(banks, models, embedding), scores[0], scores[1], sides[1][1]


def _linear_scores(x: np.ndarray, y: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """2-fold cross-fitted logistic regression reference (1) vs candidate (0) on the embedding."""
    rng = np.random.default_rng(seed)
    perm_x, perm_y = rng.permutation(len(x)), rng.permutation(len(y))
    fold_x, fold_y = np.empty(len(x), int), np.empty(len(y), int)
    fold_x[perm_x] = np.arange(len(x)) % 2
    fold_y[perm_y] = np.arange(len(y)) % 2
    score_x, score_y = np.empty(len(x)), np.empty(len(y))
    for f in (0, 1):
        train_x = x[perm_x[fold_x[perm_x] != f][:MAX_TRAIN_PER_SIDE]]
        train_y = y[perm_y[fold_y[perm_y] != f][:MAX_TRAIN_PER_SIDE]]
        model = Logistic.fit(np.vstack([train_x, train_y]), np.r_[np.ones(len(train_x)), np.zeros(len(train_y))],
                             balanced=True)
        score_x[fold_x == f] = model.predict(x[fold_x == f])
        score_y[fold_y == f] = model.predict(y[fold_y == f])
    return score_x, score_y


def bbe(score_reference: np.ndarray, score_candidate: np.ndarray, delta: float = 0.05, n_boot: int = BOOTSTRAPS,
        seed: int = 0) -> FractionEstimate:
    """BBE on held-out scores (higher = more like the reference). Returns the synthetic share
    1 - alpha_hat and its (1 - delta) lower bound; details["se"] is the bootstrap standard error
    of the estimate (scores resampled, the threshold chosen again in every replicate)."""
    sx = np.sort(np.asarray(score_reference, dtype=np.float64))
    sy = np.sort(np.asarray(score_candidate, dtype=np.float64))
    nx, ny = len(sx), len(sy)
    # One-sided DKW (Massart 1990) for each side at delta / 2: P(sup_c q_true - q_hat > eps) <= exp(-2 n eps^2).
    # The bound needs only q_Y from above and q_X from below, uniformly over thresholds.
    eps_x = math.sqrt(math.log(2 / delta) / (2 * nx))
    eps_y = math.sqrt(math.log(2 / delta) / (2 * ny))
    found = _best_bin(sx, sy, eps_x, eps_y)
    if found is None:
        return FractionEstimate(float("nan"), None, None, "BBE: too few reference items for a bound", {})
    threshold, qx, qy, alpha_upper = found
    alpha_hat = min(1.0, qy / qx)
    return FractionEstimate(
        value=float(1 - alpha_hat),
        lower=float(1 - alpha_upper),
        upper=None,
        method=f"BBE (Garg et al. 2021): at least this share is unlike the reference; lower bound at 1 - delta = {1 - delta:g}",
        details={"threshold": threshold, "top_bin_reference": qx, "top_bin_candidate": qy, "delta": delta,
                 "se": _bootstrap_se(sx, sy, eps_x, eps_y, n_boot, seed), "n_reference": nx, "n_candidate": ny},
    )


def _best_bin(sx: np.ndarray, sy: np.ndarray, eps_x: float, eps_y: float
              ) -> tuple[float, float, float, float] | None:
    """BBE's top bin on sorted scores: (threshold, q_X, q_Y, upper bound of alpha), or None when
    no threshold keeps q_X above its margin."""
    nx, ny = len(sx), len(sy)
    thresholds = np.unique(np.r_[sx, sy])
    q_x = (nx - np.searchsorted(sx, thresholds, side="left")) / nx  # share scoring >= c
    q_y = (ny - np.searchsorted(sy, thresholds, side="left")) / ny
    usable = q_x - eps_x > 0
    if not usable.any():
        return None
    ucb = np.full(len(thresholds), np.inf)
    ucb[usable] = (q_y[usable] + eps_y) / (q_x[usable] - eps_x)
    chosen = int(np.argmin(ucb))
    return float(thresholds[chosen]), float(q_x[chosen]), float(q_y[chosen]), min(1.0, float(ucb[chosen]))


def _bootstrap_se(sx: np.ndarray, sy: np.ndarray, eps_x: float, eps_y: float, n_boot: int, seed: int) -> float:
    """Standard error of BBE's estimate by resampling both score sets. The threshold is chosen on
    the same scores it reads, so the estimate varies far more than q_Y / q_X at one fixed
    threshold: a delta-method error at the chosen bin was 2-3x too small, and a guard built on it
    called one all-real candidate in three "generator shift" (benchmarks/README.md)."""
    rng = np.random.default_rng([seed, 7])
    values = []
    for _ in range(n_boot):
        found = _best_bin(np.sort(rng.choice(sx, len(sx))), np.sort(rng.choice(sy, len(sy))), eps_x, eps_y)
        if found is not None:
            values.append(1 - min(1.0, found[2] / found[1]))
    return float(np.std(values, ddof=1)) if len(values) > 1 else float("nan")
