"""Operator verbs on tokens and reports: token create/list/revoke, process, clean."""

from __future__ import annotations

import argparse
import gc
import math
import multiprocessing
import sys
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from multiprocessing.sharedctypes import Synchronized
from multiprocessing.util import Finalize

from cli.output import add_format
from cli.output import emit
from cli.output import guarded
from cli.output import positive_int
from patchwatch.domain import listings
from patchwatch.domain.errors import BoundError
from patchwatch.domain.errors import ParseError
from patchwatch.domain.errors import PatchwatchError
from patchwatch.domain.reports import parse_hostname
from patchwatch.domain.settings import Settings
from patchwatch.pipeline.processing import process_pending
from patchwatch.pipeline.processing import prune_reports
from patchwatch.pipeline.processing import queued_report_ids
from patchwatch.store.db import database
from patchwatch.store.db import open_database
from patchwatch.store.models import Report
from patchwatch.store.tokens import create_token
from patchwatch.store.tokens import current_binding
from patchwatch.store.tokens import describe_token
from patchwatch.store.tokens import list_tokens
from patchwatch.store.tokens import release_host
from patchwatch.store.tokens import revoke_token


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    tok = sub.add_parser("token", help="manage API tokens (host, enroll, admin)")
    tsub = tok.add_subparsers(dest="token_command", metavar="ACTION", required=True)
    p = tsub.add_parser("create", help="create a token; its secret is printed once")
    kind = p.add_mutually_exclusive_group(required=True)
    kind.add_argument(
        "--host", type=host_name, metavar="NAME", help="a token that writes only host NAME"
    )
    kind.add_argument("--enroll", action="store_true", help="a token that enrolls new hosts")
    kind.add_argument("--admin", action="store_true", help="a token for the read API")
    p.add_argument("--comment", default="", help="free text shown by 'token list'")
    p.add_argument(
        "--expires-days", type=positive_days, metavar="DAYS", help="expire after this many days"
    )
    p.add_argument(
        "--force", action="store_true",
        help="with --host: replace the token the host is bound to (its agent is then refused)",
    )  # fmt: skip
    p.set_defaults(handler=guarded(cmd_token_create))
    p = tsub.add_parser("list", help="list tokens (never their secrets)")
    add_format(p)
    p.set_defaults(handler=guarded(cmd_token_list))
    p = tsub.add_parser(
        "revoke", help="revoke a token by its prefix (its hosts stay bound: see release)"
    )
    p.add_argument("prefix")
    p.set_defaults(handler=guarded(cmd_token_revoke))
    p = tsub.add_parser(
        "release",
        help="unbind a host from its token (revoked if it is a host token), so that it "
        "can be enrolled again or given a new token",
    )
    p.add_argument("host", type=host_name, metavar="HOST")
    p.set_defaults(handler=guarded(cmd_token_release))

    p = sub.add_parser("process", help="process queued reports (or re-process with --force)")
    p.add_argument("--force", action="store_true", help="re-process kept reports too")
    p.add_argument("--host", metavar="NAME", help="only this host's reports")
    p.add_argument(
        "--workers", type=positive_int, default=1, metavar="N",
        help="processes working side by side, each taking the next run of queued "
        "reports as it comes free (default 1)",
    )  # fmt: skip
    p.set_defaults(handler=guarded(cmd_process))

    p = sub.add_parser("clean", help="delete old reports, keeping the last N per host")
    p.add_argument(
        "--keep", type=positive_int, metavar="N",
        help="reports kept per host (setting reports_keep)",
    )  # fmt: skip
    p.set_defaults(handler=guarded(cmd_clean))


TOKEN_COLUMNS = [
    ("prefix", "prefix"), ("kind", "kind"), ("host", "host"), ("created_at", "created"),
    ("last_used_at", "last used"), ("state", "state"), ("comment", "comment"),
]  # fmt: skip


def positive_days(text: str) -> float:
    """``--expires-days``: a finite number of days above zero."""
    try:
        days = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of days, got {text!r}") from None
    if not math.isfinite(days) or days <= 0:
        raise argparse.ArgumentTypeError(f"must be a number of days above 0, got {text!r}")
    return days


def host_name(text: str) -> str:
    """A host name normalised as reports are (``patchwatch.domain.reports.parse_hostname``)."""
    try:
        return parse_hostname(text.strip())[0]
    except ParseError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: {exc.message}") from None


def cmd_token_create(settings: Settings, args: argparse.Namespace) -> int:
    kind = "host" if args.host else "enroll" if args.enroll else "admin"
    if args.force and kind != "host":
        raise PatchwatchError("--force only goes with --host")
    now = time.time()
    expires = now + args.expires_days * 86400 if args.expires_days else None
    binding = current_binding(args.host) if args.host else None
    try:
        token, secret = create_token(kind, now, args.host, args.comment, expires, force=args.force)
    except BoundError as exc:
        raise PatchwatchError(str(exc)) from None
    if binding is not None:
        print(f"host {args.host} was bound to {describe_token(binding.token)}; it is now "
              "bound to the new token", file=sys.stderr)  # fmt: skip
    print(f"created {kind} token {token.prefix}; its secret is shown only now:", file=sys.stderr)
    print(secret)
    return 0


def cmd_token_list(settings: Settings, args: argparse.Namespace) -> int:
    now = time.time()
    rows = [
        {
            "prefix": t.prefix, "kind": t.kind, "host": t.host_name,
            "state": "revoked" if t.revoked_at
            else "expired" if t.expires_at and t.expires_at <= now else "active",
            "comment": t.comment, "created_at": t.created_at, "last_used_at": t.last_used_at,
            "expires_at": t.expires_at, "revoked_at": t.revoked_at,
        }
        for t in list_tokens()
    ]  # fmt: skip
    emit(rows, args.format, TOKEN_COLUMNS, "no tokens yet", fields=listings.TOKENS)
    return 0


def cmd_token_revoke(settings: Settings, args: argparse.Namespace) -> int:
    token = revoke_token(args.prefix, time.time())
    print(f"revoked {args.prefix}")
    if token.kind == "host" and token.host_name:
        name = token.host_name
        print(f"host {name} stays bound to it until 'patchwatch token release {name}' or "
              "a new token ('token create --host')", file=sys.stderr)  # fmt: skip
    return 0


def cmd_token_release(settings: Settings, args: argparse.Namespace) -> int:
    token = release_host(args.host, time.time())
    print(f"released {args.host} from {describe_token(token)}; it can be enrolled again")
    return 0


def cmd_process(settings: Settings, args: argparse.Namespace) -> int:
    host = host_name(args.host) if args.host else None
    if args.workers == 1:
        total = _process_queue(settings, host, args.force)
    else:
        total = _process_in_parallel(settings, host, args.force, args.workers)
    print(", ".join(f"{v} {k}" for k, v in sorted(total.items())) or "nothing to process")
    return 1 if total.get("failed") else 0


PROCESS_PAGE = 500  # reports read (bodies included) per round of process_pending
RUN_REPORTS = 50  # reports a worker of process --workers takes at a time


def _process_queue(settings: Settings, host: str | None, force: bool) -> Counter[str]:
    total = Counter[str]()
    if force and host is None:
        # --force takes processed reports too, so "the next page" never runs out:
        # host by host instead (each keeps only its last few reports)
        names = Report.select(Report.host_name).distinct().order_by(Report.host_name)
        for (name,) in names.tuples():
            total.update(_process_queue(settings, name, force))
        return total
    while True:
        outcome = process_pending(
            time.time(),
            limit=PROCESS_PAGE,
            host_name=host,
            force=force,
        )
        total.update(outcome)
        if force or sum(outcome.values()) < PROCESS_PAGE:
            return total


def _process_in_parallel(
    settings: Settings, host: str | None, force: bool, workers: int
) -> Counter[str]:
    """``process --workers N``: the queue cut into runs of :data:`RUN_REPORTS` reports
    in arrival order, each taken by whichever of N processes (this one among them)
    comes free first.

    Why processes: parsing a report (JSON, 1,500 package records) holds the GIL and
    is most of the work; the database writes of one worker wait for the other's on
    SQLite, but the parsing overlaps. Why runs rather than fixed shares (id modulo N
    before): the other processes start later than this one (a fresh interpreter),
    and runs differ in cost (the first ones store the fleet's packages), so one share
    could still be at work long after the other had finished (docs/performance.md).
    Reports that arrive meanwhile are
    taken in a further round; each report is offered once per command.
    """
    context = multiprocessing.get_context("spawn")  # fresh connections, no fork of one
    tickets = context.Value("i", 0)  # the next run to take, shared by all
    offered: set[int] = set()
    total = Counter[str]()
    with ProcessPoolExecutor(
        workers - 1, mp_context=context, initializer=_start_worker, initargs=(settings, tickets)
    ) as pool:
        while True:
            ids = [i for i in queued_report_ids(host, force)
                   if i not in offered]  # fmt: skip
            if not ids:
                return total
            offered.update(ids)
            runs = [ids[i : i + RUN_REPORTS] for i in range(0, len(ids), RUN_REPORTS)]
            tickets.value = 0
            futures = [pool.submit(_take_runs, runs, force) for _ in range(workers - 1)]
            total.update(_take_runs(runs, force, tickets))
            for future in futures:
                total.update(future.result())
            if force:
                return total


_TICKETS: Synchronized[int] | None = None  # a worker's handle on the shared run counter
_START_ERROR: Exception | None = None  # why the worker could not open the store


def _start_worker(settings: Settings, tickets: Synchronized[int]) -> None:
    """Set up one worker of ``process --workers``: its own connection, the counter.

    A failure to open the store is kept and raised by the worker's task, so that the
    caller gets it as it is (one line: "database error: ..."); raised here, the pool
    would log a traceback and fail every task as "broken".
    """
    global _TICKETS, _START_ERROR
    _TICKETS = tickets
    try:  # the command checked and migrated the store: only connect here
        open_database(settings.resolved_database_url).connect(reuse_if_open=True)
    except Exception as exc:  # handed on to the caller by _take_runs
        _START_ERROR = exc
        return
    Finalize(None, database.close, exitpriority=10)  # at the worker's exit
    # then no last collection over its heap (which the caller waits out): see
    # cli.main.run
    Finalize(None, gc.freeze, exitpriority=0)


def _take_runs(
    runs: list[list[int]],
    force: bool,
    tickets: Synchronized[int] | None = None,
) -> Counter[str]:
    """Process the next run not taken yet, and again, until none is left."""
    if _START_ERROR is not None:
        raise _START_ERROR
    counter = tickets if tickets is not None else _TICKETS
    assert counter is not None
    total = Counter[str]()
    while True:
        with counter.get_lock():
            taken = counter.value
            counter.value = taken + 1
        if taken >= len(runs):
            return total
        run = runs[taken]
        total.update(process_pending(time.time(), limit=len(run), force=force, ids=run))


def cmd_clean(settings: Settings, args: argparse.Namespace) -> int:
    keep = args.keep if args.keep is not None else settings.reports_keep
    print(f"deleted {prune_reports(keep)} reports")
    return 0
