"""``patchwatch serve`` for real: gunicorn on loopback, the scheduler child, clean stop."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from patchwatch.store.db import open_database
from patchwatch.store.models import Report
from tests.support.network import free_port
from tests.support.paths import ROOT
from tests.support.tools import require_or_skip
from tests.support.web import post_native_reports
from tests.support.web import wait_until


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(x) for x in path.read_text().split()] if path.exists() else []


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split()[2] != "Z"


def _catches_sigterm(pid: int) -> bool:
    """Whether the process has a SIGTERM handler (SigCgt in /proc/PID/status)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    caught = next(line for line in status.splitlines() if line.startswith("SigCgt:"))
    return bool(int(caught.split()[1], 16) & (1 << (signal.SIGTERM - 1)))


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _wait_healthy(base: str, proc: subprocess.Popen[bytes], timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"serve exited early: {proc.stderr.read().decode()}")
        try:
            status, body = _get(base + "/healthz")
            if status == 200:
                return json.loads(body)
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError("server did not become healthy")


@pytest.fixture
def served(tmp_path: Path, database_url: str):
    port = free_port()
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "PATCHWATCH_WORKERS": "2",
    }
    if database_url.startswith("postgres"):
        env["PATCHWATCH_DATABASE_URL"] = database_url
    proc = subprocess.Popen(
        [sys.executable, "-m", "patchwatch", "serve", "--bind", f"127.0.0.1:{port}",
         "--data-dir", str(tmp_path / "data")],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        yield proc, base, database_url
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_serve_answers_health_and_metrics_then_stops_cleanly(served) -> None:
    proc, base, url = served
    health = _wait_healthy(base, proc)
    assert health["database"] == "up"
    assert health["backend"] == ("postgresql" if url.startswith("postgres") else "sqlite")
    status, body = _get(base + "/metrics")
    text = body.decode()
    assert status == 200
    assert "patchwatch_database_up 1.0" in text
    assert "process_resident_memory_bytes" in text
    assert 'patchwatch_build_info{version="' in text
    assert _get(base + "/nope")[0] == 404

    children = _children(proc.pid)  # gunicorn workers and the scheduler
    assert len(children) >= 3
    # a process still starting up (the scheduler imports and opens the store after
    # gunicorn answers) would die of SIGTERM without its orderly stop
    deadline = time.monotonic() + 30
    while not all(_catches_sigterm(pid) for pid in children) and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    for pid in children:
        deadline = time.monotonic() + 10
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(pid), f"child {pid} survived"
    log = proc.stderr.read().decode()
    assert "Traceback" not in log
    assert "scheduler stopped" in log
    for line in log.splitlines():  # one line per event, with a level
        assert any(f" {lvl} " in line for lvl in ("DEBUG", "INFO", "WARNING", "ERROR")), line


def test_serve_with_unusable_data_dir_is_one_clear_line(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    out = subprocess.run(
        [sys.executable, "-m", "patchwatch", "serve", "--data-dir", str(blocker / "data"),
         "--bind", f"127.0.0.1:{free_port()}"],
        cwd=ROOT, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert out.returncode == 1
    assert "cannot create data folder" in out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.parametrize("verb", ["serve", "receiver", "exporter"])
def test_a_busy_port_fails_at_once_and_touches_nothing(verb: str, tmp_path: Path) -> None:
    """Bind first: a second server on a taken port must not migrate the store or start
    a scheduler before it finds out (it used to do both, then retry for 5 s)."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = subprocess.run(
            [sys.executable, "-m", "patchwatch", verb, "--bind", f"127.0.0.1:{port}",
             "--data-dir", str(tmp_path / "data")],
            cwd=ROOT, capture_output=True, text=True, timeout=30,
            env={"PATH": os.environ["PATH"], "HOME": str(tmp_path)},
        )  # fmt: skip
    assert out.returncode == 1, out.stderr
    assert out.stderr.strip() == (
        f"patchwatch {verb}: cannot listen on 127.0.0.1:{port}: Address already in use"
    )
    assert not (tmp_path / "data").exists()  # no store made, nothing migrated


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants, as ps lists them."""
    out = [pid]
    for child in subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True,
                                text=True, check=False).stdout.split():  # fmt: skip
        out += _tree(int(child))
    return out


def _ps(field: str, pids: list[int]) -> list[int]:
    text = subprocess.run(["ps", "-o", f"{field}=", "-p", ",".join(map(str, pids))],
                          capture_output=True, text=True, check=True).stdout  # fmt: skip
    return [int(v) for v in text.split()]


def _sample(text: str, name: str) -> float:
    (line,) = [ln for ln in text.splitlines() if ln.startswith(name + " ")]
    return float(line.split()[1])


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_process_metrics_are_the_whole_servers_whichever_worker_answers(served) -> None:
    """``process_*`` used to be the answering worker's: CPU went backwards from one
    scrape to the next, the start time changed, the scheduler was never counted.
    Checked against ps: the tree under the server's pid, its CPU time and memory."""
    proc, base, _url = served
    _wait_healthy(base, proc)
    deadline = time.monotonic() + 30  # the scheduler child is up once it catches SIGTERM
    while len(_tree(proc.pid)) < 6 and time.monotonic() < deadline:
        time.sleep(0.05)
    pids = _tree(proc.pid)
    assert len(pids) == 6  # gunicorn's master, 2 workers, the scheduler, 2 processing
    started = time.time() - _ps("etimes", [proc.pid])[0]
    cpu_floor = sum(_ps("cputimes", pids))  # whole seconds, rounded down, by ps
    rss = [kib * 1024 for kib in _ps("rss", pids)]
    scrapes = [_get(base + "/metrics")[1].decode() for _ in range(12)]  # new connections
    cpu = [_sample(t, "process_cpu_seconds_total") for t in scrapes]
    assert cpu == sorted(cpu) and cpu[0] >= cpu_floor
    assert {_sample(t, "process_start_time_seconds") for t in scrapes} == {
        _sample(scrapes[0], "process_start_time_seconds")}  # fmt: skip
    assert abs(_sample(scrapes[0], "process_start_time_seconds") - started) <= 2
    assert {_sample(t, "patchwatch_server_processes") for t in scrapes} == {6.0}
    memory = _sample(scrapes[-1], "process_resident_memory_bytes")
    assert memory > max(rss) and abs(memory - sum(rss)) < 0.25 * sum(rss)


def test_proc_stat_lines_with_awkward_command_names_parse() -> None:
    from patchwatch.exporter.processes import parse_stat
    from patchwatch.exporter.processes import tree

    fields = " ".join(str(n) for n in range(4, 53))  # field 4 (ppid) onwards
    stat = parse_stat(f"4242 (gunicorn: a) (b) S {fields}")
    assert (stat.pid, stat.ppid) == (4242, 4)
    assert stat.cpu_ticks == 14 + 15 + 16 + 17 and stat.start_ticks == 22
    assert (stat.vsize, stat.rss_pages) == (23, 24)
    stats = {p: parse_stat(f"{p} (x) S {pp} " + " ".join(["0"] * 48))
             for p, pp in ((1, 0), (10, 1), (11, 10), (12, 10), (13, 11), (20, 1))}  # fmt: skip
    assert sorted(tree(10, stats)) == [10, 11, 12, 13] and tree(99, stats) == []


def test_the_shipped_server_unit_verifies_and_runs_serve() -> None:
    """The runbook says `systemctl status patchwatch`: the unit is shipped, and valid."""
    unit = ROOT / "deploy" / "patchwatch.service"
    if shutil.which("systemd-analyze") is None:
        require_or_skip("PATCHWATCH_TEST_REQUIRE_ORACLES", "systemd-analyze not installed")
    out = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                         text=True, timeout=60)  # fmt: skip
    assert out.returncode == 0 and out.stderr == "", out.stderr
    text = unit.read_text()
    assert "ExecStart=/usr/bin/env patchwatch serve --data-dir /var/lib/patchwatch" in text
    assert "systemctl status patchwatch" in (ROOT / "docs" / "runbook.md").read_text()
    assert "deploy/patchwatch.service" in (ROOT / "docs" / "deploy.md").read_text()


def _processors(server_pid: int) -> dict[str, int]:
    """serve's processing children by their share ("0/2" → pid)."""
    found = {}
    # a restarted one is the child of serve's supervising thread, not of its main one
    pids = [int(c) for task in Path(f"/proc/{server_pid}/task").iterdir()
            for c in (task / "children").read_text().split()]  # fmt: skip
    for pid in pids:
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"processor" in cmd and _alive(pid):
            found[cmd[-2].decode()] = pid
    return found


def test_a_processing_process_that_dies_is_started_again_and_counted(server_factory) -> None:
    """A processing child killed (as the OOM killer does) is replaced on the same pipe
    and share: reports of its share are still processed as they arrive (the
    scheduler's straggler job looks only once an hour here), the restart is counted in
    ``/metrics`` and logged."""
    srv = server_factory({"PATCHWATCH_PROCESS_INTERVAL_SECONDS": "3600"})
    before = wait_until(lambda: len(_processors(srv.proc.pid)) == 2 and _processors(srv.proc.pid),
                        30, "two processing children")  # fmt: skip
    os.kill(before["0/2"], signal.SIGKILL)
    after = wait_until(
        lambda: (p := _processors(srv.proc.pid)).get("0/2") not in (None, before["0/2"]) and p,
        30, "a new processing child for share 0/2",
    )  # fmt: skip
    assert after["1/2"] == before["1/2"]  # the other share's is left alone
    token = srv.cli("token", "create", "--enroll").stdout.strip()
    # report ids alternate between the two shares
    ids = post_native_reports(srv.base, token, [f"r{i}.example.com" for i in range(6)])
    db = open_database(srv.database_url)

    def processed() -> bool:
        with db.connection_context():
            states = dict(Report.select(Report.id, Report.state).tuples())
        return all(states.get(i) == "processed" for i in ids)

    wait_until(processed, 60, "every report, of both shares, to be processed")
    metrics = _get(srv.base + "/metrics")[1].decode()
    assert "patchwatch_processor_restarts_total 1.0" in metrics
    log = srv.log_path.read_text()
    assert f"processing process {before['0/2']} (share 0 of 2) is gone" in log
