"""The last good copy of each distribution security feed, and how its reads went.

Why a table of its own: Arch's security tracker and Alpine's secdb documents are not
vulnerability records (``VulnSource``) but the input of the update computation's
*security* flag, read by the mirror refresh of every pacman and apk repository. A feed
fetched by the scheduler's ``refresh_security_feeds`` job (or ``patchwatch
security-feeds refresh``) is kept here whole, as fetched, with its validators for the
next conditional request; the mirror refresh reads the copy, so a feed that fails to
download leaves the last good one in use. Only a copy that parsed is stored.

Migration 21 (``patchwatch.store.migrations``) creates the table.
"""

from __future__ import annotations

from peewee import BlobField
from peewee import CharField
from peewee import DoubleField
from peewee import IntegerField
from peewee import TextField

from patchwatch.store.models import BaseModel

__all__ = [
    "SecurityFeed",
    "count_failure",
    "feed_row",
    "forget_feeds_except",
    "save_feed",
    "stored_copy",
]


class SecurityFeed(BaseModel):
    """One security feed (``arch_tracker``, ``apk_secdb:v3.20/main``) as last read."""

    name = CharField(max_length=160, primary_key=True)
    location = TextField(default="")  # URL or path of the good copy (and validators)
    etag = CharField(max_length=255, default="")
    last_modified = CharField(max_length=64, default="")
    content_digest = CharField(max_length=64, default="")  # sha256 of ``content``
    content = BlobField(null=True)  # the last good copy as fetched; None: none yet
    scope = CharField(max_length=64, default="")  # secdb: "v3.20/main" the copy says
    last_attempt_at = DoubleField(null=True)
    last_success_at = DoubleField(null=True)  # changed or not
    last_change_at = DoubleField(null=True)
    failures_total = IntegerField(default=0)
    consecutive_failures = IntegerField(default=0)
    last_error = TextField(default="")
    fixes = IntegerField(null=True)  # fixes in the good copy; None: no good copy yet
    skipped = IntegerField(null=True)


def feed_row(name: str) -> SecurityFeed:
    """The state row of a feed, created (with no copy) on first use."""
    row, _ = SecurityFeed.get_or_create(name=name)
    return row


def save_feed(row: SecurityFeed, **fields: object) -> None:
    """Write ``fields`` to the feed's row (and to the row object, for what follows)."""
    SecurityFeed.update(**fields).where(SecurityFeed.name == row.name).execute()
    for key, value in fields.items():
        setattr(row, key, value)


def count_failure(name: str, now: float, error: str) -> None:
    """Count a failed read of the feed; its last good copy stays as it is."""
    SecurityFeed.update(
        last_attempt_at=now,
        failures_total=SecurityFeed.failures_total + 1,
        consecutive_failures=SecurityFeed.consecutive_failures + 1,
        last_error=error,
    ).where(SecurityFeed.name == name).execute()


def stored_copy(location: str) -> tuple[str, bytes] | None:
    """(scope, bytes) of the good copy last fetched from ``location``; None before one."""
    row = (
        SecurityFeed.select(SecurityFeed.scope, SecurityFeed.content)
        .where((SecurityFeed.location == location) & SecurityFeed.content.is_null(False))
        .order_by(SecurityFeed.last_change_at.desc())
        .tuples()
        .first()
    )
    return None if row is None else (row[0], bytes(row[1]))


def forget_feeds_except(names: list[str]) -> int:
    """Delete the rows of feeds no longer configured (their series would go stale)."""
    return SecurityFeed.delete().where(SecurityFeed.name.not_in(names)).execute()
