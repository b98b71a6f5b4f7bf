"""``patchwatch hosts``: list, show, diff and delete hosts, and set their operator flags.

A host is named as an operator types it: the full name, or its first label when that
is unique (``web1`` for ``web1.example.com``), or a glob that matches one host. Only
``delete`` takes a glob matching several, and it shows them and asks before it acts.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from typing import Any
from typing import cast

from patchwatch.cli.output import add_format
from patchwatch.cli.output import can_prompt
from patchwatch.cli.output import confirm
from patchwatch.cli.output import emit
from patchwatch.cli.output import guarded
from patchwatch.cli.output import non_negative
from patchwatch.cli.output import one_line_errors
from patchwatch.cli.output import plural
from patchwatch.cli.output import print_fields
from patchwatch.cli.output import printable
from patchwatch.cli.output import render_json
from patchwatch.cli.output import usage_error
from patchwatch.cli.output import yes_no
from patchwatch.domain import listings
from patchwatch.domain.diffs import format_host_diff
from patchwatch.domain.diffs import host_diff_dict
from patchwatch.domain.settings import Settings
from patchwatch.inventory.hosts import KEEP
from patchwatch.inventory.hosts import delete_hosts
from patchwatch.inventory.hosts import diff_hosts
from patchwatch.inventory.hosts import host_overview
from patchwatch.inventory.hosts import match_hosts
from patchwatch.inventory.hosts import parse_maintenance_until
from patchwatch.inventory.hosts import resolve_host
from patchwatch.inventory.hosts import set_host_flags
from patchwatch.inventory.vulns import SEVERITIES
from patchwatch.inventory.vulns import STATUSES
from patchwatch.inventory.vulns import VulnFilter
from patchwatch.store import rdns
from patchwatch.store.models import Host
from patchwatch.store.queries import HostFilter
from patchwatch.store.queries import host_summaries

HOST_COLUMNS = [
    ("name", "host"), ("os", "os"), ("packages", "pkgs"), ("security_updates", "sec"),
    ("other_updates", "other"), ("held_updates", "held"), ("reboot_required", "reboot"),
    ("last_report_at", "last report"),
]  # fmt: skip
HOST_FIELDS = [
    ("name", "host"), ("os", "os"), ("kernel", "kernel"), ("arch", "arch"),
    ("domain", "domain"), ("tags", "tags"), ("last_report_at", "last report"),
    ("protocol", "protocol"), ("agent", "agent"), ("reboot_required", "reboot required"),
    ("use_os_repositories", "use OS repositories"), ("check_updates", "check updates"),
    ("maintenance_until", "maintenance until"), ("package_count", "packages"),
    ("updates_computed_at", "updates computed"), ("updates_status", "updates"),
    ("held_names", "held packages"), ("reverse_dns_check", "reverse DNS check"),
    ("reverse_dns", "reverse DNS"),
]  # fmt: skip
# shown as "unknown" in tables, never as 0, "no" or "-" (JSON and CSV: null and empty)
UNKNOWN_WHEN_NONE = ("security_updates", "other_updates", "held_updates", "reboot_required")
FLAG_FIELDS = [
    ("name", "host"), ("use_os_repositories", "use OS repositories"),
    ("check_updates", "check updates"), ("maintenance_until", "maintenance until"),
    ("in_maintenance", "in maintenance"), ("reverse_dns_check", "reverse DNS check"),
]  # fmt: skip
DNS_COLUMNS = [("name", "host"), ("reverse_dns_status", "result"), ("detail", "detail")]
REPO_COLUMNS = [("key", "repository"), ("priority", "prio"), ("enabled", "enabled"),
                ("security", "security")]  # fmt: skip
UPDATE_COLUMNS = [("name", "package"), ("installed", "installed"), ("available", "available"),
                  ("security", "sec"), ("first_seen_at", "first seen"),
                  ("fixes_text", "fixes")]  # fmt: skip
PACKAGE_COLUMNS = [("name", "package"), ("version", "version"), ("arch", "arch")]
SHOWN_BEFORE_CONFIRM = 20


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    hosts = one_line_errors(
        sub.add_parser("hosts", help="list, show, compare and delete hosts; set their flags")
    )
    hsub = hosts.add_subparsers(dest="hosts_command", metavar="ACTION", required=True)

    p = hsub.add_parser("list", help="list hosts with their update counts, filtered")
    p.add_argument("--os", help="OS name contains this (any case)")
    p.add_argument("--tag", help="has this tag")
    p.add_argument("--domain", help="name ends with .DOMAIN")
    p.add_argument("--security", action="store_true", help="only with security updates")
    p.add_argument("--reboot", action="store_true", help="only those needing a reboot")
    p.add_argument("--stale-days", type=non_negative, metavar="N",
                   help="only those without a report for N days")  # fmt: skip
    p.add_argument("--name", metavar="GLOB", help="name matches this glob (web*, db?.*)")
    add_format(p)
    p.set_defaults(handler=guarded(cmd_list))

    p = hsub.add_parser("show", help="one host: details, flags, repositories, updates")
    p.add_argument("name", help="host name, its first label, or a glob matching one host")
    p.add_argument("--packages", action="store_true", help="also list installed packages")
    p.add_argument("--severity", choices=SEVERITIES, help="vulnerabilities of this severity")
    p.add_argument("--kev", action="store_true", default=None, help="known-exploited only")
    p.add_argument("--status", choices=STATUSES, help="vulnerabilities with this fix status")
    add_format(p, ("table", "json"))
    p.set_defaults(handler=guarded(cmd_show))

    p = hsub.add_parser("diff", help="compare two hosts: OS, kernel, packages, repositories")
    p.add_argument("a", help="first host ('-' lines)")
    p.add_argument("b", help="second host ('+' lines)")
    add_format(p, ("diff", "json"))
    p.set_defaults(handler=guarded(cmd_diff))

    p = hsub.add_parser("delete", help="delete hosts by name or glob, with their reports")
    p.add_argument("pattern", help="a host name, or a glob such as 'old-*.example.com'")
    p.add_argument("--yes", action="store_true", help="do not ask (needed without a terminal)")
    p.add_argument("--dry-run", action="store_true", help="only list what would be deleted")
    p.set_defaults(handler=guarded(cmd_delete))

    p = hsub.add_parser("set", help="set a host's flags: OS repositories, checks, maintenance")
    p.add_argument("name", help="host name, its first label, or a glob matching one host")
    p.add_argument("--use-os-repos", type=yes_no, metavar="yes|no",
                   help="use its OS group's repositories instead of its own")  # fmt: skip
    p.add_argument("--check-updates", type=yes_no, metavar="yes|no",
                   help="compute this host's updates (no: clear them and stop)")  # fmt: skip
    p.add_argument("--maintenance-until", metavar="WHEN",
                   help="ISO time (UTC unless it has an offset), duration (90m, 12h, 3d, 1w) "
                        "or off")  # fmt: skip
    p.add_argument("--reverse-dns", metavar="yes|no|os",
                   help="check that its reporting address resolves back to its name "
                        "(os: as its OS release says, the default)")  # fmt: skip
    add_format(p, ("table", "json"))
    p.set_defaults(handler=guarded(cmd_set))

    p = hsub.add_parser("check-dns", help="reverse DNS check now: does each host's "
                        "reporting address resolve back to its name?")  # fmt: skip
    p.add_argument("name", nargs="?", help="only this host (default: every host due)")
    p.add_argument("--force", action="store_true",
                   help="look up again even when the address did not change")  # fmt: skip
    add_format(p)
    p.set_defaults(handler=guarded(cmd_check_dns))


def cmd_list(settings: Settings, args: argparse.Namespace) -> int:
    flt = HostFilter(
        os=args.os, tag=args.tag, domain=args.domain,
        security=True if args.security else None, reboot=True if args.reboot else None,
        stale_days=args.stale_days, name=args.name,
    )  # fmt: skip
    rows = host_summaries(flt, time.time())
    filtered = flt != HostFilter()
    shown = [_unknown_spelled_out(r) for r in rows] if args.format == "table" else rows
    empty = "no host matches" if filtered else "no hosts yet"
    emit(shown, args.format, HOST_COLUMNS, empty, fields=listings.HOSTS)
    if args.format == "table":
        reasons = Counter(str(r["updates_reason"]) for r in rows if r["updates_state"] == "unknown")
        for reason, count in sorted(reasons.items()):
            print(f"updates unknown for {plural(count, 'host')}: {reason}", file=sys.stderr)
    return 0


def _unknown_spelled_out(row: dict[str, Any]) -> dict[str, Any]:
    return {k: "unknown" if k in UNKNOWN_WHEN_NONE and v is None else v for k, v in row.items()}


VULN_COLUMNS = [
    ("id", "vulnerability"), ("severity", "severity"), ("kev", "kev"), ("status", "status"),
    ("package", "package"), ("installed", "installed"), ("fix", "fixed in / update"),
]  # fmt: skip


def _fixes_text(fixes: list[dict[str, Any]] | None) -> str:
    """The vulnerabilities an update fixes, for its table row ("?": not known)."""
    if fixes is None:
        return "?"
    return " ".join(str(f["id"]) for f in fixes)


def _print_advisories(updates: list[dict[str, Any]]) -> None:
    """The advisories the pending updates fix, each once, with where to read it."""
    links: dict[str, str] = {}
    for u in updates:
        for fix in u["fixes"] or ():
            for adv in [*fix["advisories"], fix]:
                links.setdefault(str(adv["id"]), str(adv["url"] or "-"))
    if links:
        print(f"\nadvisories fixed by pending updates ({len(links)}):")
        emit(
            [{"id": k, "url": v} for k, v in sorted(links.items())],
            "table",
            [("id", "advisory"), ("url", "link")],
        )


def _print_vulnerabilities(vulns: dict[str, Any]) -> None:
    """The host's vulnerabilities, one line per affected package (``unknown`` until a
    feed is loaded; ``not matched`` when its OS maps to no ecosystem)."""
    if vulns["state"] != "known":
        print(f"\nvulnerabilities: {vulns['state'].replace('_', ' ')}")
        return
    found = vulns["vulnerabilities"]
    rows = [
        {"id": v["id"], "severity": v["severity"], "kev": v["kev"],
         "status": f"held {p['status']}" if p["held"] else p["status"],
         "package": p["name"], "installed": p["installed"],
         "fix": p["candidate"] or p["fixed_version"] or "-"}
        for v in found
        for p in v["packages"]
    ]  # fmt: skip
    print(f"\nvulnerabilities ({len(found)}, {vulns['ecosystem']}):")
    emit(rows, "table", VULN_COLUMNS)


def cmd_show(settings: Settings, args: argparse.Namespace) -> int:
    host = resolve_host(args.name)
    flt = VulnFilter(severity=args.severity, kev=args.kev, status=args.status)
    data = host_overview(host, time.time(), flt)
    packages = cast(list[dict[str, str]], data["packages"])
    if args.format == "json":
        print(render_json(data))
        return 0
    reason = data["updates_reason"]
    status = f"{data['updates_state']}: {reason}" if reason else data["updates_state"]
    held = cast(list[dict[str, str]], data["held_packages"])
    held_names = [f"{h['name']}:{h['arch']}" if h["arch"] else h["name"] for h in held]
    reverse = rdns.describe(
        cast(str | None, data["reverse_dns_status"]),
        cast(str | None, data["reverse_dns_address"]),
        cast(str | None, data["reverse_dns_name"]),
    )
    shown = _unknown_spelled_out(
        {**data, "package_count": len(packages), "updates_status": status,
         "held_names": held_names, "reverse_dns": reverse if data["reverse_dns_check"] else None}
    )  # fmt: skip
    print_fields(shown, HOST_FIELDS)
    updates = [{**u, "fixes_text": _fixes_text(u["fixes"])}
               for u in cast(list[dict[str, Any]], data["updates"])]  # fmt: skip
    unknown = data["updates_state"] == "unknown"
    for title, rows, columns, is_updates in (
        ("repositories", cast(list[dict[str, Any]], data["repositories"]), REPO_COLUMNS, False),
        ("pending updates", [u for u in updates if not u["held"]], UPDATE_COLUMNS, True),
        # listed apart: an upgrade leaves held packages alone
        ("held updates", [u for u in updates if u["held"]], UPDATE_COLUMNS, True),
    ):
        count = "unknown" if is_updates and unknown else len(rows)
        print(f"\n{title} ({count}):")
        emit(rows, "table", columns)
    _print_advisories(updates)
    _print_vulnerabilities(cast(dict[str, Any], data["vulnerabilities"]))
    if args.packages:
        print(f"\npackages ({len(packages)}):")
        emit(
            [{**p, "version": _evr(p)} for p in packages],
            "table",
            PACKAGE_COLUMNS,
        )
    return 0


def _evr(p: dict[str, str]) -> str:
    out = f"{p['epoch']}:{p['version']}" if p["epoch"] not in ("", "0") else p["version"]
    return f"{out}-{p['release']}" if p["release"] else out


def cmd_diff(settings: Settings, args: argparse.Namespace) -> int:
    diff = diff_hosts(resolve_host(args.a), resolve_host(args.b))
    if args.format == "json":
        print(render_json(host_diff_dict(diff)))
    else:
        print(printable("\n".join(format_host_diff(diff)), lines=True))
    return 0


def cmd_delete(settings: Settings, args: argparse.Namespace) -> int:
    names = match_hosts(args.pattern)
    plural = "host" if len(names) == 1 else "hosts"
    if args.dry_run:
        for name in names:
            print(printable(name))
        print(f"dry run: {len(names)} {plural} would be deleted", file=sys.stderr)
        return 0
    if not args.yes:
        if not can_prompt():
            usage_error(
                f"refusing to delete {len(names)} {plural} without --yes (no terminal to ask)"
            )
        for name in names[:SHOWN_BEFORE_CONFIRM]:
            print(f"  {printable(name)}", file=sys.stderr)
        if len(names) > SHOWN_BEFORE_CONFIRM:
            print(f"  ... and {len(names) - SHOWN_BEFORE_CONFIRM} more", file=sys.stderr)
        if not confirm(f"delete {len(names)} {plural} and their reports?"):
            print("nothing deleted", file=sys.stderr)
            return 1
    deleted = delete_hosts(names)
    print(f"deleted {deleted} {'host' if deleted == 1 else 'hosts'}")
    return 0


def cmd_set(settings: Settings, args: argparse.Namespace) -> int:
    given = (args.use_os_repos, args.check_updates, args.maintenance_until, args.reverse_dns)
    if given == (None, None, None, None):
        usage_error(
            "nothing to set (give --use-os-repos, --check-updates, --maintenance-until or "
            "--reverse-dns)"
        )
    now = time.time()
    host = resolve_host(args.name)
    if args.reverse_dns is not None:
        rdns.set_host_check(host, rdns.parse_switch(args.reverse_dns, "--reverse-dns"))
    until = (
        KEEP
        if args.maintenance_until is None
        else parse_maintenance_until(args.maintenance_until, now)
    )
    flags = set_host_flags(
        host, now, use_os_repositories=args.use_os_repos, check_updates=args.check_updates,
        maintenance_until=until,
    )  # fmt: skip
    host = Host.get_by_id(host.id)
    os_flag = host.os_release.reverse_dns_check if host.os_release_id else None
    flags["reverse_dns_check"] = rdns.check_enabled(host.reverse_dns_check, os_flag)
    if args.format == "json":
        print(render_json(flags))
    else:
        print_fields(flags, FLAG_FIELDS)
    return 0


def cmd_check_dns(settings: Settings, args: argparse.Namespace) -> int:
    """Look up now what the scheduler's check_reverse_dns job would (Patchman's ``-n``),
    and list the hosts whose address does not resolve back to their name."""
    names = [resolve_host(args.name).name] if args.name else None
    outcome = rdns.check_hosts(
        time.time(), timeout=settings.reverse_dns_timeout_seconds, names=names,
        force=args.force,
    )  # fmt: skip
    rows = [
        {"name": name, "reverse_dns_status": status, "reverse_dns_address": address,
         "reverse_dns_name": found, "reverse_dns_checked_at": at,
         "detail": rdns.describe(status, address, found)}
        for name, status, address, found, at in rdns.mismatches()
        if names is None or name in names
    ]  # fmt: skip
    done = ", ".join(f"{v} {k}" for k, v in sorted(outcome.items())) or "no host was due"
    print(f"checked: {done}", file=sys.stderr)
    empty = "every host checked resolves to its name" if outcome else ""
    emit(rows, args.format, DNS_COLUMNS, empty, fields=listings.REVERSE_DNS)
    return 0
