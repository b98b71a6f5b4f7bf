"""Select the hosts of one scrape shard in the database, not after reading them all.

A shard of a 100,000-host fleet should cost a tenth of the whole scrape, so the hash of
:mod:`patchwatch.domain.shards` is computed where the rows are: SQLite calls the pure
function (registered on every connection, :func:`patchwatch.store.db.make_database`),
PostgreSQL computes the same value from its own ``md5``. Both give exactly
:func:`patchwatch.domain.shards.shard_of`; tests/test_shards.py checks it on each
backend.
"""

from __future__ import annotations

from typing import Any

from peewee import SQL
from peewee import Cast
from peewee import Expression
from peewee import Field
from peewee import NodeList
from peewee import SqliteDatabase
from peewee import fn

from patchwatch.domain.shards import Shard
from patchwatch.store.db import SQLITE_SHARD_FUNCTION
from patchwatch.store.db import database


def _hex_as_int(hex_digits: Any, bits: int) -> Any:
    """``hex_digits`` (text) read as an unsigned integer of ``bits`` bits, in PostgreSQL.

    ``bit(32)`` converts to a non-negative ``bigint``; 64 bits would not (the sign),
    which is why the 64-bit hash is taken as two halves.
    """
    literal = NodeList((SQL("'x'"), SQL("||"), hex_digits))
    return Cast(Cast(literal, f"bit({bits})"), "bigint")


def _postgres_shard_of(name: Field, count: int) -> Any:
    """PostgreSQL's ``shard_of(name, count)``: (hi * 2**32 + lo) mod count, computed as
    ((hi mod count) * (2**32 mod count) + lo) mod count so that it stays in ``bigint``
    (count is at most MAX_SHARDS)."""
    digest = fn.md5(name)
    high = _hex_as_int(fn.substr(digest, 17, 8), 32)
    low = _hex_as_int(fn.substr(digest, 25, 8), 32)
    return fn.mod(fn.mod(high, count) * (2**32 % count) + low, count)


def in_shard(name: Field, shard: Shard) -> Expression:
    """A condition true for the rows whose host name ``name`` is in ``shard``."""
    if isinstance(database.obj, SqliteDatabase):
        return getattr(fn, SQLITE_SHARD_FUNCTION)(name, shard.count) == shard.index
    return _postgres_shard_of(name, shard.count) == shard.index
