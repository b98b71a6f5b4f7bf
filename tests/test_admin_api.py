"""The admin API behind the operator CLI: auth, pagination, reads, writes, errors."""

from __future__ import annotations

import csv
import io
import time

import pytest

from patchwatch.domain.settings import Settings
from patchwatch.receiver.app import create_app
from patchwatch.store.models import Host
from patchwatch.store.models import HostUpdate
from patchwatch.store.models import Repository
from patchwatch.store.tokens import create_token
from tests.test_inventory import seed_fleet


@pytest.fixture
def api(db, tmp_path):
    ids = seed_fleet(time.time())
    app = create_app(Settings(data_dir=str(tmp_path), process_inline=False), db=db)
    _, admin = create_token("admin", time.time())
    _, enroll = create_token("enroll", time.time())
    return app.test_client(), {"Authorization": f"Bearer {admin}"}, enroll, ids


ENDPOINTS = [
    ("GET", "/api/v1/attention"),
    ("GET", "/api/v1/hosts/web1.example.com/diff/web2.example.com"),
    ("PATCH", "/api/v1/hosts/web1.example.com"),
    ("DELETE", "/api/v1/hosts/web1.example.com"),
    ("GET", "/api/v1/packages/orphans"),
    ("GET", "/api/v1/os-releases"),
    ("POST", "/api/v1/os-releases/1/repositories"),
    ("PATCH", "/api/v1/repositories/1"),
    ("POST", "/api/v1/repositories/1/link"),
]


def test_every_endpoint_needs_an_admin_token(api) -> None:
    client, _, enroll, _ = api
    for method, path in ENDPOINTS:
        r = client.open(path, method=method, json={"check_updates": False})
        assert r.status_code == 401 and "Bearer" in r.headers["WWW-Authenticate"], path
        r = client.open(path, method=method, json={},
                        headers={"Authorization": f"Bearer {enroll}"})  # fmt: skip
        assert r.status_code == 403, path
    assert Host.select().count() == 5 and HostUpdate.select().count() == 3  # nothing changed


def test_attention_is_paginated_and_speaks_csv(api) -> None:
    client, auth, _, _ = api
    body = client.get("/api/v1/attention", headers=auth).get_json()
    issues = [i["issue"] for i in body["items"]]
    assert body["total"] == len(issues) >= 7
    assert {"not_reporting", "reboot_required", "mirror_failing", "report_failed"} <= set(issues)
    r = client.get("/api/v1/attention?per_page=2&page=2", headers=auth)
    assert r.get_json()["items"] == body["items"][2:4]
    assert r.headers["X-Total-Count"] == str(body["total"])
    r = client.get("/api/v1/attention?stale_days=30&format=csv", headers=auth)
    rows = list(csv.DictReader(io.StringIO(r.get_data(as_text=True))))
    assert r.mimetype == "text/csv" and "not_reporting" not in {row["issue"] for row in rows}
    assert client.get("/api/v1/attention?stale_days=-1", headers=auth).status_code == 400


def test_host_diff(api) -> None:
    client, auth, _, _ = api
    r = client.get("/api/v1/hosts/web1.example.com/diff/WEB2.example.com", headers=auth)
    body = r.get_json()
    assert body["packages"]["changed"] == [
        {"name": "curl", "arch": "amd64", "a": "7.88.1-10", "b": "7.88.1-10+deb12u8"}]  # fmt: skip
    assert body["packages"]["only_b"] == [{"name": "htop", "arch": "amd64", "version": "3.2.2-2"}]
    assert body["identical"] is False
    r = client.get("/api/v1/hosts/web1/diff/web2.example.com", headers=auth)
    assert r.status_code == 404  # the API takes exact names, no first-label guessing


def test_host_flags_and_their_validation(api) -> None:
    client, auth, _, _ = api
    r = client.patch("/api/v1/hosts/web2.example.com", headers=auth,
                     json={"maintenance_until": "2d", "check_updates": False})  # fmt: skip
    body = r.get_json()
    assert r.status_code == 200 and body["in_maintenance"] is True
    assert body["check_updates"] is False
    assert HostUpdate.select().join(Host).where(Host.name == "web2.example.com").count() == 0
    r = client.post("/api/v1/hosts/web2.example.com", headers=auth,
                    json={"maintenance_until": None})  # fmt: skip
    assert r.get_json()["in_maintenance"] is False
    for bad, where in (({"check_updates": "maybe"}, "check_updates"),
                       ({"colour": "blue"}, "colour"),
                       ({"maintenance_until": "someday"}, "maintenance_until"),
                       ({"maintenance_until": 1000}, "maintenance_until")):  # fmt: skip
        r = client.patch("/api/v1/hosts/web2.example.com", headers=auth, json=bad)
        assert r.status_code == 400 and r.get_json()["where"] == where, bad
    r = client.patch("/api/v1/hosts/web2.example.com", headers=auth, data="[]",
                     content_type="application/json")  # fmt: skip
    assert r.status_code == 400
    assert client.patch("/api/v1/hosts/nope", headers=auth, json={}).status_code == 404


def test_delete_a_host(api) -> None:
    client, auth, _, _ = api
    r = client.delete("/api/v1/hosts/OLD1.example.com", headers=auth)
    assert r.status_code == 200 and r.get_json() == {"deleted": ["old1.example.com"]}
    assert client.get("/api/v1/hosts/old1.example.com", headers=auth).status_code == 404
    assert client.delete("/api/v1/hosts/old1.example.com", headers=auth).status_code == 404


def test_repository_security_enable_and_detail(api) -> None:
    client, auth, _, ids = api
    path = f"/api/v1/repositories/{ids['security']}"
    body = client.patch(path, headers=auth, json={"security": False}).get_json()
    assert (body["security"], body["security_mode"], body["security_from_metadata"]) == (
        False, "no", True)  # fmt: skip
    body = client.patch(path, headers=auth, json={"security": "auto", "enabled": False}).get_json()
    assert (body["security_mode"], body["enabled"]) == ("auto", False)
    assert client.patch(path, headers=auth, json={"security": 1}).status_code == 400
    assert client.get(path, headers=auth).get_json()["hosts"] == ["web1.example.com",
                                                                  "web2.example.com"]  # fmt: skip
    assert client.get("/api/v1/repositories/999", headers=auth).status_code == 404


def test_possible_mirrors_and_link(api) -> None:
    client, auth, _, ids = api
    groups = client.get("/api/v1/repositories/possible-mirrors", headers=auth).get_json()
    assert {g["id"] for g in groups["items"]} == {ids["main"], ids["german"]}
    r = client.post(f"/api/v1/repositories/{ids['main']}/link", headers=auth,
                    json={"repositories": [ids["security"]]})  # fmt: skip
    assert r.status_code == 409 and "does not look like" in r.get_json()["error"]
    german_key = Repository.get_by_id(ids["german"]).key  # a body names by id or exact key
    r = client.post(f"/api/v1/repositories/{ids['main']}/link", headers=auth,
                    json={"repositories": [german_key]})  # fmt: skip
    assert r.status_code == 200 and r.get_json()["mirrors_moved"] == 1
    assert client.get("/api/v1/repositories/possible-mirrors", headers=auth).get_json()[
        "total"] == 0  # fmt: skip
    r = client.post(f"/api/v1/repositories/{ids['main']}/link", headers=auth,
                    json={"repositories": []})  # fmt: skip
    assert r.status_code == 400


def test_os_groups(api) -> None:
    client, auth, _, ids = api
    releases = client.get("/api/v1/os-releases", headers=auth).get_json()["items"]
    debian = next(r for r in releases if r["name"] == "Debian 12")
    assert debian["hosts"] == 4
    r = client.post("/api/v1/os-releases/debian 12/repositories", headers=auth,
                    json={"repositories": [ids["main"], str(ids["security"])]})  # fmt: skip
    assert [x["id"] for x in r.get_json()["repositories"]] == sorted([ids["main"],
                                                                      ids["security"]])  # fmt: skip
    r = client.delete(f"/api/v1/os-releases/{debian['id']}/repositories/{ids['main']}",
                      headers=auth)  # fmt: skip
    assert [x["id"] for x in r.get_json()["repositories"]] == [ids["security"]]
    assert client.get("/api/v1/os-releases/debian", headers=auth).status_code == 404  # exact
    r = client.post("/api/v1/os-releases/Debian 12/repositories", headers=auth,
                    json={"repositories": [99999]})  # fmt: skip
    assert r.status_code == 404


def test_orphan_packages(api) -> None:
    client, auth, _, _ = api
    body = client.get("/api/v1/packages/orphans", headers=auth).get_json()
    assert [(i["host"], i["name"]) for i in body["items"]] == [("db1.example.org",
                                                                "inhouse-tool")]  # fmt: skip
    body = client.get("/api/v1/packages/orphans?host=web1.example.com", headers=auth).get_json()
    assert body["total"] == 0
    assert client.get("/api/v1/packages/orphans?host=x", headers=auth).status_code == 404
