"""``patchwatch security-feeds``: Arch's tracker and Alpine's secdb, as last read, and now.

- ``patchwatch security-feeds``: each configured feed's state (last success, failures,
  fixes in the last good copy, the last error);
- ``patchwatch security-feeds refresh [--source NAME] [--force]``: what the scheduler's
  ``refresh_security_feeds`` job does, once; the next mirror refresh (``patchwatch
  refresh``) classifies the updates with a new copy. Exit 1 when a feed failed.
"""

from __future__ import annotations

import argparse
import sys

from patchwatch.cli.output import add_format
from patchwatch.cli.output import add_quiet
from patchwatch.cli.output import emit
from patchwatch.cli.output import guarded
from patchwatch.cli.output import one_line_errors
from patchwatch.cli.output import printable
from patchwatch.domain.settings import Settings
from patchwatch.pipeline.securityfeeds import plan_security_feeds
from patchwatch.pipeline.securityfeeds import refresh_security_feeds
from patchwatch.pipeline.vulnfeeds import summarize_feeds
from patchwatch.store.security_feeds import SecurityFeed

COLUMNS = [
    ("name", "feed"), ("location", "location"), ("fixes", "fixes"),
    ("last_success_at", "last success"), ("consecutive_failures", "failures"),
    ("last_error", "last error"),
]  # fmt: skip


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = one_line_errors(
        sub.add_parser("security-feeds", help="Arch's security tracker and Alpine's secdb")
    )
    add_format(p)
    p.set_defaults(handler=guarded(cmd_list))
    verbs = p.add_subparsers(dest="secfeeds_command", metavar="VERB")
    r = one_line_errors(verbs.add_parser("refresh", help="fetch the security feeds now"))
    r.add_argument("--source", metavar="NAME", help="only this feed (arch_tracker, apk_secdb:…)")
    r.add_argument("--force", action="store_true", help="download and parse even when unchanged")
    add_quiet(r)
    r.set_defaults(handler=guarded(cmd_refresh))


def cmd_list(settings: Settings, args: argparse.Namespace) -> int:
    rows = {r.name: r for r in SecurityFeed.select()}
    out = []
    for feed in plan_security_feeds(settings.arch_security_tracker, settings.apk_secdb):
        row = rows.get(feed.name)
        out.append({
            "name": feed.name, "location": feed.location,
            "fixes": None if row is None else row.fixes,
            "last_success_at": None if row is None else row.last_success_at,
            "consecutive_failures": 0 if row is None else row.consecutive_failures,
            "last_error": "" if row is None else row.last_error,
        })  # fmt: skip
    emit(out, args.format, COLUMNS, "no security feed configured "
         "(arch_security_tracker, apk_secdb)")  # fmt: skip
    return 0


def cmd_refresh(settings: Settings, args: argparse.Namespace) -> int:
    outcomes = refresh_security_feeds(settings, only=args.source, force=args.force)
    for o in outcomes:
        line = printable(f"{o.outcome:<10} {o.name}: ")
        if o.outcome == "failed":
            print(line + printable(o.error), file=sys.stderr)
        elif not args.quiet:
            extra = f", {o.skipped} skipped" if o.skipped else ""
            print(f"{line}{o.records} fixes{extra} in {o.seconds:.1f} s")
    if not args.quiet:
        print(summarize_feeds(outcomes))
    return 1 if any(o.outcome == "failed" for o in outcomes) else 0
