"""Image files: list the images under a folder and read and decode them safely.

Every item keeps a stable key (its POSIX path relative to the root). Nothing here raises on a bad
file: a file that cannot be used becomes a `Skipped` entry with a reason code, so a run can list it
and go on. Only regular files are opened (a FIFO named x.png would block for ever, /dev/zero would
never end); sizes are checked from `stat` before a byte is read, and the read itself is capped, so
a file swapped after listing cannot hang the run or flood its memory.
"""

from __future__ import annotations

import io
import os
import stat
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})

# A generous default: 64 megapixels covers every real photo; beyond it the file is far more
# likely a decompression bomb than a training image.
DEFAULT_MAX_PIXELS = 64_000_000
DEFAULT_MAX_FILE_MB = 256
# git's racy-timestamp rule: a file modified this recently may change again within the same
# mtime tick, so its (size, mtime) cannot vouch for its content yet.
RACY_WINDOW_NS = 10_000_000

# Reason codes, stable strings that reports and gates count on.
HIDDEN = "hidden"
NOT_IMAGE_EXTENSION = "not_image_extension"
MISSING = "missing"
EMPTY = "empty"
NOT_AN_IMAGE = "not_an_image"
TRUNCATED = "truncated"
DECODE_ERROR = "decode_error"
TOO_MANY_PIXELS = "too_many_pixels"
TOO_LARGE = "too_large"
NOT_REGULAR_FILE = "not_regular_file"
UNREADABLE_FOLDER = "unreadable_folder"
SYMLINK_OUTSIDE_ROOT = "symlink_outside_root"
SYMLINK_LOOP = "symlink_loop"
BAD_ARCHIVE_MEMBER = "bad_archive_member"
UNREADABLE_SHARD = "unreadable_shard"

# Reasons that mean "this looked like an image and could not be used" (as opposed to files that
# were never candidates, like hidden files or text files). They count in `unreadable_share`.
UNREADABLE_REASONS = frozenset({MISSING, EMPTY, NOT_AN_IMAGE, TRUNCATED, DECODE_ERROR, TOO_MANY_PIXELS, TOO_LARGE,
                                NOT_REGULAR_FILE, UNREADABLE_FOLDER, BAD_ARCHIVE_MEMBER, UNREADABLE_SHARD})


@dataclass(frozen=True)
class ImageFile:
    """An image to read. `key` is its stable name (path relative to the scanned root, or
    shard/member). The bytes are `path` whole, or `size` bytes at `offset` of `path` (a tar member).
    `fast_path` is the cache's (path, size, mtime) identity, None when the item may not use it
    (a name that had to be escaped could collide with a real one)."""

    key: str
    path: str
    size: int
    mtime_ns: int
    offset: int | None = None
    fast_path: tuple[str, int, int] | None = None


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


def display_name(raw: bytes) -> str:
    """A file name as text: UTF-8 where it is, `\\xNN` escapes for the bytes that are not."""
    return raw.decode("utf-8", "backslashreplace")


def scan_folder(root: str | os.PathLike, max_file_mb: float = DEFAULT_MAX_FILE_MB) -> FolderScan:
    """List the image files under `root`, recursively, sorted by key.

    Walked iteratively (any depth). Hidden entries, non-image extensions, folders that cannot be
    listed, special files, files over `max_file_mb` and symlinks leading out of the root are
    listed as skipped with their reason. Raises FileNotFoundError / NotADirectoryError for a bad
    root.
    """
    root_path = Path(root)
    if not root_path.exists():
        raise FileNotFoundError(f"folder not found: {root}")
    if not root_path.is_dir():
        raise NotADirectoryError(f"not a folder: {root}")
    real_root = os.path.realpath(root_path)
    max_bytes = int(max_file_mb * 1024 * 1024)

    files: list[ImageFile] = []
    skipped: list[Skipped] = []
    seen_dirs = {_dir_id(real_root)}
    stack: list[tuple[bytes, str, bool]] = [(os.fsencode(root_path), "", True)]  # (path, key prefix, clean name)
    while stack:
        dir_path, prefix, clean = stack.pop()
        try:
            with os.scandir(dir_path) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            skipped.append(Skipped(prefix or "./", UNREADABLE_FOLDER, exc.strerror or str(exc)))
            continue
        for entry in entries:
            name = display_name(entry.name)
            name_clean = clean and name == os.fsdecode(entry.name) and "\\x" not in name
            key = prefix + name
            if name.startswith("."):
                skipped.append(Skipped(key + ("/" if _is_dir(entry) else ""), HIDDEN))
                continue
            outside = entry.is_symlink() and not _inside(os.path.realpath(os.fsdecode(entry.path)), real_root)
            if _is_dir(entry):
                if outside:
                    skipped.append(Skipped(key + "/", SYMLINK_OUTSIDE_ROOT, "a symlink to a folder outside the root"))
                elif (ident := _dir_id(entry.path)) in seen_dirs:
                    skipped.append(Skipped(key + "/", SYMLINK_LOOP, "a folder already listed through another path (a symlink loop or a second link)"))
                else:
                    seen_dirs.add(ident)
                    stack.append((entry.path, key + "/", name_clean))
                continue
            if Path(name).suffix.lower() not in IMAGE_EXTENSIONS:
                skipped.append(Skipped(key, NOT_IMAGE_EXTENSION))
                continue
            if outside:
                skipped.append(Skipped(key, SYMLINK_OUTSIDE_ROOT, "a symlink to a file outside the root"))
                continue
            item = stat_item(key, os.fsdecode(entry.path), max_bytes, fast_path=name_clean)
            (files if isinstance(item, ImageFile) else skipped).append(item)

    files.sort(key=lambda f: f.key)
    skipped.sort(key=lambda s: s.key)
    return FolderScan(str(root_path), files, skipped)


def stat_item(key: str, path: str, max_bytes: int, fast_path: bool = True) -> ImageFile | Skipped:
    """An image file to read later, or why it cannot be: missing, not a regular file, too large."""
    try:
        st = os.stat(path)  # follows symlinks
    except OSError as exc:  # broken symlink, vanished file
        return Skipped(key, MISSING, exc.strerror or str(exc))
    if not stat.S_ISREG(st.st_mode):
        return Skipped(key, NOT_REGULAR_FILE, "not a regular file (FIFO, device or socket)")
    if st.st_size > max_bytes:
        return Skipped(key, TOO_LARGE, f"{st.st_size} bytes exceeds the cap of {max_bytes} bytes (--max-file-mb)")
    fast = (os.path.abspath(path), st.st_size, st.st_mtime_ns) if fast_path else None
    return ImageFile(key, path, st.st_size, st.st_mtime_ns, fast_path=fast)


def safe_image_path(root: str | os.PathLike, key: str, max_bytes: int = DEFAULT_MAX_FILE_MB * 1024 * 1024) -> str | None:
    """The file a key names under `root`, only if it stays inside it: a relative path without
    `..`, whose real path (symlinks resolved) is inside the root's, a regular file under the cap.
    Keys read from an embedding folder's metadata are data, not trusted paths."""
    if not key or "\0" in key or os.path.isabs(key) or ".." in Path(key).parts or "\\" in key:
        return None
    real_root = os.path.realpath(root)
    real = os.path.realpath(os.path.join(real_root, key))
    if not _inside(real, real_root) or real == real_root:
        return None
    item = stat_item(key, real, max_bytes, fast_path=False)
    return real if isinstance(item, ImageFile) else None


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()
    except OSError:
        return False


def _dir_id(path) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino


def _inside(real_path: str, real_root: str) -> bool:
    return real_path == real_root or real_path.startswith(real_root.rstrip(os.sep) + os.sep)


@dataclass(frozen=True)
class ReadBytes:
    """The bytes of an item and the (size, mtime_ns) its file had while they were read, or None
    when that stamp cannot vouch for the bytes (changed during the read, or modified too recently)."""

    data: bytes
    stamp: tuple[int, int] | None


def read_item(item: ImageFile, max_bytes: int) -> ReadBytes:
    """Read an item's bytes safely: only from a regular file, never more than `max_bytes`,
    never blocking on a FIFO swapped in after listing. Failures raise DecodeFailure."""
    try:
        fd = os.open(item.path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise DecodeFailure(MISSING, exc.strerror or str(exc)) from None
    try:
        before = os.fstat(fd)
        if not stat.S_ISREG(before.st_mode):
            raise DecodeFailure(NOT_REGULAR_FILE, "not a regular file (FIFO, device or socket)")
        if item.offset is None:
            if before.st_size > max_bytes:
                raise DecodeFailure(TOO_LARGE, f"{before.st_size} bytes exceeds the {max_bytes}-byte cap")
            data = _read_capped(fd, max_bytes)
        else:
            if item.size > max_bytes:
                raise DecodeFailure(TOO_LARGE, f"{item.size} bytes exceeds the {max_bytes}-byte cap")
            data = os.pread(fd, item.size, item.offset)
            if len(data) != item.size:
                raise DecodeFailure(BAD_ARCHIVE_MEMBER, f"member cut short: {len(data)} of {item.size} bytes")
        after = os.fstat(fd)
    except OSError as exc:
        raise DecodeFailure(MISSING, exc.strerror or str(exc)) from None
    finally:
        os.close(fd)
    if item.offset is None and len(data) > max_bytes:
        raise DecodeFailure(TOO_LARGE, f"grew past the {max_bytes}-byte cap while being read")
    stamp = (after.st_size, after.st_mtime_ns)
    steady = stamp == (before.st_size, before.st_mtime_ns) and time.time_ns() - after.st_mtime_ns > RACY_WINDOW_NS
    return ReadBytes(data, stamp if steady else None)


def _read_capped(fd: int, max_bytes: int) -> bytes:
    chunks, total = [], 0
    while total <= max_bytes:
        block = os.read(fd, min(1 << 20, max_bytes + 1 - total))
        if not block:
            break
        chunks.append(block)
        total += len(block)
    return b"".join(chunks)


def read_bytes(path: str, max_bytes: int = DEFAULT_MAX_FILE_MB * 1024 * 1024) -> bytes:
    """Read a whole regular file safely (see `read_item`)."""
    return read_item(ImageFile(path, path, 0, 0), max_bytes).data


def decode_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode image bytes to a fully loaded, upright RGB PIL image, or raise DecodeFailure.

    The pixel count is checked from the header, before any pixel is decoded, so a file that
    declares a huge size costs nothing. EXIF orientation is applied (a phone photo is embedded the
    way it is shown); 16-bit images are scaled to 8 bits, not clipped.
    """
    if not data:
        raise DecodeFailure(EMPTY, "file is empty")
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            img = Image.open(io.BytesIO(data))
            width, height = img.size
            if width * height > max_pixels:
                raise DecodeFailure(TOO_MANY_PIXELS, f"{width}x{height} exceeds {max_pixels} pixels")
            if width == 0 or height == 0:
                raise DecodeFailure(DECODE_ERROR, f"zero-sized image {width}x{height}")
            img.load()
            sixteen_bit = img.mode.startswith("I;16") or (img.mode == "I" and img.format in ("PNG", "TIFF"))
            return _to_rgb(ImageOps.exif_transpose(img), sixteen_bit)
        except DecodeFailure:
            raise
        except Exception as exc:  # PIL raises many types on bad data
            raise _classify(exc) from None


def _to_rgb(img: Image.Image, sixteen_bit: bool) -> Image.Image:
    """RGB, with 16-bit and other integer or float grayscale modes scaled to 8 bits (PIL's own
    convert clips them at 255, which turns a 16-bit photo almost white)."""
    if img.mode.startswith("I") or img.mode == "F":
        values = np.asarray(img, dtype=np.float64)
        top = 65535.0 if sixteen_bit or values.max() > 255 else 255.0
        if img.mode == "F" and values.max() <= 1.0:
            top = 1.0
        img = Image.fromarray(np.clip(np.rint(values * (255.0 / top)), 0, 255).astype(np.uint8), "L")
    return img.convert("RGB")


def _classify(exc: Exception) -> DecodeFailure:
    if isinstance(exc, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        return DecodeFailure(TOO_MANY_PIXELS, str(exc))
    if isinstance(exc, Image.UnidentifiedImageError):
        return DecodeFailure(NOT_AN_IMAGE, "not a recognised image format")
    message = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, (OSError, SyntaxError, EOFError)) and "truncated" in message.lower():
        return DecodeFailure(TRUNCATED, message)
    return DecodeFailure(DECODE_ERROR, message)
