"""Synthetic-share benchmark (issue 4).

    python benchmarks/bench_detectors.py [--reference 20000] [--candidate 100000]

Data: d = 512, real items from a Gaussian with the covariance of the real CLIP Food-101
embeddings, synthetic items from the same Gaussian with spread x 0.7 (sampling bias) and a small
fixed offset (a generator fingerprint), all L2-normalised; the candidate is 30% synthetic.
Times `estimate_fraction` with a detector trained beforehand (supervised PACC + EMQ + bootstrap,
unsupervised BBE with its cross-fitted classifier, out-of-manifold share): "both estimators
together". The detector's own training is timed separately. Prints JSON lines.
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference", type=int, default=20000)
    parser.add_argument("--candidate", type=int, default=100000)
    parser.add_argument("--train", type=int, default=5000, help="labelled real and synthetic items each")
    parser.add_argument("--share", type=float, default=0.3)
    args = parser.parse_args()

    from detectors.fraction import estimate_fraction
    from detectors.probe import SupervisedProbe

    draw = sampler(0)
    n_fake = int(args.share * args.candidate)
    reference = draw(args.reference)
    candidate = np.vstack([draw(args.candidate - n_fake), draw(n_fake, synthetic=True)])
    print(json.dumps({"cpus": os.cpu_count(), "d": 512, "reference": args.reference, "candidate": args.candidate,
                      "true_share": args.share}), flush=True)

    start = time.perf_counter()
    probe = SupervisedProbe.fit(draw(args.train), draw(args.train, synthetic=True))
    print(json.dumps({"step": "train_detector", "items": 2 * args.train,
                      "seconds": round(time.perf_counter() - start, 2)}), flush=True)

    start = time.perf_counter()
    report = estimate_fraction(reference, candidate, probe)
    seconds = time.perf_counter() - start
    print(json.dumps({"step": "estimate_fraction", "seconds": round(seconds, 2),
                      "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                      "estimates": {k: {"value": round(e.value, 4), "lower": e.lower, "upper": e.upper}
                                    for k, e in report.estimates.items()},
                      "warnings": report.warnings}), flush=True)


if __name__ == "__main__":
    main()
