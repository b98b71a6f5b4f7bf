"""Report documents as agents send them, and posting them to the receiver's test client
(the ``app`` and ``client`` fixtures of tests/conftest.py)."""

from __future__ import annotations

import gzip
import json


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
