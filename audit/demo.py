"""`madaudit demo`: the whole pipeline offline, on generated digits whose truth is known.

Builds the digit fixtures (real scans, plus a candidate that is 20% synthetic digits from a
biased Gaussian-mixture generator), trains a detector on labelled synthetic digits, and scans
the candidate with the `pixels` embedder (no downloaded weights), writing every report.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

from audit.digits import DigitFixtureSpec, make_digit_fixtures
from audit.io import EmbedOptions, check_compatible, load_side
from audit.policy import DEFAULT_POLICY
from audit.report import write_reports
from audit.pipeline import ScanResult, scan


def run_demo(out: str | Path, seed: int = 0, progress: Callable[[str], None] = lambda msg: None
             ) -> tuple[ScanResult, dict[str, str]]:
    from detectors.probe import SupervisedProbe

    out = Path(out)
    fixtures = out / "fixtures"
    progress(f"1/4 writing digit fixtures to {fixtures}")
    manifest = make_digit_fixtures(fixtures, DigitFixtureSpec(seed=seed))
    options = EmbedOptions(model="pixels", cache=str(out / "embeddings.sqlite"), progress=False)

    progress("2/4 training a detector: reference digits vs labelled synthetic digits (pixels embedder)")
    shared: dict = {}
    real = load_side(fixtures / "reference", options, shared).embeddings
    synthetic = load_side(fixtures / "labelled-synthetic", options, shared).embeddings
    check_compatible(real, synthetic)
    detector = out / "detector.json"
    SupervisedProbe.fit_generators(real.vectors, {"labelled-synthetic": synthetic.vectors}, real.model_identity,
                                   seed=seed).save(detector)

    progress("3/4 scanning fixtures/candidate against fixtures/reference")
    result = scan(fixtures / "reference", fixtures / "candidate", detector, DEFAULT_POLICY, options, seed=seed,
                  items=out / "report" / "items.parquet")
    progress(f"4/4 writing reports to {out / 'report'}")
    written = write_reports(result.to_dict(), out / "report")
    return result, {"truth": _truth(manifest), **{k: str(v) for k, v in written.items()}}


def _truth(manifest: Path) -> str:
    with open(manifest, newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["split"] == "candidate"]
    synthetic = sum(r["is_synthetic"] == "1" for r in rows)
    return f"the candidate holds {synthetic} synthetic digits of {len(rows)} ({synthetic / len(rows):.0%})"
