"""Parse a Patchman protocol 1 report: a multipart form of quoted-line fields.

Errors name the field, or the field and line (``packages line 12``). The update
lists are read here too: apt's two-token lines are told from yum lines whose
repository wrapped onto the next line.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from collections.abc import Mapping
from urllib.parse import unquote

from patchwatch.domain.errors import ParseError
from patchwatch.domain.limits import MAX_ARCH
from patchwatch.domain.limits import MAX_PACKAGE_NAME
from patchwatch.domain.limits import MAX_VERSION
from patchwatch.domain.osinfo import parse_patchman_os
from patchwatch.domain.protocols import PATCHMAN1
from patchwatch.domain.records import HeldPackage
from patchwatch.domain.records import HostReport
from patchwatch.domain.records import Package
from patchwatch.domain.records import PackageKind
from patchwatch.domain.records import RepoKind
from patchwatch.domain.records import ReportedModule
from patchwatch.domain.records import ReportedRepository
from patchwatch.domain.records import ReportedUpdate
from patchwatch.domain.reports.fields import MAX_HELD
from patchwatch.domain.reports.fields import MAX_KERNEL
from patchwatch.domain.reports.fields import MAX_MODULE_FIELD
from patchwatch.domain.reports.fields import MAX_MODULE_PACKAGE
from patchwatch.domain.reports.fields import MAX_MODULE_PACKAGES
from patchwatch.domain.reports.fields import MAX_MODULES
from patchwatch.domain.reports.fields import MAX_OS_STRING
from patchwatch.domain.reports.fields import MAX_PACKAGES
from patchwatch.domain.reports.fields import MAX_REPO_ID
from patchwatch.domain.reports.fields import MAX_REPOSITORIES
from patchwatch.domain.reports.fields import MAX_UPDATES
from patchwatch.domain.reports.fields import PATCHMAN_AGENT
from patchwatch.domain.reports.fields import check_tags
from patchwatch.domain.reports.fields import merge_updates
from patchwatch.domain.reports.fields import os_variant
from patchwatch.domain.reports.fields import parse_hostname
from patchwatch.domain.reports.fields import split_tags
from patchwatch.domain.reports.fields import storable
from patchwatch.domain.reports.fields import text_limit
from patchwatch.domain.reports.patchman import UNSUPPORTED_TYPES
from patchwatch.domain.reports.patchman import arch_repository
from patchwatch.domain.reports.patchman import deb_repository
from patchwatch.domain.reports.patchman import make_package
from patchwatch.domain.reports.patchman import module_repositories
from patchwatch.domain.reports.patchman import parse_priority
from patchwatch.domain.reports.patchman import pct2b
from patchwatch.domain.reports.patchman import rpm_repository
from patchwatch.domain.reports.patchman import skipped_extra

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
        name, _, arch = pct2b(head).rpartition(".")
        out.append(
            ReportedUpdate(
                name=text_limit(name, where, MAX_PACKAGE_NAME, required=True),
                version=text_limit(pct2b(version), where, MAX_VERSION, required=True),
                arch=text_limit(arch, where, MAX_ARCH, required=True),
                security=security,
                repository=text_limit(repo, where, MAX_REPO_ID, required=False),
            )
        )
        if len(out) > MAX_UPDATES:
            raise ParseError(f"more than {MAX_UPDATES} updates", field)
    return out


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


def _package_line(
    line: str, lineno: int, skipped: dict[str, int]
) -> tuple[Package | None, list[str]]:
    """One stripped, non-blank line of the ``packages`` field: its package (None for
    one skipped) and its fields."""
    fields = _quoted_fields(line)
    if fields is None or not 6 <= len(fields) <= 8:
        raise ParseError(
            "expected 'name' 'epoch' 'version' 'release' 'arch' 'type' ['category' 'repo']",
            f"packages line {lineno}",
        )
    return make_package(fields, f"packages line {lineno}", skipped), fields


def _held(package: Package, fields: list[str], held: list[HeldPackage]) -> None:
    """Add ``package`` to ``held`` when its line's seventh field is a dpkg hold."""
    if len(fields) > 6 and package.kind is PackageKind.DEB and _dpkg_hold(fields[6]):
        held.append(HeldPackage(package.name, package.arch))
        if len(held) > MAX_HELD:
            raise ParseError(f"more than {MAX_HELD} held packages", "packages")


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
        package, fields = _package_line(line, lineno, skipped)
        if package is not None:
            out.append(package)
            if len(out) > MAX_PACKAGES:
                raise ParseError(f"more than {MAX_PACKAGES} packages", "packages")
            _held(package, fields, held)
    return tuple(dict.fromkeys(out))


def _protocol1_holds(text: str, held: list[HeldPackage]) -> None:
    """Only the holds of a ``packages`` field (:func:`_protocol1_packages` for a field
    whose packages are known): the same ``held`` from the lines that can carry one.

    Why: a report whose package list processing knows by its listing still sets the
    host's holds, which the same lines carry. A hold's status holds the word ``hold``,
    so only lines with it are split, and the stock client's text (six fields, never
    a hold) is searched once and not split at all.
    """
    if "hold" not in text:
        return
    for lineno, raw in enumerate(text.split("\n"), 1):
        if "hold" not in raw:
            continue
        line = raw.strip()
        package, fields = _package_line(line, lineno, {})
        if package is not None:
            _held(package, fields, held)


def _protocol1_repos(
    text: str, suse: bool, skipped: dict[str, int], host_arch: str = ""
) -> tuple[ReportedRepository, ...]:
    rpm_kind = RepoKind.ZYPPER if suse else RepoKind.RPM
    out: list[ReportedRepository] = []
    for fields, where in _lines(text, "repos"):
        rtype = fields[0]
        if rtype in UNSUPPORTED_TYPES:
            skipped[rtype] = skipped.get(rtype, 0) + 1
            continue
        if rtype == "deb":
            if len(fields) < 4:
                raise ParseError("expected 'deb' 'NAME' 'PRIORITY' 'URL'", where)
            priority = parse_priority(fields[2], where)
            if priority is None:
                raise ParseError(f"priority {fields[2][:20]!r} is not a number", where)
            urls = [url for url in fields[3:] if url]
            if not urls:
                raise ParseError("a deb repository needs a URL", where)
            out.extend(deb_repository(fields[1], priority, url, where) for url in urls)
        elif rtype == "rpm":
            if len(fields) < 4:
                raise ParseError("expected 'rpm' 'NAME' 'ID' 'PRIORITY' 'URL'...", where)
            priority = parse_priority(fields[3], where)
            if priority is not None:
                name, repo_id, urls = fields[1], fields[2], fields[4:]
            else:
                # Clients before repo ids were sent: 'rpm' 'NAME' 'PRIORITY' 'URL'...
                priority = parse_priority(fields[2], where)
                if priority is None:
                    raise ParseError(f"priority {fields[3][:20]!r} is not a number", where)
                name, repo_id, urls = fields[1], "", fields[3:]
            urls = [url for url in urls if url]
            out.append(rpm_repository(rpm_kind, name, repo_id, priority, urls, where))
        elif rtype == "arch":
            if len(fields) < 4:
                raise ParseError("expected 'arch' 'NAME' 'ID' 'URL'...", where)
            urls = [url for url in fields[3:] if url]
            out.append(arch_repository(fields[1], fields[2], urls, host_arch, where))
        else:
            raise ParseError(f"unknown repository type {rtype[:20]!r} (deb, rpm, arch)", where)
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
        text_limit(name, where, MAX_PACKAGE_NAME, required=True)
        text_limit(stream, where, MAX_PACKAGE_NAME, required=False)
        for value in (version, context):
            text_limit(value, where, MAX_MODULE_FIELD, required=False)
        text_limit(arch, where, MAX_ARCH, required=False)
        text_limit(repo, where, MAX_REPO_ID, required=False)
        nevras = tuple(pct2b(n) for n in fields[6:] if n)
        if len(nevras) > MAX_MODULE_PACKAGES:
            raise ParseError(f"more than {MAX_MODULE_PACKAGES} packages", where)
        for nevra in nevras:
            text_limit(nevra, where, MAX_MODULE_PACKAGE, required=False)
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


def protocol1_field(form: Mapping[str, str], key: str) -> str:
    """One field of a protocol-1 form as text, ``""`` when absent, checked storable.

    Shared with the receiver's routing check, so both refuse a field alike.
    """
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
    storable(value, key)
    return value


def protocol1_host(form: Mapping[str, str]) -> tuple[str, str]:
    """The ``(hostname, domain)`` of a protocol-1 form, once its ``protocol`` is 1 or absent."""
    protocol = protocol1_field(form, "protocol").strip()
    if protocol not in ("", "1"):
        raise ParseError(f"protocol {protocol[:10]!r} sent to the protocol 1 endpoint", "protocol")
    return parse_hostname(protocol1_field(form, "host").strip(), "host")


def parse_protocol1(form: Mapping[str, str], skip_packages: bool = False) -> HostReport:
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
    - ``rpm`` repo lines are zypper repositories when the OS is SUSE; ``arch`` lines are
      pacman repositories (``patchman.arch_repository``), ``arch`` package lines
      pacman packages.
    - A deb package line whose seventh field is a dpkg status with the want ``hold``
      (``'hold ok installed'``) puts the package in ``held``; the stock client sends
      six fields, so its hosts never have holds.
    - ``extra``: ``domain``, ``os_string`` (as sent), ``os_variant`` (without the CPE),
      ``report`` ("true"/"false": the client asked for the text echo),
      ``module_repositories``, ``skipped_packages`` and ``skipped_repositories``
      (Gentoo lines, counted as ``type=count``).

    ``skip_packages``: the ``packages`` field's packages are left out (the caller knows
    the set they make, by the field's listing digest,
    ``patchwatch.domain.set_digest.patchman1_listing_digest``); its holds are still
    read, and ``skipped_packages`` is then absent from ``extra``.

    A host name is required: the caller may substitute the client's reverse-DNS name
    before calling, as Patchman does, if it wants that fallback.

    :raises ParseError: naming the field, or the field and line (``packages line 12``).
    A line field of more lines than twice its item limit is refused before it is split.
    """
    if not isinstance(form, Mapping):
        raise ParseError("expected the form fields of a Patchman report")

    def field(key: str) -> str:
        return protocol1_field(form, key)

    hostname, domain = protocol1_host(form)
    os_string = " ".join(field("os").split())
    text_limit(os_string, "os", MAX_OS_STRING, required=True)
    os_info = parse_patchman_os(os_string)
    kernel = text_limit(unquote(field("kernel").strip()), "kernel", MAX_KERNEL, required=True)
    storable(kernel, "kernel")
    arch = text_limit(field("arch").strip(), "arch", MAX_ARCH, required=True)
    tags = check_tags(split_tags(field("tags")), "tags")
    reboot = True if field("reboot").strip().lower() == "true" else None

    skipped_packages: dict[str, int] = {}
    skipped_repos: dict[str, int] = {}
    held: list[HeldPackage] = []
    if skip_packages:
        packages: tuple[Package, ...] = ()
        _protocol1_holds(field("packages"), held)
    else:
        packages = _protocol1_packages(field("packages"), skipped_packages, held)
    repos_text = field("repos")
    repositories = (
        _protocol1_repos(repos_text, os_info.family == "suse", skipped_repos, arch)
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
    updates = merge_updates(security, other)

    extra = {
        "domain": domain,
        "os_string": os_string,
        "os_variant": os_variant(os_string),
        "report": "true" if field("report").strip().lower() in ("true", "1") else "false",
        **module_repositories(module_repos),
        **skipped_extra(skipped_packages, skipped_repos),
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
        protocol=PATCHMAN1,
        extra=extra,
    )
