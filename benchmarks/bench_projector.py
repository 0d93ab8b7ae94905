"""Projector benchmark (issue 5).

    python benchmarks/bench_projector.py [--generations 50] [--runs 200] [--n 10000] [--dim 64]

Reference: the real CLIP Food-101 embeddings (2,000 x 512, ../shared/data/real-clip), projected
to `dim` principal components. Times the Monte Carlo forecast of the fresh loop with the Gaussian
stand-in (every generation scored: precision, recall, coverage, tail coverage on 128 samples per
run against 1,000 reference points, FD, clusters alive), without the search for the minimum fresh
fraction, and the closed-form path (moment recursion, fixed point, effective sample size,
admissible amount). Prints JSON lines.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_metrics import REAL_CLIP  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--generations", type=int, default=50)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=64)
    args = parser.parse_args()

    from audit import projector

    reference = np.load(REAL_CLIP, allow_pickle=False)["X_train"].astype(np.float32)
    start = time.perf_counter()
    space = projector.ReferenceSpace.fit(reference, args.dim)
    print(json.dumps({"cpus": os.cpu_count(), "step": "fit_reference_space", "seconds": round(time.perf_counter() - start, 2),
                      "dim": space.dim}), flush=True)

    start = time.perf_counter()
    forecast = projector.project(None, loop="fresh", model="gaussian", real_fraction=0.1, n=args.n, lam=0.8,
                                 generations=args.generations, runs=args.runs, space=space, search_fresh=False)
    seconds = time.perf_counter() - start
    recall = forecast.metrics["recall"]["median"]
    print(json.dumps({"step": "monte_carlo", "generations": args.generations, "runs": args.runs, "n": args.n,
                      "seconds": round(seconds, 2), "recall_median_first_last": [round(recall[0], 3), round(recall[-1], 3)],
                      "mad_horizon": forecast.summary["mad_horizon"]}), flush=True)

    start = time.perf_counter()
    c, v = projector.gaussian_moments("fresh", args.generations, args.n, 0.8, 0.1)
    fixed = projector.fresh_fixed_point(0.1, 0.8)
    n_e = projector.effective_sample_size(args.n // 10, args.n - args.n // 10, 0.8)
    admissible = projector.max_admissible_synthetic(args.n // 10, 0.8)
    closed = time.perf_counter() - start
    print(json.dumps({"step": "closed_form", "milliseconds": round(closed * 1e3, 3), "c_last": round(float(c[-1]), 4),
                      "fixed_point": round(fixed, 4), "effective_sample_size": round(n_e, 1),
                      "max_admissible_synthetic": admissible}), flush=True)


if __name__ == "__main__":
    main()
