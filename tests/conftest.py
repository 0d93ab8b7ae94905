"""Shared test helpers: a tiny open_clip architecture (random weights) and image folders."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

# A real open_clip CLIP, just very small: 32x32 input, 2 vision layers, 32-d embeddings.
TINY_CLIP_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 32, "patch_size": 8},
    "text_cfg": {"context_length": 16, "vocab_size": 1000, "width": 32, "heads": 2, "layers": 1},
}


@pytest.fixture(scope="session")
def tiny_config(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("model") / "tiny-clip-test.json"
    path.write_text(json.dumps(TINY_CLIP_CONFIG))
    return str(path)


@pytest.fixture()
def cache_path(tmp_path) -> Path:
    return tmp_path / "cache.sqlite"


def write_images(folder: Path, n: int, seed: int = 0, size: tuple[int, int] = (40, 48), fmt: str = "png") -> list[str]:
    """n distinct random images under folder (some in a subfolder); returns their keys."""
    rng = np.random.default_rng(seed)
    keys = []
    for i in range(n):
        key = f"{'sub/' if i % 3 == 0 else ''}img_{i:03d}.{fmt}"
        path = folder / key
        path.parent.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
        Image.fromarray(pixels).save(path)
        keys.append(key)
    return sorted(keys)


def _real_clip_dir() -> Path | None:
    """../shared/data/real-clip next to the repository (or $MADAUDIT_REAL_CLIP)."""
    import os

    env = os.environ.get("MADAUDIT_REAL_CLIP")
    candidates = [Path(env)] if env else []
    root = Path(__file__).resolve().parent.parent
    candidates += [root.parent / "shared" / "data" / "real-clip", root.parent.parent / "shared" / "data" / "real-clip"]
    return next((c for c in candidates if (c / "food101_10class_clip_vitb32.npz").is_file()), None)


@pytest.fixture(scope="session")
def real_clip() -> dict[str, np.ndarray]:
    """Real CLIP ViT-B/32 embeddings of real photos (Food-101 10 classes, Flickr8k). In CI they
    must be there; elsewhere the tests that need them are skipped with the reason."""
    import os

    folder = _real_clip_dir()
    if folder is None:
        if os.environ.get("CI"):
            pytest.fail("real CLIP embeddings not found: expected ../shared/data/real-clip or $MADAUDIT_REAL_CLIP")
        pytest.skip("real CLIP embeddings not found (../shared/data/real-clip or $MADAUDIT_REAL_CLIP)")
    food = np.load(folder / "food101_10class_clip_vitb32.npz", allow_pickle=False)
    flickr = np.load(folder / "flickr8k_1000_clip_vitb32.npz", allow_pickle=False)
    return {
        "food_train": food["X_train"].astype(np.float32),
        "food_train_y": food["y_train"],
        "food_test": food["X_test"].astype(np.float32),
        "food_test_y": food["y_test"],
        "flickr": flickr["embeddings"].astype(np.float32),
    }
