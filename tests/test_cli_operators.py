"""The operator CLI driven as a person or a cron job would: a subprocess on a real store.

Every failure is one line on stderr and a non-zero exit, never a traceback; tables fit
80 columns; prompts and progress appear only on a terminal (tested through a pty).
"""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from patchwatch.cli.output import render_table
from patchwatch.pipeline.hostupdates import refresh_host_updates
from patchwatch.pipeline.processing import process_pending
from patchwatch.pipeline.processing import store_report
from patchwatch.store.models import Host
from patchwatch.store.models import HostUpdate
from patchwatch.store.models import Repository
from tests.support.cli import SQLITE_ONLY
from tests.support.cli import cli
from tests.support.cli import cli_env
from tests.support.cli import fails
from tests.support.fleets import MAIN
from tests.support.fleets import SECURITY
from tests.support.fleets import WEB1
from tests.support.fleets import WEB2
from tests.support.fleets import report
from tests.support.fleets import seed_fleet
from tests.support.paths import ROOT


def test_table_cuts_the_widest_column_first_with_an_ellipsis() -> None:
    rows = [{"name": "a" * 120, "os": "Debian GNU/Linux 12 (bookworm)", "sec": 3},
            {"name": "short", "os": "Rocky", "sec": 12}]  # fmt: skip
    lines = render_table(rows, [("name", "host"), ("os", "os"), ("sec", "sec")], 80)
    head, first, second = lines.splitlines()
    assert max(len(head), len(first), len(second)) <= 80
    assert first.startswith("a" * 10) and "…  Debian GNU/Linux 12 (bookworm)" in first
    assert first.endswith("  3") and second.endswith(" 12")  # numbers right-aligned, whole


def table(proc: subprocess.CompletedProcess[str]) -> list[str]:
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines and max(len(line) for line in lines) <= 80, proc.stdout
    return lines


@pytest.fixture
def fleet(db, database_url: str, tmp_path: Path):
    ids = seed_fleet(time.time())

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return cli(database_url, *args, home=tmp_path)

    run.ids = ids  # type: ignore[attr-defined]
    run.url = database_url  # type: ignore[attr-defined]
    return run


def test_listings_in_three_formats_on_both_backends(fleet) -> None:
    lines = table(fleet("hosts", "list"))
    assert lines[0].split()[:2] == ["HOST", "OS"] and len(lines) == 6
    rows = json.loads(fleet("hosts", "list", "--security", "--format", "json").stdout)
    assert [r["name"] for r in rows] == ["web1.example.com", "web2.example.com"]
    csv_lines = fleet("hosts", "list", "--stale-days", "5", "--format", "csv").stdout.splitlines()
    assert csv_lines[0].startswith("name,os,") and csv_lines[1].startswith("old1.example.com,")
    assert table(fleet("attention"))[0].split() == ["ISSUE", "SUBJECT", "DETAIL", "SINCE"]
    items = json.loads(fleet("attention", "--format", "json").stdout)
    assert ("reboot_required", "web2.example.com") in {(i["issue"], i["subject"]) for i in items}
    checks = {r["check"]: r for r in json.loads(fleet("dbcheck", "--format", "json").stdout)}
    assert checks["rows in host"]["found"] == 5 and checks["orphan package sets"]["found"] == 0


@SQLITE_ONLY
def test_hosts_show_diff_and_flags(fleet) -> None:
    lines = table(fleet("hosts", "show", "web1"))  # the first label is enough when unique
    assert lines[0].split() == ["host:", "web1.example.com"]
    assert any(line.startswith("openssl") and "3.0.15-1" in line for line in lines)
    detail = json.loads(fleet("hosts", "show", "web1.example.com", "--format", "json").stdout)
    assert len(detail["packages"]) == 5 and detail["check_updates"] is True

    diff = fleet("hosts", "diff", "web1", "web2").stdout.splitlines()
    assert diff[:2] == ["--- web1.example.com", "+++ web2.example.com"]
    assert diff[3:5] == ["- curl 7.88.1-10 amd64", "+ curl 7.88.1-10+deb12u8 amd64"]
    assert "+ htop 3.2.2-2 amd64" in diff and "- tzdata 2024a-0 all" in diff
    as_json = json.loads(fleet("hosts", "diff", "web1", "web2", "--format", "json").stdout)
    assert as_json["packages"]["only_b"][0]["name"] == "htop"

    out = fleet("hosts", "set", "web2", "--maintenance-until", "3d", "--check-updates", "no")
    assert "in maintenance:      yes" in out.stdout
    assert HostUpdate.select().join(Host).where(Host.name == "web2.example.com").count() == 0
    issues = json.loads(fleet("attention", "--format", "json").stdout)
    assert {i["issue"] for i in issues if i["subject"] == "web2.example.com"} == {
        "in_maintenance"}  # fmt: skip
    out = fleet("hosts", "set", "web2", "--maintenance-until", "off", "--format", "json")
    assert json.loads(out.stdout)["in_maintenance"] is False


def test_held_updates_are_shown_apart(fleet) -> None:
    """web1 reports openssl held: its security update moves to "held updates", the
    listing counts it as held, not as security."""
    now = time.time()
    doc = report("web1.example.com", WEB1, [MAIN, SECURITY], tags=["web", "prod"],
                 held=[{"name": "openssl", "arch": "amd64"}])  # fmt: skip
    store_report("web1.example.com", "patchwatch/1", doc, now)
    assert process_pending(now) == {"processed": 1}
    refresh_host_updates(now)

    lines = table(fleet("hosts", "show", "web1"))
    assert "held packages:       openssl:amd64" in lines
    pending = lines.index(next(line for line in lines if line.startswith("pending updates")))
    held = lines.index("held updates (1):")
    assert any(line.startswith("openssl") for line in lines[held:])
    assert not any(line.startswith("openssl") for line in lines[pending:held])
    listed = json.loads(fleet("hosts", "list", "--format", "json").stdout)
    counts = {r["name"]: (r["security_updates"], r["held_updates"]) for r in listed}
    assert counts["web1.example.com"] == (0, 1) and counts["web2.example.com"] == (1, 0)
    head = table(fleet("hosts", "list"))[0].split()
    assert head[:6] == ["HOST", "OS", "PKGS", "SEC", "OTHER", "HELD"]


@SQLITE_ONLY
def test_user_errors_are_one_line_and_never_a_traceback(fleet) -> None:
    fails(fleet("hosts", "show", "nope"), 1, "no host named 'nope'")
    fails(fleet("hosts", "show", "web*"), 2, "matches 2 hosts")
    fails(fleet("hosts", "set", "web1", "--use-os-repos", "maybe"), 2, "expected yes or no")
    fails(fleet("hosts", "set", "web1"), 2, "nothing to set")
    fails(fleet("hosts", "set", "web1", "--maintenance-until", "2001-01-01"), 2, "in the past")
    fails(fleet("hosts", "list", "--stale-days", "-3"), 2, "zero or more")
    fails(fleet("hosts", "frobnicate"), 2, "invalid choice")
    fails(fleet("hosts", "delete", ""), 2, "pattern is required")
    fails(fleet("hosts", "delete", "zz*"), 1, "no host matches")
    fails(fleet("repos", "show", "bookworm"), 2, "matches 3 repositories")
    fails(fleet("repos", "link", "1", "2", "--yes"), 1, "does not look like")
    fails(fleet("os", "show", "plan9"), 1, "no OS release matches")
    fails(fleet("packages", "hosts", "no-such-package"), 1, "no package named")
    fails(fleet("dbcheck", "--format", "yaml"), 2, "invalid choice")
    assert Host.select().count() == 5  # nothing above changed anything


@SQLITE_ONLY
def test_delete_needs_yes_or_a_terminal_and_dry_run_changes_nothing(fleet) -> None:
    fails(fleet("hosts", "delete", "web*"), 2, "refusing to delete 2 hosts without --yes")
    dry = fleet("hosts", "delete", "web*", "--dry-run")
    assert dry.stdout.split() == ["web1.example.com", "web2.example.com"]
    assert Host.select().count() == 5
    assert _with_terminal(fleet.url, ["hosts", "delete", "old1"], b"n\n").returncode == 1
    assert Host.select().where(Host.name == "old1.example.com").exists()
    assert _with_terminal(fleet.url, ["hosts", "delete", "old1"], b"y\n").returncode == 0
    assert not Host.select().where(Host.name == "old1.example.com").exists()
    out = fleet("hosts", "delete", "web*", "--yes")
    assert out.stdout.strip() == "deleted 2 hosts"
    fails(fleet("hosts", "show", "web1"), 1, "no host named")
    before = json.loads(fleet("dbcheck", "--format", "json").stdout)
    assert {r["check"]: r["found"] for r in before}["orphan package sets"] == 3
    fixed_rows = json.loads(fleet("dbcheck", "--fix", "--format", "json").stdout)
    fixed = {r["check"]: r for r in fixed_rows}
    assert fixed["orphan package sets"]["fixed"] == 3
    assert fixed["orphan packages"]["fixed"] is None  # only with --packages


def _with_terminal(url: str, args: list[str], answer: bytes) -> subprocess.CompletedProcess[str]:
    """Run with stdin on a pty, as a person at a terminal, and answer the prompt."""
    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "patchwatch", *args], cwd=ROOT, env=cli_env(url, Path("/tmp")),
            stdin=slave, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        os.write(master, answer)
        out, err = proc.communicate(timeout=60)
    finally:
        os.close(slave)
        os.close(master)
    assert "Traceback" not in err and "[y/N]" in err
    return subprocess.CompletedProcess(args, proc.returncode, out, err)


def _stderr_on_terminal(url: str, args: list[str]) -> tuple[int, str, str]:
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "patchwatch", *args], cwd=ROOT, env=cli_env(url, Path("/tmp")),
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave,
    )  # fmt: skip
    os.close(slave)
    seen = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        seen += chunk
    out = proc.communicate(timeout=60)[0]
    os.close(master)
    return proc.returncode, out.decode(), seen.decode(errors="replace")


@SQLITE_ONLY
def test_progress_only_on_a_terminal_and_never_with_q(fleet) -> None:
    rc, out, err = _stderr_on_terminal(fleet.url, ["dbcheck"])
    assert rc == 0 and "\rdbcheck 0/11 orphan update sets" in err
    assert out.startswith("CHECK") and max(map(len, out.splitlines())) <= 80
    rc, out, err = _stderr_on_terminal(fleet.url, ["dbcheck", "-q"])
    assert rc == 0 and "dbcheck 0/" not in err and out.startswith("CHECK")
    rc, _out, err = _stderr_on_terminal(fleet.url, ["-q", "packages", "orphans"])
    assert rc == 0 and "hosts 0/" not in err
    assert "dbcheck 0/" not in fleet("dbcheck").stderr  # stderr is a pipe here


@SQLITE_ONLY
def test_repositories_os_groups_and_packages(fleet) -> None:
    ids = fleet.ids
    lines = table(fleet("repos", "list"))
    assert lines[0].split()[:3] == ["ID", "REPOSITORY", "SEC"] and len(lines) == 5
    shown = table(fleet("repos", "show", "security.debian"))
    assert ["suite:", "bookworm-security"] in [line.split() for line in shown]
    out = fleet("repos", "security", str(ids["security"]), "no")
    assert "effective: no" in out.stdout
    assert Repository.get_by_id(ids["security"]).security_override is False
    fleet("repos", "disable", str(ids["baseos"]))
    assert Repository.get_by_id(ids["baseos"]).enabled is False
    groups = table(fleet("repos", "possible-mirrors"))
    assert len(groups) == 3 and "same identity" in groups[1]
    out = fleet("repos", "link", str(ids["main"]), str(ids["german"]), "--yes")
    assert out.stdout.startswith("linked 1 into") and "1 mirror moved" in out.stdout
    assert fleet("repos", "possible-mirrors").stderr.strip() == "no repositories look alike"

    assert "Debian 12" in table(fleet("os", "list"))[1]
    out = fleet("os", "add-repo", "debian", str(ids["main"]), str(ids["security"]))
    assert out.stdout.startswith("added 2 repositories to Debian 12")
    assert "repositories (2):" in fleet("os", "show", "Debian 12").stdout
    assert fleet("os", "remove-repo", "1", str(ids["main"])).stdout.startswith(
        "removed 1 repository from Debian 12"
    )

    lines = table(fleet("packages", "hosts", "openssl", "--version", "3.0.14-1"))
    assert [line.split()[0] for line in lines[1:]] == ["db1.example.org", "web1.example.com",
                                                       "web2.example.com"]  # fmt: skip
    assert fleet("packages", "hosts", "htop", "--arch", "arm64").stderr.strip() == (
        "no host has htop installed")  # fmt: skip
    assert table(fleet("packages", "orphans"))[1].split() == ["db1.example.org", "inhouse-tool",
                                                              "1.0-1", "amd64"]  # fmt: skip
    assert fleet("packages", "orphans", "--host", "web1", "--format", "csv").stdout.strip() == (
        "host,name,version,arch")  # fmt: skip


@SQLITE_ONLY
def test_empty_and_missing_databases(database_url: str, tmp_path: Path) -> None:
    missing = f"sqlite:///{tmp_path / 'nowhere' / 'patchwatch.db'}"
    fails(cli(missing, "hosts", "list", home=tmp_path), 1, "no database at")
    assert not (tmp_path / "nowhere" / "patchwatch.db").exists()  # no stray database made
    assert cli(database_url, "migrate", home=tmp_path).returncode == 0
    for args, note in ((("hosts", "list"), "no hosts yet"),
                       (("repos", "list"), "no repositories yet"),
                       (("attention",), "nothing needs attention"),
                       (("packages", "orphans"),
                        "every installed package comes from a repository")):  # fmt: skip
        proc = cli(database_url, *args, home=tmp_path)
        assert (proc.returncode, proc.stdout, proc.stderr.strip()) == (0, "", note)
    assert cli(database_url, "hosts", "list", "--format", "json", home=tmp_path).stdout == "[]\n"
    fails(cli(database_url, "hosts", "show", "web1", home=tmp_path), 1, "no host named")
    fails(cli(database_url, "hosts", "diff", "a", "b", home=tmp_path), 1, "no host named 'a'")
    fails(cli(database_url, "repos", "show", "1", home=tmp_path), 1, "no repository with id 1")
    fails(cli(database_url, "hosts", "delete", "*", "--yes", home=tmp_path), 1, "no host matches")
    assert cli(database_url, "dbcheck", "-q", home=tmp_path).returncode == 0


def _post(base: str, token: str, doc: dict) -> int:
    req = urllib.request.Request(
        base + "/api/v1/reports", data=json.dumps(doc).encode(), method="POST",
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
    )  # fmt: skip
    with urllib.request.urlopen(req, timeout=10) as resp:
        return int(resp.status)


def _api(base: str, token: str, path: str, method: str = "GET") -> dict:
    req = urllib.request.Request(base + path, method=method,
                                 headers={"Authorization": f"Bearer {token}"})  # fmt: skip
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def test_against_a_real_server_reports_posted_over_http(server_factory) -> None:
    srv = server_factory()
    enroll = srv.cli("token", "create", "--enroll").stdout.strip()
    admin = srv.cli("token", "create", "--admin").stdout.strip()
    for host, packages in (("web1.example.com", WEB1), ("web2.example.com", WEB2)):
        assert _post(srv.base, enroll, report(host, packages, [MAIN, SECURITY])) == 202
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:  # processed inline right after the answer
        names = [h["name"] for h in json.loads(srv.cli("hosts", "list", "--format",
                                                       "json").stdout)]  # fmt: skip
        if len(names) == 2:
            break
        time.sleep(0.2)
    assert names == ["web1.example.com", "web2.example.com"]
    diff = srv.cli("hosts", "diff", "web1", "web2")
    assert diff.returncode == 0 and "+ htop 3.2.2-2 amd64" in diff.stdout.splitlines()
    body = _api(srv.base, admin, "/api/v1/hosts/web1.example.com/diff/web2.example.com")
    assert body["packages"]["only_b"] == [{"name": "htop", "arch": "amd64", "version": "3.2.2-2"}]
    items = _api(srv.base, admin, "/api/v1/attention")["items"]
    # no mirror could be read here (no egress): never read, or failing once tried
    assert {"repo_no_data", "mirror_failing"} & {i["issue"] for i in items}
    assert _api(srv.base, admin, "/api/v1/hosts/web2.example.com", "DELETE") == {
        "deleted": ["web2.example.com"]}  # fmt: skip
    shown = srv.cli("hosts", "show", "web2")
    assert shown.returncode == 1 and shown.stderr.strip() == (
        "patchwatch hosts show: no host named 'web2'")  # fmt: skip
