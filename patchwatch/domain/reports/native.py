"""Parse patchwatch's own report (JSON, ``schemas/report-v1.json``) into a ``HostReport``.

Errors name the JSON path at fault (``packages[12].version``). Package objects of
the agent's exact shape are looked up in the parsed-package memo
(:mod:`patchwatch.domain.reports.memo`) before they are checked one by one.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from itertools import compress
from operator import itemgetter
from operator import not_

from patchwatch.domain.errors import ParseError
from patchwatch.domain.limits import MAX_ARCH
from patchwatch.domain.limits import MAX_EPOCH
from patchwatch.domain.limits import MAX_PACKAGE_NAME
from patchwatch.domain.limits import MAX_RELEASE
from patchwatch.domain.limits import MAX_URL
from patchwatch.domain.limits import MAX_VERSION
from patchwatch.domain.osinfo import normalise_os
from patchwatch.domain.protocols import NATIVE
from patchwatch.domain.records import HeldPackage
from patchwatch.domain.records import HostReport
from patchwatch.domain.records import Package
from patchwatch.domain.records import PackageKind
from patchwatch.domain.records import RepoKind
from patchwatch.domain.records import ReportedModule
from patchwatch.domain.records import ReportedRepository
from patchwatch.domain.records import ReportedSource
from patchwatch.domain.records import ReportedUpdate
from patchwatch.domain.reports import memo
from patchwatch.domain.reports.fields import CHECKED_KINDS
from patchwatch.domain.reports.fields import MAX_AGENT_FIELD
from patchwatch.domain.reports.fields import MAX_HELD
from patchwatch.domain.reports.fields import MAX_KERNEL
from patchwatch.domain.reports.fields import MAX_MODULE_FIELD
from patchwatch.domain.reports.fields import MAX_MODULE_PACKAGE
from patchwatch.domain.reports.fields import MAX_MODULE_PACKAGES
from patchwatch.domain.reports.fields import MAX_MODULES
from patchwatch.domain.reports.fields import MAX_OS_ID
from patchwatch.domain.reports.fields import MAX_PACKAGES
from patchwatch.domain.reports.fields import MAX_PINNED
from patchwatch.domain.reports.fields import MAX_REPO_ID
from patchwatch.domain.reports.fields import MAX_REPO_NAME
from patchwatch.domain.reports.fields import MAX_REPO_TAG
from patchwatch.domain.reports.fields import MAX_REPOSITORIES
from patchwatch.domain.reports.fields import MAX_SIGNED_BY
from patchwatch.domain.reports.fields import MAX_SOURCES
from patchwatch.domain.reports.fields import MAX_SUITE
from patchwatch.domain.reports.fields import MAX_TAG
from patchwatch.domain.reports.fields import MAX_TAGS
from patchwatch.domain.reports.fields import MAX_UPDATES
from patchwatch.domain.reports.fields import MAX_URLS
from patchwatch.domain.reports.fields import MAX_WARNING
from patchwatch.domain.reports.fields import MAX_WARNINGS
from patchwatch.domain.reports.fields import PACKAGE_KINDS
from patchwatch.domain.reports.fields import canonical_epoch
from patchwatch.domain.reports.fields import check_version
from patchwatch.domain.reports.fields import json_integer
from patchwatch.domain.reports.fields import parse_hostname
from patchwatch.domain.reports.fields import printable_repository
from patchwatch.domain.reports.fields import storable

_TAG_RE = re.compile(r"[A-Za-z0-9_.:/-]+")


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
_REPO_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
_PINNED_NAME = re.compile(r"^[A-Za-z0-9_.+@-]+$")  # apk's package names; never a space

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
        "tag",
        "pinned",
    }
)
_NATIVE_MODULE_KEYS = frozenset({"name", "stream", "version", "context", "arch", "packages"})
_NATIVE_UPDATE_KEYS = frozenset({"name", "version", "arch", "security", "repository"})
_NATIVE_HELD_KEYS = frozenset({"name", "arch"})
_NATIVE_SOURCE_KEYS = frozenset({"name", "version", "release", "arch", "source", "source_version"})
_REPO_KINDS: Mapping[str, RepoKind] = {
    "deb": RepoKind.DEB,
    "rpm": RepoKind.RPM,
    "zypper": RepoKind.ZYPPER,
    "arch": RepoKind.ARCH,
    "apk": RepoKind.APK,
}


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

    sources: tuple[ReportedSource, ...] = ()
    if "sources" in doc:
        sources = _native_sources(doc["sources"])

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
        sources=sources,
        agent=agent,
        protocol=NATIVE,
        extra=extra,
    )


def _native_string(value: object, where: str, max_len: int, *, min_len: int = 0) -> str:
    if not isinstance(value, str):
        raise ParseError("must be a string", where)
    if len(value) < min_len:
        raise ParseError("must not be empty", where)
    if len(value) > max_len:
        raise ParseError(f"longer than {max_len} characters", where)
    storable(value, where)
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


def _native_packages(value: object) -> tuple[Package, ...]:
    """The hot path of a native report: its package objects, most of them seen before.

    The common case runs in C (``map``): every item an object of exactly the six keys,
    its values looked up in the memo; only the misses are checked and built one by
    one. Anything else (another shape, a wrong type) takes the item-by-item path,
    which names the field at fault.
    """
    items = _native_array(value, "packages", MAX_PACKAGES)
    generation = memo.MEMO.generation
    out: list[Package | None]
    try:
        if not set(map(len, items)) <= {6}:  # type: ignore[arg-type]  # TypeError: caught
            raise KeyError
        out = list(map(memo.MEMO.records.get, map(_PACKAGE_VALUES, items)))  # type: ignore[arg-type]
    except (TypeError, KeyError):  # not all objects of the six keys; an unhashable value
        out = [_native_item(item, i) for i, item in enumerate(items)]
    else:
        for i in compress(range(len(out)), map(not_, out)):  # the misses (None)
            out[i] = _native_item(items[i], i)
    if memo.MEMO.generation == generation and len(set(map(id, out))) == len(out):
        return tuple(out)  # type: ignore[arg-type]  # all canonical, all distinct
    return tuple(dict.fromkeys(out))  # type: ignore[arg-type]


def _native_item(item: object, i: int) -> Package:
    """One package object: from the memo, or checked and remembered."""
    if type(item) is not dict:
        return memo.MEMO.remember(None, _native_package(item, f"packages[{i}]"))
    key: tuple[object, ...]
    if len(item) == 6:
        try:
            key = _PACKAGE_VALUES(item)
        except KeyError:
            key = tuple(item.items())
    else:
        key = tuple(item.items())
    try:
        known = memo.MEMO.records.get(key)
    except TypeError:  # an unhashable value (array, object): the slow path says which
        return memo.MEMO.remember(None, _native_package(item, f"packages[{i}]"))
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
        and (kind := PACKAGE_KINDS.get(ptype)) is not None
        and 0 < len(name) <= MAX_PACKAGE_NAME
        and 0 < len(version) <= MAX_VERSION
        and 0 < len(arch) <= MAX_ARCH
        and len(release) <= MAX_RELEASE
    ):
        joined = name + version + arch + release + epoch
        if not joined.isascii() or "\x00" in joined:
            storable(joined, f"packages[{i}]")
        if epoch:
            epoch = canonical_epoch(epoch, kind, f"packages[{i}].epoch")
        elif kind is PackageKind.RPM:
            epoch = "0"
        if kind in CHECKED_KINDS:
            check_version(kind, version, release, f"packages[{i}].version")
        return memo.MEMO.remember(key, Package(name, epoch, version, release, arch, kind))
    return memo.MEMO.remember(None, _native_package(item, f"packages[{i}]"))


def _native_package(item: object, where: str) -> Package:
    """Slow path: check one package field by field, so the error names the field."""
    obj = _native_object(item, where, ("name", "version", "arch", "type"), _NATIVE_PACKAGE_KEYS)
    name = _native_string(obj["name"], f"{where}.name", MAX_PACKAGE_NAME, min_len=1)
    version = _native_string(obj["version"], f"{where}.version", MAX_VERSION, min_len=1)
    arch = _native_string(obj["arch"], f"{where}.arch", MAX_ARCH, min_len=1)
    release = _native_string(obj.get("release", ""), f"{where}.release", MAX_RELEASE)
    epoch = _native_string(obj.get("epoch", ""), f"{where}.epoch", MAX_EPOCH)
    ptype = obj["type"]
    if not isinstance(ptype, str) or ptype not in PACKAGE_KINDS:
        raise ParseError('must be "deb", "rpm", "arch" or "apk"', f"{where}.type")
    kind = PACKAGE_KINDS[ptype]
    epoch = canonical_epoch(epoch, kind, f"{where}.epoch")
    if kind in CHECKED_KINDS:
        check_version(kind, version, release, f"{where}.version")
    return Package(name, epoch, version, release, arch, kind)


def _native_repository(item: object, where: str) -> ReportedRepository:
    obj = _native_object(item, where, ("type", "id", "urls"), _NATIVE_REPO_KEYS)
    kind = _REPO_KINDS.get(obj["type"]) if isinstance(obj["type"], str) else None
    if kind is None:
        raise ParseError('must be "deb", "rpm", "zypper", "arch" or "apk"', f"{where}.type")
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
    priority = json_integer(obj["priority"], f"{where}.priority") if "priority" in obj else 0
    enabled = obj.get("enabled", True)
    if not isinstance(enabled, bool):
        raise ParseError("must be true or false", f"{where}.enabled")
    tag = opt("tag", MAX_REPO_TAG)
    if tag and not _REPO_TAG.match(tag):
        raise ParseError("must be an apk repository tag (letters, digits, _.-)", f"{where}.tag")
    pinned = tuple(
        sorted({
            _pinned_name(name, f"{where}.pinned[{j}]")
            for j, name in enumerate(
                _native_array(obj.get("pinned", []), f"{where}.pinned", MAX_PINNED)
            )
        })
    )  # fmt: skip
    if pinned and not tag:
        raise ParseError("only a tagged repository pins packages", f"{where}.pinned")
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
        tag=tag,
        pinned=pinned,
    )
    return printable_repository(repo, where)


def _pinned_name(value: object, where: str) -> str:
    """A name pinned to an apk tag: stored space-separated, so it holds no space."""
    name = _native_string(value, where, MAX_PACKAGE_NAME, min_len=1)
    if not _PINNED_NAME.match(name):
        raise ParseError("must be an apk package name (letters, digits, _.+@-)", where)
    return name


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


_SOURCE_MEMO: dict[tuple[object, ...], ReportedSource] = {}
_SOURCE_MEMO_SIZE = 200_000  # entries kept before the memo starts again


def _native_sources(value: object) -> tuple[ReportedSource, ...]:
    """The ``sources`` entries, most of them seen before: hosts of one image report the
    same few hundred, and checking each field of each cost ten times the package list's
    memoised path. An entry's items are its memo key, looked up in C (``map``) as the
    package list's are; only the misses are checked, one by one."""
    items = _native_array(value, "sources", MAX_SOURCES)
    memo = _SOURCE_MEMO
    keys: list[tuple[object, ...] | None]
    try:
        keys = list(map(tuple, map(dict.items, items)))  # type: ignore[arg-type]
        out = list(map(memo.get, keys))  # type: ignore[arg-type]
    except TypeError:  # an entry that is no object, or an unhashable value
        keys = [None] * len(items)
        out = [None] * len(items)
    for i in compress(range(len(out)), map(not_, out)):  # the misses (None)
        found = _native_source(items[i], f"sources[{i}]")
        key = keys[i]
        if key is not None:
            if len(memo) >= _SOURCE_MEMO_SIZE:
                memo.clear()
            memo[key] = found
        out[i] = found
    # equal entries are one memo object: deduplicated by identity, not by hashing each
    return tuple({id(s): s for s in out}.values())  # type: ignore[arg-type]


def _native_source(item: object, where: str) -> ReportedSource:
    obj = _native_object(item, where, ("name", "version", "arch", "source"), _NATIVE_SOURCE_KEYS)
    return ReportedSource(
        name=_native_string(obj["name"], f"{where}.name", MAX_PACKAGE_NAME, min_len=1),
        version=_native_string(obj["version"], f"{where}.version", MAX_VERSION, min_len=1),
        release=_native_string(obj.get("release", ""), f"{where}.release", MAX_RELEASE),
        arch=_native_string(obj["arch"], f"{where}.arch", MAX_ARCH, min_len=1),
        source=_native_string(obj["source"], f"{where}.source", MAX_PACKAGE_NAME, min_len=1),
        source_version=_native_string(
            obj.get("source_version", ""), f"{where}.source_version", MAX_VERSION
        ),
    )


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
