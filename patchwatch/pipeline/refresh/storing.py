"""Store a refresh's outcome: a mirror's verified data, or the count of its failure.

Each mirror's result is stored in one transaction of its own, after all its network
I/O, so a refresh never holds the database while it downloads and a failing mirror
never undoes another's work. A failure leaves the last good data as it was.
Security advisories are stored per repository and replace the previous ones.
"""

from __future__ import annotations

from patchwatch.domain.records import Advisory as AdvisoryRecord
from patchwatch.domain.records import Package as PackageRecord
from patchwatch.pipeline.refresh.fetched import CHECKSUM_CHARS
from patchwatch.pipeline.refresh.fetched import Fetched
from patchwatch.store.db import write_transaction
from patchwatch.store.models import Advisory
from patchwatch.store.models import AdvisoryPackage
from patchwatch.store.models import Mirror
from patchwatch.store.models import Repository
from patchwatch.store.package_sets import ensure_mirror_set
from patchwatch.store.sets import ensure_packages
from patchwatch.store.vulns import remember_sources

MAX_ERROR_CHARS = 2000


def store_success(
    mirror: Mirror, repo: Repository, fetched: Fetched, now: float
) -> tuple[bool, int, int]:
    """Store verified data and the mirror's success in one transaction.

    Returns (data changed, packages in the mirror's set, advisories stored now).
    """
    changed = False
    advisories = 0
    with write_transaction():
        pset_id = mirror.package_set_id
        count = mirror.package_count
        if fetched.packages is not None:
            pset = ensure_mirror_set(fetched.packages, now)
            changed = pset.id != pset_id
            pset_id, count = pset.id, pset.size
        if fetched.sources:
            remember_sources(fetched.sources)
        if fetched.advisories is not None:
            advisories = _replace_advisories(repo.id, fetched.advisories)
            changed = changed or fetched.advisories_changed
        if fetched.security is not None and fetched.security != repo.security:
            Repository.update(security=fetched.security).where(Repository.id == repo.id).execute()
            changed = True
        values = {
            Mirror.last_attempt_at: now,
            Mirror.last_success_at: now,
            Mirror.consecutive_failures: 0,
            Mirror.last_error: "",
            Mirror.metadata_checksum: fetched.checksum[:CHECKSUM_CHARS],
            Mirror.etag: fetched.etag[:255],
            Mirror.last_modified: fetched.last_modified[:64],
            Mirror.package_set: pset_id,
            Mirror.package_count: count,
        }
        if fetched.skipped_packages is not None:
            values[Mirror.skipped_packages] = fetched.skipped_packages.count
        if fetched.skipped_advisories is not None:
            values[Mirror.skipped_advisories] = fetched.skipped_advisories.count
        if changed:
            values[Mirror.last_change_at] = now
        Mirror.update(values).where(Mirror.id == mirror.id).execute()
    return changed, count, advisories


def store_failure(mirror: Mirror, now: float, reason: str) -> None:
    """Count a failure; the last good data (package set, checksum) is left alone."""
    with write_transaction():
        Mirror.update(
            {
                Mirror.last_attempt_at: now,
                Mirror.failures_total: Mirror.failures_total + 1,
                Mirror.consecutive_failures: Mirror.consecutive_failures + 1,
                Mirror.last_error: reason[:MAX_ERROR_CHARS],
            }
        ).where(Mirror.id == mirror.id).execute()


def _replace_advisories(repo_id: int, advisories: list[AdvisoryRecord]) -> int:
    """Make the repository's stored advisories exactly these (merged by id)."""
    merged: dict[str, tuple[AdvisoryRecord, dict[PackageRecord, None]]] = {}
    for adv in advisories:
        key = adv.id[:255]
        if key not in merged:
            merged[key] = (adv, {})
        merged[key][1].update(dict.fromkeys(adv.packages))
    old = Advisory.select(Advisory.id).where(Advisory.repository == repo_id)
    AdvisoryPackage.delete().where(AdvisoryPackage.advisory.in_(old)).execute()
    Advisory.delete().where(Advisory.repository == repo_id).execute()
    if not merged:
        return 0
    rows = [
        (key, repo_id, adv.type[:32], adv.severity[:32], adv.title, adv.issued[:64],
         " ".join(adv.cves))
        for key, (adv, _pkgs) in merged.items()
    ]  # fmt: skip
    fields = [Advisory.advisory_id, Advisory.repository, Advisory.type, Advisory.severity,
              Advisory.title, Advisory.issued, Advisory.cves]  # fmt: skip
    for i in range(0, len(rows), 200):
        Advisory.insert_many(rows[i : i + 200], fields=fields).execute()
    ids: dict[str, int] = dict(
        Advisory.select(Advisory.advisory_id, Advisory.id)
        .where(Advisory.repository == repo_id)
        .tuples()
    )
    package_ids = ensure_packages(p for _adv, pkgs in merged.values() for p in pkgs)
    links = sorted(
        {(ids[key], package_ids[p]) for key, (_adv, pkgs) in merged.items() for p in pkgs}
    )
    for i in range(0, len(links), 400):
        AdvisoryPackage.insert_many(
            links[i : i + 400], fields=[AdvisoryPackage.advisory, AdvisoryPackage.package]
        ).on_conflict_ignore().execute()
    return len(merged)
