"""Refresh one mirror or all of them: approval, time boxes, concurrency, outcomes.

Only mirrors an operator approved or whose URL matches ``mirror_url_patterns`` are
read; each inside a fetch scope with its URL as origin and its own time box, fetched
by :mod:`.apt`, :mod:`.rpmmd`, :mod:`.alpm` or :mod:`.apk` and stored by :mod:`.storing`.
``refresh_all`` reads ``refresh_concurrency`` mirrors side by side within the run's own
time box. Whatever a mirror does, its outcome is a :class:`RefreshResult`; only a broken
store raises.
"""

from __future__ import annotations

import contextvars
import logging
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED
from concurrent.futures import Future
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import wait
from dataclasses import dataclass
from pathlib import Path

from peewee import PeeweeException

from patchwatch.domain.errors import NotFoundError
from patchwatch.domain.errors import PatchwatchError
from patchwatch.domain.settings import Settings
from patchwatch.pipeline.fetch import Fetcher
from patchwatch.pipeline.fetch import current_scope
from patchwatch.pipeline.fetch import fetch_scope
from patchwatch.pipeline.refresh.alpm import fetch_alpm
from patchwatch.pipeline.refresh.apk import fetch_apk
from patchwatch.pipeline.refresh.apt import deb_architectures
from patchwatch.pipeline.refresh.apt import fetch_apt
from patchwatch.pipeline.refresh.fetched import Fetched
from patchwatch.pipeline.refresh.fetched import Skip
from patchwatch.pipeline.refresh.rpmmd import fetch_rpmmd
from patchwatch.pipeline.refresh.storing import MAX_ERROR_CHARS
from patchwatch.pipeline.refresh.storing import store_failure
from patchwatch.pipeline.refresh.storing import store_success
from patchwatch.store.approval import PENDING
from patchwatch.store.approval import mirror_state
from patchwatch.store.approval import pending_reason
from patchwatch.store.db import database
from patchwatch.store.models import Mirror
from patchwatch.store.models import Repository

log = logging.getLogger(__name__)


#: Mirrors refreshed side by side store their data one at a time (see refresh_all).
_STORE_LOCK = threading.Lock()


#: Failures that are the mirror's (or the network's) fault, with a clear message.
EXPECTED_FAILURES: tuple[type[BaseException], ...] = (
    PatchwatchError,
    OSError,
    subprocess.SubprocessError,
    UnicodeDecodeError,
)


@dataclass(frozen=True, slots=True)
class RefreshResult:
    """What refreshing one mirror did.

    ``outcome`` is ``changed`` (new data stored), ``unchanged`` (the metadata says
    nothing changed; only the small top file was read), ``failed`` (``detail`` says
    why; the previous data stays) or ``skipped`` (nothing could be asked of it yet).
    """

    mirror_id: int
    repository: str
    url: str
    outcome: str
    detail: str = ""
    packages: int = 0
    advisories: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """Return False only for a failed refresh."""
        return self.outcome != "failed"


def refresh_mirror(
    mirror: Mirror,
    fetcher: Fetcher,
    now: float,
    settings: Settings,
    force: bool = False,
    *,
    architectures: Sequence[str] | None = None,
) -> RefreshResult:
    """Refresh one mirror and record the outcome on it; never raises for a bad mirror.

    ``force`` ignores the stored checksum and validators, so everything is downloaded,
    verified and parsed again. ``architectures`` (dpkg names) overrides
    :func:`deb_architectures` for apt mirrors.
    """
    started = time.perf_counter()
    repo: Repository = Repository.get_by_id(mirror.repository_id)

    def result(
        outcome: str, detail: str = "", packages: int = 0, advisories: int = 0
    ) -> RefreshResult:
        return RefreshResult(
            mirror_id=mirror.id, repository=repo.key, url=mirror.url, outcome=outcome,
            detail=detail, packages=packages, advisories=advisories,
            seconds=time.perf_counter() - started,
        )  # fmt: skip

    if mirror_state(mirror.url, mirror.approved, settings.mirror_policy) == PENDING:
        log.info("mirror %s skipped: waiting for approval", mirror.url)
        return result("skipped", pending_reason(mirror))
    box = settings.mirror_refresh_max_seconds
    try:
        with (
            tempfile.TemporaryDirectory(prefix="patchwatch-refresh-") as tmp,
            fetch_scope(origin=mirror.url, seconds=box,
                        limit=f"the mirror's time box of {box:g} s (mirror_refresh_max_seconds)"),
        ):  # fmt: skip
            if repo.kind == "deb":
                arches = (
                    list(architectures) if architectures is not None else deb_architectures(repo)
                )
                fetched = fetch_apt(mirror, repo, fetcher, Path(tmp), now, settings, force, arches)
            elif repo.kind == "arch":
                fetched = fetch_alpm(mirror, repo, fetcher, Path(tmp), settings, force)
            elif repo.kind == "apk":
                fetched = fetch_apk(mirror, repo, fetcher, Path(tmp), settings, force)
            else:
                fetched = fetch_rpmmd(mirror, fetcher, Path(tmp), settings, force)
            _note_skipped(mirror, fetched)
            with _STORE_LOCK:  # one writer at a time: SQLite would make the others wait
                changed, count, advisories = store_success(mirror, repo, fetched, now)
    except Skip as exc:
        log.info("mirror %s skipped: %s", mirror.url, exc)
        return result("skipped", str(exc))
    except EXPECTED_FAILURES as exc:
        if current_scope().stopped():  # the run was stopped: not the mirror's failure
            log.info("mirror %s: refresh stopped (%s)", mirror.url, _reason(exc))
            return result("skipped", "stopped before it finished")
        reason = _reason(exc)
        store_failure(mirror, now, reason)
        log.warning("mirror %s failed: %s", mirror.url, reason)
        return result("failed", reason)
    except PeeweeException:
        raise  # the store, not the mirror, is broken: fail the run, count nothing on it
    except Exception as exc:  # boundary: one mirror's surprise must not stop the others
        log.exception("mirror %s: unexpected error", mirror.url)
        reason = f"internal error: {type(exc).__name__}: {exc}"
        store_failure(mirror, now, reason)
        return result("failed", reason)
    outcome = "changed" if changed else "unchanged"
    log.info("mirror %s %s: %d packages%s", mirror.url, outcome, count, fetched.note)
    return result(outcome, fetched.note.strip("; "), count, advisories)


def _note_skipped(mirror: Mirror, fetched: Fetched) -> None:
    """Say in the result (and the log) which entries the parsers left out, if any."""
    for skipped in (fetched.skipped_packages, fetched.skipped_advisories):
        if skipped is not None and skipped.count:
            log.warning("mirror %s: %s", mirror.url, skipped.summary())
            fetched.note += "; " + skipped.summary()


def refresh_all(
    fetcher: Fetcher,
    now: float,
    settings: Settings,
    force: bool = False,
    repositories: Sequence[str] | None = None,
    progress: Callable[[int, int, Mirror, RefreshResult | None], None] | None = None,
    stop: threading.Event | None = None,
) -> list[RefreshResult]:
    """Refresh every enabled mirror (or those of ``repositories``), a few at a time.

    ``settings.refresh_concurrency`` mirrors are read side by side (one thread and
    database connection each; the fetcher must serve several threads, as
    :class:`~patchwatch.pipeline.fetch.HttpFetcher` does), so one slow mirror holds up one slot,
    not the run. The run has its own time box (``refresh_max_seconds``); mirrors not
    started when it is spent, or after ``stop`` was set (the scheduler stops or lost its
    lease), are ``skipped`` and not counted as failures, and ``stop`` also ends the
    requests in flight. Mirrors start longest-unrefreshed first, so that runs cut short
    do not starve the same mirrors each time; results come in :func:`select_mirrors`
    order.

    ``repositories`` are ids or keys (see :func:`select_mirrors`). ``progress`` is called
    as ``(done, total, mirror, None)`` when a mirror starts and with its result after.
    """
    mirrors = select_mirrors(repositories)
    total = len(mirrors)
    order = sorted(
        range(total),
        key=lambda i: (mirrors[i].last_attempt_at is not None, mirrors[i].last_attempt_at or 0, i),
    )
    arch_cache: dict[int, list[str]] = {}
    results: dict[int, RefreshResult] = {}

    def architectures(mirror: Mirror) -> list[str] | None:
        if mirror.repository.kind != "deb":
            return None
        if mirror.repository_id not in arch_cache:
            arch_cache[mirror.repository_id] = deb_architectures(mirror.repository)
        return arch_cache[mirror.repository_id]

    def run(mirror: Mirror, arches: list[str] | None) -> RefreshResult:
        return refresh_mirror(mirror, fetcher, now, settings, force, architectures=arches)

    def run_in_thread(mirror: Mirror, arches: list[str] | None) -> RefreshResult:
        with database.connection_context():  # the worker's own connection, closed after
            return run(mirror, arches)

    def finish(index: int, res: RefreshResult) -> None:
        results[index] = res
        if progress is not None:
            progress(len(results), total, mirrors[index], res)

    budget = settings.refresh_max_seconds
    label = f"the refresh run's time box of {budget:g} s (refresh_max_seconds)"
    workers = max(1, min(settings.refresh_concurrency, total))
    with (
        fetch_scope(seconds=budget, limit=label, stop=stop) as scope,
        ThreadPoolExecutor(workers, thread_name_prefix="refresh") as pool,
    ):
        running: dict[Future[RefreshResult], int] = {}
        for index in order:
            mirror = mirrors[index]
            why = _not_started(scope.stopped(), scope.deadline)
            if why:
                finish(index, RefreshResult(mirror.id, mirror.repository.key, mirror.url,
                                            "skipped", why))  # fmt: skip
                continue
            if progress is not None:
                progress(len(results), total, mirror, None)
            arches = architectures(mirror)
            if workers == 1:
                finish(index, run(mirror, arches))
                continue
            future = pool.submit(contextvars.copy_context().run, run_in_thread, mirror, arches)
            running[future] = index
            while len(running) >= workers:
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    finish(running.pop(future), future.result())
        for future in list(running):
            finish(running.pop(future), future.result())
    return [results[i] for i in range(total)]


def _not_started(stopped: bool, deadline: float | None) -> str:
    """Why a mirror is not started (empty: start it)."""
    if stopped:
        return "not started: the refresh was stopped"
    if deadline is not None and time.monotonic() >= deadline:
        return "not started: the refresh run's time box is spent (refresh_max_seconds)"
    return ""


def select_mirrors(repositories: Sequence[str] | None = None) -> list[Mirror]:
    """Return the enabled mirrors of enabled repositories, or of the ones named.

    A name is a repository id (digits) or its exact key. Repositories the server cannot
    read (``auth_required``) are left out.

    :raises NotFoundError: when a name matches no repository.
    """
    query = (
        Mirror.select(Mirror, Repository)
        .join(Repository)
        .where(Mirror.enabled & Repository.enabled & ~Repository.auth_required)
    )
    if repositories:
        ids: list[int] = []
        for ref in repositories:
            ref = ref.strip()
            repo = (
                Repository.get_or_none(Repository.id == int(ref))
                if ref.isdigit()
                else Repository.get_or_none(Repository.key == ref)
            )
            if repo is None:
                raise NotFoundError(f"no repository {ref!r} (give its id or its exact key)")
            ids.append(repo.id)
        query = query.where(Repository.id.in_(ids))
    return list(query.order_by(Repository.key, Mirror.id))


def summarize_results(results: Iterable[RefreshResult]) -> str:
    """One line for a job run or a cron mail: how many mirrors did what."""
    counts: dict[str, int] = {}
    total = 0
    for res in results:
        counts[res.outcome] = counts.get(res.outcome, 0) + 1
        total += 1
    parts = [
        f"{counts[k]} {k}" for k in ("changed", "unchanged", "failed", "skipped") if k in counts
    ]
    return f"{total} mirrors: " + (", ".join(parts) if parts else "none")


def _reason(exc: BaseException) -> str:
    """A one-line failure reason for ``last_error`` and logs."""
    if isinstance(exc, UnicodeDecodeError):
        text = f"metadata is not UTF-8 text ({exc.reason} at byte {exc.start})"
    elif isinstance(exc, subprocess.TimeoutExpired):
        text = f"gpgv did not finish within {exc.timeout:g} s"
    elif isinstance(exc, PatchwatchError):
        text = str(exc)
    else:
        text = f"{type(exc).__name__}: {exc}"
    return " ".join(text.split())[:MAX_ERROR_CHARS]
