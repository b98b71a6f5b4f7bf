"""Named reads and writes for operators: the fleet's inventory, its upkeep, its problems.

The CLI (``patchwatch hosts|repos|os|packages|attention|dbcheck``) and the admin API
call these; each returns plain dicts or records so that both render the same data.
Lookups that an operator types (a host, a repository, an OS release) resolve to exactly
one object or fail with a message that says why (unknown, or which candidates an
ambiguous name matches); the API asks for exact names and ids.

Writes are short transactions. Changes to a repository (enabled, security, linking) or
to an OS group are *inputs* of the update computation, whose digest notices them: they
take effect at the next updates run, not here. A host's own flags are recomputed for
that one host at once, because an operator who flips them wants to see the result.

Not done here: refreshing mirrors (``patchwatch.pipeline.refresh``), processing reports
(``patchwatch.pipeline.processing``), deleting tokens or host credentials with a host (revoke
the token: ``patchwatch token revoke``).
"""

from __future__ import annotations

import enum
import fnmatch
import logging
import math
import re
from collections import defaultdict
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Sequence
from datetime import UTC
from datetime import datetime
from typing import Literal
from typing import TypeVar
from urllib.parse import urlsplit

from peewee import JOIN
from peewee import fn

from patchwatch.domain.diffs import HostDiff
from patchwatch.domain.diffs import HostInventory
from patchwatch.domain.diffs import compute_host_diff
from patchwatch.domain.errors import NotFoundError
from patchwatch.domain.errors import ParseError
from patchwatch.domain.errors import PatchwatchError
from patchwatch.pipeline.hostupdates import refresh_host_updates
from patchwatch.pipeline.hostupdates import repository_membership
from patchwatch.store import rdns
from patchwatch.store.db import database
from patchwatch.store.db import is_sqlite
from patchwatch.store.db import write_transaction
from patchwatch.store.models import MODELS
from patchwatch.store.models import Advisory
from patchwatch.store.models import AdvisoryPackage
from patchwatch.store.models import BaseModel
from patchwatch.store.models import Host
from patchwatch.store.models import HostUpdate
from patchwatch.store.models import Mirror
from patchwatch.store.models import OSRelease
from patchwatch.store.models import OSReleaseRepository
from patchwatch.store.models import Package
from patchwatch.store.models import PackageSet
from patchwatch.store.models import Report
from patchwatch.store.models import Repository
from patchwatch.store.models import RepositorySet
from patchwatch.store.models import RepositorySetMember
from patchwatch.store.models import UpdateSet
from patchwatch.store.models import UpdateSetItem
from patchwatch.store.oversized import Removed
from patchwatch.store.oversized import find_oversized
from patchwatch.store.oversized import remove_oversized
from patchwatch.store.package_sets import MEMBER_PACKAGE_COLUMN
from patchwatch.store.package_sets import MEMBER_SET_COLUMN
from patchwatch.store.package_sets import check as check_package_sets
from patchwatch.store.package_sets import member_rows_of_sets
from patchwatch.store.package_sets import packages_in
from patchwatch.store.queries import host_detail
from patchwatch.store.queries import load_host_rows
from patchwatch.store.update_status import NOT_COMPUTED
from patchwatch.store.update_status import UNKNOWN
from patchwatch.store.update_status import unknown_reasons

log = logging.getLogger(__name__)

DAY = 86400.0
BATCH = 500  # ids per IN (...) list: far below SQLite's and PostgreSQL's limits
PENDING_REPORT_AGE = 3600.0  # a report queued this long means processing is stuck
GLOB_CHARS = frozenset("*?[")

# Packages every rpm host has that no repository ever offers: the rpm database's
# stand-ins for imported signing keys. Listing them as "from no repository" is noise.
PSEUDO_PACKAGES = frozenset({"gpg-pubkey", "gpg-pubkey-release"})

ProgressFn = Callable[[int, int, str], None]  # (done, total, what is being done)
T = TypeVar("T")


class AmbiguousError(PatchwatchError):
    """A name or pattern that must pick one object matches several."""


class ConflictError(PatchwatchError):
    """The store's current state does not allow the operation (linking unlike repositories)."""


class Keep(enum.Enum):
    """Marks an optional setting as "leave as it is" where ``None`` means "clear it"."""

    KEEP = "keep"


KEEP = Keep.KEEP


def _chunks(items: Sequence[T], size: int = BATCH) -> Iterable[Sequence[T]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _is_glob(text: str) -> bool:
    return any(c in GLOB_CHARS for c in text)


def _candidates(names: Sequence[str], limit: int = 4) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


# --- hosts -------------------------------------------------------------------------------


def get_host(name: str) -> Host:
    """Return the host with exactly this name (case-insensitive).

    :raises NotFoundError: when there is none.
    """
    host = Host.get_or_none(Host.name == name.strip().lower())
    if host is None:
        raise NotFoundError(f"no host named {name.strip()!r}")
    return host


def resolve_host(ref: str) -> Host:
    """Return the one host an operator means by ``ref``.

    Tried in order: the exact name; the host whose name starts with ``ref.`` (so
    ``web1`` finds ``web1.example.com``, as Patchman's ``-H`` does); for a glob pattern,
    the one host it matches.

    :raises ParseError: for an empty name.
    :raises NotFoundError: when nothing matches.
    :raises AmbiguousError: when several hosts match.
    """
    ref = ref.strip().lower()
    if not ref:
        raise ParseError("a host name is required", "host")
    if not _is_glob(ref):
        host = Host.get_or_none(Host.name == ref)
        if host is not None:
            return host
    names = [n for (n,) in Host.select(Host.name).order_by(Host.name).tuples()]
    if _is_glob(ref):
        matches = [n for n in names if fnmatch.fnmatchcase(n, ref)]
    else:
        matches = [n for n in names if n.startswith(ref + ".")]
    if not matches:
        raise NotFoundError(f"no host named {ref!r}")
    if len(matches) > 1:
        raise AmbiguousError(
            f"{ref!r} matches {len(matches)} hosts ({_candidates(matches)}); give the full name"
        )
    return Host.get(Host.name == matches[0])


def match_hosts(pattern: str) -> list[str]:
    """Return the names a pattern selects: every match of a glob, else the one host named.

    This is what ``hosts delete`` shows before it deletes, so a dry run and a
    confirmation prompt list exactly what would go.

    :raises ParseError: for an empty pattern.
    :raises NotFoundError: when nothing matches.
    :raises AmbiguousError: when a plain name (not a glob) matches several hosts.
    """
    pattern = pattern.strip().lower()
    if not pattern:
        raise ParseError("a host name or glob pattern is required", "pattern")
    if not _is_glob(pattern):
        return [resolve_host(pattern).name]
    names = [n for (n,) in Host.select(Host.name).order_by(Host.name).tuples()]
    matches = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
    if not matches:
        raise NotFoundError(f"no host matches {pattern!r}")
    return matches


def delete_hosts(names: Sequence[str]) -> int:
    """Delete these hosts with their pending updates, modules and stored reports.

    Reports go too: otherwise ``process --force`` would bring a deleted host back from
    its kept reports. A host that reports again is simply created again. Returns the
    number of hosts deleted.
    """
    deleted = 0
    with write_transaction():
        for chunk in _chunks([n.lower() for n in names]):
            Report.delete().where(Report.host_name.in_(list(chunk))).execute()
            # no foreign key cascades these on PostgreSQL (migration 3)
            ids = Host.select(Host.id).where(Host.name.in_(list(chunk)))
            HostUpdate.delete().where(HostUpdate.host.in_(ids)).execute()
            deleted += Host.delete().where(Host.name.in_(list(chunk))).execute()
    return deleted


def load_host_inventory(host: Host) -> HostInventory:
    """Return what a host diff compares, read with two queries."""
    packages: tuple[tuple[str, str, str], ...] = ()
    if host.package_set_id is not None:
        rows = (
            packages_in(host.package_set_id, Package.name, Package.arch, Package.epoch,
                        Package.version, Package.release)
            .tuples()
        )  # fmt: skip
        packages = tuple((n, a, _evr(e, v, r)) for n, a, e, v, r in rows)
    repo_ids = [r for r, _prio, _enabled in repository_membership(host)]
    keys: list[str] = []
    for chunk in _chunks(repo_ids):
        query = Repository.select(Repository.key).where(Repository.id.in_(list(chunk)))
        keys.extend(k for (k,) in query.tuples())
    return HostInventory(
        name=host.name, os=host.os_release.name if host.os_release_id else "",
        arch=host.arch, kernel=host.kernel, packages=packages, repositories=tuple(keys),
    )  # fmt: skip


def _evr(epoch: str, version: str, release: str) -> str:
    out = f"{epoch}:{version}" if epoch not in ("", "0") else version
    return f"{out}-{release}" if release else out


def diff_hosts(a: Host, b: Host) -> HostDiff:
    """Compare two hosts (see ``patchwatch.domain.diffs``); ``a`` is the "-" side."""
    return compute_host_diff(load_host_inventory(a), load_host_inventory(b))


def host_flags(host: Host, now: float) -> dict[str, object]:
    """The operator-set flags of a host, with whether it is in maintenance right now."""
    until = host.maintenance_until
    return {
        "name": host.name,
        "use_os_repositories": host.use_os_repositories,
        "check_updates": host.check_updates,
        "maintenance_until": until,
        "in_maintenance": until is not None and until > now,
    }


def host_overview(host: Host, now: float) -> dict[str, object]:
    """One host as ``hosts show`` and the API present it: details, flags, updates."""
    detail = host_detail(host.name)
    detail.update(host_flags(host, now))
    detail["os_variant"] = host.os_variant
    detail["agent"] = host.agent
    os_flag = host.os_release.reverse_dns_check if host.os_release_id else None
    detail.update(rdns.host_result(host, os_flag))
    return detail


_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": DAY, "w": 7 * DAY}
_OFF = frozenset({"off", "none", "clear", "no"})


def parse_maintenance_until(value: object, now: float) -> float | None:
    """Read a maintenance end: a Unix time, an ISO 8601 time, a duration, or off.

    Durations are a number and one unit (``90m``, ``12h``, ``3d``, ``1w``) counted
    from ``now``. A time without an offset is UTC, whatever the server's time zone, so
    that the CLI and the API agree. ``None``, ``off``, ``none`` and ``clear`` mean no
    maintenance. The end is at most :data:`MAX_MAINTENANCE_DAYS` ahead: 1e308 was
    stored once and then every reader that formats the time failed until it was reset.

    :raises ParseError: for anything else.
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ParseError("expected a time, a duration or off", "maintenance_until")
    if isinstance(value, int | float):
        return _bounded(float(value), now)
    text = value.strip()
    if text.lower() in _OFF:
        return None
    m = _DURATION.match(text.lower())
    if m:
        return _bounded(now + float(m.group(1)) * _UNITS[m.group(2)], now)
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ParseError(
            f"expected an ISO 8601 time (2030-06-01T18:00Z), a duration (90m, 12h, 3d, 1w) "
            f"or off, got {text!r}",
            "maintenance_until",
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return _bounded(when.timestamp(), now)


MAX_MAINTENANCE_DAYS = 3660  # ten years: longer is "do not check", check_updates=false


def _bounded(value: float, now: float) -> float:
    if not math.isfinite(value):  # JSON allows NaN and Infinity; a deadline does not
        raise ParseError("expected a finite time", "maintenance_until")
    if value > now + MAX_MAINTENANCE_DAYS * DAY:
        raise ParseError(
            f"a maintenance window ends at most {MAX_MAINTENANCE_DAYS} days ahead "
            "(to stop checking a host, set check_updates to false)",
            "maintenance_until",
        )
    return value


def set_host_flags(
    host: Host,
    now: float,
    *,
    use_os_repositories: bool | None = None,
    check_updates: bool | None = None,
    maintenance_until: float | Literal[Keep.KEEP] | None = KEEP,
) -> dict[str, object]:
    """Change a host's operator flags and return them as they are now.

    Turning ``check_updates`` off clears the host's pending updates: nothing would
    recompute them any more, and frozen ones would keep ageing into alerts. They are
    then unknown, not none (no series, "unknown" in listings). Turning it
    on, or switching between the host's own repositories and its OS group's,
    recomputes the host's updates at once.

    :raises ParseError: for a maintenance end that is already past.
    """
    changes: dict[str, object] = {}
    if use_os_repositories is not None and use_os_repositories != host.use_os_repositories:
        changes["use_os_repositories"] = use_os_repositories
    if check_updates is not None and check_updates != host.check_updates:
        changes["check_updates"] = check_updates
        if not check_updates:
            changes["updates_complete"] = False
    if maintenance_until is not KEEP:
        if maintenance_until is not None and maintenance_until <= now:
            raise ParseError("the maintenance end is in the past", "maintenance_until")
        changes["maintenance_until"] = maintenance_until
    if changes:
        with write_transaction():
            Host.update(**changes).where(Host.id == host.id).execute()
            if check_updates is False:
                HostUpdate.delete().where(HostUpdate.host == host.id).execute()
    host = Host.get_by_id(host.id)
    recompute = "use_os_repositories" in changes or "check_updates" in changes
    if recompute and host.check_updates:
        refresh_host_updates(now, [host.name])
    return host_flags(host, now)


# --- repositories ------------------------------------------------------------------------


def resolve_repository(ref: str, exact: bool = False) -> Repository:
    """Return the repository ``ref`` names: its id, its exact key, or (unless ``exact``)
    the one repository whose key or name contains ``ref`` or matches it as a glob.

    :raises ParseError: for an empty reference.
    :raises NotFoundError: when nothing matches.
    :raises AmbiguousError: when several repositories match.
    """
    ref = ref.strip()
    if not ref:
        raise ParseError("a repository id or key is required", "repository")
    if ref.isdigit():
        repo = Repository.get_or_none(Repository.id == int(ref))
        if repo is None:
            raise NotFoundError(f"no repository with id {ref}")
        return repo
    repo = Repository.get_or_none(Repository.key == ref)
    if repo is not None:
        return repo
    if exact:
        raise NotFoundError(f"no repository {ref!r} (give its id or its exact key)")
    low = ref.lower()
    rows = Repository.select().order_by(Repository.id)
    if _is_glob(low):
        matches = [r for r in rows if fnmatch.fnmatchcase(r.key.lower(), low)]
    else:
        matches = [r for r in rows if low in r.key.lower() or low in r.name.lower()]
    if not matches:
        raise NotFoundError(f"no repository matches {ref!r}")
    if len(matches) > 1:
        shown = [f"{r.id} {repository_label(r)}" for r in matches]
        raise AmbiguousError(
            f"{ref!r} matches {len(matches)} repositories ({_candidates(shown, 3)}); give the id"
        )
    return matches[0]


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


def _repository_hosts() -> dict[int, set[str]]:
    """Per repository, the hosts that report it or use it through their OS group."""
    users: dict[int, set[str]] = defaultdict(set)
    own = (
        RepositorySetMember.select(RepositorySetMember.repository, Host.name)
        .join(Host, on=(Host.repository_set == RepositorySetMember.repository_set))
        .tuples()
    )
    by_os = (
        OSReleaseRepository.select(OSReleaseRepository.repository, Host.name)
        .join(Host, on=(Host.os_release == OSReleaseRepository.os_release))
        .where(Host.use_os_repositories == True)  # noqa: E712 (SQL expression)
        .tuples()
    )
    for repo_id, name in [*own, *by_os]:
        users[repo_id].add(name)
    return users


def _mirror_dict(m: Mirror) -> dict[str, object]:
    return {
        "id": m.id, "url": m.url, "kind": m.kind, "enabled": m.enabled, "approved": m.approved,
        "last_attempt_at": m.last_attempt_at, "last_success_at": m.last_success_at,
        "failures_total": m.failures_total, "consecutive_failures": m.consecutive_failures,
        "last_error": m.last_error, "packages": m.package_count,
    }  # fmt: skip


def repository_list() -> list[dict[str, object]]:
    """Every repository with its flags, host count and a summary of its mirrors."""
    users = _repository_hosts()
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
    users = sorted(_repository_hosts().get(repo.id, set()))
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
    for ids in by_content.values():
        if len(ids) > 1:
            union(sorted(ids), "same packages")
    groups: dict[int, list[int]] = defaultdict(list)
    for rid in repos:
        groups[find(rid)].append(rid)
    users = _repository_hosts()
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


# --- OS groups ---------------------------------------------------------------------------


def resolve_os_release(ref: str, exact: bool = False) -> OSRelease:
    """Return the OS release ``ref`` names: its id, its name (any case), or (unless
    ``exact``) the one release whose name contains ``ref``.

    :raises ParseError: for an empty reference.
    :raises NotFoundError: when nothing matches.
    :raises AmbiguousError: when several releases match.
    """
    ref = ref.strip()
    if not ref:
        raise ParseError("an OS release id or name is required", "os_release")
    if ref.isdigit():
        row = OSRelease.get_or_none(OSRelease.id == int(ref))
        if row is None:
            raise NotFoundError(f"no OS release with id {ref}")
        return row
    rows = list(OSRelease.select().order_by(OSRelease.name))
    exact_rows = [r for r in rows if r.name.lower() == ref.lower()]
    if exact_rows:
        return exact_rows[0]
    if exact:
        raise NotFoundError(f"no OS release named {ref!r}")
    matches = [r for r in rows if ref.lower() in r.name.lower()]
    if not matches:
        raise NotFoundError(f"no OS release matches {ref!r}")
    if len(matches) > 1:
        raise AmbiguousError(
            f"{ref!r} matches {len(matches)} OS releases "
            f"({_candidates([r.name for r in matches])}); give the id or the full name"
        )
    return matches[0]


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


# --- packages ----------------------------------------------------------------------------


def package_known(name: str) -> bool:
    """Tell whether any host or mirror has ever had a package of this name."""
    return bool(Package.select(Package.id).where(Package.name == name).exists())


def orphan_packages(
    host: Host | None = None, progress: ProgressFn | None = None
) -> list[dict[str, object]]:
    """Installed packages that none of the host's repositories offers under that name.

    A package counts as offered when any mirror of any of the host's repositories
    (its own or its OS group's) lists its name for its architecture (or for
    ``all``/``noarch``) in its last good index, whatever the version: an outdated
    package is an update, not an orphan. What is left was installed by hand, from a
    repository the host no longer has, or is an old kernel its repository dropped.
    Hosts whose repositories have no index yet are skipped: nothing can be said.
    """
    query = Host.select().where(Host.package_set.is_null(False)).order_by(Host.name)
    if host is not None:
        query = query.where(Host.id == host.id)
    groups: dict[tuple[int, frozenset[int]], list[str]] = defaultdict(list)
    for h in list(query):
        repo_ids = frozenset(r for r, _prio, _enabled in repository_membership(h))
        groups[(h.package_set_id, repo_ids)].append(h.name)
    mirror_sets: dict[int, set[int]] = defaultdict(set)
    for repo_id, pset_id in (
        Mirror.select(Mirror.repository, Mirror.package_set)
        .where(Mirror.package_set.is_null(False))
        .tuples()
    ):
        mirror_sets[repo_id].add(pset_id)
    names_by_pset: dict[int, set[tuple[str, str]]] = {}

    def offered(pset_id: int) -> set[tuple[str, str]]:
        if pset_id not in names_by_pset:
            names_by_pset[pset_id] = set(
                packages_in(pset_id, Package.name, Package.arch).distinct().tuples()
            )
        return names_by_pset[pset_id]

    out: list[dict[str, object]] = []
    for done, ((pset_id, repo_ids), names) in enumerate(sorted(groups.items(),
                                                               key=lambda g: g[1])):  # fmt: skip
        if progress is not None:
            progress(done, len(groups), names[0])
        psets = {p for rid in repo_ids for p in mirror_sets.get(rid, ())}
        if not psets:
            continue
        available: set[tuple[str, str]] = set()
        for p in psets:
            available |= offered(p)
        installed = (
            packages_in(pset_id, Package.name, Package.arch, Package.epoch, Package.version,
                        Package.release)
            .order_by(Package.name, Package.arch)
            .tuples()
        )  # fmt: skip
        lonely = [
            (n, a, _evr(e, v, r))
            for n, a, e, v, r in installed
            if n not in PSEUDO_PACKAGES and not ({(n, a), (n, "all"), (n, "noarch")} & available)
        ]
        for name in names:
            out.extend({"host": name, "name": n, "arch": a, "version": v} for n, a, v in lonely)
    if progress is not None:
        progress(len(groups), len(groups), "")
    out.sort(key=lambda row: (str(row["host"]), str(row["name"]), str(row["arch"])))
    return out


# --- attention ---------------------------------------------------------------------------

ISSUES = (
    "not_reporting",
    "no_repositories",
    "updates_unknown",
    "security_updates",
    "reboot_required",
    "in_maintenance",
    "updates_off",
    "reverse_dns_mismatch",
    "mirror_failing",
    "repo_no_data",
    "repo_no_mirrors",
    "repo_unused",
    "os_group_empty",
    "report_failed",
    "reports_stuck",
)


def _item(issue: str, subject: str, detail: str, since: float | None) -> dict[str, object]:
    return {"issue": issue, "subject": subject, "detail": detail, "since": since}


def _since(item: dict[str, object], default: float) -> float:
    since = item["since"]
    return float(since) if isinstance(since, int | float) else default


def _fmt_time(ts: float) -> str:
    try:
        return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M")
    except (OverflowError, OSError, ValueError):  # stored before times were bounded
        return f"{ts:g} (out of range)"


def attention(now: float, stale_days: float = 2.0) -> list[dict[str, object]]:
    """What needs an operator, as Patchman's dashboard lists it, one row per problem.

    Rows are ``issue`` (one of :data:`ISSUES`), ``subject`` (a host, a repository,
    a mirror), ``detail`` and ``since`` (when it started, when known). Hosts in
    maintenance are listed once as such and their other problems are left out, as the
    alerts are inhibited. The default of 2 days matches the
    ``PatchwatchHostNotReporting`` alert.
    """
    items: list[dict[str, object]] = []
    rows = load_host_rows()
    flags = {
        name: (use_os, check, rset, size, os_id)
        for name, use_os, check, rset, size, os_id in Host.select(
            Host.name, Host.use_os_repositories, Host.check_updates, Host.repository_set,
            RepositorySet.size, Host.os_release,
        )
        .join(RepositorySet, JOIN.LEFT_OUTER, on=(Host.repository_set == RepositorySet.id))
        .tuples()
    }  # fmt: skip
    os_with_repos = {
        r for (r,) in OSReleaseRepository.select(OSReleaseRepository.os_release).distinct().tuples()
    }
    stale_before = now - stale_days * DAY
    by_issue: dict[str, list[dict[str, object]]] = defaultdict(list)
    unknown: dict[str, float | None] = {}  # host -> since when its updates are due
    for h in rows:
        if h.name not in flags:  # created between the two reads: next time
            continue
        use_os, check, _rset, size, os_id = flags[h.name]
        if h.maintenance_until is not None and h.maintenance_until > now:
            by_issue["in_maintenance"].append(
                _item("in_maintenance", h.name,
                      f"until {_fmt_time(h.maintenance_until)} UTC", None)
            )  # fmt: skip
            continue
        if h.last_report_at is not None and h.last_report_at < stale_before:
            days = (now - h.last_report_at) / DAY
            by_issue["not_reporting"].append(
                _item("not_reporting", h.name, f"no report for {days:.1f} days",
                      h.last_report_at)
            )  # fmt: skip
        no_repos = (os_id not in os_with_repos) if use_os else not size
        if no_repos:
            why = "its OS group has no repositories" if use_os else "it reported no repositories"
            by_issue["no_repositories"].append(
                _item("no_repositories", h.name, f"updates cannot be computed: {why}",
                      None)
            )  # fmt: skip
        elif check and h.updates_state == UNKNOWN:
            unknown[h.name] = h.inputs_changed_at
        if h.security and h.updates_state != UNKNOWN:
            by_issue["security_updates"].append(
                _item("security_updates", h.name,
                      f"{h.security} security, {h.other} other updates",
                      h.oldest_security_first_seen)
            )  # fmt: skip
        if h.reboot_required:
            by_issue["reboot_required"].append(
                _item("reboot_required", h.name, f"running kernel {h.kernel or '?'}", None)
            )
        if not check:
            by_issue["updates_off"].append(
                _item("updates_off", h.name, "an operator turned update checks off",
                      None)
            )  # fmt: skip
    _unknown_attention(by_issue, unknown)
    by_issue["security_updates"].sort(key=lambda i: _since(i, now))
    in_maintenance = {str(i["subject"]) for i in by_issue["in_maintenance"]}
    for name, status, address, found, _at in rdns.mismatches():
        if name not in in_maintenance:
            by_issue["reverse_dns_mismatch"].append(
                _item("reverse_dns_mismatch", name, rdns.describe(status, address, found), None)
            )
    _repository_attention(by_issue, now)
    using_os = (
        Host.select(OSRelease.id, OSRelease.name, fn.COUNT(Host.id))
        .join(OSRelease, on=(Host.os_release == OSRelease.id))
        .where(Host.use_os_repositories == True)  # noqa: E712 (SQL expression)
        .group_by(OSRelease.id, OSRelease.name)
        .tuples()
    )
    for os_id, name, count in using_os:
        if os_id in os_with_repos:
            continue
        by_issue["os_group_empty"].append(
            _item("os_group_empty", name,
                  f"{count} hosts use its repositories; add some with 'os add-repo'", None)
        )  # fmt: skip
    _report_attention(by_issue, now)
    for issue in ISSUES:
        items.extend(by_issue.get(issue, []))
    return items


def _unknown_attention(
    by_issue: dict[str, list[dict[str, object]]], unknown: dict[str, float | None]
) -> None:
    """List the hosts whose pending updates are unknown, with the reason."""
    ids: dict[str, int] = {}
    for chunk in _chunks(sorted(unknown)):
        ids.update(Host.select(Host.name, Host.id).where(Host.name.in_(list(chunk))).tuples())
    reasons = unknown_reasons(list(ids.values()))
    for name, since in unknown.items():
        reason = reasons.get(ids.get(name, 0), NOT_COMPUTED)
        by_issue["updates_unknown"].append(
            _item("updates_unknown", name, f"pending updates unknown: {reason}", since)
        )


def _repository_attention(by_issue: dict[str, list[dict[str, object]]], now: float) -> None:
    users = _repository_hosts()
    mirrors: dict[int, list[Mirror]] = defaultdict(list)
    for m in Mirror.select().order_by(Mirror.url):
        mirrors[m.repository_id].append(m)
    for r in Repository.select().order_by(Repository.id):
        subject = f"{r.id} {repository_label(r)}"
        ms = mirrors.get(r.id, [])
        if not ms:
            by_issue["repo_no_mirrors"].append(
                _item("repo_no_mirrors", subject, "no URL to read it from", None)
            )
        if not users.get(r.id):
            by_issue["repo_unused"].append(
                _item("repo_unused", subject, "no host uses it", r.created_at)
            )
        if not r.enabled:
            continue
        failing = [m for m in ms if m.enabled and m.consecutive_failures > 0]
        for m in failing:
            by_issue["mirror_failing"].append(
                _item("mirror_failing", f"{r.id} {m.url}",
                      f"{m.consecutive_failures} failures in a row: {m.last_error[:200]}",
                      m.last_success_at)
            )  # fmt: skip
        has_data = any(m.package_set_id is not None for m in ms)
        if ms and not has_data and not failing and not r.auth_required:
            by_issue["repo_no_data"].append(
                _item("repo_no_data", subject,
                      "never refreshed: its updates are unknown", r.created_at)
            )  # fmt: skip


def _report_attention(by_issue: dict[str, list[dict[str, object]]], now: float) -> None:
    failed: dict[str, list[Report]] = defaultdict(list)
    query = (
        Report.select(Report.id, Report.host_name, Report.received_at, Report.error)
        .where(Report.state == "failed")
        .order_by(Report.received_at.desc())
    )
    for row in query:
        failed[row.host_name].append(row)
    for host_name in sorted(failed):
        latest = failed[host_name][0]
        count = len(failed[host_name])
        by_issue["report_failed"].append(
            _item("report_failed", host_name,
                  f"{count} failed report{'s' if count > 1 else ''}; last: {latest.error[:200]}",
                  latest.received_at)
        )  # fmt: skip
    stuck = (
        Report.select(fn.COUNT(Report.id), fn.MIN(Report.received_at))
        .where((Report.state == "pending") & (Report.received_at < now - PENDING_REPORT_AGE))
        .tuples()
        .first()
    )
    if stuck and stuck[0]:
        by_issue["reports_stuck"].append(
            _item("reports_stuck", "reports",
                  f"{stuck[0]} reports queued for over an hour: is the scheduler running?",
                  stuck[1])
        )  # fmt: skip


# --- database check ----------------------------------------------------------------------


def _orphan_update_sets() -> object:
    used = Host.select(Host.id).where(
        (Host.package_set == UpdateSet.package_set)
        & (
            (Host.repository_set == UpdateSet.repository_set)
            | (Host.repository_set.is_null() & UpdateSet.repository_set.is_null())
        )
    )
    return UpdateSet.select(UpdateSet.id).where(~fn.EXISTS(used))


def _live_package_sets() -> tuple[object, object, object]:
    """Sets that hosts or mirrors use, and the bases those are written against."""
    hosts = Host.select(Host.package_set).where(Host.package_set.is_null(False))
    mirrors = Mirror.select(Mirror.package_set).where(Mirror.package_set.is_null(False))
    bases = PackageSet.select(PackageSet.base).where(PackageSet.base.is_null(False))
    return hosts, mirrors, bases


def _orphan_package_sets() -> object:
    """Sets nothing uses. A base of another set is used, even if no host has it now."""
    hosts, mirrors, bases = _live_package_sets()
    return PackageSet.select(PackageSet.id).where(
        PackageSet.id.not_in(hosts) & PackageSet.id.not_in(mirrors) & PackageSet.id.not_in(bases)
    )


def _orphan_repository_sets() -> object:
    used = Host.select(Host.repository_set).where(Host.repository_set.is_null(False))
    return RepositorySet.select(RepositorySet.id).where(RepositorySet.id.not_in(used))


def _orphan_packages() -> object:
    """Packages minus everything that refers to one, as ``EXCEPT``s.

    Not ``NOT IN (subquery)``: PostgreSQL hashes such a subquery only when it fits in
    ``work_mem``, and otherwise scans it again for every package; with the 15 million
    set members of 10,000 drifting hosts the query had not finished after minutes.
    ``EXCEPT`` is one pass over each input on both backends.
    """
    hosts, mirrors, bases = _live_package_sets()
    in_live_sets = member_rows_of_sets(hosts, mirrors, bases)
    live_items = UpdateSetItem.update_set.not_in(_orphan_update_sets())
    return (
        Package.select(Package.id)
        - in_live_sets
        - HostUpdate.select(HostUpdate.installed)
        - HostUpdate.select(HostUpdate.available)
        - UpdateSetItem.select(UpdateSetItem.installed).where(live_items)
        - UpdateSetItem.select(UpdateSetItem.available).where(live_items)
        - AdvisoryPackage.select(AdvisoryPackage.package)
    )


def _stray_host_updates() -> object:
    # left by a host deleted while its updates were being written (PostgreSQL has
    # no foreign key here to refuse them: migration 3)
    return HostUpdate.select(HostUpdate.id).where(HostUpdate.host.not_in(Host.select(Host.id)))


def _stray_update_set_items() -> object:
    return UpdateSetItem.select(UpdateSetItem.id).where(
        UpdateSetItem.update_set.not_in(UpdateSet.select(UpdateSet.id))
    )


def _orphan_reports() -> object:
    return Report.select(Report.id).where(
        (Report.state == "processed") & Report.host_name.not_in(Host.select(Host.name))
    )


def _ids(query: object) -> list[int]:
    return [i for (i,) in query.tuples()]  # type: ignore[attr-defined]


def _delete_ids(model: type[BaseModel], ids: list[int]) -> int:
    # the bulk tables have no foreign keys on PostgreSQL (migration 3): their rows go
    # with their set or package here, on every backend, rather than by cascade
    dependants = {
        PackageSet: [MEMBER_SET_COLUMN],
        Package: [MEMBER_PACKAGE_COLUMN],
        UpdateSet: [UpdateSetItem.update_set],
    }.get(model, [])
    deleted = 0
    for chunk in _chunks(ids):
        with write_transaction():
            for column in dependants:
                column.model.delete().where(column.in_(list(chunk))).execute()
            deleted += model.delete().where(model.id.in_(list(chunk))).execute()
    return deleted


def check_store(
    fix: bool = False, include_packages: bool = False, progress: ProgressFn | None = None
) -> list[dict[str, object]]:
    """Look for (and with ``fix`` delete) what nothing refers to any more; count rows;
    run the database's own integrity checks where it has them (SQLite), and compare
    every package set's packed ids with its member rows (on every backend).

    Returns rows ``check``, ``found``, ``fixed`` (``None`` when not fixed) and
    ``detail``; a non-zero ``found`` on an ``integrity``, ``foreign keys`` or
    ``packed member ids`` row means damage that deleting cannot fix (restore from a
    backup). Rows over the field limits (a mirror's, stored before refreshes bounded
    them) are removed with what refers to them (``patchwatch.store.oversized``); what that
    leaves unreferenced is found by the next run.

    Orphan packages are deleted only with ``include_packages``: receiver and scheduler
    processes cache package ids (``patchwatch.store.sets``), so deleting packages while they
    run can make a later report refer to a deleted package. Stop them first.
    """
    steps: list[tuple[str, Callable[[], object], type[BaseModel], bool, str]] = [
        ("orphan update sets", _orphan_update_sets, UpdateSet, True,
         "no host has these inputs"),
        ("orphan package sets", _orphan_package_sets, PackageSet, True,
         "no host, mirror or set uses it"),
        ("orphan repository sets", _orphan_repository_sets, RepositorySet, True,
         "no host has it"),
        ("updates of deleted hosts", _stray_host_updates, HostUpdate, True,
         "pending updates; host deleted"),
        ("items of deleted update sets", _stray_update_set_items, UpdateSetItem, True,
         "update set deleted"),
        ("orphan packages", _orphan_packages, Package, include_packages,
         "in no set, update or advisory"),
        ("reports of deleted hosts", _orphan_reports, Report, True,
         "processed; host deleted"),
    ]  # fmt: skip
    total = len(steps) + 3
    out: list[dict[str, object]] = []
    for n, (check, query, model, may_fix, detail) in enumerate(steps):
        if progress is not None:
            progress(n, total, check)
        ids = _ids(query())
        fixed: int | None = None
        note = detail
        if fix and may_fix:
            fixed = _delete_ids(model, ids)
        elif fix and ids:
            note = "kept (--packages; stop servers)"
        out.append({"check": check, "found": len(ids), "fixed": fixed, "detail": note})
    if progress is not None:
        progress(len(steps), total, "oversized rows")
    out.extend(_oversized_rows(fix))
    if progress is not None:
        progress(len(steps) + 1, total, "integrity")
    out.extend(_integrity_checks())
    unlike = check_package_sets()
    note = (
        f"package sets {', '.join(map(str, unlike[:5]))}{' ...' if len(unlike) > 5 else ''}"
        if unlike
        else "every set's packed ids match its member rows"
    )
    out.append({"check": "packed member ids", "found": len(unlike), "fixed": None,
                "detail": note})  # fmt: skip
    if progress is not None:
        progress(len(steps) + 2, total, "counting rows")
    for model in MODELS:
        out.append({"check": f"rows in {model._meta.table_name}",
                    "found": model.select().count(), "fixed": None, "detail": ""})  # fmt: skip
    if progress is not None:
        progress(total, total, "")
    return out


def _oversized_rows(fix: bool) -> list[dict[str, object]]:
    """The ``oversized packages`` and ``oversized advisories`` rows of :func:`check_store`."""
    found = find_oversized(database)
    fixed: Removed | None = None
    if fix:
        with write_transaction():
            fixed = remove_oversized(database, found)
    detail = "a field over its limit"
    return [
        {"check": "oversized packages", "found": len(found.packages),
         "fixed": fixed.packages if fixed else None, "detail": detail},
        {"check": "oversized advisories", "found": len(found.advisories),
         "fixed": fixed.advisories if fixed else None, "detail": detail},
    ]  # fmt: skip


def _integrity_checks() -> list[dict[str, object]]:
    if not is_sqlite():
        note = "not checked: PostgreSQL has no quick equivalent (see amcheck)"
        return [{"check": "integrity", "found": 0, "fixed": None, "detail": note}]
    lines = [str(r[0]) for r in database.execute_sql("PRAGMA integrity_check").fetchall()]
    problems = [line for line in lines if line != "ok"]
    fk = database.execute_sql("PRAGMA foreign_key_check").fetchall()
    return [
        {"check": "integrity", "found": len(problems), "fixed": None,
         "detail": problems[0][:200] if problems else "PRAGMA integrity_check: ok"},
        {"check": "foreign keys", "found": len(fk), "fixed": None,
         "detail": (f"first in table {fk[0][0]}" if fk else "PRAGMA foreign_key_check: ok")},
    ]  # fmt: skip
