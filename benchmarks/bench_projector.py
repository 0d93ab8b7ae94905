"""Projector benchmark (issue 11).

    python benchmarks/bench_projector.py [--generations 50] [--runs 200] [--n 10000] [--dim 64] [--model gaussian]

Reference: the real CLIP Food-101 embeddings (2,000 x 512, ../shared/data/real-clip), shuffled,
projected to `dim` principal components (1,000 points fit the stand-in, 1,000 score it). Times:
1. the Monte Carlo forecast of the fresh loop (p = 0.1, lambda = 0.8) with its real-only baseline
   (every generation of both scored: precision, recall, coverage, tail coverage on 200 samples a
   run against the 1,000 held-out points, both FDs, clusters alive), without the fresh-fraction
   search;
2. MAD eq. 4 for one setting from scratch: the square-root deficit grid for this spectrum, n_e
   and n_s*.
Prints JSON lines.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_metrics import REAL_CLIP  # noqa: E402


def cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--generations", type=int, default=50)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--model", default="gaussian")
    parser.add_argument("--eval-size", type=int, default=200)
    args = parser.parse_args()

    from audit import projector

    reference = np.load(REAL_CLIP, allow_pickle=False)["X_train"].astype(np.float32)
    reference = reference[np.random.default_rng(0).permutation(len(reference))]  # the file is sorted by class
    start = time.perf_counter()
    space = projector.ReferenceSpace.fit(reference, args.dim)
    print(json.dumps({"cpu": cpu_model(), "cpus": os.cpu_count(), "step": "fit_reference_space",
                      "seconds": round(time.perf_counter() - start, 2), "dim": space.dim,
                      "fit_points": len(space.fit_points), "eval_points": len(space.eval_points)}), flush=True)

    start = time.perf_counter()
    forecast = projector.project(None, loop="fresh", model=args.model, real_fraction=0.1, n=args.n, lam=0.8,
                                 generations=args.generations, runs=args.runs, space=space, search_fresh=False,
                                 eval_size=args.eval_size)
    seconds = time.perf_counter() - start
    recall = forecast.relative["recall"]["median"]
    print(json.dumps({"step": "monte_carlo_with_baseline", "model": forecast.model, "generations": args.generations,
                      "runs": args.runs, "n": args.n, "eval_size": args.eval_size, "seconds": round(seconds, 2),
                      "relative_recall_first_last": [round(recall[0], 3), round(recall[-1], 3)],
                      "mad_horizon": forecast.summary["mad_horizon"]["median"]}), flush=True)

    start = time.perf_counter()
    frechet = projector.FrechetForecast(space.spectrum)
    n_real = args.n // 10
    n_e = frechet.effective_sample_size(n_real, args.n - n_real, 0.8)
    n_star = frechet.max_admissible_synthetic(n_real, 0.8)
    closed = time.perf_counter() - start
    print(json.dumps({"step": "effective_sample_size", "seconds": round(closed, 3), "n_real": n_real,
                      "n_synthetic": args.n - n_real, "lam": 0.8, "n_e": round(n_e, 1), "n_s_star": n_star}),
          flush=True)


if __name__ == "__main__":
    main()
