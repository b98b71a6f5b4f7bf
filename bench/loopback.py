"""What several benchmarks share: Arch and Alpine indexes served on loopback, settings and
a fetcher that reach only loopback, and a bulk insert of generated hosts.

Imported by the benchmark scripts (``bench/`` is on their ``sys.path``); nothing here
times anything.
"""

from __future__ import annotations

import functools
import gzip
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import SimpleHTTPRequestHandler
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

from bench_parse_archrepo import apkindex
from bench_parse_archrepo import arch_db

from patchwatch.domain.mirror_policy import MirrorPolicy
from patchwatch.domain.settings import Settings
from patchwatch.pipeline.fetch import HttpFetcher
from patchwatch.store.models import Host

ARCH_PATH = "arch/core/os/x86_64"
ALPINE_PATH = "alpine/v3.21/main"
HOST_FIELDS = [Host.name, Host.package_set, Host.repository_set, Host.kernel, Host.arch,
               Host.created_at, Host.last_report_at]  # fmt: skip


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def arch_alpine_mirror(top: Path, arch: int, alpine: int) -> Iterator[str]:
    """Write a pacman core.db of ``arch`` packages and an APKINDEX of ``alpine`` stanzas
    (unsigned) under ``top`` and serve ``top`` on loopback; yields the base URL."""
    (top / ARCH_PATH).mkdir(parents=True)
    (top / ARCH_PATH / "core.db").write_bytes(gzip.compress(arch_db(arch)))
    (top / ALPINE_PATH / "x86_64").mkdir(parents=True)
    (top / ALPINE_PATH / "x86_64" / "APKINDEX.tar.gz").write_bytes(apkindex(alpine))
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(top)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


def loopback_settings() -> Settings:
    """Read loopback mirrors without approval, unsigned APKINDEX, indexes up to 512 MiB."""
    return Settings(
        mirror_url_patterns=("http://127.0.0.1:*",),
        mirror_allowed_networks=("127.0.0.1/32",),
        apk_verify_signatures=False,
        max_index_bytes=512 << 20,
    )


def loopback_fetcher() -> HttpFetcher:
    policy = MirrorPolicy.build(["http://127.0.0.1:*"], ["127.0.0.1/32"])
    return HttpFetcher(timeout=30, retries=0, policy=policy)


def insert_hosts(db: Any, hosts: list[tuple[object, ...]]) -> None:
    """Insert host rows of :data:`HOST_FIELDS`, 500 a statement, in one transaction."""
    with db.atomic():
        for i in range(0, len(hosts), 500):
            Host.insert_many(hosts[i : i + 500], fields=HOST_FIELDS).execute()
