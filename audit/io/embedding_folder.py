"""Embedding folders on disk, in the layout clip-retrieval uses.

    OUT/img_emb/img_emb_<i>.npy          (n_i, d) float32 (clip-retrieval: float16), L2-normalised
    OUT/metadata/metadata_<i>.parquet    row-aligned with part i: key (or image_path), ...
    OUT/skipped.csv                      key, reason, detail for every file left out (madaudit)
    OUT/madaudit.json                    format version, model identity, counts (madaudit)

Every part is read, in part order; a gap in the part numbers, a part without metadata while
others have it, or a metadata row count that differs from its part is refused. Parts are
read one block of rows at a time into the one float32 array kept, so reading costs a few MB
beyond that array, whatever the size of a part.
"""

from __future__ import annotations

import csv
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from audit.io.arrays import ArrayProblem, load_matrix, read_checked, read_header
from audit.io.atomic import write_atomic, write_text_atomic
from audit.io.files import Skipped

FORMAT = "madaudit-embeddings/1"
EMBEDDINGS_DIR = Path("img_emb")
METADATA_DIR = Path("metadata")
EMBEDDINGS_FILE = EMBEDDINGS_DIR / "img_emb_0.npy"
METADATA_FILE = METADATA_DIR / "metadata_0.parquet"
SKIPPED_FILE = "skipped.csv"
MANIFEST_FILE = "madaudit.json"
KEY_COLUMNS = ("key", "image_path")
MAX_MANIFEST_BYTES = 16 * 1024 * 1024
_PART = re.compile(r"img_emb_(\d+)\.npy")


class FolderProblem(ValueError):
    """An embedding folder that cannot be read as one; the message names the file."""


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
    """Write one embedding folder (one part). `metadata` holds extra row-aligned columns (sha256,
    width, ...). Every file is written atomically; the manifest last, after stale parts of an
    earlier, larger folder are removed, so a reader never mixes two runs."""
    out = Path(out)
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or vectors.shape[0] != len(keys):
        raise ValueError(f"vectors {vectors.shape} do not match {len(keys)} keys")
    (out / EMBEDDINGS_DIR).mkdir(parents=True, exist_ok=True)
    (out / METADATA_DIR).mkdir(parents=True, exist_ok=True)

    def save_npy(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            np.save(fh, vectors, allow_pickle=False)

    write_atomic(out / EMBEDDINGS_FILE, save_npy)
    table = pa.table({"key": pa.array(keys, pa.string()), **{k: pa.array(v) for k, v in metadata.items()}})
    write_atomic(out / METADATA_FILE, lambda tmp: pq.write_table(table, tmp))
    for stale in _part_files(out)[1:]:
        (out / EMBEDDINGS_DIR / stale).unlink(missing_ok=True)
        metadata_file(out, stale).unlink(missing_ok=True)

    def write_skipped(tmp: Path) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(["key", "reason", "detail"])
            writer.writerows((s.key, s.reason, s.detail) for s in skipped)

    write_atomic(out / SKIPPED_FILE, write_skipped)
    full_manifest = {"format": FORMAT, "count": len(keys), "dim": int(vectors.shape[1]), **manifest}
    write_text_atomic(out / MANIFEST_FILE, json.dumps(full_manifest, indent=2) + "\n")
    return out


def _part_files(path: Path) -> list[str]:
    """img_emb_<i>.npy names in part order."""
    folder = path / EMBEDDINGS_DIR
    if not folder.is_dir():
        return []
    parts = [(int(m.group(1)), name) for name in os.listdir(folder) if (m := _PART.fullmatch(name))]
    return [name for _, name in sorted(parts)]


def is_embedding_folder(path: str | os.PathLike) -> bool:
    return bool(_part_files(Path(path)))


def checked_parts(path: Path) -> tuple[list[str], list]:
    """An embedding folder's part names in order and their checked .npy headers: refused when there
    are none, when the numbering has a gap, or when the parts' dimensions differ."""
    parts = _part_files(path)
    if not parts:
        raise FolderProblem(f"{path} is neither a .npy file nor an embedding folder ({EMBEDDINGS_DIR}/img_emb_0.npy missing)")
    numbers = [int(_PART.fullmatch(p).group(1)) for p in parts]
    if numbers != list(range(len(parts))):
        missing = sorted(set(range(max(numbers) + 1)) - set(numbers))
        raise FolderProblem(f"{path / EMBEDDINGS_DIR}: parts {numbers} have a gap (img_emb_{missing[0]}.npy is "
                            "missing): refusing to read some parts and not others")
    headers = [read_header(path / EMBEDDINGS_DIR / p) for p in parts]
    dims = {h.shape[1] for h in headers}
    if len(dims) > 1:
        raise FolderProblem(f"{path / EMBEDDINGS_DIR}: parts have different dimensions {sorted(dims)}")
    return parts, headers


def metadata_file(path: Path, part: str) -> Path:
    """metadata/metadata_<i>.parquet of part img_emb_<i>.npy."""
    return path / METADATA_DIR / part.replace("img_emb_", "metadata_").replace(".npy", ".parquet")


def load_embeddings(path: str | os.PathLike) -> EmbeddingSet:
    """Read an embedding folder (madaudit embed or clip-retrieval, every part), or a `.npy` file
    (keys are then row numbers, the only identity a bare array has)."""
    path = Path(path)
    if path.is_file() and path.suffix == ".npy":
        vectors = load_matrix(path)
        return EmbeddingSet([str(i) for i in range(len(vectors))], vectors, None, str(path))
    parts, headers = checked_parts(path)
    keys = _read_keys(path, parts, [h.shape[0] for h in headers])
    vectors = np.empty((sum(h.shape[0] for h in headers), headers[0].shape[1]), dtype=np.float32)
    row = 0
    for part, header in zip(parts, headers):
        n = header.shape[0]
        read_checked(header, vectors[row:row + n])
        row += n
    identity = read_manifest(path).get("model")
    return EmbeddingSet(keys, vectors, identity if isinstance(identity, dict) else None, str(path))


def _read_keys(path: Path, parts: list[str], rows: list[int]) -> list[str]:
    metadata = [metadata_file(path, p) for p in parts]
    present = [m.is_file() for m in metadata]
    if not any(present):
        return [str(i) for i in range(sum(rows))]
    if not all(present):
        missing = metadata[present.index(False)]
        raise FolderProblem(f"{missing}: missing while other parts have metadata (keys would be misaligned)")
    keys: list[str] = []
    for meta, n in zip(metadata, rows):
        try:
            schema = pq.read_schema(meta)
            column = next((c for c in KEY_COLUMNS if c in schema.names), None)
            if column is None:
                part_keys = [str(len(keys) + i) for i in range(pq.ParquetFile(meta).metadata.num_rows)]
            else:
                part_keys = [str(k) for k in pq.read_table(meta, columns=[column]).column(column).to_pylist()]
        except (pa.ArrowException, OSError, ValueError) as exc:
            raise FolderProblem(f"{meta}: not a readable parquet file ({exc})") from None
        if len(part_keys) != n:
            raise FolderProblem(f"{meta}: {len(part_keys)} metadata rows but its part has {n} vectors")
        keys += part_keys
    return keys


def read_manifest(path: str | os.PathLike) -> dict[str, Any]:
    """madaudit.json of an embedding folder ({} when there is none), or FolderProblem naming it."""
    manifest = Path(path) / MANIFEST_FILE
    if not manifest.exists():
        return {}
    try:
        if not manifest.is_file() or manifest.stat().st_size > MAX_MANIFEST_BYTES:
            raise ValueError("not a regular file of at most 16 MB")
        data = json.loads(manifest.read_text(encoding="utf-8"))
    except (ValueError, OSError, RecursionError) as exc:
        raise FolderProblem(f"{manifest}: not a valid madaudit.json ({exc})") from None
    if not isinstance(data, dict):
        raise FolderProblem(f"{manifest}: not a valid madaudit.json (expected an object)")
    return data


def read_folder_extras(path: str | os.PathLike) -> tuple[list[Skipped], str | None]:
    """What an embedding folder says beyond its vectors: the files it left out (skipped.csv) and
    the image folder it was made from (madaudit.json `source`), when present."""
    path = Path(path)
    skipped: list[Skipped] = []
    skipped_file = path / SKIPPED_FILE
    if skipped_file.exists():
        try:
            with open(skipped_file, newline="", encoding="utf-8") as fh:
                reader = csv.DictReader(fh)
                if reader.fieldnames is None or not {"key", "reason"} <= set(reader.fieldnames):
                    raise ValueError("expected the columns key, reason, detail")
                skipped = [Skipped(str(row["key"]), str(row["reason"]), str(row.get("detail") or "")) for row in reader]
        except (ValueError, OSError, csv.Error) as exc:
            raise FolderProblem(f"{skipped_file}: not a valid skipped.csv ({exc})") from None
    source = read_manifest(path).get("source")
    return skipped, source if isinstance(source, str) else None


__all__ = ["ArrayProblem", "EmbeddingSet", "FolderProblem", "is_embedding_folder", "load_embeddings",
           "read_folder_extras", "read_manifest", "write_embedding_folder"]
