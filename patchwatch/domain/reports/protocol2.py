"""Parse a Patchman protocol 2 report (JSON) into a ``HostReport``.

Errors name the JSON path at fault (``packages[3].version``).
"""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import unquote

from patchwatch.domain.errors import ParseError
from patchwatch.domain.limits import MAX_ARCH
from patchwatch.domain.limits import MAX_EPOCH
from patchwatch.domain.limits import MAX_PACKAGE_NAME
from patchwatch.domain.limits import MAX_RELEASE
from patchwatch.domain.limits import MAX_URL
from patchwatch.domain.limits import MAX_VERSION
from patchwatch.domain.osinfo import parse_patchman_os
from patchwatch.domain.protocols import PATCHMAN2
from patchwatch.domain.records import HostReport
from patchwatch.domain.records import Package
from patchwatch.domain.records import RepoKind
from patchwatch.domain.records import ReportedModule
from patchwatch.domain.records import ReportedRepository
from patchwatch.domain.records import ReportedUpdate
from patchwatch.domain.reports.fields import MAX_HOST
from patchwatch.domain.reports.fields import MAX_KERNEL
from patchwatch.domain.reports.fields import MAX_MODULE_FIELD
from patchwatch.domain.reports.fields import MAX_MODULE_PACKAGE
from patchwatch.domain.reports.fields import MAX_MODULE_PACKAGES
from patchwatch.domain.reports.fields import MAX_MODULES
from patchwatch.domain.reports.fields import MAX_OS_STRING
from patchwatch.domain.reports.fields import MAX_PACKAGES
from patchwatch.domain.reports.fields import MAX_REPO_ID
from patchwatch.domain.reports.fields import MAX_REPO_NAME
from patchwatch.domain.reports.fields import MAX_REPOSITORIES
from patchwatch.domain.reports.fields import MAX_TAGS
from patchwatch.domain.reports.fields import MAX_UPDATES
from patchwatch.domain.reports.fields import MAX_URLS
from patchwatch.domain.reports.fields import PATCHMAN_AGENT
from patchwatch.domain.reports.fields import check_tags
from patchwatch.domain.reports.fields import json_integer
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
        storable(value, where)
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

    def strings(self, key: str, max_items: int) -> Iterator[tuple[str, str]]:
        """The items of a list of strings, each with its path; storable, maybe empty."""
        for i, item in enumerate(self.array(key, max_items)):
            where = self.path(f"{key}[{i}]")
            if not isinstance(item, str):
                raise ParseError("must be a string", where)
            storable(item, where)
            yield where, item

    def integer(self, key: str, default: int) -> int:
        """DRF IntegerField leniency: 99, 99.0 and "99" are all 99; bools are not."""
        value = self.obj.get(key)
        where = self.path(key)
        if value is None:
            return default
        if isinstance(value, str):
            parsed = parse_priority(value, where)
            if parsed is None:
                raise ParseError("must be an integer", where)
            return parsed
        return json_integer(value, where)


def _protocol2_repos(
    items: list[object], suse: bool, skipped: dict[str, int], host_arch: str = ""
) -> tuple[ReportedRepository, ...]:
    rpm_kind = RepoKind.ZYPPER if suse else RepoKind.RPM
    out: list[ReportedRepository] = []
    for i, item in enumerate(items):
        repo = _Obj(item, f"repos[{i}]")
        rtype = repo.text("type", 16, required=True)
        if rtype in UNSUPPORTED_TYPES:
            skipped[rtype] = skipped.get(rtype, 0) + 1
            continue
        name = repo.text("name", MAX_REPO_NAME, required=True)
        shifted = _arch_priority_url(repo) if rtype == "arch" else None
        priority = 0 if rtype == "arch" else repo.integer("priority", 0)
        urls: list[str] = [shifted] if shifted else []
        for j, url in enumerate(repo.array("urls", MAX_URLS)):
            where = repo.path(f"urls[{j}]")
            if not isinstance(url, str):
                raise ParseError("must be a string", where)
            storable(url, where)
            if url:
                urls.append(url)
        if rtype == "deb":
            if not urls:
                raise ParseError("a deb repository needs a URL", repo.path("urls"))
            out.extend(deb_repository(name, priority, url, repo.path("urls")) for url in urls)
        elif rtype == "rpm":
            repo_id = repo.text("id", MAX_REPO_ID)
            out.append(rpm_repository(rpm_kind, name, repo_id, priority, urls, repo.path("urls")))
        elif rtype == "arch":
            repo_id = repo.text("id", MAX_REPO_ID)
            out.append(arch_repository(name, repo_id, urls, host_arch, repo.path("urls")))
        else:
            raise ParseError(
                f"unknown repository type {rtype!r} (deb, rpm, arch)", repo.path("type")
            )
    return tuple(dict.fromkeys(out))


def _arch_priority_url(repo: _Obj) -> str | None:
    """The URL the stock client puts in an Arch repository's ``priority`` (reference 1.8).

    The client's JSON builder reads every non-deb repository line as ``type name id
    priority urls...``; Arch lines have no priority, so their first URL lands in
    ``priority`` and the rest in ``urls``. A string there that is not a number is
    taken back as that first URL; a number (a fixed client) or nothing is ignored,
    since pacman repositories have no priority.
    """
    value = repo.obj.get("priority")
    if not isinstance(value, str) or parse_priority(value, repo.path("priority")) is not None:
        return None
    where = repo.path("priority")
    storable(value, where)
    if value and "://" not in value:
        raise ParseError("must be an integer (or the URL the stock client puts there)", where)
    return text_limit(value, where, MAX_URL, required=False) or None


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
        package = make_package(fields, pkg.where, skipped)
        if package is not None:
            out.append(package)
    return tuple(dict.fromkeys(out))


def _protocol2_updates(items: list[object], field: str, security: bool) -> list[ReportedUpdate]:
    out: list[ReportedUpdate] = []
    for i, item in enumerate(items):
        update = _Obj(item, f"{field}[{i}]")
        out.append(
            ReportedUpdate(
                name=pct2b(update.text("name", MAX_PACKAGE_NAME, required=True)),
                version=pct2b(update.text("version", MAX_VERSION, required=True)),
                arch=update.text("arch", MAX_ARCH, required=True),
                security=security,
                repository=update.text("repo", MAX_REPO_ID),
            )
        )
    return out


def parse_protocol2(doc: object, skip_packages: bool = False) -> HostReport:
    """Read Patchman protocol 2: the decoded JSON body of ``POST /api/report/``.

    Keys as in reference 1.8: ``protocol`` (2, default 2), ``hostname``, ``arch``,
    ``kernel`` (URL-decoded), ``os``, ``tags``, ``reboot_required``, ``packages``,
    ``repos``, ``modules``, ``sec_updates``, ``bug_updates``. Unknown keys are ignored.

    Fixed on the way in: ``%2b`` in package and update fields is ``+`` (the client
    forgets to decode it); an empty or missing ``repos`` list means "not collected"
    (``repositories is None``; hooks send ``[]``), and then so does an empty updates
    list; repository URLs of any scheme (Gentoo's rsync) are accepted; Gentoo entries
    are counted in ``extra`` rather than failing; an Arch repository's first URL is
    taken back from ``priority``, where the client's JSON builder puts it.
    ``reboot_required`` true -> True, false -> None, since the client sends false when
    it simply cannot tell.

    ``skip_packages``: the ``packages`` array is not read (the caller knows the set it
    makes, by its listing digest,
    ``patchwatch.domain.set_digest.patchman2_listing_digest``); ``skipped_packages`` is
    then absent from ``extra``.

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
    storable(kernel, "kernel")
    os_string = " ".join(top.text("os", MAX_OS_STRING, required=True).split())
    os_info = parse_patchman_os(os_string)

    raw_tags = top.obj.get("tags")
    if isinstance(raw_tags, str):
        storable(raw_tags, "tags")
        tags = split_tags(raw_tags)
    else:
        collected: list[str] = []
        for _where, tag in top.strings("tags", MAX_TAGS):
            collected.extend(split_tags(tag))
        tags = tuple(dict.fromkeys(collected))
    tags = check_tags(tags, "tags")

    reboot_value = top.obj.get("reboot_required")
    if isinstance(reboot_value, str):
        reboot_value = reboot_value.strip().lower() == "true"
    if reboot_value is not None and not isinstance(reboot_value, bool):
        raise ParseError("must be true or false", "reboot_required")
    reboot = True if reboot_value else None

    skipped_packages: dict[str, int] = {}
    skipped_repos: dict[str, int] = {}
    packages = (
        ()
        if skip_packages
        else _protocol2_packages(top.array("packages", MAX_PACKAGES), skipped_packages)
    )
    repo_items = top.array("repos", MAX_REPOSITORIES)
    repositories = (
        _protocol2_repos(repo_items, os_info.family == "suse", skipped_repos, arch)
        if repo_items
        else None
    )

    modules: list[ReportedModule] = []
    module_repos: list[tuple[str, str]] = []
    for i, item in enumerate(top.array("modules", MAX_MODULES)):
        module = _Obj(item, f"modules[{i}]")
        name = module.text("name", MAX_PACKAGE_NAME, required=True)
        nevras: list[str] = []
        for where, nevra in module.strings("packages", MAX_MODULE_PACKAGES):
            if nevra:
                nevras.append(pct2b(text_limit(nevra, where, MAX_MODULE_PACKAGE, required=False)))
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
    updates = merge_updates(security, other)

    extra = {
        "domain": domain,
        "os_string": os_string,
        "os_variant": os_variant(os_string),
        **module_repositories(module_repos),
        **skipped_extra(skipped_packages, skipped_repos),
    }
    return HostReport(
        hostname=hostname,
        os=os_info,
        kernel=text_limit(kernel, "kernel", MAX_KERNEL, required=True),
        arch=text_limit(arch, "arch", MAX_ARCH, required=True),
        packages=packages,
        repositories=repositories,
        tags=tags,
        reboot_required=reboot,
        modules=tuple(modules),
        updates=None if not updates and repositories is None else updates,
        agent=PATCHMAN_AGENT,
        protocol=PATCHMAN2,
        extra=extra,
    )
