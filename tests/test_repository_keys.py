"""One stored repository per apt source, whoever reports it; old stores are merged.

The agent reports an apt source as a source line (architecture only when the line
restricts it), the Patchman client as one index URL per architecture: both must end
in one repository with a key that does not end in a space. Stores written before
keep working: their duplicates are merged by a migration, as ``repos link`` would.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from patchwatch.domain.errors import ParseError
from patchwatch.domain.protocols import PATCHMAN1
from patchwatch.domain.reports.native import parse_native
from patchwatch.domain.reports.protocol1 import parse_protocol1
from patchwatch.domain.reports.protocol2 import parse_protocol2
from patchwatch.pipeline.processing import process_pending
from patchwatch.pipeline.processing import store_report
from patchwatch.store.migrations import MIGRATIONS
from patchwatch.store.migrations import Migration
from patchwatch.store.migrations import migrate
from patchwatch.store.models import Advisory
from patchwatch.store.models import Host
from patchwatch.store.models import HostUpdate
from patchwatch.store.models import Mirror
from patchwatch.store.models import OSRelease
from patchwatch.store.models import OSReleaseRepository
from patchwatch.store.models import Package
from patchwatch.store.models import PackageSet
from patchwatch.store.models import Repository
from patchwatch.store.models import RepositorySet
from patchwatch.store.models import RepositorySetMember
from patchwatch.store.models import SchemaVersion
from tests.support.fleets import WEB1
from tests.support.fleets import report

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "reports"
NOW = time.time()
AGENT_MAIN = {"type": "deb", "id": "http://DEBIAN-MIRROR/debian bookworm main",
              "urls": ["http://DEBIAN-MIRROR/debian/"], "suite": "bookworm",
              "component": "main", "priority": 500}  # fmt: skip


def _form(name: str) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted((FIXTURES / name).iterdir())}


def _step() -> Migration:
    """The migration that makes keys canonical (its number is given at merge time)."""
    (step,) = [m for m in MIGRATIONS if "canonical key" in m.description]
    return step


def test_the_agent_and_the_patchman_client_report_one_repository(db) -> None:
    """bookworm/main from the agent (no architecture) and from a Patchman client
    (``.../binary-amd64``) is one repository, read for the hosts' architectures."""
    form = _form("patchman1-debian12")
    store_report(form["host"].strip(), PATCHMAN1, form, NOW - 60)
    store_report("agent.example.com", "patchwatch/1",
                 report("agent.example.com", WEB1, [AGENT_MAIN]), NOW)  # fmt: skip
    assert process_pending(NOW) == {"processed": 2}
    main = [r for r in Repository.select() if r.suite == "bookworm" and r.component == "main"]
    assert [r.key for r in main] == ["deb http://debian-mirror/debian bookworm main"]
    assert main[0].arch == ""  # the agent's unrestricted line: the hosts' architectures
    assert not [r.key for r in Repository.select() if r.key != r.key.strip()]
    users = RepositorySetMember.select().where(RepositorySetMember.repository == main[0].id)
    assert users.count() == 2  # both hosts' repository sets name it
    assert Mirror.select().where(Mirror.repository == main[0].id).count() == 1


def test_architectures_of_one_source_are_merged_not_split(db) -> None:
    """A multiarch Patchman client reports binary-amd64 and binary-i386 of one source:
    one repository read for both."""
    line = "'deb' 'n' '500' 'http://m/debian/dists/bookworm/main/binary-{}'\n"
    form = {**_form("patchman1-debian12"), "repos": line.format("amd64") + line.format("i386")}
    store_report("multi.example.com", PATCHMAN1, {**form, "host": "multi.example.com"}, NOW)
    assert process_pending(NOW) == {"processed": 1}
    (repo,) = Repository.select().where(Repository.key == "deb http://m/debian bookworm main")
    assert repo.arch == "amd64,i386"
    from patchwatch.domain.repokeys import merge_arches

    assert merge_arches("amd64,i386", "") == "" and merge_arches("i386", "amd64") == "amd64,i386"


@pytest.mark.parametrize(
    "bad", ["main\nforged line", "main\r", "main\ttab", "\x1b[2Jmain", "main\x85"]
)
def test_repository_fields_with_line_breaks_or_controls_are_refused(bad: str) -> None:
    doc = report("h.example.com", WEB1, [{**AGENT_MAIN, "id": bad}])
    with pytest.raises(ParseError, match="control character") as info:
        parse_native(doc)
    assert info.value.where == "repositories[0].id"
    with pytest.raises(ParseError, match="control character"):
        parse_native(report("h.example.com", WEB1, [{**AGENT_MAIN, "component": bad}]))
    p2 = {"protocol": 2, "hostname": "h.example.com", "os": "Rocky Linux 9.5",
          "kernel": "5.14.0", "arch": "x86_64", "packages": [],
          "repos": [{"type": "rpm", "name": "n", "id": bad, "priority": 99,
                     "urls": ["http://m/x"]}]}  # fmt: skip
    with pytest.raises(ParseError, match="control character"):
        parse_protocol2(p2)
    form = {**_form("patchman1-rocky9"), "repos": f"'rpm' 'n' '{bad}' '99' 'http://m/x'"}
    if "\n" not in bad and "\r" not in bad:  # protocol 1 lines end at a line break
        with pytest.raises(ParseError, match="control character"):
            parse_protocol1(form)


def test_a_report_with_a_newline_in_a_repository_id_fails_and_stores_no_repository(db, tmp_path):
    """The receiver checks only the fields it routes by; processing refuses the rest: the
    report fails naming the field, and no repository row is written from it."""
    from patchwatch.domain.settings import Settings
    from patchwatch.pipeline.processing import process_pending
    from patchwatch.receiver.app import create_app
    from patchwatch.store.models import Report
    from patchwatch.store.tokens import create_token

    client = create_app(Settings(data_dir=str(tmp_path), process_inline=False), db=db)
    _token, secret = create_token("enroll", NOW)
    doc = report("h.example.com", WEB1, [{**AGENT_MAIN, "id": "x\ndeb http://evil/ x y"}])
    r = client.test_client().post("/api/v1/reports", json=doc,
                                  headers={"Authorization": f"Bearer {secret}"})  # fmt: skip
    assert r.status_code == 202
    assert process_pending(NOW) == {"failed": 1}
    row = Report.get_by_id(r.get_json()["report"])
    assert row.state == "failed" and "repositories[0].id" in row.error
    assert Repository.select().count() == 0


def _old_store() -> dict[str, int]:
    """Rows as the code before canonical keys wrote them: one source, three keys."""
    deb = {"kind": "deb", "suite": "bookworm", "component": "main", "created_at": NOW}
    agent = Repository.create(key="deb http://m/debian bookworm main ", arch="", **deb)
    client = Repository.create(key="deb http://m/debian bookworm main amd64", arch="amd64",
                               security_override=True, **deb)  # fmt: skip
    i386 = Repository.create(key="deb http://m/debian bookworm main i386", arch="i386",
                             enabled=False, **deb)  # fmt: skip
    other = Repository.create(key="deb http://m/debian bookworm contrib amd64", arch="amd64",
                              kind="deb", suite="bookworm", component="contrib",
                              created_at=NOW)  # fmt: skip
    rpm = Repository.create(kind="rpm", key="rpm baseos  http://r/os", repo_id="baseos",
                            created_at=NOW)  # fmt: skip
    for repo, url in ((agent, "http://m/debian"), (client, "http://m/debian"),
                      (i386, "http://m2/debian"), (other, "http://m/debian")):  # fmt: skip
        Mirror.create(repository=repo, url=url)
    both = RepositorySet.create(digest="both", size=3, created_at=NOW)
    alone = RepositorySet.create(digest="alone", size=1, created_at=NOW)
    for rset, repo, prio in ((both, agent, 500), (both, client, 990), (both, other, 500),
                             (alone, client, 100)):  # fmt: skip
        RepositorySetMember.create(repository_set=rset, repository=repo, priority=prio)
    release = OSRelease.create(name="Debian 12", family="debian")
    OSReleaseRepository.create(os_release=release, repository=client)
    host = Host.create(name="h.example.com", created_at=NOW, repository_set=both)
    pkg = Package.create(kind="deb", name="openssl", version="3", release="1", arch="amd64")
    new = Package.create(kind="deb", name="openssl", version="3", release="2", arch="amd64")
    HostUpdate.create(host=host, installed=pkg, available=new, security=True,
                      repository=client, first_seen_at=NOW)  # fmt: skip
    for repo in (agent, client):
        Advisory.create(advisory_id="DSA-1", repository=repo, type="security")
    Advisory.create(advisory_id="DSA-2", repository=i386, type="security")
    PackageSet.create(digest="unused", size=0, created_at=NOW)
    return {"agent": agent.id, "client": client.id, "i386": i386.id, "other": other.id,
            "rpm": rpm.id, "both": both.id, "alone": alone.id, "host": host.id}  # fmt: skip


def _state() -> list[tuple[object, ...]]:
    return [
        *Repository.select(Repository.id, Repository.key, Repository.arch, Repository.enabled,
                           Repository.security_override).order_by(Repository.id).tuples(),
        *Mirror.select(Mirror.repository, Mirror.url).order_by(Mirror.url).tuples(),
        *RepositorySetMember.select(
            RepositorySetMember.repository_set, RepositorySetMember.repository,
            RepositorySetMember.priority,
        ).order_by(RepositorySetMember.repository_set, RepositorySetMember.repository).tuples(),
    ]  # fmt: skip


def test_the_migration_merges_an_old_stores_duplicates_into_one_repository(db) -> None:
    ids = _old_store()
    step = _step()
    SchemaVersion.delete().where(SchemaVersion.version >= step.version).execute()
    assert step.version in migrate(db)  # as an upgraded server runs it

    keys = {r.key: r for r in Repository.select()}
    assert sorted(keys) == [
        "deb http://m/debian bookworm contrib", "deb http://m/debian bookworm main",
        "rpm baseos http://r/os",
    ]  # fmt: skip
    main = keys["deb http://m/debian bookworm main"]
    assert main.id == ids["agent"]  # the oldest stays
    assert main.arch == "" and main.enabled is True and main.security_override is True
    mirrors = sorted(m.url for m in Mirror.select().where(Mirror.repository == main.id))
    assert mirrors == ["http://m/debian", "http://m2/debian"]  # the duplicate URL once
    members = {
        (m.repository_set_id, m.repository_id): m.priority for m in RepositorySetMember.select()
    }
    assert members == {(ids["both"], main.id): 990, (ids["both"], ids["other"]): 500,
                       (ids["alone"], main.id): 100}  # fmt: skip
    assert RepositorySet.get_by_id(ids["both"]).size == 2
    assert [r.repository_id for r in OSReleaseRepository.select()] == [main.id]
    assert HostUpdate.get().repository_id == main.id
    assert sorted(a.advisory_id for a in Advisory.select().where(Advisory.repository == main.id)
                  ) == ["DSA-1", "DSA-2"]  # fmt: skip
    assert Advisory.select().count() == 2

    before = _state()
    step.apply(db)  # again: nothing changes
    assert _state() == before


def test_a_report_after_the_migration_lands_on_the_merged_repository(db) -> None:
    _old_store()
    _step().apply(db)
    store_report("agent.example.com", "patchwatch/1", report(
        "agent.example.com", WEB1,
        [{**AGENT_MAIN, "id": "http://m/debian bookworm main", "urls": ["http://m/debian"]}],
    ), NOW)  # fmt: skip
    assert process_pending(NOW) == {"processed": 1}
    assert Repository.select().where(Repository.component == "main").count() == 1
