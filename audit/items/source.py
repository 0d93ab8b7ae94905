"""Candidate sets read part by part: memory bounded by a part, whatever the number of items.

A `PartSource` is the rows of one side, in order, cut into spans of at most `PART_ROWS` rows
(never across files), each read as (keys, float32 vectors) with every value checked, plus
seeded row samples read one row at a time. Two kinds:

- `FolderSource`: a `.npy` file or an embedding folder (`madaudit embed`, clip-retrieval:
  img_emb/img_emb_<i>.npy with metadata/metadata_<i>.parquet), read with plain file reads (no
  memory map, whose touched pages would count against the process);
- `ArraySource`: vectors already in memory (an image folder just embedded, an array).

Both are plain picklable data, so a Ray worker reads its own spans from the same files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Iterator

import numpy as np

from audit.io.arrays import ArrayProblem, NpyHeader, check_values, read_header

PART_ROWS = 65_536  # rows read and scored at a time (128 MB of float32 at d = 512)


@dataclass(frozen=True)
class Span:
    start: int  # first global row
    stop: int
    file: int  # which file of the source
    offset: int  # first row within that file


class PartSource:
    count: int
    dim: int
    spans: list[Span]

    def read(self, span: Span) -> tuple[list[str], np.ndarray]:
        raise NotImplementedError

    def take(self, rows: np.ndarray) -> np.ndarray:
        """The vectors of the given global rows (any order), float32 (len(rows), d)."""
        raise NotImplementedError

    def keys_of(self, rows: np.ndarray) -> list[str]:
        raise NotImplementedError

    def all_keys(self) -> list[str]:
        return [k for span in self.spans for k in self.read(span)[0]]

    def parts(self) -> Iterator[tuple[Span, list[str], np.ndarray]]:
        for span in self.spans:
            keys, vectors = self.read(span)
            yield span, keys, vectors

    def sample_rows(self, size: int, seed: int) -> np.ndarray:
        """A seeded uniform sample of rows without replacement, sorted (all rows if size >= count)."""
        if size >= self.count:
            return np.arange(self.count)
        return np.sort(np.random.default_rng(seed).choice(self.count, size, replace=False))


def _spans(file_rows: list[int], part_rows: int) -> list[Span]:
    spans, row = [], 0
    for f, n in enumerate(file_rows):
        for offset in range(0, n, part_rows):
            stop = min(n, offset + part_rows)
            spans.append(Span(row + offset, row + stop, f, offset))
        row += n
    return spans


@dataclass
class ArraySource(PartSource):
    vectors: np.ndarray
    key_list: list[str]
    part_rows: int = PART_ROWS

    def __post_init__(self) -> None:
        self.vectors = np.ascontiguousarray(self.vectors, dtype=np.float32)
        self.count, self.dim = self.vectors.shape
        if len(self.key_list) != self.count:
            raise ValueError(f"{len(self.key_list)} keys for {self.count} vectors")
        self.spans = _spans([self.count], self.part_rows)

    def read(self, span: Span) -> tuple[list[str], np.ndarray]:
        return self.key_list[span.start:span.stop], self.vectors[span.start:span.stop]

    def take(self, rows: np.ndarray) -> np.ndarray:
        return self.vectors[np.asarray(rows, np.int64)]

    def keys_of(self, rows: np.ndarray) -> list[str]:
        return [self.key_list[int(r)] for r in rows]

    def all_keys(self) -> list[str]:
        return self.key_list


@dataclass
class FolderSource(PartSource):
    """`headers`: one checked .npy header per file; `metadata`: the parquet file of each (or None:
    keys are global row numbers, as for a bare .npy)."""

    headers: list[NpyHeader]
    metadata: list[str | None]
    part_rows: int = PART_ROWS
    _keys: dict[int, object] = field(default_factory=dict, repr=False)  # file -> arrow key column, a cache

    def __post_init__(self) -> None:
        self.dim = self.headers[0].shape[1]
        self.count = sum(h.shape[0] for h in self.headers)
        self.spans = _spans([h.shape[0] for h in self.headers], self.part_rows)
        self._first = np.cumsum([0] + [h.shape[0] for h in self.headers])

    def __getstate__(self):  # the key cache stays behind (a worker reads its own)
        state = self.__dict__.copy()
        state["_keys"] = {}
        return state

    @classmethod
    def open(cls, path: str | os.PathLike, part_rows: int = PART_ROWS) -> FolderSource:
        """A .npy file or an embedding folder, checked as `load_embeddings` checks it."""
        from audit.io.embedding_folder import FolderProblem, checked_parts, metadata_file

        path = Path(path)
        if path.is_file() and path.suffix == ".npy":
            return cls([_c_order(read_header(path))], [None], part_rows)
        parts, headers = checked_parts(path)
        headers = [_c_order(h) for h in headers]
        metadata = [metadata_file(path, p) for p in parts]
        present = [m.is_file() for m in metadata]
        if any(present) and not all(present):
            raise FolderProblem(f"{metadata[present.index(False)]}: missing while other parts have metadata")
        return cls(headers, [str(m) if m.is_file() else None for m in metadata], part_rows)

    def read(self, span: Span) -> tuple[list[str], np.ndarray]:
        header = self.headers[span.file]
        out = np.empty((span.stop - span.start, self.dim), np.float32)
        row_bytes = self.dim * header.dtype.itemsize
        buffer = np.empty((len(out), self.dim), header.dtype)
        with open(header.path, "rb", buffering=0) as fh:
            fh.seek(header.offset + span.offset * row_bytes)
            if fh.readinto(memoryview(buffer).cast("B")) != buffer.nbytes:
                raise ArrayProblem(f"{header.path}: ends early at row {span.offset} (changed while being read)")
        with np.errstate(over="ignore", invalid="ignore"):
            out[...] = buffer
        check_values(out, header.path, span.offset)
        return self._file_keys(span.file, span.offset, span.stop - span.start), out

    def take(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, np.int64)
        out = np.empty((len(rows), self.dim), np.float32)
        files = np.searchsorted(self._first, rows, side="right") - 1
        for f in np.unique(files):
            header = self.headers[f]
            row_bytes = self.dim * header.dtype.itemsize
            buffer = np.empty(self.dim, header.dtype)
            with open(header.path, "rb", buffering=0) as fh:
                for i in np.flatnonzero(files == f):
                    local = int(rows[i] - self._first[f])
                    fh.seek(header.offset + local * row_bytes)
                    if fh.readinto(memoryview(buffer).cast("B")) != buffer.nbytes:
                        raise ArrayProblem(f"{header.path}: ends early at row {local} (changed while being read)")
                    out[i] = buffer
                    check_values(out[i:i + 1], header.path, local)
        return out

    def keys_of(self, rows: np.ndarray) -> list[str]:
        import pyarrow as pa

        rows = np.asarray(rows, np.int64)
        files = np.searchsorted(self._first, rows, side="right") - 1
        out: list[str] = [str(int(r)) for r in rows]  # row numbers, unless the metadata has keys
        for f in np.unique(files):
            column = self._column(int(f))
            if column is not None:
                at = np.flatnonzero(files == f)
                for i, key in zip(at, column.take(pa.array(rows[at] - self._first[f])).to_pylist()):
                    out[i] = str(key)
        return out

    def all_keys(self) -> list[str]:
        return [k for f, h in enumerate(self.headers) for k in self._file_keys(f, 0, h.shape[0])]

    def _column(self, f: int):
        """File f's key column (arrow), or None where keys are row numbers; one file cached."""
        if self.metadata[f] is None:
            return None
        if f not in self._keys:
            self._keys.clear()
            self._keys[f] = _key_column(self.metadata[f], self.headers[f].shape[0])
        return self._keys[f]

    def _file_keys(self, f: int, offset: int, n: int) -> list[str]:
        column = self._column(f)
        if column is None:  # a bare .npy, or metadata without a key column: global row numbers
            first = int(self._first[f]) + offset
            return [str(i) for i in range(first, first + n)]
        return [str(k) for k in column.slice(offset, n).to_pylist()]


def _c_order(header: NpyHeader) -> NpyHeader:
    if header.fortran_order:
        raise ArrayProblem(f"{header.path}: Fortran-ordered arrays cannot be read part by part; save it in C order")
    return header


def _key_column(path: str, rows: int):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from audit.io.embedding_folder import KEY_COLUMNS, FolderProblem

    try:
        names = pq.read_schema(path).names
        column = next((c for c in KEY_COLUMNS if c in names), None)
        if column is None:
            if pq.ParquetFile(path).metadata.num_rows != rows:
                raise FolderProblem(f"{path}: metadata rows differ from its part's {rows} vectors")
            return None
        keys = pq.read_table(path, columns=[column]).column(column).combine_chunks()
    except (pa.ArrowException, OSError) as exc:
        raise FolderProblem(f"{path}: not a readable parquet file ({exc})") from None
    if len(keys) != rows:
        raise FolderProblem(f"{path}: {len(keys)} metadata rows but its part has {rows} vectors")
    return keys
