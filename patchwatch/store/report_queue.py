"""The receiver's statements on the report queue: store a report, find the host's last.

Why SQL written once rather than the models: with a report's body already compressed,
building each peewee query (its SQL text from the expression tree, then a model per
row) cost more CPU than SQLite's own work on it, and acknowledging a report ran four
of them (docs/performance.md, "Acknowledging reports"). The statements are built here
once, from the models' own table and column names, so that a renamed column still
shows up as an error here rather than as a silent mismatch.

The caller holds the transaction (``patchwatch.store.group_commit``); nothing here
commits.

How a body is stored is decided here too (:func:`compress_body`, read back by
:func:`stored_text`): a gzip body as the agent sent it, anything else (protocol 1's
form as JSON, an uncompressed JSON body) as a zstd frame at level 1. zstd rather
than zlib: on a 1,500-package report level 1 takes a quarter of zlib level 1's time
(0.15 against 0.64 ms), stores less (27 against 31 kB) and decompresses in a fifth
of the time for processing (0.05 against 0.26 ms). Rows stored as zlib streams
before read as they were.
"""

from __future__ import annotations

import zlib

from patchwatch.domain.repodata.compression import ZstdError
from patchwatch.domain.repodata.compression import zstd_compress
from patchwatch.domain.repodata.compression import zstd_decompress
from patchwatch.store.db import database
from patchwatch.store.db import is_sqlite
from patchwatch.store.db import raw_sql
from patchwatch.store.models import Report

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
STORE_LEVEL = 1


def compress_body(raw: bytes) -> bytes:
    """The stored form of a report body the receiver compresses itself (a zstd frame)."""
    return zstd_compress(raw, STORE_LEVEL)


def stored_text(body: bytes) -> bytes:
    """The JSON text of a stored body: a zstd frame (:func:`compress_body`), or a zlib
    or gzip stream (a gzip body kept as sent, rows stored before zstd).

    :raises ValueError: when the body is not one of them or is corrupt.
    """
    if bytes(body[:4]) == ZSTD_MAGIC:  # a memoryview from PostgreSQL compares unequal
        try:
            return zstd_decompress(body)
        except ZstdError as exc:
            raise ValueError(f"zstd: {exc}") from None
    try:
        return zlib.decompress(body, 32 + zlib.MAX_WBITS)
    except zlib.error as exc:
        raise ValueError(str(exc)) from None


_R = Report._meta.table_name
_COLUMNS = {name: field.column_name for name, field in Report._meta.fields.items()}
# every column but the id: peewee fills defaults in Python, so the schema has none
_INSERTED = ("host_name", "protocol", "token", "received_at", "remote_addr", "user_agent",
             "body", "size", "state", "error", "attempts", "packages_digest")  # fmt: skip
_INSERT = (
    f"INSERT INTO {_R} ({', '.join(_COLUMNS[c] for c in _INSERTED)}) "
    f"VALUES ({', '.join('?' * len(_INSERTED))})"
)
_PREVIOUS = (
    f"SELECT {_COLUMNS['id']}, {_COLUMNS['state']}, {_COLUMNS['error']} FROM {_R} "
    f"WHERE {_COLUMNS['host_name']} = ? AND {_COLUMNS['id']} < ? "
    f"ORDER BY {_COLUMNS['id']} DESC LIMIT 1"
)


def insert_report(
    host_name: str,
    protocol: str,
    token_id: int | None,
    received_at: float,
    remote_addr: str,
    user_agent: str,
    body: bytes,
    size: int,
) -> int:
    """Queue one report (``pending``) as the receiver stored it; return its id.

    ``body``: the report as stored (:func:`compress_body`'s zstd frame, or the gzip
    stream an agent sent), ``size`` its
    length decompressed. Fields are cut to their columns' lengths as
    ``patchwatch.pipeline.processing.store_report`` does.
    """
    params = (host_name, protocol, token_id, received_at, remote_addr[:64], user_agent[:255],
              body, size, "pending", "", 0, "")  # fmt: skip
    if is_sqlite():
        return int(database.execute_sql(_INSERT, params).lastrowid)
    cursor = database.execute_sql(raw_sql(_INSERT) + f" RETURNING {_COLUMNS['id']}", params)
    return int(cursor.fetchone()[0])


def previous_failure(host_name: str, report_id: int) -> dict[str, object] | None:
    """The host's report before ``report_id`` when processing refused it (its id,
    state and why), else None."""
    row = database.execute_sql(raw_sql(_PREVIOUS), (host_name, report_id)).fetchone()
    if row is None or row[1] != "failed":
        return None
    return {"id": int(row[0]), "state": "failed", "error": row[2]}
