"""The forecast: a loop run against the same stand-in's real-only baseline, the MAD horizon, the
smallest fresh fraction that holds, and MAD's effective sample size for the measured mixture.

Every metric is read relative to the real-only loop of the same size (p = 1, lambda = 1, same
runs and seeds): the stand-in's own misfit and the scoring sample size cancel, generation 0
reads 1.0, and the MAD horizon is the first generation whose relative recall or tail coverage
falls below `threshold` (default 0.9 of the baseline). Before forecasting, each stand-in is
checked against a held-out real sample of the same size (precision and recall of generation 0);
the default (`model="auto"`) takes the first that passes and says so when none does.

The 10-90% bands are over Monte Carlo runs (and the inputs' intervals); relative recall and tail
coverage also carry `calibrated_p10` / `calibrated_p90`, that band widened by the method's own
error against real self-consuming loops (`calibration`), and the horizon read on those curves.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from audit.index import as_float32_matrix
from audit.limits import check_forecast
from audit.projector.calibration import calibrate, load_margins
from audit.projector.closed_forms import FrechetForecast
from audit.projector.loops import LOOPS, MAX_SEPARATION, simulate
from audit.projector.standins import MODELS, ReferenceSpace, make_stand_in

AUTO_ORDER = ("gmm", "gaussian", "categorical")  # richest parametric model first
CHECK_TOLERANCE = 0.1  # |stand-in - held-out real| allowed on precision and on recall at generation 0
HORIZON_METRICS = ("recall", "tail_coverage")


@dataclass
class Forecast:
    """Per-generation median and 10-90% band of every metric, absolute and relative to the
    real-only baseline, and the summary numbers. `available` is False when no stand-in
    reproduces the reference (then only `checks` and `summary["reason"]` are filled)."""

    loop: str
    model: str
    params: dict[str, Any]
    generations: list[int]
    metrics: dict[str, dict[str, list[float]]]  # name -> {"median", "p10", "p90"}
    relative: dict[str, dict[str, list[float]]]
    baseline: dict[str, list[float]]  # name -> real-only median per generation
    summary: dict[str, Any] = field(default_factory=dict)
    checks: list[dict[str, Any]] = field(default_factory=list)
    available: bool = True
    runs_values: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    @classmethod
    def unavailable(cls, loop: str, reason: str, params: dict[str, Any] | None = None,
                    checks: list[dict[str, Any]] | None = None) -> Forecast:
        return cls(loop, "none", params or {}, [], {}, {}, {}, {"reason": reason}, checks or [], available=False)

    def to_dict(self) -> dict[str, Any]:
        return {"available": self.available, "loop": self.loop, "model": self.model, "params": self.params,
                "generations": self.generations, "metrics": self.metrics, "relative": self.relative,
                "baseline": self.baseline, "summary": self.summary, "stand_in_checks": self.checks}


def check_stand_in(space: ReferenceSpace, model: str | Any, size: int, seed: int = 0) -> dict[str, Any]:
    """Precision and recall of `size` samples of the stand-in (a name, or one already fitted to
    the fit points) against the eval points, beside those of `size` held-out real fit points: a
    stand-in passes when both differ by at most CHECK_TOLERANCE."""
    rng = np.random.default_rng([seed, 3])
    stand_in = make_stand_in(model, space, seed) if isinstance(model, str) else model
    size = min(size, len(space.fit_points), len(space.eval_points))
    samples = stand_in.sample(rng, stand_in.truth_state(), 1.0, size)
    held_out = space.fit_points[rng.choice(len(space.fit_points), size, replace=False)]
    precision, recall = space.precision_recall(samples, held_out)
    gap = max(abs(precision[0] - precision[1]), abs(recall[0] - recall[1]))
    return {"model": stand_in.name, "size": int(size), "precision": float(precision[0]), "recall": float(recall[0]),
            "held_out_precision": float(precision[1]), "held_out_recall": float(recall[1]),
            "tolerance": CHECK_TOLERANCE, "passes": bool(gap <= CHECK_TOLERANCE)}


def project(reference: np.ndarray | None, loop: str = "fresh", model: str = "auto", real_fraction: float = 0.1,
            n: int = 1000, lam: float = 0.8, generations: int = 20, runs: int = 200, dim: int = 64, seed: int = 0,
            threshold: float = 0.9, eval_size: int = 200, k: int = 5, search_fresh: bool = True,
            space: ReferenceSpace | None = None, real_fraction_interval: tuple[float, float] | None = None,
            lam_interval: tuple[float, float] | None = None,
            synthetic_recall: float | tuple[float, float, float] | None = None,
            synthetic_items: np.ndarray | None = None, separation_reading: dict[str, Any] | None = None,
            inputs_meaning: dict[str, Any] | None = None) -> Forecast:
    """Forecast the metrics over generations for one loop (see the module docstring).

    `real_fraction_interval` / `lam_interval`: 95% intervals of measured inputs; each run then
    draws its own p and lambda (normal, clipped to the interval's domain), widening the bands.
    `eval_size` samples a run are scored against up to `eval_size` held-out reference points.
    `synthetic_recall`: the synthetic part's recall relative to a real sample of the same size
    (`inputs.synthetic_scores`), alone or as (value, low, high) with its 95% interval; lambda is
    then the sampling bias at which the chosen stand-in's output has that relative recall
    (`lam_for_recall`; its interval from the recall's), replacing `lam` and its interval.
    `synthetic_items`: the synthetic part itself (in the reference's space); its separation,
    how far apart it holds the stand-in's components against a real sample of the same size
    (`measure_separation`, 1 = as the reference), is carried by every generation's output, and
    lambda is matched to the recall at that separation. Stand-ins without components (gaussian,
    categorical) cannot carry it; `params["separation"]` then says so. `separation_reading`: a
    separation measured before (a scan's `params["separation"]`), used where the items are not at
    hand (`project --from-report`).
    `inputs_meaning`: what the inputs say about the synthetic part, kept in `params`."""
    if loop not in LOOPS:
        raise ValueError(f"unknown loop '{loop}': use one of {', '.join(LOOPS)}")
    if model != "auto" and model not in MODELS:
        raise ValueError(f"unknown stand-in '{model}': use one of {', '.join(MODELS)} or auto")
    if not 0 < threshold <= 1:
        raise ValueError(f"the horizon threshold is a share of the real-only baseline in (0, 1], got {threshold}")
    check_forecast(generations, runs, dim, eval_size, n)  # a typo must not start a run that never ends
    space = space or ReferenceSpace.fit(as_float32_matrix(reference, "reference"), dim, k=k, seed=seed,
                                        eval_reference=eval_size)
    eval_size = min(eval_size, len(space.eval_points))
    params = {"real_fraction": real_fraction, "real_fraction_interval": real_fraction_interval, "n": n, "lam": lam,
              "lam_interval": lam_interval, "generations": generations, "runs": runs, "dim": space.dim, "seed": seed,
              "eval_size": eval_size, "eval_reference": len(space.eval_points), "k": k, "threshold": threshold}
    stand_ins = {m: make_stand_in(m, space, seed) for m in (AUTO_ORDER if model == "auto" else (model,))}
    checks = [check_stand_in(space, s, eval_size, seed) for s in stand_ins.values()]
    chosen = model if model != "auto" else next((c["model"] for c in checks if c["passes"]), None)
    if chosen is None:
        reason = ("no stand-in reproduces the reference at generation 0 (precision and recall within "
                  f"{CHECK_TOLERANCE} of a held-out real sample of {eval_size}); no forecast")
        return Forecast.unavailable(loop, reason, params, checks)

    stand_in = stand_ins[chosen]
    separation, separation_interval = 1.0, None
    measured = (measure_separation(space, stand_in, synthetic_items, seed) if synthetic_items is not None else
                separation_from_reading(separation_reading, stand_in) if separation_reading is not None else None)
    if measured is not None:
        params["separation"] = measured
        if measured["modelled"]:
            # Only a push apart: a part drawn toward the centre is a shrink, which lambda (matched
            # to the recall) already carries; both compounding read real digit loops' recall loss
            # twice (benchmarks/README.md, real loops).
            separation = max(measured["value"], 1.0)
            separation_interval = tuple(max(v, 1.0) for v in measured["interval"])
            measured["used"] = separation
    if synthetic_recall is not None:
        target, *ends = np.atleast_1d(np.asarray(synthetic_recall, dtype=np.float64)).tolist()
        ceiling = relative_recall(space, stand_in, 1.0, eval_size, seed, separation)
        if ceiling < target:
            # No lambda in (0, 1] gives that recall: a clipped 1.000 would read as measured.
            lam, lam_interval = 1.0, None
            params.update(lam=lam, lam_interval=None, lam_matched=False, lam_source=unmatched_lambda_note(
                chosen, ceiling, target, separation))
        else:
            lam = lam_for_recall(space, stand_in, target, eval_size, seed, separation)
            lam_interval = tuple(sorted(lam_for_recall(space, stand_in, e, eval_size, seed, separation)
                                        for e in ends)) or None
            params.update(lam=lam, lam_interval=lam_interval, lam_matched=True,
                          lam_source=f"the {chosen} stand-in's sampling bias at which its output has the synthetic "
                                     f"part's recall, {target:.3f} of a real sample's")
    if inputs_meaning:
        params["inputs_meaning"] = inputs_meaning
    p_runs = _draws(real_fraction, real_fraction_interval, runs, seed, 0, (0.0, 1.0))
    lam_runs = _draws(lam, lam_interval, runs, seed, 1, (1e-3, 1.0))
    separation_runs = _draws(separation, separation_interval, runs, seed, 3, (1e-3, MAX_SEPARATION))
    values = simulate(space, stand_in, loop, p_runs, n, lam_runs, generations, runs, seed, eval_size, separation_runs)
    baseline_values = simulate(space, stand_in, "fresh", 1.0, n, 1.0, generations, runs, seed, eval_size)
    baseline = {name: np.median(v, axis=0) for name, v in baseline_values.items()}
    relative = {name: v / np.where(baseline[name] > 0, baseline[name], np.nan) for name, v in values.items()}

    relative_bands = summarise_runs(relative)
    summary: dict[str, Any] = {"mad_horizon": mad_horizon(relative, threshold)}
    calibrated = calibrate(relative_bands, threshold, load_margins())
    if calibrated is not None:
        summary["mad_horizon"]["calibrated"] = calibrated
    if not all(c["passes"] for c in checks if c["model"] == chosen):
        summary["warning"] = f"the {chosen} stand-in does not reproduce the reference at generation 0 (see checks)"
    if search_fresh:
        summary["min_fresh_fraction"] = min_fresh_fraction(space, stand_in, n, lam, generations,
                                                           max(20, runs // 5), seed, threshold, eval_size, baseline,
                                                           separation=separation)
    summary["admissibility"] = admissibility(space, n, real_fraction, lam, real_fraction_interval, lam_interval)
    summary["fd_conventions"] = {
        "fd_model": "FD of the fitted model N(mu_t, Sigma_t) to the stand-in's truth (MAD's, used for n_e)",
        "fd_output": "FD of its biased output N(mu_t, lambda Sigma_t), what the next model would emit"}
    return Forecast(loop, chosen, params, list(range(generations + 1)), summarise_runs(values),
                    relative_bands, {k_: v.tolist() for k_, v in baseline.items()}, summary, checks,
                    runs_values=values)


def relative_recall(space: ReferenceSpace, stand_in, lam: float, size: int, seed: int,
                    separation: float = 1.0) -> float:
    """Recall of `size` samples of the stand-in's truth at sampling bias lambda (and separation),
    relative to that of `size` held-out real fit points (the same random numbers for every lambda)."""
    rng = np.random.default_rng([seed, 4])
    size = min(size, len(space.fit_points), len(space.eval_points))
    held_out = space.fit_points[rng.choice(len(space.fit_points), size, replace=False)]
    samples = stand_in.sample(rng, stand_in.truth_state(), lam, size, separation)
    _, recall = space.precision_recall(samples, held_out)
    return float(recall[0] / recall[1]) if recall[1] > 0 else float("nan")


def unmatched_lambda_note(stand_in: str, ceiling: float, target: float, separation: float) -> str:
    """One sentence: lambda could not be matched to the synthetic part's recall, what that can mean
    and how to resolve it."""
    pushed = f" pushed apart by {separation:.2f}" if separation > 1 else ""
    return (f"not matched (1 assumed): even at λ = 1 the {stand_in} stand-in's output{pushed} has recall "
            f"{ceiling:.3f} of a real sample's, below the synthetic part's {target:.3f}, which means the part "
            "covers more than any shrink of the stand-in can (a generator that scatters its samples off the "
            "reference, as guidance did in a CLIP prior, or real items among the flagged ones); its precision "
            "tells which: low for scattered samples, as high as a real sample's for real items")


def lam_for_recall(space: ReferenceSpace, stand_in, target: float, size: int, seed: int, separation: float = 1.0,
                   steps: int = 12) -> float:
    """The sampling bias at which the stand-in's output (at `separation`) has relative recall
    `target` (bisection on a curve that falls as lambda falls; 1 when even lambda = 1 does not
    reach it)."""
    lo, hi = 1e-3, 1.0
    if relative_recall(space, stand_in, hi, size, seed, separation) <= target:
        return hi
    for _ in range(steps):
        mid = math.sqrt(lo * hi)  # geometric: the recall curve bends near 0
        if relative_recall(space, stand_in, mid, size, seed, separation) < target:
            lo = mid
        else:
            hi = mid
    return float(math.sqrt(lo * hi))


SEPARATION_BOOTSTRAPS = 200


def measure_separation(space: ReferenceSpace, stand_in, synthetic: np.ndarray, seed: int = 0) -> dict[str, Any]:
    """The synthetic part's separation relative to a real sample of the same size: gamma(synthetic)
    / gamma(real), gamma from the stand-in's `separation_of`, so that what assignment to the
    nearest component does to any new sample cancels. The real sample is the eval points: like the
    synthetic part, items the stand-in was not fitted to (its own fit points read closer to 1).
    Items outside the principal axes' fit read a few percent low (0.97 on held-out Food-101
    photos), which no reference item can show: the separation is good to about 0.05. 95% interval
    from a bootstrap of both sets. `modelled`: whether the stand-in's output can carry it (False,
    with a note, also when it reads nothing finite in (0, MAX_SEPARATION])."""
    if not hasattr(stand_in, "separation_of"):
        return {"value": None, "interval": None, "modelled": False,
                "note": f"the {stand_in.name} stand-in has no components to push apart: separation not modelled"}
    rng = np.random.default_rng([seed, 6])
    points = space.project(synthetic).astype(np.float64)
    size = min(len(points), len(space.eval_points))
    real = space.eval_points[rng.choice(len(space.eval_points), size, replace=False)].astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        value = stand_in.separation_of(points) / stand_in.separation_of(real)
        boots = [stand_in.separation_of(points[rng.integers(len(points), size=len(points))])
                 / stand_in.separation_of(real[rng.integers(size, size=size)]) for _ in range(SEPARATION_BOOTSTRAPS)]
    if not (np.isfinite(value) and np.all(np.isfinite(boots)) and 0 < value <= MAX_SEPARATION):
        # e.g. every item nearest a component at the centre: no offsets to regress on
        return {"value": None, "interval": None, "modelled": False,
                "note": f"separation not measured: it reads {value:.3g} on the {stand_in.name} stand-in's components "
                        f"(not in (0, {MAX_SEPARATION:g}])"}
    lo, hi = np.percentile(boots, [2.5, 97.5])
    return {"value": float(value), "interval": [float(lo), float(hi)], "modelled": True,
            "note": f"the {stand_in.name} stand-in's output carries it (component means pushed apart by it each "
                    "generation, as classifier-free guidance pushes class means)"}


def separation_from_reading(reading: dict[str, Any], stand_in) -> dict[str, Any]:
    """A separation measured before (by `measure_separation`), checked as it is measured: a value
    in (0, MAX_SEPARATION] with its interval, on a stand-in with components; else not modelled."""
    if not hasattr(stand_in, "separation_of"):
        return {"value": None, "interval": None, "modelled": False,
                "note": f"the {stand_in.name} stand-in has no components to push apart: separation not modelled"}
    value, interval = reading.get("value"), reading.get("interval")
    numbers = [value, *(interval or [])]
    if not (reading.get("modelled") and isinstance(interval, (list, tuple)) and len(interval) == 2
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in numbers)
            and 0 < min(numbers) and max(numbers) <= MAX_SEPARATION and interval[0] <= value <= interval[1]):
        return {"value": None, "interval": None, "modelled": False,
                "note": "separation not measured: the scan's reading is missing or not a value in "
                        f"(0, {MAX_SEPARATION:g}] inside its interval"}
    return {"value": float(value), "interval": [float(v) for v in interval], "modelled": True,
            "note": f"measured by the scan; the {stand_in.name} stand-in's output carries it (component means pushed "
                    "apart by it each generation, as classifier-free guidance pushes class means)"}


def _draws(value: float, interval: tuple[float, float] | None, runs: int, seed: int, stream: int,
           domain: tuple[float, float]) -> np.ndarray:
    if interval is None:
        return np.full(runs, float(value))
    lo, hi = interval
    sd = max(hi - lo, 0.0) / (2 * 1.96)
    draws = np.random.default_rng([seed, 2, stream]).normal(value, sd, runs)
    return np.clip(draws, *domain)


def summarise_runs(values: dict[str, np.ndarray]) -> dict[str, dict[str, list[float]]]:
    return {name: {"median": np.nanmedian(v, axis=0).tolist(), "p10": np.nanpercentile(v, 10, axis=0).tolist(),
                   "p90": np.nanpercentile(v, 90, axis=0).tolist()} for name, v in values.items()}


def mad_horizon(relative: dict[str, np.ndarray], threshold: float) -> dict[str, Any]:
    """First generation (>= 1) where relative recall or tail coverage falls below `threshold`,
    read on the median curve over runs, and on the 10% and 90% curves for the band (the 10%
    curve falls first: the early end). Read on curves, not run by run, so that scoring noise in
    single runs does not pass for collapse. ">T": not within the forecast's T generations."""
    last = relative["recall"].shape[1] - 1

    def first_below(q: float) -> int | str:
        below = np.zeros(last + 1, dtype=bool)
        for name in HORIZON_METRICS:
            below |= np.nanpercentile(relative[name], q, axis=0) < threshold
        below[0] = False
        return int(np.argmax(below)) if below.any() else f">{last}"

    return {"threshold": threshold, "relative_to": "real-only loop of the same size", "metrics": list(HORIZON_METRICS),
            "median": first_below(50), "p10": first_below(10), "p90": first_below(90)}


def min_fresh_fraction(space: ReferenceSpace, stand_in, n: int, lam: float, generations: int, runs: int, seed: int,
                       threshold: float, eval_size: int, baseline: dict[str, np.ndarray], steps: int = 6,
                       separation: float = 1.0) -> float | None:
    """Smallest p (to 1/2^steps) whose fresh loop keeps median relative recall and tail coverage
    >= threshold at every generation (p = 1 is the baseline itself, so it always holds)."""
    def keeps(p: float) -> bool:
        v = simulate(space, stand_in, "fresh", p, n, lam, generations, runs, seed, eval_size, separation)
        return all(np.all(np.median(v[m], axis=0) >= threshold * baseline[m]) for m in HORIZON_METRICS)

    if keeps(0.0):
        return 0.0
    lo, hi = 0.0, 1.0
    for _ in range(steps):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if keeps(mid) else (mid, hi)
    return hi


def admissibility(space: ReferenceSpace, n: int, real_fraction: float, lam: float,
                  real_fraction_interval: tuple[float, float] | None = None,
                  lam_interval: tuple[float, float] | None = None) -> dict[str, Any]:
    """MAD eq. 4 for the measured mixture (fresh loop, Gaussian in the forecast's principal axes):
    n_e, whether the synthetic part is admissible, and the admissible amount n_s*. With intervals,
    n_e's range over their corners."""
    n_real = int(round(real_fraction * n))
    frechet = FrechetForecast(space.spectrum)
    if n_real < 1:
        return {"effective_sample_size": None, "reason": "no real items a generation: no fixed point near the truth"}
    out = frechet.admissibility(n_real, n - n_real, lam).to_dict()
    out["model"] = f"Gaussian in {space.dim} principal axes, fresh loop"
    out["sentence"] = worth_sentence(out)
    if real_fraction_interval or lam_interval:
        corners = [(p, l_) for p in (real_fraction_interval or (real_fraction,)) for l_ in (lam_interval or (lam,))]
        n_es = []
        for p, l_ in corners:
            nr = int(round(min(max(p, 0), 1) * n))
            n_es.append(frechet.effective_sample_size(nr, n - nr, min(max(l_, 1e-3), 1)) if nr >= 1 else 0.0)
        out["effective_sample_size_range"] = [min(n_es), max(n_es) if math.isfinite(max(n_es)) else None]
    return out


def worth_sentence(adm: dict[str, Any]) -> str:
    n_e, n_r, n_s = adm["effective_sample_size"], adm["n_real"], adm["n_synthetic"]
    worth = "more than any real-only set" if n_e is None else f"{n_e:,.0f} real items"
    verdict = ("the synthetic part helps (admissible)" if adm["admissible"] else
               "the synthetic part hurts: fewer synthetic items would do better")
    limit = adm["max_admissible_synthetic"]
    cap = "no limit found" if limit is None else f"at most {limit:,.0f} synthetic items a generation stay admissible"
    return (f"Reused with fresh data, this mixture ({n_r:,} real + {n_s:,} synthetic a generation) is worth "
            f"{worth} a generation; {verdict}; {cap}.")
