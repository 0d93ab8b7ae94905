"""items.parquet: one row per candidate item, written part by part (one row group a part) to a
temporary file renamed into place at the end, so a reader never sees half a table; and the keep
lists `madaudit filter` writes from it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from audit.items.scoring import DROP_REASONS, FLAG_OF_REASON, keep_mask

ITEMS_FILE = "items.parquet"
FLAGS = ("synthetic", "copy", "duplicate", "outside", "keep")


class ItemsProblem(ValueError):
    """An items.parquet that cannot be read as one; the message names it."""


class ItemsWriter:
    """Append parts' columns; counts every flag on the way."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        self.writer: pq.ParquetWriter | None = None
        self.rows = 0
        self.counts = {flag: 0 for flag in FLAGS}

    def __enter__(self) -> ItemsWriter:
        return self

    def write(self, columns: dict[str, Any]) -> None:
        table = pa.table({name: pa.array(values) for name, values in columns.items()})
        if self.writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.writer = pq.ParquetWriter(self.tmp, table.schema)
        self.writer.write_table(table)
        self.rows += table.num_rows
        for flag in FLAGS:
            self.counts[flag] += int(np.count_nonzero(np.asarray(columns[flag])))

    def __exit__(self, kind, value, tb) -> None:
        try:
            if self.writer is not None:
                self.writer.close()
            if kind is None and self.writer is not None:
                with open(self.tmp, "rb") as fh:
                    os.fsync(fh.fileno())
                os.replace(self.tmp, self.path)
        finally:  # a failed pass (or a full disk) leaves no temporary file behind
            self.tmp.unlink(missing_ok=True)


def read_items(path: str | Path, columns: list[str] | None = None) -> pa.Table:
    """items.parquet (or the report folder holding it), checked for the columns a filter needs."""
    path = Path(path)
    if path.is_dir():
        path = path / ITEMS_FILE
    if not path.is_file():
        raise ItemsProblem(f"{path}: not found (run `madaudit scan` with --items to write it)")
    try:
        table = pq.read_table(path, columns=columns)
    except (pa.ArrowException, OSError) as exc:
        raise ItemsProblem(f"{path}: not a readable parquet file ({exc})") from None
    missing = [c for c in ("row", "key", *FLAGS) if columns is None and c not in table.column_names]
    if missing:
        raise ItemsProblem(f"{path}: not a madaudit items table (no column {missing[0]!r})")
    return table


def keep_keys(items: pa.Table, drop: tuple[str, ...]) -> list[str]:
    """Keys of the items no flag of `drop` marks, in candidate order."""
    unknown = [d for d in drop if d not in DROP_REASONS]
    if unknown:
        raise ValueError(f"unknown drop reason {unknown[0]!r} (use any of {', '.join(DROP_REASONS)})")
    columns = {"row": items.column("row").to_numpy()}
    for reason in drop:
        columns[FLAG_OF_REASON[reason]] = items.column(FLAG_OF_REASON[reason]).to_numpy()
    keep = keep_mask(columns, drop)
    keys = items.column("key")
    return [str(k) for k in keys.filter(pa.array(keep)).to_pylist()]


def write_keys(keys: list[str], out: str | Path) -> Path:
    """The keep list: parquet (one column `key`) for a .parquet name, else text, one key a line."""
    from audit.io.atomic import write_atomic, write_text_atomic

    out = Path(out)
    if out.suffix == ".parquet":
        table = pa.table({"key": pa.array(keys, pa.string())})
        write_atomic(out, lambda tmp: pq.write_table(table, tmp))
    else:
        if any("\n" in k or "\r" in k for k in keys):
            raise ValueError("a key holds a line break: write the keep list as .parquet instead")
        write_text_atomic(out, "".join(k + "\n" for k in keys))
    return out
