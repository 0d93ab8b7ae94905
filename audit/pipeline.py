"""The scan pipeline: from two inputs to a verdict. Embeds what needs embedding, computes every metric, the
synthetic-share estimates and the MAD forecast, applies the policy, and returns a `ScanResult`:
plain data that `report.json` holds verbatim and every report renders from.

    result = audit.scan("data/reference", "data/candidate", detector="detector.json")
    result.verdict      # "pass", "warn" or "fail"
    result.exit_code    # 0, 0, 1: what `madaudit scan` exits with
"""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Callable
from typing import Any

import numpy as np

from audit import __version__
from audit.io import EmbedOptions, EmbeddingSet, InputProblem, LoadedSide, load_pair, side_from_array
from audit.policy import Policy, evaluate, load_policy
from audit.io.files import UNREADABLE_REASONS
from audit.io.jsonfile import read_json
from audit.nearest import blas_description

SCHEMA_VERSION = "madaudit-report/1"
SCHEMA_FILE = Path(__file__).with_name("report.schema.json")
EXIT_CODES = {"pass": 0, "warn": 0, "fail": 1}
DEFAULT_SAMPLE_SIZE = 50_000  # items per side for the set-level numbers


@dataclass
class ScanResult:
    """Everything one scan found. `data` is the report.json document (see report.schema.json)."""

    data: dict[str, Any]

    @property
    def verdict(self) -> str:
        return self.data["verdict"]

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.verdict]

    @property
    def gates(self) -> list[dict[str, Any]]:
        return self.data["gates"]

    def to_dict(self) -> dict[str, Any]:
        return self.data

    def to_json(self, **kwargs) -> str:
        return json.dumps(self.data, allow_nan=False, **kwargs)

    @classmethod
    def from_json(cls, path: str | Path) -> ScanResult:
        """Read a report.json back, checked against the schema (a tampered or truncated file is
        refused with the first problem named, never half rendered)."""
        data = read_json(path, "madaudit report")
        if not isinstance(data, dict) or data.get("schema") != SCHEMA_VERSION:
            raise ValueError(f"{path} is not a madaudit report (schema must be {SCHEMA_VERSION!r})")
        problem = schema_problem(data)
        if problem:
            raise ValueError(f"{path} is not a valid madaudit report: {problem}")
        return cls(data)

    def save(self, folder: str | Path) -> dict[str, Path]:
        """Write report.json, report.md, report.html and junit.xml into `folder` (as `scan` does)."""
        from audit.report import write_reports

        return write_reports(self.data, folder)

    def _repr_html_(self) -> str:
        """In a notebook: the verdict, the summary and the gates (the whole page is `save`'s
        report.html)."""
        from audit.report import notebook_html

        return notebook_html(self.data)

    def regated(self, policy: Policy) -> ScanResult:
        """The same findings judged by another policy's gates, without recomputing anything (the
        forecast keeps the settings it was run with)."""
        data = json.loads(json.dumps(self.data))  # a deep copy
        values = {k: (math.nan if v is None else v) for k, v in data["values"].items()}
        gate_results, verdict = evaluate(policy, values, unknown_reasons(data), gate_notes(data))
        data["gates"] = [r.to_dict() for r in gate_results]
        data["verdict"] = verdict
        data["policy"] = {**policy.to_dict(), "forecast": data["policy"]["forecast"]}
        return ScanResult(_clean(data))


def unknown_reasons(data: dict[str, Any]) -> dict[str, str]:
    """Why a gateable value is unknown, from the report's own findings: a stage that did not run
    (report.json `stages`), or an estimate that could not identify the share."""
    from audit.stages import gate_reasons

    reasons = {}
    sf = data["synthetic_fraction"]
    if not _finite(data["values"].get("synthetic_fraction")):
        why = (sf.get("gate_reads") or {}).get("why") or sf["estimates"][sf["primary"]]["method"]
        reasons = {"synthetic_fraction": f"is unknown ({why})", "synthetic_fraction_lower": f"is unknown ({why})"}
    if not data["forecast"]["available"]:
        why = data["forecast"]["summary"]["reason"]
        reasons.update({"forecast_recall": f"is unknown ({why})", "forecast_tail_coverage": f"is unknown ({why})"})
    reasons.update(gate_reasons(data.get("stages") or []))
    return reasons


def gate_notes(data: dict[str, Any]) -> dict[str, str]:
    """Which estimate the synthetic-share gates read, and why (`detectors.fraction.gate_reading`)."""
    reads = data["synthetic_fraction"].get("gate_reads")
    if not reads or reads["read"] == "none":
        return {}
    names = {"supervised": "the detector's", "unsupervised": "BBE's"}
    return {"synthetic_fraction": f"{names[reads['read']]} estimate; {reads['why']}",
            "synthetic_fraction_lower": f"{names[reads.get('lower_read') or reads['read']]} lower bound; {reads['why']}"}


def schema_problem(data: Any) -> str | None:
    """The first way `data` breaks report.schema.json, or None."""
    import jsonschema

    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema).iter_errors(data))
    if error is None:
        return None
    where = "/".join(str(p) for p in error.absolute_path) or "(top level)"
    message = error.message if len(error.message) < 300 else error.message[:297] + "..."
    return f"at {where}: {message}"


MEASURED_KEYS = {"real_fraction": "number", "real_fraction_interval": "interval", "lam": "number",
                 "lam_interval": "interval", "n": "count"}


def measured_inputs_from_report(path: str | Path) -> dict[str, Any]:
    """The forecast inputs a scan measured (p, lambda, n and their intervals, the synthetic part's
    scores where a detector flagged it, and its separation as `separation_reading`), each checked."""
    forecast = ScanResult.from_json(path).to_dict()["forecast"]
    measured = forecast["measured_inputs"]
    if not isinstance(measured, dict):
        raise ValueError(f"{path}: forecast.measured_inputs must be an object")
    if "reason" in measured and "real_fraction" not in measured:
        raise ValueError(f"{path}: the scan measured no forecast inputs ({measured['reason']})")
    for key, kind in MEASURED_KEYS.items():
        value = measured.get(key)
        if value is None:
            if kind != "interval":
                raise ValueError(f"{path}: forecast.measured_inputs.{key} is missing")
            continue
        ok = {"number": lambda v: _number(v) and 0 <= v <= 1,
              "count": lambda v: isinstance(v, int) and not isinstance(v, bool) and 2 <= v <= 10**7,
              "interval": lambda v: isinstance(v, list) and len(v) == 2 and all(_number(x) for x in v)}[kind](value)
        if not ok:
            raise ValueError(f"{path}: forecast.measured_inputs.{key} = {value!r} is not a valid {kind}")
    if measured["lam"] <= 0:
        raise ValueError(f"{path}: forecast.measured_inputs.lam must be above 0")
    scores = measured.get("synthetic_scores")
    if scores is not None:  # what lambda is matched to: checked like the rest
        interval = scores.get("relative_recall_interval") if isinstance(scores, dict) else None
        if not (isinstance(interval, list) and len(interval) == 2 and all(_number(v) for v in interval)
                and _number(scores.get("relative_recall")) and scores["relative_recall"] > 0):
            raise ValueError(f"{path}: forecast.measured_inputs.synthetic_scores has no valid relative_recall "
                             "with its interval")
    # The scan measured the separation on the flagged items, which the report does not hold.
    reading = (forecast.get("params") or {}).get("separation")
    if isinstance(reading, dict):
        measured["separation_reading"] = reading
    return measured


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def scan(
    reference: str | Path | np.ndarray,
    candidate: str | Path | np.ndarray,
    detector: str | Path | Any | None = None,
    policy: Policy | None = None,
    embed: EmbedOptions | None = None,
    k: int = 5,
    tail_q: float = 0.1,
    duplicate_rule: str = "calibrated",
    duplicate_quantile: float = 0.001,
    duplicate_threshold: float = 0.95,
    n_clusters: int | None = None,
    delta: float = 0.05,
    seed: int = 0,
    gallery_size: int = 24,
    map_points: int = 1000,
    reference_keys: list[str] | None = None,
    candidate_keys: list[str] | None = None,
    model_identity: dict[str, Any] | None = None,
    progress: Callable[[str | None], None] | None = None,
    sample_size: int = DEFAULT_SAMPLE_SIZE,
    items: str | Path | None = None,
    item_settings: Any = None,
) -> ScanResult:
    """Audit `candidate` against `reference` (each an image folder, a .npy file or an embed
    folder). `detector`: a detector.json path or a `SupervisedProbe`. `policy`: default
    `load_policy()` (madaudit.toml / pyproject.toml in the working directory, else defaults).
    Either side may be an (n, d) array of embeddings instead, with `reference_keys` /
    `candidate_keys` and the `model_identity` of the model that made them (report.json kind
    "array"). Raises `InputProblem` for unusable inputs."""
    from audit.items import items_problem
    from audit.metrics import clusters_problem, compare, knn_problem, pairs_problem
    from audit.stages import stage
    from detectors.base import FractionEstimate, ModelMismatch
    from detectors.fraction import FractionReport, estimate_fraction, gate_reading, share_problem
    from detectors.probe import SupervisedProbe

    started = time.time()
    step = progress or (lambda name: None)
    policy = policy or load_policy()
    probe = SupervisedProbe.load(detector) if isinstance(detector, (str, Path)) else detector
    sides = [side_from_array(v, keys, model_identity, f"{name} array") if isinstance(v, np.ndarray) else v
             for v, keys, name in ((reference, reference_keys, "reference"), (candidate, candidate_keys, "candidate"))]
    options = dataclasses.replace(embed or EmbedOptions(), sample_size=sample_size, sample_seed=seed)
    ref, cand = (_subsample(side, sample_size, seed) for side in load_pair(*sides, options))
    x, y = ref.embeddings.vectors, cand.embeddings.vectors
    try:
        step("metrics: one pass over the distances, kernels, clusters, duplicates")
        comparison = compare(x, y, k=k, tail_q=tail_q, duplicate_rule=duplicate_rule, duplicate_quantile=duplicate_quantile,
                             duplicate_threshold=duplicate_threshold, n_clusters=n_clusters, seed=seed,
                             reference_keys=ref.embeddings.keys, candidate_keys=cand.embeddings.keys)
        stages = [stage("knn_metrics", knn_problem(len(x), len(y), k)), stage("fd_kid", pairs_problem(len(x), len(y))),
                  stage("cluster_tail_mass", clusters_problem(len(x), n_clusters))]
        step("synthetic share: detectors")
        share_missing = share_problem(len(x), len(y), k)
        stages.append(stage("synthetic_share", share_missing))
        fraction = (estimate_fraction(x, y, probe, cand.embeddings.model_identity, k=k, delta=delta, seed=seed)
                    if share_missing is None else
                    FractionReport.unavailable(share_missing, len(x), len(y), probe is not None))
        # With a detector its estimate is the answer, even when it says "not identifiable":
        # falling back to another number would pass a gate on what the detector cannot see.
        primary = "supervised" if probe is not None else "unsupervised"
        ranking = primary if _finite(fraction.estimates[primary].value) else "unsupervised"
        scores = fraction.item_scores.get(ranking)  # a detector that cannot separate ranks nothing
        reading = gate_reading(fraction, probe is not None)  # never a number the tool has evidence against
        step("forecast: loops over generations")
        # The forecast starts from the share the gates read, never from one they set aside.
        share = fraction.estimates.get(reading.read) or FractionEstimate(math.nan, None, None, reading.why)
        flagged = fraction.item_scores.get("supervised") if reading.read == "supervised" else None
        forecast, measured, space = _forecast(policy.forecast, x, y, share, k, tail_q, seed,
                                              None if flagged is None else y[flagged >= 0.5])
        stages.append(stage("forecast", None if forecast.available else forecast.summary["reason"]))
        item_summary = None
        if items is not None:
            items_missing = items_problem(len(x), k, probe is not None, fraction.available)
            stages.append(stage("items", items_missing))
            if items_missing is None:
                item_summary = _items(ref, cand, fraction, probe, items, item_settings, k, duplicate_quantile, seed, step)
            else:  # an earlier scan's table would describe other data: `madaudit filter` must not read it
                Path(items).unlink(missing_ok=True)
    except ModelMismatch:
        raise
    except ValueError as exc:  # malformed input that no stage can read around
        raise InputProblem(str(exc)) from None

    metrics = {name: m.to_dict() for name, m in comparison.metrics.items()}
    near_duplicates = comparison.to_dict()["near_duplicates"]
    identity = cand.embeddings.model_identity or ref.embeddings.model_identity
    if untrained_weights(identity):  # said first, on the terminal and at the top of every report
        fraction.warnings.insert(0, "the embeddings come from random, untrained weights (--pretrained random): "
                                    "every number in this report is meaningless; use real weights")
    unreadable = _unreadable(ref) + _unreadable(cand)
    values = {name: m["value"] for name, m in metrics.items()}
    values.update({
        "synthetic_fraction": reading.value,
        "synthetic_fraction_lower": reading.lower,
        "out_of_manifold": fraction.estimates["out_of_manifold"].value,
        "unreadable_share": unreadable / (unreadable + len(x) + len(y)),
        "forecast_recall": forecast.relative["recall"]["median"][-1] if forecast.available else math.nan,
        "forecast_tail_coverage": forecast.relative["tail_coverage"]["median"][-1] if forecast.available else math.nan,
        "index_recall": _index_recall(item_summary) if items is None or item_summary is not None else math.nan,
    })
    if item_summary is not None and cand.sample_rows is not None:
        # The detectors saw a sample; the per-item pass saw every item against the whole reference.
        values["out_of_manifold"] = item_summary["shares"]["outside"]["value"]
    data = {
        "schema": SCHEMA_VERSION,
        "madaudit_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "seconds": round(time.time() - started, 3),
        "verdict": "pass",  # set by the gates below
        "inputs": {"reference": _describe(_input_name(reference, "reference"), ref),
                   "candidate": _describe(_input_name(candidate, "candidate"), cand)},
        "model": cand.embeddings.model_identity or ref.embeddings.model_identity,
        "index": _index(item_summary),
        "settings": {"k": k, "tail_q": tail_q, "duplicate_rule": duplicate_rule, "duplicate_quantile": duplicate_quantile,
                     "duplicate_threshold": duplicate_threshold, "clusters": n_clusters, "delta": delta, "seed": seed,
                     "sample_size": sample_size},
        "items": item_summary,
        "stages": [s.to_dict() for s in stages],
        "metrics": metrics,
        "near_duplicates": near_duplicates,
        "synthetic_fraction": {"primary": primary, "value": values["synthetic_fraction"],
                               "lower": values["synthetic_fraction_lower"],
                               "gate_reads": reading.to_dict(),
                               **fraction.to_dict(), "detector": str(detector) if isinstance(detector, (str, Path))
                               else ("in-memory probe" if probe is not None else None)},
        "forecast": {"measured_inputs": measured, **forecast.to_dict()},
        "policy": policy.to_dict(),
        "gates": [],
        "values": values,
        "gallery": _gallery(fraction.most_suspicious(cand.embeddings.keys, gallery_size, ranking), cand),
        # Neither reference-like nor like the labelled synthetic items: what a disagreement is about.
        "unexplained": _gallery(fraction.most_suspicious(cand.embeddings.keys, gallery_size // 2, "unexplained"), cand),
        "duplicate_pairs": _duplicate_pairs(near_duplicates, ref, cand, gallery_size // 2),
        "map": _map(space, x, y, scores, map_points, seed),
    }
    gate_results, verdict = evaluate(policy, values, unknown_reasons(data), gate_notes(data))
    data["gates"], data["verdict"] = [r.to_dict() for r in gate_results], verdict
    step(None)  # the last step is over
    return ScanResult(_clean(data))


def _subsample(side: LoadedSide, size: int, seed: int) -> LoadedSide:
    """A side loaded whole (images, parquet, arrays) with more than `size` items keeps a seeded
    uniform sample for the set-level numbers, and the whole set for the per-item pass."""
    n = len(side.embeddings.keys)
    if side.sample_rows is not None or n <= size:
        return side
    rows = np.sort(np.random.default_rng(seed).choice(n, size, replace=False))
    full = side.embeddings
    sampled = EmbeddingSet([full.keys[i] for i in rows], full.vectors[rows], full.model_identity, full.source)
    return dataclasses.replace(side, embeddings=sampled, population=n, sample_rows=rows, full=full)


def _stream(side: LoadedSide):
    """Every item of a side, part by part: from memory when the side is held whole, else (embedding
    files of which only a sample was read) from the files again."""
    from audit.items import ArraySource, FolderSource

    if side.sample_rows is not None and side.full is None:
        return FolderSource.open(side.path)
    full = side.full or side.embeddings
    return ArraySource(full.vectors, list(full.keys))


def _items(ref: LoadedSide, cand: LoadedSide, fraction, probe, path, settings, k: int, duplicate_quantile: float,
           seed: int, step) -> dict[str, Any]:
    """The per-item pass over every candidate item (items.parquet at `path`); its summary."""
    from audit.items import ItemSettings, UnsupervisedItems, scan_items

    settings = dataclasses.replace(settings or ItemSettings(), k=k, duplicate_quantile=duplicate_quantile, seed=seed)
    seen = cand.sample_rows if cand.sample_rows is not None else np.arange(len(cand.embeddings.keys))
    unsupervised = UnsupervisedItems(fraction.unsupervised_scorer, fraction.reference_scores, seen,
                                     fraction.item_scores["unsupervised"])
    return scan_items(_stream(ref), _stream(cand), path, settings, probe, cand.embeddings.model_identity,
                      unsupervised, progress=step)


def _index(summary: dict[str, Any] | None) -> dict[str, Any]:
    """How nearest neighbours were found: the set-level pass is exact; the per-item pass says
    which index each side had and its measured recall@10."""
    out = {"kind": "exact", "library": "numpy", "blas": blas_description(), "recall": 1.0}
    if summary is None:
        return out
    per_item = summary["index"]
    approximate = any(v["kind"] == "ivf" for v in per_item.values())
    return {**out, "kind": "approximate" if approximate else "exact", "recall": _index_recall(summary),
            "per_item": per_item}


def _index_recall(summary: dict[str, Any] | None) -> float:
    """The lowest measured recall@10 of the per-item pass's indexes (1.0 when every search was exact)."""
    if summary is None:
        return 1.0
    return min(v["recall"]["value"] for v in summary["index"].values())


MIN_FLAGGED_FOR_RECALL = 50  # candidate items the detector calls synthetic, to score the synthetic part


def _forecast(settings, x: np.ndarray, y: np.ndarray, estimate, k: int, tail_q: float, seed: int,
              flagged: np.ndarray | None = None):
    """The forecast at the inputs measured on this audit (p, lambda with intervals, n); with a
    reference too small for the stand-ins, or without a measured synthetic share, there is nothing
    to forecast, and the report says why. Also the reference's principal space (None if too small).
    `flagged`: the candidate items the detector calls synthetic; with enough of them lambda is
    matched to their recall and their separation is carried by the forecast (benchmarks/README.md,
    real loops: moments read guided samples as lambda = 1, and guidance pushes classes apart),
    else lambda comes from the moments, where they define it."""
    from audit import projector

    too_small = projector.space_problem(x.shape, k)
    space = None if too_small else projector.ReferenceSpace.fit(x, settings.dim, k=k, tail_q=tail_q, seed=seed)
    reason = too_small or (None if _finite(estimate.value) else f"the synthetic share is unknown ({estimate.method})")
    if reason:
        return projector.Forecast.unavailable(settings.loop, reason), {"reason": reason}, space
    measured = projector.inputs_from_audit(x, y, estimate.value, (estimate.lower, estimate.upper), seed=seed)
    part = synthetic_part_inputs(space, x, flagged, seed)
    if "synthetic_scores" in part:
        measured["synthetic_scores"] = part["synthetic_scores"]
    forecast = projector.project(
        None, loop=settings.loop, model=settings.model, generations=settings.generations, runs=settings.runs,
        seed=seed, threshold=settings.threshold, space=space, k=k, eval_size=settings.eval_size,
        real_fraction=measured["real_fraction"], real_fraction_interval=measured["real_fraction_interval"],
        lam=measured["lam"], lam_interval=measured["lam_interval"], n=measured["n"],
        synthetic_recall=part.get("synthetic_recall"), synthetic_items=part.get("synthetic_items"),
        inputs_meaning=projector.inputs_meaning(measured))
    return forecast, measured, space


def synthetic_part_inputs(space, reference: np.ndarray, flagged: np.ndarray | None, seed: int) -> dict[str, Any]:
    """What the forecast takes from the items a detector calls synthetic, the same for `scan` and
    `project CANDIDATE --detector`: their scores against the reference (`synthetic_scores`), the
    recall lambda is matched to, and the items whose separation the forecast measures. Empty
    with fewer than MIN_FLAGGED_FOR_RECALL of them (lambda then comes from the moments)."""
    from audit import projector

    if flagged is None or len(flagged) < MIN_FLAGGED_FOR_RECALL:
        return {}
    real = reference[np.setdiff1d(np.arange(len(reference)), space.eval_rows)]
    scores = projector.synthetic_scores(space, flagged, real, seed=seed)
    return {"synthetic_scores": scores, "synthetic_items": flagged, "synthetic_recall": recall_target(scores)}


def recall_target(scores: dict[str, Any]) -> tuple[float, float, float]:
    """The synthetic part's relative recall with its interval: what lambda is matched to."""
    return (scores["relative_recall"], *scores["relative_recall_interval"])


def _finite(v: float | None) -> bool:
    return v is not None and math.isfinite(v)


def _unreadable(side: LoadedSide) -> int:
    return sum(1 for s in side.skipped if s.reason in UNREADABLE_REASONS)


def untrained_weights(identity: dict[str, Any] | None) -> bool:
    """Whether a model identity says the weights were a random initialisation."""
    weights = (identity or {}).get("weights")
    return isinstance(weights, dict) and "random_init_seed" in weights


def _input_name(source: Any, name: str) -> str:
    return f"<{name} array>" if isinstance(source, np.ndarray) else str(source)


def _describe(path: str | Path, side: LoadedSide) -> dict[str, Any]:
    reasons: dict[str, int] = {}
    for s in side.skipped:
        reasons[s.reason] = reasons.get(s.reason, 0) + 1
    sample = None
    if side.sample_rows is not None:
        sample = {"items": len(side.embeddings.keys), "method": "seeded uniform sample without replacement "
                  "(settings.seed); the set-level numbers use it, the per-item pass every item"}
    return {"path": str(path), "kind": side.kind, "items": side.population or len(side.embeddings.keys),
            "sample": sample,
            "unreadable": _unreadable(side), "skipped_by_reason": reasons,
            "skipped": [{"key": s.key, "reason": s.reason, "detail": s.detail} for s in side.skipped[:1000]]}


def _gallery(items: list[dict[str, Any]], side: LoadedSide) -> list[dict[str, Any]]:
    """The most suspicious candidate items, each with its thumbnail (`_thumbnail`)."""
    return [{**item, "thumbnail": _thumbnail(side, item["key"])} for item in items]


def _duplicate_pairs(near_duplicates: dict[str, Any], ref: LoadedSide, cand: LoadedSide, size: int
                     ) -> list[dict[str, Any]]:
    """The closest near-duplicate pairs of each kind, both sides with thumbnails, for the report."""
    out = []
    for kind, other in (("copies_of_reference", ref), ("within_candidate", cand)):
        for pair in near_duplicates[kind][:size]:
            out.append({"kind": kind, **pair, "candidate_thumbnail": _thumbnail(cand, pair["candidate"]),
                        "match_thumbnail": _thumbnail(other, pair["match"])})
    return out


def _thumbnail(side: LoadedSide, key: str, size: int = 96) -> str | None:
    """A PNG thumbnail (data URI) of the item's image when it can be had safely
    (`LoadedSide.image_bytes`), so the HTML report stays one self-contained file; else None."""
    from audit.io.files import DecodeFailure, decode_image

    data = side.image_bytes(key) if isinstance(key, str) else None
    if data is None:
        return None
    try:
        im = decode_image(data, max_pixels=64_000_000)
        im.thumbnail((size, size))
        if max(im.size) < size:  # tiny images (digits): scale up, pixels kept sharp
            scale = size // max(im.size)
            im = im.resize((im.width * scale, im.height * scale), 0)  # nearest
        buf = io.BytesIO()
        im.save(buf, format="PNG")
        return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    except (DecodeFailure, OSError, ValueError):
        return None  # changed since it was embedded: the item is still listed


def _map(space, x: np.ndarray, y: np.ndarray, scores: np.ndarray | None, max_points: int, seed: int
         ) -> dict[str, Any]:
    """Both sets on the reference's first two principal axes (those the forecast's space already
    has, else their own), a seeded subsample of each; coloured by how synthetic each candidate item
    looks where the synthetic-share stage ran."""
    rng = np.random.default_rng(seed)
    if space is not None:
        mean, axes = space.mean, space.components[:2]
    else:  # a reference too small for the forecast: its own axes (fewer than two items: zeros)
        mean = x.mean(axis=0, dtype=np.float64)
        axes = np.zeros((2, x.shape[1]))
        found = np.linalg.svd(x - mean, full_matrices=False)[2][:2] if len(x) > 1 else axes[:0]
        axes[:len(found)] = found

    def project(v: np.ndarray, idx: np.ndarray) -> list[list[float]]:
        return np.round((v[idx] - mean) @ axes.T, 4).tolist()

    xi = np.sort(rng.permutation(len(x))[:max_points])
    yi = np.sort(rng.permutation(len(y))[:max_points])
    return {"method": "PCA of the reference, first two axes", "reference": project(x, xi),
            "candidate": project(y, yi), "candidate_score": [] if scores is None else np.round(scores[yi], 4).tolist()}


def _clean(value: Any) -> Any:
    """JSON-ready: numpy scalars to Python, NaN and infinities to None (JSON has neither)."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, np.ndarray):
        return _clean(value.tolist())
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value
