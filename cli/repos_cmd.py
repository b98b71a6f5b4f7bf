"""``patchwatch repos``: repositories and their mirrors.

A repository is named by its id (``repos list`` shows it), its exact key, or any part
of its key or name that matches only one repository. Changes here are inputs of the
update computation: they show in hosts' updates after the next updates run.

``approve``: a repository a host reported is read only when its mirrors' URLs match
``mirror_url_patterns`` or an operator approved them (``patchwatch.store.approval``); the
listing's ``approval`` column says which.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any
from typing import cast

from patchwatch.cli.output import add_format
from patchwatch.cli.output import can_prompt
from patchwatch.cli.output import confirm
from patchwatch.cli.output import emit
from patchwatch.cli.output import guarded
from patchwatch.cli.output import one_line_errors
from patchwatch.cli.output import plural
from patchwatch.cli.output import print_fields
from patchwatch.cli.output import printable
from patchwatch.cli.output import render_json
from patchwatch.cli.output import usage_error
from patchwatch.domain import listings
from patchwatch.domain.settings import Settings
from patchwatch.inventory.repositories import check_link
from patchwatch.inventory.repositories import link_repositories
from patchwatch.inventory.repositories import possible_mirrors
from patchwatch.inventory.repositories import repository_detail
from patchwatch.inventory.repositories import repository_list
from patchwatch.inventory.repositories import resolve_repository
from patchwatch.inventory.repositories import set_repositories_enabled
from patchwatch.inventory.repositories import set_repository_security
from patchwatch.store.approval import approve_repositories
from patchwatch.store.approval import mirror_state
from patchwatch.store.approval import repository_states

LIST_COLUMNS = [
    ("id", "id"), ("label", "repository"), ("security", "sec"), ("enabled", "on"),
    ("approval", "approval"), ("hosts", "hosts"), ("mirrors", "mirrors"),
    ("last_success_at", "last ok"),
]  # fmt: skip
DETAIL_FIELDS = [
    ("id", "id"), ("key", "key"), ("kind", "kind"), ("name", "name"), ("repo_id", "repo id"),
    ("suite", "suite"), ("component", "component"), ("arch", "arch"),
    ("security", "security"), ("security_mode", "security mode"),
    ("security_from_metadata", "security (metadata)"), ("enabled", "enabled"),
    ("auth_required", "auth required"), ("advisories", "advisories"),
    ("os_releases", "OS groups"), ("host_count", "hosts"), ("hosts", "host names"),
]  # fmt: skip
MIRROR_COLUMNS = [
    ("url", "mirror"), ("enabled", "enabled"), ("approval", "approval"), ("packages", "pkgs"),
    ("consecutive_failures", "fails"), ("last_success_at", "last ok"),
]  # fmt: skip
GROUP_COLUMNS = [
    ("group", "group"), ("id", "id"), ("label", "repository"), ("hosts", "hosts"),
    ("mirrors", "mirrors"), ("reason", "why"),
]  # fmt: skip
SECURITY_VALUES = {"yes": True, "no": False, "auto": None}
EFFECT = "hosts' updates change at the next updates run ('patchwatch updates' runs it now)"


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    repos = one_line_errors(sub.add_parser("repos", help="repositories and their mirrors"))
    rsub = repos.add_subparsers(dest="repos_command", metavar="ACTION", required=True)

    p = rsub.add_parser("list", help="list repositories with their mirrors' state")
    add_format(p)
    p.set_defaults(handler=guarded(cmd_list))

    p = rsub.add_parser("show", help="one repository: mirrors, hosts, OS groups")
    p.add_argument("repo", help="id, exact key, or a unique part of the key or name")
    add_format(p, ("table", "json"))
    p.set_defaults(handler=guarded(cmd_show))

    p = rsub.add_parser("approve", help="let the server read repositories hosts reported")
    p.add_argument("repos", nargs="+", metavar="REPO",
                   help="id, exact key, or a unique part of the key or name; every mirror it "
                        "has now is approved")  # fmt: skip
    p.set_defaults(handler=guarded(cmd_approve))

    for verb, text in (("enable", "refresh and use"), ("disable", "stop refreshing and using")):
        p = rsub.add_parser(verb, help=f"{text} repositories")
        p.add_argument("repos", nargs="+", metavar="REPO")
        p.set_defaults(handler=guarded(cmd_enable), enabled=verb == "enable")

    p = rsub.add_parser("security", help="mark a repository as security, not, or auto")
    p.add_argument("repo")
    p.add_argument("value", choices=list(SECURITY_VALUES),
                   help="yes: all its updates are security; no: none; auto: as its metadata "
                        "says")  # fmt: skip
    p.set_defaults(handler=guarded(cmd_security))

    p = rsub.add_parser("link", help="make repositories mirrors of one repository")
    p.add_argument("target", help="the repository that stays")
    p.add_argument("sources", nargs="+", metavar="SOURCE",
                   help="repositories whose mirrors, hosts and OS groups move to TARGET; "
                        "they are deleted")  # fmt: skip
    p.add_argument("--force", action="store_true",
                   help="link even if suite, component, repo id or arch differ")  # fmt: skip
    p.add_argument("--yes", action="store_true", help="do not ask (needed without a terminal)")
    p.set_defaults(handler=guarded(cmd_link))

    p = rsub.add_parser("possible-mirrors", help="repositories that look like the same one")
    add_format(p)
    p.set_defaults(handler=guarded(cmd_possible_mirrors))


def cmd_list(settings: Settings, args: argparse.Namespace) -> int:
    """List repositories; the table leaves failing mirrors to ``attention`` and JSON."""
    rows = repository_list()
    states = repository_states(settings.mirror_policy)
    for row in rows:
        row["approval"] = states.get(cast(int, row["id"]), "-")
    emit(rows, args.format, LIST_COLUMNS, "no repositories yet", fields=listings.REPOSITORIES)
    return 0


def cmd_show(settings: Settings, args: argparse.Namespace) -> int:
    data = repository_detail(resolve_repository(args.repo))
    policy = settings.mirror_policy
    for mirror in cast(list[dict[str, Any]], data["mirrors"]):
        mirror["approval"] = mirror_state(mirror["url"], mirror["approved"], policy)
    if args.format == "json":
        print(render_json(data))
        return 0
    hosts = cast(list[str], data["hosts"])
    print_fields({**data, "host_count": len(hosts)}, DETAIL_FIELDS)
    mirrors = cast(list[dict[str, Any]], data["mirrors"])
    print(f"\nmirrors ({len(mirrors)}):")
    emit(mirrors, "table", MIRROR_COLUMNS)
    for m in mirrors:
        if m["last_error"]:
            print(printable(f"  {m['url']}: {m['last_error']}"))
    return 0


def cmd_enable(settings: Settings, args: argparse.Namespace) -> int:
    repos = [resolve_repository(ref) for ref in args.repos]
    changed = set_repositories_enabled(repos, args.enabled)
    state = "enabled" if args.enabled else "disabled"
    for r in repos:
        print(printable(f"{state} {r.id} {r.key}"))
    if changed:
        print(f"{changed} changed; {EFFECT}", file=sys.stderr)
    else:
        print("nothing changed", file=sys.stderr)
    return 0


def cmd_approve(settings: Settings, args: argparse.Namespace) -> int:
    repos = [resolve_repository(ref) for ref in args.repos]
    approved = approve_repositories(repos)
    for r in repos:
        print(f"approved {r.id} {r.key}")
    if approved:
        refs = " ".join(f"--repo {r.id}" for r in repos)
        print(f"{plural(approved, 'mirror')} approved; the next refresh reads them "
              f"('patchwatch refresh {refs}' does it now)", file=sys.stderr)  # fmt: skip
    else:
        print("nothing changed", file=sys.stderr)
    return 0


def cmd_security(settings: Settings, args: argparse.Namespace) -> int:
    repo = set_repository_security(resolve_repository(args.repo), SECURITY_VALUES[args.value])
    shown = "yes" if repo.is_security else "no"
    print(printable(f"{repo.id} {repo.key}: security {args.value} (effective: {shown})"))
    print(EFFECT, file=sys.stderr)
    return 0


def cmd_link(settings: Settings, args: argparse.Namespace) -> int:
    target = resolve_repository(args.target)
    sources = [resolve_repository(ref) for ref in args.sources]
    check_link(target, sources, force=args.force)
    if not args.yes:
        if not can_prompt():
            usage_error("refusing to link repositories without --yes (no terminal to ask)")
        print(printable(f"into {target.id} {target.key}:"), file=sys.stderr)
        for s in sources:
            print(printable(f"  {s.id} {s.key}"), file=sys.stderr)
        question = f"move their mirrors and hosts into {target.id} and delete them?"
        if not confirm(question):
            print("nothing linked", file=sys.stderr)
            return 1
    result = link_repositories(target, sources, force=args.force)
    moved = cast(int, result["mirrors_moved"])
    sets = cast(int, result["repository_sets_repointed"])
    print(
        printable(f"linked {len(sources)} into {target.id} {target.key}: ")
        + f"{plural(moved, 'mirror')} moved, {plural(sets, 'host repository set')} repointed"
    )
    print(EFFECT, file=sys.stderr)
    return 0


def cmd_possible_mirrors(settings: Settings, args: argparse.Namespace) -> int:
    emit(possible_mirrors(), args.format, GROUP_COLUMNS, "no repositories look alike",
         fields=listings.POSSIBLE_MIRRORS)  # fmt: skip
    return 0
