"""`madaudit scan` overhead beyond embedding (issue 6): metrics + detectors + forecast + reports.

    python benchmarks/bench_scan.py [--n 10000]

Inputs are embeddings (.npy), so nothing is embedded and the time is all overhead: N = M
points in d = 512, the reference and the candidate's real part drawn from a Gaussian with the
covariance of the real CLIP Food-101 embeddings (as in bench_metrics.py), the candidate 30%
"synthetic" (the same Gaussian with its spread scaled by 0.7, the MAD signature), L2-normalised.
Runs the CLI in-process (`madaudit scan A.npy B.npy --out DIR`, default policy) and prints JSON
lines: total seconds, peak RSS, the verdict, and the size of each report. Asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_metrics import REAL_CLIP, clip_gaussian  # noqa: E402


def make_sets(n: int, d: int = 512, synthetic_share: float = 0.3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    mu, root = clip_gaussian(d)
    n_syn = int(synthetic_share * n)
    x = mu + rng.standard_normal((n, d)) @ root.T
    y = mu + rng.standard_normal((n, d)) @ root.T
    y[:n_syn] = mu + 0.7 * rng.standard_normal((n_syn, d)) @ root.T
    for a in (x, y):
        a /= np.linalg.norm(a, axis=1, keepdims=True)
    return x.astype(np.float32), y.astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=10_000)
    args = parser.parse_args()
    from click.testing import CliRunner

    from audit.cli import main as cli

    print(json.dumps({"machine": platform.machine(), "cpus": __import__("os").cpu_count(), "n": args.n, "d": 512,
                      "data": "Gaussian with real CLIP covariance" if REAL_CLIP.is_file() else "isotropic Gaussian"}))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        x, y = make_sets(args.n)
        np.save(tmp / "reference.npy", x)
        np.save(tmp / "candidate.npy", y)
        start = time.perf_counter()
        result = CliRunner().invoke(cli, ["scan", str(tmp / "reference.npy"), str(tmp / "candidate.npy"),
                                          "--out", str(tmp / "report"), "--fail-on", "never"], catch_exceptions=False)
        seconds = time.perf_counter() - start
        report = json.loads((tmp / "report" / "report.json").read_text())
        print(json.dumps({"seconds": round(seconds, 2), "exit_code": result.exit_code, "verdict": report["verdict"],
                          "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                          "synthetic_fraction": report["values"]["synthetic_fraction"],
                          "synthetic_fraction_lower": report["values"]["synthetic_fraction_lower"],
                          "report_bytes": {p.name: p.stat().st_size for p in sorted((tmp / "report").iterdir())}}))


if __name__ == "__main__":
    main()
