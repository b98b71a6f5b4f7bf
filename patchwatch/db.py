"""The one database handle, bound at start-up by whichever process runs.

Models refer to :data:`database`, a proxy, so that importing them opens nothing; an
entry point calls :func:`open_database` once. SQLite gets the pragmas that make several
processes (gunicorn workers, the scheduler, the exporter) share one file safely.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from peewee import Database
from peewee import DatabaseProxy
from peewee import PostgresqlDatabase
from peewee import SqliteDatabase
from playhouse.db_url import connect

from patchwatch.errors import ConfigError

log = logging.getLogger(__name__)

database = DatabaseProxy()

SQLITE_PRAGMAS = {
    "journal_mode": "wal",  # readers never block the writer, the writer never blocks readers
    "synchronous": "normal",  # durable at checkpoints; safe with WAL
    "foreign_keys": 1,
    "busy_timeout": 30000,  # wait for a concurrent writer instead of failing at once
    "cache_size": -32000,
}


def make_database(url: str) -> Database:
    """Create (but do not connect) a database object for a URL.

    :raises ConfigError: for a URL peewee cannot use.
    """
    scheme = urlsplit(url).scheme
    if scheme.startswith("sqlite"):
        path = url.split("://", 1)[1]
        path = path.split("?", 1)[0]
        if path.startswith("/"):  # sqlite:///rel/x.db is relative, sqlite:////abs/x.db absolute
            path = path[1:]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        return SqliteDatabase(path, pragmas=SQLITE_PRAGMAS, timeout=30)
    try:
        db = connect(url)
    except (ValueError, RuntimeError) as exc:
        raise ConfigError("database_url", str(exc)) from None
    if not isinstance(db, PostgresqlDatabase):
        raise ConfigError("database_url", f"unsupported database scheme {scheme!r}")
    return db


def open_database(url: str) -> Database:
    """Bind the proxy to the database at ``url`` and return it."""
    db = make_database(url)
    database.initialize(db)
    return db


def write_transaction() -> Any:
    """A transaction that will write: ``BEGIN IMMEDIATE`` on SQLite.

    A deferred SQLite transaction that reads first and writes later fails at once with
    "database is locked" when another connection wrote in between (it cannot upgrade
    its snapshot); taking the write lock up front makes it wait (busy_timeout) instead.
    """
    if isinstance(database.obj, SqliteDatabase):
        return database.atomic("IMMEDIATE")
    return database.atomic()


def is_sqlite() -> bool:
    """Tell whether the bound database is SQLite (some statements differ)."""
    return isinstance(database.obj, SqliteDatabase)
