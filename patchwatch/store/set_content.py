"""Which of some packages many package sets hold, sets written whole or as differences.

A set written as a difference (schema 7, ``patchwatch.domain.set_bases``) holds its base's
packages except those its member rows list, plus those its rows list that the base
lacks: restricted to any group of packages, its share is its base's share XOR its own
rows' share. Questions over many sets at once (the installed kernels of a fleet, the
architectures of a repository's hosts) are answered that way from the member rows of
the sets and their bases, read by index. The ``package_set_content`` view answers
the same for one set or one package; over thousands of sets PostgreSQL planned it as
a hash or sort of the whole member table, hundreds of times slower
(docs/performance.md).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from itertools import product

from patchwatch.domain.packed_ids import unpack_ids
from patchwatch.store.db import chunks
from patchwatch.store.db import database
from patchwatch.store.db import is_sqlite
from patchwatch.store.db import placeholders
from patchwatch.store.db import raw_sql
from patchwatch.store.models import Package
from patchwatch.store.models import PackageSet
from patchwatch.store.models import PackageSetMember

_SET = PackageSet._meta.table_name
_MEMBER = PackageSetMember._meta.table_name
_PACKAGE = Package._meta.table_name


def _bases(set_ids: Sequence[int] | None) -> dict[int, int]:
    """Set id -> base id, for the sets (all, or these) written as differences."""
    sql = f"SELECT id, base_id FROM {_SET} WHERE base_id IS NOT NULL"
    if set_ids is None:
        return dict(database.execute_sql(sql).fetchall())
    out: dict[int, int] = {}
    for chunk in chunks(set_ids):
        query = raw_sql(f"{sql} AND id IN ({placeholders(len(chunk))})")
        out.update(database.execute_sql(query, list(chunk)).fetchall())
    return out


def matching_members(
    set_ids: Sequence[int] | None,
    package_ids: Sequence[int] | None = None,
    package_where: str = "",
) -> dict[int, set[int]]:
    """Set id -> the ids of its packages among ``package_ids`` and matching
    ``package_where`` (SQL on the package row ``p``, no parameters).

    ``set_ids`` None: every set holding one (sets holding none are left out); else
    exactly these sets, each with a (possibly empty) answer.
    """
    wanted = None if set_ids is None else list(dict.fromkeys(set_ids))
    bases = _bases(wanted)
    read = None if wanted is None else sorted(set(wanted) | set(bases.values()))
    sql = f"SELECT m.package_set_id, m.package_id FROM {_MEMBER} m"
    conditions = []
    if package_where:
        sql += f" JOIN {_PACKAGE} p ON p.id = m.package_id"
        # psycopg2 reads % as a parameter mark: a literal one (LIKE 'x%') is doubled
        literal = package_where if is_sqlite() else package_where.replace("%", "%%")
        conditions.append(f"({literal})")
    set_chunks: list[Sequence[int] | None] = [None] if read is None else list(chunks(read))
    package_chunks: list[Sequence[int] | None] = (
        [None] if package_ids is None else list(chunks(sorted(set(package_ids))))
    )
    found: dict[int, set[int]] = defaultdict(set)
    for sets_part, packages_part in product(set_chunks, package_chunks):
        where = list(conditions)
        params: list[int] = []
        if sets_part is not None:
            where.append(f"m.package_set_id IN ({placeholders(len(sets_part))})")
            params += sets_part
        if packages_part is not None:
            where.append(f"m.package_id IN ({placeholders(len(packages_part))})")
            params += packages_part
        query = raw_sql(sql + (" WHERE " + " AND ".join(where) if where else ""))
        for set_id, package_id in database.execute_sql(query, params).fetchall():
            found[set_id].add(package_id)
    targets = wanted if wanted is not None else set(found) | set(bases)
    out: dict[int, set[int]] = {}
    for set_id in targets:
        own = found.get(set_id, set())
        base = bases.get(set_id)
        members = own if base is None else found.get(base, set()) ^ own
        if members or wanted is not None:
            out[set_id] = members
    return out


def sets_unlike_their_rows(chunk: int = 100) -> list[int]:
    """The sets whose packed ids (``member_ids``) are not what their member rows say.

    The update computation reads the packed copy, SQL the rows; both are written
    once, together, so they differ only in a store damaged or edited by hand, and
    then a host's updates and its package lookups disagree. A difference's content
    is its base's rows XOR its own (a difference whose base is gone cannot match).
    Read a range of sets at a time, bases kept once read: memory stays within a
    range's rows and the bases (some hundreds of whole sets), not the whole table.
    Sets without packed ids (an id beyond 32 bits) have only their rows: skipped.
    """
    listed = database.execute_sql(
        f"SELECT id, base_id FROM {_SET} WHERE member_ids IS NOT NULL ORDER BY id"
    ).fetchall()
    bases: dict[int, set[int]] = {}
    unlike: list[int] = []
    for part in chunks(listed, chunk):
        wanted = [set_id for set_id, _base in part]
        own = _rows_of(wanted)
        missing = {base for _set, base in part if base is not None and base not in bases}
        bases.update(_rows_of(sorted(missing)))
        query = raw_sql(
            f"SELECT id, member_ids FROM {_SET} WHERE id IN ({placeholders(len(wanted))})"
        )
        packed = dict(database.execute_sql(query, wanted).fetchall())
        for set_id, base in part:
            rows = own[set_id] if base is None else bases[base] ^ own[set_id]
            if list(unpack_ids(packed[set_id])) != sorted(rows):
                unlike.append(set_id)
    return unlike


def _rows_of(set_ids: Sequence[int]) -> dict[int, set[int]]:
    """Set id -> the package ids of its own member rows (each set listed, maybe empty)."""
    out: dict[int, set[int]] = {set_id: set() for set_id in set_ids}
    for part in chunks(set_ids):
        query = raw_sql(
            f"SELECT package_set_id, package_id FROM {_MEMBER} "
            f"WHERE package_set_id IN ({placeholders(len(part))})"
        )
        for set_id, package_id in database.execute_sql(query, list(part)).fetchall():
            out[set_id].add(package_id)
    return out
