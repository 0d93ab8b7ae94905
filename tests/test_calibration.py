"""The forecast's band widened by its error against real loops (audit/projector/calibration.py):
the margins do what they claim on the rows they were learned from, the held-out figure does not
leak the held-out rows, and the horizon is read on the widened curves."""

from __future__ import annotations

import json

import numpy as np
import pytest

from audit.projector.calibration import (CALIBRATED_METRICS, band_margins, calibrate, held_out_inside_share,
                                         inside_share, load_margins, widen)

GENS = 9


def _rows(rng, count, error_scale, family="a"):
    """Settings whose real median strays from the forecast's band by noise growing with generation."""
    rows = []
    for _ in range(count):
        row = {"family": family}
        for m in CALIBRATED_METRICS:
            median = np.clip(1 - 0.05 * np.arange(GENS) * rng.uniform(0, 2), 0, None)
            half = 0.02 + 0.01 * np.arange(GENS)
            # every metric here is >= 0, as widen() assumes when it stops the lower curve at 0
            real = np.clip(median + error_scale * np.arange(GENS) * rng.standard_normal(GENS) / GENS, 0, None)
            row.update({f"{m}_real": real.tolist(), f"{m}_p10": (median - half).tolist(),
                        f"{m}_p90": (median + half).tolist()})
        rows.append(row)
    return rows


def test_margins_leave_at_most_a_tenth_below_and_a_tenth_above_at_every_generation():
    """Counted directly on the rows: after widening, the real median lies under the 10% curve in at
    most 10% of the settings at each generation, and over the 90% curve in at most 10%; margins never
    shrink with the generation, and halving one that grew there lets more than 10% out on that side
    (the margins are not wider than needed)."""
    rows = _rows(np.random.default_rng(0), 60, 0.8)
    margins = band_margins(rows)
    tight = 0
    for m in CALIBRATED_METRICS:
        real = np.array([r[f"{m}_real"] for r in rows])
        lo, hi = (np.array([widen({"p10": r[f"{m}_p10"], "p90": r[f"{m}_p90"]}, margins[m])[k] for r in rows])
                  for k in ("p10", "p90"))
        assert np.all(np.mean(real < lo - 1e-9, axis=0) <= 0.1) and np.all(np.mean(real > hi + 1e-9, axis=0) <= 0.1)
        for side, key in (("below", "p10"), ("above", "p90")):
            assert np.all(np.diff(margins[m][side]) >= 0), margins[m][side]
            for t in range(1, GENS):
                if margins[m][side][t] > max(0.01, margins[m][side][t - 1]):
                    half = {**margins[m], side: [v / 2 for v in margins[m][side]]}
                    narrow = np.array([widen({"p10": r[f"{m}_p10"], "p90": r[f"{m}_p90"]}, half)[key][t] for r in rows])
                    out = real[:, t] < narrow - 1e-9 if side == "below" else real[:, t] > narrow + 1e-9
                    assert out.mean() > 0.1, (m, side, t)
                    tight += 1
    assert tight >= 4  # the halving was tried, not skipped
    assert inside_share(rows, margins) >= 0.8 > inside_share(rows)


def test_widen_keeps_the_last_margin_and_never_goes_below_zero():
    band = {"p10": [0.05, 0.5, 0.5, 0.5], "p90": [1.0, 0.9, 0.9, 0.9]}
    wide = widen(band, {"below": [0.0, 0.2], "above": [0.0, 0.1]})
    assert wide["p10"] == pytest.approx([0.05, 0.3, 0.3, 0.3]) and wide["p90"] == pytest.approx([1.0, 1.0, 1.0, 1.0])
    assert widen({"p10": [0.1], "p90": [0.2]}, {"below": [0.5], "above": [0.0]})["p10"] == [0.0]


def test_the_held_out_figure_learns_each_family_s_margins_from_the_other_alone():
    """A family whose loops stray five times as far as the other's: learned on the calm family, its
    widened band holds its real median far less often than in-sample margins do; learned on the
    wild one, the calm family is covered. Margins that leaked the held-out rows would read ~0.8+."""
    rng = np.random.default_rng(1)
    calm, wild = _rows(rng, 30, 0.2, "calm"), _rows(rng, 30, 1.0, "wild")
    everything = calm + wild
    held = held_out_inside_share(everything)
    wild_from_calm = inside_share(wild, band_margins(calm))
    calm_from_wild = inside_share(calm, band_margins(wild))
    assert held == pytest.approx((wild_from_calm + calm_from_wild) / 2)
    assert wild_from_calm < 0.6 < 0.95 <= calm_from_wild
    assert held < inside_share(everything, band_margins(everything))


def test_the_calibrated_horizon_is_read_on_the_widened_curves():
    """Monte Carlo 10% curve crosses 0.9 at generation 4; a margin of 0.15 from generation 2 on
    brings the early end to generation 2; the late end (90% curve + margin) never crosses."""
    med = [1.0, 0.98, 0.96, 0.94, 0.85, 0.8]
    rel = {m: {"median": med, "p10": [v - 0.03 for v in med], "p90": [v + 0.03 for v in med]}
           for m in CALIBRATED_METRICS}
    margins = {m: {"below": [0, 0, 0.15], "above": [0, 0, 0.3]} for m in CALIBRATED_METRICS}
    horizon = calibrate(rel, 0.9, margins)
    assert horizon["p10"] == 2 and horizon["p90"] == ">5"
    assert rel["recall"]["calibrated_p10"][2] == pytest.approx(0.96 - 0.03 - 0.15)
    assert calibrate(rel, 0.9, None) is None


def test_margins_load_from_the_validation_file_or_read_none(tmp_path):
    path = tmp_path / "real_loops.json"
    assert load_margins(path) is None
    path.write_text(json.dumps({"band_margins": {m: {"below": [0, 0.1], "above": [0, 0.2]} for m in CALIBRATED_METRICS}}))
    assert load_margins(path)["tail_coverage"]["above"] == [0.0, 0.2]
    path.write_text(json.dumps({"band_margins": {"recall": {"below": [0]}}}))
    assert load_margins(path) is None


def test_the_terminal_table_shows_the_widened_band_the_forecast_carries(real_clip):
    """`project`'s terminal table: every generation's relative recall and tail coverage cell holds
    the Monte Carlo band and the widened one, the numbers the forecast carries (4 significant
    digits); metrics without a widening (precision) show the Monte Carlo band alone."""
    import re

    from audit.projector import project
    from audit.render import forecast_table

    fc = project(real_clip["food_train"][:800], loop="fully_synthetic", model="gmm", real_fraction=0.0, n=300,
                 lam=0.7, generations=3, runs=6, dim=8, eval_size=200, search_fresh=False)
    rows = [line.split("  ") for line in forecast_table(fc).splitlines()[3:3 + len(fc.generations)]]
    number = r"([-\d.e+]+)"  # render's _fmt: 4 significant digits, so a relative rounding of at most 5e-4
    for t, row in enumerate(rows):
        cells = [c.strip() for c in row if c.strip()]
        assert cells[0] == str(t)
        for cell, name in zip(cells[1:3], ("recall", "tail_coverage")):
            found = re.fullmatch(rf"{number} \[{number}, {number}\] \(widened {number} to {number}\)", cell)
            band = fc.relative[name]
            expected = [band[q][t] for q in ("median", "p10", "p90", "calibrated_p10", "calibrated_p90")]
            assert found and all(float(v) == pytest.approx(e, rel=5e-4, abs=1e-12)
                                 for v, e in zip(found.groups(), expected)), (cell, expected)
        assert "widened" not in cells[3], cells  # precision: no widening learned
