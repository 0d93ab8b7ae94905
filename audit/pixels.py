"""The `pixels` embedder: downsampled grayscale pixels projected on a PCA basis.

A legitimate feature space for tiny images (digits, icons) that needs no downloaded weights: the
offline demo and quick checks use it; CLIP stays the default everywhere else. Each image becomes
`size` x `size` grayscale pixels in [0, 1] (box-filtered), centred and projected on the top `dim`
principal axes of a set of images (the reference: the basis is part of the embedder's identity,
so vectors from two different bases are never mixed, in the cache or in a comparison).

It has the interface `embed_files` uses (identity, model_id, dim, preprocess, torch_device,
embed_tensors), so it gets the same decoding workers, cache and skip handling as CLIP.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from audit.io import files as sources
from audit.embedding import identity_json, model_id

NAME = "pixels"
DEFAULT_SIZE = 16
DEFAULT_DIM = 32


class PixelTransform:
    """PIL image -> (1, size, size) float tensor in [0, 1]. A class, so decoding workers can pickle it."""

    def __init__(self, size: int):
        self.size = size

    def __call__(self, image):
        import torch
        from PIL import Image

        gray = image.convert("L").resize((self.size, self.size), Image.Resampling.BOX)
        return torch.from_numpy(np.asarray(gray, dtype=np.float32) / 255.0)[None]


@dataclass
class PixelEmbedder:
    size: int
    mean: np.ndarray  # (size * size,)
    components: np.ndarray  # (dim, size * size), orthonormal rows
    device: str = "cpu"
    fitted_on: str = field(default="", compare=False)

    @property
    def identity(self) -> dict[str, Any]:
        basis = hashlib.sha256(self.mean.astype(np.float32).tobytes() + self.components.astype(np.float32).tobytes())
        return {"name": NAME, "size": self.size, "dim": self.dim, "basis_sha256": basis.hexdigest()}

    @property
    def identity_json(self) -> str:
        return identity_json(self.identity)

    @property
    def model_id(self) -> str:
        return model_id(self.identity)

    @property
    def dim(self) -> int:
        return self.components.shape[0]

    @property
    def preprocess(self) -> PixelTransform:
        return PixelTransform(self.size)

    @property
    def torch_device(self):
        import torch

        return torch.device("cpu")

    def save(self, path: str | Path) -> Path:
        """The basis as a .npz (no pickles), so other folders can be embedded in the same space."""
        from audit.io.atomic import write_bytes_atomic

        buffer = io.BytesIO()
        np.savez(buffer, size=np.int64(self.size), mean=self.mean, components=self.components)
        write_bytes_atomic(path, buffer.getvalue())
        return Path(path)

    def embed_tensors(self, images) -> np.ndarray:
        flat = images.reshape(len(images), -1).numpy().astype(np.float64)
        return ((flat - self.mean) @ self.components.T).astype(np.float32)


def fit_pixel_embedder(folder: str | Path | sources.FolderScan, size: int = DEFAULT_SIZE,
                       dim: int = DEFAULT_DIM) -> PixelEmbedder:
    """PCA basis of the readable images of `folder` (an image folder, or the listing of any image
    source; unreadable ones are left out here and listed when the source is embedded)."""
    listing = folder if isinstance(folder, sources.FolderScan) else sources.scan_folder(folder)
    folder = listing.root
    transform = PixelTransform(size)
    rows = []
    for f in listing.files:
        try:
            read = sources.read_item(f, int(sources.DEFAULT_MAX_FILE_MB * 1024 * 1024))
            rows.append(transform(sources.decode_image(read.data)).numpy().ravel())
        except sources.DecodeFailure:
            continue
    if len(rows) < 2:
        raise ValueError(f"{folder}: the pixels embedder needs at least 2 readable images to fit its basis")
    pixels = np.asarray(rows, dtype=np.float64)
    mean = pixels.mean(axis=0)
    _, _, vt = np.linalg.svd(pixels - mean, full_matrices=False)
    dim = min(dim, len(vt))
    # Fix each axis's sign (largest |loading| positive) so the basis does not depend on the solver.
    components = vt[:dim] * np.sign(vt[:dim][np.arange(dim), np.abs(vt[:dim]).argmax(axis=1)])[:, None]
    return PixelEmbedder(size, mean, components, fitted_on=str(folder))


BASIS_FILE = "pixels_basis.npz"


def load_pixel_basis(path: str | Path) -> PixelEmbedder:
    """A basis `PixelEmbedder.save` wrote (`madaudit embed --model pixels` writes one beside the
    embeddings); ValueError naming the file when it is not one."""
    try:
        with np.load(path, allow_pickle=False) as data:
            size, mean, components = int(data["size"]), data["mean"].astype(np.float64), data["components"].astype(np.float64)
    except (OSError, KeyError, ValueError) as exc:
        raise ValueError(f"{path}: not a pixels basis ({exc})") from None
    if not 1 <= size <= 256 or mean.shape != (size * size,) or components.ndim != 2 \
            or components.shape[1] != size * size or not (np.isfinite(mean).all() and np.isfinite(components).all()):
        raise ValueError(f"{path}: not a pixels basis (shapes {mean.shape}, {components.shape} for size {size})")
    return PixelEmbedder(size, mean, components, fitted_on=str(path))
