"""Reading a mirror's tar archive member by member, bounded, following nothing.

Arch's repository database (``core.db``) and Alpine's ``APKINDEX.tar.gz`` are tar
archives, and a mirror is untrusted: a member may be a symbolic or hard link (to
``/etc/shadow``, or to a member read earlier), a device, or a file of gigabytes. So the
archive is read as a stream (``tarfile`` mode ``r|``: no seeking, nothing extracted to
disk), only regular files are offered to the caller, each only up to a size the caller
names, and every way ``tarfile`` can say "this is not a tar" becomes a
:class:`~patchwatch.domain.errors.ParseError`. The total is bounded by the decompressing
reader underneath (``patchwatch.domain.repodata.compression``): a tar bomb stops at its
limit with :class:`~patchwatch.domain.errors.TooLargeError`, and tar's own headers
(pax, GNU long names) are read from that bounded stream, so they cannot exceed it either.
"""

from __future__ import annotations

import tarfile
from collections.abc import Callable
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO

from patchwatch.domain.errors import ParseError

__all__ = ["Member", "base_name_in", "drain", "iter_members"]

#: what tarfile raises for a stream that is not (or no longer) a tar archive
_TAR_ERRORS: tuple[type[BaseException], ...] = (tarfile.TarError, EOFError, UnicodeError)


@dataclass(frozen=True, slots=True)
class Member:
    """One member of the archive: its name, and its bytes when the caller may read them.

    ``data`` is None for a member that is not a regular file (``kind`` says what it is:
    "link", "symlink", "device", "fifo", "directory", "other") and for a regular file
    over the size the caller allowed (``kind`` "oversized"); its content is then
    skipped unread (it still passes through the bounded decompressor).
    """

    name: str
    kind: str
    size: int
    data: bytes | None


def _kind(info: tarfile.TarInfo) -> str:
    if info.isreg():
        return "file"
    if info.isdir():
        return "directory"
    if info.issym():
        return "symlink"
    if info.islnk():
        return "link"
    if info.ischr() or info.isblk():
        return "device"
    if info.isfifo():
        return "fifo"
    return "other"


def iter_members(
    stream: IO[bytes], wanted: Callable[[str], bool] | None, max_member: int, label: str
) -> Iterator[Member]:
    """Yield every member of the tar archive read from ``stream``, in order.

    ``wanted(name)`` decides which regular files are read (None: all); the others are
    yielded with ``data`` None and kind "file" so that the caller can count them
    without their bytes being held. ``label`` names the archive in errors. The one tar
    reader of the project: mirrors' package databases and vulnerability feeds' tarballs.
    """
    try:
        # opening reads the first header, so it may fail; the with below closes it
        archive = tarfile.open(fileobj=stream, mode="r|")  # noqa: SIM115
    except _TAR_ERRORS as exc:
        raise ParseError(f"not a tar archive ({exc})", label) from None
    with archive:
        while True:
            try:
                info = archive.next()
            except _TAR_ERRORS as exc:
                raise ParseError(f"corrupt tar archive ({exc})", label) from None
            if info is None:
                return
            kind = _kind(info)
            name = info.name
            if kind != "file":
                yield Member(name, kind, 0, None)
                continue
            if info.size > max_member:
                yield Member(name, "oversized", info.size, None)
                continue
            if wanted is not None and not wanted(name):
                yield Member(name, "file", info.size, None)
                continue
            try:
                handle = archive.extractfile(info)
                data = handle.read() if handle is not None else b""
            except _TAR_ERRORS as exc:
                raise ParseError(f"corrupt tar member {name[:60]!r} ({exc})", label) from None
            if len(data) != info.size:
                raise ParseError(f"tar member {name[:60]!r} is truncated", label)
            yield Member(name, kind, info.size, data)


def base_name_in(names: frozenset[str]) -> Callable[[str], bool]:
    """``wanted`` for the members whose last path component is one of ``names``."""
    return lambda name: name.rsplit("/", 1)[-1] in names


def drain(stream: IO[bytes]) -> None:
    """Read ``stream`` to its end, so that a truncated or corrupt compressed tail fails.

    tar stops at its end-of-archive blocks; a gzip or zstd stream cut after them would
    otherwise pass unnoticed, and a cut stream is a mirror caught mid-update. The
    bounded reader underneath raises for a truncation and stops a bomb at its limit.
    """
    while stream.read(1 << 16):
        pass
