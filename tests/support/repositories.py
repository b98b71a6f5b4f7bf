"""Repositories on a loopback mirror for the refresh tests: rpm-md and apt trees, stored rows.

The trees are built from tests/fixtures (real Debian indexes and signatures, an rpm-md
repository made by createrepo_c); the settings and fetcher reach only 127.0.0.1.
"""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import lzma
import shutil
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from patchwatch.domain.settings import Settings
from patchwatch.pipeline.fetch import HttpFetcher
from patchwatch.pipeline.refresh import refresh_mirror
from patchwatch.store.models import Mirror
from patchwatch.store.models import Package
from patchwatch.store.models import PackageSetMember
from patchwatch.store.models import Repository
from tests.support.mirrors import LOOPBACK_POLICY
from tests.support.mirrors import MirrorServer
from tests.support.paths import FIXTURES

APT = FIXTURES / "apt"


RPMMD = FIXTURES / "rpmmd" / "repo"


KEYRING = APT / "debian-archive-keyring.gpg"


NOW = dt.datetime(2026, 11, 23, 12, tzinfo=dt.UTC).timestamp()


LATER = NOW + 3600


REPO_NS = "http://linux.duke.edu/metadata/repo"


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


def loopback_settings(**overrides: object) -> Settings:
    """Settings for a mirror on 127.0.0.1 read once per request (pacman, apk): no keyrings."""
    values: dict[str, object] = {
        "http_timeout_seconds": 2.0,
        "http_retries": 0,
        "max_index_bytes": 1 << 20,
        "mirror_url_patterns": ("http://127.0.0.1:*",),
        "mirror_allowed_networks": ("127.0.0.1/32",),
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


def make_fetcher(timeout: float = 1.0, retries: int = 1) -> HttpFetcher:
    return HttpFetcher(
        timeout=timeout, retries=retries, backoff=0.0, sleep=lambda _s: None,
        policy=LOOPBACK_POLICY,
    )  # fmt: skip


def add_repository(
    kind: str, key: str, urls: list[tuple[str, str]], suite: str = "", component: str = "",
    arch: str = "",
) -> tuple[Repository, list[Mirror]]:  # fmt: skip
    repo = Repository.create(
        kind=kind, key=key, suite=suite, component=component, arch=arch, created_at=NOW
    )
    mirrors = [Mirror.create(repository=repo, url=u, kind=k) for u, k in urls]
    return repo, mirrors


def security_repository(
    server: MirrorServer, key: str = "deb security"
) -> tuple[Repository, list[Mirror]]:
    """bookworm-security main amd64 at ``debian-security``: where build_unsigned_tree builds."""
    return add_repository(
        "deb", key, [(server.url("debian-security"), "baseurl")], "bookworm-security", "main",
        "amd64",
    )  # fmt: skip


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


def stored(mirror: Mirror) -> set[tuple[str, str, str, str, str, str]]:
    """The packages of the set a mirror holds now (re-read from the database)."""
    return stored_packages(reload(mirror).package_set_id)


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


def build_rpm_tree(root: Path) -> Path:
    repo = root / "rpm"
    shutil.copytree(RPMMD, repo)
    return repo


def rpm_repository(url: str, kind: str = "baseurl") -> tuple[Repository, Mirror]:
    repo, (mirror,) = add_repository("rpm", f"rpm t x86_64 {url}", [(url, kind)], arch="x86_64")
    return repo, mirror


def refreshed_rpm_mirror(
    server: MirrorServer, root: Path, fetcher: HttpFetcher
) -> tuple[Path, Repository, Mirror]:
    """The rpm-md tree built under ``root``, stored as a repository and refreshed at NOW."""
    tree = build_rpm_tree(root)
    repo, mirror = rpm_repository(server.url("rpm"))
    refresh_mirror(mirror, fetcher, NOW, make_settings())
    return tree, repo, mirror


def repomd_entry(repo: Path, type_: str) -> ET.Element:
    root = ET.parse(repo / "repodata" / "repomd.xml").getroot()
    for data in root.findall(f"{{{REPO_NS}}}data"):
        if data.get("type") == type_:
            return data
    raise LookupError(type_)


def primary_path(repo: Path) -> Path:
    href = repomd_entry(repo, "primary").find(f"{{{REPO_NS}}}location").get("href")  # type: ignore[union-attr]
    return repo / str(href)


def edit_repomd(repo: Path, type_: str, edit: Callable[[ET.Element], None]) -> None:
    """Rewrite repomd.xml with ``edit`` applied to its ``type_`` entries."""
    ET.register_namespace("", REPO_NS)
    ET.register_namespace("rpm", "http://linux.duke.edu/metadata/rpm")
    path = repo / "repodata" / "repomd.xml"
    tree = ET.parse(path)
    for entry in tree.getroot().findall(f"{{{REPO_NS}}}data"):
        if entry.get("type") == type_:
            edit(entry)
    tree.write(path, xml_declaration=True, encoding="UTF-8")


def replace_entry(repo: Path, type_: str, data: bytes, suffix: str) -> str:
    """Store ``data`` as the ``type_`` metadata and make repomd.xml list it (checksum, size)."""
    digest = hashlib.sha256(data).hexdigest()
    href = f"repodata/{digest}-{type_}.xml{suffix}"
    (repo / href).write_bytes(data)

    def point_at_data(entry: ET.Element) -> None:
        entry.find(f"{{{REPO_NS}}}checksum").text = digest  # type: ignore[union-attr]
        entry.find(f"{{{REPO_NS}}}location").set("href", href)  # type: ignore[union-attr]
        entry.find(f"{{{REPO_NS}}}size").text = str(len(data))  # type: ignore[union-attr]

    edit_repomd(repo, type_, point_at_data)
    return "/rpm/" + href


def primary_xml(repo: Path) -> bytes:
    return gzip.decompress(primary_path(repo).read_bytes())
