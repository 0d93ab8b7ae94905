"""Inputs: turn what a user points at into embeddings.

Each side of a comparison may be an embedding file (`.npy`), a folder `madaudit embed` wrote (or
clip-retrieval's layout), or a folder of images, embedded on the way through the cache.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from audit.embedding_files import EmbeddingSet, is_embedding_folder, load_embeddings, read_folder_extras
from audit.sources import Skipped


class InputProblem(ValueError):
    """An input that cannot be used (missing, empty, mismatched)."""


@dataclass
class EmbedOptions:
    """How to embed image folders; the embedder is resolved once and shared by both sides."""

    model: str = "ViT-B-32"
    pretrained: str | None = "laion2b_s34b_b79k"
    device: str = "auto"
    allow_download: bool | None = None
    batch_size: int = 64
    workers: int | None = None
    cache: str | None = None
    progress: bool | None = None


@dataclass
class LoadedSide:
    embeddings: EmbeddingSet
    skipped: list[Skipped]
    counts: dict[str, int]
    kind: str = "images"  # "images", "embedding_folder" or "npy"
    image_root: str | None = None  # where the keys resolve to image files, if anywhere


def load_side(path: str | Path, options: EmbedOptions, embedder_cache: dict[str, Any]) -> LoadedSide:
    """Embeddings for one input path. `embedder_cache` lets two sides share one loaded model."""
    path = Path(path)
    if not path.exists():
        raise InputProblem(f"not found: {path}")
    if path.is_file():
        if path.suffix != ".npy":
            raise InputProblem(f"{path}: expected a .npy embedding file, an embedding folder or an image folder")
        emb = load_embeddings(path)
        return LoadedSide(emb, [], {"vectors": len(emb.keys)}, "npy")
    if is_embedding_folder(path):
        emb = load_embeddings(path)
        skipped, source = read_folder_extras(path)
        root = source if source and Path(source).is_dir() else None
        return LoadedSide(emb, skipped, {"vectors": len(emb.keys)}, "embedding_folder", root)
    return _embed_image_folder(path, options, embedder_cache)


def load_image_embedder(model: str, pretrained: str | None, device: str, allow_download: bool | None, store,
                        first_folder: Path):
    """The embedder for image folders: `pixels` fits its basis on the first folder it is given
    (the reference); any other name is an open_clip model (`embedding.load_embedder`)."""
    from audit.embedding import load_embedder
    from audit.pixels import NAME, fit_pixel_embedder

    if model == NAME:
        try:
            return fit_pixel_embedder(first_folder)
        except ValueError as exc:
            raise InputProblem(str(exc)) from None
    return load_embedder(model, pretrained, device, allow_download, store=store)


def _embed_image_folder(path: Path, options: EmbedOptions, embedder_cache: dict[str, Any]) -> LoadedSide:
    from audit.embedding import embed_folder
    from audit.store import EmbeddingStore, default_cache_path

    with EmbeddingStore(options.cache or default_cache_path()) as store:
        if "embedder" not in embedder_cache:
            embedder_cache["embedder"] = load_image_embedder(options.model, options.pretrained, options.device,
                                                             options.allow_download, store, path)
        embedder = embedder_cache["embedder"]
        result = embed_folder(path, embedder, store, batch_size=options.batch_size, workers=options.workers,
                              progress=options.progress)
    emb = EmbeddingSet(result.keys, result.vectors, result.model_identity, str(path))
    return LoadedSide(emb, result.skipped, result.counts, "images", str(path))


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
    if reference.model_identity and candidate.model_identity and reference.model_identity != candidate.model_identity:
        raise InputProblem(
            f"{reference.source} and {candidate.source} were embedded with different models; "
            "embed both with the same --model and --pretrained"
        )
