"""Projector: forecast how a training mixture goes MAD if reused generation after generation.

Loop models (Alemohammad et al., ICLR 2024; Gerstgrasser et al. 2024), with n training items per
generation and sampling bias lambda in (0, 1] (generation t samples with its spread times lambda,
like truncation or guidance):
- fully_synthetic: generation t+1 trains only on n samples of generation t;
- augment: a fixed real set (share p of n, drawn once) plus (1 - p) n samples of generation t;
- fresh: p n new real items each generation plus (1 - p) n samples of generation t;
- accumulate: everything is kept: the n real items and n samples of every past generation.

Stand-ins fitted to the reference in a PCA subspace of `dim` dimensions:
- gaussian: N(mu_t, lambda Sigma_t), refitted by maximum likelihood. The fit of n samples needs
  only their mean and scatter matrix, drawn exactly (normal and Wishart, Bartlett's construction)
  without drawing the samples, so n costs nothing;
- gmm: a scikit-learn Gaussian mixture; each component evolves like the Gaussian (lambda shrinks
  its covariance) with its share of the samples, the weights like the categorical stand-in, and a
  component that gets fewer than 2 samples dies. The refit assumes the samples' components are
  known (exact for well-separated components, an approximation of EM otherwise);
- categorical: k-means clusters of the reference with probabilities q_t; lambda sharpens them
  (q^(1/lambda), renormalised); a generation samples reference items cluster by cluster; a
  cluster that empties stays empty unless real data brings it back.

Each generation is scored like the metrics engine scores a candidate (precision, recall,
coverage, tail coverage, on `eval_size` samples per run against the projected reference), plus FD
from the generation's exact moments and the share of reference clusters still alive; every metric
comes back as the median and the 10-90% band over the Monte Carlo runs.

Closed forms for the Gaussian (`gaussian_moments`, `fresh_fixed_point`, `effective_sample_size`)
give a fast path and the tests' oracles.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from audit.balls import grouped_ball_membership, knn_sq_radii
from audit.index import ExactIndex, as_float32_matrix
from audit.metrics import frechet_distance_with_root, psd_sqrt, tail_indices

LOOPS = ("fully_synthetic", "augment", "fresh", "accumulate")
MODELS = ("gaussian", "gmm", "categorical")
METRICS = ("fd", "precision", "recall", "coverage", "tail_coverage", "clusters_alive")


# ---------------------------------------------------------------------------------------------
# Closed forms (Gaussian stand-in, expectations per unit of the real covariance)


def gaussian_moments(loop: str, generations: int, n: int, lam: float, real_fraction: float = 0.0
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Expected covariance scale c_t (E Sigma_t = c_t Sigma) and mean error v_t
    (E (mu_t - mu)(mu_t - mu)^T = v_t Sigma) for t = 0..generations, maximum-likelihood refits.
    Generation 0 is the fit to n real items. fully_synthetic and fresh only (augment keeps one
    real draw, whose correlations this recursion does not track)."""
    if loop not in ("fully_synthetic", "fresh"):
        raise ValueError("closed forms exist here for the fully_synthetic and fresh loops")
    n_real = int(round(real_fraction * n)) if loop == "fresh" else 0
    n_syn = n - n_real
    c, v = np.empty(generations + 1), np.empty(generations + 1)
    c[0], v[0] = (n - 1) / n, 1 / n
    for t in range(generations):
        # E scatter of the real part, of the synthetic part, and the between-groups term.
        between = (n_real * n_syn / n) * ((1 / n_real if n_real else 0) + lam * c[t] / max(n_syn, 1) + v[t]) \
            if n_real and n_syn else 0.0
        c[t + 1] = (max(n_real - 1, 0) + max(n_syn - 1, 0) * lam * c[t] + between) / n
        v[t + 1] = (n_real + n_syn * lam * c[t] + n_syn**2 * v[t]) / n**2
    return c, v


def fresh_fixed_point(real_fraction: float, lam: float) -> float:
    """Large-n limit of the fresh loop's covariance scale: c* = p / (1 - lambda (1 - p))."""
    return real_fraction / (1 - lam * (1 - real_fraction))


def effective_sample_size(n_real: int, n_synthetic: int, lam: float) -> float:
    """The number of real items alone whose fit is as far from the truth, in expected Frechet
    distance per unit of tr Sigma, as the fresh loop's limit with n_real real and n_synthetic
    synthetic items per generation: limit v* + (1 - sqrt c*)^2, real-only 1/n_e (to first order
    in 1/n). Synthetic data are admissible while n_e >= n_real."""
    n = n_real + n_synthetic
    c_star = fresh_fixed_point(n_real / n, lam) if n_real else 0.0
    v_star = (n_real + n_synthetic * lam * c_star) / (n * n - n_synthetic**2) if n_real else math.inf
    distance = v_star + (1 - math.sqrt(c_star)) ** 2
    return 1 / distance if distance > 0 else math.inf


def max_admissible_synthetic(n_real: int, lam: float, limit_factor: int = 1000) -> int:
    """The largest number of synthetic items per generation that keeps n_e >= n_real."""
    if effective_sample_size(n_real, 1, lam) < n_real:
        return 0
    lo, hi = 1, n_real * limit_factor
    if effective_sample_size(n_real, hi, lam) >= n_real:
        return hi
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if effective_sample_size(n_real, mid, lam) >= n_real else (lo, mid)
    return lo


# ---------------------------------------------------------------------------------------------
# Sampling helpers


def sample_stats(rng: np.random.Generator, mu: np.ndarray, root: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and scatter matrix of n draws from N(mu, root root^T), drawn exactly without the
    draws: the mean is normal, the scatter Wishart(n - 1) (Bartlett), and they are independent."""
    d = len(mu)
    if n <= d + 1:  # Bartlett needs n - 1 >= d; small n: draw the items
        z = rng.standard_normal((n, d)) @ root.T
        centred = z - z.mean(axis=0)
        return mu + z.mean(axis=0), centred.T @ centred
    a = np.tril(rng.standard_normal((d, d)), -1)
    a[np.diag_indices(d)] = np.sqrt(rng.chisquare(n - 1 - np.arange(d)))
    la = root @ a
    return mu + root @ rng.standard_normal(d) / math.sqrt(n), la @ la.T


def pool(groups: list[tuple[int, np.ndarray, np.ndarray]]) -> tuple[int, np.ndarray, np.ndarray]:
    """Combine (count, mean, scatter) of several groups into those of their union."""
    total = sum(g[0] for g in groups)
    mean = sum(g[0] * g[1] for g in groups) / total
    scatter = sum(g[2] + g[0] * np.outer(g[1] - mean, g[1] - mean) for g in groups)
    return total, mean, scatter


def sharpen(q: np.ndarray, lam: float) -> np.ndarray:
    """Sampling bias on a categorical: q^(1/lambda), renormalised (lambda = 1 leaves q)."""
    out = np.where(q > 0, q, 0.0) ** (1.0 / lam)
    return out / out.sum()


# ---------------------------------------------------------------------------------------------
# The reference in its PCA subspace


@dataclass
class ReferenceSpace:
    """The reference projected to `dim` principal components, with what scoring needs."""

    mean: np.ndarray
    components: np.ndarray  # (dim, D)
    points: np.ndarray  # (N, dim) projected reference
    eval_points: np.ndarray  # subset the generations are scored against
    eval_sq_radii: np.ndarray
    tail: np.ndarray  # indices into eval_points
    centroids: np.ndarray  # k-means of the projected reference
    labels: np.ndarray  # cluster of each projected reference point
    k: int

    @classmethod
    def fit(cls, reference: np.ndarray, dim: int, k: int = 5, eval_reference: int = 1000, n_clusters: int = 20,
            tail_q: float = 0.1, seed: int = 0) -> ReferenceSpace:
        from sklearn.cluster import KMeans

        x = np.asarray(reference, dtype=np.float64)
        if x.ndim != 2 or len(x) < max(2 * k, n_clusters) + 1:
            raise ValueError(f"need a 2-D reference with more than {max(2 * k, n_clusters)} items, got {x.shape}")
        dim = min(dim, x.shape[1], len(x) - 1)
        mean = x.mean(axis=0)
        _, _, vt = np.linalg.svd(x - mean, full_matrices=False)
        components = vt[:dim]
        points = (x - mean) @ components.T
        rng = np.random.default_rng(seed)
        chosen = np.sort(rng.choice(len(points), min(eval_reference, len(points)), replace=False))
        eval_points = points[chosen].astype(np.float32)
        radii = knn_sq_radii(eval_points, k)
        kmeans = KMeans(n_clusters=n_clusters, n_init=1, random_state=seed).fit(points)
        return cls(mean, components, points, eval_points, radii, tail_indices(np.sqrt(radii), tail_q),
                   kmeans.cluster_centers_, kmeans.labels_, k)

    @property
    def dim(self) -> int:
        return self.components.shape[0]


# ---------------------------------------------------------------------------------------------
# Stand-ins: each keeps a per-run state and knows how to train the next generation, sample its
# output and give the output's exact mean and covariance.


class GaussianStandIn:
    def __init__(self, space: ReferenceSpace):
        self.mu0 = space.points.mean(axis=0)
        self.cov0 = np.cov(space.points, rowvar=False, bias=True)
        self.root0 = psd_sqrt(self.cov0)

    def real_stats(self, rng, n):
        return (n, *sample_stats(rng, self.mu0, self.root0, n))

    def initial(self, rng, n):
        return self.fit([self.real_stats(rng, n)])

    def fit(self, groups):
        total, mean, scatter = pool(groups)
        return {"mu": mean, "cov": scatter / total, "root": psd_sqrt(scatter / total)}

    def synthetic_stats(self, rng, state, lam, n):
        return (n, *sample_stats(rng, state["mu"], math.sqrt(lam) * state["root"], n))

    def output_moments(self, state, lam):
        return state["mu"], lam * state["cov"]

    def sample(self, rng, state, lam, m):
        return state["mu"] + math.sqrt(lam) * rng.standard_normal((m, len(state["mu"]))) @ state["root"].T

    def alive(self, state, samples, space):
        return None  # judged from the samples


class MixtureStandIn:
    """Components evolve like the Gaussian, weights like the categorical (known assignments)."""

    def __init__(self, space: ReferenceSpace, n_components: int = 10, seed: int = 0):
        from sklearn.mixture import GaussianMixture

        gmm = GaussianMixture(n_components, covariance_type="full", reg_covar=1e-6 * np.trace(
            np.cov(space.points, rowvar=False)) / space.dim, random_state=seed).fit(space.points)
        self.w0, self.mu0, self.cov0 = gmm.weights_, gmm.means_, gmm.covariances_
        self.roots0 = [psd_sqrt(c) for c in self.cov0]

    def _groups(self, rng, weights, mus, roots, n):
        counts = rng.multinomial(n, weights)
        return [(int(c), *sample_stats(rng, mus[j], roots[j], int(c))) if c else None for j, c in enumerate(counts)]

    def real_stats(self, rng, n):
        return self._groups(rng, self.w0, self.mu0, self.roots0, n)

    def initial(self, rng, n):
        return self.fit([self.real_stats(rng, n)])

    def fit(self, groups_list):
        k = len(self.w0)
        per = [[g[j] for g in groups_list if g[j] is not None and g[j][0] > 0] for j in range(k)]
        counts = np.array([sum(g[0] for g in p) for p in per], dtype=float)
        weights = np.where(counts >= 2, counts, 0.0)
        mus, covs = self.mu0.copy(), self.cov0.copy()
        for j, p in enumerate(per):
            if counts[j] >= 2:
                total, mean, scatter = pool(p)
                mus[j], covs[j] = mean, scatter / total
        return {"w": weights / weights.sum(), "mu": mus, "cov": covs}

    def synthetic_stats(self, rng, state, lam, n):
        roots = [psd_sqrt(lam * c) for c in state["cov"]]
        return self._groups(rng, state["w"], state["mu"], roots, n)

    def output_moments(self, state, lam):
        w, mu = state["w"], state["mu"]
        mean = w @ mu
        second = np.einsum("k,kij->ij", w, lam * state["cov"] + np.einsum("ki,kj->kij", mu, mu))
        return mean, second - np.outer(mean, mean)

    def sample(self, rng, state, lam, m):
        comp = rng.choice(len(state["w"]), size=m, p=state["w"])
        out = np.empty((m, state["mu"].shape[1]))
        for j in np.unique(comp):
            rows = comp == j
            out[rows] = state["mu"][j] + rng.standard_normal((rows.sum(), out.shape[1])) @ psd_sqrt(lam * state["cov"][j]).T
        return out

    def alive(self, state, samples, space):
        return None


class CategoricalStandIn:
    def __init__(self, space: ReferenceSpace):
        self.labels = space.labels
        self.members = [np.flatnonzero(space.labels == j) for j in range(int(space.labels.max()) + 1)]
        self.q0 = np.array([len(m) for m in self.members], dtype=float) / len(space.labels)
        pts = space.points
        self.cmean = np.array([pts[m].mean(axis=0) for m in self.members])
        self.csecond = np.array([pts[m].T @ pts[m] / len(m) for m in self.members])
        self.points = pts

    def real_stats(self, rng, n):
        return rng.multinomial(n, self.q0)

    def initial(self, rng, n):
        return self.fit([self.real_stats(rng, n)])

    def fit(self, counts_list):
        counts = np.sum(counts_list, axis=0).astype(float)
        return {"q": counts / counts.sum()}

    def synthetic_stats(self, rng, state, lam, n):
        return rng.multinomial(n, sharpen(state["q"], lam))

    def output_moments(self, state, lam):
        q = sharpen(state["q"], lam)
        mean = q @ self.cmean
        return mean, np.einsum("k,kij->ij", q, self.csecond) - np.outer(mean, mean)

    def sample(self, rng, state, lam, m):
        counts = rng.multinomial(m, sharpen(state["q"], lam))
        return self.points[np.concatenate([rng.choice(self.members[j], c) for j, c in enumerate(counts) if c])]

    def alive(self, state, samples, space):
        return float(np.mean(state["q"] > 0))


def _stand_in(model: str, space: ReferenceSpace, seed: int):
    if model == "gaussian":
        return GaussianStandIn(space)
    if model == "gmm":
        return MixtureStandIn(space, seed=seed)
    if model == "categorical":
        return CategoricalStandIn(space)
    raise ValueError(f"unknown stand-in '{model}': use one of {', '.join(MODELS)}")


# ---------------------------------------------------------------------------------------------
# Monte Carlo


@dataclass
class Forecast:
    """Per-generation median and 10-90% band of every metric, and the summary numbers."""

    loop: str
    model: str
    params: dict[str, Any]
    generations: list[int]
    metrics: dict[str, dict[str, list[float]]]  # name -> {"median", "p10", "p90"}
    summary: dict[str, Any] = field(default_factory=dict)
    runs_values: dict[str, np.ndarray] = field(default_factory=dict, repr=False)  # name -> (runs, T+1)

    def to_dict(self) -> dict[str, Any]:
        return {"loop": self.loop, "model": self.model, "params": self.params, "generations": self.generations,
                "metrics": self.metrics, "summary": self.summary}


def simulate(space: ReferenceSpace, loop: str = "fresh", model: str = "gaussian", real_fraction: float = 0.1,
             n: int = 1000, lam: float = 0.8, generations: int = 20, runs: int = 200, seed: int = 0,
             eval_size: int = 128) -> dict[str, np.ndarray]:
    """Run the Monte Carlo; returns name -> (runs, generations + 1) array of metric values."""
    if loop not in LOOPS:
        raise ValueError(f"unknown loop '{loop}': use one of {', '.join(LOOPS)}")
    if not 0 < lam <= 1:
        raise ValueError(f"lambda must be in (0, 1], got {lam}")
    if not 0 <= real_fraction <= 1:
        raise ValueError(f"real_fraction must be in [0, 1], got {real_fraction}")
    if n < 2 or generations < 0 or runs < 1 or eval_size <= space.k:
        raise ValueError("need n >= 2, generations >= 0, runs >= 1 and eval_size > k")
    rng = np.random.default_rng(seed)
    stand_in = _stand_in(model, space, seed)
    values = {name: np.empty((runs, generations + 1)) for name in METRICS}
    mu0, cov0 = space.points.mean(axis=0), np.cov(space.points, rowvar=False, bias=True)
    reference_moments = (mu0, cov0, psd_sqrt(cov0))
    for t, states in enumerate(evolve(stand_in, loop, real_fraction, n, lam, generations, runs, rng)):
        _score(space, stand_in, states, lam, eval_size, rng, values, t, reference_moments)
    return values


def evolve(stand_in, loop: str, real_fraction: float, n: int, lam: float, generations: int, runs: int,
           rng: np.random.Generator):
    """Yield the list of per-run model states for generations 0..generations."""
    n_real = int(round(real_fraction * n)) if loop in ("augment", "fresh") else 0
    n_syn = n - n_real
    states = [stand_in.initial(rng, n) for _ in range(runs)]
    fixed_real = [stand_in.real_stats(rng, n_real) if loop == "augment" and n_real else None for _ in range(runs)]
    accumulated = [[stand_in.real_stats(rng, n)] if loop == "accumulate" else None for _ in range(runs)]
    for t in range(generations + 1):
        yield states
        if t == generations:
            return
        for r in range(runs):
            synthetic = [stand_in.synthetic_stats(rng, states[r], lam, n_syn)] if n_syn else []
            if loop == "fully_synthetic":
                groups = synthetic
            elif loop == "augment":
                groups = synthetic + ([fixed_real[r]] if n_real else [])
            elif loop == "fresh":
                groups = synthetic + ([stand_in.real_stats(rng, n_real)] if n_real else [])
            else:
                accumulated[r] += synthetic
                groups = accumulated[r]
            states[r] = stand_in.fit(groups)


def _score(space, stand_in, states, lam, eval_size, rng, values, t, reference_moments) -> None:
    runs = len(states)
    samples = np.vstack([stand_in.sample(rng, s, lam, eval_size) for s in states]).astype(np.float32)
    b = grouped_ball_membership(space.eval_points, space.eval_sq_radii, samples, eval_size, space.k)
    values["precision"][:, t] = (b.cand_ball_counts.reshape(runs, eval_size) > 0).mean(axis=1)
    values["recall"][:, t] = b.ref_in_cand_ball.mean(axis=1)
    values["coverage"][:, t] = b.ref_covered.mean(axis=1)
    values["tail_coverage"][:, t] = b.ref_covered[:, space.tail].mean(axis=1)
    nearest = ExactIndex(space.centroids).search(samples, 1).indices[:, 0].reshape(runs, eval_size)
    n_clusters = len(space.centroids)
    for r, state in enumerate(states):
        mean, cov = stand_in.output_moments(state, lam)
        values["fd"][r, t] = frechet_distance_with_root(*reference_moments, mean, cov)
        alive = stand_in.alive(state, samples, space)
        values["clusters_alive"][r, t] = alive if alive is not None else (
            np.unique(nearest[r]).size / n_clusters)


def summarise_runs(values: dict[str, np.ndarray]) -> dict[str, dict[str, list[float]]]:
    return {name: {"median": np.median(v, axis=0).tolist(), "p10": np.percentile(v, 10, axis=0).tolist(),
                   "p90": np.percentile(v, 90, axis=0).tolist()} for name, v in values.items()}


def mad_horizon(values: dict[str, np.ndarray], threshold: float) -> dict[str, Any]:
    """First generation (>= 1) where recall or tail coverage falls below `threshold`, per run;
    median and 10-90% band. Runs that never fall count as beyond the last generation."""
    below = (values["recall"] < threshold) | (values["tail_coverage"] < threshold)
    below[:, 0] = False
    last = below.shape[1] - 1
    first = np.where(below.any(axis=1), below.argmax(axis=1), last + 1)

    def show(x: float) -> int | str:
        return int(x) if x <= last else f">{last}"

    return {"threshold": threshold, "median": show(np.median(first)), "p10": show(np.percentile(first, 10)),
            "p90": show(np.percentile(first, 90)), "share_of_runs_reaching_it": float(np.mean(first <= last))}


def project(reference: np.ndarray, loop: str = "fresh", model: str = "gaussian", real_fraction: float = 0.1,
            n: int = 1000, lam: float = 0.8, generations: int = 20, runs: int = 200, dim: int = 64, seed: int = 0,
            threshold: float = 0.5, eval_size: int = 128, k: int = 5, search_fresh: bool = True,
            space: ReferenceSpace | None = None) -> Forecast:
    """Forecast the metrics over generations for one loop and stand-in (see the module docstring).

    Summary: the MAD horizon (recall or tail coverage below `threshold`), the smallest fresh real
    fraction whose median recall stays >= threshold for all generations (fresh loop, same stand-in,
    fewer runs; with `search_fresh`), and for the Gaussian the closed-form effective sample size
    and admissibility of the mixture."""
    space = space or ReferenceSpace.fit(as_float32_matrix(reference, "reference"), dim, k=k, seed=seed)
    values = simulate(space, loop, model, real_fraction, n, lam, generations, runs, seed, eval_size)
    summary: dict[str, Any] = {"mad_horizon": mad_horizon(values, threshold)}
    if search_fresh:
        summary["min_fresh_fraction"] = min_fresh_fraction(space, model, n, lam, generations, max(20, runs // 5),
                                                           seed, threshold, eval_size)
    n_real = int(round(real_fraction * n)) if loop in ("augment", "fresh") else 0
    if model == "gaussian" and loop == "fresh" and 0 < n_real < n:
        n_e = effective_sample_size(n_real, n - n_real, lam)
        summary["effective_sample_size"] = n_e
        summary["admissible"] = bool(n_e >= n_real)
        summary["max_admissible_synthetic"] = max_admissible_synthetic(n_real, lam)
        summary["fresh_fixed_point"] = fresh_fixed_point(real_fraction, lam)
    params = {"real_fraction": real_fraction, "n": n, "lam": lam, "generations": generations, "runs": runs,
              "dim": space.dim, "seed": seed, "eval_size": eval_size, "k": k, "threshold": threshold}
    return Forecast(loop, model, params, list(range(generations + 1)), summarise_runs(values), summary, values)


def inputs_from_audit(reference: np.ndarray, candidate: np.ndarray, synthetic_scores: np.ndarray,
                      synthetic_share: float) -> dict[str, float]:
    """The projector's inputs measured on a candidate set: real fraction p = 1 - estimated
    synthetic share, n = the candidate's size, and lambda = the spread (total variance) of the
    likely-synthetic items (score > 0.5) over that of the reference, clipped to (0, 1]."""
    x = np.asarray(reference, dtype=np.float64)
    likely = np.asarray(candidate, dtype=np.float64)[np.asarray(synthetic_scores) > 0.5]
    lam = 1.0
    if len(likely) >= 2:
        lam = float(np.clip(np.trace(np.cov(likely, rowvar=False)) / np.trace(np.cov(x, rowvar=False)), 1e-3, 1.0))
    return {"real_fraction": float(np.clip(1 - synthetic_share, 0, 1)), "lam": lam, "n": int(len(candidate))}


def min_fresh_fraction(space: ReferenceSpace, model: str, n: int, lam: float, generations: int, runs: int, seed: int,
                       threshold: float, eval_size: int, steps: int = 6) -> float | None:
    """Smallest p (to 1/2^steps) whose fresh loop keeps median recall >= threshold at every
    generation; None if even p = 1 does not."""
    def keeps(p: float) -> bool:
        v = simulate(space, "fresh", model, p, n, lam, generations, runs, seed, eval_size)
        return bool(np.all(np.median(v["recall"], axis=0) >= threshold))

    if not keeps(1.0):
        return None
    lo, hi = 0.0, 1.0
    if keeps(0.0):
        return 0.0
    for _ in range(steps):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if keeps(mid) else (mid, hi)
    return hi
