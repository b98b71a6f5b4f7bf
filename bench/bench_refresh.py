"""Benchmark: refresh bookworm, bookworm-updates and bookworm-security main amd64.

Usage:
    python bench/bench_refresh.py [--mirror URL] [--security-mirror URL] [--repeat N]
                                  [--database-url URL]

Downloads from the Debian mirrors of this machine's apt sources (default
http://deb.debian.org/debian and .../debian-security), about 66,000 packages, into a
fresh SQLite database in a temporary folder (or the PostgreSQL database given, which
must be empty). Each measurement runs in a fresh child process so that its peak RSS
(``ru_maxrss``) is its own:

    full        first refresh: InRelease + gpgv, download, verify, decompress, parse and
                store the three indexes (aim: 3 s, 150 MB)
    unchanged   the same again: only InRelease is read and verified (aim: 0.3 s)
    forced      ``--force``: everything downloaded, verified and parsed again, the
                stored package sets found by digest (the "mirror changed back" case)

Times are wall-clock for ``refresh_all`` only (interpreter start and imports excluded;
their RSS included and shown as "baseline"). The mirror here answers from a nearby
cache, so download times are optimistic. Settings come from the ``PATCHWATCH_*``
environment: where the mirror's name resolves to a non-public address (a site cache),
list it in ``PATCHWATCH_MIRROR_ALLOWED_NETWORKS``, or the fetch policy refuses it.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SUITES = (("bookworm", False), ("bookworm-updates", False), ("bookworm-security", True))


def child(mode: str, database_url: str, mirror: str, security_mirror: str) -> None:
    """Run one refresh in this process and print its figures as JSON."""
    from patchwatch.domain.settings import parse_settings
    from patchwatch.pipeline.fetch import HttpFetcher
    from patchwatch.pipeline.refresh import refresh_all
    from patchwatch.store.db import open_database
    from patchwatch.store.migrations import migrate
    from patchwatch.store.models import Mirror
    from patchwatch.store.models import Repository

    db = open_database(database_url)
    db.connect()
    migrate(db)
    if mode == "full":
        for suite, security in SUITES:
            url = security_mirror if security else mirror
            repo = Repository.create(
                kind="deb", key=f"deb {url} {suite} main amd64", suite=suite,
                component="main", arch="amd64", created_at=time.time(),
            )  # fmt: skip
            Mirror.create(repository=repo, url=url, approved=True)  # chosen by the operator
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    settings = parse_settings(environ=os.environ)
    with HttpFetcher.from_settings(settings) as fetcher:
        started = time.perf_counter()
        results = refresh_all(fetcher, time.time(), settings, force=mode == "forced")
        seconds = time.perf_counter() - started
    failed = [f"{r.url} {r.repository}: {r.detail}" for r in results if not r.ok]
    if failed:
        raise SystemExit("refresh failed: " + "; ".join(failed))
    print(
        json.dumps(
            {
                "seconds": seconds,
                "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "baseline_mb": baseline / 1024,
                "mirrors": [
                    (r.repository.split()[2], r.outcome, r.packages, round(r.seconds, 3))
                    for r in results
                ],
            }
        )
    )


def run_child(mode: str, args: argparse.Namespace, database_url: str) -> dict[str, object]:
    proc = subprocess.run(
        [sys.executable, __file__, "--child", mode, "--database-url", database_url,
         "--mirror", args.mirror, "--security-mirror", args.security_mirror],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if proc.returncode != 0:
        raise SystemExit(f"{mode} run failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mirror", default="http://deb.debian.org/debian")
    parser.add_argument("--security-mirror", default="http://deb.debian.org/debian-security")
    parser.add_argument("--repeat", type=int, default=5, help="unchanged/forced runs")
    parser.add_argument("--database-url", default="")
    parser.add_argument("--child", choices=["full", "unchanged", "forced"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.database_url, args.mirror, args.security_mirror)
        return
    with tempfile.TemporaryDirectory(prefix="pw-bench-refresh-") as tmp:
        url = args.database_url or f"sqlite:///{Path(tmp) / 'bench.db'}"
        full = run_child("full", args, url)
        print(
            f"full refresh:      {full['seconds']:.2f} s, peak RSS {full['maxrss_mb']:.0f} MB "
            f"(baseline after imports {full['baseline_mb']:.0f} MB)"
        )
        for suite, outcome, packages, seconds in full["mirrors"]:  # type: ignore[attr-defined]
            print(f"    {suite:<18} {outcome:<9} {packages:>6} packages {seconds:6.2f} s")
        for mode in ("unchanged", "forced"):
            runs = [run_child(mode, args, url) for _ in range(args.repeat)]
            times = [float(r["seconds"]) for r in runs]  # type: ignore[arg-type]
            rss = max(float(r["maxrss_mb"]) for r in runs)  # type: ignore[arg-type]
            print(
                f"{mode + ' refresh:':<18} best {min(times):.3f} s, median "
                f"{statistics.median(times):.3f} s over {len(times)} runs, "
                f"peak RSS {rss:.0f} MB"
            )


if __name__ == "__main__":
    main()
