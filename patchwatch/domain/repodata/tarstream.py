"""Reading a mirror's tar archive member by member, bounded, following nothing.

Arch's repository database (``core.db``), Alpine's ``APKINDEX.tar.gz`` and tarballs of
vulnerability feeds are tar archives, and a mirror or a feed is untrusted: a member may
be a symbolic or hard link (to ``/etc/shadow``, or to a member read earlier), a device,
or a file of gigabytes. So the
archive is read as a stream (no seeking, nothing extracted to disk), only regular files
are offered to the caller, each only up to a size the caller names, and every way an
archive can fail to be a tar becomes a :class:`~patchwatch.domain.errors.ParseError`.
The total is bounded by the decompressing reader underneath
(``patchwatch.domain.repodata.compression``): a tar bomb stops at its limit with
:class:`~patchwatch.domain.errors.TooLargeError`, and tar's own extension headers (pax,
GNU long names) are read from that bounded stream and bounded themselves.

Why not ``tarfile``: its header parsing costs about 40 microseconds a member in
Python, which for Arch's core + extra (30,000 members: a directory and a ``desc`` per
package) was most of the database's parse time (docs/performance.md). This reader
does what these archives need and no more: ustar and GNU headers (checksum checked,
octal or base-256 sizes, the ustar prefix), GNU long names (``L``), pax per-file
headers (``x``: ``path`` and ``size``; ``g`` skipped), and the end-of-archive block
or the end of the stream at a header boundary (Alpine's signature segment has no
end-of-archive blocks). Anything else is a member of kind "other", skipped unread.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO

from patchwatch.domain.errors import ParseError

__all__ = ["Member", "base_name_in", "drain", "iter_members"]

BLOCK = 512
#: largest GNU long name or pax header read; real ones are a few hundred bytes
MAX_EXTENSION = 64 * 1024
_KINDS = {
    b"0": "file", b"\0": "file", b"7": "file", b"1": "link", b"2": "symlink",
    b"3": "device", b"4": "device", b"5": "directory", b"6": "fifo",
}  # fmt: skip
_ZERO = bytes(BLOCK)


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


def _number(field: bytes, what: str, label: str) -> int:
    """A header number: octal digits (NUL/space padded), or GNU's base-256."""
    if field[:1] == b"\x80":
        return int.from_bytes(field[1:], "big")
    if field[:1] == b"\xff":
        raise ParseError(f"corrupt tar archive (negative {what})", label)
    text = field.split(b"\0", 1)[0].strip(b" ")
    if not text:
        return 0
    try:
        return int(text, 8)
    except ValueError:
        raise ParseError(f"corrupt tar archive (bad {what} {text[:20]!r})", label) from None


def _checksum_ok(header: bytes, label: str) -> bool:
    try:
        stored = _number(header[148:156], "checksum", label)
    except ParseError:
        return False
    unsigned = sum(header[:148]) + 8 * 32 + sum(header[156:])
    if stored == unsigned:
        return True
    signed = unsigned - 256 * sum(1 for b in header[:148] + header[156:] if b > 127)
    return stored == signed


def _text(field: bytes) -> str:
    return field.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


def _read_exact(stream: IO[bytes], size: int, label: str, what: str) -> bytes:
    data = stream.read(size)
    if len(data) != size:
        raise ParseError(f"tar {what} is truncated", label)
    return data


def _skip(stream: IO[bytes], size: int, label: str, what: str) -> None:
    while size > 0:
        chunk = stream.read(min(size, 1 << 16))
        if not chunk:
            raise ParseError(f"tar {what} is truncated", label)
        size -= len(chunk)


def _padded(size: int) -> int:
    return -(-size // BLOCK) * BLOCK


def _pax(data: bytes, label: str) -> dict[str, str]:
    """The ``length key=value\\n`` records of a pax extended header."""
    out: dict[str, str] = {}
    pos = 0
    while pos < len(data):
        space = data.find(b" ", pos)
        if space < 0 or not data[pos:space].isdigit():
            if not data[pos:].strip(b"\0"):
                break
            raise ParseError("corrupt tar archive (bad pax header)", label)
        length = int(data[pos:space])
        record = data[space + 1 : pos + length]
        if length <= space - pos or not record.endswith(b"\n") or b"=" not in record:
            raise ParseError("corrupt tar archive (bad pax record)", label)
        key, _, value = record[:-1].partition(b"=")
        out[key.decode("utf-8", "replace")] = value.decode("utf-8", "surrogateescape")
        pos += length
    return out


def iter_members(
    stream: IO[bytes], wanted: Callable[[str], bool] | None, max_member: int, label: str
) -> Iterator[Member]:
    """Yield every member of the tar archive read from ``stream``, in order.

    ``wanted(name)`` decides which regular files are read (None: all); the others are
    yielded with ``data`` None and kind "file" so that the caller can count them
    without their bytes being held. ``label`` names the archive in errors. The one tar
    reader of the project: mirrors' package databases and vulnerability feeds' tarballs.
    """
    first = True
    long_name: str | None = None
    pax: dict[str, str] = {}
    while True:
        header = stream.read(BLOCK)
        if not header or header == _ZERO:
            if first and not header:
                raise ParseError("not a tar archive (empty)", label)
            if long_name is not None or pax:
                raise ParseError("corrupt tar archive (extension header at the end)", label)
            return
        if len(header) != BLOCK or not _checksum_ok(header, label):
            what = "not a tar archive" if first else "corrupt tar archive"
            raise ParseError(f"{what} (bad header checksum)", label)
        first = False
        typeflag = header[156:157]
        size = _number(header[124:136], "size", label)
        if typeflag in (b"L", b"x", b"g", b"K"):
            if size > MAX_EXTENSION:
                raise ParseError(
                    f"tar extension header of {size} bytes (more than {MAX_EXTENSION})", label
                )
            data = _read_exact(stream, _padded(size), label, "extension header")[:size]
            if typeflag == b"L":
                long_name = data.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
            elif typeflag == b"x":
                pax = _pax(data, label)
            continue
        name = _text(header[0:100])
        if header[257:263] == b"ustar\0" and header[345]:
            name = _text(header[345:500]) + "/" + name
        if long_name is not None:
            name = long_name
        if "path" in pax:
            name = pax["path"]
        if "size" in pax:
            if not pax["size"].isdigit():
                raise ParseError("corrupt tar archive (bad pax size)", label)
            size = int(pax["size"])
        long_name, pax = None, {}
        kind = _KINDS.get(typeflag, "other")
        if kind == "file" and name.endswith("/"):
            kind = "directory"  # an old-style directory: a regular file type, a slash
        if kind == "directory":
            name = name.rstrip("/")
        if kind in ("link", "symlink", "device", "fifo", "directory"):
            size = 0  # their size field is not followed by data
        if kind != "file":
            _skip(stream, _padded(size), label, f"member {name[:60]!r}")
            yield Member(name, kind, 0, None)
            continue
        if size > max_member:
            _skip(stream, _padded(size), label, f"member {name[:60]!r}")
            yield Member(name, "oversized", size, None)
            continue
        if wanted is not None and not wanted(name):
            _skip(stream, _padded(size), label, f"member {name[:60]!r}")
            yield Member(name, "file", size, None)
            continue
        data = _read_exact(stream, _padded(size), label, f"member {name[:60]!r}")[:size]
        yield Member(name, kind, size, data)


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
