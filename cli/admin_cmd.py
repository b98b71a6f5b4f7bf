"""Operator verbs on tokens and reports: token create/list/revoke, process, clean."""

from __future__ import annotations

import argparse
import math
import sys
import time

from patchwatch.cli.output import add_format
from patchwatch.cli.output import emit
from patchwatch.cli.output import guarded
from patchwatch.cli.output import positive_int
from patchwatch.domain import listings
from patchwatch.domain.errors import BoundError
from patchwatch.domain.errors import ParseError
from patchwatch.domain.errors import PatchwatchError
from patchwatch.domain.reports import parse_hostname
from patchwatch.domain.settings import Settings
from patchwatch.pipeline.backlog import process_queue
from patchwatch.pipeline.processing import prune_reports
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
    total = process_queue(settings, host, args.force, args.workers)
    print(", ".join(f"{v} {k}" for k, v in sorted(total.items())) or "nothing to process")
    return 1 if total.get("failed") else 0


def cmd_clean(settings: Settings, args: argparse.Namespace) -> int:
    keep = args.keep if args.keep is not None else settings.reports_keep
    print(f"deleted {prune_reports(keep)} reports")
    return 0
