"""Pure parsers for rpm-md repository metadata (yum, dnf, zypper).

The refresh reads ``repomd.xml`` (:func:`parse_repomd`) to learn where ``primary`` and
``updateinfo`` are and what their checksums are, skips both when the checksums are
unchanged, and otherwise streams them through :func:`parse_primary` and
:func:`parse_updateinfo`. Mirrorlists and metalinks name the mirrors to try.

Every document comes from a mirror we do not control, so no XML reaches the parser
before expat itself has vetted its prolog: a DOCTYPE with entity declarations (billion
laughs) or an external identifier (XXE, DTD fetching) raises
:class:`~patchwatch.domain.errors.ParseError` before anything is expanded or fetched. The
tree is then built by the stdlib's C parser, about twice as fast as defusedxml's
pure-Python parser (docs/performance.md). ``primary.xml`` of a large repository is
hundreds of megabytes once decompressed; it is parsed incrementally and each
``<package>`` is cleared once read, so memory stays flat whatever the size.

``modules.yaml`` is not parsed here yet (PyYAML is not a dependency).
"""

from __future__ import annotations

import datetime as dt
import io
import xml.etree.ElementTree as ET
import xml.parsers.expat
from collections.abc import Callable
from collections.abc import Iterator
from types import MappingProxyType
from typing import IO
from typing import cast
from urllib.parse import urlsplit

from patchwatch.domain.errors import ParseError
from patchwatch.domain.limits import MAX_ADVISORY_CVES
from patchwatch.domain.limits import MAX_ADVISORY_ID
from patchwatch.domain.limits import MAX_ADVISORY_ISSUED
from patchwatch.domain.limits import MAX_ADVISORY_PACKAGES
from patchwatch.domain.limits import MAX_ADVISORY_SEVERITY
from patchwatch.domain.limits import MAX_ADVISORY_TITLE
from patchwatch.domain.limits import MAX_ADVISORY_TYPE
from patchwatch.domain.limits import MAX_CVE
from patchwatch.domain.limits import MAX_EPOCH
from patchwatch.domain.limits import MAX_URL
from patchwatch.domain.records import Advisory
from patchwatch.domain.records import AvailablePackage
from patchwatch.domain.records import Package
from patchwatch.domain.records import PackageKind
from patchwatch.domain.repodata.bounds import Skipped
from patchwatch.domain.repodata.bounds import bounded_package
from patchwatch.domain.repodata.bounds import field_problem
from patchwatch.domain.repodata.bounds import package_problem
from patchwatch.domain.repodata.bounds import short
from patchwatch.domain.repodata.model import RepoMd
from patchwatch.domain.repodata.model import RepoMdEntry

__all__ = [
    "parse_metalink",
    "parse_mirrorlist",
    "parse_primary",
    "parse_repomd",
    "parse_rpm_epoch",
    "parse_updateinfo",
]

_COMMON = "{http://linux.duke.edu/metadata/common}"
_RPM = "{http://linux.duke.edu/metadata/rpm}"
_PACKAGE = _COMMON + "package"
_NAME = _COMMON + "name"
_ARCH = _COMMON + "arch"
_VERSION = _COMMON + "version"
_LOCATION = _COMMON + "location"
_FORMAT = _COMMON + "format"
_SOURCERPM = _RPM + "sourcerpm"

_MAX_EPOCH_DIGITS = MAX_EPOCH  # as patchwatch.domain.reports accepts from hosts
_XML_BASE = "{http://www.w3.org/XML/1998/namespace}base"
_CHECKSUM_TYPES = frozenset(("md5", "sha", "sha1", "sha224", "sha256", "sha384", "sha512"))
_MIRROR_SCHEMES = ("http", "https", "ftp")


# --------------------------------------------------------------------------- XML safety

_XML_CHUNK = 1 << 16
#: XML one entry (a ``<package>``, an ``<update>``) may take: the largest real ones
#: (a kernel's thousands of provides, a SUSE kernel update's pkglist) take 1-2 MB.
#: The tree holds an entry whole until it ends, so this bounds memory, with:
MAX_ENTRY_BYTES = 16 << 20
#: elements one entry may hold (kernel-core's provides: some 20,000)
MAX_ENTRY_ELEMENTS = 200_000


class _Unsafe(Exception):
    """Raised inside the guard parser's handlers; never leaves this module."""


class _RootReached(Exception):
    """The guard saw the root element: the prolog is over and was safe."""


def _guard_doctype(name: str, system_id: str | None, public_id: str | None, subset: int) -> None:
    if system_id or public_id:
        raise _Unsafe(f"DOCTYPE {name!r} refers to an external DTD")
    if subset:
        raise _Unsafe(f"DOCTYPE {name!r} has an internal subset (entity declarations)")


def _guard_entity(name: str, *_: object) -> None:
    raise _Unsafe(f"entity declaration {name!r}")


def _guard_root(name: str, _attrs: object) -> None:
    raise _RootReached


def _new_guard() -> xml.parsers.expat.XMLParserType:
    """Return an expat parser that only vets the prolog of a document.

    Entities can only be declared in a DOCTYPE, and a DOCTYPE can only stand before the
    root element; so a document whose prolog has no DOCTYPE with an internal subset or
    an external identifier can neither expand an entity (billion laughs) nor fetch
    anything (XXE): every reference other than the five predefined ones is then an
    "undefined entity" error. The guard is expat itself, the same library and encoding
    detection the tree builder uses, so the two cannot read the prolog differently.
    """
    guard = xml.parsers.expat.ParserCreate()
    guard.SetParamEntityParsing(xml.parsers.expat.XML_PARAM_ENTITY_PARSING_NEVER)
    guard.StartDoctypeDeclHandler = _guard_doctype
    guard.EntityDeclHandler = _guard_entity
    guard.StartElementHandler = _guard_root
    return guard


def _xml_error(exc: Exception, what: str) -> ParseError:
    """Translate an expat/ElementTree error into a ParseError that says where."""
    code = getattr(exc, "code", None)
    message = xml.parsers.expat.ErrorString(code) if isinstance(code, int) else str(exc)
    position = getattr(exc, "position", None)
    if position is None and isinstance(exc, xml.parsers.expat.ExpatError):
        position = (exc.lineno, exc.offset)
    where = f"{what} line {position[0]} column {position[1]}" if position else what
    return ParseError(f"malformed XML: {message}", where)


def _iterparse(
    stream: IO[bytes], what: str, entry: Callable[[str], bool] | None = None
) -> Iterator[ET.Element]:
    """Yield each element of a document at its end tag, refusing DTD tricks first.

    Each chunk goes through the guard (:func:`_new_guard`) before the C tree builder
    sees it, until the root element starts. Errors from ``stream`` itself
    (TooLargeError or ParseError from a decompressing reader, network errors) pass
    through unchanged.

    With ``entry`` (true for the tag of the document's repeated element), only
    entries are yielded, and memory stays bounded whatever the document: once the
    caller has read an entry it is cleared and dropped from the root (clearing alone
    left an empty element per entry: 85 MB for a million packages), and an entry of
    more than :data:`MAX_ENTRY_BYTES` of XML or :data:`MAX_ENTRY_ELEMENTS` elements
    raises :class:`ParseError`: a field of megabytes is not metadata, and the tree
    would hold it whole until its entry ends.
    """
    guard: xml.parsers.expat.XMLParserType | None = _new_guard()
    parser: ET.XMLPullParser[ET.Element] = ET.XMLPullParser(
        events=("start", "end") if entry is not None else ("end",)
    )
    root: ET.Element | None = None
    fed = 0  # bytes given to the parser
    entry_start = 0  # ``fed`` when the last entry ended
    elements = 0  # elements ended since then
    while True:
        chunk = stream.read(_XML_CHUNK)
        fed += len(chunk)
        try:
            if guard is not None:
                try:
                    guard.Parse(chunk, not chunk)
                except _RootReached:
                    guard = None
                except _Unsafe as exc:
                    raise ParseError(f"refused unsafe XML: {exc}", what) from None
            if chunk:
                parser.feed(chunk)
            else:
                parser.close()
            for event, elem in cast(Iterator[tuple[str, ET.Element]], parser.read_events()):
                if entry is None:
                    yield elem
                elif event == "start":
                    if root is None:
                        root = elem
                elif entry(elem.tag):
                    yield elem
                    elem.clear()
                    if root is not None:
                        del root[:]
                    entry_start, elements = fed, 0
                else:
                    elements += 1
                    if elements > MAX_ENTRY_ELEMENTS:
                        raise ParseError(
                            f"more than {MAX_ENTRY_ELEMENTS} elements in one entry", what
                        )
            if entry is not None and fed - entry_start > MAX_ENTRY_BYTES:
                raise ParseError(f"an entry longer than {MAX_ENTRY_BYTES} bytes", what)
        except ParseError:
            raise
        except (ET.ParseError, xml.parsers.expat.ExpatError) as exc:
            raise _xml_error(exc, what) from None
        except (LookupError, ValueError) as exc:  # unknown or multi-byte declared encoding
            raise ParseError(f"unsupported XML encoding: {exc}", what) from None
        if not chunk:
            return


def _fromstring(data: bytes, what: str) -> ET.Element:
    """Parse a small document (repomd.xml, a metalink) with the same protection."""
    root: ET.Element | None = None
    for elem in _iterparse(io.BytesIO(data), what):
        root = elem  # the root element ends last
    if root is None:  # pragma: no cover - close() raises "no element found" first
        raise ParseError("empty XML document", what)
    return root


def _local(tag: str) -> str:
    """Return a tag without its namespace: updateinfo and metalink come either way."""
    return tag.rpartition("}")[2]


def _child(elem: ET.Element, name: str) -> ET.Element | None:
    for child in elem:
        if _local(child.tag) == name:
            return child
    return None


def _child_text(elem: ET.Element, name: str) -> str:
    child = _child(elem, name)
    return (child.text or "").strip() if child is not None else ""


# ------------------------------------------------------------------------------ repomd


def parse_repomd(data: bytes) -> RepoMd:
    """Parse repomd.xml into its revision and its ``<data>`` entries by type.

    A missing location or checksum, an unknown checksum type, a non-numeric size or
    timestamp, or two entries of one type raise :class:`ParseError` naming the entry.
    """
    root = _fromstring(data, "repomd.xml")
    if _local(root.tag) != "repomd":
        raise ParseError(f"root element is <{_local(root.tag)}>, not <repomd>", "repomd.xml")
    revision = _child_text(root, "revision")
    entries: dict[str, RepoMdEntry] = {}
    for index, elem in enumerate(root, 1):
        if _local(elem.tag) != "data":
            continue
        type_ = (elem.get("type") or "").strip()
        where = f"repomd.xml data[{type_}]" if type_ else f"repomd.xml data #{index}"
        if not type_:
            raise ParseError("<data> without a type", where)
        if type_ in entries:
            raise ParseError("two <data> entries of the same type", where)
        entries[type_] = _repomd_entry(elem, type_, where)
    return RepoMd(revision=revision, entries=MappingProxyType(entries))


def _repomd_entry(elem: ET.Element, type_: str, where: str) -> RepoMdEntry:
    location = _child(elem, "location")
    href = (location.get("href") or "").strip() if location is not None else ""
    if not href:
        raise ParseError("no <location href>", where)
    if len(href) > MAX_URL:
        raise ParseError(f"<location href> longer than {MAX_URL} characters", where)
    checksum_type, checksum = _checksum(_child(elem, "checksum"), "checksum", where)
    open_type, open_checksum = "", ""
    open_elem = _child(elem, "open-checksum")
    if open_elem is not None:
        open_type, open_checksum = _checksum(open_elem, "open-checksum", where)
    base = (
        location.get("{http://www.w3.org/XML/1998/namespace}base", "")
        if location is not None
        else ""
    )
    if len(base) > MAX_URL:
        raise ParseError(f"<location xml:base> longer than {MAX_URL} characters", where)
    return RepoMdEntry(
        type=type_,
        location=href,
        checksum_type=checksum_type,
        checksum=checksum,
        open_checksum_type=open_type,
        open_checksum=open_checksum,
        size=_optional_int(elem, "size", where),
        open_size=_optional_int(elem, "open-size", where),
        timestamp=_optional_int(elem, "timestamp", where),
        location_base=base.strip(),
    )


def _checksum(elem: ET.Element | None, name: str, where: str) -> tuple[str, str]:
    if elem is None:
        raise ParseError(f"no <{name}>", where)
    kind = (elem.get("type") or "").strip().lower()
    value = (elem.text or "").strip().lower()
    if kind not in _CHECKSUM_TYPES:
        raise ParseError(f"unknown <{name}> type {kind[:20]!r}", where)
    if not value or not all(c in "0123456789abcdef" for c in value):
        raise ParseError(f"<{name}> is not hexadecimal: {value[:40]!r}", where)
    return kind, value


def _optional_int(elem: ET.Element, name: str, where: str) -> int | None:
    child = _child(elem, name)
    if child is None:
        return None
    text = (child.text or "").strip()
    whole, _, fraction = text.partition(".")  # some generators write "1700000000.0"
    if (
        not whole.isdigit()
        or not whole.isascii()
        or len(whole) > 19
        or (fraction and not fraction.isdigit())
    ):
        raise ParseError(f"<{name}> is not a number: {text[:40]!r}", where)
    return int(whole)


# ----------------------------------------------------------------------------- primary


def parse_rpm_epoch(epoch: str | None, where: str) -> str:
    """Return an rpm epoch in the project's canonical form: "0" when absent, no leading zeros.

    rpm prints (and rpm-md writes) 0 for a package without an epoch, and host reports
    are normalised the same way (``patchwatch.domain.reports``), so an installed package and
    the repository's copy of it are equal records.
    """
    text = (epoch or "").strip()
    if not text:
        return "0"
    if not text.isdigit() or not text.isascii() or len(text.lstrip("0")) > _MAX_EPOCH_DIGITS:
        raise ParseError(f"epoch {text[:20]!r} is not a number of at most 16 digits", where)
    return text.lstrip("0") or "0"


def parse_primary(stream: IO[bytes], skipped: Skipped | None = None) -> Iterator[AvailablePackage]:
    """Stream the ``<package type="rpm">`` entries of primary.xml as AvailablePackages.

    ``stream`` is a binary file object (``open_decompressed`` gives one); it is read
    incrementally and each package element is dropped once converted. ``source`` is
    the source rpm file name and ``filename`` the location href. A package with a
    field over its bound (``patchwatch.domain.repodata.bounds``) is left out and counted in
    ``skipped``.
    """
    if skipped is None:
        skipped = Skipped()
    for count, elem in enumerate(_iterparse(stream, "primary.xml", _PACKAGE.__eq__), 1):
        if elem.get("type", "rpm") == "rpm":
            available = _primary_package(elem, count, skipped)
            if available is not None:
                yield available


def _primary_package(elem: ET.Element, count: int, skipped: Skipped) -> AvailablePackage | None:
    name = (elem.findtext(_NAME) or "").strip()
    where = f"primary.xml package #{count}" + (f" ({short(name)})" if name else "")
    if not name:
        raise ParseError("package without <name>", where)
    arch = (elem.findtext(_ARCH) or "").strip()
    if not arch:
        raise ParseError("package without <arch>", where)
    version = elem.find(_VERSION)
    if version is None:
        raise ParseError("package without <version>", where)
    ver = (version.get("ver") or "").strip()
    if not ver:
        raise ParseError("<version> without ver", where)
    epoch_text = (version.get("epoch") or "").strip()
    if len(epoch_text) > MAX_EPOCH:
        skipped.add(where, f"epoch longer than {MAX_EPOCH} characters")
        return None
    epoch = parse_rpm_epoch(epoch_text, where)
    release = (version.get("rel") or "").strip()
    location = elem.find(_LOCATION)
    filename = (location.get("href") or "").strip() if location is not None else ""
    fmt = elem.find(_FORMAT)
    source = (fmt.findtext(_SOURCERPM) or "").strip() if fmt is not None else ""
    return bounded_package(
        where, skipped, PackageKind.RPM, name, epoch, ver, release, arch, source, filename
    )


# -------------------------------------------------------------------------- updateinfo


def parse_updateinfo(stream: IO[bytes], skipped: Skipped | None = None) -> Iterator[Advisory]:
    """Stream the ``<update>`` entries of updateinfo.xml as Advisories.

    ``type`` is lower-cased ("security", "bugfix", "enhancement", "recommended", ...);
    ``cves`` are the ids of ``<reference type="cve">`` in document order, without
    duplicates; ``packages`` are the fixed builds of every collection. ``issued`` is the
    date as written, except that SUSE's Unix timestamps become "YYYY-MM-DD HH:MM:SS"
    UTC like everyone else's. An update with a field over its bound, or with more CVEs
    or packages than ``patchwatch.domain.limits`` allows, is left out and counted in
    ``skipped``.
    """
    if skipped is None:
        skipped = Skipped()
    for count, elem in enumerate(_iterparse(stream, "updateinfo.xml", _is_update), 1):
        advisory = _advisory(elem, count, skipped)
        if advisory is not None:
            yield advisory


def _is_update(tag: str) -> bool:
    return _local(tag) == "update"


def _advisory(elem: ET.Element, count: int, skipped: Skipped) -> Advisory | None:
    advisory_id = _child_text(elem, "id")
    where = f"updateinfo.xml update #{count}" + (f" ({short(advisory_id)})" if advisory_id else "")
    if not advisory_id:
        raise ParseError("update without <id>", where)
    issued = _child(elem, "issued")
    cves: dict[str, None] = {}
    references = _child(elem, "references")
    for ref in references if references is not None else ():
        if _local(ref.tag) == "reference" and (ref.get("type") or "").lower() == "cve":
            cve = (ref.get("id") or ref.get("title") or "").strip()
            if cve:
                cves[cve] = None
    packages: dict[Package, None] = {}
    pkglist = _child(elem, "pkglist")
    for collection in pkglist if pkglist is not None else ():
        for item in collection:
            if _local(item.tag) == "package":
                package = _advisory_package(item, where)
                if isinstance(package, str):
                    skipped.add(where, f"package {package}")
                    return None
                packages[package] = None
    advisory = Advisory(
        id=advisory_id,
        type=(elem.get("type") or "unknown").strip().lower(),
        severity=_child_text(elem, "severity"),
        title=_child_text(elem, "title"),
        issued=_issued(issued.get("date") if issued is not None else None),
        cves=tuple(cves),
        packages=tuple(packages),
    )
    problem = _advisory_problem(advisory)
    if problem is not None:
        skipped.add(where, problem)
        return None
    return advisory


def _advisory_problem(advisory: Advisory) -> str | None:
    """Say which field of an advisory breaks its bound, or None when all are within."""
    if len(advisory.cves) > MAX_ADVISORY_CVES:
        return f"more than {MAX_ADVISORY_CVES} CVEs"
    if len(advisory.packages) > MAX_ADVISORY_PACKAGES:
        return f"more than {MAX_ADVISORY_PACKAGES} packages"
    for label, value, limit in (
        ("id", advisory.id, MAX_ADVISORY_ID),
        ("type", advisory.type, MAX_ADVISORY_TYPE),
        ("severity", advisory.severity, MAX_ADVISORY_SEVERITY),
        ("title", advisory.title, MAX_ADVISORY_TITLE),
        ("issued date", advisory.issued, MAX_ADVISORY_ISSUED),
        *(("CVE id", cve, MAX_CVE) for cve in advisory.cves),
    ):
        problem = field_problem(label, value, limit)
        if problem is not None:
            return problem
    return None


def _advisory_package(item: ET.Element, where: str) -> Package | str:
    """The fixed build a ``<package>`` of a pkglist names, or why it cannot be stored."""
    name = (item.get("name") or "").strip()
    version = (item.get("version") or "").strip()
    arch = (item.get("arch") or "").strip()
    if not name or not version or not arch:
        raise ParseError("<package> needs name, version and arch attributes", where)
    epoch_text = (item.get("epoch") or "").strip()
    if len(epoch_text) > MAX_EPOCH:
        return f"epoch longer than {MAX_EPOCH} characters"
    epoch = parse_rpm_epoch(epoch_text, where)
    release = (item.get("release") or "").strip()
    problem = package_problem(name, epoch, version, release, arch)
    if problem is not None:
        return problem
    return Package(
        name=name, epoch=epoch, version=version, release=release, arch=arch,
        kind=PackageKind.RPM,
    )  # fmt: skip


def _issued(value: str | None) -> str:
    text = (value or "").strip()
    if text.isdigit() and text.isascii():
        try:
            stamp = dt.datetime.fromtimestamp(int(text), dt.UTC)
        except (ValueError, OverflowError, OSError):
            return text
        return stamp.strftime("%Y-%m-%d %H:%M:%S")
    return text


# ----------------------------------------------------------------- mirrors, metalinks


def parse_mirrorlist(text: str) -> list[str]:
    """Return the mirror URLs of a yum mirrorlist, in order, without duplicates.

    Blank lines and ``#`` comments are skipped; any other line that is not an http,
    https or ftp URL raises :class:`ParseError` (an HTML error page served in place of
    the list should fail loudly, not yield no mirrors).
    """
    urls: dict[str, None] = {}
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if not _is_mirror_url(line):
            raise ParseError(f"not a mirror URL: {line[:80]!r}", f"mirrorlist line {lineno}")
        urls[line] = None
    return list(urls)


def parse_metalink(data: bytes) -> list[str]:
    """Return the http(s)/ftp URLs of repomd.xml in a metalink, best first.

    Metalink 3 (``http://www.metalinker.org/``, as Fedora's MirrorManager serves it)
    orders by ``preference`` (higher first), Metalink 4 (RFC 5854) by ``priority``
    (lower first); ties keep document order. Only the ``<file>`` named repomd.xml is
    read when there is one. rsync and other schemes are dropped.
    """
    root = _fromstring(data, "metalink")
    if _local(root.tag) != "metalink":
        raise ParseError(f"root element is <{_local(root.tag)}>, not <metalink>", "metalink")
    files = [elem for elem in root.iter() if _local(elem.tag) == "file"]
    chosen = [f for f in files if f.get("name") == "repomd.xml"] or files
    ranked: list[tuple[float, int, str]] = []
    for file_elem in chosen:
        for elem in file_elem.iter():
            if _local(elem.tag) != "url":
                continue
            url = (elem.text or "").strip()
            if not _is_mirror_url(url):
                continue
            ranked.append((_rank(elem), len(ranked), url))
    ranked.sort()
    return list(dict.fromkeys(url for _, _, url in ranked))


def _rank(elem: ET.Element) -> float:
    """Sort key: lower is better."""
    try:
        if elem.get("preference") is not None:
            return -float(elem.get("preference", "0"))
        if elem.get("priority") is not None:
            return float(elem.get("priority", "0"))
    except ValueError:
        pass
    return 0.0


def _is_mirror_url(text: str) -> bool:
    if len(text) > MAX_URL or any(c.isspace() for c in text):
        return False
    try:
        parts = urlsplit(text)
    except ValueError:
        return False
    return parts.scheme.lower() in _MIRROR_SCHEMES and bool(parts.netloc)
