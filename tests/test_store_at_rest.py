"""The store at rest and the health check.

- the data folder is 0700 and the database files 0600 whatever the umask;
- ``/healthz`` says not ok, and the log says why, when the store cannot be written:
  PostgreSQL read-only (as a standby after a failover is), a full disk under SQLite
  (a real tmpfs filled up; needs root to mount it);
- ``serve`` warns when it binds beyond loopback without ``metrics_token``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import stat
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from playhouse.pool import PooledDatabase

from patchwatch.domain.settings import Settings
from patchwatch.receiver.app import create_app
from patchwatch.store.db import database
from patchwatch.store.db import make_database
from patchwatch.store.migrations import migrate
from patchwatch.store.models import Report
from patchwatch.store.tokens import create_token
from tests.support.network import free_port
from tests.support.paths import ROOT
from tests.support.reports import native_doc


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@contextlib.contextmanager
def umask(value: int):
    before = os.umask(value)
    try:
        yield
    finally:
        os.umask(before)


@pytest.mark.parametrize("mask", [0o000, 0o022])
def test_a_new_sqlite_store_is_private_whatever_the_umask(tmp_path, mask) -> None:
    path = tmp_path / "store" / "patchwatch.db"
    with umask(mask):
        db = make_database(f"sqlite:///{path}")
        database.initialize(db)
        db.connect()
        migrate(db)
        db.execute_sql("CREATE TABLE t (x)")  # the write-ahead log and its index exist now
        assert Path(f"{path}-wal").exists()
        for name in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
            assert mode(name) == 0o600, (name, oct(mode(name)))
        db.close()
    assert mode(path.parent) == 0o700


def test_an_existing_store_file_is_made_private(tmp_path, caplog) -> None:
    from patchwatch.cli.serve_cmd import prepare_data_dir

    folder = tmp_path / "old"
    folder.mkdir(mode=0o755)
    os.chmod(folder, 0o755)
    path = folder / "patchwatch.db"
    path.touch()
    os.chmod(path, 0o644)
    db = make_database(f"sqlite:///{path}")
    assert mode(path) == 0o644  # opening a store, not connecting, changes nothing
    db.connect()
    db.close()
    assert mode(path) == 0o600
    with caplog.at_level(logging.WARNING):
        prepare_data_dir(Settings(data_dir=str(folder)))
    assert mode(folder) == 0o755  # the operator's folder keeps its mode, with a warning
    assert "chmod 700" in caplog.text and str(folder) in caplog.text


def test_serve_creates_a_private_data_folder(server_factory) -> None:
    with umask(0):
        srv = server_factory()
    token = srv.cli("token", "create", "--host", "web1.example.com").stdout.strip()
    req = urllib.request.Request(
        srv.base + "/api/v1/reports", data=json.dumps(native_doc("web1.example.com")).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )  # fmt: skip
    with urllib.request.urlopen(req, timeout=30) as resp:
        assert resp.status == 202
    assert mode(srv.data_dir) == 0o700
    for name in srv.data_dir.glob("patchwatch.db*"):
        assert mode(name) == 0o600, (name, oct(mode(name)))


def healthz(client):
    r = client.get("/healthz")
    return r.status_code, r.get_json()


def post_report(client, token: str) -> int:
    return client.post(
        "/api/v1/reports", json=native_doc("web1.example.com"),
        headers={"Authorization": f"Bearer {token}"},
    ).status_code  # fmt: skip


def test_healthz_is_not_ok_while_postgresql_is_read_only(postgres, tmp_path, caplog) -> None:
    url = postgres.create_database()
    db = make_database(url)
    database.initialize(db)
    with db.connection_context():
        migrate(db)
        _, token = create_token("host", time.time(), "web1.example.com")
    client = create_app(Settings(data_dir=str(tmp_path), process_inline=False), db=db).test_client()
    code, body = healthz(client)
    assert (code, body["writable"]) == (200, True), body
    name = url.rsplit("/", 1)[1]
    admin = make_database(postgres.url())
    admin.connect()
    try:
        admin.execute_sql(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on')
        assert isinstance(db, PooledDatabase)
        db.close_all()  # new connections take the setting, as after a failover
        with caplog.at_level(logging.WARNING):
            code, body = healthz(client)
        assert code == 503, body
        assert body["ok"] is False and body["writable"] is False
        assert "read-only" in body["error"]
        assert "health check failed" in caplog.text and "read-only" in caplog.text
        assert post_report(client, token) == 503  # what agents see meanwhile
        admin.execute_sql(f'ALTER DATABASE "{name}" SET default_transaction_read_only = off')
        db.close_all()
        assert healthz(client)[0] == 200
    finally:
        admin.close()
        db.close_all()


@pytest.fixture
def small_disk(tmp_path):
    """A real 24 MiB tmpfs: the disk that fills up. Mounting needs root."""
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a tmpfs needs root")
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mount_point)],
                          capture_output=True, text=True)  # fmt: skip
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    yield mount_point
    subprocess.run(["umount", "-l", str(mount_point)], check=False)


def fill(folder: Path) -> Path:
    filler = folder / "filler"
    with open(filler, "wb") as fh:
        try:
            while True:
                fh.write(b"\0" * 65536)
                fh.flush()
        except OSError:
            pass
    return filler


def test_healthz_is_not_ok_while_the_sqlite_disk_is_full(small_disk, caplog) -> None:
    path = small_disk / "data" / "patchwatch.db"
    db = make_database(f"sqlite:///{path}")
    database.initialize(db)
    with db.connection_context():
        migrate(db)
        _, token = create_token("host", time.time(), "web1.example.com")
    client = create_app(
        Settings(data_dir=str(path.parent), process_inline=False), db=db
    ).test_client()
    assert healthz(client)[0] == 200
    assert post_report(client, token) == 202
    filler = fill(small_disk)
    try:
        with caplog.at_level(logging.WARNING):
            code, body = healthz(client)
        assert code == 503, body
        assert body["writable"] is False and "disk full" in body["error"]
        assert "health check failed: disk full" in caplog.text
        # random versions: the stored body cannot compress below the space the
        # write-ahead log file already holds (a body that fits there is really stored)
        big = native_doc("web1.example.com", n=3000)
        for package in big["packages"]:
            package["version"] = os.urandom(16).hex()
        r = client.post("/api/v1/reports", json=big, headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 503  # as healthz said
    finally:
        filler.unlink()
    assert healthz(client)[0] == 200
    assert post_report(client, token) == 202
    with db.connection_context():
        assert Report.select().count() == 2
    db.close()


def run_serve_isolated(tmp_path: Path, bind: str, extra_env: dict[str, str]) -> str:
    """Start ``serve`` in its own network namespace (nothing outside can reach it), read
    its start-up log, stop it."""
    if not shutil.which("unshare") or os.geteuid() != 0:
        pytest.skip("needs unshare -n (root)")
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "PATCHWATCH_WORKERS": "1",
           **extra_env}  # fmt: skip
    log_path = tmp_path / "serve.log"
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(
            ["unshare", "-n", sys.executable, "-m", "patchwatch", "serve", "--bind", bind,
             "--data-dir", str(tmp_path / "data")],
            cwd=ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and "Booting worker" not in log_path.read_text():
                if proc.poll() is not None:
                    break
                time.sleep(0.1)
        finally:
            proc.terminate()
            proc.wait(30)
    return log_path.read_text()


def test_serve_warns_when_metrics_are_open_beyond_loopback(tmp_path) -> None:
    port = free_port()
    text = run_serve_isolated(tmp_path, f"0.0.0.0:{port}", {})
    assert "Booting worker" in text, text[-2000:]
    assert "is not a loopback address and metrics_token is not set" in text
    text = run_serve_isolated(tmp_path, f"0.0.0.0:{port}", {"PATCHWATCH_METRICS_TOKEN": "s3cret"})
    assert "Booting worker" in text, text[-2000:]
    assert "metrics_token is not set" not in text
    text = run_serve_isolated(tmp_path, f"127.0.0.1:{port}", {})
    assert "metrics_token is not set" not in text


def test_a_store_busy_writing_is_not_a_broken_one(tmp_path, monkeypatch) -> None:
    """Another process holding SQLite's write lock makes the probe wait its short bound
    and say "busy": ok stays true, and the connection keeps its own busy timeout."""
    import sqlite3

    from patchwatch.store import health

    monkeypatch.setattr(health, "LOCK_WAIT_SECONDS", 0.2)
    path = tmp_path / "data" / "patchwatch.db"
    db = make_database(f"sqlite:///{path}")
    database.initialize(db)
    with db.connection_context():
        migrate(db)
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        try:
            status = health.check_database(db, writer="receiver")
        finally:
            other.execute("ROLLBACK")
            other.close()
        assert status["ok"] is True and status["writable"] == "busy", status
        assert db.execute_sql("PRAGMA busy_timeout").fetchone() == (30000,)
        assert health.check_database(db, writer="receiver")["writable"] is True
