"""A corpus of hostile inputs and faults, each run through the command that reads it.

Every case asserts the outcome, never only "no crash": a listed skip with its reason code and the
good items still there, or exit 2 (usage/config) / 3 (input/runtime) with a message naming the
file and the problem. Nothing may hang (FIFOs, /dev/zero), exit 1 (which CI reads as "a gate
failed") or exit 4 (a bug).
"""

from __future__ import annotations

import csv
import io
import json
import os
import struct
import tarfile
import time
import zlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from PIL import Image

from audit.cli import main
from audit.io import files
from conftest import write_images

# ---------------------------------------------------------------------------------------------
# helpers


def run(*args: str, env: dict | None = None):
    return CliRunner().invoke(main, [str(a) for a in args], env=env, catch_exceptions=False)


def png(seed: int = 0, size=(24, 20)) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def good_folder(path: Path, n: int = 4) -> Path:
    write_images(path, n, size=(24, 20))
    return path


def embed_pixels(folder: Path, tmp_path: Path, *extra: str):
    """`madaudit embed FOLDER --model pixels`: the result, and skipped.csv as {key: reason}."""
    out = tmp_path / "out"
    result = run("embed", folder, "--out", out, "--model", "pixels", "--cache", tmp_path / "c.sqlite",
                 "--workers", "0", "-q", *extra)
    skipped = {}
    if (out / "skipped.csv").is_file():
        with open(out / "skipped.csv", newline="", encoding="utf-8") as fh:
            skipped = {row["key"]: row["reason"] for row in csv.DictReader(fh)}
    return result, skipped, out


def keys_of(out: Path) -> list[str]:
    return pq.read_table(out / "metadata" / "metadata_0.parquet").column("key").to_pylist()


def assert_refused(result, code: int, *words: str) -> None:
    assert result.exit_code == code, (result.exit_code, result.output)
    text = result.output.lower()
    for word in words:
        assert word.lower() in text, (word, result.output)
    assert "traceback" not in text


def save_npy(path: Path, array) -> Path:
    np.save(path, array, allow_pickle=isinstance(array, np.ndarray) and array.dtype == object)
    return path


def vectors(n=40, d=8, seed=0) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


# ---------------------------------------------------------------------------------------------
# image folders: special files, odd images, odd folders and names (embed --model pixels)


def _fifo(folder: Path):
    os.mkfifo(folder / "x.png")
    return "x.png", files.NOT_REGULAR_FILE


def _dev_zero(folder: Path):
    (folder / "zero.png").symlink_to("/dev/zero")
    return "zero.png", files.SYMLINK_OUTSIDE_ROOT


def _dev_zero_inside(folder: Path):  # a device reached without leaving the root: not a regular file
    os.mknod(folder / "dev.png", 0o600 | 0o020000, os.makedev(1, 5))
    return "dev.png", files.NOT_REGULAR_FILE


def _symlink_out(folder: Path):
    outside = folder.parent / "secret.png"
    outside.write_bytes(png(9))
    (folder / "leak.png").symlink_to(outside)
    return "leak.png", files.SYMLINK_OUTSIDE_ROOT


def _symlink_dir_out(folder: Path):
    (folder.parent / "elsewhere").mkdir()
    (folder.parent / "elsewhere" / "a.png").write_bytes(png(8))
    (folder / "linked").symlink_to(folder.parent / "elsewhere")
    return "linked/", files.SYMLINK_OUTSIDE_ROOT


def _symlink_loop(folder: Path):
    (folder / "loop").symlink_to(folder)
    return "loop/", files.SYMLINK_LOOP


def _broken_symlink(folder: Path):
    (folder / "gone.png").symlink_to(folder / "nothing-here.png")
    return "gone.png", files.MISSING


def _too_large(folder: Path):
    (folder / "big.png").write_bytes(png(3, (200, 200)) + b"\0" * 40_000)
    return "big.png", files.TOO_LARGE


def _empty(folder: Path):
    (folder / "empty.png").write_bytes(b"")
    return "empty.png", files.EMPTY


def _text_named_png(folder: Path):
    (folder / "text.png").write_text("not an image\n")
    return "text.png", files.NOT_AN_IMAGE


def _truncated(folder: Path):
    buf = io.BytesIO()
    Image.fromarray(np.full((64, 64, 3), 100, np.uint8)).save(buf, format="JPEG", quality=95)
    (folder / "cut.jpg").write_bytes(buf.getvalue()[:300])
    return "cut.jpg", files.TRUNCATED


def _bomb(folder: Path):
    data = bytearray(png(0, (8, 6)))
    ihdr = struct.pack(">II", 30_000, 30_000) + bytes(data[24:29])
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr) & 0xFFFFFFFF)
    (folder / "bomb.png").write_bytes(bytes(data))
    return "bomb.png", files.TOO_MANY_PIXELS


def _hidden(folder: Path):
    (folder / ".secret.png").write_bytes(png(5))
    return ".secret.png", files.HIDDEN


def _not_image_extension(folder: Path):
    (folder / "notes.md").write_text("hello")
    return "notes.md", files.NOT_IMAGE_EXTENSION


def _garbage_bytes(folder: Path):
    (folder / "noise.webp").write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    return "noise.webp", files.NOT_AN_IMAGE


FOLDER_CASES = {f.__name__[1:]: f for f in (_fifo, _dev_zero, _dev_zero_inside, _symlink_out, _symlink_dir_out,
                                              _symlink_loop, _broken_symlink, _too_large, _empty, _text_named_png,
                                              _truncated, _bomb, _hidden, _not_image_extension, _garbage_bytes)}


@pytest.mark.parametrize("case", sorted(FOLDER_CASES))
def test_hostile_file_in_image_folder_is_listed_with_its_reason(case, tmp_path):
    folder = good_folder(tmp_path / "imgs")
    key, reason = FOLDER_CASES[case](folder)
    result, skipped, out = embed_pixels(folder, tmp_path, "--max-file-mb", "0.03")
    assert result.exit_code == 0, result.output
    assert skipped.get(key) == reason, skipped
    assert len(keys_of(out)) == 4  # the good images are all there


def test_non_utf8_file_name_is_embedded_under_an_escaped_key(tmp_path):
    folder = good_folder(tmp_path / "imgs")
    with open(os.fsencode(folder) + b"/caf\xe9.png", "wb") as fh:  # Latin-1 bytes, not UTF-8
        fh.write(png(7))
    result, skipped, out = embed_pixels(folder, tmp_path)
    assert result.exit_code == 0, result.output
    assert "caf\\xe9.png" in keys_of(out) and len(keys_of(out)) == 5


def test_very_deep_folders_are_walked_without_recursion(tmp_path):
    folder = good_folder(tmp_path / "imgs")
    deep = folder
    for _ in range(1200):
        deep = deep / "d"
        deep.mkdir()
    (deep / "deep.png").write_bytes(png(4))
    try:
        result, _, out = embed_pixels(folder, tmp_path)
        assert result.exit_code == 0, result.output
        assert "d/" * 1200 + "deep.png" in keys_of(out)
    finally:  # shutil.rmtree (pytest's clean-up) recurses once a level: remove the levels bottom-up
        (deep / "deep.png").unlink()
        while deep != folder:
            deep.rmdir()
            deep = deep.parent


def test_folder_that_cannot_be_listed_is_counted_unreadable(tmp_path, monkeypatch):
    folder = good_folder(tmp_path / "imgs")
    (folder / "locked").mkdir()
    real_scandir = os.scandir

    def scandir(path):  # as root, chmod cannot make a folder unreadable: simulate EACCES
        if os.fsdecode(path).endswith("locked"):
            raise PermissionError(13, "Permission denied")
        return real_scandir(path)

    monkeypatch.setattr(files.os, "scandir", scandir)
    scan = files.scan_folder(folder)
    assert [(s.key, s.reason) for s in scan.skipped] == [("locked/", files.UNREADABLE_FOLDER)]
    assert files.UNREADABLE_FOLDER in files.UNREADABLE_REASONS


def _swap_for_fifo(path: str) -> str:
    os.unlink(path)
    os.mkfifo(path)
    return files.NOT_REGULAR_FILE  # refused without blocking on the FIFO


def _grow_past_cap(path: str) -> str:
    Path(path).write_bytes(b"\0" * (3 << 20))
    return files.TOO_LARGE  # refused, not read whole


def _vanish(path: str) -> str:
    os.unlink(path)
    return files.MISSING


@pytest.mark.parametrize("change", [_swap_for_fifo, _grow_past_cap, _vanish], ids=lambda f: f.__name__[1:])
def test_item_changed_after_listing_is_refused_at_read_time(change, tmp_path):
    folder = good_folder(tmp_path / "imgs")
    item = files.scan_folder(folder).files[0]
    reason = change(item.path)
    with pytest.raises(files.DecodeFailure) as err:
        files.read_item(item, 1 << 20)
    assert err.value.reason == reason


def test_sixteen_bit_png_is_scaled_not_clipped():
    rng = np.random.default_rng(0)
    eight = rng.integers(0, 256, size=(16, 16), dtype=np.uint16)
    buf = io.BytesIO()
    sixteen = Image.fromarray((eight * 257).astype(np.uint16))
    assert sixteen.mode.startswith("I;16")
    sixteen.save(buf, format="PNG")
    decoded = np.asarray(files.decode_image(buf.getvalue()).convert("L"), dtype=int)
    np.testing.assert_array_equal(decoded, eight)  # 16-bit v*257 is 8-bit v


def test_exif_orientation_is_applied():
    img = Image.new("RGB", (40, 20), (200, 10, 10))
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    buf = io.BytesIO()
    img.save(buf, format="JPEG", exif=exif)
    assert files.decode_image(buf.getvalue()).size == (20, 40)


def test_decompression_bomb_warning_is_an_error():
    big = Image.new("1", (10_000, 10_000))  # 100 Mpx: above PIL's warning limit (89 Mpx), below its error
    buf = io.BytesIO()
    big.save(buf, format="PNG")
    with pytest.raises(files.DecodeFailure) as err:
        files.decode_image(buf.getvalue(), max_pixels=10**9)
    assert err.value.reason == files.TOO_MANY_PIXELS


# ---------------------------------------------------------------------------------------------
# .npy embedding files (metrics): exit 3 naming the file and the problem


def _npy_object(d: Path):
    return save_npy(d / "obj.npy", np.array([{"a": 1}, None], dtype=object)), "python objects"


def _npy_1d(d: Path):
    return save_npy(d / "flat.npy", np.zeros(10, np.float32)), "2-d"


def _npy_text(d: Path):
    (d / "text.npy").write_text("0.1 0.2\n0.3 0.4\n")
    return d / "text.npy", "not a numpy .npy file"


def _npy_huge_header(d: Path):
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': (1000000000000, 512), }".ljust(117) + "\n"
    path = d / "huge.npy"
    path.write_bytes(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + b"\0" * 4096)
    return path, "header declares"


def _npy_nan(d: Path):
    v = vectors()
    v[17, 3] = np.nan
    return save_npy(d / "nan.npy", v), "row 17"


def _npy_inf(d: Path):
    v = vectors()
    v[5, 0] = np.inf
    return save_npy(d / "inf.npy", v), "infinite"


def _npy_overflow(d: Path):
    v = vectors()
    v[2] = 1e20
    return save_npy(d / "big.npy", v), "beyond"


def _npy_strings(d: Path):
    return save_npy(d / "str.npy", np.array([["a", "b"], ["c", "d"]])), "not a real number type"


def _npy_truncated(d: Path):
    path = save_npy(d / "cut.npy", vectors())
    path.write_bytes(path.read_bytes()[:-100])
    return path, "truncated"


def _npy_fifo(d: Path):
    os.mkfifo(d / "fifo.npy")
    return d / "fifo.npy", "not a regular file"


NPY_CASES = {f.__name__[1:]: f for f in (_npy_object, _npy_1d, _npy_text, _npy_huge_header, _npy_nan, _npy_inf,
                                           _npy_overflow, _npy_strings, _npy_truncated, _npy_fifo)}


@pytest.mark.parametrize("case", sorted(NPY_CASES))
@pytest.mark.parametrize("command", ["metrics", "scan"])
def test_bad_npy_is_exit_3_naming_the_file(case, command, tmp_path):
    good = save_npy(tmp_path / "good.npy", vectors())
    bad, words = NPY_CASES[case](tmp_path)
    extra = ["--out", tmp_path / "report"] if command == "scan" else []
    result = run(command, good, bad, *extra)
    assert_refused(result, 3, bad.name, words)


def test_huge_header_allocates_nothing(tmp_path):
    import resource

    path, _ = _npy_huge_header(tmp_path)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(ValueError):
        from audit.io.arrays import load_matrix

        load_matrix(path)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 100_000  # KiB


# ---------------------------------------------------------------------------------------------
# embedding folders (clip-retrieval layout)


def write_parts(folder: Path, parts: list[np.ndarray], metadata: bool = True, dtype=np.float16) -> Path:
    (folder / "img_emb").mkdir(parents=True)
    (folder / "metadata").mkdir()
    start = 0
    for i, part in enumerate(parts):
        np.save(folder / "img_emb" / f"img_emb_{i}.npy", part.astype(dtype))
        if metadata:
            keys = [f"shard{i}/{start + j:06d}.jpg" for j in range(len(part))]
            pq.write_table(pa.table({"image_path": keys}), folder / "metadata" / f"metadata_{i}.parquet")
        start += len(part)
    return folder


def test_every_part_of_a_clip_retrieval_folder_is_read_in_order(tmp_path):
    from audit.io import EmbedOptions, load_side

    parts = [vectors(100, 16, seed=i) for i in range(3)]
    folder = write_parts(tmp_path / "cr", parts)
    side = load_side(folder, EmbedOptions(), {})
    assert side.kind == "embedding_folder" and len(side.embeddings.keys) == 300
    np.testing.assert_allclose(side.embeddings.vectors, np.concatenate(parts).astype(np.float16), atol=0)
    assert side.embeddings.keys[:2] == ["shard0/000000.jpg", "shard0/000001.jpg"]
    assert side.embeddings.keys[-1] == "shard2/000299.jpg"
    # Eleven parts: part 10 comes after part 9, not after part 1.
    many = write_parts(tmp_path / "many", [vectors(3, 16, seed=i) for i in range(11)])
    keys = load_side(many, EmbedOptions(), {}).embeddings.keys
    assert keys[-1] == "shard10/000032.jpg" and keys[3] == "shard1/000003.jpg"


def _folder_gap(d: Path):
    folder = write_parts(d / "gap", [vectors(10, 8, i) for i in range(3)])
    (folder / "img_emb" / "img_emb_1.npy").unlink()
    return folder, "gap"


def _folder_row_mismatch(d: Path):
    folder = write_parts(d / "rows", [vectors(10, 8, i) for i in range(2)])
    pq.write_table(pa.table({"image_path": ["a"] * 7}), folder / "metadata" / "metadata_1.parquet")
    return folder, "metadata_1.parquet"


def _folder_missing_metadata(d: Path):
    folder = write_parts(d / "meta", [vectors(10, 8, i) for i in range(2)])
    (folder / "metadata" / "metadata_1.parquet").unlink()
    return folder, "metadata_1.parquet"


def _folder_bad_metadata(d: Path):
    folder = write_parts(d / "badmeta", [vectors(10, 8, 0)])
    (folder / "metadata" / "metadata_0.parquet").write_text("not parquet")
    return folder, "metadata_0.parquet"


def _folder_dims_differ(d: Path):
    folder = write_parts(d / "dims", [vectors(10, 8, 0)])
    np.save(folder / "img_emb" / "img_emb_1.npy", vectors(10, 4, 1))
    pq.write_table(pa.table({"image_path": ["x"] * 10}), folder / "metadata" / "metadata_1.parquet")
    return folder, "different dimensions"


def _folder_bad_manifest(d: Path):
    folder = write_parts(d / "manifest", [vectors(10, 8, 0)])
    (folder / "madaudit.json").write_text("{not json")
    return folder, "madaudit.json"


def _folder_bad_skipped(d: Path):
    folder = write_parts(d / "skipcsv", [vectors(10, 8, 0)])
    (folder / "skipped.csv").write_bytes(b"\xff\xfe garbage")
    return folder, "skipped.csv"


def _folder_nan_part(d: Path):
    bad = vectors(10, 8, 1)
    bad[4, 4] = np.nan
    folder = write_parts(d / "nanpart", [vectors(10, 8, 0), bad])
    return folder, "img_emb_1.npy"


FOLDER_BAD = {f.__name__[1:]: f for f in (_folder_gap, _folder_row_mismatch, _folder_missing_metadata,
                                            _folder_bad_metadata, _folder_dims_differ, _folder_bad_manifest,
                                            _folder_bad_skipped, _folder_nan_part)}


@pytest.mark.parametrize("case", sorted(FOLDER_BAD))
@pytest.mark.parametrize("command", ["metrics", "scan"])
def test_bad_embedding_folder_is_exit_3_naming_the_file(case, command, tmp_path):
    good = save_npy(tmp_path / "good.npy", vectors(40, 8))
    bad, words = FOLDER_BAD[case](tmp_path)
    extra = ["--out", tmp_path / "report"] if command == "scan" else []
    assert_refused(run(command, good, bad, *extra), 3, words)


def test_keys_from_metadata_never_reach_files_outside_the_source(tmp_path):
    from audit.io import EmbedOptions, load_side

    source = good_folder(tmp_path / "src")
    outside = tmp_path / "secret.png"
    outside.write_bytes(png(1))
    (source / "link.png").symlink_to(outside)
    folder = write_parts(tmp_path / "emb", [vectors(5, 8)], metadata=False)
    keys = ["img_001.png", "../secret.png", str(outside), "link.png", "sub/../../secret.png"]
    pq.write_table(pa.table({"key": keys}), folder / "metadata" / "metadata_0.parquet")
    (folder / "madaudit.json").write_text(json.dumps({"source": str(source)}))
    side = load_side(folder, EmbedOptions(), {})
    assert side.image_bytes("img_001.png") == (source / "img_001.png").read_bytes()
    assert [side.image_bytes(k) for k in keys[1:]] == [None] * 4


# ---------------------------------------------------------------------------------------------
# parquet tables with an embedding column


def _parquet_no_column(d: Path):
    pq.write_table(pa.table({"vec": [[0.1, 0.2]] * 5}), d / "t.parquet")
    return d / "t.parquet", "--embedding-column"


def _parquet_ragged(d: Path):
    pq.write_table(pa.table({"embedding": [[0.1, 0.2, 0.3]] * 4 + [[0.1]], "key": list("abcde")}), d / "r.parquet")
    return d / "r.parquet", "different embedding lengths"


def _parquet_null(d: Path):
    pq.write_table(pa.table({"embedding": [[0.1, 0.2]] * 4 + [None]}), d / "n.parquet")
    return d / "n.parquet", "null"


def _parquet_strings(d: Path):
    pq.write_table(pa.table({"embedding": [["a", "b"]] * 5}), d / "s.parquet")
    return d / "s.parquet", "not numbers"


def _parquet_garbage(d: Path):
    (d / "g.parquet").write_bytes(b"PAR1 this is not really parquet")
    return d / "g.parquet", "g.parquet"


PARQUET_BAD = {f.__name__[1:]: f for f in (_parquet_no_column, _parquet_ragged, _parquet_null, _parquet_strings,
                                             _parquet_garbage)}


@pytest.mark.parametrize("case", sorted(PARQUET_BAD))
def test_bad_parquet_is_exit_3_naming_the_problem(case, tmp_path):
    good = save_npy(tmp_path / "good.npy", vectors(40, 2))
    bad, words = PARQUET_BAD[case](tmp_path)
    assert_refused(run("metrics", good, bad), 3, words)


# ---------------------------------------------------------------------------------------------
# tar shards


def add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def good_shard(path: Path, n: int = 4, seed: int = 0) -> Path:
    with tarfile.open(path, "w") as tar:
        for i in range(n):
            add_member(tar, f"{i:05d}.png", png(seed * 100 + i))
            add_member(tar, f"{i:05d}.json", b"{}")
    return path


def _shard_not_tar(d: Path):
    (d / "00001.tar").write_bytes(b"this is not a tar file at all" * 40)
    return "00001.tar", files.UNREADABLE_SHARD


def _shard_symlink_member(d: Path):
    with tarfile.open(d / "00001.tar", "w") as tar:
        info = tarfile.TarInfo("evil.png")
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(info)
    return "00001.tar/evil.png", files.BAD_ARCHIVE_MEMBER


def _shard_truncated(d: Path):
    path = good_shard(d / "00001.tar", 3, seed=1)
    with tarfile.open(path) as tar:
        second = tar.getmember("00001.png")
    path.write_bytes(path.read_bytes()[:second.offset_data + 100])  # cut inside the second image
    return "00001.tar/00001.png", files.BAD_ARCHIVE_MEMBER


def _shard_gzip(d: Path):
    with tarfile.open(d / "00001.tar.gz", "w:gz") as tar:
        add_member(tar, "a.png", png(1))
    return "00001.tar.gz", files.UNREADABLE_SHARD


def _shard_bad_image(d: Path):
    with tarfile.open(d / "00001.tar", "w") as tar:
        add_member(tar, "broken.png", b"\x89PNG not really")
    return "00001.tar/broken.png", files.NOT_AN_IMAGE


SHARD_CASES = {f.__name__[1:]: f for f in (_shard_not_tar, _shard_symlink_member, _shard_truncated, _shard_gzip,
                                             _shard_bad_image)}


@pytest.mark.parametrize("case", sorted(SHARD_CASES))
def test_hostile_shard_is_listed_with_its_reason(case, tmp_path):
    shards = tmp_path / "shards"
    shards.mkdir()
    good_shard(shards / "00000.tar")
    key, reason = SHARD_CASES[case](shards)
    result, skipped, out = embed_pixels(shards, tmp_path)
    assert result.exit_code == 0, result.output
    assert skipped.get(key) == reason, skipped
    assert sum(k.startswith("00000.tar/") for k in keys_of(out)) == 4
    assert skipped["00000.tar/00000.json"] == files.NOT_IMAGE_EXTENSION


def test_missing_shard_in_a_brace_pattern_is_listed(tmp_path):
    shards = tmp_path / "shards"
    shards.mkdir()
    good_shard(shards / "00000.tar")
    good_shard(shards / "00002.tar", seed=2)
    result, skipped, out = embed_pixels(f"{shards}/{{00000..00002}}.tar", tmp_path)
    assert result.exit_code == 0, result.output
    assert skipped["00001.tar"] == files.MISSING and len(keys_of(out)) == 8


# ---------------------------------------------------------------------------------------------
# path lists


def test_path_list_lists_missing_and_special_entries(tmp_path):
    folder = good_folder(tmp_path / "imgs")
    os.mkfifo(folder / "pipe.png")
    listing = tmp_path / "list.txt"
    keys = sorted(str(p.relative_to(folder)) for p in folder.rglob("img_*.png"))
    listing.write_text("# images\n" + "".join(f"imgs/{k}\n" for k in keys[:3]) + "imgs/nope.png\nimgs/pipe.png\n"
                       + str(folder / keys[3]) + "\n")
    result, skipped, out = embed_pixels(listing, tmp_path)
    assert result.exit_code == 0, result.output
    assert skipped == {"imgs/nope.png": files.MISSING, "imgs/pipe.png": files.NOT_REGULAR_FILE}
    assert len(keys_of(out)) == 4


@pytest.mark.parametrize("content, words", [(b"", "empty"), (b"\xff\xfe\xfa not utf-8\n", "utf-8")])
def test_bad_path_list_is_exit_3(content, words, tmp_path):
    (tmp_path / "list.txt").write_bytes(content)
    result, _, _ = embed_pixels(tmp_path / "list.txt", tmp_path)
    assert_refused(result, 3, "list.txt", words)


# ---------------------------------------------------------------------------------------------
# detector files: exit 2 naming the file (fraction, scan and project --detector)


@pytest.fixture(scope="module")
def trained_detector(tmp_path_factory) -> Path:
    from detectors.probe import SupervisedProbe

    rng = np.random.default_rng(0)
    real = rng.normal(size=(120, 6)).astype(np.float32)
    synthetic = (rng.normal(size=(120, 6)) * 0.5 + 0.8).astype(np.float32)
    path = tmp_path_factory.mktemp("det") / "detector.json"
    SupervisedProbe.fit(real, synthetic, None, seed=0).save(path)
    return path


def tamper_arrays(path: Path, change) -> None:
    """Rewrite the detector's .npz with `change(arrays)` applied and its sha256 updated."""
    import hashlib

    meta = json.loads(path.read_text())
    npz = path.with_name(meta["arrays"]["file"])
    with np.load(npz) as f:
        arrays = {k: f[k] for k in f.files}
    change(arrays)
    with open(npz, "wb") as fh:
        np.savez(fh, **arrays)
    meta["arrays"]["sha256"] = hashlib.sha256(npz.read_bytes()).hexdigest()
    path.write_text(json.dumps(meta))


def _det_not_json(p: Path):
    p.write_text("{nope")
    return "not a valid madaudit detector"


def _det_deep_nesting(p: Path):
    p.write_text("[" * 100_000 + "]" * 100_000)
    return "nested"


def _det_fifo(p: Path):
    p.unlink()
    os.mkfifo(p)
    return "not a regular file"


def _det_nan_weights(p: Path):
    tamper_arrays(p, lambda a: a["coefs"].__setitem__((0, 0), np.nan))
    return "finite"


def _det_inf_intercept(p: Path):
    tamper_arrays(p, lambda a: a["intercepts"].__setitem__(0, np.inf))
    return "finite"


def _det_zero_scale(p: Path):
    tamper_arrays(p, lambda a: a["scales"].__setitem__((0, 0), 0.0))
    return "scales must be positive"


def _det_empty_arrays(p: Path):
    tamper_arrays(p, lambda a: a.update(intercepts=np.zeros(0)))
    return "inconsistent"


def _det_object_arrays(p: Path):
    meta = json.loads(p.read_text())
    npz = p.with_name(meta["arrays"]["file"])
    with open(npz, "wb") as fh:
        np.savez(fh, coefs=np.array([None, {}], dtype=object))
    import hashlib

    meta["arrays"]["sha256"] = hashlib.sha256(npz.read_bytes()).hexdigest()
    p.write_text(json.dumps(meta))
    return "not a detector's arrays"


def _det_huge_k(p: Path):
    meta = json.loads(p.read_text())
    meta["k"] = 10**9
    p.write_text(json.dumps(meta))
    return "k must be"


def _det_null_arrays(p: Path):
    meta = json.loads(p.read_text())
    meta["arrays"] = None
    p.write_text(json.dumps(meta))
    return "arrays"


def _det_list_intercept(p: Path):  # the old linear format's fields: refused as another format
    p.write_text(json.dumps({"format": "madaudit-detector/1", "intercept": [1, 2], "weights": None}))
    return "retrain"


def _det_arrays_escape(p: Path):
    meta = json.loads(p.read_text())
    meta["arrays"]["file"] = ".."
    p.write_text(json.dumps(meta))
    return "arrays"


def _det_tampered_npz(p: Path):
    meta = json.loads(p.read_text())
    p.with_name(meta["arrays"]["file"]).write_bytes(b"PK not a zip")
    return "sha256"


DETECTOR_BAD = {f.__name__[1:]: f for f in (_det_not_json, _det_deep_nesting, _det_fifo, _det_nan_weights,
                                              _det_inf_intercept, _det_zero_scale, _det_empty_arrays,
                                              _det_object_arrays, _det_huge_k, _det_null_arrays, _det_list_intercept,
                                              _det_arrays_escape, _det_tampered_npz)}


@pytest.mark.parametrize("case", sorted(DETECTOR_BAD))
@pytest.mark.parametrize("command", ["fraction", "scan", "project"])
def test_bad_detector_file_is_exit_2_naming_it(case, command, tmp_path, trained_detector):
    import shutil

    det = tmp_path / "detector.json"
    shutil.copy(trained_detector, det)
    shutil.copy(trained_detector.with_suffix(".npz"), tmp_path / "detector.npz")
    words = DETECTOR_BAD[case](det)
    ref = save_npy(tmp_path / "ref.npy", vectors(60, 6))
    cand = save_npy(tmp_path / "cand.npy", vectors(60, 6, seed=1))
    extra = {"scan": ["--out", tmp_path / "r"], "project": ["--generations", "2", "--runs", "2"],
             "fraction": []}[command]
    assert_refused(run(command, ref, cand, "--detector", det, *extra), 2, "detector", words)


def test_project_detector_without_candidate_is_a_usage_error(tmp_path, trained_detector):
    ref = save_npy(tmp_path / "ref.npy", vectors(60, 6))
    assert_refused(run("project", ref, "--detector", trained_detector), 2, "--detector needs candidate")


# ---------------------------------------------------------------------------------------------
# policy files and limits: exit 2


@pytest.mark.parametrize("content, words", [
    (b"[gates]\nprecision = { min = 0.9 }\n# caf\xe9\n", "utf-8"),
    (b"[gates]\nprecision = { min = " + b"9" * 400 + b" }\n", "finite number"),
    (b"[forecast]\nruns = 1000000000\n", "runs"),
    (b"[forecast]\ngenerations = 100000000\n", "generations"),
    (b"[forecast]\ngenerations = 1000\nruns = 1000\n", "runs x generations"),
    (b"[gates]\nprecison = { min = 0.9 }\n", "unknown metric"),
    (b"[gates\n", "not valid toml"),
])
def test_bad_policy_is_exit_2_naming_the_file(content, words, tmp_path):
    (tmp_path / "madaudit.toml").write_bytes(content)
    assert_refused(run("policy", "--config", tmp_path / "madaudit.toml"), 2, "madaudit.toml", words)


def test_policy_fifo_does_not_hang(tmp_path):
    os.mkfifo(tmp_path / "madaudit.toml")
    assert_refused(run("policy", "--config", tmp_path / "madaudit.toml"), 2, "not a regular file")


@pytest.mark.parametrize("args, words", [
    (["--generations", "100000"], "generations"),
    (["--runs", "100000000"], "runs"),
    (["--generations", "1000", "--runs", "1000"], "runs x generations"),
    (["--dim", "100000"], "dim"),
])
def test_forecast_limits_are_checked_at_the_edge(args, words, tmp_path):
    ref = save_npy(tmp_path / "ref.npy", vectors(60, 6))
    assert_refused(run("project", ref, *args), 2, words)


def test_k_limit(tmp_path):
    ref = save_npy(tmp_path / "ref.npy", vectors(60, 6))
    assert_refused(run("metrics", ref, ref, "--k", "1000000"), 2, "--k")


def test_nan_in_project_inputs_is_named(tmp_path):
    v = vectors(60, 6)
    v[33, 1] = np.inf
    bad = save_npy(tmp_path / "ref.npy", v)
    assert_refused(run("project", bad), 3, "ref.npy", "row 33")


# ---------------------------------------------------------------------------------------------
# reports: tampered report.json, escaping, writing


@pytest.fixture(scope="module")
def report_json(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("scan")
    rng = np.random.default_rng(0)
    np.save(out / "ref.npy", rng.normal(size=(150, 8)).astype(np.float32))
    np.save(out / "cand.npy", rng.normal(size=(150, 8)).astype(np.float32))
    result = CliRunner().invoke(main, ["scan", str(out / "ref.npy"), str(out / "cand.npy"), "--out", str(out / "r"),
                                       "--fail-on", "never"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return out / "r" / "report.json"


def tampered(report_json: Path, tmp_path: Path, change) -> Path:
    data = json.loads(report_json.read_text())
    change(data)
    path = tmp_path / "report.json"
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize("change, words", [
    (lambda d: d.pop("gates"), "gates"),
    (lambda d: d["gates"][0].update(threshold="0.9"), "threshold"),
    (lambda d: d.update(verdict="<img src=x onerror=alert(1)>"), "verdict"),
    (lambda d: d["gates"][0].update(severity="<b onmouseover=alert(1)>"), "severity"),
    (lambda d: d["inputs"]["candidate"].update(items="<script>alert(1)</script>"), "items"),
    (lambda d: d["gallery"].append({"key": "x", "thumbnail": "javascript:alert(1)"}), "thumbnail"),
    (lambda d: d["gallery"].append({"key": "x", "thumbnail": None, "score": "<script>"}), "gallery"),
    (lambda d: d["forecast"].update(loop="<script>"), "loop"),
])
@pytest.mark.parametrize("fmt", ["html", "md"])
def test_tampered_report_is_refused_before_rendering(change, words, fmt, report_json, tmp_path):
    path = tampered(report_json, tmp_path, change)
    assert_refused(run("report", path, "--format", fmt), 3, "report.json", words)


def test_schema_valid_strings_are_escaped_everywhere(report_json, tmp_path):
    evil = "<script>alert(1)</script><img src=x onerror=alert(2)>\n## madaudit: PASS\x00\x1b[31m"

    def change(d):
        d["inputs"]["candidate"]["path"] = evil
        d["gates"][0]["message"] = evil
        d["gates"][0]["metric"] = evil
        d["synthetic_fraction"]["warnings"].append(evil)
        d["gallery"].append({"key": evil, "thumbnail": None})
        d["metrics"]["precision"]["method"] = evil

    path = tampered(report_json, tmp_path, change)
    html = run("report", path, "--format", "html", "-o", "-").output
    assert "<script" not in html and "onerror=" not in html.replace("onerror=alert(2)&gt;", "")
    assert "<img" not in html and "\x00" not in html and "\x1b" not in html
    md = run("report", path, "--format", "md", "-o", "-").output
    assert [line for line in md.splitlines() if line.startswith("## ")] == [md.splitlines()[0]]
    import re

    assert not re.search(r"(?<!\\)<(script|img)", md)
    junit = run("report", path, "--format", "junit", "-o", "-").output
    import xml.etree.ElementTree as ET

    ET.fromstring(junit.split("\n", 1)[1])  # parses: control characters were removed


def test_report_into_a_missing_folder_is_exit_3(report_json, tmp_path):
    assert_refused(run("report", report_json, "-o", tmp_path / "no" / "such" / "r.html"), 3, "no such file")


def test_from_report_with_missing_or_bad_inputs_is_exit_3(report_json, tmp_path):
    ref = save_npy(tmp_path / "ref.npy", vectors(60, 8))
    for change, words in [(lambda d: d["forecast"]["measured_inputs"].pop("lam", None), "lam"),
                          (lambda d: d["forecast"]["measured_inputs"].update(n="many", lam=0.5, real_fraction=0.5),
                           "n"),
                          (lambda d: d["forecast"]["measured_inputs"].update(
                              synthetic_scores={"relative_recall": "x", "relative_recall_interval": [0.1, 0.2]}),
                           "synthetic_scores")]:
        path = tampered(report_json, tmp_path, change)
        assert_refused(run("project", ref, "--from-report", path, "--generations", "2", "--runs", "2"), 3, words)


def test_full_disk_leaves_the_old_report_and_no_temporary_file(report_json, tmp_path, monkeypatch):
    import errno

    from audit import report as report_module
    from audit.io import atomic

    data = json.loads(report_json.read_text())
    report_module.write_reports(data, tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic.os, "fsync", full)
    with pytest.raises(OSError):
        report_module.write_reports({**data, "verdict": "fail"}, tmp_path)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_full_disk_in_a_scan_is_exit_3(tmp_path, monkeypatch):
    import errno

    from audit.io import atomic

    monkeypatch.setattr(atomic.os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(errno.ENOSPC, "No space left")))
    ref = save_npy(tmp_path / "ref.npy", vectors(80, 6))
    result = run("scan", ref, ref, "--out", tmp_path / "r")
    assert_refused(result, 3, "no space left")
    assert not list((tmp_path / "r").glob("*"))


def test_step_summary_in_a_missing_folder_is_only_a_warning(report_json, tmp_path):
    from audit.report import write_reports

    data = json.loads(report_json.read_text())
    with pytest.warns(UserWarning, match="GITHUB_STEP_SUMMARY"):
        os.environ["GITHUB_STEP_SUMMARY"] = str(tmp_path / "missing" / "summary.md")
        try:
            write_reports(data, tmp_path / "r")
        finally:
            del os.environ["GITHUB_STEP_SUMMARY"]
    assert (tmp_path / "r" / "report.json").is_file()


def test_unwritable_outputs_are_exit_3(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    folder = good_folder(tmp_path / "imgs")
    result = run("embed", folder, "--out", blocker / "out", "--model", "pixels", "--cache", tmp_path / "c.sqlite",
                 "--workers", "0", "-q")
    assert_refused(result, 3, "not a directory")
    ref = save_npy(tmp_path / "ref.npy", vectors(80, 6))
    result = run("project", ref, "--generations", "2", "--runs", "2", "--dim", "2", "--plot", blocker / "p.png")
    assert_refused(result, 3, "not a directory")


# ---------------------------------------------------------------------------------------------
# caches, weights, exit codes


@pytest.mark.parametrize("make, words", [
    (lambda p: p.mkdir(), "not a regular file"),
    (lambda p: p.write_bytes(b"this is not an sqlite database" * 100), "not a database"),
    (lambda p: p.parent.write_text("x"), "file exists"),  # its folder is a file: cannot be created
])
def test_unusable_cache_is_exit_3_suggesting_cache(make, words, tmp_path):
    folder = good_folder(tmp_path / "imgs")
    cache = tmp_path / "blocker" / "cache.sqlite" if words == "file exists" else tmp_path / "cache.sqlite"
    make(cache)
    # Through $MADAUDIT_CACHE: click's own check would catch a folder given to --cache (exit 2).
    result = run("embed", folder, "--out", tmp_path / "out", "--model", "pixels", "-q",
                 env={"MADAUDIT_CACHE": str(cache)})
    assert_refused(result, 3, "cache", words, "--cache")


@pytest.mark.parametrize("content", [b"this is not a checkpoint", b"PK\x03\x04 broken zip"])
def test_bad_pretrained_file_is_exit_3_naming_it(content, tmp_path, tiny_config):
    folder = good_folder(tmp_path / "imgs")
    bad = tmp_path / "weights.bin"
    bad.write_bytes(content)
    result = run("embed", folder, "--out", tmp_path / "out", "--model", tiny_config, "--pretrained", bad,
                 "--cache", tmp_path / "c.sqlite", "--workers", "0", "-q")
    assert_refused(result, 3, "weights.bin", "not a usable checkpoint")


def test_checkpoint_of_another_architecture_is_exit_3(tmp_path, tiny_config):
    import open_clip
    import torch

    other = json.loads(Path(tiny_config).read_text())
    other["embed_dim"] = 16
    other_cfg = tmp_path / "other-arch.json"
    other_cfg.write_text(json.dumps(other))
    open_clip.add_model_config(other_cfg)
    ckpt = tmp_path / "other.pt"
    torch.save(open_clip.create_model("other-arch").state_dict(), ckpt)
    folder = good_folder(tmp_path / "imgs")
    result = run("embed", folder, "--out", tmp_path / "out", "--model", tiny_config, "--pretrained", ckpt,
                 "--cache", tmp_path / "c.sqlite", "--workers", "0", "-q")
    assert_refused(result, 3, "other.pt", "not a usable checkpoint")


def test_unexpected_exception_is_exit_4_with_traceback_only_when_verbose(tmp_path, monkeypatch):
    import audit.metrics

    def boom(*a, **k):
        raise RuntimeError("a bug")

    monkeypatch.setattr(audit.metrics, "compare", boom)
    ref = save_npy(tmp_path / "ref.npy", vectors(40, 6))
    result = CliRunner().invoke(main, ["metrics", str(ref), str(ref)])
    assert result.exit_code == 4 and "internal error: please report it" in result.output
    assert "Traceback" not in result.output
    verbose = CliRunner().invoke(main, ["--verbose", "metrics", str(ref), str(ref)])
    assert verbose.exit_code == 4 and "Traceback" in verbose.output


def test_interrupt_is_exit_130(tmp_path, monkeypatch):
    import audit.metrics

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(audit.metrics, "compare", interrupted)
    ref = save_npy(tmp_path / "ref.npy", vectors(40, 6))
    assert CliRunner().invoke(main, ["metrics", str(ref), str(ref)]).exit_code == 130


def test_declared_models_must_agree(tmp_path):
    ref = save_npy(tmp_path / "ref.npy", vectors(40, 6))
    cand = save_npy(tmp_path / "cand.npy", vectors(40, 6, 1))
    ok = run("metrics", ref, cand, "--embedding-model", "ViT-B-32")
    assert ok.exit_code == 0, ok.output
    assert_refused(run("metrics", ref, cand, "--embedding-model", "ViT-B-32", "--embedding-model", "ViT-L-14"), 3,
                   "different models")


# ---------------------------------------------------------------------------------------------
# kill -9 in the middle of `embed`, then resume


def test_sigkill_mid_embed_then_resume_equals_an_uninterrupted_run(tmp_path, tiny_config):
    import signal
    import sqlite3
    import subprocess
    import sys
    import time

    folder = tmp_path / "imgs"
    write_images(folder, 240, size=(64, 64))
    cache = tmp_path / "cache.sqlite"

    def embed_cmd(out: Path, cache_file: Path) -> list[str]:
        return [sys.executable, "-m", "audit.cli", "embed", str(folder), "--out", str(out), "--model", tiny_config,
                "--pretrained", "random", "--batch-size", "8", "--workers", "0", "--cache", str(cache_file), "-q"]

    def committed() -> int:
        try:
            with sqlite3.connect(cache, timeout=1) as db:
                return db.execute("SELECT COUNT(*) FROM embedding").fetchone()[0]
        except sqlite3.Error:
            return 0

    proc = subprocess.Popen(embed_cmd(tmp_path / "out", cache), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while committed() < 24 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, "embed finished before it could be killed: give it more images"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = committed()
    assert 24 <= killed_at < 240
    assert not (tmp_path / "out" / "madaudit.json").exists()  # nothing half-written

    resumed = subprocess.run(embed_cmd(tmp_path / "out", cache), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert f"{240 - killed_at} newly embedded, {killed_at} from cache" in resumed.stdout
    fresh = subprocess.run(embed_cmd(tmp_path / "fresh", tmp_path / "fresh.sqlite"), capture_output=True, text=True,
                           timeout=300)
    assert fresh.returncode == 0, fresh.stderr

    from audit.io.embedding_folder import load_embeddings

    a, b = load_embeddings(tmp_path / "out"), load_embeddings(tmp_path / "fresh")
    assert a.keys == b.keys and len(a.keys) == 240
    np.testing.assert_allclose(a.vectors, b.vectors, atol=1e-6)  # batch composition changes BLAS rounding only
    meta_a = pq.read_table(tmp_path / "out" / "metadata" / "metadata_0.parquet").to_pydict()
    meta_b = pq.read_table(tmp_path / "fresh" / "metadata" / "metadata_0.parquet").to_pydict()
    assert meta_a == meta_b
    with sqlite3.connect(cache) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_file_changed_after_listing_then_restored_is_read_again(tmp_path):
    """The fast-path race: listed, changed before it is read, restored later with its old bytes and
    mtime (cp -p, rsync -a, tar x). The cache must not serve the in-between content's vector."""
    from audit.embedding import embed_files, embed_folder
    from audit.pixels import fit_pixel_embedder
    from audit.store import EmbeddingStore

    folder = good_folder(tmp_path / "imgs", 6)
    for path in folder.rglob("*.png"):  # older than the racy window, however fast this machine runs the test
        os.utime(path, ns=(time.time_ns() - 60 * 10**9,) * 2)
    embedder = fit_pixel_embedder(folder)
    target = folder / "img_001.png"
    original = target.read_bytes()
    old = os.stat(target)
    with EmbeddingStore(tmp_path / "c.sqlite") as store:
        truth = embed_folder(folder, embedder, store, workers=0)
        truth_vector = truth.vectors[truth.keys.index("img_001.png")]
    listing = files.scan_folder(folder)  # listed with the original size and mtime
    target.write_bytes(png(99, (30, 30)))  # changed before it is read
    os.utime(target, ns=(old.st_atime_ns, old.st_mtime_ns - 5 * 10**9))
    with EmbeddingStore(tmp_path / "c2.sqlite") as store:
        during = embed_files(listing.files, embedder, store, workers=0)
        assert not np.allclose(during.vectors[during.keys.index("img_001.png")], truth_vector)
        target.write_bytes(original)  # restored, old mtime too
        os.utime(target, ns=(old.st_atime_ns, old.st_mtime_ns))
        after = embed_folder(folder, embedder, store, workers=0)
    assert after.counts["from_cache_fast_path"] == 5  # the restored file was read again
    np.testing.assert_allclose(after.vectors[after.keys.index("img_001.png")], truth_vector, atol=1e-6)


def test_full_disk_in_the_cache_is_exit_3_and_keeps_committed_batches(tmp_path, monkeypatch):
    import sqlite3

    from audit.store import EmbeddingStore

    folder = good_folder(tmp_path / "imgs", 6)
    calls = {"n": 0}
    real_put = EmbeddingStore.put_embeddings

    def put_until_full(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 1:
            raise sqlite3.OperationalError("database or disk is full")
        return real_put(self, *args, **kwargs)

    monkeypatch.setattr(EmbeddingStore, "put_embeddings", put_until_full)
    result = run("embed", folder, "--out", tmp_path / "out", "--model", "pixels", "--cache", tmp_path / "c.sqlite",
                 "--workers", "0", "--batch-size", "2", "-q")
    assert_refused(result, 3, "cache", "disk is full")
    assert not (tmp_path / "out").exists()
    with EmbeddingStore(tmp_path / "c.sqlite") as store:
        assert store.count_embeddings() == 2 and store.integrity_ok()


def test_limits_hold_in_the_python_api_too():
    from audit import projector
    from audit.limits import LimitError

    with pytest.raises(LimitError, match="runs x generations"):
        projector.project(vectors(100, 8), generations=1000, runs=1000)
