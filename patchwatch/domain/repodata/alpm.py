"""Pure parser for pacman repository databases (Arch Linux's ``core.db``, ``extra.db``).

A pacman sync database, as ``repo-add`` writes it, is a tar archive (gzip or zstd, or
none) with one directory per package, ``NAME-EPOCH:PKGVER-PKGREL/``, holding a ``desc``
file of ``%FIELD%`` sections: a line ``%NAME%``, then one value per line (several for
lists such as ``%DEPENDS%``), then a blank line. patchwatch reads ``%NAME%``,
``%VERSION%`` (``[epoch:]pkgver-pkgrel``), ``%ARCH%``, ``%BASE%`` (the pkgbase, the
source package), ``%FILENAME%``, ``%CSIZE%`` and ``%SHA256SUM%``; every other section
(descriptions, dependencies, the embedded PGP signature) is skipped.

The archive is streamed member by member (``patchwatch.domain.repodata.tarstream``):
links, devices and any member that is not a regular file are never followed, and each
one that sits where a ``desc`` should be is counted in :class:`Skipped`; a ``desc``
larger than :data:`MAX_DESC` is skipped unread and counted, as is an entry whose field
breaks a bound of ``patchwatch.domain.limits`` (``patchwatch.domain.repodata.bounds``).
A malformed entry (a required field missing, a version pacman would not build, a
directory name that disagrees with ``%NAME%`` and ``%VERSION%``, which pacman itself
calls an inconsistent database) fails the whole database with
:class:`~patchwatch.domain.errors.ParseError`, as a malformed apt stanza does.

Entries are :class:`ArchPackage` records, with what the database says beyond a
package's identity (pkgbase, file name, size, digest); the refresh
(``patchwatch.pipeline.refresh.alpm``) turns them into ``PackageKind.ARCH`` records.
Epoch is "0" when absent (pacman's own reading); the records write it as "".
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO

from patchwatch.domain.errors import ParseError
from patchwatch.domain.errors import TooLargeError
from patchwatch.domain.errors import VersionError
from patchwatch.domain.limits import MAX_EPOCH
from patchwatch.domain.limits import MAX_RELEASE
from patchwatch.domain.limits import MAX_VERSION
from patchwatch.domain.repodata.bounds import Skipped
from patchwatch.domain.repodata.bounds import package_problem
from patchwatch.domain.repodata.bounds import short
from patchwatch.domain.repodata.compression import open_decompressed
from patchwatch.domain.repodata.tarstream import base_name_in
from patchwatch.domain.repodata.tarstream import drain
from patchwatch.domain.repodata.tarstream import iter_members
from patchwatch.domain.versions_alpm import split_alpm

__all__ = ["MAX_DESC", "ArchPackage", "parse_alpm_db", "parse_desc"]

#: largest ``desc`` read; Arch's largest (long %PROVIDES% lists) are a few KiB
MAX_DESC = 256 * 1024
#: longest %VERSION% that can split within the epoch, pkgver and pkgrel bounds
_MAX_ALPM_VERSION = MAX_EPOCH + 1 + MAX_VERSION + 1 + MAX_RELEASE
_WANTED = frozenset(("desc",))
_SINGLE = ("NAME", "VERSION", "ARCH", "BASE", "FILENAME", "CSIZE", "SHA256SUM")
_SINGLE_SET = frozenset(_SINGLE)
_HEX = frozenset("0123456789abcdef")


@dataclass(frozen=True, slots=True)
class ArchPackage:
    """One package of a pacman sync database.

    ``csize`` (the package file's size) is None when the database does not say, never
    0; ``sha256`` is lower-case hex, "" when absent.
    """

    name: str
    epoch: str
    pkgver: str
    pkgrel: str
    arch: str
    base: str
    filename: str = ""
    csize: int | None = None
    sha256: str = ""

    @property
    def version(self) -> str:
        """Return ``[epoch:]pkgver-pkgrel`` as pacman prints it (no ``0:``)."""
        head = f"{self.epoch}:" if self.epoch != "0" else ""
        return f"{head}{self.pkgver}-{self.pkgrel}"


def parse_desc(
    text: bytes, where: str, wanted: frozenset[str] | None = None
) -> dict[str, list[str]]:
    """Parse one ``desc`` file into ``{FIELD: [values]}`` (sections in any order).

    Only the sections named in ``wanted`` (None: all) are decoded; the others, such as
    a package's long dependency lists and PGP signature, are only checked for shape. A
    value line outside a section, a section named twice or text that is not UTF-8
    raises :class:`ParseError`. Blank lines end a section, as in pacman's reader.
    """
    fields: dict[str, list[str]] = {}
    seen: set[bytes] = set()
    for block in text.replace(b"\r\n", b"\n").split(b"\n\n"):
        block = block.strip(b"\n")
        if not block:
            continue
        header, _, values = block.partition(b"\n")
        if len(header) < 3 or header[:1] != b"%" or header[-1:] != b"%" or b"\n\n" in values:
            raise ParseError("a line is outside a %FIELD% section", where)
        key_b = header[1:-1]
        if key_b in seen:
            raise ParseError(
                f"section %{short(key_b.decode('utf-8', 'replace'))}% appears twice", where
            )
        seen.add(key_b)
        try:
            key = key_b.decode()
            if wanted is None or key in wanted:
                fields[key] = values.decode().split("\n") if values else []
        except UnicodeDecodeError as exc:
            raise ParseError(f"desc is not UTF-8 ({exc.reason})", where) from None
    return fields


def _single(fields: dict[str, list[str]], key: str, where: str, required: bool) -> str:
    values = fields.get(key)
    if not values:
        if required:
            raise ParseError(f"no %{key}%", where)
        return ""
    if len(values) > 1:
        raise ParseError(f"%{key}% has {len(values)} values", where)
    return values[0]


def _entry(member_name: str, text: bytes, skipped: Skipped) -> ArchPackage | None:
    where = f"{short(member_name)}"
    fields = parse_desc(text, where, _SINGLE_SET)
    name, version, arch, base, filename, csize_text, sha256 = (
        _single(fields, key, where, key in ("NAME", "VERSION", "ARCH")) for key in _SINGLE
    )
    where = f"{where} (%NAME% {short(name)})"
    directory = member_name.rsplit("/", 1)[0]
    if directory != f"{name}-{version}":
        raise ParseError(f"directory name disagrees with %NAME%-%VERSION% {short(name)}", where)
    if len(version) > _MAX_ALPM_VERSION:
        skipped.add(where, f"version longer than {_MAX_ALPM_VERSION} characters")
        return None
    try:
        epoch, pkgver, pkgrel = split_alpm(version)
    except VersionError as exc:
        raise ParseError(str(exc), where) from None
    if pkgrel is None:
        raise ParseError(f"version {short(version)!r} has no pkgrel", where)
    base = base or name
    problem = package_problem(name, epoch, pkgver, pkgrel, arch, base, filename)
    if problem is not None:
        skipped.add(where, problem)
        return None
    csize: int | None = None
    if csize_text:
        if not (csize_text.isascii() and csize_text.isdigit()) or len(csize_text) > 19:
            raise ParseError(f"%CSIZE% {short(csize_text)!r} is not a size", where)
        csize = int(csize_text)
    sha256 = sha256.lower()
    if sha256 and (len(sha256) != 64 or not set(sha256) <= _HEX):
        raise ParseError(f"%SHA256SUM% {short(sha256)!r} is not a SHA-256 digest", where)
    return ArchPackage(name, epoch.lstrip("0") or "0", pkgver, pkgrel, arch, base, filename,
                       csize, sha256)  # fmt: skip


def parse_alpm_db(
    fileobj: IO[bytes],
    limit: int,
    kind: str = "auto",
    max_entries: int | None = None,
    skipped: Skipped | None = None,
    name: str = "",
) -> Iterator[ArchPackage]:
    """Stream the packages of a pacman sync database read from ``fileobj``.

    ``kind`` is the compression ("auto" sniffs gzip, zstd, xz, bzip2 or none, as pacman
    does); no more than ``limit`` bytes are decompressed (:class:`TooLargeError`
    beyond). More than ``max_entries`` package entries raise :class:`TooLargeError`.
    Entries left out are counted in ``skipped`` (see the module docstring); ``name``
    (a file name or URL) is what errors say was being read. After the last member
    the compressed stream is read to its end, so that a truncated one fails.
    """
    if skipped is None:
        skipped = Skipped()
    label = name or "pacman database"
    entries = 0
    with open_decompressed(fileobj, kind, limit, name=label) as stream:
        for member in iter_members(stream, base_name_in(_WANTED), MAX_DESC, label):
            parts = member.name.split("/")
            if len(parts) != 2 or parts[1] != "desc" or not parts[0]:
                continue  # directories, a .files database's "files", anything else
            entries += 1
            if max_entries is not None and entries > max_entries:
                raise TooLargeError(f"{label}: lists more than {max_entries} packages")
            if member.data is None:
                reason = (
                    f"desc larger than {MAX_DESC} bytes"
                    if member.kind == "oversized"
                    else f"desc is a {member.kind}, not a regular file"
                )
                skipped.add(short(member.name), reason)
                continue
            package = _entry(member.name, member.data, skipped)
            if package is not None:
                yield package
        drain(stream)
