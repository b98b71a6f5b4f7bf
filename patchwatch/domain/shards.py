"""Scrape shards: which hosts one ``/metrics?shard=I&shards=N`` scrape carries.

A fleet of 100,000 hosts is about a million series, more than one scrape should carry.
Prometheus users split such a target into several, each scraped on its own; here each
shard is the same ``/metrics`` asked with ``shard`` and ``shards`` parameters, and a
host belongs to shard ``I`` of ``N`` when the hash of its name modulo ``N`` is ``I``.

The hash is the one Prometheus's ``hashmod`` relabelling uses (the last 8 bytes of the
MD5 of the value, as a big-endian unsigned integer, modulo N), so an operator who knows
how Prometheus spreads targets over servers knows how patchwatch spreads hosts over
shards, and can compute a host's shard with the tools they have. It depends on the name
alone: a host stays in its shard from scrape to scrape, whatever else the fleet does,
until the number of shards changes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass

# More shards than this is no longer splitting a scrape but one scrape per few hosts;
# it also bounds the arithmetic the databases do (see patchwatch.store.shards).
MAX_SHARDS = 1024


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count`` (``0 <= index < count <= MAX_SHARDS``)."""

    index: int
    count: int

    @property
    def has_fleet(self) -> bool:
        """Shard 0 alone carries the series that are not per host (mirrors, jobs,
        reports, the process), so that summing over shards never counts them twice."""
        return self.index == 0


def shard_hash(name: str) -> int:
    """The unsigned 64-bit hash of ``name`` that Prometheus's ``hashmod`` reduces."""
    return int.from_bytes(hashlib.md5(name.encode(), usedforsecurity=False).digest()[8:], "big")


def shard_of(name: str, count: int) -> int:
    """The shard of ``count`` that host ``name`` belongs to."""
    return shard_hash(name) % count


class ShardError(ValueError):
    """The shard parameters of a request are unusable; the message says why."""


def _one_integer(params: Mapping[str, Sequence[str]], key: str) -> int:
    values = params.get(key, [])
    if len(values) != 1:
        raise ShardError(f"give {key} exactly once (got it {len(values)} times)")
    text = values[0]
    if not (text.isascii() and text.isdigit()) or len(text) > 4:
        raise ShardError(f"{key} must be a whole number from 0 to {MAX_SHARDS}")
    return int(text)


def parse_shard(params: Mapping[str, Sequence[str]]) -> Shard | None:
    """The shard a query string (as ``urllib.parse.parse_qs`` gives it) asks for.

    ``None`` when it names neither ``shard`` nor ``shards``: the whole fleet.

    :raises ShardError: one given without the other, either repeated or not a decimal
        number, ``shards`` outside 1..MAX_SHARDS, ``shard`` not below ``shards``.
    """
    if "shard" not in params and "shards" not in params:
        return None
    if "shard" not in params or "shards" not in params:
        raise ShardError("give both shard and shards (shard=I&shards=N, 0 <= I < N)")
    index = _one_integer(params, "shard")
    count = _one_integer(params, "shards")
    if not 1 <= count <= MAX_SHARDS:
        raise ShardError(f"shards must be from 1 to {MAX_SHARDS}")
    if index >= count:
        raise ShardError(f"shard must be below shards (0 to {count - 1})")
    return Shard(index, count)
