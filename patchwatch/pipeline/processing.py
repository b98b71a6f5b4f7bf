"""Turn stored raw reports into host state; idempotent and safe to re-run.

The receiver stores a report and acknowledges it; this module does the rest, either
right after (the embedded default) or from the scheduler. A report that cannot be
processed is marked ``failed`` with its reason and is not retried by itself; ``patchwatch
process --force`` re-runs it. Reports of one host are applied in arrival order, and an
older report never overwrites the state of a newer one.
"""

from __future__ import annotations

import json
import logging
import time
import zlib
from collections import Counter
from collections.abc import Iterable
from collections.abc import Sequence
from contextlib import nullcontext

from peewee import IntegrityError
from peewee import ModelSelect

from patchwatch.domain.collector import collector_paused
from patchwatch.domain.errors import ParseError
from patchwatch.domain.protocols import NATIVE
from patchwatch.domain.records import HostReport
from patchwatch.domain.records import Package
from patchwatch.domain.set_digest import set_digest
from patchwatch.domain.updates import encode_holds
from patchwatch.pipeline.prepared import Prepared
from patchwatch.pipeline.prepared import decode_body
from patchwatch.pipeline.prepared import listing_of
from patchwatch.pipeline.prepared import prepare_decoded
from patchwatch.store.db import chunks
from patchwatch.store.db import database
from patchwatch.store.db import execute_many
from patchwatch.store.db import is_transient
from patchwatch.store.db import placeholders
from patchwatch.store.db import raw_sql
from patchwatch.store.db import write_transaction
from patchwatch.store.models import Host
from patchwatch.store.models import Module
from patchwatch.store.models import OSRelease
from patchwatch.store.models import Report
from patchwatch.store.models import ReportedUpdate
from patchwatch.store.package_sets import ensure_package_set
from patchwatch.store.package_sets import ensure_package_sets
from patchwatch.store.package_sets import remember_listings
from patchwatch.store.package_sets import sets_of_listings
from patchwatch.store.package_sets import stored_package_sets
from patchwatch.store.sets import cached_id
from patchwatch.store.sets import ensure_repository_set
from patchwatch.store.sets import forget_cached_ids
from patchwatch.store.sets import remember_id
from patchwatch.store.vulns import remember_reported_sources

log = logging.getLogger(__name__)


def encode_body(doc: object) -> tuple[bytes, int]:
    """Serialise a decoded report for storage: (zlib-compressed JSON, raw size)."""
    raw = json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode(
        "utf-8", "surrogatepass"
    )
    return zlib.compress(raw, 6), len(raw)


def store_report(
    host_name: str,
    protocol: str,
    doc: object,
    now: float,
    token_id: int | None = None,
    remote_addr: str = "",
    user_agent: str = "",
    packages_digest: str = "",
    encoded: tuple[bytes, int] | None = None,
) -> Report:
    """Store a raw report durably (one short transaction) and return its row.

    ``packages_digest`` is the set digest of the packages of a report already parsed
    (by the receiver), which lets processing skip parsing them again. ``encoded``: the
    body already as stored (zlib or gzip JSON) and its size decompressed, when the
    caller has it (the receiver keeps a gzip body as sent), instead of ``doc``'s.
    """
    body, size = encoded if encoded is not None else encode_body(doc)
    with write_transaction():
        return Report.create(
            host_name=host_name,
            protocol=protocol,
            token=token_id,
            received_at=now,
            remote_addr=remote_addr[:64],
            user_agent=user_agent[:255],
            body=body,
            size=size,
            packages_digest=packages_digest,
        )


def _os_release(report: HostReport) -> int:
    """The id of the report's OS release row, created on first sight (rows never change)."""
    os = report.os
    name = os.name[:255]
    known = cached_id("os-release", name)
    if known is not None:
        return known
    OSRelease.insert(
        name=name, family=os.family, os_id=os.id, version=os.version,
        codename=os.codename, cpe=os.cpe[:255],
    ).on_conflict_ignore().execute()  # fmt: skip
    row_id: int = OSRelease.get(OSRelease.name == name).id
    remember_id("os-release", name, row_id)
    return row_id


_HOST = Host._meta.table_name
_MODULE = Module._meta.table_name
_REPORTED_UPDATE = ReportedUpdate._meta.table_name
_REPORT = Report._meta.table_name


# the model's column defaults (peewee applies them in Python, not in the schema)
_HOST_DEFAULTS = {
    f.column_name: f.default
    for f in Host._meta.sorted_fields
    if f.default is not None and not callable(f.default)
}
# What a host's updates are computed from changed (its package set, repository set, holds,
# kernel or OS release; the old values are compared, as SET reads the row before the
# update): move inputs_changed_at forward, so that the update computation is due
# (patchwatch.pipeline.followup). Strictly forward, even when a batch applies two reports of the
# host with one ``now``: a computation that read the first must not pass for the second.
_INPUTS_CHANGED = (
    "inputs_changed_at = CASE WHEN inputs_changed_at IS NULL "
    "OR COALESCE(package_set_id, 0) <> ? OR kernel <> ? OR COALESCE(os_release_id, 0) <> ? "
    "OR held <> ? OR (? IS NOT NULL AND COALESCE(repository_set_id, 0) <> ?) "
    "THEN CASE WHEN inputs_changed_at >= ? THEN inputs_changed_at + 0.001 ELSE ? END "
    "ELSE inputs_changed_at END"
)


def host_ids(names: Sequence[str]) -> dict[str, int]:
    """Ids of the stored hosts among ``names``: one query for a batch, not one a report."""
    out: dict[str, int] = {}
    for chunk in chunks(sorted(set(names))):
        sql = f"SELECT name, id FROM {_HOST} WHERE name IN ({placeholders(len(chunk))})"
        out.update(database.execute_sql(raw_sql(sql), list(chunk)).fetchall())
    return out


def apply_report(
    row: Report,
    report: HostReport,
    now: float,
    package_set_id: int | None = None,
    known_hosts: dict[str, int] | None = None,
) -> int:
    """Write the host state a parsed report describes; return the host's id.

    ``package_set_id`` is the stored set of the report's packages when the caller
    knows it (then ``report.packages`` is not read); ``known_hosts``, host ids the
    caller read for its batch (:func:`host_ids`). The writes are those of
    :func:`write_hosts`, for one report.
    """
    if package_set_id is None:
        package_set_id = ensure_package_set(report.packages, now).id
        remember_reported_sources(reported_sources([report]))
    hosts = dict(known_hosts) if known_hosts is not None else host_ids([row.host_name])
    # inside a batch the caller's transaction already covers this
    with nullcontext() if database.in_transaction() else write_transaction():
        write_hosts([(row, report, package_set_id)], now, hosts)
    return hosts[row.host_name]


#: reports whose host writes go together (one claim, one insert of new hosts, one
#: delete and one insert of their modules and reported updates): the processing
#: process's short transactions (``hold_seconds``) end between two such groups
WRITE_GROUP = 25


def write_hosts(
    entries: Sequence[tuple[Report, HostReport, int]], now: float, hosts: dict[str, int]
) -> None:
    """Write the host state of these (report row, parsed report, package set id), in
    order, inside the caller's transaction.

    Plain SQL, and only the columns a report sets: peewee's query building cost more
    than the database's own work for these few statements per report, and a whole-row
    save would write back, say, an update time the scheduler set meanwhile. A
    report older than the host's last one changes nothing (the update's own
    condition says so, whatever another process wrote since the host was read).
    ``hosts``: name -> id of the hosts known so far (the batch's read, :func:`host_ids`);
    hosts created here are added.

    Why grouped: per report, one statement (the host's update) instead of five or
    six; the new hosts, and the modules and reported updates replaced, go in one
    statement each per group. Each host is written at most once per group, so that
    its second report in a batch starts a new one.
    """
    group: list[tuple[Report, HostReport, int]] = []
    names: set[str] = set()
    for entry in entries:
        if entry[0].host_name in names:
            _write_group(group, now, hosts)
            group, names = [], set()
        group.append(entry)
        names.add(entry[0].host_name)
    if group:
        _write_group(group, now, hosts)


def _write_group(
    entries: list[tuple[Report, HostReport, int]], now: float, hosts: dict[str, int]
) -> None:
    """:func:`write_hosts` for reports of distinct hosts."""
    missing = sorted({row.host_name for row, _r, _s in entries if row.host_name not in hosts})
    created = _create_hosts(missing, now) if missing else {}
    hosts.update(created)
    if len(created) < len(missing):  # created meanwhile by another process
        hosts.update(host_ids([name for name in missing if name not in created]))
    replaced_modules: list[int] = []
    replaced_updates: list[int] = []
    modules: list[tuple[object, ...]] = []
    updates: list[tuple[object, ...]] = []
    for row, report, package_set_id in entries:
        host_id = hosts[row.host_name]
        if not _update_host(row, report, now, host_id, package_set_id):
            log.info("report %d for %s is older than the host state; kept only", row.id,
                     row.host_name)  # fmt: skip
            continue
        # a host created just now has no modules or reported updates to replace
        fresh = row.host_name in created
        if (report.modules or report.repositories is not None) and not fresh:
            replaced_modules.append(host_id)
        modules += [(host_id, m.name, m.stream, m.version, m.context, m.arch)
                    for m in report.modules]  # fmt: skip
        if report.updates is not None and not fresh:
            replaced_updates.append(host_id)
        rows = {
            (u.name, u.version, u.arch): (u.security, u.repository) for u in report.updates or ()
        }
        updates += [(host_id, n, v, a, sec, r[:512]) for (n, v, a), (sec, r) in rows.items()]
    for table, replaced in ((_MODULE, replaced_modules), (_REPORTED_UPDATE, replaced_updates)):
        for chunk in chunks(replaced):
            database.execute_sql(
                raw_sql(f"DELETE FROM {table} WHERE host_id IN ({placeholders(len(chunk))})"),
                list(chunk),
            )
    if modules:
        execute_many(
            f"INSERT INTO {_MODULE} (host_id, name, stream, version, context, arch) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            modules,
        )
    if updates:
        execute_many(
            f"INSERT INTO {_REPORTED_UPDATE} (host_id, name, version, arch, security, repository) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            updates,
        )


def _create_hosts(names: Sequence[str], now: float) -> dict[str, int]:
    """Insert these hosts (sorted names, none found by the batch's read); name -> id of
    those this statement created (a host another process created first is not)."""
    created: dict[str, int] = {}
    row = f"(?, ?{', ?' * len(_HOST_DEFAULTS)})"
    for chunk in chunks(names, WRITE_GROUP):
        sql = (
            f"INSERT INTO {_HOST} (name, created_at, {', '.join(_HOST_DEFAULTS)}) "
            f"VALUES {', '.join([row] * len(chunk))} ON CONFLICT DO NOTHING RETURNING id, name"
        )
        params = [value for name in chunk for value in (name, now, *_HOST_DEFAULTS.values())]
        for host_id, name in database.execute_sql(raw_sql(sql), params).fetchall():
            created[name] = host_id
    return created


def _update_host(
    row: Report, report: HostReport, now: float, host_id: int, package_set_id: int
) -> bool:
    """Set the host's row from the report; False when the report is older than it."""
    rset = (
        ensure_repository_set(report.repositories, now) if report.repositories is not None else None
    )
    os_release_id = _os_release(report)
    domain = report.extra.get("domain")
    kernel = report.kernel[:255]
    holds = encode_holds(report.held)
    rset_id = None if rset is None else rset.id
    cursor = database.execute_sql(
        raw_sql(
            f"UPDATE {_HOST} SET domain = COALESCE(?, domain), os_release_id = ?, "
            "os_variant = ?, kernel = ?, arch = ?, tags = ?, reboot_reported = ?, "
            "package_set_id = ?, "
            "repository_set_id = COALESCE(?, repository_set_id), agent = ?, protocol = ?, "
            "remote_addr = ?, last_report_at = ?, last_processed_at = ?, held = ?, "
            f"{_INPUTS_CHANGED} "
            "WHERE id = ? AND (last_report_at IS NULL OR last_report_at <= ?)"
        ),
        (
            None if domain is None else domain[:255],
            os_release_id,
            report.extra.get("os_variant", "")[:255],
            kernel,
            report.arch[:32],
            " ".join(sorted(set(report.tags))),
            report.reboot_required,
            package_set_id,
            rset_id,
            report.agent[:128],
            row.protocol,
            row.remote_addr,
            row.received_at,
            now,
            holds,
            package_set_id,
            kernel,
            os_release_id,
            holds,
            rset_id,
            rset_id,
            now,
            now,
            host_id,
            row.received_at,
        ),
    )
    return bool(cursor.rowcount)


def reported_sources(reports: Iterable[HostReport]) -> dict[Package, tuple[str, str]]:
    """The source (name, version) the reports give for their installed packages.

    A ``sources`` entry names its binary by name, version, release and arch as the
    report's packages do; one naming no package of its report is dropped.
    """
    out: dict[Package, tuple[str, str]] = {}
    for report in reports:
        if not report.sources:
            continue
        by_key = {(p.name, p.version, p.release, p.arch): p for p in report.packages}
        for s in report.sources:
            package = by_key.get((s.name, s.version, s.release, s.arch))
            if package is not None:
                out[package] = (s.source, s.source_version)
    return out


def claim_report(row: Report, now: float, force: bool = False) -> bool:
    """Take a report so that two processes never work on it at once; False if taken
    (:func:`claim_reports` for one)."""
    return bool(claim_reports([row], now, force))


def claim_reports(rows: Sequence[Report], now: float, force: bool = False) -> set[int]:
    """Take these reports so that two processes never work on one at once; the ids
    of those taken (the others are another process's, or done).

    A report is marked processed at once: the claim is made inside the batch's
    transaction (:func:`process_pending`), so no other reader sees that mark before
    the host state it stands for, and what fails after it marks the report otherwise
    or rolls the whole batch back. One statement per report instead of a claim and
    a mark, so no report is ever left half-taken; one statement for many reports.
    """
    allowed = "state = 'pending'"
    if force:
        allowed += " OR state IN ('processed', 'failed')"
    taken: set[int] = set()
    for chunk in chunks([row.id for row in rows]):
        cursor = database.execute_sql(
            raw_sql(
                f"UPDATE {_REPORT} SET state = 'processed', processed_at = ?, error = '', "
                f"attempts = attempts + 1 WHERE id IN ({placeholders(len(chunk))}) "
                f"AND ({allowed}) RETURNING id"
            ),
            (now, *chunk),
        )
        taken.update(report_id for (report_id,) in cursor.fetchall())
    for row in rows:
        if row.id in taken:
            row.state = "processed"
    return taken


def _write_reports(
    batch: list[Prepared], now: float, force: bool, hosts: dict[str, int]
) -> Counter[str]:
    """Claim and apply these prepared reports (inside the batch's transaction); their
    new states counted (processed, failed or skipped).

    ``hosts``: host ids read for the batch, to which hosts created here are added.
    """
    outcome: Counter[str] = Counter()
    taken = claim_reports([item.row for item in batch], now, force)
    entries: list[tuple[Report, HostReport, int]] = []
    for item in batch:
        if item.row.id not in taken:
            outcome["skipped"] += 1  # another process has it, or it is done
        elif item.record is None:
            _mark(item.row, "failed", now, item.error)
            outcome["failed"] += 1
        else:
            assert item.package_set_id is not None  # _store_shared_rows set it
            entries.append((item.row, item.record, item.package_set_id))
            outcome["processed"] += 1  # marked so by the claim
    write_hosts(entries, now, hosts)
    return outcome


def _stored_sets(rows: list[Report]) -> dict[int, int]:
    """Report id -> id of the stored package set its packages make, where one exists.

    Why: between patch days a host reports the packages it reported before, and
    turning 1,500 package objects into records was most of processing such a report.
    A report stored with its set digest (``store_report(packages_digest=...)``) names
    a set that holds exactly those packages, so the list need not be read. The
    receiver answers before parsing and stores no digest: its reports are named by
    their listing instead (:func:`_prepare_batch`).
    """
    wanted: dict[str, list[int]] = {}
    for row in rows:
        if row.protocol == NATIVE and row.packages_digest:
            wanted.setdefault(row.packages_digest, []).append(row.id)
    stored = stored_package_sets(list(wanted))
    return {rid: stored[d] for d, ids in wanted.items() if d in stored for rid in ids}


#: reports decoded at a time while a batch is prepared: their listings are looked up
#: together, and only so many decoded bodies (about 1 MB of objects each) are held
PREPARE_CHUNK = 10


def _prepare_batch(rows: list[Report], force: bool) -> list[Prepared]:
    """The batch's reports ready to apply, parsed from their bodies (outside any
    transaction), without the package list where its stored set is known.

    A report's list is named by its digest as sent (its listing) before it
    is parsed. A listing that made a set before (an unchanged re-report, a host that
    did not drift from its image) names that set, and the list is not read; one that
    an earlier report of the batch brings shares that report's records. Only the
    other lists are turned into records.
    """
    # --force re-runs reports after a fix, perhaps to the parser: parse them whole
    known = {} if force else _stored_sets(rows)
    parsed: dict[str, tuple[Package, ...]] = {}  # listing -> its records, in this batch
    out: dict[int, Prepared] = {}
    for start in range(0, len(rows), PREPARE_CHUNK):
        decoded: list[tuple[Report, object, str | None]] = []
        for row in rows[start : start + PREPARE_CHUNK]:
            try:
                doc = decode_body(row.body)
            except ParseError as exc:
                out[row.id] = Prepared(row, None, str(exc))
                continue
            decoded.append((row, doc, listing_of(row.protocol, doc)))
        wanted = sorted({listing for _row, _doc, listing in decoded if listing})
        listed = {} if force else sets_of_listings(wanted)
        for row, doc, listing in decoded:
            set_id = known.get(row.id)
            if set_id is None and listing is not None:
                set_id = listed.get(listing)
            shared = parsed.get(listing) if listing is not None and set_id is None else None
            item = prepare_decoded(row, doc, set_id, listing, shared)
            if listing is not None and item.record is not None and item.packages_read:
                parsed.setdefault(listing, item.record.packages)
            out[row.id] = item
        del decoded  # the decoded bodies go before the next chunk's are read
    return [out[row.id] for row in rows]


def _mark(row: Report, state: str, now: float, error: str) -> None:
    database.execute_sql(
        raw_sql(f"UPDATE {_REPORT} SET state = ?, processed_at = ?, error = ? WHERE id = ?"),
        (state, now, error[:2000], row.id),
    )
    row.state = state


BATCH_REPORTS = 100
BATCH_SECONDS = 1.0
BATCH_RETRIES = 3  # a batch that PostgreSQL aborted as a deadlock victim runs again


def _store_shared_rows(batch: list[Prepared], now: float, force: bool = False) -> None:
    """Store the new package sets, repository sets and OS releases of a batch first,
    note each report's package set, and which set each new listing made.

    Why before the batch's transaction, in a short one of their own: these rows are
    shared by every host. Created inside the batch, in report order, their unique
    keys stayed locked until the batch committed, and two batches (two processing
    workers, or the scheduler's and a receiver's inline one) that bring the same new
    packages in another order waited on each other: PostgreSQL's deadlock detector
    then aborted one. Created here, sorted (see
    :func:`patchwatch.store.package_sets.ensure_package_sets`), they are committed before any host
    row is touched. The listings are stored after the sets they name are committed,
    with the sources of the same reports: a listing found later stands for both.
    """
    todo = [(item, item.record) for item in batch if item.record is not None]
    if not todo:
        return
    fresh = [(item, record) for item, record in todo if item.package_set_id is None]
    # the set digest of each list: the receiver's, unless --force parses anew, or
    # computed here once per list (reports of one listing share their records)
    named: dict[int, str] = {}
    digests = []
    for item, record in fresh:
        given = "" if force else item.row.packages_digest
        if not given:
            given = named.get(id(record.packages)) or set_digest(record.packages)[0]
            named[id(record.packages)] = given
        digests.append(given)
    set_ids = ensure_package_sets([record.packages for _item, record in fresh], now, digests)
    listings: dict[str, str] = {}
    for (item, record), set_id, digest in zip(fresh, set_ids, digests, strict=True):
        item.package_set_id = set_id
        if item.listing is not None and named.get(id(record.packages)) == digest:
            listings[item.listing] = digest  # only a digest of this parse's records
    sources = reported_sources([record for item, record in todo if item.packages_read])
    if sources or listings:
        with write_transaction():
            remember_reported_sources(sources)
            remember_listings(listings, now)
    with write_transaction():
        for _item, record in todo:
            if record.repositories is not None:
                ensure_repository_set(record.repositories, now)
            _os_release(record)


def _queue(
    query: ModelSelect, host_name: str | None, force: bool, received_before: float | None = None
) -> ModelSelect:
    """The reports to process, in arrival order: queued ones, or with ``force`` every
    kept one; with ``received_before``, only those received before that time."""
    if not force:
        query = query.where(Report.state == "pending")
    if received_before is not None:
        query = query.where(Report.received_at < received_before)
    if host_name:
        query = query.where(Report.host_name == host_name)
    return query.order_by(Report.received_at, Report.id)


def queued_report_ids(host_name: str | None = None, force: bool = False) -> list[int]:
    """The ids of what :func:`process_pending` would take, in the order it takes them."""
    query = _queue(Report.select(Report.id), host_name, force)
    return [report_id for (report_id,) in query.tuples()]


def process_pending(
    now: float,
    limit: int = 1000,
    host_name: str | None = None,
    force: bool = False,
    ids: Sequence[int] | None = None,
    hold_seconds: float = BATCH_SECONDS,
    received_before: float | None = None,
) -> Counter[str]:
    """Process queued reports (or, with ``force``, all kept ones) in arrival order.

    ``ids``: only these reports (those of them still queued), so that several
    processes work through one queue side by side, each taking the next run of
    :func:`queued_report_ids` (``patchwatch process --workers``).
    ``received_before``: only reports received before that time (the scheduler's
    job, while a processing process takes the fresh ones: ``patchwatch.pipeline.processor``).

    The rows are read first and processed after: an open read cursor on SQLite would
    pin a snapshot and make the writes below fail under concurrency.

    Reports are parsed ahead, outside any transaction, then applied up to
    :data:`BATCH_REPORTS` at a time (and for at most about :data:`BATCH_SECONDS`) in
    one transaction, in groups of :data:`WRITE_GROUP` (``hold_seconds``: the processing
    process commits more often, so that the receiver's stores wait less). Why: a new
    package set inserts some 1,500 entries into the package-to-set index, scattered
    over as many pages; one commit per report wrote all of those pages out for every
    report, while reports of one fleet share most packages and so most pages.
    Batching cut processing of a drifting fleet several times over
    (docs/performance.md). A failure other than a bad report rolls back the whole
    batch, which leaves its reports queued, as they were before; a rollback
    PostgreSQL forced (a deadlock victim) is applied again, up to
    :data:`BATCH_RETRIES` times, and so is one that a stale cached id failed, its
    shared rows stored again first. The shared rows the
    batch brings are stored before it (:func:`_store_shared_rows`).
    """
    rows = _queued_rows(host_name, force, limit, ids, received_before)
    return _process(rows, now, force, hold_seconds)


def _queued_rows(
    host_name: str | None,
    force: bool,
    limit: int,
    ids: Sequence[int] | None,
    received_before: float | None = None,
) -> list[Report]:
    query = _queue(
        Report.select(
            Report.id, Report.host_name, Report.protocol, Report.body, Report.received_at,
            Report.remote_addr, Report.state, Report.packages_digest,
        ),
        host_name, force, received_before,
    ).limit(limit)  # fmt: skip
    if ids is not None:
        query = query.where(Report.id.in_(list(ids)))
    return list(query)


def _process(
    rows: list[Report], now: float, force: bool, hold_seconds: float = BATCH_SECONDS
) -> Counter[str]:
    outcome: Counter[str] = Counter()
    for start in range(0, len(rows), BATCH_REPORTS):
        with collector_paused():  # a batch is acyclic: see collector_paused
            outcome.update(_process_batch(rows[start : start + BATCH_REPORTS], now, force,
                                          hold_seconds))  # fmt: skip
    outcome.pop("skipped", None)
    return outcome


def _process_batch(
    rows: list[Report], now: float, force: bool, hold_seconds: float
) -> Counter[str]:
    """Prepare, store the shared rows of and apply one batch (see :func:`process_pending`)."""
    outcome: Counter[str] = Counter()
    batch = _prepare_batch(rows, force)
    _store_shared_rows(batch, now, force)
    done = 0
    retried = 0
    while done < len(batch):
        deadline = time.monotonic() + hold_seconds
        part: Counter[str] = Counter()
        first = done
        try:
            with write_transaction():
                hosts = host_ids([item.row.host_name for item in batch[first:]])
                while done < len(batch):
                    group = batch[done : done + WRITE_GROUP]
                    part.update(_write_reports(group, now, force, hosts))
                    done += len(group)
                    if time.monotonic() > deadline:
                        break
        except Exception as exc:
            # the ids this transaction cached may name rows it did not commit; an
            # IntegrityError says a cached set or package id was deleted meanwhile
            # (dbcheck --fix): the caches are only a shortcut, so the shared rows are
            # stored again from the reports' whole records
            forget_cached_ids()
            stale = isinstance(exc, IntegrityError)
            if not (stale or is_transient(exc)) or retried >= BATCH_RETRIES:
                raise
            retried += 1
            log.warning("reports %d-%d rolled back (%s); applying them again",
                        batch[first].row.id, batch[-1].row.id, exc)  # fmt: skip
            if stale:
                _restore_shared_rows(batch[first:], now, force)
            done = first
            continue
        outcome.update(part)
    return outcome


def _restore_shared_rows(batch: list[Prepared], now: float, force: bool) -> None:
    """Store the shared rows of these reports again, from their whole records (the
    package list parsed again where it was skipped), after stale ids failed them."""
    for item in batch:
        if item.record is None:
            continue
        item.record = item.whole()
        item.package_set_id = None
        item.packages_read = True
    _store_shared_rows(batch, now, force)


def prune_reports(keep: int) -> int:
    """Delete all but the newest ``keep`` processed or failed reports of each host."""
    deleted = 0
    hosts = [r.host_name for r in Report.select(Report.host_name).distinct()]
    for name in hosts:
        old = (
            Report.select(Report.id)
            .where((Report.host_name == name) & (Report.state != "pending"))
            .order_by(Report.received_at.desc(), Report.id.desc())
            .offset(keep)
        )
        ids = [r.id for r in old]
        if ids:
            deleted += Report.delete().where(Report.id.in_(ids)).execute()
    return deleted
