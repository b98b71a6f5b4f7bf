"""Refresh repository mirrors: fetch, verify, parse, and store each mirror's index.

A mirror's stored package set is its *last good data*: the update computation
(``patchwatch.pipeline.hostupdates``) reads it, so a refresh replaces it only with data that
verified end to end, and a failure of any kind leaves it as it was and is counted on
the mirror (``failures_total``, ``consecutive_failures``, ``last_error``), which the
exporter serves. Nothing here disables a mirror: the next refresh tries again, and the
first one that works resets ``consecutive_failures``.

apt: ``InRelease`` (or ``Release`` + ``Release.gpg``) is checked with gpgv against the
Debian and Ubuntu archive keyrings installed on this machine plus ``apt_keyrings``,
and only the text gpgv vouches for is parsed. A Release past its ``Valid-Until`` is
refused (a stale or replayed mirror). The Packages index for the repository's
component and architectures is chosen from it (by-hash when offered), downloaded only
when its hash differs from the one stored, and checked for size and hash before it is
decompressed and parsed.

rpm-md: ``repomd.xml`` (conditional GET), then ``primary`` and ``updateinfo`` when
their checksums changed, each verified against repomd before parsing; security
advisories are stored per repository and replace the previous ones. Mirrorlists and
metalinks are followed to the first base URL that works.

Only mirrors an operator approved or whose URL matches ``mirror_url_patterns`` are read
(``patchwatch.store.approval``); each is read inside a fetch scope with its URL as origin and
its time box (``mirror_refresh_max_seconds``), so redirects, ``xml:base`` and the
entries of its mirrorlist or metalink are held to the fetch policy
(``patchwatch.domain.mirror_policy``) and a slow mirror ends in time. ``refresh_all`` reads
``refresh_concurrency`` mirrors side by side within the run's own time box.

Network I/O happens before any write transaction; each mirror's result is stored in one
transaction of its own, so a refresh never holds the database while it downloads and a
failing mirror never undoes another's work. Not done here: rpm ``modules`` metadata,
repomd signatures (``repo_gpgcheck``), metalink hashes of repomd.xml, and apt
``Packages.diff`` (pdiffs); see docs/mirrors.md.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import glob
import hashlib
import logging
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Iterator
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED
from concurrent.futures import Future
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import wait
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO
from urllib.parse import urljoin

from peewee import PeeweeException

from patchwatch.domain.errors import FetchError
from patchwatch.domain.errors import NotFoundError
from patchwatch.domain.errors import ParseError
from patchwatch.domain.errors import PatchwatchError
from patchwatch.domain.errors import TooLargeError
from patchwatch.domain.records import Advisory as AdvisoryRecord
from patchwatch.domain.records import AvailablePackage
from patchwatch.domain.records import Package as PackageRecord
from patchwatch.domain.repodata.apt import GpgvStatus
from patchwatch.domain.repodata.apt import compute_gpgv_command
from patchwatch.domain.repodata.apt import is_security_release
from patchwatch.domain.repodata.apt import parse_gpgv_status
from patchwatch.domain.repodata.apt import parse_packages
from patchwatch.domain.repodata.apt import parse_release
from patchwatch.domain.repodata.apt import read_lines
from patchwatch.domain.repodata.bounds import Skipped
from patchwatch.domain.repodata.compression import open_decompressed
from patchwatch.domain.repodata.model import IndexEntry
from patchwatch.domain.repodata.model import ReleaseFile
from patchwatch.domain.repodata.model import RepoMdEntry
from patchwatch.domain.repodata.rpmmd import parse_metalink
from patchwatch.domain.repodata.rpmmd import parse_mirrorlist
from patchwatch.domain.repodata.rpmmd import parse_primary
from patchwatch.domain.repodata.rpmmd import parse_repomd
from patchwatch.domain.repodata.rpmmd import parse_updateinfo
from patchwatch.domain.settings import Settings
from patchwatch.pipeline.fetch import Download
from patchwatch.pipeline.fetch import Fetcher
from patchwatch.pipeline.fetch import HttpStatusError
from patchwatch.pipeline.fetch import current_scope
from patchwatch.pipeline.fetch import fetch_scope
from patchwatch.store.approval import PENDING
from patchwatch.store.approval import mirror_state
from patchwatch.store.approval import pending_reason
from patchwatch.store.db import chunks
from patchwatch.store.db import database
from patchwatch.store.db import write_transaction
from patchwatch.store.models import Advisory
from patchwatch.store.models import AdvisoryPackage
from patchwatch.store.models import Host
from patchwatch.store.models import Mirror
from patchwatch.store.models import OSReleaseRepository
from patchwatch.store.models import Package
from patchwatch.store.models import Repository
from patchwatch.store.models import RepositorySetMember
from patchwatch.store.package_sets import ensure_mirror_set
from patchwatch.store.package_sets import matching_members
from patchwatch.store.sets import ensure_packages

log = logging.getLogger(__name__)

__all__ = [
    "RefreshResult",
    "deb_architectures",
    "refresh_all",
    "refresh_mirror",
    "select_mirrors",
    "summarize_results",
    "trusted_keyrings",
]

#: Archive keyrings trusted by default: what debian-archive-keyring and
#: ubuntu-keyring install. Not ``*-removed-keys.gpg``: those keys are retired.
SYSTEM_KEYRING_GLOB = "/usr/share/keyrings/*archive-keyring*.gpg"
RELEASE_MAX_BYTES = 32 << 20  # Ubuntu's InRelease is ~0.3 MB; this is generous
REPOMD_MAX_BYTES = 16 << 20
MIRRORLIST_MAX_BYTES = 4 << 20
MAX_LIST_CANDIDATES = 5  # base URLs tried from one mirrorlist or metalink
GPGV_TIMEOUT_SECONDS = 60
MAX_ERROR_CHARS = 2000
CHECKSUM_CHARS = 160  # Mirror.metadata_checksum
#: Mirrors refreshed side by side store their data one at a time (see refresh_all).
_STORE_LOCK = threading.Lock()

#: ``uname -m`` -> dpkg architecture, for hosts whose packages say nothing.
DPKG_ARCHES = {
    "x86_64": "amd64",
    "aarch64": "arm64",
    "i386": "i386",
    "i586": "i386",
    "i686": "i386",
    "armv7l": "armhf",
    "armv6l": "armel",
    "ppc64le": "ppc64el",
    "s390x": "s390x",
    "riscv64": "riscv64",
    "mips64": "mips64el",
    "loongarch64": "loong64",
}

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


class _Skip(Exception):
    """The mirror cannot be refreshed yet, through nobody's fault (no architecture known)."""


@dataclass
class _Fetched:
    """A verified fetch, ready to store. ``None`` means "keep what is stored"."""

    checksum: str
    packages: list[PackageRecord] | None = None
    advisories: list[AdvisoryRecord] | None = None
    advisories_changed: bool = False  # updateinfo differs from what was stored
    skipped_packages: Skipped | None = None  # set when the package index was read
    skipped_advisories: Skipped | None = None  # set when updateinfo was read (or is gone)
    security: bool | None = None
    etag: str = ""
    last_modified: str = ""
    note: str = ""


# ------------------------------------------------------------------------ public API


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
                fetched = _fetch_apt(mirror, repo, fetcher, Path(tmp), now, settings, force, arches)
            else:
                fetched = _fetch_rpmmd(mirror, fetcher, Path(tmp), settings, force)
            _note_skipped(mirror, fetched)
            with _STORE_LOCK:  # one writer at a time: SQLite would make the others wait
                changed, count, advisories = _store_success(mirror, repo, fetched, now)
    except _Skip as exc:
        log.info("mirror %s skipped: %s", mirror.url, exc)
        return result("skipped", str(exc))
    except EXPECTED_FAILURES as exc:
        if current_scope().stopped():  # the run was stopped: not the mirror's failure
            log.info("mirror %s: refresh stopped (%s)", mirror.url, _reason(exc))
            return result("skipped", "stopped before it finished")
        reason = _reason(exc)
        _store_failure(mirror, now, reason)
        log.warning("mirror %s failed: %s", mirror.url, reason)
        return result("failed", reason)
    except PeeweeException:
        raise  # the store, not the mirror, is broken: fail the run, count nothing on it
    except Exception as exc:  # boundary: one mirror's surprise must not stop the others
        log.exception("mirror %s: unexpected error", mirror.url)
        reason = f"internal error: {type(exc).__name__}: {exc}"
        _store_failure(mirror, now, reason)
        return result("failed", reason)
    outcome = "changed" if changed else "unchanged"
    log.info("mirror %s %s: %d packages%s", mirror.url, outcome, count, fetched.note)
    return result(outcome, fetched.note.strip("; "), count, advisories)


def _note_skipped(mirror: Mirror, fetched: _Fetched) -> None:
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


def trusted_keyrings(settings: Settings) -> list[str]:
    """Keyrings gpgv checks apt signatures with: the system archive keyrings + apt_keyrings.

    :raises FetchError: when none exists (gpgv would otherwise look in ~/.gnupg).
    """
    found = sorted(glob.glob(SYSTEM_KEYRING_GLOB))
    for path in settings.apt_keyrings:
        if Path(path).is_file():
            found.append(str(Path(path).resolve()))  # gpgv runs in a temporary folder
        else:
            log.warning("apt_keyrings: %s does not exist; ignored", path)
    if not found:
        raise FetchError(
            SYSTEM_KEYRING_GLOB,
            "no keyring to verify apt signatures with (install debian-archive-keyring or "
            "set apt_keyrings)",
        )
    return list(dict.fromkeys(found))


def deb_architectures(repo: Repository) -> list[str]:
    """Return the dpkg architectures whose Packages indexes the repository needs.

    The repository's own (from the source's ``Architectures:``), else every
    architecture of the deb packages installed on the hosts that use it (so a
    multiarch host gets its foreign architecture too), else their ``uname -m``
    mapped to dpkg's names. Empty when no host uses the repository yet.
    """
    if repo.arch.strip():
        return sorted({a.strip() for a in repo.arch.split(",") if a.strip()})
    rsets = RepositorySetMember.select(RepositorySetMember.repository_set).where(
        RepositorySetMember.repository == repo.id
    )
    os_releases = OSReleaseRepository.select(OSReleaseRepository.os_release).where(
        OSReleaseRepository.repository == repo.id
    )
    hosts = list(
        Host.select(Host.package_set, Host.arch)
        .where(
            (Host.repository_set.in_(rsets) & ~Host.use_os_repositories)
            | (Host.use_os_repositories & Host.os_release.in_(os_releases))
        )
        .tuples()
    )
    psets = sorted({p for p, _a in hosts if p is not None})
    installed = matching_members(psets, package_where="p.kind = 'deb' AND p.arch <> 'all'")
    ids = sorted({pid for members in installed.values() for pid in members})
    arches: set[str] = set()
    for chunk in chunks(ids):
        query = Package.select(Package.arch).distinct().where(Package.id.in_(list(chunk)))
        arches.update(a for (a,) in query.tuples())
    if not arches:
        arches = {DPKG_ARCHES.get(str(a), str(a)) for _p, a in hosts if a}
    return sorted(arches)


# ------------------------------------------------------------------------------- apt


def _apt_dist_url(base: str, suite: str) -> str:
    """The folder holding InRelease: ``dists/<suite>``, or the flat repository's own."""
    base = base.rstrip("/")
    if suite.endswith("/") or not suite:  # flat: "deb URI ./" or "deb URI sub/"
        rel = suite.strip("/")
        return base if rel in ("", ".") else f"{base}/{rel}"
    return f"{base}/dists/{suite}"


def _fetch_apt(
    mirror: Mirror,
    repo: Repository,
    fetcher: Fetcher,
    tmp: Path,
    now: float,
    settings: Settings,
    force: bool,
    arches: list[str],
) -> _Fetched:
    if not arches:
        raise _Skip(
            "no architecture known: no host using this repository has reported yet, and "
            "the repository names none"
        )
    dist = _apt_dist_url(mirror.url, repo.suite)
    arch_tag = ",".join(arches)
    # Conditional only when the stored data covers the same architectures: a 304 says
    # the Release is unchanged, not that the set of indexes we need is.
    conditional = (
        not force
        and mirror.package_set_id is not None
        and mirror.metadata_checksum.split(" ", 1)[0] == arch_tag
    )
    got = _fetch_release(dist, fetcher, tmp, settings, mirror if conditional else None)
    if got is None:  # 304: the InRelease we verified last time is still current
        return _Fetched(
            checksum=mirror.metadata_checksum,
            etag=mirror.etag,
            last_modified=mirror.last_modified,
            note="; InRelease not modified",
        )
    release, release_url, download = got
    when = dt.datetime.fromtimestamp(now, dt.UTC)
    if not release.is_valid_at(when):
        raise FetchError(
            release_url,
            f"Release expired at {release.valid_until} (Valid-Until): the mirror is stale "
            "or replays old metadata",
        )
    entries = _apt_indexes(release, repo.component, arches, release_url, settings)
    checksum = _apt_checksum(arch_tag, entries)
    # A Release with Valid-Until must be re-read to be re-checked: no validators then.
    keep_validators = release.valid_until is None
    fetched = _Fetched(
        checksum=checksum,
        security=is_security_release(release),
        etag=download.etag if keep_validators else "",
        last_modified=download.last_modified if keep_validators else "",
    )
    if not force and mirror.package_set_id is not None and checksum == mirror.metadata_checksum:
        return fetched
    packages: list[PackageRecord] = []
    skipped = Skipped()
    for n, entry in enumerate(entries):
        _fetch_apt_index(dist, entry, fetcher, tmp / f"index{n}", settings, packages, skipped)
    fetched.packages = packages
    fetched.skipped_packages = skipped
    return fetched


def _fetch_release(
    dist: str, fetcher: Fetcher, tmp: Path, settings: Settings, conditional: Mirror | None
) -> tuple[ReleaseFile, str, Download] | None:
    """Fetch and verify InRelease (else Release + Release.gpg); None when not modified."""
    verify = settings.apt_verify_signatures
    url = f"{dist}/InRelease"
    try:
        download = fetcher.fetch(
            url, tmp / "InRelease", max_bytes=RELEASE_MAX_BYTES,
            etag=conditional.etag if conditional else "",
            last_modified=conditional.last_modified if conditional else "",
        )  # fmt: skip
    except HttpStatusError as exc:
        if exc.status not in (404, 410):
            raise
        return _fetch_detached_release(dist, fetcher, tmp, settings, verify)
    if download.not_modified:
        return None
    assert download.path is not None
    if verify:
        text = _gpgv(url, download.path, None, tmp, settings)
    else:
        text = download.path.read_bytes().decode("utf-8")
    return _parse_release(text, url), url, download


def _fetch_detached_release(
    dist: str, fetcher: Fetcher, tmp: Path, settings: Settings, verify: bool
) -> tuple[ReleaseFile, str, Download]:
    url = f"{dist}/Release"
    download = fetcher.fetch(url, tmp / "Release", max_bytes=RELEASE_MAX_BYTES)
    assert download.path is not None
    if verify:
        try:
            sig = fetcher.fetch(f"{url}.gpg", tmp / "Release.gpg", max_bytes=1 << 20)
        except HttpStatusError as exc:
            if exc.status not in (404, 410):
                raise
            raise FetchError(
                dist,
                "the repository is not signed (no InRelease, no Release.gpg); set "
                "apt_verify_signatures = false to accept unsigned repositories",
            ) from None
        assert sig.path is not None
        _gpgv(url, sig.path, download.path, tmp, settings)
    text = download.path.read_bytes().decode("utf-8")
    return _parse_release(text, url), url, download


def _parse_release(text: str, url: str) -> ReleaseFile:
    try:
        return parse_release(text)
    except ParseError as exc:
        raise FetchError(url, f"unreadable Release: {exc}") from None


def _gpgv(url: str, signed: Path, data: Path | None, tmp: Path, settings: Settings) -> str:
    """Verify a signature with gpgv and return the text it covers.

    For an InRelease the text is gpgv's own ``--output``: only what the signature
    covers is ever parsed.
    """
    keyrings = trusted_keyrings(settings)
    output = tmp / "Release.verified" if data is None else None
    cmd = compute_gpgv_command(
        str(signed), keyrings, data=str(data) if data else None,
        output=str(output) if output else None,
    )  # fmt: skip
    try:
        proc = subprocess.run(
            cmd, capture_output=True, timeout=GPGV_TIMEOUT_SECONDS, check=False, cwd=tmp
        )
    except FileNotFoundError:
        raise FetchError(url, "gpgv is not installed (apt-get install gpgv)") from None
    status = parse_gpgv_status(proc.stdout.decode("utf-8", "replace"))
    if not status.is_ok():
        raise FetchError(url, "signature check failed: " + _describe_gpgv(status, proc, keyrings))
    if output is None:
        assert data is not None
        return data.read_bytes().decode("utf-8")
    return output.read_bytes().decode("utf-8")


def _describe_gpgv(
    status: GpgvStatus, proc: subprocess.CompletedProcess[bytes], keyrings: list[str]
) -> str:
    """Say why gpgv did not vouch for a file, in words an operator can act on."""
    bad, missing = status.bad, status.missing_keys
    expired, revoked = status.expired, status.revoked
    if bad:
        return f"BAD signature by key {', '.join(bad)} (the file was altered)"
    parts = []
    if expired:
        parts.append(f"signed with expired key {', '.join(expired)}")
    if revoked:
        parts.append(f"signed with revoked key {', '.join(revoked)}")
    if missing:
        parts.append(
            f"signed by key {', '.join(missing)}, which is in none of the trusted keyrings "
            f"({', '.join(keyrings)}); add its keyring to apt_keyrings"
        )
    if not parts:
        lines = [ln for ln in proc.stderr.decode("utf-8", "replace").splitlines() if ln.strip()]
        parts.append("no valid signature" + (f" (gpgv: {lines[-1].strip()})" if lines else ""))
    return "; ".join(parts)


def _apt_indexes(
    release: ReleaseFile, component: str, arches: list[str], url: str, settings: Settings
) -> list[IndexEntry]:
    """The Packages indexes to read: one per architecture, plus binary-all when separate."""
    order = settings.apt_index_formats
    entries: dict[str, IndexEntry] = {}
    for arch in arches:
        entry = release.index_for(component, arch, order)
        if entry is not None:
            entries.setdefault(entry.path, entry)
    if not entries:
        where = f"{component}/binary-{'|'.join(arches)}" if component else "the flat repository"
        raise FetchError(url, f"lists no Packages index for {where}")
    fields = {k.lower(): v for k, v in release.fields.items()}
    separate_all = fields.get("no-support-for-architecture-all", "").strip() != "Packages"
    if not release.is_flat and "all" in release.architectures and separate_all:
        entry = release.index_for(component, "all", order)  # apt reads binary-all too then
        if entry is not None:
            entries.setdefault(entry.path, entry)
    return [entries[p] for p in sorted(entries)]


def _apt_checksum(arch_tag: str, entries: list[IndexEntry]) -> str:
    if len(entries) == 1:
        checksum = f"{arch_tag} {entries[0].hash_name}:{entries[0].digest}"
    else:
        h = hashlib.sha256()
        for e in entries:
            h.update(f"{e.path} {e.hash_name}:{e.digest}\n".encode())
        checksum = f"{arch_tag} combined:{h.hexdigest()}"
    if len(checksum) > CHECKSUM_CHARS:
        checksum = "sha256:" + hashlib.sha256(checksum.encode()).hexdigest()
    return checksum


def _fetch_apt_index(
    dist: str,
    entry: IndexEntry,
    fetcher: Fetcher,
    dest: Path,
    settings: Settings,
    packages: list[PackageRecord],
    skipped: Skipped,
) -> None:
    """Download, verify and parse one Packages file, adding its packages to ``packages``.

    ``packages`` holds those of the repository's other indexes already read:
    ``max_index_packages`` bounds them all together.
    """
    urls = [f"{dist}/{entry.path}"]
    if entry.by_hash_path:
        urls.insert(0, f"{dist}/{entry.by_hash_path}")
    download: Download | None = None
    for url in urls:
        try:
            download = fetcher.fetch(
                url, dest, max_bytes=_cap(url, entry.size, settings),
                hash_name=entry.hashlib_name,
            )  # fmt: skip
            break
        except HttpStatusError as exc:
            # by-hash files can be pruned between InRelease and this request; apt
            # falls back to the plain name the same way
            if exc.status != 404 or url == urls[-1]:
                raise
    assert download is not None and download.path is not None
    _check(download, entry.size, entry.hash_name, entry.digest, "the Release")
    with download.path.open("rb") as raw:
        try:
            with open_decompressed(raw, entry.compression, settings.max_index_bytes) as reader:
                parsed = parse_packages(read_lines(reader), skipped)
                _collect(parsed, packages, settings.max_index_packages, "packages")
        except (ParseError, TooLargeError) as exc:
            raise FetchError(download.url, str(exc)) from None
    download.path.unlink()


def _collect(
    parsed: Iterable[AvailablePackage], into: list[PackageRecord], limit: int, what: str
) -> None:
    """Append the parsed packages to ``into``, stopping past ``limit`` in all.

    The parse stops there too (it is a generator): a million-package index costs what
    ``limit`` packages cost, not what the byte limit allows (1.2 GB and 55 s).
    """
    for available in parsed:
        if len(into) >= limit:
            raise TooLargeError(f"lists more than {limit} {what} (max_index_packages)")
        into.append(available.package)


def _collect_advisories(parsed: Iterable[AdvisoryRecord], limit: int) -> list[AdvisoryRecord]:
    """The advisories, refusing more than ``limit`` of them or of the packages they name."""
    advisories: list[AdvisoryRecord] = []
    named = 0
    for advisory in parsed:
        named += len(advisory.packages)
        if len(advisories) >= limit or named > limit:
            raise TooLargeError(
                f"lists more than {limit} advisories or advisory packages (max_index_packages)"
            )
        advisories.append(advisory)
    return advisories


def _cap(url: str, declared: int | None, settings: Settings) -> int:
    """The byte cap for an index download: what the metadata declares, never above
    ``max_index_bytes``. A declared size above it fails before anything is downloaded:
    the metadata is the mirror's word, and a mirror may declare gigabytes."""
    limit = settings.max_index_bytes
    if declared is not None and declared > limit:
        raise FetchError(
            url, f"is declared as {declared} bytes, more than max_index_bytes ({limit})"
        )
    return declared if declared is not None else limit


def _check(download: Download, size: int | None, hash_name: str, digest: str, by: str) -> None:
    if size is not None and download.size != size:
        raise FetchError(
            download.url,
            f"is {download.size} bytes, but {by} says {size} (truncated or replaced file)",
        )
    if download.digest.lower() != digest.lower():
        raise FetchError(
            download.url,
            f"{hash_name} checksum {download.digest} does not match {digest} from {by}",
        )


# ---------------------------------------------------------------------------- rpm-md


def _fetch_rpmmd(
    mirror: Mirror, fetcher: Fetcher, tmp: Path, settings: Settings, force: bool
) -> _Fetched:
    bases = _rpm_bases(mirror, fetcher, tmp)
    errors: list[FetchError] = []
    for base in bases[:MAX_LIST_CANDIDATES]:
        try:
            fetched = _fetch_rpmmd_from(
                base, mirror, fetcher, tmp, settings, force, conditional=mirror.kind == "baseurl"
            )
        except FetchError as exc:
            errors.append(exc)
            if len(bases) > 1:
                log.info("rpm-md base %s failed, trying the next: %s", base, exc)
            continue
        if base != mirror.url:
            fetched.note += f"; served by {base}"
        return fetched
    if len(errors) == 1:
        raise errors[0]
    tried = "; ".join(str(e) for e in errors)
    raise FetchError(mirror.url, f"none of the {len(errors)} mirrors it lists worked: {tried}")


def _rpm_bases(mirror: Mirror, fetcher: Fetcher, tmp: Path) -> list[str]:
    """The base URLs to try: the mirror itself, or what its mirrorlist/metalink lists."""
    if mirror.kind not in ("mirrorlist", "metalink"):
        return [mirror.url.rstrip("/")]
    download = fetcher.fetch(mirror.url, tmp / "mirrorlist", max_bytes=MIRRORLIST_MAX_BYTES)
    assert download.path is not None
    data = download.path.read_bytes()
    try:
        if mirror.kind == "metalink" or data.lstrip()[:5] in (b"<?xml", b"<meta"):
            urls = parse_metalink(data)
        else:
            urls = parse_mirrorlist(data.decode("utf-8"))
    except ParseError as exc:
        raise FetchError(mirror.url, f"unreadable {mirror.kind}: {exc}") from None
    bases = []
    for url in urls:
        url = url.rstrip("/").removesuffix("/repomd.xml").removesuffix("/repodata")
        bases.append(url.rstrip("/"))
    bases = list(dict.fromkeys(b for b in bases if b))
    if not bases:
        raise FetchError(mirror.url, f"the {mirror.kind} lists no http(s) or ftp mirror")
    return bases


def _short_sum(entry: RepoMdEntry | None) -> str:
    if entry is None:
        return "-"
    if len(entry.checksum) <= 64:
        return entry.checksum
    return hashlib.sha256(f"{entry.checksum_type}:{entry.checksum}".encode()).hexdigest()


def _fetch_rpmmd_from(
    base: str,
    mirror: Mirror,
    fetcher: Fetcher,
    tmp: Path,
    settings: Settings,
    force: bool,
    conditional: bool,
) -> _Fetched:
    url = f"{base}/repodata/repomd.xml"
    use_validators = conditional and not force and mirror.package_set_id is not None
    download = fetcher.fetch(
        url, tmp / "repomd.xml", max_bytes=REPOMD_MAX_BYTES,
        etag=mirror.etag if use_validators else "",
        last_modified=mirror.last_modified if use_validators else "",
    )  # fmt: skip
    if download.not_modified:
        return _Fetched(
            checksum=mirror.metadata_checksum,
            etag=download.etag,
            last_modified=download.last_modified,
            note="; repomd.xml not modified",
        )
    assert download.path is not None
    try:
        repomd = parse_repomd(download.path.read_bytes())
    except ParseError as exc:
        raise FetchError(url, f"unreadable repomd.xml: {exc}") from None
    primary = repomd.get("primary")
    if primary is None:
        raise FetchError(url, "lists no primary metadata")
    updateinfo = repomd.get("updateinfo")
    p_sum, u_sum = _short_sum(primary), _short_sum(updateinfo)
    fetched = _Fetched(
        checksum=f"{p_sum} {u_sum}",
        etag=download.etag if conditional else "",
        last_modified=download.last_modified if conditional else "",
    )
    old_p, _, old_u = mirror.metadata_checksum.partition(" ")
    fresh = force or mirror.package_set_id is None
    limit = settings.max_index_packages
    if fresh or old_p != p_sum:
        with _open_rpmmd_data(base, primary, fetcher, tmp, settings) as (data_url, reader):
            packages: list[PackageRecord] = []
            skipped = Skipped()
            try:
                _collect(parse_primary(reader, skipped), packages, limit, "packages")
            except (ParseError, TooLargeError) as exc:
                raise FetchError(data_url, str(exc)) from None
            fetched.packages, fetched.skipped_packages = packages, skipped
    if fresh or old_u != u_sum:
        fetched.advisories = []
        fetched.advisories_changed = old_u != u_sum
        fetched.skipped_advisories = Skipped()
        if updateinfo is not None:
            with _open_rpmmd_data(base, updateinfo, fetcher, tmp, settings) as (data_url, reader):
                try:
                    parsed = parse_updateinfo(reader, fetched.skipped_advisories)
                    fetched.advisories = _collect_advisories(parsed, limit)
                except (ParseError, TooLargeError) as exc:
                    raise FetchError(data_url, str(exc)) from None
    return fetched


@contextmanager
def _open_rpmmd_data(
    base: str, entry: RepoMdEntry, fetcher: Fetcher, tmp: Path, settings: Settings
) -> Iterator[tuple[str, IO[bytes]]]:
    """Download one repomd entry, verify it, and yield (its URL, a decompressing reader)."""
    url = urljoin((entry.location_base or base).rstrip("/") + "/", entry.location)
    try:
        hashlib.new(entry.hashlib_name)
    except ValueError:
        raise FetchError(url, f"unsupported checksum type {entry.checksum_type!r}") from None
    limit = _cap(url, entry.size, settings)
    dest = tmp / entry.type
    download = fetcher.fetch(url, dest, max_bytes=limit, hash_name=entry.hashlib_name)
    assert download.path is not None
    try:
        _check(download, entry.size, entry.checksum_type, entry.checksum, "repomd.xml")
        kind = "auto" if entry.compression == "plain" else entry.compression
        with (
            download.path.open("rb") as raw,
            open_decompressed(raw, kind, settings.max_index_bytes, name=url) as reader,
        ):
            yield url, reader
    finally:
        dest.unlink(missing_ok=True)


# ----------------------------------------------------------------------------- store


def _store_success(
    mirror: Mirror, repo: Repository, fetched: _Fetched, now: float
) -> tuple[bool, int, int]:
    """Store verified data and the mirror's success in one transaction.

    Returns (data changed, packages in the mirror's set, advisories stored now).
    """
    changed = False
    advisories = 0
    with write_transaction():
        pset_id = mirror.package_set_id
        count = mirror.package_count
        if fetched.packages is not None:
            pset = ensure_mirror_set(fetched.packages, now)
            changed = pset.id != pset_id
            pset_id, count = pset.id, pset.size
        if fetched.advisories is not None:
            advisories = _replace_advisories(repo.id, fetched.advisories)
            changed = changed or fetched.advisories_changed
        if fetched.security is not None and fetched.security != repo.security:
            Repository.update(security=fetched.security).where(Repository.id == repo.id).execute()
            changed = True
        values = {
            Mirror.last_attempt_at: now,
            Mirror.last_success_at: now,
            Mirror.consecutive_failures: 0,
            Mirror.last_error: "",
            Mirror.metadata_checksum: fetched.checksum[:CHECKSUM_CHARS],
            Mirror.etag: fetched.etag[:255],
            Mirror.last_modified: fetched.last_modified[:64],
            Mirror.package_set: pset_id,
            Mirror.package_count: count,
        }
        if fetched.skipped_packages is not None:
            values[Mirror.skipped_packages] = fetched.skipped_packages.count
        if fetched.skipped_advisories is not None:
            values[Mirror.skipped_advisories] = fetched.skipped_advisories.count
        if changed:
            values[Mirror.last_change_at] = now
        Mirror.update(values).where(Mirror.id == mirror.id).execute()
    return changed, count, advisories


def _store_failure(mirror: Mirror, now: float, reason: str) -> None:
    """Count a failure; the last good data (package set, checksum) is left alone."""
    with write_transaction():
        Mirror.update(
            {
                Mirror.last_attempt_at: now,
                Mirror.failures_total: Mirror.failures_total + 1,
                Mirror.consecutive_failures: Mirror.consecutive_failures + 1,
                Mirror.last_error: reason[:MAX_ERROR_CHARS],
            }
        ).where(Mirror.id == mirror.id).execute()


def _replace_advisories(repo_id: int, advisories: list[AdvisoryRecord]) -> int:
    """Make the repository's stored advisories exactly these (merged by id)."""
    merged: dict[str, tuple[AdvisoryRecord, dict[PackageRecord, None]]] = {}
    for adv in advisories:
        key = adv.id[:255]
        if key not in merged:
            merged[key] = (adv, {})
        merged[key][1].update(dict.fromkeys(adv.packages))
    old = Advisory.select(Advisory.id).where(Advisory.repository == repo_id)
    AdvisoryPackage.delete().where(AdvisoryPackage.advisory.in_(old)).execute()
    Advisory.delete().where(Advisory.repository == repo_id).execute()
    if not merged:
        return 0
    rows = [
        (key, repo_id, adv.type[:32], adv.severity[:32], adv.title, adv.issued[:64],
         " ".join(adv.cves))
        for key, (adv, _pkgs) in merged.items()
    ]  # fmt: skip
    fields = [Advisory.advisory_id, Advisory.repository, Advisory.type, Advisory.severity,
              Advisory.title, Advisory.issued, Advisory.cves]  # fmt: skip
    for i in range(0, len(rows), 200):
        Advisory.insert_many(rows[i : i + 200], fields=fields).execute()
    ids: dict[str, int] = dict(
        Advisory.select(Advisory.advisory_id, Advisory.id)
        .where(Advisory.repository == repo_id)
        .tuples()
    )
    package_ids = ensure_packages(p for _adv, pkgs in merged.values() for p in pkgs)
    links = sorted(
        {(ids[key], package_ids[p]) for key, (_adv, pkgs) in merged.items() for p in pkgs}
    )
    for i in range(0, len(links), 400):
        AdvisoryPackage.insert_many(
            links[i : i + 400], fields=[AdvisoryPackage.advisory, AdvisoryPackage.package]
        ).on_conflict_ignore().execute()
    return len(merged)


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
