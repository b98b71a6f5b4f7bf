"""Unknown is never 0, and the reboot flag has one derivation from two stored inputs.

Hosts in every state, through the real path (reports stored and processed, a real
rpm-md mirror on loopback, the follow-up computing): the CLI, the API, ``attention``
and the exporter say ``unknown`` with the reason where nothing is known, and show the
counts of hosts whose updates are. On SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from peewee import PostgresqlDatabase

from patchwatch.domain.reboot import reboot_required
from patchwatch.domain.settings import Settings
from patchwatch.inventory.attention import attention
from patchwatch.pipeline.hostupdates import refresh_host_updates
from patchwatch.pipeline.processing import NATIVE
from patchwatch.pipeline.processing import process_pending
from patchwatch.pipeline.processing import store_report
from patchwatch.receiver.app import create_app
from patchwatch.store.db import database
from patchwatch.store.migrations import MIGRATIONS
from patchwatch.store.migrations import _host_update_state
from patchwatch.store.migrations import migrate
from patchwatch.store.models import Host
from patchwatch.store.models import SchemaVersion
from patchwatch.store.queries import HostFilter
from patchwatch.store.queries import host_detail
from patchwatch.store.queries import host_summaries
from patchwatch.store.tokens import create_token
from tests.test_cli_operators import cli
from tests.test_exporter import registry_for
from tests.test_fetch import MirrorServer
from tests.test_followup import follow_up
from tests.test_followup import mirror  # noqa: F401 (a fixture)
from tests.test_followup import report
from tests.test_followup import rpm_report
from tests.test_refresh import NOW

# --- the reboot flag ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reported", "kernel", "flag"),
    [
        (None, None, None), (False, None, False), (None, False, False), (False, False, False),
        (True, None, True), (True, False, True), (None, True, True), (False, True, True),
    ],
)  # fmt: skip
def test_the_flag_is_either_input_and_unknown_only_when_neither_says_anything(
    reported: bool | None, kernel: bool | None, flag: bool | None
) -> None:
    assert reboot_required(reported, kernel) is flag


def debian_report(host: str, reboot: bool | None, tags: tuple[str, ...] = ()) -> dict[str, Any]:
    """A Debian host running 6.1.0-28 with 6.1.0-29 installed: it needs a reboot."""
    kernels = [("linux-image-6.1.0-28-amd64", "6.1.119"), ("linux-image-6.1.0-29-amd64", "6.1.123")]
    return {
        "version": 1, "host": host, "kernel": "6.1.0-28-amd64", "arch": "x86_64",
        "os": {"id": "debian", "version_id": "12", "name": "Debian GNU/Linux",
               "pretty_name": "Debian GNU/Linux 12 (bookworm)"},
        "tags": list(tags), "reboot_required": reboot, "repositories": [],
        "packages": [{"name": n, "version": v, "release": "1", "arch": "amd64", "type": "deb"}
                     for n, v in kernels],
    }  # fmt: skip


def flags(name: str) -> tuple[bool | None, bool | None, bool | None, float | None]:
    """The host's two inputs, the derived flag, and the exported sample."""
    host = Host.get(Host.name == name)
    exported = registry_for(database).get_sample_value(
        "patchwatch_host_reboot_required", {"host": name}
    )
    return host.reboot_reported, host.reboot_kernel, host.reboot_required, exported


def test_the_same_report_twice_leaves_the_reboot_flag_unchanged(db: object) -> None:
    """A host with no signal of its own and a newer kernel installed needs a reboot: a
    second identical report must not turn that off until the next computation."""
    name = "kernel.example.com"
    report(debian_report(name, None), NOW)
    assert flags(name) == (None, None, None, None)  # nothing says anything yet
    refresh_host_updates(NOW + 1)
    assert flags(name) == (None, True, True, 1.0)
    report(debian_report(name, None, tags=("again",)), NOW + 10)  # the same, processed
    assert flags(name) == (None, True, True, 1.0)
    report(debian_report(name, None), NOW + 20)
    assert flags(name) == (None, True, True, 1.0)
    refresh_host_updates(NOW + 21)
    assert flags(name) == (None, True, True, 1.0)

    report(debian_report(name, False), NOW + 30)  # the host says no: the kernel still says yes
    assert flags(name) == (False, True, True, 1.0)
    report(debian_report(name, True), NOW + 40)
    assert flags(name) == (True, True, True, 1.0)


# --- inputs changed -------------------------------------------------------------------------


def test_inputs_move_forward_on_each_change_even_within_one_batch(db: object) -> None:
    """Two changing reports of one host in one processing run get two distinct times, so a
    computation that read the first is not taken for one of the second."""
    url = "http://mirror.invalid/rpm"
    store_report("a.example.com", NATIVE, rpm_report("a.example.com", url), NOW)
    process_pending(NOW + 1)
    first = Host.get(Host.name == "a.example.com").inputs_changed_at
    assert first == NOW + 1
    store_report("a.example.com", NATIVE, rpm_report("a.example.com", url, hello="1.1"), NOW + 2)
    store_report("a.example.com", NATIVE, rpm_report("a.example.com", url, hello="1.2"), NOW + 3)
    process_pending(NOW + 1)  # one run, one ``now``: the clock says nothing new
    second = Host.get(Host.name == "a.example.com").inputs_changed_at
    assert second > first
    store_report("a.example.com", NATIVE,
                 rpm_report("a.example.com", url, hello="1.2", tags=("x",)), NOW + 4)  # fmt: skip
    process_pending(NOW + 5)
    assert Host.get(Host.name == "a.example.com").inputs_changed_at == second  # no change


# --- the states as the CLI, the API and attention tell them ---------------------------------


@pytest.fixture
def fleet(db: object, mirror: MirrorServer) -> MirrorServer:  # noqa: F811
    """Hosts in every state: current, stale, and unknown for each reason."""
    good, missing = mirror.url("rpm"), mirror.url("missing")
    report(rpm_report("current.example.com", good), NOW)
    report(rpm_report("stale.example.com", good), NOW)
    report(rpm_report("failing.example.com", missing), NOW)
    follow = follow_up()
    follow.run(NOW + 1)
    report(rpm_report("stale.example.com", good, hello="1.1"), NOW + 10)
    report(rpm_report("computing.example.com", good), NOW + 10)
    report(rpm_report("unread.example.com", mirror.url("other")), NOW + 10)
    norepo = rpm_report("norepo.example.com", good)
    norepo["repositories"] = []
    report(norepo, NOW + 10)
    return mirror


STATES = {
    "current.example.com": ("current", ""),
    "stale.example.com": ("stale", "its last report changed them; the computation is due"),
    "computing.example.com": ("unknown", "updates not computed yet"),
    "unread.example.com": ("unknown", "mirrors not read yet"),
    "norepo.example.com": ("unknown", "it reported no repositories"),
}


def test_listings_say_unknown_and_why_never_zero(fleet: MirrorServer) -> None:
    rows = {r["name"]: r for r in host_summaries(HostFilter(), NOW + 20)}
    for name, (state, reason) in STATES.items():
        assert (rows[name]["updates_state"], rows[name]["updates_reason"]) == (state, reason)
    failing = rows["failing.example.com"]
    assert failing["updates_state"] == "unknown"
    assert failing["updates_reason"].startswith(
        f"repository rpm t x86_64 {fleet.url('missing')} failed to refresh: "
    )
    for name, row in rows.items():
        if row["updates_state"] == "unknown":
            assert (row["security_updates"], row["other_updates"]) == (None, None), name
            assert row["updates_computed_at"] is None
    assert (rows["current.example.com"]["security_updates"], rows["current.example.com"][
        "other_updates"]) == (1, 0)  # fmt: skip
    assert rows["stale.example.com"]["security_updates"] == 1  # the last known numbers
    insecure = {r["name"] for r in host_summaries(HostFilter(security=True), NOW)}
    assert insecure == {"current.example.com", "stale.example.com"}
    secure = {r["name"] for r in host_summaries(HostFilter(security=False), NOW)}
    assert secure == set()  # an unknown host is not "without security updates"

    detail = host_detail(Host.get(Host.name == "unread.example.com"))
    assert (detail["updates_state"], detail["updates_reason"]) == STATES["unread.example.com"]

    items = {i["subject"]: i for i in attention(NOW + 20) if i["issue"] == "updates_unknown"}
    assert set(items) == {"computing.example.com", "unread.example.com", "failing.example.com"}
    assert items["unread.example.com"]["detail"] == "pending updates unknown: mirrors not read yet"


def test_the_cli_and_the_api_say_unknown(
    db: object, fleet: MirrorServer, database_url: str, tmp_path: Path
) -> None:
    proc = cli(database_url, "hosts", "list", home=tmp_path)
    assert proc.returncode == 0, proc.stderr
    # names are cut to fit 80 columns: their first label tells them apart
    lines = {line.split(".")[0]: line.split() for line in proc.stdout.splitlines()[1:]}
    assert lines["unread"][-6:-3] == ["unknown", "unknown", "unknown"]  # SEC OTHER HELD
    assert lines["current"][-6:-3] == ["1", "0", "0"]
    assert "updates unknown for 1 host: mirrors not read yet" in proc.stderr.splitlines()
    proc = cli(database_url, "hosts", "show", "unread.example.com", home=tmp_path)
    shown = [line.split() for line in proc.stdout.splitlines()]
    assert ["updates:", "unknown:", "mirrors", "not", "read", "yet"] in shown
    assert ["pending", "updates", "(unknown):"] in shown
    proc = cli(database_url, "hosts", "list", "--format", "json", home=tmp_path)
    row = next(r for r in json.loads(proc.stdout) if r["name"] == "norepo.example.com")
    assert (row["security_updates"], row["updates_state"]) == (None, "unknown")

    app = create_app(Settings(data_dir=str(tmp_path), process_inline=False), db=db)
    client = app.test_client()
    _, admin = create_token("admin", time.time())
    auth = {"Authorization": f"Bearer {admin}"}
    items = {h["name"]: h for h in client.get("/api/v1/hosts", headers=auth).get_json()["items"]}
    assert items["computing.example.com"]["security_updates"] is None
    assert items["computing.example.com"]["updates_reason"] == "updates not computed yet"
    one = client.get("/api/v1/hosts/norepo.example.com", headers=auth).get_json()
    assert (one["updates_state"], one["updates_reason"]) == STATES["norepo.example.com"]


def test_unknown_hosts_have_no_update_series_through_the_real_path(fleet: MirrorServer) -> None:
    get = registry_for(database).get_sample_value
    pending = "patchwatch_host_updates_pending"
    assert get(pending, {"host": "current.example.com", "kind": "security"}) == 1
    assert get(pending, {"host": "stale.example.com", "kind": "security"}) == 1
    for name in ("computing", "unread", "norepo", "failing"):
        assert get(pending, {"host": f"{name}.example.com", "kind": "security"}) is None, name
    computed = "patchwatch_host_updates_computed_timestamp_seconds"
    changed = "patchwatch_host_updates_inputs_changed_timestamp_seconds"
    stale = {"host": "stale.example.com"}
    assert get(changed, stale) > get(computed, stale)  # type: ignore[operator]
    current = {"host": "current.example.com"}
    assert get(changed, current) <= get(computed, current)  # type: ignore[operator]

    follow_up().run(NOW + 30)  # the follow-up catches up: nothing stale any more
    assert get(changed, stale) <= get(computed, stale)  # type: ignore[operator]
    assert get(pending, {"host": "stale.example.com", "kind": "security"}) == 0
    assert get(pending, {"host": "computing.example.com", "kind": "security"}) == 1


# --- the migration ----------------------------------------------------------------------------


def test_migration_keeps_the_kernels_part_of_the_reboot_flag(db: object) -> None:
    """A store from before: the stored flag it cannot explain by the host's own signal
    came from the kernel; computed hosts stay known until their next computation."""
    postgres = isinstance(db, PostgresqlDatabase)
    for column in ("reboot_kernel", "inputs_changed_at", "updates_inputs_at", "updates_complete"):
        db.execute_sql(f'ALTER TABLE "host" DROP COLUMN "{column}"')  # type: ignore[attr-defined]
    kind = "BOOLEAN NOT NULL DEFAULT FALSE" if postgres else "INTEGER NOT NULL DEFAULT 0"
    db.execute_sql(f'ALTER TABLE "host" ADD COLUMN "reboot_required" {kind}')  # type: ignore[attr-defined]
    true, false = ("TRUE", "FALSE") if postgres else ("1", "0")
    rows = [  # name, reported, required, computed, orphans
        ("kernel", "NULL", true, "5", "0"), ("signal", true, true, "5", "0"),
        ("said-no", false, true, "5", "0"), ("quiet", "NULL", false, "NULL", "NULL"),
        ("partial", "NULL", false, "5", "NULL"),
    ]  # fmt: skip
    for name, reported, required, computed, orphans in rows:
        db.execute_sql(  # type: ignore[attr-defined]
            'INSERT INTO "host" (name, domain, os_variant, kernel, arch, tags, reboot_reported, '
            "reboot_required, use_os_repositories, check_updates, agent, protocol, remote_addr, "
            "created_at, last_processed_at, updates_computed_at, packages_without_repository) "
            f"VALUES ('{name}', '', '', '', '', '', {reported}, {required}, {false}, {true}, "
            f"'', '', '', 1, 3, {computed}, {orphans})"
        )
    step = next(m for m in MIGRATIONS if m.apply is _host_update_state)  # its number may move
    SchemaVersion.delete().where(SchemaVersion.version >= step.version).execute()

    assert step.version in migrate(db)  # type: ignore[arg-type]
    hosts = {h.name: h for h in Host.select()}
    assert {n: (h.reboot_kernel, h.reboot_required) for n, h in hosts.items()} == {
        "kernel": (True, True), "signal": (None, True), "said-no": (True, True),
        "quiet": (None, None), "partial": (None, None),
    }  # fmt: skip
    assert {n: (h.updates_complete, h.updates_inputs_at) for n, h in hosts.items()} == {
        "kernel": (True, 3), "signal": (True, 3), "said-no": (True, 3),
        "quiet": (False, None), "partial": (False, None),
    }  # fmt: skip
    assert {h.inputs_changed_at for h in hosts.values()} == {3}
    assert "reboot_required" not in {c.name for c in db.get_columns("host")}  # type: ignore[attr-defined]
