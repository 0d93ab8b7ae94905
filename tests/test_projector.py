"""The projector against brute force: loops run here on real samples with explicit refits, not
against the projector's own closed forms."""

import math

import numpy as np
import pytest

from audit import projector
from audit.projector import (CategoricalStandIn, FrechetForecast, GaussianStandIn, ReferenceSpace, evolve,
                             project, sample_stats)


# ---------------------------------------------------------------------------------------------
# Brute force: Gaussian fits of real samples, in whitened coordinates (truth N(0, I)).


def fd_to_standard_normal(mu: np.ndarray, cov: np.ndarray) -> np.ndarray:
    """FD of stacked Gaussians to N(0, I): |mu|^2 + sum (sqrt(eig) - 1)^2."""
    eig = np.clip(np.linalg.eigvalsh(cov), 0, None)
    return np.sum(mu**2, axis=-1) + np.sum((np.sqrt(eig) - 1) ** 2, axis=-1)


def fit(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mu = x.mean(axis=1)
    centred = x - mu[:, None, :]
    return mu, np.einsum("rki,rkj->rij", centred, centred) / x.shape[1]


def brute_real_only(d: int, n: int, runs: int, rng) -> float:
    """E FD of the maximum-likelihood fit of n real items."""
    return float(np.mean(np.concatenate([fd_to_standard_normal(*fit(rng.standard_normal((r, n, d))))
                                         for r in _chunks(runs, n, d)])))


def brute_fresh_limit(d: int, n_real: int, n_syn: int, lam: float, runs: int, rng, window: int = 10
                      ) -> tuple[np.ndarray, np.ndarray]:
    """The fresh loop at its limit: every generation draws n_real real items and n_syn items from
    N(mu_t, lam Sigma_t) and refits on both; after burn-in, per run, the FD of the fit averaged
    over a window of generations, and (paired) that of a fit to the same generations' real items
    alone: their difference has far less noise than either."""
    n = n_real + n_syn
    burn = int(math.ceil(math.log(1e-3) / math.log(lam * n_syn / n))) + 5 if n_syn else 0
    mu, cov = fit(rng.standard_normal((runs, n, d)))
    mixed, alone = np.zeros(runs), np.zeros(runs)
    for t in range(burn + window):
        w, v = np.linalg.eigh(cov)
        root = v * np.sqrt(np.clip(w, 0, None))[:, None, :]
        synthetic = mu[:, None, :] + math.sqrt(lam) * rng.standard_normal((runs, n_syn, d)) @ root.transpose(0, 2, 1)
        real = rng.standard_normal((runs, n_real, d))
        mu, cov = fit(np.concatenate([synthetic, real], axis=1))
        if t >= burn:
            mixed += fd_to_standard_normal(mu, cov) / window
            alone += fd_to_standard_normal(*fit(real)) / window
    return mixed, alone


def _chunks(runs: int, n: int, d: int, budget: int = 4_000_000):
    per = max(1, budget // (n * d))
    return [min(per, runs - i) for i in range(0, runs, per)]


@pytest.mark.parametrize("d", [2, 10, 50])
def test_real_only_fd_matches_brute_force(d):
    frechet = FrechetForecast(np.ones(d))
    rng = np.random.default_rng(d)
    for n in (100, 1000):
        assert frechet.real_only(n) == pytest.approx(brute_real_only(d, n, 3000 if d < 50 else 400, rng), rel=0.04)
    # The covariance term dominates in high dimension: about d^2 / (4n), not the mean's d / n.
    if d == 50:
        assert frechet.real_only(1000) > 5 * d / 1000


def _large(*values):  # n_real = 1,000 costs 10-20 s a case: one in the default run, the rest under -m slow
    return pytest.param(*values, marks=pytest.mark.slow)


@pytest.mark.parametrize("d, lam, n_real", [
    *[(d, lam, 100) for d in (2, 10, 50) for lam in (0.5, 0.8)], (10, 0.8, 1000),
    _large(2, 0.5, 1000), _large(2, 0.8, 1000), _large(10, 0.5, 1000), _large(50, 0.5, 1000), _large(50, 0.8, 1000)])
def test_effective_sample_size_and_admissible_amount_match_brute_force(d, lam, n_real):
    """MAD eq. 4 by brute force: n_e is where a real-only fit is as far from the truth as the
    fresh loop's limit; n_s* where that limit crosses the real-only fit of n_real items. Checked
    within 15% by bracketing: brute-force FDs at 0.85 and 1.15 times the tool's answer."""
    frechet = FrechetForecast(np.ones(d))
    rng = np.random.default_rng([d, n_real, int(lam * 10)])
    runs = {2: 2000, 10: 400, 50: 40}[d]
    n_e = frechet.effective_sample_size(n_real, n_real, lam)  # a mixture half synthetic
    limit = brute_fresh_limit(d, n_real, n_real, lam, runs, rng)[0].mean()
    assert brute_real_only(d, int(0.85 * n_e), runs * 4, rng) > limit > brute_real_only(d, int(1.15 * n_e), runs * 4, rng)

    n_star = frechet.max_admissible_synthetic(n_real, lam)
    assert 0 < n_star < math.inf
    for factor, sign in ((0.85, -1), (1.15, 1)):  # the limit beats real-only below n_s*, loses above
        mixed, alone = brute_fresh_limit(d, n_real, int(factor * n_star), lam, runs, rng)
        diff = mixed - alone
        assert sign * diff.mean() > 0, (factor, diff.mean(), diff.std() / math.sqrt(runs))


def test_issue_example_in_100_dimensions():
    """The issue's measurement: d = 100, n_r = 100, lambda = 0.5: real-only FD 31.7, with 300
    synthetic items 22.2, so 300 are admissible (the old first-order formula said at most 20)."""
    frechet = FrechetForecast(np.ones(100))
    assert frechet.real_only(100) == pytest.approx(31.7, rel=0.03)
    assert frechet.fresh(100, 300, 0.5) == pytest.approx(22.2, rel=0.05)
    assert frechet.max_admissible_synthetic(100, 0.5) > 300
    # The admissible share of synthetic data falls as real data grow.
    shares = [frechet.max_admissible_synthetic(n, 0.5) / n for n in (100, 1000, 10_000)]
    assert shares[0] > shares[1] > shares[2]


# ---------------------------------------------------------------------------------------------
# The Monte Carlo loops against direct simulation.


class _Space:
    """A d-dimensional standard Gaussian 'reference' for the stand-ins (no scoring needed)."""

    def __init__(self, d=4, n=4000, seed=0):
        self.fit_points = np.random.default_rng(seed).standard_normal((n, d))


def gaussian_runs(loop, n, lam, generations, runs, real_fraction=0.0, d=4, seed=0):
    """Per generation: mean over runs of tr(Sigma_t)/tr(Sigma) and of |mu_t - mu|^2 / tr(Sigma)."""
    stand_in = GaussianStandIn(_Space(d))
    tr0 = np.trace(stand_in.cov0)
    rng = np.random.default_rng(seed)
    c, v = [], []
    for states in evolve(stand_in, loop, np.full(runs, real_fraction), n, np.full(runs, lam), generations, rng):
        c.append(np.mean([np.trace(s["cov"]) for s in states]) / tr0)
        v.append(np.mean([np.sum((s["mu"] - stand_in.mu0) ** 2) for s in states]) / tr0)
    return np.array(c), np.array(v)


def test_sufficient_statistics_are_exact_in_distribution():
    rng = np.random.default_rng(0)
    cov = np.array([[2.0, 0.5, 0.0], [0.5, 1.0, 0.3], [0.0, 0.3, 0.5]])
    root = projector.standins.psd_sqrt(cov)
    for n in (3, 40):  # direct draws and Bartlett's construction
        draws = [sample_stats(rng, np.zeros(3), root, n) for _ in range(4000)]
        scatter = np.mean([s for _, s in draws], axis=0)
        means = np.array([m for m, _ in draws])
        np.testing.assert_allclose(scatter, (n - 1) * cov, rtol=0.06, atol=0.06 * (n - 1))
        np.testing.assert_allclose(np.cov(means, rowvar=False), cov / n, rtol=0.1, atol=0.05 / n)


def test_fully_synthetic_variance_shrinks_like_direct_refits():
    """E sigma_t^2 = ((n - 1) / n)^t for the 1-D refit: the stand-in against samples refitted here."""
    n, generations, runs = 20, 10, 10_000  # sd of sigma_10^2 over runs ~1.4x its mean: SE 1.4%
    rng = np.random.default_rng(1)
    x = rng.standard_normal((runs, n))
    direct = []
    for _ in range(generations + 1):
        mu, var = x.mean(axis=1), x.var(axis=1)
        direct.append(var.mean())
        x = mu[:, None] + np.sqrt(var)[:, None] * rng.standard_normal((runs, n))
    direct = np.array(direct)
    c, _ = gaussian_runs("fully_synthetic", n, 1.0, generations, runs=runs, d=1)
    expected = ((n - 1) / n) ** np.arange(1, generations + 2)  # generation 0 is already a fit
    np.testing.assert_allclose(direct, expected, rtol=0.05)
    np.testing.assert_allclose(c, expected, rtol=0.05)


def test_fresh_loop_settles_where_direct_refits_settle():
    p, lam, n, d, runs = 0.3, 0.6, 400, 3, 300
    rng = np.random.default_rng(2)
    n_real = int(p * n)
    x = rng.standard_normal((runs, n, d))
    for _ in range(25):
        mu, cov = fit(x)
        root = np.linalg.cholesky(cov)
        syn = mu[:, None, :] + math.sqrt(lam) * rng.standard_normal((runs, n - n_real, d)) @ root.transpose(0, 2, 1)
        x = np.concatenate([syn, rng.standard_normal((runs, n_real, d))], axis=1)
    direct_c = np.trace(fit(x)[1], axis1=1, axis2=2).mean() / d
    c, _ = gaussian_runs("fresh", n, lam, 25, runs=runs, real_fraction=p, d=d)
    assert c[-1] == pytest.approx(direct_c, rel=0.03)
    assert c[-1] == pytest.approx(projector.fresh_fixed_point(p, lam), rel=0.03)


def test_accumulate_stays_bounded_while_replace_grows():
    n, generations = 100, 30
    _, v_replace = gaussian_runs("fully_synthetic", n, 1.0, generations, runs=1500)
    _, v_accumulate = gaussian_runs("accumulate", n, 1.0, generations, runs=1500)
    assert v_replace[-1] > 25 / n  # the mean random-walks: linear growth
    # Gerstgrasser et al. 2024: accumulating keeps the error below (pi^2 / 6) Sigma / n.
    assert v_accumulate[-1] < (math.pi**2 / 6) / n * 1.15
    assert v_accumulate[-1] < v_replace[-1] / 10


def test_categorical_states_are_lost_for_good_with_the_chains_absorption_times():
    """Fully synthetic categorical loop against a direct simulation of the multinomial chain:
    same distribution of the generation at which the rare state is lost, and no state returns."""
    space = type("S", (), {})()
    space.fit_points = np.zeros((1000, 2))
    space.labels = np.r_[np.zeros(950, int), np.ones(50, int)]  # q = 0.05 for state 1
    stand_in = CategoricalStandIn(space)
    n, generations, runs = 40, 60, 3000
    rng = np.random.default_rng(3)
    history = np.array([[s["q"][1] for s in states] for states in
                        evolve(stand_in, "fully_synthetic", np.zeros(runs), n, np.ones(runs), generations, rng)])
    lost = history == 0
    assert np.all(lost[1:] >= lost[:-1])  # once lost, never back
    tool_times = np.where(lost.any(axis=0), lost.argmax(axis=0), generations + 1)

    counts = rng.multinomial(n, [0.95, 0.05], size=runs)[:, 1]  # generation 0: n real items
    direct_times = np.full(runs, generations + 1)
    for t in range(generations + 1):
        direct_times[(counts == 0) & (direct_times > generations)] = t
        counts = rng.binomial(n, counts / n)
    for q in (25, 50, 75):
        assert np.percentile(tool_times, q) == pytest.approx(np.percentile(direct_times, q), abs=2)
    assert np.mean(tool_times <= generations) == pytest.approx(np.mean(direct_times <= generations), abs=0.03)


# ---------------------------------------------------------------------------------------------
# Forecasts: generation 0 reads 1.0 against the real-only baseline, a real-only loop with other
# seeds stays near 1.0 (the scoring size is enough), and the default stand-in is checked.


def gaussian_reference(d=16, n=3000, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)) * np.linspace(2, 0.5, d)


def test_relative_metrics_read_one_for_real_only_data():
    space = ReferenceSpace.fit(gaussian_reference(), dim=16, seed=0)
    mixture = project(None, loop="fresh", model="gaussian", real_fraction=0.5, lam=0.6, n=2000, generations=4,
                      runs=40, space=space, search_fresh=False)
    for name in ("recall", "tail_coverage", "precision", "coverage"):
        assert abs(mixture.relative[name]["median"][0] - 1) <= 0.05
    # A real-only loop with another seed reads its baseline: relative ~1.0 at every generation.
    real_only = project(None, loop="fresh", model="gaussian", real_fraction=1.0, lam=1.0, n=2000, generations=4,
                        runs=40, space=space, search_fresh=False, seed=9)
    for name in ("recall", "tail_coverage", "precision"):
        np.testing.assert_allclose(real_only.relative[name]["median"], 1.0, atol=0.05)
    assert real_only.summary["mad_horizon"]["median"] == ">4"
    # ...while the biased mixture loses recall against it.
    assert mixture.relative["recall"]["median"][-1] < 0.9


@pytest.fixture(scope="module")
def food_space(real_clip):
    shuffled = real_clip["food_train"][np.random.default_rng(0).permutation(len(real_clip["food_train"]))]
    return ReferenceSpace.fit(shuffled, dim=32, seed=0)


def test_default_stand_in_reproduces_food101(food_space):
    fc = project(None, loop="fresh", real_fraction=0.8, lam=0.7, n=2000, generations=3, runs=20, space=food_space,
                 search_fresh=False)
    assert fc.available
    chosen = next(c for c in fc.checks if c["model"] == fc.model)
    assert chosen["passes"]
    assert abs(chosen["precision"] - chosen["held_out_precision"]) <= 0.1
    for name in ("recall", "tail_coverage", "precision"):
        assert abs(fc.relative[name]["median"][0] - 1) <= 0.05
    # A Gaussian in 32 principal axes of CLIP does not look like CLIP: the check must say so.
    gaussian = projector.check_stand_in(food_space, "gaussian", 250)
    assert not gaussian["passes"] and gaussian["precision"] < gaussian["held_out_precision"] - 0.2


def test_no_forecast_when_no_stand_in_passes(food_space, monkeypatch):
    monkeypatch.setattr(projector.forecast, "CHECK_TOLERANCE", -1.0)  # nothing can pass
    fc = project(None, generations=2, runs=4, space=food_space, search_fresh=False)
    assert not fc.available and "no stand-in" in fc.summary["reason"] and fc.metrics == {}


def test_same_seed_same_forecast(food_space):
    a = project(None, loop="fresh", lam=0.8, generations=3, runs=8, space=food_space, search_fresh=False, seed=4)
    b = project(None, loop="fresh", lam=0.8, generations=3, runs=8, space=food_space, search_fresh=False, seed=4)
    assert a.to_dict() == b.to_dict()


def test_forecasts_are_monotone_in_lambda_and_fresh_share(food_space):
    def median_recall(**kw):
        fc = project(None, generations=5, runs=30, space=food_space, search_fresh=False, model="categorical", **kw)
        return np.array(fc.relative["recall"]["median"])

    weak, strong = median_recall(loop="fully_synthetic", lam=0.95), median_recall(loop="fully_synthetic", lam=0.6)
    assert np.all(strong[1:] <= weak[1:] + 0.01)
    little, more = median_recall(loop="fresh", lam=0.7, real_fraction=0.05), median_recall(
        loop="fresh", lam=0.7, real_fraction=0.5)
    assert np.all(little[1:] <= more[1:] + 0.02)


@pytest.mark.parametrize("model", ["gaussian", "gmm", "categorical"])
def test_fully_synthetic_loop_on_food101_loses_recall_and_tails(food_space, model):
    # 1,000 samples a run: a collapsed Gaussian's few samples sit inside the large balls of the
    # sparse tail points, so with a small scoring set tail coverage can rise while recall falls.
    fc = project(None, loop="fully_synthetic", model=model, lam=0.7, n=1000, generations=8, runs=12,
                 space=food_space, search_fresh=False, eval_size=1000)
    recall, tail = fc.relative["recall"]["median"], fc.relative["tail_coverage"]["median"]
    assert recall[6] < 0.8 and tail[8] < tail[0]
    assert fc.metrics["clusters_alive"]["median"][8] < fc.metrics["clusters_alive"]["median"][0]
    assert fc.metrics["fd_model"]["median"][8] > fc.metrics["fd_model"]["median"][0]
    assert fc.metrics["fd_output"]["median"][8] > fc.metrics["fd_model"]["median"][8]  # lambda < 1 shrinks more
    assert fc.summary["mad_horizon"]["median"] != ">8"
    assert len(fc.to_dict()["relative"]["recall"]["p90"]) == 9


def test_input_intervals_widen_the_bands(food_space):
    kw = dict(loop="fresh", model="categorical", real_fraction=0.5, lam=0.7, n=1000, generations=4, runs=40,
              space=food_space, search_fresh=False)
    point, spread = project(None, **kw), project(None, real_fraction_interval=(0.3, 0.7), lam_interval=(0.5, 0.9), **kw)
    width = lambda fc: np.array(fc.relative["recall"]["p90"][1:]) - np.array(fc.relative["recall"]["p10"][1:])  # noqa: E731
    assert width(spread).mean() > width(point).mean()
    rng_ = spread.summary["admissibility"]["effective_sample_size_range"]
    assert rng_[0] <= spread.summary["admissibility"]["effective_sample_size"] <= (rng_[1] or math.inf)


def test_summary_reports_effective_sample_size(food_space):
    fc = project(None, loop="fresh", model="categorical", lam=0.8, real_fraction=0.2, n=500, generations=3, runs=10,
                 space=food_space)
    adm = fc.summary["admissibility"]
    assert adm["n_real"] == 100 and adm["n_synthetic"] == 400 and "MAD eq. 4" in adm["fd_convention"]
    assert adm["admissible"] == (adm["effective_sample_size"] >= 100)
    assert "worth" in adm["sentence"]
    p = fc.summary["min_fresh_fraction"]
    assert p is None or 0 <= p <= 1


def test_package_level_api(food_space):
    import audit

    fc = audit.project(None, loop="accumulate", generations=1, runs=3, space=food_space, search_fresh=False)
    assert fc.loop == "accumulate" and "recall" in fc.to_dict()["relative"]
    assert callable(audit.compare)


def test_a_separation_compounds_generation_after_generation():
    """Brute force against the algebra: refitted on its own separated output (known components,
    n so large that sampling error is small), each component mean moves to
    m + gamma^t (mu_j - m) after t generations and the mixture's mean m stays."""
    from audit.projector import ReferenceSpace, evolve, make_stand_in

    x = np.random.default_rng(0).standard_normal((600, 6)) + np.repeat(np.eye(6) * 4, 100, axis=0)
    space = ReferenceSpace.fit(x, 6, eval_reference=200, seed=0)
    gmm = make_stand_in("gmm", space, 0)
    n, gamma, generations = 2_000_000, 1.4, 3
    states = [list(s) for s in evolve(gmm, "fully_synthetic", np.zeros(1), n, np.ones(1), generations,
                                      np.random.default_rng(1), np.full(1, gamma))]  # evolve reuses its list
    first = states[0][0]
    centre = first["w"] @ first["mu"]
    for t, (state,) in enumerate(states):
        expected = centre + gamma ** t * (first["mu"] - centre)
        # each mean's sampling error compounds with the push: at most sum_s gamma^s of one fit's
        se = np.sqrt(np.trace(first["cov"], axis1=1, axis2=2) / (n * first["w"])) * sum(gamma ** s for s in range(t + 1))
        assert np.all(np.linalg.norm(state["mu"] - expected, axis=1) <= 6 * se), t
        assert np.linalg.norm(state["w"] @ state["mu"] - centre) <= 6 * se.max()


def test_the_categorical_stand_in_refuses_a_separation():
    from audit.projector import ReferenceSpace, make_stand_in

    x = np.random.default_rng(0).standard_normal((300, 4))
    cat = make_stand_in("categorical", ReferenceSpace.fit(x, 4, eval_reference=100, seed=0), 0)
    with pytest.raises(ValueError, match="cannot move its clusters"):
        cat.synthetic_stats(np.random.default_rng(0), cat.truth_state(), 1.0, 10, separation=1.5)
