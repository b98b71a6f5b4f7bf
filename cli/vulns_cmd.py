"""``patchwatch vulns``: the fleet's vulnerabilities, one in detail, and reading the feeds.

- ``patchwatch vulns``: every vulnerability present in the fleet (CVE, severity, KEV,
  EPSS, hosts exposed, fixable on how many), filtered;
- ``patchwatch vulns show CVE-…``: its hosts, installed and fixed versions, the update
  that carries the fix, the advisories;
- ``patchwatch vulns refresh [--source NAME] [--file PATH]``: what the scheduler's
  ``refresh_vulns`` job does, once (``--file`` reads a local copy of one feed, for
  air-gapped sites), then the findings of what changed. Exit 1 when a feed failed.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any
from typing import cast

from patchwatch.cli.output import add_format
from patchwatch.cli.output import add_quiet
from patchwatch.cli.output import emit
from patchwatch.cli.output import guarded
from patchwatch.cli.output import one_line_errors
from patchwatch.cli.output import print_fields
from patchwatch.cli.output import printable
from patchwatch.cli.output import render_json
from patchwatch.cli.output import usage_error
from patchwatch.domain.settings import Settings
from patchwatch.inventory.vulns import SEVERITIES
from patchwatch.inventory.vulns import STATUSES
from patchwatch.inventory.vulns import VULN_FIELDS
from patchwatch.inventory.vulns import VulnFilter
from patchwatch.inventory.vulns import feeds_loaded
from patchwatch.inventory.vulns import fleet_vulnerabilities
from patchwatch.inventory.vulns import vulnerability_detail
from patchwatch.pipeline.hostupdates import refresh_host_updates
from patchwatch.pipeline.hostvulns import refresh_host_vulns
from patchwatch.pipeline.vulnfeeds import refresh_vulns
from patchwatch.pipeline.vulnfeeds import summarize_feeds

VULN_COLUMNS = [
    ("id", "vulnerability"), ("severity", "severity"), ("kev", "kev"), ("epss", "epss"),
    ("hosts", "hosts"), ("fixable", "fixable"), ("published", "published"),
]  # fmt: skip
DETAIL_FIELDS = [
    ("id", "vulnerability"), ("severity", "severity"), ("cvss_score", "CVSS score"),
    ("rating", "distribution rating"), ("kev", "known exploited"), ("kev_added", "KEV added"),
    ("kev_due", "KEV due"), ("epss", "EPSS"), ("published", "published"),
    ("summary", "summary"), ("records", "advisories"), ("links", "links"),
]  # fmt: skip
HOST_COLUMNS = [
    ("host", "host"), ("package", "package"), ("installed", "installed"),
    ("status", "status"), ("fixed_version", "fixed in"), ("candidate", "update"),
    ("records", "advisories"),
]  # fmt: skip


def _filters(p: argparse.ArgumentParser) -> None:
    p.add_argument("--severity", choices=SEVERITIES, help="only this severity")
    p.add_argument("--kev", action="store_true", default=None, help="only known-exploited")
    p.add_argument("--status", choices=STATUSES, help="only this fix status")
    p.add_argument("--fixable", action="store_true", help="same as --status fixable")
    p.add_argument("--os", metavar="TEXT", help="only hosts whose OS name contains TEXT")
    p.add_argument("--tag", help="only hosts with this tag")


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = one_line_errors(sub.add_parser("vulns", help="vulnerabilities in the fleet"))
    _filters(p)
    add_format(p)
    p.set_defaults(handler=guarded(cmd_list))
    verbs = p.add_subparsers(dest="vulns_command", metavar="VERB")

    s = one_line_errors(verbs.add_parser("show", help="one vulnerability and its hosts"))
    s.add_argument("id", metavar="ID", help="CVE-… or an advisory id")
    _filters(s)
    add_format(s, ("table", "json"))
    s.set_defaults(handler=guarded(cmd_show))

    r = one_line_errors(verbs.add_parser("refresh", help="read the vulnerability feeds now"))
    r.add_argument("--source", metavar="NAME", help="only this feed (osv, osv:Debian:12, kev, …)")
    r.add_argument("--file", metavar="PATH", help="read this local copy of the feed instead")
    r.add_argument("--force", action="store_true", help="parse and store even when unchanged")
    add_quiet(r)
    r.set_defaults(handler=guarded(cmd_refresh))


def _flt(args: argparse.Namespace) -> VulnFilter:
    status = "fixable" if args.fixable else args.status
    return VulnFilter(severity=args.severity, kev=args.kev, status=status, os=args.os,
                      tag=args.tag)  # fmt: skip


def cmd_list(settings: Settings, args: argparse.Namespace) -> int:
    if not feeds_loaded():
        print("no vulnerability feed loaded yet: see 'patchwatch vulns refresh'",
              file=sys.stderr)  # fmt: skip
    rows = fleet_vulnerabilities(_flt(args))
    emit(rows, args.format, VULN_COLUMNS, "no vulnerability found", fields=VULN_FIELDS)
    return 0


def cmd_show(settings: Settings, args: argparse.Namespace) -> int:
    data = vulnerability_detail(args.id.strip(), _flt(args))
    if args.format == "json":
        print(render_json(data))
        return 0
    print_fields(data, DETAIL_FIELDS)
    hosts = cast(list[dict[str, Any]], data["hosts"])
    print(f"\nhosts ({len(hosts)}):")
    emit(hosts, "table", HOST_COLUMNS)
    return 0


def cmd_refresh(settings: Settings, args: argparse.Namespace) -> int:
    if args.file and not args.source:
        usage_error("--file needs --source: the feed it is a copy of")
    outcomes = refresh_vulns(settings, only=args.source, file=args.file, force=args.force)
    now = time.time()
    run = refresh_host_vulns(
        now, first_seen_at_publication=settings.vulns_first_seen_at_publication
    )
    # findings changed: the updates that fix them are security updates now, as the
    # scheduler's vulnerability jobs do it (only the update sets they touch are computed)
    updates = refresh_host_updates(now).computed if run.computed else 0
    failed = [o for o in outcomes if o.outcome == "failed"]
    for o in outcomes:
        line = printable(f"{o.outcome:<10} {o.name}: ")
        if o.outcome == "failed":
            print(line + printable(o.error), file=sys.stderr)
            continue
        if args.quiet:
            continue
        extra = f", {o.skipped} skipped" if o.skipped else ""
        flag = " (changed by more than vulns_change_share: flagged)" if o.flagged else ""
        print(f"{line}{o.records} records{extra}{flag} in {o.seconds:.1f} s")
    if not args.quiet:
        print(f"{summarize_feeds(outcomes)}; {run.computed} vulnerability sets computed, "
              f"{run.reused} reused; computed in {run.seconds:.2f} s; "
              f"{updates} update sets computed")  # fmt: skip
    return 1 if failed else 0
