"""HTTP calls to servers on loopback, and polling for what they do in the background."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import TypeVar

from tests.support.reports import native_doc

T = TypeVar("T")


def wait_until(check: Callable[[], T | None], timeout: float, what: str) -> T:
    """Poll ``check`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = check()
        except (OSError, ValueError, KeyError) as exc:  # not up yet, half-written answer
            last_error = exc
            value = None
        if value:
            return value
        time.sleep(0.1)
    detail = f" (last error: {last_error!r})" if last_error else ""
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}{detail}")


def http_get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def http_post(url: str, body: bytes, headers: dict[str, str]) -> int:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            resp.read()
            return resp.status
    except urllib.error.HTTPError as exc:
        exc.read()
        return exc.code


def post_report(
    base: str, token: str, report: dict | bytes, timeout: float = 30, encoding: str = ""
) -> tuple[int, dict, dict]:
    """POST a native report (a document, or its bytes as sent) to a real server.

    Returns the status, the JSON answer and the headers, for errors as well.
    """
    body = report if isinstance(report, bytes) else json.dumps(report).encode()
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    if encoding:
        headers["Content-Encoding"] = encoding
    req = urllib.request.Request(base + "/api/v1/reports", data=body, method="POST",
                                 headers=headers)  # fmt: skip
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read()), dict(resp.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}"), dict(exc.headers)


def post_native_reports(base: str, token: str, hosts: list[str]) -> list[int]:
    """POST a small native report for each host; every one must be accepted (202).

    Returns the report ids in the order sent (consecutive ids alternate between the
    processing processes' shares).
    """
    ids = []
    for host in hosts:
        code, body, _ = post_report(base, token, native_doc(host))
        assert code == 202, body
        ids.append(body["report"])
    return ids
