"""`madaudit scan` end to end on the digit fixtures: policy, verdict, exit codes and every report."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import jsonschema
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import audit
from audit.cli import main
from audit.io import EmbedOptions
from audit.pipeline import SCHEMA_FILE
from audit.policy import DEFAULT_POLICY, Gate, PolicyError, evaluate, load_policy, parse_policy, with_overrides

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "fixtures" / "digits" / "reference"
CANDIDATE = ROOT / "fixtures" / "digits" / "candidate"
PASSING = """
[gates]
synthetic_fraction_lower = { max = 0.5 }
precision = { min = 0.5, severity = "warn" }
reference_copy_rate = false
forecast_recall = { min = 0.1 }
[forecast]
generations = 4
runs = 30
"""


def run_cli(*args, env=None):
    result = CliRunner().invoke(main, [str(a) for a in args], env=env, catch_exceptions=False)
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def scans(tmp_path_factory):
    """One passing and one failing scan of the fixtures (pixels embedder, shared cache)."""
    base = tmp_path_factory.mktemp("scan")
    (base / "madaudit.toml").write_text(PASSING)
    cache = base / "cache.sqlite"
    summary = base / "step-summary.md"
    common = ["--model", "pixels", "--cache", cache, "--quiet", "--config", base / "madaudit.toml"]
    passing = run_cli("scan", REFERENCE, CANDIDATE, "--out", base / "pass", *common,
                      env={"GITHUB_STEP_SUMMARY": str(summary)})
    failing = run_cli("scan", REFERENCE, CANDIDATE, "--out", base / "fail", *common, "--min-density", "5")
    return {"base": base, "pass": passing, "fail": failing, "summary": summary, "cache": cache}


def load_report(folder: Path) -> dict:
    return json.loads((folder / "report.json").read_text())


def test_verdict_and_exit_code_follow_the_policy(scans):
    code, out = scans["pass"]
    assert code == 0, out
    assert "madaudit verdict: PASS" in out or "madaudit verdict: WARN" in out
    code, out = scans["fail"]
    assert code == 1, out
    assert "madaudit verdict: FAIL" in out
    report = load_report(scans["base"] / "fail")
    density = next(g for g in report["gates"] if g["metric"] == "density")  # a new gate from the flag: fails
    assert density["severity"] == "fail" and density["status"] == "fail" and density["value"] < 5
    assert report["verdict"] == "fail" and load_report(scans["base"] / "pass")["verdict"] in ("pass", "warn")
    assert [g["status"] for g in report["gates"] if g["metric"] != "density"] == [
        g["status"] for g in load_report(scans["base"] / "pass")["gates"]]


def test_reports_are_all_written_and_valid(scans):
    schema = json.loads(SCHEMA_FILE.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    for run in ("pass", "fail"):
        folder = scans["base"] / run
        for name in ("report.json", "report.md", "report.html", "junit.xml"):
            assert (folder / name).stat().st_size > 0, name
        report = load_report(folder)
        jsonschema.validate(report, schema)
        assert report["inputs"]["candidate"]["items"] == 500 and report["inputs"]["reference"]["items"] == 600
        assert report["model"]["name"] == "pixels"
        assert {g["metric"] for g in report["gates"]} >= {"precision", "forecast_recall"}
        assert "reference_copy_rate" not in {g["metric"] for g in report["gates"]}  # switched off in the file
        assert len(report["forecast"]["generations"]) == 5  # [forecast] generations = 4
    broken = load_report(scans["base"] / "pass")
    del broken["gates"][0]["status"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)
    assert "## madaudit:" in scans["summary"].read_text()  # appended to $GITHUB_STEP_SUMMARY


def test_junit_has_one_case_per_gate_with_the_message(scans):
    report = load_report(scans["base"] / "fail")
    root = ET.parse(scans["base"] / "fail" / "junit.xml").getroot()
    cases = root.findall(".//testcase")
    assert [c.get("name") for c in cases] == [g["metric"] for g in report["gates"]]
    for case, gate in zip(cases, report["gates"]):
        failure = case.find("failure")
        assert (failure is not None) == (gate["status"] == "fail")
        text = failure.text if failure is not None else case.find("system-out").text
        assert gate["message"] in text
    assert int(root.find("testsuite").get("failures")) == sum(g["status"] == "fail" for g in report["gates"])


def test_report_command_re_renders_the_same_content(scans, tmp_path):
    folder = scans["base"] / "fail"
    for fmt, name in (("html", "report.html"), ("md", "report.md"), ("junit", "junit.xml")):
        code, out = run_cli("report", folder / "report.json", "--format", fmt, "--out", tmp_path / name)
        assert code == 0, out
        assert (tmp_path / name).read_text() == (folder / name).read_text()
    code, out = run_cli("report", folder / "report.html")
    assert code == 3 and "report.html is not a valid madaudit report" in out


def test_report_re_judges_stored_findings_with_another_policy(scans, tmp_path):
    """--config applies other gates to the stored values: the same verdict a scan with that policy
    gives, nothing recomputed; by default the file goes beside report.json."""
    import shutil as _shutil

    stored = tmp_path / "stored"
    _shutil.copytree(scans["base"] / "fail", stored)
    before = load_report(stored)
    assert before["verdict"] == "fail"
    lenient = tmp_path / "lenient.toml"
    lenient.write_text("[gates]\nsynthetic_fraction_lower = false\nsynthetic_fraction = false\n"
                       "precision = { min = 0.0, severity = \"fail\" }\n")
    code, out = run_cli("report", stored / "report.json", "--format", "junit", "--config", lenient, "--fail-on", "fail")
    assert code == 0 and f"written to {stored / 'junit.xml'}" in out, out
    root = ET.parse(stored / "junit.xml").getroot()
    names = [c.get("name") for c in root.iter("testcase")]
    assert "synthetic_fraction_lower" not in names and "precision" in names
    strict = tmp_path / "strict.toml"
    strict.write_text("[gates]\nprecision = { min = 0.5, severity = \"fail\" }\n")
    code, out = run_cli("report", stored / "report.json", "--format", "json", "--config", strict,
                        "--min-precision", "1.01", "--fail-on", "fail")  # a flag overrides the file
    regated = json.loads(out[out.index("{"):])
    assert code == 1 and regated["verdict"] == "fail"
    precision = next(g for g in regated["gates"] if g["metric"] == "precision")
    assert precision["threshold"] == 1.01 and precision["value"] == before["values"]["precision"]
    assert regated["metrics"] == before["metrics"]  # findings untouched
    jsonschema.validate(regated, json.loads((Path(audit.__file__).parent / "report.schema.json").read_text()))


def test_python_api_returns_what_the_cli_serialises(scans, tmp_path):
    policy = load_policy(scans["base"] / "madaudit.toml")
    result = audit.scan(REFERENCE, CANDIDATE, policy=policy, items=tmp_path / "items.parquet",
                        embed=EmbedOptions(model="pixels", cache=str(scans["cache"]), progress=False))
    written = load_report(scans["base"] / "pass")
    ours = json.loads(result.to_json())
    for volatile in ("created", "seconds"):
        ours.pop(volatile), written.pop(volatile)
        ours["items"].pop(volatile, None), written["items"].pop(volatile, None)
    assert (tmp_path / "items.parquet").read_bytes() == (scans["base"] / "pass" / "items.parquet").read_bytes()
    ours["policy"].pop("source"), written["policy"].pop("source")
    assert ours == written
    assert result.exit_code == (1 if result.verdict == "fail" else 0)


def test_html_report_in_a_headless_browser(scans, tmp_path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing: .ci/run installs it (apt-get install chromium)")
        pytest.skip("no chromium here (CI installs it)")
    page = (scans["base"] / "fail" / "report.html").as_uri()
    flags = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--disable-background-networking", "--no-first-run", "--hide-scrollbars", f"--user-data-dir={tmp_path / 'profile'}"]
    shot = tmp_path / "report.png"
    subprocess.run([*flags, "--window-size=1200,3000", f"--screenshot={shot}", page], check=True, timeout=120,
                   capture_output=True)
    with Image.open(shot) as im:
        assert im.size == (1200, 3000)
        pixels = np.asarray(im.convert("RGB"))
    assert pixels.std() > 10  # something was drawn, not a blank page
    # The verdict banner (fail: a red background) is at the top of the page.
    banner = pixels[60:130, 40:400].reshape(-1, 3)
    assert (np.abs(banner - np.array([0xFD, 0xE4, 0xE4])).sum(axis=1) < 12).mean() > 0.5
    dom = subprocess.run([*flags, "--dump-dom", page], check=True, timeout=120, capture_output=True, text=True).stdout
    assert 'id="verdict" class="verdict-fail"' in dom and "madaudit verdict: FAIL" in dom
    for plot in ("metric-bars", "map-plot", "forecast-recall", "forecast-tail_coverage"):
        assert f'id="{plot}"' in dom, plot
        assert f'id="{plot}-legend"' in dom and f'id="{plot}-xtick_1"' in dom, plot  # legend and ticks
    for panel in ("recall", "tail_coverage", "precision", "fd_model"):  # band, median, threshold each
        assert all(f'id="forecast-{panel}-{part}"' in dom for part in ("band", "median", "threshold")), panel
    assert "how synthetic it looks" in dom  # the map's colour scale is labelled
    ids = re.findall(r'\bid="([^"]+)"', dom)
    assert len(ids) == len(set(ids))  # several plots on one page, no id twice
    report = load_report(scans["base"] / "fail")
    assert dom.count("<figure class=\"suspicious\">") == len(report["gallery"]) > 0
    pairs = report["duplicate_pairs"]
    assert dom.count("<figure class=\"pair ") == len(pairs)
    thumbnails = sum((p["candidate_thumbnail"] is not None) + (p["match_thumbnail"] is not None) for p in pairs)
    assert dom.count("src=\"data:image/png;base64,") == len(report["gallery"]) + thumbnails
    assert 'id="duplicate-rule"' in dom and report["near_duplicates"]["rule"] == "calibrated"
    # Plain-language summary naming the failed gates, then a table of contents whose links resolve.
    failed = [g["metric"] for g in report["gates"] if g["status"] == "fail"]
    summary = dom[dom.index('id="summary"'):dom.index("</ul>", dom.index('id="summary"'))]
    assert failed and all(f"{metric} failed" in summary for metric in failed[:3]), summary
    nav = dom[dom.index("<nav>"):dom.index("</nav>")]
    links = re.findall(r"href=\"#([\w-]+)\"", nav)
    assert len(links) == 8 and all(f'id="{anchor}"' in dom for anchor in links)
    assert 'name="viewport"' in dom
    # At 400 px the page does not scroll sideways (measured by a wrapper page's script: the
    # report itself forbids scripts).
    wrapper = tmp_path / "narrow.html"
    wrapper.write_text(f"""<!DOCTYPE html><html><body><iframe id="f" src="{page}" width="400" height="900"></iframe>
<script>const f = document.getElementById('f'); f.onload = () => {{ const d = f.contentDocument.documentElement;
document.body.setAttribute('data-overflow', String(d.scrollWidth - d.clientWidth)); }};</script></body></html>""")
    narrow = subprocess.run([*flags, "--allow-file-access-from-files", "--virtual-time-budget=5000", "--dump-dom",
                             wrapper.as_uri()], check=True, timeout=120, capture_output=True, text=True).stdout
    assert re.search(r'data-overflow="(\d+)"', narrow) and re.search(r'data-overflow="(\d+)"', narrow).group(1) == "0", \
        narrow[-300:]


def test_bad_config_missing_and_empty_folders(tmp_path):
    bad = tmp_path / "madaudit.toml"
    bad.write_text("[gates]\nprecison = { min = 0.9 }\n")
    code, out = run_cli("scan", REFERENCE, CANDIDATE, "--config", bad, "--model", "pixels", "--out", tmp_path / "r")
    assert code == 2 and "gates.precison" in out
    bad.write_text("[gates]\nprecision = { min = 0.9, severity = \"loud\" }\n")
    code, out = run_cli("policy", "--config", bad)
    assert code == 2 and "gates.precision.severity" in out
    bad.write_text("[gates\n")
    code, out = run_cli("policy", "--config", bad)
    assert code == 2 and "not valid TOML" in out
    code, out = run_cli("scan", REFERENCE, tmp_path / "nope", "--model", "pixels", "--out", tmp_path / "r",
                        "--cache", tmp_path / "c.sqlite")
    assert code == 3 and "not found" in out
    (tmp_path / "empty").mkdir()
    code, out = run_cli("scan", REFERENCE, tmp_path / "empty", "--model", "pixels", "--out", tmp_path / "r",
                        "--cache", tmp_path / "c.sqlite")
    assert code == 3 and "nothing readable" in out
    code, out = run_cli("scan", tmp_path / "empty", CANDIDATE, "--model", "pixels", "--out", tmp_path / "r",
                        "--cache", tmp_path / "c.sqlite")
    assert code == 3 and "needs at least 2 readable images" in out
    (tmp_path / "detector.json").write_text("{}")
    code, out = run_cli("scan", REFERENCE, CANDIDATE, "--detector", tmp_path / "detector.json", "--model", "pixels")
    assert code == 2 and "not a madaudit detector" in out


def test_policy_show_defaults_and_pyproject(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out = run_cli("policy", "--show")
    assert code == 0 and "source: defaults" not in out and "(from defaults)" in out
    assert parse_policy(__import__("tomllib").loads(out)).gates == DEFAULT_POLICY.gates  # round trip
    (tmp_path / "pyproject.toml").write_text("[project]\nname='x'\n[tool.madaudit.gates]\nrecall = { min = 0.75 }\n")
    code, out = run_cli("policy", "--json", "--min-coverage", "0.9")
    policy = json.loads(out)
    assert policy["source"].endswith("pyproject.toml + flags")
    gates = {g["metric"]: g for g in policy["gates"]}
    assert gates["recall"] == {"metric": "recall", "comparator": "min", "threshold": 0.75, "severity": "fail"}
    assert gates["coverage"]["threshold"] == 0.9 and gates["coverage"]["severity"] == "warn"  # severity kept


def test_policy_evaluation():
    policy = parse_policy({"gates": {"precision": {"min": 0.9}, "fd": {"max": 2.0, "severity": "warn"}}})
    values = {**{g.metric: 0.0 for g in policy.gates if g.comparator == "max"},
              **{g.metric: 1.0 for g in policy.gates if g.comparator == "min"}}
    results, verdict = evaluate(policy, values)
    assert verdict == "pass" and all(r.status == "pass" for r in results)
    results, verdict = evaluate(policy, {**values, "fd": 2.5})
    assert verdict == "warn"
    results, verdict = evaluate(policy, {**values, "precision": 0.9})  # the threshold itself passes
    assert verdict == "pass"
    results, verdict = evaluate(policy, {**values, "precision": math.nan})  # unknown is not a pass
    assert verdict == "fail" and "could not be measured" in results[[r.gate.metric for r in results].index("precision")].message
    with pytest.raises(PolicyError, match="exactly one of min or max"):
        parse_policy({"gates": {"precision": {"min": 0.9, "max": 1.0}}})
    with pytest.raises(PolicyError, match="forecast.loop"):
        parse_policy({"forecast": {"loop": "sideways"}})
    with pytest.raises(PolicyError, match="finite number"):
        with_overrides(DEFAULT_POLICY, {"min_precision": math.inf})
    assert Gate("recall", "min", 0.5).describe() == "recall >= 0.5"


def test_project_reads_measured_inputs_from_a_report(scans):
    report = scans["base"] / "pass" / "report.json"
    code, out = run_cli("project", REFERENCE, "--from-report", report, "--model", "pixels", "--cache", scans["cache"],
                        "--quiet", "--generations", "2", "--runs", "10", "--json")
    assert code == 0, out
    result = json.loads(out)
    assert result["measured"] == load_report(scans["base"] / "pass")["forecast"]["measured_inputs"]
    assert result["forecasts"][0]["params"]["real_fraction"] == result["measured"]["real_fraction"]
    code, out = run_cli("project", REFERENCE, CANDIDATE, "--from-report", report, "--model", "pixels")
    assert code == 2 and "not both" in out


def test_unreadable_files_are_listed_and_gateable(scans, tmp_path):
    candidate = tmp_path / "candidate"
    shutil.copytree(CANDIDATE, candidate)
    (candidate / "real" / "zz_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    (candidate / "notes.txt").write_text("not an image")
    code, out = run_cli("scan", REFERENCE, candidate, "--model", "pixels", "--cache", scans["cache"], "--quiet",
                        "--config", scans["base"] / "madaudit.toml", "--out", tmp_path / "r",
                        "--max-unreadable-share", "0")
    assert code == 1, out
    report = load_report(tmp_path / "r")
    side = report["inputs"]["candidate"]
    assert side["items"] == 500 and side["unreadable"] == 1
    assert {(s["key"], s["reason"]) for s in side["skipped"]} == {("real/zz_broken.png", "truncated"),
                                                                  ("notes.txt", "not_image_extension")}
    gate = next(g for g in report["gates"] if g["metric"] == "unreadable_share")
    assert gate["status"] == "fail" and gate["value"] == 1 / (1 + 600 + 500)


def test_scan_takes_arrays_and_saves_like_the_cli(real_clip, tmp_path):
    """Arrays in, the same findings as the same vectors from .npy files; save() writes the four
    reports; a notebook shows the verdict and the summary."""
    x, y = real_clip["food_train"][:800], np.vstack([real_clip["food_test"][:300], real_clip["flickr"][:100]])
    y[0] = x[5]  # a copy of a reference item, found under the given keys
    identity = {"name": "ViT-B-32/openai", "declared": True}
    from_arrays = audit.scan(x, y, reference_keys=[f"r{i}" for i in range(len(x))], model_identity=identity)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    from_files = audit.scan(tmp_path / "x.npy", tmp_path / "y.npy")
    a, b = from_arrays.to_dict(), from_files.to_dict()
    assert a["inputs"]["reference"]["kind"] == "array" and a["inputs"]["candidate"]["path"] == "<candidate array>"
    assert a["metrics"] == b["metrics"] and a["values"] == b["values"] and a["verdict"] == b["verdict"]
    assert a["gallery"] and all(item["key"].isdigit() for item in a["gallery"])  # default keys: row numbers
    assert {"candidate": "0", "match": "r5", "distance": 0.0} in [
        {k: p[k] for k in ("candidate", "match", "distance")} for p in a["near_duplicates"]["copies_of_reference"]]
    written = from_arrays.save(tmp_path / "saved")
    assert sorted(p.name for p in written.values()) == ["junit.xml", "report.html", "report.json", "report.md"]
    assert json.loads((tmp_path / "saved" / "report.json").read_text())["inputs"]["reference"]["kind"] == "array"
    html = from_arrays._repr_html_()
    assert "madaudit verdict" in html and "<script" not in html and "<li>" in html
    with pytest.raises(audit.io.InputProblem, match="keys"):
        audit.scan(x, y, candidate_keys=["only one"])
    with pytest.raises(audit.io.InputProblem, match="NaN"):
        audit.scan(x, np.full_like(y, np.nan))


FULL_CONFIG = f"""
[inputs]
reference = "{REFERENCE}"
candidate = "{CANDIDATE}"
out = "from-config"

[embed]
model = "pixels"
batch_size = 32
max_file_mb = 64

[metrics]
k = 3
tail_q = 0.2
duplicates = "cosine"
duplicate_cosine = 0.99
seed = 1

[detector]
delta = 0.1
top = 5

[forecast]
generations = 3
runs = 8
dim = 8

[gates]
precision = {{ min = 0.5, severity = "fail" }}
synthetic_fraction_lower = false
"""


def test_one_config_file_describes_a_whole_scan(tmp_path):
    """No arguments, no flags: the file says everything; a flag still wins over it."""
    config = tmp_path / "madaudit.toml"
    config.write_text(FULL_CONFIG)
    code, out = run_cli("scan", "--config", config, "--top", "7", "--cache", tmp_path / "cache.sqlite")
    assert code in (0, 1), out
    report = load_report(tmp_path / "from-config")  # [inputs].out, relative to the config's folder
    assert report["inputs"]["reference"]["path"] == str(REFERENCE)
    assert report["settings"]["k"] == 3 and report["settings"]["tail_q"] == 0.2 and report["settings"]["seed"] == 1
    assert report["settings"]["duplicate_rule"] == "cosine" and report["near_duplicates"]["threshold"] == 0.99
    assert report["settings"]["delta"] == 0.1 and len(report["gallery"]) == 7  # the flag beat [detector].top = 5
    assert report["policy"]["forecast"]["generations"] == 3 and report["forecast"]["generations"][-1] == 3
    assert "synthetic_fraction_lower" not in [g["metric"] for g in report["gates"]]
    from audit.io import identity_name

    assert "pixels" in identity_name(report["model"])


def test_policy_show_prints_the_whole_config_and_round_trips(tmp_path):
    import tomllib

    config = tmp_path / "madaudit.toml"
    config.write_text(FULL_CONFIG)
    code, shown = run_cli("policy", "--show", "--config", config)
    assert code == 0, shown
    parsed = tomllib.loads(shown)
    assert parsed["inputs"]["candidate"] == str(CANDIDATE) and parsed["embed"]["model"] == "pixels"
    assert parsed["metrics"]["k"] == 3 and parsed["detector"]["top"] == 5 and parsed["forecast"]["runs"] == 8
    assert parsed["embed"]["pretrained"] == "laion2b_s34b_b79k"  # defaults are shown too
    again = tmp_path / "again.toml"
    again.write_text(shown)
    code, shown_again = run_cli("policy", "--show", "--config", again)
    strip = lambda text: [line for line in text.splitlines() if not line.startswith("# madaudit policy")]  # noqa: E731
    assert code == 0 and strip(shown_again) == strip(shown)


def test_init_writes_a_starter_that_is_the_defaults(tmp_path):
    from audit.config import run_defaults
    from audit.policy import read_toml

    code, out = run_cli("init", "--out", tmp_path / "madaudit.toml")
    assert code == 0 and (tmp_path / "madaudit.toml").is_file()
    data = read_toml(tmp_path / "madaudit.toml")
    assert set(data) == {"inputs", "embed", "metrics", "detector", "items", "forecast", "gates"}
    assert run_defaults(data, str(tmp_path / "madaudit.toml")) == {}  # every run key commented out
    assert load_policy(tmp_path / "madaudit.toml").gates == DEFAULT_POLICY.gates
    code, out = run_cli("init", "--out", tmp_path / "madaudit.toml")
    assert code == 2 and "--force" in out


@pytest.mark.parametrize("text, words", [
    ("[metrics]\nkk = 3\n", "metrics.kk"),
    ("[embed]\nbatch_size = \"big\"\n", "embed.batch_size"),
    ("[inputz]\nreference = \"x\"\n", "inputz"),
    ("[detector]\ntop = true\n", "detector.top"),
])
def test_config_mistakes_name_the_key(tmp_path, text, words):
    config = tmp_path / "madaudit.toml"
    config.write_text(text)
    code, out = run_cli("scan", REFERENCE, CANDIDATE, "--config", config)
    assert code == 2 and words in out, out


def test_random_weights_are_called_meaningless_first(real_clip, tmp_path):
    """An identity with random, untrained weights: the first warning, the first summary line and
    the terminal all say the numbers mean nothing."""
    from audit.report import summary_findings, verdict_table

    x, y = real_clip["food_train"][:300], real_clip["food_test"][:200]
    identity = {"model": "tiny", "weights": {"random_init_seed": 0, "torch": "2"}}
    data = audit.scan(x, y, model_identity=identity).to_dict()
    assert "untrained weights" in data["synthetic_fraction"]["warnings"][0]
    assert summary_findings(data)[0].startswith("The embeddings come from random, untrained weights")
    assert "meaningless" in verdict_table(data)
    trained = audit.scan(x, y, model_identity={"model": "tiny", "weights": {"file_sha256": "ab"}}).to_dict()
    assert not any("untrained" in w for w in trained["synthetic_fraction"]["warnings"])


def test_scan_names_each_long_step(real_clip):
    """The Python API reports the steps it takes, in order, and says when the last is over."""
    steps = []
    audit.scan(real_clip["food_train"][:300], real_clip["food_test"][:200], progress=steps.append)
    assert [s.split(":")[0] if s else s for s in steps] == ["metrics", "synthetic share", "forecast", None]
