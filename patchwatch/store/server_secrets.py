"""Secrets the server makes for itself, once, and every process reads.

The first process to need one writes it (``INSERT ... ON CONFLICT DO NOTHING``) and
every process then reads the row, so two workers starting together still agree.
"""

from __future__ import annotations

import secrets

from patchwatch.store.db import write_transaction
from patchwatch.store.models import ServerSecret

SECRET_BYTES = 32


def server_secret(name: str, now: float) -> str:
    """Return the secret called ``name``, made (256 random bits) when first asked for."""
    row = ServerSecret.get_or_none(ServerSecret.name == name)
    if row is not None:
        return str(row.value)
    with write_transaction():
        ServerSecret.insert(
            name=name, value=secrets.token_hex(SECRET_BYTES), created_at=now
        ).on_conflict_ignore().execute()
    return str(ServerSecret.get(ServerSecret.name == name).value)
