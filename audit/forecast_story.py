"""Plain-language lines about a forecast, from its dict (what report.json holds): shared by the
terminal table, report.md and report.html so they say the same thing."""

from __future__ import annotations

from typing import Any


def _interval(x: Any) -> str:
    return f" [{x[0]:.2f}, {x[1]:.2f}]" if x else ""


def band_cell(m: dict[str, list[float]], t: int, fmt) -> str:
    """Generation t of a metric: median [10%, 90%], and the band widened by the method's error
    against real loops where the forecast carries one (one wording for terminal and report)."""
    text = f"{fmt(m['median'][t])} [{fmt(m['p10'][t])}, {fmt(m['p90'][t])}]"
    if "calibrated_p10" in m:
        text += f" (widened {fmt(m['calibrated_p10'][t])} to {fmt(m['calibrated_p90'][t])})"
    return text


def inputs_line(fc: dict[str, Any]) -> str:
    p = fc["params"]
    return (f"real fraction p = {p['real_fraction']:.3f}{_interval(p.get('real_fraction_interval'))}, "
            f"λ = {p['lam']:.3f}{_interval(p.get('lam_interval'))}, n = {p['n']:,} items a generation")


def meaning_line(fc: dict[str, Any]) -> str | None:
    """What the inputs say about the synthetic part, beyond p and lambda (None if nothing)."""
    p = fc["params"]
    meaning = p.get("inputs_meaning") or {}
    parts = []
    scores = meaning.get("synthetic_scores")
    if scores:
        parts.append(f"precision {scores['precision']:.2f}, recall {scores['recall']:.2f} against the reference "
                     f"(a real sample of the same size: {scores['real_precision']:.2f}, {scores['real_recall']:.2f})")
    part = meaning.get("synthetic_part")
    if part:
        parts.append(f"offset {part['offset']:.2f} of the reference's RMS spread, spread {part['spread_ratio']:.2f} of "
                     "the reference's")
    sep = p.get("separation")
    if sep and sep.get("modelled"):
        carried = ("the forecast pushes each generation's output apart by it" if sep["used"] > 1 else
                   "drawn toward the centre: a shrink, which λ carries")
        parts.append(f"separation {sep['value']:.2f}{_interval(sep['interval'])} (its clusters' means "
                     f"from the reference's centre, 1 = as the reference; {carried})")
    elif sep:
        parts.append(sep["note"])
    # Where lambda was matched to the recall, the moments' note is about a lambda not used.
    notes = [n for n in (p.get("lam_source") and f"λ is {p['lam_source']}",
                         None if p.get("lam_source") else meaning.get("lam_note")) if n]
    if not parts and not notes:
        return None
    return "; ".join((["synthetic part: " + ", ".join(parts)] if parts else []) + notes)


def trust_sentence() -> str:
    """How well this forecast method agreed with real generative models retrained on their own
    output (benchmarks/real_loops.py, summarised in audit/projector/real_loops.json)."""
    import json
    from pathlib import Path

    path = Path(__file__).parent / "projector" / "real_loops.json"
    try:
        v = json.loads(path.read_text())
        n = v["forecast_available"]
        return (f"How far to trust it: against real loops ({' and '.join(v['families'])}; {v['settings']} loop and "
                f"λ settings, 3 seeds, {v['date']}), this forecast's horizon was within one generation of the real "
                f"one in {v['horizon_within_1']} of {n}, its relative recall within 0.10 of the real median at every "
                f"generation in {v['recall_within_0.10']} of {n} (tail coverage: {v['tail_within_0.10']} of {n}), "
                f"and the real median lay inside its 10-90% band at {v['inside_band']:.0%} of generations"
                + (f", inside the band widened by its error on real loops at {v['inside_calibrated_band']:.0%} "
                   f"({v['inside_calibrated_band_other_family']:.0%} with the widening learned on the other model "
                   "family alone)" if "inside_calibrated_band" in v else "")
                + " (benchmarks/README.md, real loops)")
    except (OSError, ValueError, KeyError, TypeError):
        return "How far to trust it: not checked against real loops in this installation (real_loops.json missing)"


def sizes_line(fc: dict[str, Any]) -> str:
    p = fc["params"]
    return (f"{p['runs']} runs, {p['eval_size']} samples a run scored against {p['eval_reference']} held-out reference "
            f"points in {p['dim']} principal axes (k = {p['k']}); every metric is also shown relative to the same "
            f"stand-in's real-only loop (p = 1, λ = 1, same runs and seeds)")


def horizon_sentence(fc: dict[str, Any]) -> str:
    """One sentence: what the forecast means."""
    if not fc["available"]:
        return f"No forecast: {fc['summary']['reason']}."
    h = fc["summary"]["mad_horizon"]
    last = fc["generations"][-1]
    share = f"{h['threshold']:.0%} of a real-only loop's"
    if isinstance(h["median"], str):
        head = (f"MAD horizon beyond generation {last}: reused in the {fc['loop']} loop, this mixture keeps recall and tail coverage above {share} "
                f"for all {last} forecast generations (median over runs; the pessimistic 10% curve: "
                f"{_generation(h['p10'])})")
    else:
        head = (f"MAD horizon at generation {h['median']}: reused in the {fc['loop']} loop, this mixture's recall or tail coverage falls below {share} at "
                f"generation {h['median']} (median over runs; 10% and 90% curves: {_generation(h['p10'])} and "
                f"{_generation(h['p90'])})")
    cal = h.get("calibrated")
    if cal:
        head += (f"; with the band widened by this method's error against real self-consuming loops, "
                 f"{_generation(cal['p10'])} at the early end and {_generation(cal['p90'])} at the late end")
    return head + "."


def _generation(x: Any) -> str:
    return f"beyond generation {x[1:]}" if isinstance(x, str) else f"generation {x}"


def forecast_headline(fc: dict[str, Any]) -> str:
    """The horizon sentence, the measured inputs and what the mixture is worth (MAD eq. 4)."""
    if not fc["available"]:
        return horizon_sentence(fc)
    adm = fc["summary"].get("admissibility", {})
    return "\n".join([horizon_sentence(fc), "Forecast inputs measured on the candidate: " + inputs_line(fc) + "."]
                     + ([adm["sentence"]] if adm.get("sentence") else []))


def summary_lines(fc: dict[str, Any]) -> list[str]:
    """The forecast's summary as short lines: inputs, stand-in and its check, horizon, fresh
    fraction, n_e and n_s*."""
    if not fc["available"]:
        lines = [horizon_sentence(fc)]
        lines += [check_line(c) for c in fc.get("stand_in_checks", [])]
        return lines
    s = fc["summary"]
    meaning = meaning_line(fc)
    lines = [horizon_sentence(fc), "Inputs: " + inputs_line(fc) + "." + (f" {meaning[0].upper()}{meaning[1:]}." if meaning else ""),
             f"Stand-in: {fc['model']}; " + "; ".join(check_line(c) for c in fc["stand_in_checks"]) + "."]
    if "warning" in s:
        lines.append("Warning: " + s["warning"] + ".")
    if "min_fresh_fraction" in s:
        p = s["min_fresh_fraction"]
        lines.append(f"Smallest fresh real fraction that keeps the median above the threshold: {p:.3f}."
                     if p is not None else "No fresh real fraction keeps the median above the threshold.")
    adm = s.get("admissibility", {})
    if adm.get("sentence"):
        rng = adm.get("effective_sample_size_range")
        extra = (f" (over the inputs' intervals: {rng[0]:,.0f} to "
                 f"{'unbounded' if rng[1] is None else f'{rng[1]:,.0f}'})") if rng else ""
        lines.append(f"{adm['sentence']} n_e = {_num(adm['effective_sample_size'])}{extra}, "
                     f"n_s* = {_num(adm['max_admissible_synthetic'])}: {adm['model']}, FD of the fitted model "
                     f"(MAD eq. 4).")
    elif adm.get("reason"):
        lines.append(f"Effective sample size: not defined ({adm['reason']}).")
    lines.append("Sizes: " + sizes_line(fc) + ".")
    lines.append(trust_sentence() + ".")
    return lines


def check_line(c: dict[str, Any]) -> str:
    return (f"{c['model']} {'passes' if c['passes'] else 'fails'} (generation-0 precision {c['precision']:.2f}, "
            f"recall {c['recall']:.2f} vs held-out real {c['held_out_precision']:.2f}, {c['held_out_recall']:.2f})")


def _num(x: Any) -> str:
    return "unbounded" if x is None else f"{x:,.0f}"
