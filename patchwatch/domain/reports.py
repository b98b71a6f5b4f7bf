"""Turn a host report, in any of the three wire formats, into one ``HostReport``.

The receiver stores raw reports first and the scheduler may re-process them later
without Flask, so parsing lives here as pure functions: ``parse_native`` (our JSON,
``schemas/report-v1.json``), ``parse_protocol1`` (Patchman's multipart form with its
quoted line grammar) and ``parse_protocol2`` (Patchman's JSON). Each one either
returns a complete record or raises ``ParseError`` whose ``where`` names the field
(``packages[12].version``) or the line (``packages line 12``), so a 400 can tell the
sender what to fix. Nothing else escapes, whatever the input: the receiver must never
answer 500 to a bad report.

Normalisations shared by all protocols (so one host reporting through two protocols
yields the same rows):

- host names are lower-cased, one trailing dot is dropped, and the domain (text after
  the first dot, "" when none) goes to ``extra["domain"]``;
- epochs are canonical numbers: dpkg prints none for epoch 0, rpm prints 0, so a deb
  package without epoch has ``epoch == ""`` and an rpm one ``epoch == "0"``; "007"
  becomes "7" because both package managers compare epochs as integers;
- package names keep their case (rpm names such as ``NetworkManager`` must match the
  repository metadata; Patchman lower-cases them and then cannot);
- identical packages, repositories or tags are reported once;
- strings that no database can store (NUL, lone surrogates) are rejected.

Patchman quirks fixed on the way in (reference section 12): an empty ``repos`` field
or list means "not collected" (``repositories is None``, the host keeps its previous
ones) instead of wiping them; ``%2b`` in protocol-2 package fields is a ``+``; apt's
two-token update lines are read, not misaligned; reported updates keep their package
format; unsupported package and repository types (Arch, Gentoo) are counted in
``extra`` instead of failing the report.

This module deliberately does not: decode bytes or JSON, decompress, authenticate,
look anything up, compare versions, or decide the host's final reboot flag.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from collections.abc import Mapping
from itertools import compress
from operator import itemgetter
from operator import not_
from urllib.parse import unquote

from patchwatch.domain.errors import ParseError
from patchwatch.domain.limits import MAX_ARCH
from patchwatch.domain.limits import MAX_EPOCH
from patchwatch.domain.limits import MAX_PACKAGE_NAME
from patchwatch.domain.limits import MAX_RELEASE
from patchwatch.domain.limits import MAX_URL
from patchwatch.domain.limits import MAX_VERSION
from patchwatch.domain.osinfo import normalise_os
from patchwatch.domain.osinfo import parse_patchman_os
from patchwatch.domain.protocols import NATIVE as PROTOCOL_NATIVE
from patchwatch.domain.protocols import PATCHMAN1 as PROTOCOL_PATCHMAN1
from patchwatch.domain.protocols import PATCHMAN2 as PROTOCOL_PATCHMAN2
from patchwatch.domain.records import HeldPackage
from patchwatch.domain.records import HostReport
from patchwatch.domain.records import Package
from patchwatch.domain.records import PackageKind
from patchwatch.domain.records import RepoKind
from patchwatch.domain.records import ReportedModule
from patchwatch.domain.records import ReportedRepository
from patchwatch.domain.records import ReportedUpdate

__all__ = [
    "PROTOCOL_NATIVE",
    "PROTOCOL_PATCHMAN1",
    "PROTOCOL_PATCHMAN2",
    "parse_hostname",
    "parse_native",
    "parse_protocol1",
    "parse_protocol2",
]

PATCHMAN_AGENT = "patchman-client"

# Limits: those of schemas/report-v1.json, applied to every protocol so that what
# reaches the store has one shape whatever door it came through (the package and URL
# limits are patchwatch.domain.limits', which mirror data shares).
MAX_HOST = 253
MAX_OS_ID = 64
MAX_OS_STRING = 1024
MAX_KERNEL = 256
MAX_TAGS = 64
MAX_TAG = 64
MAX_PACKAGES = 100_000
MAX_REPOSITORIES = 10_000
MAX_REPO_ID = 512
MAX_REPO_NAME = 512
MAX_URLS = 64
MAX_SUITE = 256
MAX_SIGNED_BY = 4096
MAX_PRIORITY = 100_000
MAX_MODULES = 10_000
MAX_MODULE_FIELD = 64
MAX_MODULE_PACKAGES = 10_000
MAX_MODULE_PACKAGE = 512
MAX_UPDATES = 100_000
MAX_HELD = 10_000
MAX_AGENT_FIELD = 64
MAX_WARNINGS = 100
MAX_WARNING = 1024

_HOST_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
_TAG_RE = re.compile(r"[A-Za-z0-9_.:/-]+")
_PCT2B_RE = re.compile("%2b", re.IGNORECASE)
_CPE_SUFFIX_RE = re.compile(r"\s*\[[^\[\]]*\]$")
_PRIORITY_RE = re.compile(r"\s*([+-]?[0-9]{1,7})(?:\s*\([^()]*\))?\s*")
_QUOTED_LINE_RE = re.compile(r"'[^']*'(?:\s+'[^']*')*")
_QUOTED_TOKEN_RE = re.compile(r"'([^']*)'")
# Architectures that end a "name.arch" token in update lists; used only to tell an apt
# two-token line from a yum line whose repository wrapped onto the next line.
# fmt: off
_KNOWN_ARCHES = frozenset((
    "x86_64", "x86_64_v2", "x86_64_v3", "i386", "i486", "i586", "i686", "athlon",
    "noarch", "src", "nosrc", "aarch64", "arm64", "armhf", "armel", "armv6hl", "armv7hl",
    "armv7l", "ppc", "ppc64", "ppc64le", "ppc64el", "s390", "s390x", "mips", "mipsel",
    "mips64el", "riscv64", "loongarch64", "ia64", "amd64", "all", "any",
))
# fmt: on

_OS_LIMITS: Mapping[str, int] = {
    "id": MAX_OS_ID,
    "version_id": 64,
    "name": 256,
    "pretty_name": 256,
    "version_codename": 64,
    "id_like": 256,
    "cpe_name": 256,
    "variant_id": 64,
}
_OS_OTHER_LIMIT = 1024

_NATIVE_PACKAGE_KEYS = frozenset({"name", "epoch", "version", "release", "arch", "type"})
# the memo key of a package object with exactly these keys (as the agent sends them):
# one tuple of six values, built in C, instead of six (key, value) pairs
_PACKAGE_VALUES = itemgetter("name", "version", "arch", "release", "epoch", "type")
_NATIVE_REPO_KEYS = frozenset(
    {
        "type",
        "id",
        "name",
        "urls",
        "mirrorlist",
        "metalink",
        "suite",
        "component",
        "arch",
        "signed_by",
        "priority",
        "enabled",
    }
)
_NATIVE_MODULE_KEYS = frozenset({"name", "stream", "version", "context", "arch", "packages"})
_NATIVE_UPDATE_KEYS = frozenset({"name", "version", "arch", "security", "repository"})
_NATIVE_HELD_KEYS = frozenset({"name", "arch"})
_PACKAGE_KINDS: Mapping[str, PackageKind] = {"deb": PackageKind.DEB, "rpm": PackageKind.RPM}
_REPO_KINDS: Mapping[str, RepoKind] = {
    "deb": RepoKind.DEB,
    "rpm": RepoKind.RPM,
    "zypper": RepoKind.ZYPPER,
}
_UNSUPPORTED_TYPES = frozenset({"arch", "gentoo"})


# --------------------------------------------------------------------------- shared


def parse_hostname(text: str, where: str = "host") -> tuple[str, str]:
    """Return ``(fqdn, domain)``: the host name lower-cased, and the text after its first dot.

    The host name is the key of a host across reports, protocols and the operator's
    commands (``token create --host``), so it is normalised once, here, for all of
    them. The rule is the schema's (a letter, digit or underscore, then letters,
    digits, ``_ . -``; at most 253 characters), which rules out empty names, spaces
    and control characters; one trailing dot (absolute FQDN) is dropped, so ``web3.``
    is ``web3``; an empty label (``web1..``, ``a..b``) is refused rather than kept as
    another host.

    :raises ParseError: when the name is not a valid host name.
    """
    if not isinstance(text, str):
        raise ParseError("must be a string", where)
    if not text:
        raise ParseError("empty host name", where)
    if len(text) > MAX_HOST:
        raise ParseError(f"host name longer than {MAX_HOST} characters", where)
    if not _HOST_RE.fullmatch(text):
        raise ParseError(
            "not a host name: letters, digits, '_', '.' and '-' only, not starting with '.' or '-'",
            where,
        )
    fqdn = text.lower()
    if fqdn.endswith("."):
        fqdn = fqdn[:-1]
    if ".." in fqdn or fqdn.endswith("."):
        raise ParseError("not a host name: an empty label ('..')", where)
    _, _, domain = fqdn.partition(".")
    return fqdn, domain


def _storable(value: str, where: str) -> None:
    """Reject text that SQLite/PostgreSQL cannot store: NUL and lone surrogates.

    Checked on whole fields so that a 1,500-line ``packages`` field costs two scans.
    """
    if "\x00" in value:
        raise ParseError("contains a NUL character", _where_at(where, value, value.index("\x00")))
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ParseError(
                "contains a lone surrogate (not UTF-8)", _where_at(where, value, exc.start)
            ) from None


def _where_at(where: str, text: str, index: int) -> str:
    """Name the line of a multi-line field ("packages line 3"), or the field itself."""
    if "\n" not in text:
        return where
    line = text.count("\n", 0, index) + 1
    return f"{where} line {line}"


def _epoch(epoch: str, kind: PackageKind, where: str) -> str:
    """Canonical epoch: deb "" for 0, rpm "0" for none (as dpkg and rpm print them)."""
    if not epoch:
        return "0" if kind is PackageKind.RPM else ""
    if len(epoch) > MAX_EPOCH or not (epoch.isascii() and epoch.isdigit()):
        raise ParseError("epoch must be up to 16 digits", where)
    value = epoch.lstrip("0")
    if not value:
        return "0" if kind is PackageKind.RPM else ""
    return value


def _text_limit(value: str, where: str, max_len: int, *, required: bool) -> str:
    """Check one string pulled out of a form or Patchman JSON."""
    if required and not value:
        raise ParseError("must not be empty", where)
    if len(value) > max_len:
        raise ParseError(f"longer than {max_len} characters", where)
    return value


def _merge_updates(
    security: list[ReportedUpdate], other: list[ReportedUpdate]
) -> tuple[ReportedUpdate, ...]:
    """Security entries first; a bugfix entry for the same name/arch/version is dropped.

    yum lists security updates in both lists; the security flag wins (reference 3.7).
    """
    seen: dict[tuple[str, str, str], ReportedUpdate] = {}
    for update in (*security, *other):
        seen.setdefault((update.name, update.arch, update.version), update)
    return tuple(seen.values())


def _split_tags(text: str) -> tuple[str, ...]:
    """Patchman tags: the sample config says space-delimited, the server splits on ','.

    Both separators are honoured, so ``tags="web db"`` gives the two tags users meant.
    """
    return tuple(dict.fromkeys(t for t in re.split(r"[,\s]+", text) if t))


def _check_tags(tags: tuple[str, ...], where: str) -> tuple[str, ...]:
    if len(tags) > MAX_TAGS:
        raise ParseError(f"more than {MAX_TAGS} tags", where)
    for tag in tags:
        if len(tag) > MAX_TAG:
            raise ParseError(f"tag longer than {MAX_TAG} characters: {tag[:20]!r}...", where)
        if not tag.isprintable():
            raise ParseError(f"tag {tag!r} contains a control character", where)
    return tags


def _printable_repository(repo: ReportedRepository, where: str) -> ReportedRepository:
    """Refuse a repository whose id, name, suite, component, architecture or URLs hold a
    line break, tab or other control character.

    These strings become the repository's key, its label in listings, metric label
    values and CSV cells, and are shown on operators' terminals: a line break in one
    forges a line of output (the CLI escapes what it shows; this keeps them out).
    """
    for name in ("id", "name", "suite", "component", "arch", "mirrorlist", "metalink"):
        value = getattr(repo, name)
        if not value.isprintable():
            raise ParseError("contains a line break or other control character", f"{where}.{name}")
    for url in repo.urls:
        if not url.isprintable():
            raise ParseError("contains a line break or other control character", f"{where}.urls")
    return repo


def _os_variant(os_string: str) -> str:
    """The detailed OS description ("Rocky Linux 9.5 (Blue Onyx)"): the string minus its CPE."""
    return _CPE_SUFFIX_RE.sub("", os_string)


def _counts(counter: Mapping[str, int]) -> str:
    return ",".join(f"{key}={counter[key]}" for key in sorted(counter))


# --------------------------------------------------------------------------- native


def parse_native(doc: object) -> HostReport:
    """Validate and convert a decoded native report (``schemas/report-v1.json``).

    Hand-written rather than jsonschema at run time: a 1,500-package report must cost a
    few milliseconds. It accepts exactly what the schema accepts (a test holds the two
    together), with two deliberate exceptions: strings containing NUL or lone surrogates
    (the store cannot keep them) and a trailing newline after a pattern-checked value
    (Python's ``$`` allows it; ECMA-262 ``$``, which the schema means, does not).

    Epochs: deb "" when absent or 0, rpm "0" when absent (see the module docstring).
    ``extra``: ``domain``, ``os_variant`` (PRETTY_NAME), ``agent_collected_at``,
    ``agent_warnings``; ``agent`` is "name/version".
    ``repositories`` absent gives ``None`` (keep the host's previous repositories).
    Priorities are taken as given: the agent already negates yum/zypper priorities.
    ``held`` (apt holds, dnf versionlock, zypper locks) absent means nothing is held:
    the agent always collects it, and a report describes the host as it is now.

    :raises ParseError: with ``where`` as a JSON path, e.g. ``packages[12].version``.
    """
    if not isinstance(doc, dict):
        raise ParseError("a report must be a JSON object")
    for key in ("version", "host", "os", "kernel", "arch", "packages"):
        if key not in doc:
            raise ParseError("is required", key)
    version = doc["version"]
    if isinstance(version, bool) or not isinstance(version, int | float) or version != 1:
        raise ParseError("unsupported report version; this server reads version 1", "version")

    hostname, domain = parse_hostname(doc["host"], "host")
    os_fields = _native_os(doc["os"])
    kernel = _native_string(doc["kernel"], "kernel", MAX_KERNEL, min_len=1)
    arch = _native_string(doc["arch"], "arch", MAX_ARCH, min_len=1)

    tags: tuple[str, ...] = ()
    if "tags" in doc:
        checked: list[str] = []
        for i, item in enumerate(_native_array(doc["tags"], "tags", MAX_TAGS)):
            tag = _native_string(item, f"tags[{i}]", MAX_TAG, min_len=1)
            if not _TAG_RE.fullmatch(tag):
                raise ParseError("tag may hold only letters, digits and _ . : / -", f"tags[{i}]")
            checked.append(tag)
        tags = tuple(dict.fromkeys(checked))

    reboot: bool | None = None
    if "reboot_required" in doc:
        reboot = doc["reboot_required"]
        if reboot is not None and not isinstance(reboot, bool):
            raise ParseError("must be true, false or null", "reboot_required")

    packages = _native_packages(doc["packages"])

    repositories: tuple[ReportedRepository, ...] | None = None
    if "repositories" in doc:
        items = _native_array(doc["repositories"], "repositories", MAX_REPOSITORIES)
        repositories = tuple(
            dict.fromkeys(
                _native_repository(item, f"repositories[{i}]") for i, item in enumerate(items)
            )
        )

    modules: tuple[ReportedModule, ...] = ()
    if "modules" in doc:
        items = _native_array(doc["modules"], "modules", MAX_MODULES)
        modules = tuple(_native_module(item, f"modules[{i}]") for i, item in enumerate(items))

    updates: tuple[ReportedUpdate, ...] | None = None
    if "updates" in doc:
        items = _native_array(doc["updates"], "updates", MAX_UPDATES)
        updates = tuple(
            dict.fromkeys(_native_update(item, f"updates[{i}]") for i, item in enumerate(items))
        )

    held: tuple[HeldPackage, ...] = ()
    if "held" in doc:
        items = _native_array(doc["held"], "held", MAX_HELD)
        held = tuple(sorted({_native_held(item, f"held[{i}]") for i, item in enumerate(items)}))

    extra = {"domain": domain}
    agent = ""
    if "agent" in doc:
        agent = _native_agent(doc["agent"], extra)
    if os_fields.get("pretty_name"):
        extra["os_variant"] = os_fields["pretty_name"]

    return HostReport(
        hostname=hostname,
        os=normalise_os(os_fields),
        kernel=kernel,
        arch=arch,
        packages=packages,
        repositories=repositories,
        tags=tags,
        reboot_required=reboot,
        modules=modules,
        updates=updates,
        held=held,
        agent=agent,
        protocol=PROTOCOL_NATIVE,
        extra=extra,
    )


def _native_string(value: object, where: str, max_len: int, *, min_len: int = 0) -> str:
    if not isinstance(value, str):
        raise ParseError("must be a string", where)
    if len(value) < min_len:
        raise ParseError("must not be empty", where)
    if len(value) > max_len:
        raise ParseError(f"longer than {max_len} characters", where)
    _storable(value, where)
    return value


def _native_array(value: object, where: str, max_items: int) -> list[object]:
    if not isinstance(value, list):
        raise ParseError("must be an array", where)
    if len(value) > max_items:
        raise ParseError(f"more than {max_items} items", where)
    return value


def _native_object(
    value: object, where: str, required: tuple[str, ...], allowed: frozenset[str]
) -> dict[object, object]:
    if not isinstance(value, dict):
        raise ParseError("must be an object", where)
    for key in required:
        if key not in value:
            raise ParseError("is required", f"{where}.{key}")
    if not allowed.issuperset(value):
        unknown = sorted(str(key) for key in value if key not in allowed)[0]
        raise ParseError("unknown field (check its spelling)", f"{where}.{unknown}")
    return value


def _native_os(value: object) -> dict[str, str]:
    if not isinstance(value, dict):
        raise ParseError("must be an object of os-release fields", "os")
    if "id" not in value:
        raise ParseError("is required", "os.id")
    fields: dict[str, str] = {}
    for key, item in value.items():
        where = f"os.{key}"
        if not isinstance(key, str):
            raise ParseError("field names must be strings", where)
        limit = _OS_LIMITS.get(key, _OS_OTHER_LIMIT)
        fields[key] = _native_string(item, where, limit, min_len=1 if key == "id" else 0)
    return fields


class _PackageMemo:
    """Package records already parsed, by their raw values.

    A fleet reports the same few thousand package builds over and over; a package
    object that passed the checks once needs only its items looked up, not checked
    and built again. Only objects that passed the checks are ever stored, and JSON
    values equal to stored strings are those strings (no number, boolean or null
    equals a string), so a hit is exactly as valid as the first parse was. The key
    of an object with exactly the six keys is the tuple of their values (a hit then
    has those keys and those values); of any other object, its (field, value) pairs,
    which never equal a tuple of strings.

    Bounded by bytes, not entries: emptied when the entries' estimated size reaches
    :attr:`LIMIT_BYTES`. Why bytes: a receiver worker keeps its memo for its whole
    life, and 500,000 entries (the bound before) of hostile long names took over a
    gigabyte that was never given back. A fleet's usual builds (about 420 bytes each,
    measured) fit many times over.

    Records are canonical: two keys that make equal records (an rpm epoch given as
    "" and as "0") share one object, so that within one ``generation`` distinct
    objects are distinct records and a report's list is deduplicated by identity.
    """

    LIMIT_BYTES = 64 * 1024 * 1024
    # an entry's cost besides its strings: key tuple, record, the two dicts' slots and
    # the strings' headers (tracemalloc: 424 bytes for an entry of 46 characters)
    ENTRY_BYTES = 320

    def __init__(self) -> None:
        self.records: dict[tuple[object, ...], Package] = {}
        self.canonical: dict[Package, Package] = {}
        self.generation = 0  # counts the times the memo was emptied
        self.size = 0  # estimated bytes held

    def remember(self, key: tuple[object, ...] | None, record: Package) -> Package:
        """Store ``record`` under ``key`` (None: do not); return the canonical record."""
        cost = self.ENTRY_BYTES + 2 * len(record.digest_line)
        if self.size + cost > self.LIMIT_BYTES:
            self.records, self.canonical = {}, {}
            self.size = 0
            self.generation += 1
        known = self.canonical.setdefault(record, record)
        if known is record or key is not None:
            self.size += cost
        if key is not None:
            self.records[key] = known
        return known


_MEMO = _PackageMemo()


def _native_packages(value: object) -> tuple[Package, ...]:
    """The hot path of a native report: 1,500 package objects, most of them seen before.

    The common case runs in C (``map``): every item an object of exactly the six keys,
    its values looked up in the memo; only the misses are checked and built one by
    one. Anything else (another shape, a wrong type) takes the item-by-item path,
    which names the field at fault.
    """
    items = _native_array(value, "packages", MAX_PACKAGES)
    generation = _MEMO.generation
    out: list[Package | None]
    try:
        if not set(map(len, items)) <= {6}:  # type: ignore[arg-type]  # TypeError: caught
            raise KeyError
        out = list(map(_MEMO.records.get, map(_PACKAGE_VALUES, items)))  # type: ignore[arg-type]
    except (TypeError, KeyError):  # not all objects of the six keys; an unhashable value
        out = [_native_item(item, i) for i, item in enumerate(items)]
    else:
        for i in compress(range(len(out)), map(not_, out)):  # the misses (None)
            out[i] = _native_item(items[i], i)
    if _MEMO.generation == generation and len(set(map(id, out))) == len(out):
        return tuple(out)  # type: ignore[arg-type]  # all canonical, all distinct
    return tuple(dict.fromkeys(out))  # type: ignore[arg-type]


def _native_item(item: object, i: int) -> Package:
    """One package object: from the memo, or checked and remembered."""
    if type(item) is not dict:
        return _MEMO.remember(None, _native_package(item, f"packages[{i}]"))
    key: tuple[object, ...]
    if len(item) == 6:
        try:
            key = _PACKAGE_VALUES(item)
        except KeyError:
            key = tuple(item.items())
    else:
        key = tuple(item.items())
    try:
        known = _MEMO.records.get(key)
    except TypeError:  # an unhashable value (array, object): the slow path says which
        return _MEMO.remember(None, _native_package(item, f"packages[{i}]"))
    if known is not None:
        return known
    get = item.get
    name, version, arch = get("name"), get("version"), get("arch")
    epoch, release, ptype = get("epoch", ""), get("release", ""), get("type")
    if (
        _NATIVE_PACKAGE_KEYS.issuperset(item)
        and type(name) is str
        and type(version) is str
        and type(arch) is str
        and type(epoch) is str
        and type(release) is str
        and type(ptype) is str
        and (kind := _PACKAGE_KINDS.get(ptype)) is not None
        and 0 < len(name) <= MAX_PACKAGE_NAME
        and 0 < len(version) <= MAX_VERSION
        and 0 < len(arch) <= MAX_ARCH
        and len(release) <= MAX_RELEASE
    ):
        joined = name + version + arch + release + epoch
        if not joined.isascii() or "\x00" in joined:
            _storable(joined, f"packages[{i}]")
        if epoch:
            epoch = _epoch(epoch, kind, f"packages[{i}].epoch")
        elif kind is PackageKind.RPM:
            epoch = "0"
        return _MEMO.remember(key, Package(name, epoch, version, release, arch, kind))
    return _MEMO.remember(None, _native_package(item, f"packages[{i}]"))


def _native_package(item: object, where: str) -> Package:
    """Slow path: check one package field by field, so the error names the field."""
    obj = _native_object(item, where, ("name", "version", "arch", "type"), _NATIVE_PACKAGE_KEYS)
    name = _native_string(obj["name"], f"{where}.name", MAX_PACKAGE_NAME, min_len=1)
    version = _native_string(obj["version"], f"{where}.version", MAX_VERSION, min_len=1)
    arch = _native_string(obj["arch"], f"{where}.arch", MAX_ARCH, min_len=1)
    release = _native_string(obj.get("release", ""), f"{where}.release", MAX_RELEASE)
    epoch = _native_string(obj.get("epoch", ""), f"{where}.epoch", MAX_EPOCH)
    ptype = obj["type"]
    if not isinstance(ptype, str) or ptype not in _PACKAGE_KINDS:
        raise ParseError('must be "deb" or "rpm"', f"{where}.type")
    kind = _PACKAGE_KINDS[ptype]
    return Package(name, _epoch(epoch, kind, f"{where}.epoch"), version, release, arch, kind)


def _native_priority(value: object, where: str) -> int:
    """JSON Schema "integer": any number with no fraction (5.0 counts), never a bool."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ParseError("must be an integer", where)
    if isinstance(value, float) and not value.is_integer():
        raise ParseError("must be an integer", where)
    if not -MAX_PRIORITY <= value <= MAX_PRIORITY:
        raise ParseError(f"must be between -{MAX_PRIORITY} and {MAX_PRIORITY}", where)
    return int(value)


def _native_repository(item: object, where: str) -> ReportedRepository:
    obj = _native_object(item, where, ("type", "id", "urls"), _NATIVE_REPO_KEYS)
    kind = _REPO_KINDS.get(obj["type"]) if isinstance(obj["type"], str) else None
    if kind is None:
        raise ParseError('must be "deb", "rpm" or "zypper"', f"{where}.type")
    repo_id = _native_string(obj["id"], f"{where}.id", MAX_REPO_ID, min_len=1)
    urls = tuple(
        _native_string(url, f"{where}.urls[{j}]", MAX_URL, min_len=1)
        for j, url in enumerate(_native_array(obj["urls"], f"{where}.urls", MAX_URLS))
    )

    def opt(key: str, limit: int) -> str:
        return _native_string(obj[key], f"{where}.{key}", limit) if key in obj else ""

    name = opt("name", MAX_REPO_NAME)
    mirrorlist = opt("mirrorlist", MAX_URL)
    metalink = opt("metalink", MAX_URL)
    suite = opt("suite", MAX_SUITE)
    component = opt("component", MAX_SUITE)
    arch = opt("arch", MAX_ARCH)
    signed_by = opt("signed_by", MAX_SIGNED_BY)
    priority = _native_priority(obj["priority"], f"{where}.priority") if "priority" in obj else 0
    enabled = obj.get("enabled", True)
    if not isinstance(enabled, bool):
        raise ParseError("must be true or false", f"{where}.enabled")
    repo = ReportedRepository(
        kind=kind,
        id=repo_id,
        name=name or repo_id,
        urls=urls,
        priority=priority,
        enabled=enabled,
        suite=suite,
        component=component,
        arch=arch,
        signed_by=signed_by,
        mirrorlist=mirrorlist,
        metalink=metalink,
    )
    return _printable_repository(repo, where)


def _native_module(item: object, where: str) -> ReportedModule:
    obj = _native_object(item, where, ("name", "stream"), _NATIVE_MODULE_KEYS)
    name = _native_string(obj["name"], f"{where}.name", MAX_PACKAGE_NAME, min_len=1)
    stream = _native_string(obj["stream"], f"{where}.stream", MAX_PACKAGE_NAME)

    def opt(key: str, limit: int) -> str:
        return _native_string(obj[key], f"{where}.{key}", limit) if key in obj else ""

    packages: tuple[str, ...] = ()
    if "packages" in obj:
        items = _native_array(obj["packages"], f"{where}.packages", MAX_MODULE_PACKAGES)
        packages = tuple(
            _native_string(nevra, f"{where}.packages[{j}]", MAX_MODULE_PACKAGE)
            for j, nevra in enumerate(items)
        )
    return ReportedModule(
        name=name,
        stream=stream,
        version=opt("version", MAX_MODULE_FIELD),
        context=opt("context", MAX_MODULE_FIELD),
        arch=opt("arch", MAX_ARCH),
        packages=packages,
    )


def _native_update(item: object, where: str) -> ReportedUpdate:
    obj = _native_object(item, where, ("name", "version", "arch", "security"), _NATIVE_UPDATE_KEYS)
    security = obj["security"]
    if not isinstance(security, bool):
        raise ParseError("must be true or false", f"{where}.security")
    repository = obj.get("repository", "")
    return ReportedUpdate(
        name=_native_string(obj["name"], f"{where}.name", MAX_PACKAGE_NAME, min_len=1),
        version=_native_string(obj["version"], f"{where}.version", MAX_VERSION, min_len=1),
        arch=_native_string(obj["arch"], f"{where}.arch", MAX_ARCH, min_len=1),
        security=security,
        repository=_native_string(repository, f"{where}.repository", MAX_REPO_ID),
    )


def _native_held(item: object, where: str) -> HeldPackage:
    obj = _native_object(item, where, ("name",), _NATIVE_HELD_KEYS)
    name = _native_string(obj["name"], f"{where}.name", MAX_PACKAGE_NAME, min_len=1)
    if "arch" not in obj:
        return HeldPackage(name)
    return HeldPackage(name, _native_string(obj["arch"], f"{where}.arch", MAX_ARCH, min_len=1))


def _native_agent(value: object, extra: dict[str, str]) -> str:
    """Return "name/version" and keep collected_at and warnings in ``extra``."""
    if not isinstance(value, dict):
        raise ParseError("must be an object", "agent")
    name = version = ""
    if "name" in value:
        name = _native_string(value["name"], "agent.name", MAX_AGENT_FIELD)
    if "version" in value:
        version = _native_string(value["version"], "agent.version", MAX_AGENT_FIELD)
    if "collected_at" in value:
        stamp = value["collected_at"]
        if isinstance(stamp, bool) or not isinstance(stamp, int | float):
            raise ParseError("must be a number (Unix time)", "agent.collected_at")
        # The schema allows any number; only a plausible Unix time is worth keeping.
        if 0 <= stamp < 1e11:
            extra["agent_collected_at"] = f"{float(stamp):.3f}"
    if "warnings" in value:
        items = _native_array(value["warnings"], "agent.warnings", MAX_WARNINGS)
        warnings = [
            _native_string(item, f"agent.warnings[{i}]", MAX_WARNING)
            for i, item in enumerate(items)
        ]
        if warnings:
            extra["agent_warnings"] = "\n".join(warnings)
    return f"{name}/{version}" if name and version else name or version


# --------------------------------------------------------------------------- Patchman


def _pct2b(value: str) -> str:
    """Undo the Patchman client's ``+`` -> ``%2b`` temp-file encoding (rpm fields).

    ``%`` is valid in neither deb nor rpm names and versions, so this is never lossy.
    """
    return _PCT2B_RE.sub("+", value) if "%" in value else value


def _priority(text: str, where: str) -> int | None:
    """Parse a priority token; None when it is not one.

    zypper may print ``99 (default)``-style annotations; they are ignored.
    """
    match = _PRIORITY_RE.fullmatch(text)
    if match is None:
        return None
    value = int(match.group(1))
    if not -MAX_PRIORITY <= value <= MAX_PRIORITY:
        raise ParseError(f"priority must be between -{MAX_PRIORITY} and {MAX_PRIORITY}", where)
    return value


def _rpm_repository(
    kind: RepoKind, name: str, repo_id: str, priority: int, urls: list[str], where: str
) -> ReportedRepository:
    """One yum/dnf or zypper repository; yum's lower-is-preferred priority is negated.

    The client mixes ``Repo-mirrors``/``Repo-metalink`` URLs into the baseurl list;
    they are told apart by their well-known shapes (``.../metalink?...``,
    ``.../mirrorlist...``, ``.../mirror.list``) so the server can follow them.
    """
    baseurls: list[str] = []
    mirrorlist = metalink = ""
    for url in urls:
        _text_limit(url, where, MAX_URL, required=True)
        lowered = url.lower()
        if not metalink and "metalink" in lowered:
            metalink = url
        elif not mirrorlist and ("mirrorlist" in lowered or lowered.endswith("mirror.list")):
            mirrorlist = url
        else:
            baseurls.append(url.rstrip("/") or url)
    if len(baseurls) > MAX_URLS:
        raise ParseError(f"more than {MAX_URLS} URLs", where)
    repo_id = repo_id or name
    _text_limit(repo_id, where, MAX_REPO_ID, required=True)
    _text_limit(name, where, MAX_REPO_NAME, required=False)
    repo = ReportedRepository(
        kind=kind,
        id=repo_id,
        name=name or repo_id,
        urls=tuple(dict.fromkeys(baseurls)),
        priority=-priority,
        mirrorlist=mirrorlist,
        metalink=metalink,
    )
    return _printable_repository(repo, where)


def _deb_repository(name: str, priority: int, url: str, where: str) -> ReportedRepository:
    """One apt repository from Patchman's ``.../dists/SUITE/COMPONENT/binary-ARCH`` URL.

    The id is built as the native agent builds it (``uri suite component``) so a host
    that moves from the Patchman client to the agent keeps its repositories; ``urls``
    holds the archive root, from which the server finds ``dists/SUITE/InRelease``.
    Flat repositories (``deb URI ./``) arrive as ``URI/./`` and get suite ``./``.
    """
    _text_limit(url, where, MAX_URL, required=True)
    _text_limit(name, where, MAX_REPO_NAME, required=False)
    clean = url.rstrip("/")
    # .../debian/dists/bookworm/main/binary-amd64, .../dists/stretch/updates/main/...;
    # string operations rather than a regex: linear on hostile 2,000-character URLs.
    cut = clean.rfind("/dists/")
    parts = clean[cut + 7 :].split("/") if cut > 0 else []
    if len(parts) >= 3 and parts[-1].startswith("binary-") and all(parts):
        base = clean[:cut].rstrip("/") or clean[:cut]
        suite, component, arch = "/".join(parts[:-2]), parts[-2], parts[-1][7:]
    else:
        base = clean[:-2] if clean.endswith("/.") else clean
        base = base.rstrip("/") or base
        suite, component, arch = "./", "", ""
    repo_id = " ".join(part for part in (base, suite, component) if part)
    if len(repo_id) > MAX_REPO_ID:
        raise ParseError(f"repository id (URL suite component) longer than {MAX_REPO_ID}", where)
    repo = ReportedRepository(
        kind=RepoKind.DEB,
        id=repo_id,
        name=name or repo_id,
        urls=(base,),
        priority=priority,
        suite=suite,
        component=component,
        arch=arch,
    )
    return _printable_repository(repo, where)


def _update_entries(text: str, field: str) -> Iterator[tuple[str, str, str, int]]:
    """Yield ``(name.arch, version, repo, line)`` from a ``sec_updates``/``bug_updates`` field.

    yum/zypper lines are ``name.arch [epoch:]version-release repo``; apt's ``-u`` mode
    writes only ``name.arch version``; old clients pass yum's wrapped output, where the
    repository can land on the next line. A third token is the repository unless it
    looks like the next ``name.arch`` (it ends in a known architecture).
    """
    tokens: list[tuple[str, int]] = []
    for lineno, line in enumerate(text.split("\n"), 1):
        tokens.extend((token, lineno) for token in line.split())
    i = 0
    while i < len(tokens):
        head, lineno = tokens[i]
        name, dot, arch = head.rpartition(".")
        if not (dot and name and arch):
            raise ParseError(f"expected name.arch, got {head[:40]!r}", f"{field} line {lineno}")
        if i + 1 >= len(tokens):
            raise ParseError(f"no version after {head[:40]!r}", f"{field} line {lineno}")
        version = tokens[i + 1][0]
        repo = ""
        step = 2
        if i + 2 < len(tokens):
            third = tokens[i + 2][0]
            _, third_dot, third_arch = third.rpartition(".")
            if not (third_dot and third_arch in _KNOWN_ARCHES):
                repo, step = third, 3
        yield head, version, repo, lineno
        i += step


def _patchman_updates(
    entries: Iterator[tuple[str, str, str, int]], field: str, security: bool
) -> list[ReportedUpdate]:
    out: list[ReportedUpdate] = []
    for head, version, repo, lineno in entries:
        where = f"{field} line {lineno}"
        name, _, arch = _pct2b(head).rpartition(".")
        out.append(
            ReportedUpdate(
                name=_text_limit(name, where, MAX_PACKAGE_NAME, required=True),
                version=_text_limit(_pct2b(version), where, MAX_VERSION, required=True),
                arch=_text_limit(arch, where, MAX_ARCH, required=True),
                security=security,
                repository=_text_limit(repo, where, MAX_REPO_ID, required=False),
            )
        )
        if len(out) > MAX_UPDATES:
            raise ParseError(f"more than {MAX_UPDATES} updates", field)
    return out


def _make_package(
    fields: list[str] | tuple[str, ...], where: str, skipped: dict[str, int]
) -> Package | None:
    """Build one package from Patchman's (name, epoch, version, release, arch, type)."""
    name, epoch, version, release, arch, ptype = fields[:6]
    kind = _PACKAGE_KINDS.get(ptype)
    if kind is None:
        if ptype in _UNSUPPORTED_TYPES:
            skipped[ptype] = skipped.get(ptype, 0) + 1
            return None
        raise ParseError(f"unknown package type {ptype[:20]!r} (deb, rpm, arch, gentoo)", where)
    if name == "gpg-pubkey":  # rpm's imported keys, not packages (Patchman skips them too)
        return None
    if "%" in name or "%" in version or "%" in release:
        name, version, release = _pct2b(name), _pct2b(version), _pct2b(release)
    if not name or len(name) > MAX_PACKAGE_NAME:
        raise ParseError(f"package name must be 1 to {MAX_PACKAGE_NAME} characters", where)
    if not version or len(version) > MAX_VERSION:
        raise ParseError(f"version must be 1 to {MAX_VERSION} characters", where)
    if len(release) > MAX_RELEASE:
        raise ParseError(f"release longer than {MAX_RELEASE} characters", where)
    if not arch or len(arch) > MAX_ARCH:
        raise ParseError(f"arch must be 1 to {MAX_ARCH} characters", where)
    return Package(name, _epoch(epoch, kind, where), version, release, arch, kind)


def _module_repositories(pairs: list[tuple[str, str]]) -> dict[str, str]:
    """``ReportedModule`` has no repository field: keep it in ``extra`` as JSON."""
    mapping = {name: repo for name, repo in pairs if repo}
    return {"module_repositories": json.dumps(mapping, sort_keys=True)} if mapping else {}


def _skipped_extra(packages: dict[str, int], repos: dict[str, int]) -> dict[str, str]:
    extra: dict[str, str] = {}
    if packages:
        extra["skipped_packages"] = _counts(packages)
    if repos:
        extra["skipped_repositories"] = _counts(repos)
    return extra


# --------------------------------------------------------------------------- protocol 1


def _quoted_fields(line: str) -> list[str] | None:
    """Split one ``'a' 'b' ''`` line into its fields; None when it is not one.

    Patchman's server deletes every quote and splits on spaces, so a value with a space
    breaks it; this reads the quotes properly. The fast path covers the client's own
    single-space output; anything else goes through the full pattern.
    """
    if len(line) >= 2 and line[0] == "'" and line[-1] == "'":
        parts = line[1:-1].split("' '")
        if line.count("'") == 2 * len(parts):
            return parts
    if _QUOTED_LINE_RE.fullmatch(line):
        return _QUOTED_TOKEN_RE.findall(line)
    return None


def _lines(text: str, field: str) -> Iterator[tuple[list[str], str]]:
    """Yield (fields, where) for each non-blank line of a quoted-line field."""
    for lineno, raw in enumerate(text.split("\n"), 1):
        line = raw.strip()
        if not line:
            continue
        fields = _quoted_fields(line)
        where = f"{field} line {lineno}"
        if fields is None:
            raise ParseError("expected space-separated 'quoted' fields", where)
        yield fields, where


def _dpkg_hold(status: str) -> bool:
    """Tell whether a dpkg status ("hold ok installed") is an installed package on hold.

    dpkg's status is "want flag state"; the want ``hold`` is what ``apt-mark hold`` and
    ``dpkg --set-selections`` set, and what keeps apt from upgrading the package.
    """
    words = status.split()
    return len(words) == 3 and words[0] == "hold" and words[2] == "installed"


def _protocol1_packages(
    text: str, skipped: dict[str, int], held: list[HeldPackage]
) -> tuple[Package, ...]:
    """The packages of a protocol 1 ``packages`` field; deb holds are added to ``held``.

    The stock client sends six fields and so no hold; a deb line whose seventh field is
    the dpkg status (``'hold ok installed'``, as ``dpkg-query -f '${Status}'`` prints it)
    marks the package held.
    """
    out: list[Package] = []
    for lineno, raw in enumerate(text.split("\n"), 1):
        line = raw.strip()
        if not line:
            continue
        fields = _quoted_fields(line)
        if fields is None or not 6 <= len(fields) <= 8:
            raise ParseError(
                "expected 'name' 'epoch' 'version' 'release' 'arch' 'type' ['category' 'repo']",
                f"packages line {lineno}",
            )
        package = _make_package(fields, f"packages line {lineno}", skipped)
        if package is not None:
            out.append(package)
            if len(out) > MAX_PACKAGES:
                raise ParseError(f"more than {MAX_PACKAGES} packages", "packages")
            if len(fields) > 6 and package.kind is PackageKind.DEB and _dpkg_hold(fields[6]):
                held.append(HeldPackage(package.name, package.arch))
                if len(held) > MAX_HELD:
                    raise ParseError(f"more than {MAX_HELD} held packages", "packages")
    return tuple(dict.fromkeys(out))


def _protocol1_repos(
    text: str, suse: bool, skipped: dict[str, int]
) -> tuple[ReportedRepository, ...]:
    rpm_kind = RepoKind.ZYPPER if suse else RepoKind.RPM
    out: list[ReportedRepository] = []
    for fields, where in _lines(text, "repos"):
        rtype = fields[0]
        if rtype in _UNSUPPORTED_TYPES:
            skipped[rtype] = skipped.get(rtype, 0) + 1
            continue
        if rtype == "deb":
            if len(fields) < 4:
                raise ParseError("expected 'deb' 'NAME' 'PRIORITY' 'URL'", where)
            priority = _priority(fields[2], where)
            if priority is None:
                raise ParseError(f"priority {fields[2][:20]!r} is not a number", where)
            urls = [url for url in fields[3:] if url]
            if not urls:
                raise ParseError("a deb repository needs a URL", where)
            out.extend(_deb_repository(fields[1], priority, url, where) for url in urls)
        elif rtype == "rpm":
            if len(fields) < 4:
                raise ParseError("expected 'rpm' 'NAME' 'ID' 'PRIORITY' 'URL'...", where)
            priority = _priority(fields[3], where)
            if priority is not None:
                name, repo_id, urls = fields[1], fields[2], fields[4:]
            else:
                # Clients before repo ids were sent: 'rpm' 'NAME' 'PRIORITY' 'URL'...
                priority = _priority(fields[2], where)
                if priority is None:
                    raise ParseError(f"priority {fields[3][:20]!r} is not a number", where)
                name, repo_id, urls = fields[1], "", fields[3:]
            urls = [url for url in urls if url]
            out.append(_rpm_repository(rpm_kind, name, repo_id, priority, urls, where))
        else:
            raise ParseError(f"unknown repository type {rtype[:20]!r} (deb, rpm)", where)
        if len(out) > MAX_REPOSITORIES:
            raise ParseError(f"more than {MAX_REPOSITORIES} repositories", "repos")
    return tuple(dict.fromkeys(out))


def _protocol1_modules(text: str) -> tuple[tuple[ReportedModule, ...], list[tuple[str, str]]]:
    modules: list[ReportedModule] = []
    repos: list[tuple[str, str]] = []
    for fields, where in _lines(text, "modules"):
        if len(fields) < 6:
            raise ParseError(
                "expected 'name' 'stream' 'version' 'context' 'arch' 'repo_id' 'NEVRA'...",
                where,
            )
        name, stream, version, context, arch, repo = fields[:6]
        _text_limit(name, where, MAX_PACKAGE_NAME, required=True)
        _text_limit(stream, where, MAX_PACKAGE_NAME, required=False)
        for value in (version, context):
            _text_limit(value, where, MAX_MODULE_FIELD, required=False)
        _text_limit(arch, where, MAX_ARCH, required=False)
        _text_limit(repo, where, MAX_REPO_ID, required=False)
        nevras = tuple(_pct2b(n) for n in fields[6:] if n)
        if len(nevras) > MAX_MODULE_PACKAGES:
            raise ParseError(f"more than {MAX_MODULE_PACKAGES} packages", where)
        for nevra in nevras:
            _text_limit(nevra, where, MAX_MODULE_PACKAGE, required=False)
        modules.append(ReportedModule(name, stream, version, context, arch, nevras))
        repos.append((name, repo))
        if len(modules) > MAX_MODULES:
            raise ParseError(f"more than {MAX_MODULES} modules", "modules")
    return tuple(modules), repos


# lines a protocol 1 field may have: twice its item limit (blank lines are allowed)
_PROTOCOL1_LINES = {
    "packages": 2 * MAX_PACKAGES,
    "repos": 2 * MAX_REPOSITORIES,
    "modules": 2 * MAX_MODULES,
    "sec_updates": 2 * MAX_UPDATES,
    "bug_updates": 2 * MAX_UPDATES,
}


def parse_protocol1(form: Mapping[str, str]) -> HostReport:
    """Read Patchman protocol 1: the multipart form of ``POST /reports/upload/``.

    Fields (reference 1.2): ``host``, ``os``, ``kernel`` (``%2b`` URL-decoded), ``arch``,
    ``tags``, ``protocol``, ``report``, ``reboot``, and the line fields ``packages``,
    ``repos``, ``modules``, ``sec_updates``, ``bug_updates``. Unknown fields are ignored
    (old clients send ``verbose``/``debug``).

    - An empty ``repos`` field means the client ran with ``-n`` (package-manager hook):
      ``repositories is None`` and, unless updates were sent, ``updates is None`` too,
      because the client looks for updates only while it reads repositories.
    - ``reboot``: ``True`` -> True; ``ServerCheck`` or anything else -> None (the
      client cannot tell, and never asserts "no reboot needed").
    - ``rpm`` repo lines are zypper repositories when the OS is SUSE.
    - A deb package line whose seventh field is a dpkg status with the want ``hold``
      (``'hold ok installed'``) puts the package in ``held``; the stock client sends
      six fields, so its hosts never have holds.
    - ``extra``: ``domain``, ``os_string`` (as sent), ``os_variant`` (without the CPE),
      ``report`` ("true"/"false": the client asked for the text echo),
      ``module_repositories``, ``skipped_packages`` and ``skipped_repositories``
      (Arch/Gentoo lines, counted as ``type=count``).

    A host name is required: the caller may substitute the client's reverse-DNS name
    before calling, as Patchman does, if it wants that fallback.

    :raises ParseError: naming the field, or the field and line (``packages line 12``).
    A line field of more lines than twice its item limit is refused before it is split.
    """
    if not isinstance(form, Mapping):
        raise ParseError("expected the form fields of a Patchman report")

    def field(key: str) -> str:
        value = form.get(key)
        if value is None:
            return ""
        if not isinstance(value, str):
            raise ParseError("must be text", key)
        limit = _PROTOCOL1_LINES.get(key)
        if limit is not None and value.count("\n") > limit:
            # counted before the text is split: 16 MB of empty lines would be a list of
            # 16 million strings, 128 MB, before any line was read
            raise ParseError(f"more than {limit} lines", key)
        _storable(value, key)
        return value

    protocol = field("protocol").strip()
    if protocol not in ("", "1"):
        raise ParseError(f"protocol {protocol[:10]!r} sent to the protocol 1 endpoint", "protocol")
    host = field("host").strip()
    hostname, domain = parse_hostname(host, "host")
    os_string = " ".join(field("os").split())
    _text_limit(os_string, "os", MAX_OS_STRING, required=True)
    os_info = parse_patchman_os(os_string)
    kernel = _text_limit(unquote(field("kernel").strip()), "kernel", MAX_KERNEL, required=True)
    _storable(kernel, "kernel")
    arch = _text_limit(field("arch").strip(), "arch", MAX_ARCH, required=True)
    tags = _check_tags(_split_tags(field("tags")), "tags")
    reboot = True if field("reboot").strip().lower() == "true" else None

    skipped_packages: dict[str, int] = {}
    skipped_repos: dict[str, int] = {}
    held: list[HeldPackage] = []
    packages = _protocol1_packages(field("packages"), skipped_packages, held)
    repos_text = field("repos")
    repositories = (
        _protocol1_repos(repos_text, os_info.family == "suse", skipped_repos)
        if repos_text.strip()
        else None
    )
    modules, module_repos = _protocol1_modules(field("modules"))
    security = _patchman_updates(
        _update_entries(field("sec_updates"), "sec_updates"), "sec_updates", True
    )
    other = _patchman_updates(
        _update_entries(field("bug_updates"), "bug_updates"), "bug_updates", False
    )
    updates = _merge_updates(security, other)

    extra = {
        "domain": domain,
        "os_string": os_string,
        "os_variant": _os_variant(os_string),
        "report": "true" if field("report").strip().lower() in ("true", "1") else "false",
        **_module_repositories(module_repos),
        **_skipped_extra(skipped_packages, skipped_repos),
    }
    return HostReport(
        hostname=hostname,
        os=os_info,
        kernel=kernel,
        arch=arch,
        packages=packages,
        repositories=repositories,
        tags=tags,
        reboot_required=reboot,
        modules=modules,
        updates=None if not updates and repositories is None else updates,
        held=tuple(sorted(set(held))),
        agent=PATCHMAN_AGENT,
        protocol=PROTOCOL_PATCHMAN1,
        extra=extra,
    )


# --------------------------------------------------------------------------- protocol 2


class _Obj:
    """Typed reads from one Patchman protocol 2 object, each naming its JSON path."""

    __slots__ = ("obj", "where")

    def __init__(self, value: object, where: str) -> None:
        if not isinstance(value, dict):
            raise ParseError("must be an object", where or None)
        self.obj = value
        self.where = where

    def path(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def text(self, key: str, max_len: int, *, required: bool = False) -> str:
        value = self.obj.get(key)
        where = self.path(key)
        if value is None:
            if required:
                raise ParseError("is required", where)
            return ""
        if not isinstance(value, str):
            raise ParseError("must be a string", where)
        if required and not value.strip():
            raise ParseError("must not be empty", where)
        if len(value) > max_len:
            raise ParseError(f"longer than {max_len} characters", where)
        _storable(value, where)
        return value

    def array(self, key: str, max_items: int) -> list[object]:
        value = self.obj.get(key)
        if value is None:
            return []
        if not isinstance(value, list):
            raise ParseError("must be a list", self.path(key))
        if len(value) > max_items:
            raise ParseError(f"more than {max_items} items", self.path(key))
        return value

    def integer(self, key: str, default: int) -> int:
        """DRF IntegerField leniency: 99, 99.0 and "99" are all 99; bools are not."""
        value = self.obj.get(key)
        where = self.path(key)
        if value is None:
            return default
        if isinstance(value, str):
            parsed = _priority(value, where)
            if parsed is None:
                raise ParseError("must be an integer", where)
            return parsed
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ParseError("must be an integer", where)
        if isinstance(value, float) and not value.is_integer():
            raise ParseError("must be an integer", where)
        if not -MAX_PRIORITY <= value <= MAX_PRIORITY:
            raise ParseError(f"must be between -{MAX_PRIORITY} and {MAX_PRIORITY}", where)
        return int(value)


def _protocol2_repos(
    items: list[object], suse: bool, skipped: dict[str, int]
) -> tuple[ReportedRepository, ...]:
    rpm_kind = RepoKind.ZYPPER if suse else RepoKind.RPM
    out: list[ReportedRepository] = []
    for i, item in enumerate(items):
        repo = _Obj(item, f"repos[{i}]")
        rtype = repo.text("type", 16, required=True)
        if rtype in _UNSUPPORTED_TYPES:
            skipped[rtype] = skipped.get(rtype, 0) + 1
            continue
        name = repo.text("name", MAX_REPO_NAME, required=True)
        priority = repo.integer("priority", 0)
        urls: list[str] = []
        for j, url in enumerate(repo.array("urls", MAX_URLS)):
            where = repo.path(f"urls[{j}]")
            if not isinstance(url, str):
                raise ParseError("must be a string", where)
            _storable(url, where)
            if url:
                urls.append(url)
        if rtype == "deb":
            if not urls:
                raise ParseError("a deb repository needs a URL", repo.path("urls"))
            out.extend(_deb_repository(name, priority, url, repo.path("urls")) for url in urls)
        elif rtype == "rpm":
            repo_id = repo.text("id", MAX_REPO_ID)
            out.append(_rpm_repository(rpm_kind, name, repo_id, priority, urls, repo.path("urls")))
        else:
            raise ParseError(f"unknown repository type {rtype!r} (deb, rpm)", repo.path("type"))
    return tuple(dict.fromkeys(out))


def _protocol2_packages(items: list[object], skipped: dict[str, int]) -> tuple[Package, ...]:
    out: list[Package] = []
    for i, item in enumerate(items):
        pkg = _Obj(item, f"packages[{i}]")
        fields = (
            pkg.text("name", MAX_PACKAGE_NAME, required=True),
            pkg.text("epoch", MAX_EPOCH),
            pkg.text("version", MAX_VERSION, required=True),
            pkg.text("release", MAX_RELEASE),
            pkg.text("arch", MAX_ARCH, required=pkg.obj.get("name") != "gpg-pubkey"),
            pkg.text("type", 16, required=True),
        )
        package = _make_package(fields, pkg.where, skipped)
        if package is not None:
            out.append(package)
    return tuple(dict.fromkeys(out))


def _protocol2_updates(items: list[object], field: str, security: bool) -> list[ReportedUpdate]:
    out: list[ReportedUpdate] = []
    for i, item in enumerate(items):
        update = _Obj(item, f"{field}[{i}]")
        out.append(
            ReportedUpdate(
                name=_pct2b(update.text("name", MAX_PACKAGE_NAME, required=True)),
                version=_pct2b(update.text("version", MAX_VERSION, required=True)),
                arch=update.text("arch", MAX_ARCH, required=True),
                security=security,
                repository=update.text("repo", MAX_REPO_ID),
            )
        )
    return out


def parse_protocol2(doc: object) -> HostReport:
    """Read Patchman protocol 2: the decoded JSON body of ``POST /api/report/``.

    Keys as in reference 1.8: ``protocol`` (2, default 2), ``hostname``, ``arch``,
    ``kernel`` (URL-decoded), ``os``, ``tags``, ``reboot_required``, ``packages``,
    ``repos``, ``modules``, ``sec_updates``, ``bug_updates``. Unknown keys are ignored.

    Fixed on the way in: ``%2b`` in package and update fields is ``+`` (the client
    forgets to decode it); an empty or missing ``repos`` list means "not collected"
    (``repositories is None``; hooks send ``[]``), and then so does an empty updates
    list; repository URLs of any scheme (Gentoo's rsync) are accepted; Arch and Gentoo
    entries are counted in ``extra`` rather than failing. ``reboot_required`` true ->
    True, false -> None, since the client sends false when it simply cannot tell.

    :raises ParseError: with ``where`` as a JSON path, e.g. ``packages[3].version``.
    """
    top = _Obj(doc, "")
    protocol = top.obj.get("protocol", 2)
    if protocol is not None and (
        isinstance(protocol, bool) or protocol not in (2, "2")  # DRF reads "2" as 2
    ):
        raise ParseError("protocol must be 2 on this endpoint", "protocol")
    hostname, domain = parse_hostname(
        top.text("hostname", MAX_HOST, required=True).strip(), "hostname"
    )
    arch = top.text("arch", MAX_ARCH, required=True).strip()
    kernel = unquote(top.text("kernel", MAX_KERNEL, required=True).strip())
    _storable(kernel, "kernel")
    os_string = " ".join(top.text("os", MAX_OS_STRING, required=True).split())
    os_info = parse_patchman_os(os_string)

    raw_tags = top.obj.get("tags")
    if isinstance(raw_tags, str):
        _storable(raw_tags, "tags")
        tags = _split_tags(raw_tags)
    else:
        collected: list[str] = []
        for i, tag in enumerate(top.array("tags", MAX_TAGS)):
            if not isinstance(tag, str):
                raise ParseError("must be a string", f"tags[{i}]")
            _storable(tag, f"tags[{i}]")
            collected.extend(_split_tags(tag))
        tags = tuple(dict.fromkeys(collected))
    tags = _check_tags(tags, "tags")

    reboot_value = top.obj.get("reboot_required")
    if isinstance(reboot_value, str):
        reboot_value = reboot_value.strip().lower() == "true"
    if reboot_value is not None and not isinstance(reboot_value, bool):
        raise ParseError("must be true or false", "reboot_required")
    reboot = True if reboot_value else None

    skipped_packages: dict[str, int] = {}
    skipped_repos: dict[str, int] = {}
    packages = _protocol2_packages(top.array("packages", MAX_PACKAGES), skipped_packages)
    repo_items = top.array("repos", MAX_REPOSITORIES)
    repositories = (
        _protocol2_repos(repo_items, os_info.family == "suse", skipped_repos)
        if repo_items
        else None
    )

    modules: list[ReportedModule] = []
    module_repos: list[tuple[str, str]] = []
    for i, item in enumerate(top.array("modules", MAX_MODULES)):
        module = _Obj(item, f"modules[{i}]")
        name = module.text("name", MAX_PACKAGE_NAME, required=True)
        nevras: list[str] = []
        for j, nevra in enumerate(module.array("packages", MAX_MODULE_PACKAGES)):
            where = module.path(f"packages[{j}]")
            if not isinstance(nevra, str):
                raise ParseError("must be a string", where)
            _storable(nevra, where)
            if nevra:
                nevras.append(_pct2b(_text_limit(nevra, where, MAX_MODULE_PACKAGE, required=False)))
        modules.append(
            ReportedModule(
                name=name,
                stream=module.text("stream", MAX_PACKAGE_NAME),
                version=module.text("version", MAX_MODULE_FIELD),
                context=module.text("context", MAX_MODULE_FIELD),
                arch=module.text("arch", MAX_ARCH),
                packages=tuple(nevras),
            )
        )
        module_repos.append((name, module.text("repo", MAX_REPO_ID)))

    security = _protocol2_updates(top.array("sec_updates", MAX_UPDATES), "sec_updates", True)
    other = _protocol2_updates(top.array("bug_updates", MAX_UPDATES), "bug_updates", False)
    updates = _merge_updates(security, other)

    extra = {
        "domain": domain,
        "os_string": os_string,
        "os_variant": _os_variant(os_string),
        **_module_repositories(module_repos),
        **_skipped_extra(skipped_packages, skipped_repos),
    }
    return HostReport(
        hostname=hostname,
        os=os_info,
        kernel=_text_limit(kernel, "kernel", MAX_KERNEL, required=True),
        arch=_text_limit(arch, "arch", MAX_ARCH, required=True),
        packages=packages,
        repositories=repositories,
        tags=tags,
        reboot_required=reboot,
        modules=tuple(modules),
        updates=None if not updates and repositories is None else updates,
        agent=PATCHMAN_AGENT,
        protocol=PROTOCOL_PATCHMAN2,
        extra=extra,
    )
