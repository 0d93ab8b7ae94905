"""Every candidate item's verdict, one part at a time: `score_part` is a plain function of the part
and a shared `ItemContext`, so the single process and a Ray worker compute the same rows.

Per item (the columns of items.parquet):

| column                        | what                                                                   |
|-------------------------------|------------------------------------------------------------------------|
| row, key                      | the item's row in the candidate and its key                            |
| supervised_score              | the detector's synthetic probability (with a detector)                 |
| unsupervised_score            | share of held-out reference items more reference-like than the item    |
| reference_balls               | reference k-NN balls holding it (in the lists searched)                 |
| nearest_reference_key, _distance, _cosine | its nearest reference item (copies, leaks)                 |
| nearest_candidate_row, _distance, _cosine | its nearest other candidate item (duplicates)              |
| synthetic, copy, duplicate, outside       | the flags (`ItemRules`)                                    |
| keep                          | no flag of the policy's drop list is set                               |

Flags: `copy` when the nearest reference item is within the duplicate radius (the calibrated
rule: the q-quantile of the reference's own nearest-neighbour distances); `duplicate` when an
earlier candidate row is within that radius among its nearest (so of a group of near copies the
first is kept, the rest dropped); `outside` when no reference ball holds it; `synthetic` when the
primary score reaches its threshold (the detector's probability >= 0.5; without a detector, the
unsupervised score >= 0.99, which a held-out real item reaches 1% of the time).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from audit.items.ivf import ListIndex

DROP_REASONS = ("synthetic", "copies", "duplicates", "outside")
FLAG_OF_REASON = {"synthetic": "synthetic", "copies": "copy", "duplicates": "duplicate", "outside": "outside"}
DEFAULT_DROP = ("synthetic", "copies", "duplicates")
DUPLICATE_NEIGHBOURS = 10  # earlier near copies looked for among this many nearest candidates
NEAREST_REFERENCES = 10  # nearest reference items found per candidate item (recall@10 is measured)
UNSUPERVISED_THRESHOLD = 0.99
SUPERVISED_THRESHOLD = 0.5


def parse_drop(text: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """'synthetic,copies' -> ('synthetic', 'copies'), each checked."""
    names = [t.strip() for t in (text.split(",") if isinstance(text, str) else text) if t.strip()]
    unknown = [n for n in names if n not in DROP_REASONS]
    if unknown:
        raise ValueError(f"unknown drop reason {unknown[0]!r} (use any of {', '.join(DROP_REASONS)})")
    return tuple(dict.fromkeys(names))


@dataclass(frozen=True)
class ItemRules:
    k: int
    duplicate_radius: float
    duplicate_quantile: float
    synthetic_by: str  # "supervised" or "unsupervised"
    synthetic_threshold: float
    drop: tuple[str, ...] = DEFAULT_DROP

    def to_dict(self) -> dict:
        return {"k": self.k, "duplicate_radius": self.duplicate_radius, "duplicate_quantile": self.duplicate_quantile,
                "synthetic_by": self.synthetic_by, "synthetic_threshold": self.synthetic_threshold,
                "drop": list(self.drop)}


@dataclass
class UnsupervisedItems:
    """What the unsupervised score of any candidate row needs: the fitted scorer, the reference's
    held-out scores, and the set-level scores of the rows the detectors already saw (those keep
    their fold; other rows are new to every fold model and take fold row mod FOLDS)."""

    scorer: object  # detectors.bbe.CrossfitScorer
    reference_scores: np.ndarray
    seen_rows: np.ndarray  # sorted global rows
    seen_scores: np.ndarray  # their atypicality

    def atypicality(self, rows: np.ndarray, vectors: np.ndarray) -> np.ndarray:
        from detectors.bbe import FOLDS
        from detectors.fraction import atypicality

        out = np.empty(len(rows))
        at = np.clip(np.searchsorted(self.seen_rows, rows), 0, max(len(self.seen_rows) - 1, 0))
        seen = (self.seen_rows[at] == rows) if len(self.seen_rows) else np.zeros(len(rows), bool)
        out[seen] = self.seen_scores[at[seen]]
        new = np.flatnonzero(~seen)
        if len(new):
            raw = self.scorer.score(vectors[new], rows[new] % FOLDS)
            out[new] = atypicality(self.reference_scores, raw)
        return out


@dataclass
class ItemContext:
    reference: ListIndex
    reference_keys: list[str]
    candidate: ListIndex
    rules: ItemRules
    probe: object | None = None  # detectors.probe.SupervisedProbe
    probe_identity: dict | None = None
    unsupervised: UnsupervisedItems | None = None


def score_part(ctx: ItemContext, start: int, keys: list[str], vectors: np.ndarray) -> dict[str, object]:
    """The items.parquet columns of candidate rows start .. start + len(vectors)."""
    rows = np.arange(start, start + len(vectors), dtype=np.int64)
    rules = ctx.rules
    radius_sq = rules.duplicate_radius ** 2
    ref = ctx.reference.search(vectors, min(NEAREST_REFERENCES, len(ctx.reference.vectors)), balls=True)
    within = ctx.candidate.search(vectors, DUPLICATE_NEIGHBOURS, self_rows=rows) if ctx.candidate.vectors.shape[0] > 1 \
        else None
    balls = ref.balls
    columns: dict[str, object] = {"row": rows, "key": list(keys)}
    if ctx.probe is not None:
        columns["supervised_score"] = ctx.probe.scores(vectors, ctx.probe_identity)
    if ctx.unsupervised is not None:
        columns["unsupervised_score"] = ctx.unsupervised.atypicality(rows, vectors)
    columns["reference_balls"] = balls.astype(np.int32)
    nearest_ref = ref.rows[:, 0]
    columns["nearest_reference_key"] = [ctx.reference_keys[int(r)] for r in nearest_ref]
    columns["nearest_reference_distance"] = np.sqrt(ref.sq[:, 0])
    columns["nearest_reference_cosine"] = _cosine(vectors, ctx.reference, ref.rows[:, 0])
    if within is not None:
        columns["nearest_candidate_row"] = within.rows[:, 0]
        columns["nearest_candidate_distance"] = np.sqrt(within.sq[:, 0])
        columns["nearest_candidate_cosine"] = _cosine(vectors, ctx.candidate, within.rows[:, 0])
        duplicate = np.any((within.sq <= radius_sq) & (within.rows >= 0) & (within.rows < rows[:, None]), axis=1)
    else:
        duplicate = np.zeros(len(rows), bool)
    score = columns.get(f"{rules.synthetic_by}_score")
    columns["synthetic"] = (np.asarray(score) >= rules.synthetic_threshold) if score is not None \
        else np.zeros(len(rows), bool)
    columns["copy"] = ref.sq[:, 0] <= radius_sq
    columns["duplicate"] = duplicate
    columns["outside"] = balls == 0
    columns["keep"] = keep_mask(columns, rules.drop)
    return columns


def keep_mask(columns: dict[str, object], drop: tuple[str, ...]) -> np.ndarray:
    """True where no flag named by `drop` is set."""
    n = len(columns["row"])
    keep = np.ones(n, bool)
    for reason in drop:
        keep &= ~np.asarray(columns[FLAG_OF_REASON[reason]], bool)
    return keep


def _cosine(vectors: np.ndarray, index: ListIndex, rows: np.ndarray) -> np.ndarray:
    """Cosine of each vector with the stored vector of global row rows[i] (float64)."""
    other = index.stored(rows).astype(np.float64)
    mine = vectors.astype(np.float64)
    norms = np.linalg.norm(mine, axis=1) * np.linalg.norm(other, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(norms > 0, np.einsum("ij,ij->i", mine, other) / norms, np.nan)
