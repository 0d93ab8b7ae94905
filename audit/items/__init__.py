"""Per-item verdicts at scale: every candidate item scored against the reference, part by part.

| module    | idea                                                                          |
|-----------|-------------------------------------------------------------------------------|
| `source`  | the candidate (or reference) read part by part, and seeded row samples         |
| `ivf`     | nearest neighbours: an inverted file on numpy's BLAS, its recall measured      |
| `scoring` | one part's columns: scores, balls, nearest items, flags, keep                  |
| `run`     | the pass end to end, in this process or on Ray                                 |
| `table`   | items.parquet and the keep lists `madaudit filter` writes                      |
"""

from audit.items.run import ENGINES, EngineProblem, ItemSettings, items_problem, scan_items
from audit.items.scoring import DEFAULT_DROP, DROP_REASONS, UnsupervisedItems, parse_drop
from audit.items.source import ArraySource, FolderSource, PartSource
from audit.items.table import ITEMS_FILE, ItemsProblem, keep_keys, read_items, write_keys

__all__ = ["ArraySource", "DEFAULT_DROP", "DROP_REASONS", "ENGINES", "EngineProblem", "FolderSource", "ITEMS_FILE",
           "ItemSettings", "ItemsProblem", "items_problem", "PartSource", "UnsupervisedItems", "keep_keys", "parse_drop", "read_items",
           "scan_items", "write_keys"]
