"""Bounded decompression of repository indexes (gz, xz, bz2, zst or plain).

Mirrors are not trusted: a ``Packages.xz`` or ``primary.xml.zst`` may be truncated,
corrupt, or a decompression bomb. Every reader here therefore counts what it has
produced and raises :class:`~patchwatch.domain.errors.TooLargeError` as soon as the output
passes the caller's limit, having never asked a decompressor for more than one chunk past
that limit (the stdlib file readers decompress incrementally with ``max_length``).
Truncated or corrupt input raises :class:`~patchwatch.domain.errors.ParseError` with the
format named, so a refresh fails with a reason instead of a traceback.

This module does no I/O of its own: callers pass bytes or an already open file object
(an HTTP body, a temporary file), and it never closes what it was given.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import sys
import zlib
from collections.abc import Callable
from typing import IO
from typing import BinaryIO
from typing import Protocol
from typing import cast

from patchwatch.domain.errors import ParseError
from patchwatch.domain.errors import TooLargeError

if sys.version_info >= (3, 14):  # pragma: no cover - stdlib zstd arrived in 3.14 (PEP 784)
    from compression.zstd import ZstdError
    from compression.zstd import ZstdFile
    from compression.zstd import compress as zstd_compress
    from compression.zstd import decompress as zstd_decompress
else:  # the official backport has the same API, including max_length and EOFError
    from backports.zstd import ZstdError
    from backports.zstd import ZstdFile
    from backports.zstd import compress as zstd_compress
    from backports.zstd import decompress as zstd_decompress

__all__ = [
    "KINDS",
    "ZstdError",
    "compute_kind",
    "decompress",
    "open_decompressed",
    "sniff_kind",
    "zstd_compress",
    "zstd_decompress",
]

#: Canonical kind names; "plain" means not compressed.
KINDS = ("gz", "xz", "bz2", "zst", "lzma", "plain")

_ALIASES = {
    "gz": "gz",
    "gzip": "gz",
    "xz": "xz",
    "lzma": "lzma",
    "bz2": "bz2",
    "bzip2": "bz2",
    "zst": "zst",
    "zstd": "zst",
    "plain": "plain",
    "none": "plain",
    "": "plain",
    "auto": "auto",
}
_SUFFIXES = {
    ".gz": "gz",
    ".xz": "xz",
    ".lzma": "lzma",
    ".bz2": "bz2",
    ".zst": "zst",
    ".zstd": "zst",
}
# Suffixes of compressors that neither apt nor createrepo_c readers here support: naming
# one is an error rather than silently reading compressed bytes as text.
_UNSUPPORTED_SUFFIXES = (".lz4", ".lz", ".z", ".br", ".7z", ".zip")

_MAGIC = (
    (b"\x1f\x8b", "gz"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"BZh", "bz2"),
    (b"\x28\xb5\x2f\xfd", "zst"),
    (b"\x5d\x00\x00", "lzma"),
)
_SNIFF_BYTES = 6
_CHUNK = 1 << 16


def compute_kind(name_or_kind: str) -> str:
    """Return the canonical compression kind for a kind name or a file name/path/URL.

    A bare kind ("xz", "gzip", "zstd", "plain", "auto") is normalised; anything else is
    treated as a file name and judged by its suffix, so both ``"xz"`` and
    ``"repodata/abc-primary.xml.xz"`` give ``"xz"`` and ``"Packages"`` gives ``"plain"``.
    By-hash paths have no suffix: pass the kind of the index entry, or ``"auto"``.
    """
    lowered = name_or_kind.strip().lower()
    if lowered in _ALIASES:
        return _ALIASES[lowered]
    path = lowered.split("?", 1)[0].split("#", 1)[0]
    dot = path.rfind(".")
    if dot < 0 or "/" in path[dot:]:
        return "plain"
    suffix = path[dot:]
    if suffix in _SUFFIXES:
        return _SUFFIXES[suffix]
    if suffix in _UNSUPPORTED_SUFFIXES:
        raise ParseError(f"unsupported compression {suffix!r}", name_or_kind)
    return "plain"


def sniff_kind(head: bytes) -> str:
    """Guess the compression kind from the first bytes (magic numbers), "plain" if none."""
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            return kind
    return "plain"


def decompress(data: bytes, name_or_kind: str, limit: int) -> bytes:
    """Decompress a whole document held in memory, refusing output beyond ``limit`` bytes.

    ``name_or_kind`` is a kind or a file name (see :func:`compute_kind`).
    """
    with open_decompressed(io.BytesIO(data), name_or_kind, limit) as reader:
        parts: list[bytes] = []
        while chunk := reader.read(1 << 20):
            parts.append(chunk)
    return b"".join(parts)


def open_decompressed(
    fileobj: IO[bytes], kind: str, limit: int, name: str = ""
) -> io.BufferedReader:
    """Wrap a binary file object so that reading it yields decompressed bytes.

    The result is a buffered binary reader: iterate it for lines (the apt parser's
    input), or hand it to an XML parser that calls ``read``. It raises
    :class:`TooLargeError` once more than ``limit`` bytes have come out and
    :class:`ParseError` when the input is corrupt or ends early. Closing it does not
    close ``fileobj``. Errors raised by ``fileobj`` itself (a network error) pass
    through unchanged, so the caller can tell a bad mirror connection from bad data.

    ``kind`` is a kind or a file name (see :func:`compute_kind`); ``name`` (default: the
    file name, if ``kind`` is one) is what error messages say was being read.
    """
    if limit < 0:
        raise ValueError("limit must be >= 0")
    source = _Source(fileobj)
    canonical = compute_kind(kind)
    if canonical == "auto":
        canonical = sniff_kind(source.peek(_SNIFF_BYTES))
    label = name or (kind if kind.strip().lower() not in _ALIASES else "")
    raw = _LimitedReader(_open_inner(source, canonical), canonical, limit, label)
    return io.BufferedReader(raw, buffer_size=_CHUNK)


class _SourceError(Exception):
    """Carries an exception raised by the caller's file object through a decompressor."""

    def __init__(self, original: BaseException) -> None:
        super().__init__(str(original))
        self.original = original


class _Source(io.RawIOBase):
    """The caller's file object, with a peek buffer and its own errors kept apart.

    The bz2 and gzip readers report corrupt data as plain ``OSError``, the same class a
    socket error has; wrapping the source's errors lets us map only the former to
    :class:`ParseError`.
    """

    def __init__(self, fileobj: IO[bytes]) -> None:
        super().__init__()
        self._fileobj = fileobj
        self._head = b""

    def readable(self) -> bool:
        return True

    def peek(self, size: int) -> bytes:
        while len(self._head) < size:
            more = self._read_source(size - len(self._head))
            if not more:
                break
            self._head += more
        return self._head[:size]

    def read(self, size: int = -1) -> bytes:
        if self._head:
            if size is None or size < 0:
                out, self._head = self._head + self._read_source(-1), b""
                return out
            out, self._head = self._head[:size], self._head[size:]
            return out
        return self._read_source(size)

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def _read_source(self, size: int) -> bytes:
        try:
            data = self._fileobj.read(size)
        except Exception as exc:
            raise _SourceError(exc) from exc
        if data is None:  # a non-blocking raw stream with nothing ready
            return b""
        return bytes(data)


class _Reader(Protocol):
    """What _LimitedReader needs from a decompressing (or plain) reader."""

    def read(self, size: int, /) -> bytes: ...

    def close(self) -> None: ...


def _open_inner(source: _Source, kind: str) -> _Reader:
    if kind == "plain":
        return source
    fileobj = cast(BinaryIO, source)  # a readable binary stream, which is all they use
    if kind == "gz":
        return gzip.GzipFile(fileobj=fileobj, mode="rb")
    if kind in ("xz", "lzma"):
        return lzma.LZMAFile(fileobj, mode="rb", format=lzma.FORMAT_AUTO)
    if kind == "bz2":
        return bz2.BZ2File(fileobj, mode="rb")
    if kind == "zst":
        return ZstdFile(fileobj, mode="rb")
    raise ParseError(f"unknown compression kind {kind!r}")  # compute_kind prevents this


_CORRUPT_ERRORS: tuple[type[BaseException], ...] = (
    OSError,  # gzip.BadGzipFile, bz2 "Invalid data stream"
    lzma.LZMAError,
    zlib.error,
    ZstdError,
    ValueError,
)


class _LimitedReader(io.RawIOBase):
    """Count decompressed output and turn decompressor failures into domain errors."""

    def __init__(self, inner: _Reader, kind: str, limit: int, name: str) -> None:
        super().__init__()
        self._inner = inner
        self._kind = kind
        self._limit = limit
        self._name = name or None
        self._total = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        # Ask for at most one byte past the limit: enough to know it was exceeded, never
        # enough for a bomb to allocate much more than the limit.
        want = min(len(buffer), self._limit - self._total + 1)
        data = self._guarded(lambda: self._inner.read(want))
        n = len(data)
        self._total += n
        if self._total > self._limit:
            what = f"{self._name}: " if self._name else ""
            raise TooLargeError(
                f"{what}{self._kind} data decompresses to more than the limit of"
                f" {self._limit} bytes"
            )
        buffer[:n] = data
        return n

    def close(self) -> None:
        if not self.closed and not isinstance(self._inner, _Source):
            self._guarded(self._inner.close)
        super().close()

    def _guarded(self, call: Callable[[], bytes | None]) -> bytes:
        try:
            result = call()
        except _SourceError as exc:
            raise exc.original from None
        except EOFError as exc:
            message = f"truncated {self._kind} data after {self._total} bytes of output ({exc})"
            raise ParseError(message, self._name) from None
        except _CORRUPT_ERRORS as exc:
            message = f"corrupt {self._kind} data after {self._total} bytes of output ({exc})"
            raise ParseError(message, self._name) from None
        return result or b""
