"""Select the hosts of one scrape shard in the database, not after reading them all.

A shard of a 100,000-host fleet should cost a tenth of the whole scrape, so the hash of
:mod:`patchwatch.domain.shards` is computed where the rows are: SQLite calls the pure
function (registered on every connection, :func:`patchwatch.store.db.make_database`),
PostgreSQL computes the same value from its own ``md5``. Both give exactly
:func:`patchwatch.domain.shards.shard_of`; tests/test_shards.py checks it on each
backend.

A scrape reads a shard's hosts in three queries (hosts with their update counts, tags,
reverse DNS), and the counts subquery needs them once more: computing the hash in each
would hash every host of the fleet four times, most of a shard's cost at 100,000
hosts. :func:`shard_hosts` finds the shard's host ids once; the queries then select
those ids (:meth:`HostSelection.condition`), passed as one parameter.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
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
from patchwatch.store.models import Host


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


@dataclass(frozen=True)
class HostSelection:
    """The ids of the hosts one read is about (a shard's), found once."""

    ids: tuple[int, ...]

    def condition(self, host_id: Any) -> Expression:
        """True for rows whose ``host_id`` is one of :attr:`ids`: one parameter (a JSON
        array read by ``json_each`` on SQLite, an array on PostgreSQL), whatever the
        count, rather than an ``IN`` list of 10,000 values."""
        if isinstance(database.obj, SqliteDatabase):
            values = SQL("(SELECT value FROM json_each(?))", [json.dumps(self.ids)])
            return Expression(host_id, "IN", values)
        return Expression(host_id, "=", SQL("ANY(%s)", [list(self.ids)]))


def shard_hosts(shard: Shard) -> HostSelection:
    """The hosts of ``shard``: one pass over the host names, hashed in the database."""
    query = Host.select(Host.id).where(in_shard(Host.name, shard))
    cursor = database.execute(query)
    try:
        return HostSelection(tuple(row[0] for row in cursor.fetchall()))
    finally:
        cursor.close()
