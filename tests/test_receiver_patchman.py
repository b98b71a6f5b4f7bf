"""Stock Patchman clients switch by changing the URL: requests built as its curl builds them.

The Patchman client is a bash script that calls curl: protocol 1 with one ``-F name=<file``
multipart part per field, protocol 2 with ``-d @file`` and ``Authorization: Api-Key``.
These tests run the real curl the same way against the real server under gunicorn.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from patchwatch.store.db import open_database
from patchwatch.store.models import Host
from patchwatch.store.models import Report
from tests.support.paths import FIXTURES

P1_FIELDS = ("host", "tags", "kernel", "arch", "protocol", "os", "report", "packages", "repos",
             "modules", "sec_updates", "bug_updates", "reboot")  # fmt: skip


@pytest.fixture(autouse=True)
def _need_curl() -> None:
    if not shutil.which("curl"):
        pytest.fail("curl is required (scripts/dev.sh installs it)")


def curl_protocol1(base: str, folder: Path) -> subprocess.CompletedProcess[str]:
    cmd = ["curl", "-sS", "--connect-timeout", "60", "--max-time", "300",
           "-w", "\n%{http_code}"]  # fmt: skip
    for field in P1_FIELDS:
        # the client passes small values inline and the long ones from temp files
        if field in ("packages", "repos", "modules", "sec_updates", "bug_updates"):
            cmd += ["-F", f"{field}=<{folder / field}"]
        else:
            cmd += ["-F", f"{field}={(folder / field).read_text().strip()}"]
    cmd.append(f"{base}/reports/upload/")
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


def curl_protocol2(base: str, doc_path: Path, key: str) -> subprocess.CompletedProcess[str]:
    cmd = ["curl", "-sS", "-X", "POST", "-H", "Content-Type: application/json",
           "-H", f"Authorization: Api-Key {key}", "-d", f"@{doc_path}",
           "-w", "\n%{http_code}", f"{base}/api/report/"]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


def split(out: subprocess.CompletedProcess[str]) -> tuple[int, str]:
    body, _, code = out.stdout.rpartition("\n")
    return int(code), body


def wait_for_host(url: str, name: str, timeout: float = 20) -> Host:
    db = open_database(url)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with db.connection_context():
            host = Host.get_or_none(Host.name == name)
            if host is not None and host.package_set_id is not None:
                return host
        time.sleep(0.1)
    raise AssertionError(f"host {name} was not processed")


def test_protocol1_debian_client_gets_204_and_the_host_appears(server_factory) -> None:
    srv = server_factory({"PATCHWATCH_PROTOCOL1_NETWORKS": "127.0.0.0/8"})
    code, body = split(curl_protocol1(srv.base, FIXTURES / "reports/patchman1-debian12"))
    assert code == 204, body
    host = wait_for_host(srv.database_url, "web01.example.com")
    db = open_database(srv.database_url)
    with db.connection_context():
        host = Host.get_by_id(host.id)
        assert host.package_set.size == 5
        assert host.kernel == "6.1.0-28-amd64"
        assert host.os_release.name == "Debian 12"
        assert host.repository_set.size == 3


def test_protocol1_dpkg_hold_status_reaches_the_host(server_factory, tmp_path) -> None:
    """A client that keeps dpkg's status on the line ('hold ok installed'): the host's
    package is held, through the real server and its processing."""
    folder = tmp_path / "p1"
    shutil.copytree(FIXTURES / "reports/patchman1-debian12", folder)
    packages = (folder / "packages").read_text()
    held_line = "'openssl' '' '3.0.15' '1~deb12u1' 'amd64' 'deb'"
    (folder / "packages").write_text(
        packages.replace(held_line, held_line + " 'hold ok installed'")
    )
    srv = server_factory({"PATCHWATCH_PROTOCOL1_NETWORKS": "127.0.0.0/8"})
    code, body = split(curl_protocol1(srv.base, folder))
    assert code == 204, body
    host = wait_for_host(srv.database_url, "web01.example.com")
    with open_database(srv.database_url).connection_context():
        host = Host.get_by_id(host.id)
        assert host.held == '[["openssl","amd64"]]'
        assert host.package_set.size == 5  # the status is not part of the package


def test_protocol1_report_true_gets_the_text_echo(server_factory) -> None:
    srv = server_factory({"PATCHWATCH_PROTOCOL1_NETWORKS": "127.0.0.0/8"})
    code, body = split(curl_protocol1(srv.base, FIXTURES / "reports/patchman1-rocky9"))
    assert code == 200
    assert "host: db01.example.com" in body
    assert "openssl | 1 | 3.2.2 | 6.el9_5 | x86_64 | rpm" in body


def test_protocol1_is_403_by_default(server_factory) -> None:
    srv = server_factory()
    code, body = split(curl_protocol1(srv.base, FIXTURES / "reports/patchman1-debian12"))
    assert code == 403
    assert "protocol1_networks" in body


def test_protocol2_with_api_key_then_a_hook_report_keeps_repositories(server_factory) -> None:
    srv = server_factory()
    made = srv.cli("token", "create", "--host", "db01.example.com")
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip()
    code, body = split(curl_protocol2(srv.base, FIXTURES / "reports/patchman2-rocky9.json", key))
    assert code == 202, body
    answer = json.loads(body)
    assert answer["status"] == "accepted" and isinstance(answer["report_id"], int)
    host = wait_for_host(srv.database_url, "db01.example.com")
    repos_before = host.repository_set_id
    assert repos_before is not None

    hook = FIXTURES / "reports/patchman2-rocky9-hook.json"
    code, body = split(curl_protocol2(srv.base, hook, key))
    assert code == 202, body
    db = open_database(srv.database_url)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with db.connection_context():
            host = Host.get(Host.name == "db01.example.com")
            if host.package_set.size == 3:  # gpg-pubkey is not a package
                break
        time.sleep(0.1)
    with db.connection_context():
        host = Host.get(Host.name == "db01.example.com")
        assert host.package_set.size == 3
        assert host.repository_set_id == repos_before  # a hook report has no repos
        assert Report.select().where(Report.state == "processed").count() == 2


def test_protocol2_bad_key_is_403_with_detail(server_factory) -> None:
    srv = server_factory()
    code, body = split(
        curl_protocol2(srv.base, FIXTURES / "reports/patchman2-rocky9.json", "AbCd1234.nope")
    )
    assert code == 403
    assert "detail" in json.loads(body)


def test_protocol2_malformed_is_400_in_patchmans_shape(server_factory, tmp_path) -> None:
    """A report without the host name it must be routed by is refused at once, in
    Patchman's shape; one invalid further in is stored and fails in processing."""
    srv = server_factory()
    key = srv.cli("token", "create", "--enroll").stdout.strip()
    doc = json.loads((FIXTURES / "reports/patchman2-rocky9.json").read_text())
    doc.pop("hostname")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(doc))
    code, body = split(curl_protocol2(srv.base, bad, key))
    assert code == 400
    answer = json.loads(body)
    assert answer["status"] == "error"
    assert list(answer["errors"]) == ["hostname"]


def test_protocol1_arch_client_reports_pacman_packages_and_repositories(server_factory) -> None:
    """The stock client on Arch Linux: 'arch' package and repository lines, through the
    real server and its processing."""
    from patchwatch.store.models import Mirror
    from patchwatch.store.models import Repository

    srv = server_factory({"PATCHWATCH_PROTOCOL1_NETWORKS": "127.0.0.0/8"})
    code, body = split(curl_protocol1(srv.base, FIXTURES / "reports/patchman1-arch"))
    assert code == 204, body
    host = wait_for_host(srv.database_url, "build02.example.com")
    with open_database(srv.database_url).connection_context():
        host = Host.get_by_id(host.id)
        assert host.package_set.size == 6
        assert (host.os_release.family, host.os_release.name) == ("arch", "Arch Linux")
        assert host.repository_set.size == 3
        repos = {r.repo_id: r for r in Repository.select()}
        assert set(repos) == {"core", "extra", "pwlocal"}
        assert {r.kind for r in repos.values()} == {"arch"}
        urls = {m.url for m in Mirror.select().where(Mirror.repository == repos["core"].id)}
        assert urls == {
            "https://geo.mirror.pkgbuild.com/core/os/x86_64",
            "https://mirror.rackspace.com/archlinux/core/os/x86_64",
        }


def test_protocol2_arch_client_is_accepted(server_factory) -> None:
    srv = server_factory()
    made = srv.cli("token", "create", "--host", "build02.example.com")
    assert made.returncode == 0, made.stderr
    code, body = split(
        curl_protocol2(srv.base, FIXTURES / "reports/patchman2-arch.json", made.stdout.strip())
    )
    assert code == 202, body
    host = wait_for_host(srv.database_url, "build02.example.com")
    with open_database(srv.database_url).connection_context():
        host = Host.get_by_id(host.id)
        assert host.package_set.size == 2 and host.repository_set.size == 2
