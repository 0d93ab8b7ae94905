"""madaudit: audit a candidate training set against a trusted real reference set."""

__version__ = "0.1.0"
