"""The reference in its PCA subspace, and the generative stand-ins the loops retrain.

A stand-in keeps a per-run state and knows how to train the next generation (`fit` on
sufficient statistics of groups of items), draw its items (`synthetic_stats`, `real_stats`),
sample points for scoring, and give the exact mean and covariance of its output:
- gaussian: N(mu_t, lambda Sigma_t), refitted by maximum likelihood. A fit needs only the mean
  and scatter matrix of its items, drawn exactly (normal and Wishart, Bartlett's construction)
  without drawing the items, so n costs nothing;
- gmm: a scikit-learn Gaussian mixture; each component evolves like the Gaussian with its share
  of the items, the weights like the categorical stand-in, and a component that gets fewer than 2
  items dies. The refit assumes the items' components are known (exact for well-separated
  components, an approximation of EM otherwise). Besides lambda (each component's spread), its
  output may carry a `separation` gamma: component means pushed from the mixture's mean,
  m + gamma (mu_j - m), which is what classifier-free guidance does to class means (measured on
  real loops: gamma 1.3 for guided digits, 2.2 for a guided CLIP prior); refitted on its own
  output, the separation compounds (gamma^t) and the samples leave the manifold;
- categorical: k-means clusters with probabilities q_t; lambda sharpens them (q^(1/lambda),
  renormalised); a generation resamples real items cluster by cluster; a cluster that empties
  stays empty unless real data brings it back (Shumailov et al. 2024).
The Gaussian has one component, so a separation leaves it unchanged; the categorical resamples
real items and cannot move its clusters (it refuses a separation other than 1).

Stand-ins are fitted to the reference's `fit_points`; generations are scored against the
disjoint `eval_points`, so a stand-in that copies its training items gains nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from audit.balls import grouped_ball_membership, knn_sq_radii
from audit.metrics import psd_sqrt, tail_indices

MODELS = ("gaussian", "gmm", "categorical")


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


def space_problem(shape: tuple[int, ...], k: int = 5, n_clusters: int = 20) -> str | None:
    """Why a reference of this shape cannot carry the forecast, or None: half of it fits the
    stand-ins (n_clusters k-means cells) and half scores them (k-NN balls of more than 2k points)."""
    need = 2 * max(2 * k, n_clusters) + 2
    if len(shape) != 2 or shape[0] < need:
        return (f"the forecast needs at least {need} reference items (half fit the stand-ins, half score them), "
                f"have {shape[0] if len(shape) == 2 else 'a non-matrix'}")
    return None


@dataclass
class ReferenceSpace:
    """The reference projected to `dim` principal components and split in two: `fit_points`
    train the stand-ins, `eval_points` (with their k-NN radii and tail) score the generations."""

    mean: np.ndarray
    components: np.ndarray  # (dim, D)
    fit_points: np.ndarray  # (N_fit, dim)
    eval_points: np.ndarray  # (N_eval, dim), float32
    eval_sq_radii: np.ndarray
    tail: np.ndarray  # indices into eval_points
    centroids: np.ndarray  # k-means of the fit points
    labels: np.ndarray  # cluster of each fit point
    k: int
    eval_rows: np.ndarray | None = None  # rows of the reference that became eval_points (the rest fit)

    @classmethod
    def fit(cls, reference: np.ndarray, dim: int, k: int = 5, eval_reference: int = 1000, n_clusters: int = 20,
            tail_q: float = 0.1, seed: int = 0) -> ReferenceSpace:
        from audit.clusters import kmeans

        x = np.asarray(reference, dtype=np.float64)
        problem = space_problem(x.shape, k, n_clusters)
        if problem:
            raise ValueError(problem)
        dim = min(dim, x.shape[1], len(x) // 2 - 1)
        mean = x.mean(axis=0)
        _, sv, vt = np.linalg.svd(x - mean, full_matrices=False)
        # Axes without variance (constant pixels, a rank-deficient reference) carry nothing to
        # forecast and would give the closed forms a zero variance: keep the informative ones.
        dim = max(1, min(dim, int(np.count_nonzero(sv > 1e-6 * sv[0]))))
        components = vt[:dim]
        points = (x - mean) @ components.T
        order = np.random.default_rng(seed).permutation(len(points))
        n_eval = min(eval_reference, len(points) // 2)
        eval_points = points[np.sort(order[:n_eval])].astype(np.float32)
        fit_points = points[np.sort(order[n_eval:])]
        radii = knn_sq_radii(eval_points, k)
        clusters = kmeans(fit_points, n_clusters, seed)
        return cls(mean, components, fit_points, eval_points, radii, tail_indices(np.sqrt(radii), tail_q),
                   clusters.centroids, clusters.labels, k, np.sort(order[:n_eval]))

    def project(self, items: np.ndarray) -> np.ndarray:
        """Items of the reference's own space in the principal axes the stand-ins live in."""
        return ((np.asarray(items, dtype=np.float64) - self.mean) @ self.components.T).astype(np.float32)

    def precision_recall(self, *sets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Precision and recall of each of several equal-size sets of points (in these axes),
        scored as candidates against the eval points: one batched membership for all of them."""
        size = len(sets[0])
        both = np.vstack(sets).astype(np.float32)
        b = grouped_ball_membership(self.eval_points, self.eval_sq_radii, both, size, self.k)
        return (b.cand_ball_counts.reshape(len(sets), size) > 0).mean(axis=1), b.ref_in_cand_ball.mean(axis=1)

    @property
    def dim(self) -> int:
        return self.components.shape[0]

    @property
    def spectrum(self) -> np.ndarray:
        """Variances along the principal axes (maximum likelihood, of the fit points)."""
        return np.linalg.eigvalsh(np.atleast_2d(np.cov(self.fit_points, rowvar=False, bias=True)))[::-1]


class GaussianStandIn:
    name = "gaussian"

    def __init__(self, space: ReferenceSpace, seed: int = 0):
        self.mu0 = space.fit_points.mean(axis=0)
        self.cov0 = np.atleast_2d(np.cov(space.fit_points, rowvar=False, bias=True))
        self.root0 = psd_sqrt(self.cov0)

    def truth_state(self):
        return {"mu": self.mu0, "cov": self.cov0, "root": self.root0}

    def truth_moments(self):
        return self.mu0, self.cov0

    def real_stats(self, rng, n):
        return (n, *sample_stats(rng, self.mu0, self.root0, n))

    def initial(self, rng, n):
        return self.fit([self.real_stats(rng, n)])

    def fit(self, groups):
        total, mean, scatter = pool(groups)
        return {"mu": mean, "cov": scatter / total, "root": psd_sqrt(scatter / total)}

    def synthetic_stats(self, rng, state, lam, n, separation=1.0):
        return (n, *sample_stats(rng, state["mu"], math.sqrt(lam) * state["root"], n))

    def output_moments(self, state, lam, separation=1.0):
        return state["mu"], lam * state["cov"]

    def sample(self, rng, state, lam, m, separation=1.0):
        return state["mu"] + math.sqrt(lam) * rng.standard_normal((m, len(state["mu"]))) @ state["root"].T

    def alive(self, state):
        return None  # judged from the samples


class MixtureStandIn:
    """Components evolve like the Gaussian, weights like the categorical (known assignments)."""

    name = "gmm"

    def __init__(self, space: ReferenceSpace, seed: int = 0, n_components: int = 10):
        from sklearn.mixture import GaussianMixture

        pts = space.fit_points
        reg = 1e-6 * np.trace(np.cov(pts, rowvar=False)) / pts.shape[1]
        gmm = GaussianMixture(n_components, covariance_type="full", reg_covar=reg, random_state=seed).fit(pts)
        self.w0, self.mu0, self.cov0 = gmm.weights_, gmm.means_, gmm.covariances_
        self.roots0 = [psd_sqrt(c) for c in self.cov0]

    def truth_state(self):
        return {"w": self.w0, "mu": self.mu0, "cov": self.cov0, "root": np.array(self.roots0)}

    def truth_moments(self):
        return self.output_moments(self.truth_state(), 1.0)

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
        # Each component's square root once per fit: sqrt(lam C) = sqrt(lam) sqrt(C) for every lambda
        # (one eigendecomposition per component a generation, not one per draw).
        roots = np.array([psd_sqrt(c) if counts[j] >= 2 else self.roots0[j] for j, c in enumerate(covs)])
        return {"w": weights / weights.sum(), "mu": mus, "cov": covs, "root": roots}

    def synthetic_stats(self, rng, state, lam, n, separation=1.0):
        return self._groups(rng, state["w"], separated(state, separation), math.sqrt(lam) * self._roots(state), n)

    def _roots(self, state):
        return state["root"] if "root" in state else np.array([psd_sqrt(c) for c in state["cov"]])

    def output_moments(self, state, lam, separation=1.0):
        w, mu = state["w"], separated(state, separation)
        mean = w @ mu
        second = np.einsum("k,kij->ij", w, lam * state["cov"] + np.einsum("ki,kj->kij", mu, mu))
        return mean, second - np.outer(mean, mean)

    def sample(self, rng, state, lam, m, separation=1.0):
        comp = rng.choice(len(state["w"]), size=m, p=state["w"])
        roots, mus = self._roots(state), separated(state, separation)
        out = np.empty((m, mus.shape[1]))
        for j in np.unique(comp):
            rows = comp == j
            out[rows] = mus[j] + math.sqrt(lam) * rng.standard_normal((rows.sum(), out.shape[1])) @ roots[j].T
        return out

    def separation_of(self, points: np.ndarray) -> float:
        """How far apart `points` hold the truth's components: each point goes to the nearest
        component mean (Euclidean: a likelihood in 64 pixel axes is ruled by the axes without
        variance), and gamma is the least-squares slope, weighted by counts, of the points' means
        per component on the components' own means, both taken from the mixture's mean."""
        points = np.asarray(points, dtype=np.float64)
        centre = self.w0 @ self.mu0
        nearest = np.argmin(np.einsum("kd,kd->k", self.mu0, self.mu0)[None, :] - 2 * points @ self.mu0.T, axis=1)
        counts = np.bincount(nearest, minlength=len(self.w0)).astype(float)
        sums = np.zeros_like(self.mu0)
        np.add.at(sums, nearest, points)
        held = counts > 0
        offsets = self.mu0[held] - centre
        moved = sums[held] / counts[held, None] - centre
        return float(np.sum(counts[held] * np.einsum("kd,kd->k", moved, offsets))
                     / np.sum(counts[held] * np.einsum("kd,kd->k", offsets, offsets)))

    def alive(self, state):
        return None


class CategoricalStandIn:
    name = "categorical"

    def __init__(self, space: ReferenceSpace, seed: int = 0):
        pts = space.fit_points
        self.members = [np.flatnonzero(space.labels == j) for j in range(int(space.labels.max()) + 1)]
        self.q0 = np.array([len(m) for m in self.members], dtype=float) / len(space.labels)
        self.cmean = np.array([pts[m].mean(axis=0) for m in self.members])
        self.csecond = np.array([pts[m].T @ pts[m] / len(m) for m in self.members])
        self.points = pts

    def truth_state(self):
        return {"q": self.q0}

    def truth_moments(self):
        return self.output_moments(self.truth_state(), 1.0)

    def real_stats(self, rng, n):
        return rng.multinomial(n, self.q0)

    def initial(self, rng, n):
        return self.fit([self.real_stats(rng, n)])

    def fit(self, counts_list):
        counts = np.sum(counts_list, axis=0).astype(float)
        return {"q": counts / counts.sum()}

    def synthetic_stats(self, rng, state, lam, n, separation=1.0):
        _fixed_clusters(separation)
        return rng.multinomial(n, sharpen(state["q"], lam))

    def output_moments(self, state, lam, separation=1.0):
        _fixed_clusters(separation)
        q = sharpen(state["q"], lam)
        mean = q @ self.cmean
        return mean, np.einsum("k,kij->ij", q, self.csecond) - np.outer(mean, mean)

    def sample(self, rng, state, lam, m, separation=1.0):
        _fixed_clusters(separation)
        counts = rng.multinomial(m, sharpen(state["q"], lam))
        return self.points[np.concatenate([rng.choice(self.members[j], c) for j, c in enumerate(counts) if c])]

    def alive(self, state):
        return float(np.mean(state["q"] > 0))


def separated(state, separation: float) -> np.ndarray:
    """A mixture's component means pushed from its mean by `separation` (1 leaves them)."""
    if separation == 1.0:
        return state["mu"]
    centre = state["w"] @ state["mu"]
    return centre + separation * (state["mu"] - centre)


def _fixed_clusters(separation: float) -> None:
    if separation != 1.0:
        raise ValueError("the categorical stand-in resamples real items and cannot move its clusters: "
                         f"separation must be 1, got {separation}")


def make_stand_in(model: str, space: ReferenceSpace, seed: int = 0):
    kinds = {"gaussian": GaussianStandIn, "gmm": MixtureStandIn, "categorical": CategoricalStandIn}
    if model not in kinds:
        raise ValueError(f"unknown stand-in '{model}': use one of {', '.join(MODELS)} or auto")
    return kinds[model](space, seed=seed)
