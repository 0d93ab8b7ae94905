import multiprocessing as mp
import sqlite3

import numpy as np
import pytest

from audit.store import EmbeddingStore


def test_embeddings_round_trip(cache_path):
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((3, 8)).astype(np.float32)
    with EmbeddingStore(cache_path) as store:
        store.put_embeddings("m1", [(f"sha{i}", 10 + i, 20 + i, v) for i, v in enumerate(vectors)])
        got = store.lookup("m1", ["sha0", "sha2", "unknown"])
        assert set(got) == {"sha0", "sha2"}
        np.testing.assert_array_equal(got["sha2"][0], vectors[2])
        assert got["sha2"][1:] == (12, 22)
        assert store.lookup("other-model", ["sha0"]) == {}


def test_fast_path_invalidated_by_size_or_mtime(cache_path):
    with EmbeddingStore(cache_path) as store:
        store.put_embeddings("m", [], [("/a.png", 100, 5, "h1"), ("/b.png", 200, 6, "h2")])
        assert store.known_hashes([("/a.png", 100, 5), ("/b.png", 200, 6)]) == {"/a.png": "h1", "/b.png": "h2"}
        assert store.known_hashes([("/a.png", 101, 5), ("/b.png", 200, 7), ("/c.png", 1, 1)]) == {}


def test_failed_batch_is_rolled_back(cache_path):
    with EmbeddingStore(cache_path) as store:
        bad_vector = object()  # fails while the batch is being written
        with pytest.raises(Exception):
            store.put_embeddings("m", [("ok", 1, 1, np.zeros(4, np.float32)), ("bad", 1, 1, bad_vector)])
        assert store.count_embeddings("m") == 0


def _writer(path, worker, n):
    with EmbeddingStore(path) as store:
        for batch in range(n):
            rows = [(f"w{worker}-b{batch}-{i}", 1, 1, np.full(16, worker, np.float32)) for i in range(20)]
            store.put_embeddings("m", rows, [(f"/w{worker}/{batch}", 1, 1, "x")])


def test_concurrent_processes_do_not_corrupt(cache_path):
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(cache_path), w, 25)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0
    with EmbeddingStore(cache_path) as store:
        assert store.integrity_ok()
        assert store.count_embeddings("m") == 4 * 25 * 20
    assert sqlite3.connect(cache_path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"
