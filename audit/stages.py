"""The stages of a scan and what each needs, so a scan degrades stage by stage: a stage the data
cannot carry (too few items, an unknown share) is reported as not available with its reason, the
gates that read it are unknown at their severity, and every other stage still reports.

Each minimum is stated by the stage's own module (the function named below), next to the code
that needs it; this module only names the stages and the gates that read each.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

# Report order, the words people read, and the gateable values each stage gives.
STAGES: dict[str, tuple[str, tuple[str, ...]]] = {
    "knn_metrics": ("k-NN metrics (precision, recall, density, coverage, tail coverage, calibrated near duplicates)",
                    ("precision", "recall", "density", "coverage", "tail_coverage", "duplicate_rate",
                     "reference_copy_rate")),
    "fd_kid": ("FD and KID", ("fd",)),
    "cluster_tail_mass": ("cluster tail mass", ("cluster_tail_mass",)),
    "synthetic_share": ("synthetic-share estimates", ("synthetic_fraction", "synthetic_fraction_lower",
                                                      "out_of_manifold")),
    "forecast": ("MAD forecast", ("forecast_recall", "forecast_tail_coverage")),
    "items": ("per-item pass (items.parquet)", ("index_recall",)),
}


@dataclass(frozen=True)
class Stage:
    name: str
    available: bool
    reason: str | None = None  # why not, when not

    @property
    def title(self) -> str:
        return STAGES[self.name][0]

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "title": self.title}


def stage(name: str, problem: str | None) -> Stage:
    """The stage `name`, available unless `problem` says why not."""
    if name not in STAGES:
        raise KeyError(f"unknown stage {name!r}")
    return Stage(name, problem is None, problem)


def gate_reasons(stages: list[dict[str, Any]]) -> dict[str, str]:
    """Why each gateable value of a stage that did not run is unknown (report.json's `stages`)."""
    reasons = {}
    for s in stages:
        if not s["available"]:
            for value in STAGES.get(s["name"], ("", ()))[1]:
                reasons[value] = f"is unknown: the {s['title']} did not run ({s['reason']})"
    return reasons


def skipped_lines(stages: list[dict[str, Any]] | None) -> list[str]:
    """One line per stage that did not run: what, and why."""
    return [f"not available: {s['title']}: {s['reason']}" for s in stages or () if not s["available"]]
