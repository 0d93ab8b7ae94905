"""madaudit: audit a candidate training set against a trusted real reference set.

`audit.scan(reference, candidate)` runs the whole audit (what `madaudit scan` runs) and returns
a `ScanResult`; `audit.compare(reference, candidate)` computes every metric,
`audit.project(reference, ...)` forecasts MAD over generations. They are imported on first use,
so importing `audit` (and starting the command line) stays cheap.
"""

__version__ = "0.1.0"

_LAZY = {"compare": ("audit.metrics", "compare"), "project": ("audit.projector", "project"),
         "scan": ("audit.pipeline", "scan")}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        module, attribute = _LAZY[name]
        return getattr(importlib.import_module(module), attribute)
    raise AttributeError(f"module 'audit' has no attribute {name!r}")
