"""Package sets behind one door: the only module that knows how a set is stored.

A package set (a host's installed packages, a mirror's index) is stored once and
shared. Its content is kept in two copies and read through a view:

- member rows (``package_set_member``): the set whole, or, for a set with a base
  (``package_set.base_id``), the difference from it, the packages in exactly one of
  the two (schema 7, ``patchwatch.domain.set_bases``);
- the packed ids (``package_set.member_ids``, schema 6, ``patchwatch.domain.packed_ids``):
  always the whole set, ascending 4-byte ids, NULL where an id does not fit;
- the ``package_set_content`` view, which resolves differences for SQL that reads one
  set or one package.

Invariants, kept here and nowhere else:

- a set never changes once written: its digest (``patchwatch.domain.set_digest``)
  names its content, and both copies are written together, in one transaction;
- a base is a whole set; a difference is one step from its base, never a chain;
- a mirror's set is whole (:func:`ensure_mirror_set`), so that the update computation
  reads a mirror's index straight from :data:`WHOLE_MEMBER_ROWS`;
- the two copies agree; :func:`check` finds the sets where a damaged or hand-edited
  store broke that (``dbcheck``).

The interface: :func:`ensure_package_sets` / :func:`ensure_package_set` (hosts'),
:func:`ensure_mirror_set`, :func:`stored_package_sets` (sets by digest),
:func:`sets_of_listings` and :func:`remember_listings` (sets by the report lists
that made them),
:func:`package_ids_of` (members of a set), :func:`set_differences` and
:func:`bases_of` (many sets as base and difference), :func:`packages_in` (a set's
packages as a query),
:func:`matching_members` and :func:`sets_holding` (sets holding packages),
:func:`make_whole` and :func:`check`. For deleting: :func:`member_rows_of_sets` and the
member-row columns (``dbcheck``), :func:`sets_to_remove_with` and
:func:`delete_sets` (oversized rows, ``dbcheck``'s orphan sets; their listings go with
them), :func:`orphan_listings` and :func:`delete_listings` (``dbcheck``). Everything
else reads and writes sets here.

Which of some packages many sets hold, sets written whole or as differences: a
difference holds its base's packages except those its member rows list, plus those
its rows list that the base lacks; restricted to any group of packages, its share is
its base's share XOR its own rows' share. Questions over many sets at once (the
installed kernels of a fleet, the architectures of a repository's hosts) are
answered that way from the member rows of the sets and their bases, read by index
(:func:`matching_members`): over thousands of sets PostgreSQL planned the view as a
hash or sort of the whole member table (docs/performance.md).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Mapping
from collections.abc import Sequence
from itertools import product

from peewee import Database
from peewee import Field
from peewee import IntegrityError
from peewee import ModelSelect
from peewee import fn

from patchwatch.domain.packed_ids import pack_ids
from patchwatch.domain.packed_ids import unpack_ids
from patchwatch.domain.records import Package as PackageRecord
from patchwatch.domain.set_bases import DEFAULT_THRESHOLDS
from patchwatch.domain.set_bases import MAX_BASE_SIZE
from patchwatch.domain.set_bases import MAX_BASES
from patchwatch.domain.set_bases import BaseIndex
from patchwatch.domain.set_bases import Thresholds
from patchwatch.domain.set_digest import set_digest
from patchwatch.store.db import chunks
from patchwatch.store.db import database
from patchwatch.store.db import execute_many
from patchwatch.store.db import is_sqlite
from patchwatch.store.db import placeholders
from patchwatch.store.db import raw_sql
from patchwatch.store.db import write_transaction
from patchwatch.store.models import Package
from patchwatch.store.models import PackageListing
from patchwatch.store.models import PackageSet
from patchwatch.store.models import PackageSetContent
from patchwatch.store.models import PackageSetMember
from patchwatch.store.sets import cached_id
from patchwatch.store.sets import ensure_packages
from patchwatch.store.sets import forget_cached_ids
from patchwatch.store.sets import forgotten
from patchwatch.store.sets import remember_id

#: member rows as SQL names them; a mirror's set is whole, so for a mirror's set
#: these rows are its packages (``patchwatch.pipeline.hostupdates`` joins them)
MEMBER_ROWS = PackageSetMember._meta.table_name
WHOLE_MEMBER_ROWS = MEMBER_ROWS
#: the view resolving differences: SQL reading one set's or one package's sets
CONTENT = PackageSetContent._meta.table_name
_SET = PackageSet._meta.table_name
_PACKAGE = Package._meta.table_name
_LISTING = PackageListing._meta.table_name

PACKAGE_SET_LOCK = 0x7061_7463_6873_6574  # "patchset"


def stored_package_sets(digests: Sequence[str]) -> dict[str, int]:
    """Ids of the stored package sets with these digests (those that exist)."""
    return _ids_by_digest(
        "package",
        digests,
        f"SELECT digest, id FROM {PackageSet._meta.table_name} WHERE digest IN ",
    )


def sets_of_listings(digests: Sequence[str]) -> dict[str, int]:
    """Listing digest -> id of the stored package set that list made, for the
    listings (``patchwatch.domain.set_digest.listing_digest``) seen before whose set
    is still stored.

    The sets are joined by their digest: a listing whose set was deleted finds nothing.
    """
    return _ids_by_digest(
        "listing",
        digests,
        f"SELECT l.digest, s.id FROM {_LISTING} l JOIN {_SET} s "
        "ON s.digest = l.set_digest WHERE l.digest IN ",
    )


def _ids_by_digest(kind: str, digests: Sequence[str], select_in: str) -> dict[str, int]:
    """Digest -> set id: this process's cache first, then one ``IN (...)`` query per
    chunk for the rest (``select_in`` ends where the placeholders go and selects
    digest and id), remembering what it finds.
    """
    out: dict[str, int] = {}
    unknown = []
    for digest in digests:
        set_id = cached_id(kind, digest)
        if set_id is None:
            unknown.append(digest)
        else:
            out[digest] = set_id
    for chunk in chunks(unknown):
        sql = f"{select_in}({placeholders(len(chunk))})"
        for digest, set_id in database.execute_sql(raw_sql(sql), list(chunk)).fetchall():
            remember_id(kind, digest, set_id)
            out[digest] = set_id
    return out


def remember_listings(listings: Mapping[str, str], now: float) -> None:
    """Store which set (by its digest) each listing digest made, inside the caller's
    transaction; listings stored already are left as they are.

    Call it only once the sets are committed, and with what parsing the lists
    really gave: a row here is taken without a second look
    (:func:`sets_of_listings`).
    """
    execute_many(
        f"INSERT INTO {_LISTING} (digest, set_digest, created_at) VALUES (?, ?, ?) "
        "ON CONFLICT DO NOTHING",
        [(listing, set_digest, now) for listing, set_digest in sorted(listings.items())],
    )


def ensure_package_set(packages: Sequence[PackageRecord], now: float) -> PackageSet:
    """Return the stored set with exactly these packages, creating it whole if new.

    A host's set (the same as :func:`ensure_package_sets` for one list): one already
    stored, whole or as a difference, is returned as it is. The returned row carries
    only ``id``, ``digest`` and ``size``: it names a set (plain SQL, no row read),
    which is all that callers need.
    """
    return _ensure_one(packages, now, whole=False)


def ensure_mirror_set(packages: Sequence[PackageRecord], now: float) -> PackageSet:
    """Return the stored set with exactly these packages as a mirror's index: whole.

    Mirrors' sets are read by their member rows directly (:data:`WHOLE_MEMBER_ROWS`),
    so a set a host brought first and that was written as a difference is rewritten
    whole here, which leaves what it contains as it was.
    """
    return _ensure_one(packages, now, whole=True)


def _ensure_one(packages: Sequence[PackageRecord], now: float, whole: bool) -> PackageSet:
    digest, size = set_digest(packages)
    known = stored_package_sets([digest]).get(digest)
    if known is not None:
        if whole:
            make_whole(known)
        return PackageSet(id=known, digest=digest, size=size)
    ids = ensure_packages(packages)
    with write_transaction():
        set_id = _create_package_set(digest, sorted(set(ids.values())), now)
    return PackageSet(id=set_id, digest=digest, size=len(ids))


def make_whole(set_id: int) -> None:
    """Store a set written as a difference as its whole content instead."""
    table = PackageSet._meta.table_name
    members = PackageSetMember._meta.table_name
    with write_transaction():
        row = database.execute_sql(
            raw_sql(f"SELECT base_id FROM {table} WHERE id = ?"), (set_id,)
        ).fetchone()
        if row is None or row[0] is None:
            return
        content = [
            pid
            for (pid,) in database.execute_sql(
                raw_sql(
                    "SELECT package_id FROM package_set_content WHERE package_set_id = ? "
                    "ORDER BY package_id"
                ),
                (set_id,),
            ).fetchall()
        ]
        database.execute_sql(raw_sql(f"DELETE FROM {members} WHERE package_set_id = ?"), (set_id,))
        execute_many(
            f"INSERT INTO {members} (package_set_id, package_id) VALUES (?, ?)",
            [(set_id, pid) for pid in content],
        )
        database.execute_sql(raw_sql(f"UPDATE {table} SET base_id = NULL WHERE id = ?"), (set_id,))


def ensure_package_sets(
    package_lists: Sequence[Sequence[PackageRecord]],
    now: float,
    digests: Sequence[str] | None = None,
) -> list[int]:
    """The stored set id of each list of packages, creating the new sets together.

    ``digests``: the lists' set digests where the caller has them already (the
    receiver keeps a report's; "" for one it lacks): a digest sorts and hashes 1,500
    strings.

    Why together and in this order: the new packages of all lists go in one sorted
    insert, then the new sets in digest order, each step in a short transaction of
    its own (:func:`_create_package_sets`). Two processes doing this at once take
    the locks of these shared rows in the same order (on PostgreSQL also an advisory
    lock per step), so one waits for the other but they never deadlock;
    and a caller that then applies many reports in one long transaction holds no lock
    on rows every other report wants (``patchwatch.pipeline.processing.process_pending``).

    New sets are written as differences from the nearest stored whole set where one
    is near (``patchwatch.domain.set_bases``): hosts' sets, unlike mirrors' indexes
    (:func:`ensure_mirror_set`), are mostly another host's.
    """
    keys = [
        given or set_digest(packages)[0]
        for given, packages in zip(digests or [""] * len(package_lists), package_lists, strict=True)
    ]
    stored = stored_package_sets(sorted(set(keys)))
    new: dict[str, Sequence[PackageRecord]] = {}
    for digest, packages in zip(keys, package_lists, strict=True):
        if digest not in stored:
            new.setdefault(digest, packages)
    if new:
        try:
            _create_package_sets(new, stored, now, _BASES.load())
        except IntegrityError:
            # a base was deleted behind this process's index (dbcheck --fix): the
            # transaction is rolled back; write the sets whole
            forget_cached_ids()
            _create_package_sets(new, stored, now, None)
    return [stored[digest] for digest in keys]


def _create_package_sets(
    new: dict[str, Sequence[PackageRecord]],
    stored: dict[str, int],
    now: float,
    bases: BaseIndex | None,
) -> None:
    """Store the new sets; only the inserts hold the write lock.

    Why the work is split: on SQLite one writer at a time holds the database, and
    turning 100 sets of 1,500 records into sorted ids and choosing their bases is
    CPU work that, done inside the transaction, kept a second processing worker
    waiting on it. The packages are stored first (their own short transaction;
    package rows are never deleted under a set that uses them), the ids and bases
    worked out after, and the transaction then only inserts, choosing again only
    for the sets that had no base near: a set written whole earlier in the batch,
    or committed meanwhile by another process, may be near them.
    """
    ids = ensure_packages(p for packages in new.values() for p in packages)
    planned = []
    seen = bases.generation if bases is not None else 0
    for digest in sorted(new):
        members = sorted({ids[p] for p in new[digest]})
        packed = pack_ids(members)
        near = bases.nearest(members) if bases is not None and packed is not None else None
        planned.append((digest, members, packed, near))
    checked: set[int] = set()  # bases found still stored in this transaction
    with write_transaction():
        if not is_sqlite():
            # one writer of new sets at a time, as SQLite has anyway: two workers
            # starting together otherwise each wrote the fleet's images whole (140
            # whole sets for 1,000 hosts against 104); the second now finds the
            # first's bases below. The transaction only inserts: the wait is short.
            database.execute_sql("SELECT pg_advisory_xact_lock(%s)", (PACKAGE_SET_LOCK,))
        if bases is not None:
            bases = _BASES.load()  # whole sets others committed since
        for digest, members, packed, near in planned:
            # a set no base was near needs a new search only if bases came since
            search = bases is not None and bases.generation != seen
            stored[digest] = _create_package_set(
                digest, members, now, bases, packed, near, search, checked
            )


def _create_package_set(
    digest: str,
    members: list[int],
    now: float,
    bases: BaseIndex | None = None,
    packed: bytes | None = None,
    near: tuple[int, list[int]] | None = None,
    search: bool = True,
    checked: set[int] | None = None,
) -> int:
    """Insert a set and its member rows (inside the caller's transaction); its id.

    With ``bases``, the rows are the difference from the nearest base where one is
    near enough (``near``, when the caller chose it already: it is checked here;
    without ``search``, a ``near`` of None stands); a set written whole becomes a
    base for the next ones. ``checked``: bases this transaction found still stored
    (or wrote), which need no second look.
    """
    if packed is None:
        packed = pack_ids(members)
    if checked is None:
        checked = set()
    if bases is not None and packed is not None and (near is not None or search):
        near = _nearest_base(members, bases, near, checked)
    base_id, rows = near if near is not None else (None, members)
    table = PackageSet._meta.table_name
    # RETURNING: a set this statement created needs no second look (nothing comes
    # back when a concurrent writer stored the digest first: then it is read)
    found = database.execute_sql(
        raw_sql(
            f"INSERT INTO {table} (digest, size, created_at, member_ids, base_id) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING RETURNING id, base_id"
        ),
        (digest, len(members), now, packed, base_id),
    ).fetchone()
    created = found is not None
    if found is None:
        found = database.execute_sql(
            raw_sql(f"SELECT id, base_id FROM {table} WHERE digest = ?"), (digest,)
        ).fetchone()
    assert found is not None  # inserted above, or by a concurrent writer
    set_id, stored_base = found
    members_table = PackageSetMember._meta.table_name
    filled = (
        not created
        and database.execute_sql(
            raw_sql(f"SELECT 1 FROM {members_table} WHERE package_set_id = ? LIMIT 1"), (set_id,)
        ).fetchone()
    )
    if not filled:
        # no ON CONFLICT: a set with no members yet is new, and one that another
        # process fills meanwhile fails this insert, which apply_report retries
        execute_many(
            f"INSERT INTO {members_table} (package_set_id, package_id) VALUES (?, ?)",
            [(set_id, pid) for pid in rows],
        )
    if bases is not None and packed is not None and stored_base is None:
        bases.add(set_id, members, packed)  # a concurrent writer's row may be a difference
        checked.add(set_id)
    remember_id("package", digest, set_id)
    return int(set_id)


def _nearest_base(
    members: list[int],
    bases: BaseIndex,
    chosen: tuple[int, list[int]] | None = None,
    checked: set[int] | None = None,
) -> tuple[int, list[int]] | None:
    """The nearest base that is still stored as this process saw it.

    ``chosen``: the caller's choice, checked first (a choice of None is made again:
    the index may have grown since).

    A base deleted meanwhile (``dbcheck --fix``) may even have had its id given to
    another set (SQLite reuses the highest ids): a difference from it would then
    describe other packages. One read by primary key rules that out.
    """
    for _attempt in range(3):
        near = chosen if chosen is not None else bases.nearest(members)
        chosen = None
        if near is None:
            return None
        if checked is not None and near[0] in checked:
            return near
        row = database.execute_sql(
            raw_sql(
                f"SELECT member_ids FROM {PackageSet._meta.table_name} "
                "WHERE id = ? AND base_id IS NULL"
            ),
            (near[0],),
        ).fetchone()
        if row is not None and row[0] is not None and bytes(row[0]) == bases.packed[near[0]]:
            if checked is not None:
                checked.add(near[0])  # held by this transaction's reads from here on
            return near
        bases.remove(near[0])
    return None


class _Bases:
    """This process's :class:`BaseIndex`, per database, topped up from the store.

    Each call to :meth:`load` reads the whole sets stored since the last one (by id),
    so that processes (receivers, workers) find the bases the others wrote.
    """

    def __init__(self) -> None:
        self.owner: object = None
        self.thresholds = DEFAULT_THRESHOLDS
        self.index = BaseIndex(self.thresholds)
        self.last_id = 0
        self.forgotten = 0

    def reset(self) -> None:
        self.owner, self.index, self.last_id = None, BaseIndex(self.thresholds), 0

    def load(self) -> BaseIndex:
        if self.owner is not database.obj or self.forgotten != forgotten():
            self.reset()
            self.owner, self.forgotten = database.obj, forgotten()
        if len(self.index) >= MAX_BASES:
            return self.index
        table = PackageSet._meta.table_name
        (newest,) = database.execute_sql(f"SELECT MAX(id) FROM {table}").fetchone()
        if newest is None or newest <= self.last_id:
            return self.index
        # the ids seen are remembered, not only the bases': the differences in between
        # (most sets) are not read again at every call
        rows = database.execute_sql(
            raw_sql(
                f"SELECT id, member_ids FROM {table} WHERE id > ? AND id <= ? "
                "AND base_id IS NULL AND size BETWEEN ? AND ? AND member_ids IS NOT NULL "
                "ORDER BY id"
            ),
            (self.last_id, newest, self.thresholds.min_size, MAX_BASE_SIZE),
        ).fetchall()
        for set_id, packed in rows:
            packed = bytes(packed)
            self.index.add(set_id, unpack_ids(packed), packed)
        self.last_id = newest
        return self.index


_BASES = _Bases()


def use_thresholds(thresholds: Thresholds) -> Thresholds:
    """Choose bases with ``thresholds`` in this process from now on; return the previous.

    The index built so far is dropped: its samples were taken with the old ones.
    Production keeps the defaults; the tests lower them so that their small sets are
    written as differences too.
    """
    previous = _BASES.thresholds
    _BASES.thresholds = thresholds
    _BASES.reset()
    return previous


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
    sql = f"SELECT m.package_set_id, m.package_id FROM {MEMBER_ROWS} m"
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
    A 10,000-host SQLite store of whole sets (10.6 million rows): 7.3 s.
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
            f"SELECT package_set_id, package_id FROM {MEMBER_ROWS} "
            f"WHERE package_set_id IN ({placeholders(len(part))})"
        )
        for set_id, package_id in database.execute_sql(query, list(part)).fetchall():
            out[set_id].add(package_id)
    return out


def bases_of(set_ids: Sequence[int]) -> dict[int, int]:
    """Set id -> its base, for those of these sets written as differences."""
    return _bases(list(dict.fromkeys(set_ids)))


def set_differences(set_ids: Sequence[int]) -> dict[int, tuple[int | None, set[int]]]:
    """Set id -> (its base, its own member rows), for many sets in a few queries.

    A set written whole is (None, its packages); a difference is (its base, the
    packages in exactly one of the two): its content is the base's XOR these. Why:
    a computation over thousands of a fleet's sets (the vulnerability one) does per
    set what its difference costs, a few packages, instead of its 1,500, starting from
    its base's answer; the base's packages are its own rows (a base is whole).
    """
    wanted = list(dict.fromkeys(set_ids))
    bases = _bases(wanted)
    rows = _rows_of(wanted)
    return {set_id: (bases.get(set_id), rows[set_id]) for set_id in wanted}


def package_ids_of(set_id: int) -> set[int]:
    """A package set's members as plain ids: no rows joined, no records rebuilt.

    The packed copy on the set's row where there is one; else the content (member
    rows, resolved through the view), aggregated into one value by the database (a
    JSON array on SQLite, an array on PostgreSQL).
    """
    sql = f"SELECT member_ids FROM {_SET} WHERE id = ?"
    row = database.execute_sql(raw_sql(sql), (set_id,)).fetchone()
    if row is not None and row[0] is not None:
        return set(unpack_ids(row[0]))
    if is_sqlite():
        sql = f"SELECT json_group_array(package_id) FROM {CONTENT} WHERE package_set_id = ?"
        (value,) = database.execute_sql(sql, (set_id,)).fetchone()
        return set(json.loads(value))
    sql = f"SELECT array_agg(package_id) FROM {CONTENT} WHERE package_set_id = %s"
    (value,) = database.execute_sql(sql, (set_id,)).fetchone()
    return set(value or ())


def packages_in(set_id: int, *fields: Field) -> ModelSelect:
    """A query of the packages (these fields, or whole rows) of one set, whole or a
    difference; the caller orders, filters and shapes it."""
    return (
        Package.select(*fields)
        .join(PackageSetContent, on=(PackageSetContent.package_id == Package.id))
        .where(PackageSetContent.package_set_id == set_id)
    )


def sets_holding(package_id: int) -> list[int]:
    """The ids of the sets whose content holds this package (whole or by difference)."""
    query = PackageSetContent.select(PackageSetContent.package_set_id).where(
        PackageSetContent.package_id == package_id
    )
    return [set_id for (set_id,) in query.tuples()]


def member_rows_of_sets(*set_queries: ModelSelect) -> ModelSelect:
    """The package ids of the member rows of the sets these queries select: with the
    bases among them, every package any of those sets holds (a difference's rows are
    in it or in its base)."""
    condition = None
    for query in set_queries:
        part = PackageSetMember.package_set.in_(query)
        condition = part if condition is None else condition | part
    return PackageSetMember.select(PackageSetMember.package).where(condition)


#: the member-row columns that refer to a set and to a package: deleting either
#: deletes its rows explicitly (no cascade on PostgreSQL, migration 3)
MEMBER_SET_COLUMN = PackageSetMember.package_set
MEMBER_PACKAGE_COLUMN = PackageSetMember.package


def _ids_in_chunks(db: Database, template: str, ids: Sequence[int]) -> list[int]:
    """Run ``template`` ({marks}: an IN list) per chunk of ``ids``; the first column."""
    found: set[int] = set()
    for chunk in chunks(sorted(set(ids))):
        marks = ", ".join([db.param] * len(chunk))
        found.update(int(r[0]) for r in db.execute_sql(template.format(marks=marks), chunk))
    return sorted(found)


def sets_to_remove_with(db: Database, packages: Sequence[int]) -> list[int]:
    """The sets whose content holds one of ``packages`` (about to be deleted), sorted.

    On ``db`` directly, in the caller's transaction (a migration's, before the store
    is open). A difference from such a set whose own content holds none of them is
    made whole first, so that it outlives its base; the caller then detaches what
    refers to the returned sets and deletes them with :func:`delete_sets`.
    """
    referring = _ids_in_chunks(
        db, f"SELECT package_set_id FROM {MEMBER_ROWS} WHERE package_id IN ({{marks}})", packages
    )
    based = f"SELECT id FROM {_SET} WHERE base_id IN ({{marks}})"
    dependants = _ids_in_chunks(db, based, referring)
    wanted = set(packages)
    for set_id in dependants:
        query = f"SELECT package_id FROM {CONTENT} WHERE package_set_id = {db.param}"
        content = sorted({int(r[0]) for r in db.execute_sql(query, (set_id,)).fetchall()})
        if wanted.intersection(content):
            continue  # removed with the others: its content holds the package
        db.execute_sql(f"DELETE FROM {MEMBER_ROWS} WHERE package_set_id = {db.param}", (set_id,))
        if content:
            db.cursor().executemany(
                f"INSERT INTO {MEMBER_ROWS} (package_set_id, package_id) "
                f"VALUES ({db.param}, {db.param})",
                [(set_id, pid) for pid in content],
            )
        db.execute_sql(f"UPDATE {_SET} SET base_id = NULL WHERE id = {db.param}", (set_id,))
    return _ids_in_chunks(
        db, f"SELECT package_set_id FROM {MEMBER_ROWS} WHERE package_id IN ({{marks}})", packages
    )


def delete_sets(db: Database, set_ids: Sequence[int]) -> int:
    """Delete these sets, their member rows and the listings that name them (nothing
    else may refer to them any more), in the caller's transaction; the number of
    sets deleted.

    Why the listings: a listing names its set by digest, so it stays harmless once
    the set is gone (it finds nothing), but it would stay for good; deleted with its
    set, nothing accumulates. A store older than listings (migration 9 runs this
    before migration 23 creates them) has none to delete.
    """
    listings = db.table_exists(_LISTING)
    deleted = 0
    for chunk in chunks(sorted(set(set_ids))):
        marks = ", ".join([db.param] * len(chunk))
        if listings:
            db.execute_sql(
                f"DELETE FROM {_LISTING} WHERE set_digest IN "
                f"(SELECT digest FROM {_SET} WHERE id IN ({marks}))",
                chunk,
            )
        db.execute_sql(f"DELETE FROM {MEMBER_ROWS} WHERE package_set_id IN ({marks})", chunk)
        deleted += db.execute_sql(f"DELETE FROM {_SET} WHERE id IN ({marks})", chunk).rowcount
    return deleted


def orphan_listings() -> ModelSelect:
    """The ids of the listings whose set digest names no stored set.

    Left by a set deleted before its listings went with it (:func:`delete_sets`), or
    by any other way a set goes. Such a listing finds nothing
    (:func:`sets_of_listings`), so it is only dead weight: ``dbcheck`` counts them
    and ``--fix`` deletes them (:func:`delete_listings`).
    """
    named = PackageSet.select(PackageSet.id).where(PackageSet.digest == PackageListing.set_digest)
    return PackageListing.select(PackageListing.id).where(~fn.EXISTS(named))


def delete_listings(ids: Sequence[int]) -> int:
    """Delete these listings (by row id) in the caller's transaction; how many went.

    A listing deleted costs at most one parse of a list seen again, which then
    stores it anew.
    """
    deleted = 0
    for chunk in chunks(sorted(set(ids))):
        deleted += PackageListing.delete().where(PackageListing.id.in_(list(chunk))).execute()
    return deleted


def check(chunk: int = 100) -> list[int]:
    """The sets whose two copies disagree (:func:`sets_unlike_their_rows`)."""
    return sets_unlike_their_rows(chunk)
