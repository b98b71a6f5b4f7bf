"""The admin read API: filters, one host, package lookups, CSV, pagination, auth."""

from __future__ import annotations

import csv
import io
import json
import time

import pytest

from patchwatch.domain.records import Package
from patchwatch.domain.records import PackageKind
from patchwatch.domain.settings import Settings
from patchwatch.pipeline.hostupdates import refresh_host_updates
from patchwatch.pipeline.processing import process_pending
from patchwatch.receiver.app import create_app
from patchwatch.store.models import Mirror
from patchwatch.store.models import Repository
from patchwatch.store.package_sets import ensure_package_set
from patchwatch.store.tokens import create_token
from tests.support.cli import cli
from tests.support.reports import native_doc
from tests.support.reports import post


@pytest.fixture
def api(db, tmp_path):
    app = create_app(Settings(data_dir=str(tmp_path), process_inline=False), db=db)
    client = app.test_client()
    _, enroll = create_token("enroll", time.time())
    for i, host in enumerate(["web1.example.com", "web2.example.com", "db1.example.org"]):
        doc = native_doc(host, n=4 + i)
        doc["tags"] = ["db"] if host.startswith("db") else ["web"]
        if host.startswith("db"):
            doc["held"] = [{"name": "pkg1", "arch": "amd64"}]  # db1 holds its only update
        assert post(client, doc, token=enroll).status_code == 202
    process_pending(time.time())
    repo = Repository.get()
    newer = [Package("pkg1", "", "1.1", "2", "amd64", PackageKind.DEB)]
    pset = ensure_package_set(newer, time.time())
    Mirror.update(package_set=pset, last_success_at=time.time()).execute()
    Repository.update(security=True).where(Repository.id == repo.id).execute()
    refresh_host_updates(time.time())
    _, admin = create_token("admin", time.time())
    return client, {"Authorization": f"Bearer {admin}"}, enroll


def test_hosts_listing_and_filters(api) -> None:
    client, auth, _ = api
    r = client.get("/api/v1/hosts", headers=auth)
    body = r.get_json()
    assert r.status_code == 200 and body["total"] == 3
    assert {h["name"] for h in body["items"]} == {"web1.example.com", "web2.example.com",
                                                   "db1.example.org"}  # fmt: skip
    counts = {h["name"]: (h["security_updates"], h["held_updates"]) for h in body["items"]}
    assert counts == {"web1.example.com": (1, 0), "web2.example.com": (1, 0),
                      "db1.example.org": (0, 1)}  # fmt: skip
    r = client.get("/api/v1/hosts?security=true", headers=auth)
    assert r.get_json()["total"] == 2  # a held security update is not one to act on
    r = client.get("/api/v1/hosts?tag=db", headers=auth)
    assert [h["name"] for h in r.get_json()["items"]] == ["db1.example.org"]
    r = client.get("/api/v1/hosts?domain=example.com&per_page=1&page=2", headers=auth)
    body = r.get_json()
    assert body["total"] == 2 and len(body["items"]) == 1
    r = client.get("/api/v1/hosts?stale_days=1", headers=auth)
    assert r.get_json()["total"] == 0


def test_one_host_with_packages_repositories_updates(api) -> None:
    client, auth, _ = api
    r = client.get("/api/v1/hosts/WEB1.example.com", headers=auth)
    body = r.get_json()
    assert r.status_code == 200
    assert len(body["packages"]) == 4
    assert body["repositories"][0]["security"] is True
    assert body["updates"] == [
        {"name": "pkg1", "arch": "amd64", "installed": "1.1-1", "available": "1.1-2",
         "security": True, "held": False, "first_seen_at": body["updates"][0]["first_seen_at"],
         "repository": body["repositories"][0]["key"],
         "fixes": None}  # no vulnerability feed: what it fixes is not known
    ]  # fmt: skip
    assert body["held_packages"] == []
    db1 = client.get("/api/v1/hosts/db1.example.org", headers=auth).get_json()
    assert [(u["name"], u["security"], u["held"]) for u in db1["updates"]] == [("pkg1", True, True)]
    assert db1["held_packages"] == [{"name": "pkg1", "arch": "amd64"}]
    assert client.get("/api/v1/hosts/nope", headers=auth).status_code == 404


def test_hosts_show_as_json_is_the_apis_answer(api, database_url, tmp_path) -> None:
    """``hosts show --format json`` and ``GET /api/v1/hosts/NAME`` are one call."""
    client, auth, _ = api
    for name in ("web1.example.com", "db1.example.org"):
        answer = client.get(f"/api/v1/hosts/{name}", headers=auth).get_json()
        shown = cli(database_url, "hosts", "show", name, "--format", "json", home=tmp_path)
        assert shown.returncode == 0, shown.stderr
        assert json.loads(shown.stdout) == answer
        assert answer["updates"] and answer["packages"] and answer["name"] == name


def test_which_hosts_have_a_package_and_from_where(api) -> None:
    client, auth, _ = api
    r = client.get("/api/v1/packages/pkg4/hosts", headers=auth)
    hosts = {i["host"] for i in r.get_json()["items"]}
    assert hosts == {"web2.example.com", "db1.example.org"}  # pkg4 only where n > 4
    r = client.get("/api/v1/packages/pkg1/hosts?version=1.1-2", headers=auth)
    assert r.get_json()["total"] == 0  # available, installed nowhere


def test_csv_and_updates_summary(api) -> None:
    client, auth, _ = api
    r = client.get("/api/v1/updates?format=csv", headers=auth)
    assert r.mimetype == "text/csv"
    rows = list(csv.DictReader(io.StringIO(r.get_data(as_text=True))))
    assert [(row["name"], row["held"], row["hosts"]) for row in rows] == [
        ("pkg1", "false", "2"),
        ("pkg1", "true", "1"),  # the host that holds it, apart
    ]
    r = client.get("/api/v1/repositories", headers=auth)
    assert r.get_json()["items"][0]["hosts"] == 3


def test_read_api_needs_an_admin_token(api) -> None:
    client, _, enroll = api
    assert client.get("/api/v1/hosts").status_code == 401
    assert (
        client.get("/api/v1/hosts", headers={"Authorization": f"Bearer {enroll}"}).status_code
        == 403
    )


def test_bad_query_parameter_is_400(api) -> None:
    client, auth, _ = api
    r = client.get("/api/v1/hosts?security=maybe", headers=auth)
    assert r.status_code == 400 and r.get_json()["where"] == "security"
