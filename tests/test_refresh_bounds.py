"""A hostile mirror's index, refreshed for real over loopback: what is stored stays bounded.

The mirror (tests/test_fetch.py's MirrorServer) serves rpm-md and apt indexes with a
package whose name is a megabyte (from a gzip of a few KB), an advisory whose title is
over its bound, and more packages than ``max_index_packages``. The refresh must store
the rest, store none of the oversized rows, count what it skipped on the mirror (and
the exporter serve the count), and fail an index that lists too many packages while
keeping the last good data. Runs on SQLite and PostgreSQL where it stores data.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from patchwatch.domain import limits
from patchwatch.exporter.collector import StoreCollector
from patchwatch.pipeline.fetch import HttpFetcher
from patchwatch.pipeline.refresh.run import refresh_mirror
from patchwatch.store.db import write_transaction
from patchwatch.store.models import Advisory
from patchwatch.store.models import Package
from patchwatch.store.oversized import remove_oversized
from tests import test_refresh
from tests.test_fetch import MirrorServer
from tests.test_refresh import LATER
from tests.test_refresh import NOW
from tests.test_refresh import add_repository
from tests.test_refresh import build_rpm_tree
from tests.test_refresh import build_unsigned_tree
from tests.test_refresh import first_stanzas
from tests.test_refresh import make_settings
from tests.test_refresh import primary_xml
from tests.test_refresh import reload
from tests.test_refresh import replace_entry
from tests.test_refresh import rpm_repository
from tests.test_refresh import sqlite_only
from tests.test_refresh import stored_packages

# the fixtures of tests/test_refresh.py: a mirror on loopback serving a folder
root = test_refresh.root
server = test_refresh.server
fetcher = test_refresh.fetcher

HOSTILE_NAME = "a" * 300_000  # the tests' max_index_bytes is 1 MiB
HOSTILE_PACKAGE = (
    f'<package type="rpm"><name>{HOSTILE_NAME}</name><arch>noarch</arch>'
    '<version epoch="0" ver="1" rel="1"/></package>\n'
    '<package type="rpm"><name>ok</name><arch>noarch</arch>'
    f'<version epoch="0" ver="{"9" * limits.MAX_VERSION}" rel="{"1" * limits.MAX_RELEASE}"/>'
    "</package>\n"
)


def add_hostile_package(tree: Path) -> None:
    xml = primary_xml(tree).replace(b"</metadata>", HOSTILE_PACKAGE.encode() + b"</metadata>")
    replace_entry(tree, "primary", gzip.compress(xml), ".gz")


def skipped_metric(db: object, repo_key: str, url: str, index: str) -> float | None:
    registry = CollectorRegistry()
    registry.register(StoreCollector(db))  # type: ignore[arg-type]
    labels = {"repository": repo_key, "mirror": url, "index": index}
    return registry.get_sample_value("patchwatch_mirror_skipped_entries", labels)


def test_oversized_rpm_package_is_skipped_counted_and_never_stored(
    db: object, server: MirrorServer, root: Path, fetcher: HttpFetcher
) -> None:
    tree = build_rpm_tree(root)
    add_hostile_package(tree)
    repo, mirror = rpm_repository(server.url("rpm"))
    assert skipped_metric(db, repo.key, mirror.url, "packages") is None  # not known yet
    res = refresh_mirror(mirror, fetcher, NOW, make_settings())
    assert (res.outcome, res.packages) == ("changed", 11)
    assert res.detail.startswith("skipped 1 entry (primary.xml package #11 (aaaa")
    assert "name longer than 256 characters" in res.detail and len(res.detail) < 300
    m = reload(mirror)
    assert (m.skipped_packages, m.skipped_advisories) == (1, 0)
    names = {row[1] for row in stored_packages(m.package_set_id)}
    assert "ok" in names and HOSTILE_NAME not in names
    # a name, version and release exactly at their bounds are stored on both backends
    # (PostgreSQL's varchar(255) refused 256 characters before migration 8)
    ok = Package.get(Package.name == "ok")
    assert (len(ok.version), len(ok.release)) == (limits.MAX_VERSION, limits.MAX_RELEASE)
    (longest,) = db.execute_sql('SELECT MAX(LENGTH(name)) FROM "package"').fetchone()  # type: ignore[attr-defined]
    assert longest <= limits.MAX_PACKAGE_NAME
    assert skipped_metric(db, repo.key, mirror.url, "packages") == 1
    assert skipped_metric(db, repo.key, mirror.url, "advisories") == 0


@sqlite_only
def test_oversized_advisory_is_skipped_and_counted_apart(
    db: object, server: MirrorServer, root: Path, fetcher: HttpFetcher
) -> None:
    tree = build_rpm_tree(root)
    _repo, mirror = rpm_repository(server.url("rpm"))
    refresh_mirror(mirror, fetcher, NOW, make_settings())
    updateinfo = (
        '<?xml version="1.0"?><updates>'
        '<update type="security"><id>PW-1</id><title>fine</title></update>'
        f'<update type="security"><id>PW-2</id><title>{"t" * 5000}</title></update>'
        "</updates>"
    )
    replace_entry(tree, "updateinfo", gzip.compress(updateinfo.encode()), ".gz")
    res = refresh_mirror(reload(mirror), fetcher, LATER, make_settings())
    assert (res.outcome, res.advisories) == ("changed", 1)
    assert "updateinfo.xml update #2 (PW-2): title longer than 4096 characters" in res.detail
    assert [a.advisory_id for a in Advisory.select()] == ["PW-1"]
    m = reload(mirror)
    assert (m.skipped_packages, m.skipped_advisories) == (0, 1)  # primary's count kept


def test_rpm_index_over_max_index_packages_fails_and_keeps_the_data(
    db: object, server: MirrorServer, root: Path, fetcher: HttpFetcher
) -> None:
    tree = build_rpm_tree(root)
    _repo, mirror = rpm_repository(server.url("rpm"))
    assert refresh_mirror(mirror, fetcher, NOW, make_settings()).packages == 10
    good = reload(mirror)
    add_hostile_package(tree)  # 12 packages now, one of them skipped
    res = refresh_mirror(good, fetcher, LATER, make_settings(max_index_packages=11))
    assert res.outcome == "changed"  # the skipped one is not counted against the limit
    xml = primary_xml(tree).replace(b"</metadata>", b"".join(
        f'<package type="rpm"><name>extra{i}</name><arch>noarch</arch>'
        f'<version epoch="0" ver="1" rel="1"/></package>'.encode() for i in range(5)
    ) + b"</metadata>")  # fmt: skip
    replace_entry(tree, "primary", gzip.compress(xml), ".gz")
    before = reload(mirror)
    res = refresh_mirror(before, fetcher, LATER + 1, make_settings(max_index_packages=12))
    assert res.outcome == "failed"
    assert res.detail.endswith("lists more than 12 packages (max_index_packages)")
    m = reload(mirror)
    assert (m.package_set_id, m.package_count) == (before.package_set_id, 11)
    assert m.consecutive_failures == 1


@sqlite_only
def test_apt_oversized_stanza_is_skipped_and_the_limit_counts_every_entry(
    db: object, server: MirrorServer, root: Path, fetcher: HttpFetcher
) -> None:
    hostile = b"Package: " + b"n" * (3 * 64 * 1024) + b"\nVersion: 1\nArchitecture: amd64\n\n"
    build_unsigned_tree(root, first_stanzas(3) + b"\n" + hostile + first_stanzas(2)[:-1])
    repo, (mirror,) = add_repository(
        "deb", "deb security", [(server.url("debian-security"), "baseurl")],
        "bookworm-security", "main", "amd64",
    )  # fmt: skip
    settings = make_settings(apt_verify_signatures=False)
    res = refresh_mirror(mirror, fetcher, NOW, settings)
    assert (res.outcome, res.packages) == ("changed", 3)  # 3 stanzas, then 2 of them again
    assert "stanza at line" in res.detail and "name longer than 256 characters" in res.detail
    m = reload(mirror)
    assert (m.skipped_packages, m.skipped_advisories) == (1, None)
    assert skipped_metric(db, repo.key, mirror.url, "packages") == 1
    assert skipped_metric(db, repo.key, mirror.url, "advisories") is None  # apt has none
    settings = make_settings(apt_verify_signatures=False, max_index_packages=4)
    res = refresh_mirror(m, fetcher, LATER, settings, force=True)  # 5 entries kept
    assert res.outcome == "failed" and "lists more than 4 packages" in res.detail


@pytest.mark.parametrize("value", ["0", "-1", "x"])
def test_max_index_packages_must_be_a_positive_number(value: str) -> None:
    from patchwatch.domain.errors import ConfigError
    from patchwatch.domain.settings import parse_settings

    with pytest.raises(ConfigError, match="max_index_packages"):
        parse_settings(environ={"PATCHWATCH_MAX_INDEX_PACKAGES": value})


def test_mirror_whose_stored_advisory_was_oversized_is_read_again_after_the_removal(
    db: object, server: MirrorServer, root: Path, fetcher: HttpFetcher
) -> None:
    """As an old patchwatch left it: an advisory with a 5,000-character title stored."""
    build_rpm_tree(root)
    repo, mirror = rpm_repository(server.url("rpm"))
    refresh_mirror(mirror, fetcher, NOW, make_settings())
    Advisory.update(title="t" * 5000).where(Advisory.advisory_id == "PWTEST-2026:0002").execute()
    assert refresh_mirror(reload(mirror), fetcher, LATER, make_settings()).outcome == "unchanged"
    with write_transaction():
        removed = remove_oversized(db)  # type: ignore[arg-type]
    assert (removed.advisories, removed.mirrors) == (1, 1)
    assert Advisory.select().where(Advisory.repository == repo).count() == 2
    res = refresh_mirror(reload(mirror), fetcher, LATER + 1, make_settings())
    assert (res.outcome, res.advisories) == ("changed", 3)  # read again, not 304
    titles = [len(a.title) for a in Advisory.select().where(Advisory.repository == repo)]
    assert len(titles) == 3 and max(titles) < 5000
