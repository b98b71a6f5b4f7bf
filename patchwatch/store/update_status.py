"""Whether a host's pending updates are known, and if not, why: for the CLI and the API.

A host whose updates were never computed, or were computed without the data of one of
its repositories, has no pending-update counts: showing 0 would make it look fully
patched. Its state is ``unknown``, with a reason an operator can act on ("mirrors not
read yet", "repository X failed to refresh: ..."). A host whose report changed what
its updates are computed from keeps its last counts until the computation catches up
(seconds, see ``patchwatch.pipeline.followup``); its state is ``stale`` meanwhile.

The state comes from the host row alone (:func:`update_state`); the reasons need the
host's repositories and their mirrors, read with a few grouped queries for any number
of hosts (:func:`unknown_reasons`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from patchwatch.store.db import chunks
from patchwatch.store.models import Host
from patchwatch.store.models import Mirror
from patchwatch.store.models import OSReleaseRepository
from patchwatch.store.models import Repository
from patchwatch.store.models import RepositorySetMember

CURRENT = "current"
STALE = "stale"
UNKNOWN = "unknown"
STALE_REASON = "its last report changed them; the computation is due"
NOT_COMPUTED = "updates not computed yet"
NOT_READ = "mirrors not read yet"


def update_state(
    complete: bool | int | None,
    computed_at: float | None,
    inputs_changed_at: float | None,
    inputs_seen: float | None,
) -> str:
    """``current``, ``stale`` or ``unknown``, from the host row's columns.

    Known means computed with the data of every repository the server can read;
    stale, that processing changed the inputs since (the counts are the last known).
    """
    if not complete or computed_at is None:
        return UNKNOWN
    if inputs_changed_at is not None and inputs_changed_at != inputs_seen:
        return STALE
    return CURRENT


def unknown_reasons(host_ids: Sequence[int]) -> dict[int, str]:
    """Why these hosts' updates are unknown, one sentence each, in a few queries."""
    hosts = []
    for chunk in chunks(sorted(set(host_ids))):
        hosts.extend(
            Host.select(
                Host.id, Host.check_updates, Host.package_set, Host.repository_set,
                Host.use_os_repositories, Host.os_release,
            ).where(Host.id.in_(list(chunk)))
        )  # fmt: skip
    own: dict[int, list[int]] = defaultdict(list)  # repository set -> enabled members
    rset_ids = sorted({h.repository_set_id for h in hosts if h.repository_set_id})
    for chunk in chunks(rset_ids):
        query = RepositorySetMember.select(
            RepositorySetMember.repository_set, RepositorySetMember.repository
        ).where(RepositorySetMember.repository_set.in_(list(chunk)) & RepositorySetMember.enabled)
        for rset_id, repo_id in query.tuples():
            own[rset_id].append(repo_id)
    grouped: dict[int, list[int]] = defaultdict(list)  # OS release -> its group's repositories
    os_ids = sorted({h.os_release_id for h in hosts if h.use_os_repositories and h.os_release_id})
    for chunk in chunks(os_ids):
        query = OSReleaseRepository.select(
            OSReleaseRepository.os_release, OSReleaseRepository.repository
        ).where(OSReleaseRepository.os_release.in_(list(chunk)))
        for os_id, repo_id in query.tuples():
            grouped[os_id].append(repo_id)
    repo_ids = sorted({r for ids in [*own.values(), *grouped.values()] for r in ids})
    repos: dict[int, Repository] = {}
    mirrors: dict[int, list[Mirror]] = defaultdict(list)
    for chunk in chunks(repo_ids):
        repos.update((r.id, r) for r in Repository.select().where(Repository.id.in_(list(chunk))))
        for m in Mirror.select().where(Mirror.repository.in_(list(chunk))).order_by(Mirror.id):
            mirrors[m.repository_id].append(m)
    out = {}
    for host in hosts:
        if host.use_os_repositories:
            members = grouped.get(host.os_release_id, []) if host.os_release_id else []
        else:
            members = own.get(host.repository_set_id, []) if host.repository_set_id else []
        out[host.id] = _reason(host, [repos[r] for r in members if r in repos], mirrors)
    return out


def _reason(host: Host, members: list[Repository], mirrors: dict[int, list[Mirror]]) -> str:
    if not host.check_updates:
        return "update checks are off for this host"
    if host.package_set_id is None:
        return "no report processed yet"
    if not members:
        if host.use_os_repositories:
            return "its OS group has no repositories"
        return "it reported no repositories"
    readable = [r for r in members if r.enabled and not r.auth_required]
    if not readable:
        return "the server can read none of its repositories"
    lacking = [
        r
        for r in readable
        if not any(m.enabled and m.package_set_id is not None for m in mirrors.get(r.id, []))
    ]
    if not lacking:
        return NOT_COMPUTED
    more = f" (and {len(lacking) - 1} more without data)" if len(lacking) > 1 else ""
    for repo in lacking:
        failing = [m for m in mirrors.get(repo.id, []) if m.enabled and m.consecutive_failures]
        if failing:
            error = failing[0].last_error.strip() or "no reason recorded"
            return f"repository {repo.key} failed to refresh: {error[:200]}{more}"
    for repo in lacking:
        if not any(m.enabled for m in mirrors.get(repo.id, [])):
            return f"repository {repo.key} has no mirror to read{more}"
    return NOT_READ
