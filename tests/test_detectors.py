"""Synthetic-share estimators on worlds where the truth is known."""

import hashlib
import json
import pickle

import numpy as np
import pytest

from detectors.base import ModelMismatch
from detectors.bbe import bbe, crossfit_scores
from detectors.fraction import estimate_fraction, gate_reading
from detectors.probe import SupervisedProbe, emq, pacc

SHARES = [0.0, 0.05, 0.1, 0.3, 0.5, 0.8]


class World:
    """Real items: a 4-component Gaussian mixture in 16-d. Synthetic items: the same components,
    shrunk (sampling bias) and shifted, as a generator fitted to the real data would make."""

    def __init__(self, seed: int, d: int = 16, shift: float = 2.5):
        self.rng = np.random.default_rng(seed)
        self.means = self.rng.standard_normal((4, d)) * 2
        self.shift = shift / np.sqrt(d)

    def real(self, n):
        return self.means[self.rng.integers(0, 4, n)] + self.rng.standard_normal((n, self.means.shape[1]))

    def fake(self, n, scale=0.6, shift=None):
        shift = self.shift if shift is None else shift
        return self.means[self.rng.integers(0, 4, n)] + scale * self.rng.standard_normal((n, self.means.shape[1])) + shift

    def candidate(self, n, share, **fake_kwargs):
        n_fake = int(round(share * n))
        return np.vstack([self.real(n - n_fake), self.fake(n_fake, **fake_kwargs)])


def test_supervised_error_and_interval_coverage_over_seeds():
    errors, covered, zero_estimates = [], [], []
    for seed in range(40):
        world = World(seed)
        probe = SupervisedProbe.fit(world.real(800), world.fake(800), seed=seed)
        for share in SHARES:
            estimate, second = probe.estimate(probe.scores(world.candidate(2000, share)), n_boot=400, seed=seed)
            errors.append(abs(estimate.value - share))
            covered.append(estimate.lower <= share <= estimate.upper)
            assert abs(second.value - share) < 0.1  # EMQ agrees as a second opinion
            if share == 0:
                zero_estimates.append(estimate.value)
    assert max(errors) <= 0.05
    assert np.mean(covered) >= 0.90
    assert max(zero_estimates) <= 0.05


def test_bbe_lower_bound_holds_with_probability_one_minus_delta():
    delta = 0.05
    below = []
    for seed in range(40):
        world = World(100 + seed)
        reference = world.real(1000)
        for share in SHARES:
            estimate = bbe(*crossfit_scores(reference, world.candidate(1000, share), seed), delta)
            below.append(estimate.lower <= share)
            assert 0 <= estimate.lower <= estimate.value <= 1
    assert np.mean(below) >= 1 - delta


def test_pacc_and_emq_closed_forms():
    # A perfect probe: scores are the labels, PACC and EMQ return the true share exactly.
    scores = np.r_[np.ones(30), np.zeros(70)]
    assert pacc(scores, np.zeros(50), np.ones(50)) == pytest.approx(0.3)
    assert emq(np.clip(scores, 0.01, 0.99), 0.5) == pytest.approx(0.3, abs=0.01)
    # A noisy probe: PACC undoes the known bias of classify-and-count.
    s0, s1 = np.full(10, 0.2), np.full(10, 0.7)
    assert pacc(np.r_[np.full(40, 0.7), np.full(60, 0.2)], s0, s1) == pytest.approx(0.4)


def test_saved_detector_round_trips_exactly(tmp_path):
    world = World(0)
    identity = {"architecture": {"name": "ViT-B-32"}, "weights": {"tag": "laion2b_s34b_b79k", "file_sha256": "ab"}}
    probe = SupervisedProbe.fit(world.real(200), world.fake(200), model_identity=identity)
    path = tmp_path / "detector.json"
    assert probe.save(path) == [path, tmp_path / "detector.npz"]
    loaded = SupervisedProbe.load(path)
    for name in ("real_bank", "synthetic_bank", "real_folds", "synthetic_folds", "means", "scales", "coefs",
                 "intercepts", "oof_real", "oof_synthetic"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(probe, name))
    assert loaded.k == probe.k and loaded.model_identity == identity
    x = world.candidate(100, 0.3)
    np.testing.assert_array_equal(loaded.scores(x, identity), probe.scores(x, identity))
    assert json.loads(path.read_text())["format"] == "madaudit-detector/2"


def test_loading_executes_no_code(tmp_path):
    class Boom:
        def __reduce__(self):
            return (exec, ("open(%r, 'w').write('ran')" % str(tmp_path / "pwned"),))

    evil = tmp_path / "detector.pkl"
    evil.write_bytes(pickle.dumps(Boom()))
    with pytest.raises(ValueError, match="not a valid madaudit detector"):
        SupervisedProbe.load(evil)
    (tmp_path / "other.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(ValueError, match="not a madaudit detector"):
        SupervisedProbe.load(tmp_path / "other.json")
    # A detector whose .npz holds a pickled object array: refused by np.load(allow_pickle=False).
    world = World(5)
    path = tmp_path / "detector.json"
    SupervisedProbe.fit(world.real(60), world.fake(60)).save(path)
    arrays = dict(np.load(tmp_path / "detector.npz"))
    arrays["coefs"] = np.array([Boom()], dtype=object)
    np.savez(tmp_path / "detector.npz", **arrays)
    meta = json.loads(path.read_text())
    meta["arrays"]["sha256"] = hashlib.sha256((tmp_path / "detector.npz").read_bytes()).hexdigest()
    path.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="not a detector's arrays|Object arrays"):
        SupervisedProbe.load(path)
    assert not (tmp_path / "pwned").exists()


def test_bad_detector_files_are_refused_with_a_reason(tmp_path):
    world = World(6)
    path = tmp_path / "detector.json"
    SupervisedProbe.fit(world.real(60), world.fake(60)).save(path)
    good = dict(np.load(tmp_path / "detector.npz"))

    def rewrite(**changes):
        np.savez(tmp_path / "detector.npz", **{**good, **changes})
        meta = json.loads(path.read_text())
        meta["arrays"]["sha256"] = hashlib.sha256((tmp_path / "detector.npz").read_bytes()).hexdigest()
        path.write_text(json.dumps(meta))

    rewrite(coefs=good["coefs"] * np.nan)
    with pytest.raises(ValueError, match="finite"):
        SupervisedProbe.load(path)
    rewrite(scales=np.zeros_like(good["scales"]))
    with pytest.raises(ValueError, match="positive"):
        SupervisedProbe.load(path)
    rewrite(means=good["means"][:, :3])
    with pytest.raises(ValueError, match="inconsistent"):
        SupervisedProbe.load(path)
    rewrite()
    SupervisedProbe.load(path)  # the untouched arrays load
    (tmp_path / "detector.npz").write_bytes(b"changed")
    with pytest.raises(ValueError, match="sha256"):
        SupervisedProbe.load(path)
    (tmp_path / "detector.npz").unlink()
    with pytest.raises(ValueError, match="missing"):
        SupervisedProbe.load(path)
    (tmp_path / "old.json").write_text(json.dumps({"format": "madaudit-detector/1", "coef": [1.0]}))
    with pytest.raises(ValueError, match="retrain"):
        SupervisedProbe.load(tmp_path / "old.json")


def test_model_identity_mismatch_is_refused():
    world = World(1)
    mine = {"architecture": {"name": "ViT-B-32"}, "weights": {"tag": "laion2b_s34b_b79k"}}
    other = {"architecture": {"name": "ViT-L-14"}, "weights": {"tag": "openai"}}
    probe = SupervisedProbe.fit(world.real(100), world.fake(100), model_identity=mine)
    with pytest.raises(ModelMismatch, match="another model"):
        probe.scores(world.real(10), other)
    with pytest.raises(ModelMismatch, match="16-d"):
        probe.scores(np.zeros((3, 8)), mine)
    probe.scores(world.real(10), mine)  # same model: fine


def test_report_guards_and_items():
    world = World(2)
    probe = SupervisedProbe.fit(world.real(600), world.fake(600))
    report = estimate_fraction(world.real(800), world.candidate(800, 0.3), probe)
    assert {"supervised", "supervised_emq", "unsupervised", "out_of_manifold"} <= set(report.estimates)
    assert abs(report.estimates["supervised"].value - 0.3) < 0.05
    assert report.warnings == []
    top = report.most_suspicious([f"item{i}" for i in range(800)], top=50)
    assert sum(int(t["key"][4:]) >= 560 for t in top) >= 45  # the synthetic rows come last
    json.dumps(report.to_dict())

    # Few items: said so.
    small = estimate_fraction(world.real(100), world.candidate(100, 0.3), probe)
    assert any("few items" in w for w in small.warnings)
    # No detector: the limits of the unsupervised numbers are said.
    assert any("no detector" in w for w in estimate_fraction(world.real(300), world.candidate(300, 0.3)).warnings)


def test_generator_shift_is_flagged():
    world = World(3)
    probe = SupervisedProbe.fit(world.real(600), world.fake(600))  # trained on generator A
    # Generator B: no sampling bias and shifted the other way, nothing like A's examples.
    report = estimate_fraction(world.real(1000), world.candidate(1000, 0.4, scale=1.0, shift=-world.shift * 2), probe)
    assert report.estimates["unsupervised"].value > report.estimates["supervised"].upper
    assert report.generator_shift
    # Said once: alone as generator shift, or with content shift as the one story of a disagreement.
    said = [w for w in report.warnings if w.startswith(("generator shift", "estimates disagree"))]
    assert len(said) == 1 and not any(w.startswith("content shift") for w in report.warnings)
    # The gates never read the detector's number, which BBE contradicts.
    reading = gate_reading(report, with_detector=True)
    assert reading.read in ("unsupervised", "none")
    assert np.isnan(reading.lower) or reading.lower == report.estimates["unsupervised"].lower


def test_content_shift_is_flagged():
    world = World(4)
    probe = SupervisedProbe.fit(world.real(600), world.fake(600))
    reference = world.means[world.rng.integers(0, 2, 800)] + world.rng.standard_normal((800, 16))  # 2 of 4 modes
    report = estimate_fraction(reference, world.candidate(800, 0.2), probe)
    assert report.content_shift
    assert any(w.startswith(("content shift", "estimates disagree")) for w in report.warnings)


