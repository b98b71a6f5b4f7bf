"""A small fleet seeded through the real ingest path: Debian and Rocky hosts, mirrors' indexes."""

from __future__ import annotations

from typing import Any

from patchwatch.domain.records import Package
from patchwatch.domain.records import PackageKind
from patchwatch.pipeline.hostupdates import refresh_host_updates
from patchwatch.pipeline.processing import process_pending
from patchwatch.pipeline.processing import store_report
from patchwatch.store.models import Mirror
from patchwatch.store.models import Repository
from patchwatch.store.package_sets import ensure_package_set

DAY = 86400.0


DEBIAN_OS = {"id": "debian", "version_id": "12", "version_codename": "bookworm",
             "pretty_name": "Debian GNU/Linux 12 (bookworm)"}  # fmt: skip


ROCKY_OS = {"id": "rocky", "id_like": "rhel centos fedora", "version_id": "9.4",
            "pretty_name": "Rocky Linux 9.4 (Blue Onyx)"}  # fmt: skip


def _deb_repo(url: str, suite: str) -> dict[str, Any]:
    return {"type": "deb", "id": f"{url} {suite} main", "urls": [url], "suite": suite,
            "component": "main", "arch": "amd64", "priority": 500}  # fmt: skip


MAIN = _deb_repo("http://deb.debian.org/debian", "bookworm")


SECURITY = _deb_repo("http://security.debian.org/debian-security", "bookworm-security")


GERMAN = _deb_repo("http://ftp.de.debian.org/debian", "bookworm")  # a mirror of MAIN


BASEOS_URL = "http://dl.rockylinux.org/pub/rocky/9/BaseOS/x86_64/os"


BASEOS = {"type": "rpm", "id": "baseos", "name": "Rocky Linux 9 - BaseOS", "urls": [BASEOS_URL],
          "priority": -99}  # fmt: skip


def deb(name: str, version: str, arch: str = "amd64") -> dict[str, str]:
    upstream, _, revision = version.partition("-")
    return {"name": name, "version": upstream, "release": revision, "arch": arch, "type": "deb"}


def report(host: str, packages: list[dict[str, str]], repos: list[dict[str, Any]],
           os: dict[str, str] = DEBIAN_OS, **extra: Any) -> dict[str, Any]:  # fmt: skip
    doc = {"version": 1, "host": host, "os": os, "kernel": "6.1.0-28-amd64", "arch": "x86_64",
           "tags": [], "reboot_required": False, "packages": packages,
           "repositories": repos}  # fmt: skip
    doc.update(extra)
    return doc


KERNEL = deb("linux-image-6.1.0-28-amd64", "6.1.119-1")


WEB1 = [deb("openssl", "3.0.14-1"), deb("curl", "7.88.1-10"), deb("bash", "5.2.15-2"), KERNEL,
        deb("tzdata", "2024a-0", "all")]  # fmt: skip


WEB2 = [deb("openssl", "3.0.14-1"), deb("curl", "7.88.1-10+deb12u8"), deb("bash", "5.2.15-2"),
        KERNEL, deb("htop", "3.2.2-2")]  # fmt: skip


DB1 = [deb("openssl", "3.0.14-1"), deb("bash", "5.2.15-2"), deb("inhouse-tool", "1.0-1")]


MAIN_INDEX = [Package("openssl", "", "3.0.14", "1", "amd64", PackageKind.DEB),
              Package("curl", "", "7.88.1", "10+deb12u8", "amd64", PackageKind.DEB),
              Package("bash", "", "5.2.15", "2", "amd64", PackageKind.DEB),
              Package("htop", "", "3.2.2", "2", "amd64", PackageKind.DEB),
              Package("tzdata", "", "2024a", "0", "all", PackageKind.DEB),
              Package("linux-image-6.1.0-28-amd64", "", "6.1.119", "1", "amd64",
                      PackageKind.DEB)]  # fmt: skip


SECURITY_INDEX = [Package("openssl", "", "3.0.15", "1", "amd64", PackageKind.DEB)]


def seed_fleet(now: float) -> dict[str, int]:
    """A small fleet through the real ingest path; returns repository ids by label.

    web1/web2: Debian from deb.debian.org + security (web2 needs a reboot, has htop
    and another curl); db1: Debian from ftp.de.debian.org (a mirror of deb.debian.org)
    with one hand-installed package; old1: silent for 10 days, no repositories;
    rocky1: Rocky with a failing mirror; broken: a report that fails to process.
    """
    docs = [
        (report("web1.example.com", WEB1, [MAIN, SECURITY], tags=["web", "prod"]), now - 600),
        (report("web2.example.com", WEB2, [MAIN, SECURITY], tags=["web"],
                reboot_required=True), now - 600),
        (report("db1.example.org", DB1, [GERMAN], tags=["db"]), now - 600),
        (report("old1.example.com", [deb("bash", "5.2.15-2")], []), now - 10 * DAY),
        (report("rocky1.example.net",
                [{"name": "bash", "version": "5.1.8", "release": "9.el9", "arch": "x86_64",
                  "type": "rpm"},
                 {"name": "gpg-pubkey", "version": "350d275d", "release": "6395ba4b",
                  "arch": "(none)", "type": "rpm"}],
                [BASEOS], os=ROCKY_OS, kernel="5.14.0-427.42.1.el9_4.x86_64"), now - 600),
        ({"version": 1, "host": "broken.example.com"}, now - 300),
    ]  # fmt: skip
    for doc, received in docs:
        store_report(str(doc["host"]), "patchwatch/1", doc, received)
    outcome = process_pending(now)
    assert outcome == {"processed": 5, "failed": 1}, outcome
    repos = {m.url.split("/")[2]: m.repository_id for m in Mirror.select()}
    ids = {"main": repos["deb.debian.org"], "security": repos["security.debian.org"],
           "german": repos["ftp.de.debian.org"], "baseos": repos["dl.rockylinux.org"]}  # fmt: skip
    main_set = ensure_package_set(MAIN_INDEX, now)
    for label, pset in (("main", main_set), ("german", main_set),
                        ("security", ensure_package_set(SECURITY_INDEX, now))):  # fmt: skip
        Mirror.update(
            package_set=pset, package_count=pset.size, last_success_at=now - 60,
            last_attempt_at=now - 60,
        ).where(Mirror.repository == ids[label]).execute()  # fmt: skip
    Repository.update(security=True).where(Repository.id == ids["security"]).execute()
    Mirror.update(consecutive_failures=3, failures_total=5, last_attempt_at=now - 60,
                  last_error="HTTP 404 for repodata/repomd.xml").where(
        Mirror.repository == ids["baseos"]).execute()  # fmt: skip
    refresh_host_updates(now)
    return ids
