"""50 agents send 1,000 reports at once to gunicorn on SQLite: every acknowledged one is kept.

200 hosts enroll, then send their other 800 reports with the tokens they were given."""

from __future__ import annotations

import gzip
import json
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

from patchwatch.store.db import open_database
from patchwatch.store.models import Host
from patchwatch.store.models import Report
from tests.support.reports import native_doc

AGENTS = 50
REPORTS = 1000


def send(base: str, token: str, doc: dict) -> tuple[int, dict]:
    body = gzip.compress(json.dumps(doc).encode())
    req = urllib.request.Request(
        base + "/api/v1/reports",
        data=body,
        method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json",
                 "Content-Encoding": "gzip"},
    )  # fmt: skip
    for attempt in range(5):
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"{}")
        except (ConnectionError, urllib.error.URLError):
            if attempt == 4:
                raise
            time.sleep(0.2 * (attempt + 1))  # backlog full: an agent retries
    raise AssertionError("unreachable")


def test_concurrent_agents_lose_nothing(server_factory) -> None:
    srv = server_factory({"PATCHWATCH_WORKERS": "4"})
    enroll = srv.cli("token", "create", "--enroll").stdout.strip()
    docs = [native_doc(f"host{i % 200:03d}.example.com", n=150 + i % 7) for i in range(REPORTS)]
    with ThreadPoolExecutor(AGENTS) as pool:
        # the first report of each host enrolls it and gets it its own token, which
        # its later reports carry (the enrollment token no longer writes the host)
        results = list(pool.map(lambda d: send(srv.base, enroll, d), docs[:200]))
        tokens = {
            d["host"]: body.get("host_token")
            for d, (_, body) in zip(docs[:200], results, strict=True)
        }
        results += list(pool.map(lambda d: send(srv.base, tokens[d["host"]], d), docs[200:]))
    codes = [code for code, _ in results]
    assert all(code == 202 for code in codes), sorted(set(codes))
    acknowledged = {body["report"] for _, body in results}
    assert len(acknowledged) == REPORTS
    db = open_database(srv.database_url)
    with db.connection_context():
        stored = {r.id for r in Report.select(Report.id)}
        assert acknowledged <= stored
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # inline processing catches up
        with db.connection_context():
            pending = Report.select().where(Report.state == "pending").count()
            if pending == 0:
                break
        time.sleep(0.2)
    with db.connection_context():
        assert Report.select().where(Report.state == "failed").count() == 0
        assert Host.select().count() == 200
    assert "Traceback" not in srv.log()
