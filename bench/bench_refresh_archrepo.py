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
import functools
import gzip
import sys
import tempfile
import threading
import time
from http.server import SimpleHTTPRequestHandler
from http.server import ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_parse_archrepo import apkindex  # noqa: E402
from bench_parse_archrepo import arch_db  # noqa: E402

from patchwatch.domain.mirror_policy import MirrorPolicy  # noqa: E402
from patchwatch.domain.settings import Settings  # noqa: E402
from patchwatch.pipeline.fetch import HttpFetcher  # noqa: E402
from patchwatch.pipeline.refresh.run import refresh_mirror  # noqa: E402
from patchwatch.store.db import open_database  # noqa: E402
from patchwatch.store.migrations import migrate  # noqa: E402
from patchwatch.store.models import Mirror  # noqa: E402
from patchwatch.store.models import Repository  # noqa: E402


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--arch", type=int, default=15_000)
    parser.add_argument("--alpine", type=int, default=25_000)
    parser.add_argument("--database-url", default="")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="pw-bench-archrepo-") as tmp:
        top = Path(tmp)
        (top / "arch/core/os/x86_64").mkdir(parents=True)
        (top / "arch/core/os/x86_64/core.db").write_bytes(gzip.compress(arch_db(args.arch)))
        (top / "alpine/v3.21/main/x86_64").mkdir(parents=True)
        (top / "alpine/v3.21/main/x86_64/APKINDEX.tar.gz").write_bytes(apkindex(args.alpine))
        handler = functools.partial(_Quiet, directory=str(top))
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        base = f"http://127.0.0.1:{server.server_address[1]}"
        db = open_database(args.database_url or f"sqlite:///{top / 'bench.db'}")
        db.connect()
        migrate(db)
        now = time.time()
        arch_repo = Repository.create(kind="arch", key="arch core x86_64 bench", repo_id="core",
                                      arch="x86_64", created_at=now)  # fmt: skip
        apk_repo = Repository.create(kind="apk", key="apk v3.21/main x86_64 bench",
                                     repo_id=f"{base}/alpine/v3.21/main", arch="x86_64",
                                     created_at=now)  # fmt: skip
        mirrors = [
            ("pacman core.db", Mirror.create(repository=arch_repo,
                                             url=f"{base}/arch/core/os/x86_64")),
            ("APKINDEX", Mirror.create(repository=apk_repo, url=f"{base}/alpine/v3.21/main")),
        ]  # fmt: skip
        settings = Settings(
            mirror_url_patterns=("http://127.0.0.1:*",),
            mirror_allowed_networks=("127.0.0.1/32",),
            apk_verify_signatures=False,
            max_index_bytes=512 << 20,
        )
        policy = MirrorPolicy.build(["http://127.0.0.1:*"], ["127.0.0.1/32"])
        with HttpFetcher(timeout=30, retries=0, policy=policy) as fetcher:
            for label, mirror in mirrors:
                for step, force in (("first", False), ("again", False), ("forced", True)):
                    mirror = Mirror.get_by_id(mirror.id)
                    started = time.perf_counter()
                    result = refresh_mirror(mirror, fetcher, time.time(), settings, force)
                    seconds = time.perf_counter() - started
                    print(f"{label} {step}: {result.outcome}, {result.packages} packages, "
                          f"{seconds:.3f} s")  # fmt: skip
        server.shutdown()


if __name__ == "__main__":
    main()
