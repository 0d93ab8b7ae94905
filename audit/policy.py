"""Policy: the gates a scan must pass, read from `madaudit.toml` or `[tool.madaudit]`.

A gate is a metric, a comparator (`min`: value >= threshold, `max`: value <= threshold), a
threshold and a severity (`fail` makes the scan exit 1, `warn` is reported only). Format:

    [gates]
    synthetic_fraction_lower = { max = 0.10, severity = "fail" }
    precision = { min = 0.80, severity = "warn" }
    forecast_recall = { min = 0.9 }            # relative to the real-only loop; severity defaults to "fail"
    recall = false                             # drop a default gate

    [forecast]                                  # what forecast_recall / forecast_tail_coverage read
    loop = "fresh"
    generations = 10

Settings in the file replace the defaults gate by gate; flags (`--min-precision 0.9`) replace
both. A value that cannot be computed fails its gate at its own severity: an unknown is not a pass.
"""

from __future__ import annotations

import math
import sys
import stat
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from audit.limits import LimitError, check_forecast

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

CONFIG_FILE = "madaudit.toml"
SEVERITIES = ("fail", "warn")

# Every gateable value, its natural comparator, and what it means.
GATEABLE: dict[str, tuple[str, str]] = {
    "synthetic_fraction": ("max", "estimated synthetic share (supervised PACC with a detector, else BBE)"),
    "synthetic_fraction_lower": ("max", "lower end of the synthetic share: the supervised interval's lower "
                                        "end with a detector, else BBE's 'at least' bound"),
    "out_of_manifold": ("max", "share of candidate items outside every reference k-NN ball"),
    "precision": ("min", "share of candidate items inside the reference manifold"),
    "recall": ("min", "share of reference items inside the candidate manifold"),
    "density": ("min", "mean reference balls per candidate item / k"),
    "coverage": ("min", "share of reference balls holding a candidate item"),
    "tail_coverage": ("min", "coverage of the sparsest reference items (top q by k-NN radius)"),
    "cluster_tail_mass": ("min", "candidate share in the reference's smallest clusters"),
    "vendi_ratio": ("min", "Vendi diversity of the candidate over the reference's"),
    "fd": ("max", "Frechet distance"),
    "duplicate_rate": ("max", "share of candidate items with a near duplicate in the candidate"),
    "reference_copy_rate": ("max", "share of candidate items that copy a reference item (leak)"),
    "index_recall": ("min", "lowest measured recall@10 of the per-item pass's nearest-neighbour indexes "
                            "(1 when exact)"),
    "unreadable_share": ("max", "share of candidate and reference files that could not be read"),
    "forecast_recall": ("min", "forecast median recall at the last generation, as a share of the real-only loop's"),
    "forecast_tail_coverage": ("min", "forecast median tail coverage at the last generation, as a share of the real-only loop's"),
}


MAX_POLICY_BYTES = 1024 * 1024


class PolicyError(ValueError):
    """An invalid policy file or flag; the message names the key."""


@dataclass(frozen=True)
class Gate:
    metric: str
    comparator: str  # "min" or "max"
    threshold: float
    severity: str = "fail"

    def describe(self) -> str:
        return f"{self.metric} {'>=' if self.comparator == 'min' else '<='} {self.threshold:g}"


@dataclass(frozen=True)
class GateResult:
    gate: Gate
    value: float | None
    status: str  # "pass", "warn", "fail"
    message: str

    @property
    def unknown(self) -> bool:
        return self.value is None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self.gate), "value": self.value, "status": self.status, "unknown": self.unknown,
                "message": self.message}


@dataclass(frozen=True)
class ForecastSettings:
    loop: str = "fresh"
    model: str = "auto"  # the first stand-in that reproduces the reference (gmm, gaussian, categorical)
    generations: int = 10
    runs: int = 100
    dim: int = 32
    threshold: float = 0.9  # share of the real-only baseline that marks the MAD horizon
    eval_size: int = 200  # samples a run scores against up to 1,000 held-out reference points


@dataclass(frozen=True)
class Policy:
    gates: tuple[Gate, ...]
    forecast: ForecastSettings = field(default_factory=ForecastSettings)
    source: str = "defaults"

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "gates": [asdict(g) for g in self.gates], "forecast": asdict(self.forecast)}

    def to_toml(self) -> str:
        lines = [f"# madaudit policy (from {self.source})", "[gates]"]
        for g in self.gates:
            lines.append(f'{g.metric} = {{ {g.comparator} = {g.threshold!r}, severity = "{g.severity}" }}'
                         f"  # {GATEABLE[g.metric][1]}")
        present = {g.metric for g in self.gates}
        lines += [f"{g.metric} = false  # a default gate, turned off" for g in DEFAULT_POLICY.gates if g.metric not in present]
        lines.append("\n[forecast]")
        lines += [f"{'stand_in' if k == 'model' else k} = {v!r}".replace("'", '"') for k, v in asdict(self.forecast).items()]
        return "\n".join(lines) + "\n"


DEFAULT_POLICY = Policy((
    Gate("synthetic_fraction_lower", "max", 0.10, "fail"),
    Gate("synthetic_fraction", "max", 0.20, "warn"),
    Gate("precision", "min", 0.80, "warn"),
    Gate("recall", "min", 0.60, "warn"),
    Gate("coverage", "min", 0.80, "warn"),
    Gate("tail_coverage", "min", 0.60, "warn"),
    Gate("reference_copy_rate", "max", 0.05, "warn"),
    Gate("duplicate_rate", "max", 0.10, "warn"),
    Gate("unreadable_share", "max", 0.01, "fail"),
    Gate("forecast_recall", "min", 0.90, "warn"),
))


RUN_SECTIONS = ("inputs", "embed", "metrics", "detector", "items")  # the rest of a run's config (`audit.config`)


def find_config(directory: str | Path = ".") -> Path | None:
    """`madaudit.toml`, else a pyproject.toml with a [tool.madaudit] table, in `directory`."""
    directory = Path(directory)
    if (directory / CONFIG_FILE).is_file():
        return directory / CONFIG_FILE
    pyproject = directory / "pyproject.toml"
    if pyproject.is_file() and "madaudit" in read_toml(pyproject).get("tool", {}):
        return pyproject
    return None


def load_policy(config: str | Path | None = None, directory: str | Path = ".") -> Policy:
    """The defaults, updated by `config` (or the file `find_config` finds)."""
    path = Path(config) if config is not None else find_config(directory)
    if path is None:
        return DEFAULT_POLICY
    if not path.exists():
        raise PolicyError(f"config file not found: {path}")
    data = read_toml(path)
    if path.name == "pyproject.toml":
        data = data.get("tool", {}).get("madaudit", {})
        prefix = "tool.madaudit."
    else:
        prefix = ""
    return parse_policy(data, str(path), prefix)


def parse_policy(data: dict[str, Any], source: str = "config", prefix: str = "") -> Policy:
    if not isinstance(data, dict):
        raise PolicyError(f"{source}: the policy must be a table")
    for key in data:
        if key not in ("gates", "forecast", *RUN_SECTIONS):
            raise PolicyError(f"{source}: unknown section '{prefix}{key}' "
                              f"(expected {', '.join(RUN_SECTIONS)}, forecast or gates)")
    gates = {g.metric: g for g in DEFAULT_POLICY.gates}
    raw_gates = data.get("gates", {})
    if not isinstance(raw_gates, dict):
        raise PolicyError(f"{source}: '{prefix}gates' must be a table of metric = {{ min|max = ..., severity = ... }}")
    for metric, spec in raw_gates.items():
        key = f"{prefix}gates.{metric}"
        if metric not in GATEABLE:
            raise PolicyError(f"{source}: unknown metric '{key}'; gateable: {', '.join(GATEABLE)}")
        if spec is False:
            gates.pop(metric, None)
            continue
        gates[metric] = _parse_gate(spec, metric, key, source)
    forecast = _parse_forecast(data.get("forecast", {}), f"{prefix}forecast", source)
    return Policy(tuple(gates.values()), forecast, source)


def with_overrides(policy: Policy, overrides: dict[str, float]) -> Policy:
    """Flags: `{"min_precision": 0.9, "max_synthetic_fraction": 0.1}`; a gate already in the
    policy keeps its severity, a new one fails."""
    gates = {g.metric: g for g in policy.gates}
    for flag, threshold in overrides.items():
        comparator, _, metric = flag.partition("_")
        if metric not in GATEABLE or comparator not in ("min", "max"):
            raise PolicyError(f"unknown gate flag --{flag.replace('_', '-')}")
        _check_threshold(threshold, f"--{flag.replace('_', '-')}", "flag")
        old = gates.get(metric)
        gates[metric] = Gate(metric, comparator, float(threshold), old.severity if old else "fail")
    return replace(policy, gates=tuple(gates.values()), source=policy.source + " + flags" if overrides else policy.source)


def evaluate(policy: Policy, values: dict[str, float | None], reasons: dict[str, str] | None = None,
             notes: dict[str, str] | None = None) -> tuple[list[GateResult], str]:
    """Each gate against the measured values; the verdict is fail, warn or pass. A value that is
    missing or not finite is unknown and counts at the gate's severity; `reasons` says why.
    `notes` adds to a known value's message where it came from."""
    results = []
    for gate in policy.gates:
        value = values.get(gate.metric)
        if value is None or not math.isfinite(value):
            why = (reasons or {}).get(gate.metric, "could not be measured")
            results.append(GateResult(gate, None, gate.severity, f"unknown: {gate.metric} {why} (needed: "
                                      f"{gate.describe()}; an unknown counts as {gate.severity})"))
            continue
        ok = value >= gate.threshold if gate.comparator == "min" else value <= gate.threshold
        status = "pass" if ok else gate.severity
        message = f"{gate.metric} = {value:.4g}, {'meets' if ok else 'violates'} {gate.describe()}"
        if notes and gate.metric in notes:
            message += f" ({notes[gate.metric]})"
        results.append(GateResult(gate, float(value), status, message))
    statuses = {r.status for r in results}
    verdict = "fail" if "fail" in statuses else "warn" if "warn" in statuses else "pass"
    return results, verdict


def _parse_gate(spec: Any, metric: str, key: str, source: str) -> Gate:
    if not isinstance(spec, dict):
        raise PolicyError(f"{source}: '{key}' must be a table like {{ min = 0.9, severity = \"fail\" }} or false")
    unknown = set(spec) - {"min", "max", "severity"}
    if unknown:
        raise PolicyError(f"{source}: unknown key '{key}.{sorted(unknown)[0]}' (expected min or max, and severity)")
    comparators = [c for c in ("min", "max") if c in spec]
    if len(comparators) != 1:
        raise PolicyError(f"{source}: '{key}' needs exactly one of min or max")
    comparator = comparators[0]
    threshold = spec[comparator]
    _check_threshold(threshold, f"{key}.{comparator}", source)
    severity = spec.get("severity", "fail")
    if severity not in SEVERITIES:
        raise PolicyError(f"{source}: '{key}.severity' must be 'fail' or 'warn', got {severity!r}")
    return Gate(metric, comparator, float(threshold), severity)


def _check_threshold(threshold: Any, key: str, source: str) -> None:
    try:  # a 400-digit integer is an int that no float can hold
        finite = not isinstance(threshold, bool) and isinstance(threshold, (int, float)) and math.isfinite(float(threshold))
    except OverflowError:
        finite = False
    if not finite:
        shown = repr(threshold) if len(repr(threshold)) < 40 else repr(threshold)[:37] + "..."
        raise PolicyError(f"{source}: '{key}' must be a finite number, got {shown}")


def _parse_forecast(raw: Any, key: str, source: str) -> ForecastSettings:
    from audit.projector import LOOPS

    if not isinstance(raw, dict):
        raise PolicyError(f"{source}: '{key}' must be a table")
    if "stand_in" in raw:  # the name the command line uses (--stand-in); `model` is kept as an alias
        if "model" in raw:
            raise PolicyError(f"{source}: '{key}' has both stand_in and model (the same setting): keep stand_in")
        raw = {("model" if k == "stand_in" else k): v for k, v in raw.items()}
    defaults = asdict(ForecastSettings())
    for name, value in raw.items():
        if name not in defaults:
            raise PolicyError(f"{source}: unknown key '{key}.{name}' (expected {', '.join(defaults)})")
        expected = type(defaults[name])
        if isinstance(value, bool) or not isinstance(value, (expected, int) if expected is float else expected):
            raise PolicyError(f"{source}: '{key}.{name}' must be a {expected.__name__}, got {value!r}")
    settings = ForecastSettings(**{**defaults, **raw})
    if settings.loop not in LOOPS:
        raise PolicyError(f"{source}: '{key}.loop' must be one of {', '.join(LOOPS)}, got {settings.loop!r}")
    if settings.model not in ("auto", "gaussian", "gmm", "categorical"):
        raise PolicyError(f"{source}: '{key}.model' must be auto, gaussian, gmm or categorical, got {settings.model!r}")
    if (settings.generations < 1 or settings.runs < 1 or settings.dim < 1 or settings.eval_size < 10
            or not 0 < settings.threshold <= 1):
        raise PolicyError(f"{source}: '{key}' needs generations, runs, dim >= 1, eval_size >= 10 and threshold in (0, 1]")
    try:
        check_forecast(settings.generations, settings.runs, settings.dim, settings.eval_size)
    except LimitError as exc:
        raise PolicyError(f"{source}: '{key}': {exc}") from None
    return settings


def read_toml(path: Path) -> dict[str, Any]:
    try:
        st = path.stat()
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_POLICY_BYTES:
            raise PolicyError(f"{path}: not a regular file of at most {MAX_POLICY_BYTES} bytes")
        return tomllib.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise PolicyError(f"{path}: not UTF-8 text ({exc})") from None
    except (tomllib.TOMLDecodeError, RecursionError) as exc:
        raise PolicyError(f"{path}: not valid TOML ({exc})") from None
    except OSError as exc:
        raise PolicyError(f"{path}: cannot be read ({exc.strerror or exc})") from None
