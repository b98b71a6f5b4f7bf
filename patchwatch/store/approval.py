"""Whether the server may read a mirror a host reported: approved, allowed, or pending.

A mirror's URL is whatever a reporting host said, so reading every one of them would
let anyone who controls a host make the server fetch from anywhere. A mirror is read
when its URL matches ``mirror_url_patterns`` (the distributions' mirror networks by
default: *allowed*) or an operator approved it (``patchwatch repos approve``:
*approved*); any other waits (*pending*) and its refresh is skipped, saying so. The
patterns are read at each refresh, so adding one lets its pending mirrors be read
without approving them one by one. Where requests may go once a mirror is read is
``patchwatch.domain.mirror_policy``'s business.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from patchwatch.domain.mirror_policy import MirrorPolicy
from patchwatch.store.db import write_transaction
from patchwatch.store.models import Mirror
from patchwatch.store.models import Repository

APPROVED, ALLOWED, PENDING = "approved", "allowed", "pending"


def mirror_state(url: str, approved: bool, policy: MirrorPolicy) -> str:
    """``allowed`` (a pattern covers the URL), ``approved`` (an operator's), or ``pending``."""
    if policy.matches(url):
        return ALLOWED
    return APPROVED if approved else PENDING


def pending_reason(mirror: Mirror) -> str:
    """Why a pending mirror is not read, and what reads it."""
    return (
        "waiting for approval: its URL matches no mirror_url_patterns "
        f"('patchwatch repos approve {mirror.repository_id}' reads it)"
    )


def repository_states(policy: MirrorPolicy) -> dict[int, str]:
    """Each repository's state from its mirrors' states.

    ``allowed`` or ``approved`` when every mirror is (``approved`` when any needed the
    operator), ``pending`` when none may be read, ``partly pending`` in between. A
    repository without mirrors is absent.
    """
    states: dict[int, set[str]] = defaultdict(set)
    for mirror in Mirror.select(Mirror.repository, Mirror.url, Mirror.approved):
        states[mirror.repository_id].add(mirror_state(mirror.url, mirror.approved, policy))
    out = {}
    for repo_id, seen in states.items():
        if seen == {PENDING}:
            out[repo_id] = PENDING
        elif PENDING in seen:
            out[repo_id] = "partly pending"
        else:
            out[repo_id] = APPROVED if APPROVED in seen else ALLOWED
    return out


def approve_repositories(repos: Sequence[Repository]) -> int:
    """Approve every mirror of these repositories; return how many were not approved yet."""
    ids = [r.id for r in repos]
    with write_transaction():
        return int(
            Mirror.update(approved=True)
            .where(Mirror.repository.in_(ids) & (Mirror.approved == False))  # noqa: E712
            .execute()
        )
