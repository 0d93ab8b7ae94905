"""The per-item pass end to end: index both sides, measure the indexes' recall, read the
reference's radii and the duplicate radius, score every candidate part (here or on Ray), and
write items.parquet part by part.

Memory: the two indexes (4 d bytes per item of each side, every vector stored once) and one part;
the candidate is read three times (assign to lists, place, score), never held twice.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from audit.items.ivf import ListIndex, Recall, tune_nprobe
from audit.items.scoring import (SUPERVISED_THRESHOLD, UNSUPERVISED_THRESHOLD, DEFAULT_DROP, ItemContext,
                                 ItemRules, UnsupervisedItems, score_part)
from audit.items.source import PartSource, Span
from audit.items.table import ItemsWriter

ENGINES = ("local", "ray")
RECALL_K = 10
DEFAULT_TARGET_RECALL = 0.95
DEFAULT_RECALL_QUERIES = 1000
MIN_RECALL_QUERIES = 50  # fewer candidate items than twice this: the approximate index searches every list


class EngineProblem(RuntimeError):
    """The engine asked for cannot run (Ray not installed, no cluster at the address)."""


@dataclass
class ItemSettings:
    k: int = 5
    duplicate_quantile: float = 0.001
    drop: tuple[str, ...] = DEFAULT_DROP
    exact: bool = False
    nlist: int | None = None  # lists of each approximate index (None: by size, `ivf.default_nlist`)
    target_recall: float = DEFAULT_TARGET_RECALL
    recall_queries: int = DEFAULT_RECALL_QUERIES
    engine: str = "local"
    address: str | None = None
    workers: int | None = None
    seed: int = 0


def items_problem(n_reference: int, k: int, detector: bool, unsupervised_scores: bool) -> str | None:
    """Why the per-item pass cannot run, or None: it needs the reference's k-NN balls (more than k
    reference items) and a calibrated synthetic score for every item (without one, every item
    would read "not synthetic"): a detector's, or the synthetic-share stage's unsupervised score,
    whose flag (the share of held-out reference items less typical) means a 1 - threshold false
    positive rate only with at least 1 / (1 - threshold) reference items."""
    if n_reference <= k:
        return f"the per-item pass needs more than k={k} reference items, have {n_reference}"
    if detector:
        return None
    if not unsupervised_scores:
        return "the per-item synthetic flag needs a detector or the synthetic-share estimates, which did not run"
    need = math.ceil(1 / (1 - UNSUPERVISED_THRESHOLD) - 1e-9)
    if n_reference < need:
        return (f"without a detector the per-item synthetic flag (unsupervised score >= {UNSUPERVISED_THRESHOLD:g}) "
                f"is calibrated only on at least {need} reference items, have {n_reference}")
    return None


def scan_items(reference: PartSource, candidate: PartSource, out: str | Path, settings: ItemSettings | None = None,
               probe: Any = None, probe_identity: dict | None = None, unsupervised: UnsupervisedItems | None = None,
               progress: Callable[[str | None], None] | None = None) -> dict[str, Any]:
    """Score every candidate item into `out` (items.parquet); returns the summary report.json keeps."""
    settings = settings or ItemSettings()
    step = progress or (lambda name: None)
    if reference.dim != candidate.dim:
        raise ValueError(f"reference has dimension {reference.dim}, candidate {candidate.dim}")
    if reference.count <= settings.k:
        raise ValueError(f"need more than k={settings.k} reference items, have {reference.count}")
    times: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        times[name] = round(now - clock, 3)
        clock = now

    step("items: indexing the reference and the candidate")
    ref_index = ListIndex.build(reference, exact=settings.exact, nlist=settings.nlist, seed=settings.seed)
    cand_index = ListIndex.build(candidate, exact=settings.exact, nlist=settings.nlist, seed=settings.seed + 1)
    lap("index")
    step("items: measuring the indexes' recall")
    recalls = _measure_recall(ref_index, cand_index, candidate, settings)
    lap("recall")
    step("items: the reference's radii")
    sq_radii, nn_sq = _reference_radii(ref_index, reference, settings.k)
    radius = math.sqrt(float(np.quantile(nn_sq, settings.duplicate_quantile, method="inverted_cdf")))
    lap("radii")
    by = "supervised" if probe is not None else "unsupervised"
    rules = ItemRules(settings.k, radius, settings.duplicate_quantile, by,
                      SUPERVISED_THRESHOLD if by == "supervised" else UNSUPERVISED_THRESHOLD, tuple(settings.drop))
    ref_index.set_ball_radii(sq_radii)
    ctx = ItemContext(ref_index, reference.all_keys(), cand_index, rules, probe, probe_identity, unsupervised)
    step(f"items: scoring {candidate.count:,} candidate items ({settings.engine})")
    out = Path(out)
    with ItemsWriter(out) as writer:
        for columns in score_parts(ctx, candidate, settings):
            writer.write(columns)
    lap("score")
    summary = {"path": out.name, "items": writer.rows, "rules": rules.to_dict(), "engine": settings.engine,
               "counts": writer.counts, "shares": _shares(writer.counts, writer.rows),
               "index": {"reference": {**ref_index.describe(), "recall": recalls["reference"]},
                         "candidate": {**cand_index.describe(), "recall": recalls["candidate"]}},
               "seconds": times}
    step(None)
    return summary


def score_parts(ctx: ItemContext, source: PartSource, settings: ItemSettings) -> Iterator[dict[str, Any]]:
    """Every part's columns, in part order, computed here or on Ray."""
    if settings.engine == "local":
        for span, keys, vectors in source.parts():
            yield score_part(ctx, span.start, keys, vectors)
        return
    if settings.engine != "ray":
        raise EngineProblem(f"unknown engine {settings.engine!r} (use {' or '.join(ENGINES)})")
    yield from _ray_parts(ctx, source, settings)


def _score_span(ctx: ItemContext, source: PartSource, span: Span) -> dict[str, Any]:
    keys, vectors = source.read(span)
    return score_part(ctx, span.start, keys, vectors)


def _ray_parts(ctx: ItemContext, source: PartSource, settings: ItemSettings) -> Iterator[dict[str, Any]]:
    """One Ray task per part; the context and the source go to the object store once; at most two
    parts per worker in flight, results taken in part order (so memory stays bounded)."""
    try:
        import ray
    except ImportError:
        raise EngineProblem("--engine ray needs Ray: pip install 'madaudit[ray]'") from None
    started_here = not ray.is_initialized()
    if started_here:
        try:
            ray.init(address=settings.address, num_cpus=settings.workers if settings.address is None else None,
                     include_dashboard=False, log_to_driver=False, configure_logging=False)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise EngineProblem(f"cannot start or reach the Ray cluster ({exc})") from None
    try:
        workers = max(1, int(ray.cluster_resources().get("CPU", 1)))
        remote = ray.remote(num_cpus=1)(_score_span)
        ctx_ref, source_ref = ray.put(ctx), ray.put(source)
        pending: deque = deque()
        for span in source.spans:
            pending.append(remote.remote(ctx_ref, source_ref, span))
            if len(pending) >= 2 * workers:
                yield ray.get(pending.popleft())
        while pending:
            yield ray.get(pending.popleft())
    finally:
        if started_here:
            ray.shutdown()


def _measure_recall(ref_index: ListIndex, cand_index: ListIndex, candidate: PartSource, settings: ItemSettings
                    ) -> dict[str, dict[str, Any]]:
    """Each index's recall@10 for the queries it serves (candidate items), nprobe tuned on one
    seeded sample and measured on another; exact indexes are exact by construction."""
    out = {}
    n = min(candidate.count, 2 * settings.recall_queries)
    rows = np.random.default_rng(settings.seed + 7).permutation(candidate.sample_rows(n, settings.seed + 7))
    tune_rows, check_rows = np.sort(rows[: n // 2]), np.sort(rows[n // 2:])
    vectors = {"tune": candidate.take(tune_rows), "check": candidate.take(check_rows)}
    for name, index, self_search in (("reference", ref_index, False), ("candidate", cand_index, True)):
        k = min(RECALL_K, len(index.vectors) - int(self_search))
        if index.nlist == 1 or k < 1 or len(tune_rows) < MIN_RECALL_QUERIES:
            index.nprobe = index.nlist  # too few queries to measure recall on: search every list
            out[name] = {"k": RECALL_K, "value": 1.0, "interval": [1.0, 1.0], "queries": 0,
                         "measured_on": "exact search: every stored vector is compared"}
            continue
        recall: Recall = tune_nprobe(index, vectors["tune"], vectors["check"], k, settings.target_recall,
                                     tune_rows if self_search else None, check_rows if self_search else None)
        out[name] = recall.to_dict()
    return out


def _reference_radii(index: ListIndex, reference: PartSource, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(squared k-NN radius, squared nearest-neighbour distance) of every reference row."""
    sq_radii = np.empty(reference.count)
    nn_sq = np.empty(reference.count)
    for span, _, vectors in reference.parts():
        found = index.search(vectors, k, self_rows=np.arange(span.start, span.stop))
        sq_radii[span.start:span.stop] = found.sq[:, k - 1]
        nn_sq[span.start:span.stop] = found.sq[:, 0]
    return sq_radii, nn_sq


def _shares(counts: dict[str, int], n: int) -> dict[str, Any]:
    from audit.metrics import wilson_interval

    out = {}
    for name, count in counts.items():
        out[name] = {"value": count / n if n else None, "ci": list(wilson_interval(count, n)) if n else None}
    return out
