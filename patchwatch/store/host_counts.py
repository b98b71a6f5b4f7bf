"""Each host's update counts, kept on its ``host`` row.

Why: every listing (the console's pages, the API, the CLI, the exporter's scrape)
shows each host's security, other and held update counts and the first-seen time of
its oldest security update. Aggregated from the pending updates on every request, that
read the whole ``host_update`` table (a million rows at 10,000 hosts) to answer
10,000 rows (docs/performance.md). The update computation
(``patchwatch.pipeline.hostupdates``) writes the counts with the host's updates, in the
same transaction; the few other writers of pending updates call :func:`recount`.

The rule, which :func:`mismatched` checks (``patchwatch dbcheck``): a host whose updates
were ever computed has the aggregate of its pending updates (0, not NULL, when it has
none); a host never computed has NULL in every count: unknown, never 0. Whether
counts that exist are current and complete is ``updates_state``'s to say
(``patchwatch.store.update_status``), as it was for the aggregate. The
three counts are disjoint: an update of a held package counts as held only, and is
never the oldest security update.

Plain SQL on the table names, as the migrations use: a migration backfills with it.
"""

from __future__ import annotations

from collections.abc import Iterable

from peewee import Database

__all__ = ["COUNT_COLUMNS", "has_columns", "mismatched", "recount"]

# the host columns, in the order of the tuples below
COUNT_COLUMNS = ("security_updates", "other_updates", "held_updates", "oldest_security_at")

_CHUNK = 500
_ACTIONABLE_SECURITY = "u.security AND NOT u.held"
_KNOWN = "h.updates_computed_at IS NOT NULL"
# the aggregate per host: security, other, held, oldest actionable security first-seen
_AGGREGATE = (
    "SELECT u.host_id AS host_id, "
    f"SUM(CASE WHEN {_ACTIONABLE_SECURITY} THEN 1 ELSE 0 END) AS security, "
    "SUM(CASE WHEN u.security OR u.held THEN 0 ELSE 1 END) AS other, "
    "SUM(CASE WHEN u.held THEN 1 ELSE 0 END) AS held, "
    f"MIN(CASE WHEN {_ACTIONABLE_SECURITY} THEN u.first_seen_at END) AS oldest "
    'FROM "host_update" u'
)


def has_columns(db: Database) -> bool:
    """Whether the host table has the count columns (a migration before them does not)."""
    return COUNT_COLUMNS[0] in {c.name for c in db.get_columns("host")}


def _expected(alias: str = "a") -> tuple[str, str, str, str]:
    """What each count column should hold, given the aggregate joined as ``alias``."""
    return (
        f"CASE WHEN {_KNOWN} THEN COALESCE({alias}.security, 0) END",
        f"CASE WHEN {_KNOWN} THEN COALESCE({alias}.other, 0) END",
        f"CASE WHEN {_KNOWN} THEN COALESCE({alias}.held, 0) END",
        f"CASE WHEN {_KNOWN} THEN {alias}.oldest END",
    )


def recount(db: Database, host_ids: Iterable[int] | None = None) -> None:
    """Set the counts of these hosts (every host when None) from their pending updates.

    Runs in the caller's transaction, so that the counts change with the rows.
    """
    if host_ids is None:
        _recount_where(db, "", [])
        return
    ids = sorted(set(host_ids))
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start : start + _CHUNK]
        marks = ", ".join([db.param] * len(chunk))
        _recount_where(db, f"id IN ({marks})", chunk)


def _recount_where(db: Database, where: str, params: list[int]) -> None:
    # UPDATE ... FROM, on both backends (SQLite 3.33+): the aggregate is read once per
    # chunk of hosts, not once per host
    inner = f"WHERE u.host_id IN ({', '.join([db.param] * len(params))}) " if params else ""
    values = ", ".join(f'{e} AS "{c}"' for c, e in zip(COUNT_COLUMNS, _expected(), strict=True))
    assignments = ", ".join(f'"{c}" = x."{c}"' for c in COUNT_COLUMNS)
    sql = (
        f'UPDATE "host" SET {assignments} FROM (SELECT h.id AS id, {values} FROM "host" AS h '
        f"LEFT JOIN ({_AGGREGATE} {inner}GROUP BY u.host_id) AS a ON a.host_id = h.id"
        f"{' WHERE h.' + where if where else ''}) AS x "
        'WHERE "host".id = x.id'
    )
    db.execute_sql(sql, [*params, *params])


def mismatched(db: Database) -> list[int]:
    """Ids of the hosts whose stored counts are not what :func:`recount` would write."""
    differs = "IS DISTINCT FROM"  # NULL-safe, on both backends (SQLite 3.39+)
    test = " OR ".join(
        f'h."{c}" {differs} {e}' for c, e in zip(COUNT_COLUMNS, _expected(), strict=True)
    )
    sql = (
        f'SELECT h.id FROM "host" AS h LEFT JOIN ({_AGGREGATE} GROUP BY u.host_id) AS a '
        f"ON a.host_id = h.id WHERE {test} ORDER BY h.id"
    )
    return [int(row[0]) for row in db.execute_sql(sql).fetchall()]
