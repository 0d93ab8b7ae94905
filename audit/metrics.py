"""Metrics: how faithful, diverse and complete a candidate set is next to a real reference set.

X is the reference (N points), Y the candidate (M points), distances plain Euclidean, k-NN radii
exclude the point itself, ball membership uses `<=` (prdc uses `<`; the two agree on continuous
data, but `<` puts an exact duplicate outside a ball of radius 0, prdc issue #7).

- precision = (1/M) sum_j 1[exists i: d(y_j, x_i) <= r_k(x_i)]       (Kynkaanniemi et al. 2019)
- recall    = (1/N) sum_i 1[exists j: d(x_i, y_j) <= r_k(y_j)]
- density   = (1/(kM)) sum_j sum_i 1[d(y_j, x_i) <= r_k(x_i)]         (Naeem et al. 2020)
- coverage  = (1/N) sum_i 1[exists j: d(x_i, y_j) <= r_k(x_i)]
- tail coverage: coverage over the reference points with the largest r_k (top q, the sparsest)
- cluster tail mass: k-means on X; the smallest clusters holding >= 10% of X; Y's share there
- FD: |mu_X - mu_Y|^2 + tr S_X + tr S_Y - 2 tr (S_X^1/2 S_Y S_X^1/2)^1/2, from eigenvalues
- KID: unbiased MMD^2, kernel (x.y/d + 1)^3, 100 subsets of min(1000, N, M), seeded
- CMMD: MMD^2 with a Gaussian kernel, sigma = 10, times 1000 (Jayasumana et al. 2024)
- Vendi score: exp(entropy of the eigenvalues of K/n), cosine kernel, through the d x d dual
- near duplicates: candidate items whose nearest other candidate item, or nearest reference item,
  is at most as far as the 0.1% quantile of the reference's own nearest-neighbour distances
  (or, with the cosine rule, has cosine similarity >= a threshold); see `audit.duplicates`

Every metric comes back as a `Metric` with its value, sizes, parameters, method and (where cheap
and sound) a 95% interval; `compare` computes them all and serialises to JSON.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from audit.balls import BallMembership, ball_membership
from audit.clusters import kmeans
from audit.duplicates import RULES as DUPLICATE_RULES
from audit.duplicates import NearDuplicates, Pair, _unit_rows, calibrated_duplicates, cosine_duplicates
from audit.index import as_float32_matrix, as_float32_pair
from audit.kid import draw_subsets, float32_is_enough, kid, kid_from_cubic_sums, kid_in_pass_is_cheaper
from audit.pairwise import pairwise_summary

CONFIDENCE = 0.95
_Z = 1.959963984540054  # two-sided 95% normal quantile


@dataclass
class Metric:
    value: float
    method: str
    n: dict[str, int]
    ci: tuple[float, float] | None = None
    ci_method: str | None = None
    params: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["ci"] = list(self.ci) if self.ci is not None else None
        return out


# ---------------------------------------------------------------------------------------------
# Intervals


def wilson_interval(successes: int, n: int, z: float = _Z) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (sound near 0 and 1, unlike Wald)."""
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # At 0 or n successes the bound is exactly 0 or 1; say so rather than 1 - 1e-16.
    return (0.0 if successes == 0 else max(0.0, centre - half), 1.0 if successes == n else min(1.0, centre + half))


def _percentile_ci(samples: np.ndarray) -> tuple[float, float]:
    lo, hi = np.percentile(samples, [100 * (1 - CONFIDENCE) / 2, 100 * (1 + CONFIDENCE) / 2])
    return (float(lo), float(hi))


# ---------------------------------------------------------------------------------------------
# Precision, recall, density, coverage, tails


def prdc(reference: np.ndarray, candidate: np.ndarray, k: int = 5) -> dict[str, float]:
    """The four rates as plain floats (see the module docstring)."""
    return prdc_from_membership(ball_membership(reference, candidate, k))


def prdc_from_membership(b: BallMembership) -> dict[str, float]:
    m = len(b.cand_ball_counts)
    return {
        "precision": float(np.count_nonzero(b.cand_ball_counts) / m),
        "recall": float(b.ref_in_cand_ball.mean()),
        "density": float(b.cand_ball_counts.sum() / (b.k * m)),
        "coverage": float(b.ref_covered.mean()),
    }


def tail_indices(ref_radii: np.ndarray, q: float) -> np.ndarray:
    """The ceil(q N) reference points with the largest k-NN radius (ties broken by index)."""
    if not 0 < q <= 1:
        raise ValueError(f"tail fraction q must be in (0, 1], got {q}")
    n_tail = max(1, math.ceil(q * len(ref_radii)))
    order = np.lexsort((np.arange(len(ref_radii)), -ref_radii))
    return np.sort(order[:n_tail])


def fidelity_metrics(b: BallMembership, tail_q: float = 0.1) -> dict[str, Metric]:
    """precision, recall, density, coverage and tail coverage, with 95% intervals.

    Each interval treats one set as fixed and the items of the other as independent draws:
    precision and density vary with the candidate items (the reference balls fixed), recall,
    coverage and tail coverage with the reference items (the candidate fixed, k-NN radii taken as
    local properties). In simulation (Gaussian, N = M = 500, d = 16) the spread over redraws of
    both sets is about 15% wider than these conditional intervals imply.
    """
    n, m, k = len(b.ref_covered), len(b.cand_ball_counts), b.k
    sizes = {"reference": n, "candidate": m}
    rates = prdc_from_membership(b)
    tail = tail_indices(b.ref_radii, tail_q)
    per_item_density = b.cand_ball_counts / k
    half = _Z * per_item_density.std(ddof=1) / math.sqrt(m) if m > 1 else math.inf
    over_candidates = "Wilson, binomial over candidate items, reference fixed"
    over_reference = "Wilson, binomial over reference items, candidate fixed"
    hits = int(np.count_nonzero(b.cand_ball_counts))
    return {
        "precision": Metric(rates["precision"], "k-NN balls of the reference, <= membership", sizes,
                            wilson_interval(hits, m), over_candidates, {"k": k}),
        "recall": Metric(rates["recall"], "k-NN balls of the candidate, <= membership", sizes,
                         wilson_interval(int(b.ref_in_cand_ball.sum()), n), over_reference, {"k": k}),
        "density": Metric(rates["density"], "mean number of reference balls holding a candidate item / k", sizes,
                          (max(0.0, rates["density"] - half), rates["density"] + half),
                          "normal, mean over candidate items, reference fixed", {"k": k}),
        "coverage": Metric(rates["coverage"], "share of reference balls holding a candidate item", sizes,
                           wilson_interval(int(b.ref_covered.sum()), n), over_reference, {"k": k}),
        "tail_coverage": Metric(float(b.ref_covered[tail].mean()),
                                "coverage of the reference points with the largest k-NN radius",
                                {**sizes, "tail": len(tail)}, wilson_interval(int(b.ref_covered[tail].sum()), len(tail)),
                                over_reference, {"k": k, "q": tail_q}),
    }


def cluster_tail_mass(reference: np.ndarray, candidate: np.ndarray, n_clusters: int | None = None,
                      tail_mass: float = 0.1, seed: int = 0) -> Metric:
    """k-means on the reference; the smallest clusters that together hold >= tail_mass of it are
    its tail; value = the candidate's share in those clusters (compare with `reference_share`)."""
    x = as_float32_matrix(reference, "reference")
    y = as_float32_matrix(candidate, "candidate")
    n_clusters = n_clusters or int(min(50, max(2, len(x) // 50)))
    clusters = kmeans(x, n_clusters, seed)
    ref_sizes = clusters.sizes
    cand_sizes = np.bincount(clusters.assign(y), minlength=n_clusters)

    order = np.lexsort((np.arange(n_clusters), ref_sizes))  # smallest first, ties by id
    cumulative = np.cumsum(ref_sizes[order])
    n_tail = int(np.searchsorted(cumulative, tail_mass * len(x)) + 1)
    tail = order[:n_tail]
    in_tail = int(cand_sizes[tail].sum())
    return Metric(
        in_tail / len(y),
        "candidate share in the smallest k-means clusters of the reference",
        {"reference": len(x), "candidate": len(y)},
        wilson_interval(in_tail, len(y)),
        "Wilson, binomial over candidate items, clusters fixed",
        {
            "n_clusters": n_clusters,
            "tail_clusters": n_tail,
            "tail_mass": tail_mass,
            "reference_share": float(ref_sizes[tail].sum() / len(x)),
            "empty_clusters": int(np.count_nonzero(cand_sizes == 0)),
            "seed": seed,
        },
    )


# ---------------------------------------------------------------------------------------------
# Distribution distances


def gaussian_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance (ddof=1, as clean-fid and torch-fidelity) in float64."""
    x = np.asarray(x, dtype=np.float64)
    return x.mean(axis=0), np.cov(x, rowvar=False)


def psd_sqrt(a: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric positive semi-definite matrix (negative rounding
    noise in the eigenvalues clipped to 0)."""
    w, v = np.linalg.eigh((a + a.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance_from_stats(mu1, sigma1, mu2, sigma2) -> float:
    """|mu1 - mu2|^2 + tr S1 + tr S2 - 2 tr (S1^1/2 S2 S1^1/2)^1/2, via symmetric eigendecompositions:
    S1^1/2 S2 S1^1/2 is symmetric PSD, so its square root's trace is the sum of the square roots of
    its eigenvalues (equal to tr sqrtm(S1 S2), which has the same eigenvalues) and no complex
    arithmetic is needed."""
    return frechet_distance_with_root(mu1, sigma1, psd_sqrt(sigma1), mu2, sigma2)


def frechet_distance_with_root(mu1, sigma1, root1, mu2, sigma2) -> float:
    """The same, with S1^1/2 given (many distances to one reference)."""
    middle = root1 @ sigma2 @ root1
    eig = np.linalg.eigvalsh((middle + middle.T) / 2)
    trace_sqrt = float(np.sqrt(np.clip(eig, 0, None)).sum())
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_sqrt)


def frechet_distance(x: np.ndarray, y: np.ndarray) -> float:
    return frechet_distance_from_stats(*gaussian_stats(x), *gaussian_stats(y))


def cmmd(x: np.ndarray, y: np.ndarray, sigma: float = 10.0, scale: float = 1000.0) -> float:
    """CMMD (Jayasumana et al. 2024): scale * MMD^2 with k(a, b) = exp(-|a - b|^2 / (2 sigma^2)),
    the biased (all pairs) estimator of the reference implementation.

    Computed as sums of 1 - k (expm1: the constant 1s that cancel are never added, so nothing is
    lost to cancellation), blocked, each within-set block pair once (the kernel is symmetric)."""
    gamma = rbf_gamma(sigma)
    x = as_float32_matrix(x, "x")
    y = as_float32_matrix(y, "y")
    mean = x.mean(axis=0, dtype=np.float64)  # centred: the expansion of |a - b|^2 keeps its digits
    x, y = (x - mean).astype(np.float32), (y - mean).astype(np.float32)
    deficits = {"xx": _rbf_deficit_sum(x, x, gamma, symmetric=True), "yy": _rbf_deficit_sum(y, y, gamma, symmetric=True),
                "xy": _rbf_deficit_sum(x, y, gamma, symmetric=False)}
    return cmmd_from_deficits(deficits, len(x), len(y), scale)


def rbf_gamma(sigma: float) -> float:
    return 1.0 / (2 * sigma * sigma)


def cmmd_from_deficits(deficits: dict[str, float], n: int, m: int, scale: float = 1000.0) -> float:
    """scale * MMD^2 from the sums over all ordered pairs of 1 - k within X ("xx"), within Y ("yy")
    and across ("xy"): MMD^2 = mean k_xx + mean k_yy - 2 mean k_xy, and the 1s cancel."""
    return scale * (2 * deficits["xy"] / (n * m) - deficits["xx"] / (n * n) - deficits["yy"] / (m * m))


def _rbf_deficit_sum(a: np.ndarray, b: np.ndarray, gamma: float, symmetric: bool, block: int = 1024) -> float:
    """sum over all pairs (i, j) of 1 - exp(-gamma |a_i - b_j|^2), float32 terms, float64 sums.
    With `symmetric` (a is b), only blocks on or above the diagonal are computed."""
    na = np.einsum("ij,ij->i", a, a)
    nb = np.einsum("ij,ij->i", b, b)
    total = 0.0
    for s in range(0, len(a), block):
        e = min(len(a), s + block)
        first = s if symmetric else 0
        g = a[s:e] @ b[first:].T  # (rows, cols) float32
        g *= 2 * gamma
        g -= gamma * na[s:e, None]
        g -= gamma * nb[None, first:]  # = -gamma |a - b|^2
        np.minimum(g, 0, out=g)
        np.expm1(g, out=g)  # k - 1, in (-1, 0]
        if symmetric:  # the square block on the diagonal holds each of its pairs twice already
            total -= g[:, :e - s].sum(dtype=np.float64) + 2 * g[:, e - s:].sum(dtype=np.float64)
        else:
            total -= g.sum(dtype=np.float64)
    return total


# ---------------------------------------------------------------------------------------------
# Diversity and duplicates


def vendi_score(x: np.ndarray) -> float:
    """Vendi score with the cosine kernel: exp of the Shannon entropy of the eigenvalues of K/n,
    K = Xn Xn^T. The nonzero eigenvalues of K/n equal those of the d x d matrix Xn^T Xn / n."""
    xn = _unit_rows(x)
    eig = np.clip(np.linalg.eigvalsh(xn.T @ xn / len(xn)), 0, None)
    eig = eig[eig > 0]
    eig /= eig.sum()
    return float(np.exp(-(eig * np.log(eig)).sum()))


# ---------------------------------------------------------------------------------------------
# Everything at once


@dataclass
class Comparison:
    """The result of `compare`: plain data, serialisable with `to_dict` / `to_json`."""

    n_reference: int
    n_candidate: int
    dim: int
    metrics: dict[str, Metric]
    duplicates: NearDuplicates
    reference_keys: list[str] | None = None
    candidate_keys: list[str] | None = None
    max_pairs: int = 1000

    def to_dict(self) -> dict[str, Any]:
        def pairs(items: list[Pair], other_keys):
            shown = sorted(items, key=lambda p: (p.distance, p.candidate))[: self.max_pairs]
            return [{"candidate": self._key(self.candidate_keys, p.candidate), "match": self._key(other_keys, p.match),
                     "distance": p.distance, "cosine": p.cosine} for p in shown]

        dup = self.duplicates
        return {
            "n_reference": self.n_reference,
            "n_candidate": self.n_candidate,
            "dim": self.dim,
            "metrics": {name: m.to_dict() for name, m in self.metrics.items()},
            "near_duplicates": {
                "rule": dup.rule,
                "threshold": dup.threshold,
                "quantile": dup.quantile,
                "reference_rate": dup.reference_rate,
                "description": dup.describe(),
                "within_candidate": pairs(dup.within_candidate, self.candidate_keys),
                "copies_of_reference": pairs(dup.copies_of_reference, self.reference_keys),
                "pairs_shown_at_most": self.max_pairs,
            },
        }

    def to_json(self, **kwargs) -> str:
        return json.dumps(self.to_dict(), **kwargs)

    @staticmethod
    def _key(keys: list[str] | None, row: int) -> str | int:
        return keys[row] if keys is not None else row


def compare(
    reference: np.ndarray,
    candidate: np.ndarray,
    k: int = 5,
    tail_q: float = 0.1,
    duplicate_rule: str = "calibrated",
    duplicate_quantile: float = 0.001,
    duplicate_threshold: float = 0.95,
    n_clusters: int | None = None,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    seed: int = 0,
    reference_keys: list[str] | None = None,
    candidate_keys: list[str] | None = None,
) -> Comparison:
    """Every metric of the module docstring for reference (N, d) vs candidate (M, d). Everything
    that needs pairwise distances comes from one pass over them (`pairwise.pairwise_summary`).
    Near duplicates: `duplicate_rule` "calibrated" (the `duplicate_quantile` of the reference's
    nearest-neighbour distances) or "cosine" (`duplicate_threshold`), see `audit.duplicates`."""
    if duplicate_rule not in DUPLICATE_RULES:
        raise ValueError(f"unknown duplicate rule '{duplicate_rule}': use {' or '.join(DUPLICATE_RULES)}")
    x, y = as_float32_pair(reference, candidate)
    if min(len(x), len(y)) < 1:
        raise ValueError(f"need at least one item on each side, have {len(x)} and {len(y)}")
    for name, keys, arr in (("reference", reference_keys, x), ("candidate", candidate_keys, y)):
        if keys is not None and len(keys) != len(arr):
            raise ValueError(f"{name}_keys has {len(keys)} entries for {len(arr)} vectors")
    sizes = {"reference": len(x), "candidate": len(y)}

    sigma = 10.0
    knn_missing = knn_problem(len(x), len(y), k)
    pairs_missing = pairs_problem(len(x), len(y))
    subsets = draw_subsets(len(x), len(y), kid_subsets, kid_subset_size, seed) if pairs_missing is None else None
    kid_in_pass = (knn_missing is None and float32_is_enough(x, y)
                   and kid_in_pass_is_cheaper(len(x), len(y), subsets, x.shape[1]))
    if knn_missing is None:
        summary = pairwise_summary(x, y, k, rbf_gamma=rbf_gamma(sigma), kid_subsets=subsets if kid_in_pass else None)
        metrics = fidelity_metrics(summary.membership, tail_q)
        cmmd_value = cmmd_from_deficits(summary.rbf_deficits, len(x), len(y))
    else:  # too few items for k-NN balls: those five read "not available", the rest still come
        summary = None
        metrics = {name: unavailable(knn_missing, sizes) for name in KNN_METRICS}
        cmmd_value = cmmd(x, y, sigma)
    clusters_missing = clusters_problem(len(x), n_clusters)
    metrics["cluster_tail_mass"] = (cluster_tail_mass(x, y, n_clusters, seed=seed) if clusters_missing is None
                                    else unavailable(clusters_missing, sizes))
    if pairs_missing is None:
        metrics["fd"] = Metric(frechet_distance(x, y), "Frechet distance of Gaussians fitted to the features", sizes)
        if kid_in_pass:
            kid_mean, kid_std = kid_from_cubic_sums(x, y, subsets, summary.kid_cubic)
        else:
            kid_mean, kid_std = kid(x, y, kid_subsets, kid_subset_size, seed)
        metrics["kid"] = Metric(kid_mean, "unbiased MMD^2, polynomial kernel (x.y/d + 1)^3", sizes, params={
            "subsets": kid_subsets, "subset_size": subsets.m, "std": kid_std, "seed": seed,
            "computed": "in the pass over distances" if kid_in_pass else "subset by subset"})
    else:
        metrics["fd"] = unavailable(pairs_missing, sizes)
        metrics["kid"] = unavailable(pairs_missing, sizes)
    metrics["cmmd"] = Metric(cmmd_value, "MMD^2 (all pairs), Gaussian kernel, x1000", sizes,
                             params={"sigma": sigma, "scale": 1000.0})
    vendi_x, vendi_y = vendi_score(x), vendi_score(y)
    metrics["vendi_reference"] = Metric(vendi_x, "Vendi score, cosine kernel", {"reference": len(x)})
    metrics["vendi_candidate"] = Metric(vendi_y, "Vendi score, cosine kernel", {"candidate": len(y)})
    metrics["vendi_ratio"] = Metric(vendi_y / vendi_x, "Vendi(candidate) / Vendi(reference)", sizes)

    if duplicate_rule == "calibrated" and summary is None:  # no k-NN pass: nothing to calibrate on
        dup = NearDuplicates("calibrated", math.nan, [], [], duplicate_quantile, unavailable=knn_missing)
    elif duplicate_rule == "calibrated":
        dup = calibrated_duplicates(x, y, summary.reference_nearest.sq,
                                    (summary.candidate_nearest.sq, summary.candidate_nearest.index),
                                    (summary.candidate_to_reference.sq, summary.candidate_to_reference.index),
                                    duplicate_quantile)
    else:
        dup = cosine_duplicates(x, y, duplicate_threshold)
    params = {"rule": dup.rule, "threshold": dup.threshold}
    if dup.rule == "calibrated":
        params.update(quantile=dup.quantile, reference_rate=dup.reference_rate)
    for name, items, where in (("duplicate_rate", dup.within_candidate, "in the candidate"),
                               ("reference_copy_rate", dup.copies_of_reference, "in the reference")):
        metrics[name] = (unavailable(dup.unavailable, sizes) if dup.unavailable else
                         Metric(len(items) / len(y), f"share of candidate items with a near duplicate {where} "
                                f"({dup.describe()})", sizes, wilson_interval(len(items), len(y)),
                                "Wilson, binomial over candidate items", params))
    return Comparison(len(x), len(y), x.shape[1], metrics, dup, reference_keys, candidate_keys)


KNN_METRICS = ("precision", "recall", "density", "coverage", "tail_coverage")


def knn_problem(n_reference: int, n_candidate: int, k: int) -> str | None:
    """Why the k-NN metrics cannot run on sets this small (each needs k neighbours besides itself), or None."""
    if min(n_reference, n_candidate) <= k:
        return (f"the k-NN metrics need more than k={k} items on each side, have {n_reference} reference and "
                f"{n_candidate} candidate items")
    return None


def pairs_problem(n_reference: int, n_candidate: int) -> str | None:
    """Why FD and KID cannot run (a covariance and an unbiased pair estimate need two items a side), or None."""
    if min(n_reference, n_candidate) < 2:
        return f"FD and KID need at least 2 items on each side, have {n_reference} and {n_candidate}"
    return None


def clusters_problem(n_reference: int, n_clusters: int | None) -> str | None:
    wanted = n_clusters or 2
    if n_reference < max(2, wanted):
        return f"k-means with {wanted} clusters needs at least {max(2, wanted)} reference items, have {n_reference}"
    return None


def unavailable(reason: str, sizes: dict[str, int]) -> Metric:
    """A metric this data cannot give: no value (a gate on it reads unknown), the reason as its method."""
    return Metric(math.nan, f"not available: {reason}", sizes)
