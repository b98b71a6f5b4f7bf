"""The audit trail of operator actions taken in the web console: who, when, what.

Rows are only added; ``recent_entries`` reads the newest first, a page at a time.
"""

from __future__ import annotations

from patchwatch.store.models import AuditEntry

MAX_SUBJECT = 1024
MAX_DETAIL = 4096


def record(now: float, actor: str, action: str, subject: str, detail: str = "") -> None:
    """Record that ``actor`` did ``action`` on ``subject`` at ``now`` (call it in the
    transaction that made the change, or right after it succeeded)."""
    AuditEntry.create(
        at=now, actor=actor[:255], action=action[:64], subject=subject[:MAX_SUBJECT],
        detail=detail[:MAX_DETAIL],
    )  # fmt: skip


def recent_entries(offset: int = 0, limit: int = 100) -> list[dict[str, object]]:
    """Entries newest first, ``limit`` of them after the first ``offset``."""
    query = (
        AuditEntry.select()
        .order_by(AuditEntry.at.desc(), AuditEntry.id.desc())
        .offset(offset)
        .limit(limit)
    )
    return [
        {"at": e.at, "actor": e.actor, "action": e.action, "subject": e.subject,
         "detail": e.detail}
        for e in query
    ]  # fmt: skip


def count_entries() -> int:
    return int(AuditEntry.select().count())
