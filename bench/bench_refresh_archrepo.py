"""Benchmark: refresh a generated Arch core + extra and Alpine main + community mirror.

Usage:
    python bench/bench_refresh_archrepo.py [--arch N] [--alpine N] [--database-url URL]

Setup (not timed): the realistic indexes of ``bench_parse_archrepo.py`` (a pacman
database of N packages, default 15,000; an APKINDEX.tar.gz of N stanzas, default
25,000, unsigned here: signature checking is timed apart, it costs microseconds) are
served by Python's http.server on loopback, and a fresh SQLite database (or the empty
PostgreSQL one given) gets one pacman and one apk repository with a mirror each.

Timed, per family, with ``refresh_mirror`` (download, digest, parse, store the package
set): the first refresh (every package new to the store), the next one (a 304 from the
conditional GET) and a forced one (everything downloaded and parsed again, the package
set found stored). Aim: under 1 s for the first.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from loopback import ALPINE_PATH  # noqa: E402
from loopback import ARCH_PATH  # noqa: E402
from loopback import arch_alpine_mirror  # noqa: E402
from loopback import loopback_fetcher  # noqa: E402
from loopback import loopback_settings  # noqa: E402

from patchwatch.pipeline.refresh.run import refresh_mirror  # noqa: E402
from patchwatch.store.db import open_database  # noqa: E402
from patchwatch.store.migrations import migrate  # noqa: E402
from patchwatch.store.models import Mirror  # noqa: E402
from patchwatch.store.models import Repository  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--arch", type=int, default=15_000)
    parser.add_argument("--alpine", type=int, default=25_000)
    parser.add_argument("--database-url", default="")
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory(prefix="pw-bench-archrepo-") as tmp,
        arch_alpine_mirror(Path(tmp), args.arch, args.alpine) as base,
    ):
        top = Path(tmp)
        db = open_database(args.database_url or f"sqlite:///{top / 'bench.db'}")
        db.connect()
        migrate(db)
        now = time.time()
        arch_repo = Repository.create(kind="arch", key="arch core x86_64 bench", repo_id="core",
                                      arch="x86_64", created_at=now)  # fmt: skip
        apk_repo = Repository.create(kind="apk", key="apk v3.21/main x86_64 bench",
                                     repo_id=f"{base}/{ALPINE_PATH}", arch="x86_64",
                                     created_at=now)  # fmt: skip
        mirrors = [
            ("pacman core.db", Mirror.create(repository=arch_repo,
                                             url=f"{base}/{ARCH_PATH}")),
            ("APKINDEX", Mirror.create(repository=apk_repo, url=f"{base}/{ALPINE_PATH}")),
        ]  # fmt: skip
        settings = loopback_settings()
        with loopback_fetcher() as fetcher:
            for label, mirror in mirrors:
                for step, force in (("first", False), ("again", False), ("forced", True)):
                    mirror = Mirror.get_by_id(mirror.id)
                    started = time.perf_counter()
                    result = refresh_mirror(mirror, fetcher, time.time(), settings, force)
                    seconds = time.perf_counter() - started
                    print(f"{label} {step}: {result.outcome}, {result.packages} packages, "
                          f"{seconds:.3f} s")  # fmt: skip


if __name__ == "__main__":
    main()
