"""Loopback only: free ports, no egress for child processes, a resolver of the tests' names."""

from __future__ import annotations

import socket

# For every server process a test starts: its mirror requests go through a "proxy" on a
# loopback port where nothing listens, so a report that names a real mirror (this
# machine's agent report names deb.debian.org) makes the scheduler's refresh fail at
# once instead of reaching the network; mirrors served on loopback are reached directly.
NO_EGRESS_ENV = {
    "http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9",
    "HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9",
    "no_proxy": "127.0.0.1,localhost", "NO_PROXY": "127.0.0.1,localhost",
    "PATCHWATCH_HTTP_RETRIES": "0",
}  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class FakeDns:
    """Names the tests make up, resolved to the addresses each test chooses.

    Only those names and literal addresses resolve; any other lookup fails and is
    recorded, so that no test sends a DNS query off the machine either.
    """

    def __init__(self) -> None:
        self.names: dict[str, str] = {}
        self.unknown: list[str] = []

    def __setitem__(self, name: str, address: str) -> None:
        self.names[name] = address
