"""The test suite under several BLAS kernels and thread counts on this one machine.

OpenBLAS picks its kernel from the CPU (Haswell on AMD EPYC, SkylakeX on recent Xeons);
OPENBLAS_CORETYPE forces another, so one machine can stand for the others: a tolerance that holds
only for one kernel's rounding shows up here before it turns a CI run red elsewhere. Each
configuration runs the default suite in a fresh process and prints one JSON line: the kernel
numpy's OpenBLAS really ran (threadpoolctl), the threads, the counts and the wall time.

    python benchmarks/suite_under_blas.py                       # Haswell/2, Zen/1, Prescott/2, the CPU's own/1
    python benchmarks/suite_under_blas.py --config Haswell:1 --pytest-args "tests/test_metrics.py"

Not part of CI (a whole suite per configuration); the benchmarks README keeps the last results.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIGS = ("Haswell:2", "Zen:1", "Prescott:2", "native:1")
PROBE = ("import json, numpy, threadpoolctl; print(json.dumps([(i['prefix'], i.get('architecture'), i['num_threads']) "
         "for i in threadpoolctl.threadpool_info() if i['user_api'] == 'blas']))")


def environment(coretype: str, threads: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    if coretype != "native":
        env["OPENBLAS_CORETYPE"] = coretype
    elif "OPENBLAS_CORETYPE" in os.environ:  # the machine's own setting, kept as it is
        env["OPENBLAS_CORETYPE"] = os.environ["OPENBLAS_CORETYPE"]
        if "OPENBLAS_L2_SIZE" in os.environ:
            env["OPENBLAS_L2_SIZE"] = os.environ["OPENBLAS_L2_SIZE"]
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[name] = str(threads)
    return env


def run(config: str, pytest_args: list[str]) -> dict:
    coretype, _, threads = config.partition(":")
    env = environment(coretype, int(threads or 2))
    kernels = json.loads(subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True,
                                        check=True).stdout)
    started = time.time()
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *pytest_args], cwd=ROOT,
                          env=env, capture_output=True, text=True)
    tail = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr[-300:]
    counts = {word: int(n) for n, word in re.findall(r"(\d+) (passed|failed|skipped|error)", tail)}
    failed = [line.split(" ", 1)[1] for line in proc.stdout.splitlines() if line.startswith(("FAILED ", "ERROR "))]
    return {"config": config, "blas": kernels, "returncode": proc.returncode, **counts, "failed_tests": failed,
            "seconds": round(time.time() - started, 1), "summary": tail}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", action="append", help="CORETYPE:THREADS (CORETYPE 'native' = the CPU's own)")
    parser.add_argument("--pytest-args", default="", help="what to run instead of the default suite")
    args = parser.parse_args()
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "unknown CPU")
    print(json.dumps({"cpu": cpu, "cores": os.cpu_count()}), flush=True)
    for config in args.config or DEFAULT_CONFIGS:
        print(json.dumps(run(config, args.pytest_args.split())), flush=True)


if __name__ == "__main__":
    main()
