"""Lists of image paths: a .txt file (one path a line) or a parquet file with a `path` or
`image_path` column and no embedding column. Relative paths are relative to the list's folder.
Keys are the paths as written. Each path is checked like a file in a folder (missing, not a
regular file, too large) and listed with its reason when it cannot be used.
"""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from audit.io.arrays import ArrayProblem
from audit.io.files import DEFAULT_MAX_FILE_MB, FolderScan, ImageFile, stat_item

PATH_COLUMNS = ("path", "image_path", "filepath")
MAX_LIST_BYTES = 1 << 30


def is_path_list(path: str | os.PathLike) -> bool:
    p = Path(path)
    if not p.is_file():
        return False
    if p.suffix == ".txt":
        return True
    if p.suffix == ".parquet":
        try:
            return any(c in pq.read_schema(p).names for c in PATH_COLUMNS)
        except (pa.ArrowException, OSError):
            return False
    return False


def read_path_list(path: str | os.PathLike, max_file_mb: float = DEFAULT_MAX_FILE_MB) -> FolderScan:
    path = Path(path)
    entries = _read_entries(path)
    base = path.parent
    files, skipped = [], []
    seen = set()
    for entry in entries:
        if entry in seen:
            continue
        seen.add(entry)
        target = entry if os.path.isabs(entry) else str(base / entry)
        item = stat_item(entry, target, int(max_file_mb * 1024 * 1024))
        (files if isinstance(item, ImageFile) else skipped).append(item)
    if not entries:
        raise ArrayProblem(f"{path}: the path list is empty")
    files.sort(key=lambda f: f.key)
    skipped.sort(key=lambda s: s.key)
    return FolderScan(str(base), files, skipped)


def _read_entries(path: Path) -> list[str]:
    if path.suffix == ".parquet":
        try:
            schema = pq.read_schema(path)
            column = next(c for c in PATH_COLUMNS if c in schema.names)
            return [str(v) for v in pq.read_table(path, columns=[column]).column(column).to_pylist() if v]
        except (pa.ArrowException, OSError, StopIteration) as exc:
            raise ArrayProblem(f"{path}: not a readable path list ({exc})") from None
    if path.stat().st_size > MAX_LIST_BYTES:
        raise ArrayProblem(f"{path}: a path list over 1 GB")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ArrayProblem(f"{path}: not UTF-8 text ({exc})") from None
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
