"""The one database handle, bound at start-up by whichever process runs.

Models refer to :data:`database`, a proxy, so that importing them opens nothing; an
entry point calls :func:`open_database` once. SQLite gets the pragmas that make several
processes (gunicorn workers, the scheduler, the exporter) share one file safely.
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Iterator
from collections.abc import Sequence
from contextlib import nullcontext
from itertools import chain
from pathlib import Path
from typing import Any
from typing import TypeVar
from urllib.parse import urlsplit

from peewee import Database
from peewee import DatabaseProxy
from peewee import InterfaceError
from peewee import OperationalError
from peewee import PostgresqlDatabase
from peewee import SqliteDatabase
from playhouse.db_url import connect
from playhouse.pool import PooledDatabase

from patchwatch.domain.errors import ConfigError
from patchwatch.domain.shards import shard_of

log = logging.getLogger(__name__)

database = DatabaseProxy()

SQLITE_PRAGMAS = {
    "journal_mode": "wal",  # readers never block the writer, the writer never blocks readers
    "synchronous": "normal",  # durable at checkpoints; safe with WAL
    "foreign_keys": 1,
    "busy_timeout": 30000,  # wait for a concurrent writer instead of failing at once
    "cache_size": -32000,
}


# shard_of(name, count) in SQLite's SQL (patchwatch.store.shards)
SQLITE_SHARD_FUNCTION = "patchwatch_shard_of"
POOL_MAX_CONNECTIONS = 64
POOL_STALE_SECONDS = 300


def sqlite_path(url: str) -> str | None:
    """The file of a ``sqlite://`` URL (None for another database)."""
    if not urlsplit(url).scheme.startswith("sqlite"):
        return None
    path = url.split("://", 1)[1].split("?", 1)[0]
    # sqlite:///rel/x.db is relative, sqlite:////abs/x.db absolute
    return path[1:] if path.startswith("/") else path


def make_database(url: str) -> Database:
    """Create (but do not connect) a database object for a URL.

    :raises ConfigError: for a URL peewee cannot use.
    """
    scheme = urlsplit(url).scheme
    path = sqlite_path(url)
    if path is not None:
        if path and path != ":memory:":
            private_folder(Path(path).parent)
        sqlite = PrivateSqliteDatabase(path, pragmas=SQLITE_PRAGMAS, timeout=30)
        # scrape shards select hosts in SQL (patchwatch.store.shards)
        sqlite.register_function(shard_of, SQLITE_SHARD_FUNCTION, 2, deterministic=True)
        return sqlite
    if scheme in ("postgres", "postgresql"):
        # One pool per process: gunicorn threads and scheduler jobs reuse connections
        # instead of paying a PostgreSQL connection set-up per request.
        url = "postgres+pool" + url[len(scheme) :]
    try:
        db = (
            connect(url)
            if "+pool" not in url
            else connect(
                url, max_connections=POOL_MAX_CONNECTIONS, stale_timeout=POOL_STALE_SECONDS
            )
        )
    except (ValueError, RuntimeError) as exc:
        raise ConfigError("database_url", str(exc)) from None
    if not isinstance(db, PostgresqlDatabase):
        raise ConfigError("database_url", f"unsupported database scheme {scheme!r}")
    return db


PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600
SQLITE_SUFFIXES = ("", "-wal", "-shm", "-journal")


def private_folder(folder: Path) -> None:
    """Create ``folder`` (and its parents) with mode 0700 whatever the umask; one that
    exists keeps its mode: the operator chose it (``serve`` warns when others may
    enter its data folder)."""
    if not folder.exists():
        folder.mkdir(parents=True, mode=PRIVATE_DIR_MODE, exist_ok=True)
        os.chmod(folder, PRIVATE_DIR_MODE)  # mkdir's mode is masked by the umask


def private_sqlite_files(path: Path) -> None:
    """Bring the SQLite store's files to mode 0600 (those that exist).

    The store holds raw reports and every host's inventory, readable by any local
    user under the usual umask (022). Run when a connection opens, right after SQLite
    created the database file if it was new; SQLite gives the ``-wal`` and ``-shm``
    files it creates later the database file's mode. Creating the file ourselves
    beforehand would make a store where an operator's verb must refuse to.
    """
    for suffix in SQLITE_SUFFIXES:
        name = path.with_name(path.name + suffix)
        try:
            if name.stat().st_mode & 0o077:
                os.chmod(name, PRIVATE_FILE_MODE)
        except FileNotFoundError:
            continue
        except OSError as exc:  # not ours (a shared store): say so, do not fail
            log.warning("cannot make %s private: %s", name, exc.strerror)


class PrivateSqliteDatabase(SqliteDatabase):
    """SQLite whose files are private to their owner, whatever the umask."""

    def _connect(self) -> Any:
        conn = super()._connect()
        if self.database and self.database != ":memory:":
            private_sqlite_files(Path(self.database))
        return conn


def open_database(url: str) -> Database:
    """Bind the proxy to the database at ``url`` and return it."""
    db = make_database(url)
    database.initialize(db)
    return db


def connect_checked() -> None:
    """Open (or reuse) this thread's connection and make sure it still works.

    A pooled PostgreSQL connection may have died with the server (a restart, a
    failover); one cheap query finds out, and the dead ones are dropped so that the
    request gets a fresh connection rather than an error.
    """
    database.connect(reuse_if_open=True)
    if not isinstance(database.obj, PooledDatabase):
        return
    try:
        database.execute_sql("SELECT 1")
    except (OperationalError, InterfaceError):
        database.close()
        database.obj.close_idle()
        database.connect()


def write_transaction() -> Any:
    """A transaction that will write: ``BEGIN IMMEDIATE`` on SQLite.

    A deferred SQLite transaction that reads first and writes later fails at once with
    "database is locked" when another connection wrote in between (it cannot upgrade
    its snapshot); taking the write lock up front makes it wait (busy_timeout) instead.
    """
    if isinstance(database.obj, SqliteDatabase):
        return database.atomic("IMMEDIATE")
    return database.atomic()


# SQLSTATEs after which the same transaction, run again, can succeed: PostgreSQL chose
# it as a deadlock victim, or (above READ COMMITTED) a serialisation failure
TRANSIENT_SQLSTATES = frozenset({"40P01", "40001"})


def is_transient(exc: BaseException) -> bool:
    """Whether a failed transaction is worth running again as it was.

    peewee re-raises driver errors under its own classes, keeping the driver's
    exception as the cause, so the chain is searched for the SQLSTATE.
    """
    seen: BaseException | None = exc
    while seen is not None:
        if getattr(seen, "pgcode", None) in TRANSIENT_SQLSTATES:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


_T = TypeVar("_T")

IN_LIST_SIZE = 400  # values per IN (...) list: well under every backend's parameter limit
ARRAY_PARAMETER_SIZE = 10_000  # values per array parameter (PostgreSQL ``= ANY``, ``unnest``)


def chunks(values: Sequence[_T], size: int = IN_LIST_SIZE) -> Iterator[Sequence[_T]]:
    """Slices of at most ``size`` values, for IN lists and multi-row statements."""
    for i in range(0, len(values), size):
        yield values[i : i + size]


def placeholders(n: int) -> str:
    """``n`` ``?`` placeholders for an IN list (see :func:`raw_sql`)."""
    return ", ".join("?" * n)


def raw_sql(text: str) -> str:
    """SQL written with ``?`` placeholders, in the bound database's style.

    Hot reads bypass peewee's query building and row conversion, which cost more
    than the database's own work for thousands of values or rows.
    """
    return text.replace("?", database.obj.param)


def update_many(sql: str, rows: Sequence[tuple[object, ...]]) -> None:
    """Run one UPDATE (``?`` placeholders) per row, batched by the driver.

    psycopg2's ``executemany`` is a round trip per row; ``execute_batch`` sends a
    page of statements at once. (:func:`execute_many` is for INSERTs.)
    """
    if not rows:
        return
    cursor = database.cursor()
    if is_sqlite():
        cursor.executemany(sql, rows)
        return
    try:
        from psycopg2.extras import execute_batch
    except ImportError:  # psycopg 3: its executemany pipelines already
        cursor.executemany(raw_sql(sql), rows)
        return
    execute_batch(cursor, raw_sql(sql), rows, page_size=500)


_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _copy_field(value: object) -> str:
    """One value in PostgreSQL's COPY text format."""
    if value is None:
        return "\\N"
    if value is True or value is False:
        return "t" if value else "f"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return "\\\\x" + bytes(value).hex()  # bytea's hex form, its backslash escaped
    return str(value).translate(_COPY_ESCAPES)


_PLAIN_TYPES = {int, float, bool, type(None)}


def copy_text(rows: Sequence[tuple[object, ...]]) -> str:
    """Rows as the body of a ``COPY ... FROM STDIN`` in text format.

    Rows of numbers, flags and NULLs only (a fleet's pending updates: a million rows
    of ids and times) are written by the tuples' own ``repr``, in C, and turned into
    COPY text by a few replacements over the whole text, instead of a function call
    per value (about a quarter faster; docs/performance.md).
    """
    if not rows:
        return ""
    widths = set(map(len, rows))
    if len(widths) != 1:
        raise ValueError(f"rows of different widths: {sorted(widths)}")
    width = widths.pop()
    types = set(map(type, chain.from_iterable(rows)))
    if types == {str}:
        # strings only (package builds): joined in C, and escaped value by value only
        # when something in them needs it (never seen in package metadata)
        text = "\n".join(map("\t".join, rows)) + "\n"  # type: ignore[arg-type]  # all str
        if (
            "\\" not in text
            and "\r" not in text
            and text.count("\t") == len(rows) * (width - 1)
            and text.count("\n") == len(rows)
        ):
            return text
    elif width > 1 and types <= _PLAIN_TYPES:
        text = "\n".join(map(repr, rows))  # (1, 2.5, True, None)
        for old, new in (("(", ""), (")", ""), (", ", "\t"), ("True", "t"), ("False", "f")):
            text = text.replace(old, new)
        return text.replace("None", "\\N") + "\n"
    return "".join("\t".join(map(_copy_field, row)) + "\n" for row in rows)


def _copy_rows(db: Database, sql: str, rows: Sequence[tuple[object, ...]]) -> None:
    """``INSERT INTO t (cols) VALUES (...)`` as one ``COPY t (cols) FROM STDIN``."""
    head = sql.partition("VALUES")[0].strip()
    target = head.removeprefix("INSERT INTO").strip()
    text = copy_text(rows)
    with _own_transaction(db):
        db.cursor().copy_expert(f"COPY {target} FROM STDIN", io.StringIO(text))


STAGED_TABLE = "patchwatch_staged"


def can_stage_rows() -> bool:
    """Whether :func:`insert_staged` can run: PostgreSQL through psycopg2 (COPY)."""
    return isinstance(database.obj, PostgresqlDatabase) and hasattr(
        database.cursor(), "copy_expert"
    )


def insert_staged(
    table: str, columns: Sequence[str], rows: Sequence[tuple[object, ...]], tail: str = ""
) -> list[tuple[Any, ...]]:
    """``INSERT INTO table (columns) SELECT ... {tail}`` of rows sent by ``COPY``.

    For an insert that needs what ``COPY`` cannot do (``ON CONFLICT``,
    ``RETURNING``): the rows are copied into a temporary table of the same column
    types, then inserted from it in one statement. Why: PostgreSQL parses a large
    text-array parameter (``unnest``) slowly: this takes about half the time for
    a fleet's new package builds (docs/performance.md). PostgreSQL through psycopg2
    only (:func:`can_stage_rows`); returns the statement's rows.
    """
    names = ", ".join(columns)
    text = copy_text(rows)
    db = database.obj
    with _own_transaction(db):
        db.execute_sql(
            f"CREATE TEMPORARY TABLE {STAGED_TABLE} ON COMMIT DROP AS "
            f"SELECT {names} FROM {table} WITH NO DATA"
        )
        cursor = db.cursor()
        cursor.copy_expert(f"COPY {STAGED_TABLE} FROM STDIN", io.StringIO(text))
        cursor = db.execute_sql(
            f"INSERT INTO {table} ({names}) SELECT {names} FROM {STAGED_TABLE} {tail}"
        )
        out = cursor.fetchall() if cursor.description else []
        # dropped now, not at commit: a caller may stage again in the same transaction
        db.execute_sql(f"DROP TABLE {STAGED_TABLE}")
    return out


def _own_transaction(db: Database) -> Any:
    """A transaction when none is open; inside one, nothing (a savepoint would cost two
    round trips per insert, and a failed insert fails the caller's transaction anyway)."""
    return nullcontext() if db.in_transaction() else db.atomic()


def execute_many(sql: str, rows: Sequence[tuple[object, ...]]) -> None:
    """Insert many rows with the driver's executemany (``?`` placeholders).

    peewee builds SQL row by row, which costs more than the database's own work for
    the thousands of rows a package set or a fleet's pending updates have. On
    PostgreSQL (psycopg2) a plain insert becomes a ``COPY``: half the server time of
    a multi-row ``VALUES`` for the members of a new package set (docs/performance.md), and
    no per-row quoting in Python; an insert with ``ON CONFLICT`` (which COPY cannot
    do) is sent as one multi-row ``VALUES`` per 1,000 rows.
    """
    if not rows:
        return
    db = database.obj
    try:
        from psycopg2.extras import execute_values
    except ImportError:  # psycopg 3 only: its executemany pipelines already
        execute_values = None
    if isinstance(db, PostgresqlDatabase) and execute_values is not None:
        if "ON CONFLICT" not in sql.upper():
            _copy_rows(db, sql, rows)
            return
        # psycopg2's executemany sends one statement per row; execute_values sends one
        # multi-row VALUES (twenty times faster for a set's rows; docs/performance.md)
        head, _, tail = sql.partition("VALUES")
        values_sql = head + "VALUES %s" + tail[tail.index(")") + 1 :]
        with _own_transaction(db):
            execute_values(db.cursor(), values_sql, list(rows), page_size=1000)
        return
    sql = raw_sql(sql)
    with _own_transaction(db):
        cursor = db.cursor()
        for i in range(0, len(rows), 5000):
            cursor.executemany(sql, list(rows[i : i + 5000]))


def is_sqlite() -> bool:
    """Tell whether the bound database is SQLite (some statements differ)."""
    return isinstance(database.obj, SqliteDatabase)
