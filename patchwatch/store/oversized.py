"""Find and remove stored rows whose fields are over ``patchwatch.domain.limits``.

Before mirror data was bounded (``patchwatch.domain.repodata.bounds``), a mirror could list a
package with a 50 MB name, and it was stored: every insert near it in the package
index then read those 50 MB, and the row survived restarts. Reports were always
bounded, so such rows are a mirror's: packages, and the advisories (or the advisories'
packages) of an updateinfo. A schema migration removes them once, and ``dbcheck``
finds (and with ``--fix`` removes) any that are left.

Removing a package consistently means removing what refers to it, as a refresh that
skipped it would have stored things:

- a package set whose content holds it (a mirror's index) is deleted, and the mirrors
  and hosts that pointed at it point at nothing: each such mirror's checksum and
  validators are cleared too, so the next refresh reads it all again (skipping the
  oversized entries); until then it serves no data, as a mirror never refreshed;
- a set written as a difference from such a set is rewritten whole first (its content
  does not change: a host's report never held the package);
- pending updates (per host and per update set) that name it are deleted, and the
  update sets that had any are marked to be computed again;
- an advisory that is itself oversized or names it is deleted, and its repository's
  mirrors are read again in full, as above but keeping their data until then.

Plain SQL on the table names, as the migrations use: this runs inside a migration,
whose steps must not depend on the models of a later version.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from collections.abc import Sequence
from dataclasses import dataclass

from peewee import Database

from patchwatch.domain.limits import MAX_ADVISORY_CVES_TEXT
from patchwatch.domain.limits import MAX_ADVISORY_ID
from patchwatch.domain.limits import MAX_ADVISORY_ISSUED
from patchwatch.domain.limits import MAX_ADVISORY_SEVERITY
from patchwatch.domain.limits import MAX_ADVISORY_TITLE
from patchwatch.domain.limits import MAX_ADVISORY_TYPE
from patchwatch.domain.limits import MAX_ARCH
from patchwatch.domain.limits import MAX_EPOCH
from patchwatch.domain.limits import MAX_PACKAGE_NAME
from patchwatch.domain.limits import MAX_RELEASE
from patchwatch.domain.limits import MAX_VERSION
from patchwatch.store import host_counts
from patchwatch.store import package_sets

log = logging.getLogger(__name__)

__all__ = ["Oversized", "Removed", "find_oversized", "remove_oversized"]

_CHUNK = 500

OVERSIZED_PACKAGE = (
    f"LENGTH(name) > {MAX_PACKAGE_NAME} OR LENGTH(epoch) > {MAX_EPOCH} "
    f"OR LENGTH(version) > {MAX_VERSION} OR LENGTH(release) > {MAX_RELEASE} "
    f"OR LENGTH(arch) > {MAX_ARCH}"
)
OVERSIZED_ADVISORY = (
    f"LENGTH(advisory_id) > {MAX_ADVISORY_ID} OR LENGTH(type) > {MAX_ADVISORY_TYPE} "
    f"OR LENGTH(severity) > {MAX_ADVISORY_SEVERITY} OR LENGTH(title) > {MAX_ADVISORY_TITLE} "
    f"OR LENGTH(issued) > {MAX_ADVISORY_ISSUED} OR LENGTH(cves) > {MAX_ADVISORY_CVES_TEXT}"
)


@dataclass(frozen=True)
class Oversized:
    """What is stored over the bounds: package ids, and advisory ids to delete with them."""

    packages: tuple[int, ...] = ()
    advisories: tuple[int, ...] = ()  # oversized themselves, or naming such a package

    def __bool__(self) -> bool:
        return bool(self.packages or self.advisories)


@dataclass(frozen=True)
class Removed:
    """What :func:`remove_oversized` deleted or reset."""

    packages: int = 0
    advisories: int = 0
    package_sets: int = 0
    mirrors: int = 0


def _ids(db: Database, sql: str, params: Sequence[object] = ()) -> list[int]:
    return sorted({int(row[0]) for row in db.execute_sql(sql, params).fetchall()})


def _chunked(
    db: Database, template: str, ids: Iterable[int], extra: Sequence[object] = ()
) -> list[int]:
    """Run ``template`` (with ``{marks}`` for an IN list) per chunk of ``ids``.

    Returns the ids of the first column of what the statements return, if any.
    """
    values = sorted(set(ids))
    found: set[int] = set()
    for start in range(0, len(values), _CHUNK):
        chunk = values[start : start + _CHUNK]
        marks = ", ".join([db.param] * len(chunk))
        cursor = db.execute_sql(template.format(marks=marks), [*extra, *chunk])
        if cursor.description:
            found.update(int(row[0]) for row in cursor.fetchall())
    return sorted(found)


def find_oversized(db: Database) -> Oversized:
    """Return the stored packages and advisories over the bounds (one scan of each table)."""
    packages = _ids(db, f'SELECT id FROM "package" WHERE {OVERSIZED_PACKAGE}')
    advisories = set(_ids(db, f'SELECT id FROM "advisory" WHERE {OVERSIZED_ADVISORY}'))
    advisories.update(
        _chunked(
            db, 'SELECT advisory_id FROM "advisory_package" WHERE package_id IN ({marks})', packages
        )
    )
    return Oversized(tuple(packages), tuple(sorted(advisories)))


def remove_oversized(db: Database, found: Oversized | None = None) -> Removed:
    """Delete what :func:`find_oversized` finds, and what refers to it (see the module).

    Runs in the caller's transaction. Returns what was deleted or reset.
    """
    found = find_oversized(db) if found is None else found
    if not found:
        return Removed()
    packages = list(found.packages)
    reset_mirrors: set[int] = set()
    deleted_sets = 0
    if packages:
        deleted_sets, reset_mirrors = _remove_package_sets(db, packages)
        _remove_updates(db, packages)
    if found.advisories:
        repos = _chunked(
            db, 'SELECT repository_id FROM "advisory" WHERE id IN ({marks})', found.advisories
        )
        _chunked(db, 'DELETE FROM "advisory_package" WHERE advisory_id IN ({marks})',
                 found.advisories)  # fmt: skip
        _chunked(db, 'DELETE FROM "advisory" WHERE id IN ({marks})', found.advisories)
        mirrors = _chunked(db, 'SELECT id FROM "mirror" WHERE repository_id IN ({marks})', repos)
        _chunked(
            db,
            "UPDATE \"mirror\" SET metadata_checksum = '', etag = '', last_modified = '' "
            "WHERE id IN ({marks})",
            mirrors,
        )
        reset_mirrors.update(mirrors)
    _chunked(db, 'DELETE FROM "advisory_package" WHERE package_id IN ({marks})', packages)
    _chunked(db, 'DELETE FROM "package" WHERE id IN ({marks})', packages)
    removed = Removed(len(packages), len(found.advisories), deleted_sets, len(reset_mirrors))
    log.warning(
        "removed %d oversized packages and %d advisories: %d package sets deleted, "
        "%d mirrors to be read again",
        removed.packages, removed.advisories, removed.package_sets, removed.mirrors,
    )  # fmt: skip
    return removed


def _remove_package_sets(db: Database, packages: list[int]) -> tuple[int, set[int]]:
    """Delete the sets whose content holds ``packages``; (sets deleted, mirrors reset)."""
    tainted = package_sets.sets_to_remove_with(db, packages)
    mirrors = _chunked(db, 'SELECT id FROM "mirror" WHERE package_set_id IN ({marks})', tainted)
    _chunked(
        db,
        'UPDATE "mirror" SET package_set_id = NULL, package_count = 0, skipped_packages = NULL, '
        "skipped_advisories = NULL, metadata_checksum = '', etag = '', last_modified = '' "
        "WHERE id IN ({marks})",
        mirrors,
    )
    _chunked(db, 'UPDATE "host" SET package_set_id = NULL WHERE package_set_id IN ({marks})',
             tainted)  # fmt: skip
    update_sets = _chunked(
        db, 'SELECT id FROM "update_set" WHERE package_set_id IN ({marks})', tainted
    )
    _chunked(db, 'DELETE FROM "update_set_item" WHERE update_set_id IN ({marks})', update_sets)
    _chunked(db, 'DELETE FROM "update_set" WHERE id IN ({marks})', update_sets)
    package_sets.delete_sets(db, tainted)
    return len(tainted), set(mirrors)


def _remove_updates(db: Database, packages: list[int]) -> None:
    """Delete pending updates naming ``packages``; their update sets are computed again.

    The hosts that had such updates are counted again (``patchwatch.store.host_counts``),
    when the store has the counts (a migration older than them does not).
    """
    hosts: set[int] = set()
    for column in ("installed_id", "available_id"):
        hosts.update(
            _chunked(
                db, f'SELECT host_id FROM "host_update" WHERE {column} IN ({{marks}})', packages
            )
        )
        _chunked(db, f'DELETE FROM "host_update" WHERE {column} IN ({{marks}})', packages)
        stale = _chunked(
            db, f'SELECT update_set_id FROM "update_set_item" WHERE {column} IN ({{marks}})',
            packages,
        )  # fmt: skip
        _chunked(db, f'DELETE FROM "update_set_item" WHERE {column} IN ({{marks}})', packages)
        _chunked(db, "UPDATE \"update_set\" SET inputs_digest = '' WHERE id IN ({marks})", stale)
    if hosts and host_counts.has_columns(db):
        host_counts.recount(db, hosts)
