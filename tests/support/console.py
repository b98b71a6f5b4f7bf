"""A small fleet for the web console's tests: three hosts, one repository with data.

web1 and web2 have one pending update each, from a repository the metadata does not
call security; db1 holds the package that has an update. Kept here (not in a test
module) so that the console's unit and browser tests share it.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

from patchwatch.domain.records import Package
from patchwatch.domain.records import PackageKind
from patchwatch.pipeline.hostupdates import refresh_host_updates
from patchwatch.pipeline.processing import process_pending
from patchwatch.store.models import Mirror
from patchwatch.store.package_sets import ensure_package_set
from patchwatch.store.tokens import create_token
from tests.support import reports

HOSTS = ("web1.example.com", "web2.example.com", "db1.example.org")


def native_doc(host: str, n: int = 5) -> dict[str, Any]:
    """A native report of ``n`` packages pkg0..pkgN-1 from Debian's main repository."""
    doc: dict[str, Any] = reports.native_doc(host, n)
    doc["tags"] = ["db"] if host.startswith("db") else ["web"]
    doc["reboot_required"] = host.startswith("web2")
    return doc


def seed_fleet(client: Any) -> None:
    """Report the three hosts through the receiver, process them, give the repository
    pkg0 as installed and a newer pkg1, and compute updates."""
    _, enroll = create_token("enroll", time.time())
    for i, host in enumerate(HOSTS):
        doc = native_doc(host, n=4 + i)
        if host.startswith("db"):
            doc["held"] = [{"name": "pkg1", "arch": "amd64"}]
        r = client.post("/api/v1/reports", data=json.dumps(doc),
                        headers={"Content-Type": "application/json",
                                 "Authorization": f"Bearer {enroll}"})  # fmt: skip
        assert r.status_code == 202, r.get_data(as_text=True)
    process_pending(time.time())
    index = [Package("pkg0", "", "1.0", "1", "amd64", PackageKind.DEB),  # as installed
             Package("pkg1", "", "1.1", "2", "amd64", PackageKind.DEB)]  # fmt: skip
    pset = ensure_package_set(index, time.time())
    Mirror.update(package_set=pset, last_success_at=time.time()).execute()
    refresh_host_updates(time.time())


CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def csrf_of(html: str) -> str:
    """The CSRF value a console page put in its forms."""
    m = CSRF.search(html)
    assert m, "no CSRF field on the page"
    return m.group(1)
