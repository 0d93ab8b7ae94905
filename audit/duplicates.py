"""Near duplicates: candidate items with a near copy in the candidate itself or in the reference.

Two rules, the report says which ran and with what threshold:

- `calibrated` (default): a pair is a near duplicate when it is at most as far apart as the
  q-th quantile (default 0.1%) of the reference's own nearest-neighbour distances. The threshold
  follows the embedding's scale, so it means the same in CLIP space as in the pixels of the
  demo's digits (where a fixed cosine of 0.95 calls different handwritten digits copies). By
  construction about a share q of the reference's own items have such a neighbour: that is the
  baseline against which the candidate's rates read (`reference_rate`). Nearest neighbours are
  Euclidean, from the metrics' pass over the distances (`pairwise`).
- `cosine`: a pair is a near duplicate when its cosine similarity is >= a fixed threshold
  (nearest by cosine: on unit vectors, the Euclidean nearest).

Each candidate item is flagged once per kind, with its nearest match; the pair's distance and
cosine come back in float64.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

RULES = ("calibrated", "cosine")


@dataclass(frozen=True)
class Pair:
    candidate: int  # row in the candidate
    match: int  # row in the candidate (within) or the reference (copies)
    distance: float  # Euclidean, float64
    cosine: float | None  # None where a vector is zero


@dataclass
class NearDuplicates:
    rule: str
    threshold: float  # calibrated: a Euclidean distance; cosine: a cosine similarity
    within_candidate: list[Pair]
    copies_of_reference: list[Pair]
    quantile: float | None = None  # calibrated: q
    reference_rate: float | None = None  # calibrated: share of reference items with a neighbour that close
    unavailable: str | None = None  # why no rule could run (sets too small to calibrate on)

    def describe(self) -> str:
        if self.unavailable:
            return f"not available: {self.unavailable}"
        if self.rule == "cosine":
            return f"cosine similarity >= {self.threshold:g}"
        return (f"distance <= {self.threshold:.4g}, the {100 * self.quantile:g}% quantile of the reference's "
                "nearest-neighbour distances")


def calibrated_duplicates(reference: np.ndarray, candidate: np.ndarray, reference_nn_sq: np.ndarray,
                          candidate_nn: tuple[np.ndarray, np.ndarray] | None,
                          cross_nn: tuple[np.ndarray, np.ndarray], quantile: float = 0.001) -> NearDuplicates:
    """The calibrated rule from exact nearest neighbours: `reference_nn_sq` each reference item's
    squared distance to its nearest other item; `candidate_nn` and `cross_nn` (squared distance,
    row) of each candidate item's nearest other candidate item and nearest reference item."""
    if not 0 < quantile < 1:
        raise ValueError(f"the duplicate quantile must be in (0, 1), got {quantile}")
    threshold_sq = float(np.quantile(reference_nn_sq, quantile, method="inverted_cdf"))  # an observed value
    reference_rate = float(np.mean(reference_nn_sq <= threshold_sq))

    def flagged(nn: tuple[np.ndarray, np.ndarray] | None, other: np.ndarray) -> list[Pair]:
        if nn is None:
            return []
        sq, match = nn
        rows = np.flatnonzero(sq <= threshold_sq)
        return _pairs(candidate, other, rows, match[rows], np.sqrt(sq[rows]))

    return NearDuplicates("calibrated", float(np.sqrt(threshold_sq)), flagged(candidate_nn, candidate),
                          flagged(cross_nn, reference), quantile, reference_rate)


def cosine_duplicates(reference: np.ndarray, candidate: np.ndarray, threshold: float = 0.95) -> NearDuplicates:
    """The cosine rule. Exact: on unit vectors the nearest neighbour in Euclidean distance is the
    one with the highest cosine, and the cosine of each nearest pair is recomputed in float64."""
    from audit.index import ExactIndex

    xn, yn = _unit_rows(reference), _unit_rows(candidate)
    within = ExactIndex(yn).self_search(1).indices[:, 0] if len(yn) > 1 else None
    cross = ExactIndex(xn).search(yn, 1).indices[:, 0]

    def flagged(match: np.ndarray | None, other_unit: np.ndarray, other: np.ndarray) -> list[Pair]:
        if match is None:
            return []
        cos = np.einsum("ij,ij->i", yn, other_unit[match])
        rows = np.flatnonzero(cos >= threshold)
        diff = np.asarray(candidate, np.float64)[rows] - np.asarray(other, np.float64)[match[rows]]
        return _pairs(candidate, other, rows, match[rows], np.sqrt(np.einsum("ij,ij->i", diff, diff)))

    return NearDuplicates("cosine", threshold, flagged(within, yn, candidate), flagged(cross, xn, reference))


def _pairs(candidate: np.ndarray, other: np.ndarray, rows: np.ndarray, matches: np.ndarray, distances: np.ndarray
           ) -> list[Pair]:
    a = np.asarray(candidate, np.float64)[rows]
    b = np.asarray(other, np.float64)[matches]
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    dots = np.einsum("ij,ij->i", a, b)
    return [Pair(int(j), int(i), float(dist), float(dot / nrm) if nrm > 0 else None)
            for j, i, dist, dot, nrm in zip(rows, matches, distances, dots, norms)]


def _unit_rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    if np.any(norms == 0):
        raise ValueError("zero vector: cosine similarity is undefined")
    return x / norms
