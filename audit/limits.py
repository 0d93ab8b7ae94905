"""Limits checked at the edge (flags, policy files, the Python API), so a typo cannot start a
run that would never end or allocate terabytes. Each is far beyond any sensible use."""

from __future__ import annotations

import math

LIMITS = {
    "generations": 1_000,
    "runs": 10_000,
    "dim": 2_048,
    "eval_size": 100_000,
    "n": 10_000_000,
    "k": 1_000,
    "batch_size": 4_096,
    "workers": 64,
    "clusters": 10_000,
    "top": 100_000,
}
MAX_RUNS_X_GENERATIONS = 200_000


class LimitError(ValueError):
    """A setting beyond its limit (a usage error: exit 2)."""


def check(name: str, value, minimum: float | None = None) -> None:
    """Raise LimitError when `value` is not a finite number within [minimum, LIMITS[name]]."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise LimitError(f"{name} must be a finite number, got {value!r}")
    if value > LIMITS[name]:
        raise LimitError(f"{name} = {value} is over the limit of {LIMITS[name]:,}")
    if minimum is not None and value < minimum:
        raise LimitError(f"{name} = {value} is below {minimum}")


def check_forecast(generations: int, runs: int, dim: int | None = None, eval_size: int | None = None,
                   n: int | None = None) -> None:
    check("generations", generations, 1)
    check("runs", runs, 1)
    check("dim", dim, 1)
    check("eval_size", eval_size, 1)
    check("n", n, 2)
    if generations * runs > MAX_RUNS_X_GENERATIONS:
        raise LimitError(f"runs x generations = {runs * generations:,} is over the limit of "
                         f"{MAX_RUNS_X_GENERATIONS:,}")
