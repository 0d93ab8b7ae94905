"""Plain-text renderings of results for the terminal."""

from __future__ import annotations

from audit.metrics import Comparison

_ORDER = ["precision", "recall", "density", "coverage", "tail_coverage", "cluster_tail_mass", "fd", "kid", "cmmd",
          "vendi_reference", "vendi_candidate", "vendi_ratio", "duplicate_rate", "reference_copy_rate"]


def _fmt(value: float) -> str:
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
    return header + "\n" + "\n".join(lines)


def forecast_table(forecast) -> str:
    """One row per generation: the median (and 10-90% band) of each forecast metric."""
    from audit.projector import METRICS

    header = ["gen"] + list(METRICS)
    rows = [header]
    for t in forecast.generations:
        cells = [str(t)]
        for name in METRICS:
            m = forecast.metrics[name]
            cells.append(f"{_fmt(m['median'][t])} [{_fmt(m['p10'][t])}, {_fmt(m['p90'][t])}]")
        rows.append(cells)
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    summary = forecast.summary
    horizon = summary["mad_horizon"]
    title = (f"loop {forecast.loop}, stand-in {forecast.model}, " +
             ", ".join(f"{k}={v}" for k, v in forecast.params.items() if k in ("real_fraction", "n", "lam", "runs")))
    notes = [f"MAD horizon (recall or tail coverage < {horizon['threshold']}): median {horizon['median']}, "
             f"10-90% {horizon['p10']}..{horizon['p90']}"]
    if "min_fresh_fraction" in summary:
        notes.append(f"minimum fresh real fraction keeping median recall >= {horizon['threshold']}: "
                     f"{summary['min_fresh_fraction'] if summary['min_fresh_fraction'] is not None else 'none (even all-real fails)'}")
    if "effective_sample_size" in summary:
        notes.append(f"effective sample size n_e = {summary['effective_sample_size']:.1f} "
                     f"({'admissible' if summary['admissible'] else 'NOT admissible'}: n_e vs real items per generation); "
                     f"most synthetic items per generation still admissible: {summary['max_admissible_synthetic']}")
    return title + "\n" + "\n".join(lines) + "\n" + "\n".join(notes)


def forecast_plot(forecasts, path) -> None:
    """One panel per metric, one curve (median) with its 10-90% band per forecast (loop model)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from audit.projector import METRICS

    fig, axes = plt.subplots(2, 3, figsize=(13, 7), sharex=True)
    for ax, name in zip(axes.flat, METRICS):
        for fc in forecasts:
            m = fc.metrics[name]
            line, = ax.plot(fc.generations, m["median"], label=f"{fc.loop} ({fc.model})")
            ax.fill_between(fc.generations, m["p10"], m["p90"], color=line.get_color(), alpha=0.2)
        ax.set_title(name.replace("_", " "))
        ax.grid(alpha=0.3)
    for ax in axes[-1]:
        ax.set_xlabel("generation")
    axes.flat[0].legend(fontsize=8)
    fig.suptitle("MAD forecast: median and 10-90% band over Monte Carlo runs")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
