"""Schema versions and the steps between them.

Every process runs :func:`migrate` at start-up; it applies the missing steps in one
transaction under a lock, so two processes starting together do not race, and a failed
step leaves the previous version intact. A schema newer than this code knows refuses to
start rather than guess.

Rule for changing ``patchwatch.models``: add a step here that brings an existing
database to the new shape (``playhouse.migrate`` operations), never edit an old step.
Step 1 creates the initial tables.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from peewee import Database
from peewee import PostgresqlDatabase

from patchwatch.errors import PatchwatchError
from patchwatch.models import MODELS
from patchwatch.models import SchemaVersion

log = logging.getLogger(__name__)

ADVISORY_LOCK_ID = 0x70617463  # "patc": serialises migrations on PostgreSQL


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    apply: Callable[[Database], None]


def _initial(db: Database) -> None:
    db.create_tables(MODELS, safe=True)


MIGRATIONS: tuple[Migration, ...] = (Migration(1, "initial schema", _initial),)

LATEST = MIGRATIONS[-1].version


def current_version(db: Database) -> int:
    """Return the applied schema version, 0 for an empty database."""
    if not db.table_exists(SchemaVersion._meta.table_name):
        return 0
    row = SchemaVersion.select().order_by(SchemaVersion.version.desc()).first()
    return row.version if row else 0


def migrate(db: Database) -> list[int]:
    """Bring the schema to :data:`LATEST`; return the versions applied.

    :raises PatchwatchError: when the database is newer than this program.
    """
    applied: list[int] = []
    lock = "IMMEDIATE" if not isinstance(db, PostgresqlDatabase) else None
    with db.atomic(lock) if lock else db.atomic():
        if isinstance(db, PostgresqlDatabase):
            db.execute_sql("SELECT pg_advisory_xact_lock(%s)", (ADVISORY_LOCK_ID,))
        version = current_version(db)
        if version > LATEST:
            raise PatchwatchError(
                f"database schema is version {version}, newer than this patchwatch "
                f"({LATEST}); upgrade patchwatch"
            )
        for step in MIGRATIONS:
            if step.version <= version:
                continue
            log.info("applying schema migration %d: %s", step.version, step.description)
            step.apply(db)
            SchemaVersion.create(
                version=step.version, description=step.description, applied_at=time.time()
            )
            applied.append(step.version)
    return applied
