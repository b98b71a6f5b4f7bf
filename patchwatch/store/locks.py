"""A lease in the database so that one scheduler works and a second one waits.

A lease, not a held transaction: the holder renews it on every loop, and when its
process dies the lease expires and another scheduler takes over. Works the same on
SQLite and PostgreSQL because it is plain rows and a conditional update.
"""

from __future__ import annotations

from peewee import IntegrityError

from patchwatch.store.db import write_transaction
from patchwatch.store.models import SchedulerLock


def acquire_lease(name: str, holder: str, now: float, ttl: float) -> bool:
    """Take or renew the lease ``name`` for ``holder``; return whether it is ours."""
    with write_transaction():
        updated = (
            SchedulerLock.update(holder=holder, expires_at=now + ttl)
            .where(
                (SchedulerLock.name == name)
                & ((SchedulerLock.holder == holder) | (SchedulerLock.expires_at < now))
            )
            .execute()
        )
        if updated:
            return True
        if SchedulerLock.get_or_none(SchedulerLock.name == name) is not None:
            return False
    try:
        with write_transaction():
            SchedulerLock.create(name=name, holder=holder, acquired_at=now, expires_at=now + ttl)
        return True
    except IntegrityError:
        return False


def release_lease(name: str, holder: str) -> None:
    """Give the lease up so another scheduler need not wait for it to expire."""
    SchedulerLock.delete().where(
        (SchedulerLock.name == name) & (SchedulerLock.holder == holder)
    ).execute()
