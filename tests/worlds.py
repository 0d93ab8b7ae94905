"""Synthetic data whose truth is known, made the way MAD's generators make it: a generative model
fitted to real CLIP embeddings and sampled with sampling bias lambda.

Shared by the tests and the benchmarks (which add tests/ to sys.path)."""

from __future__ import annotations

import numpy as np
from sklearn.mixture import GaussianMixture


class FittedGenerator:
    """A Gaussian mixture fitted to real embeddings in their top `dim` principal axes, with an
    independent Gaussian for the remaining axes (each with its own measured variance). Sampling
    with bias lambda scales every covariance by lambda, as truncation or guidance would: the
    samples have the real data's mean but less spread. `fingerprint` > 0 adds a fixed offset of
    that norm in a random direction, the systematic trace a real generator leaves in CLIP space
    (Ojha et al. 2023); 0 means the samples differ from real data in spread only. Samples are
    L2-normalised like CLIP embeddings."""

    def __init__(self, real: np.ndarray, seed: int, dim: int = 32, components: int = 10, fingerprint: float = 0.0):
        x = np.asarray(real, dtype=np.float64)
        self.rng = np.random.default_rng(seed)
        self.mean = x.mean(axis=0)
        _, s, vt = np.linalg.svd(x - self.mean, full_matrices=False)
        self.top, self.rest = vt[:dim], vt[dim:]
        coords = (x - self.mean) @ self.top.T
        self.rest_std = (s[dim:] / np.sqrt(len(x) - 1))
        self.mixture = GaussianMixture(components, covariance_type="full", reg_covar=1e-5, random_state=seed).fit(coords)
        offset = self.rng.standard_normal(x.shape[1])
        self.offset = fingerprint * offset / np.linalg.norm(offset)

    def sample(self, n: int, lam: float) -> np.ndarray:
        from audit.digits import sample_biased_mixture

        coords = sample_biased_mixture(self.mixture, n, lam, self.rng)
        rest = np.sqrt(lam) * self.rng.standard_normal((n, len(self.rest_std))) * self.rest_std
        out = self.mean + coords @ self.top + rest @ self.rest + self.offset
        return (out / np.linalg.norm(out, axis=1, keepdims=True)).astype(np.float32)


def mix(real: np.ndarray, synthetic: np.ndarray, share: float, n: int, rng: np.random.Generator
        ) -> tuple[np.ndarray, np.ndarray]:
    """A candidate of n items, round(share * n) of them synthetic: (vectors, is_synthetic)."""
    n_fake = int(round(share * n))
    real_rows = rng.choice(len(real), n - n_fake, replace=False)
    fake_rows = rng.choice(len(synthetic), n_fake, replace=False)
    vectors = np.vstack([real[real_rows], synthetic[fake_rows]])
    return vectors, np.r_[np.zeros(n - n_fake, bool), np.ones(n_fake, bool)]


class DroppedModesGenerator(FittedGenerator):
    """A generator that has lost some modes (mode collapse): it samples only the mixture components
    holding the larger `keep` share of the training mass, with bias lambda."""

    def __init__(self, real: np.ndarray, seed: int, keep: float = 0.5, **kwargs):
        super().__init__(real, seed, **kwargs)
        order = np.argsort(-self.mixture.weights_)
        kept = order[: max(1, int(np.searchsorted(np.cumsum(self.mixture.weights_[order]), keep) + 1))]
        weights = np.zeros_like(self.mixture.weights_)
        weights[kept] = self.mixture.weights_[kept]
        self.mixture.weights_ = weights / weights.sum()


class SubspaceGenerator(FittedGenerator):
    """A generator that models only the top `dim` principal axes well and collapses the rest to a
    fraction `rest_scale` of their spread (a low-capacity decoder)."""

    def __init__(self, real: np.ndarray, seed: int, rest_scale: float = 0.3, **kwargs):
        super().__init__(real, seed, **kwargs)
        self.rest_std = self.rest_std * rest_scale


def generator_families(pool: np.ndarray, seed: int) -> dict[str, tuple[FittedGenerator, float]]:
    """Three distinct simulated generator families on real CLIP, each fitted to its own 500 photos
    of `pool` (rows 0-1499 of a seeded permutation) and sampled with its own bias lambda:
    a mixture with a fingerprint offset, a mode-dropping mixture, and a subspace model."""
    rng = np.random.default_rng(10_000 + seed)
    order = rng.permutation(len(pool))
    fit = [pool[order[i * 500:(i + 1) * 500]] for i in range(3)]
    return {
        "fingerprint": (FittedGenerator(fit[0], seed, fingerprint=0.08), 0.8),
        "dropped_modes": (DroppedModesGenerator(fit[1], seed + 1, keep=0.5), 0.7),
        "subspace": (SubspaceGenerator(fit[2], seed + 2, dim=16, rest_scale=0.5), 0.9),
    }
