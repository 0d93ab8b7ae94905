"""The forecast's band widened by its own error against real self-consuming loops.

The stand-in's 10-90% band carries its Monte Carlo and the measured inputs' intervals, not how
differently a real generator behaves: against real loops (benchmarks/real_loops.py) the real
median lay inside it at under half of the generations. The calibrated band adds, per metric and
generation, margins learned from those loops: `below[t]` is the `quantile` (0.9) of how far the
real median fell under the band's 10% curve (0 where it did not), `above[t]` the same over the
90% curve, so that on the loops it was learned from the real median falls below the widened band
in at most 10% of the settings and above it in at most 10% at each generation. A margin is never smaller than an earlier generation's (a
forecast's error does not shrink with the horizon; the per-generation quantiles of 20 settings
jump about), and generations past the last validated one keep its margins. The margins are the method's error on two model
families; another generator may stray further (the trust sentence quotes the coverage measured
with margins learned on the other family alone).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

import numpy as np

CALIBRATED_METRICS = ("recall", "tail_coverage")
MARGIN_QUANTILE = 0.9
VALIDATION_FILE = Path(__file__).parent / "real_loops.json"


def band_margins(rows: Iterable[dict[str, Any]], quantile: float = MARGIN_QUANTILE) -> dict[str, dict[str, list[float]]]:
    """Per metric: the margins under the 10% curve and over the 90% curve, one per generation.
    `rows`: one per validated setting, with `{metric}_real` (the real loops' median curve) and
    `{metric}_p10` / `{metric}_p90` (the forecast's band), each a list over generations."""
    rows = [r for r in rows if all(f"{m}_p10" in r for m in CALIBRATED_METRICS)]
    if not rows:
        raise ValueError("no validated settings with a forecast band to learn margins from")
    out = {}
    for m in CALIBRATED_METRICS:
        real, lo, hi = (np.array([r[f"{m}_{k}"] for r in rows], dtype=np.float64) for k in ("real", "p10", "p90"))
        below = np.nan_to_num(np.clip(lo - real, 0.0, None))
        above = np.nan_to_num(np.clip(real - hi, 0.0, None))
        # rounded up: a margin rounded down would let one more setting out
        out[m] = {side: (np.ceil(np.maximum.accumulate(np.quantile(excess, quantile, axis=0)) * 1e4) / 1e4).tolist()
                  for side, excess in (("below", below), ("above", above))}
    return out


def widen(band: dict[str, list[float]], margins: dict[str, list[float]]) -> dict[str, list[float]]:
    """The band's 10% and 90% curves moved out by the margins (the last margin for later
    generations); the lower curve stays >= 0, as every metric here is."""
    lo, hi = np.asarray(band["p10"], dtype=np.float64), np.asarray(band["p90"], dtype=np.float64)
    below, above = (_per_generation(margins[k], len(lo)) for k in ("below", "above"))
    return {"p10": np.clip(lo - below, 0.0, None).tolist(), "p90": (hi + above).tolist()}


def inside_share(rows: Iterable[dict[str, Any]], margins: dict[str, dict[str, list[float]]] | None = None) -> float:
    """Share of generations >= 1 (over rows and calibrated metrics) whose real median lies inside
    the band, widened by `margins` when given."""
    inside = []
    for r in rows:
        for m in CALIBRATED_METRICS:
            band = {"p10": r[f"{m}_p10"], "p90": r[f"{m}_p90"]}
            if margins is not None:
                band = widen(band, margins[m])
            real, lo, hi = (np.asarray(v, dtype=np.float64)[1:] for v in (r[f"{m}_real"], band["p10"], band["p90"]))
            inside.extend(((real >= lo - 1e-12) & (real <= hi + 1e-12)).tolist())
    return float(np.mean(inside)) if inside else float("nan")


def held_out_inside_share(rows: list[dict[str, Any]], group: str = "family") -> float:
    """Coverage of the widened band on each group's rows with margins learned on the other
    groups alone (leave one family out): what a generator unlike those validated may expect."""
    groups = sorted({r[group] for r in rows})
    if len(groups) < 2:
        return float("nan")
    inside, count = 0.0, 0
    for g in groups:
        held = [r for r in rows if r[group] == g]
        margins = band_margins([r for r in rows if r[group] != g])
        n = sum(len(r[f"{m}_real"]) - 1 for r in held for m in CALIBRATED_METRICS)
        inside += inside_share(held, margins) * n
        count += n
    return inside / count


def load_margins(path: Path = VALIDATION_FILE) -> dict[str, dict[str, list[float]]] | None:
    """The margins shipped with the validation summary, or None when it has none."""
    try:
        margins = json.loads(path.read_text())["band_margins"]
        return {m: {k: [float(v) for v in margins[m][k]] for k in ("below", "above")} for m in CALIBRATED_METRICS}
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _per_generation(values: list[float], length: int) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    if len(values) >= length:
        return values[:length]
    return np.concatenate([values, np.full(length - len(values), values[-1] if len(values) else 0.0)])


def calibrate(relative: dict[str, dict[str, list[float]]], threshold: float,
              margins: dict[str, dict[str, list[float]]] | None) -> dict[str, Any] | None:
    """Add `calibrated_p10` / `calibrated_p90` to the relative bands of the calibrated metrics (in
    place) and return the horizon read on those curves: the first generation >= 1 where either
    metric's widened 10% curve (the early end) or 90% curve (the late end) falls below
    `threshold`; None when no margins are shipped."""
    if margins is None:
        return None
    last = len(relative[CALIBRATED_METRICS[0]]["median"]) - 1
    below = {"p10": np.zeros(last + 1, dtype=bool), "p90": np.zeros(last + 1, dtype=bool)}
    for m in CALIBRATED_METRICS:
        wide = widen(relative[m], margins[m])
        relative[m]["calibrated_p10"], relative[m]["calibrated_p90"] = wide["p10"], wide["p90"]
        for q in below:
            below[q] |= np.nan_to_num(np.asarray(wide[q]), nan=0.0) < threshold
    horizon = {}
    for q, b in below.items():
        b[0] = False
        horizon[q] = int(np.argmax(b)) if b.any() else f">{last}"
    return {**horizon, "note": "read on the 10-90% band widened by the forecast's error against real loops "
                               "(audit/projector/calibration.py)"}
