"""One credential per host, on both backends.

The report that enrolls a host gets it its own token; from then on only that token
writes it. Revoking the enrollment token stops new enrollments and nothing else; a
revoked host token leaves the host bound (no enrollment token, no protocol 1) until
an operator releases it. An agent whose enrollment answer was lost asks again with
the enrollment key it kept. Hosts bound to an enrollment token before keep working
until their agent asks for a token of its own. Host names are one key in reports and
in the CLI (``web3.`` is ``web3``; ``web1..`` is refused).
"""

from __future__ import annotations

import secrets
import time
from pathlib import Path

import pytest

from patchwatch.domain.settings import Settings
from patchwatch.receiver.app import create_app
from patchwatch.store.models import HostCredential
from patchwatch.store.models import Report
from patchwatch.store.models import Token
from patchwatch.store.tokens import create_token
from patchwatch.store.tokens import release_host
from patchwatch.store.tokens import revoke_token
from tests.test_cli_operators import cli
from tests.test_cli_operators import fails
from tests.test_receiver_ingest import native_doc
from tests.test_receiver_ingest import post

KEY_HEADER = "X-Patchwatch-Enrollment-Key"


@pytest.fixture
def client(db, tmp_path):
    settings = Settings(
        data_dir=str(tmp_path), process_inline=False, protocol1_networks=("127.0.0.0/8",)
    )
    return create_app(settings, db=db).test_client()


def send(client, host: str, token: str, key: str | None = None):
    return post(client, native_doc(host), token=token, headers={KEY_HEADER: key} if key else {})


def p1(client, host: str):
    return client.post("/reports/upload/", data={
        "host": host, "os": "Debian GNU/Linux 12 (bookworm)", "kernel": "6.1.0-28-amd64",
        "arch": "x86_64", "protocol": "1",
        "packages": "'bash' '' '5.2.15' '3+b2' 'amd64' 'deb'\n"})  # fmt: skip


def p2(client, host: str, token: str):
    doc = {"protocol": 2, "hostname": host, "arch": "x86_64", "kernel": "5.14.0",
           "os": "Rocky Linux 9.5 (Blue Onyx)", "packages": [
               {"name": "bash", "epoch": "", "version": "5.1.8", "release": "9.el9",
                "arch": "x86_64", "type": "rpm"}], "repos": []}  # fmt: skip
    return client.post("/api/report/", json=doc, headers={"Authorization": f"Api-Key {token}"})


def test_enrollment_hands_the_host_its_own_token(client) -> None:
    enroll_token = create_token("enroll", time.time())[1]
    r = send(client, "web1.example.com", enroll_token)
    assert r.status_code == 202
    answer = r.get_json()
    own = answer["host_token"]
    assert answer["host"] == "web1.example.com"
    assert r.headers["Cache-Control"] == "no-store"
    token = Token.get(Token.prefix == own.split("_")[1])
    assert (token.kind, token.host_name) == ("host", "web1.example.com")
    assert own not in str([t.secret_hash for t in Token.select()])  # only its hash is kept
    # from now on the host's token writes it, and the enrollment token cannot
    assert send(client, "web1.example.com", own).status_code == 202
    r = send(client, "web1.example.com", enroll_token)
    assert r.status_code == 403 and "own token" in r.get_json()["error"]
    assert send(client, "web2.example.com", own).status_code == 403  # nor other hosts
    assert Report.select().count() == 2


def test_revoking_the_enrollment_token_stops_enrollments_and_nothing_else(client) -> None:
    tok, enroll_token = create_token("enroll", time.time())
    own = send(client, "web1.example.com", enroll_token).get_json()["host_token"]
    revoke_token(tok.prefix, time.time())
    assert send(client, "web1.example.com", own).status_code == 202
    assert send(client, "web9.example.com", enroll_token).status_code == 401
    assert HostCredential.select().count() == 1


def test_a_revoked_host_token_leaves_the_host_bound_until_released(client) -> None:
    enroll_token = create_token("enroll", time.time())[1]
    own = send(client, "web1.example.com", enroll_token).get_json()["host_token"]
    revoke_token(own.split("_")[1], time.time())
    assert send(client, "web1.example.com", own).status_code == 401
    r = send(client, "web1.example.com", enroll_token)
    assert r.status_code == 403 and "token release web1.example.com" in r.get_json()["error"]
    r = p1(client, "web1.example.com")  # from a network allowed for protocol 1
    assert r.status_code == 403
    released = release_host("web1.example.com", time.time())
    assert released.prefix == own.split("_")[1]
    assert p1(client, "web1.example.com").status_code == 204
    again = send(client, "web1.example.com", enroll_token)
    assert again.status_code == 202 and again.get_json()["host_token"] != own


def test_an_agent_that_lost_its_enrollment_answer_asks_again_with_its_key(client) -> None:
    enroll_token = create_token("enroll", time.time())[1]
    key = secrets.token_urlsafe(32)
    first = send(client, "web1.example.com", enroll_token, key).get_json()["host_token"]
    # the answer never arrived: the agent sends its report again, with the same key
    r = send(client, "web1.example.com", enroll_token, key)
    assert r.status_code == 202
    second = r.get_json()["host_token"]
    assert second != first
    assert send(client, "web1.example.com", first).status_code == 401  # replaced: revoked
    assert send(client, "web1.example.com", second).status_code == 202
    # another key, or no key, is another machine claiming the name: refused
    assert (
        send(client, "web1.example.com", enroll_token, secrets.token_urlsafe(32)).status_code == 403
    )
    assert send(client, "web1.example.com", enroll_token).status_code == 403
    # a token the operator revoked is not brought back by the key
    revoke_token(second.split("_")[1], time.time())
    assert send(client, "web1.example.com", enroll_token, key).status_code == 403
    r = send(client, "web1.example.com", enroll_token, "short")
    assert r.status_code == 400 and r.get_json()["where"] == "headers"


def test_hosts_bound_to_an_enrollment_token_before_keep_reporting_until_they_ask(client) -> None:
    """A store from before per-host tokens: the host is bound to the enrollment token."""
    tok, enroll_token = create_token("enroll", time.time())
    HostCredential.create(host_name="old.example.com", token=tok, bound_at=time.time())
    r = send(client, "old.example.com", enroll_token)  # an agent that knows nothing new
    assert r.status_code == 202 and "host_token" not in r.get_json()
    r = send(client, "old.example.com", enroll_token, secrets.token_urlsafe(32))  # upgraded
    own = r.get_json()["host_token"]
    assert send(client, "old.example.com", enroll_token).status_code == 403
    assert send(client, "old.example.com", own).status_code == 202


def test_patchman_protocol2_needs_a_host_token(client) -> None:
    enroll_token = create_token("enroll", time.time())[1]
    r = p2(client, "db01.example.com", enroll_token)
    assert r.status_code == 403
    assert "token create --host db01.example.com" in r.get_json()["detail"]
    host_token = create_token("host", time.time(), "db01.example.com")[1]
    assert p2(client, "db01.example.com", host_token).status_code == 202
    assert p2(client, "DB01.example.com.", host_token).status_code == 202  # one name
    assert Report.select().count() == 2


def test_host_names_are_one_key_in_reports(client) -> None:
    own = create_token("host", time.time(), "web3")[1]
    assert send(client, "web3.", own).status_code == 202
    assert send(client, "WEB3", own).status_code == 202
    r = send(client, "web1..", own)
    assert r.status_code == 400 and r.get_json()["where"] == "host"
    assert {r.host_name for r in Report.select()} == {"web3"}


def test_token_create_for_a_bound_host_asks_for_force(db, database_url, tmp_path: Path) -> None:
    home = tmp_path
    out = cli(database_url, "token", "create", "--host", "Web3.", home=home)
    assert out.returncode == 0, out.stderr
    first = out.stdout.strip()
    binding = HostCredential.get(HostCredential.host_name == "web3")  # as reports name it
    assert binding.token.prefix == first.split("_")[1]
    fails(cli(database_url, "token", "create", "--host", "web3", home=home), 1, "--force")
    assert HostCredential.get(HostCredential.host_name == "web3").token_id == binding.token_id
    out = cli(database_url, "token", "create", "--host", "web3", "--force", home=home)
    assert out.returncode == 0 and "was bound to host token" in out.stderr
    assert Token.get(Token.prefix == first.split("_")[1]).revoked_at is not None
    # a revoked binding is replaced without --force: the operator is giving a new token
    second = out.stdout.strip()
    revoke = cli(database_url, "token", "revoke", second.split("_")[1], home=home)
    assert "stays bound" in revoke.stderr
    assert cli(database_url, "token", "create", "--host", "web3", home=home).returncode == 0
    out = cli(database_url, "token", "release", "WEB3.", home=home)
    assert out.returncode == 0 and "released web3" in out.stdout
    assert not HostCredential.select().where(HostCredential.host_name == "web3").exists()
    fails(cli(database_url, "token", "release", "web3", home=home), 1, "not bound")


@pytest.mark.parametrize("days", ["-3", "0", "nan", "inf", "soon"])
def test_token_expiry_must_be_days_ahead(db, database_url, tmp_path: Path, days) -> None:
    out = cli(database_url, "token", "create", "--enroll", "--expires-days", days, home=tmp_path)
    assert out.returncode == 2 and "--expires-days" in out.stderr, out.stderr
    assert Token.select().count() == 0


@pytest.mark.parametrize("name", ["web1..", "a..b", ".web", "we b"])
def test_token_create_refuses_what_reports_refuse(db, database_url, tmp_path: Path, name) -> None:
    out = cli(database_url, "token", "create", "--host", name, home=tmp_path)
    assert out.returncode == 2 and "not a host name" in out.stderr, out.stderr
    assert Token.select().count() == 0
