"""Mirror refresh against real metadata served on loopback, with a mirror's usual faults.

apt data is the real, signed bookworm-updates InRelease and Packages.xz from
tests/fixtures/apt (gpgv checks them with the Debian archive keyring); rpm-md data is
the repository scripts/make_rpm_repo.sh built (tests/fixtures/rpmmd/repo). Every fault
must fail the refresh with a clear reason, keep the mirror's last good data, count the
failure, and let the next good refresh recover. Runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gzip
import hashlib
import io
import lzma
import shutil
import sys
import xml.etree.ElementTree as ET
from collections.abc import Callable
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from patchwatch.cli import refresh_cmd
from patchwatch.domain.errors import NotFoundError
from patchwatch.domain.records import PackageKind
from patchwatch.domain.repodata.apt import parse_packages
from patchwatch.domain.repodata.compression import open_decompressed
from patchwatch.domain.repodata.rpmmd import parse_primary
from patchwatch.domain.settings import Settings
from patchwatch.exporter.collector import StoreCollector
from patchwatch.pipeline.fetch import HttpFetcher
from patchwatch.pipeline.processing import process_pending
from patchwatch.pipeline.processing import store_report
from patchwatch.pipeline.refresh.apt import deb_architectures
from patchwatch.pipeline.refresh.run import refresh_all
from patchwatch.pipeline.refresh.run import refresh_mirror
from patchwatch.pipeline.refresh.run import select_mirrors
from patchwatch.pipeline.refresh.run import summarize_results
from patchwatch.scheduler.runner import default_jobs
from patchwatch.store.models import Advisory
from patchwatch.store.models import AdvisoryPackage
from patchwatch.store.models import Mirror
from patchwatch.store.models import Package
from patchwatch.store.models import PackageSetMember
from patchwatch.store.models import Repository
from tests.conftest import FIXTURES
from tests.test_fetch import LOOPBACK_POLICY
from tests.test_fetch import Fault
from tests.test_fetch import MirrorServer

if sys.version_info >= (3, 14):  # pragma: no cover - as patchwatch.domain.repodata.compression
    from compression.zstd import ZstdFile
else:
    from backports.zstd import ZstdFile

APT = FIXTURES / "apt"
RPMMD = FIXTURES / "rpmmd" / "repo"
KEYRING = APT / "debian-archive-keyring.gpg"
UPDATES_XZ = APT / "Packages.xz-bookworm-updates-main-amd64"
UPDATES_SHA256 = "87e7e94047fb7fb6f4ceecc7022d4bee55b66031cc2a7666d3196f3e0aabb846"
NOW = dt.datetime(2026, 11, 23, 12, tzinfo=dt.UTC).timestamp()
LATER = NOW + 3600
MUCH_LATER = NOW + 7200
REPO_NS = "http://linux.duke.edu/metadata/repo"

UPD_DIST = "/debian/dists/bookworm-updates"
UPD_INRELEASE = f"{UPD_DIST}/InRelease"
UPD_INDEX = f"{UPD_DIST}/main/binary-amd64/Packages.xz"
UPD_BYHASH = f"{UPD_DIST}/main/binary-amd64/by-hash/SHA256/{UPDATES_SHA256}"


#: Most tests exercise HTTP and verification, not SQL: they run on SQLite only, which
#: keeps the suite fast (a PostgreSQL database costs ~0.45 s per test to create). The
#: tests that store data in new ways run on both backends.
sqlite_only = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


@dataclass(frozen=True)
class RefreshSettings(Settings):
    """Settings plus the switch the refresh reads with getattr (not in SETTINGS yet)."""

    apt_verify_signatures: bool = True


def make_settings(**overrides: object) -> RefreshSettings:
    values: dict[str, object] = {
        "apt_keyrings": (str(KEYRING),),
        "http_timeout_seconds": 1.0,
        "http_retries": 1,
        "max_index_bytes": 1 << 20,
        # the test mirrors run on 127.0.0.1: read them without approval, reach them
        "mirror_url_patterns": ("http://127.0.0.1:*",),
        "mirror_allowed_networks": ("127.0.0.1/32",),
    }
    values.update(overrides)
    return RefreshSettings(**values)  # type: ignore[arg-type]


def make_fetcher(timeout: float = 1.0, retries: int = 1) -> HttpFetcher:
    return HttpFetcher(
        timeout=timeout, retries=retries, backoff=0.0, sleep=lambda _s: None,
        policy=LOOPBACK_POLICY,
    )  # fmt: skip


@pytest.fixture
def root(tmp_path: Path) -> Path:
    www = tmp_path / "www"
    www.mkdir()
    return www


@pytest.fixture
def server(root: Path) -> Iterator[MirrorServer]:
    srv = MirrorServer(root).start()
    yield srv
    srv.stop()


@pytest.fixture
def fetcher() -> Iterator[HttpFetcher]:
    with make_fetcher() as f:
        yield f


def add_repository(
    kind: str, key: str, urls: list[tuple[str, str]], suite: str = "", component: str = "",
    arch: str = "",
) -> tuple[Repository, list[Mirror]]:  # fmt: skip
    repo = Repository.create(
        kind=kind, key=key, suite=suite, component=component, arch=arch, created_at=NOW
    )
    mirrors = [Mirror.create(repository=repo, url=u, kind=k) for u, k in urls]
    return repo, mirrors


def reload(mirror: Mirror) -> Mirror:
    return Mirror.get_by_id(mirror.id)


def stored_packages(pset_id: int | None) -> set[tuple[str, str, str, str, str, str]]:
    query = (
        Package.select(Package.kind, Package.name, Package.epoch, Package.version,
                       Package.release, Package.arch)
        .join(PackageSetMember, on=(PackageSetMember.package == Package.id))
        .where(PackageSetMember.package_set == pset_id)
        .tuples()
    )  # fmt: skip
    return set(query)


def as_rows(packages: object) -> set[tuple[str, str, str, str, str, str]]:
    return {
        (str(p.package.kind), p.package.name, p.package.epoch, p.package.version,
         p.package.release, p.package.arch)
        for p in packages  # type: ignore[attr-defined]
    }  # fmt: skip


# ------------------------------------------------------------------------ apt trees


def build_updates_tree(root: Path) -> None:
    """bookworm-updates main amd64 as deb.debian.org serves it: InRelease, index, by-hash."""
    dist = root / UPD_DIST.lstrip("/")
    binary = dist / "main" / "binary-amd64"
    (binary / "by-hash" / "SHA256").mkdir(parents=True)
    shutil.copy(APT / "InRelease-bookworm-updates", dist / "InRelease")
    data = UPDATES_XZ.read_bytes()
    (binary / "Packages.xz").write_bytes(data)
    (binary / "by-hash" / "SHA256" / UPDATES_SHA256).write_bytes(data)


def updates_repository(server: MirrorServer) -> tuple[Repository, Mirror]:
    repo, (mirror,) = add_repository(
        "deb", f"deb {server.url('debian')} bookworm-updates main amd64",
        [(server.url("debian"), "baseurl")], "bookworm-updates", "main", "amd64",
    )  # fmt: skip
    return repo, mirror


def expected_updates_rows() -> set[tuple[str, str, str, str, str, str]]:
    with UPDATES_XZ.open("rb") as raw, open_decompressed(raw, "xz", 1 << 24) as reader:
        return as_rows(parse_packages(reader))


def build_unsigned_tree(
    root: Path, packages: bytes, label: str = "Debian-Security", extra: str = ""
) -> str:
    """An unsigned Release (no InRelease, no Release.gpg) listing one Packages.xz."""
    dist = root / "debian-security" / "dists" / "bookworm-security"
    binary = dist / "main" / "binary-amd64"
    binary.mkdir(parents=True)
    data = lzma.compress(packages)
    (binary / "Packages.xz").write_bytes(data)
    (dist / "Release").write_text(
        "Origin: Debian\n"
        f"Label: {label}\n"
        "Suite: oldstable-security\n"
        "Codename: bookworm-security\n"
        "Date: Sat, 21 Nov 2026 00:53:02 UTC\n"
        f"{extra}"
        "Architectures: amd64\n"
        "Components: updates/main\n"
        "SHA256:\n"
        f" {hashlib.sha256(data).hexdigest()} {len(data)} main/binary-amd64/Packages.xz\n",
        encoding="utf-8",
    )
    return "/debian-security/dists/bookworm-security"


def first_stanzas(n: int) -> bytes:
    text = (APT / "Packages-bookworm-main-amd64-trimmed").read_bytes()
    return b"\n\n".join(text.split(b"\n\n")[:n]) + b"\n"


# ------------------------------------------------------------------------------ apt


def test_apt_refresh_stores_the_verified_index_via_by_hash(
    db: object, server: MirrorServer, root: Path, fetcher: HttpFetcher
) -> None:
    build_updates_tree(root)
    repo, mirror = updates_repository(server)
    res = refresh_mirror(mirror, fetcher, NOW, make_settings())
    assert (res.outcome, res.detail) == ("changed", "")
    assert res.packages == len(expected_updates_rows()) == 38
    m = reload(mirror)
    assert stored_packages(m.package_set_id) == expected_updates_rows()
    assert (m.package_count, m.consecutive_failures, m.failures_total) == (38, 0, 0)
    assert m.last_attempt_at == m.last_success_at == m.last_change_at == NOW
    assert m.metadata_checksum == f"amd64 SHA256:{UPDATES_SHA256}"
    assert server.paths() == [UPD_INRELEASE, UPD_BYHASH]
    assert Repository.get_by_id(repo.id).security is False


def test_unchanged_apt_refresh_downloads_only_inrelease(
    db: object, server: MirrorServer, root: Path, fetcher: HttpFetcher
) -> None:
    server.validators = False  # as deb.debian.org here: no ETag, so a full InRelease
    build_updates_tree(root)
    _repo, mirror = updates_repository(server)
    refresh_mirror(mirror, fetcher, NOW, make_settings())
    server.clear()
    res = refresh_mirror(reload(mirror), fetcher, LATER, make_settings())
    assert (res.outcome, res.packages) == ("unchanged", 38)
    assert server.paths() == [UPD_INRELEASE]
    m = reload(mirror)
    assert (m.last_success_at, m.last_change_at) == (LATER, NOW)


def test_unchanged_apt_refresh_uses_a_conditional_request(
    db: object, server: MirrorServer, root: Path, fetcher: HttpFetcher
) -> None:
    build_updates_tree(root)
    _repo, mirror = updates_repository(server)
    refresh_mirror(mirror, fetcher, NOW, make_settings())
    server.clear()
    res = refresh_mirror(reload(mirror), fetcher, LATER, make_settings())
    assert (res.outcome, res.detail) == ("unchanged", "InRelease not modified")
    assert server.log == [(UPD_INRELEASE, 304)]
    server.clear()
    forced = refresh_mirror(reload(mirror), fetcher, LATER, make_settings(), force=True)
    assert forced.outcome == "unchanged"  # same data, but all fetched and verified again
    assert server.log == [(UPD_INRELEASE, 200), (UPD_BYHASH, 200)]
    assert "If-None-Match" not in server.headers_seen[0]


@sqlite_only
def test_new_architecture_is_not_skipped_by_a_304(
    db: object, server: MirrorServer, root: Path, fetcher: HttpFetcher
) -> None:
    build_updates_tree(root)
    _repo, mirror = updates_repository(server)
    refresh_mirror(mirror, fetcher, NOW, make_settings(), architectures=["amd64"])
    server.clear()
    res = refresh_mirror(
        reload(mirror), fetcher, LATER, make_settings(), architectures=["amd64", "i386"]
    )
    # i386's index is not in the tree: a 304 must not hide that the request changed
    assert "If-None-Match" not in server.headers_seen[0]
    assert res.outcome == "failed" and res.detail.endswith(
        "binary-i386/Packages.xz: HTTP 404 Not Found"
    )


@sqlite_only
def test_by_hash_gone_falls_back_to_the_plain_name(
    db: object, server: MirrorServer, root: Path, fetcher: HttpFetcher
) -> None:
    build_updates_tree(root)
    (root / UPD_BYHASH.lstrip("/")).unlink()
    _repo, mirror = updates_repository(server)
    res = refresh_mirror(mirror, fetcher, NOW, make_settings())
    assert res.outcome == "changed"
    assert server.paths() == [UPD_INRELEASE, UPD_BYHASH, UPD_INDEX]


@sqlite_only
def test_release_with_detached_signature_is_verified(
    db: object, server: MirrorServer, root: Path, fetcher: HttpFetcher
) -> None:
    """No InRelease: Release + Release.gpg, real bookworm ones (contrib d-i binary-all)."""
    dist = root / "debian" / "dists" / "bookworm"
    binary = dist / "contrib" / "debian-installer" / "binary-all"
    binary.mkdir(parents=True)
    from patchwatch.domain.repodata.apt import extract_signed_text

    signed = (APT / "InRelease-bookworm").read_text(encoding="utf-8")
    (dist / "Release").write_text(extract_signed_text(signed), encoding="utf-8")
    shutil.copy(APT / "Release.gpg-bookworm", dist / "Release.gpg")
    (binary / "Packages.xz").write_bytes(lzma.compress(b""))  # 32 bytes, as listed
    _repo, (mirror,) = add_repository(
        "deb", "deb bookworm contrib/debian-installer all",
        [(server.url("debian"), "baseurl")], "bookworm", "contrib/debian-installer", "all",
    )  # fmt: skip
    xz_only = make_settings(apt_index_formats=("xz",))  # the Release lists a .gz too
    res = refresh_mirror(mirror, fetcher, NOW, xz_only)
    assert (res.outcome, res.packages) == ("changed", 0)
    assert server.paths()[:3] == [
        "/debian/dists/bookworm/InRelease",
        "/debian/dists/bookworm/Release",
        "/debian/dists/bookworm/Release.gpg",
    ]
    (dist / "Release.gpg").unlink()
    res = refresh_mirror(reload(mirror), fetcher, LATER, xz_only, force=True)
    assert res.outcome == "failed" and "the repository is not signed" in res.detail
    assert reload(mirror).package_set_id is not None  # the verified data stays


@sqlite_only
def test_unsigned_repository_only_when_verification_is_off(
    db: object, server: MirrorServer, root: Path, fetcher: HttpFetcher
) -> None:
    build_unsigned_tree(root, first_stanzas(3))
    repo, (mirror,) = add_repository(
        "deb", "deb security", [(server.url("debian-security"), "baseurl")],
        "bookworm-security", "main", "amd64",
    )  # fmt: skip
    res = refresh_mirror(mirror, fetcher, NOW, make_settings())
    assert res.outcome == "failed"
    assert "not signed" in res.detail and "apt_verify_signatures" in res.detail
    assert reload(mirror).package_set_id is None
    res = refresh_mirror(reload(mirror), fetcher, LATER, make_settings(apt_verify_signatures=False))
    assert (res.outcome, res.packages) == ("changed", 3)
    # the security suite is known from the Release's Label, not from its URL
    assert Repository.get_by_id(repo.id).security is True


@sqlite_only
def test_security_flag_follows_the_release_label(
    db: object, server: MirrorServer, root: Path, fetcher: HttpFetcher
) -> None:
    build_unsigned_tree(root, first_stanzas(2), label="Debian")
    (root / "debian-security/dists/bookworm-security/Release").write_text(
        (root / "debian-security/dists/bookworm-security/Release")
        .read_text()
        .replace("Suite: oldstable-security\n", "Suite: oldstable\n")
        .replace("Codename: bookworm-security\n", "Codename: bookworm\n")
    )
    repo, (mirror,) = add_repository(
        "deb", "deb not-security", [(server.url("debian-security"), "baseurl")],
        "bookworm-security", "main", "amd64",
    )  # fmt: skip
    res = refresh_mirror(mirror, fetcher, NOW, make_settings(apt_verify_signatures=False))
    assert res.outcome == "changed"
    assert Repository.get_by_id(repo.id).security is False


@sqlite_only
def test_flat_repository_is_read_beside_its_release(
    db: object, server: MirrorServer, root: Path, fetcher: HttpFetcher
) -> None:
    shutil.copytree(APT / "flat", root / "agents")
    _repo, (mirror,) = add_repository(
        "deb", "deb flat", [(server.url("agents"), "baseurl")], "./", "", "amd64"
    )
    res = refresh_mirror(mirror, fetcher, NOW, make_settings(apt_verify_signatures=False))
    assert (res.outcome, res.packages) == ("changed", 3)
    assert server.paths() == ["/agents/InRelease", "/agents/Release", "/agents/Packages.gz"]
    xz_first = make_settings(apt_verify_signatures=False, apt_index_formats=("xz", "gz"))
    res = refresh_mirror(reload(mirror), fetcher, LATER, xz_first, force=True)
    assert (res.outcome, res.packages) == ("unchanged", 3)  # the same packages, from the .xz
    assert server.paths()[-1] == "/agents/Packages.xz"


@sqlite_only
def test_expired_release_is_refused(
    db: object, server: MirrorServer, root: Path, fetcher: HttpFetcher
) -> None:
    dist = root / "debian-security" / "dists" / "bookworm-security"
    dist.mkdir(parents=True)
    shutil.copy(APT / "InRelease-bookworm-security", dist / "InRelease")
    _repo, (mirror,) = add_repository(
        "deb", "deb sec", [(server.url("debian-security"), "baseurl")],
        "bookworm-security", "main", "amd64",
    )  # fmt: skip
    after = dt.datetime(2026, 11, 29, tzinfo=dt.UTC).timestamp()  # Valid-Until: 28 Nov
    res = refresh_mirror(mirror, fetcher, after, make_settings())
    assert res.outcome == "failed"
    assert "Release expired at 2026-11-28 00:53:02+00:00 (Valid-Until)" in res.detail
    assert server.paths() == ["/debian-security/dists/bookworm-security/InRelease"]


@sqlite_only
def test_a_release_that_expires_is_never_asked_for_conditionally(
    db: object, server: MirrorServer, root: Path, fetcher: HttpFetcher
) -> None:
    build_unsigned_tree(
        root, first_stanzas(2), extra="Valid-Until: Sat, 28 Nov 2026 00:53:02 UTC\n"
    )
    _repo, (mirror,) = add_repository(
        "deb", "deb sec", [(server.url("debian-security"), "baseurl")],
        "bookworm-security", "main", "amd64",
    )  # fmt: skip
    settings = make_settings(apt_verify_signatures=False)
    assert refresh_mirror(mirror, fetcher, NOW, settings).outcome == "changed"
    assert (reload(mirror).etag, reload(mirror).last_modified) == ("", "")
    server.clear()
    assert refresh_mirror(reload(mirror), fetcher, LATER, settings).outcome == "unchanged"
    assert "If-None-Match" not in server.headers_seen[-1]  # re-read, so re-checked
    late = dt.datetime(2026, 11, 28, 1, tzinfo=dt.UTC).timestamp()
    res = refresh_mirror(reload(mirror), fetcher, late, settings)
    assert res.outcome == "failed" and "Valid-Until" in res.detail


def corrupt_signed_text(root: Path) -> None:
    path = root / UPD_INRELEASE.lstrip("/")
    path.write_text(path.read_text().replace("Label: Debian", "Label: Debiam", 1))


def flip_index_byte(server: MirrorServer, root: Path) -> None:
    data = bytearray(UPDATES_XZ.read_bytes())
    data[len(data) // 2] ^= 0xFF
    for path in (UPD_BYHASH, UPD_INDEX):
        server.faults[path] = Fault(body=bytes(data))


def empty_keyring(monkeypatch: pytest.MonkeyPatch, tmp: Path) -> dict[str, object]:
    monkeypatch.setattr(
        "patchwatch.pipeline.refresh.apt.SYSTEM_KEYRING_GLOB", str(tmp / "none-*.gpg")
    )
    other = tmp / "other.gpg"
    other.write_bytes(b"")
    return {"apt_keyrings": (str(other),)}


# fault name -> (set it up, words the failure must say)
APT_FAULTS: dict[str, tuple[Callable[..., object], str]] = {
    "hang": (
        lambda srv, root, mp, tmp: srv.faults.__setitem__(UPD_INRELEASE, Fault(hang=3.0)),
        "timed out after 0.3 s",
    ),
    "http-500": (
        lambda srv, root, mp, tmp: srv.faults.__setitem__(UPD_INRELEASE, Fault(status=500)),
        "InRelease: HTTP 500 Internal Server Error (gave up after 2 attempts)",
    ),
    "bad-signature": (
        lambda srv, root, mp, tmp: corrupt_signed_text(root),
        "signature check failed: BAD signature by key",
    ),
    "unknown-key": (
        lambda srv, root, mp, tmp: empty_keyring(mp, tmp),
        "which is in none of the trusted keyrings",
    ),
    "hash-mismatch": (
        lambda srv, root, mp, tmp: flip_index_byte(srv, root),
        f"does not match {UPDATES_SHA256} from the Release",
    ),
    "truncated-xz": (
        lambda srv, root, mp, tmp: srv.faults.__setitem__(
            UPD_BYHASH, Fault(body=UPDATES_XZ.read_bytes()[:4000])
        ),
        "is 4000 bytes, but the Release says 6924 (truncated or replaced file)",
    ),
    "oversized": (
        lambda srv, root, mp, tmp: srv.faults.__setitem__(
            UPD_BYHASH, Fault(body=UPDATES_XZ.read_bytes() + b"\0" * 100_000)
        ),
        "is 106924 bytes, more than the limit of 6924 bytes",
    ),
}


@sqlite_only
@pytest.mark.parametrize("fault", sorted(APT_FAULTS))
def test_apt_fault_fails_cleanly_keeps_the_data_and_recovers(
    db: object,
    server: MirrorServer,
    root: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fault: str,
) -> None:
    check_apt_fault(db, server, root, tmp_path, monkeypatch, fault)


def test_apt_fault_is_recorded_on_both_backends(
    db: object, server: MirrorServer, root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    check_apt_fault(db, server, root, tmp_path, monkeypatch, "hash-mismatch")


def check_apt_fault(
    db: object,
    server: MirrorServer,
    root: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fault: str,
) -> None:
    build_updates_tree(root)
    repo, mirror = updates_repository(server)
    with make_fetcher(timeout=0.3) as fetcher:
        assert refresh_mirror(mirror, fetcher, NOW, make_settings()).outcome == "changed"
        good = reload(mirror)
        setup, words = APT_FAULTS[fault]
        overrides = setup(server, root, monkeypatch, tmp_path) or {}
        res = refresh_mirror(good, fetcher, LATER, make_settings(**overrides), force=True)
    assert res.outcome == "failed" and not res.ok
    assert words in res.detail
    assert res.detail.startswith("http://127.0.0.1:")  # names the URL that failed
    m = reload(mirror)
    assert m.last_error == res.detail
    assert (m.failures_total, m.consecutive_failures) == (1, 1)
    assert (m.last_attempt_at, m.last_success_at) == (LATER, NOW)
    assert (m.package_set_id, m.package_count) == (good.package_set_id, 38)
    assert m.metadata_checksum == good.metadata_checksum
    registry = CollectorRegistry()
    registry.register(StoreCollector(db))  # type: ignore[arg-type]
    labels = {"repository": repo.key, "mirror": mirror.url}
    assert registry.get_sample_value("patchwatch_mirror_consecutive_failures", labels) == 1
    assert registry.get_sample_value("patchwatch_mirror_refresh_failures_total", labels) == 1

    server.faults.clear()
    build_updates_tree_again(root)
    monkeypatch.undo()
    with make_fetcher() as fetcher:
        again = refresh_mirror(m, fetcher, MUCH_LATER, make_settings(), force=True)
    assert again.outcome == "unchanged" and again.ok
    m = reload(mirror)
    assert (m.failures_total, m.consecutive_failures, m.last_error) == (1, 0, "")
    assert (m.last_success_at, m.package_set_id) == (MUCH_LATER, good.package_set_id)


@sqlite_only
def test_keyrings_relative_missing_or_none(
    db: object, server: MirrorServer, root: Path, fetcher: HttpFetcher,
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:  # fmt: skip
    build_updates_tree(root)
    _repo, mirror = updates_repository(server)
    monkeypatch.setattr(
        "patchwatch.pipeline.refresh.apt.SYSTEM_KEYRING_GLOB", str(tmp_path / "none-*.gpg")
    )
    monkeypatch.chdir(APT)  # a relative apt_keyrings path is relative to here, not to gpgv's
    relative = make_settings(apt_keyrings=("debian-archive-keyring.gpg", "missing.gpg"))
    assert refresh_mirror(mirror, fetcher, NOW, relative).outcome == "changed"
    res = refresh_mirror(reload(mirror), fetcher, LATER, make_settings(apt_keyrings=()), force=True)
    assert res.outcome == "failed"
    assert "no keyring to verify apt signatures with" in res.detail


def build_updates_tree_again(root: Path) -> None:
    shutil.rmtree(root / "debian", ignore_errors=True)
    build_updates_tree(root)


@sqlite_only
def test_apt_decompression_bomb_is_refused(
    db: object, server: MirrorServer, root: Path, fetcher: HttpFetcher
) -> None:
    build_unsigned_tree(root, first_stanzas(3))
    _repo, (mirror,) = add_repository(
        "deb", "deb bomb", [(server.url("debian-security"), "baseurl")],
        "bookworm-security", "main", "amd64",
    )  # fmt: skip
    settings = make_settings(apt_verify_signatures=False)
    assert refresh_mirror(mirror, fetcher, NOW, settings).outcome == "changed"
    good = reload(mirror)
    build_unsigned_tree_bomb(root)
    res = refresh_mirror(good, fetcher, LATER, settings)
    assert res.outcome == "failed"
    assert "decompresses to more than the limit of 1048576 bytes" in res.detail
    m = reload(mirror)
    assert (m.package_set_id, m.consecutive_failures) == (good.package_set_id, 1)


def build_unsigned_tree_bomb(root: Path) -> None:
    shutil.rmtree(root / "debian-security")
    build_unsigned_tree(root, first_stanzas(3) + b"\n" * (8 << 20))  # 8 MiB -> 1.2 KB


@sqlite_only
def test_release_that_does_not_list_the_architecture_fails_clearly(
    db: object, server: MirrorServer, root: Path, fetcher: HttpFetcher
) -> None:
    build_updates_tree(root)
    _repo, mirror = updates_repository(server)
    res = refresh_mirror(mirror, fetcher, NOW, make_settings(), architectures=["sparc64"])
    assert res.outcome == "failed"
    assert res.detail.endswith("InRelease: lists no Packages index for main/binary-sparc64")


# ---------------------------------------------------------------- architectures


def native_report(host: str, packages: list[tuple[str, str, str]], repo_url: str) -> dict:
    return {
        "version": 1, "host": host, "kernel": "6.1.0-28-amd64", "arch": "x86_64",
        "os": {"id": "debian", "version_id": "12", "pretty_name": "Debian GNU/Linux 12"},
        "packages": [
            {"name": n, "version": v, "release": "", "epoch": "", "arch": a, "type": "deb"}
            for n, v, a in packages
        ],
        "repositories": [
            {"type": "deb", "id": f"{repo_url} bookworm-updates main", "urls": [repo_url],
             "suite": "bookworm-updates", "component": "main", "priority": 500},
        ],
    }  # fmt: skip


def test_architectures_come_from_the_hosts_packages(db: object) -> None:
    url = "http://deb.example.invalid/debian"
    store_report("h1", "patchwatch/1", native_report("h1", [("dpkg", "1.21", "amd64"),
                 ("libc6", "2.36", "i386"), ("tzdata", "2024a", "all")], url), NOW)  # fmt: skip
    store_report("h2", "patchwatch/1", native_report("h2", [("bash", "5.2", "arm64")], url), NOW)
    assert sum(process_pending(NOW).values()) == 2
    (repo,) = Repository.select()
    assert repo.arch == ""
    assert deb_architectures(repo) == ["amd64", "arm64", "i386"]
    repo.arch = "amd64,armhf"
    assert deb_architectures(repo) == ["amd64", "armhf"]
    lonely = Repository.create(kind="deb", key="deb lonely", suite="x", created_at=NOW)
    assert deb_architectures(lonely) == []


@sqlite_only
def test_apt_mirror_without_known_architecture_is_skipped_not_failed(
    db: object, server: MirrorServer, fetcher: HttpFetcher
) -> None:
    _repo, (mirror,) = add_repository(
        "deb", "deb nobody", [(server.url("debian"), "baseurl")], "bookworm", "main"
    )
    (res,) = refresh_all(fetcher, NOW, make_settings())
    assert res.outcome == "skipped" and "no architecture known" in res.detail
    m = reload(mirror)
    assert (m.failures_total, m.last_attempt_at) == (0, None)
    assert server.paths() == []


# ---------------------------------------------------------------------------- rpm-md


def build_rpm_tree(root: Path) -> Path:
    repo = root / "rpm"
    shutil.copytree(RPMMD, repo)
    return repo


def rpm_repository(url: str, kind: str = "baseurl") -> tuple[Repository, Mirror]:
    repo, (mirror,) = add_repository("rpm", f"rpm t x86_64 {url}", [(url, kind)], arch="x86_64")
    return repo, mirror


def repomd_entry(repo: Path, type_: str) -> ET.Element:
    root = ET.parse(repo / "repodata" / "repomd.xml").getroot()
    for data in root.findall(f"{{{REPO_NS}}}data"):
        if data.get("type") == type_:
            return data
    raise LookupError(type_)


def primary_path(repo: Path) -> Path:
    href = repomd_entry(repo, "primary").find(f"{{{REPO_NS}}}location").get("href")  # type: ignore[union-attr]
    return repo / str(href)


def replace_entry(repo: Path, type_: str, data: bytes, suffix: str) -> str:
    """Store ``data`` as the ``type_`` metadata and make repomd.xml list it (checksum, size)."""
    digest = hashlib.sha256(data).hexdigest()
    href = f"repodata/{digest}-{type_}.xml{suffix}"
    (repo / href).write_bytes(data)
    ET.register_namespace("", REPO_NS)
    ET.register_namespace("rpm", "http://linux.duke.edu/metadata/rpm")
    path = repo / "repodata" / "repomd.xml"
    tree = ET.parse(path)
    for entry in tree.getroot().findall(f"{{{REPO_NS}}}data"):
        if entry.get("type") == type_:
            entry.find(f"{{{REPO_NS}}}checksum").text = digest  # type: ignore[union-attr]
            entry.find(f"{{{REPO_NS}}}location").set("href", href)  # type: ignore[union-attr]
            entry.find(f"{{{REPO_NS}}}size").text = str(len(data))  # type: ignore[union-attr]
    tree.write(path, xml_declaration=True, encoding="UTF-8")
    return "/rpm/" + href


def primary_xml(repo: Path) -> bytes:
    return gzip.decompress(primary_path(repo).read_bytes())


def expected_rpm_rows(repo: Path) -> set[tuple[str, str, str, str, str, str]]:
    with primary_path(repo).open("rb") as raw, open_decompressed(raw, "gz", 1 << 24) as r:
        return as_rows(parse_primary(r))


def test_rpm_refresh_stores_packages_and_advisories(
    db: object, server: MirrorServer, root: Path, fetcher: HttpFetcher
) -> None:
    tree = build_rpm_tree(root)
    repo, mirror = rpm_repository(server.url("rpm"))
    res = refresh_mirror(mirror, fetcher, NOW, make_settings())
    assert (res.outcome, res.packages, res.advisories) == ("changed", 10, 3)
    m = reload(mirror)
    assert stored_packages(m.package_set_id) == expected_rpm_rows(tree)
    assert len(expected_rpm_rows(tree)) == 10
    advisories = {a.advisory_id: a for a in Advisory.select().where(Advisory.repository == repo)}
    assert sorted(advisories) == ["PWTEST-2026:0001", "PWTEST-2026:0002", "PWTEST-2026:0003"]
    sec = advisories["PWTEST-2026:0001"]
    assert (sec.type, sec.severity, sec.cves) == (
        "security", "Important", "CVE-2026-0001 CVE-2026-0002",
    )  # fmt: skip
    fixed = [
        (p.name, p.epoch, p.version, p.release, p.arch, p.kind)
        for p in Package.select().join(AdvisoryPackage).where(AdvisoryPackage.advisory == sec)
    ]
    assert fixed == [("hello", "0", "1.1", "1", "noarch", str(PackageKind.RPM))]
    assert set(server.paths()) == {
        "/rpm/repodata/repomd.xml",
        "/rpm/" + str(repomd_entry(tree, "primary").find(f"{{{REPO_NS}}}location").get("href")),  # type: ignore[union-attr]
        "/rpm/" + str(repomd_entry(tree, "updateinfo").find(f"{{{REPO_NS}}}location").get("href")),  # type: ignore[union-attr]
    }


def test_unchanged_rpm_refresh_reads_only_repomd(
    db: object, server: MirrorServer, root: Path, fetcher: HttpFetcher
) -> None:
    build_rpm_tree(root)
    _repo, mirror = rpm_repository(server.url("rpm"))
    refresh_mirror(mirror, fetcher, NOW, make_settings())
    server.clear()
    res = refresh_mirror(reload(mirror), fetcher, LATER, make_settings())
    assert (res.outcome, res.detail) == ("unchanged", "repomd.xml not modified")
    assert server.log == [("/rpm/repodata/repomd.xml", 304)]
    server.validators = False
    server.clear()
    res = refresh_mirror(reload(mirror), fetcher, LATER, make_settings())
    assert (res.outcome, res.packages) == ("unchanged", 10)
    assert server.paths() == ["/rpm/repodata/repomd.xml"]


def test_new_updateinfo_alone_replaces_the_advisories(
    db: object, server: MirrorServer, root: Path, fetcher: HttpFetcher
) -> None:
    tree = build_rpm_tree(root)
    repo, mirror = rpm_repository(server.url("rpm"))
    refresh_mirror(mirror, fetcher, NOW, make_settings())
    old_pset = reload(mirror).package_set_id
    updateinfo = (
        b'<?xml version="1.0"?><updates><update type="security"><id>PWTEST-2026:0009</id>'
        b'<pkglist><collection><package name="legacy" version="0.9" release="1" epoch="0" '
        b'arch="noarch"/></collection></pkglist></update></updates>'
    )
    href = replace_entry(tree, "updateinfo", gzip.compress(updateinfo), ".gz")
    server.clear()
    res = refresh_mirror(reload(mirror), fetcher, LATER, make_settings())
    assert (res.outcome, res.advisories) == ("changed", 1)
    assert server.paths() == ["/rpm/repodata/repomd.xml", href]  # primary not fetched
    assert reload(mirror).package_set_id == old_pset
    assert [a.advisory_id for a in Advisory.select().where(Advisory.repository == repo)] == [
        "PWTEST-2026:0009"
    ]
    assert AdvisoryPackage.select().count() == 1


@sqlite_only
def test_zstd_and_xz_primary_are_read(
    db: object, server: MirrorServer, root: Path, fetcher: HttpFetcher
) -> None:
    tree = build_rpm_tree(root)
    xml = primary_xml(tree)
    buf = io.BytesIO()
    with ZstdFile(buf, "wb") as out:
        out.write(xml)
    replace_entry(tree, "primary", buf.getvalue(), ".zst")
    _repo, mirror = rpm_repository(server.url("rpm"))
    res = refresh_mirror(mirror, fetcher, NOW, make_settings())
    assert (res.outcome, res.packages) == ("changed", 10)
    replace_entry(tree, "primary", lzma.compress(xml), ".xz")
    res = refresh_mirror(reload(mirror), fetcher, LATER, make_settings(), force=True)
    assert (res.outcome, res.packages) == ("unchanged", 10)


@sqlite_only
def test_mirrorlist_is_followed_past_a_dead_mirror(
    db: object, server: MirrorServer, root: Path, fetcher: HttpFetcher
) -> None:
    build_rpm_tree(root)
    (root / "mirrorlist.txt").write_text(
        f"# mirrors\n{server.url('gone')}/\n{server.url('rpm')}/repodata/repomd.xml\n"
    )
    _repo, mirror = rpm_repository(server.url("mirrorlist.txt"), "mirrorlist")
    res = refresh_mirror(mirror, fetcher, NOW, make_settings())
    assert (res.outcome, res.packages) == ("changed", 10)
    assert res.detail == f"served by {server.url('rpm')}"
    assert server.paths()[:3] == [
        "/mirrorlist.txt", "/gone/repodata/repomd.xml", "/rpm/repodata/repomd.xml",
    ]  # fmt: skip


@sqlite_only
def test_metalink_is_followed_and_a_list_of_dead_mirrors_fails_clearly(
    db: object, server: MirrorServer, root: Path, fetcher: HttpFetcher
) -> None:
    build_rpm_tree(root)
    metalink = f"""<?xml version="1.0" encoding="utf-8"?>
<metalink version="3.0" xmlns="http://www.metalinker.org/">
 <files><file name="repomd.xml"><resources>
  <url protocol="http" type="http" preference="100">{server.url("rpm")}/repodata/repomd.xml</url>
  <url protocol="http" type="http" preference="90">{server.url("gone")}/repodata/repomd.xml</url>
 </resources></file></files></metalink>"""
    (root / "metalink").write_text(metalink)
    _repo, mirror = rpm_repository(server.url("metalink"), "metalink")
    res = refresh_mirror(mirror, fetcher, NOW, make_settings())
    assert (res.outcome, res.packages) == ("changed", 10)
    (root / "metalink").write_text(metalink.replace('"rpm"', '"x"').replace("/rpm/", "/gone2/"))
    res = refresh_mirror(reload(mirror), fetcher, LATER, make_settings())
    assert res.outcome == "failed"
    assert res.detail.startswith(f"{server.url('metalink')}: none of the 2 mirrors it lists")
    assert "gone2/repodata/repomd.xml: HTTP 404" in res.detail
    assert reload(mirror).package_count == 10


def truncated_xz_primary(srv: MirrorServer, tree: Path) -> None:
    data = lzma.compress(primary_xml(tree))
    replace_entry(tree, "primary", data[: len(data) // 2], ".xz")


def bomb_primary(srv: MirrorServer, tree: Path) -> None:
    xml = primary_xml(tree).replace(b"<package ", b" " * (8 << 20) + b"<package ", 1)
    replace_entry(tree, "primary", gzip.compress(xml), ".gz")


def swap_primary_bytes(srv: MirrorServer, tree: Path) -> None:
    data = bytearray(primary_path(tree).read_bytes())
    data[-10] ^= 0x01
    srv.faults["/rpm/" + str(primary_path(tree).relative_to(tree))] = Fault(body=bytes(data))


def malformed_primary(srv: MirrorServer, tree: Path) -> None:
    xml = primary_xml(tree).replace(b"</metadata>", b"<oops></metadata>")
    replace_entry(tree, "primary", gzip.compress(xml), ".gz")


# fault name -> (set it up, words the failure must say); checksum-mismatch changes no
# checksum in repomd.xml, so only a forced refresh downloads primary again
RPM_FAULTS: dict[str, tuple[Callable[[MirrorServer, Path], None], str]] = {
    "hang": (
        lambda srv, tree: srv.faults.__setitem__("/rpm/repodata/repomd.xml", Fault(hang=3.0)),
        "repomd.xml: timed out after 0.3 s",
    ),
    "http-500": (
        lambda srv, tree: srv.faults.__setitem__("/rpm/repodata/repomd.xml", Fault(status=500)),
        "repomd.xml: HTTP 500",
    ),
    "truncated-xz": (truncated_xz_primary, "truncated xz data"),
    "decompression-bomb": (bomb_primary, "decompresses to more than the limit of 1048576"),
    "checksum-mismatch": (swap_primary_bytes, "does not match"),
    "malformed-xml": (malformed_primary, "malformed XML"),
}


@sqlite_only
@pytest.mark.parametrize("fault", sorted(RPM_FAULTS))
def test_rpm_fault_fails_cleanly_keeps_the_data_and_recovers(
    db: object, server: MirrorServer, root: Path, fault: str
) -> None:
    check_rpm_fault(server, root, fault)


def test_rpm_fault_is_recorded_on_both_backends(
    db: object, server: MirrorServer, root: Path
) -> None:
    check_rpm_fault(server, root, "truncated-xz")


def check_rpm_fault(server: MirrorServer, root: Path, fault: str) -> None:
    tree = build_rpm_tree(root)
    repo, mirror = rpm_repository(server.url("rpm"))
    with make_fetcher(timeout=0.3) as fetcher:
        assert refresh_mirror(mirror, fetcher, NOW, make_settings()).outcome == "changed"
        good = reload(mirror)
        setup, words = RPM_FAULTS[fault]
        setup(server, tree)
        force = fault == "checksum-mismatch"
        res = refresh_mirror(good, fetcher, LATER, make_settings(), force=force)
    assert res.outcome == "failed"
    assert words in res.detail and res.detail.startswith(server.url("rpm"))
    m = reload(mirror)
    assert (m.failures_total, m.consecutive_failures, m.last_error) == (1, 1, res.detail)
    assert (m.package_set_id, m.metadata_checksum) == (good.package_set_id, good.metadata_checksum)
    assert (m.last_attempt_at, m.last_success_at) == (LATER, NOW)
    assert Advisory.select().where(Advisory.repository == repo).count() == 3

    server.faults.clear()
    shutil.rmtree(tree)
    build_rpm_tree(root)
    with make_fetcher() as fetcher:
        again = refresh_mirror(m, fetcher, MUCH_LATER, make_settings())
    assert again.outcome == "unchanged"
    m = reload(mirror)
    assert (m.failures_total, m.consecutive_failures, m.last_success_at) == (1, 0, MUCH_LATER)


# --------------------------------------------------------------- all, CLI, scheduler


def test_refresh_all_isolates_a_failing_mirror(
    db: object, server: MirrorServer, root: Path, fetcher: HttpFetcher
) -> None:
    build_updates_tree(root)
    build_rpm_tree(root)
    updates_repository(server)
    rpm_repository(server.url("rpm"))
    add_repository("rpm", "rpm broken", [(server.url("nowhere"), "baseurl")])
    seen: list[tuple[int, int, str | None]] = []
    results = refresh_all(
        fetcher, NOW, make_settings(),
        progress=lambda i, n, m, r: seen.append((i, n, r.outcome if r else None)),
    )  # fmt: skip
    assert [r.outcome for r in results] == ["changed", "failed", "changed"]  # by key
    assert "nowhere/repodata/repomd.xml: HTTP 404" in results[1].detail
    assert summarize_results(results) == "3 mirrors: 2 changed, 1 failed"
    # read side by side (refresh_concurrency): each mirror is announced, then finished
    assert sorted(r for _i, _n, r in seen if r) == ["changed", "changed", "failed"]
    assert [i for i, _n, r in seen if r] == [1, 2, 3] and {n for _i, n, _r in seen} == {3}
    assert len([r for _i, _n, r in seen if r is None]) == 3


def test_select_mirrors_by_id_or_key_and_skips_disabled(db: object) -> None:
    repo, (m1, m2) = add_repository(
        "rpm", "rpm a", [("http://a.invalid/1", "baseurl"), ("http://a.invalid/2", "baseurl")]
    )
    other, _ = add_repository("rpm", "rpm b", [("http://b.invalid", "baseurl")])
    Mirror.update(enabled=False).where(Mirror.id == m2.id).execute()
    assert [m.id for m in select_mirrors([str(repo.id)])] == [m1.id]
    assert [m.url for m in select_mirrors(["rpm b"])] == ["http://b.invalid"]
    assert len(select_mirrors()) == 2
    Repository.update(enabled=False).where(Repository.id == other.id).execute()
    assert [m.id for m in select_mirrors()] == [m1.id]
    with pytest.raises(NotFoundError, match="no repository 'rpm c'"):
        select_mirrors(["rpm c"])


def test_scheduler_runs_refresh_and_update_jobs(
    db: object, server: MirrorServer, root: Path
) -> None:
    build_rpm_tree(root)
    _repo, mirror = rpm_repository(server.url("rpm"))
    jobs = {job.name: job for job in default_jobs(make_settings())}
    assert jobs["refresh_mirrors"].every_seconds == 60 * 60
    assert jobs["compute_updates"].every_seconds == 10 * 60
    assert jobs["refresh_mirrors"].run(NOW) == "1 mirrors: 1 changed"
    assert reload(mirror).package_count == 10
    assert jobs["compute_updates"].run(NOW) == "0 update sets computed, 0 reused"


def run_cli(handler: Callable[..., int], settings: Settings, **args: object) -> int:
    namespace = argparse.Namespace(quiet=False, force=False, repo=None, host=None)
    for key, value in args.items():
        setattr(namespace, key, value)
    return handler(settings, namespace)


@sqlite_only
def test_cli_refresh_reports_each_mirror_and_fails_on_a_failure(
    db: object, server: MirrorServer, root: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    build_rpm_tree(root)
    repo, mirror = rpm_repository(server.url("rpm"))
    settings = make_settings(http_retries=0)
    assert run_cli(refresh_cmd.cmd_refresh, settings) == 0
    out = capsys.readouterr()
    assert f"changed    {repo.key} {mirror.url}: 10 packages, 3 advisories in " in out.out
    assert "1 mirrors: 1 changed" in out.out
    server.faults["/rpm/repodata/repomd.xml"] = Fault(status=503)
    assert run_cli(refresh_cmd.cmd_refresh, settings, repo=[str(repo.id)], quiet=True) == 1
    out = capsys.readouterr()
    assert out.out == ""  # quiet for cron: only the failure, on stderr
    assert "failed" in out.err and "HTTP 503" in out.err
    assert run_cli(refresh_cmd.cmd_updates, settings) == 0
    assert "0 update sets computed, 0 reused" in capsys.readouterr().out


@sqlite_only
def test_cli_updates_lists_the_pending_updates_of_a_host(
    db: object, server: MirrorServer, root: Path, fetcher: HttpFetcher,
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    build_rpm_tree(root)
    report = {
        "version": 1, "host": "rpmhost.test", "kernel": "5.14.0-427.el9.x86_64",
        "arch": "x86_64", "os": {"id": "rocky", "version_id": "9.4"},
        "packages": [
            {"name": "hello", "epoch": "", "version": "1.0", "release": "1", "arch": "noarch",
             "type": "rpm"},
            {"name": "widget", "epoch": "2", "version": "3.0", "release": "1.el9",
             "arch": "noarch", "type": "rpm"},
        ],
        "repositories": [{"type": "rpm", "id": "t", "urls": [server.url("rpm")],
                          "priority": -99}],
    }  # fmt: skip
    store_report("rpmhost.test", "patchwatch/1", report, NOW)
    assert process_pending(NOW) == {"processed": 1}
    (res,) = refresh_all(fetcher, NOW, make_settings())
    assert res.outcome == "changed"
    assert run_cli(refresh_cmd.cmd_updates, make_settings(), host="RPMHost.test") == 0
    lines = [" ".join(line.split()) for line in capsys.readouterr().out.splitlines()]
    key = " ".join(Repository.get().key.split())
    assert lines == [
        f"hello noarch 1.0-1 -> 1.1-1 security {key}",
        f"widget noarch 2:3.0-1.el9 -> 2:3.0-2.el9 other {key}",
        # no signal from the host and no kernel package to compare: not "no"
        "rpmhost.test: 2 pending updates; reboot required: unknown",
        "1 update sets computed, 0 reused",
    ]
    store_report("rpmhost.test", "patchwatch/1", {**report, "held": [{"name": "hello"}]}, NOW + 1)
    assert process_pending(NOW + 1) == {"processed": 1}
    assert run_cli(refresh_cmd.cmd_updates, make_settings(), host="rpmhost.test") == 0
    lines = [" ".join(line.split()) for line in capsys.readouterr().out.splitlines()]
    assert lines[0] == f"hello noarch 1.0-1 -> 1.1-1 held security {key}"
    assert lines[2] == "rpmhost.test: 1 pending updates, 1 held; reboot required: unknown"
    with pytest.raises(NotFoundError, match="no host 'ghost'"):
        run_cli(refresh_cmd.cmd_updates, make_settings(), host="ghost")


def test_progress_bar_is_drawn_only_on_a_terminal() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    mirror = Mirror(url="http://deb.example.invalid/debian")
    tty, pipe = Terminal(), io.StringIO()
    for stream in (tty, pipe):
        bar = refresh_cmd._Progress(stream, enabled=True)
        bar(1, 4, mirror, None)
        bar.done()
    assert tty.getvalue() == (
        "\r\x1b[K[######------------------] 2/4 http://deb.example.invalid/debian\r\x1b[K"
    )
    assert pipe.getvalue() == ""
    quiet = Terminal()
    refresh_cmd._Progress(quiet, enabled=False)(0, 1, mirror, None)
    assert quiet.getvalue() == ""
