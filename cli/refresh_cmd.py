"""Operator verbs for mirrors and updates: ``patchwatch refresh`` and ``patchwatch updates``.

Both are what the scheduler does on its own, on demand: after adding a repository, to
check a mirror an alert points at, or from cron when the scheduler is not used. On a
terminal a progress bar goes to stderr; with ``-q`` nothing is printed unless something
failed, so cron mails only on trouble. Exit status 1 when any mirror failed.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from typing import TextIO

from peewee import JOIN

from patchwatch.cli.output import add_quiet
from patchwatch.cli.output import guarded
from patchwatch.cli.output import printable
from patchwatch.domain.errors import NotFoundError
from patchwatch.domain.records import Package as PackageRecord
from patchwatch.domain.records import PackageKind
from patchwatch.domain.settings import Settings
from patchwatch.pipeline.fetch import HttpFetcher
from patchwatch.pipeline.hostupdates import refresh_host_updates
from patchwatch.pipeline.refresh import RefreshResult
from patchwatch.pipeline.refresh import refresh_all
from patchwatch.pipeline.refresh import summarize_results
from patchwatch.store.models import Host
from patchwatch.store.models import HostUpdate
from patchwatch.store.models import Mirror
from patchwatch.store.models import Package
from patchwatch.store.models import Repository
from patchwatch.store.update_status import unknown_reasons

BAR_WIDTH = 24


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("refresh", help="refresh repository mirrors (all enabled, or some)")
    p.add_argument(
        "--repo",
        action="append",
        metavar="ID|KEY",
        help="only this repository (its id or exact key); repeatable",
    )
    p.add_argument(
        "--force", action="store_true", help="download and verify everything, even unchanged"
    )
    add_quiet(p)
    p.set_defaults(handler=guarded(cmd_refresh))

    p = sub.add_parser("updates", help="compute pending updates (all hosts, or one)")
    p.add_argument("--host", metavar="NAME", help="only this host; also lists its updates")
    p.add_argument("--force", action="store_true", help="recompute even when no input changed")
    add_quiet(p)
    p.set_defaults(handler=guarded(cmd_updates))


class _Progress:
    """A one-line progress bar on a terminal's stderr; silent anywhere else."""

    def __init__(self, stream: TextIO, enabled: bool) -> None:
        self.stream = stream
        self.enabled = enabled and stream.isatty()

    def __call__(
        self, index: int, total: int, mirror: Mirror, result: RefreshResult | None
    ) -> None:
        if not self.enabled or result is not None:
            return
        filled = BAR_WIDTH * index // max(total, 1)
        bar = "#" * filled + "-" * (BAR_WIDTH - filled)
        self.stream.write(f"\r\x1b[K[{bar}] {index + 1}/{total} {printable(mirror.url)}"[:200])
        self.stream.flush()

    def done(self) -> None:
        if self.enabled:
            self.stream.write("\r\x1b[K")
            self.stream.flush()


def _line(res: RefreshResult) -> str:
    """One mirror's outcome; what came from hosts and mirrors shown escaped."""
    head = printable(f"{res.outcome:<10} {res.repository} {res.url}: ")
    if res.outcome == "failed" or res.outcome == "skipped":
        return head + printable(res.detail)
    text = f"{res.packages} packages"
    if res.advisories:
        text += f", {res.advisories} advisories"
    if res.detail:
        text += f" ({printable(res.detail)})"
    return head + text + f" in {res.seconds:.1f} s"


def cmd_refresh(settings: Settings, args: argparse.Namespace) -> int:
    refresh_log = logging.getLogger("patchwatch.pipeline.refresh")
    level = refresh_log.level
    if not getattr(args, "verbose", False):  # each outcome is printed below, once
        refresh_log.setLevel(logging.ERROR)
    progress = _Progress(sys.stderr, not args.quiet)
    try:
        with HttpFetcher.from_settings(settings) as fetcher:
            results = refresh_all(
                fetcher, time.time(), settings, force=args.force, repositories=args.repo,
                progress=progress,
            )  # fmt: skip
    finally:
        progress.done()
        refresh_log.setLevel(level)
    for res in results:
        if res.outcome == "failed":
            print(_line(res), file=sys.stderr)
        elif not args.quiet:
            print(_line(res))
    if not args.quiet:
        print(summarize_results(results))
    return 1 if any(not r.ok for r in results) else 0


def cmd_updates(settings: Settings, args: argparse.Namespace) -> int:
    names = None
    if args.host:
        name = args.host.strip().lower()
        if Host.get_or_none(Host.name == name) is None:
            raise NotFoundError(f"no host {name!r}")
        names = [name]
    ctx = refresh_host_updates(time.time(), names, force=args.force)
    if args.quiet:
        return 0
    if names:
        _print_host_updates(names[0])
    print(f"{ctx.computed} update sets computed, {ctx.reused} reused")
    return 0


def _print_host_updates(name: str) -> None:
    """List one host's pending updates: name, arch, installed -> available, kind, source.

    An update of a package the host holds is listed as ``held`` (``held security`` for a
    security one) and counted apart, as the exporter's ``kind="held"``.
    """
    host = Host.get(Host.name == name)
    inst = Package.alias()
    avail = Package.alias()
    query = (
        HostUpdate.select(
            inst.kind, inst.name, inst.arch, inst.epoch, inst.version, inst.release,
            avail.epoch, avail.version, avail.release, HostUpdate.security, Repository.key,
            HostUpdate.held,
        )
        .join(inst, on=(HostUpdate.installed == inst.id))
        .switch(HostUpdate)
        .join(avail, on=(HostUpdate.available == avail.id))
        .switch(HostUpdate)
        .join(Repository, JOIN.LEFT_OUTER, on=(HostUpdate.repository == Repository.id))
        .where(HostUpdate.host == host)
        .order_by(inst.name, inst.arch)
        .tuples()
    )  # fmt: skip
    count = held_count = 0
    for kind, pkg, arch, e1, v1, r1, e2, v2, r2, security, repo_key, held in query:
        old = PackageRecord(pkg, e1, v1, r1, arch, PackageKind(kind)).evr
        new = PackageRecord(pkg, e2, v2, r2, arch, PackageKind(kind)).evr
        flag = "security" if security else "other"
        flag = f"held {flag}" if held else flag
        print(printable(f"{pkg:<32} {arch:<8} {old} -> {new}  {flag}  {repo_key or '-'}"))
        held_count += bool(held)
        count += not held
    reboot = {True: "yes", False: "no", None: "unknown"}[host.reboot_required]
    held_note = f", {held_count} held" if held_count else ""
    if host.updates_complete:
        print(f"{host.name}: {count} pending updates{held_note}; reboot required: {reboot}")
        return
    reason = unknown_reasons([host.id])[host.id]
    print(f"{host.name}: pending updates unknown ({reason}); reboot required: {reboot}")
