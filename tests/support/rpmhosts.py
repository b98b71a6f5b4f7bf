"""EL9 hosts on the loopback rpm-md mirror: their reports, stored and processed, and the
scheduler's follow-up with the tests' quick HTTP settings."""

from __future__ import annotations

from typing import Any

from patchwatch.pipeline.followup import FollowUp
from patchwatch.pipeline.processing import NATIVE
from patchwatch.pipeline.processing import process_pending
from patchwatch.pipeline.processing import store_report
from tests.support.repositories import make_fetcher
from tests.support.repositories import make_settings


def rpm_report(host: str, url: str, hello: str = "1.0", kernel: str = "5.14.0-1.el9.x86_64",
               tags: tuple[str, ...] = ()) -> dict[str, Any]:  # fmt: skip
    """A native report of an EL9 host with ``hello-<hello>-1`` and one repository."""
    return {
        "version": 1, "host": host,
        "os": {"id": "rocky", "id_like": "rhel", "version_id": "9.4", "name": "Rocky Linux",
               "pretty_name": "Rocky Linux 9.4 (Blue Onyx)"},
        "kernel": kernel, "arch": "x86_64", "tags": list(tags), "reboot_required": False,
        "packages": [
            {"name": "bash", "version": "5.1.8", "release": "9.el9", "arch": "x86_64",
             "type": "rpm"},
            {"name": "hello", "version": hello, "release": "1", "arch": "noarch", "type": "rpm"},
        ],
        "repositories": [
            {"type": "rpm", "id": "t", "name": "test", "urls": [url], "arch": "x86_64",
             "priority": -99, "enabled": True},
        ],
    }  # fmt: skip


def report(doc: dict[str, Any], at: float) -> None:
    store_report(doc["host"], NATIVE, doc, at)
    process_pending(at)


def follow_up() -> FollowUp:
    """The scheduler's follow-up, with the tests' quick HTTP settings."""
    return FollowUp(make_settings(), fetcher=make_fetcher)
