"""JSON files the tool reads back (reports, detectors, manifests): only regular files, of a
bounded size, with bounded nesting, and every failure a ValueError that names the file."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

MAX_JSON_BYTES = 256 * 1024 * 1024
MAX_DEPTH = 64


def read_json(path: str | os.PathLike, what: str, max_bytes: int = MAX_JSON_BYTES) -> Any:
    """The parsed content of `path`, or ValueError("PATH is not a valid WHAT (why)")."""
    path = Path(path)
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            raise ValueError("not a regular file")
        if st.st_size > max_bytes:
            raise ValueError(f"{st.st_size} bytes, over the {max_bytes}-byte limit")
        text = path.read_bytes().decode("utf-8")
        data = json.loads(text, parse_constant=_no_constant)
        if depth(data) > MAX_DEPTH:
            raise ValueError(f"nested deeper than {MAX_DEPTH} levels")
    except FileNotFoundError:
        raise ValueError(f"{path}: not found") from None
    except (ValueError, OSError, RecursionError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        if isinstance(exc, RecursionError):
            why = "nested too deeply"
        raise ValueError(f"{path} is not a valid {what} ({why})") from None
    return data


def _no_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


def depth(value: Any) -> int:
    """Nesting depth, iteratively (a hostile file cannot exhaust the stack here)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        deepest = max(deepest, level)
        if level > MAX_DEPTH:
            return level
        if isinstance(item, dict):
            stack += [(v, level + 1) for v in item.values()]
        elif isinstance(item, list):
            stack += [(v, level + 1) for v in item]
    return deepest
