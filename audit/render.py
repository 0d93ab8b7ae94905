"""Plain-text renderings of results for the terminal."""

from __future__ import annotations

from audit.metrics import Comparison

_ORDER = ["precision", "recall", "density", "coverage", "tail_coverage", "cluster_tail_mass", "fd", "kid", "cmmd",
          "vendi_reference", "vendi_candidate", "vendi_ratio", "duplicate_rate", "reference_copy_rate"]


def _fmt(value: float) -> str:
    if value != value:  # NaN: a metric these sets cannot give
        return "n/a"
    return f"{value:.4g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.3e}"


def metrics_table(result: Comparison) -> str:
    """One row per metric: name, value, 95% interval, parameters."""
    rows = [("metric", "value", "95% interval", "parameters")]
    names = [n for n in _ORDER if n in result.metrics] + [n for n in result.metrics if n not in _ORDER]
    for name in names:
        m = result.metrics[name]
        ci = f"[{_fmt(m.ci[0])}, {_fmt(m.ci[1])}]" if m.ci else ""
        params = ", ".join(f"{k}={_fmt(v) if isinstance(v, float) else v}" for k, v in m.params.items())
        rows.append((name, _fmt(m.value), ci, params))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    header = f"reference: {result.n_reference} items, candidate: {result.n_candidate} items, dimension {result.dim}"
    reasons = dict.fromkeys(m.method for m in result.metrics.values() if m.method.startswith("not available"))
    return header + "\n" + "\n".join(lines + list(reasons))


TABLE_RELATIVE = ("recall", "tail_coverage", "precision", "coverage")


def forecast_table(forecast) -> str:
    """One row per generation: the median (and 10-90% band, and the band widened by the method's
    error against real loops where there is one) of each metric relative to the real-only
    baseline, and the fitted model's FD; then the forecast's summary lines."""
    from audit.forecast_story import band_cell, summary_lines

    fc = forecast.to_dict()
    title = f"loop {fc['loop']}, stand-in {fc['model']}"
    if not fc["available"]:
        return title + "\n" + "\n".join(summary_lines(fc))
    header = ["gen"] + [f"{name} (rel.)" for name in TABLE_RELATIVE] + ["fd_model"]
    rows = [header]
    for t in fc["generations"]:
        cells = [str(t)]
        for source, name in [("relative", n) for n in TABLE_RELATIVE] + [("metrics", "fd_model")]:
            cells.append(band_cell(fc[source][name], t, _fmt))
        rows.append(cells)
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return title + "\n" + "\n".join(lines) + "\n" + "\n".join(summary_lines(fc))


def forecast_plot(forecasts, path) -> None:
    """One panel per metric, one curve (median) with its 10-90% band per forecast (loop model)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from audit.plots import forecast_axes
    from audit.projector import METRICS

    forecasts = [fc for fc in forecasts if fc.available]
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    fig, axes = plt.subplots(2, 4, figsize=(16, 7), sharex=True)
    for ax, name in zip(axes.flat, METRICS):
        for i, fc in enumerate(forecasts):  # the report's panel, one curve and band per loop
            threshold = (1.0 if name.startswith("fd") else fc.params["threshold"]) if i == 0 else None
            forecast_axes(ax, fc.generations, fc.relative[name], threshold, name.replace("_", " ") + " / real-only",
                          label=f"{fc.loop} ({fc.model})", colour=colours[i % len(colours)])
    axes.flat[-1].axis("off")
    axes.flat[0].legend(fontsize=8)
    fig.suptitle("MAD forecast relative to the real-only loop: median and 10-90% band over Monte Carlo runs")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
