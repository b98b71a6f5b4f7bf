"""The refresh under the fetch policy: approval, xml:base and mirrorlists, time boxes.

Real metadata served on loopback (tests/support/repositories.py); a socket hook
(the ``connects`` fixture) records every connection attempt and lets nothing
leave 127.0.0.1, so "no connection was attempted" is observed, not assumed.
"""

from __future__ import annotations

import json
import threading
import xml.etree.ElementTree as ET
from pathlib import Path

from peewee import Database

from patchwatch.domain.settings import Settings
from patchwatch.pipeline.fetch import HttpFetcher
from patchwatch.pipeline.processing import process_pending
from patchwatch.pipeline.processing import store_report
from patchwatch.pipeline.refresh.run import refresh_all
from patchwatch.pipeline.refresh.run import refresh_mirror
from patchwatch.store.approval import approve_repositories
from patchwatch.store.approval import repository_states
from patchwatch.store.migrations import MIGRATIONS
from patchwatch.store.migrations import _mirror_approval
from patchwatch.store.migrations import migrate
from patchwatch.store.models import Mirror
from patchwatch.store.models import Repository
from patchwatch.store.models import SchemaVersion
from tests.support.cli import cli
from tests.support.mirrors import LIVENESS_SECONDS
from tests.support.mirrors import LOOPBACK_POLICY
from tests.support.mirrors import Fault
from tests.support.mirrors import MirrorServer
from tests.support.network import FakeDns
from tests.support.repositories import NOW
from tests.support.repositories import REPO_NS
from tests.support.repositories import build_rpm_tree
from tests.support.repositories import edit_repomd
from tests.support.repositories import make_settings
from tests.support.repositories import reload
from tests.support.repositories import rpm_repository
from tests.support.repositories import sqlite_only

XML_BASE = "{http://www.w3.org/XML/1998/namespace}base"
#: Loopback may be reached, but no URL is trusted without approval.
NO_PATTERNS = {"mirror_url_patterns": ()}


def fetcher_for(settings: Settings) -> HttpFetcher:
    """A fetcher with the settings' policy (the fixture's trusts 127.0.0.1 wholesale)."""
    return HttpFetcher(
        timeout=settings.http_timeout_seconds, retries=settings.http_retries, backoff=0.0,
        sleep=lambda _s: None, max_seconds=settings.http_request_max_seconds,
        policy=settings.mirror_policy,
    )  # fmt: skip


def rocky_report(host: str, url: str) -> dict[str, object]:
    return {
        "version": 1, "host": host, "kernel": "5.14.0-427.el9.x86_64", "arch": "x86_64",
        "os": {"id": "rocky", "version_id": "9.4"},
        "packages": [{"name": "hello", "epoch": "", "version": "1.0", "release": "1",
                      "arch": "noarch", "type": "rpm"}],
        "repositories": [{"type": "rpm", "id": "t", "name": "test", "urls": [url],
                          "arch": "x86_64", "priority": -99, "enabled": True}],
    }  # fmt: skip


# ------------------------------------------------------------------------- approval


def test_a_reported_repository_waits_for_approval_unless_a_pattern_covers_it(
    db: object, server: MirrorServer, root: Path, fetcher: HttpFetcher
) -> None:
    build_rpm_tree(root)
    store_report("web-1", "patchwatch/1", rocky_report("web-1", server.url("rpm")), NOW)
    assert sum(process_pending(NOW).values()) == 1
    (mirror,) = Mirror.select()
    assert not mirror.approved  # reported by a host: nobody vouched for it yet
    strict = make_settings(**NO_PATTERNS)
    assert repository_states(strict.mirror_policy) == {mirror.repository_id: "pending"}

    (res,) = refresh_all(fetcher, NOW, strict)
    assert res.outcome == "skipped"
    assert "waiting for approval" in res.detail
    assert f"patchwatch repos approve {mirror.repository_id}" in res.detail
    assert server.paths() == []  # not a single request
    assert (reload(mirror).last_attempt_at, reload(mirror).failures_total) == (None, 0)

    # a pattern that covers it lets it be read, without anyone approving it
    assert repository_states(make_settings().mirror_policy) == {mirror.repository_id: "allowed"}
    assert refresh_mirror(reload(mirror), fetcher, NOW, make_settings()).outcome == "changed"

    # or the operator approves it: then it is read whatever the patterns say
    assert approve_repositories([Repository.get_by_id(mirror.repository_id)]) == 1
    assert approve_repositories([Repository.get_by_id(mirror.repository_id)]) == 0
    assert repository_states(strict.mirror_policy) == {mirror.repository_id: "approved"}
    (res,) = refresh_all(fetcher, NOW + 60, strict, force=True)
    assert (res.outcome, res.packages) == ("unchanged", 10)  # read again, same data
    assert server.paths().count("/rpm/repodata/repomd.xml") == 2


def test_the_migration_approves_the_mirrors_a_store_already_had(db: Database) -> None:
    """Stores upgraded to approval keep reading what they read; new reports wait."""
    repo, before = rpm_repository("http://mirror.example.test/rpm")
    db.execute_sql('ALTER TABLE "mirror" DROP COLUMN "approved"')
    step = next(m for m in MIGRATIONS if m.apply is _mirror_approval)
    SchemaVersion.delete().where(SchemaVersion.version >= step.version).execute()
    assert step.version in migrate(db)
    assert reload(before).approved
    after = Mirror.create(repository=repo, url="http://other.example.test/rpm")
    assert not reload(after).approved
    assert migrate(db) == []


def test_a_new_mirror_of_an_approved_repository_waits_too(db: object) -> None:
    repo, _mirror = rpm_repository("http://mirror.example.test/rpm")
    approve_repositories([repo])
    Mirror.create(repository=repo, url="http://attacker.example.test/rpm")
    policy = make_settings(**NO_PATTERNS).mirror_policy
    assert repository_states(policy) == {repo.id: "partly pending"}


# ---------------------------------------------------- where a mirror's URLs may lead


def set_xml_base(tree: Path, type_: str, base: str) -> None:
    def set_base(entry: ET.Element) -> None:
        entry.find(f"{{{REPO_NS}}}location").set(XML_BASE, base)  # type: ignore[union-attr]

    edit_repomd(tree, type_, set_base)


@sqlite_only
def test_xml_base_on_another_host_is_refused_without_a_connection(
    db: object, server: MirrorServer, root: Path, connects: list[tuple[str, int]],
    fake_dns: FakeDns,
) -> None:  # fmt: skip
    tree = build_rpm_tree(root)
    set_xml_base(tree, "primary", "http://elsewhere.example.test/rpm/")
    repo, mirror = rpm_repository(server.url("rpm"))
    approve_repositories([repo])
    settings = make_settings(**NO_PATTERNS)
    with fetcher_for(settings) as fetcher:
        res = refresh_mirror(reload(mirror), fetcher, NOW, settings)
        assert res.outcome == "failed"
        assert "refused by the mirror policy" in res.detail
        assert "elsewhere.example.test is neither the mirror's host (127.0.0.1)" in res.detail
        assert {host for host, _port in connects} == {"127.0.0.1"}
        assert fake_dns.unknown == []  # not even looked up
        assert reload(mirror).failures_total == 1

        # on the mirror's own host, xml:base is followed as before
        set_xml_base(tree, "primary", server.url("rpm") + "/")
        res = refresh_mirror(reload(mirror), fetcher, NOW, settings)
        assert (res.outcome, res.packages) == ("changed", 10)


@sqlite_only
def test_mirrorlist_entries_are_held_to_the_policy(
    db: object, server: MirrorServer, root: Path, connects: list[tuple[str, int]],
    fake_dns: FakeDns,
) -> None:  # fmt: skip
    build_rpm_tree(root)
    fake_dns["internal.mirror.test"] = "10.0.0.7"
    (root / "mirrorlist.txt").write_text(
        "http://169.254.169.254/latest/meta-data/\n"
        "http://internal.mirror.test/rpm/\n"
        f"{server.url('rpm')}/\n"
    )
    repo, mirror = rpm_repository(server.url("mirrorlist.txt"), "mirrorlist")
    approve_repositories([repo])
    settings = make_settings(**NO_PATTERNS)
    with fetcher_for(settings) as fetcher:
        res = refresh_mirror(reload(mirror), fetcher, NOW, settings)
    assert (res.outcome, res.packages) == ("changed", 10)
    assert res.detail == f"served by {server.url('rpm')}"
    assert {host for host, _port in connects} == {"127.0.0.1"}

    # a list from a trusted mirror network may point anywhere public, but never at an
    # internal address, whatever name it uses
    (root / "mirrorlist.txt").write_text("http://internal.mirror.test/rpm/\n")
    trusting = make_settings(mirror_url_patterns=("http://127.0.0.1:*",))
    with fetcher_for(trusting) as fetcher:
        res = refresh_mirror(reload(mirror), fetcher, NOW + 60, trusting, force=True)
    assert res.outcome == "failed"
    assert "refused to connect to internal.mirror.test: 10.0.0.7 is a private address" in (
        res.detail
    )
    assert {host for host, _port in connects} == {"127.0.0.1"}
    assert fake_dns.unknown == []


# --------------------------------------------------------------------- time boxes


def test_one_slow_mirror_does_not_hold_up_the_others(
    db: object, server: MirrorServer, root: Path, fetcher: HttpFetcher
) -> None:
    """The slow mirror is started first; the other one finishes while it still waits."""
    build_rpm_tree(root)
    release = threading.Event()
    server.faults["/slow/repodata/repomd.xml"] = Fault(wait=release)
    (root / "slow").symlink_to(root / "rpm")
    _slow_repo, slow = rpm_repository(server.url("slow"))
    _fast_repo, fast = rpm_repository(server.url("rpm"))
    Mirror.update(last_attempt_at=NOW - 7200).where(Mirror.id == fast.id).execute()  # slow first
    finished: list[str] = []

    def progress(_done: int, _total: int, mirror: Mirror, res: object) -> None:
        if res is not None:
            finished.append(mirror.url)
            release.set()  # the fast one is done: let the slow one answer now

    results = refresh_all(
        fetcher, NOW, make_settings(refresh_concurrency=2, http_timeout_seconds=LIVENESS_SECONDS),
        progress=progress,
    )  # fmt: skip
    assert finished == [fast.url, slow.url]
    assert [r.outcome for r in results] == ["changed", "changed"]


@sqlite_only
def test_a_mirror_that_drips_is_failed_at_its_time_box_and_the_next_is_read(
    db: object, server: MirrorServer, root: Path, fetcher: HttpFetcher
) -> None:
    build_rpm_tree(root)
    server.faults["/drip/repodata/repomd.xml"] = Fault(drip=0.05)
    _r, dripping = rpm_repository(server.url("drip"))
    _r, good = rpm_repository(server.url("rpm"))
    settings = make_settings(
        refresh_concurrency=1, mirror_refresh_max_seconds=0.5, http_request_max_seconds=600,
        http_timeout_seconds=5.0, http_retries=3,
    )  # fmt: skip
    by_url = {r.url: r for r in refresh_all(fetcher, NOW, settings)}
    assert by_url[dripping.url].outcome == "failed"
    assert "the mirror's time box of 0.5 s (mirror_refresh_max_seconds)" in (
        by_url[dripping.url].detail
    )
    assert reload(dripping).failures_total == 1  # slow is the mirror's fault: counted
    assert by_url[good.url].outcome == "changed"


@sqlite_only
def test_a_stopped_refresh_ends_the_mirror_in_flight_and_starts_no_other(
    db: object, server: MirrorServer, root: Path, fetcher: HttpFetcher
) -> None:
    build_rpm_tree(root)
    never = threading.Event()
    fault = Fault(wait=never)
    server.faults["/a/repodata/repomd.xml"] = fault
    (root / "a").symlink_to(root / "rpm")
    _r, first = rpm_repository(server.url("a"))
    _r, second = rpm_repository(server.url("rpm"))
    stop = threading.Event()
    settings = make_settings(refresh_concurrency=1, http_timeout_seconds=LIVENESS_SECONDS)
    results: list[object] = []
    thread = threading.Thread(
        target=lambda: results.extend(refresh_all(fetcher, NOW, settings, stop=stop)),
        daemon=True,
    )
    thread.start()
    assert fault.arrived.wait(LIVENESS_SECONDS)  # the first mirror's request is in flight
    stop.set()
    thread.join(LIVENESS_SECONDS)
    assert not thread.is_alive()
    by_url = {r.url: r for r in results}  # type: ignore[attr-defined]
    assert (by_url[first.url].outcome, by_url[first.url].detail) == (
        "skipped", "stopped before it finished",
    )  # fmt: skip
    assert by_url[second.url].outcome == "skipped"
    assert by_url[second.url].detail == "not started: the refresh was stopped"
    assert "/rpm/repodata/repomd.xml" not in server.paths()
    for mirror in (first, second):  # stopping is nobody's failure
        assert (reload(mirror).failures_total, reload(mirror).last_error) == (0, "")


@sqlite_only
def test_a_spent_run_time_box_starts_no_mirror(
    db: object, server: MirrorServer, root: Path, fetcher: HttpFetcher
) -> None:
    build_rpm_tree(root)
    rpm_repository(server.url("rpm"))
    (res,) = refresh_all(fetcher, NOW, make_settings(refresh_max_seconds=1e-9))
    assert res.outcome == "skipped" and "time box is spent (refresh_max_seconds)" in res.detail
    assert server.paths() == []


# ------------------------------------------------------------------- download caps


@sqlite_only
def test_a_declared_size_above_max_index_bytes_is_refused_before_downloading(
    db: object, server: MirrorServer, root: Path, fetcher: HttpFetcher
) -> None:
    tree = build_rpm_tree(root)
    ET.register_namespace("", REPO_NS)
    ET.register_namespace("rpm", "http://linux.duke.edu/metadata/rpm")
    path = tree / "repodata" / "repomd.xml"
    doc = ET.parse(path)
    for entry in doc.getroot().findall(f"{{{REPO_NS}}}data"):
        if entry.get("type") == "primary":
            entry.find(f"{{{REPO_NS}}}size").text = str(3 << 30)  # type: ignore[union-attr]
    doc.write(path, xml_declaration=True, encoding="UTF-8")
    _r, mirror = rpm_repository(server.url("rpm"))
    res = refresh_mirror(mirror, fetcher, NOW, make_settings(max_index_bytes=1 << 20))
    assert res.outcome == "failed"
    assert f"is declared as {3 << 30} bytes, more than max_index_bytes (1048576)" in res.detail
    assert [p for p in server.paths() if "primary" in p] == []


def test_the_loopback_policy_of_the_tests_is_what_the_fixtures_use() -> None:
    """The fixtures widen the policy for 127.0.0.1 only; the default stays strict."""
    assert LOOPBACK_POLICY.address_refusal("127.0.0.1") is None
    assert LOOPBACK_POLICY.address_refusal("127.0.0.2") is not None
    default = HttpFetcher().policy
    assert default.address_refusal("127.0.0.1") is not None
    assert default.address_refusal("169.254.169.254") is not None
    assert not default.matches("http://127.0.0.1:8080/rpm")
    assert default.matches("http://deb.debian.org/debian")


def test_repos_approve_and_the_listings_show_the_state(
    db: object, database_url: str, tmp_path: Path
) -> None:
    """Through the real command, with the default settings: a loopback mirror is pending."""
    url = "http://127.0.0.1:9/rpm"
    store_report("web-1", "patchwatch/1", rocky_report("web-1", url), NOW)
    store_report("web-2", "patchwatch/1", rocky_report("web-2", "http://deb.debian.org/x"), NOW)
    assert sum(process_pending(NOW).values()) == 2
    ids = {m.url: m.repository_id for m in Mirror.select()}
    rows = json.loads(cli(database_url, "repos", "list", "--format", "json", home=tmp_path).stdout)
    assert {r["id"]: r["approval"] for r in rows} == {
        ids[url]: "pending",
        ids["http://deb.debian.org/x"]: "allowed",
    }
    table = cli(database_url, "repos", "list", home=tmp_path).stdout.splitlines()
    assert "APPROVAL" in table[0] and "pending" in table[1] + table[2]

    done = cli(database_url, "repos", "approve", str(ids[url]), home=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"approved {ids[url]} rpm t x86_64 {url}")
    now = f"('patchwatch refresh --repo {ids[url]}' does it now)"
    assert done.stderr.strip() == f"1 mirror approved; the next refresh reads them {now}"
    again = cli(database_url, "repos", "approve", str(ids[url]), home=tmp_path)
    assert again.stderr.strip() == "nothing changed"
    shown = json.loads(
        cli(database_url, "repos", "show", str(ids[url]), "--format", "json", home=tmp_path).stdout
    )
    assert [(m["url"], m["approved"], m["approval"]) for m in shown["mirrors"]] == [
        (url, True, "approved")
    ]
    missing = cli(database_url, "repos", "approve", "999", home=tmp_path)
    assert missing.returncode == 1 and "no repository with id 999" in missing.stderr
