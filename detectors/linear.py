"""A standardised logistic regression held as plain arrays (so a detector file needs no pickle).

The classifier both detectors use: on [embedding, density features] it is linear in the
embedding (a generator's offset) and in the log-distances (a k-NN log-likelihood ratio, see
detectors/features.py), which is what separates biased samples from real ones. A gradient-boosted
model on the same features was compared in benchmarks/bench_detectors.py (see its README table)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

C = 1.0  # inverse L2 strength on standardised features (scikit-learn's default)


@dataclass
class Logistic:
    mean: np.ndarray  # (p,)
    scale: np.ndarray  # (p,), > 0
    coef: np.ndarray  # (p,)
    intercept: float

    @classmethod
    def fit(cls, x: np.ndarray, labels: np.ndarray, c: float = C, balanced: bool = False) -> Logistic:
        from sklearn.linear_model import LogisticRegression

        from threadpoolctl import threadpool_limits

        x = np.asarray(x, dtype=np.float64)
        mean, scale = x.mean(axis=0), x.std(axis=0)
        scale[scale == 0] = 1.0
        model = LogisticRegression(C=c, max_iter=5000, class_weight="balanced" if balanced else None)
        # L-BFGS makes many small matrix-vector products: on one BLAS thread they run 5-10x faster
        # than on two here (thread hand-offs cost more than the work; benchmarks/README.md).
        with threadpool_limits(1, user_api="blas"):
            model.fit((x - mean) / scale, labels)
        return cls(mean, scale, model.coef_[0].astype(np.float64), float(model.intercept_[0]))

    def predict(self, x: np.ndarray) -> np.ndarray:
        """P(label 1 | x) under the training prior."""
        z = ((np.asarray(x, dtype=np.float64) - self.mean) / self.scale) @ self.coef + self.intercept
        return 1.0 / (1.0 + np.exp(-np.clip(z, -500, 500)))
