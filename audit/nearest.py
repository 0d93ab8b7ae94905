"""Nearest candidates from float32 matrix products on numpy's BLAS.

Every exact search here starts the same way: a block of queries times the indexed set (one float32
GEMM on the fastest BLAS of the machine: numpy's current OpenBLAS, never the old one faiss-cpu
bundles, which runs a generic kernel on some CPUs), squared distances by the expansion
|q|^2 + |x|^2 - 2 q.x, and each row's `fetch` smallest. The callers then recompute what the float32
rounding bound leaves open in float64, so the answers are those of the exact distances.

Finding a row's `fetch` smallest of n entries without a partition of the whole row: the columns
are split into G interleaved groups (column j in group j mod G), whose minima one strided SIMD
reduction gives. The `fetch` groups with the smallest minima hold, between them, at least `fetch`
entries at or below the largest of those minima, and no other group holds an entry below it, so
the row's `fetch` smallest lie in those groups: only fetch * n / G entries are gathered and
partitioned. Every entry left out is >= the last one fetched (a true prefix of the sorted row),
which is what the callers' completeness checks rely on.
"""

from __future__ import annotations

import numpy as np

GROUPS = 256  # interleaved column groups per row
BLOCK_BYTES = 32 << 20  # one float32 block of the distance matrix, one GEMM
CHUNK_BYTES = 4 << 20  # the rows of a block worked on element-wise at a time, in cache


_U = 2.0**-24  # float32 unit roundoff


def expansion_tolerance(query_sq_norms: np.ndarray, max_point_sq_norm: float, d: int) -> np.ndarray:
    """Bound on the float32 error of |q|^2 + |x|^2 - 2 q.x (length-d products): twice the classical
    gamma_(d+4) (|q| + |x|)^2, per query."""
    gamma = 2.0 * (d + 4) * _U / (1.0 - (d + 4) * _U)
    return gamma * (np.sqrt(query_sq_norms) + np.sqrt(max_point_sq_norm)) ** 2


def sq_norms(x: np.ndarray) -> np.ndarray:
    """|x_i|^2 in float64 (float32 rows widened first, so the norms carry no float32 rounding)."""
    return np.einsum("ij,ij->i", x, x, dtype=np.float64)


class Points:
    """A set to search, prepared once: [x, |x|^2] transposed, the GEMM's right operand."""

    def __init__(self, points: np.ndarray):
        self.vectors = points
        n, d = points.shape
        self.aug_t = np.empty((d + 1, n), dtype=np.float32)
        self.aug_t[:d] = points.T
        self.aug_t[d] = np.einsum("ij,ij->i", points, points)


def nearest_candidates(queries: np.ndarray, points: np.ndarray | Points, fetch: int, self_start: int | None = None,
                       consumers: tuple = (), block_bytes: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(sq, idx), each (q, fetch): the `fetch` smallest float32-expansion squared distances from
    each query to `points`, ascending (float64 copies of the float32 values), and their rows.
    With `self_start`, query i is points[self_start + i] and is left out of its own list.
    Inputs are C-contiguous float32 (n, d); `points` may be prepared once (`Points`).

    Each of `consumers` is called as consumer(sq_block, start, stop) on every block of float32
    squared distances (queries start:stop by all points, self entries still in), before the
    selection: whatever else needs the distances reads them while they are in cache."""
    prepared = points if isinstance(points, Points) else Points(points)
    q, n = len(queries), len(prepared.vectors)
    available = n - (1 if self_start is not None else 0)
    if not 1 <= fetch <= available:
        raise ValueError(f"fetch={fetch} needs between 1 and {available} candidates")
    groups = GROUPS if n >= 4 * GROUPS else 1
    width = -(-n // groups) * groups  # padded to whole groups with +inf
    d = queries.shape[1]
    # Augmented operands: [-2q, 1] . [x, |x|^2] = |x|^2 - 2 q.x, the row's ranking key, straight
    # out of the GEMM; |q|^2 is added to the block only when consumers need whole distances,
    # else to the few entries kept.
    queries_aug = np.empty((q, d + 1), dtype=np.float32)
    np.multiply(queries, -2.0, out=queries_aug[:, :d])
    queries_aug[:, d] = 1.0
    q_sq = np.einsum("ij,ij->i", queries, queries)
    rows = max(1, min(q, (block_bytes or BLOCK_BYTES) // (4 * width)))
    chunk = max(1, CHUNK_BYTES // (4 * width))
    buffer = np.empty((rows, width), dtype=np.float32)
    buffer[:, n:] = np.inf  # the padding of the last group; the rest is written by each GEMM
    sq = np.empty((q, fetch), dtype=np.float64)
    idx = np.empty((q, fetch), dtype=np.int64)
    for block_start in range(0, q, rows):
        block_stop = min(q, block_start + rows)
        # One large GEMM (BLAS packs the points once per call), then the element-wise work chunk
        # by chunk, each chunk read from memory once and then from cache.
        np.matmul(queries_aug[block_start:block_stop], prepared.aug_t, out=buffer[: block_stop - block_start, :n])
        for start in range(block_start, block_stop, chunk):
            stop = min(block_stop, start + chunk)
            block = buffer[start - block_start : stop - block_start]
            if consumers:
                block[:, :n] += q_sq[start:stop, None]
                for consume in consumers:
                    consume(block[:, :n], start, stop)
            if self_start is not None:
                block[np.arange(stop - start), np.arange(self_start + start, self_start + stop)] = np.inf
            cols = _smallest_columns(block, fetch, groups)
            vals = np.take_along_axis(block, cols, axis=1)
            if not consumers:
                vals += q_sq[start:stop, None]  # float32, as the expansion
            order = np.argsort(vals, axis=1, kind="stable")
            sq[start:stop] = np.take_along_axis(vals, order, axis=1)
            idx[start:stop] = np.take_along_axis(cols, order, axis=1)
    return sq, idx


def upper_part(sq: np.ndarray, start: int, stop: int) -> np.ndarray:
    """The columns start: of a within-set chunk (rows start:stop): with the rows before it, the
    upper triangle of the symmetric matrix. A sum over all ordered pairs is twice the sum over
    these columns less the sum over the chunk's diagonal square (columns start:stop), which holds
    both orders of its pairs already."""
    return sq[:, start:]


def exact_nearest(queries: np.ndarray, points: np.ndarray, approx: np.ndarray, idx: np.ndarray, tol: np.ndarray,
                  self_start: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The exact nearest point of each query: (squared distance, row), float64, ties to the lowest
    row. From `nearest_candidates`' sorted output and its per-query error bound `tol`: every
    candidate within 2 tol of the first is recomputed directly in float64 (so an exact duplicate
    is at 0.0); a query whose fetched candidates all tie that closely is brute-forced."""
    q, fetch = approx.shape
    unsure = approx <= approx[:, :1] + 2 * tol[:, None]
    rows, cols = np.nonzero(unsure)
    exact = np.full(approx.shape, np.inf)
    exact[rows, cols] = exact_sq(queries, points, rows, idx[rows, cols])
    best = np.lexsort((idx, exact), axis=1)[:, 0]
    sq = exact[np.arange(q), best]
    nearest = idx[np.arange(q), best]
    available = len(points) - (1 if self_start is not None else 0)
    for i in np.flatnonzero(unsure[:, -1]) if fetch < available else ():
        row = exact_sq(queries, points, np.full(len(points), i), np.arange(len(points)))
        if self_start is not None:
            row[self_start + i] = np.inf
        nearest[i] = int(np.argmin(row))  # the first of equal minima
        sq[i] = row[nearest[i]]
    return sq, nearest


def exact_sq(a: np.ndarray, b: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """|a_rows - b_cols|^2 in float64, pairwise along the index arrays (chunked). Float32 inputs
    are gathered as they are (half the bytes of float64 copies) and widened exactly."""
    out = np.empty(len(rows), dtype=np.float64)
    step = 4096
    for s in range(0, len(rows), step):
        diff = a[rows[s : s + step]].astype(np.float64)
        diff -= b[cols[s : s + step]]
        out[s : s + step] = np.einsum("ij,ij->i", diff, diff)
    return out


def _smallest_columns(block: np.ndarray, fetch: int, groups: int) -> np.ndarray:
    """Column indices of each row's `fetch` smallest entries (unordered), via group minima."""
    b, width = block.shape
    if groups == 1 or fetch * width // groups >= width // 2:
        return np.argpartition(block, fetch - 1, axis=1)[:, :fetch]
    per_group = width // groups
    minima = block.reshape(b, per_group, groups).min(axis=1)  # (b, groups): strided SIMD minimum
    chosen = np.argpartition(minima, fetch - 1, axis=1)[:, :fetch]  # (b, fetch) group ids
    gathered = (chosen[:, :, None] + groups * np.arange(per_group)[None, None, :]).reshape(b, -1)
    values = np.take_along_axis(block, gathered, axis=1)
    best = np.argpartition(values, fetch - 1, axis=1)[:, :fetch]
    return np.take_along_axis(gathered, best, axis=1)


def blas_description() -> str:
    """The BLAS numpy's products run on, with its kernel (report.json `index.blas`)."""
    try:
        from threadpoolctl import threadpool_info

        for info in threadpool_info():
            if info.get("user_api") == "blas" and "numpy" in str(info.get("filepath", "")):
                return f"{info.get('internal_api')} {info.get('version')} ({info.get('architecture')} kernel)"
    except Exception:  # threadpoolctl missing or failing: the description is informational only
        pass
    return "numpy's BLAS"
