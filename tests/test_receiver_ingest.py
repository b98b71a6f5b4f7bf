"""Ingest through the Flask app on both backends: auth, limits, errors, durability."""

from __future__ import annotations

import gzip
import json
import time
import zlib

import pytest

from patchwatch.domain.settings import Settings
from patchwatch.pipeline.processing import encode_body
from patchwatch.pipeline.processing import process_pending
from patchwatch.receiver.app import create_app
from patchwatch.store.models import Host
from patchwatch.store.models import PackageSet
from patchwatch.store.models import Report
from patchwatch.store.models import RepositorySet
from patchwatch.store.report_queue import ZSTD_MAGIC
from patchwatch.store.report_queue import stored_text
from patchwatch.store.tokens import create_token
from tests.support.reports import native_doc
from tests.support.reports import post


def test_report_without_token_is_401_and_stores_nothing(client) -> None:
    r = post(client, native_doc())
    assert r.status_code == 401
    assert "Bearer" in r.headers["WWW-Authenticate"]
    assert Report.select().count() == 0


def test_unknown_and_malformed_tokens_are_401(client) -> None:
    assert post(client, native_doc(), token="pw_0000_nope").status_code == 401
    assert post(client, native_doc(), token="garbage").status_code == 401


def test_host_token_writes_only_its_host(client) -> None:
    _, secret = create_token("host", time.time(), "web1.example.com")
    assert post(client, native_doc("web1.example.com"), token=secret).status_code == 202
    r = post(client, native_doc("web2.example.com"), token=secret)
    assert r.status_code == 403
    assert Report.select().count() == 1


def enroll(client, host: str, enroll_token: str, **kwargs) -> str:
    """Send a host's first report with an enrollment token; return the host's own token."""
    r = post(client, native_doc(host, **kwargs), token=enroll_token)
    assert r.status_code == 202, r.get_json()
    return r.get_json()["host_token"]


def test_enroll_token_enrolls_new_hosts_each_with_its_own_token(client) -> None:
    _, enroll_a = create_token("enroll", time.time())
    _, enroll_b = create_token("enroll", time.time())
    a1 = enroll(client, "a1", enroll_a)
    a2 = enroll(client, "a2", enroll_a)
    assert a1 != a2 and enroll_a not in (a1, a2)
    assert post(client, native_doc("a1"), token=a1).status_code == 202
    assert "host_token" not in post(client, native_doc("a1"), token=a1).get_json()
    for other in (enroll_a, enroll_b, a2):  # the enrollment token no longer writes a1
        assert post(client, native_doc("a1"), token=other).status_code == 403
    _, host_tok = create_token("host", time.time(), "a1", force=True)  # admin re-binds a1
    assert post(client, native_doc("a1"), token=a1).status_code == 401  # revoked
    assert post(client, native_doc("a1"), token=host_tok).status_code == 202


def test_admin_token_does_not_send_reports(client) -> None:
    _, admin = create_token("admin", time.time())
    assert post(client, native_doc(), token=admin).status_code == 403


def test_revoked_token_is_refused(client) -> None:
    from patchwatch.store.tokens import revoke_token

    tok, secret = create_token("host", time.time(), "web1.example.com")
    revoke_token(tok.prefix, time.time())
    assert post(client, native_doc(), token=secret).status_code == 401


@pytest.mark.parametrize(
    ("mutate", "where"),
    [
        (lambda d: d.pop("host"), "host"),
        (lambda d: d.__setitem__("host", "-web1"), "host"),
        (lambda d: d.__setitem__("version", 7), "version"),
        (lambda d: d.pop("version"), "version"),
    ],
)
def test_a_report_whose_routing_fields_are_wrong_is_400_naming_the_field(
    client, mutate, where
) -> None:
    """What the receiver needs before it stores a report (its host, its version) is
    checked before it answers: refused with the field named, nothing stored."""
    _, secret = create_token("enroll", time.time())
    doc = native_doc()
    mutate(doc)
    r = post(client, doc, token=secret)
    assert r.status_code == 400
    assert where in (r.get_json()["where"] or "")
    assert Report.select().count() == 0


@pytest.mark.parametrize(
    ("mutate", "where"),
    [
        (lambda d: d["packages"][2].pop("version"), "packages[2].version"),
        (lambda d: d["packages"].append("x"), "packages[5]"),
        (lambda d: d.pop("kernel"), "kernel"),
    ],
)
def test_an_invalid_report_is_stored_failed_with_why_and_the_agent_told_next_time(
    client, mutate, where
) -> None:
    """The rest of a report is parsed by processing, not before the answer: an invalid
    one is acknowledged (it is stored), then ``failed`` naming the field, counted in
    the stored reports by state, and the answer to the host's next report says so."""
    _, secret = create_token("host", time.time(), "web1.example.com")
    doc = native_doc()
    mutate(doc)
    first = post(client, doc, token=secret)
    assert first.status_code == 202
    assert "previous_report" not in first.get_json()
    assert process_pending(time.time()) == {"failed": 1}
    row = Report.get_by_id(first.get_json()["report"])
    assert row.state == "failed" and where in row.error
    answer = post(client, native_doc(), token=secret).get_json()
    assert answer["previous_report"] == {"id": row.id, "state": "failed", "error": row.error}
    assert process_pending(time.time()) == {"processed": 1}
    # told once: the report before the next one was processed
    assert "previous_report" not in post(client, native_doc(), token=secret).get_json()


def test_invalid_json_and_bad_gzip_are_400(client) -> None:
    _, secret = create_token("enroll", time.time())
    r = post(client, None, token=secret, raw=b"{not json")
    assert r.status_code == 400 and r.get_json()["where"] == "body"
    r = client.post(
        "/api/v1/reports",
        data=gzip.compress(b'{"a": 1}')[:-6],
        headers={"Authorization": f"Bearer {secret}", "Content-Encoding": "gzip"},
    )
    assert r.status_code == 400
    assert "truncated" in r.get_json()["error"]


def test_gzip_report_is_accepted(client) -> None:
    _, secret = create_token("enroll", time.time())
    r = post(client, native_doc(n=300), token=secret, gz=True)
    assert r.status_code == 202, r.get_json()
    assert r.get_json()["status"] == "accepted"


def test_oversized_and_bomb_reports_are_413(client) -> None:
    _, secret = create_token("enroll", time.time())
    r = post(client, native_doc(n=3000), token=secret)  # > 200 kB as sent
    assert r.status_code == 413
    bomb = zlib.compressobj(9, zlib.DEFLATED, 31)
    body = bomb.compress(b" " * 50_000_000) + bomb.flush()  # 50 MB of spaces, ~50 kB sent
    r = client.post(
        "/api/v1/reports",
        data=body,
        headers={"Authorization": f"Bearer {secret}", "Content-Encoding": "gzip"},
    )
    assert r.status_code == 413
    assert Report.select().count() == 0


def test_processing_builds_shared_sets(client) -> None:
    _, secret = create_token("enroll", time.time())
    for host in ("web1", "web2", "web3"):
        assert post(client, native_doc(host, n=50), token=secret).status_code == 202
    assert process_pending(time.time()) == {"processed": 3}
    assert Host.select().count() == 3
    assert PackageSet.select().count() == 1  # three hosts, one stored set
    assert RepositorySet.select().count() == 1
    host = Host.get(Host.name == "web1")
    assert host.package_set.size == 50
    assert host.kernel == "6.1.0-28-amd64"
    assert host.tags == "prod web"
    assert host.os_release.family == "debian"


def test_report_without_repositories_keeps_the_hosts_repositories(client) -> None:
    _, enroll_token = create_token("enroll", time.time())
    secret = enroll(client, "web1", enroll_token)
    process_pending(time.time())
    before = Host.get(Host.name == "web1").repository_set_id
    assert before is not None
    post(client, native_doc("web1", n=7, repos=False), token=secret)
    process_pending(time.time())
    host = Host.get(Host.name == "web1")
    assert host.repository_set_id == before
    assert host.package_set.size == 7


def test_host_names_are_lower_cased(client) -> None:
    _, secret = create_token("enroll", time.time())
    assert post(client, native_doc("Web1.Example.COM"), token=secret).status_code == 202
    process_pending(time.time())
    assert Host.get_or_none(Host.name == "web1.example.com") is not None


def test_protocol1_is_refused_outside_listed_networks(db, tmp_path) -> None:
    app = create_app(Settings(data_dir=str(tmp_path)), db=db)  # protocol 1 off by default
    r = app.test_client().post("/reports/upload/", data={"host": "x"})
    assert r.status_code == 403
    assert "protocol1_networks" in r.get_json()["error"]


def test_healthz_answers_json(client) -> None:
    r = client.get("/healthz")
    assert r.status_code == 200
    assert r.get_json()["database"] == "up"


def test_unknown_path_is_json_404(client) -> None:
    r = client.get("/nothing")
    assert r.status_code == 404
    assert "error" in r.get_json()


def test_processing_survives_sets_deleted_behind_its_cache(client) -> None:
    """dbcheck --fix may delete an orphan package set this process still remembers."""
    _, enroll_token = create_token("enroll", time.time())
    secret = enroll(client, "web1", enroll_token, n=9)
    process_pending(time.time())
    Host.delete().execute()
    PackageSet.delete().execute()  # the set (and its members) are gone; the cache is not
    post(client, native_doc("web1", n=9), token=secret)
    assert process_pending(time.time()) == {"processed": 1}
    assert Host.get(Host.name == "web1").package_set.size == 9


def test_a_known_package_set_is_not_parsed_again_unless_forced(client) -> None:
    """A report stored with its set digest (``store_report(packages_digest=...)``):
    processing trusts it for sets it has."""
    from patchwatch.pipeline.processing import NATIVE
    from patchwatch.pipeline.processing import store_report

    _, secret = create_token("enroll", time.time())
    post(client, native_doc("web1", n=9), token=secret)
    process_pending(time.time())
    known = Host.get(Host.name == "web1").package_set
    # the stored body lists other packages: only a parse of the list would see it
    store_report("web2", NATIVE, native_doc("web2", n=4), time.time(),
                 packages_digest=known.digest)  # fmt: skip
    assert process_pending(time.time()) == {"processed": 1}
    assert Host.get(Host.name == "web2").package_set_id == known.id
    # --force re-runs reports after a fix (perhaps to the parser): the list is read
    assert process_pending(time.time(), host_name="web2", force=True) == {"processed": 1}
    assert Host.get(Host.name == "web2").package_set.size == 4


def test_a_gzip_body_is_stored_as_sent_and_processed_from_it(client) -> None:
    """A gzip report is kept as the agent compressed it (not decoded and compressed
    again); processing reads it. A body with bytes after its gzip stream is stored
    as decoded instead, so that what is stored is what was read."""
    _, secret = create_token("enroll", time.time())
    gz = gzip.compress(json.dumps(native_doc("web1", n=7)).encode())
    r = client.post("/api/v1/reports", data=gz, headers={
        "Authorization": f"Bearer {secret}", "Content-Encoding": "gzip"})  # fmt: skip
    assert r.status_code == 202
    assert bytes(Report.get_by_id(r.get_json()["report"]).body) == gz
    trailing = gzip.compress(json.dumps(native_doc("web2", n=3)).encode()) + b"junk"
    r = client.post("/api/v1/reports", data=trailing, headers={
        "Authorization": f"Bearer {secret}", "Content-Encoding": "gzip"})  # fmt: skip
    assert r.status_code == 202
    stored = bytes(Report.get_by_id(r.get_json()["report"]).body)
    assert stored.startswith(ZSTD_MAGIC)  # compressed by the receiver: a zstd frame
    assert json.loads(stored_text(stored)) == native_doc("web2", n=3)
    assert process_pending(time.time()) == {"processed": 2}
    assert Host.get(Host.name == "web1").package_set.size == 7
    assert Host.get(Host.name == "web2").package_set.size == 3


def test_a_stored_body_orjson_refuses_is_still_read(client) -> None:
    """Stored bodies are written by json.dumps and read by orjson, with json as fallback.

    A lone surrogate survives storage (surrogatepass) though orjson refuses it: the
    report must fail for what the parser says of it, not as unreadable."""
    _, secret = create_token("enroll", time.time())
    post(client, native_doc("web1"), token=secret)
    row = Report.get(Report.host_name == "web1")
    doc = native_doc("web1")
    doc["os"]["pretty_name"] = "Debian \ud800"
    body, size = encode_body(doc)
    Report.update(body=body, size=size).where(Report.id == row.id).execute()
    assert process_pending(time.time()) == {"failed": 1}
    error = Report.get_by_id(row.id).error
    assert "os.pretty_name" in error and "surrogate" in error


def test_a_corrupt_stored_body_fails_as_unreadable(client) -> None:
    """A stored body whose zstd frame (or zlib stream) is damaged fails processing
    with that reason rather than stopping the batch."""
    _, secret = create_token("enroll", time.time())
    post(client, native_doc("web1"), token=secret)
    post(client, native_doc("web2"), token=secret)
    Report.update(body=ZSTD_MAGIC + b"not a frame").where(Report.host_name == "web1").execute()
    Report.update(body=b"x\x9cnot a stream").where(Report.host_name == "web2").execute()
    assert process_pending(time.time()) == {"failed": 2}
    for row in Report.select():
        assert row.state == "failed" and "unreadable" in row.error


def test_a_report_older_than_the_host_state_changes_nothing(db) -> None:
    """Reports may be processed out of order (two workers, a late retry): the newer
    state stays, and the older report is done with."""
    from patchwatch.pipeline.processing import NATIVE
    from patchwatch.pipeline.processing import store_report

    newer = native_doc("web1")
    newer["kernel"] = "6.1.0-99-amd64"
    store_report("web1", NATIVE, newer, 200.0)
    assert process_pending(300.0) == {"processed": 1}
    older = native_doc("web1", n=2)
    older["kernel"] = "6.1.0-1-amd64"
    row = store_report("web1", NATIVE, older, 100.0)
    assert process_pending(300.0) == {"processed": 1}
    host = Host.get(Host.name == "web1")
    assert (host.kernel, host.last_report_at, host.package_set.size) == ("6.1.0-99-amd64", 200.0, 5)
    assert Report.get_by_id(row.id).state == "processed"
