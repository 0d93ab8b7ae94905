"""Sides: turn what a user points at into embeddings, whatever kind of input it is.

Each side of every command is one of (report.json `inputs.*.kind` says which):

| kind               | what                                                                 |
|--------------------|----------------------------------------------------------------------|
| `images`           | a folder of images, embedded through the cache                       |
| `webdataset`       | tar shards (a .tar, a folder of them, or `shards/{00000..00009}.tar`) |
| `path_list`        | a .txt or parquet list of image paths                                |
| `embedding_folder` | a folder `madaudit embed` or clip-retrieval wrote, every part        |
| `npy`              | one .npy embedding file                                              |
| `parquet`          | a parquet file or folder with an embedding column                    |

Bare embeddings (npy, parquet, a folder without a manifest) carry no model identity:
`EmbedOptions.embedding_model` declares it, and sides with different identities are refused.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from audit.io import files, pathlist, webdataset
from audit.io.arrays import ArrayProblem, check_values
from audit.io.embedding_folder import (EmbeddingSet, FolderProblem, is_embedding_folder, load_embeddings,
                                       read_folder_extras, read_manifest)
from audit.io.files import FolderScan, ImageFile, Skipped
from audit.io.parquet import DEFAULT_EMBEDDING_COLUMN, is_embedding_table, load_parquet_embeddings

IMAGE_KINDS = ("images", "webdataset", "path_list")
EMBEDDING_KINDS = ("embedding_folder", "npy", "parquet")


class InputProblem(ValueError):
    """An input that cannot be used (missing, empty, mismatched); the message names it."""


@dataclass
class EmbedOptions:
    """How to read and embed inputs; the embedder is resolved once and shared by both sides."""

    model: str = "ViT-B-32"
    pretrained: str | None = "laion2b_s34b_b79k"
    device: str = "auto"
    allow_download: bool | None = None
    batch_size: int = 64
    workers: int | None = None
    cache: str | None = None
    progress: bool | None = None
    max_file_mb: float = files.DEFAULT_MAX_FILE_MB
    embedding_column: str = DEFAULT_EMBEDDING_COLUMN
    # Model names declared for bare embeddings: () none, (name,) both sides, (reference, candidate).
    embedding_model: tuple[str, ...] = ()
    basis: str | None = None  # pixels: a saved basis to reuse instead of fitting one
    # Embedding files larger than this are read as a seeded uniform sample of this many rows (the
    # set-level metrics); the per-item pass reads every row part by part. None: read everything.
    sample_size: int | None = None
    sample_seed: int = 0
    engine: str = "local"  # "ray": images are embedded by a pool of Ray actors (`embedding.embed_files`)
    address: str | None = None
    ray_workers: int | None = None


@dataclass
class LoadedSide:
    embeddings: EmbeddingSet
    skipped: list[Skipped]
    counts: dict[str, int]
    kind: str = "images"
    image_root: str | None = None  # where the keys resolve to image files, if anywhere
    listing: FolderScan | None = field(default=None, repr=False)
    max_file_mb: float = files.DEFAULT_MAX_FILE_MB
    population: int | None = None  # rows of the whole input, when `embeddings` holds a sample of them
    sample_rows: np.ndarray | None = field(default=None, repr=False)  # those rows (sorted), or None: all
    path: str | None = None  # the input as given (the per-item pass reads embedding files again)
    full: EmbeddingSet | None = field(default=None, repr=False)  # every item, when `embeddings` is a sample
    _by_key: dict[str, ImageFile] | None = field(default=None, init=False, repr=False)

    def image_bytes(self, key: str) -> bytes | None:
        """The image bytes behind `key`, only from an item the listing itself found, or a key that
        stays inside the embedding folder's source (never `..`, absolute paths or symlinks out)."""
        cap = int(self.max_file_mb * 1024 * 1024)
        item: ImageFile | None = None
        if self.listing is not None:
            if self._by_key is None:
                self._by_key = {f.key: f for f in self.listing.files}
            item = self._by_key.get(key)
        elif self.kind == "embedding_folder" and self.image_root is not None:
            path = files.safe_image_path(self.image_root, key, cap)
            item = ImageFile(key, path, 0, 0) if path else None
        if item is None:
            return None
        try:
            return files.read_item(item, cap).data
        except files.DecodeFailure:
            return None


def detect_kind(path: str | os.PathLike, options: EmbedOptions) -> str:
    """Which reader a path needs, or InputProblem saying what was expected."""
    text = os.fspath(path)
    p = Path(text)
    if not p.exists():
        if "{" in text and webdataset.is_shard_spec(text):
            return "webdataset"
        raise InputProblem(f"not found: {text}")
    if p.is_file():
        suffix = p.suffix.lower()
        if suffix == ".npy":
            return "npy"
        if suffix in (".tar", ".gz", ".tgz"):
            return "webdataset"
        if suffix == ".txt":
            return "path_list"
        if suffix == ".parquet":
            if is_embedding_table(p, options.embedding_column):
                return "parquet"
            if pathlist.is_path_list(p):
                return "path_list"
            raise InputProblem(f"{text}: a parquet file with neither an embedding column "
                               f"'{options.embedding_column}' (--embedding-column) nor a path column "
                               f"({', '.join(pathlist.PATH_COLUMNS)})")
        raise InputProblem(f"{text}: expected an image folder, tar shards, a .npy, .parquet or .txt file, "
                           "or an embedding folder")
    if not p.is_dir():
        raise InputProblem(f"{text}: not a regular file or folder")
    try:
        if is_embedding_folder(p):
            return "embedding_folder"
        if webdataset.is_shard_spec(p):
            return "webdataset"
        if any(q.suffix == ".parquet" for q in p.iterdir()) and is_embedding_table(p, options.embedding_column):
            return "parquet"
    except OSError as exc:
        raise InputProblem(f"{text}: cannot be listed ({exc.strerror or exc})") from None
    return "images"


def load_side(path: str | os.PathLike, options: EmbedOptions, embedder_cache: dict[str, Any],
              side: int = 0) -> LoadedSide:
    """Embeddings for one input. `embedder_cache` lets two sides share one loaded model; `side`
    (0 reference, 1 candidate) picks the declared model name."""
    kind = detect_kind(path, options)
    try:
        if kind in IMAGE_KINDS:
            return _embed_images(path, kind, options, embedder_cache)
        return _read_embeddings(path, kind, options, side)
    except (ArrayProblem, FolderProblem) as exc:
        raise InputProblem(str(exc)) from None


def _read_embeddings(path, kind: str, options: EmbedOptions, side: int) -> LoadedSide:
    skipped: list[Skipped] = []
    root = None
    population, rows = None, None
    if kind == "parquet":
        emb = load_parquet_embeddings(path, options.embedding_column)
    elif options.sample_size is not None:
        emb, population, rows = _sample_embeddings(path, options.sample_size, options.sample_seed)
    else:
        emb = load_embeddings(path)
    if kind == "embedding_folder":
        skipped, source = read_folder_extras(path)
        root = source if source and Path(source).is_dir() else None
    emb.model_identity = _declared_identity(emb, options, side)
    return LoadedSide(emb, skipped, {"vectors": population or len(emb.keys)}, kind, root,
                      max_file_mb=options.max_file_mb, population=population, sample_rows=rows, path=os.fspath(path))


def _sample_embeddings(path, size: int, seed: int) -> tuple[EmbeddingSet, int | None, np.ndarray | None]:
    """The whole file when it has at most `size` rows, else a seeded uniform sample of rows read
    one by one (never the whole file): (embeddings, population, rows)."""
    from audit.items.source import FolderSource

    source = FolderSource.open(path)
    if source.count <= size:
        return load_embeddings(path), None, None
    rows = source.sample_rows(size, seed)
    identity = read_manifest(path).get("model") if Path(path).is_dir() else None
    emb = EmbeddingSet(source.keys_of(rows), source.take(rows), identity if isinstance(identity, dict) else None,
                       os.fspath(path))
    return emb, source.count, rows


def _declared_identity(emb: EmbeddingSet, options: EmbedOptions, side: int) -> dict[str, Any] | None:
    names = options.embedding_model
    if not names:
        return emb.model_identity
    declared = names[min(side, len(names) - 1)]
    if emb.model_identity is not None:
        embedded = identity_name(emb.model_identity)
        if embedded != declared:
            raise InputProblem(f"{emb.source}: --embedding-model {declared} but its manifest says it was embedded "
                               f"with {embedded}")
        return emb.model_identity
    return {"name": declared, "declared": True}


def identity_name(identity: dict[str, Any] | None) -> str | None:
    """The model's name in an identity: open_clip's architecture, pixels, or a declared name."""
    if not isinstance(identity, dict):
        return None
    arch = identity.get("architecture")
    if isinstance(arch, dict) and isinstance(arch.get("name"), str):
        return arch["name"]
    return identity.get("name") if isinstance(identity.get("name"), str) else None


def list_images(path, kind: str, max_file_mb: float) -> FolderScan:
    """The listing of an image source: its images, and what it passed over with reasons."""
    try:
        if kind == "webdataset":
            return webdataset.list_shards(path, max_file_mb)
        if kind == "path_list":
            return pathlist.read_path_list(path, max_file_mb)
        return files.scan_folder(path, max_file_mb)
    except ValueError as exc:
        raise InputProblem(str(exc)) from None


def load_image_embedder(model: str, pretrained: str | None, device: str, allow_download: bool | None, store,
                        first_listing: FolderScan, basis: str | None = None):
    """The embedder for images: `pixels` reuses `basis` if given, else fits its basis on the first
    listing it is given (the reference); any other name is an open_clip model
    (`embedding.load_embedder`)."""
    from audit.embedding import load_embedder
    from audit.pixels import NAME, fit_pixel_embedder, load_pixel_basis

    if model == NAME:
        try:
            return load_pixel_basis(basis) if basis else fit_pixel_embedder(first_listing)
        except ValueError as exc:
            raise InputProblem(str(exc)) from None
    return load_embedder(model, pretrained, device, allow_download, store=store)


def _embed_images(path, kind: str, options: EmbedOptions, embedder_cache: dict[str, Any]) -> LoadedSide:
    from audit.embedding import embed_listing
    from audit.store import EmbeddingStore, default_cache_path

    listing = list_images(path, kind, options.max_file_mb)
    with EmbeddingStore(options.cache or default_cache_path()) as store:
        if "embedder" not in embedder_cache:
            embedder_cache["embedder"] = load_image_embedder(options.model, options.pretrained, options.device,
                                                             options.allow_download, store, listing, options.basis)
        embedder = embedder_cache["embedder"]
        result = embed_listing(listing, embedder, store, batch_size=options.batch_size, workers=options.workers,
                               progress=options.progress, max_file_mb=options.max_file_mb,
                               label=f"embedding {Path(os.fspath(path)).name or os.fspath(path)}",
                               engine=options.engine, address=options.address, ray_workers=options.ray_workers)
    emb = EmbeddingSet(result.keys, result.vectors, result.model_identity, os.fspath(path))
    root = os.fspath(path) if kind == "images" else listing.root
    return LoadedSide(emb, result.skipped, result.counts, kind, root, listing, options.max_file_mb)


def check_compatible(reference: EmbeddingSet, candidate: EmbeddingSet) -> None:
    """Both sides must live in the same embedding space."""
    for side in (reference, candidate):
        if len(side.keys) == 0:
            raise InputProblem(f"{side.source}: no embeddings (nothing readable)")
    if reference.vectors.shape[1] != candidate.vectors.shape[1]:
        raise InputProblem(
            f"dimension mismatch: {reference.source} has {reference.vectors.shape[1]}, "
            f"{candidate.source} has {candidate.vectors.shape[1]}"
        )
    a, b = reference.model_identity, candidate.model_identity
    if a and b:
        declared = a.get("declared") or b.get("declared")
        differ = identity_name(a) != identity_name(b) if declared else a != b
        if differ:
            raise InputProblem(
                f"{reference.source} ({identity_name(a)}) and {candidate.source} ({identity_name(b)}) were embedded "
                f"with different models ({identity_difference(a, b)}); embed both with the same --model and --pretrained"
            )


def identity_difference(a: dict[str, Any], b: dict[str, Any], most: int = 3) -> str:
    """What differs between two model identities, field by field ("pretrained: 'x' vs 'y'")."""
    fields = [k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]

    def short(v: Any) -> str:
        text = repr(v)
        return text if len(text) <= 40 else text[:37] + "..."

    shown = [f"{k}: {short(a.get(k))} vs {short(b.get(k))}" for k in fields[:most]]
    return "; ".join(shown) + (f"; {len(fields) - most} more" if len(fields) > most else "")


def side_from_array(vectors: Any, keys: list[str] | None = None, model_identity: dict[str, Any] | None = None,
                    name: str = "array") -> LoadedSide:
    """An in-memory side: an (n, d) array of embeddings, with optional keys (default "0", "1", ...)
    and the identity of the model that made them. Checked like a .npy file."""
    vectors = np.asarray(vectors)
    if vectors.ndim != 2 or vectors.shape[0] == 0 or vectors.dtype.kind not in "fiu":
        raise InputProblem(f"{name}: embeddings must be a non-empty (n, d) numeric array, got {vectors.dtype} {vectors.shape}")
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    try:
        check_values(vectors, name)
    except ArrayProblem as exc:
        raise InputProblem(str(exc)) from None
    keys = [str(i) for i in range(len(vectors))] if keys is None else [str(k) for k in keys]
    if len(keys) != len(vectors):
        raise InputProblem(f"{name}: {len(keys)} keys for {len(vectors)} embeddings")
    return LoadedSide(EmbeddingSet(keys, vectors, model_identity, name), [], {}, kind="array")


def load_pair(reference, candidate, options: EmbedOptions) -> tuple[LoadedSide, LoadedSide]:
    """Both sides, in one embedding space, or InputProblem. A side may be a path or an already
    loaded `LoadedSide` (`side_from_array`)."""
    shared: dict[str, Any] = {}
    ref = reference if isinstance(reference, LoadedSide) else load_side(reference, options, shared, 0)
    cand = candidate if isinstance(candidate, LoadedSide) else load_side(candidate, options, shared, 1)
    check_compatible(ref.embeddings, cand.embeddings)
    return ref, cand
