"""Time from a first agent report to correct numbers in /metrics, against the real mirror.

Starts ``patchwatch serve`` with an empty store, runs the agent on this machine (its
real dpkg database and apt sources, so the real Debian mirror they name), and polls
/metrics until the host's pending-update series appear: the scheduler's follow-up must
read every new repository (download, verify, parse, store) and compute the host. Then a
second host (the same report under another name, so the same repositories) is timed
the same way. Nothing here touches the store but the agent's reports.

With ``--compare-apt``, the pending updates patchwatch found are compared, package by
package, with ``apt list --upgradable`` on this machine (run ``apt-get update`` first so
that apt and patchwatch read the same mirror state).

Usage: .venv/bin/python bench/bench_first_report.py [--compare-apt] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PENDING = re.compile(r'^patchwatch_host_updates_pending\{host="([^"]+)",kind="(\w+)"\} (\S+)$')


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(url: str, token: str = "") -> bytes:
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=10) as resp:
        return bytes(resp.read())


def pending(base: str) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for line in get(base + "/metrics").decode().splitlines():
        m = PENDING.match(line)
        if m:
            out.setdefault(m[1], {})[m[2]] = float(m[3])
    return out


def cli(env: dict[str, str], *args: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "patchwatch", *args], cwd=ROOT, env=env,
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return proc.stdout.strip()


def run_agent(env: dict[str, str], base: str, token: str, spool: Path, *extra: str) -> float:
    """Send this machine's report; return when the server acknowledged it."""
    agent_env = {**os.environ, "PATCHWATCH_TOKEN": token, "PATCHWATCH_CONFIG": "/dev/null"}
    subprocess.run(
        ["python3", str(ROOT / "agent" / "patchwatch_agent.py"), "--server", base,
         "--spool-dir", str(spool), *extra],
        env=agent_env, check=True, capture_output=True, text=True,
    )  # fmt: skip
    return time.monotonic()


def wait_for_numbers(base: str, host: str | None, timeout: float = 600) -> tuple[str, float]:
    """Poll /metrics every 0.1 s until a host (this one, or any) has its update series."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = pending(base)
        for name in found:
            if host is None or name == host:
                return name, time.monotonic()
        time.sleep(0.1)
    raise SystemExit(f"no numbers for {host or 'the host'} after {timeout:.0f} s")


def apt_upgradable() -> set[str]:
    out = subprocess.run(
        ["apt", "list", "--upgradable"], capture_output=True, text=True, check=True
    ).stdout
    return {line.split("/", 1)[0] for line in out.splitlines() if "/" in line}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--compare-apt", action="store_true", help="compare with apt")
    parser.add_argument("--keep", type=Path, help="keep the server's data folder here")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="patchwatch-first-report-"))
    data = args.keep or work / "data"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {"PATH": os.environ["PATH"], "HOME": str(work), "PATCHWATCH_DATA_DIR": str(data),
           "PATCHWATCH_LOG_LEVEL": "INFO"}  # fmt: skip
    log = (work / "serve.log").open("wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "patchwatch", "serve", "--bind", f"127.0.0.1:{port}"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                get(base + "/healthz")
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit(f"server did not start; see {work / 'serve.log'}") from None
                time.sleep(0.1)
        admin = cli(env, "token", "create", "--admin")
        first_token = cli(env, "token", "create", "--enroll")
        started = time.monotonic()
        sent = run_agent(env, base, first_token, work / "spool1")
        host, numbers = wait_for_numbers(base, None)
        print(f"first host {host}: agent run {sent - started:.1f} s, "
              f"numbers in /metrics {numbers - sent:.1f} s after the report "
              f"({numbers - started:.1f} s in all)")  # fmt: skip

        second = "second-" + host
        second_token = cli(env, "token", "create", "--enroll")
        started = time.monotonic()
        sent = run_agent(env, base, second_token, work / "spool2", "--hostname", second)
        _, numbers = wait_for_numbers(base, second)
        print(f"second host: agent run {sent - started:.1f} s, "
              f"numbers in /metrics {numbers - sent:.2f} s after the report")  # fmt: skip

        counts = pending(base)
        print(f"pending updates: {json.dumps(counts, sort_keys=True)}")
        with sqlite3.connect(data / "patchwatch.db") as store:
            runs = store.execute(
                "SELECT round(duration_seconds, 2), detail FROM job_run "
                "WHERE job = 'follow_up' ORDER BY id"
            ).fetchall()
        print("follow-up runs (seconds, detail):")
        for seconds, detail in runs:
            print(f"  {seconds} s  {detail}")
        if args.compare_apt:
            detail = json.loads(get(f"{base}/api/v1/hosts/{host}", admin))
            ours = {u["name"] for u in detail["updates"]}
            apt = apt_upgradable()
            print(f"apt list --upgradable: {len(apt)}; patchwatch: {len(ours)}")
            print(f"only apt: {sorted(apt - ours)}; only patchwatch: {sorted(ours - apt)}")
    finally:
        server.terminate()
        server.wait(60)
        log.close()
    print(f"server log: {work / 'serve.log'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
