"""Embedding pipeline benchmark (issue 2).

    python benchmarks/bench_embed.py [--images 512] [--batch-size 32] [--memory-sizes 512,2048]

Measures, on generated ~256x256 JPEGs and ViT-B-32 with random weights (no download needed):
1. forward-only throughput: the model on ready (3, 224, 224) tensors, same batch size;
2. end-to-end `embed_folder` throughput (scan, read, hash, decode, preprocess in DataLoader
   workers, inference, cache commits) with a fresh cache, model already built, same run;
3. the re-run on the unchanged folder, in-process and as a `madaudit embed` process, against the
   first run's time measured the same way;
4. peak memory of `madaudit embed` (total PSS of the process and its workers, sampled every
   0.1 s) on two folder sizes.
Prints what it measured as JSON lines; nothing is asserted here.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


def make_jpegs(folder: Path, n: int, side: int = 256, seed: int = 0) -> None:
    """Photo-like JPEGs: smooth colour fields plus fine noise (~20-40 KB each at quality 90)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        coarse = rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
        base = np.asarray(Image.fromarray(coarse).resize((side, side), Image.Resampling.BICUBIC), dtype=np.int16)
        noisy = np.clip(base + rng.normal(0, 12, size=base.shape), 0, 255).astype(np.uint8)
        Image.fromarray(noisy).save(folder / f"img_{i:05d}.jpg", quality=90)


def report(**fields) -> None:
    print(json.dumps(fields), flush=True)


def forward_only(embedder, n_images: int, batch_size: int) -> float:
    """Seconds for the model alone on ready tensors, n_images in batches of batch_size."""
    import torch

    images = torch.randn(batch_size, 3, 224, 224)
    embedder.embed_tensors(images)  # warm-up
    start = time.perf_counter()
    done = 0
    while done < n_images:
        b = min(batch_size, n_images - done)
        embedder.embed_tensors(images[:b])
        done += b
    return time.perf_counter() - start


def _tree(pid: int) -> list[int]:
    """pid and all its descendants (DataLoader workers included)."""
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as fh:
                    todo += [int(c) for c in fh.read().split()]
        except OSError:
            pass
    return pids


def _pss_kib(pid: int) -> int:
    """Proportional set size: shared pages split among the processes sharing them, so the sum
    over a process tree is its real footprint (RSS would count forked pages once per worker)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            return next(int(line.split()[1]) for line in fh if line.startswith("Pss:"))
    except (OSError, StopIteration):
        return 0


def cli_embed(folder: Path, out: Path, cache: Path, batch_size: int) -> tuple[float, float]:
    """Run `madaudit embed` as its own process: (wall seconds, peak total PSS of its process tree, MiB)."""
    cmd = [sys.executable, "-m", "audit", "embed", str(folder), "--out", str(out), "--pretrained", "random",
           "--cache", str(cache), "--batch-size", str(batch_size), "-q"]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, sum(_pss_kib(p) for p in _tree(proc.pid)))
        time.sleep(0.1)
    wall = time.perf_counter() - start
    _, err = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(err)
    return wall, peak / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--memory-sizes", default="512,2048", help="comma-separated folder sizes; empty to skip")
    args = parser.parse_args()

    import torch

    from audit.embedding import default_workers, embed_folder, load_embedder
    from audit.store import EmbeddingStore

    workers = default_workers() if args.workers is None else args.workers
    report(machine=platform.machine(), cpus=os.cpu_count(), torch_threads=torch.get_num_threads(),
           torch=torch.__version__, model="ViT-B-32 (random weights)", images=args.images,
           batch_size=args.batch_size, workers=workers)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        folder = tmp / "jpegs"
        make_jpegs(folder, args.images)
        mean_kb = sum(p.stat().st_size for p in folder.iterdir()) / args.images / 1024
        report(step="generated", images=args.images, side=256, mean_file_kb=round(mean_kb, 1))

        embedder = load_embedder("ViT-B-32", "random", device="cpu")
        forward_only(embedder, args.batch_size, args.batch_size)  # build the model, warm the kernels
        # This machine's speed drifts by +-20% over minutes (shared host), so forward-only and
        # end-to-end are interleaved, round by round, and compared within each round.
        ratios, e2e_times = [], []
        for round_ in range(args.rounds):
            fwd = forward_only(embedder, args.images, args.batch_size)
            with EmbeddingStore(tmp / f"cache{round_}.sqlite") as store:
                start = time.perf_counter()
                first = embed_folder(folder, embedder, store, batch_size=args.batch_size, workers=workers,
                                     progress=False)
                e2e = time.perf_counter() - start
                assert first.counts["embedded"] == args.images
            ratios.append(fwd / e2e)
            e2e_times.append(e2e)
            report(step="round", round=round_, forward_only_s=round(fwd, 2),
                   forward_only_images_per_s=round(args.images / fwd, 2), end_to_end_s=round(e2e, 2),
                   end_to_end_images_per_s=round(args.images / e2e, 2), ratio=round(fwd / e2e, 3))
        report(step="throughput_ratio", median=round(float(np.median(ratios)), 3),
               all=[round(r, 3) for r in ratios])

        with EmbeddingStore(tmp / "cache0.sqlite") as store:
            start = time.perf_counter()
            again = embed_folder(folder, embedder, store, batch_size=args.batch_size, workers=workers, progress=False)
            rerun = time.perf_counter() - start
            assert again.counts["embedded"] == 0
        report(step="rerun_in_process", seconds=round(rerun, 3),
               fraction_of_first=round(rerun / float(np.median(e2e_times)), 4))

        # The same as a user runs it: whole processes, model resolution and start-up included.
        cache = tmp / "cli-cache.sqlite"
        first_wall, _ = cli_embed(folder, tmp / "out", cache, args.batch_size)
        rerun_wall, _ = cli_embed(folder, tmp / "out", cache, args.batch_size)
        report(step="cli_first_vs_rerun", first_seconds=round(first_wall, 2), rerun_seconds=round(rerun_wall, 2),
               fraction_of_first=round(rerun_wall / first_wall, 4))

        sizes = [int(s) for s in args.memory_sizes.split(",") if s]
        peaks = {}
        for size in sizes:
            mem_folder = tmp / f"mem{size}"
            make_jpegs(mem_folder, size, seed=size)
            wall, peak_mib = cli_embed(mem_folder, tmp / f"out{size}", tmp / f"mem{size}.sqlite", args.batch_size)
            peaks[size] = peak_mib
            report(step="peak_memory", images=size, seconds=round(wall, 1), peak_total_pss_mib=round(peak_mib, 1))
        if len(sizes) == 2:
            small, large = sizes
            grown = peaks[large] - peaks[small]
            embeddings = (large - small) * 512 * 4 / 2**20
            report(step="peak_memory_growth", images=f"{small}->{large}", growth_mib=round(grown, 1),
                   embeddings_mib=round(embeddings, 1))


if __name__ == "__main__":
    main()
