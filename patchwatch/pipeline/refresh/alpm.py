"""Fetch and verify a pacman mirror: ``$repo.db`` and its detached ``$repo.db.sig``.

A pacman repository is one sync database per repository and architecture, at
``SERVER/REPO.db`` where SERVER is a ``Server =`` line of pacman.conf with ``$repo`` and
``$arch`` expanded (the mirror's URL) and REPO the pacman.conf section (the
repository's id). The database is fetched with a conditional GET (Last-Modified/ETag:
pacman has nothing like apt's by-hash, and mirrors serve both validators); a database
whose SHA-256 equals the stored one is not parsed again.

Signatures follow ``alpm_database_signatures``, as pacman's ``SigLevel`` does for
databases: ``optional`` (pacman's default ``DatabaseOptional``; Arch's own mirrors
publish no database signatures) verifies ``REPO.db.sig`` with gpgv when the mirror
has one and refuses the database when it does not verify; ``required`` refuses a
database without one; ``never`` does not look. The keyrings are Arch's
(``/usr/share/keyrings/archlinux.gpg``, Debian's archlinux-keyring package) when
installed, plus ``alpm_keyrings``.

Arch's databases carry no advisories: with ``arch_security_tracker`` set, the
tracker's fixes for the names the database offers are stored as the repository's
security advisories (``patchwatch.domain.vulns.arch_tracker``, :mod:`.security_feeds`).
"""

from __future__ import annotations

import logging
from pathlib import Path

from patchwatch.domain.errors import FetchError
from patchwatch.domain.errors import ParseError
from patchwatch.domain.errors import TooLargeError
from patchwatch.domain.records import AvailablePackage
from patchwatch.domain.records import Package as PackageRecord
from patchwatch.domain.records import PackageKind
from patchwatch.domain.repodata.alpm import ArchPackage
from patchwatch.domain.repodata.alpm import parse_alpm_db
from patchwatch.domain.repodata.apt import compute_gpgv_command
from patchwatch.domain.repodata.bounds import Skipped
from patchwatch.domain.settings import Settings
from patchwatch.domain.vulns.fixed_in import advisories_for
from patchwatch.pipeline.fetch import Fetcher
from patchwatch.pipeline.fetch import HttpStatusError
from patchwatch.pipeline.refresh.apt import keyrings_found
from patchwatch.pipeline.refresh.apt import run_gpgv
from patchwatch.pipeline.refresh.fetched import Fetched
from patchwatch.pipeline.refresh.fetched import collect
from patchwatch.pipeline.refresh.fetched import fetch_feed_index
from patchwatch.pipeline.refresh.security_feeds import arch_tracker
from patchwatch.store.models import Mirror
from patchwatch.store.models import Repository

log = logging.getLogger(__name__)

#: Arch's keyring as Debian's archlinux-keyring package installs it.
SYSTEM_KEYRING_GLOB = "/usr/share/keyrings/archlinux.gpg"
SIGNATURE_MAX_BYTES = 64 * 1024  # one OpenPGP signature is under 1 KiB
SIGNATURE_MODES = ("optional", "required", "never")


def trusted_keyrings(settings: Settings) -> list[str]:
    """Keyrings gpgv checks pacman database signatures with: Arch's + ``alpm_keyrings``."""
    return keyrings_found(SYSTEM_KEYRING_GLOB, settings.alpm_keyrings, "alpm_keyrings")


def alpm_record(package: ArchPackage) -> AvailablePackage:
    """A database entry as the shared record: epoch "" when none, as pacman prints it."""
    epoch = "" if package.epoch == "0" else package.epoch
    record = PackageRecord(
        package.name, epoch, package.pkgver, package.pkgrel, package.arch, PackageKind.ARCH
    )
    return AvailablePackage(record, source=package.base, filename=package.filename)


def fetch_alpm(
    mirror: Mirror, repo: Repository, fetcher: Fetcher, tmp: Path, settings: Settings, force: bool
) -> Fetched:
    """Fetch, verify and parse one mirror of one pacman repository (module docstring)."""
    name = repo.repo_id
    if not name or "/" in name:
        raise FetchError(mirror.url, f"no pacman repository name to read (id {name!r})")
    url = f"{mirror.url.rstrip('/')}/{name}.db"
    feed_sum, fixes = arch_tracker(settings.arch_security_tracker)
    dest = tmp / f"{name}.db"
    fetched, download, unchanged = fetch_feed_index(
        fetcher, url, dest, mirror, settings, force, feed_sum, "database"
    )
    if download.not_modified:
        return fetched
    fetched.note = _verify(url, dest, fetcher, tmp, settings)
    if unchanged:
        fetched.note += "; database unchanged"
        return fetched
    packages: list[PackageRecord] = []
    skipped = Skipped()
    try:
        with dest.open("rb") as raw:
            parsed = parse_alpm_db(
                raw, settings.max_index_bytes, skipped=skipped, name=url,
                max_entries=settings.max_index_packages,
            )  # fmt: skip
            collect(map(alpm_record, parsed), packages, settings.max_index_packages, "packages")
    except (ParseError, TooLargeError) as exc:
        raise FetchError(url, str(exc)) from None
    fetched.packages, fetched.skipped_packages = packages, skipped
    fetched.advisories = advisories_for(fixes or (), packages)
    return fetched


def _verify(url: str, db: Path, fetcher: Fetcher, tmp: Path, settings: Settings) -> str:
    """Check ``REPO.db.sig`` as ``alpm_database_signatures`` says; return a note."""
    mode = settings.alpm_database_signatures
    if mode == "never":
        return "; signature not checked (alpm_database_signatures = never)"
    sig_url = f"{url}.sig"
    sig = tmp / (db.name + ".sig")
    try:
        fetcher.fetch(sig_url, sig, max_bytes=SIGNATURE_MAX_BYTES)
    except HttpStatusError as exc:
        if exc.status != 404:
            raise
        if mode == "required":
            raise FetchError(
                url, "has no signature (.db.sig), and alpm_database_signatures is required"
            ) from None
        return "; unsigned database (no .db.sig, as on Arch's own mirrors)"
    keyrings = trusted_keyrings(settings)
    if not keyrings:
        raise FetchError(
            sig_url,
            "no keyring to verify pacman database signatures with (install "
            "archlinux-keyring or set alpm_keyrings)",
        )
    cmd = compute_gpgv_command(str(sig), keyrings, data=str(db))
    status, proc = run_gpgv(cmd, sig_url, tmp)
    if not status.is_ok():
        detail = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        why = detail[-1].strip() if detail else "no valid signature"
        raise FetchError(
            sig_url,
            f"signature check failed against {', '.join(keyrings)}: {why} "
            "(add the signer's keyring to alpm_keyrings)",
        )
    return "; signature verified"
