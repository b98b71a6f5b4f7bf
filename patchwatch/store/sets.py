"""Store packages, repositories and repository sets once, shared by all.

Package sets are stored by ``patchwatch.store.package_sets`` (on the packages stored
here). A set is identified by the SHA-256 of its sorted member keys, computed *before* touching
the database: a report whose packages have not changed costs one indexed lookup. All
inserts are ``ON CONFLICT DO NOTHING`` followed by a read, so concurrent reports that
bring the same new package or set never fail and never duplicate.
"""

from __future__ import annotations

from collections.abc import Iterable
from collections.abc import Sequence
from operator import attrgetter

from patchwatch.domain import repokeys
from patchwatch.domain.records import Package as PackageRecord
from patchwatch.domain.records import PackageKind
from patchwatch.domain.records import RepoKind
from patchwatch.domain.records import ReportedRepository
from patchwatch.domain.repokeys import normalise_url
from patchwatch.domain.set_digest import digest_of
from patchwatch.store.db import ARRAY_PARAMETER_SIZE
from patchwatch.store.db import can_stage_rows
from patchwatch.store.db import chunks
from patchwatch.store.db import database
from patchwatch.store.db import insert_staged
from patchwatch.store.db import is_sqlite
from patchwatch.store.db import placeholders
from patchwatch.store.db import write_transaction
from patchwatch.store.models import Mirror
from patchwatch.store.models import Package
from patchwatch.store.models import Repository
from patchwatch.store.models import RepositorySet
from patchwatch.store.models import RepositorySetMember

PackageKey = tuple[str, str, str, str, str, str]


def package_key(p: PackageRecord) -> PackageKey:
    return (str(p.kind), p.name, p.epoch, p.version, p.release, p.arch)


# The same key read in C (``map``) rather than a Python call per record: ``kind`` stays
# the enum member, a ``str`` that hashes and compares as its value, so these keys
# match the plain tuples rows come back as. Only for lookups: drivers get package_key.
_LOOKUP_KEY = attrgetter("kind", "name", "epoch", "version", "release", "arch")
_NAME = attrgetter("name")


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
_FORGOTTEN = 0


def limit_id_caches(entries: int) -> None:
    """Bound this process's id caches to ``entries`` each (emptied beyond).

    For processes that live long and see what hosts send: a receiver worker's cache
    keeps every package record it was given alive (a million hostile builds were
    hundreds of megabytes that outlived the package memo's own bound).
    """
    _ID_CACHE.LIMIT = _SET_CACHE.LIMIT = entries


def forget_cached_ids() -> None:
    """Drop this process's id caches (after rows were deleted, e.g. by dbcheck --fix)."""
    global _FORGOTTEN
    _ID_CACHE.ids = {}
    _SET_CACHE.ids = {}
    _FORGOTTEN += 1  # read by patchwatch.store.package_sets, whose bases go too


def forgotten() -> int:
    """How many times :func:`forget_cached_ids` ran in this process (caches built on
    these ids, such as the package sets' bases, start again when it changed)."""
    return _FORGOTTEN


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
    400 names was planned and run 160 times for bookworm's 64,000 names, five times
    slower (docs/performance.md).
    """
    records = list(records)
    by_key = dict(zip(map(_LOOKUP_KEY, records), records, strict=True))
    names = sorted(set(map(_NAME, records)))
    columns = (
        f"SELECT id, kind, name, epoch, version, release, arch FROM {Package._meta.table_name}"
    )
    queries: list[tuple[str, list[object]]]
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
            record = by_key.get(tuple(key))
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
SQLITE_INSERT_ROWS = 2_000  # rows per SQLite insert: 12,000 parameters, under its 32,766


PACKAGE_INSERT_LOCK = 0x7061_7463_6870_6B67  # PostgreSQL advisory lock keys: "patchpkg"


def _insert_packages(records: list[PackageRecord], cache: dict[object, int]) -> None:
    """Insert packages not stored yet and put their ids into ``cache``.

    ``ON CONFLICT DO NOTHING``: another process may insert the same build meanwhile;
    those rows are looked up afterwards. On PostgreSQL the rows go as six array
    parameters of up to :data:`ARRAY_PARAMETER_SIZE` (``unnest``), quoted by the driver in
    C, and ``RETURNING`` gives the new ids without a second lookup (faster than a
    multi-row ``VALUES`` quoted row by row in Python and the lookup; docs/performance.md);
    from :data:`STAGE_MIN_ROWS` rows they go by ``COPY`` instead (``insert_staged``:
    the server's parsing of large arrays was most of a 40,000-row insert's cost).
    """
    table = Package._meta.table_name
    names = ", ".join(PACKAGE_COLUMNS)
    by_key = {package_key(p): p for p in records}
    rows = sorted(by_key)
    if is_sqlite():
        # multi-row VALUES with RETURNING: the new ids come back with the insert, where
        # executemany returned nothing and every new package was looked up again
        # (a quarter of the CPU of storing 40,000 new packages; docs/performance.md)
        with write_transaction():
            for chunk in chunks(rows, SQLITE_INSERT_ROWS):
                values = ", ".join(["(?, ?, ?, ?, ?, ?)"] * len(chunk))
                sql = (
                    f"INSERT INTO {table} ({names}) VALUES {values} "
                    f"ON CONFLICT DO NOTHING RETURNING id, {names}"
                )
                params = [value for row in chunk for value in row]
                for pid, *key in database.execute_sql(sql, params).fetchall():
                    record = by_key.get(tuple(key))
                    if record is not None:
                        cache[record] = pid
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
            # conflict (slower than inserting them; docs/performance.md).
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
                record = by_key.get(tuple(key))
                if record is not None:
                    cache[record] = pid
    left = [p for p in records if p not in cache]
    if left:
        _load_package_ids(left, cache)


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
    members: dict[str, tuple[int, bool, str | None]] = {}
    for repo in repos:
        key = repository_key(repo)
        only = " ".join(repo.pinned) if repo.tag else None  # apk: only the pinned names
        prio, enabled, seen = members.get(key, (repo.priority, repo.enabled, only))
        if seen is not None and only is not None and seen != only:
            only = " ".join(sorted(set(seen.split()) | set(repo.pinned)))
        members[key] = (max(prio, repo.priority), enabled or repo.enabled, only)
    # a member with pinned names adds them; every other line is as it always was, so
    # the sets stored before apk tags keep their digests
    digest = digest_of(
        f"{k}\x1f{p}\x1f{int(e)}" + ("" if o is None else f"\x1f{o}")
        for k, (p, e, o) in members.items()
    )
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
                [(rset.id, ids[k], p, e, o) for k, (p, e, o) in sorted(members.items())],
                fields=[RepositorySetMember.repository_set, RepositorySetMember.repository,
                        RepositorySetMember.priority, RepositorySetMember.enabled,
                        RepositorySetMember.pinned],
            ).on_conflict_ignore().execute()  # fmt: skip
    remember_id("repository", digest, rset.id)
    return rset
