"""Fleet-wide operator verbs: OS groups, package lookups, what needs attention, dbcheck.

``attention`` is the command to read first in the morning (or to mail from cron): one
row per problem, the same list the admin API's ``/api/v1/attention`` gives. ``dbcheck``
is a dry run unless told ``--fix``.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any
from typing import cast

from patchwatch.cli.output import Progress
from patchwatch.cli.output import add_format
from patchwatch.cli.output import add_quiet
from patchwatch.cli.output import emit
from patchwatch.cli.output import guarded
from patchwatch.cli.output import non_negative
from patchwatch.cli.output import one_line_errors
from patchwatch.cli.output import plural
from patchwatch.cli.output import print_fields
from patchwatch.cli.output import printable
from patchwatch.cli.output import render_json
from patchwatch.domain import listings
from patchwatch.domain.errors import NotFoundError
from patchwatch.domain.errors import ParseError
from patchwatch.domain.settings import Settings
from patchwatch.inventory.attention import attention
from patchwatch.inventory.dbcheck import check_store
from patchwatch.inventory.hosts import resolve_host
from patchwatch.inventory.os_groups import add_os_repositories
from patchwatch.inventory.os_groups import os_release_detail
from patchwatch.inventory.os_groups import os_release_list
from patchwatch.inventory.os_groups import remove_os_repositories
from patchwatch.inventory.os_groups import resolve_os_release
from patchwatch.inventory.os_groups import set_vuln_ecosystem
from patchwatch.inventory.os_groups import vuln_ecosystem_of
from patchwatch.inventory.packages import orphan_packages
from patchwatch.inventory.packages import package_known
from patchwatch.inventory.repositories import resolve_repository
from patchwatch.store import rdns
from patchwatch.store.queries import hosts_with_package

OS_COLUMNS = [
    ("id", "id"), ("name", "os release"), ("hosts", "hosts"),
    ("hosts_using_os_repositories", "using OS repos"), ("repositories", "repos"),
]  # fmt: skip
OS_FIELDS = [("id", "id"), ("name", "name"), ("family", "family"), ("os_id", "os id"),
             ("version", "version"), ("codename", "codename"), ("cpe", "cpe"),
             ("reverse_dns_check", "reverse DNS check"),
             ("vuln_ecosystems_text", "vulnerability ecosystems")]  # fmt: skip
OS_REPO_COLUMNS = [("id", "id"), ("label", "repository"), ("security", "sec"),
                   ("enabled", "enabled")]  # fmt: skip
OS_HOST_COLUMNS = [("name", "host"), ("use_os_repositories", "uses OS repos")]
PACKAGE_HOST_COLUMNS = [("host", "host"), ("version_string", "version"), ("arch", "arch"),
                        ("repositories", "from repositories")]  # fmt: skip
ORPHAN_COLUMNS = [("host", "host"), ("name", "package"), ("version", "version"),
                  ("arch", "arch")]  # fmt: skip
ATTENTION_COLUMNS = [("issue", "issue"), ("subject", "subject"), ("detail", "detail"),
                     ("since", "since")]  # fmt: skip
DBCHECK_COLUMNS = [("check", "check"), ("found", "found"), ("fixed", "fixed"),
                   ("detail", "detail")]  # fmt: skip
DAMAGE_CHECKS = ("integrity", "foreign keys", "packed member ids")


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    os_parser = one_line_errors(
        sub.add_parser("os", help="OS groups: OS releases and the repositories their hosts use")
    )
    osub = os_parser.add_subparsers(dest="os_command", metavar="ACTION", required=True)
    p = osub.add_parser("list", help="OS releases with host and repository counts")
    add_format(p)
    p.set_defaults(handler=guarded(cmd_os_list))
    p = osub.add_parser("show", help="one OS release: its repositories and hosts")
    p.add_argument("os", help="id, name (any case), or a unique part of the name")
    add_format(p, ("table", "json"))
    p.set_defaults(handler=guarded(cmd_os_show))
    p = osub.add_parser(
        "set", help="set an OS release's flags: the reverse DNS check, vulnerability ecosystems"
    )
    p.add_argument("os", help="id, name (any case), or a unique part of the name")
    p.add_argument("--reverse-dns", metavar="yes|no",
                   help="check that its hosts' reporting addresses resolve back to their "
                        "names (hosts set --reverse-dns overrides it per host)")  # fmt: skip
    p.add_argument("--vuln-ecosystem", metavar="ECOSYSTEM[,...]|auto|none",
                   help="the OSV ecosystems its hosts' vulnerabilities are read from "
                        "(Debian:12; several of one ordering, comma-separated), none (not "
                        "matched), or auto (from os-release, the default)")  # fmt: skip
    p.set_defaults(handler=guarded(cmd_os_set))
    for verb, text in (("add-repo", "add repositories to"), ("remove-repo", "remove from")):
        p = osub.add_parser(verb, help=f"{text} an OS release's group")
        p.add_argument("os")
        p.add_argument("repos", nargs="+", metavar="REPO")
        p.set_defaults(handler=guarded(cmd_os_repos), add=verb == "add-repo")

    pkg = one_line_errors(sub.add_parser("packages", help="where packages are installed"))
    psub = pkg.add_subparsers(dest="packages_command", metavar="ACTION", required=True)
    p = psub.add_parser("hosts", help="hosts with a package, and the repositories offering it")
    p.add_argument("name", help="package name (exact)")
    p.add_argument("--version", help="only this version (1.2-3, or with its epoch 1:1.2-3)")
    p.add_argument("--arch", help="only this architecture")
    add_format(p)
    p.set_defaults(handler=guarded(cmd_package_hosts))
    p = psub.add_parser("orphans", help="installed packages that come from no repository")
    p.add_argument("--host", metavar="NAME", help="only this host")
    add_format(p)
    add_quiet(p)
    p.set_defaults(handler=guarded(cmd_orphans))

    p = one_line_errors(sub.add_parser("attention", help="what needs an operator, one per row"))
    p.add_argument("--stale-days", type=non_negative, default=2.0, metavar="N",
                   help="a host without a report for N days is not reporting (2)")  # fmt: skip
    add_format(p)
    p.set_defaults(handler=guarded(cmd_attention))

    p = one_line_errors(
        sub.add_parser(
            "dbcheck", help="find orphan rows and wrong update counts, count rows, check integrity"
        )
    )
    p.add_argument(
        "--fix",
        action="store_true",
        help="delete what is found, count updates again (else a dry run)",
    )
    p.add_argument("--packages", action="store_true",
                   help="with --fix, delete orphan packages too (stop servers first)")  # fmt: skip
    add_format(p)
    add_quiet(p)
    p.set_defaults(handler=guarded(cmd_dbcheck))


def cmd_os_list(settings: Settings, args: argparse.Namespace) -> int:
    emit(os_release_list(), args.format, OS_COLUMNS, "no OS releases yet",
         fields=listings.OS_RELEASES)  # fmt: skip
    return 0


def cmd_os_show(settings: Settings, args: argparse.Namespace) -> int:
    data = os_release_detail(resolve_os_release(args.os))
    if args.format == "json":
        print(render_json(data))
        return 0
    reads = cast(list[str] | None, data["vuln_ecosystems"])
    text = ", ".join(reads) if reads else "none (not matched)"
    how = "set" if data["vuln_ecosystem_override"] else "from os-release"
    print_fields({**data, "vuln_ecosystems_text": f"{text} ({how})"}, OS_FIELDS)
    repos = cast(list[dict[str, Any]], data["repositories"])
    hosts = cast(list[dict[str, Any]], data["hosts"])
    print(f"\nrepositories ({len(repos)}):")
    emit(repos, "table", OS_REPO_COLUMNS)
    print(f"\nhosts ({len(hosts)}):")
    emit(hosts, "table", OS_HOST_COLUMNS)
    return 0


def cmd_os_set(settings: Settings, args: argparse.Namespace) -> int:
    release = resolve_os_release(args.os)
    if args.reverse_dns is None and args.vuln_ecosystem is None:
        raise ParseError("nothing to set: give --reverse-dns or --vuln-ecosystem", "os set")
    if args.vuln_ecosystem is not None:
        set_vuln_ecosystem(release, args.vuln_ecosystem)
        reads = vuln_ecosystem_of(release)["vuln_ecosystems"]
        shown = ", ".join(cast(list[str], reads)) if reads else "none (its hosts are not matched)"
        print(f"vulnerability ecosystems of {printable(release.name)}: {printable(shown)} "
              "(from the next vulnerability run)")  # fmt: skip
    if args.reverse_dns is None:
        return 0
    value = rdns.parse_switch(args.reverse_dns, "--reverse-dns")
    if value is None:
        raise ParseError("expected yes or no (os is for hosts)", "--reverse-dns")
    followers = rdns.set_os_release_check(release, value)
    state = "on" if value else "off"
    name = printable(release.name)  # as a host reported it
    print(f"reverse DNS check {state} for {name}: {plural(followers, 'host')} follow it")
    return 0


def cmd_os_repos(settings: Settings, args: argparse.Namespace) -> int:
    release = resolve_os_release(args.os)
    repos = [resolve_repository(ref) for ref in args.repos]
    if args.add:
        n = add_os_repositories(release, repos)
        print(f"added {plural(n, 'repository', 'repositories')} to {printable(release.name)} "
              f"({len(repos) - n} already in it)")  # fmt: skip
    else:
        n = remove_os_repositories(release, repos)
        print(f"removed {plural(n, 'repository', 'repositories')} from {printable(release.name)}")
    if n:
        print(
            "hosts using their OS repositories get new updates at the next updates run",
            file=sys.stderr,
        )
    return 0


def cmd_package_hosts(settings: Settings, args: argparse.Namespace) -> int:
    if not package_known(args.name):
        raise NotFoundError(f"no package named {args.name!r} is installed or offered anywhere")
    rows = hosts_with_package(args.name, args.version, args.arch)
    empty = f"no host has {args.name} installed"
    if not rows and args.version:  # say which versions there are, epochs included
        found = hosts_with_package(args.name, None, args.arch)
        versions = sorted({str(r["version_string"]) for r in found})
        empty = f"no host has {args.name} {args.version} installed" + (
            f"; installed: {', '.join(versions[:10])}" + (" ..." if len(versions) > 10 else "")
            if versions
            else ""
        )
    emit(rows, args.format, PACKAGE_HOST_COLUMNS, empty, fields=listings.PACKAGE_HOSTS)
    return 0


def cmd_orphans(settings: Settings, args: argparse.Namespace) -> int:
    host = resolve_host(args.host) if args.host else None
    progress = Progress("hosts", quiet=args.quiet)
    try:
        rows = orphan_packages(host, progress=progress)
    finally:
        progress.close()
    emit(rows, args.format, ORPHAN_COLUMNS, "every installed package comes from a repository",
         fields=listings.ORPHANS)  # fmt: skip
    return 0


def cmd_attention(settings: Settings, args: argparse.Namespace) -> int:
    rows = attention(time.time(), args.stale_days)
    emit(rows, args.format, ATTENTION_COLUMNS, "nothing needs attention",
         fields=listings.ATTENTION)  # fmt: skip
    return 0


def cmd_dbcheck(settings: Settings, args: argparse.Namespace) -> int:
    progress = Progress("dbcheck", quiet=args.quiet)
    try:
        rows = check_store(fix=args.fix, include_packages=args.packages, progress=progress)
    finally:
        progress.close()
    emit(rows, args.format, DBCHECK_COLUMNS, fields=listings.DBCHECK)
    damaged = any(r["check"] in DAMAGE_CHECKS and r["found"] for r in rows)
    if not args.fix and not args.quiet:
        print("dry run: nothing deleted (--fix deletes what was found)", file=sys.stderr)
    if damaged:
        print("patchwatch: the database is damaged; restore it from a backup", file=sys.stderr)
        return 1
    return 0
