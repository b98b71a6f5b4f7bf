"""Read a feed's records out of a zip, a tarball or a folder, hostile input bounded.

Why this module exists: osv.dev publishes each ecosystem as one zip of JSON records
(``<ecosystem>/all.zip``); air-gapped sites copy that zip, a tarball of a distribution's
OSV repository (AlmaLinux's ``advisories/almalinuxN/*.json``) or a checkout of it onto
the server. All three are read here, one record at a time, as ``(name, bytes)`` pairs for
``osv.load_records``. Nothing in them is trusted:

- member count: more than ``max_members`` entries refuses the whole archive
  (``TooLargeError``) before any is read;
- total size: more than ``max_total_bytes`` decompressed refuses the whole archive, as
  soon as it is passed (a bomb, or a feed gone wrong: keep the last good data rather
  than half a feed that would clear a fleet's exposure);
- per member: above ``max_member_bytes`` (declared or actually read) it is skipped and
  counted (reason ``size``), never decompressed past the limit;
- paths: absolute paths, ``..`` components, backslashes, NUL and other control
  characters are skipped and counted (reason ``path``); so are symbolic and hard links,
  devices and FIFOs in tarballs, symbolic-link entries in zips and symbolic links in
  folders (never followed), which could point outside the tree. Nothing is ever
  extracted to disk: members are read into memory one at a time.

Only names ending in ``.json`` are records; other regular files (a LICENSE, a README)
are counted as ``ignored``. Order is the archive's own (zip, tar) or sorted (folder), so
two reads of one input give the same sequence.
"""

from __future__ import annotations

import lzma
import os
import re
import stat
import struct
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO
from typing import TypeGuard

from patchwatch.domain.errors import ParseError
from patchwatch.domain.errors import TooLargeError
from patchwatch.domain.repodata.compression import open_decompressed
from patchwatch.domain.repodata.compression import sniff_kind
from patchwatch.domain.repodata.tarstream import iter_members as iter_tar_members
from patchwatch.domain.vulns.model import FeedStats

__all__ = ["ArchiveLimits", "iter_folder", "iter_members", "iter_tar", "iter_zip"]

_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
# What zipfile raises on a damaged archive or member, besides BadZipFile: its
# decompressors' own errors, unsupported features (a version, a compression method),
# an encrypted member (RuntimeError) and malformed headers.
_ZIP_ERRORS = (
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    OSError,
    EOFError,
    NotImplementedError,
    RuntimeError,
    ValueError,
    struct.error,
    zlib.error,
    lzma.LZMAError,
)
_CHUNK = 1 << 16
_SPECIAL_FILE = "not a regular file (symbolic link or special)"


@dataclass(frozen=True, slots=True)
class ArchiveLimits:
    """Bounds on one archive, with room above the largest OS feed.

    Debian's feed is about 50,000 records; a generated feed of that size and shape is
    138 MB of JSON (``bench/bench_vulns.py``). A record is rarely above 1 MB (Red Hat's
    kernel advisories).
    """

    max_members: int = 500_000
    max_member_bytes: int = 8 << 20
    max_total_bytes: int = 4 << 30


_CONTROL = re.compile("[\x00-\x1f\x7f]").search


def _bad_path(name: str) -> str | None:
    """Why a member name is refused, or None when it is a plain relative path."""
    if not name or len(name) > 4096:
        return "empty or overlong name"
    if _CONTROL(name) is not None:
        return "control character in name"
    if "\\" in name:
        return "backslash in name"
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        return "absolute path"
    if ".." in name.split("/"):
        return "'..' in path"
    return None


class _Budget:
    """Counts members and bytes across one archive; raises when the archive is too big."""

    def __init__(self, limits: ArchiveLimits, what: str) -> None:
        self.limits = limits
        self.what = what
        self.members = 0
        self.total = 0

    def member(self) -> None:
        self.members += 1
        if self.members > self.limits.max_members:
            raise TooLargeError(f"{self.what}: more than {self.limits.max_members} members")

    def add(self, size: int) -> None:
        self.total += size
        if self.total > self.limits.max_total_bytes:
            raise TooLargeError(
                f"{self.what}: more than {self.limits.max_total_bytes} bytes decompressed"
            )


def _read_bounded(stream: IO[bytes], limit: int) -> bytes | None:
    """Read a whole member, or None as soon as it is longer than ``limit`` bytes."""
    parts = []
    size = 0
    while chunk := stream.read(min(_CHUNK, limit + 1 - size)):
        parts.append(chunk)
        size += len(chunk)
        if size > limit:
            return None
    return b"".join(parts)


def _screened(
    name: str,
    why: str | None,
    size: int,
    stats: FeedStats,
    limits: ArchiveLimits,
    declared: str = "",
) -> bool:
    """Whether a member is a record to read; a refused path (``why``), a file that is not a
    record or one over the member bound is counted in ``stats`` instead."""
    if why is not None:
        stats.skip("path", f"{name!r}: {why}")
        return False
    if not _is_record(name):
        stats.ignored += 1
        return False
    if size > limits.max_member_bytes:
        stats.skip("size", f"{name}: {size} bytes{declared}")
        return False
    return True


def _counted(
    data: bytes | None, name: str, stats: FeedStats, limits: ArchiveLimits
) -> TypeGuard[bytes]:
    """Whether a record read within its bound (None: it was longer) counts; skipped if not."""
    if data is None:
        stats.skip("size", f"{name}: more than {limits.max_member_bytes} bytes")
        return False
    return True


def iter_zip(
    source: str | Path | IO[bytes],
    stats: FeedStats,
    limits: ArchiveLimits = ArchiveLimits(),
) -> Iterator[tuple[str, bytes]]:
    """Yield the ``.json`` members of a zip as ``(name, bytes)``."""
    budget = _Budget(limits, "zip")
    try:
        archive = zipfile.ZipFile(source)
    except _ZIP_ERRORS as exc:
        raise ParseError(f"not a readable zip: {exc}") from None
    with archive:
        infos = archive.infolist()
        if len(infos) > limits.max_members:
            raise TooLargeError(f"zip: {len(infos)} members, more than {limits.max_members}")
        for info in infos:
            name = info.filename
            if info.is_dir():
                continue
            budget.member()
            why = _bad_path(name)
            mode = info.external_attr >> 16
            if why is None and stat.S_ISLNK(mode):
                why = "symbolic link"
            if not _screened(name, why, info.file_size, stats, limits, " declared"):
                continue
            try:
                data = _read_plain(archive, info, limits.max_member_bytes)
                if data is None:
                    with archive.open(info) as member:
                        data = _read_bounded(member, limits.max_member_bytes)
            except _ZIP_ERRORS as exc:
                # a corrupt member (bad CRC, lying sizes, unknown compression): skip it
                stats.skip("corrupt", f"{name}: unreadable member: {exc}")
                continue
            if not _counted(data, name, stats, limits):
                continue
            budget.add(len(data))
            yield name, data


# Local file header: signature, versions, flags, method, time, date, CRC, sizes, name
# and extra field lengths (the central directory's sizes and CRC are the ones used).
_LOCAL_HEADER = struct.Struct("<4s2B4HL2L2H")
_UNREADABLE_FLAGS = 0x1 | 0x20 | 0x40  # encrypted, compressed patched data, strong encryption
_UTF8_NAME = 0x800


def _read_plain(archive: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int) -> bytes | None:
    """A stored or deflated member read in one piece, or None to read it through
    ``zipfile`` (anything else, or anything that is not exactly as declared).

    Why: a feed is tens of thousands of small members, and ``zipfile``'s stream objects
    cost more per member than decompressing it. This returns only what ``zipfile`` would
    return: a local header with the directory's name, the whole deflate stream giving
    exactly the declared size, the declared CRC. Every other case, damaged or merely
    unusual, goes the ``zipfile`` way, whose errors and bounds then apply as they are.
    """
    fp = archive.fp
    if (
        fp is None
        or info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)
        or info.flag_bits & _UNREADABLE_FLAGS
        or info.file_size > limit
        or info.compress_size > limit + (limit >> 8) + 1024  # deflate's worst expansion
    ):
        return None
    fp.seek(info.header_offset)
    header = fp.read(_LOCAL_HEADER.size)
    if len(header) != _LOCAL_HEADER.size:
        return None
    magic, _, _, flags, _, _, _, _, _, _, name_length, extra_length = _LOCAL_HEADER.unpack(header)
    if magic != b"PK\x03\x04":
        return None
    name = fp.read(name_length)
    try:
        text = name.decode("utf-8" if flags & _UTF8_NAME else "cp437")
    except UnicodeDecodeError:
        return None
    if text != info.orig_filename:
        return None
    fp.seek(extra_length, os.SEEK_CUR)
    raw = fp.read(info.compress_size)
    if len(raw) != info.compress_size:
        return None
    if info.compress_type == zipfile.ZIP_DEFLATED:
        inflate = zlib.decompressobj(-15)
        data = inflate.decompress(raw, info.file_size + 1)
        if not inflate.eof:
            return None
    else:
        data = raw
    if len(data) != info.file_size or zlib.crc32(data) != info.CRC:
        return None
    return data


def iter_tar(
    source: IO[bytes],
    stats: FeedStats,
    limits: ArchiveLimits = ArchiveLimits(),
) -> Iterator[tuple[str, bytes]]:
    """Yield the ``.json`` members of a tarball (plain, gz, xz, bz2 or zst) in stream order.

    The decompressed stream is bounded by ``max_total_bytes`` (headers included), so a
    bomb stops with ``TooLargeError`` however it is built. The members come from the
    tar reader mirrors' databases are read with (``patchwatch.domain.repodata.tarstream``):
    a member is read only when it is a regular ``.json`` file with a plain path and a
    declared size within ``max_member_bytes``.
    """
    budget = _Budget(limits, "tar")
    raw = open_decompressed(source, "auto", limits.max_total_bytes, name="tar")
    for member in iter_tar_members(raw, _readable_record, limits.max_member_bytes, "tarball"):
        if member.kind == "directory":
            continue
        budget.member()
        name = member.name
        why = _bad_path(name)
        if why is None and member.kind not in ("file", "oversized"):
            why = "not a regular file (link, device or fifo)"
        if not _screened(name, why, member.size, stats, limits) or member.data is None:
            continue
        budget.add(len(member.data))
        yield name, member.data


def _is_record(name: str) -> bool:
    return name.endswith(".json")


def _readable_record(name: str) -> bool:
    return _is_record(name) and _bad_path(name) is None


def iter_folder(
    root: str | Path,
    stats: FeedStats,
    limits: ArchiveLimits = ArchiveLimits(),
) -> Iterator[tuple[str, bytes]]:
    """Yield the ``.json`` files under a folder (a checkout), sorted, links never followed.

    Names are relative to ``root``. Hidden folders (``.git``) are not entered.
    """
    budget = _Budget(limits, str(root))
    base = Path(root)
    if not base.is_dir():
        raise ParseError(f"{root}: not a folder")
    for dirpath, dirnames, filenames in os.walk(base, followlinks=False):
        kept = []
        for d in sorted(dirnames):
            if d.startswith("."):
                continue
            if os.path.islink(os.path.join(dirpath, d)):
                stats.skip("path", f"{Path(dirpath, d).relative_to(base).as_posix()!r}: "
                           "symbolic link to a folder, not entered")  # fmt: skip
                continue
            kept.append(d)
        dirnames[:] = kept
        for filename in sorted(filenames):
            path = Path(dirpath, filename)
            name = path.relative_to(base).as_posix()
            budget.member()
            st = path.lstat()
            special = (
                None
                if stat.S_ISREG(st.st_mode)
                else "not a regular file (symbolic link or special)"
            )
            if not _screened(name, special, st.st_size, stats, limits):
                continue
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
            with os.fdopen(fd, "rb") as f:
                data = _read_bounded(f, limits.max_member_bytes)
            if not _counted(data, name, stats, limits):
                continue
            budget.add(len(data))
            yield name, data


def iter_members(
    source: str | Path,
    stats: FeedStats,
    limits: ArchiveLimits = ArchiveLimits(),
) -> Iterator[tuple[str, bytes]]:
    """Yield the records of a folder, a zip or a tarball, told apart by their content."""
    path = Path(source)
    if path.is_dir():
        yield from iter_folder(path, stats, limits)
        return
    with path.open("rb") as f:
        head = f.read(8)
        f.seek(0)
        if head.startswith(_ZIP_MAGIC):
            yield from iter_zip(f, stats, limits)
        elif sniff_kind(head) != "plain" or _looks_like_tar(f):
            yield from iter_tar(f, stats, limits)
        else:
            raise ParseError(f"{source}: neither a zip, a tarball nor a folder")


def _looks_like_tar(f: IO[bytes]) -> bool:
    """An uncompressed tarball has ``ustar`` at offset 257 of its first header."""
    header = f.read(512)
    f.seek(0)
    return len(header) == 512 and header[257:262] == b"ustar"
