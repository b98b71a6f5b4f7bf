"""Benchmark: refresh an rpm-md mirror that serves a hostile primary.xml.

Usage:
    python bench/bench_hostile_index.py [--case many|huge|both] [--packages N]
                                        [--name-mb M] [--database-url URL]
                                        [--max-index-packages N]

Builds the repository in a temporary folder, serves it from a thread on 127.0.0.1
(nothing leaves the machine) and refreshes it once, in a child process so that its peak
RSS (``ru_maxrss``) is its own, into a fresh SQLite database (or the empty PostgreSQL
database given). Cases:

    many    N small packages (default 1,000,000: about 6 MB of gzip, 100 MB of XML),
            each a valid entry; what the byte limit alone lets through
    huge    ten ordinary packages and one whose name is M MB (default 50) and whose
            version is 1 MB, from a gzip of a few tens of KB; then 5,000 ordinary
            packages are inserted next to it, which is what every later report pays

Each case prints the refresh's outcome, time and peak RSS; ``huge`` also the time of
the 5,000 inserts. ``--max-index-packages`` is passed to the settings when this
patchwatch has that setting.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import gzip
import hashlib
import http.server
import json
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

COMMON = "http://linux.duke.edu/metadata/common"


def primary_many(count: int) -> bytes:
    """``count`` valid packages, compressed as createrepo_c would (gzip)."""
    head = f'<?xml version="1.0"?>\n<metadata xmlns="{COMMON}" packages="{count}">\n'
    out = gzip.GzipFile(fileobj=(buf := _Buffer()), mode="wb", mtime=0, compresslevel=6)
    out.write(head.encode())
    step = 10_000
    for start in range(0, count, step):
        chunk = "".join(
            f'<package type="rpm"><name>p{i:07d}</name><arch>x86_64</arch>'
            f'<version epoch="0" ver="1.0" rel="1"/><location href="p{i}.rpm"/></package>\n'
            for i in range(start, min(count, start + step))
        )
        out.write(chunk.encode())
    out.write(b"</metadata>\n")
    out.close()
    return buf.getvalue()


def primary_huge(name_mb: int) -> bytes:
    """Ten ordinary packages and one with a name of ``name_mb`` MB and a 1 MB version."""
    out = gzip.GzipFile(fileobj=(buf := _Buffer()), mode="wb", mtime=0, compresslevel=9)
    out.write(f'<?xml version="1.0"?>\n<metadata xmlns="{COMMON}" packages="11">\n'.encode())
    for i in range(10):
        out.write(
            f'<package type="rpm"><name>ok{i}</name><arch>x86_64</arch>'
            f'<version epoch="0" ver="1.0" rel="1"/></package>\n'.encode()
        )
    out.write(b'<package type="rpm"><name>a')
    block = b"a" * (1 << 20)
    for _ in range(name_mb):
        out.write(block)
    out.write(b'</name><arch>x86_64</arch><version epoch="0" ver="')
    out.write(block)
    out.write(b'" rel="1"/></package>\n</metadata>\n')
    out.close()
    return buf.getvalue()


class _Buffer:
    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def write(self, data: bytes) -> int:
        self.parts.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass

    def getvalue(self) -> bytes:
        return b"".join(self.parts)


def write_repo(folder: Path, primary_gz: bytes) -> None:
    digest = hashlib.sha256(primary_gz).hexdigest()
    href = f"repodata/{digest}-primary.xml.gz"
    (folder / "repodata").mkdir(parents=True)
    (folder / href).write_bytes(primary_gz)
    (folder / "repodata" / "repomd.xml").write_text(
        '<?xml version="1.0"?>\n<repomd xmlns="http://linux.duke.edu/metadata/repo">'
        f'<revision>1</revision><data type="primary"><checksum type="sha256">{digest}'
        f'</checksum><location href="{href}"/><size>{len(primary_gz)}</size></data></repomd>\n'
    )


def child(url: str, database_url: str, case: str, max_index_packages: int) -> None:
    """Refresh the mirror at ``url`` in this process and print the figures as JSON."""
    from patchwatch.domain.records import Package as PackageRecord
    from patchwatch.domain.records import PackageKind
    from patchwatch.domain.settings import Settings
    from patchwatch.pipeline.fetch import HttpFetcher
    from patchwatch.pipeline.refresh import refresh_mirror
    from patchwatch.store.db import open_database
    from patchwatch.store.db import write_transaction
    from patchwatch.store.migrations import migrate
    from patchwatch.store.models import Mirror
    from patchwatch.store.models import Package
    from patchwatch.store.models import Repository
    from patchwatch.store.sets import ensure_packages

    db = open_database(database_url)
    db.connect()
    migrate(db)
    repo = Repository.create(kind="rpm", key=f"rpm bench {url}", arch="x86_64", created_at=0)
    mirror = Mirror.create(repository=repo, url=url)
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    known = {f.name for f in dataclasses.fields(Settings)}
    values: dict[str, object] = {"http_timeout_seconds": 600.0, "http_retries": 0}
    if max_index_packages and "max_index_packages" in known:
        values["max_index_packages"] = max_index_packages
    settings = Settings(**values)  # type: ignore[arg-type]
    with HttpFetcher.from_settings(settings) as fetcher:
        started = time.perf_counter()
        res = refresh_mirror(mirror, fetcher, time.time(), settings)
        seconds = time.perf_counter() - started
    longest = db.execute_sql(f"SELECT MAX(LENGTH(name)) FROM {Package._meta.table_name}")
    figures: dict[str, object] = {
        "outcome": res.outcome,
        "detail": res.detail[:300],
        "packages": res.packages,
        "seconds": seconds,
        "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "baseline_mb": baseline / 1024,
        "longest_stored_name": longest.fetchone()[0],
    }
    if case == "huge":
        batch = [
            PackageRecord(f"a{i:05d}", "0", "1.0", "1", "x86_64", PackageKind.RPM)
            for i in range(5000)
        ]
        started = time.perf_counter()
        with write_transaction():
            ensure_packages(batch)
        figures["insert_5000_seconds"] = time.perf_counter() - started
    print(json.dumps(figures))


def run_case(case: str, args: argparse.Namespace, tmp: Path) -> dict[str, object]:
    folder = tmp / case
    data = primary_many(args.packages) if case == "many" else primary_huge(args.name_mb)
    write_repo(folder, data)
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        database_url = args.database_url or f"sqlite:///{tmp / (case + '.db')}"
        proc = subprocess.run(
            [sys.executable, __file__, "--child", case, "--url", url,
             "--database-url", database_url,
             "--max-index-packages", str(args.max_index_packages)],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
    finally:
        server.shutdown()
        server.server_close()
    if proc.returncode != 0:
        raise SystemExit(f"{case} run failed:\n{proc.stderr[-3000:]}")
    figures: dict[str, object] = json.loads(proc.stdout.strip().splitlines()[-1])
    figures["gzip_bytes"] = len(data)
    return figures


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--case", choices=["many", "huge", "both"], default="both")
    parser.add_argument("--packages", type=int, default=1_000_000)
    parser.add_argument("--name-mb", type=int, default=50)
    parser.add_argument("--database-url", default="")
    parser.add_argument("--max-index-packages", type=int, default=0)
    parser.add_argument("--child", choices=["many", "huge"], help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.url, args.database_url, args.child, args.max_index_packages)
        return
    cases = ["many", "huge"] if args.case == "both" else [args.case]
    with tempfile.TemporaryDirectory(prefix="pw-bench-hostile-") as tmp:
        for case in cases:
            f = run_case(case, args, Path(tmp))
            print(
                f"{case}: {f['gzip_bytes'] / 1e6:.2f} MB gzip -> {f['outcome']} "
                f"({f['packages']} packages stored) in {float(f['seconds']):.1f} s, peak RSS "  # type: ignore[arg-type]
                f"{float(f['maxrss_mb']):.0f} MB (after imports {float(f['baseline_mb']):.0f} MB); "  # type: ignore[arg-type]
                f"longest stored name {f['longest_stored_name']} characters"
            )
            if f["detail"]:
                print(f"    detail: {f['detail']}")
            if "insert_5000_seconds" in f:
                print(f"    5,000 inserts next to it: {float(f['insert_5000_seconds']):.2f} s")  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
