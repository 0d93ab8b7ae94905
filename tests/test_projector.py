"""The projector's Monte Carlo against closed forms, and its forecasts on real CLIP geometry."""

import math

import numpy as np
import pytest

from audit import projector
from audit.projector import (CategoricalStandIn, GaussianStandIn, ReferenceSpace, evolve, gaussian_moments,
                             project, sample_stats)


class _Space:
    """A d-dimensional standard Gaussian 'reference' for the stand-ins (no scoring needed)."""

    def __init__(self, d=4, n=4000, seed=0):
        self.points = np.random.default_rng(seed).standard_normal((n, d))


def gaussian_runs(loop, n, lam, generations, runs, real_fraction=0.0, d=4, seed=0):
    """Per generation: mean over runs of tr(Sigma_t)/tr(Sigma) and of |mu_t - mu|^2 / tr(Sigma)."""
    space = _Space(d)
    stand_in = GaussianStandIn(space)
    tr0 = np.trace(stand_in.cov0)
    rng = np.random.default_rng(seed)
    c, v = [], []
    for states in evolve(stand_in, loop, real_fraction, n, lam, generations, runs, rng):
        c.append(np.mean([np.trace(s["cov"]) for s in states]) / tr0)
        v.append(np.mean([np.sum((s["mu"] - stand_in.mu0) ** 2) for s in states]) / tr0)
    return np.array(c), np.array(v)


def test_sufficient_statistics_are_exact_in_distribution():
    rng = np.random.default_rng(0)
    cov = np.array([[2.0, 0.5, 0.0], [0.5, 1.0, 0.3], [0.0, 0.3, 0.5]])
    root = projector.psd_sqrt(cov)
    for n in (3, 40):  # direct draws and Bartlett's construction
        draws = [sample_stats(rng, np.zeros(3), root, n) for _ in range(4000)]
        scatter = np.mean([s for _, s in draws], axis=0)
        means = np.array([m for m, _ in draws])
        np.testing.assert_allclose(scatter, (n - 1) * cov, rtol=0.06, atol=0.06 * (n - 1))
        np.testing.assert_allclose(np.cov(means, rowvar=False), cov / n, rtol=0.1, atol=0.05 / n)


def test_mle_variance_shrinks_as_closed_form():
    n, generations = 20, 10
    c, _ = gaussian_runs("fully_synthetic", n, 1.0, generations, runs=3000)
    expected = ((n - 1) / n) ** np.arange(1, generations + 2)  # generation 0 is already a fit
    np.testing.assert_allclose(c, expected, rtol=0.03)
    c_lam, _ = gaussian_runs("fully_synthetic", n, 0.8, 5, runs=3000)
    np.testing.assert_allclose(c_lam, gaussian_moments("fully_synthetic", 5, n, 0.8)[0], rtol=0.03)


def test_mean_error_grows_linearly_without_fresh_data():
    n = 200
    _, v = gaussian_runs("fully_synthetic", n, 1.0, 20, runs=2000)
    # Var(mu_t) ~ (t + 1) Sigma / n (exactly sum_s c_s / n with MLE refits).
    np.testing.assert_allclose(v, gaussian_moments("fully_synthetic", 20, n, 1.0)[1], rtol=0.08)
    assert v[20] == pytest.approx(21 / n, rel=0.1)


def test_fresh_loop_settles_at_fixed_point():
    p, lam, n = 0.3, 0.6, 2000
    c, v = gaussian_runs("fresh", n, lam, 25, runs=300, real_fraction=p)
    assert c[-1] == pytest.approx(projector.fresh_fixed_point(p, lam), rel=0.02)
    c_cf, v_cf = gaussian_moments("fresh", 25, n, lam, p)
    np.testing.assert_allclose(c, c_cf, rtol=0.02)
    np.testing.assert_allclose(v[5:], v_cf[5:], rtol=0.2)


def test_accumulate_stays_bounded_while_replace_grows():
    n, generations = 100, 30
    _, v_replace = gaussian_runs("fully_synthetic", n, 1.0, generations, runs=1500)
    _, v_accumulate = gaussian_runs("accumulate", n, 1.0, generations, runs=1500)
    assert v_replace[-1] > 25 / n  # linear growth
    # Gerstgrasser et al.: accumulating keeps the error below (pi^2 / 6) Sigma / n.
    assert v_accumulate[-1] < (math.pi**2 / 6) / n * 1.15
    assert v_accumulate[-1] < v_replace[-1] / 10


def test_categorical_state_lost_with_probability_one_minus_q_to_the_m():
    space = type("S", (), {})()
    space.points = np.zeros((1000, 2))
    space.labels = np.r_[np.zeros(990, int), np.ones(10, int)]  # q = 0.01 for state 1
    stand_in = CategoricalStandIn(space)
    rng = np.random.default_rng(0)
    m, trials = 100, 20000
    lost = np.mean([stand_in.synthetic_stats(rng, {"q": stand_in.q0}, 1.0, m)[1] == 0 for _ in range(trials)])
    assert lost == pytest.approx((1 - 0.01) ** m, abs=0.015)
    # Fully synthetic: lost states never come back and the chain ends in a single state.
    space.labels = np.repeat(np.arange(5), 200)
    stand_in = CategoricalStandIn(space)
    alive_history = [[int(np.sum(s["q"] > 0)) for s in states]
                     for states in evolve(stand_in, "fully_synthetic", 0.0, 10, 1.0, 400, 20, rng)]
    alive = np.array(alive_history)
    assert np.all(np.diff(alive, axis=0) <= 0)
    assert np.all(alive[-1] == 1)


def test_effective_sample_size_and_admissibility():
    # Unbiased synthetic data (lambda = 1) only add samples: always admissible.
    assert projector.effective_sample_size(100, 900, 1.0) >= 100
    # Strong sampling bias with little real data is not: the limit is far from the truth.
    assert projector.effective_sample_size(100, 900, 0.5) < 100
    n_max = projector.max_admissible_synthetic(100, 0.9)
    assert projector.effective_sample_size(100, n_max, 0.9) >= 100 > projector.effective_sample_size(100, n_max + 1, 0.9)


@pytest.fixture(scope="module")
def food_space(real_clip):
    return ReferenceSpace.fit(real_clip["food_train"], dim=32, seed=0)


def test_same_seed_same_forecast(food_space):
    a = project(None, loop="fresh", lam=0.8, generations=3, runs=8, space=food_space, search_fresh=False, seed=4)
    b = project(None, loop="fresh", lam=0.8, generations=3, runs=8, space=food_space, search_fresh=False, seed=4)
    assert a.to_dict() == b.to_dict()


def test_forecasts_are_monotone_in_lambda_and_fresh_share(food_space):
    def median_recall(**kw):
        fc = project(None, generations=5, runs=30, space=food_space, search_fresh=False, **kw)
        return np.array(fc.metrics["recall"]["median"])

    weak, strong = median_recall(loop="fully_synthetic", lam=0.95), median_recall(loop="fully_synthetic", lam=0.6)
    assert np.all(strong[1:] <= weak[1:])
    little, more = median_recall(loop="fresh", lam=0.7, real_fraction=0.05), median_recall(
        loop="fresh", lam=0.7, real_fraction=0.5)
    assert np.all(little[1:] <= more[1:] + 0.02)


@pytest.mark.parametrize("model", ["gaussian", "gmm", "categorical"])
def test_fully_synthetic_loop_on_food101_loses_recall_and_tails(food_space, model):
    fc = project(None, loop="fully_synthetic", model=model, lam=0.7, n=1000, generations=8, runs=20,
                 space=food_space, search_fresh=False)
    recall, tail = fc.metrics["recall"]["median"], fc.metrics["tail_coverage"]["median"]
    assert recall[6] < 0.6 * recall[0]
    # Tail coverage falls too; for the Gaussian it first rises (shrunk samples sit nearer the
    # centre of the reference's shell, inside the large balls of its sparse points) and falls later.
    assert tail[8] < tail[0]
    assert fc.metrics["clusters_alive"]["median"][8] < fc.metrics["clusters_alive"]["median"][0]
    assert fc.metrics["fd"]["median"][8] > fc.metrics["fd"]["median"][0]
    assert fc.summary["mad_horizon"]["median"] != ">8"
    assert len(fc.to_dict()["metrics"]["fd"]["p90"]) == 9


def test_summary_numbers(food_space):
    fc = project(None, loop="fresh", lam=0.8, real_fraction=0.2, n=500, generations=4, runs=10, space=food_space)
    assert fc.summary["admissible"] in (True, False)
    assert fc.summary["fresh_fixed_point"] == pytest.approx(0.2 / (1 - 0.8 * 0.8))
    p = fc.summary["min_fresh_fraction"]
    assert p is None or 0 <= p <= 1


def test_package_level_api(food_space):
    import audit

    fc = audit.project(None, loop="accumulate", generations=1, runs=3, space=food_space, search_fresh=False)
    assert fc.loop == "accumulate" and "recall" in fc.to_dict()["metrics"]
    assert callable(audit.compare)
