"""Pure parser for Alpine's signed repository index, ``APKINDEX.tar.gz``.

The file is two gzip members back to back. The first holds a tar *segment* (tar records
without the end-of-archive blocks) of one file, ``.SIGN.RSA.<key name>`` (an RSA PKCS#1
v1.5 signature over SHA-1) or ``.SIGN.RSA256.<key name>`` (over SHA-256), where the key
name is the file name of the public key (``alpine-devel@...-4a6a0840.rsa.pub``). What
it signs is the second gzip member, byte for byte as compressed: a tar archive of
``DESCRIPTION`` (one line, the aports revision) and ``APKINDEX``, stanzas of
``letter:value`` lines separated by blank lines: ``P`` name, ``V`` version (``pkgrel``
included, ``1.2.4-r2``), ``A`` architecture, ``o`` origin (the source package), ``C``
checksum (``Q1`` and the base64 of a SHA-1), ``S`` size, and others patchwatch ignores.
An unsigned index (a local repository, ``apk index`` without ``abuild-sign``) is the
second member alone.

:func:`parse_apkindex` finds the member boundary itself (zlib reports where the first
member ends), keeps the signature's file name and bytes and the signed member's bytes
in :class:`ApkSignature` for verification (``patchwatch.domain.repodata.apksign``; the
refresh checks them, with :func:`read_signatures`, before it parses), and streams the
index through the same bounds as the apt and rpm-md parsers: decompression bounded by
the caller's limit, tar members read without following links, a stanza with a field
over its bound left out and counted in :class:`Skipped`, a malformed stanza (``P``,
``V`` or ``A`` missing, a field given twice, a version apk would not accept, a checksum
that is not one) fails the index with :class:`~patchwatch.domain.errors.ParseError`.

Entries are :class:`ApkPackage` records, with what the index says beyond a package's
identity (origin, checksum, size); the refresh (``patchwatch.pipeline.refresh.apk``)
turns them into ``PackageKind.APK`` records.
"""

from __future__ import annotations

import base64
import binascii
import io
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from dataclasses import field
from itertools import chain

from patchwatch.domain.errors import ParseError
from patchwatch.domain.errors import TooLargeError
from patchwatch.domain.limits import MAX_RELEASE_FIELD
from patchwatch.domain.limits import MAX_VERSION
from patchwatch.domain.repodata.bounds import Skipped
from patchwatch.domain.repodata.bounds import package_problem
from patchwatch.domain.repodata.bounds import short
from patchwatch.domain.repodata.compression import open_decompressed
from patchwatch.domain.repodata.tarstream import base_name_in
from patchwatch.domain.repodata.tarstream import drain
from patchwatch.domain.repodata.tarstream import iter_members
from patchwatch.domain.versions_apk import valid_apk

__all__ = [
    "MAX_APKINDEX",
    "ApkIndex",
    "ApkPackage",
    "ApkSignature",
    "parse_apkindex",
    "parse_stanzas",
    "read_signatures",
]

#: largest signature segment (one tar header and a 512- or 4096-bit RSA signature: 1 KiB)
MAX_SIGNATURE_SEGMENT = 64 * 1024
#: largest ``APKINDEX`` member read; main + community for one arch is about 12 MB
MAX_APKINDEX = 256 * 1024 * 1024
#: longest line kept whole; the rest of a longer one is dropped (its stanza is skipped)
MAX_LINE = 64 * 1024
_SIGN_PREFIXES = {".SIGN.RSA.": "sha1", ".SIGN.RSA256.": "sha256"}
_WANTED = frozenset(("APKINDEX", "DESCRIPTION"))
_FIELDS = {b"P": 0, b"V": 1, b"A": 2, b"o": 3, b"C": 4, b"S": 5}
_LETTERS = "PVAoCS"
_CHECKSUM_SIZES = {"Q1": 20, "Q2": 32}  # apk's base64 markers: SHA-1, SHA-256


@dataclass(frozen=True, slots=True)
class ApkPackage:
    """One stanza of an APKINDEX.

    ``version`` is apk's whole version (``1.2.4-r2``: apk orders it as one string);
    ``origin`` is the source package (the name when the stanza has no ``o:``);
    ``checksum`` is as written (``Q1`` + base64), "" when absent; ``size`` is None when
    the index does not say.
    """

    name: str
    version: str
    arch: str
    origin: str
    checksum: str = ""
    size: int | None = None

    @property
    def filename(self) -> str:
        """Return the package's file name in the repository directory, as apk builds it."""
        return f"{self.name}-{self.version}.apk"


@dataclass(frozen=True, slots=True)
class ApkSignature:
    """The index signature as found, for verification with the named key.

    ``member`` is the tar member name; ``key_name`` the public key's file name;
    ``digest`` the hash the signature is over ("sha1" or "sha256"); ``signature`` the
    raw RSA signature; ``signed`` the bytes it covers (the second gzip member).
    """

    member: str
    key_name: str
    digest: str
    signature: bytes = field(repr=False)
    signed: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class ApkIndex:
    """A parsed APKINDEX.tar.gz: its description, signatures and packages in order."""

    description: str
    signatures: tuple[ApkSignature, ...]
    packages: tuple[ApkPackage, ...]


def _first_member(data: bytes, label: str) -> tuple[bytes, int] | None:
    """Return (decompressed first gzip member, its compressed length), or None.

    None means the first member is not a signature segment: its first tar header
    does not name a ``.SIGN.`` file (an unsigned index). A signature member larger
    than :data:`MAX_SIGNATURE_SEGMENT` decompressed, or cut short, is refused.
    """
    inflater = zlib.decompressobj(wbits=31)
    try:
        head = inflater.decompress(data, 512)
        if not head.startswith(b".SIGN."):
            return None
        out = head + inflater.decompress(inflater.unconsumed_tail, MAX_SIGNATURE_SEGMENT)
    except zlib.error as exc:
        raise ParseError(f"corrupt gzip data ({exc})", label) from None
    if not inflater.eof:
        if inflater.unconsumed_tail:
            raise ParseError(
                f"signature member decompresses to more than {MAX_SIGNATURE_SEGMENT} bytes",
                label,
            )
        raise ParseError("truncated gzip data in the signature member", label)
    return out, len(data) - len(inflater.unused_data)


def _signatures(segment: bytes, signed: bytes, label: str) -> tuple[ApkSignature, ...]:
    found = []
    stream = io.BytesIO(segment)
    for member in iter_members(stream, None, MAX_SIGNATURE_SEGMENT, label):
        if member.data is None:
            raise ParseError(f"signature member {short(member.name)!r} is a {member.kind}", label)
        for prefix, digest in _SIGN_PREFIXES.items():
            if member.name.startswith(prefix) and len(member.name) > len(prefix):
                key = member.name[len(prefix) :]
                found.append(ApkSignature(member.name, key, digest, member.data, signed))
                break
        else:
            raise ParseError(f"unexpected member {short(member.name)!r} before the index", label)
    if not found:
        raise ParseError("signature segment holds no signature", label)
    return tuple(found)


def read_signatures(data: bytes, name: str = "") -> tuple[ApkSignature, ...]:
    """The signatures of a whole ``APKINDEX.tar.gz``, without reading the index.

    So that a caller can check them before parsing anything the signature covers; ()
    for an unsigned index. Raises :class:`ParseError` as :func:`parse_apkindex` does
    for a broken signature member.
    """
    label = name or "APKINDEX.tar.gz"
    first = _first_member(data, label)
    if first is None:
        return ()
    segment, end = first
    if end >= len(data):
        raise ParseError("no index after the signature", label)
    return _signatures(segment, data[end:], label)


def parse_apkindex(
    data: bytes,
    limit: int,
    max_entries: int | None = None,
    skipped: Skipped | None = None,
    name: str = "",
) -> ApkIndex:
    """Parse a whole ``APKINDEX.tar.gz`` (signed or not) held in memory.

    ``data`` is the file as downloaded (its size is bounded by the fetch); no more than
    ``limit`` bytes are decompressed from the index member (:class:`TooLargeError`
    beyond), nor more than ``max_entries`` stanzas. ``name`` is what errors say was
    read. A truncated or corrupt gzip member, a tar link or device where ``APKINDEX``
    should be, or an archive without ``APKINDEX`` raise :class:`ParseError`.
    """
    if skipped is None:
        skipped = Skipped()
    label = name or "APKINDEX.tar.gz"
    signatures: tuple[ApkSignature, ...] = ()
    first = _first_member(data, label)
    index = data
    if first is not None:
        segment, end = first
        index = data[end:]
        if not index:
            raise ParseError("no index after the signature", label)
        signatures = _signatures(segment, index, label)
    description: str | None = None
    packages: list[ApkPackage] | None = None
    with open_decompressed(io.BytesIO(index), "gz", limit, name=label) as stream:
        for member in iter_members(stream, base_name_in(_WANTED), MAX_APKINDEX, label):
            if member.name not in _WANTED:
                continue
            if member.data is None:
                raise ParseError(f"{member.name} is a {member.kind}, not a regular file", label)
            if member.name == "DESCRIPTION":
                if description is not None:
                    raise ParseError("DESCRIPTION appears twice", label)
                description = _description(member.data, label)
                continue
            if packages is not None:
                raise ParseError("APKINDEX appears twice", label)
            lines = _lines(member.data)
            packages = list(parse_stanzas(lines, skipped, max_entries, label))
        drain(stream)
    if packages is None:
        raise ParseError("no APKINDEX member", label)
    return ApkIndex(description or "", signatures, tuple(packages))


def _description(data: bytes, label: str) -> str:
    try:
        text = data.decode().strip()
    except UnicodeDecodeError as exc:
        raise ParseError(f"DESCRIPTION is not UTF-8 ({exc.reason})", label) from None
    if len(text) > MAX_RELEASE_FIELD or "\x00" in text:
        raise ParseError(f"DESCRIPTION longer than {MAX_RELEASE_FIELD} characters", label)
    return text


def _lines(data: bytes) -> Iterator[bytes]:
    """Yield the lines of ``data``, each cut to :data:`MAX_LINE` bytes."""
    stream = io.BytesIO(data)
    while line := stream.readline():
        yield line[:MAX_LINE] if len(line) > MAX_LINE else line


def parse_stanzas(
    lines: Iterator[bytes] | list[bytes],
    skipped: Skipped | None = None,
    max_entries: int | None = None,
    label: str = "APKINDEX",
) -> Iterator[ApkPackage]:
    """Stream :class:`ApkPackage` records from the byte lines of an ``APKINDEX``.

    Each line is ``letter:value``; a blank line ends a stanza. Letters other than
    P, V, A, o, C and S are skipped undecoded (apk's index has about twenty).
    """
    if skipped is None:
        skipped = Skipped()
    values: list[bytes | None] = [None] * 6
    start = 0
    lineno = 0
    count = 0
    fields = _FIELDS
    for line in chain(lines, (b"",)):  # a blank line after the last ends its stanza too
        lineno += 1
        line = line.rstrip(b"\r\n")
        if not line:
            if start:
                count += 1
                if max_entries is not None and count > max_entries:
                    raise TooLargeError(f"{label}: lists more than {max_entries} packages")
                package = _package(values, f"{label} line {start}", skipped)
                if package is not None:
                    yield package
                values = [None] * 6
                start = 0
            continue
        if line[1:2] != b":":
            text = line[:60].decode("utf-8", "replace")
            raise ParseError(f"not a 'letter:value' line: {text!r}", f"{label} line {lineno}")
        if not start:
            start = lineno
        slot = fields.get(line[:1])
        if slot is not None:
            if values[slot] is not None:
                where = f"{label} line {lineno}"
                raise ParseError(f"field {_LETTERS[slot]}: given twice", where)
            values[slot] = line[2:]


def _package(values: list[bytes | None], where: str, skipped: Skipped) -> ApkPackage | None:
    name_b, version_b, arch_b, origin_b, checksum_b, size_b = values
    try:
        if not name_b:
            raise ParseError("no P: (name)", where)
        name = name_b.decode()
        where = f"{where} (P:{short(name)})"
        if not version_b:
            raise ParseError("no V: (version)", where)
        if not arch_b:
            raise ParseError("no A: (architecture)", where)
        version = version_b.decode()
        arch = arch_b.decode()
        origin = origin_b.decode() if origin_b else name
        checksum = checksum_b.decode() if checksum_b else ""
        size_text = size_b.decode() if size_b else ""
    except UnicodeDecodeError as exc:
        raise ParseError(f"field is not UTF-8 ({exc.reason})", where) from None
    problem = package_problem(name, "", version, "", arch, origin)
    if problem is None and len(version) > MAX_VERSION:  # the whole version, pkgrel included
        problem = f"version longer than {MAX_VERSION} characters"
    if problem is not None:
        skipped.add(where, problem)
        return None
    if not valid_apk(version):
        raise ParseError(f"V:{short(version)} is not an apk version", where)
    if checksum:
        _check_checksum(checksum, where)
    size: int | None = None
    if size_text:
        if not (size_text.isascii() and size_text.isdigit()) or len(size_text) > 19:
            raise ParseError(f"S:{short(size_text)} is not a size", where)
        size = int(size_text)
    return ApkPackage(name, version, arch, origin, checksum, size)


def _check_checksum(checksum: str, where: str) -> None:
    """Refuse a ``C:`` that is not ``Q1``/``Q2`` and the base64 of a digest of its size."""
    size = _CHECKSUM_SIZES.get(checksum[:2])
    try:
        raw = base64.b64decode(checksum[2:], validate=True) if size else b""
    except (binascii.Error, ValueError):
        raw = b""
    if size is None or len(raw) != size:
        raise ParseError(f"C:{short(checksum)} is not a Q1 (SHA-1) or Q2 checksum", where)
