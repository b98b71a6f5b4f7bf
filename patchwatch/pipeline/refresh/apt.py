"""Fetch and verify an apt mirror: the signed Release, then its Packages indexes.

``InRelease`` (or ``Release`` + ``Release.gpg``) is checked with gpgv against the
Debian and Ubuntu archive keyrings installed on this machine plus ``apt_keyrings``,
and only the text gpgv vouches for is parsed. A Release past its ``Valid-Until`` is
refused (a stale or replayed mirror). The Packages index for the repository's
component and architectures is chosen from it (by-hash when offered), downloaded only
when its hash differs from the one stored, and checked for size and hash before it is
decompressed and parsed. The architectures come from the repository or from the
hosts that use it (:func:`deb_architectures`).
"""

from __future__ import annotations

import datetime as dt
import glob
import hashlib
import logging
import subprocess
from collections.abc import Iterable
from pathlib import Path

from patchwatch.domain.errors import FetchError
from patchwatch.domain.errors import ParseError
from patchwatch.domain.errors import TooLargeError
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
from patchwatch.domain.settings import Settings
from patchwatch.pipeline.fetch import Download
from patchwatch.pipeline.fetch import Fetcher
from patchwatch.pipeline.fetch import HttpStatusError
from patchwatch.pipeline.refresh.fetched import CHECKSUM_CHARS
from patchwatch.pipeline.refresh.fetched import Fetched
from patchwatch.pipeline.refresh.fetched import Skip
from patchwatch.pipeline.refresh.fetched import cap
from patchwatch.pipeline.refresh.fetched import check_download
from patchwatch.pipeline.refresh.fetched import collect
from patchwatch.store.db import chunks
from patchwatch.store.models import Host
from patchwatch.store.models import Mirror
from patchwatch.store.models import OSReleaseRepository
from patchwatch.store.models import Package
from patchwatch.store.models import Repository
from patchwatch.store.models import RepositorySetMember
from patchwatch.store.package_sets import matching_members

log = logging.getLogger(__name__)


#: Archive keyrings trusted by default: what debian-archive-keyring and
#: ubuntu-keyring install. Not ``*-removed-keys.gpg``: those keys are retired.
SYSTEM_KEYRING_GLOB = "/usr/share/keyrings/*archive-keyring*.gpg"
RELEASE_MAX_BYTES = 32 << 20  # Ubuntu's InRelease is ~0.3 MB; this is generous
GPGV_TIMEOUT_SECONDS = 60


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


def keyrings_found(system_glob: str, configured: Iterable[str], setting: str) -> list[str]:
    """The system keyrings matching ``system_glob``, then each configured one that exists.

    Paths are made absolute, since gpgv runs in a temporary folder; a configured keyring
    that is missing is logged under the ``setting`` that names it and left out.
    """
    found = sorted(glob.glob(system_glob))
    for path in configured:
        if Path(path).is_file():
            found.append(str(Path(path).resolve()))
        else:
            log.warning("%s: %s does not exist; ignored", setting, path)
    return found


def trusted_keyrings(settings: Settings) -> list[str]:
    """Keyrings gpgv checks apt signatures with: the system archive keyrings + apt_keyrings.

    :raises FetchError: when none exists (gpgv would otherwise look in ~/.gnupg).
    """
    found = keyrings_found(SYSTEM_KEYRING_GLOB, settings.apt_keyrings, "apt_keyrings")
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


def _apt_dist_url(base: str, suite: str) -> str:
    """The folder holding InRelease: ``dists/<suite>``, or the flat repository's own."""
    base = base.rstrip("/")
    if suite.endswith("/") or not suite:  # flat: "deb URI ./" or "deb URI sub/"
        rel = suite.strip("/")
        return base if rel in ("", ".") else f"{base}/{rel}"
    return f"{base}/dists/{suite}"


def fetch_apt(
    mirror: Mirror,
    repo: Repository,
    fetcher: Fetcher,
    tmp: Path,
    now: float,
    settings: Settings,
    force: bool,
    arches: list[str],
) -> Fetched:
    if not arches:
        raise Skip(
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
        return Fetched(
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
    fetched = Fetched(
        checksum=checksum,
        security=is_security_release(release),
        etag=download.etag if keep_validators else "",
        last_modified=download.last_modified if keep_validators else "",
    )
    if not force and mirror.package_set_id is not None and checksum == mirror.metadata_checksum:
        return fetched
    packages: list[PackageRecord] = []
    sources: dict[PackageRecord, str] = {}
    skipped = Skipped()
    for n, entry in enumerate(entries):
        _fetch_apt_index(
            dist, entry, fetcher, tmp / f"index{n}", settings, packages, skipped, sources
        )
    fetched.packages = packages
    fetched.sources = sources
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
    status, proc = run_gpgv(cmd, url, tmp)
    if not status.is_ok():
        raise FetchError(url, "signature check failed: " + _describe_gpgv(status, proc, keyrings))
    if output is None:
        assert data is not None
        return data.read_bytes().decode("utf-8")
    return output.read_bytes().decode("utf-8")


def run_gpgv(
    cmd: list[str], url: str, tmp: Path
) -> tuple[GpgvStatus, subprocess.CompletedProcess[bytes]]:
    """Run a gpgv command line in ``tmp``; its machine-readable status and the process.

    A missing gpgv is the operator's to fix, and said so, against ``url``."""
    try:
        proc = subprocess.run(
            cmd, capture_output=True, timeout=GPGV_TIMEOUT_SECONDS, check=False, cwd=tmp
        )
    except FileNotFoundError:
        raise FetchError(url, "gpgv is not installed (apt-get install gpgv)") from None
    return parse_gpgv_status(proc.stdout.decode("utf-8", "replace")), proc


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
    sources: dict[PackageRecord, str] | None = None,
) -> None:
    """Download, verify and parse one Packages file, adding its packages to ``packages``
    (and to ``sources`` those whose source package has another name).

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
                url, dest, max_bytes=cap(url, entry.size, settings),
                hash_name=entry.hashlib_name,
            )  # fmt: skip
            break
        except HttpStatusError as exc:
            # by-hash files can be pruned between InRelease and this request; apt
            # falls back to the plain name the same way
            if exc.status != 404 or url == urls[-1]:
                raise
    assert download is not None and download.path is not None
    check_download(download, entry.size, entry.hash_name, entry.digest, "the Release")
    with download.path.open("rb") as raw:
        try:
            with open_decompressed(raw, entry.compression, settings.max_index_bytes) as reader:
                parsed = parse_packages(read_lines(reader), skipped)
                collect(parsed, packages, settings.max_index_packages, "packages", sources)
        except (ParseError, TooLargeError) as exc:
            raise FetchError(download.url, str(exc)) from None
    download.path.unlink()
