"""Patchman's reverse DNS check: does a host report from an address named after it?

A host that reports from an address whose reverse DNS name is not the host's own is a
sign of a cloned image (two machines reporting as one name) or of a wrong name. The
check is off unless an operator turns it on, for a host (``hosts set --reverse-dns``)
or for every host of an OS release (``os set --reverse-dns``), because many networks
have no reverse DNS worth comparing.

For each host with the check on, the address of its last report is looked up (PTR,
through the system resolver, with ``reverse_dns_timeout_seconds`` per lookup) when it
changes, and again daily. The answer is one of:

- ``match``: a name of the address (the primary one or an alias) is the host's name;
- ``mismatch``: the address has names, none of them the host's;
- ``no_name``: the address has no reverse DNS name (a definite answer: no PTR);
- ``unknown``: the resolver did not answer in time or failed; nothing is concluded,
  and the check is tried again at the next run.

``hosts show``, the API and ``attention`` show it; the exporter gives
``patchwatch_host_reverse_dns_match`` for the hosts with the check on and a definite
answer (absent while unknown).
"""

from __future__ import annotations

import socket
from collections import Counter
from collections.abc import Callable
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass

from peewee import JOIN

from patchwatch.domain.errors import ParseError
from patchwatch.store.db import write_transaction
from patchwatch.store.models import Host
from patchwatch.store.models import OSRelease
from patchwatch.store.shards import HostSelection

MATCH, MISMATCH, NO_NAME, UNKNOWN = "match", "mismatch", "no_name", "unknown"
DEFINITE = (MATCH, MISMATCH, NO_NAME)
RECHECK_SECONDS = 86400.0  # an unchanged address is looked up again daily
LOOKUPS_AT_ONCE = 8  # a slow resolver costs timeout x hosts / 8, not x hosts


@dataclass(frozen=True)
class Lookup:
    """A resolver's answer for one address: its names, or why there are none."""

    names: tuple[str, ...] = ()
    no_name: bool = False  # the address has no name (a definite answer)
    error: str = ""  # the resolver failed or timed out: nothing can be said


Resolver = Callable[[str, float], Lookup]


def system_resolver(
    address: str,
    timeout: float,
    gethostbyaddr: Callable[[str], tuple[str, list[str], list[str]]] = socket.gethostbyaddr,
) -> Lookup:
    """Look ``address`` up with the system's resolver (``gethostbyaddr``), within
    ``timeout`` seconds.

    ``gethostbyaddr`` takes no timeout, so it runs in a thread that is waited for at
    most ``timeout``; a thread still waiting then finishes on its own. (Tests pass a
    ``gethostbyaddr`` that answers from a fixture, as the C library would.)
    """
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rdns")
    future = pool.submit(gethostbyaddr, address)
    pool.shutdown(wait=False)
    try:
        name, aliases, _addresses = future.result(timeout=timeout)
    except FutureTimeout:
        return Lookup(error=f"no answer in {timeout:g} s")
    except socket.herror as exc:
        if exc.errno == 1:  # HOST_NOT_FOUND: the resolver says there is no name
            return Lookup(no_name=True)
        return Lookup(error=str(exc.strerror or exc))
    except (socket.gaierror, OSError, UnicodeError, ValueError) as exc:
        return Lookup(error=str(exc))
    return Lookup(names=(name, *aliases))


def normal_name(name: str) -> str:
    """A DNS name as host names are stored: lower case, without the trailing dot."""
    return name.strip().lower().rstrip(".")


def judge(host_name: str, lookup: Lookup) -> tuple[str, str]:
    """``(status, name)`` for a host and the lookup of its address (pure)."""
    if lookup.error:
        return UNKNOWN, ""
    if lookup.no_name or not lookup.names:
        return NO_NAME, ""
    names = [normal_name(n) for n in lookup.names if n]
    if host_name in names:
        return MATCH, host_name
    return MISMATCH, names[0] if names else ""


def check_enabled(host_flag: bool | None, os_flag: bool | None) -> bool:
    """Whether a host is checked: its own setting, else its OS release's."""
    return bool(os_flag) if host_flag is None else host_flag


def hosts_to_check(
    now: float, names: Sequence[str] | None = None, force: bool = False
) -> list[tuple[int, str, str]]:
    """``(id, name, address)`` of hosts with the check on whose address is due.

    Due: never checked, the address changed, the last answer was unknown, or it is a
    day old; ``force`` takes every host with the check on.
    """
    query = (
        Host.select(
            Host.id, Host.name, Host.remote_addr, Host.reverse_dns_check,
            OSRelease.reverse_dns_check, Host.reverse_dns_address, Host.reverse_dns_status,
            Host.reverse_dns_checked_at,
        )
        .join(OSRelease, JOIN.LEFT_OUTER, on=(Host.os_release == OSRelease.id))
        .where(Host.remote_addr != "")
        .order_by(Host.name)
        .tuples()
    )  # fmt: skip
    if names is not None:
        query = query.where(Host.name.in_(list(names)))
    due = []
    for host_id, name, address, own, group, checked, status, checked_at in query:
        if not check_enabled(own, group):
            continue
        stale = checked_at is None or checked_at < now - RECHECK_SECONDS
        if force or stale or checked != address or status not in DEFINITE:
            due.append((host_id, name, address))
    return due


def check_hosts(
    now: float,
    resolver: Resolver = system_resolver,
    timeout: float = 2.0,
    names: Sequence[str] | None = None,
    force: bool = False,
) -> Counter[str]:
    """Look up the addresses of the hosts due (:func:`hosts_to_check`), store the
    answers, and count them by status.

    The lookups run a few at a time, outside any transaction; the answers are
    written in one short one at the end.
    """
    due = hosts_to_check(now, names, force)
    if not due:
        return Counter()
    with ThreadPoolExecutor(max_workers=min(LOOKUPS_AT_ONCE, len(due))) as pool:
        lookups = list(pool.map(lambda row: resolver(row[2], timeout), due))
    outcome: Counter[str] = Counter()
    with write_transaction():
        for (host_id, name, address), lookup in zip(due, lookups, strict=True):
            status, found = judge(name, lookup)
            outcome[status] += 1
            Host.update(
                reverse_dns_address=address[:64], reverse_dns_name=found[:255],
                reverse_dns_status=status, reverse_dns_checked_at=now,
            ).where(Host.id == host_id).execute()  # fmt: skip
    return outcome


def set_host_check(host: Host, value: bool | None) -> None:
    """Turn the check on or off for one host, or make it follow its OS release (None).

    The stored answer is forgotten either way: a host turned on is checked at the next
    run with a fresh answer, one turned off shows none.
    """
    with write_transaction():
        Host.update(
            reverse_dns_check=value, reverse_dns_address="", reverse_dns_name="",
            reverse_dns_status="", reverse_dns_checked_at=None,
        ).where(Host.id == host.id).execute()  # fmt: skip


def set_os_release_check(release: OSRelease, value: bool) -> int:
    """Turn the check on or off for an OS release's hosts that follow it; return how
    many hosts follow it."""
    with write_transaction():
        OSRelease.update(reverse_dns_check=value).where(OSRelease.id == release.id).execute()
        followers = Host.update(
            reverse_dns_address="", reverse_dns_name="", reverse_dns_status="",
            reverse_dns_checked_at=None,
        ).where((Host.os_release == release.id) & Host.reverse_dns_check.is_null())  # fmt: skip
        return int(followers.execute())


def parse_switch(value: object, where: str = "reverse_dns_check") -> bool | None:
    """The check's setting as an operator writes it: yes/no, or os (follow the OS
    release); JSON true/false/null.

    :raises ParseError: for anything else.
    """
    if value is None or isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("yes", "y", "true", "on", "1"):
        return True
    if text in ("no", "n", "false", "off", "0"):
        return False
    if text in ("os", "group", "inherit"):
        return None
    raise ParseError(f"expected yes, no or os, got {value!r}", where)


def host_result(host: Host, os_flag: bool | None) -> dict[str, object]:
    """The check's state for ``hosts show`` and the API: whether it is on (and from
    where), and the last answer when it is on."""
    enabled = check_enabled(host.reverse_dns_check, os_flag)
    shown = enabled and bool(host.reverse_dns_status)
    return {
        "reverse_dns_check": enabled,
        "reverse_dns_check_from": "host" if host.reverse_dns_check is not None else "os group",
        "reverse_dns_status": host.reverse_dns_status if shown else None,
        "reverse_dns_address": host.reverse_dns_address if shown else None,
        "reverse_dns_name": host.reverse_dns_name if shown else None,
        "reverse_dns_checked_at": host.reverse_dns_checked_at if shown else None,
    }


def describe(status: str | None, address: str | None, name: str | None) -> str:
    """One line for an operator: what the address resolves to and whether it matches."""
    if not status:
        return "not checked yet"
    if status == MATCH:
        return f"{address} is {name}"
    if status == MISMATCH:
        return f"{address} resolves to {name}, not to the host's name"
    if status == NO_NAME:
        return f"{address} has no reverse DNS name"
    return f"{address}: the resolver did not answer"


def mismatches() -> list[tuple[str, str, str, str, float | None]]:
    """``(host, status, address, name, checked_at)`` of hosts with the check on whose
    address does not resolve to their name (mismatch, or no name)."""
    query = (
        Host.select(
            Host.name, Host.reverse_dns_status, Host.reverse_dns_address,
            Host.reverse_dns_name, Host.reverse_dns_checked_at, Host.reverse_dns_check,
            OSRelease.reverse_dns_check,
        )
        .join(OSRelease, JOIN.LEFT_OUTER, on=(Host.os_release == OSRelease.id))
        .where(Host.reverse_dns_status.in_([MISMATCH, NO_NAME]))
        .order_by(Host.name)
        .tuples()
    )  # fmt: skip
    return [
        (name, status, address, found, at)
        for name, status, address, found, at, own, group in query
        if check_enabled(own, group)
    ]


def match_rows(hosts: HostSelection | None = None) -> list[tuple[str, int]]:
    """``(host, 1 or 0)`` for the hosts (of ``hosts`` if given) with the check on and a
    definite answer."""
    query = (
        Host.select(
            Host.name, Host.reverse_dns_status, Host.reverse_dns_check,
            OSRelease.reverse_dns_check,
        )
        .join(OSRelease, JOIN.LEFT_OUTER, on=(Host.os_release == OSRelease.id))
        .where(Host.reverse_dns_status.in_(list(DEFINITE)))
        .order_by(Host.name)
        .tuples()
    )  # fmt: skip
    if hosts is not None:
        query = query.where(hosts.condition(Host.id))
    return [
        (name, 1 if status == MATCH else 0)
        for name, status, own, group in query
        if check_enabled(own, group)
    ]
