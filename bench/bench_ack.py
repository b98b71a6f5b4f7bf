"""How fast ``patchwatch serve`` acknowledges reports, and how soon they become host state.

Reports are built from a real Debian index (bookworm main amd64, downloaded from the
mirror in this machine's apt sources, or ``--packages PATH``): native gzip reports of
``--size`` packages (20 images, 5 % of each image differs) and Patchman protocol-1
multipart forms of the same packages, in the client's quoted-line format. Bodies are
encoded before the clock starts; one connection per request, as agents and curl do.

For each run: reports acknowledged per second at ``--concurrency`` senders, latency
p50 / p99, the statuses, the server's CPU seconds (its process tree, from /proc) and
per acknowledged report, and, with ``--until-processed``, the seconds until every
report is host state (no report left pending). ``--rate R`` sends at a steady R
reports/s instead of as fast as possible, and then reports each report's time from
its send to host state (p50 / p99), read from the reports' ``processed_at``, and
from when it was due at that rate (``due_to_state``: a server slow to answer holds
the senders back, and the time they were held is part of the wait).
``--profile`` records the workers with py-spy (``pip install py-spy``) into an SVG.

The senders share the machine's cores with the server, so what they cost is measured
too (``sender_cpu_ms_per_report``). ``--sender wrk`` (Debian's ``wrk``, the default
when it is installed) posts the prepared bodies from C, one connection per report
(``Connection: close``), for ``--duration`` seconds, cycling through the ``--reports``
distinct hosts; ``--sender python`` (threads with ``http.client``) sends each body
once, and is the one ``--rate`` and the report-to-host-state figures use. The
Python senders cost about as much CPU as the server, so the figure it gives is of
both. ``--tokens host`` sends each host's report with the host's own token (as an
enrolled fleet does: its first reports, made with the enrollment token, are sent
before the clock starts); ``enroll`` (the default) makes every report a host's first.
``--floor wsgi|flask`` serves, instead of patchwatch, an application that only reads
the body and answers 202, under the same gunicorn settings: what a request costs
before patchwatch does anything.

The store is SQLite in a temporary data folder, or PostgreSQL: ``--postgres`` starts a
throw-away cluster on loopback (the tests' recipe, as ``bench_pipeline.py`` does) with
a fresh database per run, ``--database-url URL`` uses an empty database the caller
made. ``--tree PATH`` serves another code tree (``git archive`` of an older commit, run by
its own ``.venv`` when it has one) with this script's clients and clock, so that old
and new are driven alike.

Usage:
  .venv/bin/python bench/bench_ack.py --kind native --reports 1000 --concurrency 50
  .venv/bin/python bench/bench_ack.py --kind protocol1 --inline false
  .venv/bin/python bench/bench_ack.py --kind native --rate 200 --until-processed --postgres
  .venv/bin/python bench/bench_ack.py --kind native --tokens host --duration 10
  .venv/bin/python bench/bench_ack.py --kind native --floor wsgi
Each run prints one JSON line.
"""

from __future__ import annotations

import argparse
import gzip
import http.client
import json
import os
import random
import re
import resource
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_ingest import load_index  # noqa: E402
from bench_ingest import make_images  # noqa: E402
from bench_ingest import report  # noqa: E402
from bench_parse_apt import download  # noqa: E402

HZ = os.sysconf("SC_CLK_TCK")
MIRROR = "http://127.0.0.1:9/debian"  # nothing listens there: no traffic leaves the machine


def native_bodies(images: list[list[dict]], n: int) -> list[tuple[str, bytes, dict]]:
    out = []
    for i in range(n):
        doc = report(f"host{i:05d}.example.com", images[i % len(images)])
        doc["repositories"][0]["urls"] = [MIRROR]  # loopback: the refresh job reads it
        out.append(("/api/v1/reports", gzip.compress(json.dumps(doc).encode()),
                    {"Content-Type": "application/json", "Content-Encoding": "gzip"}))  # fmt: skip
    return out


def protocol1_bodies(images: list[list[dict]], n: int) -> list[tuple[str, bytes, dict]]:
    out = []
    for i in range(n):
        pkgs = "\n".join(
            f"'{p['name']}' '{p['epoch']}' '{p['version']}' '{p['release']}' '{p['arch']}' 'deb'"
            for p in images[i % len(images)]
        )
        fields = {
            "host": f"host{i:05d}.example.com", "tags": "bench", "kernel": "6.1.0-28-amd64",
            "arch": "x86_64", "protocol": "1", "os": "Debian GNU/Linux 12 (bookworm)",
            "report": "false", "packages": pkgs,
            "repos": f"'deb' 'Debian 12 bookworm main' '500' '{MIRROR}'",
            "sec_updates": "", "bug_updates": "", "modules": "", "reboot": "False",
        }  # fmt: skip
        boundary = "------------------------" + uuid.uuid4().hex[:16]
        body = (
            "".join(
                f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'
                for k, v in fields.items()
            )
            + f"--{boundary}--\r\n"
        )
        out.append(("/reports/upload/", body.encode(),
                    {"Content-Type": f"multipart/form-data; boundary={boundary}"}))  # fmt: skip
    return out


def tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) of ``pid`` and its descendants."""
    total = 0
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
            for task in os.listdir(f"/proc/{p}/task"):  # children of every thread
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo += [int(c) for c in f.read().split()]
        except OSError:
            continue
    return total / HZ


def query(url: str, sql: str) -> list[tuple]:
    """Rows of ``sql`` on the served store (SQLite file or PostgreSQL URL)."""
    if url.startswith("postgres"):
        import psycopg2

        con = psycopg2.connect(url)
        try:
            with con.cursor() as cur:
                cur.execute(sql)
                return cur.fetchall()
        finally:
            con.close()
    lite = sqlite3.connect(url, timeout=30)
    try:
        return lite.execute(sql).fetchall()
    finally:
        lite.close()


def pending(url: str) -> int:
    return query(url, "select count(*) from report where state = 'pending'")[0][0]


def send_all(port: int, bodies: list, conc: int, tokens: list[str], rate: float) -> dict:
    lat: list[float] = [0.0] * len(bodies)
    sent: list[float] = [0.0] * len(bodies)
    codes: dict[str, int] = {}
    nxt = [0]
    lock = threading.Lock()
    start = time.perf_counter()
    wall_start = time.time()

    def worker() -> None:
        while True:
            with lock:
                i = nxt[0]
                nxt[0] += 1
            if i >= len(bodies):
                return
            if rate:
                delay = start + i / rate - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
            path, body, headers = bodies[i]
            if tokens[i] and path == "/api/v1/reports":
                headers = {**headers, "Authorization": f"Bearer {tokens[i]}"}
            t = time.perf_counter()
            sent[i] = time.time()
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
                c.request("POST", path, body=body, headers=headers)
                r = c.getresponse()
                r.read()
                c.close()
                code = str(r.status)
            except Exception as exc:  # counted by its name
                code = type(exc).__name__
            lat[i] = time.perf_counter() - t
            with lock:
                codes[code] = codes.get(code, 0) + 1

    threads = [threading.Thread(target=worker) for _ in range(conc)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    sl = sorted(lat)

    def pct(p: float) -> float:
        return round(sl[min(len(sl) - 1, int(p * len(sl)))] * 1000, 1)

    # when each report was due at ``rate``: a server slow to answer delays the senders,
    # and times counted from the actual send would leave that delay out
    due = [wall_start + i / rate if rate else at for i, at in enumerate(sent)]
    return {"wall_s": round(wall, 3), "rate": round(len(bodies) / wall, 1), "p50_ms": pct(0.5),
            "p99_ms": pct(0.99), "max_ms": pct(1.0), "codes": codes, "sent_at": sent,
            "due_at": due}  # fmt: skip


WRK_SCRIPT = r"""
-- each wrk thread posts its share of the prepared requests (every NTH from its
-- number), cycling, and counts the answers by status
local threads, made = {}, 0
function setup(thread)
  thread:set("tid", made)
  made = made + 1
  table.insert(threads, thread)
end
function init(args)
  local nth = tonumber(args[2])
  reqs, codes, at = {}, {}, 0
  local list = io.open(args[1] .. "/list", "r")
  local i = 0
  for line in list:lines() do
    if i % nth == tid then
      local file = io.open(args[1] .. "/" .. i, "rb")
      table.insert(reqs, file:read("*a"))
      file:close()
    end
    i = i + 1
  end
  list:close()
end
function request()
  at = at % #reqs + 1
  return reqs[at]
end
function response(status, headers, body)
  local key = tostring(status)
  codes[key] = (codes[key] or 0) + 1
end
function done(summary, latency, requests)
  local all = {}
  for _, thread in ipairs(threads) do
    for k, v in pairs(thread:get("codes")) do all[k] = (all[k] or 0) + v end
  end
  local parts = {}
  for k, v in pairs(all) do table.insert(parts, string.format('"%s": %d', k, v)) end
  local e = summary.errors
  io.write(string.format(
    'WRK {"requests": %d, "us": %d, "p50_us": %d, "p99_us": %d, "max_us": %d, ' ..
    '"codes": {%s}, "errors": {"connect": %d, "read": %d, "write": %d, "timeout": %d}}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    latency.max, table.concat(parts, ", "), e.connect, e.read, e.write, e.timeout))
end
"""


def raw_request(path: str, body: bytes, headers: dict, port: int) -> bytes:
    """One whole HTTP/1.1 request, as wrk sends it (no keep-alive: a connection per report)."""
    lines = [f"POST {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Connection: close",
             f"Content-Length: {len(body)}"]  # fmt: skip
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def send_wrk(port: int, bodies: list, conc: int, tokens: list[str], duration: float) -> dict:
    """Post the bodies with wrk for ``duration`` seconds; its CPU seconds are the sender's."""
    with tempfile.TemporaryDirectory() as tmp:
        for i, (path, body, headers) in enumerate(bodies):
            if tokens[i] and path == "/api/v1/reports":
                headers = {**headers, "Authorization": f"Bearer {tokens[i]}"}
            Path(tmp, str(i)).write_bytes(raw_request(path, body, headers, port))
        Path(tmp, "list").write_text("".join(f"{i}\n" for i in range(len(bodies))))
        Path(tmp, "send.lua").write_text(WRK_SCRIPT)
        nthreads = 1  # one core at most: the server has the other, and more
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        done = subprocess.run(
            ["wrk", "-t", str(nthreads), "-c", str(conc), "-d", f"{round(duration)}s",
             "--timeout", "60s", "-s", f"{tmp}/send.lua", f"http://127.0.0.1:{port}/",
             "--", tmp, str(nthreads)],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    line = re.search(r"^WRK (.*)$", done.stdout, re.M)
    if line is None:
        raise RuntimeError(f"wrk said: {done.stdout}{done.stderr}")
    got = json.loads(line.group(1))
    wall = got["us"] / 1e6
    return {"wall_s": round(wall, 3), "sent": got["requests"],
            "rate": round(got["requests"] / wall, 1), "p50_ms": round(got["p50_us"] / 1000, 1),
            "p99_ms": round(got["p99_us"] / 1000, 1), "max_ms": round(got["max_us"] / 1000, 1),
            "codes": got["codes"], "socket_errors": got["errors"],
            "sender_cpu_s": round(after.ru_utime + after.ru_stime - before.ru_utime
                                  - before.ru_stime, 2)}  # fmt: skip


def enroll_hosts(port: int, bodies: list, conc: int, token: str) -> list[str]:
    """Send each host's first report with the enrollment token; return the hosts' own tokens."""
    tokens = [""] * len(bodies)
    nxt = iter(range(len(bodies)))
    lock = threading.Lock()

    def worker() -> None:
        while True:
            with lock:
                i = next(nxt, None)
            if i is None:
                return
            path, body, headers = bodies[i]
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
            auth = {"Authorization": f"Bearer {token}"}
            c.request("POST", path, body=body, headers={**headers, **auth})
            r = c.getresponse()
            answer = json.loads(r.read())
            c.close()
            if r.status != 202:
                raise RuntimeError(f"enrolling report {i}: {r.status} {answer}")
            tokens[i] = answer["host_token"]

    threads = [threading.Thread(target=worker) for _ in range(min(conc, 8))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return tokens


def floor_app(kind: str):
    """What a request costs before patchwatch does anything: read the body, answer 202."""
    if kind == "flask":
        from flask import Flask
        from flask import jsonify
        from flask import request

        app = Flask("floor")

        @app.post("/api/v1/reports")
        @app.post("/reports/upload/")
        def receive():
            request.get_data()
            response = jsonify(status="accepted", report=1)
            response.status_code = 202
            return response

        return app

    def app(environ, start_response):
        stream = environ["wsgi.input"]
        while stream.read(65536):
            pass
        answer = b'{"status": "accepted", "report": 1}'
        start_response("202 Accepted", [("Content-Type", "application/json"),
                                        ("Content-Length", str(len(answer)))])  # fmt: skip
        return [answer]

    return app


def serve_floor(kind: str, bind: str, workers: int) -> None:
    """Run :func:`floor_app` under gunicorn with the options ``serve`` uses (in this process)."""
    from patchwatch.cli.gunicorn_app import EmbeddedGunicorn
    from patchwatch.cli.gunicorn_app import gunicorn_options
    from patchwatch.domain.settings import Settings

    settings = Settings()
    options = gunicorn_options(
        bind, workers or settings.workers, "warning", threads=settings.threads,
        read_timeout=settings.client_read_timeout_seconds,
    )  # fmt: skip
    EmbeddedGunicorn(lambda: floor_app(kind), options).run()


def wait_ready(port: int, path: str = "/healthz") -> None:
    for _ in range(300):
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            c.request("GET", path)
            c.getresponse().read()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("the server did not start")


def run(args: argparse.Namespace, bodies: list, database_url: str = "") -> dict:
    tree = Path(args.tree).resolve() if args.tree else ROOT
    # a tree with a virtual environment of its own is served by it (its dependencies)
    python = str(tree / ".venv/bin/python") if (tree / ".venv/bin/python").exists() else None
    python = python if args.tree and python else sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        port = 18500 + random.randrange(400)
        data = f"{tmp}/data"
        env = {**os.environ, "PATCHWATCH_PROCESS_INLINE": args.inline,
               "PATCHWATCH_LOG_LEVEL": "WARNING", "PATCHWATCH_FOLLOW_REPORTS": "false",
               "PATCHWATCH_PROTOCOL1_NETWORKS": "127.0.0.0/8", "HOME": tmp,
               "PATCHWATCH_DATA_DIR": data}  # fmt: skip
        if args.inline == "false":
            # deferred means deferred: the scheduler's process job would otherwise take
            # the queue up every 15 s, in the middle of the measurement
            env["PATCHWATCH_PROCESS_INTERVAL_SECONDS"] = "3600"
        if args.workers:
            env["PATCHWATCH_WORKERS"] = str(args.workers)
        if args.threads:
            env["PATCHWATCH_THREADS"] = str(args.threads)
        if database_url:
            env["PATCHWATCH_DATABASE_URL"] = database_url
        if args.floor:
            command = [sys.executable, str(Path(__file__).resolve()), "--serve-floor", args.floor,
                       "--bind", f"127.0.0.1:{port}", "--workers", str(args.workers)]  # fmt: skip
        else:
            command = [python, "-m", "patchwatch", "serve", "--bind", f"127.0.0.1:{port}"]
        proc = subprocess.Popen(command, cwd=tree, env=env)
        spy = None
        try:
            wait_ready(port)
            token = ""
            if args.kind == "native" and not args.floor:
                token = subprocess.run(
                    [python, "-m", "patchwatch", "token", "create", "--enroll"],
                    cwd=tree, env=env, capture_output=True, text=True, check=True,
                ).stdout.strip()  # fmt: skip
            tokens = [token] * len(bodies)
            if args.tokens == "host" and token:
                # the hosts' first reports: not timed, and processed (or left queued) apart
                tokens = enroll_hosts(port, bodies, args.concurrency, token)
            if args.profile:
                spy = subprocess.Popen(
                    [str(Path(sys.executable).parent / "py-spy"), "record", "--subprocesses",
                     "-p", str(proc.pid), "-o", args.profile, "--nonblocking", "-r", "200",
                     "--format", "raw" if args.profile.endswith(".txt") else "flamegraph"],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                )  # fmt: skip
                time.sleep(1)
            load = os.getloadavg()[0]
            cpu0 = tree_cpu(proc.pid)
            started = time.perf_counter()
            if args.sender == "wrk":
                out = send_wrk(port, bodies, args.concurrency, tokens, args.duration)
                sent = due = []
            else:
                mine = resource.getrusage(resource.RUSAGE_SELF)
                out = send_all(port, bodies, args.concurrency, tokens, args.rate)
                now = resource.getrusage(resource.RUSAGE_SELF)
                out["sent"] = len(bodies)
                out["sender_cpu_s"] = round(now.ru_utime + now.ru_stime - mine.ru_utime
                                            - mine.ru_stime, 2)  # fmt: skip
                sent = out.pop("sent_at")
                due = out.pop("due_at")
            cpu1 = tree_cpu(proc.pid)
            out["load_before"] = round(load, 2)
            out["load_after"] = round(os.getloadavg()[0], 2)
            db = database_url or f"{data}/patchwatch.db"
            if args.until_processed and not args.floor:
                while pending(db) and time.perf_counter() - started < 900:
                    time.sleep(0.05)
                out["all_processed_s"] = round(time.perf_counter() - started, 2)
                out["pending_left"] = pending(db)
                done = query(
                    db, "select host_name, processed_at from report where state = 'processed'"
                )
                for name, start in (("to_state", sent), ("due_to_state", due)):
                    times = sorted(at - start[int(host[4:9])] for host, at in done
                                   if at and start and start[int(host[4:9])])  # fmt: skip
                    if times:
                        out[f"{name}_p50_ms"] = round(times[len(times) // 2] * 1000, 1)
                        out[f"{name}_p99_ms"] = round(
                            times[min(len(times) - 1, int(0.99 * len(times)))] * 1000, 1
                        )
            answered = sum(out["codes"].values()) if out["codes"] else out["sent"]
            out["server_cpu_s"] = round(cpu1 - cpu0, 2)
            out["cpu_ms_per_report"] = round(1000 * (cpu1 - cpu0) / max(answered, 1), 2)
            out["sender_cpu_ms_per_report"] = round(
                1000 * out["sender_cpu_s"] / max(answered, 1), 2
            )
        finally:
            if spy is not None:
                spy.send_signal(2)
                spy.wait(60)
            proc.terminate()
            proc.wait(60)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--packages", type=Path, help="Packages(.xz) of bookworm main amd64")
    ap.add_argument("--kind", choices=("native", "protocol1"), default="native")
    ap.add_argument("--reports", type=int, default=1000, help="distinct reports (hosts)")
    ap.add_argument("--size", type=int, default=1500, help="packages per report")
    ap.add_argument("--concurrency", type=int, default=50)
    ap.add_argument("--sender", choices=("wrk", "python"),
                    default="wrk" if shutil.which("wrk") else "python")  # fmt: skip
    ap.add_argument("--duration", type=float, default=10.0, help="seconds of sending (wrk)")
    ap.add_argument("--tokens", choices=("enroll", "host"), default="enroll",
                    help="native reports: every one a first report, or sent with the "
                         "host's own token")  # fmt: skip
    ap.add_argument("--rate", type=float, default=0.0, help="steady reports/s (0: flat out)")
    ap.add_argument("--inline", default="true", help="process_inline setting")
    ap.add_argument("--workers", type=int, default=0, help="setting workers (0: default)")
    ap.add_argument("--threads", type=int, default=0, help="setting threads (0: default)")
    ap.add_argument("--until-processed", action="store_true")
    ap.add_argument("--profile", help="py-spy output: SVG, or collapsed stacks if .txt")
    ap.add_argument("--label", default="")
    ap.add_argument("--tree", help="the code tree to serve (default: this one)")
    ap.add_argument("--floor", choices=("wsgi", "flask"),
                    help="serve an app that only reads the body, not patchwatch")  # fmt: skip
    ap.add_argument("--serve-floor", choices=("wsgi", "flask"), help=argparse.SUPPRESS)
    ap.add_argument("--bind", help=argparse.SUPPRESS)
    ap.add_argument("--postgres", action="store_true",
                    help="a throw-away PostgreSQL cluster, a fresh database per run")  # fmt: skip
    ap.add_argument("--database-url", default="", help="an empty PostgreSQL database to use")
    args = ap.parse_args()
    if args.serve_floor:
        serve_floor(args.serve_floor, args.bind, args.workers)
        return
    if args.sender == "wrk" and (args.rate or args.until_processed):
        ap.error("--rate and --until-processed need --sender python (each report sent once)")
    with tempfile.TemporaryDirectory() as tmp:
        path = args.packages or download(Path(tmp))
        index = load_index(path)
    images = make_images(index, 20, args.size)
    make = native_bodies if args.kind == "native" else protocol1_bodies
    bodies = make(images, args.reports)
    pg = None
    url = args.database_url
    if args.postgres:
        from tests.support.servers import PostgresServer

        pg = PostgresServer()
        pg.start()
        url = pg.create_database()
    try:
        out = run(args, bodies, url)
    finally:
        if pg is not None:
            pg.stop()
    head = {"label": args.label, "kind": args.kind, "reports": args.reports,
            "concurrency": args.concurrency, "inline": args.inline, "target_rate": args.rate,
            "sender": args.sender, "tokens": args.tokens, "floor": args.floor or "",
            "backend": "postgresql" if url else "sqlite"}  # fmt: skip
    print(json.dumps({**head, **out}), flush=True)


if __name__ == "__main__":
    main()
