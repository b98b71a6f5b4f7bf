"""Hosts as operators name them: find one, list a glob, show, compare, delete; their flags.

A host's own flags (OS repositories, update checks, maintenance) are recomputed for
that one host at once, because an operator who flips them wants to see the result.
Deleting a host takes its pending updates and stored reports with it, not its token
(revoke that: ``patchwatch token revoke``).
"""

from __future__ import annotations

import enum
import fnmatch
import math
import re
from collections.abc import Sequence
from datetime import UTC
from datetime import datetime
from typing import Literal
from typing import cast

from patchwatch.domain.diffs import HostDiff
from patchwatch.domain.diffs import HostInventory
from patchwatch.domain.diffs import compute_host_diff
from patchwatch.domain.errors import NotFoundError
from patchwatch.domain.errors import ParseError
from patchwatch.inventory.common import DAY
from patchwatch.inventory.common import chunks
from patchwatch.inventory.common import evr
from patchwatch.inventory.common import is_glob
from patchwatch.inventory.common import required_ref
from patchwatch.inventory.common import the_one
from patchwatch.inventory.vulns import VulnFilter
from patchwatch.inventory.vulns import host_vulnerabilities
from patchwatch.inventory.vulns import update_fixes
from patchwatch.pipeline.hostupdates import refresh_host_updates
from patchwatch.pipeline.hostupdates import repository_membership
from patchwatch.store import host_counts
from patchwatch.store import rdns
from patchwatch.store.db import database
from patchwatch.store.db import write_transaction
from patchwatch.store.models import Host
from patchwatch.store.models import HostUpdate
from patchwatch.store.models import Package
from patchwatch.store.models import Report
from patchwatch.store.models import Repository
from patchwatch.store.package_sets import packages_in
from patchwatch.store.queries import host_detail


class Keep(enum.Enum):
    """Marks an optional setting as "leave as it is" where ``None`` means "clear it"."""

    KEEP = "keep"


KEEP = Keep.KEEP


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
    ref = required_ref(ref.lower(), "a host name is required", "host")
    if not is_glob(ref):
        host = Host.get_or_none(Host.name == ref)
        if host is not None:
            return host
    names = [n for (n,) in Host.select(Host.name).order_by(Host.name).tuples()]
    if is_glob(ref):
        matches = [n for n in names if fnmatch.fnmatchcase(n, ref)]
    else:
        matches = [n for n in names if n.startswith(ref + ".")]
    name = the_one(matches, ref, f"no host named {ref!r}", "hosts", matches, "give the full name")
    return Host.get(Host.name == name)


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
    if not is_glob(pattern):
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
        for chunk in chunks([n.lower() for n in names]):
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
        packages = tuple((n, a, evr(e, v, r)) for n, a, e, v, r in rows)
    repo_ids = [r for r, *_rest in repository_membership(host)]
    keys: list[str] = []
    for chunk in chunks(repo_ids):
        query = Repository.select(Repository.key).where(Repository.id.in_(list(chunk)))
        keys.extend(k for (k,) in query.tuples())
    return HostInventory(
        name=host.name, os=host.os_release.name if host.os_release_id else "",
        arch=host.arch, kernel=host.kernel, packages=packages, repositories=tuple(keys),
    )  # fmt: skip


def diff_hosts(a: Host, b: Host) -> HostDiff:
    """Compare two hosts (see ``patchwatch.domain.diffs``); ``a`` is the "-" side."""
    return compute_host_diff(load_host_inventory(a), load_host_inventory(b))


def recent_reports(host: Host, limit: int = 20) -> list[dict[str, object]]:
    """The host's stored reports, newest first: received, processed, state, error."""
    query = (
        Report.select(Report.id, Report.protocol, Report.received_at, Report.processed_at,
                      Report.state, Report.error, Report.size, Report.user_agent)
        .where(Report.host_name == host.name)
        .order_by(Report.received_at.desc())
        .limit(limit)
    )  # fmt: skip
    return [
        {"id": r.id, "protocol": r.protocol, "received_at": r.received_at,
         "processed_at": r.processed_at, "state": r.state, "error": r.error, "size": r.size,
         "user_agent": r.user_agent}
        for r in query
    ]  # fmt: skip


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


def host_overview(host: Host, now: float, vulns: VulnFilter | None = None) -> dict[str, object]:
    """One host as ``hosts show`` and ``GET /api/v1/hosts/NAME`` present it: details,
    flags, updates, vulnerabilities (filtered by ``vulns``). Both call this, with the
    row they resolved, so that the CLI's JSON and the API's answer are one query's and
    cannot drift apart."""
    detail = host_detail(host)
    detail.update(host_flags(host, now))
    detail["os_variant"] = host.os_variant
    detail["agent"] = host.agent
    os_flag = host.os_release.reverse_dns_check if host.os_release_id else None
    detail.update(rdns.host_result(host, os_flag))
    detail["vulnerabilities"] = host_vulnerabilities(host, vulns or VulnFilter())
    # what each pending update fixes; None where the host's vulnerabilities are unknown
    fixes = update_fixes(host)
    for update in cast(list[dict[str, str | object]], detail["updates"]):
        key = (str(update["name"]), str(update["arch"]))
        update["fixes"] = None if fixes is None else fixes.get(key, [])
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
                host_counts.recount(database, [host.id])  # with updates_complete off
    host = Host.get_by_id(host.id)
    recompute = "use_os_repositories" in changes or "check_updates" in changes
    if recompute and host.check_updates:
        refresh_host_updates(now, [host.name])
    return host_flags(host, now)
