#!/usr/bin/env python3
"""Server time of every web console page at fleet size (aim: each under 200 ms at 10,000 hosts).

Reads a real fleet's store, as ``bench_pipeline.py --keep-store`` leaves it (real
bookworm packages, 100 images with drift, every host's updates computed from the real
Debian indexes), so that each page reads what it would read on a server: build it
first, then measure (the SQLite file is copied, and the copy gets the viewer and admin
tokens and the console's session key the pages need):

    .venv/bin/python bench/bench_pipeline.py --hosts 10000 --backends sqlite --no-doc \\
        --keep-store /tmp/stores
    .venv/bin/python bench/bench_console.py --store /tmp/stores/patchwatch-sqlite-10000.db
    .venv/bin/python bench/bench_console.py --database-url postgresql://... # a restored dump

Each page is asked ``--repeat`` times (default 5) through the receiver's WSGI app in
this process, signed in with an admin token (admins see every page a viewer sees, and
the action forms): the time is the server's alone, from the request to the last byte
of the answer, no network. The subjects are chosen from the store: the host with the
most pending updates, the package installed on most hosts, the repository most hosts
use. Prints one Markdown row per page: first, median and slowest time, answer size.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from peewee import fn  # noqa: E402

from patchwatch.domain.settings import Settings  # noqa: E402
from patchwatch.receiver.app import create_app  # noqa: E402
from patchwatch.store.db import database  # noqa: E402
from patchwatch.store.db import make_database  # noqa: E402
from patchwatch.store.migrations import migrate  # noqa: E402
from patchwatch.store.models import Host  # noqa: E402
from patchwatch.store.models import HostUpdate  # noqa: E402
from patchwatch.store.models import OSRelease  # noqa: E402
from patchwatch.store.models import Package  # noqa: E402
from patchwatch.store.models import PackageSet  # noqa: E402
from patchwatch.store.queries import repository_summaries  # noqa: E402
from patchwatch.store.tokens import create_token  # noqa: E402

AIM_SECONDS = 0.2


def subjects() -> dict[str, str]:
    """The pages' subjects: the busiest host, another one, a common package, a big repository."""
    busiest = (
        HostUpdate.select(HostUpdate.host, fn.COUNT(HostUpdate.id).alias("n"))
        .group_by(HostUpdate.host)
        .order_by(fn.COUNT(HostUpdate.id).desc())
        .limit(1)
        .tuples()
        .first()
    )
    host = Host.get_by_id(busiest[0]) if busiest else Host.select().first()
    other = Host.select().where(Host.id != host.id).order_by(Host.name).first()
    biggest = (
        Host.select(Host.name)
        .join(PackageSet, on=(Host.package_set == PackageSet.id))
        .order_by(PackageSet.size.desc())
        .first()
    )
    repos = sorted(repository_summaries(), key=lambda r: -int(r["hosts"]))  # type: ignore[arg-type]
    package = "libc6" if Package.select().where(Package.name == "libc6").exists() else "pkg1"
    os_name = OSRelease.select(OSRelease.name).order_by(OSRelease.name).scalar() or ""
    return {
        "host": host.name, "other": other.name if other else host.name,
        "biggest": biggest.name if biggest else host.name,
        "package": package, "repository": str(repos[0]["id"]) if repos else "1",
        "mirror": str(repos[0]["mirrors"][0]["url"]) if repos and repos[0]["mirrors"] else "",
        "os": os_name,
    }  # fmt: skip


def pages(s: dict[str, str]) -> list[tuple[str, str]]:
    h, o, b = quote(s["host"]), quote(s["other"]), quote(s["biggest"])
    return [
        ("attention (landing)", "/ui/"),
        ("hosts, first page", "/ui/hosts"),
        ("hosts, security, by count", "/ui/hosts?security=true&sort=-security_updates"),
        ("hosts using a repository", f"/ui/hosts?repository={s['repository']}&page=3"),
        ("host with most updates", f"/ui/hosts/{h}"),
        ("host with most packages", f"/ui/hosts/{b}?q=lib"),
        ("host diff", f"/ui/hosts/{h}/diff?other={o}"),
        ("host's packages from no repository", f"/ui/hosts/{h}/orphans"),
        ("package search", "/ui/packages?q=lib"),
        (f"package {s['package']} across the fleet", f"/ui/packages/{s['package']}"),
        ("repositories", "/ui/repositories"),
        ("repository most used", f"/ui/repositories/{s['repository']}"),
        ("mirrors", "/ui/mirrors"),
        ("one mirror", f"/ui/mirrors?url={quote(s['mirror'], safe='')}"),
        ("OS groups", "/ui/os"),
        ("one OS group", f"/ui/os/{quote(s['os'])}"),
        ("audit", "/ui/audit"),
        ("hosts as CSV (the API's same query)", "/api/v1/hosts?per_page=1000&format=csv"),
    ]


def measure(client: Any, path: str, repeat: int) -> tuple[list[float], int, int]:
    times = []
    size = status = 0
    for _ in range(repeat):
        started = time.perf_counter()
        answer = client.get(path)
        body = answer.get_data()
        times.append(time.perf_counter() - started)
        size, status = len(body), answer.status_code
    return times, size, status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--store", type=Path, help="a SQLite store (copied before use)")
    where.add_argument("--database-url", help="a store to use as it is (tokens are added)")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="pw-bench-console-"))
    try:
        if args.store:
            copy = workdir / "patchwatch.db"
            shutil.copyfile(args.store, copy)
            url = f"sqlite:///{copy}"
        else:
            url = args.database_url
        handle = make_database(url)
        database.initialize(handle)
        handle.connect()
        migrate(handle)
        hosts = Host.select().count()
        _, admin = create_token("admin", time.time(), comment="bench_console")
        s = subjects()
        handle.close()
        app = create_app(Settings(data_dir=str(workdir), database_url=url), db=handle)
        client = app.test_client()
        login = client.get("/ui/login").get_data(as_text=True)
        csrf = login.split('name="csrf" value="', 1)[1].split('"', 1)[0]
        answer = client.post("/ui/login", data={"csrf": csrf, "token": admin})
        assert answer.status_code == 303, answer.get_data(as_text=True)
        print(f"{hosts:,} hosts; subjects: {s}")
        print("| page | first | median | slowest | answer |")
        print("|---|---|---|---|---|")
        over = []
        for label, path in pages(s):
            times, size, status = measure(client, path, args.repeat)
            median = statistics.median(times)
            if status != 200:
                label += f" (HTTP {status})"
            if max(times[1:] or times) > AIM_SECONDS:
                over.append(label)
            print(f"| {label} | {times[0] * 1000:.0f} ms | {median * 1000:.0f} ms "
                  f"| {max(times) * 1000:.0f} ms | {size / 1024:.0f} KiB |")  # fmt: skip
        print(f"pages over {AIM_SECONDS * 1000:.0f} ms after the first request: "
              f"{', '.join(over) or 'none'}")  # fmt: skip
        return 1 if over else 0
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
