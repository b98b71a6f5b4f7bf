"""Pure parsers for apt repository metadata: Release/InRelease and Packages indexes.

The mirror refresh downloads ``InRelease``, checks its signature with gpgv (I/O, done
elsewhere; :func:`compute_gpgv_command` only builds the argument list), reads the size
and hash of the ``Packages`` file from it, and skips everything else when that hash is
unchanged. Only then is the index downloaded, decompressed
(``patchwatch.domain.repodata.compression``) and streamed through :func:`parse_packages`.

:func:`parse_packages` is a hand-written bytes parser rather than python-debian's
deb822: it reads only the five fields patchwatch needs and decodes nothing else,
several times faster (bench/bench_parse_apt.py; docs/performance.md).
"""

from __future__ import annotations

import datetime as dt
import email.utils
import re
from collections.abc import Iterable
from collections.abc import Iterator
from collections.abc import Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import IO

from patchwatch.domain.errors import ParseError
from patchwatch.domain.limits import MAX_ARCH
from patchwatch.domain.limits import MAX_RELEASE
from patchwatch.domain.limits import MAX_RELEASE_FIELD
from patchwatch.domain.limits import MAX_SOURCE
from patchwatch.domain.limits import MAX_URL
from patchwatch.domain.limits import MAX_VERSION
from patchwatch.domain.records import AvailablePackage
from patchwatch.domain.records import PackageKind
from patchwatch.domain.repodata.bounds import Skipped
from patchwatch.domain.repodata.bounds import bounded_package
from patchwatch.domain.repodata.bounds import short
from patchwatch.domain.repodata.model import RELEASE_HASHES
from patchwatch.domain.repodata.model import ReleaseFile
from patchwatch.domain.repodata.model import ReleaseFileEntry
from patchwatch.domain.versions import split_release

__all__ = [
    "GpgvStatus",
    "compute_gpgv_command",
    "extract_signed_text",
    "is_security_release",
    "parse_deb_version",
    "parse_gpgv_status",
    "parse_packages",
    "parse_release",
    "read_lines",
]

_BEGIN_SIGNED = "-----BEGIN PGP SIGNED MESSAGE-----"
_BEGIN_SIGNATURE = "-----BEGIN PGP SIGNATURE-----"
_END_SIGNATURE = "-----END PGP SIGNATURE-----"
_HEX_LENGTHS = {"MD5Sum": 32, "SHA1": 40, "SHA256": 64, "SHA512": 128}
_HEX = re.compile(r"[0-9a-fA-F]+")
_DPKG_MAX_EPOCH = 2**31 - 1  # dpkg stores the epoch in an int
_FIELD_NAME = re.compile(r"[!-9;-~][!-9;-~]*")  # deb822: printable, no colon, no space
#: files one checksum table of a Release may list (Ubuntu's list about 1,500)
MAX_RELEASE_FILES = 100_000
#: longest line of a Packages index kept whole; the rest of a longer one is dropped
#: unread (no field patchwatch keeps is that long, so the stanza is then skipped)
MAX_LINE = 64 * 1024
#: longest Version field that can split within the epoch, version and release bounds
_MAX_DEB_VERSION = 10 + 1 + MAX_VERSION + 1 + MAX_RELEASE


# --------------------------------------------------------------------------- InRelease


def extract_signed_text(text: str) -> str:
    """Return the signed message of an OpenPGP cleartext-signed document (an InRelease).

    The result is byte for byte what ``gpgv --output`` writes, which is also the
    separately published ``Release`` file: lines are dash-unescaped and each ends with
    a newline. Anything outside the armour other than blank lines is refused, as is a
    second signed message: apt has had vulnerabilities (CVE-2013-1051, CVE-2019-3462
    style injections) from parsers that read text the signature did not cover.

    This does not check the signature. The refresh must verify it with gpgv, and the
    safest input for :func:`parse_release` is then gpgv's own ``--output``.
    """
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    lines = [line.removesuffix("\r") for line in lines]
    i = 0
    while i < len(lines) and not lines[i].strip():
        i += 1
    if i >= len(lines) or lines[i].rstrip() != _BEGIN_SIGNED:
        raise ParseError(f"does not start with {_BEGIN_SIGNED!r}", f"line {i + 1}")
    i += 1
    # Armour headers ("Hash: SHA256") up to the first empty line.
    while i < len(lines) and lines[i].strip():
        key, sep, _ = lines[i].partition(":")
        if not sep or not key or " " in key:
            raise ParseError("malformed armour header", f"line {i + 1}")
        i += 1
    if i >= len(lines):
        raise ParseError("no signed text after the armour headers", f"line {i + 1}")
    i += 1
    body: list[str] = []
    while True:
        if i >= len(lines):
            raise ParseError(f"no {_BEGIN_SIGNATURE!r} after the signed text", f"line {i + 1}")
        line = lines[i]
        if line.startswith("-"):
            if line.startswith("- "):
                body.append(line[2:])
            elif line.rstrip() == _BEGIN_SIGNATURE:
                break
            else:
                raise ParseError("line starting with '-' is not dash-escaped", f"line {i + 1}")
        else:
            body.append(line)
        i += 1
    i += 1
    while i < len(lines) and lines[i].rstrip() != _END_SIGNATURE:
        if lines[i].startswith("-----"):
            raise ParseError("unexpected armour line inside the signature", f"line {i + 1}")
        i += 1
    if i >= len(lines):
        raise ParseError(f"no {_END_SIGNATURE!r}", f"line {i + 1}")
    for j in range(i + 1, len(lines)):
        if lines[j].strip():
            raise ParseError("text after the end of the signature", f"line {j + 1}")
    if not body:
        raise ParseError("empty signed text", "line 1")
    return "\n".join(body) + "\n"


def compute_gpgv_command(
    signed: str,
    keyrings: Sequence[str],
    data: str | None = None,
    output: str | None = None,
    status_fd: int = 1,
    gpgv: str = "gpgv",
) -> list[str]:
    """Return the gpgv argument list that verifies an InRelease (or Release + Release.gpg).

    ``signed`` is the InRelease path, or the detached Release.gpg when ``data`` (the
    Release path) is given. ``output`` makes gpgv write the verified text (use it as the
    input of :func:`parse_release`: then only what the signature covers is parsed).
    A keyring given without a slash would be looked up in ~/.gnupg by gpgv, so it is
    made explicitly relative. Status lines go to ``status_fd`` for
    :func:`parse_gpgv_status`.
    """
    if not keyrings:
        raise ValueError("at least one keyring is needed: gpgv would use ~/.gnupg")
    if output == "-" and status_fd == 1:
        raise ValueError("status and verified output cannot both go to stdout")
    cmd = [gpgv, "--status-fd", str(status_fd)]
    for keyring in keyrings:
        cmd += ["--keyring", keyring if "/" in keyring else f"./{keyring}"]
    if output is not None:
        cmd += ["--output", output]
    cmd.append(signed)
    if data is not None:
        cmd.append(data)
    return cmd


@dataclass(frozen=True, slots=True)
class GpgvStatus:
    """What gpgv's ``--status-fd`` lines say about the signatures of one file.

    ``good`` holds the primary-key fingerprints of valid signatures (VALIDSIG), so a
    repository pinned to a key can be checked against them; the other tuples hold key
    ids of signatures that are bad, made by an unknown key, or by an expired or revoked
    key.
    """

    good: tuple[str, ...] = ()
    bad: tuple[str, ...] = ()
    missing_keys: tuple[str, ...] = ()
    expired: tuple[str, ...] = ()
    revoked: tuple[str, ...] = ()

    def is_ok(self, allowed_fingerprints: Iterable[str] = ()) -> bool:
        """Return True as apt would: a valid signature and no bad one.

        With ``allowed_fingerprints``, one of the valid signatures must be by one of
        them (compared case-insensitively, spaces ignored).
        """
        if self.bad or not self.good:
            return False
        allowed = {fp.replace(" ", "").upper() for fp in allowed_fingerprints}
        return not allowed or any(fp.upper() in allowed for fp in self.good)


def parse_gpgv_status(text: str) -> GpgvStatus:
    """Parse ``[GNUPG:]`` status lines (gpg's DETAILS format) into a :class:`GpgvStatus`."""
    found: dict[str, list[str]] = {k: [] for k in ("good", "bad", "missing", "exp", "rev")}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 3 or parts[0] != "[GNUPG:]":
            continue
        keyword, args = parts[1], parts[2:]
        if keyword == "VALIDSIG":
            # VALIDSIG <fpr> <date> <ts> <expire> <ver> <res> <pk> <hash> <class> [<primary fpr>]
            found["good"].append(args[9] if len(args) >= 10 else args[0])
        elif keyword == "BADSIG":
            found["bad"].append(args[0])
        elif keyword == "NO_PUBKEY" or (keyword == "ERRSIG" and args[-1:] == ["9"]):
            found["missing"].append(args[0])
        elif keyword in ("EXPSIG", "EXPKEYSIG"):
            found["exp"].append(args[0])
        elif keyword == "REVKEYSIG":
            found["rev"].append(args[0])
    missing = tuple(dict.fromkeys(found["missing"]))
    return GpgvStatus(
        good=tuple(dict.fromkeys(found["good"])),
        bad=tuple(found["bad"]),
        missing_keys=missing,
        expired=tuple(found["exp"]),
        revoked=tuple(found["rev"]),
    )


# ----------------------------------------------------------------------------- Release


def parse_release(text: str) -> ReleaseFile:
    """Parse a ``Release`` file, or the signed part of an ``InRelease``.

    A cleartext-signed document is unwrapped with :func:`extract_signed_text` (the
    signature is not checked here). Field names are case-insensitive as in deb822; the
    MD5Sum/SHA1/SHA256/SHA512 tables become :class:`ReleaseFileEntry` objects whose
    sizes must agree across tables. Malformed input raises :class:`ParseError` naming
    the line (in the signed text, for an InRelease).
    """
    stripped = text.lstrip()
    if stripped.startswith(_BEGIN_SIGNED):
        text = extract_signed_text(text)
    elif "-----BEGIN PGP" in text:
        raise ParseError("OpenPGP armour inside an unsigned Release file")
    fields: dict[str, str] = {}
    names: dict[str, str] = {}  # lower-case -> as written
    tables: dict[str, dict[str, tuple[str, int]]] = {}
    current: str | None = None  # lower-case name of the multi-line field being read
    ended_at = 0
    for lineno, raw in enumerate(text.split("\n"), 1):
        line = raw.removesuffix("\r")
        if not line.strip():
            if names:
                ended_at = ended_at or lineno
            continue
        if ended_at:
            raise ParseError("more than one paragraph in a Release file", f"line {lineno}")
        if line[0] in " \t":
            if current is None:
                raise ParseError("continuation line outside a field", f"line {lineno}")
            if current in tables:
                _add_checksum_line(tables[current], names[current], line, lineno)
            else:
                fields[names[current]] += "\n" + line.strip()
                _check_field_size(names[current], fields[names[current]], lineno)
            continue
        key, sep, value = line.partition(":")
        if not sep or not _FIELD_NAME.fullmatch(key):
            raise ParseError(f"not a 'Field: value' line: {line[:60]!r}", f"line {lineno}")
        lower = key.lower()
        if lower in names:
            raise ParseError(f"duplicate field {key!r}", f"line {lineno}")
        names[lower] = key
        current = lower
        value = value.strip()
        canonical = _HASH_FIELDS.get(lower)
        if canonical is not None:
            if value:
                raise ParseError(f"{key}: text after the field name", f"line {lineno}")
            names[lower] = canonical
            tables[lower] = {}
        else:
            fields[key] = value
            _check_field_size(key, value, lineno)
    if not names:
        raise ParseError("empty Release file")
    return _build_release(fields, names, tables)


_HASH_FIELDS = {name.lower(): name for name in RELEASE_HASHES}


def _check_field_size(name: str, value: str, lineno: int) -> None:
    if len(value) > MAX_RELEASE_FIELD:
        raise ParseError(f"{name} longer than {MAX_RELEASE_FIELD} characters", f"line {lineno}")


def _add_checksum_line(
    table: dict[str, tuple[str, int]], hash_name: str, line: str, lineno: int
) -> None:
    parts = line.split()
    if len(parts) != 3:
        raise ParseError(f"{hash_name} line is not '<hash> <size> <path>'", f"line {lineno}")
    digest, size_text, path = parts
    if len(digest) != _HEX_LENGTHS[hash_name] or not _HEX.fullmatch(digest):
        raise ParseError(f"{hash_name} hash {digest[:20]!r} is not valid hex", f"line {lineno}")
    if not size_text.isdigit() or not size_text.isascii() or len(size_text) > 19:
        raise ParseError(f"size {size_text[:20]!r} is not a number", f"line {lineno}")
    if len(path) > MAX_URL:
        raise ParseError(f"{hash_name} path longer than {MAX_URL} characters", f"line {lineno}")
    if path in table:
        raise ParseError(f"{short(path)!r} listed twice in {hash_name}", f"line {lineno}")
    if len(table) >= MAX_RELEASE_FILES:
        raise ParseError(f"{hash_name} lists more than {MAX_RELEASE_FILES} files", f"line {lineno}")
    table[path] = (digest.lower(), int(size_text))


def _build_release(
    fields: dict[str, str], names: dict[str, str], tables: dict[str, dict[str, tuple[str, int]]]
) -> ReleaseFile:
    lower = {k.lower(): v for k, v in fields.items()}
    entries: dict[str, tuple[int, dict[str, str]]] = {}
    for table_key, table in tables.items():
        hash_name = names[table_key]
        for path, (digest, size) in table.items():
            known = entries.get(path)
            if known is None:
                entries[path] = (size, {hash_name: digest})
            elif known[0] != size:
                raise ParseError(
                    f"{path!r} has size {size} in {hash_name} but {known[0]} elsewhere",
                    hash_name,
                )
            else:
                known[1][hash_name] = digest
    files = {
        path: ReleaseFileEntry(path=path, size=size, hashes=MappingProxyType(hashes))
        for path, (size, hashes) in entries.items()
    }
    return ReleaseFile(
        origin=lower.get("origin", ""),
        label=lower.get("label", ""),
        suite=lower.get("suite", ""),
        codename=lower.get("codename", ""),
        version=lower.get("version", ""),
        date=_parse_date(lower, "date"),
        valid_until=_parse_date(lower, "valid-until"),
        architectures=tuple(lower.get("architectures", "").split()),
        components=tuple(lower.get("components", "").split()),
        acquire_by_hash=lower.get("acquire-by-hash", "").lower() == "yes",
        files=MappingProxyType(files),
        fields=MappingProxyType(dict(fields)),
    )


def _parse_date(fields: dict[str, str], name: str) -> dt.datetime | None:
    """Parse an RFC 2822 date as apt writes it ("Sat, 11 Jul 2026 10:16:37 UTC")."""
    value = fields.get(name)
    if value is None or value == "":
        return None
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError) as exc:
        raise ParseError(f"{value[:40]!r} is not an RFC 2822 date ({exc})", name) from None
    if parsed.tzinfo is None:  # "-0000" means UTC with no claim about local time
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed


def is_security_release(release: ReleaseFile) -> bool:
    """Return True when a Release file describes a security-update suite.

    Debian: Label "Debian-Security", Suite "<x>-security" (older releases: Suite
    "stable" with that label); Ubuntu: Label "Ubuntu", Suite "noble-security" (and ESM
    "jammy-apps-security", "jammy-infra-security"); derivatives follow one of the two.
    ``-updates`` and ``-backports`` suites are not security suites.
    """
    if "security" in release.label.lower():
        return True
    for name in (release.suite, release.codename):
        last = name.lower().rstrip("/").rsplit("/", 1)[-1]
        if last.endswith("-security") or last == "security":
            return True
    return False


# ---------------------------------------------------------------------------- Packages


def parse_deb_version(version: str, where: str | None = None) -> tuple[str, str, str]:
    """Split a dpkg version into (epoch, upstream, revision) as dpkg does.

    The epoch is everything before the first colon and must be a number; the revision is
    after the last hyphen. An epoch of 0 is the same version as no epoch, so it is
    returned as "" and leading zeros are dropped: the canonical form host reports are
    normalised to (``patchwatch.domain.reports``), so installed and available records compare
    equal.
    """
    if not version or not version.isprintable() or " " in version:
        raise ParseError(f"invalid version {version[:60]!r}", where)
    epoch, colon, rest = version.partition(":")
    if colon:
        if not epoch.isdigit() or not epoch.isascii():
            raise ParseError(f"epoch of version {version[:60]!r} is not a number", where)
        if len(epoch.lstrip("0")) > 10 or int(epoch) > _DPKG_MAX_EPOCH:
            raise ParseError(f"epoch of version {version[:60]!r} is too big", where)
        epoch = epoch.lstrip("0")
    else:
        epoch, rest = "", version
    upstream, revision = split_release(
        rest, lambda reason: ParseError(f"{reason} in version {version[:60]!r}", where),
        "empty upstream part", "empty revision",
    )  # fmt: skip
    return epoch, upstream, revision or ""


# Field name -> slot. Canonical, lower and upper spellings: deb822 names are
# case-insensitive, and listing the variants costs nothing per line.
_SLOTS: dict[bytes, int] = {}
for _slot, _name in enumerate((b"Package", b"Version", b"Architecture", b"Source", b"Filename")):
    for _variant in (_name, _name.lower(), _name.upper()):
        _SLOTS[_variant] = _slot
_SLOT_NAMES = ("Package", "Version", "Architecture", "Source", "Filename")
_CONTINUATION = frozenset((b" ", b"\t"))


def read_lines(stream: IO[bytes], max_line: int = MAX_LINE) -> Iterator[bytes]:
    """Yield the lines of ``stream`` for :func:`parse_packages`, none longer than ``max_line``.

    A longer line yields its first ``max_line`` bytes (without a newline) and the rest
    is read and dropped, so that an index of one endless line costs no more memory
    than one of short lines: iterating the stream would hold each line whole.
    """
    readline = stream.readline
    while line := readline(max_line):
        yield line
        if len(line) == max_line and not line.endswith(b"\n"):
            while (rest := readline(max_line)) and not rest.endswith(b"\n"):
                pass


def parse_packages(
    lines: Iterable[bytes], skipped: Skipped | None = None
) -> Iterator[AvailablePackage]:
    """Stream :class:`AvailablePackage` records from the lines of a Packages index.

    ``lines`` is any iterable of byte lines (:func:`read_lines` of a decompressing
    reader from ``open_decompressed`` is the bounded one). Only Package, Version,
    Architecture, Source and Filename are read; continuation lines of other fields are
    skipped without decoding. ``Source: name (version)`` gives the source name. A
    stanza missing Package, Version or Architecture, a duplicated field, a line that
    is not a field, or an invalid version raises :class:`ParseError` naming the line.
    A stanza with a field over its bound (``patchwatch.domain.repodata.bounds``) is left out
    and counted in ``skipped``.
    """
    if skipped is None:
        skipped = Skipped()
    values: list[bytes | None] = [None, None, None, None, None]
    strings: dict[bytes, str] = {}  # one str per distinct arch/source: ~10% less memory
    start = 0  # line number of the current stanza's first line; 0 between stanzas
    lineno = 0
    slots = _SLOTS
    continuation = _CONTINUATION
    for line in lines:
        lineno += 1
        if line[:1] in continuation:
            if not start:
                raise ParseError("continuation line outside a stanza", f"line {lineno}")
            continue
        key, sep, value = line.partition(b":")
        if not sep:
            if line.strip():
                text = line[:60].decode("utf-8", "replace").rstrip()
                raise ParseError(f"not a 'Field: value' line: {text!r}", f"line {lineno}")
            if start:
                available = _make_available(values, start, strings, skipped)
                if available is not None:
                    yield available
                values = [None, None, None, None, None]
                start = 0
            continue
        if not start:
            start = lineno
        slot = slots.get(key)
        if slot is not None:
            if values[slot] is not None:
                raise ParseError(f"duplicate field {_SLOT_NAMES[slot]}", f"line {lineno}")
            values[slot] = value.strip()
    if start:
        available = _make_available(values, start, strings, skipped)
        if available is not None:
            yield available


def _cached(strings: dict[bytes, str], value: bytes, limit: int) -> str:
    """Decode ``value``, sharing one str per distinct short value (never a long one)."""
    if len(value) > limit:
        return value.decode()
    return strings.get(value) or strings.setdefault(value, value.decode())


def _make_available(
    values: list[bytes | None], start: int, strings: dict[bytes, str], skipped: Skipped
) -> AvailablePackage | None:
    where = f"stanza at line {start}"
    try:
        name_b, version_b, arch_b, source_b, filename_b = values
        if not name_b:
            raise ParseError("missing Package field", where)
        name = name_b.decode()
        where = f"stanza at line {start} (Package {short(name)})"
        if not version_b:
            raise ParseError("missing Version field", where)
        if not arch_b:
            raise ParseError("missing Architecture field", where)
        version = version_b.decode()
        if len(version) > _MAX_DEB_VERSION:
            skipped.add(where, f"version longer than {_MAX_DEB_VERSION} characters")
            return None
        epoch, upstream, revision = parse_deb_version(version, where)
        source = name
        if source_b:
            source_name, _, rest = source_b.partition(b" ")
            rest = rest.strip()
            if rest and not (rest.startswith(b"(") and rest.endswith(b")")):
                text = source_b[:60].decode("utf-8", "replace")
                raise ParseError(f"Source field {text!r} is not 'name (version)'", where)
            source = _cached(strings, source_name, MAX_SOURCE)
        arch = _cached(strings, arch_b, MAX_ARCH)
        filename = filename_b.decode() if filename_b else ""
        return bounded_package(
            where, skipped, PackageKind.DEB, name, epoch, upstream, revision, arch, source,
            filename,
        )  # fmt: skip
    except UnicodeDecodeError as exc:
        raise ParseError(f"field is not UTF-8 ({exc.reason})", where) from None
