"""OS releases and their groups of repositories, which hosts may use instead of their own.

A change to a group takes effect at the next updates run, like a repository's. A group's
vulnerability ecosystems (``set_vuln_ecosystem``) take effect at the next vulnerability
run: its hosts' findings are computed again then.
"""

from __future__ import annotations

from collections.abc import Sequence

from peewee import fn

from patchwatch.domain.errors import NotFoundError
from patchwatch.domain.records import OSInfo
from patchwatch.domain.vulns.ecosystems import NOT_MATCHED
from patchwatch.domain.vulns.ecosystems import host_ecosystem
from patchwatch.domain.vulns.ecosystems import parse_override
from patchwatch.inventory.common import numbered_ref
from patchwatch.inventory.common import the_one
from patchwatch.inventory.repositories import is_security
from patchwatch.inventory.repositories import repository_label
from patchwatch.store.db import write_transaction
from patchwatch.store.models import Host
from patchwatch.store.models import OSRelease
from patchwatch.store.models import OSReleaseRepository
from patchwatch.store.models import Repository


def resolve_os_release(ref: str, exact: bool = False) -> OSRelease:
    """Return the OS release ``ref`` names: its id, its name (any case), or (unless
    ``exact``) the one release whose name contains ``ref``. Raises ParseError when
    ``ref`` is empty, NotFoundError or AmbiguousError when it names no or several releases.
    """
    empty = "an OS release id or name is required"
    ref, row = numbered_ref(ref, OSRelease, "OS release", "os_release", empty)
    if row is not None:
        return row
    rows = list(OSRelease.select().order_by(OSRelease.name))
    exact_rows = [r for r in rows if r.name.lower() == ref.lower()]
    if exact_rows:
        return exact_rows[0]
    if exact:
        raise NotFoundError(f"no OS release named {ref!r}")
    matches = [r for r in rows if ref.lower() in r.name.lower()]
    return the_one(
        matches, ref, f"no OS release matches {ref!r}", "OS releases", [r.name for r in matches],
        "give the id or the full name",
    )  # fmt: skip


def os_release_list() -> list[dict[str, object]]:
    """OS releases with how many hosts run them, use their repositories, and how many
    repositories their group has."""
    hosts = dict(Host.select(Host.os_release, fn.COUNT(Host.id)).group_by(Host.os_release).tuples())
    using = dict(
        Host.select(Host.os_release, fn.COUNT(Host.id))
        .where(Host.use_os_repositories == True)  # noqa: E712 (SQL expression)
        .group_by(Host.os_release)
        .tuples()
    )
    repos = dict(
        OSReleaseRepository.select(OSReleaseRepository.os_release, fn.COUNT(1))
        .group_by(OSReleaseRepository.os_release)
        .tuples()
    )
    return [
        {"id": r.id, "name": r.name, "family": r.family, "version": r.version,
         "codename": r.codename, "hosts": hosts.get(r.id, 0),
         "hosts_using_os_repositories": using.get(r.id, 0),
         "repositories": repos.get(r.id, 0)}
        for r in OSRelease.select().order_by(OSRelease.name)
    ]  # fmt: skip


def os_release_detail(release: OSRelease) -> dict[str, object]:
    """One OS release with its group's repositories and its hosts."""
    repos = (
        Repository.select()
        .join(OSReleaseRepository, on=(OSReleaseRepository.repository == Repository.id))
        .where(OSReleaseRepository.os_release == release.id)
        .order_by(Repository.key)
    )
    hosts = Host.select(Host.name, Host.use_os_repositories).where(Host.os_release == release.id)
    return {
        "id": release.id, "name": release.name, "family": release.family,
        "os_id": release.os_id, "version": release.version, "codename": release.codename,
        "cpe": release.cpe, "reverse_dns_check": release.reverse_dns_check,
        **vuln_ecosystem_of(release),
        "repositories": [{"id": r.id, "key": r.key, "label": repository_label(r),
                          "security": is_security(r),
                          "enabled": r.enabled} for r in repos],
        "hosts": [{"name": h.name, "use_os_repositories": h.use_os_repositories}
                  for h in hosts.order_by(Host.name)],
    }  # fmt: skip


def add_os_repositories(release: OSRelease, repos: Sequence[Repository]) -> int:
    """Add repositories to an OS release's group; return how many were new."""
    with write_transaction():
        have = {
            r
            for (r,) in OSReleaseRepository.select(OSReleaseRepository.repository)
            .where(OSReleaseRepository.os_release == release.id)
            .tuples()
        }
        new = sorted({r.id for r in repos} - have)
        if new:
            OSReleaseRepository.insert_many(
                [(release.id, rid) for rid in new],
                fields=[OSReleaseRepository.os_release, OSReleaseRepository.repository],
            ).on_conflict_ignore().execute()
    return len(new)


def remove_os_repositories(release: OSRelease, repos: Sequence[Repository]) -> int:
    """Remove repositories from an OS release's group; return how many were in it."""
    with write_transaction():
        return int(
            OSReleaseRepository.delete()
            .where(
                (OSReleaseRepository.os_release == release.id)
                & OSReleaseRepository.repository.in_([r.id for r in repos])
            )
            .execute()
        )


AUTO = "auto"  # the override removed: the mapping from os-release applies again


def vuln_ecosystem_of(release: OSRelease) -> dict[str, object]:
    """The group's override as set (None: none) and the ecosystems its hosts read
    (None: none, its hosts are not matched)."""
    os = OSInfo(release.family, release.os_id, release.name, release.version, release.codename)
    eco = host_ecosystem(os, release.vuln_ecosystem)
    return {
        "vuln_ecosystem_override": release.vuln_ecosystem or None,
        "vuln_ecosystems": sorted(eco.names) if eco is not None else None,
    }


def set_vuln_ecosystem(release: OSRelease, text: str) -> str:
    """Set which vulnerability ecosystems an OS group's hosts read: one or more OSV
    ecosystems of one ordering (``Debian:12``; ``Ubuntu:22.04,Ubuntu:22.04:LTS``),
    ``none`` (no feed: its hosts are "not matched", never "no vulnerabilities"), or
    ``auto`` (the os-release mapping). Returns what is stored ("" for auto).

    Why per group: an OS the mapping does not know (Raspbian, a rebuild, a release
    newer than this program) reads the feed of the distribution it follows, and one
    whose records do not fit its packages can be kept out.

    :raises ParseError: for an ecosystem no ordering is known for, or several orderings.
    """
    text = text.strip()
    if text.lower() == AUTO:
        value = ""
    elif text.lower() == NOT_MATCHED:
        value = NOT_MATCHED
    else:
        eco = parse_override(text)
        assert eco is not None
        value = ",".join([eco.label, *sorted(eco.names - {eco.label})])
    with write_transaction():
        OSRelease.update(vuln_ecosystem=value).where(OSRelease.id == release.id).execute()
    release.vuln_ecosystem = value
    return value
