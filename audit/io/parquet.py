"""Parquet tables with an embedding column (a file, or a folder of .parquet files in name order).

The embedding column holds one list of numbers per row (list, large_list or fixed_size_list);
every row must have the same length. Keys come from the first of `key`, `image_path`, `url`
present, else row numbers. Files are read one row group at a time into the one array kept.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from audit.io.arrays import ArrayProblem, copy_checked
from audit.io.embedding_folder import EmbeddingSet

DEFAULT_EMBEDDING_COLUMN = "embedding"
KEY_COLUMNS = ("key", "image_path", "url")


def parquet_files(path: str | os.PathLike) -> list[Path]:
    path = Path(path)
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.suffix == ".parquet" and p.is_file())
    return [path]


def is_embedding_table(path: str | os.PathLike, column: str = DEFAULT_EMBEDDING_COLUMN) -> bool:
    files = parquet_files(path)
    if not files:
        return False
    try:
        return column in pq.read_schema(files[0]).names
    except (pa.ArrowException, OSError):
        return Path(path).is_file()  # a broken .parquet file: let the reader say what is wrong


def load_parquet_embeddings(path: str | os.PathLike, column: str = DEFAULT_EMBEDDING_COLUMN) -> EmbeddingSet:
    files = parquet_files(path)
    if not files:
        raise ArrayProblem(f"{path}: no .parquet files")
    metas = []
    for f in files:
        try:
            pf = pq.ParquetFile(f)
        except (pa.ArrowException, OSError) as exc:
            raise ArrayProblem(f"{f}: not a readable parquet file ({exc})") from None
        if column not in pf.schema_arrow.names:
            raise ArrayProblem(f"{f}: no column '{column}' (columns: {', '.join(pf.schema_arrow.names)}); "
                               "name the embedding column with --embedding-column")
        metas.append(pf)
    total = sum(pf.metadata.num_rows for pf in metas)
    blocks: list[np.ndarray] = []
    keys: list[str] = []
    for f, pf in zip(files, metas):
        key_column = next((c for c in KEY_COLUMNS if c in pf.schema_arrow.names), None)
        for g in range(pf.num_row_groups):
            try:
                table = pf.read_row_group(g, columns=[column] + ([key_column] if key_column else []))
                matrix = _matrix(table.column(column), f"{f}: column '{column}'")
            except (pa.ArrowException, OSError) as exc:
                raise ArrayProblem(f"{f}: row group {g} cannot be read ({exc})") from None
            if blocks and matrix.shape[1] != blocks[0].shape[1]:
                raise ArrayProblem(f"{f}: embeddings of length {matrix.shape[1]} after {blocks[0].shape[1]}")
            out = np.empty(matrix.shape, dtype=np.float32)
            copy_checked(matrix, out, f"{f}: column '{column}'", len(keys))
            blocks.append(out)
            keys += ([str(k) for k in table.column(key_column).to_pylist()] if key_column
                     else [str(len(keys) + i) for i in range(len(out))])
    if total == 0 or not blocks:
        raise ArrayProblem(f"{path}: the table has no rows")
    return EmbeddingSet(keys, np.concatenate(blocks) if len(blocks) > 1 else blocks[0], None, str(path))


def _matrix(column: pa.ChunkedArray, name: str) -> np.ndarray:
    column = column.combine_chunks()
    if not (pa.types.is_list(column.type) or pa.types.is_large_list(column.type)
            or pa.types.is_fixed_size_list(column.type)):
        raise ArrayProblem(f"{name}: expected one list of numbers per row, got {column.type}")
    if column.null_count:
        raise ArrayProblem(f"{name}: {column.null_count} rows have no embedding (null)")
    if not (pa.types.is_floating(column.type.value_type) or pa.types.is_integer(column.type.value_type)):
        raise ArrayProblem(f"{name}: list items are {column.type.value_type}, not numbers")
    lengths = pc.list_value_length(column).to_numpy(zero_copy_only=False)
    if len(lengths) and (lengths.min() != lengths.max() or lengths[0] == 0):
        raise ArrayProblem(f"{name}: rows have different embedding lengths ({lengths.min()} to {lengths.max()})")
    values = pc.list_flatten(column)
    if values.null_count:
        raise ArrayProblem(f"{name}: an embedding holds a null value")
    return values.to_numpy(zero_copy_only=False).reshape(len(column), int(lengths[0]) if len(lengths) else 0)
