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
