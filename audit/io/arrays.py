""".npy embedding files, opened with their header checked before a byte of data is touched.

A header can declare any shape: 10^12 rows would make `np.load` try to allocate terabytes. Here
the declared size must match the file's size, the dtype must be a plain number (never Python
objects: that would mean a pickle), and the values are checked for NaN, infinities and
magnitudes that overflow a squared distance, naming the file and the row.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass

import numpy as np

# |v| beyond this overflows float32 squared distances (3.4e38) long before any metric runs.
MAX_ABS_VALUE = 1e15
CHECK_ROWS = 4_096  # rows read, converted and checked at a time: bounds the temporaries


class ArrayProblem(ValueError):
    """An embedding array that cannot be used; the message names the file and the problem."""


@dataclass(frozen=True)
class NpyHeader:
    path: str
    shape: tuple[int, ...]
    dtype: np.dtype
    fortran_order: bool
    offset: int  # where the data starts


def read_header(path: str | os.PathLike) -> NpyHeader:
    """Parse and check an .npy header: a regular file, a numeric dtype, a 2-D shape whose bytes
    are all in the file."""
    path = os.fspath(path)
    try:
        st = os.stat(path)
    except OSError as exc:
        raise ArrayProblem(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if not stat.S_ISREG(st.st_mode):
        raise ArrayProblem(f"{path}: not a regular file")
    try:
        with open(path, "rb") as fh:
            version = np.lib.format.read_magic(fh)
            reader = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
            if version not in reader:
                raise ValueError(f"unsupported .npy version {version}")
            shape, fortran_order, dtype = reader[version](fh, max_header_size=100_000)
            offset = fh.tell()
    except (ValueError, OSError, SyntaxError, EOFError) as exc:
        raise ArrayProblem(f"{path}: not a NumPy .npy file ({exc})") from None
    if dtype.hasobject:
        raise ArrayProblem(f"{path}: holds Python objects; embeddings must be plain numbers (pickles are never loaded)")
    if dtype.kind not in "fiu" or dtype.fields is not None:
        raise ArrayProblem(f"{path}: dtype {dtype} is not a real number type")
    if len(shape) != 2:
        raise ArrayProblem(f"{path}: expected a 2-D array (n, d), got shape {shape}")
    need = int(np.prod(shape, dtype=object)) * dtype.itemsize + offset
    if need != st.st_size:
        raise ArrayProblem(f"{path}: header declares shape {shape} of {dtype} ({need} bytes) but the file has "
                           f"{st.st_size} bytes (truncated or corrupt)")
    return NpyHeader(path, tuple(int(s) for s in shape), dtype, bool(fortran_order), offset)


def open_npy(path: str | os.PathLike) -> np.ndarray:
    """A read-only memory map of a checked .npy file (nothing is read until used)."""
    header = read_header(path)
    if header.shape[0] == 0 or header.shape[1] == 0:
        return np.zeros(header.shape, dtype=np.float32)
    return np.memmap(header.path, dtype=header.dtype, mode="r", offset=header.offset, shape=header.shape,
                     order="F" if header.fortran_order else "C")


def copy_checked(source: np.ndarray, out: np.ndarray, name: str, first_row: int = 0) -> None:
    """Copy `source` rows into the float32 `out`, a block at a time, checking every value.
    Raises ArrayProblem naming `name` and the row of the first bad value."""
    if source.shape != out.shape:
        raise ArrayProblem(f"{name}: shape {source.shape} does not fit {out.shape}")
    for start in range(0, len(source), CHECK_ROWS):
        block = out[start:start + CHECK_ROWS]
        with np.errstate(over="ignore", invalid="ignore"):
            block[...] = source[start:start + CHECK_ROWS]
        check_values(block, name, first_row + start)


def read_checked(header: NpyHeader, out: np.ndarray) -> None:
    """Read a checked .npy file into the float32 `out` (its shape), a block of rows at a time
    through one small reused buffer: nothing but `out` grows with the file (no memory map
    whose pages would count against the process), every value checked."""
    if header.fortran_order or header.shape[0] == 0:
        copy_checked(open_npy(header.path), out, header.path)
        return
    n, d = header.shape
    buffer = np.empty((min(CHECK_ROWS, n), d), dtype=header.dtype)
    with open(header.path, "rb", buffering=0) as fh:
        fh.seek(header.offset)
        for start in range(0, n, CHECK_ROWS):
            rows = min(CHECK_ROWS, n - start)
            view = buffer[:rows]
            if fh.readinto(memoryview(view).cast("B")) != view.nbytes:
                raise ArrayProblem(f"{header.path}: ends early at row {start} (changed while being read)")
            block = out[start:start + rows]
            with np.errstate(over="ignore", invalid="ignore"):
                block[...] = view
            check_values(block, header.path, start)


def check_values(block: np.ndarray, name: str, first_row: int = 0) -> None:
    """Every value finite and within ±MAX_ABS_VALUE, or ArrayProblem naming the row."""
    if block.size == 0:
        return
    with np.errstate(invalid="ignore"):
        fine = bool(np.isfinite(block.max()) and np.isfinite(block.min())
                    and block.max() <= MAX_ABS_VALUE and block.min() >= -MAX_ABS_VALUE)
    if fine:  # the common case, without a temporary the size of the block
        return
    with np.errstate(invalid="ignore"):
        bad = ~(np.abs(block) <= MAX_ABS_VALUE)  # also true for NaN
    row, col = np.argwhere(bad)[0]
    value = block[row, col]
    what = "NaN" if np.isnan(value) else ("infinite" if np.isinf(value) else f"{value:.3g}, beyond ±{MAX_ABS_VALUE:g}")
    raise ArrayProblem(f"{name}: row {first_row + int(row)} holds a value that is {what}")


def load_matrix(path: str | os.PathLike) -> np.ndarray:
    """A whole checked .npy file as a C-contiguous float32 (n, d) array."""
    header = read_header(path)
    out = np.empty(header.shape, dtype=np.float32)
    read_checked(header, out)
    return out
