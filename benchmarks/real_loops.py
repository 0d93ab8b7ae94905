"""Real self-consuming loops beside the forecast: real generative models, retrained from scratch on
their own output each generation, scored like the projector scores its stand-ins.

    python benchmarks/real_loops.py                      # both families, every loop, 3 seeds (<= 60 min)
    python benchmarks/real_loops.py --families digits --loops fully_synthetic,fresh:0.5 \\
        --generations 4 --seeds 1 --tiny                 # the reduced version the test runs

Families (torch, CPU, seeded):
- `digits`: a class-conditional DDPM with classifier-free guidance on scikit-learn's 8x8 digits
  (the digit fixtures' real images; MAD's MNIST setting in miniature), 64 pixels as the space;
- `food-clip`: the same kind of diffusion model over real CLIP ViT-B/32 embeddings of Food-101
  photos (../shared/data/real-clip) on their top 64 principal axes, conditioned on the class: an
  unCLIP-style prior.
Sampling bias by guidance, lambda = 1 / (1 + w) (MAD): the samples a generation hands on are drawn
with guidance w; the model itself is scored unguided (as the projector scores its stand-ins).

Loops (audit/projector/loops.py, n training items per generation): fully_synthetic, augment
(p = 0.5 fixed real), fresh (p in {0.2, 0.5} new real items each generation), accumulate; the
real-only loop (fresh, p = 1, lambda = 1) is the baseline every metric is read against.
Every generation's unguided samples are projected into the forecast's own ReferenceSpace and scored
against its held-out eval points (precision, recall, coverage, tail coverage; FD beside).

The forecast side by side: generation 0's mixture (p n real training items and (1 - p) n samples
at the loop's lambda) is audited like `madaudit project --from-report` would read it
(`inputs_from_audit`, the share known), and `project` forecasts the loop in the same space.
Printed: one JSON line per loop and lambda, then a markdown table; `--plot` writes the curves.
"""

from __future__ import annotations

import argparse
import json
import math
import pickle
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from audit.metrics import frechet_distance  # noqa: E402
from audit.balls import grouped_ball_membership  # noqa: E402
from audit.projector.calibration import (MARGIN_QUANTILE, band_margins, held_out_inside_share,  # noqa: E402
                                        inside_share, widen)
from audit.projector.forecast import mad_horizon, project  # noqa: E402
from audit.projector.inputs import inputs_from_audit, synthetic_scores  # noqa: E402
from audit.projector.loops import LOOPS  # noqa: E402
from audit.projector.standins import ReferenceSpace  # noqa: E402

LOOP_SPECS = ("fully_synthetic", "augment:0.5", "fresh:0.2", "fresh:0.5", "accumulate")
SCORED = ("precision", "recall", "coverage", "tail_coverage", "fd")
THRESHOLD = 0.9  # the forecast's default horizon threshold
PRIOR_AXES = 64


@dataclass(frozen=True)
class Family:
    name: str
    n: int  # training items per generation
    eval_size: int  # held-out real items that score every generation
    hidden: int
    steps: int  # optimiser steps per training, from scratch


FAMILIES = {"digits": Family("digits", 500, 400, 256, 1500), "food-clip": Family("food-clip", 800, 500, 256, 1500)}
TINY = {"digits": Family("digits", 300, 300, 256, 1000), "food-clip": Family("food-clip", 400, 400, 256, 1000)}


def load(family: str) -> tuple[np.ndarray, np.ndarray]:
    """(items (N, d) float32, class labels (N,)) of a family's real data."""
    if family == "digits":
        from sklearn.datasets import load_digits

        digits = load_digits()
        return (digits.data / 16.0).astype(np.float32), digits.target.astype(np.int64)
    from conftest import _real_clip_dir

    folder = _real_clip_dir()
    if folder is None:
        raise SystemExit("food-clip needs ../shared/data/real-clip (or $MADAUDIT_REAL_CLIP)")
    food = np.load(folder / "food101_10class_clip_vitb32.npz", allow_pickle=False)
    x = np.vstack([food["X_train"], food["X_test"]]).astype(np.float64)
    # The prior lives on the top PRIOR_AXES principal axes, the space the forecast scores in: a
    # small diffusion model over all 512 axes leaves residual noise that no k-NN ball holds.
    _, _, vt = np.linalg.svd(x - x.mean(axis=0), full_matrices=False)
    return (((x - x.mean(axis=0)) @ vt[:PRIOR_AXES].T).astype(np.float32),
            np.r_[food["y_train"], food["y_test"]].astype(np.int64))


class Diffusion:
    """A class-conditional DDPM (Ho et al. 2020) with classifier-free guidance (Ho and Salimans
    2022): an MLP predicts the noise from (x_t, t, class), the class dropped 15% of the time so
    that the same network gives the unconditional prediction; cosine schedule, 100 steps."""

    T = 100
    DROP = 0.15
    EMA = 0.995

    def __init__(self, dim: int, classes: int, hidden: int, seed: int):
        import torch

        self.torch = torch
        torch.manual_seed(seed)
        self.classes = classes
        s = 0.008
        t = torch.arange(self.T + 1, dtype=torch.float64) / self.T
        abar = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2
        abar = abar / abar[0]
        self.betas = (1 - abar[1:] / abar[:-1]).clamp(max=0.2).float()  # no 1/sqrt(alpha) blow-up at the end
        self.alphas = 1 - self.betas
        self.abar = torch.cumprod(self.alphas, 0)
        self.net = torch.nn.Sequential(
            torch.nn.Linear(dim + 32 + 32, hidden), torch.nn.SiLU(), torch.nn.Linear(hidden, hidden), torch.nn.SiLU(),
            torch.nn.Linear(hidden, hidden), torch.nn.SiLU(), torch.nn.Linear(hidden, dim))
        self.label = torch.nn.Embedding(classes + 1, 32)  # the last index: no class
        self.generator = torch.Generator().manual_seed(seed)

    def _eps(self, x, t, y):
        torch = self.torch
        freqs = torch.exp(-math.log(1000.0) * torch.arange(16) / 16)
        angle = t.float()[:, None] * freqs[None, :]
        return self.net(torch.cat([x, torch.sin(angle), torch.cos(angle), self.label(y)], dim=1))

    def fit(self, x: np.ndarray, y: np.ndarray, steps: int, batch: int = 256, lr: float = 2e-3) -> "Diffusion":
        torch = self.torch
        self.mean = x.mean(axis=0)
        self.scale = float(np.sqrt(((x - self.mean) ** 2).sum(axis=1).mean() / x.shape[1])) or 1.0
        data = torch.from_numpy((x - self.mean) / self.scale).float()
        labels = torch.from_numpy(y)
        params = list(self.net.parameters()) + list(self.label.parameters())
        opt = torch.optim.Adam(params, lr=lr)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
        g = self.generator
        # An exponential moving average of the weights samples far better than the last step's.
        ema = [q.detach().clone() for q in params]
        for _ in range(steps):
            rows = torch.randint(0, len(data), (min(batch, len(data)),), generator=g)
            x0, yy = data[rows], labels[rows].clone()
            yy[torch.rand(len(yy), generator=g) < self.DROP] = self.classes
            t = torch.randint(0, self.T, (len(x0),), generator=g)
            noise = torch.randn(x0.shape, generator=g)
            ab = self.abar[t][:, None]
            loss = ((self._eps(ab.sqrt() * x0 + (1 - ab).sqrt() * noise, t, yy) - noise) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            with torch.no_grad():
                for e, q in zip(ema, params):
                    e.lerp_(q, 1 - self.EMA)
        with torch.no_grad():
            for e, q in zip(ema, params):
                q.copy_(e)
        return self

    def sample(self, y: np.ndarray, guidance: float) -> np.ndarray:
        """One sample per label in `y`, with classifier-free guidance w = `guidance`."""
        torch = self.torch
        g = self.generator
        with torch.no_grad():
            labels = torch.from_numpy(y)
            none = torch.full_like(labels, self.classes)
            x = torch.randn((len(y), self.net[-1].out_features), generator=g)
            for step in reversed(range(self.T)):
                t = torch.full((len(y),), step)
                eps = self._eps(x, t, labels)
                if guidance:
                    eps = (1 + guidance) * eps - guidance * self._eps(x, t, none)
                a, ab, b = self.alphas[step], self.abar[step], self.betas[step]
                x = (x - b / (1 - ab).sqrt() * eps) / a.sqrt()
                if step:
                    var = b * (1 - self.abar[step - 1]) / (1 - ab)
                    x = x + var.sqrt() * torch.randn(x.shape, generator=g)
        return x.numpy() * self.scale + self.mean


def guidance_for(lam: float) -> float:
    """MAD's sampling bias of classifier-free guidance: lambda = 1 / (1 + w)."""
    return 1.0 / lam - 1.0


def train(family: Family, x: np.ndarray, y: np.ndarray, classes: int, seed: int) -> Diffusion:
    return Diffusion(x.shape[1], classes, family.hidden, seed).fit(x, y, family.steps)


def score(space: ReferenceSpace, samples: np.ndarray) -> dict[str, float]:
    """The projector's scoring of one generation (audit/projector/loops.py `score`), on real samples."""
    points = space.project(samples)
    b = grouped_ball_membership(space.eval_points, space.eval_sq_radii, points, len(points), space.k)
    return {"precision": float((b.cand_ball_counts > 0).mean()), "recall": float(b.ref_in_cand_ball.mean()),
            "coverage": float(b.ref_covered.mean()), "tail_coverage": float(b.ref_covered.reshape(-1)[space.tail].mean()),
            "fd": frechet_distance(points.astype(np.float64), space.eval_points.astype(np.float64))}


def parse_loop(spec: str) -> tuple[str, float]:
    loop, _, p = spec.partition(":")
    return loop, float(p) if p else (0.5 if loop == "accumulate" else 0.0)


def make_space(family: Family, x: np.ndarray, seed: int) -> ReferenceSpace:
    """The forecast's space for this family and seed (its eval points score the real loops too)."""
    return ReferenceSpace.fit(x, dim=min(64, x.shape[1]), k=5, eval_reference=family.eval_size, seed=seed)


class World:
    """One family and seed: the real data split into the forecast's space (eval points) and the
    pool real training items come from; generation 0 is trained once and shared by every loop."""

    def __init__(self, family: Family, seed: int):
        self.family, self.seed = family, seed
        x, y = load(family.name)
        self.x, self.y, self.classes = x, y, int(y.max()) + 1
        self.space = make_space(family, x, seed)
        self.pool = np.setdiff1d(np.arange(len(x)), self.space.eval_rows)
        self.first = np.random.default_rng([seed, 11]).choice(self.pool, family.n, replace=False)  # generation 0's
        self.gen0 = train(family, x[self.first], y[self.first], self.classes, seed * 1000)

    def sample(self, model: Diffusion, labels: np.ndarray, lam: float) -> np.ndarray:
        """Samples at sampling bias lambda, in the data's valid range (pixels in [0, 1])."""
        out = model.sample(labels, guidance_for(lam)).astype(np.float32)
        return np.clip(out, 0, 1) if self.family.name == "digits" else out

    def real(self, count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        rows = rng.choice(self.pool, count, replace=False)
        return self.x[rows], self.y[rows]

    def run(self, loop: str, p: float, lam: float, generations: int) -> dict[str, list[float]]:
        """One real loop: metric -> value per generation 0..generations."""
        fam = self.family
        rng = np.random.default_rng([self.seed, 12, LOOPS.index(loop), int(p * 100), int(lam * 100)])
        n_real = int(round(p * fam.n)) if loop in ("augment", "fresh") else 0
        model, train_y = self.gen0, self.y[self.first]
        fixed = self.real(n_real, rng) if loop == "augment" and n_real else None
        kept = [(self.x[self.first], self.y[self.first])]
        out: dict[str, list[float]] = {name: [] for name in SCORED}
        for t in range(generations + 1):
            for name, value in score(self.space, self.sample(model, rng.choice(train_y, fam.eval_size), 1.0)).items():
                out[name].append(value)
            if t == generations:
                break
            n_syn = fam.n - n_real
            syn_y = rng.choice(train_y, n_syn)
            groups = [(self.sample(model, syn_y, lam), syn_y)]
            if loop == "augment" and fixed is not None:
                groups.append(fixed)
            elif loop == "fresh" and n_real:
                groups.append(self.real(n_real, rng))
            elif loop == "accumulate":
                kept += groups
                groups = kept
            train_x, train_y = np.vstack([g[0] for g in groups]), np.concatenate([g[1] for g in groups])
            model = train(fam, train_x, train_y, self.classes, self.seed * 1000 + t + 1)
        return out

    def mixture(self, p: float, lam: float) -> tuple[np.ndarray, float]:
        """Generation 0's training mixture as an audit sees it: p n real training items and
        (1 - p) n samples at the loop's lambda; (candidate, its synthetic share)."""
        n_real = int(round(p * self.family.n))
        rng = np.random.default_rng([self.seed, 13])
        synthetic = self.sample(self.gen0, rng.choice(self.y[self.first], self.family.n - n_real), lam)
        return np.vstack([self.x[self.first[:n_real]], synthetic]), 1 - n_real / self.family.n


def world_runs(job: tuple[str, bool, int, list[str], list[float], int]) -> dict:
    """Every loop of one family and seed (one process each: the models train on one thread)."""
    import torch

    torch.set_num_threads(1)
    fam_name, tiny, seed, loops, lams, generations = job
    world = World((TINY if tiny else FAMILIES)[fam_name], seed)
    out = {"baseline": world.run("fresh", 1.0, 1.0, generations), "loops": {}, "mixtures": {}}
    for spec in loops:
        loop, p = parse_loop(spec)
        for lam in lams:
            out["loops"][(spec, lam)] = world.run(loop, p, lam, generations)
            out["mixtures"][(spec, lam)] = world.mixture(p, lam)
    return out


def relative(values: list[dict], baseline: list[dict], name: str) -> np.ndarray:
    """(seeds, generations) of a metric relative to the real-only loop's median over seeds."""
    base = np.median([b[name] for b in baseline], axis=0)
    return np.array([v[name] for v in values]) / np.where(base > 0, base, np.nan)


def validate(families: list[str], loops: list[str], lams: list[float], generations: int, seeds: int, tiny: bool,
             runs: int = 100, workers: int = 2, cache: Path | None = None, lam_from: str = "recall",
             model: str = "auto", separation: bool = True) -> list[dict]:
    """Every (family, loop, lambda): the real loops' relative curves beside the forecast's, made
    from seed 0's generation-0 mixture. `cache`: a pickle of the real loops' results by job, read
    if there and written after (the real loops do not depend on the forecast method)."""
    from concurrent.futures import ProcessPoolExecutor

    jobs = [(f, tiny, seed, loops, lams, generations) for f in families for seed in range(seeds)]
    cached = pickle.loads(cache.read_bytes()) if cache is not None and cache.exists() else {}
    todo = [j for j in jobs if repr(j) not in cached]
    # spawn, not fork: a forked child of a process whose BLAS/OpenMP/torch threads already run
    # can deadlock (it did, inside the full test suite).
    import multiprocessing

    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        cached.update(zip(map(repr, todo), pool.map(world_runs, todo)))
    if cache is not None:
        cache.write_bytes(pickle.dumps(cached))
    results = {(j[0], j[2]): cached[repr(j)] for j in jobs}
    rows = []
    for fam_name in families:
        family = (TINY if tiny else FAMILIES)[fam_name]
        x, _ = load(fam_name)
        space = make_space(family, x, 0)
        worlds = [results[(fam_name, seed)] for seed in range(seeds)]
        baseline = [w["baseline"] for w in worlds]
        for spec in loops:
            loop, p = parse_loop(spec)
            for lam in lams:
                real = [w["loops"][(spec, lam)] for w in worlds]
                rel = {m: relative(real, baseline, m) for m in ("recall", "tail_coverage", "precision", "coverage")}
                candidate, share = worlds[0]["mixtures"][(spec, lam)]
                inputs = inputs_from_audit(x, candidate, share, seed=0)
                synthetic = candidate[len(candidate) - int(round(share * len(candidate))):]
                scores = synthetic_scores(space, synthetic, x[np.setdiff1d(np.arange(len(x)), space.eval_rows)])
                forecast = project(None, loop=loop, real_fraction=inputs["real_fraction"], n=family.n,
                                   lam=inputs["lam"], lam_interval=tuple(inputs["lam_interval"]),
                                   generations=generations, runs=runs, seed=0, eval_size=family.eval_size,
                                   space=space, search_fresh=False, model=model,
                                   synthetic_recall=(scores["relative_recall"], *scores["relative_recall_interval"])
                                   if lam_from == "recall" else None,
                                   synthetic_items=synthetic if separation else None)
                sep = forecast.params.get("separation") or {}
                rows.append({**compare(fam_name, spec, lam, inputs, real, rel, forecast), "lam_from": lam_from,
                             "synthetic_part": {k: np.round(v, 3).tolist() for k, v in scores.items()},
                             "lam_used": round(forecast.params["lam"], 3),
                             "separation": round(sep["value"], 3) if sep.get("modelled") else None})
                print(json.dumps(rows[-1]), flush=True)
    return rows


def compare(family: str, spec: str, lam: float, inputs: dict, real: list[dict], rel: dict, forecast) -> dict:
    """The agreement of one loop: horizons, the largest gap between medians, and how often the real
    median lies inside the forecast's 10-90% band (generations >= 1)."""
    out = {"family": family, "loop": spec, "lam": lam, "lam_measured": round(inputs["lam"], 3),
           "lam_interval": [round(v, 3) for v in inputs["lam_interval"]], "stand_in": forecast.model}
    if not forecast.available:
        return {**out, "forecast": forecast.summary.get("reason")}
    real_horizon = mad_horizon(rel, THRESHOLD)["median"]
    out.update({"horizon_real": real_horizon, "horizon_forecast": forecast.summary["mad_horizon"]["median"]})
    for name in ("recall", "tail_coverage"):
        real_median = np.nanmedian(rel[name], axis=0)
        band = forecast.relative[name]
        med, lo, hi = (np.array(band[q]) for q in ("median", "p10", "p90"))
        out[f"{name}_real"] = [round(v, 3) for v in real_median]
        out[f"{name}_forecast"] = [round(v, 3) for v in med]
        out[f"{name}_p10"], out[f"{name}_p90"] = [round(v, 3) for v in lo], [round(v, 3) for v in hi]
        out[f"{name}_max_gap"] = round(float(np.nanmax(np.abs(real_median - med))), 3)
        inside = (real_median[1:] >= lo[1:] - 1e-12) & (real_median[1:] <= hi[1:] + 1e-12)
        out[f"{name}_inside_band"] = round(float(inside.mean()), 2)
    return out


def horizon_gap(row: dict) -> float:
    """|forecast - real| horizon; a horizon beyond the run reads as one past the last generation."""
    def value(h) -> float:
        return float(h[1:]) + 1 if isinstance(h, str) else float(h)

    return abs(value(row["horizon_forecast"]) - value(row["horizon_real"]))


FAMILY_NAMES = {"digits": "a class-conditional DDPM with classifier-free guidance on 8x8 digits",
                "food-clip": "the same kind of diffusion model as a class prior over Food-101 CLIP embeddings"}


def agreement(rows: list[dict]) -> dict:
    """The validation in a few numbers: what the forecast's trust sentence quotes
    (audit/projector/real_loops.json, read by `audit.forecast_story.trust_sentence`)."""
    done = [r for r in rows if "horizon_real" in r]
    inside = [r[f"{m}_inside_band"] for r in done for m in ("recall", "tail_coverage")]
    return {"families": [FAMILY_NAMES[f] for f in dict.fromkeys(r["family"] for r in rows)],
            "settings": len(rows), "forecast_available": len(done),
            "horizon_within_1": sum(horizon_gap(r) <= 1 for r in done),
            "recall_within_0.10": sum(r["recall_max_gap"] <= 0.10 for r in done),
            "tail_within_0.10": sum(r["tail_coverage_max_gap"] <= 0.10 for r in done),
            "inside_band": round(float(np.mean(inside)), 2) if inside else None,
            **calibration_summary(done),
            "lam_from": rows[0].get("lam_from") if rows else None, "cpu": _cpu(), "date": time.strftime("%Y-%m-%d")}


def calibration_summary(done: list[dict]) -> dict:
    """The margins that widen the forecast's band (learned on every validated setting) and the
    share of generations whose real median lies inside the widened band: on the settings they were
    learned from, and with margins learned on the other family alone (the honest figure)."""
    if not done or any("recall_p10" not in r for r in done):
        return {}
    margins = band_margins(done)
    return {"inside_calibrated_band": round(inside_share(done, margins), 2),
            "inside_calibrated_band_other_family": round(held_out_inside_share(done), 2),
            "margin_quantile": MARGIN_QUANTILE, "band_margins": margins}


def _cpu() -> str:
    try:
        return next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        return "unknown"


def table(rows: list[dict]) -> str:
    lines = ["| family | loop | λ | λ measured | stand-in | horizon real / forecast | recall max gap | tail max gap "
             "| real median in band (recall, tail) |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "horizon_real" not in r:
            lines.append(f"| {r['family']} | {r['loop']} | {r['lam']} | {r['lam_measured']} | none | {r['forecast']} |||")
            continue
        lines.append(f"| {r['family']} | {r['loop']} | {r['lam']} | {r['lam_measured']} {r['lam_interval']} | "
                     f"{r['stand_in']} | {r['horizon_real']} / {r['horizon_forecast']} | {r['recall_max_gap']} | "
                     f"{r['tail_coverage_max_gap']} | {r['recall_inside_band']}, {r['tail_coverage_inside_band']} |")
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [r for r in rows if "recall_real" in r]
    cols = 4
    fig, axes = plt.subplots(math.ceil(len(shown) / cols), cols, figsize=(3.2 * cols, 2.4 * math.ceil(len(shown) / cols)),
                             squeeze=False)
    families = {r["family"] for r in shown}
    # the widening each family's panels show is learned on the other family alone (as quoted)
    others = {f: band_margins([r for r in shown if r["family"] != f]) for f in families} if len(families) > 1 else {}
    for ax, r in zip(axes.flat, shown):
        gens = np.arange(len(r["recall_real"]))
        band = {"p10": r["recall_p10"], "p90": r["recall_p90"]}
        if r["family"] in others:
            wide = widen(band, others[r["family"]]["recall"])
            ax.fill_between(gens, wide["p10"], wide["p90"], color="C0", alpha=0.1,
                            label="widened (learned on the other family)")
        ax.fill_between(gens, band["p10"], band["p90"], color="C0", alpha=0.3, label="forecast 10-90%")
        ax.plot(gens, r["recall_real"], "k-o", ms=3, label="real loops (median)")
        ax.plot(gens, r["recall_forecast"], "C0--", label="forecast (median)")
        ax.axhline(THRESHOLD, color="grey", lw=0.5)
        ax.set_title(f"{r['family']} {r['loop']} λ={r['lam']}", fontsize=8)
        ax.set_ylim(0, 1.5)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(shown):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=6)
    fig.supylabel("recall relative to the real-only loop", fontsize=8)
    fig.supxlabel("generation", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--families", default="digits,food-clip")
    parser.add_argument("--loops", default=",".join(LOOP_SPECS))
    parser.add_argument("--lams", default="1,0.5")
    parser.add_argument("--generations", type=int, default=8)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--runs", type=int, default=100, help="forecast Monte Carlo runs")
    parser.add_argument("--tiny", action="store_true", help="small models and sets (the test's reduced version)")
    parser.add_argument("--plot", type=Path, help="write the relative-recall curves here (svg or png)")
    parser.add_argument("--lam-from", choices=("recall", "moments"), default="recall",
                        help="the forecast's lambda: matched to the synthetic part's recall, or from moments")
    parser.add_argument("--stand-in", default="auto", help="the forecast's stand-in (auto: the projector's choice)")
    parser.add_argument("--write-agreement", type=Path,
                        help="write the summary the forecast's trust sentence quotes (audit/projector/real_loops.json)")
    parser.add_argument("--no-separation", action="store_true",
                        help="leave the synthetic part's separation out of the forecast (the previous method)")
    parser.add_argument("--cache", type=Path, help="pickle of the real loops' results, reused across forecast changes")
    args = parser.parse_args()
    started = time.perf_counter()
    rows = validate(args.families.split(","), args.loops.split(","), [float(v) for v in args.lams.split(",")],
                    args.generations, args.seeds, args.tiny, args.runs, cache=args.cache,
                    lam_from=args.lam_from, model=args.stand_in, separation=not args.no_separation)
    print(table(rows))
    print(json.dumps(agreement(rows)))
    if args.write_agreement:
        args.write_agreement.write_text(json.dumps(agreement(rows), indent=1) + "\n")
    print(json.dumps({"total_seconds": round(time.perf_counter() - started, 1)}))
    if args.plot:
        plot(rows, args.plot)


if __name__ == "__main__":
    main()
