"""The split deployment on PostgreSQL: two receivers, one scheduler, one exporter."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import NO_EGRESS_ENV
from tests.conftest import ROOT
from tests.conftest import free_port
from tests.test_faults import post
from tests.test_faults import wait_until
from tests.test_receiver_ingest import native_doc

pytestmark = pytest.mark.slow


def start(
    command: str, env: dict[str, str], port: int | None, log: Path
) -> subprocess.Popen[bytes]:
    args = [sys.executable, "-m", "patchwatch", command]
    if port:
        args += ["--bind", f"127.0.0.1:{port}"]
    return subprocess.Popen(args, cwd=ROOT, env=env, stdout=log.open("wb"),
                            stderr=subprocess.STDOUT)  # fmt: skip


def healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def test_receivers_scheduler_and_exporter_apart_on_postgresql(postgres, tmp_path) -> None:
    url = postgres.create_database()
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "PATCHWATCH_DATABASE_URL": url,
           "PATCHWATCH_DATA_DIR": str(tmp_path / "data"), "PATCHWATCH_PROCESS_INLINE": "false",
           "PATCHWATCH_PROCESS_INTERVAL_SECONDS": "1", "PATCHWATCH_WORKERS": "1",
           **NO_EGRESS_ENV}  # fmt: skip
    ports = [free_port(), free_port(), free_port()]
    procs = [
        start("receiver", env, ports[0], tmp_path / "r1.log"),
        start("receiver", env, ports[1], tmp_path / "r2.log"),
        start("exporter", env, ports[2], tmp_path / "ex.log"),
        start("scheduler", env, None, tmp_path / "sched.log"),
    ]
    try:
        for port in ports:
            wait_until(lambda p=port: healthy(p), 30, f"service on {port}")
        token = subprocess.run(
            [sys.executable, "-m", "patchwatch", "token", "create", "--enroll"],
            cwd=ROOT, env=env, capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
        for i in range(20):  # a load balancer alternating between the two receivers
            code, body, _ = post(f"http://127.0.0.1:{ports[i % 2]}", token,
                                 native_doc(f"node{i:02d}.example.com"))  # fmt: skip
            assert code == 202, body

        def exported() -> str:
            with urllib.request.urlopen(f"http://127.0.0.1:{ports[2]}/metrics", timeout=5) as r:
                return r.read().decode()

        wait_until(lambda: exported().count("patchwatch_host_info{") == 20, 30,
                   "all 20 hosts processed by the scheduler and exported")  # fmt: skip
        receiver_metrics = urllib.request.urlopen(
            f"http://127.0.0.1:{ports[0]}/metrics", timeout=5).read().decode()  # fmt: skip
        assert "patchwatch_host_info{" not in receiver_metrics  # the exporter's job alone
        assert (
            'patchwatch_reports_received_total{protocol="patchwatch/1",result="accepted"}'
            in receiver_metrics
        )
        health = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{ports[2]}/healthz").read())
        assert health["backend"] == "postgresql"
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(30)
