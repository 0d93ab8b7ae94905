"""The shape every synthetic-share estimate takes."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


class DetectorProblem(ValueError):
    """A detector file that cannot be used (a configuration error: exit 2); names the file."""


class ModelMismatch(ValueError):
    """Embeddings from another model (or dimension) than a detector was trained on."""


@dataclass
class FractionEstimate:
    """An estimate of the synthetic share of a candidate set, in [0, 1].

    `lower`/`upper` bound a 95% interval where the method gives one; a method that only
    identifies a lower bound says so in `method` and leaves `upper` at None."""

    value: float
    lower: float | None
    upper: float | None
    method: str
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
