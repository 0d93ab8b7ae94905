"""What the synthetic-share gates read: never a number the tool itself has evidence against; and
detectors trained on several generators, with what they do on a generator they have not seen."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from audit.cli import main
from audit.policy import DEFAULT_POLICY, evaluate
from detectors.base import FractionEstimate
from detectors.fraction import FractionReport, estimate_fraction, gate_reading
from detectors.probe import HELD_OUT_REAL, HELD_OUT_SHARE, SupervisedProbe, pacc
from worlds import generator_families


def report(sup, sup_lower, bbe, bbe_lower, generator_shift=False, content_shift=False):
    estimates = {"supervised": FractionEstimate(sup, sup_lower, sup + 0.05, "PACC"),
                 "unsupervised": FractionEstimate(bbe, bbe_lower, None, "BBE"),
                 "out_of_manifold": FractionEstimate(0.0, 0.0, 0.1, "balls")}
    return FractionReport(800, 400, estimates, [], {"supervised": np.zeros(3)}, generator_shift=generator_shift,
                          content_shift=content_shift)


def fail_gate(reading):
    values = {"synthetic_fraction_lower": reading.lower, "synthetic_fraction": reading.value}
    results, verdict = evaluate(DEFAULT_POLICY, values)
    return {r.gate.metric: r.status for r in results}["synthetic_fraction_lower"]


def test_the_issue_split_cannot_pass_the_fail_gate_any_more():
    """Detector trained on A, candidate 30% from B: supervised lower 0.080, BBE at least 0.227 and a
    generator-shift warning. The gate passed 0.08 <= 0.1 and exited 0; now the refuted detector's
    bound is set aside, BBE's only floors the share, and the lower-bound gate reads unknown."""
    r = gate_reading(report(0.12, 0.0804, 0.366, 0.227, generator_shift=True), with_detector=True)
    assert r.read == "unsupervised" and r.value == pytest.approx(0.366) and np.isnan(r.lower)
    assert fail_gate(r) == "fail" and "at least 0.227" in r.why


def test_generator_shift_reads_unknown_even_where_bbe_bound_is_below_the_threshold():
    """A held-out generator at 30% typically gives BBE a bound under 0.1 on small sets: the refuted
    detector must not pass the gate through BBE's loose floor either."""
    r = gate_reading(report(0.07, 0.01, 0.19, 0.03, generator_shift=True), with_detector=True)
    assert np.isnan(r.lower) and fail_gate(r) == "fail"


@pytest.mark.parametrize("sup_lower, bbe_lower", [(0.02, 0.15), (0.15, 0.02), (0.05, 0.06), (0.0, 0.0)])
def test_quiet_guards_read_the_largest_valid_lower_bound(sup_lower, bbe_lower):
    r = gate_reading(report(0.2, sup_lower, 0.1, bbe_lower), with_detector=True)
    assert r.lower == max(sup_lower, bbe_lower) and r.value == 0.2
    assert r.lower_read == ("unsupervised" if bbe_lower > sup_lower else "supervised")
    assert fail_gate(r) == ("fail" if max(sup_lower, bbe_lower) > 0.1 else "pass")


def test_disagreement_with_two_explanations_reads_unknown_and_fails():
    r = gate_reading(report(0.044, 0.01, 0.505, 0.206, generator_shift=True, content_shift=True), with_detector=True)
    assert np.isnan(r.lower) and r.read == "none" and fail_gate(r) == "fail"
    assert r.why.startswith("estimates disagree") and "retrain" in r.why and "extend" in r.why


def test_an_estimate_without_a_bound_reads_unknown_not_zero():
    """BBE with too few reference items for a bound gives no lower bound: the gate must not read 0."""
    no_bound = report(0.2, 0.15, float("nan"), None)
    assert fail_gate(gate_reading(no_bound, with_detector=False)) == "fail"  # unknown counts as a fail
    assert np.isnan(gate_reading(no_bound, with_detector=False).lower)
    assert np.isnan(gate_reading(report(0.2, 0.15, float("nan"), None, generator_shift=True), True).lower)
    assert gate_reading(no_bound, with_detector=True).lower == 0.15  # the detector's bound still stands


def test_content_shift_alone_reads_the_detector_and_no_detector_reads_bbe():
    r = gate_reading(report(0.05, 0.01, 0.4, 0.3, content_shift=True), with_detector=True)
    assert r.read == "supervised" and r.lower == 0.01  # BBE's bound counts the new real content
    r = gate_reading(report(0.05, 0.01, 0.4, 0.3), with_detector=False)
    assert r.read == "unsupervised" and r.lower == 0.3


def test_scan_reports_what_each_gate_read(real_clip, tmp_path):
    """Through the CLI: a scan with a detector prints and stores which estimate the share gates read."""
    pool = np.vstack([real_clip["food_train"], real_clip["food_test"]])
    pool = pool[np.random.default_rng(0).permutation(len(pool))]
    fams = generator_families(pool[:1500], 0)
    gen, lam = fams["dropped_modes"]
    np.save(tmp_path / "real.npy", pool[1500:1900])
    np.save(tmp_path / "fake.npy", gen.sample(400, lam))
    np.save(tmp_path / "cand.npy", np.vstack([pool[1900:2180], gen.sample(120, lam)]))
    runner = CliRunner()
    trained = runner.invoke(main, ["detector", "train", "--real", str(tmp_path / "real.npy"), "--synthetic",
                                   f"dm={tmp_path / 'fake.npy'}", "-o", str(tmp_path / "d.json"),
                                   "--embedding-model", "ViT-B-32"], catch_exceptions=False)
    assert trained.exit_code == 0, trained.output
    assert "trained on one generator (dm)" in trained.output
    result = runner.invoke(main, ["scan", str(tmp_path / "real.npy"), str(tmp_path / "cand.npy"), "--detector",
                                  str(tmp_path / "d.json"), "-o", str(tmp_path / "rep"), "--embedding-model", "ViT-B-32"],
                           catch_exceptions=False)
    data = json.loads((tmp_path / "rep" / "report.json").read_text())
    reads = data["synthetic_fraction"]["gate_reads"]
    assert reads["read"] in ("supervised", "unsupervised", "none") and reads["why"]
    gate = {g["metric"]: g for g in data["gates"]}["synthetic_fraction_lower"]
    assert data["values"]["synthetic_fraction_lower"] == reads["lower"] or reads["lower"] is None
    assert reads["why"].split(":")[0] in gate["message"]
    assert "synthetic-share gates read" in " ".join(result.output.split())
    assert any("trained on one generator" in n for n in data["synthetic_fraction"]["notes"])


def test_leave_one_generator_out_figures_equal_a_refit(real_clip, tmp_path):
    """The figures a detector stores per held-out generator, recomputed here: the same split of the
    real items, a probe fitted on the rest, AUC by counting pairs, PACC by its formula."""
    pool = np.vstack([real_clip["food_train"], real_clip["food_test"]])
    pool = pool[np.random.default_rng(1).permutation(len(pool))]
    fams = generator_families(pool[:1500], 1)
    synthetic = {name: gen.sample(300, lam) for name, (gen, lam) in fams.items()}
    real = pool[1500:2100]
    probe = SupervisedProbe.fit_generators(real, synthetic, seed=4)
    assert [g["name"] for g in probe.generators] == list(synthetic) and len(probe.held_out) == 3
    order = np.random.default_rng(4).permutation(len(real))
    n_hold = int(round(HELD_OUT_REAL * len(real)))
    hold, train = real[np.sort(order[:n_hold])], real[np.sort(order[n_hold:])]
    for figures in probe.held_out:
        name = figures["held_out"]
        refit = SupervisedProbe.fit(train, np.vstack([synthetic[o] for o in synthetic if o != name]), seed=4)
        neg, pos = refit.scores(hold), refit.scores(synthetic[name])
        auc = np.mean(pos[:, None] > neg[None, :]) + 0.5 * np.mean(pos[:, None] == neg[None, :])
        assert figures["auc"] == pytest.approx(auc, abs=1e-12)
        n_fake = int(round(HELD_OUT_SHARE / (1 - HELD_OUT_SHARE) * len(hold)))
        scores = refit.scores(np.vstack([hold, synthetic[name][:n_fake]]))
        s0, s1 = refit.oof_real.mean(), refit.oof_synthetic.mean()
        expected = float(np.clip((scores.mean() - s0) / (s1 - s0), 0, 1))
        assert figures["estimate"] == pytest.approx(expected, abs=1e-12)
        assert figures["share"] == pytest.approx(n_fake / (len(hold) + n_fake))
        assert figures["recovered"] == pytest.approx(expected / figures["share"])
    # They travel with the detector file and come back checked.
    probe.save(tmp_path / "d.json")
    loaded = SupervisedProbe.load(tmp_path / "d.json")
    assert loaded.held_out == json.loads(json.dumps(probe.held_out)) and loaded.generators == probe.generators
    np.testing.assert_array_equal(loaded.synthetic_labels, probe.synthetic_labels)
    # The pooled adjustment assumes the training mix; the interval spans each generator's own
    # adjustment, so a candidate from one generator alone is still covered.
    for name in synthetic:
        candidate = np.vstack([hold, synthetic[name][:60]])
        estimate, _ = loaded.estimate(loaded.scores(candidate), n_boot=200)
        for value in estimate.details["per_generator"].values():
            assert estimate.lower <= value <= estimate.upper
        assert estimate.lower <= 60 / len(candidate) <= estimate.upper
    assert "on a generator it had not seen, this detector recovered" in loaded.unseen_generator_note()


def test_detector_train_takes_several_generators_by_name(real_clip, tmp_path):
    pool = np.vstack([real_clip["food_train"], real_clip["food_test"]])
    pool = pool[np.random.default_rng(2).permutation(len(pool))]
    fams = generator_families(pool[:1500], 2)
    np.save(tmp_path / "real.npy", pool[1500:2000])
    args = ["detector", "train", "--real", str(tmp_path / "real.npy"), "-o", str(tmp_path / "d.json"), "--json",
            "--embedding-model", "ViT-B-32"]
    for name, (gen, lam) in fams.items():
        np.save(tmp_path / f"{name}.npy", gen.sample(200, lam))
        args += ["--synthetic", str(tmp_path / f"{name}.npy")]  # named after the file
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert [g["name"] for g in out["generators"]] == list(fams) and out["n_synthetic"] == 600
    assert [h["held_out"] for h in out["leave_one_generator_out"]] == list(fams)
    same = CliRunner().invoke(main, [*args[:-2], "--synthetic", f"a={tmp_path / 'subspace.npy'}", "--synthetic",
                                     f"a={tmp_path / 'fingerprint.npy'}"])
    assert same.exit_code == 2 and "two generators are named 'a'" in same.output


def test_density_only_detector_round_trips(real_clip, tmp_path):
    pool = np.vstack([real_clip["food_train"], real_clip["food_test"]])
    gen, lam = generator_families(pool[:1500], 3)["dropped_modes"]
    probe = SupervisedProbe.fit(pool[1500:1900], gen.sample(300, lam), seed=3, embedding=False)
    assert probe.coefs.shape[1] == len(probe.feature_names) == 6  # three log-distances against each bank
    probe.save(tmp_path / "d.json")
    loaded = SupervisedProbe.load(tmp_path / "d.json")
    assert loaded.embedding is False
    candidate = pool[1900:2100]
    np.testing.assert_array_equal(loaded.scores(candidate), probe.scores(candidate))
    meta = json.loads((tmp_path / "d.json").read_text())
    meta["embedding_features"] = True  # the arrays then no longer fit: refused, not misread
    (tmp_path / "d.json").write_text(json.dumps(meta))
    with pytest.raises(Exception, match="inconsistent"):
        SupervisedProbe.load(tmp_path / "d.json")


def test_disagreement_is_one_story_in_every_report_and_shows_the_items_behind_it(real_clip, tmp_path):
    """The issue's third case: 300 reference-like photos plus 100 photos of other content (Flickr8k),
    0% synthetic, a detector trained on one generator. Both guards fire: one sentence everywhere,
    the share gates unknown (a fail), and the unexplained items are mostly the other photos."""
    pool = np.vstack([real_clip["food_train"], real_clip["food_test"]])
    pool = pool[np.random.default_rng(0).permutation(len(pool))]
    gen, lam = generator_families(pool[:1500], 0)["dropped_modes"]
    np.save(tmp_path / "ref.npy", pool[1500:2100])
    np.save(tmp_path / "fake.npy", gen.sample(600, lam))
    np.save(tmp_path / "cand.npy", np.vstack([pool[2100:2400], real_clip["flickr"][:100]]))
    runner, common = CliRunner(), ["--embedding-model", "ViT-B-32"]
    assert runner.invoke(main, ["detector", "train", "--real", str(tmp_path / "ref.npy"), "--synthetic",
                                str(tmp_path / "fake.npy"), "-o", str(tmp_path / "d.json"), *common]).exit_code == 0
    result = runner.invoke(main, ["scan", str(tmp_path / "ref.npy"), str(tmp_path / "cand.npy"), "--detector",
                                  str(tmp_path / "d.json"), "-o", str(tmp_path / "rep"), "--no-items", *common],
                           catch_exceptions=False)
    assert result.exit_code == 1
    out = tmp_path / "rep"
    data = json.loads((out / "report.json").read_text())
    assert data["synthetic_fraction"]["guards"] == {"generator_shift": True, "content_shift": True}
    story = next(w for w in data["synthetic_fraction"]["warnings"] if w.startswith("estimates disagree"))
    assert not any(w.startswith(("generator shift", "content shift")) for w in data["synthetic_fraction"]["warnings"])
    gate = {g["metric"]: g for g in data["gates"]}["synthetic_fraction_lower"]
    assert gate["unknown"] and gate["status"] == "fail" and "estimates disagree" in gate["message"]
    # The forecast starts from the share the gates read: none here, so no forecast from a doubted number.
    assert not data["forecast"]["available"] and "estimates disagree" in data["forecast"]["summary"]["reason"]
    flat = lambda text: " ".join(text.split())  # noqa: E731
    import html as html_lib
    assert story in flat(result.output)
    assert story in flat((out / "report.md").read_text().replace("\\", ""))
    assert story in flat(html_lib.unescape((out / "report.html").read_text()))
    assert story in flat(html_lib.unescape((out / "junit.xml").read_text()))
    other = {str(i) for i in range(300, 400)}  # the Flickr rows
    keys = [item["key"].rsplit(":", 1)[-1].rsplit("/", 1)[-1] for item in data["unexplained"]]
    assert keys and sum(k in other for k in keys) >= len(keys) / 2, keys


def test_trained_on_every_family_each_family_is_estimated_and_covered(real_clip):
    """A detector trained on all three simulated families (1,000 items each) against 600 reference
    photos; candidates of 400 items, each family alone at 10% and 30%, 8 seeds: mean error within
    0.05 of the truth and the 95% interval covering it in at least 90% of seeds (measured: |mean
    error| <= 0.032, coverage 1.0); and an all-real candidate passes the default fail gate."""
    from worlds import mix

    pool = np.vstack([real_clip["food_train"], real_clip["food_test"]])
    errors, covered, passes = {}, {}, []
    for seed in range(8):
        rng = np.random.default_rng(seed)
        order = rng.permutation(len(pool))
        families = generator_families(pool[order[:1500]], seed)
        reference, real = pool[order[1500:2100]], pool[order[2100:]]
        samples = {name: gen.sample(2000, lam) for name, (gen, lam) in families.items()}
        probe = SupervisedProbe.fit_generators(reference, {n: v[:1000] for n, v in samples.items()}, seed=seed)
        for name in families:
            for share in (0.1, 0.3):
                candidate, _ = mix(real, samples[name][1000:], share, 400, rng)
                estimate, _ = probe.estimate(probe.scores(candidate), n_boot=300, seed=seed)
                errors.setdefault((name, share), []).append(estimate.value - share)
                covered.setdefault((name, share), []).append(estimate.lower <= share <= estimate.upper)
        # An all-real candidate passes the default fail gate, whatever the gates read.
        report = estimate_fraction(reference, real[rng.choice(len(real), 400, replace=False)], probe, seed=seed)
        passes.append(fail_gate(gate_reading(report, with_detector=True)) == "pass")
    assert np.mean(passes) >= 0.95, passes
    for key in errors:
        assert abs(np.mean(errors[key])) <= 0.05, (key, errors[key])
        assert np.mean(covered[key]) >= 0.9, (key, covered[key])


def held_out_outcomes(pool: np.ndarray, seeds: range) -> dict[tuple[str, float], list[bool]]:
    """Per (held-out family, share): does the default fail gate fail? A detector trained on the two
    other families (400 items each) against 600 reference photos; a candidate of 400 items, 30%
    from the held-out family or all real."""
    from worlds import mix

    fails: dict[tuple[str, float], list[bool]] = {}
    for seed in seeds:
        rng = np.random.default_rng(seed)
        order = rng.permutation(len(pool))
        families = generator_families(pool[order[:1500]], seed)
        reference, real = pool[order[1500:2100]], pool[order[2100:]]
        samples = {name: gen.sample(800, lam) for name, (gen, lam) in families.items()}
        for held in families:
            probe = SupervisedProbe.fit(reference, np.vstack([v[:400] for n, v in samples.items() if n != held]),
                                        seed=seed)
            for share in (0.3, 0.0):
                candidate, _ = mix(real, samples[held][400:], share, 400, rng)
                report = estimate_fraction(reference, candidate, probe, seed=seed)
                fails.setdefault((held, share), []).append(fail_gate(gate_reading(report, True)) == "fail")
    return fails


def test_an_unseen_generator_fails_the_gate_more_often_and_real_candidates_still_pass(real_clip):
    """The generator-shift guard with BBE's bootstrap error, and a refuted detector's gate read
    unknown, over 20 seeds: all-real candidates pass (measured 58 of 60; the old delta-method
    guard called one in three "shifted", which this rule would have failed), and a held-out family
    at 30% fails the default gate in most seeds (measured 9, 14, 20 of 20 for fingerprint, dropped
    modes, subspace; the old rule read BBE's loose bound and failed 2, 5, 16). The issue's 95% for
    every family is not reached: on 400 items neither the detector nor BBE sees the fingerprint
    family reliably."""
    pool = np.vstack([real_clip["food_train"], real_clip["food_test"]])
    fails = held_out_outcomes(pool, range(20))
    all_real = {held: 1 - np.mean(f) for (held, share), f in fails.items() if share == 0.0}
    assert np.mean(list(all_real.values())) >= 0.95 and min(all_real.values()) >= 0.9, all_real
    held_out = [f for (held, share), outcome in fails.items() if share > 0 for f in outcome]
    assert np.mean(held_out) >= 0.65, fails
