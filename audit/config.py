"""The run configuration: one file (madaudit.toml, or [tool.madaudit] in pyproject.toml) that
describes a whole scan, so CI needs no flags.

    [inputs]    reference, candidate, out
    [embed]     model, pretrained, device, offline, batch_size, workers, max_file_mb,
                embedding_column, embedding_model, cache, basis
    [metrics]   k, tail_q, duplicates, duplicate_quantile, duplicate_cosine, clusters, seed
    [detector]  path, delta, top
    [items]     enabled, sample_size, exact, target_recall, drop, engine, address, ray_workers
    [forecast]  loop, stand_in (`model` is accepted too), generations, runs, dim, threshold, eval_size
    [gates]     metric = { min | max = threshold, severity = "fail" | "warn" }

[gates] and [forecast] are the policy (`audit.policy`); this module reads the other sections and
turns them into defaults for `madaudit scan`'s options: a flag on the command line still wins.
Unknown sections or keys and values of the wrong type are refused, naming the key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from audit.policy import RUN_SECTIONS, PolicyError, find_config, read_toml

# section -> key -> (scan's parameter name, accepted types)
RUN_KEYS: dict[str, dict[str, tuple[str, tuple[type, ...]]]] = {
    "inputs": {"reference": ("reference", (str,)), "candidate": ("candidate", (str,)), "out": ("out", (str,))},
    "embed": {"model": ("model", (str,)), "pretrained": ("pretrained", (str,)), "device": ("device", (str,)),
              "offline": ("offline", (bool,)), "batch_size": ("batch_size", (int,)), "workers": ("workers", (int,)),
              "max_file_mb": ("max_file_mb", (int, float)), "embedding_column": ("embedding_column", (str,)),
              "embedding_model": ("embedding_model", (str, list)), "cache": ("cache_path", (str,)),
              "basis": ("basis", (str,))},
    "metrics": {"k": ("k", (int,)), "tail_q": ("tail_q", (int, float)), "duplicates": ("duplicates", (str,)),
                "duplicate_quantile": ("duplicate_quantile", (int, float)),
                "duplicate_cosine": ("duplicate_cosine", (int, float)), "clusters": ("clusters", (int,)),
                "seed": ("seed", (int,))},
    "detector": {"path": ("detector_path", (str,)), "delta": ("delta", (int, float)), "top": ("top", (int,))},
    "items": {"enabled": ("items", (bool,)), "sample_size": ("sample_size", (int,)), "exact": ("exact", (bool,)),
              "target_recall": ("target_recall", (int, float)), "drop": ("drop", (str, list)),
              "engine": ("engine", (str,)), "address": ("address", (str,)), "ray_workers": ("ray_workers", (int,))},
}
POLICY_SECTIONS = ("forecast", "gates")
SECTIONS = (*RUN_SECTIONS, *POLICY_SECTIONS)


def read_config(config: str | Path | None = None, directory: str | Path = ".") -> tuple[dict[str, Any], str, str]:
    """(the madaudit table, its source, the key prefix) of `config` or the file `find_config`
    finds; an empty table when there is none."""
    path = Path(config) if config is not None else find_config(directory)
    if path is None:
        return {}, "defaults", ""
    if not path.exists():
        raise PolicyError(f"config file not found: {path}")
    data = read_toml(path)
    if path.name == "pyproject.toml":
        return data.get("tool", {}).get("madaudit", {}), str(path), "tool.madaudit."
    return data, str(path), ""


def run_defaults(data: dict[str, Any], source: str = "config", prefix: str = "") -> dict[str, Any]:
    """scan's parameter name -> value, from the run sections of a config table. Relative paths in
    [inputs], [detector] and [embed].cache are taken relative to the config file's folder."""
    if not isinstance(data, dict):
        raise PolicyError(f"{source}: the configuration must be a table")
    base = Path(source).parent if source not in ("defaults", "config") else Path(".")
    out: dict[str, Any] = {}
    for section, table in data.items():
        if section not in SECTIONS:
            raise PolicyError(f"{source}: unknown section '{prefix}{section}' (expected {', '.join(SECTIONS)})")
        if section in POLICY_SECTIONS:
            continue
        if not isinstance(table, dict):
            raise PolicyError(f"{source}: '{prefix}{section}' must be a table")
        for key, value in table.items():
            if key not in RUN_KEYS[section]:
                raise PolicyError(f"{source}: unknown key '{prefix}{section}.{key}' "
                                  f"(expected {', '.join(RUN_KEYS[section])})")
            name, types = RUN_KEYS[section][key]
            if (isinstance(value, bool) and bool not in types) or not isinstance(value, types):
                wanted = " or ".join("number" if t is float else {int: "integer", str: "string", bool: "true/false",
                                                                   list: "list"}.get(t, t.__name__)
                                     for t in types if not (t is int and float in types))
                raise PolicyError(f"{source}: '{prefix}{section}.{key}' must be a {wanted}, got {value!r}")
            if name in ("reference", "candidate", "out", "detector_path", "cache_path", "basis"):
                value = str(base / value)
            if name == "drop" and isinstance(value, list):
                if not all(isinstance(v, str) for v in value):
                    raise PolicyError(f"{source}: '{prefix}{section}.{key}' must be a list of names")
                value = ",".join(value)
            if name == "embedding_model":
                value = [value] if isinstance(value, str) else value
                if not all(isinstance(v, str) for v in value) or not 1 <= len(value) <= 2:
                    raise PolicyError(f"{source}: '{prefix}{section}.{key}' must be a name or a list of two names")
                value = tuple(value)
            out[name] = value
    return out


STARTER = '''# madaudit.toml: one scan, described once. `madaudit scan` reads this file from the working
# directory (or `--config FILE`); any flag on the command line overrides it. Every key is
# optional: delete what you do not need. `madaudit policy --show` prints what is in effect.

[inputs]
# reference = "data/reference"      # trusted real items: images, shards, a path list or embeddings
# candidate = "data/candidate"      # the set you want to train on
# out = "madaudit-report"           # where report.json, report.md, report.html and junit.xml go

[embed]
# model = "ViT-B-32"                # open_clip architecture, a model-config .json, or "pixels"
# pretrained = "laion2b_s34b_b79k"  # open_clip tag or a local checkpoint file
# device = "auto"
# offline = false                   # true: never download weights
# batch_size = 64
# max_file_mb = 256
# embedding_model = "ViT-B-32/laion2b_s34b_b79k"   # the model of bare .npy / parquet embeddings
# basis = "embeddings/pixels_basis.npz"   # pixels: reuse the basis `madaudit embed` wrote

[metrics]
# k = 5                             # neighbours for the k-NN radii
# tail_q = 0.1                      # share of the reference that tail coverage looks at
# duplicates = "calibrated"         # or "cosine"
# duplicate_quantile = 0.001        # calibrated: quantile of the reference's nearest-neighbour distances
# duplicate_cosine = 0.95           # cosine: similarity threshold
# seed = 0

[detector]
# path = "detector.json"            # from `madaudit detector train`: adds the supervised estimate
# delta = 0.05                      # BBE's lower bound holds with probability 1 - delta
# top = 24                          # most suspicious items shown in the report

[items]                             # the per-item pass: items.parquet, `madaudit filter`
# enabled = true
# sample_size = 50000               # set-level numbers on seeded samples of at most this many items a side
# exact = false                     # true: exact nearest neighbours whatever the size
# target_recall = 0.95              # recall@10 the approximate index is tuned to (measured, in report.json)
# drop = ["synthetic", "copies", "duplicates"]   # also "outside"
# engine = "local"                  # or "ray" (pip install 'madaudit[ray]')

[forecast]
# loop = "fresh"                    # fully_synthetic, augment, fresh or accumulate
# stand_in = "auto"                 # the generative stand-in (--stand-in): auto, gaussian, gmm or categorical
# generations = 10
# runs = 100
# dim = 32
# threshold = 0.9                   # MAD horizon: relative recall or tail coverage below this
# eval_size = 200

[gates]                             # metric = { min | max = threshold, severity = "fail" | "warn" }
synthetic_fraction_lower = { max = 0.10, severity = "fail" }
synthetic_fraction = { max = 0.20, severity = "warn" }
precision = { min = 0.80, severity = "warn" }
recall = { min = 0.60, severity = "warn" }
coverage = { min = 0.80, severity = "warn" }
tail_coverage = { min = 0.60, severity = "warn" }
reference_copy_rate = { max = 0.05, severity = "warn" }
duplicate_rate = { max = 0.10, severity = "warn" }
unreadable_share = { max = 0.01, severity = "fail" }
forecast_recall = { min = 0.90, severity = "warn" }
'''
