"""Supervised probe: how much of a candidate set looks like labelled synthetic examples.

A logistic regression on embeddings separates real (the reference) from labelled synthetic items.
Raw classify-and-count is biased whenever the classifier errs, so the share is estimated by
adjusted quantification:
- PACC (probabilistic adjusted classify-and-count, Bella et al. 2010): with out-of-fold mean
  scores s1 on synthetic and s0 on real training items, pi = (mean score on the candidate - s0) / (s1 - s0);
- EMQ (Saerens, Latinne and Decaestecker 2002): EM re-estimation of the prior from the posteriors,
  as a second opinion.
The interval is a bootstrap over the candidate items and the out-of-fold training scores.

A trained probe is saved as plain JSON (numbers and the embedding model's identity, never a pickle)
and refuses embeddings from another model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from detectors.base import FractionEstimate, ModelMismatch

FORMAT = "madaudit-detector/1"
N_FOLDS = 5


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


@dataclass
class SupervisedProbe:
    """Logistic regression real (0) vs synthetic (1) on standardised embeddings."""

    mean: np.ndarray  # (d,) feature means used for standardisation
    scale: np.ndarray  # (d,) feature standard deviations
    coef: np.ndarray  # (d,)
    intercept: float
    oof_real: np.ndarray  # out-of-fold synthetic scores of the real training items
    oof_synthetic: np.ndarray  # out-of-fold synthetic scores of the synthetic training items
    model_identity: dict[str, Any] | None = None

    @property
    def train_prior(self) -> float:
        return len(self.oof_synthetic) / (len(self.oof_synthetic) + len(self.oof_real))

    # -- fitting -----------------------------------------------------------------------------

    @classmethod
    def fit(cls, real: np.ndarray, synthetic: np.ndarray, model_identity: dict | None = None, seed: int = 0,
            c: float = 1.0) -> SupervisedProbe:
        """Fit on real (n0, d) and synthetic (n1, d) embeddings; out-of-fold scores come from
        stratified 5-fold cross-validation, the final weights from all items."""
        from sklearn.model_selection import StratifiedKFold

        real = np.asarray(real, dtype=np.float64)
        synthetic = np.asarray(synthetic, dtype=np.float64)
        if real.ndim != 2 or synthetic.ndim != 2 or real.shape[1] != synthetic.shape[1]:
            raise ValueError(f"real {real.shape} and synthetic {synthetic.shape} must be (n, d) with the same d")
        if min(len(real), len(synthetic)) < N_FOLDS:
            raise ValueError(f"need at least {N_FOLDS} real and {N_FOLDS} synthetic items to fit a probe")
        x = np.vstack([real, synthetic])
        y = np.r_[np.zeros(len(real)), np.ones(len(synthetic))]
        oof = np.empty(len(x))
        for train, test in StratifiedKFold(N_FOLDS, shuffle=True, random_state=seed).split(x, y):
            oof[test] = _fit_lr(x[train], y[train], c).predict(x[test])
        return cls(*_fit_lr(x, y, c).params(), oof_real=oof[y == 0], oof_synthetic=oof[y == 1],
                   model_identity=model_identity)

    # -- use -----------------------------------------------------------------------------------

    def scores(self, embeddings: np.ndarray, model_identity: dict | None = None) -> np.ndarray:
        """Per-item probability of being synthetic (under the training prior)."""
        self.check_compatible(embeddings, model_identity)
        x = (np.asarray(embeddings, dtype=np.float64) - self.mean) / self.scale
        return _sigmoid(x @ self.coef + self.intercept)

    def check_compatible(self, embeddings: np.ndarray, model_identity: dict | None) -> None:
        if np.ndim(embeddings) != 2 or np.shape(embeddings)[1] != len(self.coef):
            raise ModelMismatch(f"the detector expects {len(self.coef)}-d embeddings, got shape {np.shape(embeddings)}")
        if self.model_identity and model_identity and model_identity != self.model_identity:
            raise ModelMismatch(
                "the detector was trained on embeddings of another model "
                f"({_describe(self.model_identity)}) than these ({_describe(model_identity)}); "
                "embed with the detector's model or train a detector for this one")

    def estimate(self, scores: np.ndarray, n_boot: int = 1000, seed: int = 0) -> tuple[FractionEstimate, FractionEstimate]:
        """PACC (with a bootstrap interval) and EMQ estimates of the synthetic share, from the
        candidate's per-item scores."""
        pacc_value = pacc(scores, self.oof_real, self.oof_synthetic)
        rng = np.random.default_rng(seed)
        boots = np.empty(n_boot)
        for b in range(n_boot):
            boots[b] = pacc(_resample(scores, rng), _resample(self.oof_real, rng), _resample(self.oof_synthetic, rng))
        lo, hi = np.percentile(boots, [2.5, 97.5])
        details = {"n": len(scores), "bootstrap": n_boot, "classify_and_count": float(np.mean(scores > 0.5)),
                   "mean_score_real": float(self.oof_real.mean()),
                   "mean_score_synthetic": float(self.oof_synthetic.mean())}
        pacc_estimate = FractionEstimate(pacc_value, float(lo), float(hi),
                                         "PACC: logistic probe, out-of-fold adjusted, bootstrap 95% interval", details)
        emq_estimate = FractionEstimate(emq(scores, self.train_prior), None, None,
                                        "EMQ: EM prior re-estimation on the probe's posteriors", {"n": len(scores)})
        return pacc_estimate, emq_estimate

    # -- plain-data persistence ---------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "kind": "logistic-probe",
            "model_identity": self.model_identity,
            "mean": self.mean.tolist(),
            "scale": self.scale.tolist(),
            "coef": self.coef.tolist(),
            "intercept": self.intercept,
            "oof_real": self.oof_real.tolist(),
            "oof_synthetic": self.oof_synthetic.tolist(),
        }

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict()))

    @classmethod
    def load(cls, path: str | Path) -> SupervisedProbe:
        """Read a detector file: JSON only, every field checked; nothing in it is executed."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"{path} is not a madaudit detector (not JSON: {exc})") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ValueError(f"{path} is not a madaudit detector (format must be {FORMAT!r})")
        arrays = {k: np.asarray(data[k], dtype=np.float64) for k in ("mean", "scale", "coef", "oof_real", "oof_synthetic")}
        d = len(arrays["coef"])
        if len(arrays["mean"]) != d or len(arrays["scale"]) != d or not all(a.ndim == 1 for a in arrays.values()):
            raise ValueError(f"{path}: inconsistent detector arrays")
        identity = data.get("model_identity")
        if identity is not None and not isinstance(identity, dict):
            raise ValueError(f"{path}: model_identity must be an object")
        return cls(arrays["mean"], arrays["scale"], arrays["coef"], float(data["intercept"]),
                   arrays["oof_real"], arrays["oof_synthetic"], identity)


def pacc(scores: np.ndarray, oof_real: np.ndarray, oof_synthetic: np.ndarray) -> float:
    """Probabilistic adjusted classify-and-count, clipped to [0, 1]."""
    s0, s1 = float(np.mean(oof_real)), float(np.mean(oof_synthetic))
    if s1 - s0 <= 1e-9:
        return float("nan")  # the probe cannot tell the classes apart
    return float(np.clip((np.mean(scores) - s0) / (s1 - s0), 0.0, 1.0))


def emq(scores: np.ndarray, train_prior: float, tol: float = 1e-8, max_iter: int = 1000) -> float:
    """Saerens-Latinne-Decaestecker EM: re-weight posteriors to the new prior until it settles."""
    p = np.clip(np.asarray(scores, dtype=np.float64), 1e-12, 1 - 1e-12)
    prior = train_prior
    for _ in range(max_iter):
        w1 = prior / train_prior * p
        w0 = (1 - prior) / (1 - train_prior) * (1 - p)
        new = float(np.mean(w1 / (w1 + w0)))
        if abs(new - prior) < tol:
            return new
        prior = new
    return prior


def _resample(a: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return a[rng.integers(0, len(a), len(a))]


def _describe(identity: dict) -> str:
    arch = identity.get("architecture", {}).get("name", "?")
    weights = identity.get("weights", {})
    return f"{arch}, {weights.get('tag') or 'weights ' + str(weights.get('file_sha256', weights))[:12]}"


@dataclass
class _LR:
    mean: np.ndarray
    scale: np.ndarray
    model: Any

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.model.predict_proba((x - self.mean) / self.scale)[:, 1]

    def params(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
        return self.mean, self.scale, self.model.coef_[0].astype(np.float64), float(self.model.intercept_[0])


def _fit_lr(x: np.ndarray, y: np.ndarray, c: float) -> _LR:
    from sklearn.linear_model import LogisticRegression

    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale[scale == 0] = 1.0
    model = LogisticRegression(C=c, max_iter=2000).fit((x - mean) / scale, y)
    return _LR(mean, scale, model)
