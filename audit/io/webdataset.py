"""WebDataset / img2dataset tar shards: a shard file, a folder of shards, or a brace pattern
like `shards/{00000..00009}.tar`.

Members are listed from the tar headers (offset and size, nothing unpacked) and read later with
one positioned read each, so decoding workers share a shard and nothing lands on disk. Keys are
`shard/member`. Image members are embedded; other members (the .json, .txt, .cls beside each
image) are listed as skipped with `not_image_extension`; links and special members as
`bad_archive_member`; shards that cannot be read as tar files as `unreadable_shard`.
"""

from __future__ import annotations

import os
import re
import tarfile
from pathlib import Path

from audit.io.files import (BAD_ARCHIVE_MEMBER, DEFAULT_MAX_FILE_MB, HIDDEN, IMAGE_EXTENSIONS, MISSING,
                            NOT_IMAGE_EXTENSION, TOO_LARGE, UNREADABLE_SHARD, FolderScan, ImageFile, Skipped,
                            display_name)

_BRACE = re.compile(r"\{([^{}]*)\}")
MAX_SHARDS = 1_000_000


def is_shard_spec(path: str | os.PathLike) -> bool:
    """A tar file, a brace pattern, or a folder holding .tar shards."""
    text = os.fspath(path)
    if _BRACE.search(text) and text.endswith((".tar", ".tar}")):
        return True
    p = Path(text)
    if p.is_file():
        return p.suffix == ".tar"
    return p.is_dir() and any(q.suffix == ".tar" for q in p.iterdir())


def expand_braces(pattern: str) -> list[str]:
    """`a/{000..002}.tar` -> a/000.tar, a/001.tar, a/002.tar; `{x,y}` lists alternatives."""
    m = _BRACE.search(pattern)
    if not m:
        return [pattern]
    body = m.group(1)
    if r := re.fullmatch(r"(\d+)\.\.(\d+)", body):
        lo, hi = r.group(1), r.group(2)
        if int(hi) < int(lo) or int(hi) - int(lo) >= MAX_SHARDS:
            raise ValueError(f"bad shard range {{{body}}} in {pattern}")
        options = [str(i).zfill(len(lo)) for i in range(int(lo), int(hi) + 1)]
    else:
        options = body.split(",")
    out = [x for opt in options for x in expand_braces(pattern[:m.start()] + opt + pattern[m.end():])]
    if len(out) > MAX_SHARDS:
        raise ValueError(f"{pattern} names more than {MAX_SHARDS} shards")
    return out


def list_shards(spec: str | os.PathLike, max_file_mb: float = DEFAULT_MAX_FILE_MB) -> FolderScan:
    """Every image member of the shards `spec` names, sorted by key, and what was passed over."""
    text = os.fspath(spec)
    if _BRACE.search(text):
        shards = [Path(s) for s in expand_braces(text)]
        root = os.path.commonpath([str(s.parent) for s in shards]) if shards else "."
    elif Path(text).is_dir():
        shards = sorted(q for q in Path(text).iterdir() if q.name.endswith((".tar", ".tar.gz", ".tgz")))
        root = text
    else:
        shards, root = [Path(text)], str(Path(text).parent)
    files: list[ImageFile] = []
    skipped: list[Skipped] = []
    max_bytes = int(max_file_mb * 1024 * 1024)
    for shard in shards:
        name = os.path.relpath(shard, root) if shard.is_absolute() == Path(root).is_absolute() else shard.name
        _list_shard(shard, name.replace(os.sep, "/"), max_bytes, files, skipped)
    files.sort(key=lambda f: f.key)
    skipped.sort(key=lambda s: s.key)
    return FolderScan(root, files, skipped)


def _list_shard(shard: Path, shard_name: str, max_bytes: int, files: list[ImageFile], skipped: list[Skipped]) -> None:
    if not shard.exists():
        skipped.append(Skipped(shard_name, MISSING, "shard not found"))
        return
    if shard.name.endswith((".tar.gz", ".tgz")):
        skipped.append(Skipped(shard_name, UNREADABLE_SHARD, "compressed shards cannot be read in place; "
                                                             "decompress to .tar"))
        return
    try:
        st = os.stat(shard)
        if not shard.is_file():
            raise tarfile.ReadError("not a regular file")
        with tarfile.open(shard, mode="r:") as tar:
            while True:
                try:
                    member = tar.next()
                except tarfile.TarError as exc:  # damaged header or cut short: keep what was listed
                    skipped.append(Skipped(shard_name, UNREADABLE_SHARD, f"stops early: {exc}"))
                    break
                if member is None:
                    break
                _add_member(shard, shard_name, st, member, max_bytes, files, skipped)
    except (tarfile.TarError, OSError) as exc:
        skipped.append(Skipped(shard_name, UNREADABLE_SHARD, f"not a readable tar file ({exc})"))


def _add_member(shard: Path, shard_name: str, st: os.stat_result, member: tarfile.TarInfo, max_bytes: int,
                files: list[ImageFile], skipped: list[Skipped]) -> None:
    raw = os.fsencode(member.name)
    member_name = display_name(raw)
    key = f"{shard_name}/{member_name}"
    if member.isdir():
        return
    base = member_name.rsplit("/", 1)[-1]
    if not member.isfile():
        skipped.append(Skipped(key, BAD_ARCHIVE_MEMBER, "a link or special member, not a file"))
    elif base.startswith("."):
        skipped.append(Skipped(key, HIDDEN))
    elif Path(base).suffix.lower() not in IMAGE_EXTENSIONS:
        skipped.append(Skipped(key, NOT_IMAGE_EXTENSION))
    elif member.size > max_bytes:
        skipped.append(Skipped(key, TOO_LARGE, f"{member.size} bytes exceeds the cap of {max_bytes} bytes"))
    elif member.offset_data + member.size > st.st_size:
        skipped.append(Skipped(key, BAD_ARCHIVE_MEMBER, "member runs past the end of the shard (truncated)"))
    else:
        clean = member_name == os.fsdecode(raw) and "\\x" not in member_name
        fast = (f"{os.path.abspath(shard)}#{member_name}", st.st_size, st.st_mtime_ns) if clean else None
        files.append(ImageFile(key, str(shard), member.size, st.st_mtime_ns, offset=member.offset_data, fast_path=fast))
