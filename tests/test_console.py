"""The web console (receiver/console): sign-in, sessions, CSRF, pages, actions, audit.

Driven through Flask's test client on both backends; tests/test_console_browser.py
drives the same pages in a real headless Chromium.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from patchwatch.domain.settings import Settings
from patchwatch.receiver.app import create_app
from patchwatch.receiver.console.session import COOKIE
from patchwatch.store.migrations import migrate
from patchwatch.store.models import AuditEntry
from patchwatch.store.models import Host
from patchwatch.store.models import Repository
from patchwatch.store.models import Token
from patchwatch.store.tokens import create_token
from patchwatch.store.tokens import revoke_token
from tests.support.console import csrf_of
from tests.support.console import seed_fleet

ROOT = Path(__file__).resolve().parent.parent


def make_client(db, tmp_path, **settings):
    app = create_app(Settings(data_dir=str(tmp_path), process_inline=False, **settings), db=db)
    return app.test_client()


def sign_in(client, token: str, next_path: str = ""):
    csrf = csrf_of(client.get("/ui/login").get_data(as_text=True))
    return client.post("/ui/login", data={"csrf": csrf, "token": token, "next": next_path})


@pytest.fixture
def fleet(db, tmp_path):
    client = make_client(db, tmp_path)
    seed_fleet(client)
    _, admin = create_token("admin", time.time(), comment="laptop")
    _, viewer = create_token("viewer", time.time())
    return client, admin, viewer


def html(response) -> str:
    return response.get_data(as_text=True)


def security_counts(client) -> dict[str, int | None]:
    body = client.get("/api/v1/hosts").get_json()
    return {h["name"]: h["security_updates"] for h in body["items"]}


def test_console_is_off_with_a_clear_page_until_a_token_exists(db, tmp_path) -> None:
    client = make_client(db, tmp_path)
    create_token("enroll", time.time())  # hosts' tokens do not open the console
    r = client.get("/ui/hosts")
    assert r.status_code == 503
    assert "The console is off" in html(r) and "token create --viewer" in html(r)
    create_token("viewer", time.time())
    r = client.get("/ui/hosts")
    assert r.status_code == 303 and r.headers["Location"].startswith("/ui/login")


def test_a_static_admin_token_opens_the_console(db, tmp_path) -> None:
    client = make_client(db, tmp_path, admin_token="pw_static_secret-of-compose")
    r = sign_in(client, "pw_static_secret-of-compose")
    assert r.status_code == 303
    r = client.get("/ui/")
    assert r.status_code == 200 and "static admin token" in html(r)


def test_sign_in_sets_a_secure_http_only_same_site_cookie(fleet) -> None:
    client, admin, _ = fleet
    r = client.get("/ui/nosuch")  # an unknown page says nothing before sign-in either
    assert r.status_code == 303 and r.headers["Location"].startswith("/ui/login?next=")
    r = client.get("/ui/hosts/web1.example.com?q=pkg")
    assert r.status_code == 303
    target = r.headers["Location"]
    assert target.startswith("/ui/login?next=")
    r = sign_in(client, admin, "/ui/hosts/web1.example.com?q=pkg")
    assert r.status_code == 303 and r.headers["Location"] == "/ui/hosts/web1.example.com?q=pkg"
    cookie = r.headers["Set-Cookie"]
    assert cookie.startswith(COOKIE + "=")
    for attribute in ("Secure", "HttpOnly", "SameSite=Lax", "Path=/"):
        assert attribute in cookie
    assert admin.split("_", 2)[2] not in cookie  # the token's secret never leaves the server
    r = client.get("/ui/hosts/web1.example.com")
    assert r.status_code == 200 and "admin token" in html(r) and "(laptop)" in html(r)
    assert "script-src" not in r.headers["Content-Security-Policy"]
    assert "default-src 'none'" in r.headers["Content-Security-Policy"]


def test_cookie_not_secure_when_configured_for_plain_http(db, tmp_path) -> None:
    client = make_client(db, tmp_path, console_cookie_secure=False)
    _, viewer = create_token("viewer", time.time())
    r = sign_in(client, viewer)
    assert r.status_code == 303 and "Secure" not in r.headers["Set-Cookie"]


def test_sign_in_refuses_bad_and_unsuitable_tokens(fleet) -> None:
    client, _, _ = fleet
    _, enroll = create_token("enroll", time.time())
    r = sign_in(client, enroll)
    assert r.status_code == 403 and "cannot sign in" in html(r)
    r = sign_in(client, "pw_nope_nope")
    assert r.status_code == 401 and "unknown token" in html(r)
    assert client.get("/ui/").status_code == 303  # still nobody


def test_sign_in_goes_only_to_console_pages(fleet) -> None:
    client, admin, _ = fleet
    for target in ("//evil.example/", "https://evil.example/ui/", "/ui/\\evil", "/api/v1/hosts"):
        r = sign_in(client, admin, target)
        assert r.headers["Location"] == "/ui/", target
        client.post("/ui/logout", data={"csrf": csrf_of(html(client.get("/ui/")))})


def test_pages_show_the_fleet(fleet) -> None:
    client, _, viewer = fleet
    sign_in(client, viewer)
    page = html(client.get("/ui/"))
    assert 'href="/ui/hosts/web2.example.com"' in page  # attention rows link their subject
    page = html(client.get("/ui/hosts"))
    assert "<strong>3</strong> hosts" in page
    for name in ("web1.example.com", "web2.example.com", "db1.example.org"):
        assert f'href="/ui/hosts/{name}"' in page
    page = html(client.get("/ui/hosts?tag=db"))
    assert "<strong>1</strong> host;" in page and "web1.example.com" not in page
    page = html(client.get("/ui/hosts?reboot=true"))
    assert "<strong>1</strong> host;" in page and "web2.example.com" in page
    page = html(client.get("/ui/hosts?name=web*&sort=-name&per_page=1"))
    assert "web2.example.com" in page and "web1.example.com" not in page
    assert "1\N{EN DASH}1 of 2" in page and 'rel="next"' in page
    page = html(client.get("/ui/hosts/web1.example.com"))
    assert "pkg1" in page and "1.1-1" in page and "1.1-2" in page  # installed and available
    assert "Vulnerabilities" in page and "Unknown: no vulnerability feed is loaded yet" in page
    assert "not computed" not in page  # its updates are current, and said so alone
    assert client.get("/api/v1/hosts/web1.example.com").get_json()["updates_reason"] == ""
    assert "deb.debian.org" in page  # its repository's mirror and its health
    page = html(client.get("/ui/hosts/db1.example.org?q=pkg5"))
    assert "pkg5" in page and "pkg4" not in page
    page = html(client.get("/ui/packages?q=PKG"))
    assert 'href="/ui/packages/pkg1"' in page
    page = html(client.get("/ui/packages/pkg1"))
    assert "1.1-1" in page and "1.1-2" not in page  # installed versions, not the mirror's
    assert 'href="/ui/hosts/db1.example.org"' in page
    page = html(client.get("/ui/packages/pkg0"))
    assert "3</td>" in page and "http://deb.debian.org/debian bookworm main" in page
    repo = Repository.get()
    page = html(client.get(f"/ui/repositories/{repo.id}"))
    assert "http://deb.debian.org/debian" in page and "3 hosts use it" in page
    assert "<td>allowed</td>" in page  # read: mirror_url_patterns covers it
    assert "Mark security" not in page  # a viewer is offered no action
    page = html(client.get("/ui/mirrors?url=http://deb.debian.org/debian"))
    assert "1 mirror<" in page
    assert client.get("/ui/os").status_code == 200
    assert client.get("/ui/hosts/web1.example.com/diff?other=db1.example.org").status_code == 200
    assert client.get("/ui/hosts/nosuch.example.com").status_code == 404
    assert "no host named" in html(client.get("/ui/hosts/nosuch.example.com"))
    for path in ("/ui/nosuch", "/ui/hosts/web1.example.com/nosuch", "/ui/repositories/x"):
        r = client.get(path)  # no such page: the console's 404, with its navigation
        assert r.status_code == 404 and r.mimetype == "text/html", path
        assert "has no page at" in html(r) and 'href="/ui/hosts"' in html(r)
    assert client.get("/ui/os/nosuch").status_code == 404  # a real page's own 404 first
    r = client.get("/ui/hosts?security=maybe")
    assert r.status_code == 400 and "security" in html(r)


def test_hosts_filter_by_repository_and_csv_links_are_the_same_query(fleet) -> None:
    client, _, viewer = fleet
    sign_in(client, viewer)
    repo = Repository.get()
    page = html(client.get(f"/ui/hosts?repository={repo.id}&tag=web"))
    assert "<strong>2</strong> hosts" in page
    r = client.get(f"/api/v1/hosts?repository={repo.id}&tag=web")  # the session reads the API
    assert r.status_code == 200 and r.get_json()["total"] == 2
    assert f"/api/v1/hosts?tag=web&amp;repository={repo.id}" in page or (
        f"/api/v1/hosts?repository={repo.id}&amp;tag=web" in page
    )
    assert client.get("/api/v1/hosts?repository=999").get_json()["total"] == 0
    r = client.get("/api/v1/hosts?sort=-packages&format=csv")
    assert r.status_code == 200 and r.get_data(as_text=True).splitlines()[1].startswith("db1")


def test_viewer_tokens_read_the_api_and_change_nothing(fleet) -> None:
    client, _, viewer = fleet
    auth = {"Authorization": f"Bearer {viewer}"}
    assert client.get("/api/v1/hosts", headers=auth).status_code == 200
    r = client.post("/api/v1/repositories/1", json={"security": True}, headers=auth)
    assert r.status_code == 403
    assert client.get("/api/v1/attention", headers=auth).status_code == 403


def test_an_action_asks_for_confirmation_then_is_recorded(fleet) -> None:
    client, admin, _ = fleet
    sign_in(client, admin)
    repo = Repository.get()
    assert security_counts(client)["web1.example.com"] == 0
    page = html(client.get(f"/ui/repositories/{repo.id}"))
    csrf = csrf_of(page)
    action = f"/ui/repositories/{repo.id}/security"
    r = client.post(action, data={"csrf": csrf, "value": "yes"})
    assert r.status_code == 200 and "Confirm" in html(r) and 'name="confirm"' in html(r)
    assert Repository.get_by_id(repo.id).security_override is None  # not yet
    assert AuditEntry.select().count() == 0
    r = client.post(action, data={"csrf": csrf, "value": "yes", "confirm": "yes"})
    assert r.status_code == 200 and "Done" in html(r)
    assert Repository.get_by_id(repo.id).security_override is True
    # the hosts using it were recomputed: web1's update is now a security update
    assert security_counts(client) == {"web1.example.com": 1, "web2.example.com": 1,
                                       "db1.example.org": 0}  # fmt: skip
    (entry,) = AuditEntry.select()
    assert entry.action == "repository_security" and "(laptop)" in entry.actor
    assert entry.subject.startswith(f"{repo.id} ")
    page = html(client.get("/ui/audit"))
    assert "repository_security" in page and "laptop" in page


def test_host_maintenance_and_delete(fleet) -> None:
    client, admin, _ = fleet
    sign_in(client, admin)
    csrf = csrf_of(html(client.get("/ui/hosts/web1.example.com")))
    base = "/ui/hosts/web1.example.com"
    r = client.post(base + "/maintenance", data={"csrf": csrf, "until": "12h", "confirm": "yes"})
    assert r.status_code == 200
    assert Host.get(Host.name == "web1.example.com").maintenance_until > time.time() + 11 * 3600
    page = html(client.get("/ui/hosts?maintenance=true"))
    assert "<strong>1</strong> host;" in page
    r = client.post(base + "/maintenance", data={"csrf": csrf, "until": "yesterday",
                                                 "confirm": "yes"})  # fmt: skip
    assert r.status_code == 400
    client.post(base + "/maintenance", data={"csrf": csrf, "until": "off", "confirm": "yes"})
    assert Host.get(Host.name == "web1.example.com").maintenance_until is None
    assert client.get(base + "/delete").status_code == 303  # a GET deletes nothing
    client.post(base + "/delete", data={"csrf": csrf, "confirm": "yes"})
    assert Host.get_or_none(Host.name == "web1.example.com") is None
    actions = [e.action for e in AuditEntry.select().order_by(AuditEntry.id)]
    assert actions == ["host_maintenance", "host_maintenance", "host_delete"]


def test_viewer_is_refused_actions(fleet) -> None:
    client, _, viewer = fleet
    sign_in(client, viewer)
    repo = Repository.get()
    csrf = csrf_of(html(client.get(f"/ui/repositories/{repo.id}")))
    r = client.post(f"/ui/repositories/{repo.id}/enabled",
                    data={"csrf": csrf, "value": "no", "confirm": "yes"})  # fmt: skip
    assert r.status_code == 403 and "viewer" in html(r)
    for path, data in ((f"/ui/repositories/{repo.id}/enabled", {"value": "bogus"}),
                       ("/ui/repositories/999/security", {"value": "yes"}),
                       ("/ui/hosts/web1.example.com/delete", {"confirm": "yes"})):  # fmt: skip
        assert client.post(path, data={"csrf": csrf, **data}).status_code == 403, path
    assert Repository.get_by_id(repo.id).enabled is True
    assert Host.select().count() == 3
    assert AuditEntry.select().count() == 0


def test_csrf_refused(fleet) -> None:
    client, admin, _ = fleet
    sign_in(client, admin)
    repo = Repository.get()
    csrf = csrf_of(html(client.get(f"/ui/repositories/{repo.id}")))
    action = f"/ui/repositories/{repo.id}/enabled"
    for data, headers in (
        ({"value": "no", "confirm": "yes"}, {}),
        ({"csrf": "forged", "value": "no", "confirm": "yes"}, {}),
        ({"csrf": csrf, "value": "no", "confirm": "yes"}, {"Origin": "https://evil.example"}),
    ):
        r = client.post(action, data=data, headers=headers)
        assert r.status_code == 403 and "CSRF" in html(r)
    assert Repository.get_by_id(repo.id).enabled is True
    r = client.post(action, data={"csrf": csrf, "value": "no", "confirm": "yes"},
                    headers={"Origin": "http://localhost"})  # fmt: skip
    assert r.status_code == 200 and Repository.get_by_id(repo.id).enabled is False


def test_sign_in_itself_needs_the_csrf_value(fleet) -> None:
    client, admin, _ = fleet
    r = client.post("/ui/login", data={"token": admin})
    assert r.status_code == 403
    assert client.get("/ui/").status_code == 303


def test_sessions_expire_and_end_with_their_token(fleet, monkeypatch) -> None:
    client, admin, viewer = fleet
    sign_in(client, viewer)
    assert client.get("/ui/hosts").status_code == 200
    later = time.time() + 481 * 60  # console_session_minutes is 480 by default
    monkeypatch.setattr(time, "time", lambda: later)
    r = client.get("/ui/hosts")
    assert r.status_code == 303 and "expired=1" in r.headers["Location"]
    assert "session has ended" in html(client.get(r.headers["Location"]))
    assert client.get("/api/v1/hosts").status_code == 401  # nor does the API take it
    monkeypatch.undo()
    sign_in(client, admin)
    assert client.get("/ui/hosts").status_code == 200
    revoke_token(Token.get(Token.kind == "admin").prefix, time.time())
    assert client.get("/ui/hosts").status_code == 303


def test_workers_share_the_session_key_kept_in_the_database(db, tmp_path) -> None:
    first = make_client(db, tmp_path)
    second = make_client(db, tmp_path)  # another gunicorn worker: same store, own memory
    _, viewer = create_token("viewer", time.time())
    sign_in(first, viewer)
    cookie = first.get_cookie(COOKIE)
    second.set_cookie(COOKIE, cookie.value)
    assert second.get("/ui/hosts").status_code == 200
    keyed = make_client(db, tmp_path, console_secret="another key")  # a configured one wins
    keyed.set_cookie(COOKIE, cookie.value)
    assert keyed.get("/ui/hosts").status_code == 303


def test_console_migration_is_idempotent(db) -> None:
    from patchwatch.store.migrations import _console_tables

    _console_tables(db)  # the tables exist already (the fresh database made them)
    assert migrate(db) == []


def test_token_create_viewer(tmp_path) -> None:
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path),
           "PATCHWATCH_DATA_DIR": str(tmp_path / "data")}  # fmt: skip
    subprocess.run([sys.executable, "-m", "patchwatch", "migrate"], cwd=ROOT, env=env,
                   check=True, capture_output=True)  # fmt: skip
    proc = subprocess.run([sys.executable, "-m", "patchwatch", "token", "create", "--viewer"],
                          cwd=ROOT, env=env, capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "created viewer token" in proc.stderr and proc.stdout.startswith("pw_")


def test_forms_from_the_console_url_origin_pass(db, tmp_path) -> None:
    """Behind a TLS proxy the browser's Origin is the proxy's, named by console_url."""
    client = make_client(db, tmp_path, console_url="https://patchwatch.example.org/")
    _, admin = create_token("admin", time.time())
    csrf = csrf_of(html(client.get("/ui/login")))
    r = client.post("/ui/login", data={"csrf": csrf, "token": admin},
                    headers={"Origin": "https://patchwatch.example.org"})  # fmt: skip
    assert r.status_code == 303
    r = client.post("/ui/logout", data={"csrf": csrf_of(html(client.get("/ui/")))},
                    headers={"Origin": "https://elsewhere.example.org"})  # fmt: skip
    assert r.status_code == 403


def test_console_url_must_be_a_web_address() -> None:
    from patchwatch.domain.errors import ConfigError
    from patchwatch.domain.settings import parse_settings

    assert parse_settings(environ={"PATCHWATCH_CONSOLE_URL": "https://pw.example.org/x"})
    with pytest.raises(ConfigError, match="console_url"):
        parse_settings(environ={"PATCHWATCH_CONSOLE_URL": "pw.example.org"})
    with pytest.raises(ConfigError, match="console_session_minutes"):
        parse_settings(environ={"PATCHWATCH_CONSOLE_SESSION_MINUTES": "0"})
