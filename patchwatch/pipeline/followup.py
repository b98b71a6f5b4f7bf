"""Follow reports at once: read the repositories they bring, compute their hosts' updates.

Why: a new host used to wait for the hourly mirror refresh when it brought new
repositories, and up to ten minutes for the next update computation on known ones,
showing nothing useful meanwhile. The scheduler asks :class:`FollowUp` on every tick
(a second) whether anything is due, with two small queries, and only then runs it:

- mirrors never attempted (repositories seen for the first time) are refreshed, once
  each: a thousand hosts reporting one new repository made one repository row and one
  mirror row, and an attempt, even a failed one, is recorded on the mirror;
- hosts whose report changed what their updates are computed from (processing moved
  ``inputs_changed_at`` past what the last computation read, ``updates_inputs_at``)
  are computed, and only they (``refresh_host_updates`` with their names: update sets
  already stored for the same inputs are reused);
- hosts whose last computation lacked some repository's data are computed again when
  a mirror of one of their repositories got new data since the last look.

The periodic jobs (hourly refresh, the update computation every few minutes) still run
and catch anything this misses, such as a mirror refreshed by another process whose
change this one saw before its hosts existed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from dataclasses import field

from peewee import JOIN

from patchwatch.domain.settings import Settings
from patchwatch.pipeline.fetch import Fetcher
from patchwatch.pipeline.fetch import HttpFetcher
from patchwatch.pipeline.hostupdates import refresh_host_updates
from patchwatch.pipeline.refresh import deb_architectures
from patchwatch.pipeline.refresh import refresh_mirror
from patchwatch.store.models import Host
from patchwatch.store.models import Mirror
from patchwatch.store.models import Repository
from patchwatch.store.queries import REPOSITORY_MEMBERSHIPS

log = logging.getLogger(__name__)

FULL_RUN_HOSTS = 1000  # more hosts due than this: one run over all (unchanged ones cost little)
FAILURE_PAUSE_SECONDS = 60.0  # after a failed run, so a persistent error is not retried each tick


@dataclass
class Due:
    """What a follow-up run has to do."""

    mirrors: list[int] = field(default_factory=list)  # never attempted, readable
    changed: dict[int, float | None] = field(default_factory=dict)  # mirror -> last change
    changed_repositories: set[int] = field(default_factory=set)
    hosts: list[str] = field(default_factory=list)  # inputs changed since computed

    def __bool__(self) -> bool:
        return bool(self.mirrors or self.changed_repositories or self.hosts)


@dataclass
class FollowUp:
    """The state of following reports in one scheduler process.

    ``tried``: mirrors this process refreshed, so that one that could not even be
    attempted (an apt repository with no architecture known yet) is not asked again
    every second. ``seen``: each mirror's last change as of the previous look; a
    different value is a change, whatever the clocks of the processes that refresh.
    """

    settings: Settings
    fetcher: Callable[[], AbstractContextManager[Fetcher]] | None = None
    clock: Callable[[], float] = time.monotonic
    tried: set[int] = field(default_factory=set)
    seen: dict[int, float | None] | None = None
    paused_until: float = 0.0
    failed: bool = False  # the last run failed: run again once paused, to record the outcome

    def due(self) -> Due:
        """Look for due work: two queries, whatever the fleet size."""
        out = Due()
        rows = (
            Mirror.select(
                Mirror.id, Mirror.repository, Mirror.last_attempt_at, Mirror.last_change_at,
                Mirror.enabled, Repository.enabled, Repository.auth_required,
            )
            .join(Repository)
            .tuples()
        )  # fmt: skip
        seen = self.seen or {}
        for mirror_id, repo_id, attempted, change, enabled, repo_enabled, auth in rows:
            readable = enabled and repo_enabled and not auth
            if readable and attempted is None and mirror_id not in self.tried:
                out.mirrors.append(mirror_id)
            if change is not None and seen.get(mirror_id) != change:
                out.changed[mirror_id] = change
                out.changed_repositories.add(repo_id)
        out.hosts = hosts_due()
        return out

    def has_work(self) -> bool:
        """Whether a run would do anything (the scheduler records only runs that do)."""
        if self.clock() < self.paused_until:
            return False
        return self.failed or bool(self.due())

    def run(self, now: float) -> str:
        """Refresh new mirrors, then compute the hosts that are due; say what was done."""
        try:
            detail = self._run(now)
        except Exception:
            self.paused_until = self.clock() + FAILURE_PAUSE_SECONDS
            self.failed = True
            raise
        self.failed = False
        return detail

    def _run(self, now: float) -> str:
        parts = []
        due = self.due()
        if due.mirrors:
            outcomes = self._refresh(due.mirrors, now)
            parts.append(
                f"{len(due.mirrors)} new mirrors read ("
                + ", ".join(f"{n} {k}" for k, n in sorted(outcomes.items()))
                + ")"
            )
            due = self.due()  # what the refresh changed, and hosts reported meanwhile
        self.seen = {**(self.seen or {}), **due.changed}
        names = set(due.hosts)
        if due.changed_repositories:
            names.update(hosts_awaiting(due.changed_repositories))
        if names:
            ctx = refresh_host_updates(now, None if len(names) > FULL_RUN_HOSTS else sorted(names))
            parts.append(
                f"{len(names)} hosts due: {ctx.computed} update sets computed, "
                f"{ctx.reused} reused, {ctx.hosts_changed} hosts written"
            )
        return "; ".join(parts) or "nothing due"

    def _refresh(self, mirror_ids: list[int], now: float) -> dict[str, int]:
        outcomes: dict[str, int] = {}
        factory = self.fetcher or (lambda: HttpFetcher.from_settings(self.settings))
        with factory() as fetcher:
            for mirror_id in mirror_ids:
                self.tried.add(mirror_id)
                mirror = Mirror.select(Mirror, Repository).join(Repository).where(
                    Mirror.id == mirror_id
                ).get_or_none()  # fmt: skip
                if mirror is None:  # deleted meanwhile
                    continue
                repo = mirror.repository
                arches = deb_architectures(repo) if repo.kind == "deb" else None
                result = refresh_mirror(mirror, fetcher, now, self.settings, architectures=arches)
                outcomes[result.outcome] = outcomes.get(result.outcome, 0) + 1
        return outcomes


def hosts_due() -> list[str]:
    """Hosts whose inputs changed since their updates were last computed (or never were)."""
    inputs_changed = Host.inputs_changed_at.is_null(False) & (
        Host.updates_inputs_at.is_null() | (Host.updates_inputs_at != Host.inputs_changed_at)
    )
    query = Host.select(Host.name).where(
        Host.check_updates
        & Host.package_set.is_null(False)
        & (inputs_changed | Host.updates_computed_at.is_null())
    )
    return [name for (name,) in query.tuples()]


def hosts_awaiting(repository_ids: set[int]) -> list[str]:
    """Hosts computed without some repository's data that use one of these repositories."""
    incomplete = (
        Host.check_updates & Host.package_set.is_null(False) & (Host.updates_complete == False)  # noqa: E712 (SQL expression)
    )
    ids = sorted(repository_ids)
    names: set[str] = set()
    for member, on, use_os in REPOSITORY_MEMBERSHIPS:
        query = (
            Host.select(Host.name)
            .join(member, JOIN.INNER, on=on)
            .where(incomplete & (Host.use_os_repositories == use_os) & member.repository.in_(ids))
        )
        names.update(name for (name,) in query.tuples())
    return sorted(names)
