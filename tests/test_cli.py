"""The `madaudit` command as a user runs it (in-process via click, and as real processes)."""

import csv
import json
import re
import signal
import subprocess
import sys
import time

import huggingface_hub
import numpy as np
import pytest
import pyarrow.parquet as pq
import click
from click.testing import CliRunner

from audit import __version__
from audit.cli import main
from audit.io.embedding_folder import load_embeddings
from audit.store import EmbeddingStore
from conftest import write_images


def run_cli(*args, env=None):
    result = CliRunner().invoke(main, [str(a) for a in args], env=env, catch_exceptions=False)
    return result.exit_code, result.output


def test_version_and_help():
    code, out = run_cli("--version")
    assert code == 0 and __version__ in out
    code, out = run_cli("--help")
    assert code == 0 and "embed" in out
    proc = subprocess.run([sys.executable, "-m", "audit", "--version"], capture_output=True, text=True)
    assert proc.returncode == 0 and __version__ in proc.stdout


def test_embed_writes_clip_retrieval_layout(tmp_path, tiny_config, cache_path):
    keys = write_images(tmp_path / "imgs", 5)
    (tmp_path / "imgs" / "broken.png").write_bytes(b"nope")
    out = tmp_path / "out"
    code, output = run_cli("embed", tmp_path / "imgs", "--out", out, "--model", tiny_config,
                           "--pretrained", "random", "--cache", cache_path, "--workers", "1", "-q")
    assert code == 0, output
    assert "5 embedded vectors" in output and "5 newly embedded" in output and "1 unreadable" in output

    vectors = np.load(out / "img_emb" / "img_emb_0.npy")
    assert vectors.dtype == np.float32 and vectors.shape == (5, 32)
    meta = pq.read_table(out / "metadata" / "metadata_0.parquet").to_pydict()
    assert meta["key"] == keys and len(meta["sha256"][0]) == 64
    assert meta["width"] == [40] * 5 and meta["height"] == [48] * 5
    with open(out / "skipped.csv") as fh:
        assert list(csv.DictReader(fh)) == [{"key": "broken.png", "reason": "not_an_image",
                                             "detail": "not a recognised image format"}]
    manifest = json.loads((out / "madaudit.json").read_text())
    assert manifest["count"] == 5 and manifest["model"]["architecture"]["name"] == "tiny-clip-test"

    loaded = load_embeddings(out)
    assert loaded.keys == keys
    np.testing.assert_array_equal(loaded.vectors, vectors)

    code, output = run_cli("embed", tmp_path / "imgs", "--out", out, "--model", tiny_config,
                           "--pretrained", "random", "--cache", cache_path, "-q")
    assert code == 0 and "0 newly embedded, 5 from cache" in output


def test_embed_errors_have_exit_codes(tmp_path, tiny_config, cache_path, monkeypatch):
    code, output = run_cli("embed", tmp_path / "missing", "--out", tmp_path / "o", "--cache", cache_path)
    assert code == 3 and "not found" in output
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("x")
    code, output = run_cli("embed", tmp_path / "empty", "--out", tmp_path / "o", "--model", tiny_config,
                           "--pretrained", "random", "--cache", cache_path)
    assert code == 3 and "no readable images" in output
    code, output = run_cli("embed", tmp_path / "empty", "--out", tmp_path / "o", "--model", "No-Such-Model",
                           "--cache", cache_path)
    assert code == 2 and "unknown open_clip model" in output
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "no-weights-here"))
    code, output = run_cli("embed", tmp_path / "empty", "--out", tmp_path / "o", "--cache", cache_path, "--offline")
    assert code == 3 and "laion2b_s34b_b79k" in output and "--pretrained" in output
    code, output = run_cli("embed", tmp_path / "empty")
    assert code == 2 and "--out" in output


def cli_process(folder, out, config, cache, batch_size=2):
    cmd = [sys.executable, "-m", "audit", "embed", str(folder), "--out", str(out), "--model", config,
           "--pretrained", "random", "--cache", str(cache), "--batch-size", str(batch_size), "--workers", "1", "-q"]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def embedded_count(output: str) -> int:
    return int(output.split("(")[1].split(" newly embedded")[0])


def test_killed_run_resumes_from_committed_batches(tmp_path, tiny_config, cache_path):
    folder = tmp_path / "imgs"
    write_images(folder, 120)
    proc = cli_process(folder, tmp_path / "out", tiny_config, cache_path, batch_size=2)
    deadline = time.monotonic() + 120
    committed = 0
    while time.monotonic() < deadline and proc.poll() is None:
        if cache_path.exists():
            try:
                with EmbeddingStore(cache_path) as store:
                    committed = store.count_embeddings()
            except Exception:
                committed = 0
            if committed >= 4:
                break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with EmbeddingStore(cache_path) as store:
        assert store.integrity_ok()
        committed = store.count_embeddings()
    assert committed >= 4

    resumed = cli_process(folder, tmp_path / "out", tiny_config, cache_path)
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    assert embedded_count(out) == 120 - committed  # committed batches are not redone
    assert len(load_embeddings(tmp_path / "out").keys) == 120


def test_two_processes_share_one_cache(tmp_path, tiny_config, cache_path):
    folder = tmp_path / "imgs"
    write_images(folder, 40)
    procs = [cli_process(folder, tmp_path / f"out{i}", tiny_config, cache_path) for i in range(2)]
    results = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], results
    with EmbeddingStore(cache_path) as store:
        assert store.integrity_ok()
        assert store.count_embeddings() == 40
    a, b = load_embeddings(tmp_path / "out0"), load_embeddings(tmp_path / "out1")
    assert a.keys == b.keys
    np.testing.assert_allclose(a.vectors, b.vectors, atol=1e-6)


def test_metrics_command_on_embeddings_and_image_folders(tmp_path, tiny_config, cache_path, real_clip):
    ref, cand = tmp_path / "ref.npy", tmp_path / "cand.npy"
    np.save(ref, real_clip["food_train"][:400])
    np.save(cand, real_clip["food_test"][:200])
    code, output = run_cli("metrics", ref, cand)
    assert code == 0, output
    assert "precision" in output and "tail_coverage" in output and "95% interval" in output
    code, output = run_cli("metrics", ref, cand, "--json", "--k", "3")
    data = json.loads(output)
    assert data["n_reference"] == 400 and data["metrics"]["recall"]["params"]["k"] == 3
    from audit.metrics import prdc

    expected = prdc(real_clip["food_train"][:400], real_clip["food_test"][:200], 3)
    assert data["metrics"]["precision"]["value"] == expected["precision"]

    # Image folders are embedded on the way (one shared model), embed folders are read back.
    write_images(tmp_path / "a", 12, seed=1)
    write_images(tmp_path / "b", 10, seed=2)
    run_cli("embed", tmp_path / "a", "--out", tmp_path / "a_emb", "--model", tiny_config, "--pretrained", "random",
            "--cache", cache_path, "-q")
    code, output = run_cli("metrics", tmp_path / "a_emb", tmp_path / "b", "--model", tiny_config,
                           "--pretrained", "random", "--cache", cache_path, "--json", "-q", "--clusters", "2")
    assert code == 0, output
    assert json.loads(output)["n_candidate"] == 10


def test_metrics_command_errors(tmp_path, real_clip):
    ref = tmp_path / "ref.npy"
    np.save(ref, real_clip["food_train"][:100])
    code, output = run_cli("metrics", ref, tmp_path / "missing.npy")
    assert code == 3 and "not found" in output
    np.save(tmp_path / "small.npy", real_clip["food_test"][:50, :64])
    code, output = run_cli("metrics", ref, tmp_path / "small.npy")
    assert code == 3 and "dimension mismatch" in output
    np.save(tmp_path / "flat.npy", np.zeros(10))
    code, output = run_cli("metrics", ref, tmp_path / "flat.npy")
    assert code == 3 and "2-D" in output
    np.save(tmp_path / "few.npy", real_clip["food_test"][:3])  # too few for k-NN balls: those read n/a, with why
    code, output = run_cli("metrics", ref, tmp_path / "few.npy")
    assert code == 0 and "not available: the k-NN metrics need more than k=5 items" in output
    assert re.search(r"^precision +n/a", output, re.M) and re.search(r"^fd +\d", output, re.M)


def test_detector_train_and_fraction_commands(tmp_path, real_clip):
    from test_detectors import World

    world = World(5)
    for name, arr in {"real": world.real(400), "fake": world.fake(400), "ref": world.real(600),
                      "cand": world.candidate(600, 0.3)}.items():
        np.save(tmp_path / f"{name}.npy", arr.astype(np.float32))
    code, output = run_cli("detector", "train", "--real", tmp_path / "real.npy", "--synthetic", tmp_path / "fake.npy",
                           "--out", tmp_path / "detector.json")
    assert code == 0, output
    code, output = run_cli("fraction", tmp_path / "ref.npy", tmp_path / "cand.npy", "--detector",
                           tmp_path / "detector.json", "--json", "--top", "5")
    assert code == 0, output
    data = json.loads(output)
    assert abs(data["estimates"]["supervised"]["value"] - 0.3) < 0.06
    assert data["estimates"]["unsupervised"]["lower"] <= 0.3
    assert len(data["most_suspicious"]) == 5
    code, output = run_cli("fraction", tmp_path / "ref.npy", tmp_path / "cand.npy")
    assert code == 0 and "unsupervised" in output and "warning: no detector" in output

    np.save(tmp_path / "wide.npy", np.zeros((50, 32), np.float32))
    code, output = run_cli("fraction", tmp_path / "wide.npy", tmp_path / "wide.npy", "--detector",
                           tmp_path / "detector.json")
    assert code == 2 and "16-d" in output
    (tmp_path / "bad.json").write_text("{}")
    code, output = run_cli("fraction", tmp_path / "ref.npy", tmp_path / "cand.npy", "--detector", tmp_path / "bad.json")
    assert code == 2 and "not a madaudit detector" in output


def test_project_command(tmp_path, real_clip):
    from test_detectors import World

    np.save(tmp_path / "ref.npy", real_clip["food_train"])
    code, output = run_cli("project", tmp_path / "ref.npy", "--loop", "all", "--generations", "3", "--runs", "6",
                           "--dim", "16", "--plot", tmp_path / "forecast.png")
    assert code == 0, output
    for loop in ("fully_synthetic", "augment", "fresh", "accumulate"):
        assert f"loop {loop}" in output
    assert "MAD horizon" in output and (tmp_path / "forecast.png").stat().st_size > 10_000

    world = World(7)
    np.save(tmp_path / "wref.npy", world.real(400).astype(np.float32))
    np.save(tmp_path / "wcand.npy", world.candidate(400, 0.5).astype(np.float32))
    code, output = run_cli("project", tmp_path / "wref.npy", tmp_path / "wcand.npy", "--generations", "2",
                           "--runs", "4", "--dim", "8", "--json", "--n", "300")
    assert code == 0, output
    data = json.loads(output)
    assert 0.3 < data["measured"]["real_fraction"] < 0.8 and data["inputs"]["n"] == 300
    # The synthetic part is less spread out and shifted (by 2.5, about 0.3 of the RMS spread): its
    # spread ratio is read below 1, and lambda is either measured below 1 or said to be not measured.
    measured = data["measured"]
    assert measured["synthetic_part"]["spread_ratio"] < 1.0, measured
    assert measured["lam"] < 1.0 if measured["lam_measured"] else "not measured" in measured["lam_note"], measured


def test_project_stand_in_option_does_not_clash_with_the_embedder_model(tmp_path, real_clip):
    import warnings

    np.save(tmp_path / "ref.npy", real_clip["food_train"][:600])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        code, output = run_cli("project", tmp_path / "ref.npy", "--stand-in", "categorical", "--generations", "2",
                               "--runs", "4", "--dim", "8", "--json")
    assert code == 0, output
    assert json.loads(output)["forecasts"][0]["model"] == "categorical"


# Every option that two or more subcommands share, with the one default it has everywhere.
SHARED_OPTIONS = {
    "k": (5, ["metrics", "fraction", "scan", "detector train"]),
    "seed": (0, ["metrics", "fraction", "project", "scan", "detector train", "demo"]),
    "tail_q": (0.1, ["metrics", "scan"]),
    "clusters": (None, ["metrics", "scan"]),
    "duplicates": ("calibrated", ["metrics", "scan"]),
    "duplicate_quantile": (0.001, ["metrics", "scan"]),
    "duplicate_cosine": (0.95, ["metrics", "scan"]),
    "delta": (0.05, ["fraction", "scan"]),
    "top": (24, ["fraction", "scan"]),
    "loop": (None, ["project", "scan"]),  # None: the config's [forecast] value, else its default
    "stand_in": (None, ["project", "scan"]),
    "generations": (None, ["project", "scan"]),
    "runs": (None, ["project", "scan"]),
    "dim": (None, ["project", "scan"]),
    "threshold": (None, ["project", "scan"]),
    "eval_size": (None, ["project", "scan"]),
    "as_json": (False, ["embed", "metrics", "fraction", "project", "scan", "policy", "detector train"]),
    "model": ("ViT-B-32", ["embed", "metrics", "fraction", "project", "scan", "detector train"]),
    "max_file_mb": (256.0, ["embed", "metrics", "fraction", "project", "scan", "detector train"]),
}


def _command(path: str):
    command = main
    for name in path.split():
        command = command.commands[name]
    return command


@pytest.mark.parametrize("name", sorted(SHARED_OPTIONS))
def test_shared_options_have_one_name_and_one_default(name):
    default, commands = SHARED_OPTIONS[name]
    for path in commands:
        params = {p.name: p for p in _command(path).params}
        assert name in params, f"`madaudit {path}` lacks --{name.replace('_', '-')}"
        if default is False:  # a flag (click keeps its default as a sentinel)
            assert params[name].is_flag, (path, name)
        else:
            assert params[name].default == default, (path, name, params[name].default)
        first = next(p for p in _command(commands[0]).params if p.name == name)
        assert params[name].opts == first.opts, (path, params[name].opts)  # the same flag spelling


def test_forecast_flags_resolve_against_the_config():
    """One set of forecast defaults: project and scan resolve unset flags to [forecast]'s values."""
    from audit.cli import _forecast_settings
    from audit.policy import ForecastSettings

    base = ForecastSettings()
    assert _forecast_settings(base) == base
    changed = _forecast_settings(ForecastSettings(generations=7), runs=3, stand_in="gaussian")
    assert (changed.generations, changed.runs, changed.model, changed.dim) == (7, 3, "gaussian", base.dim)


def test_github_action_and_pre_commit_hook_run_real_scan_options(tmp_path, monkeypatch):
    """action.yml's scan line, with its inputs' defaults filled in, parses as a scan command line;
    the pre-commit hook runs madaudit scan."""
    import re
    import shlex
    from pathlib import Path

    import yaml

    root = Path(__file__).resolve().parents[1]
    action = yaml.safe_load((root / "action.yml").read_text())
    defaults = {name: spec["default"] for name, spec in action["inputs"].items()}
    script = next(step["run"] for step in action["runs"]["steps"] if "madaudit scan" in step.get("run", ""))
    line = next(s for s in script.splitlines() if s.strip().startswith("madaudit scan"))
    line = re.sub(r"\$\{\{ inputs\.([\w-]+) \}\}", lambda m: defaults[m.group(1)], line)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "madaudit.toml").write_text("[inputs]\nreference = \"r\"\ncandidate = \"c\"\n")
    args = shlex.split(line)[2:]
    context = main.commands["scan"].make_context("scan", args)
    assert context.params["fail_on"] == "fail" and str(context.params["out"]) == "madaudit-report"
    hooks = yaml.safe_load((root / ".pre-commit-hooks.yaml").read_text())
    assert hooks[0]["id"] == "madaudit-scan" and hooks[0]["entry"] == "madaudit scan"


def test_third_party_log_lines_stay_out_unless_verbose(capfd):
    """A library's warning on the root logger (open_clip writes "WARNING:root:...") is not shown by
    default; ours is; --verbose shows both; --quiet shows neither warning."""
    import logging

    from audit.cli import configure_logging

    for verbose, quiet, library_shown, ours_shown in ((False, False, False, True), (True, False, True, True),
                                                      (False, True, False, False)):
        configure_logging(verbose, quiet)
        logging.basicConfig()  # what a library might call: must not add a second handler
        logging.getLogger().warning("library noise")
        logging.getLogger("audit.metrics").warning("our warning")
        err = capfd.readouterr().err
        assert ("library noise" in err) == library_shown and ("our warning" in err) == ours_shown, (verbose, quiet, err)
    configure_logging()


def test_pixels_basis_is_saved_and_reused_so_folders_share_a_space(tmp_path):
    """Two folders embedded separately with `pixels` get two bases and are refused together, the
    message naming the basis; with --basis the second shares the first's space and compares."""
    write_images(tmp_path / "a", 40, seed=1)  # at least 32 images: both bases have 32 axes
    write_images(tmp_path / "b", 36, seed=2)
    cache = tmp_path / "cache.sqlite"
    code, out = run_cli("embed", tmp_path / "a", "--out", tmp_path / "a_emb", "--model", "pixels", "--cache", cache, "-q",
                        "--json")
    assert code == 0 and (tmp_path / "a_emb" / "pixels_basis.npz").is_file(), out
    assert json.loads(out)["basis"] == str(tmp_path / "a_emb" / "pixels_basis.npz") and json.loads(out)["vectors"] == 40
    run_cli("embed", tmp_path / "b", "--out", tmp_path / "b_own", "--model", "pixels", "--cache", cache, "-q")
    code, out = run_cli("metrics", tmp_path / "a_emb", tmp_path / "b_own", "--clusters", "2", "--k", "3")
    assert code == 3 and "basis_sha256" in out, out
    code, out = run_cli("embed", tmp_path / "b", "--out", tmp_path / "b_emb", "--model", "pixels", "--cache", cache,
                        "--basis", tmp_path / "a_emb" / "pixels_basis.npz", "-q")
    assert code == 0, out
    code, out = run_cli("metrics", tmp_path / "a_emb", tmp_path / "b_emb", "--clusters", "2", "--k", "3", "--json")
    assert code == 0 and json.loads(out)["n_candidate"] == 36, out
    (tmp_path / "bad.npz").write_bytes(b"not a basis")
    code, out = run_cli("embed", tmp_path / "b", "--out", tmp_path / "b_bad", "--model", "pixels", "--cache", cache,
                        "--basis", tmp_path / "bad.npz", "-q")
    assert code == 3 and "not a pixels basis" in out, out


def test_detector_train_json(tmp_path, real_clip):
    np.save(tmp_path / "real.npy", real_clip["food_train"][:300])
    np.save(tmp_path / "fake.npy", real_clip["flickr"][:300])  # another distribution: easy to separate
    code, out = run_cli("detector", "train", "--real", tmp_path / "real.npy", "--synthetic", tmp_path / "fake.npy",
                        "-o", tmp_path / "det.json", "--json")
    assert code == 0, out
    summary = json.loads(out)
    assert summary["identifiable"] and summary["auc"] > 0.9 and summary["n_real"] == 300
    assert str(tmp_path / "det.json") in summary["written"]


def all_commands(group, prefix=()):
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            yield from all_commands(command, (*prefix, name))
        else:
            yield (*prefix, name), command


def test_a_single_valued_option_given_twice_is_a_usage_error_on_every_command():
    """click keeps the last of a repeated option silently; every command refuses it instead (exit 2),
    naming the option, while options meant to repeat still may."""
    checked = 0
    for path, command in all_commands(main):
        for param in command.params:
            if not isinstance(param, click.Option) or param.multiple or param.count or param.hidden:
                continue
            opt = param.opts[0]
            twice = [opt, opt] if param.is_flag else [opt, "1", opt, "2"]
            code, output = run_cli(*path, *twice)
            assert code == 2 and f"{opt} is given twice" in output, (path, opt, output)
            checked += 1
            if param.secondary_opts:  # --x then --no-x: two values of one setting
                code, output = run_cli(*path, opt, param.secondary_opts[0])
                assert code == 2 and "are both given" in output, (path, opt, output)
    assert checked > 50
    # A value that looks like an option is a value, not a repetition; repeatable options still repeat.
    from audit.cli import repeated_option, scan

    assert repeated_option(scan.params, ["--out", "--seed", "--seed", "3"]) is None
    assert repeated_option(scan.params, ["--embedding-model", "a", "--embedding-model", "b"]) is None
    assert "--seed is given twice" in repeated_option(scan.params, ["--seed=1", "--seed", "2"])
