"""A small Debian fleet for the vulnerability tests: hosts reported through processing,
the main repository's mirror given an index, the cut Debian OSV fixtures.

Shared by the findings, fixing-update and fleet-set tests, which build the same bookworm
hosts on the same repository and differ in what they check.
"""

from __future__ import annotations

from patchwatch.domain.records import HostReport
from patchwatch.domain.records import OSInfo
from patchwatch.domain.records import Package
from patchwatch.domain.records import PackageKind
from patchwatch.domain.records import RepoKind
from patchwatch.domain.records import ReportedRepository
from patchwatch.pipeline.processing import apply_report
from patchwatch.pipeline.processing import store_report
from patchwatch.store.models import Mirror
from patchwatch.store.models import Repository
from patchwatch.store.package_sets import ensure_package_set
from patchwatch.store.sets import repository_key
from tests.support.vulns import FIXTURES

DEBIAN = FIXTURES / "debian"  # OSV records cut in the Debian format
BOOKWORM = OSInfo("debian", "debian", "Debian 12", "12", "bookworm")
MAIN = ReportedRepository(RepoKind.DEB, "m", "main", ("http://deb.example/debian",), 500,
                          suite="bookworm", component="main", arch="amd64")  # fmt: skip


def deb(name: str, version: str) -> Package:
    """An amd64 deb at ``[epoch:]upstream[-revision]``."""
    epoch, _, rest = version.rpartition(":")
    upstream, _, revision = rest.partition("-")
    return Package(name, epoch, upstream, revision, "amd64", PackageKind.DEB)


def report(host: str, packages: list[Package], os: OSInfo = BOOKWORM, at: float = 100.0) -> None:
    """``host`` reports ``packages`` from the main repository, processed as the server does."""
    rep = HostReport(hostname=host, os=os, kernel="6.1.0-28-amd64", arch="x86_64",
                     packages=tuple(packages), repositories=(MAIN,))  # fmt: skip
    apply_report(store_report(host, "patchwatch/1", {}, at), rep, at)


def publish(packages: list[Package], now: float, checksum: bool = False) -> None:
    """Stand-in for a mirror refresh: give the main repository's mirror this index
    (with ``checksum``, a new metadata checksum too, as a refresh of new data sets)."""
    repo = Repository.get(Repository.key == repository_key(MAIN))
    pset = ensure_package_set(packages, now)
    values: dict = {Mirror.package_set: pset, Mirror.last_success_at: now}
    if checksum:
        values[Mirror.metadata_checksum] = f"c{now}"
    Mirror.update(values).where(Mirror.repository == repo).execute()
