"""Report documents as agents send them (made up, or the fixtures under
tests/fixtures/reports), and posting them to the receiver's test client
(the ``app`` and ``client`` fixtures of tests/conftest.py)."""

from __future__ import annotations

import gzip
import json
from typing import Any

from tests.support.paths import FIXTURES


def native_doc(host: str = "web1.example.com", n: int = 5, repos: bool = True) -> dict:
    doc: dict = {
        "version": 1,
        "host": host,
        "os": {"id": "debian", "version_id": "12", "version_codename": "bookworm",
               "pretty_name": "Debian GNU/Linux 12 (bookworm)"},
        "kernel": "6.1.0-28-amd64",
        "arch": "x86_64",
        "tags": ["web", "prod"],
        "reboot_required": False,
        "packages": [
            {"name": f"pkg{i}", "epoch": "", "version": f"1.{i}", "release": "1",
             "arch": "amd64", "type": "deb"}
            for i in range(n)
        ],
    }  # fmt: skip
    if repos:
        doc["repositories"] = [
            {"type": "deb", "id": "http://deb.debian.org/debian bookworm main",
             "urls": ["http://deb.debian.org/debian"], "suite": "bookworm",
             "component": "main", "arch": "amd64", "priority": 500}
        ]  # fmt: skip
    return doc


def post(client, doc, token=None, gz=False, raw=None, headers=None):
    body = raw if raw is not None else json.dumps(doc).encode()
    h = {"Content-Type": "application/json", **(headers or {})}
    if gz:
        body = gzip.compress(body)
        h["Content-Encoding"] = "gzip"
    if token:
        h["Authorization"] = f"Bearer {token}"
    return client.post("/api/v1/reports", data=body, headers=h)


REPORTS = FIXTURES / "reports"


def load_form(name: str) -> dict[str, str]:
    """A protocol-1 fixture folder as the form the receiver would decode."""
    return {path.name: path.read_text() for path in sorted((REPORTS / name).iterdir())}


def load_json(name: str) -> Any:
    return json.loads((REPORTS / name).read_text())


BASE_P2: dict[str, Any] = {
    "protocol": 2,
    "hostname": "h1.example.com",
    "arch": "x86_64",
    "kernel": "5.14.0-503.14.1.el9_5.x86_64",
    "os": "Rocky Linux 9.5 (Blue Onyx) [cpe:/o:rocky:rocky:9::baseos]",
}


def native_fixture(**changes: Any) -> dict[str, Any]:
    """tests/fixtures/reports/native_deb.json with ``changes`` applied."""
    doc = load_json("native_deb.json")
    doc.update(changes)
    return doc


def synthetic_reports(n: int) -> tuple[dict[str, Any], dict[str, str], dict[str, Any]]:
    """One 1,500-package host in each protocol (names and versions as a Debian host has)."""
    packages = [
        {
            "name": f"lib-package-{i}",
            "epoch": "1" if i % 10 == 0 else "",
            "version": f"{i % 7}.{i % 13}.{i}",
            "release": f"{i % 5}+deb12u{i % 3}",
            "arch": "amd64" if i % 4 else "all",
            "type": "deb",
        }
        for i in range(n)
    ]
    native = native_fixture(packages=packages)
    lines = "".join(
        f"'{p['name']}' '{p['epoch']}' '{p['version']}' '{p['release']}' '{p['arch']}' 'deb'\n"
        for p in packages
    )
    form = {**load_form("patchman1-debian12"), "packages": lines}
    proto2 = {**BASE_P2, "packages": packages}
    return native, form, proto2
