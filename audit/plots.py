"""The report's plots, drawn by matplotlib as inline SVG: axes with ticks, legends, threshold lines
and a colour scale. `project --plot` draws its panels with the same function, so both look alike.

Each SVG keeps its text as text (searchable, scalable) and gets its own id; every id inside it is
prefixed with that id, so several plots share one page without clashing.
"""

from __future__ import annotations

import io
import re
from typing import Any

RATE_METRICS = ("precision", "recall", "coverage", "tail_coverage", "duplicate_rate", "reference_copy_rate")
_BLUE, _DARK, _RED, _GREY = "#5b7fd6", "#2c4fa8", "#c0392b", "#9aa0a8"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def svg(fig, ident: str, title: str) -> str:
    """`fig` as an <svg> element for inline use (closed afterwards)."""
    plt = _pyplot()
    buffer = io.StringIO()
    with plt.rc_context({"svg.fonttype": "none", "svg.hashsalt": ident}):
        fig.savefig(buffer, format="svg", metadata={"Date": None, "Creator": None})
    plt.close(fig)
    text = buffer.getvalue()
    text = text[text.index("<svg"):]  # no XML prolog or DOCTYPE inside HTML
    text = re.sub(r'\bid="([^"]+)"', lambda m: f'id="{ident}-{m.group(1)}"', text)
    text = re.sub(r"url\(#([^)]+)\)", lambda m: f"url(#{ident}-{m.group(1)})", text)
    text = re.sub(r'href="#([^"]+)"', lambda m: f'href="#{ident}-{m.group(1)}"', text)
    title_attr = title.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;")
    return text.replace("<svg", f'<svg id="{ident}" class="plot" role="img" aria-label="{title_attr}"', 1)


def rates_svg(data: dict[str, Any]) -> str:
    """Rates as bars with their 95% intervals, gate thresholds as red dashes, on a 0-1 axis."""
    rows = [(name, data["metrics"][name].get("value"), data["metrics"][name].get("ci"))
            for name in RATE_METRICS if name in data["metrics"]]
    for name, e in data["synthetic_fraction"]["estimates"].items():
        ci = [e["lower"], e["upper"]] if e.get("lower") is not None and e.get("upper") is not None else None
        rows.append((f"synthetic ({name})", e.get("value"), ci))
    thresholds = {g["metric"]: g["threshold"] for g in data["gates"]}
    primary = data["synthetic_fraction"].get("primary")
    if "synthetic_fraction" in thresholds:
        thresholds[f"synthetic ({primary})"] = thresholds["synthetic_fraction"]
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 0.34 * len(rows) + 1.1))
    names = [r[0].replace("_", " ") for r in rows][::-1]
    rows = rows[::-1]
    for y, (name, value, ci) in enumerate(rows):
        if value is None:
            ax.text(0.01, y, "not identifiable", va="center", fontsize=8, color="#667")
            continue
        ax.barh(y, value, color=_BLUE, height=0.6, label="value")
        ax.text(min(value, 1.0) + 0.01, y, f"{value:.3f}", va="center", fontsize=8)
        if ci and None not in ci:
            ax.plot(ci, [y, y], color="#1d232a", lw=1.5, label="95% interval")
        t = thresholds.get(name)
        if t is not None and 0 <= t <= 1:
            ax.plot([t, t], [y - 0.4, y + 0.4], color=_RED, lw=2, ls=(0, (2, 1)), label="gate threshold")
    ax.set_yticks(range(len(rows)), names, fontsize=8)
    ax.set_xlim(0, 1.12)
    ax.set_xticks([0, 0.2, 0.4, 0.6, 0.8, 1.0])
    ax.set_xlabel("share", fontsize=9)
    ax.grid(axis="x", alpha=0.3)
    _legend(ax, loc="lower right")
    ax.set_title("rates with 95% intervals and gate thresholds", fontsize=10)
    fig.tight_layout()
    return svg(fig, "metric-bars", "rates with 95% intervals and gate thresholds")


def map_svg(m: dict[str, Any]) -> str:
    """Both sets on the reference's first two principal axes; candidate items coloured by how
    synthetic they look, with the colour scale."""
    if not m["reference"] and not m["candidate"]:
        return ""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.6, 4.6))
    if m["reference"]:
        rx, ry = zip(*m["reference"])
        ax.scatter(rx, ry, s=5, color=_GREY, alpha=0.5, label=f"reference ({len(rx)} shown)", linewidths=0)
    if m["candidate"]:
        cx, cy = zip(*m["candidate"])
        if len(m["candidate_score"]) == len(cx):
            dots = ax.scatter(cx, cy, s=7, c=m["candidate_score"], cmap="coolwarm", vmin=0, vmax=1, alpha=0.8,
                              label=f"candidate ({len(cx)} shown)", linewidths=0)
            bar = fig.colorbar(dots, ax=ax, fraction=0.05, pad=0.02)
            bar.set_label("how synthetic it looks (0: like the reference, 1: suspicious)", fontsize=8)
            bar.ax.tick_params(labelsize=8)
        else:  # no synthetic-share scores (that stage did not run): positions only
            ax.scatter(cx, cy, s=7, color="#c0392b", alpha=0.8, label=f"candidate ({len(cx)} shown, unscored)",
                       linewidths=0)
    ax.set_xlabel("principal axis 1 of the reference", fontsize=9)
    ax.set_ylabel("principal axis 2", fontsize=9)
    ax.tick_params(labelsize=8)
    _legend(ax, loc="best", markerscale=2)
    ax.set_title("map of both sets", fontsize=10)
    fig.tight_layout()
    return svg(fig, "map-plot", "map of both sets: reference grey, candidate by score")


def forecast_axes(ax, generations: list[int], band: dict[str, list[float | None]], threshold: float | None,
                  title: str, label: str = "median", colour: str = _DARK) -> None:
    """One forecast panel: median and 10-90% band over runs, the horizon threshold dashed."""
    import numpy as np

    def arr(key: str):
        return np.array([np.nan if v is None else v for v in band[key]], dtype=float)

    if "calibrated_p10" in band:  # widened by the method's error against real loops
        wide = ax.fill_between(generations, arr("calibrated_p10"), arr("calibrated_p90"), color=colour, alpha=0.08,
                               label="widened by its error on real loops")
        wide.set_gid("calibrated-band")
    fill = ax.fill_between(generations, arr("p10"), arr("p90"), color=colour, alpha=0.2, label="10–90% of runs")
    fill.set_gid("band")
    line, = ax.plot(generations, arr("median"), color=colour, lw=2, label=label)
    line.set_gid("median")
    if threshold is not None:
        ax.axhline(threshold, color=_RED, ls="--", lw=1, label=f"threshold {threshold:g}").set_gid("threshold")
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("generation", fontsize=9)
    ax.tick_params(labelsize=8)
    ax.grid(alpha=0.3)


def forecast_svg(fc: dict[str, Any], name: str) -> str:
    """One panel of the report: the metric relative to the real-only loop (1.0 = as good)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.2, 3.0))
    threshold = 1.0 if name.startswith("fd") else fc["params"]["threshold"]
    title = f"{name.replace('_', ' ')} / real-only"
    forecast_axes(ax, fc["generations"], fc["relative"][name], threshold, title)
    ax.set_ylabel("relative to real-only", fontsize=9)
    _legend(ax, loc="best")
    fig.tight_layout()
    return svg(fig, f"forecast-{name}", f"{title}: median and 10–90% band")


def _legend(ax, **kwargs) -> None:
    handles, labels = ax.get_legend_handles_labels()
    unique = {label: h for h, label in zip(handles, labels) if label and not label.startswith("_")}
    if unique:
        ax.legend(unique.values(), unique.keys(), fontsize=7, framealpha=0.85, **kwargs).set_gid("legend")
