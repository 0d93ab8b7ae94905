"""`madaudit filter`: the keep list from a scan's items.parquet, under any drop list."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from audit.items.scoring import FLAG_OF_REASON
from audit.items.table import ITEMS_FILE, keep_keys, read_items, write_keys


def filter_items(report: str | Path, drop: tuple[str, ...] | None = None, out: str | Path | None = None
                 ) -> dict[str, Any]:
    """Write the keys to keep (`out`, default keep.txt beside items.parquet) and return the counts.
    `drop` defaults to the list the scan used (report.json beside the table), else the default."""
    from audit.items.scoring import DEFAULT_DROP

    report = Path(report)
    folder = report if report.is_dir() else report.parent
    items = read_items(report)
    if drop is None:
        drop = _scan_drop(folder) or DEFAULT_DROP
    keys = keep_keys(items, drop)
    out = Path(out) if out is not None else folder / "keep.txt"
    write_keys(keys, out)
    flagged = {reason: int(np.count_nonzero(items.column(FLAG_OF_REASON[reason]).to_numpy())) for reason in drop}
    return {"items": items.num_rows, "kept": len(keys), "drop": list(drop), "flagged": flagged, "out": str(out),
            "table": str(folder / ITEMS_FILE if report.is_dir() else report)}


def _scan_drop(folder: Path) -> tuple[str, ...] | None:
    """The drop list report.json says the scan used, if it is there and says one."""
    from audit.io.jsonfile import read_json

    path = folder / "report.json"
    if not path.is_file():
        return None
    try:
        data = read_json(path, "madaudit report")
        return tuple(data["items"]["rules"]["drop"])
    except (ValueError, KeyError, TypeError, OSError):
        return None
