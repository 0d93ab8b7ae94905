"""The committed digit fixtures are what the generator makes, with the documented share."""

import csv
from pathlib import Path

import numpy as np
from PIL import Image

from audit.digits import DigitFixtureSpec, make_digit_fixtures

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "digits"


def read_manifest(root: Path) -> list[dict]:
    with open(root / "manifest.csv") as fh:
        return list(csv.DictReader(fh))


def test_committed_fixtures_match_the_generator(tmp_path):
    make_digit_fixtures(tmp_path)
    fresh, committed = read_manifest(tmp_path), read_manifest(FIXTURES)
    assert fresh == committed
    for row in committed:
        a = np.asarray(Image.open(tmp_path / row["key"]))
        b = np.asarray(Image.open(FIXTURES / row["key"]))
        np.testing.assert_array_equal(a, b, err_msg=row["key"])


def test_fixture_composition():
    spec = DigitFixtureSpec()
    rows = read_manifest(FIXTURES)
    candidate = [r for r in rows if r["split"] == "candidate"]
    assert len(candidate) == spec.n_candidate
    assert sum(int(r["is_synthetic"]) for r in candidate) == round(spec.synthetic_share * spec.n_candidate)
    assert sum(r["split"] == "reference" for r in rows) == spec.n_reference
    assert all(r["is_synthetic"] == "0" for r in rows if r["split"] == "reference")
    for r in rows:
        assert (FIXTURES / r["key"]).is_file()


def test_synthetic_digits_are_less_diverse_than_real():
    """lambda < 1 shrinks each component: the synthetic pixels spread less than the real ones."""
    rows = read_manifest(FIXTURES)

    def pixels(split, synthetic):
        keys = [r["key"] for r in rows if r["split"] == split and r["is_synthetic"] == synthetic]
        return np.stack([np.asarray(Image.open(FIXTURES / k), dtype=np.float64).ravel() for k in keys])

    real = pixels("reference", "0")
    fake = np.vstack([pixels("candidate", "1"), pixels("labelled-synthetic", "1")])
    assert np.trace(np.cov(fake.T)) < 0.9 * np.trace(np.cov(real.T))
