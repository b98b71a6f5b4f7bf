"""Store packages, package sets, repositories and repository sets once, shared by all.

A set is identified by the SHA-256 of its sorted member keys, computed *before* touching
the database: a report whose packages have not changed costs one indexed lookup. All
inserts are ``ON CONFLICT DO NOTHING`` followed by a read, so concurrent reports that
bring the same new package or set never fail and never duplicate.
"""

from __future__ import annotations

from collections.abc import Iterable
from collections.abc import Sequence

from peewee import IntegrityError

from patchwatch.domain import repokeys
from patchwatch.domain.packed_ids import pack_ids
from patchwatch.domain.packed_ids import unpack_ids
from patchwatch.domain.records import Package as PackageRecord
from patchwatch.domain.records import PackageKind
from patchwatch.domain.records import RepoKind
from patchwatch.domain.records import ReportedRepository
from patchwatch.domain.repokeys import normalise_url
from patchwatch.domain.set_bases import MAX_BASE_SIZE
from patchwatch.domain.set_bases import MAX_BASES
from patchwatch.domain.set_bases import MIN_SIZE
from patchwatch.domain.set_bases import BaseIndex
from patchwatch.domain.set_digest import digest_of
from patchwatch.domain.set_digest import set_digest as _set_digest
from patchwatch.store.db import ARRAY_PARAMETER_SIZE
from patchwatch.store.db import can_stage_rows
from patchwatch.store.db import chunks
from patchwatch.store.db import database
from patchwatch.store.db import execute_many
from patchwatch.store.db import insert_staged
from patchwatch.store.db import is_sqlite
from patchwatch.store.db import placeholders
from patchwatch.store.db import raw_sql
from patchwatch.store.db import write_transaction
from patchwatch.store.models import Mirror
from patchwatch.store.models import Package
from patchwatch.store.models import PackageSet
from patchwatch.store.models import PackageSetMember
from patchwatch.store.models import Repository
from patchwatch.store.models import RepositorySet
from patchwatch.store.models import RepositorySetMember

PackageKey = tuple[str, str, str, str, str, str]


def package_key(p: PackageRecord) -> PackageKey:
    return (str(p.kind), p.name, p.epoch, p.version, p.release, p.arch)


class _IdCache:
    """Ids already seen by this process, per database.

    Package rows are immutable and never deleted while a set refers to them, so an id
    once read stays right; the cache saves the lookups that dominate processing when
    hosts report the same packages again. Bounded: it is simply emptied when full.
    """

    LIMIT = 1_000_000

    def __init__(self) -> None:
        self.owner: object = None
        self.ids: dict[object, int] = {}

    def bind(self) -> dict[object, int]:
        if self.owner is not database.obj or len(self.ids) > self.LIMIT:
            self.owner = database.obj
            self.ids = {}
        return self.ids


_ID_CACHE = _IdCache()  # package records -> package ids
_SET_CACHE = _IdCache()  # (kind, digest or name) -> id of a row that never changes


def limit_id_caches(entries: int) -> None:
    """Bound this process's id caches to ``entries`` each (emptied beyond).

    For processes that live long and see what hosts send: a receiver worker's cache
    keeps every package record it was given alive (a million hostile builds were
    hundreds of megabytes that outlived the package memo's own bound).
    """
    _ID_CACHE.LIMIT = _SET_CACHE.LIMIT = entries


def forget_cached_ids() -> None:
    """Drop this process's id caches (after rows were deleted, e.g. by dbcheck --fix)."""
    _ID_CACHE.ids = {}
    _SET_CACHE.ids = {}
    _BASES.reset()


def cached_id(kind: str, key: str) -> int | None:
    """The id of an immutable shared row (a set, an OS release) this process has seen."""
    return _SET_CACHE.bind().get((kind, key))


def remember_id(kind: str, key: str, row_id: int) -> None:
    _SET_CACHE.bind()[(kind, key)] = row_id


def _load_package_ids(records: Iterable[PackageRecord], cache: dict[object, int]) -> None:
    """Read the ids of every stored build of these records' names into ``cache``.

    The records themselves become the cache keys, so that later lookups with the same
    (parsed, memoised) objects match by identity instead of comparing fields. Plain
    SQL: peewee builds an ``IN`` list value by value, which cost more than the query
    itself for the 1,500 names of a new package set. On PostgreSQL the names go as
    one array parameter (``= ANY``) of up to :data:`ARRAY_PARAMETER_SIZE`: a statement per
    400 names was planned and run 160 times for bookworm's 64,000 names (1.6 s on
    the loopback cluster against 0.3 s).
    """
    by_key = {package_key(p): p for p in records}
    names = sorted({key[1] for key in by_key})
    columns = (
        f"SELECT id, kind, name, epoch, version, release, arch FROM {Package._meta.table_name}"
    )
    if is_sqlite():
        queries = [
            (f"{columns} WHERE name IN ({placeholders(len(chunk))})", list(chunk))
            for chunk in chunks(names)
        ]
    else:
        queries = [
            (f"{columns} WHERE name = ANY(%s)", [list(chunk)])
            for chunk in chunks(names, ARRAY_PARAMETER_SIZE)
        ]
    for sql, params in queries:
        for pid, *key in database.execute_sql(sql, params).fetchall():
            record = by_key.get(tuple(key))  # type: ignore[call-overload]
            if record is None:
                kind, name, epoch, version, release, arch = key
                record = PackageRecord(name, epoch, version, release, arch, PackageKind(kind))
            cache[record] = pid


def ensure_packages(packages: Iterable[PackageRecord]) -> dict[PackageRecord, int]:
    """Return the row id of every package, inserting the ones not stored yet."""
    cache = _ID_CACHE.bind()
    wanted = set(packages)
    ids: dict[PackageRecord, int] = {}
    unknown: list[PackageRecord] = []
    for p in wanted:
        pid = cache.get(p)
        if pid is None:
            unknown.append(p)
        else:
            ids[p] = pid
    if not unknown:
        return ids
    _load_package_ids(unknown, cache)
    missing = [p for p in unknown if p not in cache]
    if missing:
        _insert_packages(missing, cache)
    for p in unknown:
        ids[p] = cache[p]
    return ids


PACKAGE_COLUMNS = ("kind", "name", "epoch", "version", "release", "arch")  # as package_key
STAGE_MIN_ROWS = 1_000  # new packages from which PostgreSQL gets them by COPY


PACKAGE_INSERT_LOCK = 0x7061_7463_6870_6B67  # PostgreSQL advisory lock keys: "patchpkg"
PACKAGE_SET_LOCK = 0x7061_7463_6873_6574  # "patchset"


def _insert_packages(records: list[PackageRecord], cache: dict[object, int]) -> None:
    """Insert packages not stored yet and put their ids into ``cache``.

    ``ON CONFLICT DO NOTHING``: another process may insert the same build meanwhile;
    those rows are looked up afterwards. On PostgreSQL the rows go as six array
    parameters of up to :data:`ARRAY_PARAMETER_SIZE` (``unnest``), quoted by the driver in
    C, and ``RETURNING`` gives the new ids without a second lookup (refresh of four
    Debian mirrors, 68,000 new packages, into a fresh store: 3.9-4.7 s with a
    multi-row ``VALUES`` quoted row by row in Python and the lookup, 3.1-3.8 s so);
    from :data:`STAGE_MIN_ROWS` rows they go by ``COPY`` instead (``insert_staged``:
    the server's parsing of large arrays was most of a 40,000-row insert's cost).
    """
    table = Package._meta.table_name
    names = ", ".join(PACKAGE_COLUMNS)
    by_key = {package_key(p): p for p in records}
    rows = sorted(by_key)
    if is_sqlite():
        execute_many(
            f"INSERT INTO {table} ({names}) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            rows,
        )
    else:
        sql = (
            f"INSERT INTO {table} ({names}) "
            "SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], "
            f"%s::text[], %s::text[]) ON CONFLICT DO NOTHING RETURNING id, {names}"
        )
        with write_transaction():
            # One inserter at a time. Two processes bringing the same new packages (the
            # first batches of two processing workers) otherwise both inserted them all:
            # the second waited on every row the first had inserted, then found each a
            # conflict (1.5-2.1 s for 38,000 rows, against 0.9-1.1 s for the first).
            # Now it waits once, reads what the first stored, and inserts the rest.
            lock = (PACKAGE_INSERT_LOCK,)
            if not database.execute_sql("SELECT pg_try_advisory_xact_lock(%s)", lock).fetchone()[0]:
                database.execute_sql("SELECT pg_advisory_xact_lock(%s)", lock)
                _load_package_ids(records, cache)
                rows = sorted(key for key, record in by_key.items() if record not in cache)
            if len(rows) >= STAGE_MIN_ROWS and can_stage_rows():
                found = insert_staged(
                    table, PACKAGE_COLUMNS, rows, f"ON CONFLICT DO NOTHING RETURNING id, {names}"
                )
            else:
                found = []
                for chunk in chunks(rows, ARRAY_PARAMETER_SIZE):
                    columns = [list(column) for column in zip(*chunk, strict=True)]
                    found.extend(database.execute_sql(sql, columns).fetchall())
            for pid, *key in found:
                record = by_key.get(tuple(key))  # type: ignore[call-overload]
                if record is not None:
                    cache[record] = pid
    left = [p for p in records if p not in cache]
    if left:
        _load_package_ids(left, cache)


def stored_package_sets(digests: Sequence[str]) -> dict[str, int]:
    """Ids of the stored package sets with these digests (those that exist).

    This process's cache first, then one ``IN`` query per chunk for the rest.
    """
    out: dict[str, int] = {}
    unknown = []
    for digest in digests:
        set_id = cached_id("package", digest)
        if set_id is None:
            unknown.append(digest)
        else:
            out[digest] = set_id
    table = PackageSet._meta.table_name
    for chunk in chunks(unknown):
        found = database.execute_sql(
            raw_sql(f"SELECT digest, id FROM {table} WHERE digest IN ({placeholders(len(chunk))})"),
            list(chunk),
        ).fetchall()
        for digest, set_id in found:
            remember_id("package", digest, set_id)
            out[digest] = set_id
    return out


def ensure_package_set(
    packages: Sequence[PackageRecord], now: float, whole: bool = False
) -> PackageSet:
    """Return the stored set with exactly these packages, creating it (whole) if new.

    ``whole``: the set must be stored whole, not as a difference, because its reader
    reads the member rows directly (a mirror's index, ``patchwatch.pipeline.hostupdates``); a
    host's set that happens to hold exactly these packages is rewritten whole, which
    leaves what it contains as it was.

    The returned row carries only ``id``, ``digest`` and ``size``: it names a set
    (plain SQL, no row read), which is all that callers need.
    """
    digest, size = _set_digest(packages)
    known = stored_package_sets([digest]).get(digest)
    if known is not None:
        if whole:
            _make_whole(known)
        return PackageSet(id=known, digest=digest, size=size)
    ids = ensure_packages(packages)
    with write_transaction():
        set_id = _create_package_set(digest, sorted(set(ids.values())), now)
    return PackageSet(id=set_id, digest=digest, size=len(ids))


def _make_whole(set_id: int) -> None:
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
    (:func:`ensure_package_set`), are mostly another host's.
    """
    keys = [
        given or _set_digest(packages)[0]
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
        self.index = BaseIndex()
        self.last_id = 0

    def reset(self) -> None:
        self.owner, self.index, self.last_id = None, BaseIndex(), 0

    def load(self) -> BaseIndex:
        if self.owner is not database.obj:
            self.reset()
            self.owner = database.obj
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
            (self.last_id, newest, MIN_SIZE, MAX_BASE_SIZE),
        ).fetchall()
        for set_id, packed in rows:
            packed = bytes(packed)
            self.index.add(set_id, unpack_ids(packed), packed)
        self.last_id = newest
        return self.index


_BASES = _Bases()


def repository_key(repo: ReportedRepository) -> str:
    """Identify a repository across hosts, whoever reports it (``patchwatch.domain.repokeys``)."""
    first = next(iter(repo.urls), "") or repo.mirrorlist or repo.metalink
    return repokeys.repository_key(
        repo.kind.value, repo.id, repo.suite, repo.component, repo.arch, first
    )


def ensure_repositories(repos: Sequence[ReportedRepository], now: float) -> dict[str, int]:
    """Return repository ids by key, creating repositories and their mirrors as needed."""
    out: dict[str, int] = {}
    arches: dict[str, str] = {}  # of apt repositories, as stored
    for repo in repos:
        key = repository_key(repo)
        if key in out:
            if repo.kind == RepoKind.DEB:
                _widen_arches(out[key], arches, key, repo.arch)
            continue
        Repository.insert(
            kind=repo.kind.value, key=key, name=repo.name[:512], repo_id=repo.id[:512],
            suite=repo.suite[:255], component=repo.component[:255], arch=repo.arch[:32],
            auth_required=False, created_at=now,
        ).on_conflict_ignore().execute()  # fmt: skip
        row = Repository.get(Repository.key == key)
        out[key] = row.id
        if repo.kind == RepoKind.DEB:
            arches[key] = row.arch
            _widen_arches(row.id, arches, key, repo.arch)
        mirrors = [(u, "baseurl") for u in repo.urls]
        if repo.mirrorlist:
            mirrors.append((repo.mirrorlist, "mirrorlist"))
        if repo.metalink:
            mirrors.append((repo.metalink, "metalink"))
        for url, kind in mirrors:
            Mirror.insert(
                repository=row.id, url=normalise_url(url)[:2048], kind=kind
            ).on_conflict_ignore().execute()
    return out


def _widen_arches(repo_id: int, arches: dict[str, str], key: str, reported: str) -> None:
    """Read apt repository ``key`` for the architectures of one more report of it too:
    one source reported by the agent and by Patchman clients (one index URL per
    architecture) is one repository (see ``patchwatch.domain.repokeys``)."""
    merged = repokeys.merge_arches(arches[key], reported)
    if merged != arches[key]:
        Repository.update(arch=merged).where(Repository.id == repo_id).execute()
        arches[key] = merged


def ensure_repository_set(repos: Sequence[ReportedRepository], now: float) -> RepositorySet:
    """Return the stored repository set (with priorities) for these repositories."""
    members: dict[str, tuple[int, bool]] = {}
    for repo in repos:
        key = repository_key(repo)
        prio, enabled = members.get(key, (repo.priority, repo.enabled))
        members[key] = (max(prio, repo.priority), enabled or repo.enabled)
    digest = digest_of(f"{k}\x1f{p}\x1f{int(e)}" for k, (p, e) in members.items())
    known = cached_id("repository", digest)
    if known is not None:
        return RepositorySet(id=known, digest=digest, size=len(members))
    existing = RepositorySet.get_or_none(RepositorySet.digest == digest)
    if existing is not None:
        remember_id("repository", digest, existing.id)
        return existing
    ids = ensure_repositories(repos, now)
    with write_transaction():
        RepositorySet.insert(
            digest=digest, size=len(members), created_at=now
        ).on_conflict_ignore().execute()
        rset = RepositorySet.get(RepositorySet.digest == digest)
        if (
            not RepositorySetMember.select()
            .where(RepositorySetMember.repository_set == rset)
            .exists()
        ):
            RepositorySetMember.insert_many(
                [(rset.id, ids[k], p, e) for k, (p, e) in sorted(members.items())],
                fields=[RepositorySetMember.repository_set, RepositorySetMember.repository,
                        RepositorySetMember.priority, RepositorySetMember.enabled],
            ).on_conflict_ignore().execute()  # fmt: skip
    remember_id("repository", digest, rset.id)
    return rset
