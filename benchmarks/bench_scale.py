"""Scaling benchmark (issue 15): a whole `scan` with the per-item pass, candidate 10^4 .. 10^6.

    python benchmarks/bench_scale.py [--sizes 10000,100000,1000000] [--reference 100000] [--spread 0.8]
                                     [--engine local] [--plot scale.svg] [--keep DIR]

Data ("CLIP-like", d = 512): each vector is a real CLIP ViT-B/32 embedding (../shared/data/real-clip:
3,500 Food-101 and Flickr8k photos) plus Gaussian noise with the covariance of the real Food-101
embeddings scaled by `--spread`, L2-normalised: clusters where real photos are, spread around them
(`--spread 0` would be 3,500 exact points; the larger, the harder for an approximate index). The
candidate is the same kind of data from another seed, with 1% exact copies of reference items and
1% repeats of its own items, so copies and duplicates have something to find. Both sides are
written as clip-retrieval embedding folders (float16 parts of at most 250,000 rows, keys in
metadata parquet) in a temporary folder, and read from there, part by part, as a user's would be.

Each size runs `audit.pipeline.scan` (set-level numbers on 50,000-item samples, then the per-item
pass over every candidate item) in its own process, so its peak memory (max RSS) is its own.
Prints one JSON line per size: seconds per stage, peak RSS, the indexes and their measured recall.
Asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REAL_CLIP = Path(__file__).resolve().parents[2] / "shared" / "data" / "real-clip"
PART_ROWS = 250_000


def clip_like(n: int, seed: int, spread: float, d: int = 512):
    """Blocks of CLIP-like vectors (see the module docstring), float32."""
    food = np.load(REAL_CLIP / "food101_10class_clip_vitb32.npz", allow_pickle=False)
    flickr = np.load(REAL_CLIP / "flickr8k_1000_clip_vitb32.npz", allow_pickle=False)
    centres = np.vstack([food["X_train"], food["X_test"], flickr["embeddings"]]).astype(np.float64)
    w, v = np.linalg.eigh(np.cov(food["X_train"].astype(np.float64), rowvar=False))
    root = v * np.sqrt(np.clip(w, 0, None))
    rng = np.random.default_rng(seed)
    for start in range(0, n, 50_000):
        m = min(n, start + 50_000) - start
        block = centres[rng.integers(0, len(centres), m)] + spread * (rng.standard_normal((m, d)) @ root.T)
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        yield block.astype(np.float32)


def write_folder(folder: Path, blocks, prefix: str) -> int:
    """A clip-retrieval embedding folder: float16 parts, metadata with keys."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    (folder / "img_emb").mkdir(parents=True)
    (folder / "metadata").mkdir()
    pending, part, row = [], 0, 0

    def flush():
        nonlocal pending, part, row
        if not pending:
            return
        data = np.vstack(pending).astype(np.float16)
        np.save(folder / "img_emb" / f"img_emb_{part}.npy", data)
        keys = [f"{prefix}{row + i:09d}.jpg" for i in range(len(data))]
        pq.write_table(pa.table({"key": keys}), folder / "metadata" / f"metadata_{part}.parquet")
        part, row, pending = part + 1, row + len(data), []

    for block in blocks:
        pending.append(block)
        if sum(len(b) for b in pending) >= PART_ROWS:
            flush()
    flush()
    return row


def make_inputs(root: Path, n_reference: int, n_candidate: int, spread: float) -> tuple[Path, Path]:
    ref = root / f"reference_{n_reference}"
    if not ref.exists():
        write_folder(ref, clip_like(n_reference, 0, spread), "ref/")
    cand = root / f"candidate_{n_candidate}"
    if not cand.exists():
        rng = np.random.default_rng(1)
        reference_rows = _first_rows(ref, min(n_reference, 20_000))

        def blocks():
            for block in clip_like(n_candidate, 1, spread):
                m = len(block)
                copies = rng.random(m) < 0.01
                block[copies] = reference_rows[rng.integers(0, len(reference_rows), int(copies.sum()))]
                repeats = np.flatnonzero(rng.random(m) < 0.01)
                block[repeats] = block[rng.integers(0, m, len(repeats))]
                yield block

        write_folder(cand, blocks(), "cand/")
    return ref, cand


def _first_rows(folder: Path, n: int) -> np.ndarray:
    return np.load(folder / "img_emb" / "img_emb_0.npy", mmap_mode="r")[:n].astype(np.float32)


def worker(ref: str, cand: str, engine: str) -> None:
    from audit.io import EmbedOptions
    from audit.items import ItemSettings
    from audit.pipeline import scan

    stages: dict[str, float] = {}
    last = [time.perf_counter(), None]

    def progress(name):
        now = time.perf_counter()
        if last[1] is not None:
            stages[last[1]] = round(now - last[0], 2)
        last[:] = [now, name]

    out = Path(tempfile.mkdtemp(prefix="madaudit-bench-scale-"))
    started = time.perf_counter()
    result = scan(ref, cand, items=out / "items.parquet", item_settings=ItemSettings(engine=engine),
                  embed=EmbedOptions(embedding_model=("ViT-B-32",)), progress=progress)
    total = time.perf_counter() - started
    data = result.to_dict()
    items = data["items"]
    set_level = sum(v for k, v in stages.items() if not k.startswith("items"))
    print(json.dumps({
        "candidate": items["items"], "reference": data["inputs"]["reference"]["items"],
        "seconds_total": round(total, 1), "seconds_set_level": round(set_level, 1),
        "seconds_per_item_pass": round(sum(items["seconds"].values()), 1), "per_item_stages": items["seconds"],
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "items_per_second_scoring": round(items["items"] / max(items["seconds"]["score"], 1e-9)),
        "index": {side: {k: v for k, v in index.items() if k != "recall"} | {
            "recall@10": index["recall"]["value"], "recall_interval": index["recall"]["interval"],
            "tuning": index["recall"].get("tuning")} for side, index in items["index"].items()},
        "counts": items["counts"], "stages": stages,
    }))


def versus_faiss(n: int, queries: int, spread: float, nprobe: int) -> dict:
    """The same inverted file (the same centroids and lists) searched by madaudit's grouped
    products and by FAISS's IndexIVFFlat, on the same queries: queries per second and agreement."""
    import faiss

    from audit.items import ArraySource
    from audit.items.ivf import ListIndex, recall_at_k

    x = np.vstack(list(clip_like(n, 0, spread)))
    q = np.vstack(list(clip_like(queries, 5, spread)))
    ours = ListIndex.build(ArraySource(x, [str(i) for i in range(n)]))
    quantizer = faiss.IndexFlatL2(x.shape[1])
    quantizer.add(ours.centroids)
    theirs = faiss.IndexIVFFlat(quantizer, x.shape[1], ours.nlist)
    theirs.is_trained = True
    theirs.add(x)
    theirs.nprobe = nprobe
    out = {"vectors": n, "queries": queries, "lists": ours.nlist, "nprobe": nprobe}
    started = time.perf_counter()
    mine = ours.search(q, 10, nprobe)
    out["madaudit_queries_per_s"] = round(queries / (time.perf_counter() - started))
    started = time.perf_counter()
    _, idx = theirs.search(q, 10)
    out["faiss_queries_per_s"] = round(queries / (time.perf_counter() - started))
    exact = ours.search(q[:1000], 10, ours.nlist)
    out["madaudit_recall@10"] = round(float(recall_at_k(ours.search(q[:1000], 10, nprobe), exact, 10).mean()), 4)
    theirs_sq = np.where(idx[:1000] >= 0, ((q[:1000, None, :] - x[np.maximum(idx[:1000], 0)]) ** 2).sum(-1), np.inf)
    out["faiss_recall@10"] = round(float(np.mean(np.sort(theirs_sq, axis=1) <= exact.sq[:, 9:10] * (1 + 1e-5) + 1e-9)), 4)
    out["ratio"] = round(out["madaudit_queries_per_s"] / out["faiss_queries_per_s"], 2)
    del mine
    return out


def cpu_model() -> str:
    sys.path.insert(0, str(Path(__file__).parent))
    from bench_metrics import _cpu_model

    return _cpu_model()


def plot(results: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = [r["candidate"] for r in results]
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.4))
    a.loglog(n, [r["seconds_total"] for r in results], "o-", label="whole scan")
    a.loglog(n, [r["seconds_per_item_pass"] for r in results], "s-", label="per-item pass")
    a.axhline(900, color="grey", ls="--", lw=0.8, label="15 min")
    a.set_xlabel("candidate items")
    a.set_ylabel("seconds")
    a.legend(fontsize=8)
    b.semilogx(n, [r["peak_rss_mib"] / 1024 for r in results], "o-")
    b.axhline(4, color="grey", ls="--", lw=0.8, label="4 GB")
    b.set_xlabel("candidate items")
    b.set_ylabel("peak RSS (GiB)")
    b.legend(fontsize=8)
    fig.suptitle(f"madaudit scan vs {results[0]['reference']:,} reference items ({cpu_model()}, {os.cpu_count()} cores)",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--reference", type=int, default=100_000)
    parser.add_argument("--spread", type=float, default=0.8)
    parser.add_argument("--engine", default="local")
    parser.add_argument("--plot", help="write the time and memory curves here (svg or png)")
    parser.add_argument("--keep", help="generate the inputs here and keep them (default: a temporary folder)")
    parser.add_argument("--vs-faiss", action="store_true",
                        help="compare the grouped IVF search with FAISS's IndexIVFFlat on the same lists and queries")
    parser.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(*args.worker)
        return
    if args.vs_faiss:
        print(json.dumps({"cpu": cpu_model(), "cores": os.cpu_count(), **versus_faiss(200_000, 20_000, args.spread, 16)}))
        return
    print(json.dumps({"cpu": cpu_model(), "cores": os.cpu_count(), "spread": args.spread}), flush=True)
    with tempfile.TemporaryDirectory(prefix="madaudit-bench-data-") as tmp:
        root = Path(args.keep or tmp)
        results = []
        for n in [int(s) for s in args.sizes.split(",")]:
            ref, cand = make_inputs(root, args.reference, n, args.spread)
            proc = subprocess.run([sys.executable, __file__, "--worker", str(ref), str(cand), args.engine],
                                  capture_output=True, text=True)
            if proc.returncode != 0:
                raise RuntimeError(proc.stderr[-4000:])
            results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
            print(json.dumps(results[-1]), flush=True)
        if args.plot:
            plot(results, args.plot)


if __name__ == "__main__":
    main()
