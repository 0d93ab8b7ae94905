"""Embedding folders on disk, in the layout clip-retrieval uses.

    OUT/img_emb/img_emb_0.npy          (n, d) float32, L2-normalised
    OUT/metadata/metadata_0.parquet    row-aligned: key, sha256, width, height
    OUT/skipped.csv                    key, reason, detail for every file left out
    OUT/madaudit.json                  format version, model identity, counts

`load_embeddings` reads such a folder back, or a bare `.npy` file (keys are then row numbers,
the only identity a bare array has).
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from audit.sources import Skipped

FORMAT = "madaudit-embeddings/1"
EMBEDDINGS_FILE = Path("img_emb") / "img_emb_0.npy"
METADATA_FILE = Path("metadata") / "metadata_0.parquet"
SKIPPED_FILE = "skipped.csv"
MANIFEST_FILE = "madaudit.json"


@dataclass
class EmbeddingSet:
    keys: list[str]
    vectors: np.ndarray
    model_identity: dict[str, Any] | None
    source: str


def write_embedding_folder(
    out: str | os.PathLike,
    keys: list[str],
    vectors: np.ndarray,
    metadata: dict[str, Any],
    skipped: list[Skipped],
    manifest: dict[str, Any],
) -> Path:
    """Write one embedding folder. `metadata` holds extra row-aligned columns (sha256, width, ...).
    Files are written to temporary names and renamed, so a reader never sees half a folder."""
    out = Path(out)
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or vectors.shape[0] != len(keys):
        raise ValueError(f"vectors {vectors.shape} do not match {len(keys)} keys")
    (out / EMBEDDINGS_FILE).parent.mkdir(parents=True, exist_ok=True)
    (out / METADATA_FILE).parent.mkdir(parents=True, exist_ok=True)

    _atomic(out / EMBEDDINGS_FILE, lambda tmp: np.save(tmp, vectors, allow_pickle=False))
    table = pa.table({"key": pa.array(keys, pa.string()), **{k: pa.array(v) for k, v in metadata.items()}})
    _atomic(out / METADATA_FILE, lambda tmp: pq.write_table(table, tmp))

    def write_skipped(tmp: Path) -> None:
        with open(tmp, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["key", "reason", "detail"])
            writer.writerows((s.key, s.reason, s.detail) for s in skipped)

    _atomic(out / SKIPPED_FILE, write_skipped)
    full_manifest = {"format": FORMAT, "count": len(keys), "dim": int(vectors.shape[1]), **manifest}
    _atomic(out / MANIFEST_FILE, lambda tmp: tmp.write_text(json.dumps(full_manifest, indent=2) + "\n"))
    return out


def _atomic(path: Path, write) -> None:
    tmp = path.with_name(path.name + ".tmp")
    if path.suffix == ".npy":
        tmp = path.with_name(path.stem + ".tmp.npy")  # np.save appends .npy otherwise
    write(tmp)
    os.replace(tmp, path)


def is_embedding_folder(path: str | os.PathLike) -> bool:
    return (Path(path) / EMBEDDINGS_FILE).is_file()


def load_embeddings(path: str | os.PathLike) -> EmbeddingSet:
    """Read an embedding folder written by `madaudit embed` (or clip-retrieval), or a `.npy` file."""
    path = Path(path)
    if path.is_file() and path.suffix == ".npy":
        vectors = _load_matrix(path)
        return EmbeddingSet([str(i) for i in range(len(vectors))], vectors, None, str(path))
    if not is_embedding_folder(path):
        raise FileNotFoundError(f"{path} is neither a .npy file nor an embedding folder ({EMBEDDINGS_FILE} missing)")
    vectors = _load_matrix(path / EMBEDDINGS_FILE)
    keys = [str(i) for i in range(len(vectors))]
    if (path / METADATA_FILE).is_file():
        table = pq.read_table(path / METADATA_FILE)
        key_column = next((c for c in ("key", "image_path") if c in table.column_names), None)
        if key_column:
            keys = [str(k) for k in table.column(key_column).to_pylist()]
    if len(keys) != len(vectors):
        raise ValueError(f"{path}: {len(vectors)} vectors but {len(keys)} metadata rows")
    identity = None
    if (path / MANIFEST_FILE).is_file():
        identity = json.loads((path / MANIFEST_FILE).read_text()).get("model")
    return EmbeddingSet(keys, vectors, identity, str(path))


def _load_matrix(path: Path) -> np.ndarray:
    vectors = np.load(path, allow_pickle=False)
    if vectors.ndim != 2:
        raise ValueError(f"{path}: expected a 2-D array (n, d), got shape {vectors.shape}")
    return np.ascontiguousarray(vectors, dtype=np.float32)


def read_folder_extras(path: str | os.PathLike) -> tuple[list[Skipped], str | None]:
    """What an embedding folder says beyond its vectors: the files it left out (skipped.csv) and
    the image folder it was made from (madaudit.json `source`), when present."""
    path = Path(path)
    skipped: list[Skipped] = []
    if (path / SKIPPED_FILE).is_file():
        with open(path / SKIPPED_FILE, newline="", encoding="utf-8") as fh:
            skipped = [Skipped(row["key"], row["reason"], row.get("detail") or "") for row in csv.DictReader(fh)]
    source = None
    if (path / MANIFEST_FILE).is_file():
        source = json.loads((path / MANIFEST_FILE).read_text()).get("source")
    return skipped, source
