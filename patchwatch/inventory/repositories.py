"""Repositories as operators handle them: find, list, show, enable, mark security, link.

Changes here are *inputs* of the update computation, whose digest notices them: they
take effect at the next updates run. Linking merges repositories that are one
repository read from several URLs; :func:`possible_mirrors` suggests which.
"""

from __future__ import annotations

import fnmatch
import logging
from collections import defaultdict
from collections.abc import Sequence
from urllib.parse import urlsplit

from peewee import fn

from patchwatch.domain.errors import ConflictError
from patchwatch.domain.errors import NotFoundError
from patchwatch.domain.errors import ParseError
from patchwatch.inventory.common import is_glob
from patchwatch.inventory.common import numbered_ref
from patchwatch.inventory.common import the_one
from patchwatch.store.db import write_transaction
from patchwatch.store.models import Advisory
from patchwatch.store.models import Host
from patchwatch.store.models import HostUpdate
from patchwatch.store.models import Mirror
from patchwatch.store.models import OSRelease
from patchwatch.store.models import OSReleaseRepository
from patchwatch.store.models import PackageSet
from patchwatch.store.models import Repository
from patchwatch.store.models import RepositorySet
from patchwatch.store.models import RepositorySetMember
from patchwatch.store.models import UpdateSetItem

log = logging.getLogger(__name__)


def resolve_repository(ref: str, exact: bool = False) -> Repository:
    """Return the repository ``ref`` names: its id, its exact key, or (unless ``exact``)
    the one repository whose key or name contains ``ref`` or matches it as a glob.

    :raises ParseError: for an empty reference.
    :raises NotFoundError: when nothing matches.
    :raises AmbiguousError: when several repositories match.
    """
    empty = "a repository id or key is required"
    ref, repo = numbered_ref(ref, Repository, "repository", "repository", empty)
    if repo is not None:
        return repo
    repo = Repository.get_or_none(Repository.key == ref)
    if repo is not None:
        return repo
    if exact:
        raise NotFoundError(f"no repository {ref!r} (give its id or its exact key)")
    low = ref.lower()
    rows = Repository.select().order_by(Repository.id)
    if is_glob(low):
        matches = [r for r in rows if fnmatch.fnmatchcase(r.key.lower(), low)]
    else:
        matches = [r for r in rows if low in r.key.lower() or low in r.name.lower()]
    shown = [f"{r.id} {repository_label(r)}" for r in matches]
    return the_one(
        matches, ref, f"no repository matches {ref!r}", "repositories", shown, "give the id", 3
    )


def is_security(repo: Repository) -> bool:
    """The repository's effective security flag: the operator's word, else the metadata's."""
    return bool(repo.security if repo.security_override is None else repo.security_override)


def _security_mode(repo: Repository) -> str:
    if repo.security_override is None:
        return "auto"
    return "yes" if repo.security_override else "no"


def repository_label(repo: Repository) -> str:
    """A short name for tables: what tells repositories apart first, the URL last.

    Keys start with the URL, so a table cutting a key at 30 characters would show
    ``deb http://deb.debian.o…`` for every Debian repository.
    """
    url = next((part for part in repo.key.split(" ") if "://" in part), "")
    where = url.split("://", 1)[-1]
    parts = (
        [repo.suite, repo.component, repo.arch, where]
        if repo.kind == "deb"
        else [repo.repo_id, repo.arch, where]
    )
    return " ".join(p for p in parts if p) or repo.key


def repository_hosts(repo_id: int | None = None) -> dict[int, set[str]]:
    """Per repository (or for the one with ``repo_id``), the hosts that report it or use
    it through their OS group."""
    users: dict[int, set[str]] = defaultdict(set)
    own = RepositorySetMember.select(RepositorySetMember.repository, Host.name).join(
        Host, on=(Host.repository_set == RepositorySetMember.repository_set)
    )
    by_os = (
        OSReleaseRepository.select(OSReleaseRepository.repository, Host.name)
        .join(Host, on=(Host.os_release == OSReleaseRepository.os_release))
        .where(Host.use_os_repositories == True)  # noqa: E712 (SQL expression)
    )
    if repo_id is not None:
        own = own.where(RepositorySetMember.repository == repo_id)
        by_os = by_os.where(OSReleaseRepository.repository == repo_id)
    for rid, name in [*own.tuples(), *by_os.tuples()]:
        users[rid].add(name)
    return users


def used_repositories() -> set[int]:
    """Ids of the repositories some host uses, as :func:`repository_hosts` counts them
    (reported, or in the OS group of a host using its group's), without reading the
    hosts' names: two queries of distinct ids."""
    own = (
        RepositorySetMember.select(RepositorySetMember.repository)
        .where(RepositorySetMember.repository_set.in_(Host.select(Host.repository_set).distinct()))
        .distinct()
    )
    by_os = (
        OSReleaseRepository.select(OSReleaseRepository.repository)
        .where(
            OSReleaseRepository.os_release.in_(
                Host.select(Host.os_release)
                .where(Host.use_os_repositories == True)  # noqa: E712 (SQL expression)
                .distinct()
            )
        )
        .distinct()
    )
    return {r for (r,) in own.tuples()} | {r for (r,) in by_os.tuples()}


def _mirror_dict(m: Mirror) -> dict[str, object]:
    return {
        "id": m.id, "url": m.url, "kind": m.kind, "enabled": m.enabled, "approved": m.approved,
        "last_attempt_at": m.last_attempt_at, "last_success_at": m.last_success_at,
        "failures_total": m.failures_total, "consecutive_failures": m.consecutive_failures,
        "last_error": m.last_error, "packages": m.package_count,
    }  # fmt: skip


def repository_choices() -> list[tuple[int, str]]:
    """Every repository's id and short label, for a form's choice (one cheap query)."""
    return [(r.id, repository_label(r)) for r in Repository.select().order_by(Repository.id)]


def mirror_list(url: str | None = None) -> list[dict[str, object]]:
    """Every mirror (or those with exactly this URL) with its repository and refresh state."""
    query = Mirror.select(Mirror, Repository).join(Repository).order_by(Repository.id, Mirror.url)
    if url:
        query = query.where(Mirror.url == url)
    return [
        {**_mirror_dict(m), "approved": m.approved, "repository": m.repository.id,
         "repository_key": m.repository.key, "repository_label": repository_label(m.repository)}
        for m in query
    ]  # fmt: skip


def mirrors_by_repository_key(keys: Sequence[str]) -> dict[str, list[dict[str, object]]]:
    """The mirrors of the repositories with these keys (a host's), by key, in one query."""
    out: dict[str, list[dict[str, object]]] = defaultdict(list)
    if not keys:
        return out
    query = (
        Mirror.select(Mirror, Repository)
        .join(Repository)
        .where(Repository.key.in_(list(keys)))
        .order_by(Mirror.url)
    )
    for m in query:
        out[m.repository.key].append({**_mirror_dict(m), "repository": m.repository.id})
    return out


def repository_list() -> list[dict[str, object]]:
    """Every repository with its flags, host count and a summary of its mirrors."""
    users = repository_hosts()
    mirrors: dict[int, list[Mirror]] = defaultdict(list)
    for m in Mirror.select().order_by(Mirror.url):
        mirrors[m.repository_id].append(m)
    out = []
    for r in Repository.select().order_by(Repository.id):
        ms = mirrors.get(r.id, [])
        successes = [m.last_success_at for m in ms if m.last_success_at is not None]
        out.append(
            {"id": r.id, "key": r.key, "label": repository_label(r), "kind": r.kind,
             "name": r.name, "arch": r.arch, "security": is_security(r),
             "security_mode": _security_mode(r),
             "enabled": r.enabled, "auth_required": r.auth_required,
             "hosts": len(users.get(r.id, ())), "mirrors": len(ms),
             "failing_mirrors": sum(1 for m in ms if m.consecutive_failures > 0),
             "last_success_at": max(successes) if successes else None}
        )  # fmt: skip
    return out


def repository_detail(repo: Repository) -> dict[str, object]:
    """One repository with its mirrors, the hosts using it and the OS groups holding it."""
    users = sorted(repository_hosts(repo.id).get(repo.id, set()))
    os_names = [
        name
        for (name,) in OSRelease.select(OSRelease.name)
        .join(OSReleaseRepository, on=(OSReleaseRepository.os_release == OSRelease.id))
        .where(OSReleaseRepository.repository == repo.id)
        .order_by(OSRelease.name)
        .tuples()
    ]
    return {
        "id": repo.id, "key": repo.key, "kind": repo.kind, "name": repo.name,
        "repo_id": repo.repo_id, "suite": repo.suite, "component": repo.component,
        "arch": repo.arch, "security": is_security(repo), "security_mode": _security_mode(repo),
        "security_from_metadata": repo.security, "enabled": repo.enabled,
        "auth_required": repo.auth_required, "created_at": repo.created_at,
        "advisories": Advisory.select().where(Advisory.repository == repo.id).count(),
        "os_releases": os_names, "hosts": users,
        "mirrors": [_mirror_dict(m) for m in
                    Mirror.select().where(Mirror.repository == repo.id).order_by(Mirror.url)],
    }  # fmt: skip


def set_repositories_enabled(repos: Sequence[Repository], enabled: bool) -> int:
    """Enable or disable repositories; return how many changed.

    A disabled repository is neither refreshed nor offers updates; the hosts' updates
    change at the next updates run.
    """
    ids = [r.id for r in repos]
    with write_transaction():
        return int(
            Repository.update(enabled=enabled)
            .where(Repository.id.in_(ids) & (Repository.enabled != enabled))
            .execute()
        )


def set_repository_security(repo: Repository, value: bool | None) -> Repository:
    """Mark a repository as security (True), not security (False), or as its metadata says
    (None). Marking whole repositories is how RHEL-like fleets match ``yum --security``."""
    with write_transaction():
        Repository.update(security_override=value).where(Repository.id == repo.id).execute()
    return Repository.get_by_id(repo.id)


def _identity(repo: Repository) -> tuple[str, ...]:
    """What must agree for two repositories to be one repository under several URLs."""
    if repo.kind == "deb":
        return (repo.kind, repo.suite, repo.component, repo.arch)
    return (repo.kind, repo.repo_id, repo.arch)


def check_link(target: Repository, sources: Sequence[Repository], force: bool = False) -> None:
    """Refuse a link that would merge repositories that are not the same one.

    :raises ParseError: when no source is given.
    :raises ConflictError: when a source is the target, or differs in kind, suite,
        component or architecture (apt) or repo id and architecture (rpm), unless
        ``force``.
    """
    if not sources:
        raise ParseError("name at least one repository to link", "repositories")
    for src in sources:
        if src.id == target.id:
            raise ConflictError(f"repository {target.id} cannot be linked to itself")
        if src.kind != target.kind:
            raise ConflictError(
                f"repository {src.id} is {src.kind}, repository {target.id} is {target.kind}"
            )
        if not force and _identity(src) != _identity(target):
            raise ConflictError(
                f"repository {src.id} ({' '.join(_identity(src)[1:])}) does not look like "
                f"repository {target.id} ({' '.join(_identity(target)[1:])}); "
                "use --force (API: force) to link anyway"
            )


def link_repositories(
    target: Repository, sources: Sequence[Repository], force: bool = False
) -> dict[str, object]:
    """Make ``sources`` mirrors of ``target``: one repository with several URLs.

    Their mirrors, the host repository sets and OS groups using them, pending updates
    and advisories are moved to ``target``, then the sources are deleted. Hosts keep
    reporting the old URLs; their stored repository sets now point at ``target``.

    :raises ConflictError: see :func:`check_link`.
    """
    check_link(target, sources, force)
    sources = list({s.id: s for s in sources}.values())
    moved = dropped = repointed = 0
    with write_transaction():
        for src in sources:
            urls = {m.url for m in Mirror.select(Mirror.url).where(Mirror.repository == target)}
            for m in list(Mirror.select().where(Mirror.repository == src.id)):
                if m.url in urls:
                    m.delete_instance()
                    dropped += 1
                else:
                    Mirror.update(repository=target.id).where(Mirror.id == m.id).execute()
                    urls.add(m.url)
                    moved += 1
            repointed += _merge_set_members(src.id, target.id)
            for row in list(OSReleaseRepository.select().where(
                    OSReleaseRepository.repository == src.id)):  # fmt: skip
                OSReleaseRepository.insert(
                    os_release=row.os_release_id, repository=target.id
                ).on_conflict_ignore().execute()
            HostUpdate.update(repository=target.id).where(HostUpdate.repository == src.id).execute()
            UpdateSetItem.update(repository=target.id).where(
                UpdateSetItem.repository == src.id
            ).execute()
            have = Advisory.select(Advisory.advisory_id).where(Advisory.repository == target.id)
            Advisory.update(repository=target.id).where(
                (Advisory.repository == src.id) & Advisory.advisory_id.not_in(have)
            ).execute()
            Repository.delete().where(Repository.id == src.id).execute()
    log.info("linked %d repositories into %s", len(sources), target.key)
    return {
        "repository": target.id, "key": target.key,
        "linked": [s.key for s in sources], "mirrors_moved": moved,
        "mirrors_dropped_as_duplicates": dropped, "repository_sets_repointed": repointed,
    }  # fmt: skip


def _merge_set_members(src_id: int, target_id: int) -> int:
    """Point repository-set members from ``src_id`` to ``target_id``; merge where a set
    already has both (the higher priority wins, enabled if either was)."""
    count = 0
    members = list(RepositorySetMember.select().where(RepositorySetMember.repository == src_id))
    for m in members:
        both = RepositorySetMember.get_or_none(
            (RepositorySetMember.repository_set == m.repository_set_id)
            & (RepositorySetMember.repository == target_id)
        )
        if both is None:
            RepositorySetMember.update(repository=target_id).where(
                (RepositorySetMember.repository_set == m.repository_set_id)
                & (RepositorySetMember.repository == src_id)
            ).execute()
        else:
            RepositorySetMember.update(
                priority=max(both.priority, m.priority), enabled=both.enabled or m.enabled
            ).where(
                (RepositorySetMember.repository_set == m.repository_set_id)
                & (RepositorySetMember.repository == target_id)
            ).execute()
            RepositorySetMember.delete().where(
                (RepositorySetMember.repository_set == m.repository_set_id)
                & (RepositorySetMember.repository == src_id)
            ).execute()
            RepositorySet.update(size=RepositorySet.size - 1).where(
                RepositorySet.id == m.repository_set_id
            ).execute()
        count += 1
    return count


def _url_tail(key: str) -> str:
    """The last path segment of a deb repository's archive URL (``debian``, ``ubuntu``)."""
    parts = key.split(" ")
    url = parts[1] if len(parts) > 1 else ""
    return urlsplit(url).path.rstrip("/").rsplit("/", 1)[-1]


def possible_mirrors() -> list[dict[str, object]]:
    """Repositories that look like one repository read from several URLs.

    Two signals, as Patchman's dashboard has: the same identity (apt: suite,
    component, architecture and archive folder name, e.g. ``debian``; rpm: repo id and
    architecture), or mirrors holding exactly the same non-empty package index. Each
    returned row is one repository with the number of its group; link a group with
    ``repos link``.
    """
    repos = {r.id: r for r in Repository.select()}
    parent = {rid: rid for rid in repos}

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    reasons: dict[int, set[str]] = defaultdict(set)

    def union(ids: list[int], reason: str) -> None:
        for rid in ids:
            reasons[rid].add(reason)
        for other in ids[1:]:
            parent[find(other)] = find(ids[0])

    by_identity: dict[tuple[str, ...], list[int]] = defaultdict(list)
    for r in repos.values():
        if r.kind == "deb":
            by_identity[(*_identity(r), _url_tail(r.key))].append(r.id)
        elif r.repo_id:
            by_identity[_identity(r)].append(r.id)
    for ids in by_identity.values():
        if len(ids) > 1:
            union(sorted(ids), "same identity")
    by_content: dict[tuple[str, int], set[int]] = defaultdict(set)
    query = (
        Mirror.select(Mirror.repository, Mirror.package_set)
        .join(PackageSet, on=(Mirror.package_set == PackageSet.id))
        .where(PackageSet.size > 0)
        .tuples()
    )
    for repo_id, pset_id in query:
        by_content[(repos[repo_id].kind, pset_id)].add(repo_id)
    for same in by_content.values():
        if len(same) > 1:
            union(sorted(same), "same packages")
    groups: dict[int, list[int]] = defaultdict(list)
    for rid in repos:
        groups[find(rid)].append(rid)
    users = repository_hosts()
    mirror_counts = dict(
        Mirror.select(Mirror.repository, fn.COUNT(Mirror.id)).group_by(Mirror.repository).tuples()
    )
    out: list[dict[str, object]] = []
    numbered = sorted(sorted(ids) for ids in groups.values() if len(ids) > 1)
    for number, ids in enumerate(numbered, 1):
        for rid in ids:
            r = repos[rid]
            out.append(
                {"group": number, "id": rid, "key": r.key, "label": repository_label(r),
                 "kind": r.kind,
                 "hosts": len(users.get(rid, ())), "mirrors": mirror_counts.get(rid, 0),
                 "reason": ", ".join(sorted(reasons[rid]))}
            )  # fmt: skip
    return out
