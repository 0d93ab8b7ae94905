"""Store: a server-less, content-addressed embedding cache in one SQLite file.

Tables:
- `file_hash`: (absolute path, size, mtime_ns) -> sha256 of the content. The fast path: an
  unchanged file is never read again to find its hash.
- `embedding`: (model identity, sha256) -> float32 vector, width, height. Keyed by content, so a
  renamed or copied file is not re-embedded, and a changed file (new hash) is.
- `model`: model id -> its identity (JSON), for people inspecting the cache.
- `resolution`: how a (model, pretrained) request resolved last time (see embedding.load_embedder).

Each batch is written in one transaction, so an interrupted run keeps every batch it committed and
loses only the one in flight. WAL mode with a busy timeout lets several processes share the cache:
readers never block, writers queue.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

_SCHEMA = """
CREATE TABLE IF NOT EXISTS file_hash (
    path TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    sha256 TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS model (
    model_id TEXT PRIMARY KEY,
    identity TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS resolution (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS embedding (
    model_id TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    vector BLOB NOT NULL,
    PRIMARY KEY (model_id, sha256)
) WITHOUT ROWID;
"""

_BUSY_TIMEOUT_MS = 120_000
_CHUNK = 500  # keys per IN (...) query, well under SQLite's variable limit


def default_cache_path() -> Path:
    """$MADAUDIT_CACHE, else $XDG_CACHE_HOME/madaudit/embeddings.sqlite, else ~/.cache/..."""
    if env := os.environ.get("MADAUDIT_CACHE"):
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "madaudit" / "embeddings.sqlite"


def sha256_file(path: str, chunk_size: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk_size):
            h.update(block)
    return h.hexdigest()


class CacheUnavailable(RuntimeError):
    """The cache file cannot be opened or written (an input/runtime error: exit 3)."""


class EmbeddingStore:
    """Open (creating if needed) the cache at `path`. Safe to use from several processes.
    Raises CacheUnavailable, naming the file, when it cannot be used."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        try:
            if self.path.exists() and not self.path.is_file():
                raise CacheUnavailable("not a regular file")
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, timeout=_BUSY_TIMEOUT_MS / 1000, isolation_level=None)
            self._db.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
            self._retry_busy(lambda: self._db.execute("PRAGMA journal_mode = WAL"))
            self._db.execute("PRAGMA synchronous = NORMAL")  # durable at commit in WAL mode
            self._retry_busy(lambda: self._db.executescript(_SCHEMA))
        except (sqlite3.Error, OSError, CacheUnavailable) as exc:
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            raise CacheUnavailable(f"embedding cache {self.path} cannot be used ({why}); point --cache or "
                                   "$MADAUDIT_CACHE at a writable file") from None

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> EmbeddingStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @staticmethod
    def _retry_busy(action, attempts: int = 50):
        # Switching to WAL or creating the schema can hit SQLITE_BUSY without the busy handler
        # being consulted when another process is doing the same at the same instant.
        for attempt in range(attempts):
            try:
                return action()
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or attempt == attempts - 1:
                    raise
                time.sleep(0.05 * (attempt + 1))

    # -- file hashes -------------------------------------------------------------------------

    def known_hashes(self, files: Sequence[tuple[str, int, int]]) -> dict[str, str]:
        """For (abs_path, size, mtime_ns) triples, the stored sha256 of those still unchanged."""
        wanted = {path: (size, mtime) for path, size, mtime in files}
        found: dict[str, str] = {}
        paths = list(wanted)
        for start in range(0, len(paths), _CHUNK):
            chunk = paths[start : start + _CHUNK]
            marks = ",".join("?" * len(chunk))
            rows = self._db.execute(
                f"SELECT path, size, mtime_ns, sha256 FROM file_hash WHERE path IN ({marks})", chunk
            )
            for path, size, mtime, sha in rows:
                if wanted[path] == (size, mtime):
                    found[path] = sha
        return found

    # -- embeddings ----------------------------------------------------------------------------

    def register_model(self, model_id: str, identity_json: str) -> None:
        with self._write():
            self._db.execute(
                "INSERT OR IGNORE INTO model (model_id, identity) VALUES (?, ?)", (model_id, identity_json)
            )

    def get_resolution(self, key: str) -> dict | None:
        """A remembered model resolution (see embedding.load_embedder), or None."""
        row = self._db.execute("SELECT value FROM resolution WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def put_resolution(self, key: str, value: dict) -> None:
        with self._write():
            self._db.execute("INSERT OR REPLACE INTO resolution (key, value) VALUES (?, ?)", (key, json.dumps(value)))

    def lookup(self, model_id: str, hashes: Iterable[str]) -> dict[str, tuple[np.ndarray, int, int]]:
        """sha256 -> (vector, width, height) for the hashes already embedded by this model."""
        unique = list(dict.fromkeys(hashes))
        found: dict[str, tuple[np.ndarray, int, int]] = {}
        for start in range(0, len(unique), _CHUNK):
            chunk = unique[start : start + _CHUNK]
            marks = ",".join("?" * len(chunk))
            rows = self._db.execute(
                f"SELECT sha256, width, height, vector FROM embedding "
                f"WHERE model_id = ? AND sha256 IN ({marks})",
                [model_id, *chunk],
            )
            for sha, width, height, blob in rows:
                found[sha] = (np.frombuffer(blob, dtype=np.float32), width, height)
        return found

    def put_embeddings(
        self,
        model_id: str,
        rows: Sequence[tuple[str, int, int, np.ndarray]],
        file_hashes: Sequence[tuple[str, int, int, str]] = (),
    ) -> None:
        """Commit one batch atomically: (sha, width, height, vector) rows, and the
        (abs_path, size, mtime_ns, sha) fast-path rows of the files they came from."""
        with self._write():
            self._db.executemany(
                "INSERT OR REPLACE INTO embedding (model_id, sha256, width, height, vector) "
                "VALUES (?, ?, ?, ?, ?)",
                [
                    (model_id, sha, int(w), int(h), np.ascontiguousarray(v, dtype=np.float32).tobytes())
                    for sha, w, h, v in rows
                ],
            )
            self._db.executemany(
                "INSERT OR REPLACE INTO file_hash (path, size, mtime_ns, sha256) VALUES (?, ?, ?, ?)",
                list(file_hashes),
            )

    def count_embeddings(self, model_id: str | None = None) -> int:
        if model_id is None:
            return self._db.execute("SELECT COUNT(*) FROM embedding").fetchone()[0]
        return self._db.execute("SELECT COUNT(*) FROM embedding WHERE model_id = ?", (model_id,)).fetchone()[0]

    def integrity_ok(self) -> bool:
        return self._db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"

    def _write(self):
        return _Transaction(self._db)


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on any exception (KeyboardInterrupt included)."""

    def __init__(self, db: sqlite3.Connection):
        self._db = db

    def __enter__(self):
        self._db.execute("BEGIN IMMEDIATE")
        return self._db

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self._db.execute("COMMIT")
        else:
            self._db.execute("ROLLBACK")
        return False
