"""Every metric against a brute-force reference written here from the papers' formulas."""

import math

import numpy as np
import pytest
import scipy.linalg

from audit import metrics
from audit.balls import ball_membership
from audit.duplicates import cosine_duplicates
from audit.metrics import compare, prdc, prdc_from_membership
from audit.pairwise import pairwise_summary
from rounding import U32, assert_within, sq_distance_bound, sq_distances64


def pairwise(a, b):
    """All Euclidean distances in float64 (a: n x d, b: m x d) -> (n, m)."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    return np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))


def knn_radius(a, k):
    d = pairwise(a, a)
    np.fill_diagonal(d, np.inf)  # itself excluded; an exact duplicate still counts, at 0
    return np.sort(d, axis=1)[:, k - 1]


def brute_prdc(x, y, k):
    rx, ry = knn_radius(x, k), knn_radius(y, k)
    dxy = pairwise(x, y)  # (N, M)
    in_x_balls = dxy <= rx[:, None]
    in_y_balls = dxy <= ry[None, :]
    return {
        "precision": in_x_balls.any(axis=0).mean(),
        "recall": in_y_balls.any(axis=1).mean(),
        "density": in_x_balls.sum() / (k * y.shape[0]),
        "coverage": in_x_balls.any(axis=1).mean(),
    }, rx, in_x_balls


def datasets():
    rng = np.random.default_rng(0)
    gauss_x = rng.standard_normal((300, 16)).astype(np.float32)
    gauss_y = (rng.standard_normal((250, 16)) * 1.2 + 0.3).astype(np.float32)
    # Small integer grid: many exact duplicates and exactly tied distances.
    grid_x = rng.integers(0, 3, size=(200, 4)).astype(np.float32)
    grid_y = rng.integers(0, 3, size=(150, 4)).astype(np.float32)
    # Far from the origin: large norms, where the |x|^2 + |y|^2 - 2xy expansion loses digits.
    far_x = (rng.standard_normal((200, 32)) + 300).astype(np.float32)
    far_y = (rng.standard_normal((180, 32)) * 0.9 + 300).astype(np.float32)
    # Unit vectors with duplicates copied across the two sets.
    unit_x = rng.standard_normal((260, 24)).astype(np.float32)
    unit_x /= np.linalg.norm(unit_x, axis=1, keepdims=True)
    unit_y = np.vstack([unit_x[:40], unit_x[:10], rng.standard_normal((100, 24)).astype(np.float32) * 0.2])
    return {"gaussian": (gauss_x, gauss_y), "grid": (grid_x, grid_y), "far": (far_x, far_y),
            "unit_with_copies": (unit_x, unit_y)}


@pytest.mark.parametrize("name", list(datasets()))
@pytest.mark.parametrize("k", [1, 5])
def test_prdc_equals_brute_force_exactly(name, k):
    x, y = datasets()[name]
    expected, _, _ = brute_prdc(x, y, k)
    assert prdc(x, y, k) == expected  # exact equality of the rates
    assert prdc(y, x, k)["precision"] == brute_prdc(y, x, k)[0]["precision"]


def test_membership_details_equal_brute_force():
    x, y = datasets()["grid"]
    b = ball_membership(x, y, 3)
    _, rx, in_x_balls = brute_prdc(x, y, 3)
    np.testing.assert_array_equal(b.ref_radii, rx)
    np.testing.assert_array_equal(b.cand_ball_counts, in_x_balls.sum(axis=0))
    np.testing.assert_array_equal(b.ref_covered, in_x_balls.any(axis=1))


def test_small_blocks_give_the_same_answer(monkeypatch):
    x, y = datasets()["gaussian"]
    expected = prdc(x, y, 5)
    import audit.balls

    monkeypatch.setattr(audit.balls, "_BLOCK_BYTES", 4 * len(x) * 7)  # 7 candidate rows per block
    assert prdc(x, y, 5) == expected
    assert prdc(x, y, 5) == brute_prdc(x, y, 5)[0]


def test_identity():
    x, _ = datasets()["gaussian"]
    got = prdc(x, x.copy(), 5)
    assert got["precision"] == got["recall"] == got["coverage"] == 1.0
    # Each point lies in its own ball and in the balls of the points that have it among their k
    # nearest: k + 1 balls on average, so density is (k + 1) / k for the identical set (prdc gives
    # the same), and 1 in expectation for an independent sample of the same distribution.
    assert got["density"] == pytest.approx(6 / 5, abs=1e-12)
    rng = np.random.default_rng(5)
    fresh = prdc(rng.standard_normal((3000, 8)), rng.standard_normal((3000, 8)), 5)
    assert abs(fresh["density"] - 1) < 0.06


def test_tail_coverage_equals_brute_force():
    x, y = datasets()["gaussian"]
    got = metrics.fidelity_metrics(ball_membership(x, y, 5), tail_q=0.1)
    _, rx, in_x_balls = brute_prdc(x, y, 5)
    tail = np.argsort(-rx, kind="stable")[: math.ceil(0.1 * len(x))]
    assert got["tail_coverage"].value == in_x_balls.any(axis=1)[tail].mean()
    assert got["tail_coverage"].n["tail"] == 30
    for name in ("precision", "recall", "density", "coverage", "tail_coverage"):
        lo, hi = got[name].ci
        assert lo <= got[name].value <= hi, name


def test_wilson_interval_matches_closed_form():
    # Published example (Newcombe 1998, case 1): 81/263 -> 0.2553 to 0.3662.
    lo, hi = metrics.wilson_interval(81, 263)
    assert lo == pytest.approx(0.2553, abs=1e-4) and hi == pytest.approx(0.3662, abs=1e-4)
    assert metrics.wilson_interval(0, 10)[0] == 0.0 and metrics.wilson_interval(10, 10)[1] == 1.0


def clean_fid_frechet(mu1, s1, mu2, s2):
    """clean-fid's formula with scipy's sqrtm."""
    diff = mu1 - mu2
    covmean = scipy.linalg.sqrtm(s1.dot(s2))
    return diff.dot(diff) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean.real)


def test_fd_agrees_with_scipy_sqrtm(real_clip):
    rng = np.random.default_rng(1)
    cases = [
        (rng.standard_normal((3000, 32)), rng.standard_normal((2500, 32)) @ rng.standard_normal((32, 32)) * 0.3 + 1),
        (real_clip["food_train"], real_clip["flickr"]),
        (real_clip["food_train"], real_clip["food_test"]),
    ]
    for x, y in cases:
        stats = (*metrics.gaussian_stats(x), *metrics.gaussian_stats(y))
        assert metrics.frechet_distance_from_stats(*stats) == pytest.approx(clean_fid_frechet(*stats), rel=1e-6)
    x = real_clip["food_train"]
    assert abs(metrics.frechet_distance(x, x)) < 1e-9


def brute_mmd2_unbiased(a, b, kernel):
    m = len(a)
    kaa = sum(kernel(a[i], a[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    kbb = sum(kernel(b[i], b[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    kab = sum(kernel(a[i], b[j]) for i in range(m) for j in range(m)) / (m * m)
    return kaa + kbb - 2 * kab


def test_kid_equals_direct_unbiased_mmd():
    rng = np.random.default_rng(2)
    a, b = rng.standard_normal((30, 6)), rng.standard_normal((30, 6)) + 0.5
    poly = lambda u, v: (u @ v / 6 + 1) ** 3  # noqa: E731
    # With subsets as large as the sets, every subset is the whole set (in another order).
    mean, std = metrics.kid(a, b, n_subsets=3, subset_size=1000)
    assert mean == pytest.approx(brute_mmd2_unbiased(a, b, poly), rel=1e-10)
    assert std == pytest.approx(0, abs=1e-12)
    # Subsets: the same seed gives the same value; the estimate is unbiased around the full value.
    assert metrics.kid(a, b, 50, 10, seed=3) == metrics.kid(a, b, 50, 10, seed=3)


def cmmd_rounding_bound(a, b, gamma_rbf, scale=1000.0):
    """A bound on the float32 error of metrics.cmmd(a, b), from its steps: centring (rounding the
    data, <= u per coordinate), the exponent -gamma |a - b|^2 by the expansion (sq_distance_bound
    plus the scalings), expm1 in float32 (<= 4 ulp: libm or SVML) and float64 sums (negligible).
    Each kernel deficit t is then within de + 4u|t|, so each mean deficit within mean(de + 4u|t|)
    and scale * MMD^2 = scale * (2 mean_xy - mean_xx - mean_yy) within the weighted sum."""
    mean = a.astype(np.float64).mean(axis=0)
    ac, bc = a.astype(np.float64) - mean, b.astype(np.float64) - mean

    def term(p, q):
        sq, _ = sq_distances64(p, q)
        radius_sq = (np.linalg.norm(p, axis=1)[:, None] + np.linalg.norm(q, axis=1)[None, :]) ** 2
        exponent_error = gamma_rbf * (sq_distance_bound(p, q) + 4 * U32 * radius_sq)  # + data rounding
        return np.mean(exponent_error + 4 * U32 * -np.expm1(-gamma_rbf * sq))  # a mean's error <= mean error

    return scale * (2 * term(ac, bc) + term(ac, ac) + term(bc, bc)) * (1 + 1e-9)


def test_cmmd_equals_direct_formula():
    """Against the definition in float64, within the float32 bound of the inputs (any BLAS kernel);
    MMD^2(a, a) = 0 within the same bound, and the bound is tight enough to see a small shift."""
    rng = np.random.default_rng(3)
    a = rng.standard_normal((40, 8)).astype(np.float32)
    b = (rng.standard_normal((35, 8)) + 1).astype(np.float32)
    rbf = lambda u, v: math.exp(-float(((u - v) ** 2).sum()) / 200.0)  # noqa: E731
    def direct(p, q):
        p64, q64 = p.astype(np.float64), q.astype(np.float64)
        return 1000 * (np.mean([[rbf(u, v) for v in p64] for u in p64]) + np.mean([[rbf(u, v) for v in q64] for u in q64])
                       - 2 * np.mean([[rbf(u, v) for v in q64] for u in p64]))
    gamma_rbf = 1 / 200.0
    assert_within(metrics.cmmd(a, b), direct(a, b), cmmd_rounding_bound(a, b, gamma_rbf), "cmmd(a, b)")
    bound_aa = cmmd_rounding_bound(a, a, gamma_rbf)
    assert_within(metrics.cmmd(a, a), 0.0, bound_aa, "cmmd(a, a)")
    shifted = a + np.float32(0.02)  # MMD^2 about 1000 * gamma * |shift|^2 = 1.6e-2, far above the bound
    assert direct(a, shifted) > 3 * bound_aa
    assert metrics.cmmd(a, shifted) > bound_aa


def test_vendi_equals_primal_eigenvalues():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((60, 10))
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    eig = np.clip(np.linalg.eigvalsh(xn @ xn.T / len(x)), 0, None)
    eig = eig[eig > 1e-15]
    assert metrics.vendi_score(x) == pytest.approx(math.exp(-(eig * np.log(eig)).sum()), rel=1e-9)
    assert metrics.vendi_score(np.tile(x[:1], (20, 1))) == pytest.approx(1.0)  # one distinct item
    assert metrics.vendi_score(np.eye(7)) == pytest.approx(7.0)  # seven orthogonal items


def test_cosine_duplicates_equal_brute_force():
    x, y = datasets()["unit_with_copies"]
    y = y.copy()
    y[60] = y[61] * 1.01  # a near duplicate inside the candidate
    dup = cosine_duplicates(x, y, 0.95)
    x, y = x.astype(np.float64), y.astype(np.float64)
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    yn = y / np.linalg.norm(y, axis=1, keepdims=True)
    cyy = yn @ yn.T
    np.fill_diagonal(cyy, -np.inf)
    cyx = yn @ xn.T
    assert dup.rule == "cosine" and dup.threshold == 0.95
    assert {p.candidate for p in dup.within_candidate} == set(np.flatnonzero(cyy.max(axis=1) >= 0.95))
    assert {p.candidate for p in dup.copies_of_reference} == set(np.flatnonzero(cyx.max(axis=1) >= 0.95))
    assert len(dup.copies_of_reference) == 50  # 40 copies + 10 copies of copies
    for p in dup.copies_of_reference:
        assert p.cosine == pytest.approx(cyx[p.candidate].max(), abs=1e-12) and cyx[p.candidate, p.match] == pytest.approx(p.cosine)
        assert p.distance == pytest.approx(np.linalg.norm(y[p.candidate] - x[p.match]), abs=1e-12)


def brute_nearest(a, b=None):
    """Exact nearest neighbour (squared distance, lowest row among ties) of each row of a in b, or
    in a itself (self excluded), in float64."""
    a = np.asarray(a, np.float64)
    sq = ((a[:, None, :] - (a if b is None else np.asarray(b, np.float64))[None, :, :]) ** 2).sum(-1)
    if b is None:
        np.fill_diagonal(sq, np.inf)
    return sq.min(axis=1), sq.argmin(axis=1)


@pytest.mark.parametrize("name", list(datasets()))
def test_one_pass_equals_brute_force(name):
    """The single pass gives the same radii, memberships, nearest neighbours (ties: lowest row) as
    float64 brute force, and CMMD sums that agree with the direct float64 formula."""
    x, y = datasets()[name]
    s = pairwise_summary(x, y, 5, rbf_gamma=1 / 200)
    _, rx, in_x_balls = brute_prdc(x, y, 5)
    # Radii and distances: the same float64 values up to the order of the sum over coordinates.
    np.testing.assert_allclose(s.membership.ref_radii, rx, rtol=1e-14)
    np.testing.assert_allclose(s.membership.cand_radii, knn_radius(y, 5), rtol=1e-14)
    np.testing.assert_array_equal(s.membership.cand_ball_counts, in_x_balls.sum(axis=0))
    np.testing.assert_array_equal(s.membership.ref_covered, in_x_balls.any(axis=1))
    assert prdc_from_membership(s.membership) == brute_prdc(x, y, 5)[0]
    for got, (sq, idx) in ((s.reference_nearest, brute_nearest(x)), (s.candidate_nearest, brute_nearest(y)),
                           (s.candidate_to_reference, brute_nearest(y, x))):
        np.testing.assert_allclose(got.sq, sq, rtol=1e-14)
        np.testing.assert_array_equal(got.index, idx)
    x64, y64 = x.astype(np.float64), y.astype(np.float64)
    direct = {key: (1 - np.exp(-pairwise(a, b) ** 2 / 200)).sum() for key, a, b in
              (("xx", x64, x64), ("yy", y64, y64), ("xy", x64, y64))}
    for key in direct:
        assert s.rbf_deficits[key] == pytest.approx(direct[key], rel=1e-5, abs=1e-3)


def test_one_pass_with_small_blocks(monkeypatch):
    """Blocks and chunks of a few rows (many GEMM calls, sets split over chunks) change nothing."""
    import audit.nearest

    x, y = datasets()["grid"]
    expected = pairwise_summary(x, y, 3, rbf_gamma=0.01)
    monkeypatch.setattr(audit.nearest, "BLOCK_BYTES", 4 * 1024 * 13)
    monkeypatch.setattr(audit.nearest, "CHUNK_BYTES", 4 * 1024 * 3)
    small = pairwise_summary(x, y, 3, rbf_gamma=0.01)
    assert prdc_from_membership(small.membership) == prdc_from_membership(expected.membership)
    np.testing.assert_array_equal(small.candidate_to_reference.index, expected.candidate_to_reference.index)
    assert small.rbf_deficits == pytest.approx(expected.rbf_deficits, rel=1e-6)


@pytest.mark.parametrize("name", ["gaussian", "unit_with_copies"])
def test_kid_in_the_pass_equals_kid_subset_by_subset(name):
    """The cubic sums taken inside the pass (indicator products over every subset at once) give
    the estimator of the subset loop, which the brute-force test above checks."""
    from audit.kid import draw_subsets, kid_from_cubic_sums

    x, y = datasets()[name]
    subsets = draw_subsets(len(x), len(y), n_subsets=7, subset_size=120, seed=5)
    summary = pairwise_summary(x, y, 5, kid_subsets=subsets)
    in_pass = kid_from_cubic_sums(x, y, subsets, summary.kid_cubic)
    by_subset = metrics.kid(x, y, n_subsets=7, subset_size=120, seed=5)
    assert in_pass == pytest.approx(by_subset, rel=1e-5, abs=1e-9)
    assert metrics.kid(x, y, 7, 120, seed=6) != by_subset  # the draws matter, so they are the same ones


def test_calibrated_duplicates_equal_brute_force():
    """The threshold is an observed reference nearest-neighbour distance at the quantile, and the
    flagged items are exactly those whose brute-force nearest neighbour is that close."""
    x, y = datasets()["unit_with_copies"]
    y = y.copy()
    y[60] = y[61] + 1e-4  # a near duplicate inside the candidate
    result = compare(x, y, k=5, kid_subsets=2, duplicate_quantile=0.01)
    dup = result.duplicates
    ref_sq, _ = brute_nearest(x)
    ref_d = np.sort(np.sqrt(ref_sq))
    assert dup.rule == "calibrated" and dup.threshold == pytest.approx(ref_d[math.ceil(0.01 * len(x)) - 1], rel=1e-12)
    assert dup.reference_rate == pytest.approx(np.mean(np.sqrt(ref_sq) <= dup.threshold))
    within_sq, within_idx = brute_nearest(y)
    cross_sq, cross_idx = brute_nearest(y, x)
    assert {p.candidate for p in dup.within_candidate} == set(np.flatnonzero(np.sqrt(within_sq) <= dup.threshold))
    assert {p.candidate for p in dup.copies_of_reference} == set(np.flatnonzero(np.sqrt(cross_sq) <= dup.threshold))
    assert {60, 61} <= {p.candidate for p in dup.within_candidate}
    exact_copies = [p for p in dup.copies_of_reference if p.distance == 0.0]
    assert {p.candidate for p in exact_copies} == set(range(50))  # 40 copies + 10 copies of copies
    for p in dup.copies_of_reference:
        assert p.match == cross_idx[p.candidate] and p.distance == pytest.approx(np.sqrt(cross_sq[p.candidate]), abs=1e-12)
    assert result.metrics["reference_copy_rate"].value == len(dup.copies_of_reference) / len(y)
    assert result.metrics["duplicate_rate"].params["rule"] == "calibrated"


def test_calibrated_rule_on_pixels_flags_copies_not_other_digits():
    """The fixed cosine of 0.95 calls different handwritten digits copies in pixel space; the
    calibrated rule flags a fresh real sample about as often as the reference flags itself, and
    still flags every real copy."""
    from sklearn.datasets import load_digits

    pixels = load_digits().data.astype(np.float32)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(pixels))
    x, fresh = pixels[order[:1000]], pixels[order[1000:1700]]
    cosine = cosine_duplicates(x, fresh, 0.95)
    assert len(cosine.copies_of_reference) / len(fresh) > 0.2  # the old rule: hundreds of "leaks"
    fresh_rate = compare(x, fresh, kid_subsets=2).metrics["reference_copy_rate"]
    assert fresh_rate.value <= 0.02
    leaky = np.vstack([fresh[:600], x[:100]])  # 100 copies of reference items
    copies = compare(x, leaky, kid_subsets=2).duplicates.copies_of_reference
    assert set(range(600, 700)) <= {p.candidate for p in copies}


def test_cluster_tail_mass_identity_and_missing_tail():
    rng = np.random.default_rng(6)
    centres = rng.standard_normal((8, 16)) * 6
    sizes = [300, 300, 300, 300, 300, 300, 120, 100]  # the two smallest hold 10.9%
    x = np.vstack([c + rng.standard_normal((n, 16)) for c, n in zip(centres, sizes)])
    same = metrics.cluster_tail_mass(x, x, n_clusters=8)
    assert same.value == same.params["reference_share"] and same.params["empty_clusters"] == 0
    assert same.params["reference_share"] >= 0.1
    no_tail = x[: sum(sizes[:6])]  # the two smallest groups are gone
    missing = metrics.cluster_tail_mass(x, no_tail, n_clusters=8)
    assert missing.value == 0.0 and missing.params["empty_clusters"] == 2


def test_compare_serialises_and_validates():
    x, y = datasets()["unit_with_copies"]
    result = compare(x, y, k=5, kid_subsets=5,
                     reference_keys=[f"r{i}" for i in range(len(x))], candidate_keys=[f"c{i}" for i in range(len(y))])
    data = result.to_dict()
    for name in ("precision", "recall", "density", "coverage", "tail_coverage", "cluster_tail_mass", "fd", "kid",
                 "cmmd", "vendi_reference", "vendi_candidate", "vendi_ratio", "duplicate_rate", "reference_copy_rate"):
        assert name in data["metrics"], name
        assert math.isfinite(data["metrics"][name]["value"])
        assert data["metrics"][name]["method"]
    assert data["metrics"]["precision"]["params"]["k"] == 5
    assert data["near_duplicates"]["copies_of_reference"][0]["candidate"].startswith("c")
    import json

    assert json.loads(result.to_json())["n_candidate"] == len(y)
    with pytest.raises(ValueError, match="dimension"):
        compare(x, y[:, :5])
    few = compare(x, y[:5], k=5)  # too few for k-NN balls: those metrics say why, the rest still come
    assert math.isnan(few.metrics["precision"].value) and "more than k=5" in few.metrics["precision"].method
    assert math.isfinite(few.metrics["fd"].value)
    with pytest.raises(ValueError, match="at least one item"):
        compare(x, y[:0], k=5)


# -- on real CLIP geometry ----------------------------------------------------------------------


def test_missing_classes_lose_recall_coverage_and_tail(real_clip):
    x, test, labels = real_clip["food_train"], real_clip["food_test"], real_clip["food_test_y"]
    kept = np.isin(labels, np.unique(labels)[3:])  # 7 of 10 classes, 350 items
    rng = np.random.default_rng(0)
    all_classes = test[rng.choice(len(test), kept.sum(), replace=False)]  # same size, every class
    full_balls = ball_membership(x, all_classes, 5)
    missing_balls = ball_membership(x, test[kept], 5)
    full = metrics.fidelity_metrics(full_balls)
    missing = metrics.fidelity_metrics(missing_balls)
    assert missing["recall"].value < full["recall"].value - 0.1
    assert missing["coverage"].ci[1] < full["coverage"].value  # beyond the interval
    assert missing["tail_coverage"].value < full["tail_coverage"].value
    # Precision stays where real held-out photos put it: what is there is still real.
    assert missing["precision"].value > full["precision"].value - 0.03 and missing["precision"].value > 0.8
    # The balls of the dropped classes go (almost) uncovered; the others do not.
    dropped = ~np.isin(real_clip["food_train_y"], np.unique(labels)[3:])
    assert missing_balls.ref_covered[dropped].mean() < 0.05 < 0.3 < full_balls.ref_covered[dropped].mean()


def test_biased_gaussian_keeps_precision_loses_recall(real_clip):
    x, labels = real_clip["food_train"], real_clip["food_train_y"]
    rng = np.random.default_rng(1)
    real = real_clip["food_test"]
    fake = []  # per class: a Gaussian fitted to the reference, sampled with lambda = 0.5
    for c in np.unique(labels):
        xc = x[labels == c].astype(np.float64)
        mu, cov = xc.mean(axis=0), np.cov(xc, rowvar=False)
        fake.append(rng.multivariate_normal(mu, 0.5 * cov, size=50, method="eigh"))
    fake = np.vstack(fake).astype(np.float32)
    on_real = prdc(x, real, 5)
    on_fake = prdc(x, fake, 5)
    assert on_fake["precision"] >= on_real["precision"] - 0.02
    assert on_fake["recall"] < on_real["recall"] - 0.2


def test_off_distribution_content_lowers_precision(real_clip):
    x, real, flickr = real_clip["food_train"], real_clip["food_test"], real_clip["flickr"]
    mixed = np.vstack([real[:300], flickr[:200]])
    assert prdc(x, mixed, 5)["precision"] < prdc(x, real, 5)["precision"] - 0.25


def test_radii_with_walls_of_ties_equal_brute_force():
    """More tied neighbours than FAISS is asked for: the exact fallback must kick in."""
    rng = np.random.default_rng(7)
    x = np.vstack([np.zeros((40, 6)), np.ones((30, 6)), rng.integers(0, 2, size=(60, 6))]).astype(np.float32)
    from audit.balls import knn_sq_radii

    sq = ((x[:, None, :].astype(np.float64) - x[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(sq, np.inf)
    for k in (1, 5, 20):
        np.testing.assert_array_equal(knn_sq_radii(x, k), np.sort(sq, axis=1)[:, k - 1])


@pytest.mark.parametrize("block_rows", [None, 7, 80])  # default; sets split over blocks; 2 sets a block
def test_grouped_membership_equals_one_set_at_a_time(block_rows, monkeypatch):
    import audit.balls
    from audit.balls import grouped_ball_membership, knn_sq_radii

    x, _ = datasets()["gaussian"]
    if block_rows:
        monkeypatch.setattr(audit.balls, "_BLOCK_BYTES", 4 * len(x) * block_rows)
    rng = np.random.default_rng(9)
    sets = [rng.standard_normal((40, 16)).astype(np.float32) * s for s in (0.5, 1.0, 1.5)]
    sets[1][:5] = x[:5]  # exact copies of reference items
    grouped = grouped_ball_membership(x, knn_sq_radii(x, 5), np.vstack(sets), 40, 5)
    for g, y in enumerate(sets):
        single = ball_membership(x, y, 5)
        np.testing.assert_array_equal(grouped.cand_ball_counts[40 * g : 40 * (g + 1)], single.cand_ball_counts)
        np.testing.assert_array_equal(grouped.ref_covered[g], single.ref_covered)
        np.testing.assert_array_equal(grouped.ref_in_cand_ball[g], single.ref_in_cand_ball)
        np.testing.assert_array_equal(grouped.cand_radii[40 * g : 40 * (g + 1)], single.cand_radii)


def test_kid_and_cmmd_fast_paths_match_float64_on_real_clip(real_clip):
    """Unit CLIP vectors take KID's float32 path and CMMD's blocked symmetric expm1 sums: both
    must agree with plain float64 formulas on the same subsets, across several blocks."""
    x = real_clip["food_train"][:1500]
    y = np.vstack([real_clip["food_test"], real_clip["flickr"][:900]])
    x64, y64 = x.astype(np.float64), y.astype(np.float64)
    d = x.shape[1]

    rng = np.random.default_rng(7)  # the subsets kid(seed=7) draws, in the same order
    expected = []
    for _ in range(4):
        a = x64[rng.choice(len(x), 1000, replace=False)]
        b = y64[rng.choice(len(y), 1000, replace=False)]
        kaa, kbb, kab = ((u @ v.T / d + 1) ** 3 for u, v in ((a, a), (b, b), (a, b)))
        expected.append((kaa.sum() - np.trace(kaa) + kbb.sum() - np.trace(kbb)) / (1000 * 999) - 2 * kab.mean())
    mean, _ = metrics.kid(x, y, n_subsets=4, subset_size=1000, seed=7)
    assert mean == pytest.approx(np.mean(expected), rel=1e-4, abs=1e-7)

    def mean_rbf(u, v):
        sq = (u * u).sum(1)[:, None] + (v * v).sum(1)[None, :] - 2 * u @ v.T
        return np.exp(-np.clip(sq, 0, None) / 200.0).mean()

    direct = 1000 * (mean_rbf(x64, x64) + mean_rbf(y64, y64) - 2 * mean_rbf(x64, y64))
    assert direct > 0.1  # Flickr photos in the candidate: a real difference to measure
    assert metrics.cmmd(x, y) == pytest.approx(direct, rel=1e-4)
    assert metrics.cmmd(x, x) == pytest.approx(0, abs=1e-6)
