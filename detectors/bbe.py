"""Unsupervised synthetic share: mixture-proportion estimation with BBE.

Best Bin Estimation (Garg, Wu, Smola, Balakrishnan and Lipton, NeurIPS 2021): the candidate is a
mixture alpha * real + (1 - alpha) * other, the reference a sample of "real". A classifier
reference-vs-candidate scores every item; for a threshold c let q_X(c), q_Y(c) be the shares of
held-out reference and candidate items scoring at least c. Since q_Y(c) >= alpha q_X(c) for
every c, q_Y / q_X bounds alpha from above, tightest in the "top bin" where the classifier is
surest an item is real. BBE takes the c minimising the upper confidence bound
    (q_Y(c) + eps_Y) / (q_X(c) - eps_X),  eps = sqrt(log(4 / delta) / (2 n))   (DKW),
reports alpha_hat = q_Y / q_X there, and 1 - that bound as a (1 - delta) lower bound of the
synthetic share. Only a lower bound is identified: synthetic items that look real cannot be
told apart without labels, and real candidate items unlike the reference (content shift) count
as "other".

The classifier is cross-fitted: each half of both sets is scored by a model trained on the
other half, so no item is scored by a model that saw it.
"""

from __future__ import annotations

import math

import numpy as np

from detectors.base import FractionEstimate


MAX_TRAIN_PER_SIDE = 10_000  # a linear probe has learned what it can by then; scoring stays complete


def crossfit_scores(reference: np.ndarray, candidate: np.ndarray, seed: int = 0, c: float = 1.0
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Held-out P(reference | x) for every reference and candidate item (2-fold cross-fitting;
    each fold's model trains on at most MAX_TRAIN_PER_SIDE items of each set from the other fold)."""
    from sklearn.linear_model import LogisticRegression

    x = np.asarray(reference, dtype=np.float64)
    y = np.asarray(candidate, dtype=np.float64)
    rng = np.random.default_rng(seed)
    perm_x, perm_y = rng.permutation(len(x)), rng.permutation(len(y))
    fold_x, fold_y = np.empty(len(x), int), np.empty(len(y), int)
    fold_x[perm_x] = np.arange(len(x)) % 2
    fold_y[perm_y] = np.arange(len(y)) % 2
    score_x, score_y = np.empty(len(x)), np.empty(len(y))
    for f in (0, 1):
        # In permutation order, so the first MAX_TRAIN_PER_SIDE of a fold are a random subset.
        train_x = x[perm_x[fold_x[perm_x] != f][:MAX_TRAIN_PER_SIDE]]
        train_y = y[perm_y[fold_y[perm_y] != f][:MAX_TRAIN_PER_SIDE]]
        train = np.vstack([train_x, train_y])
        labels = np.r_[np.ones(len(train_x)), np.zeros(len(train_y))]
        mean, scale = train.mean(axis=0), train.std(axis=0)
        scale[scale == 0] = 1.0
        model = LogisticRegression(C=c, max_iter=2000, class_weight="balanced").fit((train - mean) / scale, labels)
        score_x[fold_x == f] = model.predict_proba((x[fold_x == f] - mean) / scale)[:, 1]
        score_y[fold_y == f] = model.predict_proba((y[fold_y == f] - mean) / scale)[:, 1]
    return score_x, score_y


def bbe(score_reference: np.ndarray, score_candidate: np.ndarray, delta: float = 0.05) -> FractionEstimate:
    """BBE on held-out scores (higher = more like the reference). Returns the synthetic share
    1 - alpha_hat and its (1 - delta) lower bound."""
    sx = np.sort(np.asarray(score_reference, dtype=np.float64))
    sy = np.sort(np.asarray(score_candidate, dtype=np.float64))
    nx, ny = len(sx), len(sy)
    eps_x = math.sqrt(math.log(4 / delta) / (2 * nx))
    eps_y = math.sqrt(math.log(4 / delta) / (2 * ny))
    thresholds = np.unique(np.r_[sx, sy])
    q_x = (nx - np.searchsorted(sx, thresholds, side="left")) / nx  # share scoring >= c
    q_y = (ny - np.searchsorted(sy, thresholds, side="left")) / ny
    usable = q_x - eps_x > 0
    if not usable.any():
        return FractionEstimate(float("nan"), None, None, "BBE: too few reference items for a bound", {})
    ucb = np.full(len(thresholds), np.inf)
    ucb[usable] = (q_y[usable] + eps_y) / (q_x[usable] - eps_x)
    chosen = int(np.argmin(ucb))
    alpha_hat = min(1.0, q_y[chosen] / q_x[chosen])
    alpha_upper = min(1.0, float(ucb[chosen]))
    return FractionEstimate(
        value=float(1 - alpha_hat),
        lower=float(1 - alpha_upper),
        upper=None,
        method=f"BBE (Garg et al. 2021): at least this share is unlike the reference; lower bound at 1 - delta = {1 - delta:g}",
        details={"threshold": float(thresholds[chosen]), "top_bin_reference": float(q_x[chosen]),
                 "top_bin_candidate": float(q_y[chosen]), "delta": delta, "n_reference": nx, "n_candidate": ny},
    )
