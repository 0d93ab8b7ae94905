"""Sources: find the images in a folder and decode them safely.

Every item keeps a stable key (its POSIX path relative to the root). Nothing here raises on a bad
file: a file that cannot be used becomes a `Skipped` entry with a reason code, so a run can list it
and go on.
"""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})

# A generous default: 64 megapixels covers every real photo; beyond it the file is far more
# likely a decompression bomb than a training image.
DEFAULT_MAX_PIXELS = 64_000_000

# Reason codes, stable strings that reports and gates count on.
HIDDEN = "hidden"
NOT_IMAGE_EXTENSION = "not_image_extension"
MISSING = "missing"
EMPTY = "empty"
NOT_AN_IMAGE = "not_an_image"
TRUNCATED = "truncated"
DECODE_ERROR = "decode_error"
TOO_MANY_PIXELS = "too_many_pixels"

# Reasons that mean "this looked like an image and could not be used" (as opposed to files that
# were never candidates, like hidden files or text files).
UNREADABLE_REASONS = frozenset({MISSING, EMPTY, NOT_AN_IMAGE, TRUNCATED, DECODE_ERROR, TOO_MANY_PIXELS})


@dataclass(frozen=True)
class ImageFile:
    """An image candidate found on disk. `key` is the path relative to the scanned root."""

    key: str
    path: str
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class Skipped:
    key: str
    reason: str
    detail: str = ""


@dataclass
class FolderScan:
    root: str
    files: list[ImageFile]
    skipped: list[Skipped]


class DecodeFailure(Exception):
    """A file that could not be turned into an RGB image; `reason` is one of the reason codes."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


def scan_folder(root: str | os.PathLike) -> FolderScan:
    """List the image files under `root`, recursively, sorted by key.

    Hidden files and folders (name starting with '.') and files with a non-image extension are
    skipped and listed. Raises FileNotFoundError / NotADirectoryError for a bad root.
    """
    root_path = Path(root)
    if not root_path.exists():
        raise FileNotFoundError(f"folder not found: {root}")
    if not root_path.is_dir():
        raise NotADirectoryError(f"not a folder: {root}")

    files: list[ImageFile] = []
    skipped: list[Skipped] = []
    for dirpath, dirnames, filenames in os.walk(root_path):
        rel_dir = Path(dirpath).relative_to(root_path)
        for name in dirnames:
            if name.startswith("."):
                skipped.append(Skipped((rel_dir / name).as_posix() + "/", HIDDEN, "hidden folder"))
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            key = (rel_dir / name).as_posix()
            if name.startswith("."):
                skipped.append(Skipped(key, HIDDEN))
                continue
            if Path(name).suffix.lower() not in IMAGE_EXTENSIONS:
                skipped.append(Skipped(key, NOT_IMAGE_EXTENSION))
                continue
            path = os.path.join(dirpath, name)
            try:
                st = os.stat(path)
            except OSError as exc:  # broken symlink, vanished file
                skipped.append(Skipped(key, MISSING, str(exc)))
                continue
            files.append(ImageFile(key, path, st.st_size, st.st_mtime_ns))

    files.sort(key=lambda f: f.key)
    skipped.sort(key=lambda s: s.key)
    return FolderScan(str(root_path), files, skipped)


def decode_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode image bytes to a fully loaded RGB PIL image, or raise DecodeFailure.

    The pixel count is checked from the header, before any pixel is decoded, so a file that
    declares a huge size costs nothing.
    """
    if not data:
        raise DecodeFailure(EMPTY, "file is empty")
    with warnings.catch_warnings():
        # We enforce our own limit below; PIL's bomb warning would only be noise.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            img = Image.open(io.BytesIO(data))
            width, height = img.size
            if width * height > max_pixels:
                raise DecodeFailure(TOO_MANY_PIXELS, f"{width}x{height} exceeds {max_pixels} pixels")
            if width == 0 or height == 0:
                raise DecodeFailure(DECODE_ERROR, f"zero-sized image {width}x{height}")
            img.load()
            return img.convert("RGB")
        except DecodeFailure:
            raise
        except Exception as exc:  # PIL raises many types on bad data
            raise _classify(exc) from None


def _classify(exc: Exception) -> DecodeFailure:
    if isinstance(exc, Image.DecompressionBombError):
        return DecodeFailure(TOO_MANY_PIXELS, str(exc))
    if isinstance(exc, Image.UnidentifiedImageError):
        return DecodeFailure(NOT_AN_IMAGE, "not a recognised image format")
    message = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, (OSError, SyntaxError, EOFError)) and "truncated" in message.lower():
        return DecodeFailure(TRUNCATED, message)
    return DecodeFailure(DECODE_ERROR, message)


def read_bytes(path: str) -> bytes:
    """Read a file, mapping a vanished or unreadable file to DecodeFailure(MISSING)."""
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError as exc:
        raise DecodeFailure(MISSING, str(exc)) from None
