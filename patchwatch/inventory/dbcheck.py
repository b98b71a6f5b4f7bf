"""The database check: what nothing refers to any more, row counts, integrity.

``patchwatch dbcheck`` runs it; ``--fix`` deletes what is unreferenced. Damage that
deleting cannot fix (integrity, foreign keys, packed member ids) is reported only.
"""

from __future__ import annotations

from collections.abc import Callable

from peewee import BaseModelSelect
from peewee import fn

from patchwatch.inventory.common import ProgressFn
from patchwatch.inventory.common import chunks
from patchwatch.store import host_counts
from patchwatch.store.db import database
from patchwatch.store.db import is_sqlite
from patchwatch.store.db import write_transaction
from patchwatch.store.models import MODELS
from patchwatch.store.models import AdvisoryPackage
from patchwatch.store.models import BaseModel
from patchwatch.store.models import Host
from patchwatch.store.models import HostUpdate
from patchwatch.store.models import Mirror
from patchwatch.store.models import Package
from patchwatch.store.models import PackageListing
from patchwatch.store.models import PackageSet
from patchwatch.store.models import Report
from patchwatch.store.models import RepositorySet
from patchwatch.store.models import UpdateSet
from patchwatch.store.models import UpdateSetItem
from patchwatch.store.oversized import Removed
from patchwatch.store.oversized import find_oversized
from patchwatch.store.oversized import remove_oversized
from patchwatch.store.package_sets import MEMBER_PACKAGE_COLUMN
from patchwatch.store.package_sets import check as check_package_sets
from patchwatch.store.package_sets import delete_listings
from patchwatch.store.package_sets import delete_sets
from patchwatch.store.package_sets import member_rows_of_sets
from patchwatch.store.package_sets import orphan_listings


def _orphan_update_sets() -> BaseModelSelect:
    used = Host.select(Host.id).where(
        (Host.package_set == UpdateSet.package_set)
        & (
            (Host.repository_set == UpdateSet.repository_set)
            | (Host.repository_set.is_null() & UpdateSet.repository_set.is_null())
        )
    )
    return UpdateSet.select(UpdateSet.id).where(~fn.EXISTS(used))


def _live_package_sets() -> tuple[object, object, object]:
    """Sets that hosts or mirrors use, and the bases those are written against."""
    hosts = Host.select(Host.package_set).where(Host.package_set.is_null(False))
    mirrors = Mirror.select(Mirror.package_set).where(Mirror.package_set.is_null(False))
    bases = PackageSet.select(PackageSet.base).where(PackageSet.base.is_null(False))
    return hosts, mirrors, bases


def _orphan_package_sets() -> BaseModelSelect:
    """Sets nothing uses. A base of another set is used, even if no host has it now."""
    hosts, mirrors, bases = _live_package_sets()
    return PackageSet.select(PackageSet.id).where(
        PackageSet.id.not_in(hosts) & PackageSet.id.not_in(mirrors) & PackageSet.id.not_in(bases)
    )


def _orphan_repository_sets() -> BaseModelSelect:
    used = Host.select(Host.repository_set).where(Host.repository_set.is_null(False))
    return RepositorySet.select(RepositorySet.id).where(RepositorySet.id.not_in(used))


def _orphan_packages() -> BaseModelSelect:
    """Packages minus everything that refers to one, as ``EXCEPT``s.

    Not ``NOT IN (subquery)``: PostgreSQL hashes such a subquery only when it fits in
    ``work_mem``, and otherwise scans it again for every package; with the 15 million
    set members of 10,000 drifting hosts the query had not finished after minutes.
    ``EXCEPT`` is one pass over each input on both backends.
    """
    hosts, mirrors, bases = _live_package_sets()
    in_live_sets = member_rows_of_sets(hosts, mirrors, bases)
    live_items = UpdateSetItem.update_set.not_in(_orphan_update_sets())
    return (
        Package.select(Package.id)
        - in_live_sets
        - HostUpdate.select(HostUpdate.installed)
        - HostUpdate.select(HostUpdate.available)
        - UpdateSetItem.select(UpdateSetItem.installed).where(live_items)
        - UpdateSetItem.select(UpdateSetItem.available).where(live_items)
        - AdvisoryPackage.select(AdvisoryPackage.package)
    )


def _stray_host_updates() -> BaseModelSelect:
    # left by a host deleted while its updates were being written (PostgreSQL has
    # no foreign key here to refuse them: migration 3)
    return HostUpdate.select(HostUpdate.id).where(HostUpdate.host.not_in(Host.select(Host.id)))


def _stray_update_set_items() -> BaseModelSelect:
    return UpdateSetItem.select(UpdateSetItem.id).where(
        UpdateSetItem.update_set.not_in(UpdateSet.select(UpdateSet.id))
    )


def _orphan_reports() -> BaseModelSelect:
    return Report.select(Report.id).where(
        (Report.state == "processed") & Report.host_name.not_in(Host.select(Host.name))
    )


def _delete_ids(model: type[BaseModel], ids: list[int]) -> int:
    # the bulk tables have no foreign keys on PostgreSQL (migration 3): their rows go
    # with their set or package here, on every backend, rather than by cascade
    dependants = {
        Package: [MEMBER_PACKAGE_COLUMN],
        UpdateSet: [UpdateSetItem.update_set],
    }.get(model, [])
    deleted = 0
    for chunk in chunks(ids):
        with write_transaction():
            if model is PackageSet:  # with its member rows and its listings
                deleted += delete_sets(database, list(chunk))
                continue
            if model is PackageListing:  # package_sets alone writes listings
                deleted += delete_listings(list(chunk))
                continue
            for column in dependants:
                column.model.delete().where(column.in_(list(chunk))).execute()
            deleted += model.delete().where(model.id.in_(list(chunk))).execute()
    return deleted


def check_store(
    fix: bool = False, include_packages: bool = False, progress: ProgressFn | None = None
) -> list[dict[str, object]]:
    """Look for (and with ``fix`` delete) what nothing refers to any more; count rows;
    run the database's own integrity checks where it has them (SQLite), and compare
    every package set's packed ids with its member rows (on every backend).

    Returns rows ``check``, ``found``, ``fixed`` (``None`` when not fixed) and
    ``detail``; a non-zero ``found`` on an ``integrity``, ``foreign keys`` or
    ``packed member ids`` row means damage that deleting cannot fix (restore from a
    backup). Rows over the field limits (a mirror's, stored before refreshes bounded
    them) are removed with what refers to them (``patchwatch.store.oversized``); what that
    leaves unreferenced is found by the next run.

    Orphan packages are deleted only with ``include_packages``: receiver and scheduler
    processes cache package ids (``patchwatch.store.sets``), so deleting packages while they
    run can make a later report refer to a deleted package. Stop them first.
    """
    # (check, a select of the ids found, in the table (its model) they are deleted from,
    # whether --fix deletes them, detail)
    steps: list[tuple[str, Callable[[], BaseModelSelect], bool, str]] = [
        ("orphan update sets", _orphan_update_sets, True, "no host has these inputs"),
        ("orphan package sets", _orphan_package_sets, True, "no host, mirror or set uses it"),
        ("listings of deleted sets", orphan_listings, True, "a package list's set is gone"),
        ("orphan repository sets", _orphan_repository_sets, True, "no host has it"),
        ("updates of deleted hosts", _stray_host_updates, True, "pending updates; host deleted"),
        ("items of deleted update sets", _stray_update_set_items, True, "update set deleted"),
        ("orphan packages", _orphan_packages, include_packages, "in no set, update or advisory"),
        ("reports of deleted hosts", _orphan_reports, True, "processed; host deleted"),
    ]
    total = len(steps) + 3
    out: list[dict[str, object]] = []
    for n, (check, find, may_fix, detail) in enumerate(steps):
        if progress is not None:
            progress(n, total, check)
        query = find()
        ids = [i for (i,) in query.tuples()]
        fixed: int | None = None
        note = detail
        if fix and may_fix:
            fixed = _delete_ids(query.model, ids)
        elif fix and ids:
            note = "kept (--packages; stop servers)"
        out.append({"check": check, "found": len(ids), "fixed": fixed, "detail": note})
    if progress is not None:
        progress(len(steps), total, "oversized rows")
    out.extend(_oversized_rows(fix))
    out.append(_host_counts_row(fix))
    if progress is not None:
        progress(len(steps) + 1, total, "integrity")
    out.extend(_integrity_checks())
    unlike = check_package_sets()
    note = (
        f"package sets {', '.join(map(str, unlike[:5]))}{' ...' if len(unlike) > 5 else ''}"
        if unlike
        else "every set's packed ids match its member rows"
    )
    out.append({"check": "packed member ids", "found": len(unlike), "fixed": None,
                "detail": note})  # fmt: skip
    if progress is not None:
        progress(len(steps) + 2, total, "counting rows")
    for model in MODELS:
        out.append({"check": f"rows in {model._meta.table_name}",
                    "found": model.select().count(), "fixed": None, "detail": ""})  # fmt: skip
    if progress is not None:
        progress(total, total, "")
    return out


def _oversized_rows(fix: bool) -> list[dict[str, object]]:
    """The ``oversized packages`` and ``oversized advisories`` rows of :func:`check_store`."""
    found = find_oversized(database)
    fixed: Removed | None = None
    if fix:
        with write_transaction():
            fixed = remove_oversized(database, found)
    detail = "a field over its limit"
    return [
        {"check": "oversized packages", "found": len(found.packages),
         "fixed": fixed.packages if fixed else None, "detail": detail},
        {"check": "oversized advisories", "found": len(found.advisories),
         "fixed": fixed.advisories if fixed else None, "detail": detail},
    ]  # fmt: skip


def _host_counts_row(fix: bool) -> dict[str, object]:
    """The ``host update counts`` row of :func:`check_store`: hosts whose counts kept on
    their row (``patchwatch.store.host_counts``) are not those of their pending updates;
    ``fix`` counts them again."""
    wrong = host_counts.mismatched(database)
    fixed: int | None = None
    if fix:
        with write_transaction():
            host_counts.recount(database, wrong)
        fixed = len(wrong)
    return {"check": "host update counts", "found": len(wrong), "fixed": fixed,
            "detail": "stored counts unlike the pending updates"}  # fmt: skip


def _integrity_checks() -> list[dict[str, object]]:
    if not is_sqlite():
        note = "not checked: PostgreSQL has no quick equivalent (see amcheck)"
        return [{"check": "integrity", "found": 0, "fixed": None, "detail": note}]
    lines = [str(r[0]) for r in database.execute_sql("PRAGMA integrity_check").fetchall()]
    problems = [line for line in lines if line != "ok"]
    fk = database.execute_sql("PRAGMA foreign_key_check").fetchall()
    return [
        {"check": "integrity", "found": len(problems), "fixed": None,
         "detail": problems[0][:200] if problems else "PRAGMA integrity_check: ok"},
        {"check": "foreign keys", "found": len(fk), "fixed": None,
         "detail": (f"first in table {fk[0][0]}" if fk else "PRAGMA foreign_key_check: ok")},
    ]  # fmt: skip
