"""Embedder: open_clip image embeddings, decoded in worker processes, cached by content.

`load_embedder` resolves a real open_clip model from
- a built-in open_clip architecture name (default `ViT-B-32`), or a model-config JSON file (a
  custom architecture, registered with open_clip under the file's stem);
- weights from a pretrained tag (default `laion2b_s34b_b79k`; looked up in the Hugging Face cache
  or open_clip's URL cache first, downloaded only when allowed and reachable), a local checkpoint
  file, or `random` (seeded random initialisation: for tests and benchmarks only).
When weights cannot be had it raises `WeightsUnavailable` at once, naming the options.

The identity (architecture, weights hash, preprocessing) is known before the network is built,
and the network is built only when something needs embedding. With a store, the resolved identity
is remembered too, so a re-run on a cached folder imports neither torch nor open_clip (seconds of
start-up on a small machine).

`embed_files` runs the pipeline: cache look-up on the (path, size, mtime) fast path, then a torch
DataLoader whose workers read, hash and decode files in parallel with inference, then one atomic
cache commit per batch.
"""

from __future__ import annotations

import dataclasses

import hashlib
import json
import os
import socket
import sys
from collections import Counter
from dataclasses import asdict, dataclass, field
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlparse

import numpy as np

from audit.io import files as sources
from audit.io.files import DecodeFailure, ImageFile, Skipped
from audit.store import EmbeddingStore, sha256_file

# torch and open_clip are imported inside the functions that need them: see the module docstring.

DEFAULT_MODEL = "ViT-B-32"
DEFAULT_PRETRAINED = "laion2b_s34b_b79k"
RANDOM_WEIGHTS = "random"
RANDOM_SEED = 0
NETWORK_CHECK_TIMEOUT_S = 5.0


class WeightsUnavailable(RuntimeError):
    """The requested weights are neither on disk nor downloadable (offline)."""


class DeviceError(ValueError):
    """A device that is not there (cuda without CUDA) or not known: a usage error."""


class ModelNotFound(ValueError):
    """The model name is neither an open_clip architecture nor a model-config file."""


@dataclass
class ModelSpec:
    """Everything needed to build the network, and its identity. Plain data (JSON-able)."""

    name: str  # open_clip architecture name
    config_file: str | None  # model-config JSON to register with open_clip, if not built in
    checkpoint: str | None  # weights file; None means seeded random initialisation
    quick_gelu: bool
    preprocess_cfg: dict[str, Any]
    dim: int
    identity: dict[str, Any]


@dataclass
class Embedder:
    """An open_clip image tower (`model`, built on first use), its eval transform and identity."""

    spec: ModelSpec
    device: str = "auto"
    _model: Any = field(default=None, repr=False)

    @property
    def identity(self) -> dict[str, Any]:
        return self.spec.identity

    @property
    def identity_json(self) -> str:
        return identity_json(self.spec.identity)

    @property
    def model_id(self) -> str:
        return model_id(self.spec.identity)

    @property
    def dim(self) -> int:
        return self.spec.dim

    @property
    def preprocess(self) -> Callable:
        import open_clip

        pp = self.spec.preprocess_cfg
        return open_clip.image_transform(
            pp["size"], is_train=False, mean=pp["mean"], std=pp["std"], resize_mode=pp["resize_mode"],
            interpolation=pp["interpolation"], fill_color=pp["fill_color"],
        )

    @property
    def torch_device(self):
        return resolve_device(self.device)

    @property
    def model(self):
        if self._model is None:
            import open_clip
            import torch

            if self.spec.config_file:
                open_clip.add_model_config(self.spec.config_file)
            # Seeded in a forked RNG: random weights are reproducible, the caller's RNG untouched.
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(RANDOM_SEED)
                try:
                    model = open_clip.create_model(
                        self.spec.name,
                        pretrained=self.spec.checkpoint,
                        device=self.torch_device,
                        force_quick_gelu=self.spec.quick_gelu,
                        force_preprocess_cfg=self.spec.preprocess_cfg,
                    )
                except Exception as exc:  # torch and safetensors raise many types on a foreign file
                    if self.spec.checkpoint is None:
                        raise
                    raise WeightsUnavailable(
                        f"{self.spec.checkpoint}: not a usable checkpoint of {self.spec.name} "
                        f"({type(exc).__name__}: {str(exc)[:300]})") from None
            built = _jsonable(model.visual.preprocess_cfg)
            if built != _jsonable(self.spec.preprocess_cfg):  # the identity must describe what runs
                raise RuntimeError(f"open_clip preprocessing {built} differs from the predicted {self.spec.preprocess_cfg}")
            # Keep the image tower only: the text tower is a third of ViT-B-32's memory, unused here.
            self._model = model.visual.eval()
        return self._model

    def embed_tensors(self, images) -> np.ndarray:
        """(n, 3, H, W) preprocessed image tensor -> (n, dim) float32, L2-normalised."""
        import torch

        visual = self.model
        with torch.inference_mode():
            features = visual(images.to(self.torch_device, non_blocking=True))
            if isinstance(features, tuple):  # CoCa's tower returns (pooled, tokens), as in CoCa.encode_image
                features = features[0]
            features = torch.nn.functional.normalize(features.float(), dim=-1)
        return features.cpu().numpy().astype(np.float32, copy=False)


def identity_json(identity: dict[str, Any]) -> str:
    """The canonical JSON of an embedder's identity (what the cache records)."""
    return json.dumps(identity, sort_keys=True, separators=(",", ":"))


def model_id(identity: dict[str, Any]) -> str:
    """Cache key part: a hash of the identity (architecture, weights, preprocessing)."""
    return hashlib.sha256(identity_json(identity).encode()).hexdigest()[:32]


def resolve_device(device: str = "auto"):
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError("device 'cuda' requested but CUDA is not available")
    return dev


def load_embedder(
    model: str = DEFAULT_MODEL,
    pretrained: str | None = DEFAULT_PRETRAINED,
    device: str = "auto",
    allow_download: bool | None = None,
    store: EmbeddingStore | None = None,
) -> Embedder:
    """Resolve an open_clip model for image embedding (the network itself is built lazily).

    `pretrained`: an open_clip tag, a path to a checkpoint file, or "random" / None.
    `allow_download`: None means "unless HF_HUB_OFFLINE is set". Weights already on disk are
    always used without touching the network.
    `store`: remember the resolution there, so the next call needs neither torch nor open_clip.
    """
    if device not in ("auto", "cpu") and not device.startswith("cuda"):
        raise DeviceError(f"unknown device '{device}': use auto, cpu, cuda or cuda:N")
    if device.startswith("cuda"):
        resolve_device(device)  # fail now, not after the folder scan
    key = _resolution_key(model, pretrained)
    if store is not None and key is not None:
        cached = store.get_resolution(key)
        if cached is not None and _checkpoint_unchanged(cached):
            return Embedder(ModelSpec(**cached["spec"]), device)
    spec = _resolve(model, pretrained, allow_download)
    if store is not None and key is not None:
        store.put_resolution(key, {"spec": asdict(spec), "checkpoint_stat": _stat(spec.checkpoint)})
    return Embedder(spec, device)


def _resolution_key(model: str, pretrained: str | None) -> str | None:
    """What the resolution depends on, cheaply: the arguments, the library versions, and the
    content of a model-config file. None when the result should not be cached."""
    parts: dict[str, Any] = {"model": model, "pretrained": pretrained or RANDOM_WEIGHTS,
                             "open_clip": package_version("open_clip_torch"), "torch": package_version("torch")}
    if model.endswith(".json"):
        if not os.path.isfile(model):
            return None
        parts["model"] = os.path.abspath(model)
        parts["config_sha256"] = sha256_file(model)
    if pretrained and os.path.isfile(pretrained):
        parts["pretrained"] = os.path.abspath(pretrained)
    return json.dumps(parts, sort_keys=True)


def _stat(path: str | None) -> list[int] | None:
    if path is None:
        return None
    st = os.stat(path)
    return [st.st_size, st.st_mtime_ns]


def _checkpoint_unchanged(cached: dict[str, Any]) -> bool:
    checkpoint = cached["spec"]["checkpoint"]
    try:
        return _stat(checkpoint) == cached["checkpoint_stat"]
    except OSError:
        return False


def _resolve(model: str, pretrained: str | None, allow_download: bool | None) -> ModelSpec:
    import open_clip
    from open_clip.transform import PreprocessCfg, merge_preprocess_dict

    name, config_file, arch_identity = _resolve_architecture(model)
    tag_cfg: dict[str, Any] = {}
    if pretrained is None or pretrained == RANDOM_WEIGHTS:
        checkpoint = None
        weights_identity: dict[str, Any] = {"random_init_seed": RANDOM_SEED, "torch": package_version("torch")}
    elif os.path.isfile(pretrained):
        checkpoint = os.path.abspath(pretrained)
        weights_identity = {"file_sha256": sha256_file(checkpoint)}
    else:
        tag_cfg = open_clip.get_pretrained_cfg(name, pretrained)
        if not tag_cfg:
            tags = open_clip.list_pretrained_tags_by_model(name)
            raise WeightsUnavailable(
                f"'{pretrained}' is neither a pretrained tag of {name} nor an existing checkpoint file. "
                f"Known tags for {name}: {', '.join(tags) or 'none'}. "
                f"Pass --pretrained PATH for a local checkpoint, or --pretrained random for untrained weights."
            )
        if allow_download is None:
            allow_download = os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("0", "", "false", "no")
        checkpoint = _find_tag_weights(name, pretrained, tag_cfg, allow_download)
        weights_identity = {"tag": pretrained, "file_sha256": sha256_file(checkpoint)}

    model_cfg = open_clip.get_model_config(name)
    # What open_clip.create_model will set: defaults, then the tag's, then the network's input size.
    preprocess_cfg = _jsonable(merge_preprocess_dict(PreprocessCfg(), tag_cfg))
    preprocess_cfg["size"] = model_cfg["vision_cfg"].get("image_size", preprocess_cfg["size"])
    return ModelSpec(
        name=name,
        config_file=config_file,
        checkpoint=checkpoint,
        quick_gelu=bool(tag_cfg.get("quick_gelu", False)),
        preprocess_cfg=preprocess_cfg,
        dim=int(model_cfg["embed_dim"]),
        identity={
            "architecture": arch_identity,
            "weights": weights_identity,
            "preprocess": preprocess_cfg,
            "output": "image, float32, L2-normalised",
        },
    )


def _jsonable(cfg: dict[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in sorted(cfg.items())}


def _resolve_architecture(model: str) -> tuple[str, str | None, dict[str, Any]]:
    """An open_clip name, or a model-config JSON file registered with open_clip under its stem."""
    import open_clip

    path = Path(model)
    if path.suffix == ".json":
        if not path.is_file():
            raise ModelNotFound(f"model config file not found: {model}")
        text = path.read_text()
        try:
            cfg = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ModelNotFound(f"model config {model} is not valid JSON: {exc}") from None
        if not isinstance(cfg, dict) or not {"embed_dim", "vision_cfg", "text_cfg"} <= set(cfg):
            raise ModelNotFound(f"model config {model} needs embed_dim, vision_cfg and text_cfg")
        open_clip.add_model_config(path)
        identity = {"name": path.stem, "config_sha256": hashlib.sha256(text.encode()).hexdigest()}
        return path.stem, str(path.resolve()), identity
    if model not in open_clip.list_models():
        raise ModelNotFound(
            f"unknown open_clip model '{model}'. Use a name from open_clip.list_models() "
            f"(e.g. ViT-B-32, ViT-L-14) or an open_clip model-config .json file."
        )
    return model, None, {"name": model}


def _find_tag_weights(name: str, tag: str, tag_cfg: dict, allow_download: bool) -> str:
    """The local file holding a tag's weights: the caches first, then a download if allowed and
    the host answers at all (a closed network fails in seconds instead of retrying for minutes)."""
    hub = tag_cfg.get("hf_hub", "")
    if hub:
        from huggingface_hub import constants, hf_hub_download

        repo_id, filename = os.path.split(hub)
        filename = filename or "open_clip_pytorch_model.bin"
        # open_clip prefers a safetensors twin of a pickled checkpoint when the repo has one.
        twin = "open_clip_model.safetensors" if filename == "open_clip_pytorch_model.bin" else (
            filename.rsplit(".", 1)[0] + ".safetensors")
        for candidate in dict.fromkeys([twin, filename]):
            try:
                return hf_hub_download(repo_id, candidate, local_files_only=True)
            except Exception:  # not in the cache
                pass
        where, host = f"Hugging Face repo {repo_id}", urlparse(constants.ENDPOINT).hostname
    else:
        url = tag_cfg.get("url", "")
        target = os.path.join(os.path.expanduser("~/.cache/clip"), os.path.basename(url))
        if os.path.isfile(target):
            return target
        where, host = url, urlparse(url).hostname

    problem = "downloads are off (--offline or HF_HUB_OFFLINE=1)"
    if allow_download:
        if not _reachable(host):
            problem = f"{host} cannot be reached"
        else:
            try:
                import open_clip

                return open_clip.download_pretrained(tag_cfg)
            except Exception as exc:
                problem = f"the download failed ({type(exc).__name__}: {exc})"
    raise WeightsUnavailable(
        f"weights for {name} / {tag} are not on this machine and {problem}: {where}. Options: "
        "(1) --pretrained /path/to/checkpoint (.pt, .bin or .safetensors) for a local file; "
        "(2) fill the Hugging Face cache (HF_HOME or HF_HUB_CACHE) on a machine with internet and copy it here; "
        "(3) --pretrained random for untrained weights (tests only); "
        "(4) give embeddings you already have (.npy or an embed output folder) instead of images."
    )


def _reachable(host: str | None) -> bool:
    if not host:
        return False
    try:
        socket.create_connection((host, 443), timeout=NETWORK_CHECK_TIMEOUT_S).close()
        return True
    except OSError:
        return False


# ---------------------------------------------------------------------------------------------
# The pipeline


@dataclass
class EmbedResult:
    """Embeddings of the readable files of a folder, row-aligned with `keys` (sorted)."""

    keys: list[str]
    vectors: np.ndarray  # (n, dim) float32, L2-normalised
    sha256: list[str]
    width: np.ndarray  # (n,) int
    height: np.ndarray  # (n,) int
    skipped: list[Skipped]
    model_identity: dict[str, Any]
    counts: dict[str, int] = field(default_factory=dict)


class _DecodeDataset:
    """Reads, hashes and decodes one item each; failures come back as data, never raise."""

    def __init__(self, items: list[ImageFile], preprocess, max_pixels: int, max_bytes: int):
        self.items = items
        self.preprocess = preprocess
        self.max_pixels = max_pixels
        self.max_bytes = max_bytes

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        try:
            read = sources.read_item(self.items[i], self.max_bytes)
            sha = hashlib.sha256(read.data).hexdigest()
            image = sources.decode_image(read.data, self.max_pixels)
            return i, sha, self.preprocess(image), image.size, read.stamp, None
        except DecodeFailure as exc:
            return i, None, None, None, None, (exc.reason, exc.detail)
        except Exception as exc:  # a transform failing on an odd image must not stop the run
            return i, None, None, None, None, (sources.DECODE_ERROR, f"{type(exc).__name__}: {exc}")


def _collate(items):
    import torch

    ok = [it for it in items if it[5] is None]
    failed = [(it[0], it[5]) for it in items if it[5] is not None]
    tensors = torch.stack([it[2] for it in ok]) if ok else None
    return [it[0] for it in ok], [it[1] for it in ok], tensors, [it[3] for it in ok], [it[4] for it in ok], failed


def default_workers() -> int:
    return max(1, min(8, (os.cpu_count() or 1)))


class _Rows:
    """Per-file results being filled in, row-aligned with the input file list."""

    def __init__(self, n: int, dim: int):
        self.sha: list[str | None] = [None] * n
        self.vectors = np.zeros((n, dim), dtype=np.float32)
        self.sizes = np.zeros((n, 2), dtype=np.int64)
        self.done = np.zeros(n, dtype=bool)

    def fill(self, row: int, sha: str, vector: np.ndarray, width: int, height: int) -> None:
        self.sha[row] = sha
        self.vectors[row] = vector
        self.sizes[row] = (width, height)
        self.done[row] = True


def embed_files(
    files: list[ImageFile],
    embedder: Embedder,
    store: EmbeddingStore,
    batch_size: int = 64,
    workers: int | None = None,
    max_pixels: int = sources.DEFAULT_MAX_PIXELS,
    max_file_mb: float = sources.DEFAULT_MAX_FILE_MB,
    progress: bool | None = None,
    on_batch: Callable[[int], None] | None = None,
    label: str = "embedding",
    engine: str = "local",
    address: str | None = None,
    ray_workers: int | None = None,
) -> EmbedResult:
    """Embed `files` (from `sources.scan_folder`, tar shards or a path list), reusing the cache.
    Rows follow `files` order; files that cannot be decoded are left out and listed in `skipped`.

    The fast path stores the (size, mtime) the file had while its bytes were read, never the
    listing's, and only when it was steady: a file changed after listing and later restored with
    its old mtime is read again, not served the vector of what was there in between.

    `on_batch(n_embedded_so_far)` is called after each batch is committed (progress hooks, tests).
    `engine="ray"`: what the cache does not hold is read, decoded and embedded by a pool of Ray
    actors (one model each, a GPU each when the embedder runs on CUDA; the files must be readable
    where the workers run), and committed to the cache here, in order (`_embed_on_ray`).
    """
    workers = default_workers() if workers is None else workers
    store.register_model(embedder.model_id, embedder.identity_json)
    rows = _Rows(len(files), embedder.dim)
    skipped: list[Skipped] = []

    # 1. Fast path: unchanged files (same path, size, mtime) whose content is already embedded.
    known = store.known_hashes([f.fast_path for f in files if f.fast_path is not None])
    cached = store.lookup(embedder.model_id, known.values())
    for i, item in enumerate(files):
        if item.fast_path is not None and (sha := known.get(item.fast_path[0])) in cached:
            vector, width, height = cached[sha]
            rows.fill(i, sha, vector, width, height)
    from_fast_path = int(rows.done.sum())

    # 2. The rest goes through the workers (read once, hash, decode, preprocess) while the main
    #    process runs the model; contents already cached under another path skip the model.
    todo = np.flatnonzero(~rows.done)
    embedded = 0
    if len(todo) and engine == "ray":
        embedded, skipped = _embed_on_ray(files, todo, embedder, store, rows, batch_size, max_pixels,
                                          int(max_file_mb * 1024 * 1024), address, ray_workers, on_batch)
    elif len(todo):
        from torch.utils.data import DataLoader
        from tqdm import tqdm

        loader = DataLoader(
            _DecodeDataset([files[i] for i in todo], embedder.preprocess, max_pixels, int(max_file_mb * 1024 * 1024)),
            batch_size=batch_size,
            num_workers=workers,
            collate_fn=_collate,
            pin_memory=embedder.torch_device.type == "cuda",
            prefetch_factor=4 if workers else None,
        )
        show = sys.stderr.isatty() if progress is None else progress
        with tqdm(total=len(todo), unit="img", desc=label, disable=not show, file=sys.stderr) as bar:
            for local_idx, hashes, tensors, image_sizes, stamps, failed in loader:
                skipped += [Skipped(files[todo[j]].key, reason, detail) for j, (reason, detail) in failed]
                if local_idx:
                    batch_rows = todo[np.asarray(local_idx)]
                    file_hashes = _file_hashes(files, batch_rows, hashes, stamps)
                    embedded += _embed_and_commit(batch_rows, hashes, tensors, image_sizes, file_hashes, embedder,
                                                  store, rows)
                bar.update(len(local_idx) + len(failed))
                if on_batch is not None:
                    on_batch(embedded)

    keep = np.flatnonzero(rows.done)
    return EmbedResult(
        keys=[files[i].key for i in keep],
        vectors=rows.vectors[keep],
        sha256=[rows.sha[i] for i in keep],
        width=rows.sizes[keep, 0],
        height=rows.sizes[keep, 1],
        skipped=sorted(skipped, key=lambda s: s.key),
        model_identity=embedder.identity,
        counts={
            "images": len(files),
            "embedded": embedded,
            "from_cache": len(keep) - embedded,
            "from_cache_fast_path": from_fast_path,
            "unreadable": len(skipped),
        },
    )


def _file_hashes(files, batch_rows, hashes, stamps) -> list[tuple]:
    """The fast-path entries (path, size, mtime, sha256) of the files whose read was steady."""
    return [(files[r].fast_path[0], *stamp, h) for r, h, stamp in zip(batch_rows, hashes, stamps)
            if files[r].fast_path is not None and stamp is not None]


class _RayEmbedWorker:
    """One Ray actor: its own copy of the model (built on first use), reading, hashing, decoding,
    preprocessing and embedding the files it is given."""

    def __init__(self, embedder):
        self.embedder = embedder

    def run(self, items: list[ImageFile], max_pixels: int, max_bytes: int):
        data = _DecodeDataset(items, self.embedder.preprocess, max_pixels, max_bytes)
        local_idx, hashes, tensors, sizes, stamps, failed = _collate([data[i] for i in range(len(data))])
        vectors = self.embedder.embed_tensors(tensors) if local_idx else np.zeros((0, self.embedder.dim), np.float32)
        return local_idx, hashes, vectors, sizes, stamps, failed


def _embed_on_ray(files, todo, embedder, store, rows: _Rows, batch_size: int, max_pixels: int, max_bytes: int,
                  address: str | None, workers: int | None, on_batch) -> tuple[int, list[Skipped]]:
    """Embed files[todo] on a pool of Ray actors, a batch per call, results taken in order and
    committed to the cache like the local path's."""
    try:
        import ray
        from ray.util import ActorPool
    except ImportError:
        from audit.items import EngineProblem

        raise EngineProblem("--engine ray needs Ray: pip install 'madaudit[ray]'") from None
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=address, num_cpus=workers if address is None else None, include_dashboard=False,
                 log_to_driver=False, configure_logging=False)
    try:
        portable = dataclasses.replace(embedder, _model=None) if isinstance(embedder, Embedder) else embedder
        gpus = 1 if str(getattr(embedder, "device", "cpu")).startswith("cuda") else 0
        n_actors = max(1, int(ray.cluster_resources().get("GPU" if gpus else "CPU", 1)))
        actor = ray.remote(num_cpus=1, num_gpus=gpus)(_RayEmbedWorker)
        pool = ActorPool([actor.remote(portable) for _ in range(n_actors)])
        batches = [todo[a:a + batch_size] for a in range(0, len(todo), batch_size)]
        skipped: list[Skipped] = []
        embedded = 0
        results = pool.map(lambda a, batch: a.run.remote([files[i] for i in batch], max_pixels, max_bytes), batches)
        for batch, (local_idx, hashes, vectors, sizes, stamps, failed) in zip(batches, results):
            skipped += [Skipped(files[batch[j]].key, reason, detail) for j, (reason, detail) in failed]
            if local_idx:
                batch_rows = batch[np.asarray(local_idx)]
                file_hashes = _file_hashes(files, batch_rows, hashes, stamps)
                for row, sha, vector, (width, height) in zip(batch_rows, hashes, vectors, sizes):
                    rows.fill(row, sha, vector, width, height)
                store.put_embeddings(embedder.model_id, [(h, *size, v) for h, size, v in zip(hashes, sizes, vectors)],
                                     file_hashes)
                embedded += len(local_idx)
            if on_batch is not None:
                on_batch(embedded)
        return embedded, skipped
    finally:
        if started_here:
            ray.shutdown()


def embed_listing(listing: sources.FolderScan, embedder: Embedder, store: EmbeddingStore, **options) -> EmbedResult:
    """Embed the images a listing found (an image folder, tar shards or a path list; see
    `embed_files` for `options`). `skipped` lists both the items the listing passed over and those
    that could not be decoded; `counts` has one `skipped_<reason>` entry per reason."""
    result = embed_files(listing.files, embedder, store, **options)
    result.skipped = sorted(listing.skipped + result.skipped, key=lambda s: s.key)
    result.counts["unreadable"] = sum(s.reason in sources.UNREADABLE_REASONS for s in result.skipped)
    reasons = Counter(s.reason for s in result.skipped)
    result.counts.update({f"skipped_{reason}": n for reason, n in sorted(reasons.items())})
    return result


def embed_folder(root: str | os.PathLike, embedder: Embedder, store: EmbeddingStore,
                 max_file_mb: float = sources.DEFAULT_MAX_FILE_MB, **options) -> EmbedResult:
    """Scan `root` recursively and embed its images (see `embed_listing`)."""
    listing = sources.scan_folder(root, max_file_mb=max_file_mb)
    return embed_listing(listing, embedder, store, max_file_mb=max_file_mb, **options)


def save_embed_result(result: EmbedResult, out: str | os.PathLike, source: str) -> Path:
    """Write `result` as an embedding folder (clip-retrieval layout, see `embedding_files`)."""
    from audit import __version__
    from audit.io.embedding_folder import write_embedding_folder

    manifest = {
        "madaudit_version": __version__,
        "source": os.path.abspath(source),
        "model": result.model_identity,
        "counts": result.counts,
    }
    metadata = {"sha256": result.sha256, "width": result.width, "height": result.height}
    return write_embedding_folder(out, result.keys, result.vectors, metadata, result.skipped, manifest)


def _embed_and_commit(batch_rows, hashes, tensors, image_sizes, file_hashes, embedder: Embedder,
                      store: EmbeddingStore, rows: _Rows) -> int:
    """Embed one decoded batch, skipping contents already cached, and commit the new vectors and
    the files' fast-path hashes in one transaction. Returns how many images went through the model."""
    hits = store.lookup(embedder.model_id, hashes)
    need = [j for j, h in enumerate(hashes) if h not in hits]
    new = dict(zip(need, embedder.embed_tensors(tensors[need]))) if need else {}
    for j, (row, sha, (width, height)) in enumerate(zip(batch_rows, hashes, image_sizes)):
        rows.fill(row, sha, new[j] if j in new else hits[sha][0], width, height)
    store.put_embeddings(
        embedder.model_id, [(hashes[j], *image_sizes[j], vector) for j, vector in new.items()], file_hashes
    )
    return len(need)
