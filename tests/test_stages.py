"""A scan degrades stage by stage: on sets too small for a stage, that stage says why it did not
run, the gates reading it are unknown at their severity, and every other stage still reports."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from click.testing import CliRunner

from audit.cli import main
from audit.metrics import clusters_problem, compare, knn_problem, pairs_problem
from audit.items import items_problem
from audit.projector import ReferenceSpace, space_problem
from conftest import write_images
from detectors.fraction import estimate_fraction, minimum_items, share_problem

REPORTS = ("report.json", "report.md", "report.html", "junit.xml")


def shuffled_food(real_clip, seed=0):
    pool = np.vstack([real_clip["food_train"], real_clip["food_test"]])
    return pool[np.random.default_rng(seed).permutation(len(pool))]


# --- each stage's minimum is exactly where its code starts to work ---------------------------


@pytest.mark.parametrize("k", [1, 3, 5, 10])
def test_synthetic_share_minimum_is_the_smallest_size_that_runs(real_clip, k):
    x = shuffled_food(real_clip)
    need = minimum_items(k)
    assert share_problem(need, need, k) is None and share_problem(need - 1, need, k) is not None
    report = estimate_fraction(x[:need], x[1000:1000 + need], k=k)  # runs at the minimum
    assert math.isfinite(report.estimates["unsupervised"].value)
    with pytest.raises(ValueError, match=f"at least {need} items"):
        estimate_fraction(x[:need - 1], x[1000:1000 + need], k=k)
    # One below, the cross-fitted features themselves would not have k neighbours: brute check of the rule.
    n = need - 1
    assert n - math.ceil(n / 10) - 2 < k or n <= max(k, 4)


def test_knn_metrics_minimum(real_clip):
    x = shuffled_food(real_clip)
    assert knn_problem(6, 6, 5) is None and "more than k=5" in knn_problem(5, 6, 5)
    full = compare(x[:6], x[100:106], k=5)
    assert all(math.isfinite(full.metrics[name].value) for name in ("precision", "recall", "coverage"))
    small = compare(x[:5], x[100:106], k=5)
    for name in ("precision", "recall", "density", "coverage", "tail_coverage", "duplicate_rate", "reference_copy_rate"):
        assert math.isnan(small.metrics[name].value) and small.metrics[name].method.startswith("not available")
    # What needs no k-NN ball is still computed, and equals the full computation's definition.
    for name in ("fd", "cmmd", "vendi_ratio", "kid"):
        assert math.isfinite(small.metrics[name].value)
    assert small.metrics["fd"].value == pytest.approx(compare(x[:5], x[100:106], k=2).metrics["fd"].value, rel=1e-12)


def test_fd_kid_and_cluster_minimums(real_clip):
    x = shuffled_food(real_clip)
    assert pairs_problem(2, 2) is None and pairs_problem(1, 5) is not None
    one = compare(x[:1], x[100:103], k=5)
    assert math.isnan(one.metrics["fd"].value) and math.isnan(one.metrics["kid"].value)
    assert math.isfinite(one.metrics["cmmd"].value) and one.metrics["cmmd"].value > 0
    assert clusters_problem(2, None) is None and clusters_problem(1, None) is not None
    assert clusters_problem(9, 10) is not None and clusters_problem(10, 10) is None
    assert math.isnan(compare(x[:9], x[100:120], k=5, n_clusters=10).metrics["cluster_tail_mass"].value)


def test_forecast_minimum(real_clip):
    x = shuffled_food(real_clip).astype(np.float64)
    need = 2 * max(2 * 5, 20) + 2
    assert space_problem((need, 512), 5) is None and str(need) in space_problem((need - 1, 512), 5)
    ReferenceSpace.fit(x[:need], 8, k=5)  # runs at the minimum
    with pytest.raises(ValueError, match=f"at least {need}"):
        ReferenceSpace.fit(x[:need - 1], 8, k=5)


def test_items_minimum():
    assert items_problem(5, 5, True, True) is not None  # no k-NN balls
    assert items_problem(6, 5, True, False) is None  # a detector scores every item
    assert "did not run" in items_problem(200, 5, False, False)
    # Without a detector the flag (score >= 0.99) means a 1% false-positive rate only on >= 100 reference scores.
    assert items_problem(99, 5, False, True) is not None and items_problem(100, 5, False, True) is None


# --- whole scans of tiny sets: never exit 3, every report written, the skipped stages named ----


def scan(args, tmp_path):
    out = tmp_path / "report"
    result = CliRunner().invoke(main, ["scan", *map(str, args), "--out", str(out)], catch_exceptions=False)
    return result, out


def check_degraded(result, out, n):
    assert result.exit_code in (0, 1), result.output
    for name in REPORTS:
        assert (out / name).is_file(), name
    data = json.loads((out / "report.json").read_text())
    stages = {s["name"]: s for s in data["stages"]}
    expect_off = {"forecast"} | ({"synthetic_share"} if n < minimum_items(5) else set()) | \
                 ({"knn_metrics"} if n <= 5 else set())
    for name in expect_off:
        assert not stages[name]["available"] and stages[name]["reason"], stages[name]
        terminal = " ".join(result.output.split())  # the reasons wrap to the terminal's width
        assert f"not available: {stages[name]['title']}: {stages[name]['reason']}" in terminal  # which and why
        assert stages[name]["title"] in (out / "report.md").read_text()
    for name in {"knn_metrics", "synthetic_share"} - expect_off:
        assert stages[name]["available"]
    gates = {g["metric"]: g for g in data["gates"]}
    assert gates["forecast_recall"]["unknown"] and "did not run" in gates["forecast_recall"]["message"]
    if "synthetic_share" in expect_off:  # the fail gate on the share reads unknown, and counts as a fail
        assert gates["synthetic_fraction_lower"]["status"] == "fail" and result.exit_code == 1
    else:
        assert gates["synthetic_fraction_lower"]["value"] is not None
    assert gates["unreadable_share"]["value"] == 0  # every other stage still reports
    return data


@pytest.mark.parametrize("n", [2, 10, 24, 60])
def test_tiny_npy_scans_degrade(real_clip, tmp_path, n):
    x = shuffled_food(real_clip)
    np.save(tmp_path / "r.npy", x[:n])
    np.save(tmp_path / "c.npy", x[1000:1000 + n])
    result, out = scan([tmp_path / "r.npy", tmp_path / "c.npy", "--embedding-model", "ViT-B-32"], tmp_path)
    data = check_degraded(result, out, n)
    assert not (out / "items.parquet").exists() or data["items"] is not None


@pytest.mark.parametrize("n", [2, 24])
def test_tiny_embed_folder_scans_degrade(real_clip, tmp_path, n):
    """An embed folder against itself (the case that used to exit 3 and write nothing)."""
    folder = tmp_path / "imgs"
    write_images(folder, n)
    embedded = tmp_path / "emb"
    result = CliRunner().invoke(main, ["embed", str(folder), "--out", str(embedded), "--model", "pixels",
                                       "--cache", str(tmp_path / "c.sqlite"), "--workers", "0", "-q"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    result, out = scan([embedded, embedded], tmp_path)
    check_degraded(result, out, n)


def test_tiny_image_scan_degrades_and_stale_items_table_is_removed(tmp_path):
    ref, cand = tmp_path / "ref", tmp_path / "cand"
    write_images(ref, 10, seed=1)
    write_images(cand, 10, seed=2)
    common = ["--model", "pixels", "--cache", tmp_path / "c.sqlite", "--workers", "0"]
    out = tmp_path / "report"
    out.mkdir()
    (out / "items.parquet").write_bytes(b"an earlier scan's table")
    result, out = scan([ref, cand, *common], tmp_path)
    data = check_degraded(result, out, 10)
    stages = {s["name"]: s for s in data["stages"]}
    assert not stages["items"]["available"] and "100 reference items" in stages["items"]["reason"]
    assert not (out / "items.parquet").exists()  # `madaudit filter` cannot read a table of other data
    assert {g["metric"]: g for g in data["gates"]}["precision"]["value"] is not None
