"""What every process answers on /healthz: is the database reachable and current."""

from __future__ import annotations

import time

from peewee import Database
from peewee import PeeweeException

from patchwatch.migrations import LATEST
from patchwatch.migrations import current_version


def check_database(db: Database) -> dict[str, object]:
    """Return a small JSON-able status; ``ok`` is false when the store cannot be used."""
    started = time.perf_counter()
    try:
        db.execute_sql("SELECT 1").fetchone()
        version = current_version(db)
    except (PeeweeException, OSError) as exc:
        return {"ok": False, "database": "down", "error": type(exc).__name__}
    elapsed = time.perf_counter() - started
    return {
        "ok": version == LATEST,
        "database": "up",
        "backend": "postgresql" if "Postgres" in type(db).__name__ else "sqlite",
        "schema_version": version,
        "schema_expected": LATEST,
        "latency_seconds": round(elapsed, 6),
    }
