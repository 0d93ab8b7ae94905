import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from audit.io import files as sources
from audit.io.files import DecodeFailure, decode_image, scan_folder


def png_bytes(width=8, height=6) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (10, 20, 30)).save(buf, format="PNG")
    return buf.getvalue()


def jpeg_bytes(width=64, height=64) -> bytes:
    pixels = np.random.default_rng(0).integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def png_declaring(width: int, height: int) -> bytes:
    """A PNG whose IHDR declares width x height (valid CRC), with almost no pixel data."""
    data = bytearray(png_bytes())
    ihdr = struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr) & 0xFFFFFFFF)
    return bytes(data)


def test_scan_is_recursive_sorted_and_lists_skips(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / ".hidden_dir").mkdir()
    for key in ["b/z.PNG", "a.jpg", "b/c.webp", ".hidden.png", ".hidden_dir/x.png", "notes.txt"]:
        (tmp_path / key).write_bytes(b"x")
    scan = scan_folder(tmp_path)
    assert [f.key for f in scan.files] == ["a.jpg", "b/c.webp", "b/z.PNG"]
    reasons = {s.key: s.reason for s in scan.skipped}
    assert reasons == {
        ".hidden.png": sources.HIDDEN,
        ".hidden_dir/": sources.HIDDEN,
        "notes.txt": sources.NOT_IMAGE_EXTENSION,
    }
    assert scan_folder(tmp_path).files == scan.files  # deterministic


def test_scan_lists_broken_symlink_as_missing(tmp_path):
    (tmp_path / "gone.png").symlink_to(tmp_path / "does-not-exist.png")
    scan = scan_folder(tmp_path)
    assert scan.files == []
    assert [(s.key, s.reason) for s in scan.skipped] == [("gone.png", sources.MISSING)]


def test_scan_rejects_missing_root(tmp_path):
    with pytest.raises(FileNotFoundError):
        scan_folder(tmp_path / "nope")
    (tmp_path / "f").write_text("x")
    with pytest.raises(NotADirectoryError):
        scan_folder(tmp_path / "f")


def test_decode_valid_images_to_rgb():
    img = decode_image(png_bytes(8, 6))
    assert img.mode == "RGB" and img.size == (8, 6)
    grey = io.BytesIO()
    Image.new("L", (5, 5), 7).save(grey, format="PNG")
    assert decode_image(grey.getvalue()).mode == "RGB"


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"", sources.EMPTY),
        (b"this is a text file named .png\n", sources.NOT_AN_IMAGE),
        (jpeg_bytes()[:400], sources.TRUNCATED),  # cut inside the header
        (jpeg_bytes()[: len(jpeg_bytes()) // 2], sources.TRUNCATED),  # cut inside the scan data
        (png_declaring(100_000, 100_000), sources.TOO_MANY_PIXELS),
        (png_declaring(20_000, 20_000), sources.TOO_MANY_PIXELS),  # above our limit, below PIL's bomb error
    ],
)
def test_decode_failures_have_reasons(data, reason):
    with pytest.raises(DecodeFailure) as info:
        decode_image(data, max_pixels=100_000_000 if reason != sources.TOO_MANY_PIXELS else 1_000_000)
    assert info.value.reason == reason


def test_read_bytes_missing_file(tmp_path):
    with pytest.raises(DecodeFailure) as info:
        sources.read_bytes(str(tmp_path / "missing.png"))
    assert info.value.reason == sources.MISSING
