"""The real open_clip code path, on a tiny architecture with random weights."""

import os
import shutil
import time

import huggingface_hub
import numpy as np
import open_clip
import pytest
import torch
from PIL import Image

from audit.io import files as sources
from audit.embedding import WeightsUnavailable, _find_tag_weights, embed_folder, load_embedder
from audit.store import EmbeddingStore
from conftest import write_images


@pytest.fixture()
def embedder(tiny_config):
    return load_embedder(tiny_config, "random", device="cpu")


def direct_embedding(model, preprocess, path) -> np.ndarray:
    """Reference: open_clip's own model and transform on one image, no pipeline."""
    with torch.no_grad():
        image = preprocess(Image.open(path).convert("RGB")).unsqueeze(0)
        f = model.encode_image(image)
    return torch.nn.functional.normalize(f, dim=-1)[0].numpy()


def test_pipeline_matches_open_clip_directly(tmp_path, cache_path, embedder):
    keys = write_images(tmp_path / "imgs", 7)
    with EmbeddingStore(cache_path) as store:
        result = embed_folder(tmp_path / "imgs", embedder, store, batch_size=3, workers=2)
    assert result.keys == keys  # sorted relative paths
    assert result.vectors.dtype == np.float32 and result.vectors.shape == (7, 32)
    np.testing.assert_allclose(np.linalg.norm(result.vectors, axis=1), 1.0, atol=1e-6)
    # Reference: the full open_clip CLIP, built independently with the documented seed.
    torch.manual_seed(0)
    clip = open_clip.create_model("tiny-clip-test").eval()
    _, _, transform = open_clip.create_model_and_transforms("tiny-clip-test")
    for key, vector in zip(result.keys, result.vectors):
        expected = direct_embedding(clip, transform, tmp_path / "imgs" / key)
        np.testing.assert_allclose(vector, expected, atol=1e-5)
    assert (result.width == 40).all() and (result.height == 48).all()


def test_same_image_twice_same_vector_and_embedded_once(tmp_path, cache_path, embedder):
    write_images(tmp_path / "imgs", 3)
    shutil.copy(tmp_path / "imgs" / "img_001.png", tmp_path / "imgs" / "copy_of_001.png")
    with EmbeddingStore(cache_path) as store:
        result = embed_folder(tmp_path / "imgs", embedder, store, batch_size=8, workers=0)
    row = {k: i for i, k in enumerate(result.keys)}
    np.testing.assert_array_equal(result.vectors[row["copy_of_001.png"]], result.vectors[row["img_001.png"]])
    assert result.sha256[row["copy_of_001.png"]] == result.sha256[row["img_001.png"]]


def test_random_weights_are_reproducible(tmp_path, tiny_config):
    write_images(tmp_path / "imgs", 2)
    vectors = []
    for run in range(2):
        emb = load_embedder(tiny_config, "random", device="cpu")
        with EmbeddingStore(tmp_path / f"cache{run}.sqlite") as store:
            vectors.append(embed_folder(tmp_path / "imgs", emb, store, workers=0).vectors)
    np.testing.assert_array_equal(vectors[0], vectors[1])


def test_second_run_embeds_nothing_changed_file_is_reembedded(tmp_path, cache_path, embedder):
    folder = tmp_path / "imgs"
    write_images(folder, 6)
    with EmbeddingStore(cache_path) as store:
        first = embed_folder(folder, embedder, store, batch_size=4, workers=2)
        assert first.counts["embedded"] == 6
        second = embed_folder(folder, embedder, store, batch_size=4, workers=2)
        assert second.counts["embedded"] == 0 and second.counts["from_cache_fast_path"] == 6
        np.testing.assert_array_equal(first.vectors, second.vectors)

        changed = folder / "img_002.png"
        Image.fromarray(np.zeros((48, 40, 3), np.uint8)).save(changed)
        os.utime(changed, ns=(time.time_ns(), time.time_ns() - 5 * 10**9))  # mtime moves (to the past: not racy)
        third = embed_folder(folder, embedder, store, batch_size=4, workers=2)
        assert third.counts["embedded"] == 1 and third.counts["from_cache"] == 5
        i = third.keys.index("img_002.png")
        assert not np.allclose(third.vectors[i], first.vectors[i])

        # Touched but unchanged content: hashed again, found by content, not embedded.
        os.utime(folder / "img_004.png", ns=(time.time_ns(), time.time_ns() - 7 * 10**9))
        fourth = embed_folder(folder, embedder, store, batch_size=4, workers=0)
        assert fourth.counts["embedded"] == 0 and fourth.counts["from_cache_fast_path"] == 5


def test_interrupted_run_resumes_without_redoing_committed_batches(tmp_path, cache_path, embedder):
    folder = tmp_path / "imgs"
    write_images(folder, 10)

    class Stop(Exception):
        pass

    def stop_after_two_batches(embedded_so_far):
        if embedded_so_far >= 6:
            raise Stop

    with EmbeddingStore(cache_path) as store:
        with pytest.raises(Stop):
            embed_folder(folder, embedder, store, batch_size=3, workers=0, on_batch=stop_after_two_batches)
        assert store.count_embeddings(embedder.model_id) == 6
        resumed = embed_folder(folder, embedder, store, batch_size=3, workers=0)
    assert resumed.counts["embedded"] == 4 and resumed.counts["from_cache"] == 6
    with EmbeddingStore(tmp_path / "fresh.sqlite") as fresh:
        uninterrupted = embed_folder(folder, embedder, fresh, workers=0).vectors
    # Other batch compositions change BLAS summation order: equal up to float32 rounding.
    np.testing.assert_allclose(resumed.vectors, uninterrupted, atol=1e-6)


def test_broken_files_are_listed_not_fatal(tmp_path, cache_path, embedder):
    folder = tmp_path / "imgs"
    write_images(folder, 3)
    good = (folder / "img_001.png").read_bytes()
    (folder / "empty.png").write_bytes(b"")
    (folder / "text.png").write_text("not an image")
    Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(folder / "cut.jpg", quality=95)
    (folder / "cut.jpg").write_bytes((folder / "cut.jpg").read_bytes()[:300])
    from test_io_files import png_declaring

    (folder / "huge.png").write_bytes(png_declaring(30_000, 30_000))
    (folder / "readme.md").write_text("hello")
    with EmbeddingStore(cache_path) as store:
        result = embed_folder(folder, embedder, store, workers=2, max_pixels=10_000_000)
    assert len(result.keys) == 3 and (folder / "img_001.png").read_bytes() == good
    reasons = {s.key: s.reason for s in result.skipped}
    assert reasons == {
        "empty.png": sources.EMPTY,
        "text.png": sources.NOT_AN_IMAGE,
        "cut.jpg": sources.TRUNCATED,
        "huge.png": sources.TOO_MANY_PIXELS,
        "readme.md": sources.NOT_IMAGE_EXTENSION,
    }
    assert result.counts["unreadable"] == 4 and result.counts["skipped_not_image_extension"] == 1


def test_local_checkpoint_file_is_loaded(tmp_path, cache_path, tiny_config):
    open_clip.add_model_config(tiny_config)
    torch.manual_seed(123)
    trained = open_clip.create_model("tiny-clip-test")
    checkpoint = tmp_path / "tiny.pt"
    torch.save(trained.state_dict(), checkpoint)
    folder = tmp_path / "imgs"
    write_images(folder, 4)

    embedder = load_embedder(tiny_config, str(checkpoint), device="cpu")
    assert embedder.identity["weights"]["file_sha256"]
    with EmbeddingStore(cache_path) as store:
        result = embed_folder(folder, embedder, store, workers=0)
    preprocess = embedder.preprocess
    for key, vector in zip(result.keys, result.vectors):
        np.testing.assert_allclose(vector, direct_embedding(trained.eval(), preprocess, folder / key), atol=1e-5)

    random_embedder = load_embedder(tiny_config, "random", device="cpu")
    assert random_embedder.model_id != embedder.model_id
    with EmbeddingStore(cache_path) as store:
        other = embed_folder(folder, random_embedder, store, workers=0)
    assert other.counts["embedded"] == 4  # another model's vectors are never reused
    assert not np.allclose(other.vectors, result.vectors)


def test_resolution_is_remembered_and_invalidated(tmp_path, cache_path, tiny_config):
    open_clip.add_model_config(tiny_config)
    checkpoint = tmp_path / "tiny.pt"
    torch.save(open_clip.create_model("tiny-clip-test").state_dict(), checkpoint)
    with EmbeddingStore(cache_path) as store:
        first = load_embedder(tiny_config, str(checkpoint), device="cpu", store=store)
        again = load_embedder(tiny_config, str(checkpoint), device="cpu", store=store)
        assert again.spec == first.spec
        torch.manual_seed(7)
        torch.save(open_clip.create_model("tiny-clip-test").state_dict(), checkpoint)  # new weights, same path
        os.utime(checkpoint, ns=(time.time_ns(), time.time_ns() + 10**9))
        changed = load_embedder(tiny_config, str(checkpoint), device="cpu", store=store)
    assert changed.model_id != first.model_id


def test_unknown_tag_and_offline_tag_fail_fast_naming_options(monkeypatch, tmp_path):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-hf-cache"))
    start = time.monotonic()
    with pytest.raises(WeightsUnavailable) as info:
        load_embedder("ViT-B-32", "laion2b_s34b_b79k", allow_download=False)
    assert time.monotonic() - start < 5
    message = str(info.value)
    assert "--pretrained" in message and "Hugging Face cache" in message
    with pytest.raises(WeightsUnavailable, match="Known tags"):
        load_embedder("ViT-B-32", "no-such-tag")


def test_weights_found_in_hugging_face_cache(monkeypatch, tmp_path):
    """A tag's weights are taken from the HF cache layout without any network access."""
    cache = tmp_path / "hf"
    snapshot = cache / "models--some-org--tiny-clip" / "snapshots" / ("a" * 40)
    snapshot.mkdir(parents=True)
    (snapshot / "open_clip_pytorch_model.bin").write_bytes(b"weights")
    (cache / "models--some-org--tiny-clip" / "refs").mkdir()
    (cache / "models--some-org--tiny-clip" / "refs" / "main").write_text("a" * 40)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    found = _find_tag_weights("tiny", "tag", {"hf_hub": "some-org/tiny-clip/"}, allow_download=False)
    assert found == str(snapshot / "open_clip_pytorch_model.bin")
