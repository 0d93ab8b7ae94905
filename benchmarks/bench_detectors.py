"""Synthetic-share benchmark (issue 10).

    python benchmarks/bench_detectors.py [--reference 20000] [--candidate 100000]   # speed
    python benchmarks/bench_detectors.py --table [--seeds 5]                        # accuracy table
    python benchmarks/bench_detectors.py --logo [--seeds 6]                         # unseen generators

Speed: d = 512, real items from a Gaussian with the covariance of the real CLIP Food-101
embeddings, synthetic items with spread x 0.7 (sampling bias) and a small fixed offset (a
generator fingerprint), all L2-normalised; the candidate is 30% synthetic. Times every estimate
of `estimate_fraction` with a detector trained beforehand, and each estimator alone.

Table: real CLIP Food-101 worlds (tests/worlds.py, as in tests/test_detectors_clip.py): detector
variants x scenarios, mean |error| and 95% interval coverage of the supervised share, BBE's lower
bound and its validity. Prints JSON lines.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from bench_metrics import REAL_CLIP  # noqa: E402


def sampler(seed: int):
    rng = np.random.default_rng(seed)
    real = np.load(REAL_CLIP, allow_pickle=False)["X_train"].astype(np.float64)
    mu, cov = real.mean(axis=0), np.cov(real, rowvar=False)
    w, v = np.linalg.eigh(cov)
    root = v * np.sqrt(np.clip(w, 0, None))
    offset = rng.standard_normal(512)
    offset *= 0.08 / np.linalg.norm(offset)

    def draw(n, synthetic=False):
        z = rng.standard_normal((n, 512)) @ root.T * (np.sqrt(0.7) if synthetic else 1.0)
        x = mu + z + (offset if synthetic else 0)
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)

    return draw


def timed(step: str, fn, **extra):
    start = time.perf_counter()
    out = fn()
    print(json.dumps({"step": step, "seconds": round(time.perf_counter() - start, 2), **extra}), flush=True)
    return out


def speed(args) -> None:
    from audit.balls import candidate_ball_counts
    from detectors.bbe import bbe, crossfit_scores
    from detectors.fraction import estimate_fraction
    from detectors.probe import SupervisedProbe

    draw = sampler(0)
    n_fake = int(args.share * args.candidate)
    reference = draw(args.reference)
    candidate = np.vstack([draw(args.candidate - n_fake), draw(n_fake, synthetic=True)])
    print(json.dumps({"cpu": _cpu(), "cpus": os.cpu_count(), "d": 512, "reference": args.reference,
                      "candidate": args.candidate, "true_share": args.share}), flush=True)
    probe = timed("train_detector", lambda: SupervisedProbe.fit(draw(args.train), draw(args.train, synthetic=True)),
                  items=2 * args.train)
    scores = timed("supervised_scores", lambda: probe.scores(candidate))
    timed("supervised_pacc_emq_bootstrap", lambda: probe.estimate(scores))
    timed("unsupervised_bbe", lambda: bbe(*crossfit_scores(reference, candidate)))
    timed("out_of_manifold_ball_counts", lambda: candidate_ball_counts(reference, candidate))
    start = time.perf_counter()
    report = estimate_fraction(reference, candidate, probe)
    print(json.dumps({"step": "estimate_fraction (every estimate together)", "seconds": round(time.perf_counter() - start, 2),
                      "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                      "estimates": {k: {"value": round(e.value, 4), "lower": e.lower, "upper": e.upper}
                                    for k, e in report.estimates.items()},
                      "warnings": report.warnings}), flush=True)


def table(args) -> None:
    """Variants x scenarios on real CLIP worlds."""
    from detectors.bbe import bbe, crossfit_scores
    from detectors.fraction import generator_shift
    from detectors.probe import SupervisedProbe
    from worlds import FittedGenerator, mix

    food = np.load(REAL_CLIP, allow_pickle=False)
    flickr = np.load(Path(REAL_CLIP).with_name("flickr8k_1000_clip_vitb32.npz"), allow_pickle=False)["embeddings"]
    pool = np.vstack([food["X_train"], food["X_test"]]).astype(np.float32)
    scenarios = {"spread lambda=0.5": (0.5, 0.0, False, False), "spread lambda=0.7": (0.7, 0.0, False, False),
                 "fingerprint 0.08, lambda=0.7": (0.7, 0.08, False, False),
                 "generator shift (trained on A, candidate B)": (0.7, 0.08, True, False),
                 "content shift (+25% Flickr8k real photos)": (0.7, 0.0, False, True)}
    for scenario, (lam, fingerprint, shifted, content) in scenarios.items():
        rows = {v: [] for v in ("supervised", "linear-probe (before)", "density only", "hgb", "bbe density",
                                "bbe density+embedding", "bbe linear (before)")}
        flags = []
        for seed in range(args.seeds):
            rng = np.random.default_rng(seed)
            order = rng.permutation(len(pool))
            gen = FittedGenerator(pool[order[:500]], seed, fingerprint=fingerprint)
            reference, real = pool[order[500:1700]], pool[order[1700:]]
            target = FittedGenerator(pool[order[:500]], seed + 1000, fingerprint=fingerprint) if shifted else gen
            candidate, _ = mix(real, target.sample(1000, lam), 0.3, 600 if content else 800, rng)
            truth = 0.3
            if content:  # 200 real photos of other content: 180 synthetic of 800
                candidate = np.vstack([candidate, flickr[rng.choice(len(flickr), 200, replace=False)].astype(np.float32)])
                truth = 0.3 * 600 / 800
            labelled = gen.sample(1000, lam)
            probe = SupervisedProbe.fit(reference, labelled, seed=seed)
            sup, _ = probe.estimate(probe.scores(candidate), n_boot=300, seed=seed)
            rows["supervised"].append((sup.value, sup.lower, sup.upper))
            linear = _linear_probe_pacc(reference, labelled, candidate, seed)
            rows["linear-probe (before)"].append((linear, np.nan, np.nan))
            for variant in ("density only", "hgb"):
                rows[variant].append((_variant_pacc(reference, labelled, candidate, seed, variant), np.nan, np.nan))
            unsup = bbe(*crossfit_scores(reference, candidate, seed))
            rows["bbe density"].append((unsup.value, unsup.lower, np.nan))
            for name, score in (("bbe density+embedding", "density+embedding"), ("bbe linear (before)", "linear")):
                other = bbe(*crossfit_scores(reference, candidate, seed, score=score))
                rows[name].append((other.value, other.lower, np.nan))
            flags.append(generator_shift(sup, unsup) is not None)
        for variant, r in rows.items():
            r = np.array(r, dtype=float)
            out = {"scenario": scenario, "variant": variant, "truth": truth, "seeds": args.seeds,
                   "mean_value": round(float(np.nanmean(r[:, 0])), 3),
                   "mean_abs_error": round(float(np.nanmean(np.abs(r[:, 0] - truth))), 3)}
            if variant == "supervised":  # the kept detector: logistic on [embedding, density features]
                out["coverage"] = round(float(np.mean((r[:, 1] <= truth) & (truth <= r[:, 2]))), 2)
                out["generator_shift_flagged"] = round(float(np.mean(flags)), 2)
            if variant.startswith("bbe"):
                out["mean_lower"] = round(float(np.mean(r[:, 1])), 3)
                out["lower_valid"] = round(float(np.mean(r[:, 1] <= truth)), 2)
            print(json.dumps(out), flush=True)


def _linear_probe_pacc(real, synthetic, candidate, seed) -> float:
    """The detector before issue 10: a logistic probe on the embedding alone, PACC-adjusted."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_predict

    from detectors.linear import Logistic
    from detectors.probe import pacc

    x = np.vstack([real, synthetic]).astype(np.float64)
    y = np.r_[np.zeros(len(real)), np.ones(len(synthetic))]
    mean, scale = x.mean(axis=0), x.std(axis=0)
    oof = cross_val_predict(LogisticRegression(max_iter=3000), (x - mean) / scale, y, cv=5, method="predict_proba")[:, 1]
    return pacc(Logistic.fit(x, y).predict(candidate), oof[y == 0], oof[y == 1])


def _variant_pacc(real, synthetic, candidate, seed, variant: str) -> float:
    """The kept detector's cross-fitting (features against the banks outside each fold, 5 fold
    models, PACC on their out-of-fold scores) with another classifier or feature set:
    "density only" (logistic, no embedding), "hgb" (gradient boosting on the top 32 principal
    axes of the embedding and the density features)."""
    from sklearn.decomposition import PCA
    from sklearn.ensemble import HistGradientBoostingClassifier

    from detectors.features import DensityBank, describe
    from detectors.linear import Logistic
    from detectors.probe import N_FOLDS, pacc

    rng = np.random.default_rng(seed)
    folds = [rng.permutation(len(a)) % N_FOLDS for a in (real, synthetic)]
    banks = [DensityBank(real, 5, folds[0]), DensityBank(synthetic, 5, folds[1])]
    y = np.r_[np.zeros(len(real)), np.ones(len(synthetic))]
    fold_of = np.r_[folds[0], folds[1]]
    found = [bank.neighbours(candidate) for bank in banks]
    pca = PCA(32, random_state=seed).fit(np.vstack([real, synthetic])) if variant == "hgb" else None
    oof, cand = np.empty(len(y)), np.zeros(len(candidate))

    def inputs(items, dens):
        return np.hstack([pca.transform(items), dens]) if pca is not None else dens

    for f in range(N_FOLDS):
        dens = np.vstack([describe(real, banks, f, 0, embedding=False), describe(synthetic, banks, f, 1, embedding=False)])
        x = inputs(np.vstack([real, synthetic]), dens)
        x_cand = inputs(candidate, describe(candidate, banks, f, found=found, embedding=False))
        train = fold_of != f
        if variant == "hgb":
            model = HistGradientBoostingClassifier(random_state=seed).fit(x[train], y[train])
            oof[~train], cand_f = model.predict_proba(x[~train])[:, 1], model.predict_proba(x_cand)[:, 1]
        else:
            model = Logistic.fit(x[train], y[train])
            oof[~train], cand_f = model.predict(x[~train]), model.predict(x_cand)
        cand += cand_f / N_FOLDS
    return pacc(cand, oof[y == 0], oof[y == 1])


def logo(args) -> None:
    """Leave one generator family out on real CLIP (tests/worlds.py `generator_families`): each
    detector variant trained on the other two families (400 labelled items each) against 600
    reference photos, tested on a candidate of 400 items, 30% from the held-out family ("held-out")
    or, trained on all three, from each family ("seen"). Per variant x family: mean error and
    |error| of the supervised share, 95% interval coverage, how often the default fail gate
    (synthetic_fraction_lower > 0.1, by `gate_reading`) fails, the held-out AUC; and the time to
    train on 3 generators x `--train` items each."""
    from conftest import _real_clip_dir
    from detectors.fraction import estimate_fraction, gate_reading
    from detectors.probe import SupervisedProbe, _auc
    from worlds import generator_families, mix

    food = np.load(_real_clip_dir() / "food101_10class_clip_vitb32.npz", allow_pickle=False)
    pool = np.vstack([food["X_train"], food["X_test"]]).astype(np.float32)
    rows: dict = {}
    for seed in range(args.seeds):
        rng = np.random.default_rng(seed)
        order = rng.permutation(len(pool))
        families = generator_families(pool[order[:1500]], seed)
        reference, real = pool[order[1500:2100]], pool[order[2100:]]
        samples = {name: gen.sample(800, lam) for name, (gen, lam) in families.items()}
        for variant, embedding in (("embedding+density", True), ("density only", False)):
            for held in [*families, None]:
                probe = SupervisedProbe.fit(reference, np.vstack([v[:400] for n, v in samples.items() if n != held]),
                                            seed=seed, embedding=embedding)
                for target in families if held is None else [held]:
                    candidate, _ = mix(real, samples[target][400:], 0.3, 400, rng)
                    report = estimate_fraction(reference, candidate, probe, seed=seed)
                    e, reading = report.estimates["supervised"], gate_reading(report, True)
                    auc = _auc(probe.scores(real[:200]), probe.scores(samples[target][400:600]))
                    rows.setdefault((variant, "seen" if held is None else "held-out", target), []).append(
                        (e.value - 0.3, e.lower <= 0.3 <= e.upper, not reading.lower <= 0.1, auc))
    for (variant, case, family), values in sorted(rows.items()):
        v = np.array(values, dtype=float)
        print(json.dumps({"variant": variant, "case": case, "family": family, "seeds": len(v),
                          "mean_error": round(v[:, 0].mean(), 3), "mean_abs_error": round(np.abs(v[:, 0]).mean(), 3),
                          "coverage": round(v[:, 1].mean(), 2), "fail_gate_fails": round(v[:, 2].mean(), 2),
                          "auc": round(v[:, 3].mean(), 3)}), flush=True)
    # Training time: 3 generators x args.train items, leave-one-generator-out included.
    gen_pool = generator_families(pool[:1500], 0)
    synthetic = {name: gen.sample(args.train, lam) for name, (gen, lam) in gen_pool.items()}
    real_train = sampler(0)(args.train)
    started = time.perf_counter()
    SupervisedProbe.fit_generators(real_train, synthetic, seed=0)
    print(json.dumps({"train_3_generators_seconds": round(time.perf_counter() - started, 1), "items_each": args.train,
                      "cpu": _cpu()}), flush=True)


def _cpu() -> str:
    try:
        return next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        return "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference", type=int, default=20000)
    parser.add_argument("--candidate", type=int, default=100000)
    parser.add_argument("--train", type=int, default=5000, help="labelled real and synthetic items each")
    parser.add_argument("--share", type=float, default=0.3)
    parser.add_argument("--table", action="store_true", help="accuracy table on real CLIP worlds instead of speed")
    parser.add_argument("--logo", action="store_true", help="leave-one-generator-out table and training time")
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args()
    logo(args) if args.logo else table(args) if args.table else speed(args)


if __name__ == "__main__":
    main()
