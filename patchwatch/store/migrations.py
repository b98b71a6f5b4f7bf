"""Schema versions and the steps between them.

Every process runs :func:`migrate` at start-up; it applies the missing steps in one
transaction under a lock, so two processes starting together do not race, and a failed
step leaves the previous version intact. A schema newer than this code knows refuses to
start rather than guess.

Rule for changing ``patchwatch.store.models``: add a step here that brings an existing
database to the new shape (``playhouse.migrate`` operations), never edit an old step.
Step 1 creates the tables from the current models, so on a fresh database every later
step runs against a schema that already has its shape: steps must be idempotent.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from peewee import Database
from peewee import PostgresqlDatabase
from peewee import SqliteDatabase

from patchwatch.domain import repokeys
from patchwatch.domain.errors import PatchwatchError
from patchwatch.domain.packed_ids import pack_ids
from patchwatch.store import host_counts
from patchwatch.store.models import MODELS
from patchwatch.store.models import AuditEntry
from patchwatch.store.models import HealthProbe
from patchwatch.store.models import PackageListing
from patchwatch.store.models import SchemaVersion
from patchwatch.store.models import ServerSecret
from patchwatch.store.oversized import remove_oversized
from patchwatch.store.security_feeds import SecurityFeed
from patchwatch.store.vuln_models import VULN_MODELS

log = logging.getLogger(__name__)

ADVISORY_LOCK_ID = 0x70617463  # "patc": serialises migrations on PostgreSQL


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    apply: Callable[[Database], None]


def _initial(db: Database) -> None:
    db.create_tables(MODELS, safe=True)


def _lean_indexes(db: Database) -> None:
    """Drop indexes that another index already covers, and cluster set members.

    Every pending update and every member of a new package set paid for them on each
    insert (a package set of 1,500 packages touched 1,500 pages of each index):
    ``host_update(host_id)`` and ``package_set_member(package_set_id)`` are prefixes
    of unique indexes, and an index on a boolean (``host_update(security)``) is never
    worth reading. One index takes their place: ``host_update(host_id, security,
    first_seen_at)``, which answers a scrape's per-host counts without reading the
    table (without it SQLite read a million pending updates in random order). On
    SQLite, package set members move to a ``WITHOUT ROWID`` table keyed on (set,
    package), so that a set is one contiguous range of one B-tree instead of a row
    table plus its key index.
    """
    for index in (
        "host_update_host_id",
        "host_update_security",
        "package_set_member_package_set_id",
    ):
        db.execute_sql(f'DROP INDEX IF EXISTS "{index}"')
    db.execute_sql(
        'CREATE INDEX IF NOT EXISTS "host_update_host_id_security_first_seen_at" '
        'ON "host_update" ("host_id", "security", "first_seen_at")'
    )
    if not isinstance(db, SqliteDatabase):
        return
    (table_sql,) = db.execute_sql(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'package_set_member'"
    ).fetchone()
    if "WITHOUT ROWID" in table_sql.upper():
        return
    for statement in (
        # a view on the table would stop the rename; migration 7 (pending whenever
        # this one is) creates it again
        "DROP VIEW IF EXISTS package_set_content",
        'CREATE TABLE "package_set_member_new" ('
        '"package_set_id" INTEGER NOT NULL, "package_id" INTEGER NOT NULL, '
        'PRIMARY KEY ("package_set_id", "package_id"), '
        'FOREIGN KEY ("package_set_id") REFERENCES "package_set" ("id") ON DELETE CASCADE, '
        'FOREIGN KEY ("package_id") REFERENCES "package" ("id") ON DELETE CASCADE'
        ") WITHOUT ROWID",
        'INSERT INTO "package_set_member_new" (package_set_id, package_id) '
        'SELECT package_set_id, package_id FROM "package_set_member" '
        "ORDER BY package_set_id, package_id",
        'DROP TABLE "package_set_member"',
        'ALTER TABLE "package_set_member_new" RENAME TO "package_set_member"',
        'CREATE INDEX "package_set_member_package_id" ON "package_set_member" ("package_id")',
    ):
        db.execute_sql(statement)


BULK_TABLES = ("package_set_member", "update_set_item", "host_update")


def _bulk_tables_without_foreign_keys(db: Database) -> None:
    """On PostgreSQL, drop the foreign keys of the three tables written in bulk.

    PostgreSQL checks a foreign key with a trigger per inserted row, which locks the
    referenced row (a write to its page). The members of a new package set (about
    1,500 rows) were half the cost of processing a new report, and the pending
    updates nearly doubled the update computation (docs/performance.md). These rows are written
    only by ``patchwatch.store.sets`` and ``patchwatch.pipeline.hostupdates``, from ids they have
    just read or inserted, and deleted with what they belong to by
    ``patchwatch.inventory`` explicitly; ``dbcheck`` finds and deletes any that a
    concurrent deletion left behind. SQLite checks the keys at a fraction of the
    cost, and dropping them there would mean rebuilding the tables: they stay.
    """
    if not isinstance(db, PostgresqlDatabase):
        return
    for table in BULK_TABLES:
        names = db.execute_sql(
            "SELECT conname FROM pg_constraint WHERE conrelid = %s::regclass AND contype = 'f'",
            (table,),
        ).fetchall()
        for (name,) in names:
            db.execute_sql(f'ALTER TABLE "{table}" DROP CONSTRAINT "{name}"')


def _report_packages_digest(db: Database) -> None:
    """Add ``report.packages_digest`` (see ``patchwatch.pipeline.processing.process_pending``)."""
    if "packages_digest" in {c.name for c in db.get_columns("report")}:
        return
    db.execute_sql(
        'ALTER TABLE "report" ADD COLUMN "packages_digest" VARCHAR(64) NOT NULL DEFAULT \'\''
    )


_UPDATE_TABLES: dict[str, tuple[tuple[str, ...], str, tuple[str, ...]]] = {
    # table: (columns, the foreign key it keeps on SQLite, its indexes)
    "host_update": (
        (
            '"id" INTEGER NOT NULL PRIMARY KEY',
            '"host_id" INTEGER NOT NULL',
            '"installed_id" INTEGER NOT NULL',
            '"available_id" INTEGER NOT NULL',
            '"security" INTEGER NOT NULL',
            '"repository_id" INTEGER',
            '"first_seen_at" REAL NOT NULL',
        ),
        'FOREIGN KEY ("host_id") REFERENCES "host" ("id") ON DELETE CASCADE',
        (
            'CREATE UNIQUE INDEX "host_update_host_id_installed_id" '
            'ON "host_update" ("host_id", "installed_id")',
            'CREATE INDEX "host_update_host_id_security_first_seen_at" '
            'ON "host_update" ("host_id", "security", "first_seen_at")',
        ),
    ),
    "update_set_item": (
        (
            '"id" INTEGER NOT NULL PRIMARY KEY',
            '"update_set_id" INTEGER NOT NULL',
            '"installed_id" INTEGER NOT NULL',
            '"available_id" INTEGER NOT NULL',
            '"security" INTEGER NOT NULL',
            '"repository_id" INTEGER',
        ),
        'FOREIGN KEY ("update_set_id") REFERENCES "update_set" ("id") ON DELETE CASCADE',
        ('CREATE INDEX "update_set_item_update_set_id" ON "update_set_item" ("update_set_id")',),
    ),
}
_UNINDEXED_COLUMNS = ("installed_id", "available_id", "repository_id")


def _updates_without_package_indexes(db: Database) -> None:
    """Drop the indexes of pending updates on packages and repositories.

    Every pending update of every host paid for three indexes nothing reads
    (``host_update`` and ``update_set_item`` on ``installed_id``, ``available_id`` and
    ``repository_id``): updates are read by host and by update set, and the rare
    questions by package (``dbcheck``, merging repositories) scan the table once.
    Computing and writing the updates of a fleet took twice as long with them
    (docs/performance.md).

    A foreign key needs an index on its column, or each deleted package would scan
    both tables, so on SQLite the tables are rebuilt without the keys to packages
    and repositories (they keep those to hosts and update sets, which are indexed).
    Nothing relied on those keys: packages are deleted only by ``dbcheck``, when no
    update refers to them, and merging repositories repoints updates explicitly.
    PostgreSQL has no foreign keys on these tables since migration 3.
    """
    for table in _UPDATE_TABLES:
        for column in _UNINDEXED_COLUMNS:
            db.execute_sql(f'DROP INDEX IF EXISTS "{table}_{column}"')
    if not isinstance(db, SqliteDatabase):
        return
    for table, (columns, key, indexes) in _UPDATE_TABLES.items():
        (table_sql,) = db.execute_sql(
            "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
        ).fetchone()
        if 'REFERENCES "package"' not in table_sql:
            continue
        names = ", ".join(column.split(" ", 1)[0] for column in columns)
        for statement in (
            f'CREATE TABLE "{table}_new" ({", ".join(columns)}, {key})',
            f'INSERT INTO "{table}_new" ({names}) SELECT {names} FROM "{table}" ORDER BY id',
            f'DROP TABLE "{table}"',
            f'ALTER TABLE "{table}_new" RENAME TO "{table}"',
            *indexes,
        ):
            db.execute_sql(statement)


def _package_set_member_ids(db: Database) -> None:
    """Add ``package_set.member_ids`` and fill it for the sets already stored.

    Filled here rather than left NULL (readers fall back to the member rows) so that
    an upgraded store computes updates as fast as a new one. Costs one pass over the
    members, 200 sets per query, once (docs/performance.md: seconds for a
    10,000-host store).
    """
    if "member_ids" not in {c.name for c in db.get_columns("package_set")}:
        kind = "BLOB" if isinstance(db, SqliteDatabase) else "BYTEA"
        db.execute_sql(f'ALTER TABLE "package_set" ADD COLUMN "member_ids" {kind}')
    param = db.param
    ids = [r[0] for r in db.execute_sql('SELECT id FROM "package_set" ORDER BY id').fetchall()]
    for start in range(0, len(ids), 200):
        chunk = ids[start : start + 200]
        marks = ", ".join([param] * len(chunk))
        rows = db.execute_sql(
            'SELECT package_set_id, package_id FROM "package_set_member" '
            f"WHERE package_set_id IN ({marks}) ORDER BY package_set_id, package_id",
            chunk,
        ).fetchall()
        members: dict[int, list[int]] = {}
        for set_id, package_id in rows:
            members.setdefault(set_id, []).append(package_id)
        db.cursor().executemany(
            f'UPDATE "package_set" SET member_ids = {param} WHERE id = {param}',
            [(pack_ids(members.get(set_id, [])), set_id) for set_id in chunk],
        )


PACKAGE_SET_CONTENT = """
CREATE VIEW package_set_content AS
SELECT m.package_set_id, m.package_id
  FROM package_set s JOIN package_set_member m ON m.package_set_id = s.id
 WHERE s.base_id IS NULL
UNION ALL
SELECT m.package_set_id, m.package_id
  FROM package_set s JOIN package_set_member m ON m.package_set_id = s.id
 WHERE s.base_id IS NOT NULL AND NOT EXISTS (
       SELECT 1 FROM package_set_member b
        WHERE b.package_set_id = s.base_id AND b.package_id = m.package_id)
UNION ALL
SELECT s.id, b.package_id
  FROM package_set s JOIN package_set_member b ON b.package_set_id = s.base_id
 WHERE NOT EXISTS (
       SELECT 1 FROM package_set_member r
        WHERE r.package_set_id = s.id AND r.package_id = b.package_id)
"""


def _package_set_bases(db: Database) -> None:
    """Add ``package_set.base_id`` and the ``package_set_content`` view.

    Sets already stored stay whole (a NULL base); only new ones are written as
    differences (``patchwatch.domain.set_bases``). The view's three parts: a whole set's
    rows; a difference's rows that its base lacks (added packages); the base's rows
    that the difference does not list (kept packages). Each part is an index range
    or probe by set, or by package, on both backends.
    """
    if "base_id" not in {c.name for c in db.get_columns("package_set")}:
        db.execute_sql(
            'ALTER TABLE "package_set" ADD COLUMN "base_id" INTEGER REFERENCES "package_set" ("id")'
        )
    db.execute_sql('CREATE INDEX IF NOT EXISTS "package_set_base_id" ON "package_set" ("base_id")')
    db.execute_sql("DROP VIEW IF EXISTS package_set_content")
    db.execute_sql(PACKAGE_SET_CONTENT)


def _mirror_data_bounds(db: Database) -> None:
    """Add the mirrors' counts of skipped entries; widen package columns to the limits.

    ``mirror.skipped_packages`` and ``skipped_advisories`` count the entries of a
    mirror's last good index that a refresh left out for a field over its bound
    (``patchwatch.domain.repodata.bounds``); NULL until the mirror's index is read again.
    PostgreSQL enforced ``varchar(255)`` on a package's name, version and release while
    reports (and now mirrors) accept 256 characters: a 256-character name failed the
    whole transaction. Widening a varchar rewrites nothing. SQLite does not enforce
    lengths.
    """
    columns = {c.name for c in db.get_columns("mirror")}
    for name in ("skipped_packages", "skipped_advisories"):
        if name not in columns:
            db.execute_sql(f'ALTER TABLE "mirror" ADD COLUMN "{name}" INTEGER')
    if not isinstance(db, PostgresqlDatabase):
        return
    for column in ("name", "version", "release"):
        row = db.execute_sql(
            "SELECT character_maximum_length FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND table_name = 'package' "
            "AND column_name = %s",
            (column,),
        ).fetchone()
        if row is not None and row[0] is not None and row[0] < 256:
            db.execute_sql(f'ALTER TABLE "package" ALTER COLUMN "{column}" TYPE VARCHAR(256)')


def _remove_oversized_rows(db: Database) -> None:
    """Remove packages and advisories a mirror listed with fields over the bounds.

    Stored before refreshes bounded them (``patchwatch.store.oversized`` says what goes with
    them); a store without any costs one scan of the package and advisory tables.
    """
    remove_oversized(db)


def _mirror_approval(db: Database) -> None:
    """Add ``mirror.approved``; the mirrors already stored are approved.

    From this schema on, a mirror a host reports is read only when an operator
    approved it or its URL matches ``mirror_url_patterns``. The mirrors of an existing
    store were read before without asking, and their operators chose them by letting
    the hosts report them: they stay read. Only when this step adds the column: on a
    fresh database the initial step already made it, and there is nothing to approve.
    """
    if "approved" in {c.name for c in db.get_columns("mirror")}:
        return
    db.execute_sql('ALTER TABLE "mirror" ADD COLUMN "approved" BOOLEAN NOT NULL DEFAULT FALSE')
    db.execute_sql('UPDATE "mirror" SET "approved" = TRUE')


def _held_packages(db: Database) -> None:
    """Add ``host.held`` and ``host_update.held``, and index the held flag for the scrape.

    A held package's update is counted apart (``kind="held"``), so the scrape's
    per-host counts read the flag too: it joins the index that answers them without
    reading the table (``host_update(host_id, security, held, first_seen_at)``, in
    place of the one migration 2 made). Existing updates are not held until the next
    report says what the host holds.
    """
    boolean, false = ("INTEGER", "0") if isinstance(db, SqliteDatabase) else ("BOOLEAN", "false")
    if "held" not in {c.name for c in db.get_columns("host")}:
        db.execute_sql('ALTER TABLE "host" ADD COLUMN "held" TEXT NOT NULL DEFAULT \'\'')
    if "held" not in {c.name for c in db.get_columns("host_update")}:
        db.execute_sql(
            f'ALTER TABLE "host_update" ADD COLUMN "held" {boolean} NOT NULL DEFAULT {false}'
        )
    db.execute_sql('DROP INDEX IF EXISTS "host_update_host_id_security_first_seen_at"')
    db.execute_sql(
        'CREATE INDEX IF NOT EXISTS "host_update_host_id_security_held_first_seen_at" '
        'ON "host_update" ("host_id", "security", "held", "first_seen_at")'
    )


def _host_update_state(db: Database) -> None:
    """Store the reboot flag's two inputs apart, and whether a host's updates are known.

    ``host.reboot_required`` held "the host's signal OR a newer kernel installed",
    written by both report processing and the update computation, each from its own
    input only; it goes, and ``reboot_kernel`` keeps the kernel's part (the flag is
    derived by ``patchwatch.domain.reboot``). A stored flag that the host's own signal does
    not explain came from the kernel; a flag that is off says nothing about the
    kernel (unknown until the next computation, which writes it). Hosts whose
    updates were computed with some repository data count as known and current until
    then (``updates_complete``, ``updates_inputs_at``); the next computation corrects
    both.
    """
    columns = {c.name for c in db.get_columns("host")}
    postgres = isinstance(db, PostgresqlDatabase)
    boolean, double = ("BOOLEAN", "DOUBLE PRECISION") if postgres else ("INTEGER", "REAL")
    false = "FALSE" if postgres else "0"
    added = {
        "reboot_kernel": boolean,
        "inputs_changed_at": double,
        "updates_inputs_at": double,
        "updates_complete": f"{boolean} NOT NULL DEFAULT {false}",
    }
    for name, kind in added.items():
        if name not in columns:
            db.execute_sql(f'ALTER TABLE "host" ADD COLUMN "{name}" {kind}')
    if "reboot_required" not in columns:
        return  # created by step 1 from the current model: nothing to carry over
    true = "TRUE" if postgres else "1"
    db.execute_sql(
        f'UPDATE "host" SET reboot_kernel = {true} '
        f"WHERE reboot_required = {true} AND COALESCE(reboot_reported, {false}) = {false}"
    )
    db.execute_sql('UPDATE "host" SET inputs_changed_at = COALESCE(last_processed_at, created_at)')
    db.execute_sql(
        f'UPDATE "host" SET updates_inputs_at = inputs_changed_at, updates_complete = {true} '
        "WHERE updates_computed_at IS NOT NULL AND packages_without_repository IS NOT NULL"
    )
    db.execute_sql('ALTER TABLE "host" DROP COLUMN "reboot_required"')


def _canonical_repository_keys(db: Database) -> None:
    """Give every repository its canonical key (``patchwatch.domain.repokeys``), merging those
    that turn out to be one.

    Keys used to end in a space (an apt source reported without an architecture) and
    to hold the architecture, so the agent and the Patchman client made two
    repositories of one apt source, refreshed twice. Each repository's key is
    rebuilt from its columns and its old key's URL; repositories that get the same
    key are merged into the oldest as ``repos link`` merges them (mirrors, hosts'
    repository sets, OS groups, pending updates, advisories), its architectures
    widened (:func:`patchwatch.domain.repokeys.merge_arches`). A key that cannot be read
    (cut at 1,024 characters) is left as it is. Running it again changes nothing.
    """
    rows = db.execute_sql(
        'SELECT id, kind, key, repo_id, suite, component, arch FROM "repository" ORDER BY id'
    ).fetchall()
    groups: dict[str, list[tuple[int, str, str]]] = {}
    for rid, kind, key, repo_id, suite, component, arch in rows:
        url = _key_url(kind, key, repo_id, suite, component, arch)
        new = key if url is None else repokeys.repository_key(
            kind, repo_id, suite, component, arch, url
        )  # fmt: skip
        groups.setdefault(new, []).append((rid, key, arch))
    renamed: list[tuple[int, str]] = []
    for new, members in groups.items():
        (target, key, arch), sources = members[0], members[1:]
        for rid, _key, other in sources:
            _merge_repository_row(db, target, rid)
            arch = repokeys.merge_arches(arch, other)
        if sources:
            db.execute_sql(f'UPDATE "repository" SET arch = {db.param} WHERE id = {db.param}',
                           (arch, target))  # fmt: skip
        if new != key:
            renamed.append((target, new))
    # two steps, so that no new key collides with an old one not renamed yet
    for rid, _new in renamed:
        db.execute_sql(
            f'UPDATE "repository" SET key = {db.param} WHERE id = {db.param}',
            (f"#renaming {rid}", rid),
        )
    for rid, new in renamed:
        db.execute_sql(
            f'UPDATE "repository" SET key = {db.param} WHERE id = {db.param}', (new, rid)
        )


def _key_url(
    kind: str, key: str, repo_id: str, suite: str, component: str, arch: str
) -> str | None:
    """The URL inside a repository's key, old spelling or canonical; None if not found."""
    heads: tuple[str, ...]
    tails: tuple[str, ...]
    if kind == "deb":
        heads, tails = (
            ("deb ",),
            (f" {suite} {component} {arch}", "".join(f" {p}" for p in (suite, component) if p)),
        )
    else:
        heads, tails = (
            (f"{kind} {repo_id} {arch} ", " ".join(p for p in (kind, repo_id, arch) if p) + " "),
            ("",),
        )
    for head in heads:
        for tail in tails:
            if key.startswith(head) and key.endswith(tail) and len(key) > len(head) + len(tail):
                return key[len(head) : len(key) - len(tail)]
    return None


def _merge_repository_row(db: Database, target: int, source: int) -> None:
    """Move what refers to repository ``source`` to ``target``, then delete ``source``
    (what ``patchwatch.inventory.repositories.link_repositories`` does, in SQL: migrations do not
    depend on the code above them)."""
    q = db.param

    def run(sql: str, *params: object) -> list[tuple[Any, ...]]:
        cursor = db.execute_sql(sql.replace("?", q), params)
        return list(cursor.fetchall()) if cursor.description else []

    urls = {u for (u,) in run('SELECT url FROM "mirror" WHERE repository_id = ?', target)}
    for mid, url in run('SELECT id, url FROM "mirror" WHERE repository_id = ?', source):
        if url in urls:
            run('DELETE FROM "mirror" WHERE id = ?', mid)
        else:
            run('UPDATE "mirror" SET repository_id = ? WHERE id = ?', target, mid)
            urls.add(url)
    members = run(
        'SELECT repository_set_id, priority, enabled FROM "repository_set_member" '
        "WHERE repository_id = ?",
        source,
    )
    for set_id, priority, enabled in members:
        both = run(
            'SELECT priority, enabled FROM "repository_set_member" '
            "WHERE repository_set_id = ? AND repository_id = ?",
            set_id, target,
        )  # fmt: skip
        if both:
            run(
                'UPDATE "repository_set_member" SET priority = ?, enabled = ? '
                "WHERE repository_set_id = ? AND repository_id = ?",
                max(int(both[0][0]), int(priority)), bool(both[0][1]) or bool(enabled),
                set_id, target,
            )  # fmt: skip
            run(
                'DELETE FROM "repository_set_member" '
                "WHERE repository_set_id = ? AND repository_id = ?",
                set_id, source,
            )  # fmt: skip
            run('UPDATE "repository_set" SET size = size - 1 WHERE id = ?', set_id)
        else:
            run(
                'UPDATE "repository_set_member" SET repository_id = ? '
                "WHERE repository_set_id = ? AND repository_id = ?",
                target, set_id, source,
            )  # fmt: skip
    groups = run(
        'SELECT os_release_id FROM "os_release_repository" WHERE repository_id = ?', source
    )
    for (os_id,) in groups:
        if not run(
            'SELECT 1 FROM "os_release_repository" WHERE os_release_id = ? AND repository_id = ?',
            os_id, target,
        ):  # fmt: skip
            run('INSERT INTO "os_release_repository" (os_release_id, repository_id) VALUES (?, ?)',
                os_id, target)  # fmt: skip
    run('DELETE FROM "os_release_repository" WHERE repository_id = ?', source)
    for table in ("host_update", "update_set_item"):
        run(f'UPDATE "{table}" SET repository_id = ? WHERE repository_id = ?', target, source)
    run(
        'UPDATE "advisory" SET repository_id = ? WHERE repository_id = ? AND advisory_id NOT IN '
        '(SELECT advisory_id FROM "advisory" WHERE repository_id = ?)',
        target, source, target,
    )  # fmt: skip
    run(
        'DELETE FROM "advisory_package" WHERE advisory_id IN '
        '(SELECT id FROM "advisory" WHERE repository_id = ?)',
        source,
    )
    run('DELETE FROM "advisory" WHERE repository_id = ?', source)
    (flags,) = run('SELECT enabled, security_override FROM "repository" WHERE id = ?', source)
    run(
        'UPDATE "repository" SET enabled = (enabled OR ?), '
        "security_override = COALESCE(security_override, ?) WHERE id = ?",
        bool(flags[0]), flags[1] if flags[1] is None else bool(flags[1]), target,
    )  # fmt: skip
    run('DELETE FROM "repository" WHERE id = ?', source)


_REVERSE_DNS_COLUMNS = (
    # (table, column, SQLite type, PostgreSQL type)
    ("os_release", "reverse_dns_check", "INTEGER NOT NULL DEFAULT 0",
     "BOOLEAN NOT NULL DEFAULT false"),
    ("host", "reverse_dns_check", "INTEGER", "BOOLEAN"),
    ("host", "reverse_dns_address", "VARCHAR(64) NOT NULL DEFAULT ''",
     "VARCHAR(64) NOT NULL DEFAULT ''"),
    ("host", "reverse_dns_name", "VARCHAR(255) NOT NULL DEFAULT ''",
     "VARCHAR(255) NOT NULL DEFAULT ''"),
    ("host", "reverse_dns_status", "VARCHAR(16) NOT NULL DEFAULT ''",
     "VARCHAR(16) NOT NULL DEFAULT ''"),
    ("host", "reverse_dns_checked_at", "REAL", "DOUBLE PRECISION"),
)  # fmt: skip


def _reverse_dns_check(db: Database) -> None:
    """Add the reverse DNS check's switches (host, OS release) and results (host).

    Off everywhere until an operator turns it on (``patchwatch.store.rdns``). Columns that
    exist already (a store created from the current models) are left alone.
    """
    sqlite = isinstance(db, SqliteDatabase)
    for table, column, sqlite_type, pg_type in _REVERSE_DNS_COLUMNS:
        if column in {c.name for c in db.get_columns(table)}:
            continue
        kind = sqlite_type if sqlite else pg_type
        db.execute_sql(f'ALTER TABLE "{table}" ADD COLUMN "{column}" {kind}')


def _receiver_hardening(db: Database) -> None:
    """Add the ``health_probe`` table (``patchwatch.store.health``: /healthz proves a write)
    and ``host_credential.enroll_key_hash`` (``patchwatch.store.tokens``: one token per host).

    Bindings already stored stay as they are: a host bound to an enrollment token
    keeps reporting with it until its agent asks for a token of its own.
    """
    db.create_tables([HealthProbe], safe=True)
    if "enroll_key_hash" not in {c.name for c in db.get_columns("host_credential")}:
        db.execute_sql(
            'ALTER TABLE "host_credential" ADD COLUMN "enroll_key_hash" VARCHAR(64) '
            "NOT NULL DEFAULT ''"
        )


def _no_processing_reports(db: Database) -> None:
    """Queue again the reports an earlier version left ``processing``.

    That state meant "claimed by a process"; reports are now claimed and applied in
    one transaction, so nothing writes it and nothing would ever take such a report.
    Running it again changes nothing.
    """
    db.execute_sql("UPDATE \"report\" SET state = 'pending' WHERE state = 'processing'")


def _console_tables(db: Database) -> None:
    """Add the web console's tables: ``server_secret`` (its session key, shared by every
    worker) and ``audit_entry`` (who did what in it, when). Running it again changes
    nothing."""
    db.create_tables([ServerSecret, AuditEntry], safe=True)


def _vulnerability_tables(db: Database) -> None:
    """Create the vulnerability tables (``patchwatch.store.vuln_models``); existing ones stay."""
    db.create_tables(VULN_MODELS, safe=True)


def _host_update_counts(db: Database) -> None:
    """Keep each host's update counts on its row (``patchwatch.store.host_counts``), counted
    now from its pending updates; the update computation keeps them from then on.

    Columns that exist already (a store created from the current models) are left
    alone; the counts are recounted either way, so running it again changes nothing.
    """
    double = "REAL" if isinstance(db, SqliteDatabase) else "DOUBLE PRECISION"
    columns = {c.name for c in db.get_columns("host")}
    kinds = ("INTEGER", "INTEGER", "INTEGER", double)
    for name, kind in zip(host_counts.COUNT_COLUMNS, kinds, strict=True):
        if name not in columns:
            db.execute_sql(f'ALTER TABLE "host" ADD COLUMN "{name}" {kind}')
    host_counts.recount(db)


def _vulnerability_fixes(db: Database) -> None:
    """Add ``vuln_set.fixing``: the installed packages of a set whose pending update fixes
    a vulnerability (``patchwatch.pipeline.hostvulns``), and ``fixing_since``: the
    earliest publication of what each fixes. Existing sets are computed again at
    the next run (their digest covers the rules' version), which fills it. Add
    ``package_source.version``: the source version agents report (a binNMU's differs).
    Add ``os_release.vuln_ecosystem``: an operator's override of the OS group's
    vulnerability ecosystems ("" for the os-release mapping)."""
    blob = "BLOB" if isinstance(db, SqliteDatabase) else "BYTEA"
    for column in ("fixing", "fixing_since"):
        if column not in {c.name for c in db.get_columns("vuln_set")}:
            db.execute_sql(f'ALTER TABLE "vuln_set" ADD COLUMN "{column}" {blob}')
    if "vuln_ecosystem" not in {c.name for c in db.get_columns("os_release")}:
        db.execute_sql(
            'ALTER TABLE "os_release" ADD COLUMN "vuln_ecosystem" VARCHAR(512) NOT NULL '
            "DEFAULT ''"
        )
    if "version" not in {c.name for c in db.get_columns("package_source")}:
        db.execute_sql(
            'ALTER TABLE "package_source" ADD COLUMN "version" VARCHAR(255) NOT NULL DEFAULT \'\''
        )


def _security_feed_copies(db: Database) -> None:
    """Create ``security_feed``: the last good copy of Arch's tracker and Alpine's secdb
    documents, fetched on a schedule (``patchwatch.store.security_feeds``)."""
    db.create_tables([SecurityFeed], safe=True)


def _pinned_repository_members(db: Database) -> None:
    """Add ``repository_set_member.pinned``: the names an apk tagged repository offers a
    host (those its world file pins to the tag); NULL, every name, for existing rows.
    A store created from the current models has it already; running it again changes
    nothing."""
    if "pinned" not in {c.name for c in db.get_columns("repository_set_member")}:
        db.execute_sql('ALTER TABLE "repository_set_member" ADD COLUMN "pinned" TEXT')


def _package_listings(db: Database) -> None:
    """Create ``package_listing``: which package set each package list a report sent
    made (``patchwatch.store.models.PackageListing``). Empty at first: it fills as
    reports are processed, and a report finding nothing there is parsed whole, as
    before. Running it again changes nothing."""
    db.create_tables([PackageListing], safe=True)


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "initial schema", _initial),
    Migration(2, "lean indexes; package set members clustered on SQLite", _lean_indexes),
    Migration(
        3, "bulk tables without foreign keys on PostgreSQL", _bulk_tables_without_foreign_keys
    ),
    Migration(4, "report.packages_digest", _report_packages_digest),
    Migration(5, "pending updates without indexes on packages", _updates_without_package_indexes),
    Migration(6, "package_set.member_ids", _package_set_member_ids),
    Migration(7, "package sets written as differences from a base", _package_set_bases),
    Migration(8, "mirror skip counts; package columns as wide as the limits", _mirror_data_bounds),
    Migration(9, "mirror rows over the field limits removed", _remove_oversized_rows),
    Migration(10, "mirror.approved: reported mirrors wait for approval", _mirror_approval),
    Migration(11, "held packages: host.held, host_update.held", _held_packages),
    Migration(12, "reboot inputs apart; whether a host's updates are known", _host_update_state),
    Migration(
        13, "one canonical key per repository, duplicates merged", _canonical_repository_keys
    ),
    Migration(14, "reverse DNS check of hosts' reporting addresses", _reverse_dns_check),
    Migration(15, "health_probe table; host_credential.enroll_key_hash", _receiver_hardening),
    Migration(16, "reports left processing queued again", _no_processing_reports),
    Migration(17, "web console: server_secret and audit_entry tables", _console_tables),
    Migration(18, "vulnerability feeds, records and per-set findings", _vulnerability_tables),
    Migration(19, "host update counts kept on the host row", _host_update_counts),
    Migration(20, "vuln_set.fixing; package_source.version from agents", _vulnerability_fixes),
    Migration(21, "security_feed: fetched Arch tracker and Alpine secdb", _security_feed_copies),
    Migration(
        22, "repository_set_member.pinned: apk tagged repositories", _pinned_repository_members
    ),
    Migration(23, "package_listing: the package set each reported list made", _package_listings),
)

LATEST = MIGRATIONS[-1].version


def current_version(db: Database) -> int:
    """Return the applied schema version, 0 for an empty database."""
    if not db.table_exists(SchemaVersion._meta.table_name):
        return 0
    row = SchemaVersion.select().order_by(SchemaVersion.version.desc()).first()
    return row.version if row else 0


def migrate(db: Database) -> list[int]:
    """Bring the schema to :data:`LATEST`; return the versions applied.

    :raises PatchwatchError: when the database is newer than this program.
    """
    applied: list[int] = []
    lock = "IMMEDIATE" if not isinstance(db, PostgresqlDatabase) else None
    with db.atomic(lock) if lock else db.atomic():
        if isinstance(db, PostgresqlDatabase):
            db.execute_sql("SELECT pg_advisory_xact_lock(%s)", (ADVISORY_LOCK_ID,))
        version = current_version(db)
        if version > LATEST:
            raise PatchwatchError(
                f"database schema is version {version}, newer than this patchwatch "
                f"({LATEST}); upgrade patchwatch"
            )
        for step in MIGRATIONS:
            if step.version <= version:
                continue
            log.info("applying schema migration %d: %s", step.version, step.description)
            step.apply(db)
            SchemaVersion.create(
                version=step.version, description=step.description, applied_at=time.time()
            )
            applied.append(step.version)
    return applied
