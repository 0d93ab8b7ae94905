"""p and lambda measured from an audit, on mixtures whose truth is known, in real CLIP geometry.

The real part is Food-101 CLIP embeddings; the synthetic part is drawn at sampling bias lambda
by the MAD Gaussian (N(mu, lambda Sigma), fitted to Food-101 items outside the reference and the
candidate), so its spread is lambda times the real one: the quantity the projector's lambda is.
p comes from a supervised detector trained on other draws of the same generator."""

from __future__ import annotations

import numpy as np
import pytest

from audit.projector import inputs_from_audit
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


def _push_classes(x: np.ndarray, y: np.ndarray, gamma: float) -> np.ndarray:
    """Every item moved with its class: class means pushed from the overall mean by gamma (what
    classifier-free guidance does to class means), each class's own spread kept."""
    out = np.asarray(x, dtype=np.float64).copy()
    centre = out.mean(axis=0)
    for c in np.unique(y):
        out[y == c] += (gamma - 1) * (out[y == c].mean(axis=0) - centre)
    return out.astype(np.float32)


def test_separation_reads_classes_pushed_apart_and_one_on_real_items(real_clip):
    """The separation is measured on the stand-in's own components, the push here is made on the
    photos' real classes (labels the measurement never sees): held-out real photos read 1 (to
    within the few percent that items outside the principal axes' fit lose: 0.97 measured),
    pushed classes read above 1, more for a larger push, with intervals that exclude 1."""
    from audit.projector import ReferenceSpace, make_stand_in, measure_separation

    order = np.random.default_rng(0).permutation(2000)
    x, y = real_clip["food_train"][order], real_clip["food_train_y"][order]
    space = ReferenceSpace.fit(x[:1500], 64, eval_reference=500, seed=0)
    gmm = make_stand_in("gmm", space, 0)
    test, labels = x[1500:], y[1500:]
    real = measure_separation(space, gmm, test)
    assert real["modelled"] and abs(real["value"] - 1) < 0.1 and real["interval"][1] > 0.9, real
    readings = {g: measure_separation(space, gmm, _push_classes(test, labels, g)) for g in (1.5, 2.0)}
    assert readings[1.5]["interval"][0] > 1.1 and readings[2.0]["value"] > readings[1.5]["interval"][1]
    # Components are not classes: the reading is the share of the push the components see, never more.
    assert readings[2.0]["value"] <= 2.0 + (readings[2.0]["interval"][1] - readings[2.0]["value"])
    # Beyond what the loops accept (a push of 30 reads above MAX_SEPARATION = 10): said unmeasured,
    # never a value that would stop the forecast.
    far = measure_separation(space, gmm, _push_classes(test, labels, 30.0))
    assert far["modelled"] is False and "not measured" in far["note"], far
    # Stand-ins without components say they cannot carry it.
    assert measure_separation(space, make_stand_in("gaussian", space, 0), test)["modelled"] is False


def test_lambda_matched_to_a_recall_no_shrink_reaches_is_said_unmatched(food):
    """A synthetic part with more recall than the stand-in has even at lambda = 1 (here: more than
    a real sample's) has no matched lambda: the forecast assumes 1 with no interval and says so,
    instead of a clipped 1.000 that looks measured. A reachable recall is matched: the stand-in's
    output at that lambda has it (to the bisection's resolution and one recall step on the eval
    points)."""
    from audit.projector import ReferenceSpace, make_stand_in, project
    from audit.projector.forecast import relative_recall

    space = ReferenceSpace.fit(food["reference"], 32, eval_reference=300, seed=0)
    kwargs = dict(loop="fresh", model="gmm", real_fraction=0.5, n=400, generations=1, runs=4, eval_size=300,
                  space=space, search_fresh=False)
    over = project(None, synthetic_recall=(1.3, 1.2, 1.4), **kwargs)
    assert over.params["lam_matched"] is False and over.params["lam"] == 1.0 and over.params["lam_interval"] is None
    assert over.params["lam_source"].startswith("not matched (1 assumed)")
    matched = project(None, synthetic_recall=(0.7, 0.65, 0.75), **kwargs)
    lam, (lo, hi) = matched.params["lam"], matched.params["lam_interval"]
    assert matched.params["lam_matched"] and lo <= lam <= hi < 1
    reached = relative_recall(space, make_stand_in("gmm", space, 0), lam, 300, 0)
    assert abs(reached - 0.7) <= 2 / 300 / 0.9 + 0.01, reached


def test_a_separation_read_from_a_scan_is_checked_as_a_measured_one(food):
    """`project --from-report` has the scan's separation, not the items: a valid reading is carried
    (pushed apart only, as when measured); one outside (0, 10], not finite, without its interval or
    outside it is said not measured; a stand-in without components says it cannot carry it."""
    from audit.projector import ReferenceSpace, make_stand_in, project
    from audit.projector.forecast import separation_from_reading

    space = ReferenceSpace.fit(food["reference"], 16, eval_reference=300, seed=0)
    gmm = make_stand_in("gmm", space, 0)
    good = {"value": 1.8, "interval": [1.6, 2.0], "modelled": True}
    assert separation_from_reading(good, gmm)["value"] == 1.8
    for bad in ({**good, "value": 30.0, "interval": [29.0, 31.0]}, {**good, "value": float("nan")},
                {**good, "interval": None}, {**good, "value": 2.5}, {**good, "modelled": False}, {**good, "value": True}):
        reading = separation_from_reading(bad, gmm)
        assert reading["modelled"] is False and "not measured" in reading["note"], bad
    assert separation_from_reading(good, make_stand_in("gaussian", space, 0))["modelled"] is False
    fc = project(None, loop="fresh", model="gmm", real_fraction=0.5, n=300, generations=1, runs=4, eval_size=300,
                 space=space, search_fresh=False, separation_reading={**good, "value": 0.9, "interval": [0.8, 1.0]})
    assert fc.params["separation"]["modelled"] and fc.params["separation"]["used"] == 1.0
    fc = project(None, loop="fresh", model="gmm", real_fraction=0.5, n=300, generations=1, runs=4, eval_size=300,
                 space=space, search_fresh=False, separation_reading=good)
    assert fc.params["separation"]["used"] == 1.8
