"""Metrics engine benchmark (issue 3).

    pip install "prdc==0.2"           # only for the comparison; not a dependency of madaudit
    python benchmarks/bench_metrics.py [--sizes 10000,50000] [--prdc-size 10000] [--compare] [--breakdown]
                                       [--isotropic]

Data: N = M points in d = 512 drawn from a Gaussian with the covariance of the real CLIP Food-101
embeddings (../shared/data/real-clip; isotropic if absent), the candidate's spread scaled by
0.9, all L2-normalised like CLIP vectors: continuous, so `<` (prdc) and `<=` (madaudit) agree.

Each measurement runs in its own process so its peak memory (max RSS) is its own:
- madaudit exact precision/recall/density/coverage (`audit.metrics.prdc`);
- prdc 0.2 `compute_prdc` on the same data (values compared). prdc's distances come from
  scikit-learn, which returns them in float32 for float32 input, so a pair within float32
  rounding of a ball's boundary can flip; prdc is therefore also run on float64 copies, where its
  values must equal madaudit's exact ones;
- the pure matrix products the exact search needs (X X^T, Y Y^T, X Y^T in float32, blocked
  like the engine), timed in the same process right after madaudit's run.
Prints JSON lines; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REAL_CLIP = Path(__file__).resolve().parents[2] / "shared" / "data" / "real-clip" / "food101_10class_clip_vitb32.npz"


def clip_gaussian(d: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance square root of the real CLIP Food-101 embeddings (isotropic if absent)."""
    if not REAL_CLIP.is_file():
        return np.zeros(d), np.eye(d) / np.sqrt(d)
    real = np.load(REAL_CLIP, allow_pickle=False)["X_train"].astype(np.float64)
    w, v = np.linalg.eigh(np.cov(real, rowvar=False))
    return real.mean(axis=0), v * np.sqrt(np.clip(w, 0, None))


def make_data(n: int, d: int = 512, seed: int = 0, isotropic: bool = False) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    mu, root = (np.zeros(d), np.eye(d) / np.sqrt(d)) if isotropic else clip_gaussian(d)
    x = mu + rng.standard_normal((n, d)) @ root.T
    y = mu + 0.9 * rng.standard_normal((n, d)) @ root.T  # same centre, a little less spread
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    y /= np.linalg.norm(y, axis=1, keepdims=True)
    return x.astype(np.float32), y.astype(np.float32)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def matrix_products(x: np.ndarray, y: np.ndarray, rows: int = 2048) -> float:
    """Seconds for X X^T, Y Y^T and X Y^T in float32 (the floor of any exact search): large row
    blocks, all BLAS threads, nothing done with the results."""
    start = time.perf_counter()
    for a, b in ((x, x), (y, y), (y, x)):
        bt = np.ascontiguousarray(b.T)
        for s in range(0, len(a), rows):
            a[s : s + rows] @ bt
    return time.perf_counter() - start


def breakdown(x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    import sklearn.cluster  # noqa: F401  (import time is not the metric's)

    from audit import metrics
    from audit.clusters import _CACHE
    from audit.kid import draw_subsets
    from audit.pairwise import pairwise_summary

    steps = {
        "matrix_products": lambda: matrix_products(x, y),
        "pass_bare": lambda: pairwise_summary(x, y, 5),
        "pass_with_cmmd": lambda: pairwise_summary(x, y, 5, rbf_gamma=0.005),
        "pass_with_cmmd_and_kid": lambda: pairwise_summary(x, y, 5, rbf_gamma=0.005,
                                                           kid_subsets=draw_subsets(len(x), len(y))),
        "kid_subset_by_subset": lambda: metrics.kid(x, y),
        "kmeans_cluster_tail_mass": lambda: metrics.cluster_tail_mass(x, y),
        "fd": lambda: metrics.frechet_distance(x, y),
        "vendi": lambda: (metrics.vendi_score(x), metrics.vendi_score(y)),
        "compare": lambda: (_CACHE.clear(), metrics.compare(x, y)),
    }
    out = {}
    for name, step in steps.items():
        start = time.perf_counter()
        step()
        out[name] = round(time.perf_counter() - start, 3)
    return out


def worker(method: str, n: int, isotropic: bool = False) -> None:
    x, y = make_data(n, isotropic=isotropic)
    if method in ("madaudit", "compare"):  # imports are not the metrics' time
        import sklearn.cluster  # noqa: F401

        import audit.metrics  # noqa: F401
    base = peak_rss_mib()
    start = time.perf_counter()
    if method == "madaudit":
        from audit.metrics import prdc

        values = prdc(x, y, 5)
    elif method == "compare":  # every metric of the report
        from audit.metrics import compare

        values = {name: m.value for name, m in compare(x, y, 5).metrics.items() if name in ("precision", "fd", "cmmd")}
    elif method == "breakdown":  # where compare's time goes, step by step, in this process
        values = breakdown(x, y)
    else:
        from prdc import compute_prdc

        if method == "prdc-float64":  # sklearn returns float32 distances for float32 input
            x, y = x.astype(np.float64), y.astype(np.float64)
        values = {k: float(v) for k, v in compute_prdc(x, y, nearest_k=5).items()}
    seconds = time.perf_counter() - start
    out = {"method": method, "n": n, "seconds": seconds, "peak_rss_mib": peak_rss_mib(),
           "peak_above_data_mib": peak_rss_mib() - base, "values": values}
    if method in ("madaudit", "compare"):
        out["matrix_products_seconds"] = matrix_products(x, y)
    print(json.dumps(out))


def run_worker(method: str, n: int, isotropic: bool = False) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--worker", method, str(n)] + (["--isotropic"] if isotropic else []),
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,50000")
    parser.add_argument("--prdc-size", type=int, default=10000, help="size at which prdc 0.2 runs (0 to skip)")
    parser.add_argument("--compare", action="store_true", help="also time `compare` (every metric)")
    parser.add_argument("--isotropic", action="store_true", help="isotropic Gaussian data instead of CLIP-like")
    parser.add_argument("--breakdown", action="store_true", help="also time compare's steps one by one (in one process)")
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker[0], int(args.worker[1]), args.isotropic)
        return

    iso = args.isotropic or not REAL_CLIP.is_file()
    print(json.dumps({"machine": platform.machine(), "cpu": _cpu_model(), "cpus": os.cpu_count(), "d": 512, "k": 5,
                      "data": "isotropic Gaussian" if iso else "Gaussian with real CLIP covariance"}))
    for n in [int(s) for s in args.sizes.split(",") if s]:
        ours = run_worker("madaudit", n, iso)
        ratio = ours["seconds"] / ours["matrix_products_seconds"]
        print(json.dumps({**ours, "ratio_to_matrix_products": round(ratio, 3)}), flush=True)
        if args.compare:
            every = run_worker("compare", n, iso)
            ratio = every["seconds"] / every["matrix_products_seconds"]
            print(json.dumps({**every, "ratio_to_matrix_products": round(ratio, 3)}), flush=True)
        if args.breakdown:
            print(json.dumps(run_worker("breakdown", n, iso)), flush=True)
        if n == args.prdc_size:
            try:
                theirs = run_worker("prdc", n, iso)
            except RuntimeError as exc:
                print(json.dumps({"method": "prdc", "n": n, "error": str(exc).strip().splitlines()[-1]}))
                continue
            print(json.dumps(theirs), flush=True)
            theirs64 = run_worker("prdc-float64", n, iso)
            print(json.dumps(theirs64), flush=True)
            print(json.dumps({
                "n": n,
                "values_equal_prdc_on_float64_input": all(
                    abs(ours["values"][k] - theirs64["values"][k]) <= 1e-12 for k in ours["values"]),
            }), flush=True)
            print(json.dumps({
                "n": n,
                "speedup": round(theirs["seconds"] / ours["seconds"], 2),
                "memory_ratio": round(ours["peak_above_data_mib"] / theirs["peak_above_data_mib"], 3),
                "same_values": all(abs(ours["values"][k] - theirs["values"][k]) <= 1e-12 for k in ours["values"]),
                "max_abs_difference": max(abs(ours["values"][k] - theirs["values"][k]) for k in ours["values"]),
            }), flush=True)


if __name__ == "__main__":
    main()
