"""The loops, run as a Monte Carlo over generations, and the scoring of every generation.

Loop models (Alemohammad et al., ICLR 2024; Gerstgrasser et al. 2024), n training items per
generation, sampling bias lambda in (0, 1]:
- fully_synthetic: generation t+1 trains only on n samples of generation t;
- augment: a fixed real set (share p of n, drawn once) plus (1 - p) n samples of generation t;
- fresh: p n new real items each generation plus (1 - p) n samples of generation t;
- accumulate: everything is kept: the n real items and n samples of every past generation.

A generation's output also carries the stand-in's `separation` (component means pushed apart,
see standins.py; 1 = none), applied where lambda is: to the samples fed to the next generation.
p, lambda and the separation may differ per run (drawn from the measured inputs' intervals), which is how their
uncertainty reaches the forecast's bands. Three seeded streams keep runs comparable across
settings: one trains the models, one samples the scoring sets, one draws per-run inputs; so the
same seed gives the same generation 0 in every setting.
"""

from __future__ import annotations

import numpy as np

from audit.balls import grouped_ball_membership
from audit.metrics import psd_sqrt
from audit.projector.standins import ReferenceSpace

LOOPS = ("fully_synthetic", "augment", "fresh", "accumulate")
MAX_SEPARATION = 10.0  # a separation beyond this is not a generator's bias but a broken measurement
METRICS = ("precision", "recall", "coverage", "tail_coverage", "clusters_alive", "fd_model", "fd_output")


def per_run(value, runs: int, name: str, lo: float, hi: float, lo_open: bool = False) -> np.ndarray:
    out = np.broadcast_to(np.asarray(value, dtype=np.float64), (runs,)).copy()
    if np.any(out > hi) or np.any(out <= lo if lo_open else out < lo):
        raise ValueError(f"{name} must be in {'(' if lo_open else '['}{lo}, {hi}], got {value}")
    return out


def simulate(space: ReferenceSpace, stand_in, loop: str, real_fraction, n: int, lam, generations: int, runs: int,
             seed: int, eval_size: int, separation=1.0) -> dict[str, np.ndarray]:
    """Run the Monte Carlo; returns metric name -> (runs, generations + 1) values.
    `real_fraction`, `lam` and `separation`: one value, or one per run."""
    if loop not in LOOPS:
        raise ValueError(f"unknown loop '{loop}': use one of {', '.join(LOOPS)}")
    p = per_run(real_fraction, runs, "real_fraction", 0, 1)
    lam = per_run(lam, runs, "lambda", 0, 1, lo_open=True)
    separation = per_run(separation, runs, "separation", 0, MAX_SEPARATION, lo_open=True)
    if n < 2 or generations < 0 or runs < 1 or eval_size <= space.k:
        raise ValueError("need n >= 2, generations >= 0, runs >= 1 and eval_size > k")
    train_rng, score_rng = np.random.default_rng([seed, 0]), np.random.default_rng([seed, 1])
    values = {name: np.empty((runs, generations + 1)) for name in METRICS}
    mu0, cov0 = stand_in.truth_moments()
    truth = (mu0, cov0, psd_sqrt(cov0))
    for t, states in enumerate(evolve(stand_in, loop, p, n, lam, generations, train_rng, separation)):
        score(space, stand_in, states, lam, eval_size, score_rng, values, t, truth, separation)
    return values


def evolve(stand_in, loop: str, real_fraction: np.ndarray, n: int, lam: np.ndarray, generations: int,
           rng: np.random.Generator, separation: np.ndarray | None = None):
    """Yield the list of per-run model states for generations 0..generations."""
    runs = len(real_fraction)
    separation = np.ones(runs) if separation is None else separation
    n_real = np.rint(real_fraction * n).astype(int) if loop in ("augment", "fresh") else np.zeros(runs, int)
    n_syn = n - n_real
    states = [stand_in.initial(rng, n) for _ in range(runs)]
    fixed_real = [stand_in.real_stats(rng, int(n_real[r])) if loop == "augment" and n_real[r] else None
                  for r in range(runs)]
    accumulated = [[stand_in.real_stats(rng, n)] if loop == "accumulate" else None for _ in range(runs)]
    for t in range(generations + 1):
        yield states
        if t == generations:
            return
        for r in range(runs):
            synthetic = [stand_in.synthetic_stats(rng, states[r], lam[r], int(n_syn[r]),
                                                   separation[r])] if n_syn[r] else []
            if loop == "fully_synthetic":
                groups = synthetic
            elif loop == "augment":
                groups = synthetic + ([fixed_real[r]] if n_real[r] else [])
            elif loop == "fresh":
                groups = synthetic + ([stand_in.real_stats(rng, int(n_real[r]))] if n_real[r] else [])
            else:
                accumulated[r] += synthetic
                groups = accumulated[r]
            states[r] = stand_in.fit(groups)


def score(space: ReferenceSpace, stand_in, states, lam: np.ndarray, eval_size: int, rng: np.random.Generator,
          values: dict[str, np.ndarray], t: int, truth, separation: np.ndarray | None = None) -> None:
    """Score generation t of every run: `eval_size` samples of the fitted model against the
    held-out reference points (as the metrics engine scores a candidate), and the FD to the
    stand-in's truth of the fitted model (MAD's convention) and of its biased output. The
    sampling bias acts where the loop feeds a generation's samples to the next; the model itself
    is scored unbiased, so generation 0 (a fit to n real items) is the real-only baseline's."""
    runs = len(states)
    samples = np.vstack([stand_in.sample(rng, s, 1.0, eval_size) for s in states]).astype(np.float32)
    b = grouped_ball_membership(space.eval_points, space.eval_sq_radii, samples, eval_size, space.k)
    values["precision"][:, t] = (b.cand_ball_counts.reshape(runs, eval_size) > 0).mean(axis=1)
    values["recall"][:, t] = b.ref_in_cand_ball.mean(axis=1)
    values["coverage"][:, t] = b.ref_covered.mean(axis=1)
    values["tail_coverage"][:, t] = b.ref_covered[:, space.tail].mean(axis=1)
    centroids = space.centroids.astype(np.float32)  # few: a plain argmin beats an index
    nearest = np.argmin(np.einsum("ij,ij->i", centroids, centroids)[None, :] - 2 * samples @ centroids.T,
                        axis=1).reshape(runs, eval_size)
    separation = np.ones(runs) if separation is None else separation
    for name, bias, apart in (("fd_model", np.ones(runs), np.ones(runs)), ("fd_output", lam, separation)):
        moments = [stand_in.output_moments(state, bias[r], apart[r]) for r, state in enumerate(states)]
        values[name][:, t] = frechet_to_truth(truth, np.array([m[0] for m in moments]), np.array([m[1] for m in moments]))
    for r, state in enumerate(states):
        alive = stand_in.alive(state)
        values["clusters_alive"][r, t] = alive if alive is not None else np.unique(nearest[r]).size / len(space.centroids)


def frechet_to_truth(truth, means: np.ndarray, covs: np.ndarray) -> np.ndarray:
    """FD of many Gaussians (stacked means and covariances) to one truth (mu, Sigma, Sigma^1/2),
    the square-root term from the eigenvalues of Sigma^1/2 C Sigma^1/2, batched."""
    mu, sigma, root = truth
    middle = root @ covs @ root
    eig = np.linalg.eigvalsh((middle + middle.transpose(0, 2, 1)) / 2)
    trace_sqrt = np.sqrt(np.clip(eig, 0, None)).sum(axis=1)
    return (np.sum((means - mu) ** 2, axis=1) + np.trace(sigma) + np.trace(covs, axis1=1, axis2=2)
            - 2 * trace_sqrt)
