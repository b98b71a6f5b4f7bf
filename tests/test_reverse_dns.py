"""Patchman's reverse DNS check, with a resolver that answers from a local fixture.

The lookups go through ``patchwatch.store.rdns.system_resolver`` (its thread and timeout
included) with ``gethostbyaddr`` replaced by one that answers from
tests/fixtures/reverse-dns.json: no DNS traffic leaves the machine. The hosts come in
through the real ingest path, with the address they reported from.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from patchwatch.domain.settings import Settings
from patchwatch.exporter.collector import StoreCollector
from patchwatch.inventory.attention import attention
from patchwatch.inventory.hosts import host_overview
from patchwatch.pipeline.processing import process_pending
from patchwatch.pipeline.processing import store_report
from patchwatch.receiver.app import create_app
from patchwatch.store import rdns
from patchwatch.store.models import Host
from patchwatch.store.models import OSRelease
from patchwatch.store.tokens import create_token
from tests.conftest import ROOT
from tests.conftest import require_or_skip
from tests.test_inventory import ROCKY_OS
from tests.test_inventory import WEB1
from tests.test_inventory import report

FIXTURE = json.loads((ROOT / "tests" / "fixtures" / "reverse-dns.json").read_text())
NOW = time.time()
HOSTS = {  # name: (address, OS)
    "a.example.com": ("192.0.2.10", "debian"), "b.example.com": ("192.0.2.11", "debian"),
    "c.example.com": ("192.0.2.12", "debian"), "d.example.com": ("192.0.2.13", "debian"),
    "h.example.com": ("192.0.2.14", "debian"), "s.example.com": ("192.0.2.15", "debian"),
    "g.example.com": ("192.0.2.17", "debian"), "e.example.com": ("192.0.2.18", "rocky"),
    "f.example.com": ("192.0.2.16", "rocky"),
}  # fmt: skip


class FixtureResolver:
    """``gethostbyaddr`` as the C library behaves, answering from the fixture."""

    def __init__(self) -> None:
        self.asked: list[str] = []
        self.release = threading.Event()

    def __call__(self, address: str) -> tuple[str, list[str], list[str]]:
        self.asked.append(address)
        answer = FIXTURE[address]
        if answer == "NXDOMAIN":
            raise socket.herror(1, "Unknown host")
        if answer == "SERVFAIL":
            raise socket.herror(2, "Host name lookup failure")
        if answer == "HANG":
            self.release.wait(10)
            raise socket.herror(2, "Host name lookup failure")
        return answer[0], answer[1:], [address]


@pytest.fixture
def resolver():
    fake = FixtureResolver()
    yield fake
    fake.release.set()  # let hung lookups end


@pytest.fixture
def fleet(db):
    for name, (address, os_name) in HOSTS.items():
        doc = report(name, WEB1, [], **({"os": ROCKY_OS} if os_name == "rocky" else {}))
        store_report(name, "patchwatch/1", doc, NOW - 60, remote_addr=address)
    assert process_pending(NOW) == {"processed": len(HOSTS)}
    debian = OSRelease.get(OSRelease.name.contains("Debian"))
    assert rdns.set_os_release_check(debian, True) == 7  # every Debian host follows it
    rdns.set_host_check(Host.get(Host.name == "g.example.com"), False)  # opted out
    rdns.set_host_check(Host.get(Host.name == "e.example.com"), True)  # opted in


def check(resolver: FixtureResolver, now: float = NOW, **kwargs: object):
    lookup = functools.partial(rdns.system_resolver, gethostbyaddr=resolver)
    return rdns.check_hosts(now, resolver=lookup, timeout=0.3, **kwargs)  # type: ignore[arg-type]


def series(db) -> dict[str, float]:
    registry = CollectorRegistry()
    registry.register(StoreCollector(db))
    return {
        s.labels["host"]: s.value
        for family in registry.collect() if family.name == "patchwatch_host_reverse_dns_match"
        for s in family.samples
    }  # fmt: skip


def test_answers_are_judged_as_patchman_does() -> None:
    found = rdns.Lookup(names=("web1.example.com.",))
    assert rdns.judge("web1.example.com", found) == ("match", "web1.example.com")
    alias = rdns.Lookup(names=("x.example.com", "WEB1.example.com"))
    assert rdns.judge("web1.example.com", alias) == ("match", "web1.example.com")
    other = rdns.Lookup(names=("Other.Example.com.",))
    assert rdns.judge("web1.example.com", other) == ("mismatch", "other.example.com")
    assert rdns.judge("web1", rdns.Lookup(no_name=True)) == ("no_name", "")
    assert rdns.judge("web1", rdns.Lookup(error="no answer in 2 s")) == ("unknown", "")
    assert rdns.check_enabled(None, True) and not rdns.check_enabled(False, True)
    assert rdns.check_enabled(True, None) and not rdns.check_enabled(None, None)


def test_enabled_hosts_are_checked_and_shown_everywhere(db, fleet, resolver, tmp_path) -> None:
    started = time.monotonic()
    outcome = check(resolver)
    assert time.monotonic() - started < 5  # the hung lookup was not waited for
    assert outcome == {"match": 3, "mismatch": 1, "no_name": 1, "unknown": 2}
    assert sorted(resolver.asked) == sorted(
        address for name, (address, _os) in HOSTS.items()
        if name not in ("g.example.com", "f.example.com")
    )  # fmt: skip

    # the 0/1 series: only hosts with the check on and a definite answer
    assert series(db) == {"a.example.com": 1, "b.example.com": 1, "e.example.com": 1,
                          "c.example.com": 0, "d.example.com": 0}  # fmt: skip

    items = [i for i in attention(NOW) if i["issue"] == "reverse_dns_mismatch"]
    assert [(i["subject"], i["detail"]) for i in items] == [
        ("c.example.com", "192.0.2.12 resolves to other.example.com, not to the host's name"),
        ("d.example.com", "192.0.2.13 has no reverse DNS name"),
    ]

    shown = host_overview(Host.get(Host.name == "c.example.com"), NOW)
    assert shown["reverse_dns_check"] is True and shown["reverse_dns_check_from"] == "os group"
    assert (shown["reverse_dns_status"], shown["reverse_dns_name"]) == (
        "mismatch", "other.example.com")  # fmt: skip
    off = host_overview(Host.get(Host.name == "g.example.com"), NOW)
    assert off["reverse_dns_check"] is False and off["reverse_dns_status"] is None
    hung = host_overview(Host.get(Host.name == "h.example.com"), NOW)
    assert hung["reverse_dns_status"] == "unknown"

    app = create_app(Settings(data_dir=str(tmp_path), process_inline=False), db=db)
    _token, secret = create_token("admin", NOW)
    auth = {"Authorization": f"Bearer {secret}"}
    client = app.test_client()
    api = client.get("/api/v1/hosts/c.example.com", headers=auth).get_json()
    assert (
        api["reverse_dns_status"] == "mismatch" and api["reverse_dns_name"] == "other.example.com"
    )
    csv_rows = client.get("/api/v1/attention?format=csv", headers=auth).get_data(as_text=True)
    assert "reverse_dns_mismatch,c.example.com," in csv_rows

    # the admin API switches it: c opts out, its series and issue go
    r = client.patch("/api/v1/hosts/c.example.com", json={"reverse_dns_check": False},
                     headers=auth)  # fmt: skip
    assert r.status_code == 200 and r.get_json()["reverse_dns_check"] is False
    assert "c.example.com" not in series(db)
    r = client.patch("/api/v1/hosts/c.example.com", json={"reverse_dns_check": "maybe"},
                     headers=auth)  # fmt: skip
    assert r.status_code == 400 and r.get_json()["where"] == "reverse_dns_check"
    rocky = OSRelease.get(OSRelease.name.contains("Rocky"))
    r = client.patch(f"/api/v1/os-releases/{rocky.id}", json={"reverse_dns_check": True},
                     headers=auth)  # fmt: skip
    assert r.status_code == 200 and r.get_json()["reverse_dns_check"] is True


def test_only_changed_addresses_and_unknown_answers_are_looked_up_again(
    db, fleet, resolver
) -> None:
    check(resolver)
    resolver.asked.clear()
    again = check(resolver, NOW + 600)  # the next run: only the unknown ones
    assert again == {"unknown": 2}
    assert sorted(resolver.asked) == ["192.0.2.14", "192.0.2.15"]

    resolver.asked.clear()  # a reports from another address: looked up at once
    doc = report("a.example.com", WEB1, [])
    store_report("a.example.com", "patchwatch/1", doc, NOW + 700, remote_addr="198.51.100.7")
    assert process_pending(NOW + 700) == {"processed": 1}
    assert check(resolver, NOW + 900, names=["a.example.com"]) == {"match": 1}
    assert resolver.asked == ["198.51.100.7"]

    resolver.asked.clear()  # a day later every enabled host is looked up again
    assert sum(check(resolver, NOW + 90_000).values()) == 7
    resolver.asked.clear()
    assert sum(check(resolver, NOW + 600, force=True).values()) == 7


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_cli_switches_and_runs_the_check_without_leaving_the_machine(
    db, database_url: str, tmp_path: Path
) -> None:
    """``hosts check-dns`` with the system resolver, in a network namespace of its own
    (``unshare -n``): 127.0.0.1 is answered by /etc/hosts, nothing goes out."""
    unshare = shutil.which("unshare")
    if unshare is None or subprocess.run([unshare, "-n", "true"], check=False).returncode:
        require_or_skip("PATCHWATCH_TEST_REQUIRE_ORACLES", "unshare -n is not available")
    local = socket.gethostbyaddr("127.0.0.1")[0]
    for name in ("web1.example.com", local):
        store_report(name, "patchwatch/1", report(name, WEB1, []), NOW, remote_addr="127.0.0.1")
    assert process_pending(NOW) == {"processed": 2}
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path),
           "PATCHWATCH_DATABASE_URL": database_url}  # fmt: skip

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([unshare, "-n", sys.executable, "-m", "patchwatch", *args],
                              cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=60)  # fmt: skip

    out = cli("hosts", "check-dns")
    assert (out.returncode, out.stderr.strip()) == (0, "checked: no host was due"), out.stderr
    assert cli("os", "set", "debian", "--reverse-dns", "yes").stdout.startswith(
        "reverse DNS check on for Debian 12: 2 hosts follow it")  # fmt: skip
    out = cli("hosts", "check-dns", "--format", "json")
    assert out.stderr.strip() == "checked: 1 match, 1 mismatch", out.stderr
    (row,) = json.loads(out.stdout)
    assert (row["name"], row["reverse_dns_status"], row["reverse_dns_name"]) == (
        "web1.example.com", "mismatch", local)  # fmt: skip
    shown = cli("hosts", "show", "web1.example.com").stdout
    assert f"127.0.0.1 resolves to {local}, not to the host's name" in shown
    out = cli("hosts", "set", "web1.example.com", "--reverse-dns", "no", "--format", "json")
    assert json.loads(out.stdout)["reverse_dns_check"] is False
    bad = cli("hosts", "set", "web1.example.com", "--reverse-dns", "sometimes")
    assert bad.returncode == 2 and "expected yes, no or os" in bad.stderr
    assert "reverse DNS check:   no" in cli("hosts", "show", "web1.example.com").stdout


def test_the_migration_adds_the_columns_to_an_older_store_and_is_idempotent(db) -> None:
    from patchwatch.store.migrations import MIGRATIONS
    from patchwatch.store.migrations import migrate
    from patchwatch.store.models import SchemaVersion

    (step,) = [m for m in MIGRATIONS if "reverse DNS" in m.description]
    step.apply(db)  # on a store made from the current models: nothing to add
    Host.create(name="old.example.com", created_at=NOW)
    for table, column in (("host", "reverse_dns_check"), ("host", "reverse_dns_status"),
                          ("host", "reverse_dns_address"), ("host", "reverse_dns_name"),
                          ("host", "reverse_dns_checked_at"),
                          ("os_release", "reverse_dns_check")):  # fmt: skip
        db.execute_sql(f'ALTER TABLE "{table}" DROP COLUMN "{column}"')
    SchemaVersion.delete().where(SchemaVersion.version >= step.version).execute()
    assert step.version in migrate(db)
    old = Host.get(Host.name == "old.example.com")
    assert (old.reverse_dns_check, old.reverse_dns_status, old.reverse_dns_checked_at) == (
        None, "", None)  # fmt: skip
    assert host_overview(old, NOW)["reverse_dns_check"] is False
