"""Every input kind gives the same embeddings for the same content, and says which kind it was."""

from __future__ import annotations

import io
import json
import tarfile

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from audit.cli import main
from audit.io import EmbedOptions, detect_kind, load_side
from conftest import write_images


@pytest.fixture()
def images(tmp_path):
    folder = tmp_path / "imgs"
    keys = write_images(folder, 30, size=(32, 28))
    return folder, keys


def shards_of(folder, keys, out, per_shard=12):
    """The images as WebDataset shards (members named like img2dataset's, sidecar .json beside)."""
    out.mkdir()
    for s in range(0, len(keys), per_shard):
        with tarfile.open(out / f"{s // per_shard:05d}.tar", "w") as tar:
            for key in keys[s:s + per_shard]:
                tar.add(folder / key, arcname=key)
                info = tarfile.TarInfo(key + ".json")
                payload = json.dumps({"key": key}).encode()
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
    return out


def options(tmp_path, tiny_config) -> EmbedOptions:
    return EmbedOptions(model=tiny_config, pretrained="random", workers=0, cache=str(tmp_path / "c.sqlite"),
                        progress=False)


def by_content(side) -> dict[bytes, np.ndarray]:
    return {v.tobytes(): v for v in side.embeddings.vectors}


def test_folder_shards_and_path_list_give_bit_identical_vectors(tmp_path, images, tiny_config):
    folder, keys = images
    shards = shards_of(folder, keys, tmp_path / "shards")
    listing = tmp_path / "list.txt"
    listing.write_text("".join(f"imgs/{k}\n" for k in keys))
    shared: dict = {}
    from_folder = load_side(folder, options(tmp_path, tiny_config), shared)
    # A fresh cache for each of the others: their vectors must come from the model, not the folder's rows.
    (tmp_path / "fresh").mkdir()
    (tmp_path / "fresh2").mkdir()
    from_shards = load_side(shards, options(tmp_path / "fresh", tiny_config), shared)
    from_list = load_side(listing, options(tmp_path / "fresh2", tiny_config), shared)
    assert (from_folder.kind, from_shards.kind, from_list.kind) == ("images", "webdataset", "path_list")
    assert from_shards.counts["embedded"] == 30 and from_list.counts["embedded"] == 30
    folder_vectors = dict(zip(from_folder.embeddings.keys, from_folder.embeddings.vectors))
    for key, vector in zip(from_shards.embeddings.keys, from_shards.embeddings.vectors):
        shard, member = key.split("/", 1)
        assert shard.endswith(".tar")
        np.testing.assert_array_equal(vector, folder_vectors[member])
    for key, vector in zip(from_list.embeddings.keys, from_list.embeddings.vectors):
        np.testing.assert_array_equal(vector, folder_vectors[key.removeprefix("imgs/")])
    assert sorted(s.reason for s in from_shards.skipped) == ["not_image_extension"] * 30  # the sidecars


def test_brace_pattern_and_second_run_uses_the_fast_path(tmp_path, images, tiny_config):
    folder, keys = images
    shards = shards_of(folder, keys, tmp_path / "shards")
    opts = options(tmp_path, tiny_config)
    pattern = f"{shards}/{{00000..00002}}.tar"
    assert detect_kind(pattern, opts) == "webdataset"
    first = load_side(pattern, opts, {})
    second = load_side(pattern, opts, {})
    assert len(first.embeddings.keys) == 30
    assert second.counts["from_cache_fast_path"] == 30 and second.counts["embedded"] == 0
    np.testing.assert_array_equal(first.embeddings.vectors, second.embeddings.vectors)


def test_parquet_embedding_table_equals_the_npy(tmp_path):
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(50, 12)).astype(np.float32)
    np.save(tmp_path / "v.npy", vectors)
    keys = [f"https://example.org/{i}.jpg" for i in range(50)]
    table = pa.table({"url": keys, "embedding": pa.array(list(vectors), pa.list_(pa.float32(), 12))})
    pq.write_table(table, tmp_path / "t.parquet", row_group_size=16)
    folder = tmp_path / "parts"
    folder.mkdir()
    pq.write_table(table.slice(0, 20), folder / "a.parquet")
    pq.write_table(table.slice(20), folder / "b.parquet")
    opts = EmbedOptions()
    for source in (tmp_path / "t.parquet", folder):
        side = load_side(source, opts, {})
        assert side.kind == "parquet" and side.embeddings.keys == keys
        np.testing.assert_array_equal(side.embeddings.vectors, vectors)
    renamed = table.rename_columns(["url", "clip"])
    pq.write_table(renamed, tmp_path / "c.parquet")
    side = load_side(tmp_path / "c.parquet", EmbedOptions(embedding_column="clip"), {})
    np.testing.assert_array_equal(side.embeddings.vectors, vectors)


def test_scan_of_shards_reports_the_kind_and_shows_thumbnails(tmp_path, images):
    folder, keys = images
    shards = shards_of(folder, keys, tmp_path / "shards")
    ref = tmp_path / "ref"
    write_images(ref, 60, seed=5, size=(32, 28))
    out = tmp_path / "report"
    result = CliRunner().invoke(main, ["scan", str(ref), str(shards), "--model", "pixels", "--cache",
                                       str(tmp_path / "c.sqlite"), "--workers", "0", "-q", "--out", str(out),
                                       "--fail-on", "never"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["inputs"]["candidate"]["kind"] == "webdataset"
    assert report["inputs"]["reference"]["kind"] == "images"
    assert report["gallery"] and all(item["thumbnail"] for item in report["gallery"])


def test_declared_model_is_recorded_and_checked_against_a_manifest(tmp_path):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "a.npy", rng.normal(size=(30, 8)).astype(np.float32))
    side = load_side(tmp_path / "a.npy", EmbedOptions(embedding_model=("ViT-B-32",)), {})
    assert side.embeddings.model_identity == {"name": "ViT-B-32", "declared": True}
    folder = tmp_path / "emb"
    (folder / "img_emb").mkdir(parents=True)
    np.save(folder / "img_emb" / "img_emb_0.npy", rng.normal(size=(30, 8)).astype(np.float32))
    (folder / "madaudit.json").write_text(json.dumps({"model": {"architecture": {"name": "ViT-L-14"}}}))
    from audit.io import InputProblem

    with pytest.raises(InputProblem, match="ViT-L-14"):
        load_side(folder, EmbedOptions(embedding_model=("ViT-B-32",)), {})


def test_model_mismatch_names_what_differs():
    import numpy as np

    from audit.io import EmbeddingSet, InputProblem, check_compatible

    v = np.zeros((3, 4), np.float32)
    a = EmbeddingSet(["a", "b", "c"], v, {"model": "ViT-B-32", "pretrained": "openai", "preprocess": "x"}, "ref")
    b = EmbeddingSet(["a", "b", "c"], v, {"model": "ViT-B-32", "pretrained": "random", "preprocess": "x"}, "cand")
    try:
        check_compatible(a, b)
    except InputProblem as exc:
        assert "pretrained: 'openai' vs 'random'" in str(exc) and "model:" not in str(exc)
    else:
        raise AssertionError("different weights were accepted")
