"""Input readers benchmark (issue 12).

    python benchmarks/bench_io.py [--rows 1000000] [--parts 10] [--images 5000] [--skip-read] [--skip-embed]
                                  [--model ViT-B-32|pixels]

1. Reading a clip-retrieval folder: `--rows` x 512 float16 vectors in `--parts` parts with
   `metadata_<i>.parquet` keys, generated in a temporary folder (never in the repository). A fresh
   process reads it with `audit.io.load_side`; it reports the seconds and the peak RSS beyond the
   arrays kept (the float32 matrix and the keys), as a multiple of one part's file size.
   Targets: <= 10 s, <= 1.5 parts.
2. WebDataset vs folder: `--images` generated JPEGs as a folder and as tar shards of 1,000, each
   embedded in a fresh process with a fresh cache (ViT-B-32 with random weights: same compute as
   the real weights). Target: shards >= 0.85 of the folder's images per second.
Prints what it measured as JSON lines; nothing is asserted here.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_embed import make_jpegs  # noqa: E402


def report(**fields) -> None:
    print(json.dumps(fields), flush=True)


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def write_clip_retrieval(folder: Path, rows: int, parts: int, dim: int = 512) -> int:
    """The clip-retrieval layout; returns one part's embedding file size in bytes."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    (folder / "img_emb").mkdir(parents=True)
    (folder / "metadata").mkdir()
    rng = np.random.default_rng(0)
    per = rows // parts
    for i in range(parts):
        block = rng.standard_normal((per, dim), dtype=np.float32)
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        np.save(folder / "img_emb" / f"img_emb_{i}.npy", block.astype(np.float16))
        keys = [f"{i:05d}/{i * per + j:09d}.jpg" for j in range(per)]
        pq.write_table(pa.table({"image_path": keys}), folder / "metadata" / f"metadata_{i}.parquet")
    return (folder / "img_emb" / "img_emb_0.npy").stat().st_size


READ_CHILD = r"""
import json, resource, sys, time
import numpy as np
from audit.io import EmbedOptions, load_side
import pyarrow  # loaded before the baseline: the reader's imports are not what is measured
def rss():  # current resident set, bytes (ru_maxrss would keep the imports' own peak)
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
base = rss()
start = time.perf_counter()
side = load_side(sys.argv[1], EmbedOptions(), {})
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
keys = side.embeddings.keys
key_bytes = sys.getsizeof(keys) + sum(sys.getsizeof(k) for k in keys)
print(json.dumps({"seconds": seconds, "peak_beyond_imports": peak - base, "array_bytes": side.embeddings.vectors.nbytes,
                  "key_bytes": key_bytes, "rows": len(keys), "dtype": str(side.embeddings.vectors.dtype)}))
"""


def bench_read(rows: int, parts: int, work: Path) -> None:
    folder = work / "clip-retrieval"
    part_bytes = write_clip_retrieval(folder, rows, parts)
    out = subprocess.run([sys.executable, "-c", READ_CHILD, str(folder)], capture_output=True, text=True, check=True)
    m = json.loads(out.stdout)
    beyond = m["peak_beyond_imports"] - m["array_bytes"] - m["key_bytes"]
    report(bench="read_clip_retrieval", rows=m["rows"], parts=parts, dim=512, stored="float16", kept=m["dtype"],
           seconds=round(m["seconds"], 2), part_mb=round(part_bytes / 2**20, 1),
           kept_array_mb=round(m["array_bytes"] / 2**20, 1), kept_keys_mb=round(m["key_bytes"] / 2**20, 1),
           peak_beyond_kept_mb=round(beyond / 2**20, 1), peak_beyond_kept_parts=round(beyond / part_bytes, 2),
           targets="seconds <= 10, peak_beyond_kept_parts <= 1.5")


def make_shards(folder: Path, shards: Path, per_shard: int = 1000) -> None:
    shards.mkdir()
    names = sorted(p.name for p in folder.iterdir())
    for s in range(0, len(names), per_shard):
        with tarfile.open(shards / f"{s // per_shard:05d}.tar", "w") as tar:
            for name in names[s:s + per_shard]:
                tar.add(folder / name, arcname=name)


def embed_seconds(source: Path, out: Path, cache: Path, model: str) -> float:
    pretrained = ["--pretrained", "random"] if model != "pixels" else []
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "audit.cli", "embed", str(source), "--out", str(out), "--model", model,
                    *pretrained, "--cache", str(cache), "-q"], check=True, capture_output=True)
    return time.perf_counter() - start


def bench_webdataset(images: int, model: str, work: Path) -> None:
    folder = work / "jpegs"
    make_jpegs(folder, images)
    make_shards(folder, work / "shards")
    # Alternate the order so neither path always runs on a warmer machine.
    folder_s = embed_seconds(folder, work / "out-folder", work / "c1.sqlite", model)
    shards_s = embed_seconds(work / "shards", work / "out-shards", work / "c2.sqlite", model)
    report(bench="webdataset_vs_folder", images=images, model=model, folder_img_per_s=round(images / folder_s, 1),
           shards_img_per_s=round(images / shards_s, 1), ratio=round(folder_s / shards_s, 3),
           target="ratio >= 0.85 (shards' throughput over the folder's)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--parts", type=int, default=10)
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--skip-read", action="store_true")
    parser.add_argument("--skip-embed", action="store_true")
    args = parser.parse_args()
    report(machine=cpu_model(), cores=len(__import__("os").sched_getaffinity(0)))
    with tempfile.TemporaryDirectory(prefix="madaudit-bench-io-") as tmp:
        if not args.skip_read:
            bench_read(args.rows, args.parts, Path(tmp))
        if not args.skip_embed:
            bench_webdataset(args.images, args.model, Path(tmp))


if __name__ == "__main__":
    main()
