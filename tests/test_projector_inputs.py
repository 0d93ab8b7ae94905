"""p and lambda measured from an audit, on mixtures whose truth is known, in real CLIP geometry.

The real part is Food-101 CLIP embeddings; the synthetic part is drawn at sampling bias lambda
by the MAD Gaussian (N(mu, lambda Sigma), fitted to Food-101 items outside the reference and the
candidate), so its spread is lambda times the real one: the quantity the projector's lambda is.
p comes from a supervised detector trained on other draws of the same generator."""

from __future__ import annotations

import numpy as np
import pytest

from audit.projector import inputs_from_audit, lambda_from_moments
from detectors.probe import SupervisedProbe


class BiasedGaussian:
    def __init__(self, real: np.ndarray, seed: int):
        x = np.asarray(real, dtype=np.float64)
        self.mean, self.cov = x.mean(axis=0), np.cov(x, rowvar=False, bias=True)
        self.rng = np.random.default_rng(seed)

    def sample(self, n: int, lam: float) -> np.ndarray:
        return self.rng.multivariate_normal(self.mean, lam * self.cov, size=n, method="eigh").astype(np.float32)


@pytest.fixture(scope="module")
def food(real_clip):
    x = real_clip["food_train"][np.random.default_rng(0).permutation(2000)]
    # food_test is sorted by class: its first rows are a few classes only, real content unlike the
    # reference, which the offset of the "synthetic part" would rightly pick up. Shuffle it.
    test = real_clip["food_test"][np.random.default_rng(1).permutation(len(real_clip["food_test"]))]
    return {"reference": x[:1000], "generator": x[1000:], "real": test}


def test_lambda_from_moments_inverts_the_mixture_spread():
    for p in (0.0, 0.3, 0.9):
        for lam in (0.2, 0.7, 1.0):
            assert lambda_from_moments(p + (1 - p) * lam, p) == pytest.approx(lam)
    assert lambda_from_moments(1.2, 0.5) == 1.0 and lambda_from_moments(0.1, 0.5) == 1e-3  # clipped


@pytest.mark.parametrize("p", [0.5, 0.8])
@pytest.mark.parametrize("lam", [0.5, 0.7, 0.9])
def test_measured_p_and_lambda_on_food101_mixtures(food, p, lam):
    generator = BiasedGaussian(food["generator"], seed=int(10 * p + 100 * lam))
    probe = SupervisedProbe.fit(food["reference"], generator.sample(1000, lam), seed=0)
    n = 500
    n_real = int(round(p * n))
    candidate = np.vstack([food["real"][:n_real], generator.sample(n - n_real, lam)])
    estimate = probe.estimate(probe.scores(candidate))[0]
    measured = inputs_from_audit(food["reference"], candidate, estimate.value, (estimate.lower, estimate.upper))

    assert abs(measured["real_fraction"] - p) <= 0.05, measured
    assert abs(measured["lam"] - lam) <= 0.1, measured
    lo, hi = measured["real_fraction_interval"]
    assert lo <= p <= hi, measured
    lo, hi = measured["lam_interval"]
    assert lo <= lam <= hi, measured
    assert measured["n"] == n


class ShiftedGaussian(BiasedGaussian):
    """MAD's Gaussian moved by `offset` times the reference's RMS spread along a random direction,
    and scaled by `spread`: what classifier-free guidance does in CLIP space, not a shrink."""

    def __init__(self, real, seed, offset: float, spread: float):
        super().__init__(real, seed)
        u = self.rng.standard_normal(len(self.mean))
        self.mean = self.mean + offset * np.sqrt(np.trace(self.cov)) * u / np.linalg.norm(u)
        self.spread = spread

    def sample(self, n, lam=1.0):
        return super().sample(n, self.spread)


@pytest.mark.parametrize("offset, spread, measured", [(0.0, 0.6, True), (0.6, 0.6, False), (0.0, 1.6, False),
                                                      (0.6, 1.0, False)])
def test_a_shifted_synthetic_part_has_no_lambda_instead_of_a_clipped_one(food, offset, spread, measured):
    """The synthetic part of a 50/50 mixture moved away from the reference, or spread more than it,
    is not a shrunk copy of it: lambda is reported not measured (the old moments read a clipped 1.0
    for offset 0.6, spread 0.6), and the offset and spread are read back from the moments."""
    generator = ShiftedGaussian(food["generator"], seed=3, offset=offset, spread=spread)
    candidate = np.vstack([food["real"][:250], generator.sample(250)])
    got = inputs_from_audit(food["reference"], candidate, 0.5)
    assert got["lam_measured"] is measured, got
    part = got["synthetic_part"]
    assert abs(part["offset"] - offset) <= 0.1 and abs(part["spread_ratio"] - (spread + 0.0)) <= 0.15, part
    if measured:
        assert abs(got["lam"] - spread) <= 0.1 and "spread ratio" in got["lam_note"]
    else:
        assert "not measured" in got["lam_note"] and got["lam_interval"] == [1.0, 1.0]
