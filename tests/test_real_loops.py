"""The forecast against a real generative model retrained on its own output: the reduced version of
benchmarks/real_loops.py (digits, a class-conditional DDPM with classifier-free guidance, two loops,
4 generations, 2 seeds), the harness's own sanity, and the agreement with looser bounds than the
benchmark's targets."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import real_loops  # noqa: E402
from audit.metrics import wilson_interval  # noqa: E402

pytest.importorskip("torch")

GENERATIONS = 4
LOOPS = ["fully_synthetic", "fresh:0.5"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The reduced validation, once for the module: its rows (agreement) and the raw world runs."""
    cache = tmp_path_factory.mktemp("loops") / "runs.pkl"
    rows = real_loops.validate(["digits"], LOOPS, [1.0, 0.5], GENERATIONS, seeds=2, tiny=True, runs=60, cache=cache)
    import pickle

    worlds = list(pickle.loads(cache.read_bytes()).values())
    return rows, worlds


def test_scoring_a_real_sample_reads_like_another_real_sample():
    """The harness scores items as the projector does: two disjoint real samples of the same size
    agree within each other's 95% intervals."""
    family = real_loops.TINY["digits"]
    x, _ = real_loops.load("digits")
    space = real_loops.make_space(family, x, 0)
    pool = np.setdiff1d(np.arange(len(x)), space.eval_rows)
    rows = np.random.default_rng(0).permutation(pool)
    a, b = (real_loops.score(space, x[rows[i * 300:(i + 1) * 300]]) for i in (0, 1))
    for name in ("precision", "recall", "coverage"):
        count = round(b[name] * (300 if name == "precision" else len(space.eval_points)))
        lo, hi = wilson_interval(count, 300 if name == "precision" else len(space.eval_points))
        assert lo <= a[name] <= hi, (name, a, b)


def test_generation_zero_is_the_real_only_loop_and_the_real_only_loop_stays_flat(runs):
    """Every loop starts from the same generation-0 model, scored on its own draw of samples: its
    recall is the real-only loop's within twice the binomial 95% half-width on the eval points
    (measured: at most 0.07 apart). The real-only loop, retrained on fresh real items every
    generation, keeps its level (mean within 0.1 of generation 0; single retrained models varied by
    up to 0.13), while the fully synthetic loop loses more than half its recall in 4 generations."""
    _, worlds = runs
    m = real_loops.TINY["digits"].eval_size
    for world in worlds:
        baseline = world["baseline"]["recall"]
        lo, hi = wilson_interval(round(baseline[0] * m), m)
        for result in world["loops"].values():
            assert abs(result["recall"][0] - baseline[0]) <= hi - lo, (result["recall"], baseline)
        assert abs(np.mean(baseline[1:]) - baseline[0]) <= 0.1 and max(abs(v - baseline[0]) for v in baseline) <= 0.15
        collapsed = world["loops"][("fully_synthetic", 1.0)]["recall"]
        assert collapsed[-1] < 0.5 * collapsed[0], collapsed


def test_guidance_lowers_the_recall_of_what_a_generation_hands_on(runs):
    """At generation 0, samples drawn with guidance w = 1 (lambda = 0.5) cover less of the reference
    than unguided ones (lambda = 1): MAD's sampling bias, in a real model."""
    rows, _ = runs
    for loop in LOOPS:
        by_lam = {r["lam"]: r["synthetic_part"]["recall"] for r in rows if r["loop"] == loop}
        assert by_lam[0.5] < by_lam[1.0], by_lam


def test_the_forecast_follows_the_real_loops(runs):
    """Looser than the benchmark's targets (gaps within 0.10 at every generation): the reduced
    models and two seeds are noisier. Measured here (Intel Xeon): horizons equal in all four, recall
    gaps 0.30, 0.10, 0.04, 0.13 (fully synthetic lambda 1 and 0.5, fresh p = 0.5 lambda 1 and 0.5).
    With lambda from moments the guided loops read lambda = 1 and their gaps were 0.58 and 0.32
    (median 0.23): this test fails that method."""
    rows, _ = runs
    for row in rows:
        assert real_loops.horizon_gap(row) <= 1, row
        assert row["recall_max_gap"] <= 0.4, row
    assert np.median([row["recall_max_gap"] for row in rows]) <= 0.15, rows


def test_the_band_widened_by_the_shipped_margins_holds_the_real_loops(runs):
    """The margins shipped in audit/projector/real_loops.json were learned on the full models'
    loops; on these smaller models and other seeds the widened band still holds the real median
    more often than the Monte Carlo band (measured here, Intel Xeon: 0.84 against 0.62)."""
    from audit.projector.calibration import inside_share, load_margins

    rows, _ = runs
    margins = load_margins()
    assert margins is not None
    assert inside_share(rows, margins) >= 0.75 and inside_share(rows, margins) > inside_share(rows)
