"""Digit fixtures: real handwritten digits and "synthetic" digits with a known share.

Real images are scikit-learn's bundled digits (1,797 scans of handwritten digits, 8x8, 17 grey
levels), so no download is needed. Synthetic images come from a generative model fitted to the
real digits that are in neither the reference nor the candidate: a Gaussian mixture over the 64 pixels, sampled with sampling bias lambda < 1 (each
component's covariance shrunk by lambda, as truncation or guidance would do). That makes them
plausible but less diverse than the real digits, the MAD signature, and which file is which is
known exactly.

Layout written by `make_digit_fixtures(out)`:
    reference/real/NNNN_dD.png       real digits (the trusted reference)
    candidate/real/NNNN_dD.png       other real digits
    candidate/synthetic/NNNN.png     synthetic digits, `synthetic_share` of the candidate
    labelled-synthetic/NNNN.png      more synthetic digits from the same generator (to train a detector)
    manifest.csv                     key,split,is_synthetic for every file
Deterministic for a given seed: same pixels every time.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.mixture import GaussianMixture

IMAGE_SIDE = 32  # 8x8 scans upscaled so they look like images, not thumbnails of thumbnails


@dataclass(frozen=True)
class DigitFixtureSpec:
    n_reference: int = 600
    n_candidate: int = 500
    synthetic_share: float = 0.2
    n_labelled_synthetic: int = 200
    sampling_bias: float = 0.5  # lambda
    mixture_components: int = 20
    seed: int = 0


def sample_biased_mixture(gmm: GaussianMixture, n: int, lam: float, rng: np.random.Generator) -> np.ndarray:
    """n samples from a fitted full-covariance mixture with every component covariance scaled by lam."""
    if not 0 < lam <= 1:
        raise ValueError(f"sampling bias lambda must be in (0, 1], got {lam}")
    components = rng.choice(len(gmm.weights_), size=n, p=gmm.weights_)
    chol = np.linalg.cholesky(gmm.covariances_)
    z = rng.standard_normal((n, gmm.means_.shape[1]))
    return gmm.means_[components] + np.sqrt(lam) * np.einsum("nij,nj->ni", chol[components], z)


def _to_image(pixels64: np.ndarray) -> Image.Image:
    grey = np.clip(np.rint(pixels64 * (255.0 / 16.0)), 0, 255).astype(np.uint8).reshape(8, 8)
    return Image.fromarray(grey, mode="L").resize((IMAGE_SIDE, IMAGE_SIDE), Image.Resampling.BILINEAR)


def make_digit_fixtures(out: str | Path, spec: DigitFixtureSpec = DigitFixtureSpec()) -> Path:
    """Write the digit fixture tree under `out` (see module docstring) and return the manifest path."""
    out = Path(out)
    rng = np.random.default_rng(spec.seed)
    digits = load_digits()
    n_candidate_synthetic = int(round(spec.synthetic_share * spec.n_candidate))
    n_candidate_real = spec.n_candidate - n_candidate_synthetic
    if spec.n_reference + n_candidate_real > len(digits.data):
        raise ValueError("not enough real digits for the requested reference and candidate sizes")

    order = rng.permutation(len(digits.data))
    reference_rows = order[: spec.n_reference]
    candidate_rows = order[spec.n_reference : spec.n_reference + n_candidate_real]

    # The generator is trained on other real digits (the rest of the scans), as a model trained on
    # a scrape would be: fitted on the reference itself it would memorise those very items, and
    # a detector would learn "looks like the training set" instead of "looks generated".
    generator_rows = order[spec.n_reference + n_candidate_real :]
    gmm = GaussianMixture(spec.mixture_components, covariance_type="full", reg_covar=1e-2, random_state=spec.seed)
    gmm.fit(digits.data[generator_rows])
    synthetic = sample_biased_mixture(gmm, n_candidate_synthetic + spec.n_labelled_synthetic, spec.sampling_bias, rng)

    manifest: list[tuple[str, str, int]] = []

    def write(pixels: np.ndarray, key: str, split: str, is_synthetic: int) -> None:
        path = out / key
        path.parent.mkdir(parents=True, exist_ok=True)
        _to_image(pixels).save(path, format="PNG", optimize=False)
        manifest.append((key, split, is_synthetic))

    for i, row in enumerate(reference_rows):
        write(digits.data[row], f"reference/real/{i:04d}_d{digits.target[row]}.png", "reference", 0)
    for i, row in enumerate(candidate_rows):
        write(digits.data[row], f"candidate/real/{i:04d}_d{digits.target[row]}.png", "candidate", 0)
    for i in range(n_candidate_synthetic):
        write(synthetic[i], f"candidate/synthetic/{i:04d}.png", "candidate", 1)
    for i in range(spec.n_labelled_synthetic):
        write(synthetic[n_candidate_synthetic + i], f"labelled-synthetic/{i:04d}.png", "labelled-synthetic", 1)

    manifest_path = out / "manifest.csv"
    with open(manifest_path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["key", "split", "is_synthetic"])
        writer.writerows(manifest)
    return manifest_path
